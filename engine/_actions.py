"""Actions: ``@action`` functions, ``Node`` classes, batch nodes, and the one runner.

Interface notes for the application (E2) - additions to /tmp/engine_iface.md,
nothing there changed:

* ``Action.inputs`` / ``required_inputs`` / ``optional_inputs`` (lists of input
  names), ``Action.returns_label`` (True for nodes), ``Action.with_name(name)``
  (a renamed shallow copy, so one action object can be registered twice) and
  ``Action.select_inputs(inputs)`` (the inputs the action takes, as passed to it).
* ``@action(..., max_retries=1, wait=0.0)``: a function action may be retried too.
* ``Node.record_result`` (default True): ``StepOutcome.result`` of a node is its
  ``exec`` result; set it False to keep that out of the event.
* ``@batch_action(items=, into=, ...)`` builds a ``BatchNode`` from a per-item function.
* ``run_action`` raises ``ActionError(action, -1, message, attempt=n)`` (the
  ``attempt`` keyword was added to ``eventstore.ActionError``); ``StateError``
  and ``EncodingError`` raised inside an action are contract errors: they are
  never retried nor wrapped, they propagate as they are.
* If an action returns a ``State`` that does not derive from the one it was
  given (e.g. a fresh ``State({...})``), the delta is computed by comparing the
  two, so the outcome's state still replays exactly.
* ``BatchNode`` / ``batch_action`` live in ``engine/_batch.py`` (re-exported
  here). ``Action`` subclasses that ``run_action`` cannot run (a parallel map)
  need not implement ``_arun``: the default raises StateError.
* ``run_action_sync`` is ``run_action`` on a loop of its own (``asyncio.run``),
  not a second copy of the runner; there is one async path.
* ``Node(max_retries, wait)`` may be positional, as in PocketFlow.
* In ``engine/_transitions.py``: ``Condition.lmda(fn, reads)``, ``Condition.always``,
  ``Transition(source, target, condition)``, ``Graph.transitions``,
  ``Graph.outgoing(name)``, ``Graph.reachable(name)``, ``Graph.terminal_actions``,
  ``name in graph``. A transition after an unconditional one from the same action
  is a TransitionError at build (it could never be taken).
* ``State.changed_keys()``, ``State.descends_from(other)``, ``State.diff_from(other)``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from abc import ABC
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from contextvars import ContextVar
from time import perf_counter
from typing import Any, NamedTuple, Self

from statelog.eventstore import ConfigError, EncodingError, UsageError, to_plain

from ._errors import ActionError, StateError
from ._input import InputRequired
from ._state import State

__all__ = [
    "Action",
    "BatchNode",
    "FunctionAction",
    "Node",
    "Outcome",
    "StepOutcome",
    "action",
    "batch_action",
    "run_action",
    "run_action_sync",
    "run_inline",
    "runs_inline",
]

#: Errors raised inside an action that are never retried nor wrapped in ActionError
#: (``InputRequired`` is the signal of ``wait_for_input``).
_CONTRACT_ERRORS = (StateError, EncodingError, InputRequired)

#: Where a failed attempt that will be retried (or followed by a fallback) is
#: reported: ``await sink(action_name, attempt, exc, seconds)``. The application
#: sets it around a step to write an ``attempt_failed`` event; unset, nothing is.
AttemptSink = Callable[[str, int, BaseException, float], Awaitable[None]]
attempt_sink: ContextVar[AttemptSink | None] = ContextVar("attempt_sink", default=None)


async def _report(name: str, attempt: int, exc: BaseException, started: float) -> None:
    sink = attempt_sink.get()
    if sink is not None:
        await sink(name, attempt, exc, perf_counter() - started)


class StepOutcome(NamedTuple):
    """What one run of an action produced."""

    result: Any
    state: State
    label: str | None
    attempt: int
    duration: float


# --------------------------------------------------------------------------- base


class _Signature:
    """The inputs a callable takes after its state parameter."""

    __slots__ = ("optional", "required", "var_kw")

    def __init__(self, fn: Callable[..., Any] | None, skip: int, owner: str) -> None:
        self.required: list[str] = []
        self.optional: list[str] = []
        self.var_kw = False
        if fn is None:
            return
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{owner}: cannot read the signature of {fn!r}") from exc
        if len(params) < skip:
            raise ConfigError(f"{owner} must take a state parameter, got {fn!r}")
        names = [p.name for p in params[:skip]]
        if "state" in [p.name for p in params] and "state" not in names:
            raise ConfigError(f"{owner}: `state` must be the first parameter")
        for p in params[skip:]:
            if p.kind is p.VAR_KEYWORD:
                self.var_kw = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif p.kind is p.POSITIONAL_ONLY:
                raise ConfigError(f"{owner}: input {p.name!r} cannot be positional-only")
            elif p.default is p.empty:
                self.required.append(p.name)
            else:
                self.optional.append(p.name)


def _is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


class Action(ABC):
    """Something a graph can run: it reads and writes declared state keys.

    ``name`` is set by the builder when the action is registered under a name.
    ``is_async`` is decided once, when the action is made.
    """

    name: str = ""
    reads: list[str]
    writes: list[str]
    is_async: bool = False
    returns_label: bool = False
    _sig: _Signature = _Signature(None, 0, "")
    _bound: dict[str, Any] = {}
    _fast_sync: bool = False  # a plain sync function, no retries: run inline

    # --- inputs

    @property
    def required_inputs(self) -> list[str]:
        return [n for n in self._sig.required if n not in self._bound]

    @property
    def optional_inputs(self) -> list[str]:
        return [n for n in self._sig.optional if n not in self._bound]

    @property
    def inputs(self) -> list[str]:
        return self.required_inputs + self.optional_inputs

    def select_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The inputs this action takes (bound ones included); StateError if one is missing."""
        sig = self._sig
        if not inputs:
            if sig.required and any(n not in self._bound for n in sig.required):
                self._missing({})
            return dict(self._bound) if self._bound else {}
        if sig.var_kw:
            kwargs = dict(inputs)
        else:
            kwargs = {n: inputs[n] for n in sig.required if n in inputs}
            for n in sig.optional:
                if n in inputs:
                    kwargs[n] = inputs[n]
        if self._bound:
            kwargs.update(self._bound)
        if len(kwargs) < len(sig.required) or any(n not in kwargs for n in sig.required):
            self._missing(kwargs)
        return kwargs

    def _missing(self, given: Mapping[str, Any]) -> None:
        missing = [n for n in self._sig.required if n not in given and n not in self._bound]
        raise StateError(
            f"action {self.name!r} needs input(s) {missing} that were not given "
            f"(pass them with inputs=...); it takes {self.inputs}"
        )

    # --- naming

    def with_name(self, name: str) -> Self:
        """A shallow copy of this action registered as ``name``."""
        clone = copy.copy(self)
        clone.name = name
        return clone

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} reads={self.reads} writes={self.writes}"
            f"{' async' if self.is_async else ''}>"
        )

    # --- running (used by run_action)

    # Subclasses that run_action can run implement it (FunctionAction, Node do);
    # an Action the application runs itself (a parallel map) need not.

    async def _arun(self, state: State, inputs: Mapping[str, Any]) -> tuple[Any, Any, Any, int]:
        """Run under asyncio: (result, returned state, label, attempt)."""
        raise StateError(f"{type(self).__name__} {self.name!r} cannot be run by run_action")

    def _failure(
        self, exc: BaseException, attempt: int, where: str = "", of: int | None = None
    ) -> ActionError:
        tries = f"attempt {attempt} of {of}" if of and of > 1 else f"attempt {attempt}"
        place = f" in {where}" if where else ""
        return ActionError(
            self.name,
            -1,
            f"action {self.name!r} failed{place} ({tries}): {type(exc).__name__}: {exc}",
            attempt=attempt,
        )


