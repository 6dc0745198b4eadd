"""Snapshots of folded state, so resuming an app replays only the events after one.

A ``Snapshot`` is the state of one stream after ``sequence_id``, with the hash
of that event (and its global position, and the Kafka offset if any). The
``SnapshotStore`` keeps them in SQLite, in its own table and over its own
connection (it may share the event store's file). Snapshots are a cache, never
the truth: one that fails to decode, whose checksum does not hold, or whose
``event_hash`` does not match the event in the log is skipped with a
``SnapshotSkippedWarning`` and an older one (or the start of the stream) is
used. State is stored as msgspec msgpack: decoding never runs code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import sqlite3
import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, NamedTuple, Self

import aiosqlite
import msgspec

from ._aiosqlite import close_quietly, connect_aiosqlite
from ._base import EventStore, check_count, check_stream_args, fold
from ._chain import hash_bytes
from ._codec import Codec, to_plain
from ._errors import (
    EncodingError,
    InvalidEventError,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    UsageError,
)
from ._event import Event, StreamId, utcnow
from ._resource import AsyncResource
from .sqlite import _read
from .sqlite._schema import file_stamp, read_only_uri, translate_error
from .sqlite._store import SQLiteEventStore

__all__ = [
    "SNAPSHOT_SCHEMA_VERSION",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotSkippedWarning",
    "SnapshotBackend",
    "SnapshotStore",
    "LoadedStream",
    "load_state",
    "load_stream",
]

#: The snapshot format this statelog writes; newer ones are skipped on load.
SNAPSHOT_SCHEMA_VERSION = 1


class SnapshotSkippedWarning(UserWarning):
    """A stored snapshot could not be used; an older one (or a full replay) is used instead."""


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The folded state of one stream after event ``sequence_id``.

    ``event_hash`` is the hash of that event, ``position`` its global position
    in the event store (``-1`` if unknown); a resume passes it to the store as
    ``after_position``, so a store that can seek (Kafka) starts there.
    """

    partition_key: str
    app_id: str
    sequence_id: int
    state: dict[str, Any]
    position: int
    event_hash: str
    created_at: datetime = msgspec.field(default_factory=utcnow)
    schema_version: int = SNAPSHOT_SCHEMA_VERSION

    @property
    def stream(self) -> StreamId:
        return StreamId(self.partition_key, self.app_id)


#: A snapshot this small (its encoded state, in bytes) is never held back by
#: ``SnapshotPolicy.bytes_per_event``: it costs well under a millisecond to write.
SMALL_SNAPSHOT_BYTES: Final = 16 * 1024


class SnapshotPolicy(msgspec.Struct, frozen=True):
    """When to take a snapshot: every ``every`` events and/or ``seconds``, and at halt,
    within a budget of ``bytes_per_event``.

    Pure: the engine counts events and time since the last snapshot, keeps the
    last snapshot's size, and asks ``due``. ``None`` turns a trigger off.

    A snapshot holds the whole state, so a state that grows at every step (a
    chat's message list) would cost a whole copy every ``every`` events: the
    bytes written grow with the square of the history, and so does the file
    when every snapshot is kept. ``bytes_per_event`` bounds that: once the last
    snapshot is over ``SMALL_SNAPSHOT_BYTES``, the next one is due only when
    ``events_since * bytes_per_event`` reaches its size. The snapshots then add
    up to about ``bytes_per_event`` bytes per event, whatever the state's size;
    a resume replays at most ``last size / bytes_per_event`` events. ``None``
    removes the bound.
    """

    every: int | None = 100
    seconds: float | None = None
    at_halt: bool = True
    bytes_per_event: int | None = 256

    def __post_init__(self) -> None:
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ValueError(
                f"SnapshotPolicy.every must be an int >= 1 or None, got {self.every!r}"
            )
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"SnapshotPolicy.seconds must be > 0 or None, got {self.seconds!r}")
        if self.bytes_per_event is not None and (
            type(self.bytes_per_event) is not int or self.bytes_per_event < 1
        ):
            raise ValueError(
                "SnapshotPolicy.bytes_per_event must be an int >= 1 or None, "
                f"got {self.bytes_per_event!r}"
            )

    def due(
        self,
        events_since: int,
        seconds_since: float,
        *,
        halted: bool = False,
        last_bytes: int | None = None,
    ) -> bool:
        """Whether a snapshot is due after ``events_since`` new events and ``seconds_since``.

        ``last_bytes`` is the size of the last snapshot's state, if known. Never
        due when nothing happened since the last snapshot, nor (with
        ``bytes_per_event``) before the events since pay for a snapshot that large.
        """
        if events_since <= 0:
            return False
        if (
            self.bytes_per_event is not None
            and last_bytes is not None
            and last_bytes > SMALL_SNAPSHOT_BYTES
            and events_since * self.bytes_per_event < last_bytes
        ):
            return False
        if halted and self.at_halt:
            return True
        if self.every is not None and events_since >= self.every:
            return True
        return self.seconds is not None and seconds_since >= self.seconds


