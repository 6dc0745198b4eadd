"""The law: for random runs, a rebuild (from the log, an export, Kafka) equals the live projection.

Every example appends a random run to a real store while the built-in
projections follow it live, then rebuilds each one into a fresh SQLite file
from each source and compares the read models row for row.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from statelog.eventstore import EventStore, SQLiteEventStore, export_streams
from statelog.eventstore.kafka import encode_record
from statelog.projections import (
    BUILTIN_PROJECTIONS,
    FileSource,
    KafkaSource,
    ProjectionRunner,
    Source,
    StoreSource,
    get_projection,
)
from tests.kafka_broker import create_topic
from tests.projection_support import append_run, dump, runs, wait_until

NAMES = sorted(BUILTIN_PROJECTIONS)


async def open_store(directory: Path) -> tuple[EventStore, Source]:
    """A real SQLite log in ``directory`` and a source over it."""
    store = await SQLiteEventStore.open(directory / "log.db")
    return store, StoreSource(store)


async def live_then_append(
    store: EventStore, source: Source, run: Sequence[Any], into: Path
) -> int:
    """Follow ``store`` live with every built-in while appending ``run``; return events."""
    runners = [ProjectionRunner(get_projection(n), into, batch_size=7) for n in NAMES]
    stop = asyncio.Event()
    tasks = []
    try:
        for runner in runners:
            await runner.open()
            tasks.append(asyncio.create_task(runner.run(source, stop=stop)))
        half = len(run) // 2
        total = await append_run(store, run[:half], clock := [0])
        await asyncio.sleep(0)
        total += await append_run(store, run[half:], clock)
        for runner in runners:
            await wait_until(
                lambda r=runner: r.caught_up.is_set() and r.checkpoint.events >= total  # type: ignore[misc]
            )
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.aclose()
    return total


async def rebuild_all(source: Source, into: Path) -> None:
    for name in NAMES:
        async with ProjectionRunner(get_projection(name), into, batch_size=5) as runner:
            await runner.rebuild(source)


def assert_same(live: Path, rebuilt: Path, *, positions: bool) -> None:
    for name in NAMES:
        drop = () if positions else ("position",)
        assert dump(rebuilt, name, drop=drop) == dump(live, name, drop=drop), name


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(run=runs)
def test_rebuild_from_the_log_and_from_an_export_equals_live(run: list[Any]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            store, source = await open_store(directory)
            try:
                await live_then_append(store, source, run, directory / "live.db")
                await rebuild_all(source, directory / "from_log.db")
                await export_streams(store, directory / "export.jsonl")
            finally:
                await store.aclose()
            assert_same(directory / "live.db", directory / "from_log.db", positions=True)
            await rebuild_all(FileSource(directory / "export.jsonl"), directory / "from_file.db")
            assert_same(directory / "live.db", directory / "from_file.db", positions=False)

    asyncio.run(main())


async def publish(bootstrap: str, topic: str, store: EventStore, duplicates: Sequence[int]) -> int:
    """Publish the store's log to ``topic`` in order, re-sending ``duplicates`` (at least once)."""
    from aiokafka import AIOKafkaProducer

    records = await store.read_all()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = 0
        for index, rec in enumerate(records):
            copies = 2 if index in duplicates else 1
            for _ in range(copies):
                key, value, headers = encode_record(rec.event)
                await producer.send(topic, value, key=key, headers=headers)
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking against a broker is too slow
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(run=runs, duplicates=st.lists(st.integers(0, 40), max_size=5))
def test_rebuild_from_kafka_equals_live(
    kafka_bootstrap: str, run: list[Any], duplicates: list[int]
) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            store, source = await open_store(directory)
            try:
                await live_then_append(store, source, run, directory / "live.db")
                topic = await create_topic(kafka_bootstrap, partitions=3)
                await publish(kafka_bootstrap, topic, store, duplicates)
            finally:
                await store.aclose()
            kafka = await KafkaSource.from_uri(f"kafka://{kafka_bootstrap}/{topic}")
            await rebuild_all(kafka, directory / "from_kafka.db")
            assert_same(directory / "live.db", directory / "from_kafka.db", positions=False)

    asyncio.run(main())
