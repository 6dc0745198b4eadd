"""Burr's own persister tests, rewritten against statelog's persisters.

The generic tests of Burr's repository (``tests/core/test_persistence.py`` for
the sync interface, ``tests/integrations/persisters/test_b_aiosqlite.py`` for
the async one: save/load, no state, list_app_ids, ``partition_key=None``,
is_initialized, context managers, the two-run end-to-end resume) with our
persisters as the fixture's backends: a SQLite log opened by path, a SQLite
store handed over, and a memory store. Burr's tests that probe its own SQLite
table (``RuntimeError`` before ``initialize()``) are replaced by the behaviour
we document instead: the log opens on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from burr.core import ApplicationBuilder, State, action

from statelog.burr import AsyncStatelogPersister, StatelogPersister
from statelog.eventstore import MemoryEventStore, SQLiteEventStore, StoreClosedError

BACKENDS = ["from_path", "sqlite_store", "memory_store"]


@pytest.fixture(params=BACKENDS)
def persistence(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StatelogPersister]:
    which = request.param
    if which == "from_path":
        persister = StatelogPersister.from_path(tmp_path / "log.db")
    elif which == "sqlite_store":
        persister = StatelogPersister(SQLiteEventStore(tmp_path / "log.db"))
    else:
        persister = StatelogPersister(MemoryEventStore())
    with persister:
        yield persister


@pytest.fixture()
def initializing_persistence(tmp_path: Path) -> Iterator[StatelogPersister]:
    with StatelogPersister.from_path(tmp_path / "log.db") as persister:
        yield persister


def test_persistence_initialization_creates_table(
    initializing_persistence: StatelogPersister, tmp_path: Path
) -> None:
    initializing_persistence.initialize()
    assert initializing_persistence.list_app_ids("partition_key") == []
    assert (tmp_path / "log.db").stat().st_size > 0


def test_persistence_saves_and_loads_state(persistence: StatelogPersister) -> None:
    persistence.initialize()
    persistence.save("partition_key", "app_id", 1, "position", State({"key": "value"}), "status")
    loaded_state = persistence.load("partition_key", "app_id")
    assert loaded_state is not None
    assert loaded_state["state"] == State({"key": "value"})
    assert loaded_state["sequence_id"] == 1
    assert loaded_state["position"] == "position"
    assert loaded_state["status"] == "status"


def test_persistence_returns_none_when_no_state(persistence: StatelogPersister) -> None:
    persistence.initialize()
    loaded_state = persistence.load("partition_key", "app_id")
    assert loaded_state is None


def test_persistence_lists_app_ids(persistence: StatelogPersister) -> None:
    persistence.initialize()
    persistence.save("partition_key", "app_id1", 1, "position", State({"key": "value"}), "status")
    persistence.save("partition_key", "app_id2", 1, "position", State({"key": "value"}), "status")
    app_ids = persistence.list_app_ids("partition_key")
    assert set(app_ids) == {"app_id1", "app_id2"}


def test_persister_list_app_ids_is_unique_and_newest_first(
    persistence: StatelogPersister,
) -> None:
    """Each app appears once, ordered by its most recent save."""
    persistence.initialize()
    for app_id, sequence_id in [("a-app", 0), ("z-app", 0), ("a-app", 1)]:
        persistence.save("pk", app_id, sequence_id, "position", State({}), "completed")
    assert persistence.list_app_ids("pk") == ["a-app", "z-app"]
    assert persistence.list_app_ids("other") == []


def test_persistence_is_initialized_false(initializing_persistence: StatelogPersister) -> None:
    assert not initializing_persistence.is_initialized()


def test_persistence_is_initialized_true(initializing_persistence: StatelogPersister) -> None:
    initializing_persistence.initialize()
    assert initializing_persistence.is_initialized()


def test_persistence_is_initialized_true_new_connection(tmp_path: Path) -> None:
    db_path = tmp_path / "test.db"
    with StatelogPersister.from_path(db_path) as p:
        p.initialize()
        assert p.is_initialized()
        with StatelogPersister.from_path(db_path) as p2:
            assert p2.is_initialized()


def test_persister_opens_the_log_on_first_use_without_initialize(tmp_path: Path) -> None:
    """Where Burr's SQLitePersister raises before ``initialize()``, the log just opens."""
    with StatelogPersister.from_path(tmp_path / "log.db") as persister:
        assert persister.list_app_ids("partition_key") == []
        assert persister.load("partition_key", "app_id") is None
        persister.save("partition_key", "app_id", 0, "position", State({"k": "v"}), "completed")
        assert persister.is_initialized()
    with StatelogPersister.from_path(tmp_path / "log.db") as again:
        loaded = again.load("partition_key", "app_id")
        assert loaded is not None and loaded["state"] == State({"k": "v"})


NONE_PARTITION_KEY_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("list_app_ids", {"partition_key": None}),
    ("load", {"partition_key": None, "app_id": "foo"}),
    (
        "save",
        {
            "partition_key": None,
            "app_id": "foo",
            "sequence_id": 1,
            "position": "position",
            "state": State({"key": "value"}),
            "status": "status",
        },
    ),
]


