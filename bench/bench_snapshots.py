"""Resume cost: latest snapshot + replay of up to 1,000 events, at 1,000 and 1,000,000 events.

For each history size H, one SQLite file holds one stream of H events (built
with large appends) and a snapshot every 1,000 events (the engine's
``SnapshotPolicy(every=1000)``), in the same file. Resuming = ``load_state``:
find the newest snapshot, check its event_hash against the log, replay the
events after it. With snapshots at 0, 1,000, ... both sizes replay exactly
999 events, so the figures should match: the claim is that resume time does
not grow with the history.

Baseline (same run, interleaved with the resumes): raw aiosqlite, one
``SELECT`` of 1,000 small msgpack rows plus a decode of each - the floor for
one read of that replay.

    python bench/bench_snapshots.py [--sizes 1000 1000000] [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosqlite  # noqa: E402
import msgspec  # noqa: E402

from statelog.eventstore import (  # noqa: E402
    Event,
    EventStore,
    MemoryEventStore,
    Snapshot,
    SnapshotStore,
    SQLiteEventStore,
    apply_event,
    load_state,
    ops_of_delta,
)

PK, APP = "bench", "resume"
SNAPSHOT_EVERY = 1_000
BATCH = 10_000


def make_batch(start: int, n: int) -> list[Event]:
    return [
        Event(
            partition_key=PK,
            app_id=APP,
            sequence_id=seq,
            kind="action_completed",
            action="step",
            next_action="step",
            ops=ops_of_delta({"counter": seq, f"slot{seq % 16}": f"value-{seq}"}),
        )
        for seq in range(start, start + n)
    ]


async def open_store(kind: str, path: Path, codec: str) -> EventStore:
    if kind == "memory":
        return MemoryEventStore(codec=codec)  # type: ignore[arg-type]
    store: EventStore = await SQLiteEventStore.open(path, codec=codec)
    return store


async def build(store: EventStore, snapshots: SnapshotStore, history: int) -> float:
    """Append ``history`` events in large batches; snapshot every SNAPSHOT_EVERY events."""
    started = time.perf_counter()
    state: dict[str, Any] = {}
    seq = 0
    while seq < history:
        n = min(BATCH, history - seq)
        recorded = await store.append(make_batch(seq, n), expected_sequence=seq - 1)
        for rec in recorded:
            event = rec.event
            apply_event(state, event)
            if event.sequence_id % SNAPSHOT_EVERY == 0:
                await snapshots.save(
                    Snapshot(
                        partition_key=PK,
                        app_id=APP,
                        sequence_id=event.sequence_id,
                        state=dict(state),
                        position=rec.position,
                        event_hash=event.hash,
                    )
                )
        seq += n
    return time.perf_counter() - started


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


async def time_resume(store: EventStore, snapshots: SnapshotStore) -> float:
    t0 = time.perf_counter()
    await load_state(store, snapshots, PK, APP)
    return time.perf_counter() - t0


async def time_parts(store: EventStore, snapshots: SnapshotStore) -> tuple[float, float]:
    """The two halves of a resume: the snapshot (with its hash check), then the replay."""
    t0 = time.perf_counter()
    snap = await snapshots.load(PK, APP, store=store)
    t1 = time.perf_counter()
    assert snap is not None
    await store.fold_stream(PK, APP, from_sequence=snap.sequence_id + 1, state=snap.state)
    return t1 - t0, time.perf_counter() - t1


async def time_full_replay(store: EventStore) -> float:
    t0 = time.perf_counter()
    await store.fold_stream(PK, APP)
    return time.perf_counter() - t0


class Baseline:
    """Raw aiosqlite: one SELECT of 1,000 rows + msgspec decode (the replay's floor)."""

    def __init__(self) -> None:
        self.decoder = msgspec.msgpack.Decoder()

    async def open(self, tmp: Path) -> None:
        encoder = msgspec.msgpack.Encoder()
        rows = [
            (i, encoder.encode({"k": "action_completed", "w": {"counter": i, "s": f"value-{i}"}}))
            for i in range(SNAPSHOT_EVERY)
        ]
        self.db = await aiosqlite.connect(tmp / "baseline.db")
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB)")
        await self.db.executemany("INSERT INTO t VALUES (?, ?)", rows)
        await self.db.commit()

    async def time(self) -> float:
        t0 = time.perf_counter()
        fetched = await self.db.execute_fetchall("SELECT body FROM t WHERE seq >= ?", (0,))
        state: dict[str, Any] = {}
        for (body,) in fetched:
            state.update(self.decoder.decode(body)["w"])
        return time.perf_counter() - t0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--codec", choices=["json", "msgpack"], default="msgpack")
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, store={args.store}, "
        f"codec={args.codec}, snapshot every {SNAPSHOT_EVERY} events, {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        baseline = Baseline()
        await baseline.open(tmp)
        opened: dict[int, tuple[EventStore, SnapshotStore]] = {}
        try:
            for history in args.sizes:
                path = tmp / f"history-{history}.db"
                store = await open_store(args.store, path, args.codec)
                snapshots = await SnapshotStore.open(path)
                opened[history] = (store, snapshots)
                built = await build(store, snapshots, history)
                size = sum(p.stat().st_size for p in tmp.glob(f"{path.name}*"))
                expected = await load_state(store, None, PK, APP)
                assert await load_state(store, snapshots, PK, APP) == expected
                print(
                    f"history {history:>9,} events: built in {built:.1f} s, "
                    f"{size / 1e6:.1f} MB on disk (events + snapshots)"
                )
            # Interleave sizes run by run, so load on the shared machine hits all alike.
            gc.collect()
            base: list[float] = []
            resume: dict[int, list[float]] = {h: [] for h in opened}
            parts: dict[int, list[tuple[float, float]]] = {h: [] for h in opened}
            for _ in range(args.runs):
                base.append(await baseline.time())
                for history, (store, snapshots) in opened.items():
                    resume[history].append(await time_resume(store, snapshots))
                    parts[history].append(await time_parts(store, snapshots))
            base_median, base_p99 = summary(base)
            print(
                f"baseline raw aiosqlite SELECT 1,000 rows + decode: median {ms(base_median)}, "
                f"p99 {ms(base_p99)}"
            )
            results: dict[int, tuple[float, float]] = {}
            for history, (store, _) in opened.items():
                median, p99 = results[history] = summary(resume[history])
                replayed = history - 1 - (history - 1) // SNAPSHOT_EVERY * SNAPSHOT_EVERY
                load = statistics.median(a for a, _ in parts[history])
                replay = statistics.median(b for _, b in parts[history])
                line = (
                    f"history {history:>9,} events: resume = snapshot + {replayed} events: "
                    f"median {ms(median)}, p99 {ms(p99)} ({median / base_median:.2f}x the "
                    f"baseline) [snapshot load + hash check {ms(load)}, replay {ms(replay)}]"
                )
                if history <= 100_000:
                    full = statistics.median([await time_full_replay(store) for _ in range(30)])
                    line += f"; full replay without snapshots: median {ms(full)}"
                print(line)
        finally:
            for store, snapshots in opened.values():
                await snapshots.aclose()
                await store.aclose()
            await baseline.db.close()
    if len(results) >= 2:
        small, large = min(results), max(results)
        print(
            f"ratio resume at {large:,} / at {small:,} events: "
            f"median {results[large][0] / results[small][0]:.2f}x, "
            f"p99 {results[large][1] / results[small][1]:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
