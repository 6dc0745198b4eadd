"""The save path: the delta without a full serialise; a sync save is committed on return.

A save checks which state values still equal their stored form and serialises
only what changed (a list that grew: only its new items). Whatever it skips,
the event it writes must be the one ``burr_state_delta`` gives for Burr's
whole ``State.serialize``; these tests hold the two side by side.
"""

from __future__ import annotations

import copy
import enum
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from burr.core import State, serde
from burr.core.state import FIELD_SERIALIZATION, register_field_serde
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statelog.burr
from statelog.burr import StatelogPersister, _plain_ops, _state_ops, burr_state_delta
from statelog.eventstore import apply_ops, generate_key_files
from statelog.eventstore._checkpoints import Checkpoint
from statelog.eventstore.sqlite._checkpoints import read_checkpoints

from .test_log import read_events


class Colour(enum.IntEnum):
    RED = 1


def plain(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def reference(stored: dict[str, Any], state: State, **serde_kwargs: Any) -> list[dict[str, Any]]:
    """The delta of a save by the book: Burr serialises the whole state, then the diff."""
    return burr_state_delta(stored, plain(state.serialize(**serde_kwargs)))


def assert_same_delta(stored: dict[str, Any], state: State, **serde_kwargs: Any) -> None:
    want = reference(stored, state, **serde_kwargs)
    got = _plain_ops(_state_ops(stored, state, serde_kwargs))
    # byte for byte: 1, 1.0 and True kept apart, the same ops in the same order
    assert msgspec.json.encode(got) == msgspec.json.encode(want)
    folded = copy.deepcopy(stored)
    apply_ops(folded, got, set())
    sorted_json = msgspec.json.Encoder(order="sorted").encode  # members in any order
    assert sorted_json(folded) == sorted_json(plain(state.serialize(**serde_kwargs)))


MOMENT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "raw"),
    [
        ({"m": [{"a": 1}]}, {"m": [{"a": 1}, {"a": 2}]}),  # an append: only the item
        ({"m": [1]}, {"m": [1, 2, 3]}),  # an extend
        ({"m": [1, 2]}, {"m": [1]}),  # shrank: a set
        ({"m": [1, 2]}, {"m": [2, 1, 3]}),  # changed before the end: a set
        ({"m": [1]}, {"m": [True, 2]}),  # equal in Python, not as JSON
        ({"m": [1]}, {"m": [1.0, 2]}),
        ({"m": [1]}, {"m": [Decimal(1), 2]}),  # Burr stores a Decimal as its str
        ({"m": ["(1, 2)"]}, {"m": [(1, 2), 3]}),  # ... and a tuple
        ({"m": [str(MOMENT)]}, {"m": [MOMENT]}),  # ... and a datetime: the same text
        ({"a": 1}, {"a": True}),
        ({"a": 0.0}, {"a": -0.0}),  # equal in Python, stored apart (found by hypothesis)
        ({"d": {"x": None, "y": 0.0}}, {"d": {"x": None, "y": -0.0}}),
        ({"m": [0.0]}, {"m": [-0.0, 1]}),
        ({"a": 1}, {"a": Colour.RED}),  # an IntEnum is stored as its number
        ({"a": 1.5}, {"a": Decimal("1.5")}),
        ({"d": {"x": 1, "y": 2}}, {"d": {"y": 2, "x": 1}}),  # order: no change
        ({"d": {"x": 1}}, {"d": {"x": 1, "y": [1]}}),  # a merge
        ({"d": {"x": 1}}, {"d": {"x": 1.0}}),
        ({"a": 1, "b": 2}, {"a": 1}),  # a delete
        ({"a": 1}, {"a": 1, "b": None}),  # a new key
        ({"a": None}, {"a": None}),
    ],
)
def test_a_save_writes_the_delta_of_burrs_serialise(
    stored: dict[str, Any], raw: dict[str, Any]
) -> None:
    assert_same_delta(stored, State(raw))


