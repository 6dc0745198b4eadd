"""Lifecycle hooks: code that runs before and after every step.

Hooks are objects with one keyword-only method that accepts ``**future_kwargs``,
so new arguments never break them (Burr's ``lifecycle/base.py``). A hook may be
sync or async; the kind is sorted once when the application is built, not on
every step. A hook that raises is reported according to the application's
``on_error`` policy and never corrupts the stream: pre-step hooks run before
anything is written, post-step hooks after the step's event is handed to the
writer.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from statelog.eventstore import ConfigError

from ._errors import HookError

__all__ = [
    "HookErrorPolicy",
    "PostStepHook",
    "PostStepHookAsync",
    "PreStepHook",
    "PreStepHookAsync",
]

logger = logging.getLogger("statelog.engine.hooks")

#: What to do when a hook raises: log it, warn (``RuntimeWarning``), or raise ``HookError``.
HookErrorPolicy = Literal["log", "warn", "raise"]


class PreStepHook(ABC):
    """Runs before an action: sees the state and inputs the action will get."""

    @abstractmethod
    def pre_step(
        self,
        *,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        position: str,
        state: Mapping[str, Any],
        inputs: Mapping[str, Any],
        **future_kwargs: Any,
    ) -> None: ...


class PreStepHookAsync(ABC):
    """The async form of ``PreStepHook``."""

    @abstractmethod
    async def pre_step(
        self,
        *,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        position: str,
        state: Mapping[str, Any],
        inputs: Mapping[str, Any],
        **future_kwargs: Any,
    ) -> None: ...


class PostStepHook(ABC):
    """Runs after a step's event is written: ``exception`` is set when the action failed."""

    @abstractmethod
    def post_step(
        self,
        *,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        position: str,
        state: Mapping[str, Any],
        inputs: Mapping[str, Any],
        result: Any,
        exception: BaseException | None,
        **future_kwargs: Any,
    ) -> None: ...


class PostStepHookAsync(ABC):
    """The async form of ``PostStepHook``."""

    @abstractmethod
    async def post_step(
        self,
        *,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        position: str,
        state: Mapping[str, Any],
        inputs: Mapping[str, Any],
        result: Any,
        exception: BaseException | None,
        **future_kwargs: Any,
    ) -> None: ...


#: The keyword arguments the engine passes to each hook method.
HOOK_KWARGS = {
    "pre_step": ("partition_key", "app_id", "sequence_id", "position", "state", "inputs"),
    "post_step": (
        "partition_key",
        "app_id",
        "sequence_id",
        "position",
        "state",
        "inputs",
        "result",
        "exception",
    ),
}


def check_hook_method(hook: object, method: str, fn: Any) -> None:
    """``HookError`` unless ``fn`` takes the engine's keywords and ``**future_kwargs``."""
    owner = f"{type(hook).__name__}.{method}"
    passed = HOOK_KWARGS[method]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise HookError(f"hook {owner}: cannot read its signature") from exc
    params = sig.parameters.values()
    wrong = [
        p.name
        for p in params
        if p.default is p.empty
        and (
            p.kind is p.POSITIONAL_ONLY
            or (p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in passed)
        )
    ]
    if wrong or not any(p.kind is p.VAR_KEYWORD for p in params):
        problem = (
            f"it requires {wrong}, which the engine does not pass"
            if wrong
            else "it has no **future_kwargs"
        )
        raise HookError(
            f"hook {owner}{sig}: {problem}; a hook method takes the keyword arguments "
            f"{', '.join(passed)} and **future_kwargs (so new arguments never break it)"
        )


class HookSet:
    """Hooks sorted once by phase and by sync/async. Empty sets cost one bool check.

    Made when ``with_hooks`` is called, so a hook that is not one, or whose
    method cannot take what the engine passes, raises ``HookError`` there.
    """

    __slots__ = ("active", "on_error", "post_async", "post_sync", "pre_async", "pre_sync")

    def __init__(self, hooks: Iterable[object] = (), on_error: HookErrorPolicy = "log") -> None:
        if on_error not in ("log", "warn", "raise"):
            raise ConfigError(
                f"with_hooks: on_error must be 'log', 'warn' or 'raise', got {on_error!r}"
            )
        self.on_error = on_error
        self.pre_sync: list[Any] = []
        self.pre_async: list[Any] = []
        self.post_sync: list[Any] = []
        self.post_async: list[Any] = []
        for hook in hooks:
            known = False
            pre = getattr(hook, "pre_step", None)
            if callable(pre):
                known = True
                check_hook_method(hook, "pre_step", pre)
                (self.pre_async if inspect.iscoroutinefunction(pre) else self.pre_sync).append(pre)
            post = getattr(hook, "post_step", None)
            if callable(post):
                known = True
                check_hook_method(hook, "post_step", post)
                target = self.post_async if inspect.iscoroutinefunction(post) else self.post_sync
                target.append(post)
            if not known:
                raise HookError(
                    f"expected a hook with a pre_step or post_step method "
                    f"(PreStepHook, PostStepHook, ...), got {type(hook).__name__}"
                )
        self.active = bool(self.pre_sync or self.pre_async or self.post_sync or self.post_async)

    def _report(self, phase: str, hook: Any, exc: Exception) -> None:
        owner = getattr(hook, "__self__", hook)
        message = f"{phase} hook {type(owner).__name__} raised {type(exc).__name__}: {exc}"
        if self.on_error == "raise":
            raise HookError(message) from exc
        if self.on_error == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        else:
            logger.error(message, exc_info=exc)

    async def run_pre(self, **kwargs: Any) -> None:
        for hook in self.pre_sync:
            try:
                hook(**kwargs)
            except Exception as exc:
                self._report("pre_step", hook, exc)
        for hook in self.pre_async:
            try:
                await hook(**kwargs)
            except Exception as exc:
                self._report("pre_step", hook, exc)

    async def run_post(self, **kwargs: Any) -> None:
        for hook in self.post_sync:
            try:
                hook(**kwargs)
            except Exception as exc:
                self._report("post_step", hook, exc)
        for hook in self.post_async:
            try:
                await hook(**kwargs)
            except Exception as exc:
                self._report("post_step", hook, exc)
