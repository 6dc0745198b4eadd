"""The SQLite event store against raw SQLite, in one run on one machine.

Baselines (WAL, synchronous=NORMAL, one small BLOB row each):

* raw aiosqlite, one row per commit (``execute`` + ``commit``);
* raw aiosqlite, 100 rows per ``executemany`` + ``commit``;
* stdlib sqlite3, one row per commit, on the calling thread;
* a bare hand-off from the loop to a thread and back, no SQL (the floor a
  one-event append pays on top of its INSERT).

Store figures (``SQLiteEventStore``, msgpack, every append awaits its commit):

* 100 streams appending concurrently, one event per append (group commit);
* one stream, one event per append (each commit on the store's writer
  thread, handed over and back: the figure to compare with ``sqlite3`` on the
  calling thread);
* full replay (read + decode + fold) of a 100,000-event stream with
  ``fold_stream``, and with ``read`` + ``fold`` for comparison;
* ``read_all`` paged by ``iter_all`` (10,000 a page) over 200,000 events of
  100 interleaved streams (``--reads-only`` runs just the reads);
* bytes on disk per event, for events whose delta is one small field.

``--full`` measures instead what one fsync'd commit per append costs at
``synchronous=FULL``: stdlib sqlite3 committing on the calling thread (the
floor), the same commit on a thread the loop hands it to and waits for (the
floor of any store that keeps commits off the loop), and the store's
one-event appends. The three take turns in chunks of ``--chunk`` commits in
one process, each on its own file, so a slow moment of the shared disk hits
all three alike.

Each figure is the median of ``--runs`` runs, interleaved (baselines and
store alternate, so load spikes hit both); a ratio is the median of the
per-run ratios to the baseline of the same run. ``--profile`` prints a
cProfile of the one-stream case.

    python bench/bench_log.py [--runs 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosqlite  # noqa: E402

from statelog.eventstore import Event, SQLiteEventStore, fold, ops_of_delta, utcnow  # noqa: E402

PK = "bench"
ROW = b"x" * 120  # about the size of one stored event body


def event(app_id: str, seq: int) -> Event:
    return Event(
        partition_key=PK,
        app_id=app_id,
        sequence_id=seq,
        kind="action_completed",
        action="step",
        next_action="step",
        ops=ops_of_delta({"count": seq}),
        timestamp=utcnow(),
        duration_us=400,
    )


# ---------------------------------------------------------------- baselines


async def raw_aiosqlite_one_per_commit(path: Path, n: int) -> float:
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        await db.commit()
        start = time.perf_counter()
        for i in range(n):
            await db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (i, ROW))
            await db.commit()
        return n / (time.perf_counter() - start)


async def raw_aiosqlite_executemany(path: Path, n: int, per_commit: int = 100) -> float:
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        await db.commit()
        start = time.perf_counter()
        for base in range(0, n, per_commit):
            rows = [(i, ROW) for i in range(base, base + per_commit)]
            await db.executemany("INSERT INTO t (k, v) VALUES (?, ?)", rows)
            await db.commit()
        return n / (time.perf_counter() - start)


async def thread_hand_off(path: Path, n: int) -> float:
    """Round trips/s of a bare hand-off: loop -> thread -> loop, no SQL (``path`` unused).

    The floor under the store's one-event append, which is this plus an INSERT:
    a ``SimpleQueue`` wakes the thread, ``call_soon_threadsafe`` wakes the loop.
    """
    loop = asyncio.get_running_loop()
    inbox: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()

    def serve() -> None:
        while (future := inbox.get()) is not None:
            loop.call_soon_threadsafe(future.set_result, None)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    start = time.perf_counter()
    for _ in range(n):
        future = loop.create_future()
        inbox.put(future)
        await future
    elapsed = time.perf_counter() - start
    inbox.put(None)
    thread.join()
    return n / elapsed


def raw_sqlite3_one_per_commit(path: Path, n: int) -> float:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        db.commit()
        start = time.perf_counter()
        for i in range(n):
            db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (i, ROW))
            db.commit()
        return n / (time.perf_counter() - start)
    finally:
        db.close()


# ---------------------------------------------------------------- the store


async def store_many_streams(path: Path, streams: int, per_stream: int) -> float:
    async with SQLiteEventStore(path) as store:

        async def writer(app_id: str) -> None:
            for seq in range(per_stream):
                await store.append([event(app_id, seq)], expected_sequence=seq - 1)

        start = time.perf_counter()
        await asyncio.gather(*(writer(f"app-{i}") for i in range(streams)))
        return streams * per_stream / (time.perf_counter() - start)


async def store_one_stream(path: Path, n: int) -> float:
    async with SQLiteEventStore(path) as store:
        await store.append([event("one", 0)], expected_sequence=-1)
        start = time.perf_counter()
        for seq in range(1, n + 1):
            await store.append([event("one", seq)], expected_sequence=seq - 1)
        return n / (time.perf_counter() - start)


async def build_stream(path: Path, n: int) -> None:
    async with SQLiteEventStore(path) as store:
        for base in range(0, n, 5000):
            batch = [event("long", seq) for seq in range(base, min(n, base + 5000))]
            await store.append(batch, expected_sequence=base - 1)


async def replay_fold_stream(path: Path, n: int) -> float:
    async with SQLiteEventStore(path) as store:
        start = time.perf_counter()
        state, last = await store.fold_stream(PK, "long")
        elapsed = time.perf_counter() - start
    assert last == n - 1 and state == {"count": n - 1}
    return n / elapsed


async def replay_read_fold(path: Path, n: int) -> float:
    async with SQLiteEventStore(path) as store:
        start = time.perf_counter()
        state = fold(await store.read(PK, "long"))
        elapsed = time.perf_counter() - start
    assert state == {"count": n - 1}
    return n / elapsed


def raw_fetch_bodies(path: Path, n: int) -> float:
    """The replay's floor: stdlib sqlite3 fetching the stream's bodies, nothing decoded."""
    db = sqlite3.connect(path)
    try:
        start = time.perf_counter()
        rows = db.execute(
            "SELECT e.body FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE s.partition_key = ? AND s.app_id = ? ORDER BY e.sequence_id",
            (PK, "long"),
        ).fetchall()
        elapsed = time.perf_counter() - start
    finally:
        db.close()
    assert len(rows) == n
    return n / elapsed


async def build_streams(path: Path, n: int, streams: int = 100) -> None:
    """``n`` events of ``streams`` streams, appended 50 per stream in turn."""
    async with SQLiteEventStore(path) as store:
        per = n // streams
        for base in range(0, per, 50):
            for s in range(streams):
                batch = [event(f"s{s}", seq) for seq in range(base, min(per, base + 50))]
                await store.append(batch, expected_sequence=base - 1)


async def read_all_pages(path: Path, n: int) -> float:
    async with SQLiteEventStore(path) as store:
        start = time.perf_counter()
        count = 0
        async for page in store.iter_all():
            count += len(page)
        elapsed = time.perf_counter() - start
    assert count == n
    return n / elapsed


async def bytes_per_event(path: Path, n: int, codec: str) -> float:
    async with SQLiteEventStore(path, codec=codec) as store:  # type: ignore[arg-type]
        for base in range(0, n, 1000):
            await store.append(
                [event("disk", seq) for seq in range(base, base + 1000)],
                expected_sequence=base - 1,
            )
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size / n


# ---------------------------------------------------------------- synchronous=FULL


class FullSqlite3:
    """stdlib sqlite3 at FULL: one row per ``BEGIN IMMEDIATE`` + INSERT + COMMIT."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)")
        self.i = 0

    def commit_one(self) -> None:
        self.i += 1
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (self.i, ROW))
        self.db.execute("COMMIT")

    async def run(self, n: int) -> None:
        for _ in range(n):
            self.commit_one()

    async def aclose(self) -> None:
        self.db.close()


