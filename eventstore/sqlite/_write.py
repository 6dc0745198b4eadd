"""The write statements of ``SQLiteEventStore``: inline on the loop thread, or on aiosqlite's.

With ``synchronous="NORMAL"`` the store holds a second, stdlib connection
(``open_direct``) and runs each write statement on the event-loop thread:
one small WAL commit without fsync (~30 us) instead of an aiosqlite thread
hand-off (40-300 us on a loaded 2-core machine). It never waits: a lock held
elsewhere raises ``SQLITE_BUSY`` at once (``busy_timeout=0``), nothing is
written, and the statement runs on aiosqlite's thread instead, which waits up
to the store's ``busy_timeout``. It never checkpoints
(``wal_autocheckpoint=0``): after ~1000 WAL pages a PASSIVE checkpoint starts
on aiosqlite's thread while inline commits go on, and a short second one,
which inline commits wait for, copies what they wrote meanwhile so the WAL
restarts (``_checkpoint_behind``; the ``-wal`` file's size is looked at every
~256 pages written; ``journal_size_limit`` cuts a restarted WAL back, so that
size is what the WAL holds). With ``FULL`` there is no inline connection. See
the store's module docstring for the whole picture.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import aiosqlite

from .._errors import ConcurrencyError
from .._event import StreamId
from ._schema import translate_error

__all__ = ["WAL_LIMIT", "SQLiteWrites", "open_direct"]

#: WAL size (bytes, ~1000 pages of 4 KiB) past which the next write checkpoints;
#: also each connection's ``journal_size_limit``, so a restarted WAL is cut back
#: to it and the file's size tells how much the WAL holds.
WAL_LIMIT = 4 * 1024 * 1024
#: Look at the ``-wal`` file's size after about this many pages written inline
#: (counted generously: one per commit plus one per row).
_STAT_EVERY = 256
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SQLiteWrites:
    """Write statements of the SQLite event store (a mixin; the store gives the state)."""

    path: str
    _conn: aiosqlite.Connection | None
    _direct: sqlite3.Connection | None
    _gate: asyncio.Event | None
    _checkpointing: asyncio.Task[None] | None
    _checkpoint_holds: bool
    _wal_pages: int
    inline_commits: int
    thread_commits: int
    busy_fallbacks: int
    checkpoints: int

    async def _connected(self) -> aiosqlite.Connection:
        raise NotImplementedError

    async def _write(self, sql: str, params: list[Any]) -> int:
        """One atomic write statement in one hop; return the last rowid it inserted.

        A UNIQUE conflict becomes ``ConcurrencyError`` (the caller names it).
        Rows are not fetched back with ``RETURNING``: each fetched row would
        cost the worker thread another round for the GIL.
        """
        direct = self._direct
        if direct is not None and self._gate is None:
            if self._checkpoint_holds:  # its second half: no inline commit until it ends
                assert self._checkpointing is not None
                await asyncio.wait([self._checkpointing])
            try:
                cursor = direct.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise ConcurrencyError(StreamId("", ""), -1, -1) from exc
                raise translate_error(exc, self.path) from exc
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES:
                    raise translate_error(exc, self.path) from exc
                self.busy_fallbacks += 1  # nothing written: wait on the thread
            except (sqlite3.Error, ValueError) as exc:
                raise translate_error(exc, self.path) from exc
            else:
                self._committed_inline(1 + len(params) // 4)
                return cursor.lastrowid or 0
        conn = self._conn
        if conn is None:
            conn = await self._connected()
        try:
            done = await conn.execute(sql, params)
            self.thread_commits += 1
            return done.lastrowid or 0
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise ConcurrencyError(StreamId("", ""), -1, -1) from exc
            raise translate_error(exc, self.path) from exc
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self.path) from exc

    def _inline_rows(self, sql: str, params: list[Any]) -> list[Any] | None:
        """Run a write statement that returns rows inline; ``None``: use the thread."""
        direct = self._direct
        if direct is None or self._gate is not None or self._checkpoint_holds:
            return None  # (the thread runs it after the checkpoint)
        try:
            rows = direct.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES:
                raise translate_error(exc, self.path) from exc
            self.busy_fallbacks += 1
            return None
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self.path) from exc
        self._committed_inline(1 + len(rows))
        return rows

    def _committed_inline(self, pages: int) -> None:
        """Count an inline commit; past ``WAL_LIMIT`` bytes, start a checkpoint."""
        self.inline_commits += 1
        self._wal_pages += pages
        if self._wal_pages >= _STAT_EVERY:
            self._wal_pages = 0
            if self._checkpointing is not None:
                return
            try:
                size = os.stat(self.path + "-wal").st_size
            except OSError:
                size = 0
            if size > WAL_LIMIT:
                self._checkpointing = asyncio.get_running_loop().create_task(
                    self._checkpoint_behind()
                )

    async def _checkpoint_behind(self) -> None:
        """Copy the WAL into the database file, mostly while this store goes on committing.

        ``PRAGMA wal_checkpoint(PASSIVE)`` runs on aiosqlite's thread, never on
        the loop: it syncs the WAL, copies its pages into the database file and
        syncs that (with ``synchronous=NORMAL``, a few milliseconds of fsync for
        a 4 MiB WAL). The inline connection (``wal_autocheckpoint=0``) keeps
        committing meanwhile, so no caller waits for those syncs. But the WAL
        only starts over from its beginning once every frame in it has been
        copied; so if anything was committed meanwhile, a second checkpoint
        follows at once, holding the write turn (``_write`` waits for it): it
        copies just the frames written during the first (a short sync), and
        the next commit restarts the WAL, which stays bounded. Callers go on
        validating, encoding and queueing their appends while it runs.
        PASSIVE neither waits for nor blocks other processes; frames a reader
        still needs are left for the next checkpoint.
        """
        try:
            writes = self.inline_commits + self.thread_commits
            if await self._checkpoint() and self.inline_commits + self.thread_commits != writes:
                self._checkpoint_holds = True
                try:
                    await self._checkpoint()
                finally:
                    self._checkpoint_holds = False
        finally:
            self._checkpointing = None
            self._wal_pages = 0

    async def _checkpoint(self) -> bool:
        """``PRAGMA wal_checkpoint(PASSIVE)`` on aiosqlite's thread; ``False`` if it failed."""
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, ValueError):
            return False  # the next threshold tries again; a real fault shows on the write
        self.checkpoints += 1
        return True


def open_direct(path: str) -> sqlite3.Connection | None:
    """The inline path's connection: never waits for a lock, never checkpoints.

    ``busy_timeout=0``: a write lock held elsewhere raises ``SQLITE_BUSY`` at
    once and the store falls back to aiosqlite's thread, which waits. ``None``
    if the file is not in WAL mode (then every write uses the thread).
    """
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    except sqlite3.Error:
        return None
    try:
        db.execute("PRAGMA busy_timeout=0")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        mode = db.execute("PRAGMA journal_mode").fetchone()
        if mode is not None and str(mode[0]).lower() == "wal":
            return db
    except sqlite3.Error:
        pass
    db.close()
    return None
