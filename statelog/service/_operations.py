"""Operation records: the service's own small SQLite file, one writer thread.

An operation is one run request (``POST /v1/runs``). Its record is committed
before the 202 goes out, so a ``kill -9`` after the answer never loses it; on
restart every operation still ``queued`` or ``running`` is resumed from the log
(``initialize_from``). The file sits beside the log (``<db>-service``, WAL);
one thread owns its connection and each method is one transaction on it, so
the event loop never waits on this disk. The WAL is copied back into the file
(a checkpoint, which syncs the disk) by a second thread on its own connection,
every ``_CHECKPOINT_EVERY`` commits, not by the commit that happens to cross
SQLite's automatic threshold: that commit's requests (a group of 202s) would
wait for the disk sync (same-run A/B: docs/benchmarks.md, Service 202 latency
(session 7)).

Table ``operations`` (one row per operation)::

    id, graph, partition_key, app_id, principal, idempotency_key, fingerprint,
    request (JSON), phase, status, base_sequence, sequence_id, position,
    error (JSON), cancel_requested, resumed, created_at, started_at, finished_at

A partial unique index allows one queued-or-running operation per app, so two
runs never drive one stream; ``UNIQUE(principal, idempotency_key)`` makes a
retried start return the first operation. Table ``apps`` remembers the graph of
every app the service started (the log does not record it yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from statelog.eventstore import StoreError, StoreUnavailableError

from ._problems import ProblemError
from ._status import Phase, Status

__all__ = ["Operation", "OperationStore", "RunRequest"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS service_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    graph TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    app_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint TEXT NOT NULL,
    request TEXT NOT NULL,
    phase TEXT NOT NULL,
    status TEXT NOT NULL,
    base_sequence INTEGER,
    sequence_id INTEGER,
    position TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    UNIQUE (principal, idempotency_key)
);
CREATE UNIQUE INDEX IF NOT EXISTS operations_one_active_per_app
    ON operations (partition_key, app_id) WHERE phase IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS operations_by_app ON operations (partition_key, app_id, rowid);
CREATE TABLE IF NOT EXISTS apps (
    partition_key TEXT NOT NULL,
    app_id TEXT NOT NULL,
    graph TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (partition_key, app_id)
);
INSERT OR IGNORE INTO service_meta VALUES ('format', 'statelog-service');
INSERT OR IGNORE INTO service_meta VALUES ('format_version', '1');
"""

_COLUMNS = (
    "id, graph, partition_key, app_id, principal, idempotency_key, request, phase, status, "
    "base_sequence, sequence_id, position, error, cancel_requested, resumed, created_at, "
    "started_at, finished_at, rowid"
)


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a run was asked to do (stored with its operation, replayed on resume)."""

    inputs: dict[str, Any] = {}
    halt_before: list[str] = []
    halt_after: list[str] = []
    max_steps: int | None = None
    timeout: float | None = None
    actor: str | None = None
    #: Human input for the app's waiting action, handed over before the run steps.
    input_name: str | None = None
    input_value: Any = None


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One run operation as stored."""

    id: str
    graph: str
    partition_key: str
    app_id: str
    principal: str
    idempotency_key: str | None
    request: RunRequest
    phase: Phase
    status: Status
    base_sequence: int | None
    sequence_id: int | None
    position: str | None
    error: dict[str, Any] | None
    cancel_requested: bool
    resumed: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    cursor: int  # creation order, for paging

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "graph": self.graph,
            "partition_key": self.partition_key,
            "app_id": self.app_id,
            "sequence_id": self.sequence_id,
            "position": self.position,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "resumed": self.resumed,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "request": msgspec.to_builtins(self.request),
        }


def _row(row: tuple[Any, ...]) -> Operation:
    return Operation(
        id=row[0],
        graph=row[1],
        partition_key=row[2],
        app_id=row[3],
        principal=row[4],
        idempotency_key=row[5],
        request=msgspec.json.decode(row[6], type=RunRequest),
        phase=row[7],
        status=row[8],
        base_sequence=row[9],
        sequence_id=row[10],
        position=row[11],
        error=None if row[12] is None else json.loads(row[12]),
        cancel_requested=bool(row[13]),
        resumed=int(row[14]),
        created_at=row[15],
        started_at=row[16],
        finished_at=row[17],
        cursor=int(row[18]),
    )


