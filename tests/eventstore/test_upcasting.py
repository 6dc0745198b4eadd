"""The upcaster registry: old events are carried forward on read; future ones refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statelog import eventstore
from statelog.eventstore import (
    JSON,
    MSGPACK,
    EncodingError,
    Event,
    SchemaVersionError,
    _chain,
    _codec,
    fold,
    iter_export,
    register_upcaster,
)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[int, Any]:
    """A private, empty upcaster registry for one test."""
    fresh: dict[int, Any] = {}
    monkeypatch.setattr(_codec, "_UPCASTERS", fresh)
    return fresh


def v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 0 called the delta ``changes`` and kept deletes inside it as ``None``s."""
    changes = raw.pop("changes", {})
    raw["writes"] = {k: v for k, v in changes.items() if v is not None}
    raw["deletes"] = sorted(k for k, v in changes.items() if v is None)
    raw["schema_version"] = 1
    return raw


def old_event(seq: int, changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "partition_key": "p",
        "app_id": "legacy",
        "sequence_id": seq,
        "kind": "action_completed",
        "changes": changes,
        "schema_version": 0,
    }


def test_old_wire_events_are_upcast(registry: dict[int, Any]) -> None:
    register_upcaster(0, v0_to_v1)
    raw = old_event(0, {"a": 1, "b": None})
    for codec, encode in ((JSON, msgspec.json.encode), (MSGPACK, msgspec.msgpack.encode)):
        event = codec.decode_event(encode(raw))
        assert event.schema_version == eventstore.SCHEMA_VERSION
        assert (event.writes, event.deletes) == ({"a": 1}, ["b"])


def test_old_stored_bodies_are_upcast(registry: dict[int, Any]) -> None:
    """A stored body (what a SQLite row holds) of version 0, built by hand."""
    register_upcaster(0, lambda raw: {**raw, "writes": {"v0": True}, "schema_version": 1})
    body = msgspec.json.encode({"k": "action_completed", "w": {"old": 1}, "v": 0})
    event = JSON.decode_body(
        body, partition_key="p", app_id="a", sequence_id=3, prev_hash="x", hash="y"
    )
    assert event.schema_version == 1 and event.writes == {"v0": True}
    assert (event.sequence_id, event.prev_hash, event.hash) == (3, "x", "y")


