"""Parallel map: children are streams linked to the parent; resume never re-runs done ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from statelog.engine import ActionError, ApplicationBuilder, State, action, parallel_map
from statelog.eventstore import EventKind, MemoryEventStore, fold
from tests.ops_support import writes_of

RUNS: dict[str, int] = {}
BEHAVIOUR: dict[str, Any] = {}


class Crash(BaseException):
    """Stands for the process dying mid-step: nothing catches it, nothing is recorded."""


@action(reads=["item"], writes=["doubled"])
async def double(state: State) -> State:
    item = state["item"]
    RUNS[f"double{item}"] = RUNS.get(f"double{item}", 0) + 1
    RUNS["active"] = RUNS.get("active", 0) + 1
    RUNS["peak"] = max(RUNS.get("peak", 0), RUNS["active"])
    await asyncio.sleep(BEHAVIOUR.get("sleep", 0))
    RUNS["active"] -= 1
    return state.update(doubled=item * 2)


@action(reads=["doubled"], writes=["label"])
def label(state: State) -> State:
    item = state["item"]
    RUNS[f"label{item}"] = RUNS.get(f"label{item}", 0) + 1
    if item in BEHAVIOUR.get("crash", ()):
        raise Crash()
    if item in BEHAVIOUR.get("fail", ()):
        raise ValueError(f"cannot label {item}")
    return state.update(label=f"#{state['doubled']}")


@action(reads=[], writes=["items"])
def load(state: State) -> State:
    return state.update(items=[1, 2, 3, 4])


@action(reads=["labels"], writes=["done"])
def report(state: State) -> State:
    return state.update(done=len(state["labels"]))


def builder(store: Any, limit: int = 2) -> ApplicationBuilder:
    fan_out = parallel_map(
        actions={"double": double, "label": label},
        transitions=[("double", "label")],
        entrypoint="double",
        items="items",
        result_key="label",
        writes=["labels"],
        max_concurrency=limit,
    )
    return (
        ApplicationBuilder()
        .with_actions(load=load, fan_out=fan_out, report=report)
        .with_transitions(("load", "fan_out"), ("fan_out", "report"))
        .with_identifiers(app_id="parent", partition_key="tenant")
        .with_store(store)
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    BEHAVIOUR.clear()


async def test_children_are_linked_streams_and_results_are_reduced_in_order() -> None:
    store = MemoryEventStore()
    app = await builder(store).with_state().with_entrypoint("load").abuild()
    async with app:
        result = await app.arun()
    assert result.action == "report"
    assert app.state["labels"] == ["#2", "#4", "#6", "#8"]
    parent = await store.read("tenant", "parent")
    step = [e for e in parent if e.kind == EventKind.ACTION_COMPLETED][1]
    assert step.action == "fan_out"
    done = [e for e in parent if e.kind == EventKind.CHILD_COMPLETED]
    assert sorted(e.data["index"] for e in done) == [0, 1, 2, 3]
    assert {e.data["child"] for e in done} == set(step.result)
    assert writes_of(step) == {"labels": ["#2", "#4", "#6", "#8"]}
    children = step.result
    assert children == [f"parent.fan_out.3.{i}" for i in range(4)]
    for index, child in enumerate(children):
        events = await store.read("tenant", child)
        first = events[0]
        assert first.kind == EventKind.APP_INITIALIZED
        assert first.parent is not None
        assert (first.parent.app_id, first.parent.sequence_id, first.parent.relation) == (
            "parent",
            3,
            "child",
        )
        assert fold(events)["label"] == f"#{(index + 1) * 2}"
    assert await store.verify() is None


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_children_overlap_up_to_the_limit(limit: int) -> None:
    BEHAVIOUR["sleep"] = 0.02
    store = MemoryEventStore()
    app = await builder(store, limit=limit).with_state().with_entrypoint("load").abuild()
    async with app:
        await app.arun(halt_after=["fan_out"])
    assert RUNS["peak"] == limit  # children really run at once, never more than the limit


async def test_resume_after_a_crash_does_not_rerun_completed_children() -> None:
    BEHAVIOUR["crash"] = {3}
    store = MemoryEventStore()
    app = await builder(store).with_state().with_entrypoint("load").abuild()
    with pytest.raises(Crash):
        await app.arun()
    await app.aclose()
    # the parent wrote nothing for the step; child 2 (item 3) stopped after `double`
    parent = await store.read("tenant", "parent")
    # initialized, run_started, load, then a child_completed per child that finished
    assert [e.kind for e in parent][:3] == ["app_initialized", "run_started", "action_completed"]
    assert {e.kind for e in parent[3:]} <= {EventKind.CHILD_COMPLETED}
    assert RUNS["double3"] == 1 and RUNS["label3"] == 1
    before = dict(RUNS)

    BEHAVIOUR.clear()
    resumed = await builder(store).initialize_from(default_entrypoint="load").abuild()
    async with resumed:
        assert resumed.position == "fan_out"
        await resumed.arun()
    assert resumed.state["labels"] == ["#2", "#4", "#6", "#8"]
    # completed children were not run again; the partial one resumed at `label`
    for item in (1, 2, 4):
        assert RUNS[f"double{item}"] == before[f"double{item}"]
        assert RUNS.get(f"label{item}", 0) == before.get(f"label{item}", 0) + (
            0 if f"label{item}" in before else 1
        )
    assert RUNS["double3"] == 1
    assert RUNS["label3"] == 2
    streams = {s.app_id for s in await store.streams("tenant")}
    assert streams == {"parent"} | {f"parent.fan_out.3.{i}" for i in range(4)}
    assert await store.verify() is None


async def test_a_failed_child_fails_the_step_and_the_retry_reuses_the_children() -> None:
    BEHAVIOUR["fail"] = {2}
    store = MemoryEventStore()
    app = await builder(store).with_state().with_entrypoint("load").abuild()
    async with app:
        with pytest.raises(ActionError, match="child 1"):
            await app.arun()
        assert app.position == "fan_out"
        failed = (await store.read("tenant", "parent"))[-1]
        assert failed.kind == EventKind.ACTION_FAILED
        assert failed.attempt == 1
        done_before = dict(RUNS)
        BEHAVIOUR.clear()
        await app.arun()
    # the retry (sequence 5, after run_started) used the children of the first attempt
    # (origin 3: the sequence after the last completed step)
    parent = await store.read("tenant", "parent")
    step = [e for e in parent if e.kind == EventKind.ACTION_COMPLETED][-2]  # then report
    assert step.action == "fan_out"
    assert step.result == [f"parent.fan_out.3.{i}" for i in range(4)]
    assert RUNS["double1"] == done_before["double1"] == 1
    assert RUNS["label2"] == 2
    assert app.state["labels"] == ["#2", "#4", "#6", "#8"]


async def test_a_later_round_gets_fresh_children() -> None:
    store = MemoryEventStore()
    fan_out = parallel_map(
        actions={"double": double, "label": label},
        transitions=[("double", "label")],
        entrypoint="double",
        items="items",
        result_key="label",
        writes=["labels"],
    )
    app = await (
        ApplicationBuilder()
        .with_actions(load=load, fan_out=fan_out)
        .with_transitions(("load", "fan_out"), ("fan_out", "load"))
        .with_identifiers(app_id="loop")
        .with_store(store)
        .with_state()
        .with_entrypoint("load")
        .abuild()
    )
    async with app:
        for _ in range(4):
            await app.astep()
    events = await store.read("", "loop")
    maps = [e for e in events if e.kind == EventKind.ACTION_COMPLETED and e.action == "fan_out"]
    assert maps[0].result != maps[1].result
    assert RUNS["double1"] == 2