@pytest.mark.parametrize(("method_name", "kwargs"), NONE_PARTITION_KEY_CALLS)
def test_persister_methods_none_partition_key(
    persistence: StatelogPersister, method_name: str, kwargs: dict[str, Any]
) -> None:
    persistence.initialize()
    method = getattr(persistence, method_name)
    # method can be executed with `partition_key=None`
    method(**kwargs)


def test_none_partition_key_is_the_default_partition(persistence: StatelogPersister) -> None:
    """What Burr's test leaves open: ``None`` and ``""`` name the same partition."""
    persistence.save(None, "foo", 0, "position", State({"key": "value"}), "completed")
    assert persistence.list_app_ids(None) == ["foo"]
    assert persistence.list_app_ids("") == ["foo"]
    from_empty = persistence.load("", "foo")
    from_none = persistence.load(None, "foo")
    assert from_empty is not None and from_none is not None
    assert from_none["partition_key"] == ""
    assert from_none["state"] == from_empty["state"] == State({"key": "value"})
    assert persistence.load(None, None) is None


# --- the async interface (Burr's tests/integrations/persisters/test_b_aiosqlite.py)


@pytest.fixture(params=BACKENDS)
async def async_persistence(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncStatelogPersister]:
    which = request.param
    if which == "from_path":
        async with AsyncStatelogPersister.from_path(tmp_path / "log.db") as persister:
            yield persister
    elif which == "sqlite_store":
        async with SQLiteEventStore(tmp_path / "log.db") as store:
            async with AsyncStatelogPersister(store) as persister:
                yield persister
            # a store handed to the async persister stays the caller's: still open
            assert await store.last_sequence("partition_key", "app_id") >= -1
    else:
        async with MemoryEventStore() as store, AsyncStatelogPersister(store) as persister:
            yield persister


@pytest.fixture()
async def initializing_async_persistence(tmp_path: Path) -> AsyncIterator[AsyncStatelogPersister]:
    async with AsyncStatelogPersister.from_path(tmp_path / "log.db") as client:
        yield client


async def test_async_persistence_saves_and_loads_state(
    async_persistence: AsyncStatelogPersister,
) -> None:
    await asyncio.sleep(0.00001)
    await async_persistence.initialize()
    await async_persistence.save(
        "partition_key", "app_id", 1, "position", State({"key": "value"}), "status"
    )
    loaded_state = await async_persistence.load("partition_key", "app_id")
    assert loaded_state is not None
    assert loaded_state["state"] == State({"key": "value"})


async def test_async_persistence_returns_none_when_no_state(
    async_persistence: AsyncStatelogPersister,
) -> None:
    await async_persistence.initialize()
    loaded_state = await async_persistence.load("partition_key", "app_id")
    assert loaded_state is None


async def test_async_persistence_lists_app_ids(async_persistence: AsyncStatelogPersister) -> None:
    await async_persistence.initialize()
    await async_persistence.save(
        "partition_key", "app_id1", 1, "position", State({"key": "value"}), "status"
    )
    await async_persistence.save(
        "partition_key", "app_id2", 1, "position", State({"key": "value"}), "status"
    )
    app_ids = await async_persistence.list_app_ids("partition_key")
    assert set(app_ids) == {"app_id1", "app_id2"}


@pytest.mark.parametrize(("method_name", "kwargs"), NONE_PARTITION_KEY_CALLS)
async def test_async_persister_methods_none_partition_key(
    async_persistence: AsyncStatelogPersister, method_name: str, kwargs: dict[str, Any]
) -> None:
    await async_persistence.initialize()
    method = getattr(async_persistence, method_name)
    # method can be executed with `partition_key=None`
    await method(**kwargs)


async def test_async_from_path_as_context_manager(tmp_path: Path) -> None:
    async with AsyncStatelogPersister.from_path(tmp_path / "test.db") as persister:
        await persister.initialize()
        await persister.save("pk", "app1", 1, "pos", State({"k": "v"}), "completed")
        loaded = await persister.load("pk", "app1")
        assert loaded is not None
        assert loaded["state"] == State({"k": "v"})
    with pytest.raises(StoreClosedError):
        await persister.store.last_sequence("pk", "app1")


async def test_async_persister_connection_shutdown(tmp_path: Path) -> None:
    persister = AsyncStatelogPersister.from_path(tmp_path / "test.db")
    await persister.initialize()
    await persister.close()
    with pytest.raises(StoreClosedError):
        await persister.store.last_sequence("pk", "app1")
    await persister.aclose()  # idempotent


async def test_async_persistence_initialization_creates_table(
    initializing_async_persistence: AsyncStatelogPersister,
) -> None:
    await initializing_async_persistence.initialize()
    assert await initializing_async_persistence.list_app_ids("partition_key") == []


async def test_async_persistence_is_initialized_false(
    initializing_async_persistence: AsyncStatelogPersister,
) -> None:
    assert not await initializing_async_persistence.is_initialized()


