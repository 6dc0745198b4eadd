"""``SQLiteEventStore``: the embedded default log, one SQLite file in WAL mode.

File layout (format version 1)::

    eventstore_meta(key TEXT PRIMARY KEY, value TEXT)   -- format, format_version, codec
    streams(id INTEGER PRIMARY KEY, partition_key, app_id, UNIQUE(partition_key, app_id))
    events(position INTEGER PRIMARY KEY,                 -- global commit order, from 1
           stream_id, sequence_id, hash BLOB,            -- raw 32-byte digest
           body BLOB,                                    -- Codec.encode_body(event)
           UNIQUE(stream_id, sequence_id))               -- no fork, ever

``prev_hash`` is not stored: it is the hash of the stream's previous row
(``""`` for sequence 0). The ``UNIQUE(stream_id, sequence_id)`` constraint is
the arbiter between writers, in this process or another: an append whose
sequence ids are taken fails as a whole with ``ConcurrencyError``.

One writer at a time: when the store is idle, a caller commits its own append
right away (one statement, no task switch); appends that arrive while a write
is in flight are coalesced into the next group and written with one multi-row
``INSERT`` in autocommit mode: one statement is one atomic transaction. Every
caller awaits its own future, resolved when its rows are committed. If a
grouped statement fails on a conflict, the group is retried one append at a
time so only the writer that is behind gets ``ConcurrencyError``.

Inline commits (``synchronous="NORMAL"`` only). An aiosqlite call is a thread
hand-off, 40-300 us on a loaded 2-core machine, while a WAL commit without
fsync is 20-35 us. So the store keeps aiosqlite for connecting, reads and
anything that may wait, and commits appends (lean and grouped) through a
second, stdlib connection ON THE EVENT-LOOP THREAD: the loop is blocked for
one small commit (~30 us; a few hundred for a group of 100) instead of a
hand-off. That connection cannot block for long: ``busy_timeout=0`` (a write
lock held elsewhere raises ``SQLITE_BUSY`` at once, nothing is written, and the
statement goes to aiosqlite's thread, which waits up to ``busy_timeout``) and
``wal_autocheckpoint=0`` (once the ``-wal`` file passes ``WAL_LIMIT``, 4 MiB
or ~1000 pages, ``PRAGMA wal_checkpoint(PASSIVE)`` runs on aiosqlite's thread
while inline commits go on, then once more for what they wrote meanwhile,
holding the write turn, so the WAL can be restarted and stays bounded). A
caller that commits ``_STREAK`` appends in a row without suspending yields
once, so other tasks run and concurrent appenders group.
With ``FULL`` every commit fsyncs, so every write uses aiosqlite's thread.
``inline_commits``, ``thread_commits``, ``busy_fallbacks`` and ``checkpoints``
count what happened.

sqlite3 and aiosqlite errors are translated in one place,
``_sqlite_schema.translate_error``. This module is the writing half and the
lifecycle; the read methods live in ``_sqlite_read.SQLiteReads``, the file's
schema and checks in ``_sqlite_schema``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from os import PathLike, fspath
from typing import Any, Self

import aiosqlite
import msgspec

from .._base import DEFAULT_MAX_EVENT_SIZE, EventStore, prepare_batch, prepare_one, warn_unclosed
from .._chain import seal
from .._codec import Codec, CodecName, get_codec
from .._errors import (
    ConcurrencyError,
    StatelogError,
    StoreClosedError,
    StoreError,
)
from .._event import Event, Recorded, StreamId
from ._read import SQLiteReads
from ._schema import Synchronous, prepare_schema, translate_error
from ._write import WAL_LIMIT, SQLiteWrites, open_direct

__all__ = ["SQLiteEventStore"]

#: Rows per multi-row INSERT (4 bound variables each, under SQLite's limit).
_ROWS_PER_STATEMENT = 1000 if sqlite3.sqlite_version_info >= (3, 32) else 240
#: At most this many events go into one group.
_GROUP_EVENTS = 4 * _ROWS_PER_STATEMENT
_ROW_SQL: dict[int, str] = {}
#: ``tuple.__new__(Recorded, (p, e))`` is ``Recorded(p, e)`` without the Python-level
#: ``__new__`` of a NamedTuple.
_new_tuple = tuple.__new__
#: Inline commits in a row before the committing caller yields to the loop once.
_STREAK = 16


def _stored(sealed: list[Event], bodies: Sequence[bytearray]) -> list[bytearray]:
    """What the rows of ``sealed`` store, flat: raw digest, body, raw digest, body, ...

    ``bytearray``, not ``bytes``: sqlite3 binds it without looking for an adapter.
    """
    fromhex = bytearray.fromhex
    stored: list[bytearray] = []
    for event, body in zip(sealed, bodies, strict=True):
        stored += (fromhex(event.hash), body)
    return stored


def _add_rows(
    params: list[Any], db_id: int | None, sealed: Sequence[Event], stored: Sequence[bytearray]
) -> None:
    """Add the bound values of ``sealed``'s rows (``stored``: see ``_stored``) to ``params``."""
    for i, event in enumerate(sealed):
        params += (db_id, event.sequence_id, stored[2 * i], stored[2 * i + 1])


