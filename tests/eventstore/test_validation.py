"""What ``append`` accepts reads back identically; everything else is refused.

The per-value and per-field cases run against every backend in the contract
suite (tests/contract/store_contract.py). Here: the limits at their edges, the
wording of the errors, and two laws checked by Hypothesis on the memory store
and the SQLite store in both codecs:

* any JSON-compatible value is accepted and reads back identically (``read``,
  ``read_all``, ``fold_stream``), and the chain verifies;
* any value at all (sets, bytes, NaN, non-str keys, deep nesting, lone
  surrogates, out-of-range ints, wrong field types) is either refused with
  ``EncodingError``/``InvalidEventError`` and nothing is written, or it reads
  back identically.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog.eventstore import (
    MAX_VALUE_DEPTH,
    EncodingError,
    ErrorInfo,
    Event,
    EventStore,
    InvalidEventError,
    Lineage,
    MemoryEventStore,
    SQLiteEventStore,
    fold,
    to_plain,
    validate_batch,
)
from tests.ops_support import v2

PK = "tenant"
# what a JSON number holds exactly, which the hash's canonical form (RFC 8785) needs
INT_MIN, INT_MAX = -(2**53 - 1), 2**53 - 1
BACKENDS = ["memory", "sqlite-json", "sqlite-msgpack"]


class StoreRunner:
    """One store on one event loop, driven from a synchronous (Hypothesis) test."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.runner = asyncio.Runner()
        self.streams = 0
        if backend == "memory":
            self.store: EventStore = self.run(self._memory())
        else:
            codec = backend.removeprefix("sqlite-")
            self.store = self.run(SQLiteEventStore.open(directory / "log.db", codec=codec))  # type: ignore[arg-type]

    @staticmethod
    async def _memory() -> EventStore:
        return MemoryEventStore()

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def new_app(self) -> str:
        self.streams += 1
        return f"app-{self.streams}"

    def close(self) -> None:
        self.run(self.store.aclose())
        self.runner.close()