async def test_async_persistence_is_initialized_true(
    initializing_async_persistence: AsyncStatelogPersister,
) -> None:
    await initializing_async_persistence.initialize()
    assert await initializing_async_persistence.is_initialized()


async def test_async_persistence_is_initialized_true_new_connection(tmp_path: Path) -> None:
    db_path = tmp_path / "test.db"
    async with AsyncStatelogPersister.from_path(db_path) as p:
        await p.initialize()
        async with AsyncStatelogPersister.from_path(db_path) as p2:
            assert await p.is_initialized()
            assert await p2.is_initialized()


@action(reads=[], writes=["prompt", "chat_history"])
async def dummy_input(state: State) -> tuple[dict[str, Any], State]:
    await asyncio.sleep(0.0001)
    new = state["chat_history"][-1] + 1 if state["chat_history"] else 1
    return ({"prompt": "PROMPT"}, state.update(prompt="PROMPT").append(chat_history=new))


@action(reads=["chat_history"], writes=["response", "chat_history"])
async def dummy_response(state: State) -> tuple[dict[str, Any], State]:
    await asyncio.sleep(0.0001)
    new = state["chat_history"][-1] + 1 if state["chat_history"] else 1
    return ({"response": "RESPONSE"}, state.update(response="RESPONSE").append(chat_history=new))


async def _chat_app(persister: AsyncStatelogPersister) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(dummy_input, dummy_response)
        .with_transitions(("dummy_input", "dummy_response"), ("dummy_response", "dummy_input"))
        .initialize_from(
            initializer=persister,
            resume_at_next_action=True,
            default_state={"chat_history": []},
            default_entrypoint="dummy_input",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="test_1", partition_key="sqlite")
        .abuild()
    )


async def test_async_save_and_load_from_persister_end_to_end(tmp_path: Path) -> None:
    db_path = tmp_path / "test.db"
    async with AsyncStatelogPersister.from_path(db_path) as persister:
        await persister.initialize()
        app = await _chat_app(persister)
        *_, state = await app.arun(halt_after=["dummy_response"])
        assert state["chat_history"][0] == 1
        assert state["chat_history"][1] == 2

    async with AsyncStatelogPersister.from_path(db_path) as persister_2:
        await persister_2.initialize()
        new_app = await _chat_app(persister_2)
        assert new_app.state["chat_history"][0] == 1
        assert new_app.state["chat_history"][1] == 2

        *_, state = await new_app.arun(halt_after=["dummy_response"])
        assert state["chat_history"][2] == 3
        assert state["chat_history"][3] == 4

    # the log: one event per step, dense, Burr's sequence ids
    async with SQLiteEventStore(db_path) as store:
        events = await store.read("sqlite", "test_1")
    assert [e.sequence_id for e in events] == [0, 1, 2, 3]
    assert [e.action for e in events] == ["dummy_input", "dummy_response"] * 2
    assert all(e.kind == "action_completed" and e.result is None for e in events)


# --- the sync end to end: Burr's build() path, two runs on one log


@action(reads=[], writes=["prompt", "chat_history"])
def sync_input(state: State) -> tuple[dict[str, Any], State]:
    new = state["chat_history"][-1] + 1 if state["chat_history"] else 1
    return ({"prompt": "PROMPT"}, state.update(prompt="PROMPT").append(chat_history=new))


@action(reads=["chat_history"], writes=["response", "chat_history"])
def sync_response(state: State) -> tuple[dict[str, Any], State]:
    new = state["chat_history"][-1] + 1
    return ({"response": "RESPONSE"}, state.update(response="RESPONSE").append(chat_history=new))


def _sync_chat_app(persister: StatelogPersister) -> Any:
    return (
        ApplicationBuilder()
        .with_actions(sync_input, sync_response)
        .with_transitions(("sync_input", "sync_response"), ("sync_response", "sync_input"))
        .initialize_from(
            initializer=persister,
            resume_at_next_action=True,
            default_state={"chat_history": []},
            default_entrypoint="sync_input",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="test_1", partition_key="sqlite")
        .build()
    )


def test_sync_save_and_load_from_persister_end_to_end(tmp_path: Path) -> None:
    db_path = tmp_path / "test.db"
    with StatelogPersister.from_path(db_path) as persister:
        persister.initialize()
        *_, state = _sync_chat_app(persister).run(halt_after=["sync_response"])
        assert state["chat_history"] == [1, 2]
    with StatelogPersister.from_path(db_path) as persister_2:
        new_app = _sync_chat_app(persister_2)
        assert new_app.state["chat_history"] == [1, 2]
        *_, state = new_app.run(halt_after=["sync_response"])
        assert state["chat_history"] == [1, 2, 3, 4]
        loaded = persister_2.load("sqlite", "test_1")
        assert loaded is not None
        assert loaded["sequence_id"] == 3 and loaded["position"] == "sync_response"
        assert loaded["state"]["chat_history"] == [1, 2, 3, 4]
