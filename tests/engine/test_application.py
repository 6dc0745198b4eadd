"""Application and builder: events per step, resume, fork, hooks, durability, misuse."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog.engine import (
    ActionError,
    Application,
    ApplicationBuilder,
    HookError,
    PostStepHook,
    PostStepHookAsync,
    PreStepHook,
    State,
    StateError,
    TransitionError,
    action,
    default,
    when,
)
from statelog.eventstore import (
    ConcurrencyError,
    ConfigError,
    EncodingError,
    Event,
    EventKind,
    MemoryEventStore,
    SnapshotStore,
    SQLiteEventStore,
    StoreError,
    UsageError,
    fold,
    load_state,
)
from tests.ops_support import writes_of
from tests.thread_support import assert_threads_end

# --------------------------------------------------------------------------- stores


@pytest.fixture(params=["memory", "sqlite"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "memory":
        yield MemoryEventStore()
        return
    async with await SQLiteEventStore.open(tmp_path / "app.db") as store:
        yield store


# --------------------------------------------------------------------------- a small graph


@action(reads=["n"], writes=["n"])
def count(state: State) -> State:
    return state.increment(n=1)


@action(reads=["n"], writes=["parity"])
def classify(state: State) -> tuple[dict[str, Any], State]:
    parity = "even" if state["n"] % 2 == 0 else "odd"
    return {"parity": parity}, state.update(parity=parity)


@action(reads=["n"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)


def counter_builder(store: Any, app_id: str = "app", limit: int = 5) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(count=count, classify=classify, finish=finish)
        .with_transitions(
            ("count", "classify"),
            ("classify", "finish", when(n=limit)),
            ("classify", "count", default),
        )
        .with_identifiers(app_id=app_id)
        .with_store(store)
    )


async def new_app(store: Any, app_id: str = "app", **state: Any) -> Application:
    return (
        await counter_builder(store, app_id)
        .with_state(n=0, **state)
        .with_entrypoint("count")
        .abuild()
    )


# --------------------------------------------------------------------------- events per step


async def test_run_writes_one_event_per_step_with_only_the_delta(any_store: Any) -> None:
    store = any_store
    async with await new_app(store, pad="x" * 1000) as app:
        last = await app.arun()
    assert last.action == "finish"
    assert last.state["done"] is True
    events = await store.read("", "app")
    assert [e.sequence_id for e in events] == list(range(len(events)))
    assert events[0].kind == EventKind.APP_INITIALIZED
    assert writes_of(events[0]) == {"n": 0, "pad": "x" * 1000}
    assert events[0].next_action == "count"
    assert events[1].kind == EventKind.RUN_STARTED
    assert events[1].data == {"graph": app.graph_fingerprint}
    assert events[-1].kind == EventKind.COMPLETED
    for event in events[2:-1]:
        assert event.kind == EventKind.ACTION_COMPLETED
        assert "pad" not in writes_of(event)  # the delta, never the whole state
    second = events[3]
    assert second.action == "classify"
    assert writes_of(second) == {"parity": "odd"}
    assert second.result == {"parity": "odd"}
    assert second.next_action == "count"
    assert events[-1].next_action is None and events[-2].next_action is None
    assert app.position is None
    assert app.sequence_id == events[-1].sequence_id
    assert await store.verify() is None
    assert fold(events) == app.state.get_all()


async def test_step_returns_none_once_the_app_is_done() -> None:
    store = MemoryEventStore()
    async with await new_app(store) as app:
        await app.arun()
        seq = app.sequence_id
        assert await app.astep() is None
        assert app.sequence_id == seq


async def test_halt_before_and_after() -> None:
    store = MemoryEventStore()
    async with await new_app(store) as app:
        result = await app.arun(halt_after=["classify"])
        assert result.action == "classify"
        assert app.position == "count"
        result = await app.arun(halt_before=["classify"])
        assert result.action == "count"
        assert app.position == "classify"
        with pytest.raises(ConfigError, match="halt_after: cannot halt at 'nope'"):
            await app.arun(halt_after=["nope"])


async def test_aiterate_and_astream() -> None:
    store = MemoryEventStore()
    async with await new_app(store) as app:
        steps = [step async for step in app.aiterate(halt_after=["classify"])]
        assert [s.action for s in steps] == ["count", "classify"]
        events = [e async for e in app.astream()]
        assert events[-1].next_action is None
        # 0 app_initialized, 1 run_started, 2-3 steps, 4 halted, 5 run_started
        assert [e.sequence_id for e in events] == list(range(6, 6 + len(events)))


@action(reads=["n"], writes=["n"])
def add(state: State, amount: int) -> State:
    return state.increment(n=amount)


async def test_inputs_are_recorded() -> None:
    store = MemoryEventStore()
    app = await (
        ApplicationBuilder()
        .with_actions(add=add)
        .with_transitions(("add", "add"))
        .with_state(n=0)
        .with_entrypoint("add")
        .with_identifiers(app_id="in")
        .with_store(store)
        .abuild()
    )
    async with app:
        await app.astep(inputs={"amount": 5})
        await app.astep(inputs={"amount": 2})
    events = await store.read("", "in")
    assert [e.inputs for e in events[1:]] == [{"amount": 5}, {"amount": 2}]
    assert app.state["n"] == 7


# --------------------------------------------------------------------------- the fold law

ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "del", "inc", "append"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(-5, 5),
    ),
    min_size=1,
    max_size=25,
)


@action(reads=[], writes=["a", "b", "c", "d"])
def apply_op(state: State, op: str, key: str, value: int) -> State:
    if op == "set":
        return state.update(**{key: value})
    if op == "del":
        return state.wipe(delete=[key]) if key in state else state
    if op == "inc":
        current = state.get(key)
        return state.update(**{key: (current if isinstance(current, int) else 0) + value})
    current = state.get(key)
    items = current if isinstance(current, list) else []
    return state.update(**{key: [*items, value]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_fold_of_all_events_equals_the_state_after_the_run(steps: list[Any]) -> None:
    async def scenario() -> None:
        store = MemoryEventStore()
        app = await (
            ApplicationBuilder()
            .with_actions(apply_op=apply_op)
            .with_transitions(("apply_op", "apply_op"))
            .with_state(a=1)
            .with_entrypoint("apply_op")
            .with_identifiers(app_id="law")
            .with_store(store)
            .abuild()
        )
        async with app:
            for op, key, value in steps:
                await app.astep(inputs={"op": op, "key": key, "value": value})
        events = await store.read("", "law")
        assert fold(events) == app.state.get_all()
        assert len(events) == len(steps) + 1

    asyncio.run(scenario())


# --------------------------------------------------------------------------- failures, resume

FLAKY: dict[str, int] = {}


@action(reads=["n"], writes=["n"])
def flaky(state: State) -> State:
    FLAKY["calls"] = FLAKY.get("calls", 0) + 1
    if FLAKY.get("fail", 0) > 0:
        FLAKY["fail"] -= 1
        raise ConnectionError("upstream is down")
    return state.increment(n=10)


def flaky_builder(store: Any) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(count=count, flaky=flaky, finish=finish)
        .with_transitions(("count", "flaky"), ("flaky", "finish"))
        .with_identifiers(app_id="flaky")
        .with_store(store)
    )


async def test_failed_step_writes_action_failed_and_keeps_state(any_store: Any) -> None:
    FLAKY.clear()
    FLAKY["fail"] = 1
    store = any_store
    app = await flaky_builder(store).with_state(n=0).with_entrypoint("count").abuild()
    async with app:
        await app.astep()
        with pytest.raises(ActionError) as caught:
            await app.astep()
        assert isinstance(caught.value.__cause__, ConnectionError)
        assert caught.value.sequence_id == 2
        assert app.state["n"] == 1
        assert app.position == "flaky"
        assert app.sequence_id == 2
    failed = (await store.read("", "flaky"))[-1]
    assert failed.kind == EventKind.ACTION_FAILED
    assert failed.error is not None
    assert failed.error.type == "ConnectionError"
    assert failed.error.message == "upstream is down"
    assert failed.ops == []
    assert failed.error.traceback and "test_application.py" in failed.error.traceback[-1]
    assert failed.next_action == "flaky"

    # resume: a failed position re-runs the failed action
    resumed = (
        await flaky_builder(store)
        .initialize_from(default_state={"n": 0}, default_entrypoint="count")
        .abuild()
    )
    async with resumed:
        assert resumed.position == "flaky"
        assert resumed.sequence_id == 2
        assert resumed.state["n"] == 1
        result = await resumed.arun()
    assert result.action == "finish"
    assert resumed.state["n"] == 11
    events = await store.read("", "flaky")
    assert [e.sequence_id for e in events] == list(range(len(events)))
    assert await store.verify() is None


async def test_resume_continues_at_the_next_action(any_store: Any) -> None:
    store = any_store
    async with await new_app(store) as app:
        await app.arun(halt_after=["count"])
        assert app.position == "classify"
    resumed = (
        await counter_builder(store)
        .initialize_from(default_state={"n": 99}, default_entrypoint="count")
        .abuild()
    )
    async with resumed:
        assert resumed.position == "classify"
        assert resumed.state.get_all() == {"n": 1}
        await resumed.arun()
    restarted = (
        await counter_builder(store)
        .initialize_from(resume_at_next_action=False, default_entrypoint="count")
        .abuild()
    )
    async with restarted:
        assert restarted.position == "count"
        assert restarted.state["done"] is True


async def test_initialize_from_starts_a_new_app_from_defaults() -> None:
    store = MemoryEventStore()
    app = (
        await counter_builder(store, "fresh")
        .initialize_from(default_state={"n": 3}, default_entrypoint="count")
        .abuild()
    )
    async with app:
        assert app.sequence_id == 0
        assert app.position == "count"
        assert app.state["n"] == 3


async def test_resume_uses_snapshots_and_equals_full_replay(tmp_path: Any) -> None:
    store = MemoryEventStore()
    async with SnapshotStore(tmp_path / "snap.db") as snapshots:
        app = await (
            counter_builder(MemoryEventStore(), limit=10_000)
            .with_store(store, snapshots=snapshots)
            .with_snapshots(every=7)
            .with_state(n=0)
            .with_entrypoint("count")
            .abuild()
        )
        async with app:
            for _ in range(30):
                await app.astep()
        seqs = [s for s, _ in await snapshots.sequences("", "app")]
        assert seqs[:4] == [7, 14, 21, 28]
        assert seqs[-1] == 30  # at halt (aclose)
        resumed = await (
            counter_builder(store, limit=10_000)
            .with_store(store, snapshots=snapshots)
            .initialize_from(default_entrypoint="count")
            .abuild()
        )
        async with resumed:
            assert resumed.state == app.state
            assert resumed.position == app.position


@pytest.mark.parametrize("with_path", [False, True], ids=["open store", "path"])
async def test_a_snapshot_store_passed_unopened_is_connected_when_the_app_is_built(
    tmp_path: Any, with_path: bool
) -> None:
    # it used to build fine and fail with StoreClosedError ("not connected") at the
    # app's first snapshot, `every` steps into the run
    path = tmp_path / "app.db"
    snapshots = SnapshotStore(path, keep_last=1)
    async with await SQLiteEventStore.open(path) as store:
        app = await (
            counter_builder(store, limit=10_000)
            .with_store(path if with_path else store, snapshots=snapshots)
            .with_snapshots(every=3, at_halt=False)
            .with_state(n=0)
            .with_entrypoint("count")
            .abuild()
        )
        assert snapshots.connected
        async with app:
            for _ in range(7):
                await app.astep()
    assert snapshots.connected  # the caller's to close, as an event store passed in
    assert [s for s, _ in await snapshots.sequences("", "app")] == [6]  # keep_last=1
    await snapshots.aclose()


async def test_two_apps_built_at_once_share_one_unopened_snapshot_store(tmp_path: Any) -> None:
    path = tmp_path / "app.db"
    baseline = threading.active_count()
    snapshots = SnapshotStore(path)
    async with await SQLiteEventStore.open(path) as store:
        first, second = await asyncio.gather(
            *(
                counter_builder(store, app_id=app_id, limit=10_000)
                .with_store(store, snapshots=snapshots)
                .with_snapshots(every=2, at_halt=False)
                .with_state(n=0)
                .with_entrypoint("count")
                .abuild()
                for app_id in ("one", "two")
            )
        )
        await first.aclose()
        for _ in range(4):  # the first app's close left the store to the second
            await second.astep()
        await second.aclose()
        assert [s for s, _ in await snapshots.sequences("", "two")] == [2, 4]
    await snapshots.aclose()
    # one connection was opened (connect takes turns), so closing it ends every thread
    await assert_threads_end(baseline)


async def test_a_closed_snapshot_store_is_refused_when_the_app_is_built(tmp_path: Any) -> None:
    snapshots = await SnapshotStore.open(tmp_path / "app.db")
    await snapshots.aclose()
    async with await SQLiteEventStore.open(tmp_path / "app.db") as store:
        builder = (
            counter_builder(store)
            .with_store(store, snapshots=snapshots)
            .with_state(n=0)
            .with_entrypoint("count")
        )
        with pytest.raises(StoreError, match="closed"):
            await builder.abuild()
        assert await store.last_sequence("", "app") == -1  # nothing written


async def test_a_read_only_snapshot_store_is_refused_when_the_app_would_save(
    tmp_path: Any,
) -> None:
    # it used to fail with UsageError at the app's first snapshot, `every` steps in
    path = tmp_path / "app.db"
    async with await SQLiteEventStore.open(path) as store:
        async with SnapshotStore(path):  # the table exists
            pass
        read_only = SnapshotStore(path, read_only=True)
        builder = (
            counter_builder(store, limit=10_000)
            .with_store(store, snapshots=read_only)
            .with_state(n=0)
            .with_entrypoint("count")
        )
        with pytest.raises(ConfigError, match="read-only.*with_snapshots"):
            await builder.with_snapshots(every=3).abuild()
        with pytest.raises(ConfigError, match="read-only"):
            await builder.with_snapshots(every=None, at_halt=True).abuild()
        assert await store.last_sequence("", "app") == -1  # nothing written
        assert not read_only.connected
        # only resuming from it is fine
        app = await builder.with_snapshots(every=None, at_halt=False).abuild()
        async with app:
            for _ in range(4):
                await app.astep()
        assert app.sequence_id == 4
        await read_only.aclose()


def test_the_sync_face_connects_an_unopened_snapshot_store(tmp_path: Any) -> None:
    path = tmp_path / "app.db"
    snapshots = SnapshotStore(path, keep_last=1)
    app = (
        counter_builder(path, limit=10_000)
        .with_store(path, snapshots=snapshots)
        .with_snapshots(every=2, at_halt=False)
        .with_state(n=0)
        .with_entrypoint("count")
        .build()
    )
    try:
        for _ in range(5):
            app.step()
    finally:
        app.close()
    assert snapshots.connected  # the caller's to close
    assert [s for s, _ in asyncio.run(snapshots.sequences("", "app"))] == [4]
    asyncio.run(snapshots.aclose())


async def test_state_at_every_sequence_equals_what_the_app_had(tmp_path: Any) -> None:
    store = MemoryEventStore()
    async with SnapshotStore(tmp_path / "snap.db") as snapshots:
        app = await (
            counter_builder(store, limit=12)
            .with_store(store, snapshots=snapshots)
            .with_snapshots(every=4)
            .with_state(n=0)
            .with_entrypoint("count")
            .abuild()
        )
        seen = {0: app.state.get_all()}
        async with app:
            async for _ in app.aiterate():
                seen[app.sequence_id] = app.state.get_all()
        for seq, expected in seen.items():
            state, last = await load_state(store, snapshots, "", "app", at_sequence=seq)
            assert (state, last) == (expected, seq)


# --------------------------------------------------------------------------- fork


async def test_fork_starts_a_new_stream_with_lineage(any_store: Any) -> None:
    store = any_store
    async with await new_app(store) as app:
        await app.arun()
    source = await store.read("", "app")
    at = 4
    fork = await counter_builder(store, "branch").fork_from(app_id="app", sequence_id=at).abuild()
    async with fork:
        first = (await store.read("", "branch"))[0]
        assert first.kind == EventKind.FORKED
        assert first.parent is not None
        assert (first.parent.app_id, first.parent.sequence_id, first.parent.relation) == (
            "app",
            at,
            "fork",
        )
        assert writes_of(first) == fold(source[: at + 1])
        assert fork.position == source[at].next_action
        assert fork.sequence_id == 0
        await fork.arun()
    assert (await store.read("", "app")) == source  # the source is untouched
    assert await store.verify() is None
    with pytest.raises(UsageError, match="ends at"):
        await counter_builder(store, "b2").fork_from(app_id="app", sequence_id=999).abuild()
    with pytest.raises(ConcurrencyError, match="branch"):
        await counter_builder(store, "branch").fork_from(app_id="app").abuild()


# --------------------------------------------------------------------------- two writers


async def test_two_apps_on_one_stream_one_gets_concurrency_error(any_store: Any) -> None:
    store = any_store
    first = await new_app(store)
    second = await counter_builder(store).initialize_from(default_entrypoint="count").abuild()
    async with first, second:
        await first.astep()
        with pytest.raises(ConcurrencyError, match="'app'"):
            await second.astep()
    events = await store.read("", "app")
    assert [e.sequence_id for e in events] == [0, 1]
    with pytest.raises(ConcurrencyError):
        await new_app(store)  # a new app on an existing stream


# --------------------------------------------------------------------------- bad input


@action(reads=[], writes=["value"])
def store_object(state: State) -> State:
    return state.update(value=object())


@action(reads=[], writes=["value"])
def wrong_type(state: State) -> Any:
    return {"value": 1}


@action(reads=[], writes=["value"])
def undeclared(state: State) -> State:
    return state.update(other=1)


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (store_object, EncodingError, "value"),
        (wrong_type, StateError, "State"),
        (undeclared, StateError, "other"),
    ],
)
async def test_contract_errors_raise_and_write_nothing(
    fn: Any, error: Any, match: str, any_store: Any
) -> None:
    store = any_store
    app = await (
        ApplicationBuilder()
        .with_actions(bad=fn)
        .with_transitions(("bad", "bad"))
        .with_state(value=0)
        .with_entrypoint("bad")
        .with_identifiers(app_id="bad")
        .with_store(store)
        .abuild()
    )
    async with app:
        with pytest.raises(error, match=match):
            await app.astep()
        assert app.sequence_id == 0
        assert app.state["value"] == 0
    assert await store.last_sequence("", "bad") == 0


async def test_unknown_action_in_a_transition_is_a_transition_error() -> None:
    with pytest.raises(TransitionError, match="nowhere"):
        await (
            ApplicationBuilder()
            .with_actions(count=count)
            .with_transitions(("count", "nowhere"))
            .with_state(n=0)
            .with_entrypoint("count")
            .with_store(MemoryEventStore())
            .abuild()
        )


async def test_unencodable_initial_state_writes_nothing(any_store: Any) -> None:
    store = any_store
    with pytest.raises(EncodingError, match="weird"):
        await (
            counter_builder(store).with_state(n=0, weird=object()).with_entrypoint("count").abuild()
        )
    assert await store.streams() == []


async def test_builder_misuse_is_a_usage_error() -> None:
    store = MemoryEventStore()
    with pytest.raises(UsageError, match="exclusive"):
        await (
            counter_builder(store)
            .with_state(n=0)
            .initialize_from(default_entrypoint="count")
            .abuild()
        )
    with pytest.raises(UsageError, match="exclusive"):
        await counter_builder(store).with_entrypoint("count").fork_from(app_id="x").abuild()
    with pytest.raises(UsageError, match="no way to start"):
        await counter_builder(store).abuild()
    assert await store.streams() == []


async def test_sync_face_inside_a_running_loop_raises() -> None:
    store = MemoryEventStore()
    with pytest.raises(UsageError, match="running event loop"):
        counter_builder(store).with_state(n=0).with_entrypoint("count").build()
    async with await new_app(store) as app:
        with pytest.raises(UsageError, match="running event loop"):
            app.step()
        with pytest.raises(UsageError, match="running event loop"):
            app.run()
        with pytest.raises(UsageError, match="running event loop"):
            next(app.iterate())
    assert await store.last_sequence("", "app") == 0


def test_sync_face_on_an_abuild_app_raises() -> None:
    async def make() -> Application:
        return await new_app(MemoryEventStore())

    app = asyncio.run(make())
    with pytest.raises(UsageError, match="abuild"):
        app.step()
    asyncio.run(app.aclose())


@action(reads=["n"], writes=["n"])
async def async_count(state: State) -> State:
    await asyncio.sleep(0)
    return state.increment(n=1)


class AsyncRecorder(PostStepHookAsync):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def post_step(self, *, sequence_id: int, **future_kwargs: Any) -> None:
        await asyncio.sleep(0)
        self.seen.append(sequence_id)


def test_sync_face_runs_async_actions_and_hooks_instead_of_skipping_them() -> None:
    store = MemoryEventStore()
    hook = AsyncRecorder()
    app = (
        ApplicationBuilder()
        .with_actions(count=async_count, finish=finish)
        .with_transitions(("count", "count", when(n=0)), ("count", "finish", default))
        .with_state(n=0)
        .with_entrypoint("count")
        .with_identifiers(app_id="sync")
        .with_store(store)
        .with_hooks(hook)
        .build()
    )
    with app:
        step = app.step()
        assert step is not None
        assert step.action == "count"
        assert [s.action for s in app.iterate()] == ["finish"]
        assert app.run().action is None  # nothing left
    assert hook.seen == [1, 3]  # the iterate run started with run_started at 2


# --------------------------------------------------------------------------- hooks


class Recorder(PreStepHook, PostStepHook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def pre_step(self, **kwargs: Any) -> None:
        self.calls.append(("pre", kwargs))

    def post_step(self, **kwargs: Any) -> None:
        self.calls.append(("post", kwargs))


class Broken(PostStepHook):
    def post_step(self, **future_kwargs: Any) -> None:
        raise RuntimeError("hook bug")


async def test_hooks_see_the_step() -> None:
    FLAKY.clear()
    FLAKY["fail"] = 1
    store = MemoryEventStore()
    rec = Recorder()
    app = await (
        flaky_builder(store).with_state(n=0).with_entrypoint("count").with_hooks(rec).abuild()
    )
    async with app:
        await app.astep()
        with pytest.raises(ActionError):
            await app.astep()
    pre, post, pre2, post2 = rec.calls
    assert pre[0] == "pre" and post[0] == "post"
    assert pre[1]["sequence_id"] == 1
    assert pre[1]["position"] == "count"
    assert pre[1]["app_id"] == "flaky" and pre[1]["partition_key"] == ""
    assert pre[1]["state"]["n"] == 0
    assert post[1]["state"]["n"] == 1
    assert post[1]["exception"] is None
    assert isinstance(post2[1]["exception"], ConnectionError)
    assert post2[1]["sequence_id"] == 2


async def test_a_failing_hook_is_reported_and_never_corrupts_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore()
    app = (
        await counter_builder(store)
        .with_state(n=0)
        .with_entrypoint("count")
        .with_hooks(Broken())
        .abuild()
    )
    with caplog.at_level(logging.ERROR, logger="statelog.engine.hooks"):
        async with app:
            await app.arun()
    assert "hook bug" in caplog.text
    assert await store.verify() is None
    assert fold(await store.read("", "app")) == app.state.get_all()

    strict = (
        await counter_builder(store, "strict")
        .with_state(n=0)
        .with_entrypoint("count")
        .with_hooks(Broken(), on_error="raise")
        .abuild()
    )
    async with strict:
        with pytest.raises(HookError, match="hook bug"):
            await strict.astep()
        assert strict.sequence_id == 1  # the event was written before the hook ran
    assert await store.last_sequence("", "strict") == 1
    with pytest.raises(HookError, match="pre_step or post_step"):
        ApplicationBuilder().with_hooks(object())

    warned = (
        await counter_builder(store, "warned")
        .with_state(n=0)
        .with_entrypoint("count")
        .with_hooks(Broken(), on_error="warn")
        .abuild()
    )
    async with warned:
        with pytest.warns(RuntimeWarning, match="hook bug"):
            await warned.astep()
    assert await store.last_sequence("", "warned") == 1


# --------------------------------------------------------------------------- fire and forget


async def test_fire_and_forget_flushes_in_order(any_store: Any) -> None:
    store = any_store
    app = (
        await counter_builder(store, limit=500)
        .with_durability("fire_and_forget")
        .with_state(n=0)
        .with_entrypoint("count")
        .abuild()
    )
    async with app:
        await app.arun()
        await app.flush()
        assert await store.last_sequence("", "app") == app.sequence_id
    events = await store.read("", "app")
    assert fold(events) == app.state.get_all()
    assert await store.verify() is None


async def test_fire_and_forget_write_failure_surfaces_as_store_error(any_store: Any) -> None:
    store = any_store
    app = (
        await counter_builder(store, limit=10_000)
        .with_durability("fire_and_forget")
        .with_state(n=0)
        .with_entrypoint("count")
        .abuild()
    )
    # another writer takes sequence 1 first: the background append must fail
    await store.append(
        [Event(partition_key="", app_id="app", sequence_id=1, kind="intruder")],
        expected_sequence=0,
    )
    await app.astep()
    with pytest.raises(StoreError, match="'app'"):
        await app.flush()
    with pytest.raises(StoreError):
        await app.astep()
    with pytest.raises(StoreError):
        await app.aclose()
    events = await store.read("", "app")
    assert [e.kind for e in events] == ["app_initialized", "intruder"]


# --------------------------------------------------------------------------- SQLite default


def test_sync_build_on_the_default_file_then_resume(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    builder = (
        ApplicationBuilder()
        .with_actions(count=count, classify=classify, finish=finish)
        .with_transitions(
            ("count", "classify"),
            ("classify", "finish", when(n=3)),
            ("classify", "count", default),
        )
        .with_identifiers(app_id="default-file")
        .initialize_from(default_state={"n": 0}, default_entrypoint="count")
    )
    with builder.build() as app:
        app.run(halt_after=["classify"])
        seq = app.sequence_id
    assert (tmp_path / "statelog.db").exists()
    with builder.build() as again:
        assert again.sequence_id == seq
        assert again.position == "count"
        final = again.run()
    assert final.action == "finish"

    async def check() -> None:
        async with await SQLiteEventStore.open(tmp_path / "statelog.db") as store:
            events = await store.read("", "default-file")
            assert fold(events) == final.state.get_all()
            assert await store.verify() is None

    asyncio.run(check())
