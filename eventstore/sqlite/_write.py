"""The group commit: one writer thread, one connection, a queue of pending appends.

The event loop only validates, seals and encodes an append (``SQLiteEventStore.
append``) and queues it here as a ``Request`` with a future. The appends of one
loop turn are handed to the thread together (``submit`` collects them, one
``call_soon`` hands them over), and while the thread commits a group the next
one gathers. The thread takes what is queued (up to ``GROUP_EVENTS`` events)
and writes it in ONE transaction::

    BEGIN IMMEDIATE                 -- the write lock: what it reads is the truth
    PRAGMA data_version             -- another connection wrote? forget the heads
    SELECT heads of unknown streams
    check each request's expected_sequence against its stream's head
    INSERT new streams; INSERT the rows, up to 1000 per statement
    COMMIT

then hands every caller its outcome (its events with their positions, or
``ConcurrencyError`` if it was behind) in one callback on the loop.

Appends that come one at a time (the last group was a single append) take a
shorter road: each is handed over at once rather than at the end of its loop
turn, and if the writer already knows its stream's head it is written as one
autocommit ``INSERT`` (no BEGIN, PRAGMA or COMMIT): UNIQUE(stream_id,
sequence_id) refuses it whole if another connection moved the stream, and then
it goes through the transaction above. The first crowded group ends the road.

A request refused for being behind writes nothing; the others of its group
commit. If a statement fails on a constraint, the group is rolled back and its
requests are written one per transaction, so only the faulty one fails.

A sync caller (an app made by ``build()``, whose calling thread blocks for the
call anyway: ``SYNC_CALLER``) writes that same lone INSERT itself when the
writer has nothing queued or in flight (``commit_here``): no hand-off to the
thread and back, which costs two cross-thread wake-ups (~15-80 us, more on an
idle VM) per step. Async callers never write on their loop's thread.

A caller cancelled while waiting does not stop the thread: its append is then
written whole or (if the thread had not taken it yet) not at all, and no
transaction is ever left open. Nothing of a commit runs on the event loop.

The writer's life is a small state machine::

    OPENING -> IDLE <-> WRITING -> CLOSING -> CLOSED
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .._chain import seal
from .._codec import Codec
from .._errors import ConcurrencyError, StoreClosedError, StoreError
from .._event import Event, Recorded, StreamId
from ._schema import connect, prepare_schema, translate_error
from ._threads import deliver, settle

__all__ = ["GROUP_EVENTS", "Head", "Request", "Writer", "WriterState"]

#: ``_new_tuple(Recorded, (position, event))`` is ``Recorded(position, event)`` without
#: the Python-level ``__new__`` of a NamedTuple. With the one-event paths of ``_insert``
#: and ``_recorded`` (same-run A/B, 100 concurrent apps: the thread's CPU per step
#: 5.8 -> 4.8 us, which the waiting loop saw as wall time; docs/benchmarks.md, session 8)
_new_tuple = tuple.__new__
#: Rows per multi-row INSERT (4 bound variables each, under SQLite's limit).
ROWS_PER_STATEMENT = 1000 if sqlite3.sqlite_version_info >= (3, 32) else 240
#: The writer takes at most this many events into one group (and at least one append).
GROUP_EVENTS = 4 * ROWS_PER_STATEMENT


class WriterState(enum.Enum):
    OPENING = "opening"  # the thread is opening the file and checking its schema
    IDLE = "idle"  # waiting for appends
    WRITING = "writing"  # committing a group
    CLOSING = "closing"  # asked to stop: writes what is queued, then closes
    CLOSED = "closed"  # the connection is closed and the thread has ended


#: A writer that takes appends.
_OPEN_STATES = frozenset((WriterState.IDLE, WriterState.WRITING))


class Head(NamedTuple):
    """What the writer knows of a stream's end (db id ``None``: not in the file yet)."""

    db_id: int | None
    last: int
    hash: str


