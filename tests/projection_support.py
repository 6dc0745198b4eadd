"""Helpers for the projection tests: random runs, read-model dumps, a test projection."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from statelog.eventstore import ErrorInfo, Event, EventKind, EventStore, Lineage, Recorded
from statelog.projections import Projection, ProjectionContext, register_projection
from tests.ops_support import v2

T0 = datetime(2026, 1, 1, tzinfo=UTC)

KEYS = ["a", "b", "c", "d"]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.text(max_size=5),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 9), max_size=2),
)
deltas = st.tuples(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=3),  # writes
    st.lists(st.sampled_from(KEYS), max_size=2, unique=True),  # deletes
    st.sampled_from(
        [EventKind.ACTION_COMPLETED, EventKind.ACTION_FAILED, EventKind.HALTED, "custom"]
    ),
)
#: A run: steps of (stream index, events appended in one batch).
runs = st.lists(
    st.tuples(st.integers(0, 4), st.lists(deltas, min_size=1, max_size=3)),
    min_size=1,
    max_size=25,
)


def stream_name(index: int) -> tuple[str, str]:
    return ("tenant-" + "ab"[index % 2], f"app-{index}")


def make_events(
    partition_key: str, app_id: str, first: int, specs: Sequence[Any], clock: list[int]
) -> list[Event]:
    events = []
    for offset, (writes, deletes, kind) in enumerate(specs):
        sequence_id = first + offset
        clock[0] += 1
        events.append(
            v2(
                partition_key=partition_key,
                app_id=app_id,
                sequence_id=sequence_id,
                kind=EventKind.APP_INITIALIZED if sequence_id == 0 else str(kind),
                action=None if sequence_id == 0 else f"step{sequence_id % 3}",
                next_action=f"step{(sequence_id + 1) % 3}",
                inputs={"i": sequence_id},
                writes=writes,
                deletes=deletes,
                error=ErrorInfo(type="ValueError", message="boom")
                if kind == EventKind.ACTION_FAILED
                else None,
                timestamp=T0 + timedelta(seconds=clock[0], microseconds=clock[0] % 7),
                attempt=1 + sequence_id % 2,
                parent=Lineage(partition_key="tenant-a", app_id="app-0", sequence_id=0)
                if app_id == "app-3" and sequence_id == 0
                else None,
            )
        )
    return events


async def append_run(store: EventStore, run: Sequence[Any], clock: list[int] | None = None) -> int:
    """Append a random run; return the number of events appended."""
    clock = clock if clock is not None else [0]
    total = 0
    for index, specs in run:
        pk, app = stream_name(index)
        last = await store.last_sequence(pk, app)
        await store.append(make_events(pk, app, last + 1, specs, clock), expected_sequence=last)
        total += len(specs)
    return total


async def append_simple(store: EventStore, streams: int, per_stream: int, batch: int = 10) -> int:
    clock = [0]
    total = 0
    for start in range(0, per_stream, batch):
        for index in range(streams):
            pk, app = ("p", f"app-{index}")
            specs = [({"n": start + i}, [], EventKind.ACTION_COMPLETED) for i in range(batch)]
            events = make_events(pk, app, start, specs, clock)
            await store.append(events, expected_sequence=start - 1)
            total += len(events)
    return total


ORDER = {
    "audit_trail": "partition_key, app_id, sequence_id",
    "current_state": "partition_key, app_id",
    "app_index": "partition_key, app_id",
    "seen": "partition_key, app_id, sequence_id",
}


def dump(path: Path, view: str, *, drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every row of ``view`` in ``path`` as dicts (without the ``drop`` columns)."""
    db = sqlite3.connect(path)
    try:
        cursor = db.execute(f"SELECT * FROM {view} ORDER BY {ORDER[view]}")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        db.close()
    for row in rows:
        for column in drop:
            row.pop(column, None)
    return rows


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    """Poll ``predicate()`` until true; fail (not a timing assertion: a hang guard)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


class SeenProjection(Projection):
    """Records every (stream, sequence_id) it applies; a second apply breaks UNIQUE.

    ``STATELOG_TEST_SEEN_DELAY`` (seconds) sleeps inside each batch's
    transaction, so a kill lands mid-batch.
    """

    name = "seen"
    version = 1
    tables = ("seen",)

    async def setup(self, ctx: ProjectionContext) -> None:
        await ctx.db.execute(
            f"CREATE TABLE {ctx.table('seen')} (partition_key TEXT, app_id TEXT, "
            "sequence_id INTEGER, position INTEGER, UNIQUE (partition_key, app_id, sequence_id))"
        )

    async def handle_batch(self, ctx: ProjectionContext, records: Sequence[Recorded]) -> None:
        delay = float(os.environ.get("STATELOG_TEST_SEEN_DELAY", "0"))
        await ctx.db.executemany(
            f"INSERT INTO {ctx.table('seen')} VALUES (?, ?, ?, ?)",
            [
                (r.event.partition_key, r.event.app_id, r.event.sequence_id, r.position)
                for r in records
            ],
        )
        if delay:
            await asyncio.sleep(delay)


register_projection(SeenProjection)
