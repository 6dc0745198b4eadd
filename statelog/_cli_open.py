"""Opening a log file for the commands that only read it (verify, history, state, export, apps).

Reading never creates or changes a file: a missing file is
``StoreUnavailableError``, a file that is not a statelog log (another SQLite
database, an empty file, a text file) is ``StoreCorruptError``, and in both
cases the file and its directory are left exactly as they were.

The file is first looked at through a stdlib ``mode=ro`` connection (which
cannot write), and only a statelog log is then opened as a store.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from statelog.eventstore import (
    EventStore,
    SnapshotStore,
    SQLiteEventStore,
    StoreCorruptError,
    StoreUnavailableError,
)

__all__ = ["LogFile", "check_bodies", "inspect_log", "open_log", "open_snapshots"]

_FORMAT = "statelog-eventstore"


class LogFile:
    """What a read-only look at a log file found: its path and its tables."""

    def __init__(self, path: str, tables: frozenset[str]) -> None:
        self.path = path
        self.tables = tables


def _connect_ro(path: str) -> sqlite3.Connection:
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def inspect_log(path: str) -> LogFile:
    """What the file at ``path`` holds, read through a ``mode=ro`` connection; a non-log raises."""
    if not os.path.isfile(path):
        raise StoreUnavailableError(f"no statelog log at {path!r}")
    if os.path.getsize(path) == 0:
        raise StoreCorruptError(f"{path!r} is an empty file, not a statelog log")
    try:
        db = _connect_ro(path)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open {path!r}: {exc}") from exc
    try:
        try:
            tables = frozenset(
                str(row[0])
                for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            )
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(
                f"{path!r} is not a statelog log (not a SQLite database: {exc})"
            ) from exc
        if not {"eventstore_meta", "streams", "events"} <= tables:
            raise StoreCorruptError(
                f"{path!r} is a SQLite database but not a statelog log "
                "(no eventstore_meta, streams and events tables)"
            )
        row = db.execute("SELECT value FROM eventstore_meta WHERE key = 'format'").fetchone()
        if row is None or row[0] != _FORMAT:
            found = None if row is None else row[0]
            raise StoreCorruptError(
                f"{path!r} is not a statelog log (format {found!r}, expected {_FORMAT!r})"
            )
    except sqlite3.Error as exc:
        raise StoreCorruptError(f"{path!r} is not a readable statelog log: {exc}") from exc
    finally:
        db.close()
    return LogFile(path, tables)


async def open_log(path: str, **options: Any) -> tuple[EventStore, LogFile]:
    """The log at ``path`` for reading, and what it holds; a non-log is refused untouched."""
    found = await asyncio.to_thread(inspect_log, path)
    store: EventStore = await SQLiteEventStore.open(path, **options)
    return store, found


async def open_snapshots(log: LogFile, **options: Any) -> SnapshotStore | None:
    """The log's snapshots, or ``None`` if it has none (nothing is created to find out)."""
    if "snapshots" not in log.tables:
        return None
    return await SnapshotStore.open(log.path, **options)


def _odd_body(path: str, stream: tuple[str, str] | None) -> str | None:
    where = "typeof(e.body) != 'blob' OR typeof(e.hash) != 'blob'"
    params: tuple[str, ...] = ()
    if stream is not None:
        where = f"s.partition_key = ? AND s.app_id = ? AND ({where})"
        params = stream
    db = _connect_ro(path)
    try:
        row = db.execute(
            "SELECT s.partition_key, s.app_id, e.sequence_id, typeof(e.hash), typeof(e.body) "
            f"FROM events e JOIN streams s ON s.id = e.stream_id WHERE {where} LIMIT 1",
            params,
        ).fetchone()
    except sqlite3.Error as exc:
        raise StoreCorruptError(f"{path!r} is not a readable statelog log: {exc}") from exc
    finally:
        db.close()
    if row is None:
        return None
    partition_key, app_id, sequence_id, hash_type, body_type = row
    stream_name = f"{partition_key}/{app_id}" if partition_key else app_id
    return (
        f"{path!r} is not a statelog log: event {stream_name!r}#{sequence_id} stores a "
        f"{hash_type.upper()} hash and a {body_type.upper()} body, expected BLOBs"
    )


async def check_bodies(log: LogFile, stream: tuple[str, str] | None = None) -> None:
    """Refuse a log whose rows (of one stream, or all) hold what statelog never writes."""
    problem = await asyncio.to_thread(_odd_body, log.path, stream)
    if problem is not None:
        raise StoreCorruptError(problem)
