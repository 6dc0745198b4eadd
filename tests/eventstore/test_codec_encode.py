"""The encode side's fast paths give the same bytes and digests as the plain ones."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from statelog.eventstore import (
    JSON,
    MSGPACK,
    Codec,
    EncodingError,
    Event,
    InvalidEventError,
    StreamId,
    canonical_bytes,
    compute_hash,
    seal,
)
from statelog.eventstore._chain import check_event, seal_one
from statelog.eventstore._codec import _as_delta, _Body
from statelog.eventstore._event import ErrorInfo, Lineage
from statelog.eventstore._ops import check_ops, scalar_ops, scalar_sets
from tests.ops_support import v2

EVENTS = [
    v2(partition_key="", app_id="a", sequence_id=0, kind="app_initialized"),
    v2(
        partition_key="tenant",
        app_id="app-1",
        sequence_id=7,
        kind="action_failed",
        action="step",
        next_action="retry",
        inputs={"x": [1, 2.5, None, True, {"y": "z"}]},
        writes={"count": 7, "nested": {"a": [1, 2]}},
        deletes=["old"],
        result={"ok": False},
        error=ErrorInfo(type="ValueError", message="bad", traceback=["a/b.py:3 in f"]),
        timestamp=datetime(2026, 11, 22, 17, 0, 0, 123456, tzinfo=UTC),
        actor="bob",
        data={"halt": "after"},
        duration=0.25,
        attempt=3,
        parent=Lineage(partition_key="tenant", app_id="root", sequence_id=4, relation="child"),
        correlation_id="c-1",
        prev_hash="ab" * 32,
        hash="cd" * 32,
    ),
    v2(partition_key="p", app_id="b", sequence_id=1, kind="halted", attempt=1, duration=0.0),
]


def _reference_body(codec: Codec, event: Event) -> bytes:
    """The stored body as the keyword-built ``_Body`` encodes it."""
    delta = _as_delta(event.ops)  # set ops then delete ops are stored as w/d
    body = _Body(
        kind=event.kind,
        action=event.action,
        next_action=event.next_action,
        inputs=event.inputs,
        ops=event.ops if delta is None else [],
        writes={} if delta is None else delta[0],
        deletes=[] if delta is None else delta[1],
        result=event.result,
        error=event.error,
        timestamp=event.timestamp,
        duration_us=event.duration_us,
        attempt=event.attempt,
        parent=event.parent,
        actor=event.actor,
        correlation_id=event.correlation_id,
        data=event.data,
        schema_version=event.schema_version,
        legacy=event.legacy,
    )
    encoder = msgspec.json.Encoder() if codec.name == "json" else msgspec.msgpack.Encoder()
    return encoder.encode(body)


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
@pytest.mark.parametrize("event", EVENTS)
def test_body_encoders_give_the_reference_bytes(codec: Codec, event: Event) -> None:
    reference = _reference_body(codec, event)
    assert codec.encode_body(event) == reference
    buffer = codec.encode_body_buffer(event)
    assert isinstance(buffer, bytearray)
    assert bytes(buffer) == reference


@pytest.mark.parametrize("key", [None, b"", b"k", b"x" * 64, b"y" * 65, bytes(range(200))])
def test_seal_and_compute_hash_match_hashlib_and_hmac(key: bytes | None) -> None:
    sealed = seal(EVENTS[:1], "", key)
    prev = ""
    for event in sealed:
        data = canonical_bytes(event)
        if key is None:
            want = hashlib.sha256(data).hexdigest()
        else:
            want = hmac.new(key, data, hashlib.sha256).hexdigest()
        assert event.prev_hash == prev
        assert event.hash == want == compute_hash(event, key)
        prev = event.hash


def test_resealing_sealed_events_equals_sealing_the_originals() -> None:
    events = [
        v2(partition_key="p", app_id="a", sequence_id=i, kind="k", writes={"i": i})
        for i in range(3)
    ]
    before = [msgspec.structs.replace(e) for e in events]
    once = seal(events, "00" * 32)
    assert events == before  # the caller's events are left as they were
    assert seal(once, "11" * 32) == seal(events, "11" * 32)
    assert seal(once, "11" * 32, b"key") == seal(events, "11" * 32, b"key")


@pytest.mark.parametrize("key", [None, b"", b"k", b"x" * 64, b"y" * 65])
@pytest.mark.parametrize("event", EVENTS)
def test_seal_one_is_seal_of_one_with_the_raw_digest(key: bytes | None, event: Event) -> None:
    sealed, digest = seal_one(event, "ef" * 32, key)
    assert sealed == seal([event], "ef" * 32, key)[0]
    assert isinstance(digest, bytearray)
    assert bytes(digest) == bytes.fromhex(sealed.hash)
    assert sealed.hash == compute_hash(sealed, key)


# ------------------------------------------------------------------ encoder failures


def _event(**fields: Any) -> Event:
    fields.setdefault("app_id", "a")
    return Event(partition_key="p", sequence_id=0, kind="k", **fields)


class _Opaque:
    pass


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("method", ["encode_event", "encode_body", "encode_body_buffer"])
@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"ops": [{"op": "set", "key": "s", "value": ["ok", "x\ud800"]}]}, "$.ops[0].value[1]"),
        ({"inputs": {"k\udfff": 1}}, "$.inputs"),
        ({"action": "\ud800"}, "$.action"),
        ({"ops": [{"op": "append", "key": "o", "value": _Opaque()}]}, "$.ops[0].value"),
        ({"result": _deep(2000)}, "$.result"),
    ],
    ids=["surrogate", "surrogate-key", "surrogate-field", "opaque", "recursion"],
)
def test_an_encoder_failure_is_an_encoding_error_with_its_path(
    codec: Codec, method: str, fields: dict[str, Any], path: str
) -> None:
    # what the encoders themselves raise (UnicodeEncodeError, TypeError,
    # RecursionError) comes out as one EncodingError that names the place
    with pytest.raises(EncodingError) as info:
        getattr(codec, method)(_event(**fields))
    assert info.value.path is not None and info.value.path.startswith(path)
    assert f"`{path}" in str(info.value)


@pytest.mark.parametrize(
    ("identity", "path"),
    [({"app_id": "a\ud800"}, "$.app_id"), ({"partition_key": "\udc00"}, "$.partition_key")],
)
def test_seal_and_seal_one_name_a_surrogate_in_the_identity(
    identity: dict[str, Any], path: str
) -> None:
    event = Event(**{"partition_key": "p", "app_id": "a", **identity}, sequence_id=0, kind="k")
    with pytest.raises(EncodingError) as info:
        seal([event], "")
    assert info.value.path == path
    with pytest.raises(EncodingError) as info:
        seal_one(event, "")
    assert info.value.path == path
    assert "\\u" in str(info.value)  # printable: the message escapes the surrogate


# ------------------------------------------------------------------ the append path's shortcuts


def check_ops_pass(ops: list[dict[str, Any]]) -> bool:
    try:
        check_ops(ops, "test")
    except InvalidEventError:
        return False
    return all(type(op.get("value")) is not int or abs(op["value"]) <= 2**53 - 1 for op in ops)


_OPS_CASES: list[list[dict[str, Any]]] = [
    [{"op": "set", "key": "n", "value": 1}],
    [{"op": "set", "key": "n", "value": "x"}, {"op": "set", "key": "f", "value": None}],
    [{"op": "set", "key": "b", "value": True}, {"op": "set", "key": "m", "value": -(2**53 - 1)}],
    [{"op": "set", "key": "n", "value": 1}, {"op": "set", "key": "n", "value": 2}],  # a key twice
    [{"op": "set", "key": "n", "value": 1.5}],  # a float: the hash's full walk
    [{"op": "set", "key": "n", "value": 2**53}],  # beyond a JSON number: refused
    [{"op": "set", "key": "d", "value": {"a": 1}}],  # not a scalar
    [{"op": "append", "key": "l", "value": 1}],
    [{"op": "set", "key": "n", "value": 1}, {"op": "delete", "key": "gone"}],
    [{"op": "delete", "key": "gone"}],
    [{"op": "set", "key": "n"}],  # malformed
    [{"op": "set", "key": "n", "value": 1, "extra": 2}],  # malformed
]


@pytest.mark.parametrize("ops", _OPS_CASES)
def test_scalar_sets_are_the_bodys_writes_or_none(ops: list[dict[str, Any]]) -> None:
    writes = scalar_sets(ops)
    scalar_only = all(
        op.get("op") == "set"
        and len(op) == 3
        and type(op.get("value")) in (str, bool, int, type(None))
        and (type(op.get("value")) is not int or abs(op["value"]) <= 2**53 - 1)
        for op in ops
    ) and len({op["key"] for op in ops}) == len(ops)
    if not scalar_only:
        assert writes is None
        return
    assert writes is not None
    assert scalar_ops(ops)
    assert _as_delta(ops) == (writes, [])


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
@pytest.mark.parametrize("ops", [ops for ops in _OPS_CASES if check_ops_pass(ops)])
def test_the_checked_writes_give_the_reference_body(
    codec: Codec, ops: list[dict[str, Any]]
) -> None:
    event = Event(partition_key="p", app_id="a", sequence_id=3, kind="k", ops=ops)
    plain, writes = check_event(event, StreamId("p", "a"), 3)
    assert plain == scalar_ops(ops)
    assert writes == scalar_sets(ops)
    assert codec.encode_body(event, writes) == _reference_body(codec, event)
    assert bytes(codec.encode_body_buffer(event, writes)) == _reference_body(codec, event)


def test_a_sealed_batch_hashes_each_event_over_its_own_bytes() -> None:
    # seal encodes every event into one buffer: a short event after a long one, and
    # one that takes the general way (a float) between them, each hash their own bytes
    events = [
        Event(
            partition_key="p",
            app_id="a",
            kind="k",
            sequence_id=0,
            ops=[{"op": "set", "key": "long", "value": "x" * 3000}],
        ),
        Event(
            partition_key="p",
            app_id="a",
            kind="k",
            sequence_id=1,
            ops=[{"op": "set", "key": "n", "value": 1}],
        ),
        Event(
            partition_key="p",
            app_id="a",
            kind="k",
            sequence_id=2,
            ops=[{"op": "set", "key": "f", "value": 0.5}],
        ),
        Event(partition_key="p", app_id="a", kind="k", sequence_id=3),
        Event(
            partition_key="p",
            app_id="a",
            kind="k",
            sequence_id=4,
            inputs={"q": "y" * 100},
            result={"r": [1, "2"]},
        ),
    ]
    for key in (None, b"k"):
        for plain in (False, True):
            ok = [e for e in events if plain is False or not e.ops or e.ops[0]["key"] != "f"]
            sealed = seal(ok, "ab" * 32, key, plain_ops=plain)
            prev = "ab" * 32
            for before, event in zip(ok, sealed, strict=True):
                assert event.prev_hash == prev
                assert event.hash == compute_hash(event, key)
                assert msgspec.structs.replace(event, prev_hash="", hash="") == (
                    msgspec.structs.replace(before, prev_hash="", hash="")
                )
                assert seal_one(before, prev, key, plain)[0] == event
                prev = event.hash
