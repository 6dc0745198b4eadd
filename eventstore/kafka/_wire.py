"""The Kafka wire format: one record per event.

* **key** - ``escape(partition_key) + "/" + escape(app_id)`` in UTF-8, where
  ``escape`` replaces ``%`` with ``%25`` and then ``/`` with ``%2F`` (percent
  encoding of just those two characters). The key always holds exactly one
  raw ``/``; an empty partition key gives ``"/app_id"``. Equal streams give
  equal keys, so Kafka's key partitioner keeps a stream in one partition and
  in order.
* **value** - the whole event in its wire encoding (``Codec.encode_event``):
  JSON (``application/json``, the default) or msgpack (``application/msgpack``).
  docs/wire-schema.json is its JSON Schema.
* **headers** (values are UTF-8 / ASCII text), in this order:
  ``statelog-wire`` (the wire version, ``"1"``), ``content-type``,
  ``sequence_id`` (decimal), ``kind``, ``schema_version`` (decimal) and
  ``hash`` (hex). They let a consumer route or skip a record without decoding
  the value; ``decode_record`` checks that they agree with it.
* **fence** (optional, last): ``statelog-fence`` = ``"<epoch>:<owner>"`` on an
  event written by the owner of its partition (a worker, see
  docs/scale-out.md). A *fence record* - an empty key and value with only a
  ``statelog-fence-claim`` header of the same form - opens an epoch in its
  partition: readers keep an event with a ``statelog-fence`` header only if it
  names the epoch open at its offset. Events without the header read as
  before; the fence never depends on the event body.

A record without the ``statelog-wire`` header, with an unknown content type, a
malformed key or value, or headers that disagree with the value is *foreign*:
``decode_record`` raises ``EncodingError`` (``SchemaVersionError`` for an event
from a newer statelog) and never returns a half-checked event.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from .._codec import JSON, MSGPACK, Codec, CodecName, get_codec
from .._errors import EncodingError, SchemaVersionError
from .._event import SCHEMA_VERSION, Event, StreamId

__all__ = [
    "WIRE_VERSION",
    "Fence",
    "KafkaRecord",
    "decode_record",
    "encode_fence",
    "encode_record",
    "fence_claim_of",
    "fence_of",
    "parse_key",
    "record_key",
    "wire_schema",
]

#: The version of the record layout (key, headers); bumped on an incompatible change.
WIRE_VERSION = 1

H_WIRE = "statelog-wire"
H_CONTENT_TYPE = "content-type"
H_SEQUENCE_ID = "sequence_id"
H_KIND = "kind"
H_SCHEMA_VERSION = "schema_version"
H_HASH = "hash"
H_FENCE = "statelog-fence"
H_FENCE_CLAIM = "statelog-fence-claim"

_WIRE_VERSION_BYTES = str(WIRE_VERSION).encode()
_SCHEMA_VERSION_BYTES = str(SCHEMA_VERSION).encode()
_CODECS_BY_TYPE: dict[bytes, Codec] = {
    JSON.content_type.encode(): JSON,
    MSGPACK.content_type.encode(): MSGPACK,
}


_SCHEMA_VERSION_HEADER = (H_SCHEMA_VERSION, _SCHEMA_VERSION_BYTES)
_FAST_DECODERS: dict[tuple[Any, Any], Any] = {
    ((H_WIRE, _WIRE_VERSION_BYTES), (H_CONTENT_TYPE, b"application/json")): msgspec.json.Decoder(
        Event
    ),
    (
        (H_WIRE, _WIRE_VERSION_BYTES),
        (H_CONTENT_TYPE, b"application/msgpack"),
    ): msgspec.msgpack.Decoder(Event),
}


class Fence(NamedTuple):
    """An ownership epoch of one Kafka partition: a number and the owner that opened it."""

    epoch: int
    owner: str

    def header(self) -> bytes:
        return f"{self.epoch}:{self.owner}".encode()

    @classmethod
    def parse(cls, raw: bytes | None) -> Fence | None:
        """The fence a header value names; ``None`` if it is malformed."""
        if raw is None:
            return None
        epoch, sep, owner = bytes(raw).decode("utf-8", "replace").partition(":")
        if not sep or not epoch.isdigit() or not owner:
            return None
        return cls(int(epoch), owner)


class KafkaRecord(NamedTuple):
    """What one event becomes on a topic."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


# --------------------------------------------------------------------------- keys


def _escape(part: str) -> str:
    if "%" in part:
        part = part.replace("%", "%25")
    if "/" in part:
        part = part.replace("/", "%2F")
    return part


