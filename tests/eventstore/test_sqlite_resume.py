"""``load_state`` with a ``SQLiteEventStore`` whose snapshots are in its own file.

Then the snapshot, its check against the chain and the fold of the events
after it are read in one call on the store's reader thread; these tests pin
that it finds what ``SnapshotStore.load(store=...)`` + ``fold_stream`` find.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from statelog.eventstore import (
    Snapshot,
    SnapshotSkippedWarning,
    SnapshotStore,
    SQLiteEventStore,
    fold,
    load_state,
)
from tests.eventstore.test_sqlite_store import PK, ev


def _snapshot(recorded: list, seq: int, **extra: object) -> Snapshot:
    event = recorded[seq].event
    state = {**fold(r.event for r in recorded[: seq + 1]), **extra}
    return Snapshot(
        partition_key=PK,
        app_id="a",
        sequence_id=seq,
        state=state,
        position=recorded[seq].position,
        event_hash=event.hash,
    )


def _raw(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql)
    db.close()


async def test_the_newest_usable_snapshot_is_folded_on(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(30)], expected_sequence=-1)
        # a key no event writes: only a state folded on from this snapshot has it
        await snapshots.save(_snapshot(recorded, 9, seen="snapshot 9"))
        await snapshots.save(_snapshot(recorded, 19, seen="snapshot 19"))
        assert await load_state(store, snapshots, PK, "a") == (
            {**fold(await store.read(PK, "a")), "seen": "snapshot 19"},
            29,
        )
        # a snapshot that does not match the log (stored whole), and one edited
        wrong = _snapshot(recorded, 24, seen="snapshot 24")
        await snapshots.save(Snapshot(**{**msgspec.structs.asdict(wrong), "event_hash": "0" * 64}))
        _raw(path, "UPDATE snapshots SET digest = 'edited' WHERE sequence_id = 19")
        with pytest.warns(SnapshotSkippedWarning) as caught:
            state, last = await load_state(store, snapshots, PK, "a")
        assert (state, last) == ({**fold(await store.read(PK, "a")), "seen": "snapshot 9"}, 29)
        assert [str(w.message).split(": ", 1)[1] for w in caught] == [
            "event_hash does not match the hash of that event in the log",
            "checksum does not match the stored state (corrupt or edited)",
        ]
        assert ["sequence_id 24" in str(w.message) for w in caught] == [True, False]
        # the same as the snapshot store finds with the chain check, and the fold after it
        with pytest.warns(SnapshotSkippedWarning):
            found = await snapshots.load(PK, "a", store=store)
        assert found is not None and found.sequence_id == 9
        assert await store.fold_stream(PK, "a", from_sequence=10, state=found.state) == (
            state,
            last,
        )
        # an empty stream, and one with events but no snapshot
        assert await load_state(store, snapshots, PK, "none") == ({}, -1)
        await store.append([ev("b", 0), ev("b", 1)], expected_sequence=-1)
        assert await load_state(store, snapshots, PK, "b") == ({"count": 1}, 1)


async def test_a_file_that_never_had_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("a", s) for s in range(3)], expected_sequence=-1)
    async with (
        SQLiteEventStore(path, read_only=True) as store,
        SnapshotStore(path, read_only=True) as snapshots,  # no table: none to load
    ):
        assert await load_state(store, snapshots, PK, "a") == ({"count": 2}, 2)
