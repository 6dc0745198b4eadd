"""The SQLite event log's file: connections, schema, format checks, the error boundary.

``translate_error`` is the one place sqlite3 (and aiosqlite) errors become
statelog's typed errors (``raise translate_error(exc, path) from exc``): the
event store, the snapshot store, the Kafka relay's checkpoint and the Kafka
index all use it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Literal
from urllib.parse import quote

from .._codec import MSGPACK, Codec, get_codec
from .._errors import StoreClosedError, StoreCorruptError, StoreError, StoreUnavailableError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WAL_LIMIT",
    "Synchronous",
    "connect",
    "connect_read_only",
    "prepare_schema",
    "read_format",
    "read_only_uri",
    "translate_error",
]

FORMAT = "statelog-eventstore"
FORMAT_VERSION = 1

Synchronous = Literal["NORMAL", "FULL"]

#: Each connection's ``journal_size_limit``: a WAL restarted after a checkpoint
#: is cut back to this size (4 MiB).
WAL_LIMIT = 4 * 1024 * 1024

#: ``wal_autocheckpoint`` (pages) of a connection at ``synchronous=FULL``, where
#: every commit syncs the WAL: a WAL checkpointed and restarted after ~800 KiB is
#: overwritten in place, while a growing one makes each fdatasync commit the file
#: system's journal too (the file's size changed). Same-run A/B, 450 durable steps
#: on a new file: 2,068 -> 3,219 steps/s; 3,000 steps: unchanged. NORMAL keeps
#: SQLite's 1,000 pages: there a checkpoint is the only sync, and more of them cost.
FULL_WAL_CHECKPOINT = 200

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


def translate_error(exc: BaseException, path: str, *, doing: str = "") -> StoreError:
    """The one boundary: a sqlite3 (or aiosqlite) error on ``path`` as a ``StoreError``.

    ``SQLITE_CORRUPT``/``NOTADB``/``FORMAT`` -> ``StoreCorruptError``; busy,
    locked, cannot open, I/O, full, read-only, permission, protocol ->
    ``StoreUnavailableError``; a closed connection (aiosqlite's ``ValueError``,
    sqlite3's "closed" ``ProgrammingError``) -> ``StoreClosedError``; anything
    else -> ``StoreError``. A ``StoreError`` passes through unchanged.
    ``doing`` says what failed ("cannot open the Kafka index"); it starts the
    message. Use as ``raise translate_error(exc, path) from exc``.
    """
    if isinstance(exc, StoreError):
        return exc
    lead = f"{doing}: " if doing else ""
    if isinstance(exc, ValueError) and not isinstance(exc, sqlite3.Error):
        # aiosqlite: "Connection closed" / "no active connection"
        return StoreClosedError(f"{lead}the connection to {path!r} is closed: {exc}")
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        if primary in _CORRUPT_CODES:
            return StoreCorruptError(f"{lead}{path!r} is not a readable database ({name}: {exc})")
        if primary in _UNAVAILABLE_CODES:
            return StoreUnavailableError(
                f"{lead}SQLite database {path!r} is unavailable ({name}: {exc})"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return StoreClosedError(f"{lead}the connection to {path!r} is closed: {exc}")
        return StoreError(f"{lead}SQLite error on {path!r} ({name}: {exc})")
    return StoreError(f"{lead}SQLite error on {path!r}: {exc!r}")


def connect(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A read-write connection in autocommit mode (the store's writer and reader).

    Creates the file if it does not exist. WAL is switched on by
    ``prepare_schema``; ``busy_timeout`` is how long a statement waits for a
    lock another connection holds.
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        if synchronous.upper() == "FULL":
            db.execute(f"PRAGMA wal_autocheckpoint={FULL_WAL_CHECKPOINT}")
    except BaseException:
        db.close()
        raise
    return db


def read_only_uri(path: str) -> tuple[str, bool]:
    """The ``file:...?mode=ro`` URI that opens ``path`` without ever writing to it.

    Returns it with whether it is ``immutable``: a file in WAL mode with no
    ``-wal`` file beside it (closed cleanly: every commit is in the file
    itself) is opened so, for otherwise SQLite would create ``-wal`` and
    ``-shm`` files next to it to read it, and leave them there. A reader of an
    immutable file must reopen once the file changes at all (``file_stamp``):
    SQLite assumes it never does. A file
    with a ``-wal`` is read through it, as SQLite allows (its ``-shm`` must
    exist or be creatable). A missing file is ``StoreUnavailableError``; an
    empty one ``StoreCorruptError``.
    """
    if not os.path.exists(path):
        raise StoreUnavailableError(f"{path!r} does not exist: expected a statelog event log")
    if os.path.isdir(path):
        raise StoreUnavailableError(f"{path!r} is a directory, not a statelog event log")
    if os.path.getsize(path) == 0:
        raise StoreCorruptError(
            f"{path!r} is an empty (0-byte) file, not a statelog event log "
            f"(expected a SQLite database with format {FORMAT!r})"
        )
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    immutable = _wal_mode(path) and not os.path.exists(path + "-wal")
    return (uri + "&immutable=1" if immutable else uri), immutable


def file_stamp(path: str) -> tuple[int, int, int, int, bool]:
    """What changes when any process writes ``path``: its inode, size, mtime, ctime, ``-wal``.

    An ``immutable`` connection (``read_only_uri``) sees none of another
    process's commits, not even one that opened, appended and closed (so
    that no ``-wal`` is left): its reader compares this stamp, taken before
    it opened, before every read, and reopens when it differs.
    """
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0, 0, False)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, os.path.exists(path + "-wal"))


def connect_read_only(path: str, *, busy_timeout: float) -> tuple[sqlite3.Connection, bool]:
    """A connection that cannot write, and whether it is ``immutable`` (``read_only_uri``)."""
    uri, immutable = read_only_uri(path)
    db = sqlite3.connect(
        uri, uri=True, isolation_level=None, timeout=busy_timeout, check_same_thread=False
    )
    try:
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    except BaseException:
        db.close()
        raise
    return db, immutable


def _wal_mode(path: str) -> bool:
    """Whether the file's header says WAL (bytes 18 and 19 are 2)."""
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        return False
    return len(header) == 20 and header.startswith(b"SQLite format 3\x00") and header[18] == 2


