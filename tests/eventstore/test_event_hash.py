"""The v2 hash covers the RFC 8785 bytes of every field but ``hash``: the fast path
(a msgspec struct) gives exactly the bytes of the ``rfc8785`` package."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from statelog.eventstore import (
    EncodingError,
    ErrorInfo,
    Event,
    Lineage,
    MemoryEventStore,
    canonical_bytes,
)
from statelog.eventstore._codec import hash_view

names = st.text(max_size=6)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
ops = st.lists(
    st.builds(lambda k, v: {"op": "set", "key": k, "value": v}, names, values)
    | st.builds(lambda k, v: {"op": "append", "key": k, "value": v}, names, values)
    | st.builds(lambda k, b: {"op": "increment", "key": k, "by": b}, names, st.integers(-9, 9))
    | st.builds(lambda k: {"op": "delete", "key": k}, names),
    max_size=3,
)
events = st.builds(
    Event,
    partition_key=names,
    app_id=names.filter(bool),
    sequence_id=st.integers(0, 10**6),
    kind=st.sampled_from(["action_completed", "run_started", "attempt_failed", "x"]),
    action=st.none() | names,
    next_action=st.none() | names,
    inputs=st.dictionaries(names, values, max_size=3),
    ops=ops,
    result=values,
    error=st.none()
    | st.builds(ErrorInfo, type=names, message=names, traceback=st.lists(names, max_size=2)),
    timestamp=st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))]),
    ),
    duration_us=st.integers(0, 10**9),
    attempt=st.integers(1, 9),
    parent=st.none()
    | st.builds(
        Lineage,
        partition_key=names,
        app_id=names,
        sequence_id=st.integers(0, 99),
        relation=st.sampled_from(["fork", "child"]),
    ),
    actor=st.none() | names,
    correlation_id=st.none() | names,
    data=st.dictionaries(names, values, max_size=2),
    prev_hash=st.text("0123456789abcdef", min_size=64, max_size=64) | st.just(""),
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_canonical_bytes_are_rfc8785_of_the_hash_view(event: Event) -> None:
    view = hash_view(event)
    assert set(view) == set(Event.__struct_fields__) - {"hash", "legacy"}
    assert canonical_bytes(event) == rfc8785.dumps(view)
    assert view["timestamp"].endswith("Z") and len(view["timestamp"]) == 27


float_free = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
timestamps = st.datetimes(
    # a day in: 0001-01-01 at +05:00 is before year 1 in UTC, which datetime cannot hold
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=5))])
    | st.none(),
)


@settings(max_examples=500, deadline=None)
@given(
    events.map(lambda e: msgspec.structs.replace(e, result=None, inputs={}, data={}, error=None)),
    float_free,
    timestamps,
    st.booleans(),
)
def test_the_float_free_fast_path_is_rfc8785_at_every_timestamp(
    event: Event, result: object, timestamp: datetime, whole_second: bool
) -> None:
    """No float: the msgspec path, which writes an aware-UTC timestamp itself -
    also at microsecond 0 (msgspec leaves the fraction out there), naive, or in
    another zone - gives the rfc8785 bytes."""
    if whole_second:
        timestamp = timestamp.replace(microsecond=0)
    ops = [op for op in event.ops if "by" not in op and not _has_float(op)]
    event = msgspec.structs.replace(event, ops=ops, result=result, timestamp=timestamp)
    view = hash_view(event)
    assert canonical_bytes(event) == rfc8785.dumps(view)
    assert view["timestamp"].endswith("Z") and len(view["timestamp"]) == 27


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


@pytest.mark.parametrize("microsecond", [0, 1, 500_000, 999_999])
def test_a_utc_timestamp_is_written_with_six_digits_and_z(microsecond: int) -> None:
    stamp = datetime(2026, 12, 7, 8, 9, 10, microsecond, tzinfo=UTC)
    event = Event(partition_key="", app_id="a", sequence_id=0, kind="k", timestamp=stamp)
    assert f'"timestamp":"2026-12-07T08:09:10.{microsecond:06d}Z"'.encode() in canonical_bytes(
        event
    )


@pytest.mark.parametrize("big", [2**53, -(2**53), 10**20])
def test_an_unsafe_int_has_no_hash(big: int) -> None:
    event = Event(partition_key="", app_id="a", sequence_id=0, kind="k", result={"n": [big]})
    with pytest.raises(EncodingError) as info:
        canonical_bytes(event)
    assert info.value.path == "$.result.n[0]"


async def test_append_refuses_nan_with_nothing_written() -> None:
    store = MemoryEventStore()
    bad = Event(
        partition_key="",
        app_id="a",
        sequence_id=0,
        kind="k",
        ops=[{"op": "set", "key": "x", "value": float("nan")}],
    )
    with pytest.raises(EncodingError):
        await store.append([bad], expected_sequence=-1)
    assert await store.last_sequence("", "a") == -1


@settings(max_examples=200, deadline=None)
@given(events)
async def test_an_appended_event_is_hashed_over_its_rfc8785_bytes(event: Event) -> None:
    """The store's append path (which skips the hash's own float test for ops it
    found to be scalar sets and appends) seals the same bytes as ``rfc8785``."""
    import hashlib

    store = MemoryEventStore()
    first = msgspec.structs.replace(
        event,
        partition_key="p",
        app_id="a",
        sequence_id=0,
        timestamp=event.timestamp.replace(tzinfo=UTC),  # (the store takes UTC only)
        prev_hash="",
        hash="",
    )
    (recorded,) = await store.append([first], expected_sequence=-1)
    sealed = recorded.event
    assert sealed.hash == hashlib.sha256(rfc8785.dumps(hash_view(sealed))).hexdigest()


@pytest.mark.parametrize("value", [2**53, -(2**53), 1.5, float("inf")])
@pytest.mark.parametrize("op", ["set", "append"])
async def test_a_scalar_op_value_is_still_checked_on_append(op: str, value: object) -> None:
    """An unsafe int or a non-finite float in a set/append op is refused with
    nothing written; a finite float is hashed by the RFC 8785 path."""
    import hashlib

    store = MemoryEventStore()
    event = Event(
        partition_key="",
        app_id="a",
        sequence_id=0,
        kind="k",
        ops=[{"op": op, "key": "x", "value": value}],
    )
    if value == 1.5:
        (recorded,) = await store.append([event], expected_sequence=-1)
        view = hash_view(recorded.event)
        assert recorded.event.hash == hashlib.sha256(rfc8785.dumps(view)).hexdigest()
        return
    with pytest.raises(EncodingError):
        await store.append([event], expected_sequence=-1)
    assert await store.last_sequence("", "a") == -1