def _unescape(part: str, key: bytes) -> str:
    if "%" not in part:
        return part
    out = []
    pieces = part.split("%")
    out.append(pieces[0])
    for piece in pieces[1:]:
        code = piece[:2].upper()
        if code == "25":
            out.append("%")
        elif code == "2F":
            out.append("/")
        else:
            raise EncodingError(
                f"not a statelog record key: {key!r} has '%{piece[:2]}', "
                "expected only %25 or %2F escapes"
            )
        out.append(piece[2:])
    return "".join(out)


def record_key(partition_key: str, app_id: str) -> bytes:
    """The record key of a stream: ``escape(partition_key)/escape(app_id)`` in UTF-8."""
    return f"{_escape(partition_key)}/{_escape(app_id)}".encode()


def parse_key(key: bytes | None) -> StreamId:
    """The stream a record key names; ``EncodingError`` if it is not a statelog key."""
    if key is None:
        raise EncodingError("not a statelog record: it has no key")
    try:
        text = bytes(key).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"not a statelog record key: {key[:60]!r} is not UTF-8") from exc
    if text.count("/") != 1:
        raise EncodingError(
            f"not a statelog record key: {key[:60]!r}, expected "
            "'partition_key/app_id' with exactly one unescaped '/'"
        )
    partition_key, app_id = text.split("/")
    stream = StreamId(_unescape(partition_key, key), _unescape(app_id, key))
    if not stream.app_id:
        raise EncodingError(f"not a statelog record key: {key[:60]!r} has an empty app_id")
    return stream


# --------------------------------------------------------------------------- records


def encode_fence(fence: Fence) -> KafkaRecord:
    """The fence record that opens ``fence.epoch`` in a partition (empty key and value)."""
    return KafkaRecord(b"", b"", [(H_FENCE_CLAIM, fence.header())])


def fence_claim_of(headers: Iterable[tuple[str, bytes | None]] | None) -> Fence | None:
    """The fence a fence record opens; ``None`` for any other record."""
    if not headers:
        return None
    for name, raw in headers:
        if name == H_FENCE_CLAIM:
            return Fence.parse(raw) or Fence(-1, "?")
    return None


def fence_of(headers: Sequence[tuple[str, bytes | None]] | None) -> Fence | None:
    """The fence an event record carries (its last header), ``None`` if it has none."""
    if not headers:
        return None
    name, raw = headers[-1]
    if name != H_FENCE:
        return None
    return Fence.parse(raw) or Fence(-1, "?")


def encode_record(
    event: Event, codec: Codec | CodecName = JSON, *, fence: Fence | None = None
) -> KafkaRecord:
    """The Kafka record of ``event``: key, wire-encoded value and headers.

    With ``fence`` the record carries the ``statelog-fence`` header (last).
    """
    codec = get_codec(codec)
    value = codec.encode_event(event)
    headers = [
        (H_WIRE, _WIRE_VERSION_BYTES),
        (H_CONTENT_TYPE, codec.content_type.encode()),
        (H_SEQUENCE_ID, str(event.sequence_id).encode()),
        (H_KIND, event.kind.encode()),
        (H_SCHEMA_VERSION, str(event.schema_version).encode()),
        (H_HASH, event.hash.encode()),
    ]
    if fence is not None:
        headers.append((H_FENCE, fence.header()))
    return KafkaRecord(record_key(event.partition_key, event.app_id), value, headers)


def _int_header(name: str, raw: bytes) -> int:
    if not raw.isdigit():
        raise EncodingError(f"record header {name!r} is {raw[:40]!r}, expected a decimal integer")
    return int(raw)