class Request:
    """One caller's append: sealed events, their stored bodies and digests, a future.

    ``hint`` is a head the loop read from the log (a resume's read), for a
    stream the writer does not know yet: see ``Writer._insert_alone``.
    """

    __slots__ = (
        "stream",
        "expected",
        "events",
        "bodies",
        "digests",
        "sealed_from",
        "future",
        "hint",
    )

    def __init__(
        self,
        stream: StreamId,
        expected: int,
        events: list[Event],
        bodies: list[bytearray],
        digests: list[bytearray],
        sealed_from: str,
        future: asyncio.Future[list[Recorded]],
        hint: Head | None = None,
    ) -> None:
        self.stream = stream
        self.expected = expected
        self.events = events  # sealed on the loop, chained from ``sealed_from``
        self.bodies = bodies
        self.digests = digests
        self.sealed_from = sealed_from
        self.future = future
        self.hint = hint


Outcome = list[Recorded] | BaseException


class Writer:
    """The store's writer: a daemon thread committing queued appends in groups.

    Holds no reference to the store, so a store dropped open can be collected.
    ``heads`` is the writer's; the loop reads it only as a hint for sealing
    (an append sealed from a stale hash is resealed here).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        codec: Codec | None,
        hmac_key: bytes | None,
        on_commit: Callable[[], None],
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.hmac_key = hmac_key
        self.heads: dict[StreamId, Head] = {}
        self.state = WriterState.OPENING
        self._codec_asked = codec
        self._on_commit = on_commit
        self._data_version: int | None = None
        # the loop hands the thread batches of appends through _inbox; None: stop
        self._inbox: queue.SimpleQueue[list[Request] | None] = queue.SimpleQueue()
        self._outbox: list[Request] = []  # this loop turn's appends (loop thread only)
        # the thread's last group was one append: hand the next over at once (no crowd)
        self._alone = False
        # guards state changes (RLock: __del__ may call stop on any thread, at any time)
        self._lock = threading.RLock()
        # the connection, once open; _db_lock is held by whoever uses it (the thread,
        # or a sync caller's commit_here) and while it is closed
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        self._pending = 0  # requests handed to the thread and not settled yet (loop only)
        self._loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[Codec] = self._loop.create_future()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"statelog-writer:{path}", daemon=True
        )

    # ------------------------------------------------------------ the loop's side

    async def start(self) -> Codec:
        """Start the thread; return the file's codec once it is open and checked."""
        self._thread.start()
        try:
            return await asyncio.shield(self._opened)
        except BaseException:
            self.stop()
            raise

    def submit(self, request: Request) -> None:
        """Queue an append; this loop turn's appends are handed over together.

        While appends come one at a time (the last group the thread took was
        a single one), the first append after it is handed over at once
        instead, a loop turn earlier; the thread turns that on again each time
        it takes a lone append.
        """
        self._outbox.append(request)
        if len(self._outbox) == 1:
            if self._alone:  # same-run A/B: see the commit (lone appends)
                self._alone = False  # one: the rest of a burst waits for the turn's end
                self._hand_over()
            else:
                self._loop.call_soon(self._hand_over)

    def commit_here(self, request: Request) -> list[Recorded] | None:
        """Write a lone append on the calling thread, for a caller that blocks anyway.

        Only ``_insert_alone``'s one autocommit INSERT (a single statement:
        written whole or not at all, no transaction left open), and only when
        the thread has nothing queued or in flight and is not using the
        connection. ``None``: not done here, ``submit`` it (the thread's
        transaction decides: a head not known, a refused INSERT, an error).
        """
        # nothing queued or in flight (the thread may still be on its way back to
        # the inbox after settling its last group: it no longer uses the connection)
        if self._outbox or self._pending or self.state not in _OPEN_STATES:
            return None
        if not self._db_lock.acquire(blocking=False):
            return None
        try:
            db = self._db
            if db is None or self.state not in _OPEN_STATES:
                return None
            try:
                outcome = self._insert_alone(db, request)
            except sqlite3.Error:  # the thread tries again and names the error
                return None
        finally:
            self._db_lock.release()
        if outcome is None or isinstance(outcome, BaseException):
            return None
        self._on_commit()
        return outcome

    def _hand_over(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        with self._lock:
            if self.state is not WriterState.CLOSED:
                self._pending += len(batch)
                self._inbox.put(batch)
                return
        error = StoreClosedError(f"the writer of {self.path!r} has stopped")
        for request in batch:
            settle(request.future, None, error)

    def stop(self) -> None:
        """Ask the thread to write what is queued, close and end (any thread; idempotent)."""
        with self._lock:
            if self.state in (WriterState.OPENING, WriterState.IDLE, WriterState.WRITING):
                self.state = WriterState.CLOSING
        self._inbox.put(None)

    async def aclose(self) -> None:
        """Write what is queued, close the connection, end the thread."""
        self._hand_over()
        self.stop()
        if self._thread.ident is not None:  # it was started
            await asyncio.shield(self._stopped)
            self._thread.join()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            db = connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)
        except BaseException as exc:
            self._end(None, exc)
            return
        try:
            codec = prepare_schema(
                db, self.path, codec=self._codec_asked, busy_timeout=self.busy_timeout
            )
        except BaseException as exc:
            self._end(db, exc)
            return
        self._db = db
        deliver(self._loop, settle, self._opened, codec, None)
        queued: list[Request] = []  # taken from the inbox, not written yet
        stopping = False
        try:
            while True:
                if not queued:
                    if stopping:  # everything asked for before stop() is written
                        break
                    self._become(WriterState.IDLE)
                    batch = self._inbox.get()  # waits for the loop
                    stopping |= batch is None
                    queued += batch or ()
                while not self._inbox.empty():  # and whatever else has come meanwhile
                    batch = self._inbox.get_nowait()
                    stopping |= batch is None
                    queued += batch or ()
                group = _take_group(queued)
                self._alone = len(group) == 1 and not queued
                if group:
                    self._become(WriterState.WRITING)
                    with self._db_lock:
                        outcomes = self._commit(db, group)
                    deliver(self._loop, self._settled, group, outcomes)
        finally:
            self._end(db, None, queued)

    def _settled(self, group: list[Request], outcomes: list[Outcome]) -> None:
        """On the loop: ``group`` is written (or refused); hand each caller its outcome."""
        self._pending -= len(group)
        _settle_group(group, outcomes, self._on_commit)

    def _become(self, state: WriterState) -> None:
        with self._lock:
            if self.state is not WriterState.CLOSING:
                self.state = state

    def _end(
        self,
        db: sqlite3.Connection | None,
        error: BaseException | None,
        queued: list[Request] | None = None,
    ) -> None:
        """Close, fail what is left (nothing, unless a bug ended the loop), report the end."""
        if db is not None:
            with self._db_lock:
                self._db = None
                db.close()
        with self._lock:  # no batch is handed over after this
            self.state = WriterState.CLOSED
        left: list[Request] = list(queued or ())
        while True:
            try:
                left += self._inbox.get_nowait() or ()
            except queue.Empty:
                break
        if error is not None:
            deliver(self._loop, settle, self._opened, None, error)
        if left:
            closed = StoreClosedError(f"the writer of {self.path!r} has stopped")
            deliver(self._loop, _settle_group, left, [closed] * len(left), None)
        deliver(self._loop, settle, self._stopped, None, None)

    def _commit(self, db: sqlite3.Connection, group: list[Request]) -> list[Outcome]:
        """Commit ``group``; every request gets its outcome. Never raises."""
        try:
            if len(group) == 1 and (alone := self._insert_alone(db, group[0])) is not None:
                return [alone]
            return self._transaction(db, group)
        except BaseException as exc:
            self.heads.clear()  # what was read or assumed inside may be rolled back
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError) and len(group) > 1:
                return [self._commit(db, [request])[0] for request in group]
            if isinstance(exc, sqlite3.Error):
                error: BaseException = translate_error(exc, self.path)
                error.__cause__ = exc
            else:
                error = StoreError(f"append to {self.path!r} failed: {exc!r}")
                error.__cause__ = exc
            return [error] * len(group)

    def _insert_alone(self, db: sqlite3.Connection, request: Request) -> Outcome | None:
        """One append to a stream whose head the writer knows: one autocommit INSERT.

        No BEGIN, PRAGMA data_version or COMMIT (same-run A/B: see the commit).
        If another connection has moved the stream, UNIQUE(stream_id,
        sequence_id) refuses the rows and nothing is written: ``None``, and the
        transaction finds out how far. ``None`` too if the head is not known.

        A stream the writer has not written yet may come with the head a read
        found (``request.hint``): as safe, since rows never change once
        written: if the stream has moved since that read, UNIQUE refuses the
        INSERT just the same (same-run A/B: see the commit; a resume's first
        step).
        """
        head = self.heads.get(request.stream) or request.hint
        if (
            head is None
            or head.db_id is None
            or head.last != request.expected
            or head.hash != request.sealed_from
            or len(request.events) > ROWS_PER_STATEMENT
        ):
            return None
        params: list[Any] = []
        for event, digest, body in zip(
            request.events, request.digests, request.bodies, strict=True
        ):
            params += (head.db_id, event.sequence_id, digest, body)
        try:
            position = _insert_rows(db, params)
        except sqlite3.IntegrityError:
            return None
        last = request.events[-1]
        self.heads[request.stream] = _new_tuple(Head, (head.db_id, last.sequence_id, last.hash))
        return _recorded(position, request.events)

    def _transaction(self, db: sqlite3.Connection, group: list[Request]) -> list[Outcome]:
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:  # another connection wrote: heads may be stale
            self._data_version = version
            self.heads.clear()
        heads = self.heads
        unknown = {request.stream for request in group} - heads.keys()
        if unknown:
            self._load_heads(db, unknown)
        outcomes: list[Outcome | None] = [None] * len(group)
        accepted: list[Request] = []
        new: dict[StreamId, int | None] = {}
        for i, request in enumerate(group):
            stream = request.stream
            head = heads[stream]
            if head.last != request.expected:
                outcomes[i] = ConcurrencyError(stream, request.expected, head.last)
                continue
            if request.sealed_from != head.hash:  # the head moved since it was sealed
                request.events = seal(request.events, head.hash, self.hmac_key)
                request.digests = [bytearray.fromhex(e.hash) for e in request.events]
                request.sealed_from = head.hash
            if head.db_id is None:
                new[stream] = None
            last = request.events[-1]
            heads[stream] = _new_tuple(Head, (head.db_id, last.sequence_id, last.hash))
            accepted.append(request)
        if new:
            self._create_streams(db, new)
        position = self._insert(db, accepted) if accepted else 0
        db.execute("COMMIT")
        it = iter(accepted)
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                events = next(it).events
                outcomes[i] = _recorded(position, events)
                position += len(events)
        return outcomes  # type: ignore[return-value]

    def _load_heads(self, db: sqlite3.Connection, streams: Iterable[StreamId]) -> None:
        wanted = list(streams)
        for stream in wanted:
            self.heads[stream] = Head(None, -1, "")
        for start in range(0, len(wanted), 400):
            part = wanted[start : start + 400]
            values = ",".join(["(?, ?)"] * len(part))
            for pk, app, db_id, seq, digest in db.execute(
                "SELECT s.partition_key, s.app_id, s.id, e.sequence_id, e.hash FROM streams s "
                "LEFT JOIN events e ON e.stream_id = s.id AND e.sequence_id = "
                "(SELECT MAX(sequence_id) FROM events WHERE stream_id = s.id) "
                f"WHERE (s.partition_key, s.app_id) IN (VALUES {values})",
                [x for stream in part for x in stream],
            ):
                self.heads[StreamId(pk, app)] = Head(
                    db_id, -1 if seq is None else seq, bytes(digest).hex() if digest else ""
                )

    def _create_streams(self, db: sqlite3.Connection, new: dict[StreamId, int | None]) -> None:
        streams = list(new)
        for start in range(0, len(streams), 400):
            part = streams[start : start + 400]
            values = ",".join(["(?, ?)"] * len(part))
            for db_id, pk, app in db.execute(
                f"INSERT INTO streams (partition_key, app_id) VALUES {values} "
                "RETURNING id, partition_key, app_id",
                [x for stream in part for x in stream],
            ).fetchall():
                stream = StreamId(pk, app)
                self.heads[stream] = self.heads[stream]._replace(db_id=db_id)

    def _insert(self, db: sqlite3.Connection, accepted: list[Request]) -> int:
        """Insert the rows of ``accepted`` in order; return the first one's position.

        The rows get consecutive positions: an INTEGER PRIMARY KEY without
        AUTOINCREMENT takes max(rowid) + 1 for each new row, and this
        transaction holds the write lock.
        """
        params: list[Any] = []
        heads = self.heads
        for request in accepted:
            db_id = heads[request.stream].db_id
            events = request.events
            if len(events) == 1:  # a step's one event (most requests): without the zip
                params += (db_id, events[0].sequence_id, request.digests[0], request.bodies[0])
                continue
            for event, digest, body in zip(events, request.digests, request.bodies, strict=True):
                params += (db_id, event.sequence_id, digest, body)
        size = 4 * ROWS_PER_STATEMENT  # values per statement
        if len(params) <= size:
            return _insert_rows(db, params)
        first = _insert_rows(db, params[:size])
        for start in range(size, len(params), size):
            _insert_rows(db, params[start : start + size])
        return first


