"""Actions: @action functions, Node classes, retries, fallback, batches, the runner."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from statelog.engine import ActionError, StateError
from statelog.engine._actions import (
    Action,
    BatchNode,
    FunctionAction,
    Node,
    StepOutcome,
    action,
    batch_action,
    run_action,
    run_action_sync,
)
from statelog.engine._state import Delta, State
from statelog.eventstore import ConfigError, EncodingError, UsageError

BASE = State.based({"n": 1, "xs": [1], "name": "ann"})


async def both(
    act: Action, state: State = BASE, inputs: dict[str, Any] | None = None
) -> StepOutcome:
    """Run through the runner (``run_action_sync`` is the same runner on its own loop)."""
    return await run_action(act, state, inputs or {})


# ---------------------------------------------------------------- function actions


@action(reads=["n"], writes=["n"])
def bump(state: State) -> State:
    return state.increment(n=1)


@action(reads=["n"], writes=["n", "total"])
async def add(state: State, amount: int, times: int = 1) -> tuple[dict[str, int], State]:
    await asyncio.sleep(0)
    total = state["n"] + amount * times
    return {"total": total}, state.update(n=total, total=total)


async def test_sync_function_action() -> None:
    out = await both(bump)
    assert isinstance(out, StepOutcome)
    assert out.state["n"] == 2 and out.result is None and out.label is None
    assert out.attempt == 1 and out.duration >= 0
    assert out.state.delta == Delta({"n": 2}, [])
    assert bump.name == "bump" and bump.reads == ["n"] and bump.writes == ["n"]
    assert not bump.is_async and bump.inputs == []
    assert bump(BASE)["n"] == 2  # still callable as the function


async def test_async_function_action_with_inputs() -> None:
    assert add.is_async
    assert add.required_inputs == ["amount"] and add.optional_inputs == ["times"]
    assert add.inputs == ["amount", "times"]
    out = await run_action(add, BASE, {"amount": 2, "times": 3, "unrelated": "ignored"})
    assert out.result == {"total": 7}
    assert out.state.delta == Delta({"n": 7, "total": 7}, [])
    assert add.select_inputs({"amount": 1, "zzz": 2}) == {"amount": 1}


async def test_missing_input_is_a_state_error() -> None:
    with pytest.raises(StateError, match=r"'add' needs input\(s\) \['amount'\]"):
        await run_action(add, BASE, {"times": 2})
    with pytest.raises(StateError, match="amount"):
        await run_action(add, BASE)

    @action(reads=[], writes=[])
    def needs(state: State, who: str) -> State:
        return state

    with pytest.raises(StateError, match="who"):
        await run_action(needs, BASE)
    with pytest.raises(StateError, match="who"):
        await run_action(needs, BASE, {})


async def test_var_kwargs_and_bind() -> None:
    @action(reads=[], writes=["seen"])
    def record(state: State, **inputs: Any) -> State:
        return state.update(seen=sorted(inputs))

    out = await both(record, BASE, {"a": 1, "b": 2})
    assert out.state["seen"] == ["a", "b"]

    bound = add.bind(amount=10)
    assert bound.required_inputs == [] and bound.inputs == ["times"]
    assert add.required_inputs == ["amount"]  # the original is untouched
    out = await run_action(bound, BASE, {"amount": 999})
    assert out.state["n"] == 11  # bound inputs win
    with pytest.raises(ConfigError, match="no input"):
        add.bind(nope=1)


async def test_undeclared_write_and_delete() -> None:
    @action(reads=[], writes=["n"])
    def sneaky(state: State) -> State:
        return state.update(n=5, secret=1)

    with pytest.raises(StateError, match=r"'sneaky' wrote state key 'secret'.*writes \['n'\]"):
        await run_action(sneaky, BASE)
    with pytest.raises(StateError, match="secret"):
        await run_action(sneaky, BASE)

    @action(reads=[], writes=[])
    def deleter(state: State) -> State:
        return state.wipe(delete=["name"])

    with pytest.raises(StateError, match="'deleter' deleted state key 'name'"):
        await run_action(deleter, BASE)


@pytest.mark.parametrize(
    "returned, expect",
    [
        (None, "returned None; expected a State or a \\(result, State\\) tuple"),
        ({"n": 1}, "returned a dict"),
        ((BASE, 1), "a tuple of \\(State, int\\)"),
        ((1, 2, BASE), "a tuple of"),
        ([1, BASE], "returned a list"),
    ],
)
async def test_wrong_return_type(returned: Any, expect: str) -> None:
    @action(reads=[], writes=[])
    def bad(state: State) -> Any:
        return returned

    @action(reads=[], writes=[])
    async def abad(state: State) -> Any:
        return returned

    with pytest.raises(StateError, match=expect):
        await run_action(bad, BASE)
    with pytest.raises(StateError, match=expect):
        await run_action(bad, BASE)
    with pytest.raises(StateError, match=expect):
        await run_action(abad, BASE)


async def test_sync_function_returning_a_coroutine() -> None:
    async def inner(state: State) -> State:
        return state

    @action(reads=[], writes=[])
    def sneaky(state: State) -> Any:
        return inner(state)

    with pytest.raises(StateError, match="async def"):
        await run_action(sneaky, BASE)  # and no "never awaited" warning (filterwarnings=error)


def test_run_action_sync_is_run_action_on_a_loop_of_its_own() -> None:
    for act, state, inputs in [
        (add, BASE, {"amount": 2}),  # async def: it runs, it is not refused
        (bump, BASE, None),
        (Square(max_retries=2, mode="parallel"), ITEMS, None),
    ]:
        sync = run_action_sync(act, state, inputs)
        out = asyncio.run(run_action(act, state, inputs))
        assert sync.state == out.state and sync.state.delta == out.state.delta
        assert (sync.result, sync.label, sync.attempt) == (out.result, out.label, out.attempt)


async def test_run_action_sync_inside_a_running_loop_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="running event loop.*await run_action"):
        run_action_sync(bump, BASE)


async def test_user_error_becomes_action_error() -> None:
    @action(reads=[], writes=[])
    def boom(state: State) -> State:
        raise ValueError("nope")

    with pytest.raises(ActionError) as info:
        await run_action(boom, BASE)
    err = info.value
    assert isinstance(err.__cause__, ValueError)
    assert err.action == "boom" and err.sequence_id == -1 and err.attempt == 1
    assert "ValueError: nope" in str(err)


async def test_contract_errors_are_not_wrapped_nor_retried() -> None:
    calls = 0

    @action(reads=[], writes=["x"], max_retries=3)
    def bad_value(state: State) -> State:
        nonlocal calls
        calls += 1
        return state.update(x={"sock": object()})

    with pytest.raises(EncodingError) as info:
        await run_action(bad_value, BASE)
    assert info.value.path == "$.writes.x.sock"
    assert calls == 1

    @action(reads=[], writes=["name"])
    def bad_op(state: State) -> State:
        return state.append(name="x")  # name holds a str

    with pytest.raises(StateError, match="append"):
        await run_action(bad_op, BASE)


async def test_result_must_be_encodable() -> None:
    @action(reads=[], writes=[])
    def odd(state: State) -> tuple[Any, State]:
        return {"ok": 1, "bad": object()}, state

    with pytest.raises(EncodingError) as info:
        await run_action(odd, BASE)
    assert info.value.path == "$.result.bad"

    @action(reads=[], writes=[])
    def tup(state: State) -> tuple[Any, State]:
        return (1, 2), state

    assert (await both(tup)).result == [1, 2]


async def test_fresh_state_gets_a_computed_delta() -> None:
    @action(reads=[], writes=["n", "xs", "extra"])
    def rebuild(state: State) -> State:
        return State({"n": 1, "extra": True, "name": "ann"})

    out = await both(rebuild)
    assert out.state == {"n": 1, "extra": True, "name": "ann"}
    assert out.state.delta == Delta({"extra": True}, ["xs"])


async def test_input_state_with_a_delta_is_rebased() -> None:
    dirty = BASE.update(name="bob")
    out = await both(bump, dirty)
    assert out.state.delta == Delta({"n": 2}, [])
    assert out.state["name"] == "bob"


async def test_function_action_retries() -> None:
    calls = 0

    @action(reads=[], writes=["n"], max_retries=3)
    def flaky(state: State) -> State:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("try again")
        return state.update(n=calls)

    out = await run_action(flaky, BASE)
    assert out.attempt == 3 and out.state["n"] == 3 and calls == 3

    attempts = 0

    @action(reads=[], writes=[], max_retries=4)
    async def always(state: State) -> State:
        nonlocal attempts
        attempts += 1
        raise TimeoutError(f"attempt {attempts}")

    with pytest.raises(ActionError) as info:
        await run_action(always, BASE)
    assert attempts == 4 and info.value.attempt == 4
    assert "attempt 4 of 4" in str(info.value)
    assert str(info.value.__cause__) == "attempt 4"
    del info


async def test_retry_config_is_checked() -> None:
    # Declaring an action wrong is a bad argument: ConfigError, raised at once.
    with pytest.raises(ConfigError, match="max_retries"):
        action(reads=[], writes=[], max_retries=0)(lambda state: state)
    with pytest.raises(ConfigError, match="wait"):
        action(reads=[], writes=[], wait=-1)(lambda state: state)
    with pytest.raises(ConfigError, match="reads"):
        action(reads="n", writes=[])(lambda state: state)
    with pytest.raises(ConfigError, match="str keys"):
        action(reads=[1], writes=[])(lambda state: state)
    with pytest.raises(ConfigError, match="state"):
        action(reads=[], writes=[])(lambda: None)
    with pytest.raises(ConfigError, match="needs a function"):
        action(reads=[], writes=[])(5)
    with pytest.raises(ConfigError, match="positional-only"):
        action(reads=[], writes=[])(lambda state, x, /: state)
    with pytest.raises(ConfigError, match="no input"):
        action(reads=[], writes=[])(lambda state: state).bind(nope=1)


def test_wait_between_attempts_sync() -> None:
    stamps: list[float] = []

    @action(reads=[], writes=[], max_retries=3, wait=0.05)
    def slow(state: State) -> State:
        stamps.append(time.monotonic())
        raise RuntimeError("x")

    with pytest.raises(ActionError):
        run_action_sync(slow, BASE)
    assert len(stamps) == 3
    assert stamps[1] - stamps[0] >= 0.045 and stamps[2] - stamps[1] >= 0.045


def test_with_name_copies() -> None:
    renamed = bump.with_name("other")
    assert renamed.name == "other" and bump.name == "bump"
    assert renamed.fn is bump.fn  # type: ignore[attr-defined]
    assert "other" in repr(renamed)


# ---------------------------------------------------------------- nodes


class Summarise(Node):
    reads = ["name"]
    writes = ["summary"]

    def __init__(self, fail_times: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_times = fail_times
        self.preps = 0
        self.execs = 0
        self.posts = 0

    def prep(self, state: State, suffix: str = "!") -> Any:
        self.preps += 1
        return state["name"] + suffix

    def exec(self, prep_res: Any) -> Any:
        self.execs += 1
        if self.execs <= self.fail_times:
            raise ConnectionError(f"flaky {self.execs}")
        return prep_res.upper()

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        self.posts += 1
        label = "long" if len(exec_res) > 3 else "short"
        return label, state.update(summary=exec_res)


async def test_node_prep_exec_post_and_label() -> None:
    node = Summarise()
    assert node.name == "Summarise" and node.returns_label and not node.is_async
    assert node.inputs == ["suffix"]
    out = await both(node, BASE, {"suffix": "?"})
    assert out.result == "ANN?" and out.label == "long"
    assert out.state.delta == Delta({"summary": "ANN?"}, [])


async def test_node_retries_exec_only() -> None:
    node = Summarise(fail_times=2, max_retries=3)
    out = await run_action(node, BASE)
    assert out.attempt == 3 and out.result == "ANN!"
    assert (node.preps, node.execs, node.posts) == (1, 3, 1)

    node = Summarise(fail_times=5, max_retries=3)
    with pytest.raises(ActionError) as info:
        await run_action(node, BASE)
    assert info.value.attempt == 3 and "in exec" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert str(info.value.__cause__) == "flaky 3"
    assert (node.preps, node.execs, node.posts) == (1, 3, 0)


async def test_node_wait_between_attempts() -> None:
    node = Summarise(fail_times=2, max_retries=3, wait=0.05)
    t0 = time.monotonic()
    out = await run_action(node, BASE)
    assert out.attempt == 3
    assert time.monotonic() - t0 >= 0.09  # two waits: a lower bound, not a benchmark


class WithFallback(Node):
    max_retries = 2
    writes = ["summary"]

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def prep(self, state: State) -> Any:
        return "input"

    def exec(self, prep_res: Any) -> Any:
        raise ValueError("down")

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        self.seen.append((prep_res, type(exc).__name__, str(exc)))
        return "fallback value"

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return state.update(summary=exec_res)


async def test_fallback_value_becomes_the_result() -> None:
    node = WithFallback()
    out = await both(node)
    assert out.result == "fallback value" and out.state["summary"] == "fallback value"
    assert out.attempt == 2 and out.label is None
    assert node.seen[0] == ("input", "ValueError", "down")


async def test_fallback_that_raises() -> None:
    class Strict(WithFallback):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            raise KeyError("fallback broke") from exc

    with pytest.raises(ActionError) as info:
        await run_action(Strict(), BASE)
    assert isinstance(info.value.__cause__, KeyError) and info.value.attempt == 2


class AsyncNode(Node):
    writes = ["out"]
    max_retries = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def prep(self, state: State) -> Any:
        await asyncio.sleep(0)
        return state["n"]

    async def exec(self, prep_res: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise OSError("first")
        await asyncio.sleep(0)
        return prep_res * 10

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return (None, state.update(out=exec_res))


async def test_async_node_parts() -> None:
    node = AsyncNode()
    assert node.is_async
    out = await run_action(node, BASE)
    assert out.result == 10 and out.attempt == 2 and out.state["out"] == 10


async def test_node_errors_in_prep_and_post() -> None:
    class BadPrep(Node):
        def prep(self, state: State) -> Any:
            raise LookupError("prep broke")

    class BadPost(Node):
        max_retries = 3

        def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
            raise LookupError("post broke")

    class BadLabel(Node):
        def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
            return 3, state

    class BadReturn(Node):
        def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
            return {"a": 1}

    with pytest.raises(ActionError, match="in prep") as info:
        await run_action(BadPrep(), BASE)
    assert info.value.attempt == 1
    with pytest.raises(ActionError, match="in post"):
        await run_action(BadPost(), BASE)
    with pytest.raises(StateError, match="label 3"):
        await run_action(BadLabel(), BASE)
    with pytest.raises(StateError, match=r"expected a State or a \(label, State\)"):
        await run_action(BadReturn(), BASE)


async def test_node_undeclared_write() -> None:
    class Writer(Node):
        writes = ["a"]

        def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
            return state.update(a=1, b=2)

    with pytest.raises(StateError, match="'w' wrote state key 'b'"):
        await run_action(Writer(name="w"), BASE)


async def test_node_defaults_and_config() -> None:
    plain = Node()
    out = await both(plain)
    assert out.state == BASE and out.result is None and not out.state.delta
    with pytest.raises(ConfigError, match="max_retries"):
        Node(max_retries=0)
    pocket = Node(3, 0.5)  # PocketFlow's positional Node(max_retries, wait)
    assert (pocket.max_retries, pocket.wait) == (3, 0.5)
    batch = BatchNode(2, 0.1, mode="parallel")
    assert (batch.max_retries, batch.wait, batch.mode) == (2, 0.1, "parallel")
    node = Summarise(max_retries=2, wait=0.1, name="s", reads=["x"], writes=["summary"])
    assert (node.max_retries, node.wait, node.name, node.reads) == (2, 0.1, "s", ["x"])

    class NoResult(Summarise):
        record_result = False

    assert (await run_action(NoResult(), BASE)).result is None


# ---------------------------------------------------------------- batches


class Square(BatchNode):
    reads = ["items"]
    writes = ["squares"]

    def __init__(self, fail_first: set[int] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_first = set(fail_first or ())
        self.calls: dict[int, int] = {}
        self.lock = threading.Lock()

    def prep(self, state: State) -> Any:
        return state["items"]

    def exec(self, item: Any) -> Any:
        with self.lock:
            self.calls[item] = self.calls.get(item, 0) + 1
            if item in self.fail_first and self.calls[item] == 1:
                raise ConnectionError(f"item {item} flaked")
        if item == 99:
            raise ValueError("bad item")
        return item * item

    def exec_fallback(self, item: Any, exc: Exception) -> Any:
        if item == 99:
            raise exc
        return -1

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return state.update(squares=exec_res)


ITEMS = State.based({"items": [5, 3, 9, 1, 7, 2]})


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
async def test_batch_results_in_input_order_with_per_item_retries(mode: Any) -> None:
    node = Square(fail_first={3, 7}, max_retries=2, mode=mode, concurrency=3)
    out = await run_action(node, ITEMS)
    assert out.state["squares"] == [25, 9, 81, 1, 49, 4]
    assert out.result == [25, 9, 81, 1, 49, 4]
    assert out.attempt == 2  # the most any item needed
    assert node.calls == {5: 1, 3: 2, 9: 1, 1: 1, 7: 2, 2: 1}

    node = Square(fail_first={3, 7}, max_retries=2, mode=mode, concurrency=3)
    sync = await run_action(node, ITEMS)
    assert sync.state["squares"] == [25, 9, 81, 1, 49, 4] and sync.attempt == 2


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
async def test_batch_per_item_fallback_and_failure(mode: Any) -> None:
    node = Square(fail_first={3}, max_retries=1, mode=mode)
    out = await run_action(node, ITEMS)
    assert out.state["squares"] == [25, -1, 81, 1, 49, 4]  # 3 fell back after 1 attempt

    state = State.based({"items": [1, 2, 99, 4]})
    with pytest.raises(ActionError, match="item 2 of 4") as info:
        await run_action(Square(max_retries=2, mode=mode), state)
    assert isinstance(info.value.__cause__, ValueError) and info.value.attempt == 2
    with pytest.raises(ActionError, match="item 2 of 4"):
        await run_action(Square(max_retries=2, mode=mode), state)


async def test_batch_empty_and_bad_items() -> None:
    out = await both(Square(), State.based({"items": []}))
    assert out.state["squares"] == [] and out.attempt == 1
    with pytest.raises(StateError, match="list of items"):
        await run_action(Square(), State.based({"items": "abc"}))
    with pytest.raises(StateError, match="mode"):
        Square(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(StateError, match="concurrency"):
        Square(concurrency=0)


class Sleeper(BatchNode):
    writes = ["done"]
    mode = "parallel"

    def __init__(self, delay: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.running = 0
        self.peak = 0
        self.cancelled = 0

    def prep(self, state: State) -> Any:
        return list(range(state["count"]))

    async def exec(self, item: Any) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return item

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return state.update(done=exec_res)


async def test_parallel_batch_really_overlaps() -> None:
    n, delay = 6, 0.2
    node = Sleeper(delay, concurrency=n)
    out = await run_action(node, State.based({"count": n}))
    assert out.state["done"] == list(range(n))
    assert node.peak == n  # all n were sleeping at once (structure, not a clock)


async def test_parallel_batch_respects_the_limit() -> None:
    node = Sleeper(0.01, concurrency=2)
    out = await run_action(node, State.based({"count": 7}))
    assert out.state["done"] == list(range(7))
    assert node.peak == 2


class SyncSleeper(BatchNode):
    writes = ["done"]
    mode = "parallel"

    def prep(self, state: State) -> Any:
        return list(range(state["count"]))

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.together = threading.Barrier(kw["concurrency"], timeout=60)

    def exec(self, item: Any) -> Any:
        # every item waits here until all of them are running at once: if they ran one
        # after another, the barrier would break (a structural check, not a clock)
        self.together.wait()
        return threading.get_ident()

    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return state.update(done=len(exec_res))


async def test_parallel_sync_exec_overlaps_in_threads() -> None:
    n = 5
    node = SyncSleeper(concurrency=n)
    state = State.based({"count": n})
    out = await run_action(node, state)
    assert out.state["done"] == n
    assert len(set(out.result)) == n  # n threads, all inside exec at once (the barrier)


async def test_parallel_failure_cancels_the_rest() -> None:
    class FailFast(Sleeper):
        async def exec(self, item: Any) -> Any:
            if item == 0:
                raise RuntimeError("first item broke")
            return await super().exec(item)

    node = FailFast(60.0, concurrency=4)
    with pytest.raises(ActionError, match="item 0 of 4"):
        await run_action(node, State.based({"count": 4}))
    assert node.cancelled == 3  # the sleeping siblings were cancelled, not awaited


async def test_batch_action_decorator() -> None:
    seen: list[int] = []

    @batch_action(items="orders", into="checked", mode="parallel", concurrency=2, max_retries=2)
    async def check(order: dict[str, Any]) -> dict[str, Any]:
        seen.append(order["id"])
        if order["id"] == 2 and seen.count(2) == 1:
            raise ConnectionError("flaky")
        await asyncio.sleep(0)
        return {"id": order["id"], "ok": order["total"] < 100}

    assert check.is_async and check.reads == ["orders"] and check.writes == ["checked"]
    assert check.name == "check"
    state = State.based({"orders": [{"id": i, "total": i * 40} for i in range(4)]})
    out = await run_action(check, state)
    assert [c["ok"] for c in out.state["checked"]] == [True, True, True, False]
    assert out.result is None and out.attempt == 2
    assert out.state.delta.keys == {"checked"}

    @batch_action(items="orders", into="ids", fallback=lambda item, exc: None)
    def ident(order: dict[str, Any]) -> int:
        if order["id"] == 1:
            raise ValueError("no")
        return int(order["id"])

    out = await both(ident, state)
    assert out.state["ids"] == [0, None, 2, 3]
    with pytest.raises(StateError, match="'orders'"):
        await run_action(ident, BASE)
    with pytest.raises(StateError, match="into"):
        batch_action(items="a", into="b", writes=["c"])(lambda item: item)


def test_function_action_type() -> None:
    assert isinstance(bump, FunctionAction) and isinstance(bump, Action)
    with pytest.raises(ConfigError, match="needs a function"):
        FunctionAction(42, reads=[], writes=[])  # type: ignore[arg-type]
