"""Batch actions: a node whose ``exec`` runs once per item, sequentially or in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from ._actions import Node, _describe, _is_async_callable
from ._errors import ActionError, StateError
from ._state import State

__all__ = ["BatchMode", "BatchNode", "batch_action"]

BatchMode = Literal["sequential", "parallel"]


class _ItemFailed(Exception):
    def __init__(self, index: int, error: ActionError) -> None:
        self.index = index
        self.error = error


class BatchNode(Node):
    """A node whose ``exec`` runs once per item of the list ``prep`` returns.

    ``exec(item)`` is retried per item (``max_retries``, ``wait``) and
    ``exec_fallback(item, exc)`` replaces a failed item's result. ``post``
    receives the items and the results, in input order. ``mode`` is
    ``"sequential"`` or ``"parallel"``; in parallel at most ``concurrency``
    items run at once (``None``: all). A sync ``exec`` runs in worker threads
    in parallel mode. The step's ``attempt`` is the highest any item needed.
    """

    mode: BatchMode = "sequential"
    concurrency: int | None = None

    def __init__(
        self,
        max_retries: int | None = None,
        wait: float | None = None,
        *,
        mode: BatchMode | None = None,
        concurrency: int | None = None,
        name: str | None = None,
        reads: Sequence[str] | None = None,
        writes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(max_retries, wait, name=name, reads=reads, writes=writes)
        if mode is not None:
            self.mode = mode
        if concurrency is not None:
            self.concurrency = concurrency
        self._check_batch_config()

    def _check_batch_config(self) -> None:
        if self.mode not in ("sequential", "parallel"):
            raise StateError(
                f"action {self.name!r}: mode must be 'sequential' or 'parallel', got {self.mode!r}"
            )
        limit = self.concurrency
        if limit is not None and (type(limit) is not int or limit < 1):
            raise StateError(
                f"action {self.name!r}: concurrency must be an int >= 1 or None, got {limit!r}"
            )

    def _items(self, prep_res: Any) -> list[Any]:
        if prep_res is None:
            return []
        if isinstance(prep_res, str | bytes | Mapping) or not isinstance(prep_res, Iterable):
            raise StateError(
                f"action {self.name!r}: prep must return a list of items for a batch, "
                f"got {_describe(prep_res)}"
            )
        return list(prep_res)

    def _limit(self, n: int) -> int:
        if self.mode == "sequential":
            return 1
        return max(1, min(n, self.concurrency or n))

    def _item_failure(self, index: int, n: int, err: ActionError) -> ActionError:
        cause = err.__cause__
        what = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        failure = ActionError(
            self.name,
            -1,
            f"action {self.name!r} failed on item {index} of {n} "
            f"(attempt {err.attempt} of {self.max_retries}): {what}",
            attempt=err.attempt,
        )
        failure.__cause__ = cause
        return failure

    async def _aexec(self, prep_res: Any) -> tuple[Any, int]:
        items = self._items(prep_res)
        n = len(items)
        results: list[Any] = [None] * n
        attempts = [1] * n
        limit = self._limit(n)
        if limit == 1:
            for i, item in enumerate(items):
                try:
                    results[i], attempts[i] = await self._aexec_one(item)
                except ActionError as err:
                    raise self._item_failure(i, n, err) from err.__cause__
            return results, max(attempts, default=1)
        threaded = not (self._exec_async or self._fallback_async)
        pool = ThreadPoolExecutor(max_workers=limit) if threaded else None
        try:
            await self._aexec_parallel(items, results, attempts, limit, pool)
        except _ItemFailed as failed:
            raise self._item_failure(failed.index, n, failed.error) from failed.error.__cause__
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        return results, max(attempts, default=1)

    async def _aexec_parallel(
        self,
        items: list[Any],
        results: list[Any],
        attempts: list[int],
        limit: int,
        pool: ThreadPoolExecutor | None,
    ) -> None:
        work = iter(enumerate(items))

        async def worker() -> None:
            for i, item in work:
                try:
                    results[i], attempts[i] = await self._aexec_one(item, pool)
                except ActionError as err:
                    raise _ItemFailed(i, err) from err

        tasks = [asyncio.ensure_future(worker()) for _ in range(limit)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


class _FunctionBatch(BatchNode):
    """The ``BatchNode`` that ``@batch_action`` builds around a per-item function."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        items: str,
        into: str,
        fallback: Callable[[Any, Exception], Any] | None,
        **options: Any,
    ) -> None:
        self._fn = fn
        self._fallback_fn = fallback
        self._items_key = items
        self._into_key = into
        super().__init__(**options)
        self.record_result = False
        self._exec_async = _is_async_callable(fn)
        self._fallback_async = fallback is not None and _is_async_callable(fallback)
        self.is_async = self._exec_async or self._fallback_async
        if into not in self.writes:
            raise StateError(f"action {self.name!r}: into={into!r} must be one of its writes")

    def prep(self, state: State) -> Any:
        if self._items_key not in state:
            raise StateError(
                f"action {self.name!r}: state key {self._items_key!r} (items=) is missing"
            )
        return state[self._items_key]

    def exec(self, prep_res: Any) -> Any:
        return self._fn(prep_res)

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        if self._fallback_fn is None:
            raise exc
        return self._fallback_fn(prep_res, exc)

    def _has_fallback(self) -> bool:
        return self._fallback_fn is not None or type(self).exec_fallback is not (
            BatchNode.exec_fallback
        )

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return state.update(**{self._into_key: exec_res})


def batch_action(
    *,
    items: str,
    into: str,
    reads: Sequence[str] | None = None,
    writes: Sequence[str] | None = None,
    mode: BatchMode = "sequential",
    concurrency: int | None = None,
    max_retries: int = 1,
    wait: float = 0.0,
    fallback: Callable[[Any, Exception], Any] | None = None,
    name: str | None = None,
) -> Callable[[Callable[[Any], Any]], BatchNode]:
    """Make a batch action from a per-item function ``item -> result`` (sync or async).

    The items are the list in state key ``items``; the results (in input order)
    are written to ``into``. ``fallback(item, exc)`` replaces a result whose
    last attempt failed.
    """

    def decorate(fn: Callable[[Any], Any]) -> BatchNode:
        return _FunctionBatch(
            fn,
            items=items,
            into=into,
            fallback=fallback,
            mode=mode,
            concurrency=concurrency,
            max_retries=max_retries,
            wait=wait,
            name=name if name is not None else getattr(fn, "__name__", "batch"),
            reads=reads if reads is not None else [items],
            writes=writes if writes is not None else [into],
        )

    return decorate
