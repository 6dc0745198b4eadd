"""Opening a log file for the commands that only read it (verify, history, state, export, apps).

Reading never creates or changes a file: the stores are opened with
``read_only=True`` (a ``mode=ro`` connection, no writer), so a missing file is
``StoreUnavailableError`` and a file that is not a statelog log (another SQLite
database, an empty file, a text file) is ``StoreCorruptError``, and in both
cases the file and its directory are left exactly as they were.

One check the store does not make (yet) is made here: a row whose hash or body
is not a BLOB (the store raises ``TypeError`` decoding it) is refused as
``StoreCorruptError`` before anything is decoded.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from statelog.eventstore import (
    EventStore,
    SignedCheckpoint,
    SnapshotStore,
    SQLiteEventStore,
    StoreCorruptError,
)
from statelog.eventstore.sqlite._checkpoints import read_checkpoints
from statelog.eventstore.sqlite._schema import read_only_uri
from statelog.projections import Source, StoreSource

__all__ = [
    "check_bodies",
    "open_log",
    "open_log_source",
    "open_snapshots",
    "read_file_checkpoints",
]


async def open_log(path: str, **options: Any) -> EventStore:
    """The log at ``path``, read-only; a missing file or a non-log is refused untouched."""
    store: EventStore = await SQLiteEventStore.open(path, read_only=True, **options)
    return store


async def open_log_source(path: str) -> Source:
    """A projection source reading the log at ``path``, read-only.

    Its head (for progress) comes from the store's own read-only connection: the
    default one opens a plain ``mode=ro`` connection, which leaves ``-wal`` and
    ``-shm`` files beside a cleanly closed log.
    """
    store = await SQLiteEventStore.open(path, read_only=True)
    return StoreSource(store, owned=True, head=store.last_position)


async def open_snapshots(path: str, **options: Any) -> SnapshotStore:
    """The log's snapshots, read-only (a log without any has none to load)."""
    return await SnapshotStore.open(path, read_only=True, **options)


def _odd_row(path: str, stream: tuple[str, str] | None) -> str | None:
    where = "typeof(e.body) != 'blob' OR typeof(e.hash) != 'blob'"
    params: tuple[str, ...] = ()
    if stream is not None:
        where = f"s.partition_key = ? AND s.app_id = ? AND ({where})"
        params = stream
    # The store's own read-only URI: immutable for a WAL file without -wal, for
    # a plain mode=ro reader would leave -wal and -shm files behind.
    uri, _ = read_only_uri(path)
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            row = db.execute(
                "SELECT s.partition_key, s.app_id, e.sequence_id, typeof(e.hash), typeof(e.body) "
                f"FROM events e JOIN streams s ON s.id = e.stream_id WHERE {where} LIMIT 1",
                params,
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreCorruptError(f"{path!r} is not a readable statelog log: {exc}") from exc
    if row is None:
        return None
    partition_key, app_id, sequence_id, hash_type, body_type = row
    stream_name = f"{partition_key}/{app_id}" if partition_key else app_id
    return (
        f"{path!r} is not a statelog log: event {stream_name!r}#{sequence_id} stores a "
        f"{hash_type.upper()} hash and a {body_type.upper()} body, expected BLOBs"
    )


async def check_bodies(path: str, stream: tuple[str, str] | None = None) -> None:
    """Refuse a log whose rows (of one stream, or all) hold what statelog never writes."""
    problem = await asyncio.to_thread(_odd_row, path, stream)
    if problem is not None:
        raise StoreCorruptError(problem)


def _read_checkpoints(path: str) -> list[tuple[int, SignedCheckpoint]]:
    uri, _ = read_only_uri(path)
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            return read_checkpoints(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreCorruptError(f"{path!r} is not a readable statelog log: {exc}") from exc


async def read_file_checkpoints(path: str) -> list[tuple[int, SignedCheckpoint]]:
    """The signed checkpoints stored in the log at ``path`` (read-only; none if unsigned)."""
    return await asyncio.to_thread(_read_checkpoints, path)
