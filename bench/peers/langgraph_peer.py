"""LangGraph: the loop as a ``StateGraph`` of three nodes; checkpointers for durability.

A step is one node (one super-step). ``durability="sync"`` persists each checkpoint
before the next step starts, the mode we match. ``SqliteSaver.setup`` switches the
file to WAL; ``synchronous`` stays at the connection's value (SQLite's default FULL),
so for the NORMAL rows we hand the saver a connection with ``synchronous=NORMAL``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sqlite3
import time
from pathlib import Path
from typing import Any, TypedDict

from bench.peers._base import DurableConfig, System, pragmas
from bench.workloads import NotApplicableError, initial_state

THREAD = "history"


class FlowState(TypedDict, total=False):
    count: int
    flag: bool
    label: str
    customer: dict[str, Any]
    items: list[dict[str, Any]]
    notes: str
    tags: list[str]
    channel: dict[str, str]


def _graph(rounds: int, **compile_kw: Any) -> Any:
    """a -> b -> c, then back to a until ``count`` reaches ``rounds`` (3 steps a round)."""
    from langgraph.graph import END, START, StateGraph

    def a(s: FlowState) -> dict[str, Any]:
        return {"count": s["count"] + 1}

    def b(s: FlowState) -> dict[str, Any]:
        return {"flag": not s["flag"]}

    def c(s: FlowState) -> dict[str, Any]:
        return {"label": f"c{s['count']}"}

    g = StateGraph(FlowState)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_conditional_edges("c", lambda s: END if s["count"] >= rounds else "a", ["a", END])
    return g.compile(**compile_kw)


def _config(thread: str, steps: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": steps + 10}


def _connect(path: Path, sync: str | None) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False)
    if sync:
        con.execute(f"PRAGMA synchronous={sync}")
    return con


class LangGraph(System):
    name = "langgraph"
    durable_rows = {
        "full": DurableConfig("SqliteSaver, durability='sync'", "WAL", "FULL"),
        "normal": DurableConfig("SqliteSaver, durability='sync', own connection", "WAL", "NORMAL"),
        "default": DurableConfig("SqliteSaver.from_conn_string, durability='sync'", None, None),
        "async": DurableConfig(
            "AsyncSqliteSaver, durability='sync', own connection", "WAL", "NORMAL"
        ),
        "background": DurableConfig(
            "SqliteSaver, durability='async' (its default), own connection", "WAL", "NORMAL"
        ),
    }

    def available(self) -> str | None:
        try:
            import langgraph.checkpoint.sqlite  # noqa: F401
            import langgraph.graph  # noqa: F401
        except ImportError:
            return (
                "langgraph / langgraph-checkpoint-sqlite not installed (pip install -e '.[bench]')"
            )
        return None

    def version(self) -> str:
        return (
            f"{importlib.metadata.version('langgraph')}"
            f" (checkpoint-sqlite {importlib.metadata.version('langgraph-checkpoint-sqlite')})"
        )

    async def mem(self, steps: int) -> float:
        rounds = steps // 3
        graph = _graph(rounds)
        start = time.perf_counter()
        out = graph.invoke(initial_state(), _config("mem", steps))
        elapsed = time.perf_counter() - start
        assert out["count"] == rounds
        return elapsed

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        from langgraph.checkpoint.sqlite import SqliteSaver

        rounds = steps // 3
        if config.api.startswith("AsyncSqliteSaver"):
            return await self._durable_async(rounds, path, config)
        if config.synchronous is None:
            with SqliteSaver.from_conn_string(str(path)) as saver:
                return self._run_sync(saver, rounds)
        con = _connect(path, config.synchronous)
        mode = "async" if "durability='async'" in config.api else "sync"
        try:
            return self._run_sync(SqliteSaver(con), rounds, mode)
        finally:
            con.close()

    @staticmethod
    def _run_sync(saver: Any, rounds: int, durability: str = "sync") -> tuple[float, str]:
        saver.setup()
        graph = _graph(rounds, checkpointer=saver)
        start = time.perf_counter()
        out = graph.invoke(  # returns once the run's checkpoints are written
            initial_state(), _config("durable", 3 * rounds), durability=durability
        )
        elapsed = time.perf_counter() - start
        assert out["count"] == rounds
        return elapsed, pragmas(saver.conn)

    async def _durable_async(
        self, rounds: int, path: Path, config: DurableConfig
    ) -> tuple[float, str]:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with aiosqlite.connect(path) as con:
            await con.execute(f"PRAGMA synchronous={config.synchronous}")
            saver = AsyncSqliteSaver(con)
            await saver.setup()
            graph = _graph(rounds, checkpointer=saver)
            start = time.perf_counter()
            out = await graph.ainvoke(
                initial_state(), _config("durable-async", 3 * rounds), durability="sync"
            )
            elapsed = time.perf_counter() - start
            assert out["count"] == rounds
            mode = (await (await con.execute("PRAGMA journal_mode")).fetchone())[0]
            sync = (await (await con.execute("PRAGMA synchronous")).fetchone())[0]
            return elapsed, f"{str(mode).upper()}+{['OFF', 'NORMAL', 'FULL'][sync]}"

    async def concurrent(self, apps: int, steps: int, path: Path) -> tuple[float, str]:
        """``apps`` threads on one AsyncSqliteSaver (WAL+NORMAL), run with asyncio.gather."""
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        rounds = max(steps // 3, 1)
        async with aiosqlite.connect(path) as con:
            await con.execute("PRAGMA synchronous=NORMAL")
            saver = AsyncSqliteSaver(con)
            await saver.setup()
            graph = _graph(rounds, checkpointer=saver)
            start = time.perf_counter()
            outs = await asyncio.gather(
                *(
                    graph.ainvoke(
                        initial_state(), _config(f"app-{i}", 3 * rounds), durability="sync"
                    )
                    for i in range(apps)
                )
            )
            elapsed = time.perf_counter() - start
            assert all(o["count"] == rounds for o in outs)
            return elapsed, "WAL+NORMAL (one shared AsyncSqliteSaver)"

    async def build_history(self, path: Path, steps: int) -> None:
        """A real run of up to 300 steps, then copies of one of its checkpoints (and its
        writes) as older checkpoints of the same thread, inserted in bulk, up to ``steps``.

        The copies sort before the real ids, so the latest checkpoint stays the real one.
        """
        from langgraph.checkpoint.sqlite import SqliteSaver

        con = _connect(path, "NORMAL")
        saver = SqliteSaver(con)
        saver.setup()
        real_rounds = max(min(steps, 300) // 3, 1)
        graph = _graph(real_rounds, checkpointer=saver)
        graph.invoke(initial_state(), _config(THREAD, 3 * real_rounds), durability="sync")
        real = 3 * real_rounds
        mid = con.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id=? ORDER BY checkpoint_id"
            " LIMIT 1 OFFSET ?",
            (THREAD, real // 2),
        ).fetchone()[0]
        ck = con.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,"
            " checkpoint, metadata FROM checkpoints WHERE checkpoint_id=?",
            (mid,),
        ).fetchone()
        writes = con.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel,"
            " type, value FROM writes WHERE checkpoint_id=?",
            (mid,),
        ).fetchall()
        ck_rows: list[tuple[Any, ...]] = []
        w_rows: list[tuple[Any, ...]] = []
        for i in range(steps - real):
            cid = f"0-pad-{i:012d}"
            ck_rows.append((ck[0], ck[1], cid, f"0-pad-{i - 1:012d}", *ck[4:]))
            w_rows.extend((w[0], w[1], cid, *w[3:]) for w in writes)
            if len(ck_rows) >= 20_000:
                self._insert(con, ck_rows, w_rows)
        self._insert(con, ck_rows, w_rows)
        con.close()

    @staticmethod
    def _insert(
        con: sqlite3.Connection, ck_rows: list[tuple[Any, ...]], w_rows: list[tuple[Any, ...]]
    ) -> None:
        con.executemany("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)", ck_rows)
        con.executemany(
            "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,"
            " idx, channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            w_rows,
        )
        con.commit()
        ck_rows.clear()
        w_rows.clear()

    async def resume(self, path: Path, steps: int) -> float:
        """Load the thread's latest checkpoint and run exactly one node (interrupt_after)."""
        from langgraph.checkpoint.sqlite import SqliteSaver

        con = _connect(path, "NORMAL")
        try:
            saver = SqliteSaver(con)
            saver.setup()
            graph = _graph(10**12, checkpointer=saver, interrupt_after=["a", "b", "c"])
            before = graph.get_state(_config(THREAD, 10)).values["count"]
            start = time.perf_counter()
            out = graph.invoke({}, _config(THREAD, 10), durability="sync")
            elapsed = time.perf_counter() - start
            if out["count"] != before + 1:
                raise AssertionError("langgraph did not run exactly one new step")
            return elapsed
        finally:
            con.close()

    async def replay(self, path: Path, steps: int) -> float:
        raise NotApplicableError(
            "LangGraph checkpoints hold the full state per step, no event log to fold"
        )

    async def rebuild(self, path: Path, steps: int, out: Path, limit: int) -> tuple[float, int]:
        raise NotApplicableError("LangGraph has no projections / read-model runner")