class FullHandOff(FullSqlite3):
    """The same commit on a thread: the loop hands it over and awaits it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loop = asyncio.get_running_loop()
        self.inbox: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while (future := self.inbox.get()) is not None:
            self.commit_one()
            self.loop.call_soon_threadsafe(future.set_result, None)

    async def run(self, n: int) -> None:
        for _ in range(n):
            future = self.loop.create_future()
            self.inbox.put(future)
            await future

    async def aclose(self) -> None:
        self.inbox.put(None)
        self.thread.join()
        self.db.close()


class FullStore:
    """``SQLiteEventStore(synchronous="FULL")``, one stream, one event per append."""

    def __init__(self, path: Path) -> None:
        self.store = SQLiteEventStore(path, synchronous="FULL")
        self.seq = -1

    async def run(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            await self.store.append([event("one", self.seq)], expected_sequence=self.seq - 1)

    async def aclose(self) -> None:
        await self.store.aclose()


async def full_turns(tmp: Path, n: int, chunk: int) -> dict[str, list[float]]:
    """Seconds per chunk of ``chunk`` commits, for each case, the cases taking turns."""
    cases = {
        "sqlite3": FullSqlite3(tmp / "sqlite3.db"),
        "hand_off": FullHandOff(tmp / "hand_off.db"),
        "store": FullStore(tmp / "store.db"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for case in cases.values():
            await case.run(chunk)  # warm up: the files, the WAL, the threads
        for turn in range(n // chunk):
            names = list(cases)
            names = names[turn % 3 :] + names[: turn % 3]  # the order rotates
            for name in names:
                start = time.perf_counter()
                await cases[name].run(chunk)
                times[name].append(time.perf_counter() - start)
    finally:
        for case in cases.values():
            await case.aclose()
    return times


def main_full(n: int, chunk: int) -> None:
    print(
        f"# bench_log --full  Python {platform.python_version()}  SQLite "
        f"{sqlite3.sqlite_version}  {os.cpu_count()} CPUs  {n:,} commits per case in chunks "
        f"of {chunk}, taking turns  load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(full_turns(Path(tmp), n, chunk))
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    def per_commit(name: str) -> float:
        return statistics.median(times[name]) / chunk * 1e6

    def ratio(name: str, base: str) -> float:
        return statistics.median(b / a for a, b in zip(times[name], times[base], strict=True))

    labels = {
        "sqlite3": "stdlib sqlite3 on the calling thread ",
        "hand_off": "same commit on a thread, loop awaits ",
        "store": "store, 1 stream x 1 event/append    ",
    }
    for name, label in labels.items():
        us = per_commit(name)
        print(
            f"FULL {label} {us:8.0f} us/commit {1e6 / us:>8,.0f}/s  "
            f"= {ratio(name, 'sqlite3'):.2f}x sqlite3, {ratio(name, 'hand_off'):.2f}x hand-off"
        )


# ---------------------------------------------------------------- driver


def profile_one_stream(n: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(store_one_stream(Path(tmp) / "p.db", n))
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    return out.getvalue()


def one_run(make: Callable[[Path], Awaitable[float] | float]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = make(Path(tmp) / "bench.db")
        if not isinstance(result, float):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=5000, help="events for the one-row cases")
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--reads-only", action="store_true", help="only replay and read_all")
    parser.add_argument(
        "--full", type=int, metavar="N", help="only the synchronous=FULL cases, N commits each"
    )
    parser.add_argument("--chunk", type=int, default=50, help="commits per turn with --full")
    args = parser.parse_args()
    if args.full:
        main_full(args.full, args.chunk)
        return
    n, runs = args.n, args.runs

    print(
        f"# bench_log  Python {platform.python_version()}  SQLite {sqlite3.sqlite_version}  "
        f"aiosqlite {aiosqlite.__version__}  {os.cpu_count()} CPUs  runs={runs} (interleaved)  "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    cases: dict[str, Callable[[Path], Awaitable[float] | float]] = {
        "one_per_commit": lambda p: raw_aiosqlite_one_per_commit(p, n),
        "many": lambda p: raw_aiosqlite_executemany(p, 20 * n),
        "sync_one": lambda p: raw_sqlite3_one_per_commit(p, n),
        "hand_off": lambda p: thread_hand_off(p, n),
        "streams": lambda p: store_many_streams(p, 100, 200),
        "one": lambda p: store_one_stream(p, n),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    cpu_share = []
    # interleaved, so a load spike hits baselines and store alike
    for _ in range(0 if args.reads_only else runs):
        wall, cpu = time.perf_counter(), time.process_time()
        for name, make in cases.items():
            results[name].append(one_run(make))
        cpu_share.append((time.process_time() - cpu) / (time.perf_counter() - wall))

    def med(name: str) -> float:
        return statistics.median(results[name])

    def ratio(name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(results[name], results[base], strict=True))

    if not args.reads_only:
        print(f"process CPU / wall time during the runs: {statistics.median(cpu_share):.2f}")
        print(f"raw aiosqlite, 1 row/commit           {med('one_per_commit'):>10,.0f} rows/s")
        print(f"raw aiosqlite, 100 rows/executemany   {med('many'):>10,.0f} rows/s")
        print(f"stdlib sqlite3, 1 row/commit          {med('sync_one'):>10,.0f} rows/s")
        print(f"hand-off to a thread and back, no SQL {med('hand_off'):>10,.0f} round trips/s")
        print(
            f"store, 100 streams x 1 event/append   {med('streams'):>10,.0f} events/s  "
            f"= {ratio('streams', 'many'):.2f}x executemany, "
            f"{ratio('streams', 'one_per_commit'):.1f}x 1 row/commit"
        )
        print(
            f"store, 1 stream x 1 event/append      {med('one'):>10,.0f} events/s  "
            f"= {ratio('one', 'one_per_commit'):.2f}x aiosqlite 1 row/commit, "
            f"{ratio('one', 'sync_one'):.2f}x sqlite3"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay.db"
        asyncio.run(build_stream(path, args.replay))
        fast, slow, raw = [], [], []
        for _ in range(runs):
            fast.append(asyncio.run(replay_fold_stream(path, args.replay)))
            slow.append(asyncio.run(replay_read_fold(path, args.replay)))
            raw.append(raw_fetch_bodies(path, args.replay))
    print(
        f"replay {args.replay:,} events, fold_stream  {statistics.median(fast):>10,.0f} events/s  "
        f"= {statistics.median(f / r for f, r in zip(fast, raw, strict=True)):.2f}x stdlib sqlite3 "
        f"fetching the same bodies undecoded ({statistics.median(raw):,.0f} rows/s)"
    )
    print(
        f"replay {args.replay:,} events, read + fold  {statistics.median(slow):>10,.0f} events/s  "
        f"(fold_stream = {statistics.median(f / s for f, s in zip(fast, slow, strict=True)):.1f}x)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "all.db"
        asyncio.run(build_streams(path, 2 * args.replay))
        pages = [asyncio.run(read_all_pages(path, 2 * args.replay)) for _ in range(runs)]
    print(
        f"read_all (iter_all) {2 * args.replay:,} events of 100 streams "
        f"{statistics.median(pages):>10,.0f} events/s"
    )
    for codec in ("msgpack", "json"):
        size = one_run(lambda p, c=codec: bytes_per_event(p, 20_000, c))  # type: ignore[misc]
        print(f"on disk, {codec:<8} one-field delta      {size:>10.0f} bytes/event")
    if args.profile:
        print(profile_one_stream(n))


if __name__ == "__main__":
    main()