def _take_group(queued: list[Request]) -> list[Request]:
    """Take the oldest queued appends, up to ``GROUP_EVENTS`` events (at least one)."""
    group: list[Request] = []
    size = 0
    taken = 0
    for request in queued:
        if size and size + len(request.events) > GROUP_EVENTS:
            break
        taken += 1
        # (a read of the future's state from this thread: its caller left before
        # it was written, so it never is)
        if request.future.cancelled():
            continue
        group.append(request)
        size += len(request.events)
    del queued[:taken]
    return group


def _recorded(position: int, events: list[Event]) -> list[Recorded]:
    """``events`` with their positions, the first at ``position``."""
    if len(events) == 1:  # a step's one event (most appends): no comprehension
        return [_new_tuple(Recorded, (position, events[0]))]
    return [_new_tuple(Recorded, (position + j, e)) for j, e in enumerate(events)]


_INSERT_SQL: dict[int, str] = {}


def _insert_rows(db: sqlite3.Connection, params: list[Any]) -> int:
    """One multi-row INSERT; return the position of its first row."""
    rows = len(params) // 4
    sql = _INSERT_SQL.get(rows)
    if sql is None:
        values = ",".join(["(?,?,?,?)"] * rows)
        sql = f"INSERT INTO events (stream_id, sequence_id, hash, body) VALUES {values}"
        if len(_INSERT_SQL) < 256:
            _INSERT_SQL[rows] = sql
    last = db.execute(sql, params).lastrowid or 0
    return last - rows + 1


def _settle_group(
    group: list[Request], outcomes: list[Outcome], on_commit: Callable[[], None] | None
) -> None:
    """On the loop: hand each caller its outcome; wake subscribers if anything committed."""
    committed = False
    for request, outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            settle(request.future, None, outcome)
        else:
            committed = True
            settle(request.future, outcome, None)
    if committed and on_commit is not None:
        on_commit()
