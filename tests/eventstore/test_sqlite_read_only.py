"""``read_only=True``: a log opened this way is read and never written, nor anything beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from statelog.eventstore import (
    Snapshot,
    SnapshotStore,
    SQLiteEventStore,
    StoreCorruptError,
    StoreUnavailableError,
    UsageError,
    fold,
)
from tests.eventstore.test_sqlite_store import PK, ev


async def _log(path: Path) -> None:
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        recorded = await store.append([ev("a", s) for s in range(5)], expected_sequence=-1)
        await store.append([ev("b", 0)], expected_sequence=-1)
        last = recorded[-1]
        await snapshots.save(
            Snapshot(
                partition_key=PK,
                app_id="a",
                sequence_id=4,
                state={"count": 4},
                position=last.position,
                event_hash=last.event.hash,
            )
        )


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


async def test_reading_changes_no_byte_and_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await _log(path)
    before = _files(tmp_path)
    assert list(before) == ["log.db"]  # closed cleanly: no -wal, no -shm
    async with (
        SQLiteEventStore(path, read_only=True) as store,
        SnapshotStore(path, read_only=True) as snapshots,
    ):
        assert fold(await store.read(PK, "a")) == {"count": 4}
        assert await store.fold_stream(PK, "a") == ({"count": 4}, 4)
        assert [r.position for r in await store.read_all()] == [1, 2, 3, 4, 5, 6]
        assert await store.streams() == [(PK, "a"), (PK, "b")]
        assert await store.last_sequence(PK, "b") == 0
        assert await store.verify() is None
        snapshot = await snapshots.load(PK, "a", store=store)
        assert snapshot is not None and snapshot.state == {"count": 4}
        assert await snapshots.sequences(PK, "a") == [(4, 5)]
        with pytest.raises(UsageError, match="read-only"):
            await store.append([ev("a", 5)], expected_sequence=4)
        with pytest.raises(UsageError, match="read-only"):
            await snapshots.save(snapshot)
        with pytest.raises(UsageError, match="read-only"):
            await snapshots.prune(PK, "a", keep_last=1)
    assert _files(tmp_path) == before


async def test_a_live_wal_log_is_read_with_its_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await _log(path)
    async with SQLiteEventStore(path, read_only=True) as reader:
        assert await reader.last_sequence(PK, "a") == 4  # opened before the writer came
        async with SQLiteEventStore(path) as writer:
            await writer.append([ev("a", 5)], expected_sequence=4)
            assert Path(f"{path}-wal").exists()
            assert await reader.last_sequence(PK, "a") == 5
            assert fold(await reader.read(PK, "a")) == {"count": 5}
            async with SQLiteEventStore(path, read_only=True) as second:  # opened meanwhile
                await writer.append([ev("a", 6)], expected_sequence=5)
                assert await second.fold_stream(PK, "a") == ({"count": 6}, 6)
                assert await second.verify() is None


# Another process: opens the log, appends event ``seq`` of app "a", saves a
# snapshot there, and closes cleanly (so it leaves no -wal behind).
_WRITER = """
import asyncio, sys
from statelog.eventstore import Snapshot, SnapshotStore, SQLiteEventStore
from tests.eventstore.test_sqlite_store import PK, ev

async def main(path, seq):
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        [last] = await store.append([ev("a", seq)], expected_sequence=seq - 1)
        await snapshots.save(Snapshot(partition_key=PK, app_id="a", sequence_id=seq,
            state={"count": seq}, position=last.position, event_hash=last.event.hash))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _append_in_another_process(path: Path, seq: int) -> None:
    root = Path(__file__).resolve().parents[2]
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _WRITER, str(path), str(seq)],
        check=True,
        cwd=root,
        timeout=60,
    )


async def test_a_reader_of_a_closed_log_sees_a_writer_that_came_and_went(
    tmp_path: Path,
) -> None:
    # Opened on a cleanly closed log, the readers are immutable (SQLite makes
    # no -wal or -shm for them): they must still see what another process
    # appended and closed between two reads, leaving no -wal to notice.
    path = tmp_path / "log.db"
    await _log(path)
    async with (
        SQLiteEventStore(path, read_only=True) as store,
        SnapshotStore(path, read_only=True) as snapshots,
    ):
        assert await store.last_sequence(PK, "a") == 4
        assert await snapshots.sequences(PK, "a") == [(4, 5)]
        for seq in (5, 6):
            await _append_in_another_process(path, seq)
            assert not Path(f"{path}-wal").exists()
            assert await store.last_sequence(PK, "a") == seq
            assert await store.fold_stream(PK, "a") == ({"count": seq}, seq)
            # reads side by side: the one that reopens closes nothing under another
            snapshot, sequences, again = await asyncio.gather(
                snapshots.load(PK, "a", store=store),
                snapshots.sequences(PK, "a"),
                snapshots.load(PK, "a"),
            )
            assert snapshot is not None and snapshot.sequence_id == seq
            assert again == snapshot
            assert [s for s, _ in sequences] == list(range(4, seq + 1))
        assert await store.verify() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.db"]


async def test_a_log_with_no_snapshots_yet_has_none_to_load(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
    before = _files(tmp_path)
    async with SnapshotStore(path, read_only=True) as snapshots:
        assert await snapshots.load(PK, "a") is None
        assert await snapshots.sequences(PK, "a") == []
    assert _files(tmp_path) == before


def _unrelated(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
        db.execute("INSERT INTO recipes VALUES ('soup', 30)")
    db.close()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b""), r"empty \(0-byte\) file, not a statelog event log"),
        (_unrelated, r"not a statelog event log: it holds recipes; expected the tables"),
        (
            lambda p: p.write_text("my notes, not a database\n" * 200),
            r"not a SQLite database \(it starts with b'my notes.*expected a statelog event log",
        ),
    ],
    ids=["empty", "unrelated-sqlite", "text"],
)
async def test_a_file_that_is_not_a_log_is_refused_unchanged(
    tmp_path: Path, make: object, match: str
) -> None:
    path = tmp_path / "other.db"
    make(path)  # type: ignore[operator]
    before = _files(tmp_path)
    with pytest.raises(StoreCorruptError, match=match):
        await SQLiteEventStore.open(path, read_only=True)
    with pytest.raises(StoreCorruptError):
        await SnapshotStore.open(path, read_only=True)
    assert _files(tmp_path) == before


async def test_a_missing_file_is_unavailable_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.db"
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await SQLiteEventStore.open(path, read_only=True)
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await SnapshotStore.open(path, read_only=True)
    assert list(tmp_path.iterdir()) == []
