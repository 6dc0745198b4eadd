"""The audit record v2: operations, every attempt, lifecycle, inputs, redaction, human input.

Real SQLite files and real processes; no mocks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog import ApplicationBuilder, Secret, State, action, wait_for_input
from statelog.engine import (
    ActionError,
    GraphChangedError,
    GraphChangedWarning,
    InputError,
    Node,
)
from statelog.eventstore import (
    JSON,
    EventKind,
    MemoryEventStore,
    SnapshotStore,
    SQLiteEventStore,
    export_streams,
    fold,
    load_state,
)
from statelog.eventstore._snapshots import SMALL_SNAPSHOT_BYTES
from statelog.eventstore.kafka import encode_record
from statelog.projections import AppIndexProjection, ProjectionRunner, StoreSource

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- the fold law

keys = st.sampled_from(["a", "b", "log", "cfg"])
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
operations = st.one_of(
    st.tuples(st.just("update"), keys, values),
    st.tuples(st.just("append"), keys, values),
    st.tuples(st.just("extend"), keys, st.lists(values, max_size=3)),
    st.tuples(st.just("increment"), keys, st.integers(-3, 3)),
    st.tuples(
        st.just("merge_into"), keys, st.dictionaries(st.text(max_size=3), values, max_size=3)
    ),
    st.tuples(st.just("wipe"), keys, st.none()),
    st.tuples(st.just("fresh"), keys, values),  # the action returns a State built anew
)
PLAN: list[list[tuple[str, str, Any]]] = []


def apply_one(state: State, op: tuple[str, str, Any]) -> State:
    kind, key, value = op
    current = state.get(key)
    if kind == "update":
        return state.update(**{key: value})
    if kind in ("append", "extend"):
        if not isinstance(current, list):
            state = state.update(**{key: [0] * 40})  # a long list to grow
        return state.append(**{key: value}) if kind == "append" else state.extend(**{key: value})
    if kind == "increment":
        if type(current) is not int:
            state = state.update(**{key: 0})
        return state.increment(**{key: value})
    if kind == "merge_into":
        if type(current) is not dict:
            state = state.update(**{key: {"nested": {"deep": [1]}}})
        return state.merge_into(**{key: value})
    if kind == "wipe":
        return state.wipe(delete=[key])
    data = state.get_all()
    data[key] = value
    return State(data)  # a whole new state: the engine derives the ops


@action(reads=["a", "b", "log", "cfg"], writes=["a", "b", "log", "cfg"])
def planned(state: State, step: int) -> State:
    for op in PLAN[step]:
        state = apply_one(state, op)
    return state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(operations, min_size=1, max_size=4), min_size=1, max_size=12))
def test_fold_of_the_events_is_the_live_state_and_snapshots_agree(plan: Any) -> None:
    PLAN[:] = plan

    async def go(path: Path) -> None:
        store = MemoryEventStore()
        async with SnapshotStore(path) as snaps:
            app = await (
                ApplicationBuilder()
                .with_actions(planned=planned)
                .with_transitions(("planned", "planned"))
                .with_state(a=1)
                .with_entrypoint("planned")
                .with_identifiers(app_id="law")
                .with_store(store, snapshots=snaps)
                .with_snapshots(every=3)
                .abuild()
            )
            async with app:
                for step in range(len(plan)):
                    await app.astep(inputs={"step": step})
                    events = await store.read("", "law")
                    assert fold(events) == app.state.get_all()
            events = await store.read("", "law")
            for at in range(len(events)):
                state, seq = await load_state(store, snaps, "", "law", at_sequence=at)
                assert (seq, state) == (at, fold(events[: at + 1]))

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp) / "snaps.db"))


def test_an_append_records_only_the_item() -> None:
    state = State.based({"log": list(range(10_000))})
    grown = state.append(log={"m": "hi"})
    assert grown.delta.ops == [{"op": "append", "key": "log", "value": {"m": "hi"}}]
    fresh = State({**grown.get_all(), "log": [*grown["log"], 7]}).diff_from(grown.rebase())
    assert fresh.delta.ops == [{"op": "append", "key": "log", "value": 7}]


# --------------------------------------------------------------------------- chat workload

MESSAGE = "m" * 180


@action(reads=["messages"], writes=["messages"])
def chat(state: State, text: str) -> State:
    return state.append(messages={"role": "user", "text": text})


def _chat_app(store: Any, **snapshots: Any) -> ApplicationBuilder:
    """The app ``chat`` (its one action appends a message to ``messages``) on ``store``."""
    return (
        ApplicationBuilder()
        .with_actions(chat=chat)
        .with_transitions(("chat", "chat"))
        .with_identifiers(app_id="chat")
        .with_store(store, **snapshots)
    )


async def test_a_2000_step_chat_keeps_every_event_under_1_kb(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteEventStore(path) as store:
        app = await (
            _chat_app(store, snapshots=None)
            .with_state(messages=[])
            .with_entrypoint("chat")
            .abuild()
        )
        async with app:
            for i in range(2000):
                await app.astep(inputs={"text": f"{i:08d}{MESSAGE}"})
        events = await store.read("", "chat")
        sizes = [len(JSON.encode_event(e)) for e in events]
        assert len(events) == 2001 and max(sizes) < 1024
        assert max(sizes[1:]) - min(sizes[1:]) < 16  # flat: no growth with the list
        assert len(fold(events)["messages"]) == 2000


def _snapshot_sizes(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as con:
        return con.execute(
            "SELECT sequence_id, length(state) FROM snapshots ORDER BY sequence_id"
        ).fetchall()


@pytest.mark.parametrize("bound", [2048, None])
async def test_the_snapshots_of_a_growing_state_cost_bytes_per_event_not_a_copy_every_n(
    tmp_path: Path, bound: int | None
) -> None:
    """Every snapshot kept (the builder's default store): without the bound each one is
    a whole copy of a list that grows by ~1 KB a step, every 10 steps - quadratic."""
    path = tmp_path / "chat.db"
    steps, long = 600, "m" * 1000
    app = await (
        _chat_app(path)
        .with_snapshots(every=10, bytes_per_event=bound)
        .with_state(messages=[])
        .with_entrypoint("chat")
        .abuild()
    )
    async with app:
        for i in range(steps):
            await app.astep(inputs={"text": f"{i:08d}{long}"})
    sizes = _snapshot_sizes(path)
    if bound is None:  # the old cadence: a whole copy every 10 events
        assert len(sizes) == steps // 10 and sizes[-1][1] > steps * 1000
        return
    large = [(seq, size) for seq, size in sizes if size > SMALL_SNAPSHOT_BYTES]
    assert len(large) >= 4  # the bound was put to the test
    _check_spacing(sizes, bound)
    # the large snapshots together cost ~bound bytes per event since the first of them
    written = sum(size for _, size in large[:-1])
    assert written <= bound * (large[-1][0] - large[0][0])
    # and a resume still gives the whole conversation (snapshot + the events after it)
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        state, seq = await load_state(store, snapshots, "", "chat")
    assert len(state["messages"]) == steps and seq == steps


def _check_spacing(sizes: list[tuple[int, int]], bound: int) -> None:
    """Each snapshot over 16 KiB is followed only after its size / bound events."""
    for (seq, size), (after, _) in zip(sizes, sizes[1:], strict=False):
        if size > SMALL_SNAPSHOT_BYTES:
            assert (after - seq) * bound >= size, (seq, size, after)


@pytest.mark.parametrize("bound", [2048, None])
async def test_an_app_resumed_for_each_turn_spaces_its_snapshots_as_one_that_stays(
    tmp_path: Path, bound: int | None
) -> None:
    """A chat served a turn at a time (resumed, five steps, closed: a snapshot at
    halt each time): the resumed app counts from the snapshot it was loaded from
    and sizes it, so the turns do not each write a whole copy."""
    path = tmp_path / "chat.db"
    turns, per_turn, long = 80, 5, "m" * 1000
    for turn in range(turns):
        builder = _chat_app(path).with_snapshots(every=10, bytes_per_event=bound)
        if turn == 0:
            builder = builder.with_state(messages=[]).with_entrypoint("chat")
        else:
            builder = builder.initialize_from(default_state={}, default_entrypoint="chat")
        async with await builder.abuild() as app:
            for i in range(per_turn):
                await app.astep(inputs={"text": f"{turn:04d}{i:04d}{long}"})
    sizes = _snapshot_sizes(path)
    if bound is None:  # a whole copy at each turn's close
        assert len(sizes) == turns
        return
    assert len([s for _, s in sizes if s > SMALL_SNAPSHOT_BYTES]) >= 3, sizes
    _check_spacing(sizes, bound)
    async with SQLiteEventStore(path) as store, SnapshotStore(path) as snapshots:
        state, _ = await load_state(store, snapshots, "", "chat")
    assert len(state["messages"]) == turns * per_turn


# --------------------------------------------------------------------------- retries

CALLS: dict[str, int] = {}


@action(reads=[], writes=["ok"], max_retries=3)
def flaky(state: State) -> State:
    CALLS["flaky"] = CALLS.get("flaky", 0) + 1
    if CALLS["flaky"] <= 2:
        raise ConnectionError(f"upstream down ({CALLS['flaky']})")
    return state.update(ok=True)


class FlakyNode(Node):
    writes = ["ok"]
    max_retries = 3

    def exec(self, prep_res: Any) -> Any:
        CALLS["node"] = CALLS.get("node", 0) + 1
        if CALLS["node"] <= 2:
            raise TimeoutError(f"slow ({CALLS['node']})")
        return "fine"

    def post(self, state: State, prep_res: Any, exec_res: Any) -> State:
        return state.update(ok=True)


@pytest.mark.parametrize("name", ["flaky", "node"])
async def test_fail_twice_then_succeed_records_both_failed_attempts(name: str) -> None:
    CALLS.clear()
    store = MemoryEventStore()
    the_action = flaky if name == "flaky" else FlakyNode()
    app = await (
        ApplicationBuilder()
        .with_actions(step=the_action)
        .with_transitions()
        .with_state()
        .with_entrypoint("step")
        .with_identifiers(app_id="retry")
        .with_store(store)
        .abuild()
    )
    async with app:
        await app.arun()
    events = await store.read("", "retry")
    kinds = [e.kind for e in events]
    assert kinds == [
        "app_initialized",
        "run_started",
        "attempt_failed",
        "attempt_failed",
        "action_completed",
        "completed",
    ]
    failed = events[2:4]
    error = "ConnectionError" if name == "flaky" else "TimeoutError"
    assert [e.attempt for e in failed] == [1, 2]
    assert [e.error.type for e in failed if e.error] == [error, error]
    assert [e.error.message for e in failed if e.error][1].endswith("(2)")
    assert all(e.error and e.error.traceback for e in failed)
    assert events[4].attempt == 3 and events[4].action == "step"


async def test_an_action_that_fails_every_attempt_ends_in_action_failed() -> None:
    CALLS["flaky"] = -10
    store = MemoryEventStore()
    app = await (
        ApplicationBuilder()
        .with_actions(step=flaky)
        .with_transitions()
        .with_state()
        .with_entrypoint("step")
        .with_identifiers(app_id="dead")
        .with_store(store)
        .abuild()
    )
    async with app:
        with pytest.raises(ActionError):
            await app.arun()
    kinds = [e.kind for e in await store.read("", "dead")]
    assert kinds[2:] == ["attempt_failed", "attempt_failed", "action_failed"]


# ------------------------------------------------------------- declared inputs, redaction


@action(reads=["n"], writes=["n"])
def add(state: State, amount: int) -> State:
    return state.increment(n=amount)


@action(reads=["n"], writes=["called"])
def call_api(state: State, api_key: str, token: str) -> State:
    assert api_key == "sk-live-SECRET-1" and token == "tok-SECRET-2"
    return state.update(called=True)


async def test_each_event_records_only_its_declared_inputs_and_secrets_never(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets.db"
    async with SQLiteEventStore(path) as store:
        app = await (
            ApplicationBuilder()
            .with_actions(add=add, call_api=call_api)
            .with_transitions(("add", "call_api"))
            .with_state(n=0)
            .with_entrypoint("add")
            .with_identifiers(app_id="keys")
            .with_store(store, snapshots=None)
            .with_redaction("api_key")
            .abuild()
        )
        inputs = {"amount": 2, "api_key": "sk-live-SECRET-1", "token": Secret("tok-SECRET-2")}
        async with app:
            await app.arun(inputs=inputs, actor="ops@example.com", correlation_id="req-1")
        events = await store.read("", "keys")
        by_kind = {e.kind: e for e in events if e.kind != "action_completed"}
        steps = [e for e in events if e.kind == "action_completed"]
        assert by_kind["run_started"].inputs == {
            "amount": 2,
            "api_key": "<redacted>",
            "token": "<redacted>",
        }
        assert by_kind["run_started"].actor == "ops@example.com"
        assert steps[0].inputs == {"amount": 2}  # add takes amount only
        assert steps[1].inputs == {"api_key": "<redacted>", "token": "<redacted>"}
        assert all(e.correlation_id == "req-1" for e in events[1:])
        export = tmp_path / "keys.jsonl"
        await export_streams(store, export)
        records = b"".join(encode_record(e).value for e in events)
        records += b"".join(encode_record(e, "msgpack").value for e in events)
    files = [path, export] + [p for p in tmp_path.iterdir() if p.name.startswith("secrets.db-")]
    raw = b"".join(p.read_bytes() for p in files) + records
    for secret in (b"SECRET-1", b"SECRET-2"):
        assert secret not in raw
    assert b"<redacted>" in path.read_bytes() + records


# --------------------------------------------------------------------------- human input

REVIEW_APP = """
import asyncio, sys
from statelog import ApplicationBuilder, State, action, wait_for_input

@action(reads=["draft"], writes=["approved", "note"])
def review(state: State, approval=None) -> State:
    if approval is None:
        wait_for_input("approval", schema={
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}},
            "required": ["ok"],
        })
    return state.update(approved=approval["ok"], note=approval.get("note", ""))

