"""statelog itself: the loop as three ``@action`` functions; each step appends one
event holding only the changed field (its delta)."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import time
from pathlib import Path
from typing import Any

from bench.peers._base import DurableConfig, System, sqlite_bytes
from bench.workloads import ACTIONS, STEPS, expected_count, initial_state

APP = "history"
SNAPSHOT_EVERY = 1_000


@functools.cache
def _actions() -> dict[str, Any]:
    """The workload's actions, defined once per process as a module defines them
    (the eventsourcing peer's classes are, too): a resume times building the app
    from them, not defining them."""
    from statelog.engine import State, action

    @action(reads=["count"], writes=["count"])
    def a(state: State) -> State:
        return state.update(count=state["count"] + 1)

    @action(reads=["flag"], writes=["flag"])
    def b(state: State) -> State:
        return state.update(flag=not state["flag"])

    @action(reads=["count"], writes=["label"])
    def c(state: State) -> State:
        return state.update(label=f"c{state['count']}")

    return {"a": a, "b": b, "c": c}


def _builder(app_id: str) -> Any:
    from statelog.engine import ApplicationBuilder

    return (
        ApplicationBuilder()
        .with_actions(**_actions())
        .with_transitions(("a", "b"), ("b", "c"), ("c", "a"))
        .with_identifiers(app_id=app_id)
    )


async def _open(path: Path, synchronous: str = "NORMAL") -> tuple[Any, Any]:
    """The SQLite event store and snapshot store, on one file."""
    event_store, snapshot_store = _open_classes()
    store = await event_store.open(path, synchronous=synchronous)
    snapshots = await snapshot_store.open(path, synchronous=synchronous)
    return store, snapshots


def _open_classes() -> tuple[Any, Any]:
    from statelog.eventstore import SnapshotStore, SQLiteEventStore

    return SQLiteEventStore, SnapshotStore


async def _close(*things: Any) -> None:
    for thing in things:
        await thing.aclose()


def _store_pragmas(store: Any, synchronous: str) -> str:
    """journal_mode read back from the file; synchronous as the store was opened."""
    import sqlite3

    path = getattr(store, "path", None)
    mode = "?"
    if path:
        con = sqlite3.connect(path)
        try:
            mode = str(con.execute("PRAGMA journal_mode").fetchone()[0]).upper()
        finally:
            con.close()
    sync = getattr(store, "synchronous", synchronous)
    return f"{mode}+{sync}"


class Statelog(System):
    name = "statelog"
    durable_rows = {
        # the sync rows use the sync face (build() + step()), as Burr's use Burr's sync
        # API; the async row is abuild() + astep()
        "full": DurableConfig(
            "build() + step(), with_store(path, synchronous='FULL'), transactional", "WAL", "FULL"
        ),
        "normal": DurableConfig(
            "build() + step(), with_store(path, synchronous='NORMAL'), transactional",
            "WAL",
            "NORMAL",
        ),
        "default": DurableConfig(
            "build() + step(), with_store(path) defaults, transactional", None, None
        ),
        "async": DurableConfig(
            "abuild() + astep(), SQLiteEventStore(synchronous='NORMAL'), transactional",
            "WAL",
            "NORMAL",
        ),
        "background": DurableConfig(
            "SQLiteEventStore(synchronous='NORMAL'), fire_and_forget, flush() timed",
            "WAL",
            "NORMAL",
        ),
    }

    def available(self) -> str | None:
        # Import everything now: a run takes minutes, and the tree may change under it.
        from statelog import (
            engine,  # noqa: F401
            eventstore,  # noqa: F401
            projections,  # noqa: F401
        )

        _open_classes()
        return None

    def version(self) -> str:
        try:
            return importlib.metadata.version("statelog")
        except importlib.metadata.PackageNotFoundError:
            return "source tree"

    async def mem(self, steps: int) -> float:
        from statelog.eventstore import MemoryEventStore

        store = MemoryEventStore()
        app = await (
            _builder("mem").with_store(store).with_state(initial_state()).with_entrypoint("a")
        ).abuild()
        try:
            start = time.perf_counter()
            for _ in range(steps):
                await app.astep()
            elapsed = time.perf_counter() - start
            assert app.state["count"] == expected_count(steps)
            return elapsed
        finally:
            await app.aclose()
            await store.aclose()

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        if config.api.startswith("build()"):
            # the sync face runs its own event loop: on a thread, outside the bench's
            return await asyncio.to_thread(self._durable_sync, steps, path, config)
        if config.synchronous is None:
            app = await (
                _builder("durable")
                .with_store(path)
                .with_snapshots(every=SNAPSHOT_EVERY)
                .with_state(initial_state())
                .with_entrypoint("a")
            ).abuild()
            try:
                start = time.perf_counter()
                for _ in range(steps):
                    await app.astep()
                elapsed = time.perf_counter() - start
                return elapsed, _store_pragmas(app.store, "default")
            finally:
                await app.aclose()
        store, snapshots = await _open(path, config.synchronous)
        mode = "fire_and_forget" if "fire_and_forget" in config.api else "transactional"
        try:
            app = await (
                _builder("durable")
                .with_store(store, snapshots=snapshots)
                .with_snapshots(every=SNAPSHOT_EVERY)
                .with_durability(mode)
                .with_state(initial_state())
                .with_entrypoint("a")
            ).abuild()
            start = time.perf_counter()
            for _ in range(steps):
                await app.astep()
            await app.flush()
            elapsed = time.perf_counter() - start
            await app.aclose()
            return elapsed, _store_pragmas(store, config.synchronous)
        finally:
            await _close(snapshots, store)

    def _durable_sync(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        builder = (
            _builder("durable")
            .with_snapshots(every=SNAPSHOT_EVERY)
            .with_state(initial_state())
            .with_entrypoint("a")
        )
        if config.synchronous is None:
            builder = builder.with_store(path)
        else:
            builder = builder.with_store(path, synchronous=config.synchronous)
        app = builder.build()
        try:
            start = time.perf_counter()
            for _ in range(steps):
                app.step()
            elapsed = time.perf_counter() - start
            return elapsed, _store_pragmas(app.store, config.synchronous or "default")
        finally:
            app.close()

    async def concurrent(self, apps: int, steps: int, path: Path) -> tuple[float, str]:
        store, snapshots = await _open(path, "NORMAL")
        try:
            built = [
                await (
                    _builder(f"app-{i}")
                    .with_store(store, snapshots=snapshots)
                    .with_snapshots(every=SNAPSHOT_EVERY)
                    .with_state(initial_state())
                    .with_entrypoint("a")
                ).abuild()
                for i in range(apps)
            ]

            async def drive(app: Any) -> None:
                for _ in range(steps):
                    await app.astep()

            start = time.perf_counter()
            await asyncio.gather(*(drive(app) for app in built))
            elapsed = time.perf_counter() - start
            for app in built:
                await app.aclose()
            return elapsed, f"{_store_pragmas(store, 'NORMAL')} (one shared store)"
        finally:
            await _close(snapshots, store)

    async def build_history(self, path: Path, steps: int) -> None:
        """The events the engine writes for ``steps`` steps, appended 1,000 per call, with
        a snapshot every ``SNAPSHOT_EVERY`` (as ``with_snapshots(every=1000)`` takes them).

        The first event comes from building the real app; the rest have the shape of the
        engine's ``action_completed`` events, with the deltas of the workload.
        """
        from statelog.eventstore import (  # type: ignore[attr-defined]
            Event,
            EventKind,
            Snapshot,
            ops_of_delta,
            utcnow,
        )

        store, snapshots = await _open(path, "NORMAL")
        try:
            app = await (
                _builder(APP)
                .with_store(store, snapshots=snapshots)
                .with_snapshots(every=None, at_halt=False)
                .with_state(initial_state())
                .with_entrypoint("a")
            ).abuild()
            await app.aclose()
            state = initial_state()
            batch: list[Any] = []
            for i in range(steps):
                name = ACTIONS[i % 3]
                delta = STEPS[name](state)
                state.update(delta)
                batch.append(
                    Event(
                        partition_key="",
                        app_id=APP,
                        sequence_id=i + 1,
                        kind=EventKind.ACTION_COMPLETED,
                        action=name,
                        next_action=ACTIONS[(i + 1) % 3],
                        ops=ops_of_delta(delta),
                        timestamp=utcnow(),
                        duration_us=2,
                    )
                )
                if len(batch) == SNAPSHOT_EVERY or i == steps - 1:
                    recorded = await store.append(batch, expected_sequence=batch[0].sequence_id - 1)
                    last = recorded[-1]
                    if last.event.sequence_id % SNAPSHOT_EVERY == 0 or i == steps - 1:
                        await snapshots.save(
                            Snapshot(
                                partition_key="",
                                app_id=APP,
                                sequence_id=last.event.sequence_id,
                                state=dict(state),
                                position=last.position,
                                event_hash=last.event.hash,
                            )
                        )
                    batch = []
        finally:
            await _close(snapshots, store)

    async def resume(self, path: Path, steps: int) -> float:
        store, snapshots = await _open(path, "NORMAL")
        try:
            start = time.perf_counter()
            app = await (
                _builder(APP)
                .with_store(store, snapshots=snapshots)
                .with_snapshots(every=SNAPSHOT_EVERY, at_halt=False)
                .initialize_from(store, default_state=initial_state(), default_entrypoint="a")
            ).abuild()
            await app.astep()
            elapsed = time.perf_counter() - start
            if app.state["count"] < expected_count(steps):
                raise AssertionError("statelog resumed from the wrong state")
            await app.aclose()
            return elapsed
        finally:
            await _close(snapshots, store)

    async def replay(self, path: Path, steps: int) -> float:
        """Read + decode + fold the whole stream (no snapshot)."""
        store, snapshots = await _open(path, "NORMAL")
        try:
            start = time.perf_counter()
            state, last = await store.fold_stream("", APP)
            elapsed = time.perf_counter() - start
            if last < steps or state["count"] < expected_count(steps):
                raise AssertionError("statelog replay gave the wrong state")
            return elapsed
        finally:
            await _close(snapshots, store)

    async def rebuild(self, path: Path, steps: int, out: Path, limit: int) -> tuple[float, int]:
        """The built-in ``audit_trail`` read model rebuilt offline from position zero."""
        from statelog.projections import ProjectionRunner, StoreSource, get_projection

        store, snapshots = await _open(path, "NORMAL")
        try:
            async with ProjectionRunner(get_projection("audit_trail"), out) as runner:
                start = time.perf_counter()
                await runner.rebuild(StoreSource(store))
                elapsed = time.perf_counter() - start
            return elapsed, steps + 1
        finally:
            await _close(snapshots, store)

    def bytes_on_disk(self, path: Path) -> int:
        return sqlite_bytes(path)
