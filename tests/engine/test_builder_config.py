"""Bad arguments raise ConfigError before anything is written; a new app on an
existing stream says so; hooks are checked when they are given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statelog import AppExistsError
from statelog.engine import (
    ApplicationBuilder,
    HookError,
    PostStepHook,
    PostStepHookAsync,
    PreStepHook,
    PreStepHookAsync,
    State,
    action,
    default,
)
from statelog.eventstore import ConcurrencyError, ConfigError, MemoryEventStore


@action(reads=["n"], writes=["n"])
def count(state: State) -> State:
    return state.update(n=state["n"] + 1)


def counter(store: Any, app_id: str = "counter") -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions(("count", "count", default))
        .with_identifiers(app_id=app_id)
        .with_store(store)
    )


# --------------------------------------------------------------------------- ConfigError

B = ApplicationBuilder

BAD_BUILDER_CALLS: list[tuple[str, Callable[[], Any]]] = [
    ("app_id", lambda: B().with_identifiers(app_id="")),
    ("app_id", lambda: B().with_identifiers(app_id=5)),  # type: ignore[arg-type]
    ("partition_key", lambda: B().with_identifiers(partition_key=3)),  # type: ignore[arg-type]
    ("action", lambda: B().with_entrypoint("")),
    ("action", lambda: B().with_entrypoint(3)),  # type: ignore[arg-type]
    ("mapping", lambda: B().with_state(["n"])),  # type: ignore[arg-type]
    ("keys must be str", lambda: B().with_state({1: 2})),
    ("path is empty", lambda: B().with_store("")),
    ("EventStore or a path", lambda: B().with_store(3)),  # type: ignore[arg-type]
    ("'NORMAL' or 'FULL'", lambda: B().with_store("x.db", synchronous="OFF")),  # type: ignore[arg-type]
    ("'NORMAL' or 'FULL'", lambda: B().with_store("x.db", synchronous=1)),  # type: ignore[arg-type]
    ("'NORMAL' or 'FULL'", lambda: B().with_store("x.db", synchronous="")),  # type: ignore[arg-type]
    (
        "synchronous applies to a path",
        lambda: B().with_store(MemoryEventStore(), synchronous="FULL"),
    ),
    ("SnapshotStore", lambda: B().with_store(MemoryEventStore(), snapshots="x")),  # type: ignore[arg-type]
    ("every", lambda: B().with_snapshots(every=0)),
    ("every", lambda: B().with_snapshots(every=-5)),
    ("every", lambda: B().with_snapshots(every=1.5)),  # type: ignore[arg-type]
    ("seconds", lambda: B().with_snapshots(seconds=0)),
    ("seconds", lambda: B().with_snapshots(seconds=-1.0)),
    ("at_halt", lambda: B().with_snapshots(at_halt="yes")),  # type: ignore[arg-type]
    ("bytes_per_event", lambda: B().with_snapshots(bytes_per_event=0)),
    ("bytes_per_event", lambda: B().with_snapshots(bytes_per_event=-256)),
    ("bytes_per_event", lambda: B().with_snapshots(bytes_per_event=True)),
    ("bytes_per_event", lambda: B().with_snapshots(bytes_per_event=2.5)),  # type: ignore[arg-type]
    ("bytes_per_event", lambda: B().with_snapshots(bytes_per_event="256")),  # type: ignore[arg-type]
    ("transactional", lambda: B().with_durability("sometimes")),  # type: ignore[arg-type]
    ("on_error", lambda: B().with_hooks(on_error="ignore")),  # type: ignore[arg-type]
    ("default_entrypoint", lambda: B().initialize_from(default_entrypoint="")),
    ("store", lambda: B().initialize_from("x.db", default_entrypoint="a")),  # type: ignore[arg-type]
    (
        "resume_at_next_action",
        lambda: B().initialize_from(resume_at_next_action="no", default_entrypoint="a"),  # type: ignore[arg-type]
    ),
    (
        "default_state",
        lambda: B().initialize_from(default_state=[1], default_entrypoint="a"),  # type: ignore[arg-type]
    ),
    ("app_id", lambda: B().fork_from(app_id="")),
    ("sequence_id", lambda: B().fork_from(app_id="a", sequence_id=-1)),
    ("sequence_id", lambda: B().fork_from(app_id="a", sequence_id="3")),  # type: ignore[arg-type]
    ("tuples", lambda: B().with_transitions(("count",))),  # type: ignore[arg-type]
    ("tuples", lambda: B().with_transitions("ab")),  # type: ignore[arg-type]
    ("named actions", lambda: B().with_actions(3)),  # type: ignore[arg-type]
    ("must be an Action", lambda: B().with_actions(x=3)),  # type: ignore[arg-type]
    ("Lineage", lambda: B().with_parent("x")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("expected", "call"), BAD_BUILDER_CALLS)
def test_bad_builder_argument_is_a_config_error(expected: str, call: Callable[[], Any]) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert "got" in str(info.value) or "empty" in str(info.value)


async def test_empty_app_id_writes_nothing() -> None:
    store = MemoryEventStore()
    with pytest.raises(ConfigError, match="app_id must be a non-empty str"):
        await counter(store, "").with_state(n=0).with_entrypoint("count").abuild()
    assert await store.streams() == []


async def test_bad_run_arguments_are_config_errors() -> None:
    store = MemoryEventStore()
    async with await counter(store).with_state(n=0).with_entrypoint("count").abuild() as app:
        with pytest.raises(ConfigError, match="halt_after takes a list of action names"):
            await app.arun(halt_after="count")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="halt_before: cannot halt at 'nope'"):
            await app.arun(halt_before=["nope"])
        with pytest.raises(ConfigError, match="inputs must be a mapping"):
            await app.astep(inputs=[("a", 1)])  # type: ignore[arg-type]
        assert app.sequence_id == 0
    assert await store.last_sequence("", "counter") == 0


# --------------------------------------------------------------------------- the app exists


async def test_new_app_on_an_existing_stream_says_how_to_resume(tmp_path: Path) -> None:
    db = tmp_path / "tour.db"
    async with await counter(db).with_state(n=0).with_entrypoint("count").abuild() as app:
        await app.arun(halt_after=["count"])
        await app.arun(halt_after=["count"])
    # the tour again, on the same file
    with pytest.raises(AppExistsError) as info:
        await counter(db).with_state(n=0).with_entrypoint("count").abuild()
    err = info.value
    assert isinstance(err, ConcurrencyError)
    # two runs of run_started, the step, halted
    assert (err.stream, err.expected, err.actual) == (("", "counter"), -1, 6)
    message = str(err)
    assert "'counter' already exists" in message and "sequence_id 6" in message
    assert "initialize_from(" in message and "new app_id" in message
    # nothing was written, and the advice works
    resumed = (
        await counter(db)
        .initialize_from(default_state={"n": 0}, default_entrypoint="count")
        .abuild()
    )
    async with resumed:
        assert resumed.sequence_id == 6 and resumed.state["n"] == 2


def test_new_app_on_an_existing_stream_sync(tmp_path: Path) -> None:
    db = tmp_path / "tour.db"
    with counter(db).with_state(n=0).with_entrypoint("count").build() as app:
        app.run(halt_after=["count"])
    with pytest.raises(AppExistsError, match="at sequence_id 3"):
        counter(db).with_state(n=0).with_entrypoint("count").build()


async def test_fork_into_an_existing_stream_is_app_exists() -> None:
    store = MemoryEventStore()
    async with await counter(store, "src").with_state(n=0).with_entrypoint("count").abuild():
        pass
    async with await counter(store, "dst").with_state(n=5).with_entrypoint("count").abuild():
        pass
    with pytest.raises(AppExistsError, match="'dst' already exists"):
        await counter(store, "dst").fork_from(app_id="src").abuild()


# --------------------------------------------------------------------------- hooks


class PreNoFuture(PreStepHook):
    def pre_step(self, *, sequence_id: int) -> None:  # type: ignore[override]
        pass


class PreAsyncNoFuture(PreStepHookAsync):
    async def pre_step(self, *, position: str, state: Any) -> None:  # type: ignore[override]
        pass


class PostNoFuture(PostStepHook):
    def post_step(self, *, result: Any, exception: Any) -> None:  # type: ignore[override]
        pass


class PostAsyncNoFuture(PostStepHookAsync):
    async def post_step(self, **kwargs: Any) -> None:  # fine so far
        pass


class PostAsyncExtraRequired(PostStepHookAsync):
    async def post_step(self, *, trace_id: str, **future_kwargs: Any) -> None:  # type: ignore[override]
        pass


class PrePositional(PreStepHook):
    def pre_step(self, state, /, **future_kwargs: Any) -> None:  # type: ignore[no-untyped-def, override]
        pass


class PostSyncGood(PostStepHook):
    def post_step(self, *, sequence_id: int, exception: Any = None, **future_kwargs: Any) -> None:  # type: ignore[override]
        pass


class PreAsyncGood(PreStepHookAsync):
    async def pre_step(self, *, app_id: str, **future_kwargs: Any) -> None:  # type: ignore[override]
        pass


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (PreNoFuture(), r"PreNoFuture\.pre_step.*no \*\*future_kwargs"),
        (PreAsyncNoFuture(), r"PreAsyncNoFuture\.pre_step.*no \*\*future_kwargs"),
        (PostNoFuture(), r"PostNoFuture\.post_step.*no \*\*future_kwargs"),
        (PostAsyncExtraRequired(), r"PostAsyncExtraRequired\.post_step.*requires \['trace_id'\]"),
        (PrePositional(), r"PrePositional\.pre_step.*requires \['state'\]"),
    ],
)
def test_hook_with_a_wrong_signature_fails_at_with_hooks(hook: object, expected: str) -> None:
    builder = ApplicationBuilder()
    with pytest.raises(HookError, match=expected):
        builder.with_hooks(hook)
    builder.with_hooks(PostSyncGood())  # the failed call added nothing
    assert builder._hooks and all(type(h) is PostSyncGood for h in builder._hooks)


async def test_hooks_with_future_kwargs_run() -> None:
    seen: list[str] = []

    class Pre(PreStepHookAsync):
        async def pre_step(self, *, app_id: str, **future_kwargs: Any) -> None:  # type: ignore[override]
            seen.append(f"pre {app_id}")

    class Post(PostStepHook):
        def post_step(self, *, sequence_id: int, **future_kwargs: Any) -> None:  # type: ignore[override]
            seen.append(f"post {sequence_id}")

    store = MemoryEventStore()
    builder = counter(store).with_state(n=0).with_entrypoint("count")
    builder.with_hooks(Pre(), Post(), PostAsyncNoFuture(), PreAsyncGood(), on_error="raise")
    async with await builder.abuild() as app:
        await app.astep()
    assert seen == ["pre counter", "post 1"]
