"""The SQLite event log's file: schema, format checks, and the error boundary.

``translate_error`` is the one place sqlite3 and aiosqlite errors become
statelog's typed errors (``raise translate_error(exc, path) from exc``).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

import aiosqlite

from .._codec import MSGPACK, Codec, get_codec
from .._errors import StoreClosedError, StoreCorruptError, StoreError, StoreUnavailableError

__all__ = ["FORMAT", "FORMAT_VERSION", "Synchronous", "prepare_schema", "translate_error"]

FORMAT = "statelog-eventstore"
FORMAT_VERSION = 1

Synchronous = Literal["NORMAL", "FULL"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS eventstore_meta ("
    " key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS streams ("
    " id INTEGER PRIMARY KEY,"
    " partition_key TEXT NOT NULL,"
    " app_id TEXT NOT NULL,"
    " UNIQUE (partition_key, app_id))",
    "CREATE TABLE IF NOT EXISTS events ("
    " position INTEGER PRIMARY KEY,"
    " stream_id INTEGER NOT NULL REFERENCES streams (id),"
    " sequence_id INTEGER NOT NULL,"
    " hash BLOB NOT NULL,"
    " body BLOB NOT NULL,"
    " UNIQUE (stream_id, sequence_id))",
)

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT}
_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOLFS,
    sqlite3.SQLITE_AUTH,
}


def translate_error(exc: BaseException, path: str) -> StoreError:
    """The one boundary: a sqlite3/aiosqlite error as a ``StoreError``."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ValueError) and not isinstance(exc, sqlite3.Error):
        # aiosqlite: "Connection closed" / "no active connection"
        return StoreClosedError(f"SQLiteEventStore({path!r}) is closed: {exc}")
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        if primary in _CORRUPT_CODES:
            return StoreCorruptError(f"{path!r} is not a readable statelog log ({name}: {exc})")
        if primary in _UNAVAILABLE_CODES:
            return StoreUnavailableError(f"SQLite database {path!r} is unavailable ({name}: {exc})")
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return StoreClosedError(f"SQLiteEventStore({path!r}) is closed: {exc}")
        return StoreError(f"SQLite error on {path!r} ({name}: {exc})")
    return StoreError(f"SQLite error on {path!r}: {exc!r}")


async def prepare_schema(
    conn: aiosqlite.Connection,
    path: str,
    *,
    synchronous: str,
    busy_timeout: float,
    codec: Codec | None,
) -> Codec:
    """Set WAL and the pragmas, create the tables in a new file, check an old one.

    Returns the codec the file stores events with. A file that is not a
    statelog event log raises ``StoreCorruptError``.
    """
    mode = await conn.execute_fetchall("PRAGMA journal_mode=WAL")
    if not mode or str(list(mode)[0][0]).lower() != "wal":
        raise StoreUnavailableError(f"cannot put {path!r} in WAL mode (got {mode!r})")
    await conn.execute(f"PRAGMA synchronous={synchronous}")
    await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    tables = {
        row[0]
        for row in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    if "eventstore_meta" not in tables:
        if tables & {"events", "streams"}:
            raise StoreCorruptError(
                f"{path!r} holds 'events'/'streams' tables but no eventstore_meta: "
                "it is not a statelog event log"
            )
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                await conn.execute(statement)
            await conn.executemany(
                "INSERT OR IGNORE INTO eventstore_meta (key, value) VALUES (?, ?)",
                [
                    ("format", FORMAT),
                    ("format_version", str(FORMAT_VERSION)),
                    ("codec", (codec or MSGPACK).name),
                ],
            )
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
    meta: dict[str, str] = {
        str(key): str(value)
        for key, value in await conn.execute_fetchall("SELECT key, value FROM eventstore_meta")
    }
    if meta.get("format") != FORMAT:
        raise StoreCorruptError(
            f"{path!r} is not a statelog event log: format {meta.get('format')!r}, "
            f"expected {FORMAT!r}"
        )
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) != FORMAT_VERSION:
        raise StoreCorruptError(
            f"{path!r} has event log format version {version!r}; this statelog "
            f"reads version {FORMAT_VERSION}"
        )
    codec_name = meta.get("codec")
    if codec_name not in ("json", "msgpack"):
        raise StoreCorruptError(f"{path!r} names an unknown codec {codec_name!r}")
    if codec is not None and codec.name != codec_name:
        raise StoreError(
            f"{path!r} stores events with codec {codec_name!r}; "
            f"it cannot be opened with codec={codec.name!r}"
        )
    return get_codec("json" if codec_name == "json" else "msgpack")