def _queued(
    op_id: str,
    graph: str,
    partition_key: str,
    app_id: str,
    principal: str,
    key: str | None,
    request: RunRequest,
    now: float,
    cursor: int,
) -> Operation:
    """A new operation's row as it was just inserted (the columns not set are defaults)."""
    return Operation(
        id=op_id,
        graph=graph,
        partition_key=partition_key,
        app_id=app_id,
        principal=principal,
        idempotency_key=key,
        request=request,
        phase="queued",
        status="queued",
        base_sequence=None,
        sequence_id=None,
        position=None,
        error=None,
        cancel_requested=False,
        resumed=0,
        created_at=now,
        started_at=None,
        finished_at=None,
        cursor=cursor,
    )


def new_operation_id() -> str:
    """A new operation's id: 32 lowercase hex digits in UUIDv7's layout (RFC 9562).

    The first 48 bits are the Unix time in milliseconds, then the version and
    variant bits and 74 random bits: ids made later sort after earlier ones (within
    one millisecond in random order), so the inserts of a group land at the right
    edge of the ``id`` index, on one or two of its leaves, instead of one leaf each
    (uuid4) - a WAL frame of 4 KB per dirty leaf at every commit (same-run A/B, closed
    loop 64: posts/s +7.5 / +5.2 %; docs/benchmarks.md, Service 202 latency (session 10)).
    """
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76  # version 7
        | (random >> 68) << 64  # 12 random bits (rand_a)
        | 0b10 << 62  # the RFC's variant
        | random & (1 << 62) - 1  # 62 random bits (rand_b)
    )
    return f"{value:032x}"


def service_db_path(log_path: str) -> str:
    """Where the operations of the log at ``log_path`` are kept."""
    return f"{log_path}-service"


#: commits of the writer between two checkpoints (a commit of a group of POSTs writes
#: ~5-30 pages: SQLite's automatic checkpoint, at 1,000 pages, came about as often)
_CHECKPOINT_EVERY = 64


