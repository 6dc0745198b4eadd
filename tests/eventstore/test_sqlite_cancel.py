"""Cancelling an append at any await: all or nothing, nothing left open, later appends fine.

Each size is swept: a fresh stream's append is cancelled after k event-loop
iterations, for k = 0, 1, 2, ... (then in growing steps) until an append
completes before its cancel arrives, while background tasks keep appending
to their own streams. Then the file is closed, reopened and checked: every
acknowledged append is there, each cancelled append is there whole or not at
all, every stream is dense, and appends of every size still work.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statelog.eventstore import Event, SQLiteEventStore

PK = "tenant"
SIZES = (1, 10, 1_000, 5_000)


def batch(app_id: str, first: int, n: int) -> list[Event]:
    return [
        Event(
            partition_key=PK,
            app_id=app_id,
            sequence_id=seq,
            kind="action_completed",
            ops=[{"op": "set", "key": "n", "value": seq}],
        )
        for seq in range(first, first + n)
    ]


async def background(store: SQLiteEventStore, app_id: str, acked: dict[str, int]) -> None:
    """Append 1-3 events at a time to ``app_id`` until cancelled; record each ack."""
    last = -1
    size = 1
    while True:
        await store.append(batch(app_id, last + 1, size), expected_sequence=last)
        last += size
        acked[app_id] = last
        size = size % 3 + 1


def next_k(k: int) -> int:
    return k + 1 if k < 40 else k + max(1, k // 6)


@pytest.mark.parametrize("size", SIZES)
async def test_an_append_cancelled_at_any_await_is_all_or_nothing(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "cancel.db"
    acked: dict[str, int] = {}  # stream -> last acknowledged sequence id
    victims: dict[str, bool] = {}  # stream -> whether its append returned
    store = await SQLiteEventStore.open(path)
    others = [asyncio.create_task(background(store, f"bg{i}", acked)) for i in range(3)]
    k = 0
    while True:
        app_id = f"v{k}"
        events = batch(app_id, 0, size)
        task = asyncio.create_task(store.append(events, expected_sequence=-1))
        for _ in range(k):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            victims[app_id] = False
        else:
            victims[app_id] = True
            acked[app_id] = size - 1
            break
        assert k < 20_000, "the append never completed"
        k = next_k(k)
    # later appends of every size work, on new streams and after the cancelled ones
    for n in SIZES:
        await store.append(batch(f"after{n}", 0, n), expected_sequence=-1)
        acked[f"after{n}"] = n - 1
    for app_id in list(victims)[:3]:
        last = await store.last_sequence(PK, app_id)
        await store.append(batch(app_id, last + 1, 2), expected_sequence=last)
        acked[app_id] = last + 2
        victims[app_id] = True
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await store.aclose()

    async with SQLiteEventStore(path) as reopened:
        for app_id, last in acked.items():
            events = await reopened.read(PK, app_id)
            assert [e.sequence_id for e in events] == list(range(len(events))), app_id
            assert len(events) - 1 >= last, (app_id, "lost an acknowledged append")
        for app_id, returned in victims.items():
            if returned:
                continue
            got = len(await reopened.read(PK, app_id))
            assert got in (0, size), (app_id, got, "a cancelled append was written in part")
        assert await reopened.verify() is None
