"""The writer's rows: a group of lone appends and appends longer than one INSERT statement."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statelog.eventstore import SQLiteEventStore
from statelog.eventstore.sqlite._write import ROWS_PER_STATEMENT
from tests.eventstore.test_sqlite_store import PK, ev


async def test_an_append_longer_than_a_statement_gets_consecutive_positions(
    tmp_path: Path,
) -> None:
    n = 2 * ROWS_PER_STATEMENT + 7  # three INSERT statements in one transaction
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
        events = [ev("a", seq) for seq in range(1, n + 1)]
        recorded = await store.append(events, expected_sequence=0)
        assert [r.position for r in recorded] == list(range(2, n + 2))
        assert [r.event.sequence_id for r in recorded] == list(range(1, n + 1))
        back = await store.read_all()
        assert [(r.position, r.event.sequence_id) for r in back] == [
            (seq + 1, seq) for seq in range(n + 1)
        ]
        assert [r.event.hash for r in back[1:]] == [r.event.hash for r in recorded]
        assert await store.verify() is None


async def test_a_group_of_lone_appends_and_a_long_one(tmp_path: Path) -> None:
    """One loop turn's appends go to the thread as one group: 50 one-event appends
    (one row each) and one of 1,500 events (two statements), each caller gets its
    own events with their positions, in the order they were handed over."""
    long = ROWS_PER_STATEMENT + 500
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        for i in range(50):
            await store.append([ev(f"s{i}", 0)], expected_sequence=-1)
        results = await asyncio.gather(
            *(store.append([ev(f"s{i}", 1)], expected_sequence=0) for i in range(25)),
            store.append([ev("long", seq) for seq in range(long)], expected_sequence=-1),
            *(store.append([ev(f"s{i}", 1)], expected_sequence=0) for i in range(25, 50)),
        )
        for i in (*range(25), *range(26, 51)):
            [one] = results[i]
            assert one.event.sequence_id == 1
        assert [r.event.sequence_id for r in results[25]] == list(range(long))
        positions = [r.position for recorded in results for r in recorded]
        assert positions == list(range(51, 51 + 50 + long))
        by_position = {r.position: r.event for r in await store.read_all(from_position=51)}
        assert all(by_position[r.position] == r.event for rs in results for r in rs)
        assert len(await store.read(PK, "long")) == long
        assert await store.verify() is None