@action(reads=["approved"], writes=["published"])
def publish(state: State) -> State:
    return state.update(published=state["approved"])

def builder(db):
    return (
        ApplicationBuilder()
        .with_actions(review=review, publish=publish)
        .with_transitions(("review", "publish"))
        .initialize_from(default_state={"draft": "hello"}, default_entrypoint="review")
        .with_identifiers(app_id="doc-1")
        .with_store(db)
    )
"""


def run_script(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(REVIEW_APP + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_human_input_waits_in_one_process_and_arrives_in_another(tmp_path: Path) -> None:
    first = run_script(
        tmp_path,
        """
        async def main():
            async with await builder(sys.argv[1]).abuild() as app:
                await app.arun()
                print(app.waiting_for, app.position)
        asyncio.run(main())
        """,
        "review.db",
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["approval", "review"]
    second = run_script(
        tmp_path,
        """
        from statelog import InputError
        async def main():
            async with await builder(sys.argv[1]).abuild() as app:
                print(app.waiting_for)
                try:
                    await app.aprovide_input("approval", {"ok": "yes"})
                except InputError as exc:
                    print("refused:", exc)
                await app.aprovide_input("approval", {"ok": True, "note": "lgtm"})
                await app.arun()
                print(app.state["published"], app.state["note"], app.position)
        asyncio.run(main())
        """,
        "review.db",
    )
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0] == "approval"
    assert lines[1].startswith("refused:") and "$.ok" in lines[1] and "boolean" in lines[1]
    assert lines[2] == "True lgtm None"

    async def kinds() -> list[str]:
        async with SQLiteEventStore(tmp_path / "review.db") as store:
            events = await store.read("", "doc-1")
            assert await store.verify() is None
            received = [e for e in events if e.kind == "input_received"]
            assert received[0].inputs == {"approval": {"ok": True, "note": "lgtm"}}
            return [e.kind for e in events]

    assert asyncio.run(kinds()) == [
        "app_initialized",
        "run_started",
        "waiting_for_input",
        "input_received",
        "run_started",
        "action_completed",
        "action_completed",
        "completed",
    ]


async def test_input_nobody_waits_for_is_refused() -> None:
    @action(reads=[], writes=["x"])
    def ask(state: State, x: int | None = None) -> State:
        if x is None:
            wait_for_input("x", schema={"type": "integer"})
        return state.update(x=x)

    store = MemoryEventStore()
    app = await (
        ApplicationBuilder()
        .with_actions(ask=ask)
        .with_transitions()
        .with_state()
        .with_entrypoint("ask")
        .with_identifiers(app_id="ask")
        .with_store(store)
        .abuild()
    )
    async with app:
        with pytest.raises(InputError, match="waits for no input"):
            await app.aprovide_input("x", 1)
        await app.arun()
        with pytest.raises(InputError, match="waits for input 'x'"):
            await app.astep()
        with pytest.raises(InputError, match="waits for 'x'"):
            await app.aprovide_input("y", 1)
        await app.aprovide_input("x", 5)
        await app.arun()
        assert app.state["x"] == 5


# --------------------------------------------------------------------------- status


async def app_index(db: Path) -> dict[str, tuple[str, int]]:
    async with (
        SQLiteEventStore(db) as store,
        ProjectionRunner(AppIndexProjection(), db.with_name("rm.db")) as runner,
    ):
        await runner.rebuild(StoreSource(store))
    conn = sqlite3.connect(db.with_name("rm.db"))
    try:
        rows = conn.execute("SELECT app_id, status, failed_attempts FROM app_index").fetchall()
    finally:
        conn.close()
    db.with_name("rm.db").unlink()
    return {app: (status, attempts) for app, status, attempts in rows}


@action(reads=["n"], writes=["n"])
def tick(state: State) -> State:
    return state.increment(n=1)


@action(reads=[], writes=[])
def boom(state: State) -> State:
    raise ValueError("boom")


@action(reads=[], writes=[])
async def slow(state: State) -> State:
    await asyncio.sleep(30)
    return state


async def test_every_lifecycle_status_in_app_index(tmp_path: Path) -> None:
    db = tmp_path / "status.db"

    def builder(app_id: str) -> ApplicationBuilder:
        after = {"boom": boom, "slow": slow}.get(app_id)
        actions: dict[str, Any] = {"tick": tick}
        transitions: list[tuple[str, str]] = []
        if after is not None:
            actions[app_id] = after
            transitions.append(("tick", app_id))
        elif app_id == "halted":
            transitions.append(("tick", "tick"))
        return (
            ApplicationBuilder()
            .with_actions(**actions)
            .with_transitions(*transitions)
            .with_state(n=0)
            .with_entrypoint("tick")
            .with_identifiers(app_id=app_id)
            .with_store(db)
        )

    async with await builder("halted").abuild() as app:
        await app.arun(halt_after=["tick"])
    async with await builder("completed").abuild() as app:
        await app.arun()
    async with await builder("boom").abuild() as app:
        with pytest.raises(ActionError):
            await app.arun()
    async with await builder("slow").abuild() as app:
        task = asyncio.create_task(app.arun())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    status = await app_index(db)
    assert status == {
        "halted": ("halted", 0),
        "completed": ("completed", 0),
        "boom": ("failed", 0),
        "slow": ("cancelled", 0),
    }


KILL_APP = """
import asyncio, sys, time
from statelog import ApplicationBuilder, State, action