def _insert_sql(rows: int) -> str:
    sql = _ROW_SQL.get(rows)
    if sql is None:
        values = ",".join(["(?,?,?,?)"] * rows)
        sql = f"INSERT INTO events (stream_id, sequence_id, hash, body) VALUES {values}"
        if len(_ROW_SQL) < 256:
            _ROW_SQL[rows] = sql
    return sql


class _Head:
    """What this process knows of a stream's end: db id, last sequence, last hash."""

    __slots__ = ("stream", "db_id", "last", "hash")

    def __init__(self, stream: StreamId, db_id: int | None, last: int, hash: str) -> None:
        self.stream = stream  # its key in the heads, which a request can share
        self.db_id = db_id
        self.last = last
        self.hash = hash


class _Request(msgspec.Struct, gc=False):
    """One caller's append waiting in the writer queue.

    A msgspec struct with ``gc=False``: cheaper to build than a slotted class,
    and not tracked by the cyclic GC. With 100 concurrent appenders, the
    requests alive in one round no longer push the GC's young generation past
    its threshold by themselves (measured: half the young collections of a
    100-stream run). A waiting request is part of a cycle the GC cannot see
    (request -> future -> waiting task -> store -> queue -> request); the store
    breaks it itself: a request leaves the queue when its group is taken, and
    ``aclose`` fails whatever is still queued.
    """

    stream: StreamId
    expected: int
    sealed: list[Event]
    sealed_from: str
    # each sealed event's raw digest and body, flat (one list, not two: with
    # 100 appenders, one list fewer per request keeps a round under the GC's
    # young threshold, measured: 94 collections per 20,000 appends, not 183)
    stored: list[bytearray]
    future: asyncio.Future[list[Recorded]]
    head: _Head | None = None  # the stream's head, set when its group is checked


