"""The chat workload: each step appends one ~200-byte message to a list in the state.

The shape where a log that stores whole values grows with the square of the
conversation. Every system writes to SQLite in WAL mode with the same
``synchronous`` (NORMAL unless ``--synchronous FULL``) and persists each step
before the next one starts:

- statelog: the engine (``astep``, transactional); each event holds an
  ``append`` op of the message; a snapshot every 1,000 steps, the newest kept
  (``SnapshotStore(keep_last=1)``: each snapshot holds the whole state);
- statelog (sync face): the same app through ``build()`` + ``step()``, as the
  peers are called: a synchronous call on the caller's thread, which writes its
  lone append there (no hand-off to the store's writer thread; on an idle VM a
  thread hand-off costs tens of microseconds, see docs/benchmarks.md);
- Burr: ``SQLitePersister`` on a WAL connection of its own at the run's setting (a
  full state copy per step);
- LangGraph: ``SqliteSaver`` (a WAL connection at the run's setting), ``durability="sync"``,
  the messages channel with an ``operator.add`` reducer, one ``invoke`` per step
  (the checkpoint holds the whole channel value);
- eventsourcing: an aggregate whose ``post`` event carries the message. Its SQLite
  pool has no ``synchronous`` setting (SQLite's default is FULL, a sync of the WAL
  at every commit); the bench sets the run's setting on its connections and checks
  it took.
  Before 2026-12-08 this row ran at FULL, and the ratios recorded then were
  against a peer that synced every step (docs/benchmarks.md).

Figures per system and size: durable steps/s, bytes on disk per step (used
pages after a checkpoint, divided by the steps), and resume latency (from an
open file to the first new durable step) at the largest size. Peers that store
the whole list per step are measured at up to 2,000 steps: at 10,000 they
would write ~10 GB (their bytes per step grow linearly with the length).

    python bench/bench_chat.py [--sizes 1000 10000] [--peer-sizes 500 2000]
                               [--synchronous NORMAL|FULL]

The table's "x best peer" is each statelog row's steps/s over the best peer's at
the same number of steps (else at any size a peer ran), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers._base import sqlite_bytes  # noqa: E402
from bench.peers.eventsourcing_peer import _pragmas, synchronous  # noqa: E402

MESSAGE_BYTES = 200

#: SQLite's ``synchronous`` for every system of a run (``--synchronous``): NORMAL (a
#: commit survives a crash of the process) or FULL (the WAL synced at each commit).
SYNCHRONOUS: dict[str, str] = {"mode": "NORMAL"}


def message(i: int) -> dict[str, str]:
    head = f"message {i:06d} "
    return {"role": "user", "content": head + "x" * (MESSAGE_BYTES - 31 - len(head))}


# --------------------------------------------------------------------------- statelog


async def statelog_run(path: Path, steps: int) -> float:
    from statelog import ApplicationBuilder, State, action
    from statelog.eventstore import SnapshotStore, SQLiteEventStore

    @action(reads=["messages"], writes=["messages"])
    def chat(state: State) -> State:
        return state.append(messages=message(len(state["messages"])))

    # snapshots are a cache: keep the newest one (each holds the whole state)
    mode = SYNCHRONOUS["mode"]
    async with (
        SQLiteEventStore(path, synchronous=mode) as store,
        SnapshotStore(path, keep_last=1, synchronous=mode) as snaps,
    ):
        app = await (
            ApplicationBuilder()
            .with_actions(chat=chat)
            .with_transitions(("chat", "chat"))
            .with_state(messages=[])
            .with_entrypoint("chat")
            .with_identifiers(app_id="chat")
            .with_store(store, snapshots=snaps)
            .abuild()
        )
        async with app:
            step = app.astep
            start = time.perf_counter()
            for _ in range(steps):
                await step()
            return time.perf_counter() - start


async def statelog_resume(path: Path, steps: int) -> float:
    from statelog import ApplicationBuilder, State, action
    from statelog.eventstore import SnapshotStore, SQLiteEventStore

    @action(reads=["messages"], writes=["messages"])
    def chat(state: State) -> State:
        return state.append(messages=message(len(state["messages"])))

    mode = SYNCHRONOUS["mode"]
    async with (
        SQLiteEventStore(path, synchronous=mode) as store,
        SnapshotStore(path, synchronous=mode) as snaps,
    ):
        start = time.perf_counter()
        app = await (
            ApplicationBuilder()
            .with_actions(chat=chat)
            .with_transitions(("chat", "chat"))
            .initialize_from(store, default_state={"messages": []}, default_entrypoint="chat")
            .with_identifiers(app_id="chat")
            .with_store(store, snapshots=snaps)
            .with_snapshots(every=None, at_halt=False)
            .abuild()
        )
        async with app:
            await app.astep()
            elapsed = time.perf_counter() - start
            assert len(app.state["messages"]) == steps + 1
        return elapsed


def _sync_builder(path: Path, snapshots: Any) -> Any:
    from statelog import ApplicationBuilder, State, action

    @action(reads=["messages"], writes=["messages"])
    def chat(state: State) -> State:
        return state.append(messages=message(len(state["messages"])))

    return (
        ApplicationBuilder()
        .with_actions(chat=chat)
        .with_transitions(("chat", "chat"))
        .with_identifiers(app_id="chat")
        .with_store(path, snapshots=snapshots, synchronous=SYNCHRONOUS["mode"])
    )


def _sync_run(path: Path, steps: int) -> float:
    from statelog.eventstore import SnapshotStore

    # the same store and snapshots as the async row; the app opens the log, and the
    # snapshot store passed in is connected by the build and stays ours to close
    snapshots = SnapshotStore(path, keep_last=1, synchronous=SYNCHRONOUS["mode"])
    app = _sync_builder(path, snapshots).with_state(messages=[]).with_entrypoint("chat").build()
    try:
        step = app.step
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - start
    finally:
        app.close()
        asyncio.run(snapshots.aclose())


def _sync_resume(path: Path, steps: int) -> float:
    from statelog.eventstore import SnapshotStore

    snapshots = SnapshotStore(path, synchronous=SYNCHRONOUS["mode"])
    start = time.perf_counter()
    app = (
        _sync_builder(path, snapshots)
        .initialize_from(default_state={"messages": []}, default_entrypoint="chat")
        .with_snapshots(every=None, at_halt=False)
        .build()
    )
    try:
        app.step()
        elapsed = time.perf_counter() - start
        assert len(app.state["messages"]) == steps + 1
        return elapsed
    finally:
        app.close()
        asyncio.run(snapshots.aclose())


async def statelog_sync_run(path: Path, steps: int) -> float:
    """The sync face (``build()`` + ``step()``), as the peers' runs are synchronous
    calls: a lone append is written on the calling thread, no hand-off. On a thread
    of its own, as a sync caller is (the sync face refuses a running event loop)."""
    return await asyncio.to_thread(_sync_run, path, steps)


async def statelog_sync_resume(path: Path, steps: int) -> float:
    return await asyncio.to_thread(_sync_resume, path, steps)


# --------------------------------------------------------------------------- Burr


def _burr_connection(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={SYNCHRONOUS['mode']}")
    return con


def _burr_app(persister: Any, resume: bool) -> Any:
    from burr.core import ApplicationBuilder, State, action

    @action(reads=["messages"], writes=["messages"])
    def chat(state: State) -> State:
        return state.append(messages=message(len(state["messages"])))

    b = ApplicationBuilder().with_actions(chat=chat).with_transitions(("chat", "chat"))
    if resume:
        b = b.initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"messages": []},
            default_entrypoint="chat",
        )
    else:
        b = b.with_state(messages=[]).with_entrypoint("chat")
    return b.with_state_persister(persister).with_identifiers(app_id="chat").build()


async def burr_run(path: Path, steps: int) -> float:
    from burr.core.persistence import SQLitePersister

    persister = SQLitePersister(str(path), connection=_burr_connection(path))
    persister.initialize()
    app = _burr_app(persister, resume=False)
    start = time.perf_counter()
    for _ in range(steps):
        app.step()
    elapsed = time.perf_counter() - start
    persister.connection.close()
    return elapsed


async def burr_resume(path: Path, steps: int) -> float:
    from burr.core.persistence import SQLitePersister

    persister = SQLitePersister(str(path), connection=_burr_connection(path))
    start = time.perf_counter()
    app = _burr_app(persister, resume=True)
    app.step()
    elapsed = time.perf_counter() - start
    assert len(app.state["messages"]) == steps + 1
    persister.connection.close()
    return elapsed


# --------------------------------------------------------------------------- LangGraph


class ChatState(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def _lg_graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    def chat(s: ChatState) -> dict[str, Any]:
        return {"messages": [message(len(s["messages"]))]}

    g = StateGraph(ChatState)
    g.add_node("chat", chat)
    g.add_edge(START, "chat")
    g.add_edge("chat", END)
    return g.compile(checkpointer=saver)


def _lg_saver(path: Path) -> Any:
    from langgraph.checkpoint.sqlite import SqliteSaver

    con = sqlite3.connect(path, check_same_thread=False)
    con.execute(f"PRAGMA synchronous={SYNCHRONOUS['mode']}")
    saver = SqliteSaver(con)
    saver.setup()
    return saver


async def langgraph_run(path: Path, steps: int) -> float:
    saver = _lg_saver(path)
    graph = _lg_graph(saver)
    config = {"configurable": {"thread_id": "chat"}}
    start = time.perf_counter()
    for _ in range(steps):
        graph.invoke({"messages": []}, config, durability="sync")
    elapsed = time.perf_counter() - start
    saver.conn.close()
    return elapsed


async def langgraph_resume(path: Path, steps: int) -> float:
    start = time.perf_counter()
    saver = _lg_saver(path)
    graph = _lg_graph(saver)
    out = graph.invoke({"messages": []}, {"configurable": {"thread_id": "chat"}}, durability="sync")
    elapsed = time.perf_counter() - start
    assert len(out["messages"]) == steps + 1
    saver.conn.close()
    return elapsed


# --------------------------------------------------------------------------- eventsourcing

_ES: dict[str, Any] = {}


def _es() -> dict[str, Any]:
    if _ES:
        return _ES
    from uuid import NAMESPACE_URL, uuid5

    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Chat(Aggregate):
        @event("Started")
        def __init__(self) -> None:
            self.messages: list[dict[str, str]] = []

        @event("Posted")
        def post(self, text: dict[str, str]) -> None:
            self.messages.append(text)

    class ChatApp(Application[Any]):
        pass

    _ES.update(Chat=Chat, ChatApp=ChatApp, id=uuid5(NAMESPACE_URL, "chat"))
    return _ES


def _es_app(path: Path) -> Any:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "IS_SNAPSHOTTING_ENABLED": "n",
    }
    return _es()["ChatApp"](env=env)


async def eventsourcing_run(path: Path, steps: int) -> float:
    d = _es()
    with synchronous(SYNCHRONOUS["mode"]):
        app = _es_app(path)
        chat = d["Chat"]()
        app.save(chat)
        d["last_id"] = chat.id
        start = time.perf_counter()
        for i in range(steps):
            chat.post(message(i))
            app.save(chat)
        elapsed = time.perf_counter() - start
        _check_pragmas(app)
        app.close()
    return elapsed


async def eventsourcing_resume(path: Path, steps: int) -> float:
    d = _es()
    with synchronous(SYNCHRONOUS["mode"]):
        start = time.perf_counter()
        app = _es_app(path)
        chat = app.repository.get(d["last_id"])
        chat.post(message(steps))
        app.save(chat)
        elapsed = time.perf_counter() - start
        assert len(chat.messages) == steps + 1
        _check_pragmas(app)
        app.close()
    return elapsed


def _check_pragmas(app: Any) -> None:
    """Everyone runs at the same pragmas: refuse to report anything else."""
    got, want = _pragmas(app), f"WAL+{SYNCHRONOUS['mode']}"
    if got != want:
        raise RuntimeError(f"eventsourcing ran at {got}, not {want}")


# --------------------------------------------------------------------------- the run

Runner = Callable[[Path, int], Any]
SYSTEMS: dict[str, tuple[Runner, Runner]] = {
    "statelog": (statelog_run, statelog_resume),
    "statelog (sync face)": (statelog_sync_run, statelog_sync_resume),
    "burr": (burr_run, burr_resume),
    "langgraph": (langgraph_run, langgraph_resume),
    "eventsourcing": (eventsourcing_run, eventsourcing_resume),
}


async def measure(name: str, steps: int, workdir: Path, repeat: int) -> dict[str, float]:
    run, resume = SYSTEMS[name]
    rates, sizes, logs, resumes = [], [], [], []
    for r in range(repeat):
        path = workdir / f"{name.replace(' ', '_')}-{steps}-{r}.db"
        seconds = await run(path, steps)
        rates.append(steps / seconds)
        sizes.append(sqlite_bytes(path) / steps)
        logs.append(log_bytes(path) / steps)
        resumes.append(await resume(path, steps) * 1000)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return {
        "steps_per_s": statistics.median(rates),
        "bytes_per_step": statistics.median(sizes),
        "log_bytes_per_step": statistics.median(logs),
        "resume_ms": statistics.median(resumes),
    }


def log_bytes(path: Path) -> int:
    """Bytes of the database without statelog's snapshot table (a cache of the state).

    From SQLite's ``dbstat`` when it is compiled in; otherwise the whole file.
    """
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return sqlite_bytes(path)
    finally:
        con.close()
    return sum(size for name, size in rows if not name.startswith("snapshots"))


async def chat_table(
    sizes: Sequence[int],
    peer_sizes: Sequence[int],
    repeat: int,
    log: Callable[[str], None],
    *,
    synchronous: str = "NORMAL",
) -> list[tuple[str, int, dict[str, float]]]:
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
    SYNCHRONOUS["mode"] = synchronous
    log(f"  every system at SQLite WAL + synchronous={synchronous}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SYSTEMS:
            for steps in sizes if name.startswith(("statelog", "eventsourcing")) else peer_sizes:
                try:
                    got = await measure(name, steps, Path(tmp), repeat)
                except ImportError as exc:
                    log(f"  {name}: not installed ({exc})")
                    break
                log(
                    f"  {name:<20} {steps:>6} steps  {got['steps_per_s']:>9,.0f} steps/s  "
                    f"{got['bytes_per_step']:>9,.0f} B/step (log {got['log_bytes_per_step']:,.0f})"
                    f"  resume {got['resume_ms']:>7.1f} ms"
                )
                rows.append((name, steps, got))
    return rows


def best_peer(rows: list[tuple[str, int, dict[str, float]]], steps: int) -> float | None:
    """The best peer's durable steps/s at ``steps`` (else at any size it ran), same run."""
    peers = [(n, k, got["steps_per_s"]) for n, k, got in rows if not n.startswith("statelog")]
    same = [rate for _, k, rate in peers if k == steps]
    pool = same or [rate for _, _, rate in peers]
    return max(pool) if pool else None


def render(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    lines = [
        "| system | steps | durable steps/s | x best peer | bytes on disk per step "
        "| of which the log (no snapshot) | resume latency (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, steps, got in rows:
        best = best_peer(rows, steps) if name.startswith("statelog") else None
        ratio = f"{got['steps_per_s'] / best:.2f}x" if best else ""
        lines.append(
            f"| {name} | {steps:,} | {got['steps_per_s']:,.0f} | {ratio} | "
            f"{got['bytes_per_step']:,.0f} | {got['log_bytes_per_step']:,.0f} | "
            f"{got['resume_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--peer-sizes", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = p.parse_args(argv)
    rows = asyncio.run(
        chat_table(args.sizes, args.peer_sizes, args.repeat, print, synchronous=args.synchronous)
    )
    print()
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
