"""The Kafka wire format: keys, headers, values, golden bytes and the JSON Schema."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statelog.eventstore import (
    JSON,
    MSGPACK,
    EncodingError,
    ErrorInfo,
    Event,
    Lineage,
    SchemaVersionError,
    StreamId,
    seal,
)
from statelog.eventstore.kafka import (
    WIRE_VERSION,
    KafkaRecord,
    decode_record,
    encode_record,
    parse_key,
    record_key,
)
from statelog.eventstore.kafka._wire import schema_text
from tests.ops_support import v2

GOLDEN = Path(__file__).parent / "golden"
DOCS = Path(__file__).resolve().parents[2] / "docs"
REGEN = os.environ.get("STATELOG_REGEN_GOLDEN") == "1"


def golden_event() -> Event:
    """A fixed event touching every field; its bytes are pinned in tests/golden/."""
    first = v2(
        partition_key="tenant/eu%1",
        app_id="order-42",
        sequence_id=0,
        kind="app_initialized",
        next_action="charge",
        writes={"cart": ["book", "pen"], "total": 12.5},
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    second = v2(
        partition_key="tenant/eu%1",
        app_id="order-42",
        sequence_id=1,
        kind="action_failed",
        action="charge",
        next_action="retry",
        inputs={"card": "•••• 4242", "amount": 12.5},
        writes={"status": "declined", "nested": {"a": [1, None, True]}},
        deletes=["cart"],
        result={"ok": False},
        ops=[
            {"op": "append", "key": "log", "value": "declined"},
            {"op": "increment", "key": "tries", "by": 1},
        ],
        error=ErrorInfo(
            type="PaymentError", message="card declined", traceback=["app/pay.py:12 in charge"]
        ),
        timestamp=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        duration=0.25,
        attempt=2,
        parent=Lineage(partition_key="tenant/eu%1", app_id="order-41", sequence_id=7),
        actor="alice",
        correlation_id="req-9",
        data={"note": "golden"},
    )
    return seal([first, second], "")[1]


def _record_doc(record: KafkaRecord) -> dict[str, object]:
    return {
        "key": record.key.decode(),
        "headers": [[name, value.decode()] for name, value in record.headers],
        "value_bytes": len(record.value),
    }


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_golden_record_bytes_are_pinned(codec):
    record = encode_record(golden_event(), codec)
    value_path = GOLDEN / f"record-{codec.name}.value.bin"
    doc_path = GOLDEN / f"record-{codec.name}.json"
    doc = json.dumps(_record_doc(record), indent=2, ensure_ascii=False) + "\n"
    if REGEN:
        value_path.write_bytes(record.value)
        doc_path.write_text(doc, encoding="utf-8")
    assert record.value == value_path.read_bytes(), (
        "the wire value changed; if intended, bump WIRE_VERSION or SCHEMA_VERSION as needed "
        "and regenerate with STATELOG_REGEN_GOLDEN=1"
    )
    assert doc == doc_path.read_text(encoding="utf-8")
    # The pinned bytes still decode to the same event.
    assert decode_record(record.key, value_path.read_bytes(), record.headers) == golden_event()


def test_golden_json_value_is_plain_json():
    data = json.loads((GOLDEN / "record-json.value.bin").read_bytes())
    assert data["partition_key"] == "tenant/eu%1"
    assert data["sequence_id"] == 1
    assert data["timestamp"] == "2026-01-02T03:04:06Z"
    assert data["error"] == {
        "type": "PaymentError",
        "message": "card declined",
        "traceback": ["app/pay.py:12 in charge"],
    }
    assert data["ops"][0] == {"op": "append", "key": "log", "value": "declined"}
    assert data["duration_us"] == 250_000 and data["schema_version"] == 2


#: JSON Schema keywords whose list is a set: the order of its items means nothing.
_UNORDERED = frozenset({"anyOf", "oneOf", "allOf", "required", "enum"})


def _as_data(node: object) -> object:
    """A JSON Schema with every unordered list sorted (canonically), for comparison.

    msgspec 0.18 lists ``null`` first in the ``anyOf`` of an optional field,
    0.19 and later last; neither order is part of our schema.
    """
    if isinstance(node, dict):
        return {
            key: sorted((_as_data(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
            if key in _UNORDERED and isinstance(value, list)
            else _as_data(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_as_data(v) for v in node]
    return node


def test_schema_comparison_ignores_only_unordered_lists():
    optional = {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Lineage"}], "required": ["a", "b"]}
    swapped = {"anyOf": [{"$ref": "#/$defs/Lineage"}, {"type": "null"}], "required": ["b", "a"]}
    assert _as_data(optional) == _as_data(swapped)
    assert _as_data({"prefixItems": [1, 2]}) != _as_data({"prefixItems": [2, 1]})
    assert _as_data({"anyOf": [{"type": "null"}]}) != _as_data({"anyOf": [{"type": "string"}]})


def test_checked_in_schema_equals_generated():
    path = DOCS / "wire-schema.json"
    if REGEN:
        path.write_text(schema_text(), encoding="utf-8")
    # Compared as data, not text: the file's layout is not ours to pin, nor is
    # the order msgspec gives the alternatives of an optional field.
    checked_in = _as_data(json.loads(path.read_text(encoding="utf-8")))
    assert checked_in == _as_data(json.loads(schema_text())), (
        "docs/wire-schema.json is stale: regenerate with "
        "`STATELOG_REGEN_GOLDEN=1 pytest tests/eventstore/test_wire.py`"
    )


def test_record_layout():
    event = golden_event()
    key, value, headers = encode_record(event)
    assert key == b"tenant%2Feu%251/order-42"
    assert dict(headers) == {
        "statelog-wire": str(WIRE_VERSION).encode(),
        "content-type": b"application/json",
        "sequence_id": b"1",
        "kind": b"action_failed",
        "schema_version": b"2",
        "hash": event.hash.encode(),
    }
    assert msgspec.json.decode(value, type=Event) == event
    assert encode_record(event, "msgpack").headers[1] == ("content-type", b"application/msgpack")


@pytest.mark.parametrize(
    ("pk", "app", "key"),
    [
        ("", "a", b"/a"),
        ("p", "a", b"p/a"),
        ("a/b", "c/d", b"a%2Fb/c%2Fd"),
        ("100%", "%2F", b"100%25/%252F"),
        ("ü", "日本", "ü/日本".encode()),
    ],
)
def test_keys_escape_slash_and_percent(pk, app, key):
    assert record_key(pk, app) == key
    assert parse_key(key) == StreamId(pk, app)


@given(st.text(), st.text(min_size=1))
def test_keys_roundtrip(pk, app):
    key = record_key(pk, app)
    assert key.count(b"/") == 1
    assert parse_key(key) == StreamId(pk, app)


@pytest.mark.parametrize(
    "key", [None, b"", b"noslash", b"a/b/c", b"a/", b"\xff/x", b"a%41/b", b"a/b%2"]
)
def test_foreign_keys_are_rejected(key):
    with pytest.raises(EncodingError):
        parse_key(key)


def _tamper(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers]


def test_decode_rejects_foreign_and_disagreeing_records():
    event = golden_event()
    key, value, headers = encode_record(event)
    assert decode_record(key, value, tuple(headers)) == event
    cases = [
        (key, value, []),  # a foreign record: no headers at all
        (key, b'{"hello": "world"}', headers),  # a foreign value
        (key, b"\x00garbage", headers),
        (key, None, headers),
        (None, value, headers),
        (b"other/stream", value, headers),
        (key, value, _tamper(headers, "statelog-wire", b"99")),
        (key, value, _tamper(headers, "content-type", b"text/plain")),
        (key, value, _tamper(headers, "sequence_id", b"2")),
        (key, value, _tamper(headers, "sequence_id", b"-1")),
        (key, value, _tamper(headers, "kind", b"halted")),
        (key, value, _tamper(headers, "hash", b"00")),
        (key, encode_record(event, MSGPACK).value, headers),  # value in the wrong codec
    ]
    for case in cases:
        with pytest.raises(EncodingError):
            decode_record(*case)
    with pytest.raises(SchemaVersionError):
        decode_record(key, value, _tamper(headers, "schema_version", b"99"))


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_garbage_never_crashes_decode(key, value):
    headers = [
        ("statelog-wire", b"1"),
        ("content-type", b"application/json"),
        ("schema_version", b"1"),
        ("sequence_id", b"0"),
    ]
    with pytest.raises(EncodingError):
        decode_record(key, value, headers)
    # The layout encode_record writes (the fast path) refuses garbage the same way.
    _, _, real = encode_record(golden_event())
    for codec_headers in (real, encode_record(golden_event(), MSGPACK).headers):
        with pytest.raises(EncodingError):
            decode_record(key, value, tuple(codec_headers))
