"""A log written by statelog's schema v1 (commit d1425d8) keeps working.

``fixtures/v1_log.db`` and ``fixtures/v1_export.jsonl`` were made by the old
code (``fixtures/make_v1_log.py``). Today's statelog reads them, folds them,
verifies their chains, and resumes their apps with v2 events on the same
streams, the chain intact across the v1 -> v2 boundary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from statelog.engine import ApplicationBuilder, State, action
from statelog.eventstore import (
    SnapshotStore,
    SQLiteEventStore,
    compute_hash,
    fold,
    iter_export,
    load_state,
    verify_events,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def v1_db(tmp_path: Path) -> Path:
    path = tmp_path / "v1_log.db"
    shutil.copyfile(FIXTURES / "v1_log.db", path)
    return path


async def test_v1_log_reads_folds_and_verifies(v1_db: Path) -> None:
    async with SQLiteEventStore(v1_db) as store:
        assert await store.verify() is None
        orders = await store.read("", "orders")
        assert [e.kind for e in orders] == [
            "app_initialized",
            "action_completed",
            "action_completed",
            "action_completed",
            "action_failed",
        ]
        assert all(e.legacy is not None and e.schema_version == 2 for e in orders)
        assert [op["op"] for op in orders[3].ops] == ["delete"]  # cleanup's wipe
        assert orders[2].attempt == 2
        assert orders[4].error is not None and orders[4].error.message == "boom"
        want = {"items": ["apple"], "count": 1}
        assert fold(orders) == want
        assert await store.fold_stream("", "orders") == (want, 4)
        assert verify_events(orders) is None
        for event in orders:  # the v1 rule, recomputed from the carried-forward event
            assert compute_hash(event) == event.hash
        fork = await store.read("", "orders-fork")
        assert fork[0].parent is not None and fork[0].parent.app_id == "orders"
        assert fold(fork) == {"items": ["apple"], "count": 1}
    async with SnapshotStore(v1_db) as snaps, SQLiteEventStore(v1_db) as store:
        assert await load_state(store, snaps, "", "orders") == (want, 4)


def test_v1_export_reads_and_verifies() -> None:
    events = list(iter_export(FIXTURES / "v1_export.jsonl"))
    assert len(events) == 8
    by_stream: dict[tuple[str, str], list] = {}
    for event in events:
        by_stream.setdefault(event.stream, []).append(event)
    for stream_events in by_stream.values():
        assert verify_events(stream_events) is None
    assert fold(by_stream[("", "orders")]) == {"items": ["apple"], "count": 1}


def test_statelog_verify_accepts_the_v1_log(v1_db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", str(v1_db)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 streams, 8 events" in done.stdout


@action(reads=["text"], writes=["text"])
def write(state: State, word: str) -> State:
    return state.update(text=(state.get("text") or "") + word)


async def test_a_v1_app_resumes_with_v2_events_and_the_chain_holds(v1_db: Path) -> None:
    async with SQLiteEventStore(v1_db) as store, SnapshotStore(v1_db) as snaps:
        app = await (
            ApplicationBuilder()
            .with_actions(write=write)
            .with_transitions(("write", "write"))
            .initialize_from(store, default_entrypoint="write", default_state={"text": ""})
            .with_identifiers(app_id="notes", partition_key="tenant-b")
            .with_store(store, snapshots=snaps)
            .abuild()
        )
        async with app:
            assert app.state["text"] == "hello "
            assert app.sequence_id == 1
            await app.arun(halt_after=["write"], inputs={"word": "world"})
        events = await store.read("tenant-b", "notes")
        assert [e.legacy is not None for e in events] == [True, True, False, False, False]
        assert [e.kind for e in events[2:]] == ["run_started", "action_completed", "halted"]
        assert events[2].prev_hash == events[1].hash  # v2 chains onto the v1 head
        assert await store.verify() is None
        assert fold(events) == {"text": "hello world"}
