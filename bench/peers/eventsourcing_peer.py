"""eventsourcing: the loop as an aggregate whose three command methods each trigger
one event; ``Application.save`` records each step's event in its own transaction.

Configuration is by environment, as documented: ``PERSISTENCE_MODULE`` =
``eventsourcing.popo`` (in memory) or ``eventsourcing.sqlite`` with ``SQLITE_DBNAME``;
``IS_SNAPSHOTTING_ENABLED``. The SQLite pool switches files to WAL and has no setting
for ``synchronous``, so it runs at SQLite's default, FULL (the WAL synced at each
commit). For the rows that compare everyone at WAL + NORMAL, ``synchronous("NORMAL")``
sets it on each connection the pool opens (the pragmas really in effect are read back
and reported with the figure).

Its events store no field values: ``a`` records "A happened" and replay re-runs the
method body (``count += 1``), where statelog records the write ``{"count": n}``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.peers._base import DurableConfig, System
from bench.workloads import (
    ACTIONS,
    NotApplicableError,
    expected_count,
    initial_state,
)

SNAPSHOT_EVERY = 1_000
SECTION_SIZE = 1_000  # notification-log section per pull (Follower default: 10)
_classes: dict[str, Any] = {}


def _defs() -> dict[str, Any]:
    """Define the aggregate, application and view lazily (the import may be absent)."""
    if _classes:
        return _classes
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
    from eventsourcing.persistence import Tracking
    from eventsourcing.projection import Projection
    from eventsourcing.sqlite import SQLiteTrackingRecorder

    class Flow(Aggregate):
        @event("Started")
        def __init__(self, state: dict[str, Any]) -> None:
            self.state = dict(state)  # the event keeps its own copy

        @event("A")
        def a(self) -> None:
            self.state["count"] += 1

        @event("B")
        def b(self) -> None:
            self.state["flag"] = not self.state["flag"]

        @event("C")
        def c(self) -> None:
            self.state["label"] = f"c{self.state['count']}"

    class FlowApp(Application[UUID]):
        snapshotting_intervals = {Flow: SNAPSHOT_EVERY}
        log_section_size = SECTION_SIZE

    class AuditView(SQLiteTrackingRecorder):
        """A read model: one row per event, written with its tracking record."""

        def construct_create_table_statements(self) -> list[str]:
            return [
                *super().construct_create_table_statements(),
                "CREATE TABLE IF NOT EXISTS audit_trail (position INTEGER PRIMARY KEY,"
                " stream TEXT, version INTEGER, action TEXT, at TEXT, data TEXT)",
            ]

        def record(self, row: tuple[Any, ...], tracking: Tracking) -> None:
            with self.datastore.transaction(commit=True) as c:
                c.execute("INSERT INTO audit_trail VALUES (?, ?, ?, ?, ?, ?)", row)
                self._insert_tracking(c, tracking)

    class AuditProjection(Projection[AuditView]):
        name = "audit"

        def process_event(self, domain_event: Any, tracking: Tracking) -> None:
            self.view.record(
                (
                    tracking.notification_id,
                    str(domain_event.originator_id),
                    domain_event.originator_version,
                    type(domain_event).__name__,
                    domain_event.timestamp.isoformat(),
                    json.dumps({k: v for k, v in domain_event.__dict__.items() if k == "state"}),
                ),
                tracking,
            )

    _classes.update(Flow=Flow, FlowApp=FlowApp, AuditView=AuditView, Projection=AuditProjection)
    return _classes


def _env(path: Path | None, snapshots: bool = True) -> dict[str, str]:
    if path is None:
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "IS_SNAPSHOTTING_ENABLED": "y" if snapshots else "n",
    }


@contextlib.contextmanager
def synchronous(mode: str | None) -> Iterator[None]:
    """Inside: each SQLite connection eventsourcing opens runs ``PRAGMA synchronous=mode``.

    Its pool has no such setting, so this wraps the pool's connection factory;
    ``None`` leaves SQLite's default (FULL). Not thread-safe: one run at a time.
    """
    if mode is None:
        yield
        return
    if mode not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {mode!r}")
    from eventsourcing.sqlite import SQLiteConnectionPool

    create = SQLiteConnectionPool._create_connection

    def create_with_mode(pool: Any) -> Any:
        conn = create(pool)
        conn._sqlite_conn.execute(f"PRAGMA synchronous={mode}")  # noqa: SLF001
        return conn

    SQLiteConnectionPool._create_connection = create_with_mode  # type: ignore[method-assign]
    try:
        yield
    finally:
        SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign]


def _step(flow: Any, i: int) -> None:
    getattr(flow, ACTIONS[i % 3])()


def _pragmas(app: Any) -> str:
    pool = app.recorder.datastore.pool
    conn = pool.get_connection(is_writer=False)
    try:
        raw = conn._sqlite_conn  # noqa: SLF001 - read the pragmas really in effect
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
        sync = raw.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        pool.put_connection(conn)
    return f"{str(mode).upper()}+{['OFF', 'NORMAL', 'FULL', 'EXTRA'][sync]}"


class EventSourcing(System):
    name = "eventsourcing"
    durable_rows = {
        "full": DurableConfig("Application.save per step (eventsourcing.sqlite)", "WAL", None),
        "normal": DurableConfig(
            "Application.save per step (eventsourcing.sqlite; synchronous set by the bench)",
            "WAL",
            "NORMAL",
        ),
        "default": DurableConfig("Application.save per step (eventsourcing.sqlite)", None, None),
        "async": "a synchronous library (no async API)",
        "background": "no background-persistence mode (save() records before it returns)",
    }

    def available(self) -> str | None:
        try:
            import eventsourcing.application  # noqa: F401
        except ImportError:
            return "eventsourcing not installed (pip install -e '.[bench]')"
        return None

    def version(self) -> str:
        return importlib.metadata.version("eventsourcing")

    async def mem(self, steps: int) -> float:
        d = _defs()
        app = d["FlowApp"](env=_env(None))
        flow = d["Flow"](initial_state())
        app.save(flow)
        start = time.perf_counter()
        for i in range(steps):
            _step(flow, i)
            app.save(flow)
        elapsed = time.perf_counter() - start
        assert flow.state["count"] == expected_count(steps)
        app.close()
        return elapsed

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        d = _defs()
        with synchronous(config.synchronous):
            app = d["FlowApp"](env=_env(path, snapshots=False))
            try:
                flow = d["Flow"](initial_state())
                app.save(flow)
                start = time.perf_counter()
                for i in range(steps):
                    _step(flow, i)
                    app.save(flow)
                elapsed = time.perf_counter() - start
                return elapsed, _pragmas(app)
            finally:
                app.close()

    async def concurrent(self, apps: int, steps: int, path: Path) -> tuple[float, str]:
        """``apps`` aggregates, one thread each, on one Application (its connection pool),
        at WAL + NORMAL as the other systems' rows (set by the bench, read back)."""
        d = _defs()
        with synchronous("NORMAL"):
            app = d["FlowApp"](env={**_env(path, snapshots=False), "SQLITE_LOCK_TIMEOUT": "60"})
            try:
                flows = [d["Flow"](initial_state()) for _ in range(apps)]
                app.save(*flows)

                def drive(flow: Any) -> None:
                    for i in range(steps):
                        _step(flow, i)
                        app.save(flow)

                with ThreadPoolExecutor(max_workers=apps) as pool:
                    start = time.perf_counter()
                    list(pool.map(drive, flows))
                    elapsed = time.perf_counter() - start
                return elapsed, f"{_pragmas(app)} ({apps} threads, one Application)"
            finally:
                app.close()

    async def build_history(self, path: Path, steps: int) -> None:
        """Events saved a chunk per transaction, a snapshot every ``SNAPSHOT_EVERY``."""
        d = _defs()
        app = d["FlowApp"](env=_env(path))
        flow = d["Flow"](initial_state())
        done = 0
        while done < steps:
            chunk = min(SNAPSHOT_EVERY, steps - done)
            for i in range(done, done + chunk):
                _step(flow, i)
            app.save(flow)  # snapshotting_intervals takes the snapshots
            done += chunk
        (path.parent / "eventsourcing.id").write_text(str(flow.id))
        app.close()

    @staticmethod
    def _flow_id(path: Path) -> UUID:
        return UUID((path.parent / "eventsourcing.id").read_text())

    async def resume(self, path: Path, steps: int) -> float:
        d = _defs()
        app = d["FlowApp"](env=_env(path))
        try:
            flow_id = self._flow_id(path)
            app.recorder.max_notification_id()  # open the connection before timing
            start = time.perf_counter()
            flow = app.repository.get(flow_id)
            before = flow.state["count"]
            _step(flow, flow.version - 1)  # version 1 is "Started": step i is version i + 2
            app.save(flow)
            elapsed = time.perf_counter() - start
            if before < expected_count(steps):
                raise AssertionError("eventsourcing resumed from the wrong state")
            return elapsed
        finally:
            app.close()

    async def replay(self, path: Path, steps: int) -> float:
        """``repository.get`` with snapshotting off: reads and applies every event."""
        d = _defs()
        app = d["FlowApp"](env=_env(path, snapshots=False))
        try:
            flow_id = self._flow_id(path)
            app.recorder.max_notification_id()
            start = time.perf_counter()
            flow = app.repository.get(flow_id)
            elapsed = time.perf_counter() - start
            if flow.state["count"] < expected_count(steps):
                raise AssertionError("eventsourcing replay gave the wrong state")
            return elapsed
        finally:
            app.close()

    async def rebuild(self, path: Path, steps: int, out: Path, limit: int) -> tuple[float, int]:
        """Rebuild an audit read model from position zero with eventsourcing's
        ``Projection`` and a ``SQLiteTrackingRecorder`` view (row + tracking in one
        transaction per event), pulling the notification log as ``Follower`` does.
        ``ProjectionRunner`` itself needs a recorder with ``subscribe``, which the
        SQLite application recorder does not implement. It commits (and fsyncs, FULL)
        once per event, so it applies the first ``limit`` events only."""
        from eventsourcing.persistence import InfrastructureFactory, Tracking
        from eventsourcing.system import NotificationLogReader
        from eventsourcing.utils import Environment

        d = _defs()
        app = d["FlowApp"](env=_env(path, snapshots=False))
        view_env = Environment(d["Projection"].name, _env(out))
        view = InfrastructureFactory.construct(env=view_env).tracking_recorder(d["AuditView"])
        try:
            projection = d["Projection"](view=view)
            reader = NotificationLogReader(app.notification_log, section_size=SECTION_SIZE)
            start = time.perf_counter()
            count = 0
            limit = min(steps + 1, limit)
            for notifications in reader.select(start=1, stop=limit):
                for n in notifications:
                    event = app.mapper.to_domain_event(n)
                    projection.process_event(event, Tracking(app.name, n.id))
                    count += 1
            elapsed = time.perf_counter() - start
            if count < limit:
                raise AssertionError(f"eventsourcing rebuild saw {count} of {limit} events")
            return elapsed, count
        finally:
            view.datastore.close()
            app.close()


_ = NotApplicableError  # re-exported for adapters' symmetry