class SQLiteEventStore(SQLiteWrites, SQLiteReads, EventStore):
    """An event store in one SQLite file (WAL), safe across tasks and processes.

    ``synchronous="NORMAL"`` (the default) survives a process crash and loses
    no committed event; ``"FULL"`` also survives power loss at the cost of an
    fsync per commit. ``codec`` picks the stored body format for a new file
    (``"msgpack"`` by default); an existing file keeps the codec it was created
    with. ``busy_timeout`` is how long (seconds) to wait for another process
    holding the write lock before ``StoreUnavailableError``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        hmac_key: bytes | None = None,
        codec: Codec | CodecName | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        busy_timeout: float = 5.0,
    ) -> None:
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if hmac_key is not None and not isinstance(hmac_key, bytes):
            raise TypeError(f"hmac_key must be bytes or None, got {type(hmac_key).__name__}")
        if max_event_size <= 0:
            raise ValueError(f"max_event_size must be positive, got {max_event_size}")
        self.path = fspath(path)
        self.synchronous: Synchronous = "FULL" if sync == "FULL" else "NORMAL"
        self.hmac_key = hmac_key
        self._codec_asked = None if codec is None else get_codec(codec)
        self.codec: Codec = self._codec_asked or get_codec("msgpack")
        self.max_event_size = max_event_size
        self.busy_timeout = busy_timeout
        self._conn: aiosqlite.Connection | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._heads: dict[StreamId, _Head] = {}
        self._pending: deque[_Request] = deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writing = False  # a group is being committed (inline or by the writer task)
        self._inline = False  # ... by a caller itself, not the writer task
        self._crowded = False  # the last group held more than one append
        self._in_flight: asyncio.Task[None] | None = None  # a group whose caller left
        self._closing = False
        self._changed: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None
        self._subscribers = 0
        self._loop: asyncio.AbstractEventLoop  # set by connect()
        # The inline path: a stdlib connection used on the loop thread (NORMAL only).
        self._direct: sqlite3.Connection | None = None
        self._wal_pages = 0  # pages (estimated) written inline since the WAL's size was read
        self._checkpointing: asyncio.Task[None] | None = None  # a checkpoint on the thread
        self._checkpoint_holds = False  # ... in its second half: inline commits wait
        self._streak = 0  # inline commits since the committing caller last yielded
        #: Write statements committed on the loop thread (the inline path).
        self.inline_commits = 0
        #: Write statements committed on aiosqlite's thread.
        self.thread_commits = 0
        #: Inline attempts that found the write lock taken and went to the thread.
        self.busy_fallbacks = 0
        #: PASSIVE checkpoints run on aiosqlite's thread for the inline path.
        self.checkpoints = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._conn is not None else "new"
        return f"SQLiteEventStore({self.path!r}, codec={self.codec.name!r}, {state})"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, path: str | PathLike[str], **options: Any) -> Self:
        """Create a store and connect it (``async with await SQLiteEventStore.open(p)``)."""
        store = cls(path, **options)
        await store.connect()
        return store

    async def connect(self) -> Self:
        """Open the file, create or check the schema. Idempotent."""
        self._check_open()
        if self._conn is not None:
            return self
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._conn is None:
                await self._open_connection()
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def _open_connection(self) -> None:
        conn = aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        try:
            await conn
        except (sqlite3.Error, ValueError) as exc:
            # aiosqlite stops its thread without waiting; wait here, or the thread
            # would report to this loop after it may have closed.
            thread = getattr(conn, "_thread", None)
            for _ in range(1000):
                if thread is None or not thread.is_alive():
                    break
                await asyncio.sleep(0.002)
            raise translate_error(exc, self.path) from exc
        try:
            deadline = time.monotonic() + self.busy_timeout
            for attempt in itertools.count(1):
                try:
                    self.codec = await prepare_schema(
                        conn,
                        self.path,
                        synchronous=self.synchronous,
                        busy_timeout=self.busy_timeout,
                        codec=self._codec_asked,
                    )
                    break
                except sqlite3.OperationalError as exc:
                    # Processes opening a new file at once: switching it to WAL
                    # can fail busy without waiting; try again for busy_timeout.
                    busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(min(0.01 * attempt, 0.2))
            await conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            if self.synchronous == "NORMAL":
                self._direct = await asyncio.to_thread(open_direct, self.path)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, StatelogError | asyncio.CancelledError):
                raise
            if isinstance(exc, sqlite3.Error | ValueError):
                raise translate_error(exc, self.path) from exc
            raise
        self._conn = conn
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._start_writer()

    def _start_writer(self) -> None:
        assert self._wake is not None
        self._writer = asyncio.get_running_loop().create_task(
            _writer_loop(weakref.ref(self), self._wake), name=f"statelog-writer:{self.path}"
        )

    async def aclose(self) -> None:
        """Finish queued appends, stop the writer, close the file. Idempotent."""
        if self._closed:
            return
        self._closing = True
        writer = self._writer
        if writer is not None and self._wake is not None:
            self._wake.set()
            try:
                await asyncio.shield(writer)
            except asyncio.CancelledError:
                if not writer.done():
                    raise
        self._closed = True
        self._fail_pending(StoreClosedError(f"{self!r} closed before the append was written"))
        checkpointing = self._checkpointing
        if checkpointing is not None:
            await asyncio.wait([checkpointing])
        if self._changed is not None:
            self._changed.set()  # subscribers wake and raise StoreClosedError
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and not getattr(self, "_closed", True):
            warn_unclosed(self)
            self._conn = None
            direct = getattr(self, "_direct", None)
            if direct is not None:
                self._direct = None
                direct.close()
            wake = getattr(self, "_wake", None)
            try:
                if wake is not None:
                    wake.set()
            except RuntimeError:  # the loop is gone already
                pass
            conn.stop()

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise StoreClosedError(f"SQLiteEventStore({self.path!r}) is closed")

    async def _connected(self) -> aiosqlite.Connection:
        """The open connection, connecting lazily; ``StoreClosedError`` after ``aclose``."""
        if self._closed:
            raise StoreClosedError(f"SQLiteEventStore({self.path!r}) is closed")
        if self._conn is None:
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement in one hop; translate driver errors."""
        conn = self._conn
        if conn is None or self._closed:
            conn = await self._connected()
        while self._gate is not None:
            await self._gate.wait()
        try:
            return await conn.execute_fetchall(sql, params)  # type: ignore[return-value]
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self.path) from exc

    # ------------------------------------------------------------------ writing

    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        self._check_open()
        if self._conn is None:
            await self.connect()
            self._check_open()
        # Validated, encoded and sealed before anything else runs, so a list the
        # caller changes afterwards changes nothing: no copy of it is kept.
        kind = type(events)
        batch = events if kind is tuple or kind is list else list(events)
        head = None
        if batch and isinstance(first := batch[0], Event):
            # a plain tuple finds the StreamId key (same hash, equal) without building one
            head = self._heads.get((first.partition_key, first.app_id))  # type: ignore[call-overload]
        if (
            head is not None
            and head.last == expected_sequence
            and len(batch) == 1
            and type(expected_sequence) is int
        ):
            # the common case: one event for a stream this store has written to
            stream = head.stream
            head_hash = head.hash
            event, body, digest = prepare_one(
                first,
                stream,
                expected_sequence,
                head_hash,
                self.codec.encode_body_buffer,
                self.hmac_key,
                self.max_event_size,
            )
            sealed, stored = [event], [digest, body]
        else:
            head_hash = head.hash if head is not None and head.last == expected_sequence else ""
            stream, sealed, bodies = prepare_batch(
                batch,
                expected_sequence,
                head_hash,
                self.codec.encode_body_buffer,
                self.hmac_key,
                self.max_event_size,
            )
            stored = _stored(sealed, bodies)
        if (
            not self._writing
            and not self._crowded
            and self._streak < _STREAK
            and head is not None
            and head.db_id is not None
            and head.last == expected_sequence
            and len(sealed) <= _ROWS_PER_STATEMENT
        ):
            return await self._append_alone(stream, head, sealed, stored)
        # asyncio.Future (C) directly: loop.create_future is one more Python call
        future: asyncio.Future[list[Recorded]] = asyncio.Future(loop=self._loop)
        if head is not None:
            stream = head.stream  # the same key, long-lived: one object fewer per append
        self._pending.append(_Request(stream, expected_sequence, sealed, head_hash, stored, future))
        if self._writing:  # the writer (or a caller) is busy: join the next group
            return await future
        # Nobody is writing, so nothing else is queued: commit this append right
        # here, saving two task switches. Whatever queues meanwhile goes to the
        # writer task afterwards.
        self._writing = self._inline = True
        try:
            if self._crowded or self._streak >= _STREAK:
                # Others woke with us (their last appends committed together):
                # let them queue first, so they join this group. After a run of
                # inline commits (which never suspend), yield once so other
                # tasks run and concurrent appenders can form a group.
                self._streak = 0
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    future.cancel()  # not in a group yet: it is never written
                    raise
            group = self._take_group()
            if len(group) <= 1:
                await self._commit_group(group)
            else:
                # Others' appends ride along: our cancellation must not cancel them.
                commit = self._loop.create_task(self._commit_group(group))
                try:
                    await asyncio.shield(commit)
                except asyncio.CancelledError:
                    if not commit.done():
                        self._in_flight = commit  # the writer task waits for it first
                    raise
        finally:
            self._end_inline()
        return future.result()

    async def _append_alone(
        self,
        stream: StreamId,
        head: _Head,
        sealed: list[Event],
        stored: list[bytearray],
    ) -> list[Recorded]:
        """The common case, lean: nobody writing, the head known and as expected.

        One statement, no queue, no future; the same checks as a group.
        """
        self._writing = self._inline = True
        try:
            params: list[Any] = []
            db_id = head.db_id
            _add_rows(params, db_id, sealed, stored)
            try:
                last_position = await self._write(_insert_sql(len(sealed)), params)
            except ConcurrencyError as exc:  # another process wrote: say how far
                await self._load_heads([stream])
                expected = sealed[0].sequence_id - 1
                raise ConcurrencyError(stream, expected, self._heads[stream].last) from exc
            except BaseException:
                self._heads.pop(stream, None)  # the rows may or may not be in
                raise
            position = last_position - len(sealed) + 1
            recorded: list[Any] = sealed  # Recorded in place of each event, as in _resolve
            last = sealed[-1]
            for i, event in enumerate(sealed):
                recorded[i] = _new_tuple(Recorded, (position + i, event))
            if self._direct is not None:
                self._streak += 1
            head.last = last.sequence_id
            head.hash = last.hash
            self._notify()
            return recorded
        finally:
            self._end_inline()

    def _end_inline(self) -> None:
        """A caller finished committing: hand what queued meanwhile to the writer task."""
        self._inline = False
        if self._pending or self._closing or self._in_flight is not None:
            assert self._wake is not None
            if self._writer is None or self._writer.done():
                self._start_writer()  # it was cancelled from outside
            self._wake.set()  # the writer task takes over and clears _writing
        else:
            self._writing = False

    def _notify(self) -> None:
        """Wake this store's subscribers (if any) after a commit."""
        if self._subscribers:
            changed = self._changed
            if changed is not None:
                self._changed = asyncio.Event()
                changed.set()

    def _fail_pending(self, error: StoreError) -> None:
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(error)

    def _take_group(self) -> list[_Request]:
        """Pending requests for distinct streams, oldest first, up to the group size."""
        group: list[_Request] = []
        seen: set[StreamId] = set()
        deferred: list[_Request] = []
        size = 0
        pending = self._pending
        while pending and size < _GROUP_EVENTS:
            request = pending.popleft()
            if request.future.done():  # cancelled while queued: never written
                continue
            if request.stream in seen:
                deferred.append(request)
                continue
            seen.add(request.stream)
            group.append(request)
            size += len(request.sealed)
        pending.extendleft(reversed(deferred))
        self._crowded = len(group) > 1
        return group

    async def _commit_group(self, group: list[_Request]) -> None:
        try:
            group = await self._check_heads(group)
            if not group:
                return
            await self._create_streams(group)
            chunk: list[_Request] = []
            rows = 0
            for request in group:
                n = len(request.sealed)
                if n > _ROWS_PER_STATEMENT:
                    await self._insert_large(request)
                    continue
                if chunk and rows + n > _ROWS_PER_STATEMENT:
                    await self._insert_chunk(chunk)
                    chunk, rows = [], 0
                chunk.append(request)
                rows += n
            if chunk:
                await self._insert_chunk(chunk)
        except BaseException as exc:
            # Cancelled mid-write, the rows may or may not be in: forget the heads
            # so the next append reads them from the file.
            error = exc if isinstance(exc, StatelogError) else None
            for request in group:
                self._heads.pop(request.stream, None)
                if request.future.done():
                    continue
                if not isinstance(exc, Exception):
                    request.future.cancel()
                elif error is not None:
                    request.future.set_exception(error)
                else:
                    request.future.set_exception(StoreError(f"append failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    async def _check_heads(self, group: list[_Request]) -> list[_Request]:
        """Refresh stale heads from the file; refuse writers that are behind; reseal.

        Returns the requests still to write, each with its ``head``. A stream
        this store has not seen, appended with ``expected_sequence=-1``, is
        assumed new without a read: if it exists after all, the insert
        conflicts and the writer gets ``ConcurrencyError`` then.
        """
        heads = self._heads
        live: list[_Request] = []
        stale: list[_Request] = []
        for request in group:
            if request.future.done():
                continue
            head = heads.get(request.stream)
            if head is None and request.expected == -1:
                head = heads[request.stream] = _Head(request.stream, None, -1, "")
            elif head is None or head.last != request.expected:
                stale.append(request)
                continue
            if request.sealed_from != head.hash:
                self._reseal(request, head)
            request.head = head
            live.append(request)
        if stale:
            await self._load_heads([r.stream for r in stale])
            live = [r for r in live if not r.future.done()]
            for request in stale:
                if request.future.done():
                    continue
                head = heads[request.stream]
                if head.last != request.expected:
                    request.future.set_exception(
                        ConcurrencyError(request.stream, request.expected, head.last)
                    )
                    continue
                if request.sealed_from != head.hash:
                    self._reseal(request, head)
                request.head = head
                live.append(request)
        return live

    def _reseal(self, request: _Request, head: _Head) -> None:
        """Chain a request's events from the head's hash (it moved since the append)."""
        # seal sets prev_hash and hash anew: the same as sealing the original events
        request.sealed = seal(request.sealed, head.hash, self.hmac_key)
        request.stored = _stored(request.sealed, request.stored[1::2])
        request.sealed_from = head.hash

    async def _load_heads(self, streams: Sequence[StreamId]) -> None:
        found: dict[StreamId, _Head] = {s: _Head(s, None, -1, "") for s in streams}
        for start in range(0, len(streams), 400):
            part = streams[start : start + 400]
            values = ",".join(["(?, ?)"] * len(part))
            params = [x for s in part for x in s]
            rows = await self._q(
                "SELECT s.partition_key, s.app_id, s.id, e.sequence_id, e.hash FROM streams s "
                "LEFT JOIN events e ON e.stream_id = s.id AND e.sequence_id = "
                "(SELECT MAX(sequence_id) FROM events WHERE stream_id = s.id) "
                f"WHERE (s.partition_key, s.app_id) IN (VALUES {values})",
                params,
            )
            for pk, app, db_id, seq, digest in rows:
                stream = StreamId(pk, app)
                found[stream] = _Head(
                    stream, db_id, -1 if seq is None else seq, bytes(digest).hex() if digest else ""
                )
        self._heads.update(found)

    async def _create_streams(self, group: list[_Request]) -> None:
        new = [r.stream for r in group if r.head is None or r.head.db_id is None]
        if not new:
            return
        values = ",".join(["(?, ?)"] * len(new))
        sql = (
            f"INSERT INTO streams (partition_key, app_id) VALUES {values} "
            "ON CONFLICT (partition_key, app_id) DO UPDATE SET app_id = excluded.app_id "
            "RETURNING id, partition_key, app_id"
        )
        params = [x for s in new for x in s]
        rows = self._inline_rows(sql, params)
        if rows is None:
            rows = await self._q(sql, params)
            self.thread_commits += 1
        for db_id, pk, app in rows:
            self._heads[StreamId(pk, app)].db_id = db_id

    async def _insert_chunk(self, chunk: list[_Request]) -> None:
        params: list[Any] = []
        for request in chunk:
            assert request.head is not None
            db_id = request.head.db_id
            sealed = request.sealed
            if len(sealed) == 1:
                stored = request.stored
                params += (db_id, sealed[0].sequence_id, stored[0], stored[1])
                continue
            _add_rows(params, db_id, sealed, request.stored)
        try:
            last_position = await self._write(_insert_sql(len(params) // 4), params)
        except ConcurrencyError:
            if len(chunk) == 1:
                await self._refuse(chunk[0])
                return
            for request in chunk:  # find who is behind: one append at a time
                await self._insert_chunk([request])
            return
        self._resolve(chunk, last_position, len(params) // 4)

    async def _insert_large(self, request: _Request) -> None:
        """An append too big for one statement: an explicit transaction.

        Other statements of this store wait at the gate meanwhile, so no reader
        sees rows that might still be rolled back.
        """
        conn = await self._connected()
        gate = self._gate = asyncio.Event()
        db_id = self._heads[request.stream].db_id
        last_position = 0
        try:
            await self._write("BEGIN IMMEDIATE", [])
            try:
                step = _ROWS_PER_STATEMENT
                for start in range(0, len(request.sealed), step):
                    params: list[Any] = []
                    _add_rows(
                        params,
                        db_id,
                        request.sealed[start : start + step],
                        request.stored[2 * start : 2 * (start + step)],
                    )
                    last_position = await self._write(_insert_sql(len(params) // 4), params)
                await self._write("COMMIT", [])
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
        except ConcurrencyError:
            conflict = True
        else:
            conflict = False
        finally:
            self._gate = None
            gate.set()
        if conflict:
            await self._refuse(request)
        else:
            self._resolve([request], last_position, len(request.sealed))

    async def _refuse(self, request: _Request) -> None:
        """The file has rows where ``request`` wanted to write: tell its caller."""
        await self._load_heads([request.stream])
        actual = self._heads[request.stream].last
        if not request.future.done():
            request.future.set_exception(ConcurrencyError(request.stream, request.expected, actual))

    def _resolve(self, chunk: list[_Request], last_position: int, rows: int) -> None:
        """Hand each caller its events with their positions, and advance the heads.

        The rows of one INSERT (or of one transaction) get consecutive
        positions in VALUES order: an INTEGER PRIMARY KEY without AUTOINCREMENT
        takes max(rowid) + 1 for each new row, and the writer holds the lock.
        """
        position = last_position - rows + 1
        for request in chunk:
            head = request.head
            assert head is not None
            # The sealed list becomes the caller's result, Recorded in place of
            # each event: one list fewer per append for the allocator and the GC.
            recorded: list[Any] = request.sealed
            last = recorded[-1]
            head.last = last.sequence_id
            head.hash = last.hash
            if len(recorded) == 1:
                recorded[0] = _new_tuple(Recorded, (position, last))
                position += 1
            else:
                for i, event in enumerate(recorded):
                    recorded[i] = _new_tuple(Recorded, (position, event))
                    position += 1
            future = request.future
            if not future.done():
                future.set_result(recorded)
        self._notify()

    # ------------------------------------------------------------------ reading
    # (read, last_sequence, streams, read_all, fold_stream, verify: SQLiteReads)

    async def subscribe(
        self, *, from_position: int = 0, poll_interval: float = 0.05
    ) -> AsyncIterator[Recorded]:
        """Catch up from ``from_position``, then yield new events as they commit.

        Appends through this store wake subscribers at once; appends by other
        processes are seen within ``poll_interval`` seconds.
        """
        position = max(from_position, 1)
        page = 1000
        self._subscribers += 1
        try:
            while True:
                await self._connected()
                changed = self._changed
                batch = await self.read_all(from_position=position, limit=page)
                for record in batch:
                    yield record
                if batch:
                    position = batch[-1].position + 1
                    if len(batch) == page:
                        continue
                self._check_open()
                if changed is not None and not changed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), poll_interval)
        finally:
            self._subscribers -= 1


async def _writer_loop(ref: weakref.ref[SQLiteEventStore], wake: asyncio.Event) -> None:
    """The single writer: take groups of pending appends and commit them.

    Holds the store only weakly between groups, so an abandoned store can be
    collected (and warn) instead of being kept alive by its own task.
    """
    try:
        await _write_groups(ref, wake)
    except BaseException:
        # Cancelled from outside (or a bug): fail what waits rather than hang it.
        store = ref()
        if store is not None:
            if not store._inline:
                store._writing = False
            store._fail_pending(StoreError("the store's writer task was cancelled"))
        raise


async def _write_groups(ref: weakref.ref[SQLiteEventStore], wake: asyncio.Event) -> None:
    while True:
        store = ref()
        if store is None or store._conn is None:
            return
        if store._inline or (not store._pending and store._in_flight is None):
            if not store._inline:
                store._writing = False
                if store._closing:
                    return
            wake.clear()
            del store
            await wake.wait()
            continue
        store._writing = True
        if store._in_flight is not None:  # one group at a time, always
            in_flight, store._in_flight = store._in_flight, None
            del store
            await asyncio.wait([in_flight])
            continue
        group = store._take_group()
        if group:
            await store._commit_group(group)
        del store
