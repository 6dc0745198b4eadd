"""SnapshotStore, SnapshotPolicy and load_state against real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from statelog.eventstore import (
    EncodingError,
    Event,
    EventStore,
    InvalidEventError,
    MemoryEventStore,
    Snapshot,
    SnapshotPolicy,
    SnapshotSkippedWarning,
    SnapshotStore,
    StoreClosedError,
    StoreCorruptError,
    fold,
    load_state,
)
from statelog.eventstore._snapshots import SMALL_SNAPSHOT_BYTES
from tests.ops_support import v2
from tests.process_support import run_python
from tests.thread_support import assert_threads_end

PK, APP = "tenant", "app-1"


def make_events(n: int, *, start: int = 0, app_id: str = APP) -> list[Event]:
    events = []
    for seq in range(start, start + n):
        deletes = ["gone"] if seq % 5 == 4 else []
        events.append(
            v2(
                partition_key=PK,
                app_id=app_id,
                sequence_id=seq,
                kind="action_completed",
                action="step",
                writes={"count": seq, f"k{seq % 3}": [seq, {"x": str(seq)}], "gone": seq},
                deletes=deletes,
            )
        )
    return events


async def filled_store(n: int) -> MemoryEventStore:
    store = MemoryEventStore()
    await store.append(make_events(n), expected_sequence=-1)
    return store


async def snapshot_at(store: EventStore, seq: int, **kw: Any) -> Snapshot:
    events = await store.read(PK, APP, to_sequence=seq)
    recorded = await store.read_all()
    position = next(r.position for r in recorded if r.event.hash == events[-1].hash)
    return Snapshot(
        partition_key=PK,
        app_id=APP,
        sequence_id=seq,
        state=fold(events),
        position=position,
        event_hash=events[-1].hash,
        **kw,
    )


@pytest.fixture
async def snapshots(tmp_path: Path) -> AsyncIterator[SnapshotStore]:
    async with SnapshotStore(tmp_path / "snap.db") as snaps:
        yield snaps


def raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


# --------------------------------------------------------------------------- save / load


async def test_save_and_load_latest_at_or_before(snapshots: SnapshotStore) -> None:
    store = await filled_store(30)
    for seq in (4, 9, 19):
        await snapshots.save(await snapshot_at(store, seq))
    latest = await snapshots.load(PK, APP)
    assert latest is not None
    assert latest.sequence_id == 19
    assert latest.state == fold(await store.read(PK, APP, to_sequence=19))
    assert latest.created_at.tzinfo is not None
    at = await snapshots.load(PK, APP, max_sequence=18)
    assert at is not None and at.sequence_id == 9
    assert (await snapshots.load(PK, APP, max_sequence=9, store=store)).sequence_id == 9  # type: ignore[union-attr]
    assert await snapshots.load(PK, APP, max_sequence=3) is None
    assert await snapshots.load(PK, "other") is None
    assert await snapshots.sequences(PK, APP) == [(4, 5), (9, 10), (19, 20)]


async def test_saving_the_same_sequence_replaces(snapshots: SnapshotStore) -> None:
    store = await filled_store(5)
    snap = await snapshot_at(store, 3)
    await snapshots.save(snap)
    await snapshots.save(snap)
    assert await snapshots.sequences(PK, APP) == [(3, 4)]


async def test_state_round_trips_exactly(snapshots: SnapshotStore) -> None:
    state = {"n": 2**62, "f": 0.1, "neg": -0.0, "s": "é\n\x00", "l": [None, True, [{}]], "d": {}}
    await snapshots.save(
        Snapshot(
            partition_key="", app_id="a", sequence_id=0, state=state, position=1, event_hash="h"
        )
    )
    loaded = await snapshots.load("", "a")
    assert loaded is not None and loaded.state == state


async def test_bad_snapshot_input_is_refused_and_nothing_written(snapshots: SnapshotStore) -> None:
    def snap(**kw: Any) -> Snapshot:
        base: dict[str, Any] = dict(
            partition_key=PK, app_id=APP, sequence_id=0, state={}, position=1, event_hash="h"
        )
        base.update(kw)
        return Snapshot(**base)

    with pytest.raises(EncodingError) as info:
        await snapshots.save(snap(state={"ok": 1, "bad": {"x": [1, object()]}}))
    assert info.value.path == "$.state.bad.x[1]"
    with pytest.raises(EncodingError):
        await snapshots.save(snap(state={"nan": float("nan")}))
    with pytest.raises(InvalidEventError):
        await snapshots.save(snap(app_id=""))
    with pytest.raises(InvalidEventError):
        await snapshots.save(snap(sequence_id=-1))
    assert await snapshots.sequences(PK, APP) == []


# --------------------------------------------------------------------------- skipping


async def test_corrupt_state_bytes_are_skipped_for_an_older_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    store = await filled_store(20)
    async with SnapshotStore(path) as snaps:
        await snaps.save(await snapshot_at(store, 9))
        await snaps.save(await snapshot_at(store, 14))
        raw(path, "UPDATE snapshots SET state = ? WHERE sequence_id = 14", (b"\xc1\xff\x00",))
        with pytest.warns(SnapshotSkippedWarning, match=r"sequence_id 14: checksum"):
            found = await snaps.load(PK, APP, store=store)
        assert found is not None and found.sequence_id == 9


async def test_flipped_byte_in_state_is_caught_by_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    store = await filled_store(20)
    async with SnapshotStore(path) as snaps:
        await snaps.save(await snapshot_at(store, 9))
        await snaps.save(await snapshot_at(store, 14))
        # Same length, still valid msgpack: change the value of "count" 14 -> 13.
        raw(
            path,
            "UPDATE snapshots SET state = replace(state, X'A5636F756E740E', "
            "X'A5636F756E740D') WHERE sequence_id = 14",
        )
        with pytest.warns(SnapshotSkippedWarning, match="checksum"):
            state, last = await load_state(store, snaps, PK, APP)
        assert (state, last) == (fold(await store.read(PK, APP)), 19)


async def test_undecodable_snapshot_is_skipped(tmp_path: Path) -> None:
    """Bytes whose checksum holds but that are not a msgpack map (e.g. a bug) are skipped."""
    from statelog.eventstore._snapshots import _digest

    path = tmp_path / "snap.db"
    store = await filled_store(20)
    async with SnapshotStore(path) as snaps:
        await snaps.save(await snapshot_at(store, 9))
        good = await snapshot_at(store, 14)
        await snaps.save(good)
        blob = b"\x93\x01\x02\x03"  # a msgpack array, not a map
        digest = _digest(None, (PK, APP, 14, good.position, good.event_hash, blob))
        raw(
            path,
            "UPDATE snapshots SET state = ?, digest = ? WHERE sequence_id = 14",
            (blob, digest),
        )
        with pytest.warns(SnapshotSkippedWarning, match="cannot decode"):
            found = await snaps.load(PK, APP)
        assert found is not None and found.sequence_id == 9


async def test_future_snapshot_version_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    store = await filled_store(20)
    async with SnapshotStore(path) as snaps:
        await snaps.save(await snapshot_at(store, 9))
        await snaps.save(await snapshot_at(store, 14))
        raw(path, "UPDATE snapshots SET schema_version = 99 WHERE sequence_id = 14")
        with pytest.warns(SnapshotSkippedWarning, match="schema_version 99"):
            found = await snaps.load(PK, APP)
        assert found is not None and found.sequence_id == 9


async def test_mismatched_event_hash_is_skipped(snapshots: SnapshotStore) -> None:
    store = await filled_store(20)
    await snapshots.save(await snapshot_at(store, 9))
    good = await snapshot_at(store, 14)
    await snapshots.save(Snapshot(**{**_fields(good), "event_hash": "0" * 64}))
    # Without a store there is nothing to check against.
    assert (await snapshots.load(PK, APP)).sequence_id == 14  # type: ignore[union-attr]
    with pytest.warns(SnapshotSkippedWarning, match="event_hash does not match"):
        found = await snapshots.load(PK, APP, store=store)
    assert found is not None and found.sequence_id == 9


async def test_snapshot_from_another_history_is_skipped(snapshots: SnapshotStore) -> None:
    """A snapshot ahead of the log (e.g. the log was restored from an older copy)."""
    store = await filled_store(20)
    await snapshots.save(await snapshot_at(store, 9))
    await snapshots.save(await snapshot_at(store, 19))
    shorter = await filled_store(15)
    with pytest.warns(SnapshotSkippedWarning, match="no event at sequence_id 19"):
        state, last = await load_state(shorter, snapshots, PK, APP)
    assert (state, last) == (fold(await shorter.read(PK, APP)), 14)


async def test_every_snapshot_bad_falls_back_to_a_full_replay(tmp_path: Path) -> None:
    path = tmp_path / "snap.db"
    store = await filled_store(40)
    async with SnapshotStore(path) as snaps:
        for seq in range(0, 40, 2):  # 20 snapshots: more than one page of candidates
            await snaps.save(await snapshot_at(store, seq))
        raw(path, "UPDATE snapshots SET event_hash = 'x'")
        with pytest.warns(SnapshotSkippedWarning) as caught:
            assert await snaps.load(PK, APP, store=store) is None
        assert len(caught) == 20
        with pytest.warns(SnapshotSkippedWarning):
            state, last = await load_state(store, snaps, PK, APP)
        assert (state, last) == (fold(await store.read(PK, APP)), 39)


async def test_hmac_keyed_snapshots_reject_snapshots_written_without_the_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "snap.db"
    store = await filled_store(10)
    async with SnapshotStore(path) as unkeyed:
        await unkeyed.save(await snapshot_at(store, 5))
    async with SnapshotStore(path, hmac_key=b"secret") as keyed:
        await keyed.save(await snapshot_at(store, 3))
        with pytest.warns(SnapshotSkippedWarning, match="checksum"):
            found = await keyed.load(PK, APP)
        assert found is not None and found.sequence_id == 3


# --------------------------------------------------------------------------- pruning


async def test_prune_keeps_the_newest(snapshots: SnapshotStore) -> None:
    store = await filled_store(30)
    for seq in range(0, 30, 3):
        await snapshots.save(await snapshot_at(store, seq))
    other = MemoryEventStore()
    await other.append(make_events(3, app_id="other"), expected_sequence=-1)
    evs = await other.read(PK, "other")
    await snapshots.save(
        Snapshot(
            partition_key=PK,
            app_id="other",
            sequence_id=2,
            state=fold(evs),
            position=3,
            event_hash=evs[-1].hash,
        )
    )
    assert await snapshots.prune(PK, APP, keep_last=3) == 7
    assert [s for s, _ in await snapshots.sequences(PK, APP)] == [21, 24, 27]
    assert await snapshots.prune(PK, APP, keep_last=3) == 0
    assert [s for s, _ in await snapshots.sequences(PK, "other")] == [2]
    with pytest.raises(ValueError):
        await snapshots.prune(PK, APP, keep_last=0)


async def test_keep_last_prunes_on_save(tmp_path: Path) -> None:
    store = await filled_store(30)
    async with SnapshotStore(tmp_path / "s.db", keep_last=2) as snaps:
        for seq in range(0, 30, 5):
            await snaps.save(await snapshot_at(store, seq))
            assert len(await snaps.sequences(PK, APP)) == min(seq // 5 + 1, 2)
        assert [s for s, _ in await snaps.sequences(PK, APP)] == [20, 25]
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path / "s.db", keep_last=0)


# --------------------------------------------------------------------------- load_state


async def test_load_state_at_sequence(snapshots: SnapshotStore) -> None:
    store = await filled_store(50)
    events = await store.read(PK, APP)
    for seq in (10, 30):
        await snapshots.save(await snapshot_at(store, seq))
    for at in (0, 5, 10, 11, 29, 30, 31, 49, 60):
        state, last = await load_state(store, snapshots, PK, APP, at_sequence=at)
        assert state == fold(events[: at + 1]), at
        assert last == min(at, 49)
    assert await load_state(store, snapshots, PK, APP) == (fold(events), 49)
    assert await load_state(store, None, PK, APP) == (fold(events), 49)
    assert await load_state(store, snapshots, PK, "none") == ({}, -1)


async def test_load_state_does_not_share_the_snapshot_dict(snapshots: SnapshotStore) -> None:
    store = await filled_store(5)
    await snapshots.save(await snapshot_at(store, 4))
    state, _ = await load_state(store, snapshots, PK, APP)
    state["mutated"] = True
    again, _ = await load_state(store, snapshots, PK, APP)
    assert "mutated" not in again


# --------------------------------------------------------------------------- policy


def test_policy_every_n_events() -> None:
    policy = SnapshotPolicy(every=10)
    assert not policy.due(9, 1e9)
    assert policy.due(10, 0.0)
    assert not policy.due(0, 1e9, halted=True)
    assert policy.due(1, 0.0, halted=True)


def test_policy_seconds_and_both() -> None:
    timed = SnapshotPolicy(every=None, seconds=2.5)
    assert not timed.due(1000, 2.4)
    assert timed.due(1, 2.5)
    both = SnapshotPolicy(10, 1.0)
    assert both.due(10, 0.0) and both.due(1, 1.0) and not both.due(9, 0.9)
    never = SnapshotPolicy(every=None, seconds=None, at_halt=False)
    assert not never.due(10**9, 1e9, halted=True)


def test_policy_rejects_nonsense() -> None:
    for bad in (
        {"every": 0},
        {"every": -1},
        {"seconds": 0.0},
        {"seconds": -1.0},
        {"bytes_per_event": 0},
        {"bytes_per_event": -1},
        {"bytes_per_event": True},
        {"bytes_per_event": 1.5},
        {"bytes_per_event": "256"},
    ):
        with pytest.raises(ValueError):
            SnapshotPolicy(**bad)


def test_policy_holds_a_large_snapshot_back_until_the_events_pay_for_it() -> None:
    policy = SnapshotPolicy(every=10, bytes_per_event=100)
    big = SMALL_SNAPSHOT_BYTES + 1  # held back until 100 * events >= it
    assert not policy.due(10, 0.0, last_bytes=big)
    assert not policy.due(big // 100, 0.0, last_bytes=big)
    assert policy.due(big // 100 + 1, 0.0, last_bytes=big)
    # at halt and on the clock too: the bound is on what snapshots cost, whatever asks
    assert not policy.due(1, 0.0, halted=True, last_bytes=big)
    timed = SnapshotPolicy(every=None, seconds=1.0, bytes_per_event=100)
    assert not timed.due(10, 1e9, last_bytes=big)
    # a small one (or an unknown size) is never held back; None lifts the bound
    assert policy.due(10, 0.0, last_bytes=SMALL_SNAPSHOT_BYTES)
    assert policy.due(10, 0.0, last_bytes=None)
    assert policy.due(1, 0.0, halted=True, last_bytes=SMALL_SNAPSHOT_BYTES)
    unbounded = SnapshotPolicy(every=10, bytes_per_event=None)
    assert unbounded.due(10, 0.0, last_bytes=10**12)
    assert SnapshotPolicy().bytes_per_event == 256


async def test_save_returns_the_size_of_the_stored_state(
    snapshots: SnapshotStore, tmp_path: Path
) -> None:
    store = await filled_store(30)
    sizes = [await snapshots.save(await snapshot_at(store, seq)) for seq in (4, 29)]
    with sqlite3.connect(tmp_path / "snap.db") as con:
        stored = [n for (n,) in con.execute("SELECT length(state) FROM snapshots ORDER BY id")]
    assert sizes == stored and sizes[0] < sizes[1]


# --------------------------------------------------------------------------- lifecycle


async def test_open_connect_and_closed_errors(tmp_path: Path) -> None:
    snaps = await SnapshotStore.open(tmp_path / "s.db")
    assert await snaps.load(PK, APP) is None
    await snaps.aclose()
    await snaps.aclose()
    with pytest.raises(StoreClosedError):
        await snaps.load(PK, APP)
    with pytest.raises(StoreClosedError):
        await snaps.connect()
    with pytest.raises(StoreClosedError, match="not connected"):
        await SnapshotStore(tmp_path / "s.db").load(PK, APP)


async def test_unclosed_store_warns(tmp_path: Path) -> None:
    snaps = await SnapshotStore.open(tmp_path / "s.db")
    conn = snaps._conn
    with pytest.warns(ResourceWarning, match="unclosed SnapshotStore"):
        del snaps
        gc.collect()
    assert conn is not None
    await conn.close()


async def test_non_sqlite_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, not even close" * 200)
    with pytest.raises(StoreCorruptError):
        await SnapshotStore.open(path)
    assert path.read_bytes().startswith(b"this is not")


def _fields(snap: Snapshot) -> dict[str, Any]:
    return {f: getattr(snap, f) for f in snap.__struct_fields__}


async def test_snapshot_store_first_then_event_store_in_one_file(tmp_path: Path) -> None:
    """Either store may create the shared file; both stay open side by side."""
    path = tmp_path / "shared.db"
    async with SnapshotStore(path) as snaps:
        from statelog.eventstore import SQLiteEventStore

        async with SQLiteEventStore(path) as store:
            recorded = await store.append(make_events(12), expected_sequence=-1)
            await snaps.save(
                Snapshot(
                    partition_key=PK,
                    app_id=APP,
                    sequence_id=7,
                    state=fold(r.event for r in recorded[:8]),
                    position=recorded[7].position,
                    event_hash=recorded[7].event.hash,
                )
            )
            assert await load_state(store, snaps, PK, APP) == (
                fold(r.event for r in recorded),
                11,
            )
            assert await store.verify() is None


def test_a_snapshot_store_never_closed_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    # aiosqlite 0.20/0.21 (the lowest set) started a non-daemon thread per
    # connection: a store its owner forgot to close made the interpreter wait at
    # exit for ever. The owner is still told (ResourceWarning).
    script = tmp_path / "script.py"
    script.write_text(
        "import asyncio, sys\n"
        "from statelog.eventstore import SnapshotStore\n"
        "async def main():\n"
        "    global store\n"
        "    store = await SnapshotStore.open(sys.argv[1])\n"
        "    assert await store.load('', 'app') is None\n"
        "asyncio.run(main())\n"
        "print('end of script')\n"
    )
    done = run_python(script, str(tmp_path / "s.db"), flags=("-W", "default"), timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "end of script\n"


async def test_connect_cancelled_at_any_point_leaks_no_connection(tmp_path: Path) -> None:
    baseline = threading.active_count()
    # a cancel in the first loop turns, then inside the connection's thread hops
    for delay in (0, 0, 0.0002, 0.0005, 0.0008, 0.001, 0.0015, 0.002, 0.003, 0.005):
        store = SnapshotStore(tmp_path / "s.db")
        task = asyncio.create_task(store.connect())
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # the store is still usable, and closing it leaves no thread behind
        await store.connect()
        assert await store.load(PK, APP) is None
        await store.aclose()
    await assert_threads_end(baseline)
