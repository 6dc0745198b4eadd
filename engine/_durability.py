"""How a step's event reaches the store: transactional or fire-and-forget.

* ``transactional``: ``write`` returns once the store committed the event.
* ``fire_and_forget``: ``write`` queues the event; one background task appends
  queued events in order, in batches, each with ``expected_sequence`` so it can
  never leave a gap or a fork. A crash loses at most the queued tail. A failed
  append is kept and raised (as ``StoreError``) by the next ``write`` or
  ``flush``; nothing after the failure is appended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from statelog.eventstore import (
    ConfigError,
    Event,
    EventStore,
    Recorded,
    StatelogError,
    StoreError,
)

__all__ = ["Durability", "FireAndForgetWriter", "TransactionalWriter", "Writer", "make_writer"]

Durability = Literal["transactional", "fire_and_forget"]


class Writer:
    """Hands events of one stream to a store in sequence order."""

    last_recorded: Recorded | None = None

    async def write(self, event: Event) -> Recorded | None:
        """Hand ``event`` over; return it with its position once committed (if waited for)."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until every event handed over is committed; raise a pending failure."""

    async def aclose(self) -> None:
        await self.flush()


class TransactionalWriter(Writer):
    __slots__ = ("_append",)

    def __init__(self, store: EventStore) -> None:
        self._append = store.append

    async def write(self, event: Event) -> Recorded | None:
        recorded = await self._append((event,), expected_sequence=event.sequence_id - 1)
        return recorded[-1]


class FireAndForgetWriter(Writer):
    """A background writer: in order, batched, with back-pressure at ``max_pending``."""

    def __init__(self, store: EventStore, *, max_pending: int = 10_000, max_batch: int = 1_000):
        self._store = store
        self._pending: list[Event] = []
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._error: BaseException | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def _raise_pending_error(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, StatelogError):
            raise error
        raise StoreError(f"background write failed: {type(error).__name__}: {error}") from error

    async def write(self, event: Event) -> Recorded | None:
        if self._error is not None:
            self._raise_pending_error()
        if self._closed:
            raise StoreError("the background writer is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        while len(self._pending) >= self._max_pending:
            self._room.clear()
            await self._room.wait()
            if self._error is not None:
                self._raise_pending_error()
        self._pending.append(event)
        self._drained.clear()
        self._wake.set()
        return None

    async def _run(self) -> None:
        store = self._store
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                try:
                    recorded = await store.append(batch, expected_sequence=batch[0].sequence_id - 1)
                except BaseException as exc:  # kept and re-raised to the app
                    self._error = exc
                    self._pending.clear()
                    self._room.set()
                    self._drained.set()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    return
                self.last_recorded = recorded[-1]
                del self._pending[: len(batch)]
                self._room.set()
            self._drained.set()

    async def flush(self) -> None:
        if self._pending and self._task is not None and not self._task.done():
            await self._drained.wait()
        self._raise_pending_error()

    async def aclose(self) -> None:
        try:
            await self.flush()
        finally:
            self._closed = True
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def make_writer(mode: Durability, store: EventStore) -> Writer:
    if mode == "transactional":
        return TransactionalWriter(store)
    if mode == "fire_and_forget":
        return FireAndForgetWriter(store)
    raise ConfigError(f"durability must be 'transactional' or 'fire_and_forget', got {mode!r}")
