"""``aiosqlite.connect`` with a worker thread that cannot keep the process alive."""

from __future__ import annotations

import threading
from typing import Any

import aiosqlite

__all__ = ["connect_aiosqlite"]


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
    return await conn
