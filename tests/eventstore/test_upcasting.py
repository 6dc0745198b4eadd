"""The upcaster registry: v1 events are carried forward on read; future ones refused.

The checked-in v1 log (tests/eventstore/fixtures) is tested in test_v1_log.py;
these tests cover the registry and hand-made v1 records.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statelog import eventstore
from statelog.eventstore import (
    JSON,
    MSGPACK,
    EncodingError,
    SchemaVersionError,
    _codec,
    fold,
    iter_export,
    register_upcaster,
)
from tests.ops_support import deletes_of, v2


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[int, Any]:
    """A private copy of the upcaster registry for one test (statelog's own v1 -> v2 in it)."""
    fresh: dict[int, Any] = dict(_codec._UPCASTERS)
    monkeypatch.setattr(_codec, "_UPCASTERS", fresh)
    return fresh


def v1_event(seq: int, writes: dict[str, Any], deletes: list[str]) -> dict[str, Any]:
    """A v1 wire event as d1425d8 wrote it (every field present)."""
    return {
        "partition_key": "p",
        "app_id": "legacy",
        "sequence_id": seq,
        "kind": "action_completed",
        "action": "a",
        "next_action": "a",
        "inputs": {},
        "writes": writes,
        "deletes": deletes,
        "result": None,
        "error": None,
        "timestamp": "2026-01-02T03:04:05.000006Z",
        "duration": 0.000123456789,
        "attempt": 1,
        "parent": None,
        "correlation_id": None,
        "schema_version": 1,
        "prev_hash": "",
        "hash": "",
    }


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_v1_wire_events_become_set_and_delete_ops(codec: eventstore.Codec) -> None:
    encode = msgspec.json.encode if codec is JSON else msgspec.msgpack.encode
    event = codec.decode_event(encode(v1_event(0, {"a": 1, "b": [2]}, ["c"])))
    assert event.schema_version == eventstore.SCHEMA_VERSION
    assert event.ops == [
        {"op": "set", "key": "a", "value": 1},
        {"op": "set", "key": "b", "value": [2]},
        {"op": "delete", "key": "c"},
    ]
    assert event.duration_us == 123
    assert event.legacy == eventstore.LegacyV1(
        writes={"a": 1, "b": [2]}, deletes=["c"], duration=0.000123456789
    )
    # the carried-forward event encodes and decodes as itself
    assert codec.decode_event(codec.encode_event(event)) == event


def test_v1_stored_bodies_are_upcast() -> None:
    """A v1 SQLite body (short keys, ``v`` left out) decodes as v2 with its v1 fields kept."""
    body = msgspec.json.encode({"k": "action_completed", "w": {"old": 1}, "d": ["x"], "du": 0.5})
    event = JSON.decode_body(
        body, partition_key="p", app_id="a", sequence_id=3, prev_hash="x", hash="y"
    )
    assert event.schema_version == 2
    assert event.ops == [{"op": "set", "key": "old", "value": 1}, {"op": "delete", "key": "x"}]
    assert event.duration_us == 500_000 and event.legacy is not None
    assert (event.sequence_id, event.prev_hash, event.hash) == (3, "x", "y")


def test_export_file_with_v1_events_folds_upcast(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    lines = [v1_event(0, {"a": 1, "b": 2}, []), v1_event(1, {"c": [3]}, ["a"])]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    events = list(iter_export(path))
    assert [e.schema_version for e in events] == [2, 2]
    assert deletes_of(events[1]) == ["a"]
    assert fold(events) == {"b": 2, "c": [3]}


def test_missing_upcaster_is_an_encoding_error(registry: dict[int, Any]) -> None:
    registry.clear()
    with pytest.raises(EncodingError, match="no upcaster registered from schema_version 1"):
        JSON.decode_event(msgspec.json.encode(v1_event(0, {}, [])))


def test_upcaster_must_step_one_version(registry: dict[int, Any]) -> None:
    register_upcaster(1, lambda raw: {**raw, "schema_version": 7})
    with pytest.raises(EncodingError, match="expected 2"):
        JSON.decode_event(msgspec.json.encode(v1_event(0, {}, [])))


def test_upcasters_start_below_the_current_version(registry: dict[int, Any]) -> None:
    with pytest.raises(ValueError, match="below the current schema_version"):
        register_upcaster(eventstore.SCHEMA_VERSION, lambda raw: raw)


def test_a_chain_of_upcasters_reaches_the_current_version(registry: dict[int, Any]) -> None:
    """A version-0 event goes 0 -> 1 (a user's upcaster) -> 2 (statelog's)."""

    def v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
        changes = raw.pop("changes", {})
        raw["writes"] = {k: v for k, v in changes.items() if v is not None}
        raw["deletes"] = sorted(k for k, v in changes.items() if v is None)
        raw["schema_version"] = 1
        return raw

    register_upcaster(0, v0_to_v1)
    raw = {"partition_key": "p", "app_id": "a", "sequence_id": 0, "kind": "k"}
    raw |= {"changes": {"a": 1, "b": None}, "schema_version": 0}
    event = JSON.decode_event(msgspec.json.encode(raw))
    assert event.ops == [{"op": "set", "key": "a", "value": 1}, {"op": "delete", "key": "b"}]


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_future_schema_version_is_refused(codec: eventstore.Codec) -> None:
    future = v2(
        partition_key="",
        app_id="a",
        sequence_id=0,
        kind="k",
        schema_version=eventstore.SCHEMA_VERSION + 1,
    )
    with pytest.raises(SchemaVersionError) as info:
        codec.decode_event(codec.encode_event(future))
    assert info.value.found == eventstore.SCHEMA_VERSION + 1
    assert info.value.path == "$.schema_version"
    with pytest.raises(SchemaVersionError):
        codec.decode_body(
            codec.encode_body(future),
            partition_key="",
            app_id="a",
            sequence_id=0,
            prev_hash="",
            hash="",
        )


async def test_v1_rows_in_a_sqlite_file_read_and_fold(tmp_path: Path) -> None:
    """v1 bodies written over rows by hand read as set/delete ops and fold (fast path too)."""
    path = tmp_path / "old.db"
    async with eventstore.SQLiteEventStore(path, codec="json") as store:
        await store.append(
            [v2(partition_key="", app_id="a", sequence_id=i, kind="k") for i in range(4)],
            expected_sequence=-1,
        )
        await store.append(
            [v2(partition_key="", app_id="a", sequence_id=4, kind="k", writes={"d": [1]})],
            expected_sequence=3,
        )
    old_bodies = [
        {"k": "action_completed", "w": {"a": 1, "b": 2}},
        {"k": "action_completed", "w": {"c": 3}, "d": ["a"]},
    ]
    conn = sqlite3.connect(path)
    for seq, body in enumerate(old_bodies):
        conn.execute(
            "UPDATE events SET body = ? WHERE sequence_id = ?", (msgspec.json.encode(body), seq)
        )
    conn.commit()
    conn.close()
    async with eventstore.SQLiteEventStore(path) as store:
        events = await store.read("", "a")
        assert [e.legacy is not None for e in events] == [True, True, False, False, False]
        assert await store.fold_stream("", "a") == ({"b": 2, "c": 3, "d": [1]}, 4)
        assert fold(events) == {"b": 2, "c": 3, "d": [1]}
        conn = sqlite3.connect(path)
        future = msgspec.json.encode({"k": "k", "v": eventstore.SCHEMA_VERSION + 1})
        conn.execute("UPDATE events SET body = ? WHERE sequence_id = 2", (future,))
        conn.commit()
        conn.close()
        with pytest.raises(SchemaVersionError):
            await store.read("", "a")
        with pytest.raises(SchemaVersionError):
            await store.fold_stream("", "a")
