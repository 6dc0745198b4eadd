"""State operations: their shapes are checked at the store boundary; folding applies them."""

from __future__ import annotations

from typing import Any

import pytest

from statelog.eventstore import (
    EncodingError,
    Event,
    InvalidEventError,
    MemoryEventStore,
    apply_ops,
    diff_ops,
    fold,
)


def ev(ops: Any) -> Event:
    return Event(partition_key="", app_id="a", sequence_id=0, kind="k", ops=ops)


@pytest.mark.parametrize(
    ("ops", "match"),
    [
        ({"op": "set"}, r"expected a list of ops at `\$\.ops`"),
        (["set"], r"expected an op object at `\$\.ops\[0\]`, got str"),
        ([{"op": "zap", "key": "a"}], r"at `\$\.ops\[0\]\.op`, got str 'zap'"),
        ([{"op": "set", "key": 1, "value": 1}], r"a str at `\$\.ops\[0\]\.key`, got int"),
        ([{"op": "set", "key": "a"}], "members op, key, value"),
        ([{"op": "delete", "key": "a", "value": 1}], r"members op, key at"),
        ([{"op": "extend", "key": "a", "values": 1}], r"a list at `\$\.ops\[0\]\.values`"),
        ([{"op": "merge", "key": "a", "value": [1]}], r"an object at `\$\.ops\[0\]\.value`"),
        ([{"op": "increment", "key": "a", "by": "1"}], r"a number at `\$\.ops\[0\]\.by`"),
    ],
)
async def test_malformed_ops_are_refused_with_nothing_written(ops: Any, match: str) -> None:
    store = MemoryEventStore()
    with pytest.raises(InvalidEventError, match=match):
        await store.append([ev(ops)], expected_sequence=-1)
    assert await store.last_sequence("", "a") == -1


def test_folding_applies_each_op_and_never_changes_the_event() -> None:
    items = [1, 2]
    cfg = {"a": 1}
    first = ev(
        [{"op": "set", "key": "xs", "value": items}, {"op": "set", "key": "cfg", "value": cfg}]
    )
    second = ev(
        [
            {"op": "append", "key": "xs", "value": 3},
            {"op": "extend", "key": "xs", "values": [4, 5]},
            {"op": "merge", "key": "cfg", "value": {"b": 2}},
            {"op": "increment", "key": "n", "by": 2},
            {"op": "increment", "key": "n", "by": 0.5},
            {"op": "append", "key": "new", "value": "x"},
            {"op": "delete", "key": "missing"},
        ]
    )
    assert fold([first, second]) == {
        "xs": [1, 2, 3, 4, 5],
        "cfg": {"a": 1, "b": 2},
        "n": 2.5,
        "new": ["x"],
    }
    assert items == [1, 2] and cfg == {"a": 1}  # the first event's values are untouched
    with pytest.raises(EncodingError, match="expected a list"):
        apply_ops({"xs": 1}, [{"op": "append", "key": "xs", "value": 2}], set())


@pytest.mark.parametrize(
    ("made", "then", "expected"),
    [
        (
            {"op": "append", "key": "k", "value": 1},
            {"op": "merge", "key": "k", "value": {}},
            "an object",
        ),
        (
            {"op": "merge", "key": "k", "value": {"a": 1}},
            {"op": "append", "key": "k", "value": 2},
            "a list",
        ),
        (
            {"op": "extend", "key": "k", "values": [1]},
            {"op": "merge", "key": "k", "value": {}},
            "an object",
        ),
    ],
    ids=["append-then-merge", "merge-then-append", "extend-then-merge"],
)
def test_a_container_the_fold_made_is_still_type_checked(
    made: dict[str, Any], then: dict[str, Any], expected: str
) -> None:
    # the fold grows its own containers in place; the other kind of op on one is
    # still a typed EncodingError, not an AttributeError from list.update/dict.append
    with pytest.raises(EncodingError, match=f"expected {expected}"):
        fold([ev([made]), ev([then])])


def test_diff_ops_keeps_zero_and_minus_zero_apart() -> None:
    # equal in Python, stored apart: a change from one to the other is a change
    assert diff_ops({"a": 0.0}, {"a": -0.0}) == [{"op": "set", "key": "a", "value": -0.0}]
    assert diff_ops({"d": {"x": 1, "y": 0.0}}, {"d": {"x": 1, "y": -0.0}}) == [
        {"op": "merge", "key": "d", "value": {"y": -0.0}}
    ]
    assert diff_ops({"a": -0.0}, {"a": -0.0}) == []


def test_diff_ops_gives_the_smallest_change() -> None:
    before = {"log": list(range(100)), "cfg": {"a": 1, "b": 2}, "gone": 1, "n": 1}
    after = {"log": [*range(100), 100], "cfg": {"a": 1, "b": 3, "c": 4}, "n": 2}
    assert diff_ops(before, after) == [
        {"op": "append", "key": "log", "value": 100},
        {"op": "merge", "key": "cfg", "value": {"b": 3, "c": 4}},
        {"op": "set", "key": "n", "value": 2},
        {"op": "delete", "key": "gone"},
    ]
    state = dict(before)
    apply_ops(state, diff_ops(before, after), set())
    assert state == after


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "set", "key": "a", "value": 1}, {"op": "delete", "key": "b"}],  # compact w/d
        [{"op": "delete", "key": "b"}, {"op": "set", "key": "a", "value": 1}],  # order kept
        [{"op": "set", "key": "a", "value": 1}, {"op": "set", "key": "a", "value": 2}],
        [{"op": "append", "key": "l", "value": 1}, {"op": "set", "key": "a", "value": [1]}],
    ],
)
async def test_stored_ops_read_back_in_order_and_verify(tmp_path: Any, ops: Any) -> None:
    from statelog.eventstore import SQLiteEventStore

    async with SQLiteEventStore(tmp_path / "ops.db") as store:
        await store.append([ev(ops)], expected_sequence=-1)
        [back] = await store.read("", "a")
        assert back.ops == ops
        assert await store.verify() is None
        assert (await store.fold_stream("", "a"))[0] == fold([ev(ops)])