class OperationStore:
    """The operations file; every method is one transaction on the writer thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # the checkpointer: its own thread and connection (PASSIVE: never blocks the writer)
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpointing: Future[None] | None = None
        self._commits = 0
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], Any]] = []
        # what the drainer calls with a call's result before it answers (queue_create)
        self._then: dict[asyncio.Future[Any], Callable[[Any], None]] = {}
        self._drainer: asyncio.Task[None] | None = None

    async def open(self) -> OperationStore:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statelog-ops")
        self._checkpointer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="statelog-ops-checkpoint"
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._connect)
        except sqlite3.Error as exc:
            await self.aclose()
            raise StoreUnavailableError(f"operations file {self.path!r}: {exc}") from exc
        return self

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job (module doc)
        # a group's savepoints and multi-row INSERTs keep a statement journal of the pages
        # they change; past 64 KB SQLite spills it to a new temp file (created, unlinked,
        # written page by page) in every group: kept in memory instead (same-run A/B:
        # docs/benchmarks.md, Service 202 latency (session 10))
        db.execute("PRAGMA temp_store=MEMORY")
        db.executescript(_SCHEMA)
        self._db = db
        checkpoint_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        checkpoint_db.execute("PRAGMA busy_timeout=5000")
        self._checkpoint_db = checkpoint_db

    async def aclose(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            await asyncio.wait([self._drainer])
        executor, self._executor = self._executor, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_db)
        finally:
            executor.shutdown(wait=False)
            if checkpointer is not None:
                checkpointer.shutdown(wait=False)

    def _close_db(self) -> None:
        running = self._checkpointing
        if running is not None:
            with contextlib.suppress(Exception):
                running.result()  # its connection closes after its last checkpoint
        checkpoint_db, self._checkpoint_db = self._checkpoint_db, None
        if checkpoint_db is not None:
            checkpoint_db.close()
        db, self._db = self._db, None
        if db is not None:
            db.close()  # the last connection: SQLite checkpoints what is left

    def _checkpoint(self) -> None:
        """On the checkpointer's thread: copy the committed WAL frames into the file."""
        db = self._checkpoint_db
        if db is not None:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _committed(self) -> None:
        """On the writer thread after each commit: every ``_CHECKPOINT_EVERY`` commits,
        start a checkpoint on the checkpointer's thread unless one is still running."""
        self._commits += 1
        if self._commits < _CHECKPOINT_EVERY:
            return
        running = self._checkpointing
        if running is not None and not running.done():
            return
        checkpointer = self._checkpointer
        if checkpointer is not None:
            self._commits = 0
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._checkpointing = checkpointer.submit(self._checkpoint)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread, grouped with whatever else is waiting.

        Calls that arrive while a group is on the thread form the next group: one
        transaction (a savepoint per call, so one refusal undoes only its own
        writes) and one thread hand-off for all of them. A hand-off costs up to the
        interpreter's switch interval while the event loop is busy, so runs ending
        together share one instead of paying one each.
        """
        result: T = await self._queue(fn, *args)
        return result

    def _queue(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``_call`` without the wait: the future its caller would await."""
        if self._executor is None:
            raise StoreError("the operations store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending and self._executor is not None:
            group, self._pending = self._pending, []
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_group, group)
            except BaseException as exc:  # the thread itself failed: fail the whole group
                error = (
                    StoreUnavailableError(f"operations file {self.path!r}: {exc}")
                    if isinstance(exc, sqlite3.Error)
                    else exc
                )
                for _, _, future in group:
                    self._then.pop(future, None)
                    if not future.done():
                        future.set_exception(error)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, _, future), (ok, value) in zip(group, outcomes, strict=True):
                then = self._then.pop(future, None)
                if ok and then is not None:
                    # whether or not the caller still waits (queue_create); instead of a
                    # done-callback and asyncio.shield: same-run A/B, closed loop 64, three
                    # runs, posts/s +2.0 / +9.8 / +7.5 %, loop CPU per POST -20 % (session 9)
                    then(value)
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _run_group(
        self, group: list[tuple[Callable[..., Any], tuple[Any, ...], Any]]
    ) -> list[tuple[bool, Any]]:
        db = self._conn()
        outcomes: list[tuple[bool, Any]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            whole = 1 < len(group) <= _PLAIN_ROWS and all(_plain(call) for call in group)
            if whole:
                # the whole group is one plain batch: no savepoint (two statements fewer,
                # each a GIL hand-off); a refusal rolls the transaction back and the
                # group goes one by one (same-run A/B: docs/benchmarks.md, session 10)
                created = self._create_plain(group, savepoint=False)
                if created is not None:
                    outcomes = created
                else:
                    db.execute("ROLLBACK")
                    db.execute("BEGIN IMMEDIATE")
            start = len(outcomes)
            while start < len(group):
                # consecutive plain starts (no Idempotency-Key) go in together: a few
                # statements for all of them instead of two each (_create_plain; same-run
                # A/B, closed loop 64, four runs: posts/s +4.9/-2.2/+3.1/+6.7 %, session 9)
                end = start
                while end < len(group) and end - start < _PLAIN_ROWS and _plain(group[end]):
                    end += 1
                if (
                    not whole
                    and end - start > 1
                    and (created := self._create_plain(group[start:end]))
                ):
                    outcomes += created
                else:  # one call, or plain starts of which one is refused: one by one
                    end = max(end, start + 1)
                    outcomes += [self._run_one(db, fn, args) for fn, args, _ in group[start:end]]
                start = end
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._committed()
        return outcomes

    def _run_one(
        self, db: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        """One call of a group: its outcome; a refused call undoes only its own writes."""
        # a call that undoes its own writes when it fails needs no savepoint (two
        # statements fewer per POST: same-run A/B, docs/benchmarks.md, session 8)
        own = getattr(fn, "__func__", None) in _SELF_UNDOING
        if not own:
            db.execute("SAVEPOINT call")
        try:
            value = fn(*args)
        except Exception as exc:
            if not own:
                db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
            if isinstance(exc, sqlite3.Error):
                exc = StoreUnavailableError(f"operations file {self.path!r}: {exc}")
            return False, exc
        if not own:
            db.execute("RELEASE call")
        return True, value

    def _create_plain(
        self,
        calls: list[tuple[Callable[..., Any], tuple[Any, ...], Any]],
        savepoint: bool = True,
    ) -> list[tuple[bool, Any]] | None:
        """Several ``_create`` calls without an Idempotency-Key as one multi-row INSERT
        of the operations and one of the apps: all of them, or ``None`` with nothing
        written when any one would be refused (busy, another graph; a store error) -
        then the calls go one by one (``_run_one``), each answered as ever.

        Every statement gives the GIL away while SQLite works, and the event loop
        holds it for long stretches during a burst of POSTs: a few statements per
        group instead of two per start (same-run A/B: docs/benchmarks.md, Service 202
        latency (session 9)). Without ``savepoint`` a refusal leaves what was written
        for the caller to roll back (the whole group's transaction)."""
        db = self._conn()
        now = time.time()
        ids = [new_operation_id() for _ in calls]
        ops: list[Any] = []
        apps: list[Any] = []
        for op_id, (_, args, _) in zip(ids, calls, strict=True):
            graph, partition_key, app_id, principal, _key, request, fingerprint = args
            ops += (op_id, graph, partition_key, app_id, principal, fingerprint)
            ops += (msgspec.json.encode(request).decode(), now)
            apps += (partition_key, app_id, graph, now)
        n = len(calls)
        if savepoint:
            db.execute("SAVEPOINT plain")
        try:
            inserted = db.execute(_INSERT_PLAIN + ", ".join([_PLAIN_ROW] * n), ops)
            remembered = db.execute(_REMEMBER + ", ".join(["(?, ?, ?, ?)"] * n), apps)
            if remembered.rowcount != n:  # some apps were known: their graphs must match
                for _, args, _ in calls:
                    self._check_graph(db, args[0], args[1], args[2])
        except Exception:  # noqa: BLE001 - refused or failed: one by one answers each
            if savepoint:
                db.execute("ROLLBACK TO plain")
                db.execute("RELEASE plain")
            return None
        if savepoint:
            db.execute("RELEASE plain")
        last = inserted.lastrowid
        assert last is not None  # an INSERT's cursor
        # one statement inserts its rows in order, each with the next rowid after the
        # table's largest (SQLite's rowid algorithm): the first row's is last - n + 1
        return [
            (
                True,
                (
                    _queued(
                        op_id,
                        args[0],
                        args[1],
                        args[2],
                        args[3],
                        None,
                        args[5],
                        now,
                        last - n + 1 + i,
                    ),
                    False,
                ),
            )
            for i, (op_id, (_, args, _)) in enumerate(zip(ids, calls, strict=True))
        ]

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    # ------------------------------------------------------------------ writes

    def queue_create(
        self,
        *,
        graph: str,
        partition_key: str,
        app_id: str,
        principal: str,
        idempotency_key: str | None,
        request: RunRequest,
        fingerprint: str,
        then: Callable[[tuple[Operation, bool]], None] | None = None,
    ) -> asyncio.Future[tuple[Operation, bool]]:
        """Insert a queued operation, queued now on the operations thread; the future
        gives it and whether it was already there (a retry). The insert commits
        whether or not anyone still awaits it, and ``then`` is called with what the
        future gives once it has committed, before the future is set, even when the
        future was cancelled meanwhile (never when the insert was refused or failed)."""
        future = self._queue(
            self._create,
            graph,
            partition_key,
            app_id,
            principal,
            idempotency_key,
            request,
            fingerprint,
        )
        if then is not None:
            self._then[future] = then
        return future

    def _create(
        self,
        graph: str,
        partition_key: str,
        app_id: str,
        principal: str,
        key: str | None,
        request: RunRequest,
        fingerprint: str,
    ) -> tuple[Operation, bool]:
        db = self._conn()  # inside the group's transaction (see _run_group)
        if key is not None:
            found = db.execute(
                f"SELECT {_COLUMNS}, fingerprint FROM operations "
                "WHERE principal = ? AND idempotency_key = ?",
                (principal, key),
            ).fetchone()
            if found is not None:
                if found[-1] != fingerprint:
                    raise ProblemError(
                        "idempotency-key-reused",
                        f"Idempotency-Key {key!r} was used for another request "
                        f"(operation {found[0]})",
                    )
                return _row(found[:-1]), True
        op_id = new_operation_id()
        now = time.time()
        # No savepoint (_SELF_UNDOING): the operation first (a refused INSERT writes
        # nothing), then a new app remembered in one statement (INSERT OR IGNORE; same-run
        # A/B, closed loop 64: +7 % posts/s, session 7), a known one's graph checked, and
        # the operation deleted again when that check refuses it.
        try:
            inserted = db.execute(
                "INSERT INTO operations (id, graph, partition_key, app_id, principal, "
                "idempotency_key, fingerprint, request, phase, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 'queued', ?)",
                (
                    op_id,
                    graph,
                    partition_key,
                    app_id,
                    principal,
                    key,
                    fingerprint,
                    msgspec.json.encode(request).decode(),
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            self._check_graph(db, graph, partition_key, app_id)  # that refusal comes first
            busy = db.execute(
                "SELECT id FROM operations WHERE partition_key = ? AND app_id = ? "
                "AND phase IN ('queued', 'running')",
                (partition_key, app_id),
            ).fetchone()
            if busy is None:
                raise
            raise ProblemError(
                "app-busy",
                f"app {app_id!r} already has operation {busy[0]} queued or running",
                operation_id=busy[0],
            ) from exc
        try:
            remembered = db.execute(
                "INSERT OR IGNORE INTO apps VALUES (?, ?, ?, ?)",
                (partition_key, app_id, graph, now),
            )
            if remembered.rowcount == 0:
                self._check_graph(db, graph, partition_key, app_id)
        except BaseException:
            db.execute("DELETE FROM operations WHERE id = ?", (op_id,))
            raise
        rowid = inserted.lastrowid
        assert rowid is not None  # an INSERT's cursor
        # the row as inserted, without reading it back (the columns not set are defaults;
        # one of the per-POST cuts: +15 % closed-loop posts/s together, docs/benchmarks.md)
        return _queued(
            op_id, graph, partition_key, app_id, principal, key, request, now, rowid
        ), False

    @staticmethod
    def _check_graph(db: sqlite3.Connection, graph: str, partition_key: str, app_id: str) -> None:
        """Refuse a start of a known app with another graph than its own."""
        known = db.execute(
            "SELECT graph FROM apps WHERE partition_key = ? AND app_id = ?",
            (partition_key, app_id),
        ).fetchone()
        if known is not None and known[0] != graph:
            raise ProblemError(
                "invalid-request",
                f"app {app_id!r} runs graph {known[0]!r}, not {graph!r}",
            )

    async def mark_running(self, op_id: str, base_sequence: int) -> Operation | None:
        """Phase ``running`` (``None`` if the operation ended meanwhile); ``base_sequence``
        is kept from the first start, so ``max_steps`` counts on across resumes."""
        return await self._call(self._mark_running, op_id, base_sequence)

    async def finish(
        self,
        op_id: str,
        phase: Phase,
        status: Status,
        *,
        sequence_id: int | None,
        position: str | None,
        error: dict[str, Any] | None = None,
    ) -> Operation | None:
        """End an operation once: ``None`` if it had already ended."""
        return await self._call(self._finish, op_id, phase, status, sequence_id, position, error)

    def _finish(
        self,
        op_id: str,
        phase: Phase,
        status: Status,
        sequence_id: int | None,
        position: str | None,
        error: dict[str, Any] | None,
    ) -> Operation | None:
        db = self._conn()
        cursor = db.execute(
            "UPDATE operations SET phase = ?, status = ?, sequence_id = ?, position = ?, "
            "error = ?, finished_at = ? WHERE id = ? AND phase IN ('queued', 'running')",
            (
                phase,
                status,
                sequence_id,
                position,
                None if error is None else json.dumps(error),
                time.time(),
                op_id,
            ),
        )
        if cursor.rowcount == 0:
            return None
        return self._get(op_id)

    def _mark_running(self, op_id: str, base_sequence: int) -> Operation | None:
        updated = self._conn().execute(
            "UPDATE operations SET phase = 'running', status = 'running', "
            "base_sequence = COALESCE(base_sequence, ?), "
            "started_at = COALESCE(started_at, ?) "
            "WHERE id = ? AND phase IN ('queued', 'running')",
            (base_sequence, time.time(), op_id),
        )
        return self._get(op_id) if updated.rowcount else None

    async def requeue(self, op_id: str, *, resumed: bool) -> Operation | None:
        """Back to ``queued`` (after a restart or a graceful stop), counting resumes."""
        return await self._call(self._requeue, op_id, resumed)

    def _requeue(self, op_id: str, resumed: bool) -> Operation | None:
        self._conn().execute(
            "UPDATE operations SET phase = 'queued', status = 'queued', resumed = resumed + ? "
            "WHERE id = ? AND phase IN ('queued', 'running')",
            (1 if resumed else 0, op_id),
        )
        return self._get(op_id)

    async def request_cancel(self, op_id: str) -> Operation | None:
        return await self._call(self._request_cancel, op_id)

    def _request_cancel(self, op_id: str) -> Operation | None:
        self._conn().execute(
            "UPDATE operations SET cancel_requested = 1 "
            "WHERE id = ? AND phase IN ('queued', 'running')",
            (op_id,),
        )
        return self._get(op_id)

    # ------------------------------------------------------------------ reads

    async def get(self, op_id: str) -> Operation | None:
        return await self._call(self._get, op_id)

    def _get(self, op_id: str) -> Operation | None:
        row = (
            self._conn()
            .execute(f"SELECT {_COLUMNS} FROM operations WHERE id = ?", (op_id,))
            .fetchone()
        )
        return None if row is None else _row(row)

    async def unfinished(self) -> list[Operation]:
        """Operations queued or running, oldest first (what a restart resumes)."""
        return await self._call(self._unfinished)

    def _unfinished(self) -> list[Operation]:
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM operations WHERE phase IN ('queued', 'running') ORDER BY rowid"
        )
        return [_row(row) for row in rows]

    async def by_key(self, principal: str, idempotency_key: str) -> Operation | None:
        """The operation ``principal`` created with ``idempotency_key``, if any."""
        return await self._call(self._by_key, principal, idempotency_key)

    def _by_key(self, principal: str, key: str) -> Operation | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM operations WHERE principal = ? AND idempotency_key = ?",
                (principal, key),
            )
            .fetchone()
        )
        return None if row is None else _row(row)

    async def latest_for_app(self, partition_key: str, app_id: str) -> Operation | None:
        return await self._call(self._latest_for_app, partition_key, app_id)

    def _latest_for_app(self, partition_key: str, app_id: str) -> Operation | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM operations WHERE partition_key = ? AND app_id = ? "
                "ORDER BY rowid DESC LIMIT 1",
                (partition_key, app_id),
            )
            .fetchone()
        )
        return None if row is None else _row(row)

    async def graph_of(self, partition_key: str, app_id: str) -> str | None:
        return await self._call(self._graph_of, partition_key, app_id)

    def _graph_of(self, partition_key: str, app_id: str) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT graph FROM apps WHERE partition_key = ? AND app_id = ?",
                (partition_key, app_id),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    async def graphs(self, streams: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        return await self._call(self._graphs, streams)

    def _graphs(self, streams: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        db = self._conn()
        found: dict[tuple[str, str], str] = {}
        for pk, app in streams:
            row = db.execute(
                "SELECT graph FROM apps WHERE partition_key = ? AND app_id = ?", (pk, app)
            ).fetchone()
            if row is not None:
                found[(pk, app)] = str(row[0])
        return found

    async def remember_app(self, partition_key: str, app_id: str, graph: str) -> None:
        await self._call(self._remember_app, partition_key, app_id, graph)

    def _remember_app(self, partition_key: str, app_id: str, graph: str) -> None:
        self._conn().execute(
            "INSERT OR IGNORE INTO apps VALUES (?, ?, ?, ?)",
            (partition_key, app_id, graph, time.time()),
        )

    async def listing(
        self,
        *,
        after: int,
        limit: int,
        status: str | None,
        partition_keys: Callable[[str], bool],
    ) -> list[Operation]:
        """Operations after cursor ``after`` in creation order (visible ones only)."""
        return await self._call(self._listing, after, limit, status, partition_keys)

    def _listing(
        self, after: int, limit: int, status: str | None, visible: Callable[[str], bool]
    ) -> list[Operation]:
        found: list[Operation] = []
        where = "rowid > ?" + ("" if status is None else " AND status = ?")
        params: tuple[Any, ...] = (after,) if status is None else (after, status)
        for row in self._conn().execute(
            f"SELECT {_COLUMNS} FROM operations WHERE {where} ORDER BY rowid", params
        ):
            op = _row(row)
            if visible(op.partition_key):
                found.append(op)
                if len(found) >= limit:
                    break
        return found

    async def count_queued(self) -> int:
        return await self._call(self._count_queued)

    def _count_queued(self) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM operations WHERE phase = 'queued'")
        return int(row.fetchone()[0])

    async def count(self) -> int:
        return await self._call(self._count)

    def _count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM operations").fetchone()[0])


#: the writes of the operations thread that undo their own writes when they fail: the
#: group runs them without a savepoint (``OperationStore._run_one``)
_SELF_UNDOING = frozenset({OperationStore._create})

#: plain starts in one INSERT at most (9 parameters a row, far under SQLite's limit)
_PLAIN_ROWS = 100
_INSERT_PLAIN = (
    "INSERT INTO operations (id, graph, partition_key, app_id, principal, fingerprint, "
    "request, created_at, idempotency_key, phase, status) VALUES "
)
_PLAIN_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, NULL, 'queued', 'queued')"
_REMEMBER = "INSERT OR IGNORE INTO apps VALUES "


def _plain(call: tuple[Callable[..., Any], tuple[Any, ...], Any]) -> bool:
    """A ``_create`` without an Idempotency-Key (``_create_plain`` can take it)."""
    fn, args, _ = call
    return getattr(fn, "__func__", None) is OperationStore._create and args[4] is None
