"""Synchronous projection handlers: audit_trail's fast rows, handler choice, a locked read model."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog.eventstore import ErrorInfo, Event, MemoryEventStore, Recorded
from statelog.projections import (
    AuditTrailProjection,
    ProjectionContext,
    ProjectionRunner,
    ReadModel,
    StoreSource,
    SyncProjectionContext,
)
from statelog.projections._builtins import iso
from statelog.projections._projection import sync_handler
from tests.projection_support import SeenProjection, append_simple, dump

texts = st.text(max_size=6)
optional_texts = st.one_of(st.none(), texts)
stamps = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),  # naive
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
    ),
    st.just(datetime(2026, 1, 1, 12, tzinfo=UTC)),  # no microseconds
)
json_values = st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=False), texts)
events = st.builds(
    Event,
    partition_key=texts,
    app_id=texts.filter(bool),
    sequence_id=st.integers(0, 1000),
    kind=st.sampled_from(["action_completed", "action_failed", "app_initialized", "custom"]),
    action=optional_texts,
    next_action=optional_texts,
    inputs=st.dictionaries(texts, json_values, max_size=3),
    ops=st.lists(
        st.builds(lambda k, v: {"op": "set", "key": k, "value": v}, texts, json_values)
        | st.builds(lambda k: {"op": "delete", "key": k}, texts)
        | st.builds(lambda k, v: {"op": "append", "key": k, "value": v}, texts, json_values),
        max_size=3,
    ),
    error=st.one_of(
        st.none(),
        st.builds(ErrorInfo, type=texts, message=texts, traceback=st.lists(texts, max_size=2)),
    ),
    timestamp=stamps,
    duration_us=st.integers(0, 10_000_000),
    attempt=st.integers(1, 5),
    actor=optional_texts,
    correlation_id=optional_texts,
    data=st.dictionaries(texts, json_values, max_size=2),
    hash=st.text("0123456789abcdef", min_size=64, max_size=64),
)


def reference_row(position: int, e: Event) -> tuple[Any, ...]:
    """The row the documented schema promises, built the plain way."""

    def text(value: Any) -> str:
        return msgspec.json.encode(value).decode()

    return (
        position or None,
        e.partition_key,
        e.app_id,
        e.sequence_id,
        e.kind,
        e.action,
        e.next_action,
        iso(e.timestamp),
        e.duration_us,
        e.attempt,
        text(e.inputs),
        text(e.ops),
        text(e.data),
        None if e.error is None else e.error.type,
        None if e.error is None else e.error.message,
        None if e.error is None or not e.error.traceback else "\n".join(e.error.traceback),
        e.actor,
        e.correlation_id,
        e.hash,
    )


def read_table(db: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), events), min_size=1, max_size=12))
def test_audit_rows_hold_exactly_the_documented_values(
    tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[int, Event]]
) -> None:
    # Unique (partition_key, app_id, sequence_id), or INSERT OR IGNORE drops rows.
    unique: dict[tuple[str, str, int], Recorded] = {}
    for position, e in batch:
        unique.setdefault((e.partition_key, e.app_id, e.sequence_id), Recorded(position, e))
    records = list(unique.values())
    expected = [reference_row(position, e) for position, e in records]
    path = tmp_path_factory.mktemp("audit") / "rm.db"

    async def both() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        projection = AuditTrailProjection()
        async with await ReadModel.open(path) as model:
            for generation in (1, 2):
                await projection.setup(model.context(projection, generation))
            await projection.handle_batch(model.context(projection, 1), records)
            projection.handle_batch_sync(model.sync_context(projection, 2), records)
            assert model.sync_db is not None
            return read_table(model.sync_db, "audit_trail_g1"), read_table(
                model.sync_db, "audit_trail_g2"
            )

    via_async, via_sync = asyncio.run(both())
    assert via_async == expected
    assert via_sync == expected


def test_the_most_derived_handler_is_the_one_called() -> None:
    class Audited(AuditTrailProjection):
        pass

    class Wrapped(AuditTrailProjection):
        async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
            await super().handle_batch(ctx, records)

    class WrappedSync(Wrapped):
        def handle_batch_sync(
            self, ctx: SyncProjectionContext, records: Sequence[Recorded]
        ) -> None:
            super().handle_batch_sync(ctx, records)

    assert sync_handler(AuditTrailProjection()) is not None
    assert sync_handler(Audited()) is not None
    assert sync_handler(Wrapped()) is None  # its own async handler must run
    assert sync_handler(WrappedSync()) is not None
    assert sync_handler(SeenProjection()) is None


async def test_a_locked_read_model_waits_off_the_event_loop(tmp_path: Path) -> None:
    """Another connection holds the write lock mid-rebuild: the runner waits on a thread."""
    store = MemoryEventStore()
    await append_simple(store, streams=3, per_stream=20, batch=5)
    path = tmp_path / "rm.db"
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    release_after = 0.5
    locked_at: list[float] = []

    def lock_once(items: Sequence[Any], checkpoint: Any) -> None:
        # After the first batch: hold the write lock from another connection.
        if not locked_at:
            locker.execute("BEGIN IMMEDIATE")
            locked_at.append(time.monotonic())
            threading.Timer(release_after, locker.execute, args=("COMMIT",)).start()

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        async with ProjectionRunner(
            AuditTrailProjection(), path, batch_size=10, on_commit=lock_once
        ) as runner:
            gen = await runner.rebuild(StoreSource(store))
            waited = time.monotonic() - locked_at[0]
    finally:
        ticker.cancel()
        locker.close()
    assert gen.status == "live" and gen.checkpoint.events == 60
    assert waited >= release_after * 0.9  # it did wait for the lock ...
    assert ticks >= 10  # ... and the loop kept running meanwhile
    assert len(dump(path, "audit_trail")) == 60


async def test_cancelled_while_waiting_for_the_lock_leaves_a_consistent_read_model(
    tmp_path: Path,
) -> None:
    """Cancel the runner while its batch waits on a thread for a lock held elsewhere."""
    store = MemoryEventStore()
    await append_simple(store, streams=3, per_stream=20, batch=5)
    path = tmp_path / "rm.db"
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locked = asyncio.Event()

    def lock_once(items: Sequence[Any], checkpoint: Any) -> None:
        if not locked.is_set():
            locker.execute("BEGIN IMMEDIATE")
            locked.set()

    runner = ProjectionRunner(AuditTrailProjection(), path, batch_size=10, on_commit=lock_once)
    await runner.open()
    try:
        task = asyncio.create_task(runner.rebuild(StoreSource(store)))
        await locked.wait()
        await asyncio.sleep(0.2)  # the next batch is now waiting on a thread
        assert not task.done()
        task.cancel()
        await asyncio.sleep(0.1)
        locker.execute("COMMIT")  # the waiting thread may now commit its batch
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await runner.aclose()  # closes the connection only after the thread let go
        locker.close()
    # Whatever got committed, rows and checkpoint agree; a restart finishes it.
    db = sqlite3.connect(path)
    try:
        (rows,) = db.execute("SELECT count(*) FROM audit_trail_g1").fetchone()
        (events,) = db.execute("SELECT events FROM statelog_projections").fetchone()
    finally:
        db.close()
    assert rows == events and rows in (10, 20)
    async with ProjectionRunner(AuditTrailProjection(), path) as again:
        gen = await again.rebuild(StoreSource(store))
    assert gen.generation == 1 and gen.checkpoint.events == 60
    assert len(dump(path, "audit_trail")) == 60