def test_an_appended_item_is_all_that_is_serialised(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"role": "user", "content": f"message {i}"} for i in range(100)]
    stored = {"messages": plain(items)}
    seen: list[Any] = []
    serialize = statelog.burr._serialize

    def spy(key: str, value: Any, serde_kwargs: Any) -> Any:
        seen.append(value)
        return serialize(key, value, serde_kwargs)

    monkeypatch.setattr(statelog.burr, "_serialize", spy)
    new = {"role": "assistant", "content": "hi"}
    ops = _state_ops(stored, State({"messages": [*items, new]}), {})
    assert ops == [{"op": "append", "key": "messages", "value": new}]
    assert seen == [[new]]  # not the hundred items before it


def test_a_serialiser_registered_for_a_json_type_is_honoured() -> None:
    class Secret(str):
        pass

    def hide(value: Secret, **kwargs: Any) -> dict[str, Any]:
        return {"hidden": len(value)}

    stored = {"s": "abc", "m": ["abc"]}
    raw = {"s": Secret("abc"), "m": [Secret("abc"), "x"]}
    assert statelog.burr._serde_keeps_json()
    serde.serialize.register(Secret, hide)
    try:
        assert not statelog.burr._serde_keeps_json()
        want = [
            {"op": "set", "key": "s", "value": {"hidden": 3}},
            {"op": "set", "key": "m", "value": [{"hidden": 3}, "x"]},
        ]
        assert reference(stored, State(raw)) == want
        assert_same_delta(stored, State(raw))
    finally:
        # Burr's own serialiser for str again: the check lets it through
        serde.serialize.register(Secret, serde.serialize_primitive)
    assert statelog.burr._serde_keeps_json()


def test_a_field_serde_is_used_for_its_key_at_every_save() -> None:
    def to_json(value: list[datetime], **kwargs: Any) -> dict[str, Any]:
        return {"times": [t.isoformat() for t in value], "n": kwargs.get("n", 0)}

    def from_json(value: dict[str, Any], **kwargs: Any) -> list[datetime]:
        return [datetime.fromisoformat(t) for t in value["times"]]

    register_field_serde("times", to_json, from_json)
    try:
        stored = plain(State({"times": [MOMENT]}).serialize(n=1))
        assert_same_delta(stored, State({"times": [MOMENT, MOMENT]}), n=1)
        assert _state_ops(stored, State({"times": [MOMENT]}), {"n": 1}) == []
        assert_same_delta(stored, State({"times": [MOMENT]}), n=2)  # the kwargs changed it
    finally:
        FIELD_SERIALIZATION.pop("times", None)


# values Burr stores as they are, and some it turns into text (Decimal, tuple, datetime)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False).map(lambda f: round(f, 1)),
    st.sampled_from(["", "a", "b"]),
    st.decimals(-3, 3, places=1, allow_nan=False),
    st.tuples(st.integers(0, 2)),
    st.just(MOMENT),
    st.just(Colour.RED),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["a", "b", "c", "d"])


def retyped(value: Any) -> Any:
    """Equal in Python, not as JSON: numbers change type, deep inside too."""
    if type(value) is bool:
        return int(value)
    if type(value) is int:
        return float(value)
    if type(value) is float and value.is_integer():
        return Decimal(int(value))
    if type(value) is list:
        return [retyped(item) for item in value]
    if type(value) is dict:
        return {key: retyped(item) for key, item in value.items()}
    return value


