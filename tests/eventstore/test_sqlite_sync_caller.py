"""A sync caller (``SYNC_CALLER``: an app made by ``build()``) writes its lone
appends on its own thread (``Writer.commit_here``), and falls back to the writer
thread whenever that would not be the same single INSERT."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statelog import ApplicationBuilder, State, action, default
from statelog.eventstore import SQLiteEventStore, fold
from statelog.eventstore._base import SYNC_CALLER
from tests.eventstore.test_sqlite_store import PK, ev


def count_hand_overs(store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many batches the loop hands to the writer thread from now on."""
    writer = store._writer
    assert writer is not None
    handed = [0]
    original = writer._hand_over

    def counted() -> None:
        if writer._outbox:
            handed[0] += 1
        original()

    monkeypatch.setattr(writer, "_hand_over", counted)
    return handed


@pytest.fixture
def sync_caller() -> Iterator[None]:
    token = SYNC_CALLER.set(True)
    yield
    SYNC_CALLER.reset(token)


async def append_run(store: SQLiteEventStore, app_id: str, start: int, n: int) -> None:
    for seq in range(start, start + n):
        await store.append([ev(app_id, seq)], expected_sequence=seq - 1)


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
async def test_lone_appends_of_a_sync_caller_skip_the_thread(
    tmp_path: Path, mode: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    async with SQLiteEventStore(path, synchronous=mode) as store:
        await store.append([ev("a", 0)], expected_sequence=-1)  # a new stream: the thread
        handed = count_hand_overs(store, monkeypatch)
        token = SYNC_CALLER.set(True)
        try:
            recorded = [
                (await store.append([ev("a", s)], expected_sequence=s - 1))[0] for s in (1, 2)
            ]
            await append_run(store, "a", 3, 20)
        finally:
            SYNC_CALLER.reset(token)
        assert handed == [0]  # every one written here
        assert [r.position for r in recorded] == [2, 3]
        await append_run(store, "a", 23, 2)  # not a sync caller: handed over
        assert handed == [2]
    async with SQLiteEventStore(path) as again:
        assert [e.sequence_id for e in await again.read(PK, "a")] == list(range(25))
        assert fold(await again.read(PK, "a")) == {"count": 24}
        assert await again.verify() is None


@pytest.mark.usefixtures("sync_caller")
async def test_a_sync_caller_among_concurrent_appends_loses_nothing(tmp_path: Path) -> None:
    """Appends in flight on the thread: the sync caller's go through it too, in order."""
    async with SQLiteEventStore(tmp_path / "log.db") as store:
        for i in range(10):
            await store.append([ev(f"s{i}", 0)], expected_sequence=-1)
        await asyncio.gather(*(append_run(store, f"s{i}", 1, 30) for i in range(10)))
        for i in range(10):
            assert fold(await store.read(PK, f"s{i}")) == {"count": 30}
        assert [r.position for r in await store.read_all()] == list(range(1, 311))
        assert await store.verify() is None


@action(reads=["n"], writes=["n"])
def inc(state: State) -> State:
    return state.update(n=state["n"] + 1)


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
def test_a_sync_app_commits_its_steps_on_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: Any
) -> None:
    path = tmp_path / "app.db"
    app = (
        ApplicationBuilder()
        .with_actions(inc=inc)
        .with_transitions(("inc", "inc", default))
        .with_identifiers(app_id="sync")
        .with_store(path, synchronous=mode)
        .with_state(n=0)
        .with_entrypoint("inc")
        .build()
    )
    try:
        app.step()  # the stream's first events: through the thread
        store = app.store
        assert isinstance(store, SQLiteEventStore) and store.synchronous == mode
        handed = count_hand_overs(store, monkeypatch)
        for _ in range(30):
            app.step()
        assert handed == [0]
        last = app.sequence_id
    finally:
        app.close()

    async def check() -> dict[str, Any]:
        async with SQLiteEventStore(path) as store:
            assert await store.verify() is None
            state, seq = await store.fold_stream("", "sync")
            assert seq == last
            return state

    assert asyncio.run(check())["n"] == 31
