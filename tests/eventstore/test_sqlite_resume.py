"""``load_state`` with a ``SQLiteEventStore`` whose snapshots are in its own file.

Then the snapshot, its check against the chain and the fold of the events
after it are read in one call on the store's reader thread; these tests pin
that it finds what ``SnapshotStore.load(store=...)`` + ``fold_stream`` find.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Awaitable, Iterable
from pathlib import Path

import msgspec
import pytest

from statelog.eventstore import (
    ConcurrencyError,
    ConfigError,
    Snapshot,
    SnapshotSkippedWarning,
    SnapshotStore,
    SQLiteEventStore,
    StoreCorruptError,
    StreamId,
    fold,
    load_state,
)
from statelog.eventstore._snapshots import _load_from_snapshot, load_stream
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


async def test_load_stream_reads_the_tail_and_the_first_event_in_the_same_call(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(12)], expected_sequence=-1)
        await snapshots.save(_snapshot(recorded, 9))
        every = [r.event for r in recorded]
        loaded = await load_stream(store, snapshots, PK, "a", tail=4)
        assert (loaded.state, loaded.last) == (fold(every), 11)
        assert loaded.tail == every[8:] and loaded.first == every[0]
        assert await load_state(store, snapshots, PK, "a") == (loaded.state, 11)
        # a tail longer than the stream, none at all, an empty stream
        assert (await load_stream(store, snapshots, PK, "a", tail=50)).tail == every
        short = await load_stream(store, snapshots, PK, "a", tail=0)
        assert (short.tail, short.first) == ([], None)
        # the fold started from the snapshot at 9, whose stored state is that long
        with sqlite3.connect(path) as con:
            (size,) = con.execute("SELECT length(state) FROM snapshots").fetchone()
        assert (loaded.snapshot, loaded.snapshot_bytes) == (9, size)
        assert await load_stream(store, snapshots, PK, "none") == ({}, -1, [], None, -1, None)
    # snapshots in another file: the calls any store has, and no first event
    async with (
        SQLiteEventStore(path) as store,
        SnapshotStore(tmp_path / "other.db") as elsewhere,
    ):
        loaded = await load_stream(store, elsewhere, PK, "a", tail=4)
        assert (loaded.state, loaded.last, loaded.tail, loaded.first) == (
            fold(every),
            11,
            every[8:],
            None,
        )


async def test_a_resumed_stream_is_appended_to_from_the_head_the_read_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("a", s) for s in range(5)], expected_sequence=-1)
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        assert (await load_state(store, snapshots, PK, "a"))[1] == 4
        assert store._hints  # the head the read found, for the writer that never wrote "a"
        recorded = await store.append([ev("a", 5)], expected_sequence=4)
        assert not store._hints
        assert recorded[0].event.prev_hash == (await store.read(PK, "a"))[4].hash
        await store.append([ev("a", 6)], expected_sequence=5)
        assert await store.verify(PK, "a") is None
    async with SQLiteEventStore(path) as store:
        assert [e.sequence_id for e in await store.read(PK, "a")] == list(range(7))
        assert await store.verify() is None


async def test_the_head_a_resume_notes_is_the_logs_with_and_without_a_snapshot(
    tmp_path: Path,
) -> None:
    """The head comes from the tail the read found (with the stream's id from the
    snapshot's check), or from its own query: either way exactly the log's."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(6)], expected_sequence=-1)
        await store.append([ev("b", s) for s in range(3)], expected_sequence=-1)
        await snapshots.save(_snapshot(recorded, 3))
    db = sqlite3.connect(path)
    heads = {
        app: (int(db_id), int(seq), bytes(digest).hex())
        for app, db_id, seq, digest in db.execute(
            "SELECT s.app_id, s.id, e.sequence_id, e.hash FROM streams s JOIN events e "
            "ON e.stream_id = s.id WHERE e.sequence_id = (SELECT MAX(sequence_id) "
            "FROM events WHERE stream_id = s.id)"
        )
    }
    db.close()
    for tail in (4, 0):
        async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
            for app in ("a", "b"):  # a: a snapshot; b: none
                await load_stream(store, snapshots, PK, app, tail=tail)
                assert tuple(store._hints[StreamId(PK, app)]) == heads[app]


async def test_a_snapshot_past_the_end_of_the_log_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(6)], expected_sequence=-1)
        await snapshots.save(_snapshot(recorded, 1, seen="snapshot 1"))
        await snapshots.save(_snapshot(recorded, 5, seen="snapshot 5"))
    _raw(path, "DELETE FROM events WHERE sequence_id >= 4")  # the log's last two rows
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        with pytest.warns(SnapshotSkippedWarning, match="the log has no event at sequence_id 5"):
            state, last = await load_state(store, snapshots, PK, "a")
        assert (state, last) == ({**fold(await store.read(PK, "a")), "seen": "snapshot 1"}, 3)


