"""The v2 hash covers the RFC 8785 bytes of every field but ``hash``: the fast path
(a msgspec struct) gives exactly the bytes of the ``rfc8785`` package."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

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
