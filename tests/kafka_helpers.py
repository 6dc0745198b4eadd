"""Helpers for the Kafka relay and subscription tests (raw aiokafka, no statelog decode)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from statelog.eventstore import EventStore, Recorded
from tests.ops_support import v2


async def read_topic(bootstrap: str, topic: str, *, expect: int | None = None) -> list[Any]:
    """Every record on ``topic`` (all partitions, partition then offset order).

    Reads to the end offsets taken at the start; with ``expect`` keeps reading
    (bounded) until at least that many records are there.
    """
    deadline = time.monotonic() + 20
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = await _partitions(consumer, topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining and time.monotonic() < deadline:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, items in batch.items():
                    records.extend(items)
                    if items and items[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        if expect is None or len(records) >= expect or time.monotonic() >= deadline:
            records.sort(key=lambda r: (r.partition, r.offset))
            return records
        await asyncio.sleep(0.2)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic!r} has no partitions")


async def append_workload(
    store: EventStore, *, streams: int, events: int, prefix: str = "app"
) -> list[Recorded]:
    """Append ``events`` events to each of ``streams`` streams, interleaved."""
    recorded: list[Recorded] = []
    for seq in range(events):
        for n in range(streams):
            pk = f"tenant/{n % 3}"
            event = v2(
                partition_key=pk,
                app_id=f"{prefix}-{n}",
                sequence_id=seq,
                kind="action_completed" if seq else "app_initialized",
                action="step",
                writes={"n": n, "seq": seq, "pad": "x" * 40},
            )
            recorded += await store.append([event], expected_sequence=seq - 1)
    return recorded


async def produce_raw(
    bootstrap: str, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
