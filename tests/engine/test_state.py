"""State: immutability, Burr-shaped operations, delta semantics, encoding errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statelog.engine import StateError
from statelog.engine._state import Delta, State
from statelog.eventstore import EncodingError


def replay(base: dict[str, Any], delta: Delta) -> dict[str, Any]:
    out = dict(base)
    out.update(delta.writes)
    for key in delta.deletes:
        out.pop(key, None)
    return out


# ---------------------------------------------------------------- basics


def test_state_is_a_mapping() -> None:
    s = State({"a": 1, "b": [1, 2]})
    assert s["a"] == 1
    assert "b" in s and "c" not in s
    assert len(s) == 2
    assert sorted(s) == ["a", "b"]
    assert s.get("c") is None and s.get("c", 3) == 3
    assert s == {"a": 1, "b": [1, 2]}
    assert s == State({"a": 1, "b": [1, 2]})
    assert dict(s.items()) == {"a": 1, "b": [1, 2]}
    assert list(s.values()) == [1, [1, 2]]
    assert "State(" in repr(s)
    with pytest.raises(KeyError):
        s["zzz"]


def test_operations_never_mutate() -> None:
    s0 = State.based({"n": 1, "xs": [1], "keep": "k"})
    before = s0.get_all()
    s0.update(n=2)
    s0.append(xs=2)
    s0.extend(xs=[3, 4])
    s0.increment(n=5)
    s0.wipe(delete=["keep"])
    s0.merge({"m": 1})
    s0.subset("n")
    assert s0.get_all() == before
    assert s0["xs"] == [1]
    assert not s0.delta


def test_get_all_is_a_copy() -> None:
    s = State({"a": 1})
    d = s.get_all()
    d["a"] = 2
    assert s["a"] == 1


def test_update_append_extend_increment() -> None:
    s = State.based({"n": 1, "xs": [1]})
    s = s.update(name="x").append(xs=2).extend(xs=(3, 4)).increment(n=2, fresh=5)
    assert s.get_all() == {"n": 3, "xs": [1, 2, 3, 4], "name": "x", "fresh": 5}
    s = s.append(new=1).extend(other=[1, 2])
    assert s["new"] == [1] and s["other"] == [1, 2]
    assert s.increment(n=0.5)["n"] == 3.5


def test_wipe_and_subset() -> None:
    s = State.based({"a": 1, "b": 2, "c": 3})
    assert s.wipe(delete=["a", "missing"]).get_all() == {"b": 2, "c": 3}
    assert s.wipe(keep=["a"]).get_all() == {"a": 1}
    assert s.wipe().get_all() == {}
    assert s.wipe(delete=["missing"]) is s
    assert s.subset("a", "b", "nope").get_all() == {"a": 1, "b": 2}
    assert s.subset("a").delta == Delta({}, ["b", "c"])
    with pytest.raises(KeyError, match="nope"):
        s.subset("a", "nope", ignore_missing=False)
    with pytest.raises(StateError, match="not both"):
        s.wipe(delete=["a"], keep=["b"])
    with pytest.raises(StateError):
        s.wipe(delete="a")


def test_merge() -> None:
    s = State.based({"a": 1, "b": 2})
    m = s.merge({"b": 3, "c": [4]})
    assert m.get_all() == {"a": 1, "b": 3, "c": [4]}
    assert m.delta == Delta({"b": 3, "c": [4]}, [])
    assert s.merge(State({"z": 1}))["z"] == 1
    assert s.merge(State()) is s
    with pytest.raises(StateError):
        s.merge([("a", 1)])  # type: ignore[arg-type]


def test_type_errors_are_state_errors() -> None:
    s = State.based({"n": "text", "xs": [1], "flag": True})
    with pytest.raises(StateError, match="'n'.*expected a list"):
        s.append(n=1)
    with pytest.raises(StateError, match="'n'.*expected a list"):
        s.extend(n=[1])
    with pytest.raises(StateError, match="iterable"):
        s.extend(xs=5)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="iterable"):
        s.extend(xs="abc")
    with pytest.raises(StateError, match="'n'.*expected a number"):
        s.increment(n=1)
    with pytest.raises(StateError, match="'flag'"):
        s.increment(flag=1)
    with pytest.raises(StateError, match="int or float"):
        s.increment(xs="1")  # type: ignore[arg-type]
    with pytest.raises(StateError):
        State([1, 2])  # type: ignore[arg-type]
    # StateError is a TypeError, so Burr-style `except TypeError` code keeps working
    assert issubclass(StateError, TypeError)


# ---------------------------------------------------------------- normalisation


@dataclasses.dataclass
class Customer:
    name: str
    since: dt.date


def test_values_are_normalised_to_plain_data() -> None:
    s = State({"t": (1, 2), "c": Customer("ann", dt.date(2024, 1, 2))})
    assert s["t"] == [1, 2]
    assert s["c"] == {"name": "ann", "since": "2024-01-02"}
    s = s.update(when=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)).append(t=(3,))
    assert s["when"] == "2024-01-01T00:00:00Z"
    assert s.update(inner=State({"a": (1,)}))["inner"] == {"a": [1]}
    assert s["t"] == [1, 2, [3]]


def test_encoding_errors_name_the_path() -> None:
    s = State.based({"xs": [1]})
    with pytest.raises(EncodingError) as info:
        s.update(customer={"name": "x", "socket": object()})
    assert info.value.path == "$.writes.customer.socket"
    assert "$.writes.customer.socket" in str(info.value)
    with pytest.raises(EncodingError) as info:
        s.append(xs=float("nan"))
    assert info.value.path == "$.writes.xs[1]"
    with pytest.raises(EncodingError) as info:
        s.extend(xs=[2, {"k": object()}])
    assert info.value.path == "$.writes.xs[2].k"
    with pytest.raises(EncodingError) as info:
        State({"ok": 1, "bad": object()})
    assert info.value.path == "$.writes.bad"
    with pytest.raises(EncodingError):
        State({1: "int key"})  # type: ignore[dict-item]
    with pytest.raises(EncodingError):
        s.merge({"f": float("inf")})
    with pytest.raises(EncodingError):
        s.increment(big=float("inf"))


# ---------------------------------------------------------------- deltas


def test_constructor_records_everything_based_records_nothing() -> None:
    assert State({"a": 1}).delta == Delta({"a": 1}, [])
    assert not State.based({"a": 1}).delta
    assert not State.from_fold({"a": 1}).delta
    assert State.from_fold({"a": 1})["a"] == 1


def test_delta_tracks_changes_since_the_rebase_point() -> None:
    s0 = State.based({"a": 1, "b": 2})
    s1 = s0.update(a=10).increment(c=1).wipe(delete=["b"])
    assert s1.delta.writes == {"a": 10, "c": 1}
    assert s1.delta.deletes == ["b"]
    assert s1.delta.keys == {"a", "b", "c"}
    assert set(s1.changed_keys()) == {"a", "b", "c"}
    assert replay(s0.get_all(), s1.delta) == s1.get_all()
    r = s1.rebase()
    assert not r.delta and r == s1
    s2 = r.update(a=11)
    assert s2.delta == Delta({"a": 11}, [])


def test_write_then_delete_is_a_delete_and_back() -> None:
    s = State.based({"a": 1})
    assert s.update(x=1).wipe(delete=["x"]).delta == Delta({}, ["x"])
    assert s.wipe(delete=["a"]).update(a=2).delta == Delta({"a": 2}, [])
    assert s.wipe(delete=["a"]).update(a=2)["a"] == 2
    assert s.wipe(delete=["a"]).wipe(delete=["a"]).delta == Delta({}, ["a"])


def test_delta_values_are_copies_of_the_mapping() -> None:
    s = State.based({}).update(a=1)
    d = s.delta
    d.writes["a"] = 2
    d.deletes.append("zz")
    assert s.delta == Delta({"a": 1}, [])
    assert not Delta() and Delta({"a": 1})
    assert "Delta(" in repr(d)
    assert Delta() != 1


def test_diff_from_computes_the_delta_of_a_fresh_state() -> None:
    old = State.based({"a": 1, "b": 2, "c": 1})
    fresh = State({"a": 1, "b": 3, "d": 4, "c": True})
    diffed = fresh.diff_from(old)
    assert diffed == fresh
    assert diffed.delta.writes == {"b": 3, "d": 4, "c": True}  # True is not 1 in JSON
    assert diffed.delta.deletes == ["a"] or diffed.delta.deletes == []
    assert replay(old.get_all(), diffed.delta) == fresh.get_all()
    assert diffed.descends_from(old)
    assert not fresh.descends_from(old)
    assert old.update(x=1).descends_from(old)
    assert not old.rebase().descends_from(old)


def test_large_state_overlay_compacts() -> None:
    base = {f"k{i}": i for i in range(1000)}
    s = State.based(base)
    for i in range(400):
        s = s.update(**{f"k{i}": -i})
        if i % 3 == 0:
            s = s.wipe(delete=[f"k{i + 500}"])
    assert s["k0"] == 0 and s["k399"] == -399 and s["k400"] == 400
    assert "k500" not in s and "k501" in s and "k899" not in s and "k900" in s
    assert len(s) == 1000 - 134
    assert replay(base, s.delta) == s.get_all()
    assert len(s) == len(s.get_all())


# ---------------------------------------------------------------- property: replay law

keys = st.sampled_from(["a", "b", "c", "d", "e"])
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
ops = st.one_of(
    st.tuples(st.just("update"), keys, scalars),
    st.tuples(st.just("append"), keys, scalars),
    st.tuples(st.just("extend"), keys, st.lists(scalars, max_size=3)),
    st.tuples(st.just("increment"), keys, st.integers(-3, 3)),
    st.tuples(st.just("delete"), keys, st.none()),
    st.tuples(st.just("keep"), st.lists(keys, max_size=3), st.none()),
    st.tuples(st.just("merge"), st.dictionaries(keys, scalars, max_size=3), st.none()),
    st.tuples(st.just("rebase"), st.none(), st.none()),
)


def apply_model(model: dict[str, Any], op: tuple[Any, Any, Any]) -> None:
    name, key, value = op
    if name == "update":
        model[key] = value
    elif name == "append":
        model[key] = [*model.get(key, []), value]
    elif name == "extend":
        model[key] = [*model.get(key, []), *value]
    elif name == "increment":
        model[key] = model.get(key, 0) + value
    elif name == "delete":
        model.pop(key, None)
    elif name == "keep":
        for k in list(model):
            if k not in key:
                del model[k]
    elif name == "merge":
        model.update(key)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, scalars, max_size=5), st.lists(ops, max_size=25))
def test_state_matches_model_and_delta_replays(initial: dict[str, Any], seq: list[Any]) -> None:
    state = State.based(initial)
    model = dict(initial)
    base = dict(initial)
    history = []
    for op in seq:
        name, key, value = op
        before = state.get_all()
        try:
            if name == "update":
                state = state.update(**{key: value})
            elif name == "append":
                state = state.append(**{key: value})
            elif name == "extend":
                state = state.extend(**{key: value})
            elif name == "increment":
                state = state.increment(**{key: value})
            elif name == "delete":
                state = state.wipe(delete=[key])
            elif name == "keep":
                state = state.subset(*key)
            elif name == "merge":
                state = state.merge(value if value is not None else key)
            elif name == "rebase":
                state = state.rebase()
                base = state.get_all()
                continue
        except StateError:
            assert state.get_all() == before
            continue
        apply_model(model, op)
        history.append((state, dict(model)))
        assert state.get_all() == model
        assert replay(base, state.delta) == model
        assert not (set(state.delta.writes) & set(state.delta.deletes))
    for old, expected in history:  # earlier states never changed
        assert old.get_all() == expected