async def test_a_head_that_moved_since_the_read_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("a", s) for s in range(3)], expected_sequence=-1)
    async with (
        SQLiteEventStore(path) as store,
        SnapshotStore(path) as snapshots,
        SQLiteEventStore(path) as other,
    ):
        assert (await load_state(store, snapshots, PK, "a"))[1] == 2
        moved = await other.append([ev("a", 3, by="other")], expected_sequence=2)
        # sealed from the head the read found (2): another connection has written 3
        with pytest.raises(ConcurrencyError):
            await store.append([ev("a", 3, by="store")], expected_sequence=2)
        assert await store.read(PK, "a", from_sequence=3) == [moved[0].event]
        # and an append that knows the new head chains onto the other's event
        await store.append([ev("a", 4)], expected_sequence=3)
        await load_state(store, snapshots, PK, "a")  # a hint behind the writer: ignored
        await store.append([ev("a", 5)], expected_sequence=4)
        assert await store.verify(PK, "a") is None
        assert (await store.read(PK, "a"))[4].prev_hash == moved[0].event.hash
    # the head moved, and the caller knows it: the hint is dropped, the writer reseals
    async with (
        SQLiteEventStore(path) as store,
        SnapshotStore(path) as snapshots,
        SQLiteEventStore(path) as other,
    ):
        await load_state(store, snapshots, PK, "a")
        await other.append([ev("a", 6)], expected_sequence=5)
        await store.append([ev("a", 7)], expected_sequence=6)
        assert await store.verify(PK, "a") is None
        assert [e.sequence_id for e in await store.read(PK, "a")] == list(range(8))


async def _read_apart(
    store: SQLiteEventStore, snapshots: SnapshotStore, app: str, tail: int
) -> tuple[object, ...]:
    """What ``load_stream`` must find, through the calls any store has, one at a time."""
    state, last, start = await _load_from_snapshot(store, snapshots, PK, app, None)
    window = []
    if tail > 0 and last >= 0:
        window = await store.read(PK, app, from_sequence=max(0, last - tail + 1), to_sequence=last)
    first = None
    if window:
        found = await store.read(PK, app, from_sequence=0, to_sequence=0)
        first = found[0] if found else None
    # the snapshot's sequence id (or -1), and its size: only the one-call read gives it
    return state, last, window, first, start - 1