def _check_retry_config(owner: str, max_retries: Any, wait: Any) -> None:
    if type(max_retries) is not int or max_retries < 1:
        raise ConfigError(
            f"{owner}: max_retries is the total number of attempts, an int >= 1; "
            f"got {max_retries!r}"
        )
    if type(wait) not in (int, float) or wait < 0:
        raise ConfigError(f"{owner}: wait must be a number of seconds >= 0, got {wait!r}")


def _key_list(owner: str, what: str, keys: Any) -> list[str]:
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise ConfigError(f"{owner}: {what} must be a list of state keys, got {keys!r}")
    out = list(keys)
    for key in out:
        if type(key) is not str:
            raise ConfigError(f"{owner}: {what} must hold str keys, got {key!r}")
    return out


# --------------------------------------------------------------------------- function actions


class FunctionAction(Action):
    """An action made from a function ``(state, **inputs) -> State | (result, State)``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        reads: Sequence[str],
        writes: Sequence[str],
        name: str | None = None,
        max_retries: int = 1,
        wait: float = 0.0,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"@action needs a function, got {fn!r}")
        self.name = name if name is not None else getattr(fn, "__name__", type(fn).__name__)
        owner = f"action {self.name!r}"
        self.reads = _key_list(owner, "reads", reads)
        self.writes = _key_list(owner, "writes", writes)
        _check_retry_config(owner, max_retries, wait)
        self.fn = fn
        self.max_retries = max_retries
        self.wait = float(wait)
        self.is_async = _is_async_callable(fn)
        self._sig = _Signature(fn, 1, owner)
        self._bound = {}
        self._fast_sync = not self.is_async and max_retries == 1
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in unit tests)."""
        return self.fn(*args, **kwargs)

    def bind(self, **inputs: Any) -> FunctionAction:
        """A copy with some inputs fixed (they win over inputs passed at run time)."""
        known = set(self._sig.required) | set(self._sig.optional)
        unknown = [k for k in inputs if k not in known]
        if unknown and not self._sig.var_kw:
            raise ConfigError(f"action {self.name!r} has no input(s) {unknown} to bind")
        clone = copy.copy(self)
        clone._bound = {**self._bound, **inputs}
        return clone

    def _interpret(self, out: Any) -> tuple[Any, State]:
        if isinstance(out, State):
            return None, out
        if type(out) is tuple and len(out) == 2 and isinstance(out[1], State):
            return out[0], out[1]
        if inspect.iscoroutine(out):
            out.close()
            raise StateError(
                f"action {self.name!r} returned a coroutine: declare it with `async def` "
                "so the engine awaits it"
            )
        raise StateError(
            f"action {self.name!r} returned {_describe(out)}; expected a State or a "
            "(result, State) tuple"
        )

    async def _arun(self, state: State, inputs: Mapping[str, Any]) -> tuple[Any, Any, Any, int]:
        kwargs = self.select_inputs(inputs)
        fn = self.fn
        attempt = 1
        while True:
            started = perf_counter()
            try:
                out = fn(state, **kwargs)
                if self.is_async:
                    out = await out
                break
            except _CONTRACT_ERRORS:
                raise
            except Exception as exc:
                if attempt >= self.max_retries:
                    raise self._failure(exc, attempt, of=self.max_retries) from exc
                await _report(self.name, attempt, exc, started)
            attempt += 1
            if self.wait:
                await asyncio.sleep(self.wait)
        result, new_state = self._interpret(out)
        return result, new_state, None, attempt


