"""The reader thread, and how a thread hands a result back to the event loop.

One thread owns one ``sqlite3`` connection and runs plain functions of it, one
at a time (the aiosqlite model): nothing that waits on the disk runs on the
event loop. Threads are daemons, so a store never closed does not keep the
interpreter alive; ``stop`` ends one without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._schema import file_stamp

__all__ = ["Reader", "deliver", "settle"]

T = TypeVar("T")


def deliver(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Run ``callback(*args)`` on ``loop``'s thread; nothing if the loop has closed."""
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(callback, *args)


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve ``future`` (on its loop) unless its caller has gone (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Reader:
    """A daemon thread owning one read connection; ``call`` runs ``fn(db, *args)`` on it.

    ``open_db`` makes the connection on the thread at the first call and
    returns it with whether it is ``immutable`` (``_schema.connect_read_only``):
    then the thread reopens it before a call once the file has changed
    (``_schema.file_stamp``), whoever changed it.
    """

    def __init__(
        self,
        path: str,
        open_db: Callable[[], tuple[sqlite3.Connection, bool]],
        *,
        name: str,
    ) -> None:
        self.path = path
        self._open_db = open_db
        self._jobs: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, args, future))
        return await future

    def stop(self) -> None:
        """Let the thread close its connection and end (from any thread; idempotent)."""
        self._jobs.put(None)

    async def aclose(self) -> None:
        self.stop()
        await asyncio.shield(self._stopped)
        self._thread.join()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        stamp: tuple[int, int, int, int, bool] | None = None  # an immutable db's file, as opened
        try:
            while (job := self._jobs.get()) is not None:
                fn, args, future = job
                try:
                    if db is not None and stamp is not None and file_stamp(self.path) != stamp:
                        db.close()  # immutable, and another process has changed the file
                        db = None
                    if db is None:
                        before = file_stamp(self.path)
                        db, immutable = self._open_db()
                        stamp = before if immutable else None
                    result, error = fn(db, *args), None
                except BaseException as exc:
                    result, error = None, exc
                deliver(self._loop, settle, future, result, error)
        finally:
            if db is not None:
                db.close()
            deliver(self._loop, settle, self._stopped, None, None)