@pytest.fixture(params=BACKENDS)
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreRunner]:
    store = StoreRunner(request.param, tmp_path)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=BACKENDS, scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreRunner]:
    """One store for every example of a Hypothesis test (each example a new stream)."""
    store = StoreRunner(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield store
    finally:
        store.close()


def ev(app_id: str, seq: int = 0, **fields: Any) -> Event:
    """``writes``/``deletes`` become ``set``/``delete`` ops (tests.ops_support.v2)."""
    fields.setdefault("kind", "action_completed")
    return v2(partition_key=PK, app_id=app_id, sequence_id=seq, **fields)


def deep(levels: int) -> Any:
    """``levels`` lists, one inside the other, around a 0."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def same_event(a: Event, b: Event) -> bool:
    return all(
        same(getattr(a, name), getattr(b, name))
        for name in Event.__struct_fields__
        if name not in ("prev_hash", "hash")
    )


def append_and_check(runner: StoreRunner, event: Event) -> bool:
    """Append ``event`` alone to a new stream: True if it was stored (and reads
    back identically everywhere), False if it was refused (and nothing was written).
    Either way the stream goes on with a good event and the log verifies."""
    store, run = runner.store, runner.run
    before = len(run(store.read_all()))
    app_id = event.app_id
    try:
        [recorded] = run(store.append([event], expected_sequence=-1))
    except (EncodingError, InvalidEventError) as exc:
        assert "`$." in str(exc), str(exc)
        assert run(store.last_sequence(PK, app_id)) == -1
        assert run(store.read(PK, app_id)) == []
        assert len(run(store.read_all())) == before
        run(store.append([ev(app_id, writes={"n": 0})], expected_sequence=-1))
        assert run(store.verify(PK, app_id)) is None
        return False
    [back] = run(store.read(PK, app_id))
    assert back == recorded.event
    assert same_event(back, event), (back, event)
    [(_, via_all)] = run(store.read_all(from_position=recorded.position))
    assert same_event(via_all, event)
    state, last = run(store.fold_stream(PK, app_id))
    assert last == 0 and same(state, fold([event]))
    assert run(store.verify(PK, app_id)) is None
    # what was read back passes the same checks again (an import, a copy)
    validate_batch([back], -1)
    return True


# ---------------------------------------------------------------- the edges of the limits


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        # an op's value sits two levels down: the ops list, the op object
        ({"writes": {"a": deep(MAX_VALUE_DEPTH - 2)}}, True),
        ({"writes": {"a": deep(MAX_VALUE_DEPTH - 1)}}, False),
        ({"result": deep(MAX_VALUE_DEPTH)}, True),
        ({"result": deep(MAX_VALUE_DEPTH + 1)}, False),
        ({"inputs": {"a": {"b": deep(MAX_VALUE_DEPTH - 2)}}}, True),
        ({"inputs": {"a": {"b": deep(MAX_VALUE_DEPTH - 1)}}}, False),
    ],
    ids=["writes-at", "writes-over", "result-at", "result-over", "inputs-at", "inputs-over"],
)
def test_nesting_is_refused_just_over_the_limit(
    runner: StoreRunner, fields: dict[str, Any], stored: bool
) -> None:
    assert append_and_check(runner, ev(runner.new_app(), **fields)) is stored


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (INT_MIN, True),
        (INT_MAX, True),
        (2**63 - 1, False),
        (2**64 - 1, False),
        (INT_MIN - 1, False),
        (INT_MAX + 1, False),
        (-(2**100), False),
        (2**100, False),
    ],
)
def test_ints_are_stored_in_the_range_json_numbers_hold(
    runner: StoreRunner, value: int, stored: bool
) -> None:
    event = ev(runner.new_app(), writes={"n": value}, inputs={"n": [value]}, result=value)
    assert append_and_check(runner, event) is stored


@pytest.mark.parametrize(
    "value",
    [
        -0.0,
        5e-324,
        1.7976931348623157e308,
        0.1,
        "",
        "\x00",
        "\U0001d11e é",
        {"": 1, "a.b": [], "[0]": {}},
        [[], {}, [None, True, False]],
    ],
    ids=["-0.0", "tiny", "huge", "0.1", "empty", "nul", "astral", "odd-keys", "empties"],
)
def test_edge_values_that_are_json_read_back_identically(runner: StoreRunner, value: Any) -> None:
    event = ev(runner.new_app(), writes={"v": value}, inputs={"v": value}, result=value)
    assert append_and_check(runner, event)


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 678901),  # naive: read back naive
        datetime(2026, 1, 2, tzinfo=timezone(timedelta(0), "Z")),
    ],
    ids=["utc", "naive", "zero-offset"],
)
def test_timestamps_in_utc_or_naive_read_back(runner: StoreRunner, timestamp: datetime) -> None:
    assert append_and_check(runner, ev(runner.new_app(), timestamp=timestamp))


@pytest.mark.parametrize(
    "tz",
    [timezone(timedelta(hours=2)), timezone(timedelta(seconds=30)), timezone(-timedelta(hours=5))],
    ids=["+02:00", "+00:00:30", "-05:00"],
)
def test_timestamps_with_an_offset_are_refused(runner: StoreRunner, tz: timezone) -> None:
    # msgpack keeps the instant but not the offset, so the hash would not verify
    event = ev(runner.new_app(), timestamp=datetime(2026, 1, 2, tzinfo=tz))
    assert not append_and_check(runner, event)


def test_every_field_of_the_right_type_is_accepted(runner: StoreRunner) -> None:
    event = ev(
        runner.new_app(),
        action="a",
        next_action="b",
        inputs={"i": 1},
        writes={"w": [1.5, "x", None, True, {"k": -1}]},
        deletes=["gone", ""],
        result={"r": "ok"},
        error=ErrorInfo(type="ValueError", message="boom ✓"),
        timestamp=datetime(2026, 5, 6, 7, 8, 9, 10, tzinfo=UTC),
        duration=-0.0,
        attempt=INT_MAX,
        parent=Lineage(partition_key="", app_id="root", sequence_id=0, relation="child"),
        correlation_id="",
    )
    assert append_and_check(runner, event)


# ---------------------------------------------------------------- the wording


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            {"writes": {"profile": {"tags": ["a", "b", {1, 2}]}}},
            EncodingError,
            "event tenant/app-1#0: expected JSON data (None, bool, int, float, str, list, "
            "dict with str keys) at `$.ops[0].value.tags[2]`, got a set",
        ),
        (
            {"writes": {"t": (1, 2)}},
            EncodingError,
            "at `$.ops[0].value`, got a tuple (it would read back as a list)",
        ),
        (
            {"inputs": {"x": math.nan}},
            EncodingError,
            "expected a finite float at `$.inputs.x`, got nan",
        ),
        (
            {"result": {"k": {3: "v"}}},
            EncodingError,
            "expected str dict keys at `$.result.k`, got the int key 3",
        ),
        (
            {"writes": {"big": [2**64]}},
            EncodingError,
            "expected an int within +-(2**53 - 1) (a JSON number holds it exactly) "
            "at `$.ops[0].value[0]`, got 18446744073709551616",
        ),
        (
            {"writes": {"s": "x\ud800"}},
            EncodingError,
            "expected a str without lone surrogates at `$.ops[0].value`, got 'x\\ud800'",
        ),
        (
            {"deletes": ["a", 1]},
            InvalidEventError,
            "event tenant/app-1#0: expected a str at `$.ops[1].key`, got int 1",
        ),
        (
            {"timestamp": "2026-01-02"},
            InvalidEventError,
            "expected datetime at `$.timestamp`, got str '2026-01-02'",
        ),
        ({"attempt": True}, InvalidEventError, "expected int at `$.attempt`, got bool True"),
        (
            {"duration_us": 2.0},
            InvalidEventError,
            "expected int at `$.duration_us`, got float 2.0",
        ),
    ],
    ids=["set", "tuple", "nan", "int-key", "int-range", "surrogate", "deletes", "ts", "bool", "du"],
)
async def test_the_error_says_where_what_was_expected_and_what_came_in(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with MemoryEventStore() as store:
        with pytest.raises(error) as info:
            await store.append([ev("app-1", **fields)], expected_sequence=-1)
    assert message in str(info.value)
    if isinstance(info.value, EncodingError):
        assert info.value.path is not None and info.value.path in message


async def test_the_depth_error_names_the_limit() -> None:
    async with MemoryEventStore() as store:
        with pytest.raises(EncodingError) as info:
            await store.append([ev("a", writes={"d": deep(100)})], expected_sequence=-1)
    path = "$.ops[0].value" + "[0]" * (MAX_VALUE_DEPTH - 2)
    assert info.value.path == path
    assert f"expected at most {MAX_VALUE_DEPTH} levels of nested dicts and lists" in str(info.value)


# ---------------------------------------------------------------- to_plain and the store


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        datetime(2026, 1, 2, tzinfo=UTC),
        {"t": (1, [2, (3,)])},
        [ErrorInfo(type="a", message="b")],
    ],
    ids=["tuple", "datetime", "nested-tuple", "struct"],
)
def test_what_to_plain_returns_the_store_accepts(runner: StoreRunner, value: Any) -> None:
    # the engine converts values with to_plain before it builds an event
    plain = to_plain(value, path="$.writes.v")
    assert append_and_check(runner, ev(runner.new_app(), writes={"v": plain}))


class _Label(str):
    """A str subclass msgspec cannot write as it is."""


class _Colour(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (_Colour.RED, "red"),
        ([_Level.HIGH], [3]),
        (collections.OrderedDict(b=1), {"b": 1}),
    ],
    ids=["enum", "int-enum", "ordered-dict"],
)
def test_to_plain_turns_subclasses_into_their_json_form(
    runner: StoreRunner, value: Any, plain: Any
) -> None:
    # a subclass of a plain type is converted, not passed on as it is
    got = to_plain(value, path="$.writes.v")
    assert got == plain and type(got) is type(plain)
    assert append_and_check(runner, ev(runner.new_app(), writes={"v": got}))


@pytest.mark.parametrize("value", [_Label("x"), {"k": [_Label("x")]}], ids=["top", "nested"])
def test_to_plain_names_a_str_subclass_it_cannot_write(value: Any) -> None:
    # it used to pass through to_plain and fail later with msgspec's TypeError
    with pytest.raises(EncodingError, match="_Label") as info:
        to_plain(value, path="$.writes.v")
    assert info.value.path is not None and info.value.path.startswith("$.writes.v")


# ---------------------------------------------------------------- the laws

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)
json_dicts = st.dictionaries(st.text(max_size=6), json_values, max_size=5)

odd_text = st.text(st.characters(categories=["Cs", "Ll", "Nd"]), max_size=4)
hashables = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
wide_scalars = (
    json_scalars
    | st.integers()
    | st.floats()
    | odd_text
    | st.binary(max_size=4)
    | st.datetimes()
    | st.decimals()
    | st.uuids()
    | st.integers(MAX_VALUE_DEPTH - 3, MAX_VALUE_DEPTH + 2).map(deep)
)
wide_values = st.recursive(
    wide_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.dictionaries(hashables | odd_text, inner, max_size=3)
    ),
    max_leaves=12,
)
wide_dicts = st.dictionaries(st.text(max_size=4) | odd_text, wide_values, max_size=4) | wide_values

_IDENTITY = ("partition_key", "app_id", "sequence_id", "prev_hash", "hash")

#: Fields of the right types, with values that may be anything (sets, NaN,
#: surrogates, offsets, deep nesting, huge ints) ...
right_fields = st.fixed_dictionaries(
    {},
    optional={
        "action": st.none() | st.text(max_size=4) | odd_text,
        "next_action": st.none() | st.text(max_size=4),
        "inputs": st.dictionaries(st.text(max_size=4) | odd_text, wide_values, max_size=3),
        "writes": st.dictionaries(st.text(max_size=4) | odd_text, wide_values, max_size=3),
        "deletes": st.lists(st.text(max_size=3) | odd_text, max_size=3),
        "result": wide_values,
        "error": st.none() | st.builds(ErrorInfo, type=st.text(max_size=3), message=odd_text),
        "timestamp": st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones()),
        "duration_us": st.integers() | st.floats(),
        "attempt": st.integers(),
        "parent": st.none()
        | st.builds(
            Lineage,
            partition_key=st.text(max_size=3),
            app_id=st.text(max_size=3) | odd_text,
            sequence_id=st.integers(),
        ),
        "correlation_id": st.none() | st.text(max_size=4) | odd_text,
    },
)
#: ... and now and then one field of any type at all.
wide_fields = st.builds(
    lambda right, wrong: {**right, **wrong},
    right_fields,
    st.dictionaries(
        st.sampled_from([name for name in Event.__struct_fields__ if name not in _IDENTITY]),
        wide_values | wide_dicts,
        max_size=1,
    ),
)


LAW_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@LAW_SETTINGS
@given(
    inputs=json_dicts,
    writes=json_dicts,
    result=json_values,
    deletes=st.lists(st.text(max_size=4), max_size=3),
    duration=st.floats(-1e9, 1e9),  # seconds: duration_us stays a safe int
    attempt=st.integers(INT_MIN, INT_MAX),
    timestamp=st.datetimes(timezones=st.none() | st.just(UTC)),
)
def test_json_values_are_accepted_and_read_back_identically(
    shared: StoreRunner,
    inputs: dict[str, Any],
    writes: dict[str, Any],
    result: Any,
    deletes: list[str],
    duration: float,
    attempt: int,
    timestamp: datetime,
) -> None:
    event = ev(
        shared.new_app(),
        inputs=inputs,
        writes=writes,
        result=result,
        deletes=deletes,
        duration=duration,
        attempt=attempt,
        timestamp=timestamp,
    )
    assert append_and_check(shared, event)


@LAW_SETTINGS
@given(fields=wide_fields)
def test_any_value_is_refused_or_reads_back_identically(
    shared: StoreRunner, fields: dict[str, Any]
) -> None:
    append_and_check(shared, ev(shared.new_app(), **fields))


async def test_an_unhashable_identity_is_refused_by_the_memory_store() -> None:
    # (the SQLite and Kafka stores look the stream up before they validate)
    async with MemoryEventStore() as store:
        bad = Event(partition_key=["p"], app_id="a", sequence_id=0, kind="k")  # type: ignore[arg-type]
        with pytest.raises(
            InvalidEventError, match=r"expected str at `\$.partition_key`, got list"
        ):
            await store.append([bad], expected_sequence=-1)
        assert await store.streams() == []