def action(
    *,
    reads: Sequence[str],
    writes: Sequence[str],
    name: str | None = None,
    max_retries: int = 1,
    wait: float = 0.0,
) -> Callable[[Callable[..., Any]], FunctionAction]:
    """Declare a function ``(state, **inputs)`` as an action (Burr's ``@action``).

    The function returns the new ``State`` or a ``(result, State)`` tuple; it may
    be ``async def``. Parameters other than ``state`` are the action's inputs.
    Writing (or deleting) a key not in ``writes`` fails the step with StateError.
    """

    def decorate(fn: Callable[..., Any]) -> FunctionAction:
        return FunctionAction(
            fn, reads=reads, writes=writes, name=name, max_retries=max_retries, wait=wait
        )

    return decorate


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if type(value) is tuple:
        kinds = ", ".join(type(v).__name__ for v in value)
        return f"a tuple of ({kinds})"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- nodes


class Node(Action):
    """A PocketFlow-style action: ``prep`` -> ``exec`` (retried) -> ``post``.

    * ``prep(state, **inputs)`` reads what ``exec`` needs from the state.
    * ``exec(prep_res)`` does the work, with no access to state; it is retried
      up to ``max_retries`` attempts in total, ``wait`` seconds apart. When the
      last attempt fails, ``exec_fallback(prep_res, exc)`` runs and its return
      value becomes the exec result (the default re-raises).
    * ``post(state, prep_res, exec_res)`` writes the state and returns it, or
      ``(label, state)`` where ``label`` picks the transition (``on(label)``).

    Each of them may be ``def`` or ``async def``. The step's ``result`` is the
    exec result (unless ``record_result = False``).
    """

    max_retries: int = 1
    wait: float = 0.0
    reads: list[str] = []
    writes: list[str] = []
    record_result: bool = True
    returns_label = True
    _prep_async = _exec_async = _post_async = _fallback_async = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        cls._sort_parts(cls)
        cls._sig = _Signature(cls.prep, 2, f"{cls.__name__}.prep")

    @staticmethod
    def _sort_parts(obj: Any) -> None:
        obj._prep_async = _is_async_callable(obj.prep)
        obj._exec_async = _is_async_callable(obj.exec)
        obj._post_async = _is_async_callable(obj.post)
        obj._fallback_async = _is_async_callable(obj.exec_fallback)
        obj.is_async = obj._prep_async or obj._exec_async or obj._post_async or obj._fallback_async

    def __init__(
        self,
        max_retries: int | None = None,
        wait: float | None = None,
        *,
        name: str | None = None,
        reads: Sequence[str] | None = None,
        writes: Sequence[str] | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        owner = f"action {self.name!r}"
        if max_retries is not None:
            self.max_retries = max_retries
        if wait is not None:
            self.wait = wait
        _check_retry_config(owner, self.max_retries, self.wait)
        self.reads = _key_list(owner, "reads", reads if reads is not None else self.reads)
        self.writes = _key_list(owner, "writes", writes if writes is not None else self.writes)

    # --- the parts users override

    def prep(self, state: State) -> Any:
        """Read what ``exec`` needs from ``state`` (and inputs, as extra parameters)."""
        return None

    def exec(self, prep_res: Any) -> Any:
        """Do the work. Retried on failure."""
        return None

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        """Called when the last attempt of ``exec`` failed; the default re-raises."""
        raise exc

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        """Write the state; return it, or ``(label, state)``."""
        return state

    def _has_fallback(self) -> bool:
        """True when ``exec_fallback`` is more than the default re-raise."""
        return type(self).exec_fallback is not Node.exec_fallback

    # --- running

    def _interpret_post(self, out: Any) -> tuple[str | None, State]:
        if isinstance(out, State):
            return None, out
        if type(out) is tuple and len(out) == 2 and isinstance(out[1], State):
            label = out[0]
            if label is not None and type(label) is not str:
                raise StateError(
                    f"action {self.name!r}: post returned label {label!r}; "
                    "a label must be a str or None"
                )
            return label, out[1]
        if inspect.iscoroutine(out):
            out.close()
            raise StateError(
                f"action {self.name!r}: post returned a coroutine; declare it `async def`"
            )
        raise StateError(
            f"action {self.name!r}: post returned {_describe(out)}; expected a State "
            "or a (label, State) tuple"
        )

    async def _aexec_one(self, prep_res: Any, pool: Executor | None = None) -> tuple[Any, int]:
        """Run exec with retries and fallback: (exec_res, attempt).

        With ``pool`` the sync ``exec`` and ``exec_fallback`` run on its threads
        (a batch's items in parallel); the waits between attempts are on the loop.
        """
        tries = self.max_retries
        attempt = 1
        while True:
            started = perf_counter()
            try:
                if pool is not None:
                    res = await asyncio.get_running_loop().run_in_executor(
                        pool, self.exec, prep_res
                    )
                else:
                    res = self.exec(prep_res)
                    if self._exec_async:
                        res = await res
                return res, attempt
            except _CONTRACT_ERRORS:
                raise
            except Exception as exc:
                if attempt >= tries:
                    if self._has_fallback():
                        # a fallback of its own follows: this attempt's error is recorded
                        await _report(self.name, attempt, exc, started)
                    return await self._afallback(prep_res, exc, attempt, pool), attempt
                await _report(self.name, attempt, exc, started)
            attempt += 1
            if self.wait:
                await asyncio.sleep(self.wait)

    async def _afallback(
        self, prep_res: Any, exc: Exception, attempt: int, pool: Executor | None = None
    ) -> Any:
        try:
            if pool is not None:
                return await asyncio.get_running_loop().run_in_executor(
                    pool, self.exec_fallback, prep_res, exc
                )
            res = self.exec_fallback(prep_res, exc)
            if self._fallback_async:
                res = await res
            return res
        except _CONTRACT_ERRORS:
            raise
        except Exception as err:
            raise self._failure(err, attempt, "exec", self.max_retries) from err

    async def _aexec(self, prep_res: Any) -> tuple[Any, int]:
        return await self._aexec_one(prep_res)

    async def _arun(self, state: State, inputs: Mapping[str, Any]) -> tuple[Any, Any, Any, int]:
        kwargs = self.select_inputs(inputs)
        try:
            prep_res = self.prep(state, **kwargs)
            if self._prep_async:
                prep_res = await prep_res
        except _CONTRACT_ERRORS:
            raise
        except Exception as exc:
            raise self._failure(exc, 1, "prep") from exc
        exec_res, attempt = await self._aexec(prep_res)
        try:
            out = self.post(state, prep_res, exec_res)
            if self._post_async:
                out = await out
        except _CONTRACT_ERRORS:
            raise
        except Exception as exc:
            raise self._failure(exc, attempt, "post") from exc
        label, new_state = self._interpret_post(out)
        return (exec_res if self.record_result else None), new_state, label, attempt


Node._sort_parts(Node)
Node._sig = _Signature(Node.prep, 2, "Node.prep")
Node.name = "Node"


# --------------------------------------------------------------------------- the runner


_tuple_new = tuple.__new__  # StepOutcome(...) without the Python-level __new__

#: StepOutcome's fields as a plain tuple: (result, state, label, attempt, duration).
#: The application's per-step path takes this; making the named tuple costs more
#: than a plain one, so only run_action makes it.
Outcome = tuple[Any, State, str | None, int, float]


def _finish(
    action: Action,
    state: State,
    result: Any,
    new_state: State,
    label: Any,
    attempt: int,
    started: float,
) -> Outcome:
    if new_state._root is not state._root:
        new_state = new_state.diff_from(state)
    writes = action.writes
    for key in new_state._changed:
        if key not in writes:
            verb = "deleted" if key not in new_state else "wrote"
            raise StateError(
                f"action {action.name!r} {verb} state key {key!r}, which is not in "
                f"its writes {writes}; declare it in writes=[...]"
            )
    if result is not None:
        t = type(result)
        if not (t is str or t is int or t is bool):
            result = to_plain(result, path="$.result")
    return (result, new_state, label, attempt, perf_counter() - started)


def _rebased(state: State) -> State:
    if type(state) is not State and not isinstance(state, State):
        raise StateError(f"run_action expects a State, got {type(state).__name__}")
    return state.rebase() if state._changed else state


def runs_inline(action: Action) -> bool:
    """Whether ``run_inline`` can run ``action``: a sync function, no retries, no bound inputs."""
    return action._fast_sync and not action._bound


def run_inline(action: Action, state: State, inputs: Mapping[str, Any] | None = None) -> Outcome:
    """``run_action`` without a coroutine, for an action where ``runs_inline(action)``.

    The fast path: a sync function action without retries or bound inputs. The
    application sorts its actions once, when it is built, and saves a
    coroutine per step. The errors are those of ``run_action``; the outcome is
    the same fields as a plain tuple (``Outcome``).
    """
    started = perf_counter()
    if state._changed:
        state = state.rebase()
    fa: FunctionAction = action  # type: ignore[assignment]
    try:
        if inputs or fa._sig.required:
            out = fa.fn(state, **fa.select_inputs(inputs))
        else:
            out = fa.fn(state)
    except _CONTRACT_ERRORS:
        raise
    except Exception as exc:
        raise fa._failure(exc, 1) from exc
    if type(out) is State:
        return _finish(fa, state, None, out, None, 1, started)
    result, new_state = fa._interpret(out)
    return _finish(fa, state, result, new_state, None, 1, started)


async def run_action(
    action: Action, state: State, inputs: Mapping[str, Any] | None = None
) -> StepOutcome:
    """Run ``action`` once on ``state`` (retries, fallback and batches included).

    Returns the outcome whose ``state`` carries this step's delta. Raises
    ``ActionError`` (``__cause__`` = the user's exception, ``attempt`` set) when
    the action failed, ``StateError`` when it broke its contract (undeclared
    write, wrong return type, missing input) and ``EncodingError`` when a value
    it wrote or returned cannot be stored.
    """
    state = _rebased(state)
    if action._fast_sync and not action._bound:
        return _tuple_new(StepOutcome, run_inline(action, state, inputs))
    started = perf_counter()
    result, new_state, label, attempt = await action._arun(state, inputs or {})
    outcome = _finish(action, state, result, new_state, label, attempt, started)
    return _tuple_new(StepOutcome, outcome)


def run_action_sync(
    action: Action, state: State, inputs: Mapping[str, Any] | None = None
) -> StepOutcome:
    """``run_action`` for code without an event loop: the same runner, on a loop of its own.

    Async actions run too. Inside a running event loop it raises ``UsageError``:
    use ``await run_action(...)`` there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError(
            "run_action_sync() was called inside a running event loop; "
            "use `await run_action(...)` there"
        )
    return asyncio.run(run_action(action, state, inputs))


# BatchNode lives in its own module (it builds on Node); re-exported here so the
# action API is one import.
from ._batch import BatchNode, batch_action  # noqa: E402
