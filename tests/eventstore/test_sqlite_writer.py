"""SQLiteEventStore's writer thread: locks held elsewhere, stale heads, a bounded WAL."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statelog.eventstore import ConcurrencyError, SQLiteEventStore, fold
from statelog.eventstore._base import SYNC_CALLER
from tests.eventstore.test_sqlite_store import PK, _pragma, ev

# Holds the write lock (BEGIN IMMEDIATE) until a line arrives on stdin.
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
print("released", flush=True)
"""


async def append_run(store: SQLiteEventStore, app_id: str, start: int, n: int) -> None:
    for seq in range(start, start + n):
        await store.append([ev(app_id, seq)], expected_sequence=seq - 1)


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
async def test_lone_and_grouped_appends_commit(tmp_path: Path, mode: Any) -> None:
    async with SQLiteEventStore(tmp_path / "log.db", synchronous=mode) as store:
        await append_run(store, "a", 0, 20)
        await asyncio.gather(*(append_run(store, f"s{i}", 0, 5) for i in range(10)))
        assert fold(await store.read(PK, "a")) == {"count": 19}
        assert [r.position for r in await store.read_all()] == list(range(1, 71))
        assert await store.verify() is None


@pytest.fixture(params=[False, True], ids=["async-caller", "sync-caller"])
def sync_caller(request: pytest.FixtureRequest) -> Iterator[bool]:
    token = SYNC_CALLER.set(request.param)
    yield request.param
    SYNC_CALLER.reset(token)


async def test_another_handle_writing_makes_the_heads_stale(
    tmp_path: Path, sync_caller: bool
) -> None:
    """The writer caches each stream's head; a commit by another connection
    (seen through ``PRAGMA data_version``, or by UNIQUE refusing a lone
    append's row) makes it read them again. A sync caller's own INSERT
    (``SYNC_CALLER``) collides the same way and the thread's transaction
    names how far behind it is."""
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as one, SQLiteEventStore(path) as two:
        await append_run(one, "a", 0, 3)
        await two.append([ev("a", 3)], expected_sequence=2)  # one still thinks a is at 2
        with pytest.raises(ConcurrencyError) as info:
            await one.append([ev("a", 3)], expected_sequence=2)
        assert (info.value.expected, info.value.actual) == (2, 3)
        await one.append([ev("a", 4)], expected_sequence=3)  # chained onto two's event
        assert await one.verify() is None
        assert [e.sequence_id for e in await two.read(PK, "a")] == [0, 1, 2, 3, 4]


async def test_a_lock_held_elsewhere_never_blocks_the_loop(tmp_path: Path) -> None:
    """While the writer waits for the lock (up to busy_timeout), the loop runs on."""
    path = tmp_path / "log.db"
    other = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        async with SQLiteEventStore(path, busy_timeout=30) as store:
            await append_run(store, "a", 0, 1)
            other.execute("BEGIN IMMEDIATE")
            task = asyncio.create_task(append_run(store, "a", 1, 1))
            turns = 0
            for _ in range(20):
                await asyncio.sleep(0.005)
                turns += 1
            assert not task.done() and turns == 20
            other.execute("COMMIT")
            await task
    finally:
        other.close()


async def test_lock_held_by_another_process_falls_back_and_waits(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, busy_timeout=30) as store:
        await append_run(store, "one", 0, 3)
        await asyncio.gather(*(append_run(store, f"s{i}", 0, 2) for i in range(10)))
        locker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOCKER,
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert locker.stdin is not None and locker.stdout is not None
        try:
            assert (await locker.stdout.readline()).strip() == b"locked"
            # one stream (the lean path) and ten at once (a group), while locked
            tasks = [asyncio.create_task(append_run(store, "one", 3, 5))]
            tasks += [asyncio.create_task(append_run(store, f"s{i}", 2, 3)) for i in range(10)]
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in tasks)  # waiting for the lock, none failed
            locker.stdin.write(b"go\n")
            await locker.stdin.drain()
            await asyncio.gather(*tasks)
            assert (await locker.stdout.readline()).strip() == b"released"
        finally:
            # to the end of its output, closing stdin: no pipe outlives the test's loop
            await locker.communicate()
        assert locker.returncode == 0
        await append_run(store, "one", 8, 2)
        assert fold(await store.read(PK, "one")) == {"count": 9}
        for i in range(10):
            assert [e.sequence_id for e in await store.read(PK, f"s{i}")] == list(range(5))
            assert (await store.verify(PK, f"s{i}")) is None
        positions = [r.position for r in await store.read_all()]
        assert positions == list(range(1, 10 * 5 + 10 + 1))
    # a fresh store sees every event
    async with SQLiteEventStore(path) as again:
        assert len(await again.read_all()) == 60


async def test_other_connection_writing_meanwhile(tmp_path: Path) -> None:
    """A stdlib connection in this process takes the lock between appends."""
    path = tmp_path / "log.db"
    other = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        async with SQLiteEventStore(path, busy_timeout=30) as store:
            await append_run(store, "a", 0, 5)
            for round_ in range(5):
                other.execute("BEGIN IMMEDIATE")
                task = asyncio.create_task(append_run(store, "a", 5 + round_ * 4, 4))
                await asyncio.sleep(0.05)
                assert not task.done()
                other.execute("COMMIT")
                await task
            assert [e.sequence_id for e in await store.read(PK, "a")] == list(range(25))
            assert (await store.verify(PK, "a")) is None
    finally:
        other.close()


async def test_checkpoints_keep_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    wal = Path(f"{path}-wal")
    n = 4000
    async with SQLiteEventStore(path) as store:
        await append_run(store, "a", 0, n)
        # a group path too: many streams at once
        await asyncio.gather(*(append_run(store, f"s{i}", 0, 20) for i in range(50)))
        size = wal.stat().st_size
        # without checkpoints the WAL holds >= 2 pages per commit (~4,000 commits)
        page = (await store._read(_pragma, "page_size"))[0][0]
        assert size < 2500 * (page + 24), size
        assert fold(await store.read(PK, "a")) == {"count": n - 1}
        assert len(await store.read_all()) == n + 1000