@st.composite
def save_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored state and the next raw state Burr hands over, made from it the usual ways."""
    before = draw(st.dictionaries(keys, values, max_size=4))
    stored = plain(State(before).serialize())
    after: dict[str, Any] = {}
    for key, value in before.items():
        how = draw(st.sampled_from(["keep", "retype", "append", "replace", "drop"]))
        if how == "keep":
            after[key] = copy.deepcopy(value)  # Burr copies the values an action reads
        elif how == "retype":
            after[key] = retyped(value)
        elif how == "append" and type(value) is list:
            after[key] = [*copy.deepcopy(value), *draw(st.lists(values, min_size=1, max_size=3))]
        elif how != "drop":
            after[key] = draw(values)
    after.update(draw(st.dictionaries(keys, values, max_size=2)))
    return stored, after


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(save_pairs())
def test_any_save_writes_the_delta_of_burrs_serialise(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    stored, raw = pair
    assert_same_delta(stored, State(raw))


# --- the sync persister: committed on return, shared by threads, signed


def test_a_save_is_committed_when_it_returns(tmp_path: Path) -> None:
    db = tmp_path / "burr.db"
    with StatelogPersister.from_path(db) as p:
        for i in range(20):
            p.save("", "app", i, "a", State({"n": i, "trail": list(range(i))}), "completed")
            other = sqlite3.connect(db)  # another connection sees it at once
            try:
                (count,) = other.execute("SELECT count(*) FROM events").fetchone()
            finally:
                other.close()
            assert count == i + 1
        loaded = p.load("", "app", 7)
    assert loaded is not None and loaded["state"]["trail"] == list(range(7))


def test_threads_sharing_a_sync_persister_take_turns(tmp_path: Path) -> None:
    db = tmp_path / "burr.db"
    errors: list[BaseException] = []
    with StatelogPersister.from_path(db) as p:

        def run(app_id: str) -> None:
            try:
                for i in range(30):
                    p.save("", app_id, i, "a", State({"items": list(range(i + 1))}), "completed")
                    loaded = p.load("", app_id)
                    assert loaded is not None and loaded["sequence_id"] == i
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(f"app{t}",)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(p.list_app_ids("")) == ["app0", "app1", "app2", "app3"]
    for t in range(4):
        events = read_events(db, f"app{t}")
        assert [e.sequence_id for e in events] == list(range(30))
        assert all(
            e.ops == [{"op": "append", "key": "items", "value": e.sequence_id}] for e in events[1:]
        )


def test_a_signed_log_is_checkpointed_by_the_sync_persister(tmp_path: Path) -> None:
    private, public = generate_key_files(tmp_path / "key")
    db = tmp_path / "burr.db"
    with StatelogPersister.from_path(db, signing_key=private, checkpoint_every=10) as p:
        for i in range(12):
            p.save("", "app", i, "a", State({"n": i}), "completed")
        # the count's checkpoint is written in the background: wait for it (a close
        # that came first would cover it with its own, and this would not be tested)
        deadline = time.monotonic() + 10
        while not _checkpoint_count(db) and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(12, 25):
            p.save("", "app", i, "a", State({"n": i}), "completed")
    conn = sqlite3.connect(db)
    try:
        checkpoints = read_checkpoints(conn)
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    assert events == 25
    assert len(checkpoints) >= 2  # by count while saving, and the last one at close
    last = Checkpoint.from_bytes(checkpoints[-1][1].body)
    assert last.position == 25  # it covers every save

    done = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", str(db), "--public-key", public],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signature verified" in done.stdout


def _checkpoint_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return len(read_checkpoints(conn))
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def test_the_sync_persister_writes_each_save_on_its_own_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its loop is its own and its caller blocks: a save after the stream's first is
    written there (``SYNC_CALLER``), not handed to the store's writer thread."""
    from tests.eventstore.test_sqlite_sync_caller import count_hand_overs

    db = tmp_path / "burr.db"
    with StatelogPersister.from_path(db) as p:
        p.save("", "app", 0, "a", State({"n": 0}), "completed")
        handed = count_hand_overs(p._async.store, monkeypatch)  # type: ignore[arg-type]
        for i in range(1, 20):
            p.save("", "app", i, "a", State({"n": i}), "completed")
        assert handed == [0]
        loaded = p.load("", "app")
        assert loaded is not None and loaded["state"]["n"] == 19
    assert len(read_events(db, "app")) == 20