# --------------------------------------------------------------------------- encoding

_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])
_digest_encoder = msgspec.msgpack.Encoder()


def _digest(key: bytes | None, row: tuple[str, str, int, int, str, bytes]) -> str:
    """A checksum (HMAC with a key) over a snapshot's identity, chain link and state bytes."""
    return hash_bytes(_digest_encoder.encode(row), key)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY,
    partition_key TEXT NOT NULL,
    app_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    event_hash TEXT NOT NULL,
    kafka_partition INTEGER,
    kafka_offset INTEGER,
    created_at TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    state BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS snapshots_stream_seq
    ON snapshots (partition_key, app_id, sequence_id);
"""

_COLUMNS = (
    "partition_key, app_id, sequence_id, position, event_hash, kafka_partition, "
    "kafka_offset, created_at, schema_version, digest, state"
)
_SELECT = (
    "SELECT partition_key, app_id, sequence_id, position, event_hash, kafka_partition, "
    "kafka_offset, created_at, schema_version, digest, CAST(state AS BLOB) FROM snapshots "
    "WHERE partition_key = ? AND app_id = ? AND sequence_id <= ? "
    "ORDER BY sequence_id DESC LIMIT ?"
)
_INSERT = f"INSERT OR REPLACE INTO snapshots ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_PRUNE = (
    "DELETE FROM snapshots WHERE partition_key = ? AND app_id = ? AND sequence_id < ("
    " SELECT sequence_id FROM snapshots WHERE partition_key = ? AND app_id = ?"
    " ORDER BY sequence_id DESC LIMIT 1 OFFSET ?)"
)
_PAGE = 8
_MAX_SEQUENCE = 2**63 - 1


class _Skip(Exception):
    """Internal: why one stored snapshot cannot be used."""


def _translate(exc: sqlite3.Error, path: str, what: str) -> StoreError:
    return translate_error(exc, path, doing=f"snapshot store: {what}")


class SnapshotBackend(AsyncResource, ABC):
    """What ``load_state`` and the engine ask of a snapshot store (an ABC).

    ``SnapshotStore`` (SQLite) and ``statelog.eventstore.redis.RedisSnapshotStore``
    implement it; a new backend subclasses it and passes the same tests.
    """

    @abstractmethod
    async def save(self, snapshot: Snapshot) -> int | None:
        """Store ``snapshot`` (replacing one at the same sequence).

        Return the size in bytes of the state as stored (``SnapshotPolicy``'s
        ``bytes_per_event`` spaces snapshots by it), or None if not known.
        """

    @abstractmethod
    async def load(
        self,
        partition_key: str,
        app_id: str,
        *,
        max_sequence: int | None = None,
        store: EventStore | None = None,
    ) -> Snapshot | None:
        """The newest usable snapshot at or before ``max_sequence``, checked against ``store``."""

    @abstractmethod
    async def prune(self, partition_key: str, app_id: str, *, keep_last: int) -> int:
        """Keep the newest ``keep_last`` snapshots of a stream; return how many went."""

    @abstractmethod
    async def sequences(self, partition_key: str, app_id: str) -> list[tuple[int, int]]:
        """``(sequence_id, position)`` of every stored snapshot of a stream, oldest first."""


class SnapshotStore(SnapshotBackend):
    """Snapshots in SQLite (aiosqlite, WAL), in table ``snapshots`` of ``path``.

    ``path`` may be the event store's own file: the snapshot store keeps its own
    table and connection. ``keep_last`` prunes each stream to its newest N
    snapshots on every save. ``hmac_key`` signs each snapshot's checksum, so a
    snapshot edited without the key is skipped on load.

    ``read_only=True`` opens an existing statelog file through a ``mode=ro``
    URI: no table is created, no journal mode switched, nothing written;
    ``save`` and ``prune`` raise ``UsageError``. A file with no snapshots yet
    has none to load.

    Open with ``async with SnapshotStore(path) as snapshots``,
    ``await SnapshotStore.open(path)`` or ``await SnapshotStore(path).connect()``;
    close with ``aclose()``. An instance garbage-collected open warns with
    ``ResourceWarning``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_last: int | None = None,
        hmac_key: bytes | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        read_only: bool = False,
    ) -> None:
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be an int >= 1 or None, got {keep_last!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = os.fspath(path)
        self.keep_last = keep_last
        self.hmac_key = hmac_key
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        self._conn: aiosqlite.Connection | None = None
        self._has_table = True
        self._closed = False
        # read-only and immutable: the file as it was opened (reopened once it changes)
        self._stamp: tuple[int, int, int, int, bool] | None = None
        self._read_turn: asyncio.Lock | None = None  # read-only: one read at a time
        self._connect_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._conn is not None else "unopened"
        return f"SnapshotStore({self.path!r}, {state})"

    @property
    def connected(self) -> bool:
        """Whether the store is open: connected and not closed yet."""
        return self._conn is not None

    # --- lifecycle

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> SnapshotStore:
        """Create and connect a snapshot store."""
        return await cls(path, **kwargs).connect()

    async def connect(self) -> Self:
        """Open the connection and create the table if needed. Idempotent, also
        when called concurrently (two apps built at once on one unopened store)."""
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")
        if self._conn is not None:
            return self
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._closed:
                raise StoreClosedError(f"{self!r} is closed")
            if self._conn is None:
                await self._open_connection()
        return self

    async def _open_connection(self) -> None:
        if self.read_only:
            self._conn = await self._connect_read_only()
            return
        conn = None
        try:
            conn = await connect_aiosqlite(self.path, timeout=self.busy_timeout)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.synchronous}")
            await conn.executescript(_SCHEMA)
        except BaseException as exc:  # a cancel too: the connection is closed, not leaked
            await close_quietly(conn)
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path, f"cannot open {self.path!r}") from exc
            raise
        self._conn = conn

    async def _connect_read_only(self) -> aiosqlite.Connection:
        """Open through a ``mode=ro`` URI; refuse a file that is not a statelog file."""
        before = file_stamp(self.path)
        uri, immutable = read_only_uri(self.path)
        self._stamp = before if immutable else None
        conn = None
        try:
            conn = await connect_aiosqlite(uri, uri=True, timeout=self.busy_timeout)
            tables = {
                row[0]
                for row in await conn.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        except BaseException as exc:  # a cancel too: the connection is closed, not leaked
            await close_quietly(conn)
            if not isinstance(exc, sqlite3.Error):
                raise
            error = translate_error(exc, self.path)
            if isinstance(error, StoreCorruptError):
                error = StoreCorruptError(
                    f"{self.path!r} is not a SQLite database ({exc}): "
                    "expected a statelog file with snapshots"
                )
            raise error from exc
        if not tables & {"snapshots", "eventstore_meta"}:
            await conn.close()
            found = ", ".join(sorted(tables)) if tables else "no tables at all"
            raise StoreCorruptError(
                f"{self.path!r} is a SQLite database but not a statelog file: it holds "
                f"{found}; expected a 'snapshots' or an 'eventstore_meta' table"
            )
        self._has_table = "snapshots" in tables
        return conn

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> Self:
        return await self.connect()

    def __del__(self) -> None:
        if getattr(self, "_conn", None) is not None and not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise UsageError(f"{self!r} is read-only: it cannot {what} snapshots")

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            if self._closed:
                raise StoreClosedError(f"{self!r} is closed")
            raise StoreClosedError(f"{self!r} is not connected; use connect() or async with")
        return self._conn

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection to read through.

        Read-only, reads take turns, and an immutable connection is reopened
        first if the file has changed (so none is closed under another read).
        """
        if not self.read_only:
            yield self._connection()
            return
        if self._read_turn is None:
            self._read_turn = asyncio.Lock()
        async with self._read_turn:
            conn = self._connection()
            if self._stamp is not None and file_stamp(self.path) != self._stamp:
                self._conn = None
                await conn.close()
                conn = self._conn = await self._connect_read_only()
            yield conn

    # --- writing

    async def save(self, snapshot: Snapshot) -> int:
        """Store ``snapshot`` (replacing one at the same sequence); prune to ``keep_last``.

        Return the size in bytes of its encoded state.
        """
        self._check_writable("save")
        conn = self._connection()
        if not isinstance(snapshot, Snapshot):
            raise InvalidEventError(f"expected a Snapshot, got {type(snapshot).__name__}")
        if not isinstance(snapshot.app_id, str) or not snapshot.app_id:
            raise InvalidEventError("snapshot app_id must be a non-empty string")
        if not isinstance(snapshot.partition_key, str):
            raise InvalidEventError("snapshot partition_key must be a str")
        if not isinstance(snapshot.sequence_id, int) or snapshot.sequence_id < 0:
            raise InvalidEventError(
                f"snapshot sequence_id must be an int >= 0, got {snapshot.sequence_id!r}"
            )
        if not isinstance(snapshot.state, Mapping):
            raise EncodingError("snapshot state must be a dict", path="$.state")
        state = to_plain(dict(snapshot.state), path="$.state")
        blob = _state_encoder.encode(state)
        identity = (
            snapshot.partition_key,
            snapshot.app_id,
            snapshot.sequence_id,
            snapshot.position,
            snapshot.event_hash,
            blob,
        )
        row = (
            *identity[:5],
            None,  # kafka_partition, kafka_offset: columns of format 1, no longer written
            None,
            snapshot.created_at.isoformat(),
            snapshot.schema_version,
            _digest(self.hmac_key, identity),
            blob,
        )
        stream = (snapshot.partition_key, snapshot.app_id)
        try:
            await conn.execute(_INSERT, row)
            if self.keep_last is not None:
                await conn.execute(_PRUNE, (*stream, *stream, self.keep_last - 1))
            await conn.commit()
        except sqlite3.Error as exc:
            await _rollback(conn)
            raise _translate(exc, self.path, "cannot save snapshot") from exc
        return len(blob)

    async def prune(self, partition_key: str, app_id: str, *, keep_last: int) -> int:
        """Delete all but the newest ``keep_last`` snapshots of a stream; return how many."""
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an int >= 1, got {keep_last!r}")
        self._check_writable("prune")
        conn = self._connection()
        stream = (partition_key, app_id)
        try:
            cursor = await conn.execute(_PRUNE, (*stream, *stream, keep_last - 1))
            deleted = cursor.rowcount
            await cursor.close()
            await conn.commit()
        except sqlite3.Error as exc:
            await _rollback(conn)
            raise _translate(exc, self.path, "cannot prune snapshots") from exc
        return max(deleted, 0)

    # --- reading

    async def load(
        self,
        partition_key: str,
        app_id: str,
        *,
        max_sequence: int | None = None,
        store: EventStore | None = None,
    ) -> Snapshot | None:
        """The newest usable snapshot at or before ``max_sequence`` (``None`` if none).

        With ``store``, a snapshot is usable only if its ``event_hash`` equals the
        hash of the event at its sequence in ``store``. Unusable snapshots are
        skipped with a ``SnapshotSkippedWarning``.
        """
        check_stream_args(partition_key, app_id)
        check_count("max_sequence", max_sequence, optional=True)
        async with self._reading() as conn:
            if not self._has_table:  # a read-only file that has no snapshots yet
                return None
            upper = _MAX_SEQUENCE if max_sequence is None else max_sequence
            while upper >= 0:
                try:
                    rows = list(
                        await conn.execute_fetchall(_SELECT, (partition_key, app_id, upper, _PAGE))
                    )
                except sqlite3.Error as exc:
                    raise _translate(exc, self.path, "cannot read snapshots") from exc
                for row in rows:
                    try:
                        snapshot = self._decode(row)
                        if store is not None:
                            await _check_chain(snapshot, store)
                    except _Skip as why:
                        warnings.warn(
                            f"skipping snapshot of {StreamId(partition_key, app_id)} "
                            f"at sequence_id {row[2]}: {why}",
                            SnapshotSkippedWarning,
                            stacklevel=2,
                        )
                        continue
                    return snapshot
                if len(rows) < _PAGE:
                    break
                upper = int(rows[-1][2]) - 1
            return None

    async def sequences(self, partition_key: str, app_id: str) -> list[tuple[int, int]]:
        """``(sequence_id, position)`` of every stored snapshot of a stream, oldest first."""
        async with self._reading() as conn:
            if not self._has_table:
                return []
            try:
                rows = await conn.execute_fetchall(
                    "SELECT sequence_id, position FROM snapshots "
                    "WHERE partition_key = ? AND app_id = ? ORDER BY sequence_id",
                    (partition_key, app_id),
                )
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, "cannot read snapshots") from exc
            return [(int(r[0]), int(r[1])) for r in rows]

    def _decode(self, row: Any) -> Snapshot:
        (
            pk,
            app,
            seq,
            position,
            event_hash,
            _partition,
            _offset,
            created,
            version,
            digest,
            blob,
        ) = row
        if version != SNAPSHOT_SCHEMA_VERSION:
            raise _Skip(
                f"snapshot schema_version {version!r}, this statelog reads "
                f"{SNAPSHOT_SCHEMA_VERSION}"
            )
        if not isinstance(blob, bytes):
            raise _Skip(f"state is stored as {type(blob).__name__}, expected bytes")
        expected = _digest(self.hmac_key, (pk, app, seq, position, event_hash, blob))
        if not isinstance(digest, str) or not hmac.compare_digest(expected, digest):
            raise _Skip("checksum does not match the stored state (corrupt or edited)")
        try:
            state = _state_decoder.decode(blob)
            return Snapshot(
                partition_key=pk,
                app_id=app,
                sequence_id=seq,
                state=state,
                position=position,
                event_hash=event_hash,
                created_at=datetime.fromisoformat(created),
                schema_version=version,
            )
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            raise _Skip(f"cannot decode: {exc}") from exc


async def _check_chain(snapshot: Snapshot, store: EventStore) -> None:
    events = await store.read(
        snapshot.partition_key,
        snapshot.app_id,
        from_sequence=snapshot.sequence_id,
        to_sequence=snapshot.sequence_id,
    )
    if not events:
        raise _Skip(f"the log has no event at sequence_id {snapshot.sequence_id}")
    if not hmac.compare_digest(events[0].hash, snapshot.event_hash):
        raise _Skip("event_hash does not match the hash of that event in the log")


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # the original error is what matters
        await conn.rollback()


async def load_state(
    store: EventStore,
    snapshots: SnapshotBackend | None,
    partition_key: str,
    app_id: str,
    *,
    at_sequence: int | None = None,
) -> tuple[dict[str, Any], int]:
    """The state of a stream after ``at_sequence`` (default: its last event).

    Loads the newest usable snapshot at or before ``at_sequence`` (checked
    against the chain in ``store``), then folds the events after it. Returns the
    state and the last sequence id folded (``-1`` for an empty stream).

    A ``SQLiteEventStore`` with its snapshots in its own file does all of it
    in one call on its reader thread, in one read transaction.
    """
    loaded = await load_stream(
        store, snapshots, partition_key, app_id, at_sequence=at_sequence, tail=0
    )
    return loaded.state, loaded.last


class LoadedStream(NamedTuple):
    """What ``load_stream`` found (``tail`` and ``first`` as it documents)."""

    state: dict[str, Any]
    last: int  # the last sequence id folded; -1 for an empty stream
    tail: list[Event]  # the events ``last - tail + 1 .. last``, oldest first
    first: Event | None  # the stream's first event, when it came in the same read
    snapshot: int = -1  # the sequence id of the snapshot the fold started from; -1: none
    snapshot_bytes: int | None = None  # that snapshot's stored state, in bytes, if read


async def load_stream(
    store: EventStore,
    snapshots: SnapshotBackend | None,
    partition_key: str,
    app_id: str,
    *,
    at_sequence: int | None = None,
    tail: int = 4,
) -> LoadedStream:
    """``load_state``, plus the stream's last ``tail`` events up to ``last``.

    What a resume needs before its first step (the engine's ``load_position``
    reads the tail for the position and its first event for the graph).
    ``first`` is the stream's first event (sequence 0) when the store gave it
    in the same read; ``None`` otherwise (an empty stream, or a store without
    the one-call path): read it yourself if you need it.

    A ``SQLiteEventStore`` with its snapshots in its own file does all of it
    (snapshot, its check, the fold, the tail and the first event) in one call
    on its reader thread, in one read transaction: one hop from the loop
    instead of three.
    """
    check_stream_args(partition_key, app_id)
    check_count("at_sequence", at_sequence, optional=True)
    check_count("tail", tail)
    if (
        at_sequence is None
        and snapshots is not None
        and isinstance(store, SQLiteEventStore)
        and isinstance(snapshots, SnapshotStore)
        and _same_file(store.path, snapshots.path)
    ):
        snapshots._connection()  # (raises if it is closed, as ``load`` does)
        found: tuple[
            LoadedStream, tuple[int, int, str] | None, list[tuple[int, str]]
        ] = await store._read(
            _resume_on_reader,
            store.codec,
            store.path,
            partition_key,
            app_id,
            snapshots._decode,
            tail,
        )
        loaded, head, skipped = found
        if head is not None:  # the writer's first append to it can be one INSERT
            store._note_head(StreamId(partition_key, app_id), *head)
        for sequence_id, why in skipped:
            warnings.warn(
                f"skipping snapshot of {StreamId(partition_key, app_id)} "
                f"at sequence_id {sequence_id}: {why}",
                SnapshotSkippedWarning,
                stacklevel=2,
            )
        return loaded
    state, last, start = await _load_from_snapshot(
        store, snapshots, partition_key, app_id, at_sequence
    )
    window: list[Event] = []
    if tail > 0 and last >= 0:
        window = await store.read(
            partition_key, app_id, from_sequence=max(0, last - tail + 1), to_sequence=last
        )
    return LoadedStream(state, last, window, None, start - 1)


async def _load_from_snapshot(
    store: EventStore,
    snapshots: SnapshotBackend | None,
    partition_key: str,
    app_id: str,
    at_sequence: int | None,
) -> tuple[dict[str, Any], int, int]:
    """``load_state`` through the public calls of any store and snapshot backend, and
    the first sequence id it folded (the snapshot's + 1, or 0)."""
    snapshot = None
    if snapshots is not None:
        snapshot = await snapshots.load(
            partition_key, app_id, max_sequence=at_sequence, store=store
        )
    state: dict[str, Any] = dict(snapshot.state) if snapshot is not None else {}
    start = snapshot.sequence_id + 1 if snapshot is not None else 0
    hint = snapshot.position if snapshot is not None and snapshot.position >= 0 else None
    if at_sequence is None:
        folded, last = await store.fold_stream(
            partition_key, app_id, from_sequence=start, state=state, after_position=hint
        )
        return folded, last, start
    if at_sequence < start:
        return state, start - 1, start
    events = await store.read(
        partition_key, app_id, from_sequence=start, to_sequence=at_sequence, after_position=hint
    )
    last = events[-1].sequence_id if events else start - 1
    return fold(events, state), last, start


def _same_file(one: str, other: str) -> bool:
    return os.path.abspath(one) == os.path.abspath(other)


def _resume_on_reader(
    db: sqlite3.Connection,
    codec: Codec,
    path: str,
    partition_key: str,
    app_id: str,
    decode: Callable[[Any], Snapshot],
    tail: int,
) -> tuple[LoadedStream, tuple[int, int, str] | None, list[tuple[int, str]]]:
    """``load_stream`` on the store's reader thread: snapshot, its check, the fold, the tail.

    Returns what was loaded, the stream's head (its id in the file, last
    sequence id and hash: ``SQLiteEventStore._note_head``) and the snapshots
    skipped (sequence id, why), for the caller to warn about on its own thread.
    """
    db.execute("BEGIN")  # one read transaction: the snapshot and the events agree
    try:
        row = db.execute(
            "SELECT id FROM streams WHERE partition_key = ? AND app_id = ?",
            (partition_key, app_id),
        ).fetchone()
        stream_id: int | None = None if row is None else row[0]
        snapshot, size, skipped = _newest_usable(db, partition_key, app_id, decode, stream_id)
        state: dict[str, Any] = dict(snapshot.state) if snapshot is not None else {}
        if stream_id is None:  # no event was ever written to it
            return LoadedStream(state, -1, [], None), None, skipped
        start = snapshot.sequence_id + 1 if snapshot is not None else 0
        last, window, first, head_hash = _read.fold_tail(
            db, codec, path, (partition_key, app_id), stream_id, start, state, tail
        )
    finally:
        db.execute("COMMIT")
    head = None if head_hash is None else (stream_id, last, head_hash.hex())
    sized = size if snapshot is not None else None
    return LoadedStream(state, last, window, first, start - 1, sized), head, skipped


def _newest_usable(
    db: sqlite3.Connection,
    partition_key: str,
    app_id: str,
    decode: Callable[[Any], Snapshot],
    stream_id: int | None,
) -> tuple[Snapshot | None, int, list[tuple[int, str]]]:
    """What ``SnapshotStore.load(store=...)`` finds, read through the store's connection,
    with the size of its stored state (0 when none is found).

    ``stream_id`` is the stream's id in the ``streams`` table (``None``: it has
    none, so no snapshot of it matches the log). The newest snapshot is read
    alone first (it is the one used unless the file is damaged), then older
    ones a page at a time.
    """
    skipped: list[tuple[int, str]] = []
    upper, page = _MAX_SEQUENCE, 1
    while True:
        try:
            rows = db.execute(_SELECT, (partition_key, app_id, upper, page)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None, 0, skipped  # no snapshot was ever saved in this file
            raise
        for row in rows:
            try:
                snapshot = decode(row)
                found = None
                if stream_id is not None:
                    found = db.execute(
                        "SELECT hash FROM events WHERE stream_id = ? AND sequence_id = ?",
                        (stream_id, snapshot.sequence_id),
                    ).fetchone()
                if found is None:
                    raise _Skip(f"the log has no event at sequence_id {snapshot.sequence_id}")
                if not hmac.compare_digest(bytes(found[0]).hex(), snapshot.event_hash):
                    raise _Skip("event_hash does not match the hash of that event in the log")
            except _Skip as why:
                skipped.append((row[2], str(why)))
                continue
            return snapshot, len(row[-1]), skipped
        if len(rows) < page:
            return None, 0, skipped
        upper, page = int(rows[-1][2]) - 1, _PAGE
