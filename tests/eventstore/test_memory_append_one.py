"""MemoryEventStore's one-event append to a stream it holds (``prepare_one``):
the same refusals, with the same errors, as the general path on a new stream,
nothing written; accepted events chain and hash as the general path does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from statelog.eventstore import (
    EncodingError,
    Event,
    EventTooLargeError,
    InvalidEventError,
    MemoryEventStore,
    compute_hash,
    utcnow,
)

PK = "tenant"


def ev(app_id: str, seq: int, **fields: Any) -> Event:
    fields.setdefault("kind", "action_completed")
    fields.setdefault("ops", [{"op": "set", "key": "n", "value": seq}])
    fields.setdefault("timestamp", utcnow())
    return Event(partition_key=PK, app_id=app_id, sequence_id=seq, **fields)


BAD: list[dict[str, Any]] = [
    {"ops": [{"op": "set", "key": "n", "value": 2**53}]},
    {"ops": [{"op": "append", "key": "n", "value": float("nan")}]},
    {"ops": [{"op": "set", "key": "n", "value": {1, 2}}]},
    {"ops": [{"op": "frobnicate", "key": "n", "value": 1}]},
    {"ops": [{"op": "set", "key": 3, "value": 1}]},
    {"ops": ({"op": "set", "key": "n", "value": 1},)},
    {"kind": ""},
    {"kind": 5},
    {"schema_version": 1},
    {"actor": 7},
    {"correlation_id": b"x"},
    {"duration_us": 1.0},
    {"duration_us": 2**60},
    {"attempt": True},
    {"data": {"x": {1, 2}}},
    {"data": []},
    {"inputs": {"k": float("inf")}},
    {"result": {"a": 2**64}},
    {"timestamp": "2026-01-01"},
    {"timestamp": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
    {"action": "\ud800"},
    {"ops": [{"op": "set", "key": "n", "value": "x" * 2000}]},
]


@pytest.mark.parametrize("fields", BAD, ids=range(len(BAD)))
async def test_a_bad_second_event_is_refused_as_a_first_one_is(fields: dict[str, Any]) -> None:
    async with MemoryEventStore(max_event_size=1024) as store:
        with pytest.raises((InvalidEventError, EncodingError, EventTooLargeError)) as first:
            await store.append([ev("fresh", 0, **fields)], expected_sequence=-1)
        assert await store.read(PK, "fresh") == []
        await store.append([ev("held", 0)], expected_sequence=-1)
        await store.append([ev("held", 1)], expected_sequence=0)
        with pytest.raises(type(first.value)) as second:
            await store.append([ev("held", 2, **fields)], expected_sequence=1)
        # the same refusal; the message names the same place (the stream differs)
        assert str(second.value).replace("held", "fresh").replace("#2", "#0") == str(first.value)
        assert len(await store.read(PK, "held")) == 2
        assert len(await store.read_all()) == 2


async def test_a_sequence_gap_and_a_stale_writer_are_refused() -> None:
    async with MemoryEventStore() as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
        with pytest.raises(InvalidEventError, match="sequence gap"):
            await store.append([ev("a", 2)], expected_sequence=0)
        await store.append([ev("a", 1)], expected_sequence=0)
        with pytest.raises(Exception, match="expected") as stale:
            await store.append([ev("a", 1)], expected_sequence=0)
        assert type(stale.value).__name__ == "ConcurrencyError"
        assert [e.sequence_id for e in await store.read(PK, "a")] == [0, 1]


@pytest.mark.parametrize("key", [None, b"k" * 32])
async def test_events_appended_one_by_one_chain_like_a_batch(key: bytes | None) -> None:
    stamp = datetime(2026, 12, 7, 8, 0, 0, 123456, tzinfo=UTC)
    events = [ev("a", i, timestamp=stamp) for i in range(5)]
    async with MemoryEventStore(hmac_key=key) as one, MemoryEventStore(hmac_key=key) as batch:
        for i, event in enumerate(events):
            await one.append([event], expected_sequence=i - 1)
        await batch.append(events, expected_sequence=-1)
        a = await one.read(PK, "a")
        b = await batch.read(PK, "a")
        assert [e.hash for e in a] == [e.hash for e in b]
        assert all(e.hash == compute_hash(e, key) for e in a)
        assert [e.prev_hash for e in a] == ["", *[e.hash for e in a[:-1]]]
        assert await one.verify() is None


@pytest.mark.parametrize("batch", [False, True])
async def test_a_waiting_subscriber_is_woken_by_each_kind_of_append(batch: bool) -> None:
    # appends notify only while a subscriber waits (MemoryEventStore._waiting)
    async with MemoryEventStore() as store:
        await store.append([ev("a", 0)], expected_sequence=-1)
        feed = store.subscribe(from_position=1)
        assert (await anext(feed)).event.sequence_id == 0
        for seq in range(1, 4):
            waiter = asyncio.ensure_future(anext(feed))
            for _ in range(3):
                await asyncio.sleep(0)  # let it reach the wait
            assert not waiter.done() and store._waiting == 1
            if batch:  # a stream's first event goes through the batch path
                await store.append([ev(f"b{seq}", 0)], expected_sequence=-1)
            else:
                await store.append([ev("a", seq)], expected_sequence=seq - 1)
            got = await asyncio.wait_for(waiter, 5)
            assert got.position == len(await store.read_all())
        await feed.aclose()
        assert store._waiting == 0