def prepare_schema(
    db: sqlite3.Connection, path: str, *, codec: Codec | None, busy_timeout: float
) -> Codec:
    """Put the file in WAL mode, create the tables in a new file, check an old one.

    Returns the codec the file stores events with. A file that is not a
    statelog event log raises ``StoreCorruptError``. Processes creating one new
    file at once can find it busy while switching it to WAL: retried for
    ``busy_timeout``.
    """
    deadline = time.monotonic() + busy_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            return _prepare_schema(db, path, codec)
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(min(0.01 * attempt, 0.2))


def _prepare_schema(db: sqlite3.Connection, path: str, codec: Codec | None) -> Codec:
    mode = db.execute("PRAGMA journal_mode=WAL").fetchall()
    if not mode or str(mode[0][0]).lower() != "wal":
        raise StoreUnavailableError(f"cannot put {path!r} in WAL mode (got {mode!r})")
    tables = _tables(db)
    if "eventstore_meta" not in tables:
        if tables & {"events", "streams"}:
            raise StoreCorruptError(
                f"{path!r} holds 'events'/'streams' tables but no eventstore_meta: "
                "it is not a statelog event log"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.executemany(
                "INSERT OR IGNORE INTO eventstore_meta (key, value) VALUES (?, ?)",
                [
                    ("format", FORMAT),
                    ("format_version", str(FORMAT_VERSION)),
                    ("codec", (codec or MSGPACK).name),
                ],
            )
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
    return read_format(db, path, codec)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_format(db: sqlite3.Connection, path: str, codec: Codec | None = None) -> Codec:
    """Check that ``db`` is a statelog event log this version reads; return its codec.

    Only reads, so a read-only connection uses it as it is.
    """
    tables = _tables(db)
    if "eventstore_meta" not in tables:
        found = ", ".join(sorted(tables)) if tables else "no tables at all"
        raise StoreCorruptError(
            f"{path!r} is a SQLite database but not a statelog event log: it holds "
            f"{found}; expected the tables eventstore_meta, streams and events"
        )
    meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM eventstore_meta")}
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