def decode_record(
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> Event:
    """Decode and check one record; ``EncodingError`` for a foreign or garbled one.

    The codec is chosen by the ``content-type`` header. The key, ``sequence_id``,
    ``kind``, ``schema_version`` and ``hash`` headers must agree with the value.
    An event of an older ``schema_version`` is upcast.
    """
    # Fast path: a record laid out exactly as encode_record writes it today.
    # Anything else (or any doubt) takes the general path, which explains errors.
    if type(headers) in (tuple, list) and type(value) is bytes and key is not None:
        try:
            listed: Sequence[Any] = headers  # type: ignore[assignment]
            if len(listed) == 7 and listed[6][0] == H_FENCE:
                listed = listed[:6]
            h_wire, h_type, h_seq, h_kind, h_version, h_hash = listed
            decoder = _FAST_DECODERS.get((h_wire, h_type))
            if (
                decoder is not None
                and h_version == _SCHEMA_VERSION_HEADER
                and h_seq[0] == H_SEQUENCE_ID
                and h_kind[0] == H_KIND
                and h_hash[0] == H_HASH
            ):
                event: Event = decoder.decode(value)
                if (
                    event.schema_version == SCHEMA_VERSION
                    and key == record_key(event.partition_key, event.app_id)
                    and h_seq[1] == str(event.sequence_id).encode()
                    and h_kind[1] == event.kind.encode()
                    and h_hash[1] == event.hash.encode()
                ):
                    return event
        except (TypeError, ValueError, IndexError, msgspec.DecodeError):
            pass  # msgspec.ValidationError is a DecodeError
    return _decode_record(key, value, headers)


def _decode_record(
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> Event:
    try:
        found: dict[str, Any] = dict(headers) if headers else {}
    except (TypeError, ValueError) as exc:
        raise EncodingError(f"record headers are not (name, value) pairs: {exc}") from exc
    wire = found.get(H_WIRE)
    if wire != _WIRE_VERSION_BYTES:
        if wire is None:
            raise EncodingError(f"not a statelog record: no {H_WIRE!r} header")
        raise EncodingError(
            f"unsupported {H_WIRE} version {bytes(wire)[:20]!r}, this statelog reads {WIRE_VERSION}"
        )
    content_type = found.get(H_CONTENT_TYPE)
    codec = _CODECS_BY_TYPE.get(content_type) if type(content_type) is bytes else None
    if codec is None:
        raise EncodingError(
            f"record content-type is {content_type!r}, expected "
            "'application/json' or 'application/msgpack'"
        )
    if value is None:
        raise EncodingError("not a statelog record: it has no value")
    raw_version = found.get(H_SCHEMA_VERSION)
    if raw_version == _SCHEMA_VERSION_BYTES:
        header_version = SCHEMA_VERSION
    else:
        header_version = _int_header(H_SCHEMA_VERSION, bytes(raw_version or b""))
        if header_version > SCHEMA_VERSION:
            raise SchemaVersionError(header_version, SCHEMA_VERSION)
    event = codec.decode_event(value if type(value) is bytes else bytes(value))
    # The common case in one expression; the slow path explains a disagreement.
    if not (
        key is not None
        and key == record_key(event.partition_key, event.app_id)
        and found.get(H_SEQUENCE_ID) == str(event.sequence_id).encode()
        and found.get(H_KIND) == event.kind.encode()
        and found.get(H_HASH) == event.hash.encode()
        and (header_version != SCHEMA_VERSION or event.schema_version == SCHEMA_VERSION)
    ):
        _check_agrees(event, key, found, header_version)
    return event


def _check_agrees(event: Event, key: bytes | None, found: dict[str, Any], version: int) -> None:
    if key is None or bytes(key) != record_key(event.partition_key, event.app_id):
        raise EncodingError(
            f"record key {key!r} does not name the stream of its value "
            f"{str(event.stream)!r}#{event.sequence_id}"
        )
    sequence_id = _int_header(H_SEQUENCE_ID, bytes(found.get(H_SEQUENCE_ID) or b""))
    mismatched = []
    if sequence_id != event.sequence_id:
        mismatched.append(f"sequence_id header {sequence_id} != value {event.sequence_id}")
    if found.get(H_KIND) != event.kind.encode():
        mismatched.append(f"kind header {found.get(H_KIND)!r} != value {event.kind!r}")
    if found.get(H_HASH) != event.hash.encode():
        mismatched.append(f"hash header {found.get(H_HASH)!r} != value {event.hash!r}")
    if version == SCHEMA_VERSION and event.schema_version != version:
        mismatched.append(f"schema_version header {version} != value {event.schema_version}")
    if mismatched:
        raise EncodingError(
            f"record of {str(event.stream)!r}#{event.sequence_id}: headers disagree with the "
            "value: " + "; ".join(mismatched)
        )


def headers_dict(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The headers as text (for logs and debugging)."""
    return {name: bytes(raw).decode("utf-8", "replace") for name, raw in headers}


# --------------------------------------------------------------------------- schema


def wire_schema() -> dict[str, Any]:
    """The JSON Schema of a record value in JSON (checked in as docs/wire-schema.json)."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://statelog.dev/schemas/wire-event-v1.json",
        "title": "statelog event (Kafka record value, application/json)",
        "description": (
            f"Generated from statelog.eventstore.Event by msgspec.json.schema; wire version "
            f"{WIRE_VERSION}, event schema_version {SCHEMA_VERSION}. See docs/wire-format.md."
        ),
    }
    schema.update(msgspec.json.schema(Event))
    cleaned: dict[str, Any] = _clean_descriptions(schema)
    return cleaned


def _clean_descriptions(node: Any) -> Any:
    """Every ``description`` as ``inspect.cleandoc`` makes it.

    msgspec 0.23 began to dedent docstrings in the schemas it generates; doing
    it here makes the schema the same whatever msgspec version made it.
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def schema_text() -> str:
    """``wire_schema()`` as the exact text of docs/wire-schema.json."""
    return msgspec.json.format(msgspec.json.encode(wire_schema()), indent=2).decode() + "\n"
