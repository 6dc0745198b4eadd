"""Apache Burr: the same loop as three ``@action`` functions; persisters for durability.

Burr saves a full copy of the state per step (``SQLitePersister.save`` inserts a row
holding ``json.dumps(state.serialize())``), through a post-step hook, committing each
row before the next step starts: that is the "each step durable" mode we match.
Burr documents no SQLite pragmas; we hand ``SQLitePersister`` a connection with the
pragmas of each row, which its constructor supports (``connection=``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.peers._base import DurableConfig, System, pragmas
from bench.workloads import (
    ACTIONS,
    NotApplicableError,
    expected_after,
    expected_count,
    initial_state,
)

TABLE = "burr_state"


def _graph() -> Any:
    from burr.core import State, action

    @action(reads=["count"], writes=["count"])
    def a(state: State) -> State:
        return state.update(count=state["count"] + 1)

    @action(reads=["flag"], writes=["flag"])
    def b(state: State) -> State:
        return state.update(flag=not state["flag"])

    @action(reads=["count"], writes=["label"])
    def c(state: State) -> State:
        return state.update(label=f"c{state['count']}")

    return {"a": a, "b": b, "c": c}, [("a", "b"), ("b", "c"), ("c", "a")]


def _builder(app_id: str) -> Any:
    from burr.core import ApplicationBuilder

    actions, transitions = _graph()
    return (
        ApplicationBuilder()
        .with_actions(**actions)
        .with_transitions(*transitions)
        .with_identifiers(app_id=app_id)
    )


def _connect(path: Path, journal: str | None, sync: str | None) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False)
    if journal:
        con.execute(f"PRAGMA journal_mode={journal}")
    if sync:
        con.execute(f"PRAGMA synchronous={sync}")
    return con


class Burr(System):
    name = "burr"
    durable_rows = {
        "full": DurableConfig("SQLitePersister (sync), own connection", "WAL", "FULL"),
        "normal": DurableConfig("SQLitePersister (sync), own connection", "WAL", "NORMAL"),
        "default": DurableConfig("SQLitePersister.from_values (defaults)", None, None),
        "async": DurableConfig("AsyncSQLitePersister (aiosqlite), own connection", "WAL", "NORMAL"),
        "background": "no background-persistence mode (persisters save in a post-step hook)",
    }

    def available(self) -> str | None:
        try:
            import burr.core  # noqa: F401
        except ImportError:
            return "apache-burr not installed (pip install -e '.[bench]')"
        return None

    def version(self) -> str:
        return importlib.metadata.version("apache-burr")

    async def mem(self, steps: int) -> float:
        app = _builder("mem").with_state(**initial_state()).with_entrypoint("a").build()
        start = time.perf_counter()
        for _ in range(steps):
            app.step()
        elapsed = time.perf_counter() - start
        assert app.state["count"] == expected_count(steps)
        return elapsed

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        if config.api.startswith("AsyncSQLitePersister"):
            return await self._durable_async(steps, path, config)
        from burr.core.persistence import SQLitePersister

        if config.journal_mode is None:
            persister = SQLitePersister.from_values(db_path=str(path), table_name=TABLE)
        else:
            con = _connect(path, config.journal_mode, config.synchronous)
            persister = SQLitePersister(str(path), TABLE, connection=con)
        try:
            persister.initialize()
            app = (
                _builder("durable")
                .with_state(**initial_state())
                .with_entrypoint("a")
                .with_state_persister(persister)
                .build()
            )
            start = time.perf_counter()
            for _ in range(steps):
                app.step()
            elapsed = time.perf_counter() - start
            return elapsed, pragmas(persister.connection)
        finally:
            persister.cleanup()

    async def _durable_async(
        self, steps: int, path: Path, config: DurableConfig
    ) -> tuple[float, str]:
        import aiosqlite
        from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister

        con = await aiosqlite.connect(path)
        await con.execute(f"PRAGMA journal_mode={config.journal_mode}")
        await con.execute(f"PRAGMA synchronous={config.synchronous}")
        persister = AsyncSQLitePersister(connection=con, table_name=TABLE)
        try:
            await persister.initialize()
            app = await (
                _builder("durable-async")
                .with_state(**initial_state())
                .with_entrypoint("a")
                .with_state_persister(persister)
                .abuild()
            )
            start = time.perf_counter()
            for _ in range(steps):
                await app.astep()
            elapsed = time.perf_counter() - start
            mode = (await (await con.execute("PRAGMA journal_mode")).fetchone())[0]
            sync = (await (await con.execute("PRAGMA synchronous")).fetchone())[0]
            return elapsed, f"{str(mode).upper()}+{['OFF', 'NORMAL', 'FULL'][sync]}"
        finally:
            await persister.cleanup()

    async def concurrent(self, apps: int, steps: int, path: Path) -> tuple[float, str]:
        """``apps`` async Burr apps on one AsyncSQLitePersister connection (WAL+NORMAL)."""
        import aiosqlite
        from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister

        con = await aiosqlite.connect(path)
        await con.execute("PRAGMA journal_mode=WAL")
        await con.execute("PRAGMA synchronous=NORMAL")
        persister = AsyncSQLitePersister(connection=con, table_name=TABLE)
        try:
            await persister.initialize()
            built = [
                await _builder(f"app-{i}")
                .with_state(**initial_state())
                .with_entrypoint("a")
                .with_state_persister(persister)
                .abuild()
                for i in range(apps)
            ]

            async def drive(app: Any) -> None:
                for _ in range(steps):
                    await app.astep()

            start = time.perf_counter()
            await asyncio.gather(*(drive(app) for app in built))
            return time.perf_counter() - start, "WAL+NORMAL (one shared aiosqlite connection)"
        finally:
            await persister.cleanup()

    async def build_history(self, path: Path, steps: int) -> None:
        """``steps`` rows as ``SQLitePersister.save`` writes them, inserted in bulk.

        The first rows come from a real Burr run (to pin the format); the rest are the
        same JSON documents with the sequence and the three fields advanced.
        """
        from burr.core.persistence import SQLitePersister

        con = _connect(path, "WAL", "NORMAL")
        persister = SQLitePersister(str(path), TABLE, connection=con)
        persister.initialize()
        real = min(steps, 30)
        app = (
            _builder("history")
            .with_state(**initial_state())
            .with_entrypoint("a")
            .with_state_persister(persister)
            .build()
        )
        for _ in range(real):
            app.step()
        row = con.execute(
            f"SELECT state FROM {TABLE} WHERE app_id='history' ORDER BY sequence_id DESC LIMIT 1"
        ).fetchone()
        template = json.loads(row[0])
        state = expected_after(real)
        batch: list[tuple[Any, ...]] = []
        for seq in range(real, steps):
            action = ACTIONS[seq % 3]
            from bench.workloads import STEPS

            state.update(STEPS[action](state))
            doc = dict(template)
            doc.update(state)
            doc["__SEQUENCE_ID"] = seq
            doc["__PRIOR_STEP"] = action
            batch.append(("", "history", seq, action, "completed", json.dumps(doc)))
            if len(batch) >= 20_000:
                self._insert(con, batch)
        self._insert(con, batch)
        persister.cleanup()

    @staticmethod
    def _insert(con: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
        con.executemany(
            f"INSERT INTO {TABLE} (partition_key, app_id, sequence_id, position, status, state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            batch,
        )
        con.commit()
        batch.clear()

    async def resume(self, path: Path, steps: int) -> float:
        from burr.core.persistence import SQLitePersister

        con = _connect(path, "WAL", "NORMAL")
        persister = SQLitePersister(str(path), TABLE, connection=con)
        try:
            start = time.perf_counter()
            app = (
                _builder("history")
                .initialize_from(
                    persister,
                    resume_at_next_action=True,
                    default_state=initial_state(),
                    default_entrypoint="a",
                )
                .with_state_persister(persister)
                .build()
            )
            app.step()
            elapsed = time.perf_counter() - start
            if app.state["count"] < expected_count(steps):
                raise AssertionError("burr resumed from the wrong state")
            return elapsed
        finally:
            persister.cleanup()

    async def replay(self, path: Path, steps: int) -> float:
        raise NotApplicableError(
            "Burr stores a full state copy per step, no events: nothing to replay "
            "(loading = reading the latest row, see resume)"
        )

    async def rebuild(self, path: Path, steps: int, out: Path, limit: int) -> tuple[float, int]:
        raise NotApplicableError("Burr has no projections / read-model runner")
