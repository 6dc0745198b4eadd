"""What a Burr app leaves in statelog's log: deltas, kinds, sequence ids, forks, rewinds.

Also the sync persister's thread (never inside a running loop, never keeping a
process alive) and the CLI reading a log a Burr app wrote.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from burr.core import ApplicationBuilder, State, action, default, expr
from burr.core.state import FIELD_SERIALIZATION, register_field_serde

from statelog.burr import AsyncStatelogPersister, StatelogPersister, burr_state_delta
from statelog.eventstore import (
    EncodingError,
    Event,
    SQLiteEventStore,
    UsageError,
    apply_ops,
    fold,
)
from statelog.eventstore._ops import json_equal
from tests.ops_support import deletes_of, writes_of

ROOT = Path(__file__).resolve().parents[2]


def read_events(db: Path, app_id: str, partition_key: str = "") -> list[Event]:
    async def go() -> list[Event]:
        async with SQLiteEventStore(db) as store:
            return await store.read(partition_key, app_id)

    return asyncio.run(go())


# --- the delta, a pure function


def _set(key: str, value: Any) -> dict[str, Any]:
    return {"op": "set", "key": key, "value": value}


@pytest.mark.parametrize(
    ("previous", "current", "ops"),
    [
        ({}, {"a": 1}, [_set("a", 1)]),
        # an appended item costs the item, not the list
        ({"a": 1, "b": [1]}, {"a": 1, "b": [1, 2]}, [{"op": "append", "key": "b", "value": 2}]),
        ({"b": [1]}, {"b": [1, 2, 3]}, [{"op": "extend", "key": "b", "values": [2, 3]}]),
        ({"b": [1, 2]}, {"b": [2]}, [_set("b", [2])]),
        (
            {"d": {"x": 1, "y": 2}},
            {"d": {"x": 1, "y": 3}},
            [{"op": "merge", "key": "d", "value": {"y": 3}}],
        ),
        ({"a": 1, "b": 2}, {"a": 1}, [{"op": "delete", "key": "b"}]),
        ({"a": {"x": [1, {"y": 2}]}}, {"a": {"x": [1, {"y": 2}]}}, []),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 2, "x": 1}}, []),
        # equal in Python, not once stored: 1, 1.0 and True are three values
        ({"a": 1}, {"a": True}, [_set("a", True)]),
        ({"a": 1}, {"a": 1.0}, [_set("a", 1.0)]),
        ({"a": [1, 0]}, {"a": [True, False]}, [_set("a", [True, False])]),
        ({"a": [1]}, {"a": [True, 2]}, [_set("a", [True, 2])]),
        ({"a": {"k": 1}}, {"a": {"k": 1.0}}, [_set("a", {"k": 1.0})]),
        (
            {"a": None, "b": "x"},
            {"b": "y", "c": None},
            [_set("b", "y"), _set("c", None), {"op": "delete", "key": "a"}],
        ),
    ],
)
def test_burr_state_delta(
    previous: dict[str, Any], current: dict[str, Any], ops: list[dict[str, Any]]
) -> None:
    got = burr_state_delta(previous, current)
    assert got == ops
    assert msgspec.json.encode(got) == msgspec.json.encode(ops)  # 1, 1.0 and True kept apart
    state = dict(previous)
    apply_ops(state, got, set())
    assert state.keys() == current.keys()
    assert all(json_equal(state[key], value) for key, value in current.items())


# --- one Burr app, one stream


@action(reads=["counter"], writes=["counter", "trail"])
def count(state: State) -> State:
    return state.update(counter=state["counter"] + 1).append(trail=state["counter"])


@action(reads=["counter"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)


@action(reads=["counter"], writes=[])
def explode(state: State) -> State:
    raise ValueError("boom")


def counter_app(persister: StatelogPersister, app_id: str, **initialize: Any) -> Any:
    builder = (
        ApplicationBuilder()
        .with_actions(count=count, finish=finish)
        .with_transitions(("count", "count", expr("counter < 3")), ("count", "finish", default))
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"counter": 0, "trail": []},
            default_entrypoint="count",
            **{k: v for k, v in initialize.items() if k.startswith("fork_")},
        )
        .with_state_persister(persister)
        .with_identifiers(
            app_id=app_id, partition_key="pk", sequence_id=initialize.get("sequence_id")
        )
    )
    return builder.build()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "burr.db"


@pytest.fixture()
def persister(db: Path) -> Iterator[StatelogPersister]:
    with StatelogPersister.from_path(db) as p:
        p.initialize()
        yield p


def test_each_save_is_one_event_with_the_delta(persister: StatelogPersister, db: Path) -> None:
    *_, state = counter_app(persister, "app").run(halt_after=["finish"])
    assert state["counter"] == 3 and state["done"] is True
    events = read_events(db, "app", "pk")
    assert [e.sequence_id for e in events] == [0, 1, 2, 3]
    assert [e.action for e in events] == ["count", "count", "count", "finish"]
    assert [e.kind for e in events] == ["action_completed"] * 4
    assert all(e.result is None for e in events)  # Burr's ids are the offsets
    # only what changed: the first save carries the whole state, then deltas
    assert set(writes_of(events[0])) == {"counter", "trail", "__SEQUENCE_ID", "__PRIOR_STEP"}
    assert set(writes_of(events[1])) == {"counter", "__SEQUENCE_ID"}
    assert events[1].ops[1] == {"op": "append", "key": "trail", "value": 1}  # the item only
    assert set(writes_of(events[3])) == {"done", "__SEQUENCE_ID", "__PRIOR_STEP"}
    assert fold(events) == state.serialize()
    for n in range(4):
        at_n = persister.load("pk", "app", n)
        assert at_n is not None and at_n["sequence_id"] == n
        assert at_n["state"].serialize() == fold(events[: n + 1])


def test_a_failed_step_is_an_action_failed_event(persister: StatelogPersister, db: Path) -> None:
    app = (
        ApplicationBuilder()
        .with_actions(count=count, explode=explode)
        .with_transitions(("count", "explode"))
        .with_state(counter=0, trail=[])
        .with_entrypoint("count")
        .with_state_persister(persister)
        .with_identifiers(app_id="fails")
        .build()
    )
    with pytest.raises(ValueError, match="boom"):
        app.run(halt_after=["explode"])
    events = read_events(db, "fails")
    assert [(e.kind, e.action, e.next_action) for e in events] == [
        ("action_completed", "count", None),
        ("action_failed", "explode", "explode"),
    ]
    loaded = persister.load(None, "fails")
    assert loaded is not None
    assert (loaded["status"], loaded["position"], loaded["sequence_id"]) == ("failed", "explode", 1)
    # the state of a failed step is the state before it, as Burr saves it
    assert loaded["state"]["counter"] == 1


def test_a_fork_starts_a_dense_stream_that_keeps_burrs_numbers(
    persister: StatelogPersister, db: Path
) -> None:
    counter_app(persister, "parent").run(halt_after=["finish"])
    fork = counter_app(
        persister,
        "child",
        fork_from_app_id="parent",
        fork_from_partition_key="pk",
        fork_from_sequence_id=1,
    )
    assert fork.state["counter"] == 2
    *_, state = fork.run(halt_after=["finish"])
    assert state["counter"] == 3
    events = read_events(db, "child", "pk")
    # Burr goes on counting from the parent's step 1; the stream starts at 0
    assert [e.sequence_id for e in events] == [0, 1]
    assert [e.result for e in events] == [{"burr_sequence_id": 2}, {"burr_sequence_id": 3}]
    assert set(writes_of(events[0])) >= {"counter", "trail"}  # a fork's first event: all of it
    loaded = persister.load("pk", "child")
    assert loaded is not None and loaded["sequence_id"] == 3
    at_2 = persister.load("pk", "child", 2)
    assert at_2 is not None and at_2["state"]["counter"] == 3 and at_2["position"] == "count"
    assert persister.load("pk", "child", 0) is None  # Burr never numbered a save 0 here
    # and the fork resumes where it stopped
    assert counter_app(persister, "child").state["done"] is True


def test_a_rewind_appends_and_load_finds_the_latest(persister: StatelogPersister, db: Path) -> None:
    counter_app(persister, "app").run(halt_after=["finish"])
    rewound = counter_app(persister, "app", sequence_id=0)
    assert rewound.state["counter"] == 1
    *_, state = rewound.run(halt_after=["finish"])
    events = read_events(db, "app", "pk")
    assert [e.sequence_id for e in events] == list(range(7))  # dense: nothing rewritten
    assert [e.result for e in events[4:]] == [
        {"burr_sequence_id": 1},
        {"burr_sequence_id": 2},
        {"burr_sequence_id": 3},
    ]
    assert fold(events) == state.serialize()
    again = persister.load("pk", "app", 1)
    assert again is not None and again["state"].serialize() == fold(events[:5])


def test_two_writers_of_one_app_each_append_a_correct_delta(db: Path) -> None:
    with StatelogPersister.from_path(db) as one, StatelogPersister.from_path(db) as two:
        one.save("", "app", 0, "a", State({"a": 1}), "completed")
        two.save("", "app", 1, "b", State({"a": 1, "b": 2}), "completed")
        # ``one`` is behind the stream; its delta is taken again from the new head
        one.save("", "app", 2, "c", State({"a": 5}), "completed")
        events = read_events(db, "app")
        assert [(writes_of(e), deletes_of(e)) for e in events] == [
            ({"a": 1}, []),
            ({"b": 2}, []),
            ({"a": 5}, ["b"]),
        ]
        loaded = two.load("", "app")
        assert loaded is not None and loaded["state"] == State({"a": 5})


def test_custom_field_serde_and_serde_kwargs_are_used(db: Path) -> None:
    def serialize(value: datetime, *, offset: int = 0, **kwargs: Any) -> dict[str, Any]:
        return {"iso": value.isoformat(), "offset": offset}

    def deserialize(value: dict[str, Any], **kwargs: Any) -> datetime:
        return datetime.fromisoformat(value["iso"])

    register_field_serde("when", serialize, deserialize)
    try:
        moment = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
        with StatelogPersister.from_path(db, serde_kwargs={"offset": 7}) as p:
            p.save("", "app", 0, "a", State({"when": moment}), "completed")
            loaded = p.load("", "app")
        assert loaded is not None and loaded["state"]["when"] == moment
        assert writes_of(read_events(db, "app")[0]) == {
            "when": {"iso": "2024-05-01T12:30:00+00:00", "offset": 7}
        }
    finally:
        FIELD_SERIALIZATION.pop("when", None)


def test_state_that_is_not_json_is_refused_with_its_key(
    persister: StatelogPersister, db: Path
) -> None:
    with pytest.raises(EncodingError, match="nope") as caught:
        persister.save("", "app", 0, "a", State({"ok": 1, "nope": [math.nan]}), "completed")
    assert caught.value.path == "$.nope[0]"
    assert persister.load("", "app") is None


# --- the sync persister's thread


async def test_the_sync_persister_refuses_a_running_loop(persister: StatelogPersister) -> None:
    with pytest.raises(UsageError, match="AsyncStatelogPersister"):
        persister.load("", "app")
    with pytest.raises(UsageError, match="running event loop"):
        persister.save("", "app", 0, "a", State({"a": 1}), "completed")


def test_a_closed_sync_persister_refuses_calls(db: Path) -> None:
    p = StatelogPersister.from_path(db)
    p.close()
    p.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        p.load("", "app")


def test_an_unclosed_sync_persister_does_not_keep_the_process_alive(db: Path) -> None:
    script = textwrap.dedent(
        f"""
        from burr.core import State
        from statelog.burr import StatelogPersister

        p = StatelogPersister.from_path({str(db)!r})
        p.save("", "app", 0, "a", State({{"a": 1}}), "completed")
        print("saved", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "saved\n"
    assert [writes_of(e) for e in read_events(db, "app")] == [{"a": 1}]


# --- the CLI reads a Burr app's log


def test_statelog_cli_verifies_and_shows_a_burr_apps_log(
    persister: StatelogPersister, db: Path
) -> None:
    counter_app(persister, "app").run(halt_after=["finish"])
    cli = [sys.executable, "-m", "statelog"]
    verify = subprocess.run([*cli, "verify", "--db", str(db)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "4 events" in verify.stdout
    history = subprocess.run(
        [*cli, "history", "app", "--db", str(db), "--partition-key", "pk"],
        capture_output=True,
        text=True,
    )
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("action_completed") == 4
    assert "finish" in history.stdout


async def test_the_async_persister_writes_the_same_log(db: Path) -> None:
    async with AsyncStatelogPersister.from_path(db) as p:
        await p.save(None, "app", 0, "a", State({"a": 1, "b": [1]}), "completed")
        await p.save(None, "app", 1, "b", State({"a": 1, "b": [1, 2]}), "failed")
        events = await p.store.read("", "app")
        assert [(e.kind, e.ops) for e in events] == [
            ("action_completed", [_set("a", 1), _set("b", [1])]),
            ("action_failed", [{"op": "append", "key": "b", "value": 2}]),
        ]