async def _outcome(read: Awaitable[Iterable[object]]) -> tuple[object, ...]:
    """What a read gave (as a tuple) and its warnings, or its ``StoreCorruptError``
    (the one-call read warns of skipped snapshots only once it has returned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found: object = tuple(await read)
        except StoreCorruptError as exc:
            return str(exc), []
    return found, [str(w.message) for w in caught]


@pytest.mark.parametrize("length", [1, 2, 5, 9])
async def test_the_one_call_read_finds_what_the_calls_one_at_a_time_find(
    tmp_path: Path, length: int
) -> None:
    """Every snapshot position (or none), every tail length, and a hole at every
    place: the resume's one statement over the events (``_read.fold_tail``) gives
    the same state, last, tail and first event as the separate reads, or the same
    ``StoreCorruptError`` where they raise."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        recorded = await store.append([ev("a", s) for s in range(length)], expected_sequence=-1)
    for snapshot_at in (None, *range(length)):
        for hole in (None, *range(length - 1)):  # (a deleted last row is a shorter stream)
            copy = tmp_path / f"s{snapshot_at}-h{hole}.db"
            copy.write_bytes(path.read_bytes())
            async with SnapshotStore(copy) as snapshots:
                if snapshot_at is not None:
                    await snapshots.save(_snapshot(recorded, snapshot_at, seen="snapshot"))
            if hole is not None:
                _raw(copy, f"DELETE FROM events WHERE sequence_id = {hole}")
            async with SQLiteEventStore(copy) as store, SnapshotStore(copy) as snapshots:
                for tail in (-1, 0, 1, 3, 4, length + 2):
                    case = f"snapshot at {snapshot_at}, hole at {hole}, tail {tail}"
                    expected = await _outcome(_read_apart(store, snapshots, "a", tail))
                    loaded = await _outcome(load_stream(store, snapshots, PK, "a", tail=tail))
                    if isinstance(loaded[0], tuple):  # its size: one the calls do not give
                        *found, size = loaded[0]
                        assert (size is None) == (found[4] < 0) and size != 0, case
                        loaded = (tuple(found), loaded[1])
                    shown = tail > 0 and hole is not None and hole >= length - 1 - tail
                    if snapshot_at is not None and hole == snapshot_at - 1 and not shown:
                        # outside the rows the resume folds and shows; the snapshot
                        # store's own chain check also reads the row before the
                        # snapshot's (its prev_hash) and refuses the hole there
                        assert isinstance(expected[0], str), case
                        assert loaded[0][1] == length - 1, case  # type: ignore[index]
                        continue
                    assert loaded == expected, case


async def test_older_snapshots_are_found_past_a_page_of_unusable_ones(tmp_path: Path) -> None:
    """The newest snapshot is read alone, older ones a page (8) at a time: the
    first usable one below ten edited ones is found, each skipped one named."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path, keep_last=20) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(30)], expected_sequence=-1)
        for seq in range(15, 27):
            await snapshots.save(_snapshot(recorded, seq, seen=f"snapshot {seq}"))
    _raw(path, "UPDATE snapshots SET digest = 'edited' WHERE sequence_id >= 17")
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        with pytest.warns(SnapshotSkippedWarning) as caught:
            state, last = await load_state(store, snapshots, PK, "a")
    assert (state["seen"], last) == ("snapshot 16", 29)
    assert [int(str(w.message).split("sequence_id ")[1].split(":")[0]) for w in caught] == list(
        range(26, 16, -1)
    )


async def test_a_resume_refuses_arguments_of_the_wrong_type_before_reading(
    tmp_path: Path,
) -> None:
    # they used to read as "no such stream" (a fresh, empty state) or raise a
    # bare TypeError on the reader thread
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(3)], expected_sequence=-1)
        await snapshots.save(_snapshot(recorded, 1))
        calls: list[tuple[str, Awaitable[object]]] = [
            ("app_id", load_stream(store, snapshots, PK, 7)),  # type: ignore[arg-type]
            ("app_id", load_state(store, snapshots, PK, "")),
            ("partition_key", load_state(store, snapshots, b"p", "a")),  # type: ignore[arg-type]
            ("tail", load_stream(store, snapshots, PK, "a", tail="4")),  # type: ignore[arg-type]
            ("at_sequence", load_state(store, snapshots, PK, "a", at_sequence=1.5)),  # type: ignore[arg-type]
            ("max_sequence", snapshots.load(PK, "a", max_sequence="1")),  # type: ignore[arg-type]
            ("app_id", snapshots.load(PK, None)),  # type: ignore[arg-type]
        ]
        for argument, call in calls:
            with pytest.raises(ConfigError, match=argument):
                await call
        assert await load_state(store, snapshots, PK, "a") == (fold(r.event for r in recorded), 2)
