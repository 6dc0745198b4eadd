"""The snapshot law: fold(all) == fold(snapshot at k) + replay(k+1..n), for every k.

Checked through the real SnapshotStore (a SQLite file) and a real event store:
the MemoryEventStore for many examples, the SQLiteEventStore for fewer.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog import eventstore
from statelog.eventstore import (
    Event,
    EventStore,
    MemoryEventStore,
    Snapshot,
    SnapshotStore,
    fold,
    load_state,
)
from tests.ops_support import v2

KEYS = ["a", "b", "c", "d"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
deltas = st.tuples(
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3),
    st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
)


def to_events(app_id: str, ops: list[tuple[dict[str, Any], list[str]]]) -> list[Event]:
    return [
        v2(
            partition_key="p",
            app_id=app_id,
            sequence_id=seq,
            kind="action_completed",
            writes=writes,
            deletes=deletes,
        )
        for seq, (writes, deletes) in enumerate(ops)
    ]


async def check_law(store: EventStore, snapshots: SnapshotStore, app_id: str, ops: Any) -> None:
    events = to_events(app_id, ops)
    recorded = await store.append(events, expected_sequence=-1)
    stored = [r.event for r in recorded]
    n = len(stored)
    everything = fold(stored)
    assert await load_state(store, snapshots, "p", app_id) == (everything, n - 1)
    for k in range(n):
        await snapshots.save(
            Snapshot(
                partition_key="p",
                app_id=app_id,
                sequence_id=k,
                state=fold(stored[: k + 1]),
                position=recorded[k].position,
                event_hash=stored[k].hash,
            )
        )
        loaded = await snapshots.load("p", app_id, store=store)
        assert loaded is not None and loaded.sequence_id == k
        # fold(snapshot at k) + replay(k+1..n) == fold(all)
        replay = await store.read("p", app_id, from_sequence=k + 1)
        assert fold(replay, loaded.state) == everything
        assert await load_state(store, snapshots, "p", app_id) == (everything, n - 1)
    # And at every earlier point, with every snapshot present.
    for j in range(n):
        assert await load_state(store, snapshots, "p", app_id, at_sequence=j) == (
            fold(stored[: j + 1]),
            j,
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(deltas, min_size=1, max_size=12))
def test_snapshot_plus_replay_equals_full_fold_memory(ops: Any) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = MemoryEventStore(codec="msgpack")
            async with SnapshotStore(Path(tmp) / "snap.db") as snapshots:
                await check_law(store, snapshots, "app", ops)

    asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(deltas, min_size=1, max_size=8), codec=st.sampled_from(["json", "msgpack"]))
def test_snapshot_plus_replay_equals_full_fold_sqlite(ops: Any, codec: str) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "log.db"  # one file: events and snapshots side by side
            async with (
                eventstore.SQLiteEventStore(path, codec=codec) as store,
                SnapshotStore(path) as snapshots,
            ):
                await check_law(store, snapshots, "app", ops)

    asyncio.run(run())