@action(reads=["n"], writes=["n"])
def tick(state: State) -> State:
    time.sleep(0.01)
    return state.increment(n=1)

@action(reads=["n"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)

async def main(db, until):
    from statelog import expr
    app = await (
        ApplicationBuilder()
        .with_actions(tick=tick, finish=finish)
        .with_transitions(("tick", "tick", expr(f"n < {until}")), ("tick", "finish"))
        .initialize_from(default_state={"n": 0}, default_entrypoint="tick")
        .with_identifiers(app_id="victim")
        .with_store(db)
        .abuild()
    )
    async with app:
        print("running", flush=True)
        await app.arun()
    print("done", app.state["n"], flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_status_after_kill_9_and_resume_in_a_new_process(tmp_path: Path) -> None:
    script = tmp_path / "victim.py"
    script.write_text(KILL_APP)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    db = tmp_path / "victim.db"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), "100000"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "running"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert asyncio.run(app_index(db)) == {"victim": ("running", 0)}  # it was, when it died

    async def progress() -> int:
        async with SQLiteEventStore(db) as store:
            assert await store.verify() is None
            return fold(await store.read("", "victim"))["n"]

    n = asyncio.run(progress())
    assert n > 0
    done = subprocess.run(
        [sys.executable, str(script), str(db), str(n + 5)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["done", str(n + 5)]
    assert asyncio.run(app_index(db)) == {"victim": ("completed", 0)}


async def test_waiting_for_input_status(tmp_path: Path) -> None:
    @action(reads=[], writes=["x"])
    def ask(state: State, x: int | None = None) -> State:
        if x is None:
            wait_for_input("x")
        return state.update(x=x)

    db = tmp_path / "wait.db"
    app = await (
        ApplicationBuilder()
        .with_actions(ask=ask)
        .with_transitions()
        .with_state()
        .with_entrypoint("ask")
        .with_identifiers(app_id="wait")
        .with_store(db)
        .abuild()
    )
    async with app:
        await app.arun()
    assert await app_index(db) == {"wait": ("waiting_for_input", 0)}


# --------------------------------------------------------------------------- graph fingerprint


def graph_builder(db: Path, second: Any) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, again=second)
        .with_transitions(("tick", "again"), ("again", "tick"))
        .with_identifiers(app_id="g")
        .with_store(db)
    )


@action(reads=["n"], writes=["n"])
def again_v1(state: State) -> State:
    return state.increment(n=1)


@action(reads=["n"], writes=["n"])
def again_v2(state: State) -> State:
    return state.increment(n=2)


def test_the_code_hash_is_computed_once_per_code_not_per_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A builder made per run or per resume defines new functions over the same
    code: their hash is the same, and it is worked out once."""
    from statelog.engine import _record

    def defined(k: int) -> Any:
        @action(reads=["n"], writes=["n"])
        def bump(state: State) -> State:
            return state.increment(n=k)

        return bump

    computed: list[Any] = []
    original = _record._compute_code_hash

    def counted(act: Any) -> str:
        computed.append(act)
        return original(act)

    monkeypatch.setattr(_record, "_compute_code_hash", counted)
    monkeypatch.setattr(_record, "_CODE_HASHES", {})
    first, second = defined(1), defined(2)
    assert first.fn is not second.fn
    assert _record._code_hash(first) == _record._code_hash(second)
    assert len(computed) == 1
    assert _record._code_hash(again_v1) != _record._code_hash(again_v2)  # other code
    assert len(computed) == 3


async def test_a_changed_graph_warns_records_and_can_be_refused(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    app = await graph_builder(db, again_v1).with_state(n=0).with_entrypoint("tick").abuild()
    async with app:
        await app.arun(halt_after=["again"])
        old = app.graph_fingerprint

    def resume(second: Any, **kw: Any) -> Any:
        return graph_builder(db, second).initialize_from(default_entrypoint="tick", **kw).abuild()

    async with await resume(again_v1) as same:  # same code: no warning
        assert same.graph_fingerprint == old
    with pytest.raises(GraphChangedError) as info:
        await resume(again_v2, on_graph_change="refuse")
    assert info.value.recorded == old
    with pytest.warns(GraphChangedWarning, match="changed graph"):
        changed = await resume(again_v2)
    async with changed:
        await changed.arun(halt_after=["again"])
        new = changed.graph_fingerprint
    assert new != old
    async with SQLiteEventStore(db) as store:
        events = await store.read("", "g")
    marks = [e for e in events if e.kind == EventKind.GRAPH_CHANGED]
    assert len(marks) == 1 and marks[0].data == {"from": old, "to": new}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with await resume(again_v2):  # the log now records the new graph
            pass
    out = subprocess.run(
        [sys.executable, "-m", "statelog", "history", "g", "--db", str(db)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "graph_changed" in out.stdout and "graph changed: sha256:" in out.stdout