def test_export_file_with_old_events_folds_upcast(registry: dict[int, Any], tmp_path: Path) -> None:
    register_upcaster(0, v0_to_v1)
    path = tmp_path / "old.jsonl"
    lines = [
        old_event(0, {"a": 1, "b": 2}),
        old_event(1, {"a": None, "c": [3]}),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    events = list(iter_export(path))
    assert [e.schema_version for e in events] == [1, 1]
    assert fold(events) == {"b": 2, "c": [3]}


def test_missing_upcaster_is_an_encoding_error(registry: dict[int, Any]) -> None:
    with pytest.raises(EncodingError, match="no upcaster registered from schema_version 0"):
        JSON.decode_event(msgspec.json.encode(old_event(0, {})))


def test_upcaster_must_step_one_version(registry: dict[int, Any]) -> None:
    register_upcaster(0, lambda raw: {**raw, "schema_version": 7})
    with pytest.raises(EncodingError, match="expected 1"):
        JSON.decode_event(msgspec.json.encode(old_event(0, {})))


def test_upcasters_start_below_the_current_version(registry: dict[int, Any]) -> None:
    with pytest.raises(ValueError, match="below the current schema_version"):
        register_upcaster(eventstore.SCHEMA_VERSION, v0_to_v1)


def test_a_chain_of_upcasters_in_a_newer_statelog(
    registry: dict[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pretend this statelog writes version 3: a version-1 event goes 1 -> 2 -> 3."""
    monkeypatch.setattr(_codec, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(_chain, "SCHEMA_VERSION", 3)
    register_upcaster(1, lambda raw: {**raw, "inputs": {"v2": True}, "schema_version": 2})
    register_upcaster(2, lambda raw: {**raw, "result": "from v2", "schema_version": 3})
    v1 = Event(partition_key="", app_id="a", sequence_id=0, kind="k", writes={"x": 1})
    assert v1.schema_version == 1
    for codec in (JSON, MSGPACK):
        event = codec.decode_event(codec.encode_event(v1))
        assert event.schema_version == 3
        assert (event.inputs, event.result, event.writes) == ({"v2": True}, "from v2", {"x": 1})
        body = codec.encode_body(v1)
        stored = codec.decode_body(
            body, partition_key="", app_id="a", sequence_id=0, prev_hash="", hash=""
        )
        assert stored.schema_version == 3 and stored.result == "from v2"


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_future_schema_version_is_refused(codec: eventstore.Codec) -> None:
    future = Event(
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


async def test_old_rows_in_a_sqlite_file_read_and_fold_upcast(
    registry: dict[int, Any], tmp_path: Path
) -> None:
    """Rewrite stored rows as version-0 bodies by hand; reads and folds see them upcast.

    Pretend version 0 wrote state keys in upper case and version 1 renamed them.
    """
    import sqlite3

    path = tmp_path / "old.db"
    async with eventstore.SQLiteEventStore(path, codec="json") as store:
        await store.append(
            [Event(partition_key="", app_id="a", sequence_id=i, kind="k") for i in range(3)],
            expected_sequence=-1,
        )
    old_bodies = [
        {"k": "action_completed", "w": {"A": 1, "B": 2}, "v": 0},
        {"k": "action_completed", "w": {"C": 3}, "d": ["A"], "v": 0},
    ]
    conn = sqlite3.connect(path)
    for seq, body in enumerate(old_bodies):
        conn.execute(
            "UPDATE events SET body = ? WHERE sequence_id = ?", (msgspec.json.encode(body), seq)
        )
    conn.commit()
    conn.close()

    def lower_keys(raw: dict[str, Any]) -> dict[str, Any]:
        return {
            **raw,
            "writes": {k.lower(): v for k, v in raw["writes"].items()},
            "deletes": [k.lower() for k in raw["deletes"]],
            "schema_version": 1,
        }

    register_upcaster(0, lower_keys)
    async with eventstore.SQLiteEventStore(path) as store:
        events = await store.read("", "a")
        assert [e.schema_version for e in events] == [1, 1, 1]
        assert [(e.writes, e.deletes) for e in events[:2]] == [
            ({"a": 1, "b": 2}, []),
            ({"c": 3}, ["a"]),
        ]
        assert await store.fold_stream("", "a") == ({"b": 2, "c": 3}, 2)
        conn = sqlite3.connect(path)
        future = msgspec.json.encode({"k": "k", "v": eventstore.SCHEMA_VERSION + 1})
        conn.execute("UPDATE events SET body = ? WHERE sequence_id = 2", (future,))
        conn.commit()
        conn.close()
        with pytest.raises(SchemaVersionError):
            await store.read("", "a")


async def test_verify_checks_old_events_as_written_while_reads_upcast(
    registry: dict[int, Any], tmp_path: Path
) -> None:
    """The chain covers an event as it was written, so verify must not upcast it."""
    import sqlite3

    path = tmp_path / "old.db"
    async with eventstore.SQLiteEventStore(path, codec="json") as store:
        await store.append(
            [Event(partition_key="", app_id="a", sequence_id=i, kind="k") for i in range(2)],
            expected_sequence=-1,
        )
    as_written = _chain.seal(
        [
            Event(
                partition_key="",
                app_id="a",
                sequence_id=seq,
                kind="action_completed",
                writes={key: seq},
                schema_version=0,
            )
            for seq, key in enumerate(["A", "B"])
        ],
        "",
    )
    conn = sqlite3.connect(path)
    for event in as_written:
        conn.execute(
            "UPDATE events SET body = ?, hash = ? WHERE sequence_id = ?",
            (JSON.encode_body(event), bytes.fromhex(event.hash), event.sequence_id),
        )
    conn.commit()
    conn.close()

    def lower_keys(raw: dict[str, Any]) -> dict[str, Any]:
        writes = {k.lower(): v for k, v in raw["writes"].items()}
        return {**raw, "writes": writes, "schema_version": 1}

    register_upcaster(0, lower_keys)
    async with eventstore.SQLiteEventStore(path) as store:
        assert await store.verify() is None
        assert [e.writes for e in await store.read("", "a")] == [{"a": 0}, {"b": 1}]
        conn = sqlite3.connect(path)
        conn.execute("UPDATE events SET body = ? WHERE sequence_id = 1", (b'{"k":"x","v":0}',))
        conn.commit()
        conn.close()
        broken = await store.verify()
        assert broken is not None and broken.sequence_id == 1
