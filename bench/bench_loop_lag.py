"""Event-loop lag under load: how late a 1 ms ticker wakes while the SQLite store works.

A ticker task sleeps 1 ms in a loop and records how late each wake-up is
(p50 / p99 / max, in ms). Meanwhile, for ``--seconds`` each:

* idle: nothing else runs (the floor of this machine);
* store: 100 concurrent writers each append one event at a time, awaited, to
  a ``SQLiteEventStore`` (``synchronous=NORMAL`` and ``FULL``);
* engine: 100 ``statelog.engine`` apps (one trivial action looping to itself,
  transactional) run step after step on the same kind of store.

A commit or an fsync on the loop's thread shows up here as lateness; the goal
is p99 <= 5 ms in both synchronous modes. Figures only, no verdict: the machine
is shared and its load moves them.

    python bench/bench_loop_lag.py [--seconds 3] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statelog.engine import ApplicationBuilder, State, action  # noqa: E402
from statelog.eventstore import Event, SQLiteEventStore  # noqa: E402

TICK = 0.001
WRITERS = 100


@action(reads=["n"], writes=["n"])
def tick(state: State) -> State:
    return state.update(n=state["n"] + 1)


async def ticker(stop: asyncio.Event, late: list[float]) -> None:
    """Sleep ``TICK`` in a loop; record each wake-up's lateness (seconds)."""
    clock = time.perf_counter
    while not stop.is_set():
        start = clock()
        await asyncio.sleep(TICK)
        late.append(clock() - start - TICK)


async def measure(load: Callable[[asyncio.Event], Awaitable[int]], seconds: float) -> str:
    """Run ``load`` (returns how much work it did) next to the ticker for ``seconds``."""
    stop = asyncio.Event()
    late: list[float] = []
    ticking = asyncio.create_task(ticker(stop, late))
    working = asyncio.create_task(load(stop))
    await asyncio.sleep(0.2)  # warm-up: connect, create streams
    late.clear()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    done = await working
    elapsed = time.perf_counter() - started
    await ticking
    ms = sorted(x * 1000 for x in late)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"lateness p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  max {ms[-1]:7.2f} ms"
        f"  ({len(ms):,} ticks; {done / elapsed:>8,.0f} ops/s)"
    )


async def idle(stop: asyncio.Event) -> int:
    await stop.wait()
    return 0


def store_writers(path: Path, synchronous: str) -> Callable[[asyncio.Event], Awaitable[int]]:
    async def load(stop: asyncio.Event) -> int:
        async with SQLiteEventStore(path, synchronous=synchronous) as store:  # type: ignore[arg-type]

            async def writer(app_id: str) -> int:
                seq = 0
                while not stop.is_set():
                    event = Event(
                        partition_key="lag",
                        app_id=app_id,
                        sequence_id=seq,
                        kind="action_completed",
                        ops=[{"op": "set", "key": "n", "value": seq}],
                    )
                    await store.append([event], expected_sequence=seq - 1)
                    seq += 1
                return seq

            counts = await asyncio.gather(*(writer(f"w{i}") for i in range(WRITERS)))
            return sum(counts)

    return load


def engine_apps(path: Path, synchronous: str) -> Callable[[asyncio.Event], Awaitable[int]]:
    async def load(stop: asyncio.Event) -> int:
        async with SQLiteEventStore(path, synchronous=synchronous) as store:  # type: ignore[arg-type]
            apps = [
                await ApplicationBuilder()
                .with_actions(tick=tick)
                .with_transitions(("tick", "tick"))
                .with_identifiers(app_id=f"app{i}", partition_key="lag")
                .with_store(store)
                .with_state(n=0)
                .with_entrypoint("tick")
                .abuild()
                for i in range(WRITERS)
            ]

            async def drive(app: object) -> int:
                steps = 0
                step = app.astep  # type: ignore[attr-defined]
                while not stop.is_set():
                    await step()
                    steps += 1
                return steps

            counts = await asyncio.gather(*(drive(app) for app in apps))
            for app in apps:
                await app.aclose()
            return sum(counts)

    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    parser.add_argument("--runs", type=int, default=1, help="rounds of all cases")
    args = parser.parse_args()
    print(
        f"# bench_loop_lag  Python {platform.python_version()}  SQLite {sqlite3.sqlite_version}"
        f"  {os.cpu_count()} CPUs  load average {os.getloadavg()[0]:.1f}  "
        f"ticker {TICK * 1000:.0f} ms, {WRITERS} writers/apps, {args.seconds:g} s per case",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10_000))

        def db() -> Path:
            return Path(tmp) / f"lag{next(counter)}.db"

        for _ in range(args.runs):
            print(f"idle                       {asyncio.run(measure(idle, args.seconds))}")
            for sync in ("NORMAL", "FULL"):
                figures = asyncio.run(measure(store_writers(db(), sync), args.seconds))
                print(f"store, 100 writers, {sync:<6} {figures}", flush=True)
            for sync in ("NORMAL", "FULL"):
                figures = asyncio.run(measure(engine_apps(db(), sync), args.seconds))
                print(f"engine, 100 apps, {sync:<8} {figures}", flush=True)


if __name__ == "__main__":
    main()
