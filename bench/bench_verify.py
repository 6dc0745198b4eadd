"""How fast ``verify`` (``audit_file``) walks a SQLite log, and how long it holds the loop.

    python bench/bench_verify.py                 # 1,000,000 events, ~2-4 minutes on 2 cores
    python bench/bench_verify.py --events 200000 --rounds 2
    python bench/bench_verify.py --db /tmp/verify1m.db --small-db /tmp/verify100k.db

A log of N events (engine-like: a timestamp, ops in the compact ``set`` form
and as ``append`` ops, ``data``; 100 streams; the default msgpack codec;
signed checkpoints every 10,000 events) is built once. Then, in rounds
(modes alternating; the median is printed):

* ``floor``: a bare walk of the same rows with no statelog code: the same
  per-stream ``SELECT body, sequence_id, hash`` with ``fetchmany`` and a
  ``hashlib.sha256`` of each body, on one thread. Nothing a verify does can be
  cheaper than reading each row and hashing some bytes of it.
* ``verify, 1 thread``: ``audit_file(workers=1)`` with the public key.
* ``verify, 1 thread, 1,000-row pages``: the same as before issue #13's fix
  (``_audit.THREAD_PAGE`` = 1,000): the same-run A/B of the thread's page size.
* ``verify, reference path``: the same with the fast path switched off
  (every row decoded to an ``Event`` and hashed by ``canonical_bytes``): the
  same-run A/B of ``eventstore/sqlite/_audit_hash.py``.
* ``verify, all cores``: ``audit_file()`` as ``statelog verify`` runs it (this
  process's thread plus a worker process per other core).

For each: events/s (wall), the ratio to the floor, and for the verifies the
CPU time per event (this process and
its worker processes: on an idle machine, cores / CPU time is the rate to
expect), and the longest time the event loop was held: a ticker task sleeps 1 ms in a loop and
records each oversleep beyond that (so a 0 ms hold means it always woke on
time), and how many collections of each GC generation ran during it (this
process). The load average is printed before and after: this machine is shared,
so only figures of one run compare.

Then the two 1-thread modes again on a small log (``--small-events``, 100,000
by default: ``audit_file()`` walks a log under ``_audit.PARALLEL_EVENTS`` on one
thread), since that is where verify runs in the caller's process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statelog.eventstore import (  # noqa: E402
    Event,
    SQLiteEventStore,
    audit_file,
    generate_key_files,
    load_public_key,
)
from statelog.eventstore.sqlite import _audit  # noqa: E402

T0 = datetime(2026, 12, 7, 6, 0, 0, 123457, tzinfo=UTC)


def event(stream: int, seq: int) -> Event:
    ops: list[dict[str, Any]]
    if seq % 3:
        ops = [
            {"op": "set", "key": "n", "value": seq},
            {"op": "set", "key": "status", "value": f"step {seq}"},
        ]
    else:
        ops = [{"op": "append", "key": "items", "value": {"sku": "pen", "qty": seq % 7}}]
    return Event(
        partition_key="tenant-a",
        app_id=f"order-{stream}",
        sequence_id=seq,
        kind="action_completed",
        action="step",
        next_action="step",
        ops=ops,
        timestamp=T0 + timedelta(microseconds=seq * 1013 + stream),
        duration_us=1500 + seq % 100,
        data={"attempts": 1},
    )


async def build_log(db: Path, events: int, streams: int, key: str) -> None:
    per = events // streams
    async with SQLiteEventStore(db, signing_key=key) as store:
        for s in range(streams):
            for start in range(0, per, 1000):
                batch = [event(s, seq) for seq in range(start, min(start + 1000, per))]
                await store.append(batch, expected_sequence=start - 1)


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (verify's worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def floor(db: Path) -> tuple[float, int]:
    """(events/s, events) of the bare walk: every row of every stream read, its body hashed."""
    started = time.perf_counter()
    con = sqlite3.connect(db)
    count = 0
    sha256 = hashlib.sha256
    try:
        for (stream_id,) in con.execute("SELECT id FROM streams ORDER BY id").fetchall():
            cursor = con.execute(
                "SELECT body, sequence_id, hash FROM events WHERE stream_id = ? "
                "ORDER BY sequence_id",
                (stream_id,),
            )
            while rows := cursor.fetchmany(_audit.PAGE):
                for body, _, stored in rows:
                    if sha256(body).digest() == stored:
                        count -= 1  # never: keeps the comparison in the loop
                count += len(rows)
    finally:
        con.close()
    return count / (time.perf_counter() - started), count


#: Collections per GC generation since the last ``gc_counts()`` (all threads).
_collections = [0, 0, 0]


def _count_collection(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _collections[info["generation"]] += 1


def gc_counts() -> str:
    """The collections of gen 0/1/2 since the last call (and reset)."""
    text = "/".join(map(str, _collections))
    _collections[:] = [0, 0, 0]
    return text


async def timed_verify(db: Path, public: Any, workers: int | None) -> tuple[float, float, int]:
    """(events/s, longest loop hold in ms, events) of one verify."""
    holds: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            holds.append(time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    report = await audit_file(db, public_keys=[public], workers=workers)
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    assert report.ok, report.findings[:3]
    return report.events / elapsed, max(holds, default=0.0) * 1000, report.events


async def idle_loop(seconds: float) -> float:
    """The longest oversleep of the same ticker with nothing else running (ms): what the
    machine's load alone costs the loop, the baseline for the holds above."""
    worst = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - before - 0.001)
    return worst * 1000


