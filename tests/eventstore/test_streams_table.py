"""Streams are enumerated from the store's own list of streams, never by their first event.

A stream whose first event (or every event) was deleted is still listed by
``store.streams()``, so ``statelog export`` refuses it by name (typed
``StoreCorruptError``, nothing left at the path) instead of silently writing
a file without it; ``store.verify()`` and ``statelog verify`` name it. The
SQLite store lists its ``streams`` table; the memory and Redis stores their
own registries (checked here too). docs/operations.md, "Export and missing
events".
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from statelog._cli import main
from statelog.eventstore import (
    Event,
    EventStore,
    MemoryEventStore,
    SQLiteEventStore,
    StoreCorruptError,
    StreamId,
    export_streams,
    iter_export,
)
from statelog.eventstore.redis import RedisEventStore, RedisKeys

STREAMS = [StreamId("p", "a"), StreamId("p", "b"), StreamId("q", "c")]


def batch(stream: StreamId, start: int, stop: int) -> list[Event]:
    return [
        Event(
            partition_key=stream.partition_key,
            app_id=stream.app_id,
            sequence_id=seq,
            kind="action_completed",
            ops=[{"op": "set", "key": "n", "value": seq}],
        )
        for seq in range(start, stop)
    ]


async def fill(store: EventStore) -> None:
    for stream in STREAMS:
        await store.append(batch(stream, 0, 5), expected_sequence=-1)


def sqlite_log(path: Path) -> Path:
    async def build() -> None:
        async with SQLiteEventStore(path) as store:
            await fill(store)

    asyncio.run(build())
    return path


def delete(path: Path, stream: StreamId, where: str) -> None:
    with sqlite3.connect(path) as db:
        deleted = db.execute(
            "DELETE FROM events WHERE stream_id = (SELECT id FROM streams "
            f"WHERE partition_key = ? AND app_id = ?) AND {where}",
            stream,
        ).rowcount
    assert deleted > 0


async def export_fails(store: EventStore, out: Path, *parts: str) -> None:
    with pytest.raises(StoreCorruptError) as caught:
        await export_streams(store, out)
    for part in parts:
        assert part in str(caught.value), str(caught.value)
    assert not out.exists() and not Path(f"{out}.partial").exists()


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize(
    ("where", "missing"),
    [
        ("sequence_id = 0", "sequence_id 0"),
        ("sequence_id < 3", "sequence_id 0"),
        ("sequence_id = 2", "sequence_id 2"),
        ("1", "none of its events"),
    ],
    ids=["first", "first three", "middle", "all"],
)
async def test_sqlite_lists_a_stream_whose_events_were_deleted_and_export_refuses_it(
    tmp_path: Path, where: str, missing: str
) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path) as store:
        await fill(store)
    delete(path, STREAMS[1], where)
    async with SQLiteEventStore(path) as store:
        assert await store.streams() == STREAMS  # creation order, the damaged one too
        assert await store.streams("p") == STREAMS[:2]
        await export_fails(store, tmp_path / "out.jsonl", "('p', 'b')", missing)
        # the intact streams can still be exported, by name
        out = tmp_path / "intact.jsonl"
        assert await export_streams(store, out, streams=[STREAMS[0], STREAMS[2]]) == 10
        assert {e.stream for e in iter_export(out)} == {STREAMS[0], STREAMS[2]}
        if where != "1":  # the BrokenLink walk names the first missing event
            broken = await store.verify()
            assert broken is not None and broken.stream == STREAMS[1]


def test_cli_export_of_a_log_missing_a_first_event_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sqlite_log(tmp_path / "log.db")
    delete(path, STREAMS[1], "sequence_id = 0")
    out = tmp_path / "out.jsonl"
    assert main(["export", "--db", str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "('p', 'b')" in err and "sequence_id 0" in err and "nothing exported" in err
    assert not out.exists()
    assert main(["export", "--db", str(path), "--app-id", "a", "--app-id", "c", str(out)]) == 0
    assert main(["verify", "--db", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "stream ('p', 'b') sequence_id 0 is missing" in printed
    assert "3 streams" in printed


def test_a_whole_file_export_still_round_trips(tmp_path: Path) -> None:
    path = sqlite_log(tmp_path / "log.db")

    async def run() -> list[Any]:
        async with SQLiteEventStore(path) as store:
            await export_streams(store, tmp_path / "all.jsonl")
        return [e.stream for e in iter_export(tmp_path / "all.jsonl")]

    assert asyncio.run(run()) == [s for s in STREAMS for _ in range(5)]


# --------------------------------------------------------------------------- memory


async def test_memory_lists_its_streams_in_creation_order_and_export_refuses_a_gap(
    tmp_path: Path,
) -> None:
    store = MemoryEventStore()
    await fill(store)
    assert await store.streams() == STREAMS
    assert await store.streams("q") == [STREAMS[2]]
    # the memory store has no way to lose an event; take one out of its list as a
    # deleted row would be missing
    store._streams[STREAMS[1]].pop(0)
    assert await store.streams() == STREAMS
    await export_fails(store, tmp_path / "out.jsonl", "('p', 'b')", "sequence_id 0")


# --------------------------------------------------------------------------- Redis


@pytest.mark.parametrize("first", [1, 3])
async def test_redis_lists_a_stream_whose_first_events_were_deleted_and_export_refuses_it(
    tmp_path: Path, redis_url: str, redis_prefix: str, first: int
) -> None:
    async with RedisEventStore(redis_url, prefix=redis_prefix) as store:
        await fill(store)
    keys = RedisKeys(redis_prefix)
    key = keys.events(keys.ref(*STREAMS[1]))
    raw = aioredis.Redis.from_url(redis_url)
    try:
        ids = [entry_id for entry_id, _ in await raw.xrange(key)]
        assert await raw.xdel(key, *ids[:first]) == first
    finally:
        await raw.aclose()
    async with RedisEventStore(redis_url, prefix=redis_prefix) as store:
        assert await store.streams() == STREAMS
        await export_fails(store, tmp_path / "out.jsonl", "('p', 'b')", "sequence_id 0")
