"""Signed checkpoints: what signing costs a durable step, and how fast verify walks.

    python bench/bench_signing.py            # ~1-2 minutes on 2 cores
    python bench/bench_signing.py --quick    # smaller sizes

1. Durable steps/s (the engine, transactional, on SQLite) with a signing key
   and without, in the same run, rounds alternating, median of each. A
   checkpoint is one Ed25519 signature every ``checkpoint_every`` events (the
   store's default, and a short 1,000 to show the worst realistic period), on
   the checkpointer's own thread.
2. ``verify`` (``audit_file``) of a log of N events (1,000,000 by default):
   events/s, with and without a public key, on one thread and split over
   worker processes (A/B in the same run), while a ticker task on the event
   loop records the longest gap between its ticks (how long verify held the
   loop). Printed, never asserted. ``bench/bench_verify.py`` is the fuller verify
   bench (engine-like events, a floor, the reference path, CPU time per event).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_engine import builder, drive  # noqa: E402
from statelog.eventstore import (  # noqa: E402
    Event,
    SQLiteEventStore,
    audit_file,
    generate_key_files,
    load_public_key,
)


async def durable_steps(db: Path, steps: int, key: str | None, every: int | None) -> float:
    options: dict[str, Any] = {}
    if key is not None:
        options["signing_key"] = key
        if every is not None:
            options["checkpoint_every"] = every
    async with SQLiteEventStore(db, **options) as store:
        app = await builder(store, "app", "transactional").abuild()
        async with app:
            started = time.perf_counter()
            await drive(app, steps)
            elapsed = time.perf_counter() - started
    return steps / elapsed


def report_durable(tmp: Path, rounds: int, steps: int) -> None:
    key, _ = generate_key_files(tmp / "bench.key")
    modes: dict[str, tuple[str | None, int | None]] = {
        "off": (None, None),
        "on (every 10,000, default)": (key, None),
        "on (every 1,000)": (key, 1_000),
    }
    rates: dict[str, list[float]] = {name: [] for name in modes}
    n = 0
    for _ in range(rounds):
        for name, (k, every) in modes.items():
            n += 1
            rates[name].append(asyncio.run(durable_steps(tmp / f"d{n}.db", steps, k, every)))
    off = statistics.median(rates["off"])
    print(f"durable steps/s, transactional, 1 app, {steps} steps, median of {rounds} rounds:")
    for name, runs in rates.items():
        median = statistics.median(runs)
        print(
            f"  signing {name:<28} {median:>9,.0f} steps/s  ({median / off - 1:+.1%} vs off)"
            f"  runs: {', '.join(f'{r:,.0f}' for r in runs)}"
        )


async def build_log(db: Path, events: int, streams: int, key: str | None) -> None:
    per = events // streams
    options: dict[str, Any] = {"signing_key": key} if key else {}
    async with SQLiteEventStore(db, **options) as store:
        for s in range(streams):
            for start in range(0, per, 1000):
                batch = [
                    Event(
                        partition_key="p",
                        app_id=f"app{s}",
                        sequence_id=seq,
                        kind="action_completed",
                        action="step",
                        ops=[
                            {"op": "set", "key": "n", "value": seq},
                            {"op": "set", "key": "m", "value": seq * 2},
                        ],
                    )
                    for seq in range(start, min(start + 1000, per))
                ]
                await store.append(batch, expected_sequence=start - 1)


async def timed_verify(
    db: Path, public: Any | None, workers: int | None = None
) -> tuple[float, float, int]:
    """(events/s, longest loop gap in ms, events) of one verify."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    report = await audit_file(
        db, public_keys=[public] if public is not None else [], workers=workers
    )
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    assert report.ok, report.findings[:3]
    return report.events / elapsed, max(gaps) * 1000, report.events


def report_verify(tmp: Path, events: int, streams: int) -> None:
    key, pub = generate_key_files(tmp / "verify.key")
    db = tmp / "verify.db"
    started = time.perf_counter()
    asyncio.run(build_log(db, events, streams, key))
    print(
        f"verify: a log of {events:,} events in {streams} streams (built in "
        f"{time.perf_counter() - started:.1f} s)"
    )
    public = load_public_key(pub)
    for label, key_arg in (("no key", None), ("--public-key", public)):
        for workers, how in ((1, "1 thread"), (None, "processes")):
            rate, gap, count = asyncio.run(timed_verify(db, key_arg, workers))
            print(
                f"  verify {label:<13} {how:<10} {rate:>11,.0f} events/s ({count:,} events); "
                f"longest event-loop gap {gap:.1f} ms (5 ms ticker)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None, help="events in the verify log")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.verify_only:
            report_durable(
                tmp, rounds=3 if args.quick else 5, steps=2_000 if args.quick else 10_000
            )
        events = args.events or (100_000 if args.quick else 1_000_000)
        report_verify(tmp, events, streams=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