def big_pages(run: Callable[[], Any]) -> Any:
    """``run()`` with the thread's pages of 1,000 rows, as before issue #13's fix."""
    page = _audit.THREAD_PAGE
    _audit.THREAD_PAGE = 1_000
    try:
        return run()
    finally:
        _audit.THREAD_PAGE = page


def reference_only(run: Callable[[], Any]) -> Any:
    """``run()`` with the fast path off: every row takes the reference path."""
    fast = _audit.view_bytes
    _audit.view_bytes = lambda *args: None
    try:
        return run()
    finally:
        _audit.view_bytes = fast


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", help="reuse (or build once at) this file")
    parser.add_argument("--small-events", type=int, default=100_000)
    parser.add_argument("--small-db", help="reuse (or build once at) this file for the small log")
    args = parser.parse_args(argv)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {load()}")
    gc.callbacks.append(_count_collection)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db, public = prepare(tmp, "verify", args.db, args.events, args.streams)
        modes: dict[str, Callable[[], tuple[float, float, int]]] = {
            "floor (SELECT + sha256 of each body)": lambda: (*floor(db)[:1], 0.0, 0),
            "verify, 1 thread": lambda: asyncio.run(timed_verify(db, public, 1)),
            "verify, 1 thread, 1,000-row pages": lambda: big_pages(
                lambda: asyncio.run(timed_verify(db, public, 1))
            ),
            "verify, reference path, 1 thread": lambda: reference_only(
                lambda: asyncio.run(timed_verify(db, public, 1))
            ),
            "verify, all cores (default)": lambda: asyncio.run(timed_verify(db, public, None)),
        }
        measure(modes, args.rounds, floor_label="floor (SELECT + sha256 of each body)")
        small, small_public = prepare(
            tmp, "verify-small", args.small_db, args.small_events, args.streams
        )
        small_modes: dict[str, Callable[[], tuple[float, float, int]]] = {
            "verify, 1 thread": lambda: asyncio.run(timed_verify(small, small_public, 1)),
            "verify, 1 thread, 1,000-row pages": lambda: big_pages(
                lambda: asyncio.run(timed_verify(small, small_public, 1))
            ),
            "verify, default (a log this small: 1 thread)": lambda: asyncio.run(
                timed_verify(small, small_public, None)
            ),
        }
        measure(small_modes, args.rounds, floor_label=None)
        idle = asyncio.run(idle_loop(3.0))
        print(f"the same 1 ms ticker on an idle loop for 3 s: longest oversleep {idle:.1f} ms")
    print(load())
    return 0


def prepare(tmp: Path, name: str, path: str | None, events: int, streams: int) -> tuple[Path, Any]:
    """(the log, its public key): the file at ``path`` if it exists, else built."""
    key, pub = generate_key_files(tmp / f"{name}.key")
    db = Path(path) if path else tmp / f"{name}.db"
    if path and db.exists():
        pub = f"{db}.pub"
    else:
        started = time.perf_counter()
        asyncio.run(build_log(db, events, streams, key))
        if path:
            Path(f"{db}.pub").write_bytes(Path(pub).read_bytes())
        print(
            f"built {events:,} events in {streams} streams in {time.perf_counter() - started:.0f} s"
        )
    return db, load_public_key(pub)


def measure(
    modes: dict[str, Callable[[], tuple[float, float, int]]], rounds: int, floor_label: str | None
) -> None:
    """Run ``modes`` in turn, ``rounds`` times, and print each one's figures."""
    rates: dict[str, list[float]] = {name: [] for name in modes}
    holds: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    collections: dict[str, list[str]] = {name: [] for name in modes}
    events = 0
    for _ in range(rounds):
        for label, run in modes.items():
            before = cpu_seconds()
            gc_counts()
            rate, hold, count = run()
            collections[label].append(gc_counts())
            cpu[label].append(cpu_seconds() - before)
            rates[label].append(rate)
            holds[label].append(hold)
            events = count or events
    base = statistics.median(rates[floor_label or next(iter(modes))])
    print(f"verify of {events:,} events, median of {rounds} rounds ({load()}):")
    for label in modes:
        median = statistics.median(rates[label])
        hold = (
            ""
            if label == floor_label
            else f"; loop held <= {max(holds[label]):.1f} ms"
            f" (runs: {', '.join(f'{h:.1f}' for h in holds[label])})"
            f"; GC gen 0/1/2: {', '.join(collections[label])}"
        )
        used = statistics.median(cpu[label]) / events * 1e6
        print(
            f"  {label:<44} {median:>10,.0f} events/s  ({median / base:.2f} x "
            f"{'floor' if floor_label else 'the first'}); {used:.2f} us CPU/event{hold}"
            f"  runs: {', '.join(f'{r:,.0f}' for r in rates[label])}"
        )


if __name__ == "__main__":
    sys.exit(main())
