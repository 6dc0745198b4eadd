"""Burr with statelog's persisters vs Burr with its own, on a chat workload, one run.

Each step of one Burr app appends one ~200-byte message to ``messages`` in its
state; 1,000 steps. The same app (same actions, same Burr) runs with:

- ``SQLitePersister`` (Burr's own, its defaults: rollback journal,
  ``synchronous=FULL``, so an fsync per step),
- ``SQLitePersister`` on a connection in WAL with ``synchronous=NORMAL``
  (statelog's default durability: survives a process crash, not power loss),
- ``AsyncSQLitePersister`` (Burr's aiosqlite persister, its defaults), ``arun``,
- ``StatelogPersister`` (sync, statelog's default ``NORMAL``) and the same with
  ``synchronous="FULL"`` (Burr's default durability),
- ``AsyncStatelogPersister`` (``NORMAL``), ``astep``,
- no persister (Burr alone: the ceiling).

Figures: steps/s over the stepping (build and open excluded), and bytes on
disk per step (the database file plus any ``-wal`` after close). Variants run
interleaved, ``--repeat`` times; the median is printed, then the ratios of
statelog's persisters to Burr's.

Read the bytes honestly: Burr saves a full copy of the state every step, so
its log grows with the square of the conversation; statelog's persister
stores the change between saves as operations (``burr_state_delta``): an
appended message is an ``append`` op of that message, so its bytes per step
stay flat.

    python bench/bench_burr.py [--steps 1000] [--repeat 3] [--message-bytes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from burr.core import ApplicationBuilder, State, action  # noqa: E402
from burr.core.persistence import SQLitePersister  # noqa: E402
from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister  # noqa: E402

from statelog.burr import AsyncStatelogPersister, StatelogPersister  # noqa: E402
from statelog.eventstore import SQLiteEventStore  # noqa: E402

APP_ID = "chat"
MESSAGE_BYTES = 200


def message(i: int, size: int) -> dict[str, str]:
    head = f"message {i:06d} "
    # ~``size`` bytes as JSON: {"role": "user", "content": "..."} is 31 bytes of frame
    return {"role": "user", "content": head + "x" * max(0, size - 31 - len(head))}


@action(reads=["messages"], writes=["messages"])
def chat(state: State) -> State:
    return state.append(messages=message(len(state["messages"]), MESSAGE_BYTES))


@action(reads=["messages"], writes=["messages"])
async def achat(state: State) -> State:
    return state.append(messages=message(len(state["messages"]), MESSAGE_BYTES))


def builder(persister: Any, fn: Any) -> Any:
    b = (
        ApplicationBuilder()
        .with_actions(chat=fn)
        .with_transitions(("chat", "chat"))
        .with_state(messages=[])
        .with_entrypoint("chat")
        .with_identifiers(app_id=APP_ID)
    )
    return b if persister is None else b.with_state_persister(persister)


def disk_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()
    )


# --- the variants: each returns (seconds stepping, bytes on disk)


def run_sync(app: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        app.step()
    return time.perf_counter() - start


async def run_async(app: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        await app.astep()
    return time.perf_counter() - start


def burr_memory(db: Path, steps: int) -> tuple[float, int]:
    return run_sync(builder(None, chat).build(), steps), 0


def burr_sqlite(db: Path, steps: int) -> tuple[float, int]:
    persister = SQLitePersister(str(db))
    persister.initialize()
    try:
        seconds = run_sync(builder(persister, chat).build(), steps)
    finally:
        persister.cleanup()
    return seconds, disk_bytes(db)


def burr_sqlite_wal(db: Path, steps: int) -> tuple[float, int]:
    connection = sqlite3.connect(str(db))
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    persister = SQLitePersister(str(db), connection=connection)
    persister.initialize()
    try:
        seconds = run_sync(builder(persister, chat).build(), steps)
    finally:
        persister.cleanup()
    return seconds, disk_bytes(db)


def burr_async_sqlite(db: Path, steps: int) -> tuple[float, int]:
    async def go() -> float:
        persister = await AsyncSQLitePersister.from_values(db_path=str(db))
        try:
            await persister.initialize()
            app = await builder(persister, achat).abuild()
            return await run_async(app, steps)
        finally:
            await persister.cleanup()

    return asyncio.run(go()), disk_bytes(db)


def statelog_sync(db: Path, steps: int, **options: Any) -> tuple[float, int]:
    with StatelogPersister.from_path(db, **options) as persister:
        persister.initialize()
        seconds = run_sync(builder(persister, chat).build(), steps)
    return seconds, disk_bytes(db)


def statelog_sync_full(db: Path, steps: int) -> tuple[float, int]:
    return statelog_sync(db, steps, synchronous="FULL")


def statelog_async(db: Path, steps: int) -> tuple[float, int]:
    async def go() -> float:
        async with AsyncStatelogPersister.from_path(db) as persister:
            await persister.initialize()
            app = await builder(persister, achat).abuild()
            return await run_async(app, steps)

    return asyncio.run(go()), disk_bytes(db)


VARIANTS: dict[str, Callable[[Path, int], tuple[float, int]]] = {
    "burr, no persister": burr_memory,
    "burr SQLitePersister (defaults: FULL)": burr_sqlite,
    "burr SQLitePersister (WAL, NORMAL)": burr_sqlite_wal,
    "burr AsyncSQLitePersister (aiosqlite)": burr_async_sqlite,
    "statelog StatelogPersister (NORMAL)": statelog_sync,
    "statelog StatelogPersister (FULL)": statelog_sync_full,
    "statelog AsyncStatelogPersister": statelog_async,
}


async def check_log(db: Path, steps: int) -> None:
    """The statelog log is what it should be: one event per step, chain intact."""
    async with SQLiteEventStore(db) as store:
        assert await store.last_sequence("", APP_ID) == steps - 1
        assert await store.verify() is None
        state, _ = await store.fold_stream("", APP_ID)
        assert len(state["messages"]) == steps


def load_line(when: str) -> str:
    """The time and load average: the machine is shared, so figures move with its load."""
    one, five, fifteen = os.getloadavg()
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"{when}: {now}, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    global MESSAGE_BYTES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--message-bytes", type=int, default=MESSAGE_BYTES)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--only", nargs="*", default=None, help="run the variants whose name holds one of these"
    )
    args = parser.parse_args(argv)
    MESSAGE_BYTES = args.message_bytes
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_burr_"))
    workdir.mkdir(parents=True, exist_ok=True)

    print(
        f"bench_burr: {args.steps} steps, ~{MESSAGE_BYTES}-byte message appended per step, "
        f"{args.repeat} interleaved runs (median); burr {version('apache-burr')}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs"
    )
    print(load_line("start"))
    variants = {
        name: fn
        for name, fn in VARIANTS.items()
        if args.only is None or any(word in name for word in args.only)
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    for run in range(args.repeat):
        for i, (name, variant) in enumerate(variants.items()):
            db = workdir / f"r{run}-v{i}.db"
            took, size = variant(db, args.steps)
            gc.collect()  # Burr's SQLitePersister closes again in __del__: on this thread
            seconds[name].append(took)
            sizes[name] = size
            if name.startswith("statelog"):
                asyncio.run(check_log(db, args.steps))

    rate = {name: args.steps / statistics.median(s) for name, s in seconds.items()}
    per_step = {name: sizes[name] / args.steps for name in variants}
    print(f"\n{'variant':<42} {'steps/s':>10} {'bytes/step':>12} {'MB total':>9}")
    for name in variants:
        print(f"{name:<42} {rate[name]:>10,.0f} {per_step[name]:>12,.0f} {sizes[name] / 1e6:>9.1f}")
    print("\nratios (statelog / burr; steps/s higher is better, bytes lower is better)")
    pairs = [
        ("statelog StatelogPersister (FULL)", "burr SQLitePersister (defaults: FULL)"),
        ("statelog StatelogPersister (NORMAL)", "burr SQLitePersister (WAL, NORMAL)"),
        ("statelog AsyncStatelogPersister", "burr AsyncSQLitePersister (aiosqlite)"),
    ]
    for ours, theirs in pairs:
        if ours not in variants or theirs not in variants:
            continue
        print(
            f"  {ours} vs {theirs}: steps/s x{rate[ours] / rate[theirs]:.2f}, "
            f"bytes/step x{per_step[ours] / per_step[theirs]:.3f}"
        )
    print(load_line("end"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
