"""``aiosqlite.connect`` with a worker thread that cannot keep the process alive."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import aiosqlite

__all__ = ["close_quietly", "connect_aiosqlite"]


async def connect_aiosqlite(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
    """``await aiosqlite.connect(*args, **kwargs)``, its worker thread a daemon.

    aiosqlite 0.20 and 0.21 start a non-daemon thread per connection, and nothing
    stops it if the owner never closes the connection (a ``SnapshotStore`` left
    open): the interpreter then waits for it at exit, for ever. As a daemon it
    does not. The connection works as ever; closing it stays the owner's job
    (a store left open still warns with ``ResourceWarning``).
    """
    conn = aiosqlite.connect(*args, **kwargs)  # not started until awaited
    # 0.20/0.21: the connection is the thread; 0.22: it holds one as ``_thread``
    thread = conn if isinstance(conn, threading.Thread) else getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        thread.daemon = True
    opening = asyncio.ensure_future(conn)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:  # the connection still opens: close it, not leak it
        with contextlib.suppress(Exception):
            await (await opening).close()
        raise


async def close_quietly(conn: aiosqlite.Connection | None) -> None:
    """Close ``conn`` after a failed or cancelled open (errors of the close itself
    would only hide the reason the open failed)."""
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
