"""A projection following a Kafka topic live (consumer group) on a real broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from statelog.eventstore import Event, MemoryEventStore, StoreUnavailableError
from statelog.eventstore.kafka import encode_record
from statelog.projections import (
    BUILTIN_PROJECTIONS,
    KafkaSource,
    ProjectionRunner,
    StoreSource,
    get_projection,
    open_source,
)
from tests.kafka_broker import create_topic
from tests.projection_support import append_simple, dump, make_events, wait_until
from tests.projections.test_projection_laws import publish

NAMES = sorted(BUILTIN_PROJECTIONS)


async def send(bootstrap: str, topic: str, events: list[Event]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            key, value, headers = encode_record(event)
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_live_from_kafka_equals_a_rebuild_from_the_log(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    store = MemoryEventStore()
    await append_simple(store, streams=4, per_stream=20, batch=10)
    topic = await create_topic(kafka_bootstrap, partitions=2)
    await publish(kafka_bootstrap, topic, store, duplicates=[3, 17])
    live = tmp_path / "live.db"
    group = f"test-{uuid.uuid4().hex[:8]}"
    runners = [ProjectionRunner(get_projection(n), live, batch_size=16) for n in NAMES]
    stop = asyncio.Event()
    tasks = []
    try:
        for runner in runners:
            await runner.open()
            source = KafkaSource(
                kafka_bootstrap, topic, group_id=f"{group}-{runner.projection.name}"
            )
            tasks.append(asyncio.create_task(runner.run(source, stop=stop)))
        for runner in runners:
            await wait_until(lambda r=runner: r.caught_up.is_set(), timeout=60)
        # Now live, through the consumer group: more events, and a duplicate.
        before = len(await store.read_all())
        for index in range(3):
            specs = [({"n": i}, [], "tick") for i in range(4)]
            await store.append(
                make_events("q", f"extra-{index}", 0, specs, [0]), expected_sequence=-1
            )
        records = await store.read_all()
        await send(
            kafka_bootstrap, topic, [r.event for r in records[before:]] + [records[-1].event]
        )
        sent = len(records) + 2 + 1
        for runner in runners:
            await wait_until(lambda r=runner: r.checkpoint.events >= sent, timeout=60)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.aclose()
    offsets = runners[0].checkpoint.offsets
    assert sum(offsets.values()) == sent
    rebuilt = tmp_path / "rebuilt.db"
    for name in NAMES:
        async with ProjectionRunner(get_projection(name), rebuilt) as runner:
            await runner.rebuild(StoreSource(store))
        drop = ("position",)
        assert dump(live, name, drop=drop) == dump(rebuilt, name, drop=drop), name


async def test_a_missing_topic_is_store_unavailable(kafka_bootstrap: str) -> None:
    with pytest.raises(StoreUnavailableError, match="no Kafka topic"):
        await open_source(f"kafka://{kafka_bootstrap}/no-such-topic-{uuid.uuid4().hex[:8]}")
