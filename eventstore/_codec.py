"""Encoding events: the canonical form (hashed), the stored body, the wire form.

* The **canonical encoding** is JSON with dict keys sorted (msgspec
  ``order="deterministic"``) of the whole event with ``hash`` set to ``""``.
  The hash chain is computed over it, whatever codec stores the event, so an
  event keeps its hash through export, import and Kafka.
* The **wire encoding** (``Codec.encode_event``) is the full event in JSON (the
  default) or msgpack: what Kafka records and export files carry.
* The **stored body** is what the SQLite store keeps per row: the event minus
  its identity and chain fields (those are columns), with short keys and
  defaults omitted, in JSON or msgpack.

Values in ``inputs``, ``writes`` and ``result`` must be plain data: ``None``,
``bool``, ``int``, ``float``, ``str``, lists and dicts with ``str`` keys.
``to_plain`` turns other msgspec-encodable values (tuples, datetimes, structs)
into that form, so what an application holds equals what a replay yields.
``check_values`` is the store's side of it: ``append`` refuses, before
anything is written, every event that would not read back identically from
every codec (or whose hash would not verify once read back) - see
docs/store-api.md, "What append accepts".
No pickle: decoding never runs code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from itertools import islice
from math import isfinite
from typing import Any, Literal

import msgspec

from ._errors import EncodingError, InvalidEventError, SchemaVersionError, stream_name
from ._event import _EPOCH, SCHEMA_VERSION, ErrorInfo, Event, Lineage

__all__ = [
    "Codec",
    "JSON",
    "MSGPACK",
    "MAX_VALUE_DEPTH",
    "canonical_bytes",
    "check_values",
    "register_upcaster",
    "to_plain",
    "upcast",
]

CodecName = Literal["json", "msgpack"]

#: How deep dicts and lists may nest in one value field of an event
#: (``inputs``, ``writes``, ``result``), counting the field's own dict or list:
#: ``writes={"a": [1]}`` is two levels deep.
MAX_VALUE_DEPTH = 64

#: The ints every codec reads back as the same int: msgpack holds -2**63 to
#: 2**64 - 1 (JSON holds any), and an event may move between codecs (export,
#: import, a relay to Kafka).
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_INT_RANGE = "an int from -2**63 to 2**64 - 1"
_PLAIN = "JSON data (None, bool, int, float, str, list, dict with str keys)"
_ZERO = timedelta(0)

_canonical_encoder = msgspec.json.Encoder(order="deterministic")
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def canonical_bytes(event: Event) -> bytes:
    """The bytes the hash chain covers: the event as sorted-key JSON, ``hash`` blank."""
    if event.hash:
        event = msgspec.structs.replace(event, hash="")
    return _canonical_encoder.encode(event)


# --------------------------------------------------------------------------- values


def _bad_path(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """Find where in ``value`` a non-plain item sits; return (path, what)."""
    if depth > 200:
        return path, "nesting deeper than 200 levels"
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, f"non-finite float {value!r} (JSON has no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"dict key {key!r} of type {type(key).__name__} (keys must be str)"
            found = _bad_path(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_path(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    return path, f"a value of type {type(value).__name__}"


def to_plain(value: Any, *, path: str = "$") -> Any:
    """Return ``value`` as plain JSON data, or raise ``EncodingError`` naming the path.

    Plain values come back equal (tuples become lists). Values msgspec can
    encode (datetime, UUID, Decimal, Struct, dataclass, enum) become their JSON
    form. Anything else - and NaN or Infinity, which JSON cannot hold - raises.
    """
    found = _bad_path(value, path)
    if found is None:
        return value
    if found[1].startswith("non-finite"):
        # msgspec would write NaN/Infinity as null; refuse rather than change the value.
        raise EncodingError(f"cannot encode {found[1]} at `{found[0]}`", path=found[0])
    try:
        plain = _json_decoder.decode(_json_encoder.encode(value))
    except (TypeError, msgspec.EncodeError, OverflowError, RecursionError) as exc:
        where, what = found
        raise EncodingError(
            f"cannot encode {what} at `{where}`: expected JSON data "
            "(None, bool, int, float, str, list, dict with str keys)",
            path=where,
        ) from exc
    again = _bad_path(plain, path)
    if again is not None:
        where, what = again
        raise EncodingError(f"cannot encode {what} at `{where}`", path=where)
    return plain


# --------------------------------------------------------------------------- what a store accepts


class _Refusal(Exception):
    """A value the log cannot store as it is; ``steps`` is its path, innermost first."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(expected, got)
        self.expected = expected
        self.got = got
        self.steps: list[str] = []


def _check_dict(value: dict[Any, Any], level: int) -> None:
    """Raise ``_Refusal`` unless the dict ``value``, ``level`` deep, reads back
    identically from every codec. Its strs and ints are checked in the loop,
    without a call; lone surrogates in strs are left to the encoders, which
    fail on them anyway (``_explain``)."""
    if level > MAX_VALUE_DEPTH:
        raise _Refusal(f"at most {MAX_VALUE_DEPTH} levels of nested dicts and lists", "more")
    for key, item in value.items():
        if type(key) is not str and not _is_str(key):
            name = "None" if key is None else type(key).__name__
            raise _Refusal("str dict keys", f"the {name} key {key!r}")
        kind = type(item)
        if kind is str or (kind is int and _INT_MIN <= item <= _INT_MAX):
            continue
        try:
            _check_item(item, kind, level)
        except _Refusal as refusal:
            refusal.steps.append(f".{key}")
            raise


def _check_list(value: list[Any], level: int) -> None:
    """``_check_dict`` for a list."""
    if level > MAX_VALUE_DEPTH:
        raise _Refusal(f"at most {MAX_VALUE_DEPTH} levels of nested dicts and lists", "more")
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str or (kind is int and _INT_MIN <= item <= _INT_MAX):
            continue
        try:
            _check_item(item, kind, level)
        except _Refusal as refusal:
            refusal.steps.append(f"[{index}]")
            raise


def _check_item(value: Any, kind: type, level: int) -> None:
    """Any value of ``type`` ``kind`` held ``level`` containers deep."""
    if kind is dict:
        _check_dict(value, level + 1)
    elif kind is list:
        _check_list(value, level + 1)
    elif kind is str or kind is bool or value is None:
        pass
    elif kind is float:
        if not isfinite(value):
            raise _Refusal("a finite float", repr(value))
    elif kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Refusal(_INT_RANGE, str(value))
    else:
        _check_other(value, level)


def _is_str(value: Any) -> bool:
    """A str the codecs write as a str: a plain one, or a ``StrEnum`` member."""
    return type(value) is str or (isinstance(value, str) and isinstance(value, Enum))


def _check_other(value: Any, level: int) -> None:
    """The values of ``_check_item`` that are not exactly of a JSON type."""
    # a dict or list subclass reads back as a dict or list, equal
    if isinstance(value, dict):
        return _check_dict(value, level + 1)
    if isinstance(value, list):
        return _check_list(value, level + 1)
    if isinstance(value, Enum) and isinstance(value, int | str) and not isinstance(value, bool):
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise _Refusal(_INT_RANGE, str(int(value)))
        return  # an IntEnum or StrEnum member reads back as its (equal) value
    name = type(value).__name__
    if isinstance(value, tuple):
        raise _Refusal(_PLAIN, "a tuple (it would read back as a list)")
    if isinstance(value, set | frozenset):
        raise _Refusal(_PLAIN, f"a {name} (it would read back as a list, in any order)")
    raise _Refusal(_PLAIN, f"a {name}")


def _where(stream: tuple[str, str], sequence_id: Any) -> str:
    """``event pk/app#seq`` for a message, printable even if the ids are not."""
    text = f"event {stream_name((str(stream[0]), str(stream[1])))}#{sequence_id}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _what(value: Any) -> str:
    """What came in, for a message: ``int 5``, ``str 'x'``, ``None``."""
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _wrong_type(
    stream: tuple[str, str], sequence_id: Any, path: str, expected: str, value: Any
) -> InvalidEventError:
    return InvalidEventError(
        f"{_where(stream, sequence_id)}: expected {expected} at `{path}`, got {_what(value)}"
    )


def _refused(
    stream: tuple[str, str], sequence_id: Any, path: str, expected: str, got: str
) -> EncodingError:
    return EncodingError(
        f"{_where(stream, sequence_id)}: expected {expected} at `{path}`, got {got}", path=path
    )


def _located(
    refusal: _Refusal, field: str, stream: tuple[str, str], sequence_id: int
) -> EncodingError:
    path = "$." + field + "".join(reversed(refusal.steps))
    return _refused(stream, sequence_id, path, refusal.expected, refusal.got)


def check_values(event: Event, stream: tuple[str, str], sequence_id: int) -> None:
    """Refuse ``event`` unless every field reads back identically (and hashes the same).

    ``InvalidEventError`` for a field of the wrong type, ``EncodingError`` for a
    value no codec reads back as it is: a non-JSON value (set, bytes,
    datetime, tuple, ...) in ``inputs``/``writes``/``result``, NaN or
    Infinity, a non-str dict key, an int outside -2**63..2**64 - 1, nesting
    deeper than ``MAX_VALUE_DEPTH``, a timestamp with a UTC offset other than
    zero. Both say where (``$.writes.tags[2]``), what was expected and what
    came in. Lone surrogates in strs are refused by the encoders (``_explain``).
    The identity, ``sequence_id``, ``kind`` and ``schema_version`` are
    ``check_event``'s. One walk over the values; the fields are plain type
    checks, exact types first.
    """
    value: Any = event.action
    if type(value) is not str and value is not None and not _is_str(value):
        raise _wrong_type(stream, sequence_id, "$.action", "str or None", value)
    value = event.next_action
    if type(value) is not str and value is not None and not _is_str(value):
        raise _wrong_type(stream, sequence_id, "$.next_action", "str or None", value)
    value = event.correlation_id
    if value is not None and type(value) is not str and not _is_str(value):
        raise _wrong_type(stream, sequence_id, "$.correlation_id", "str or None", value)
    value = event.timestamp
    if type(value) is not datetime and not isinstance(value, datetime):
        raise _wrong_type(stream, sequence_id, "$.timestamp", "datetime", value)
    tz = value.tzinfo
    if tz is not UTC and tz is not None and value.utcoffset() not in (None, _ZERO):
        # msgpack keeps the instant, not the offset: the hash would not verify
        raise _refused(
            stream,
            sequence_id,
            "$.timestamp",
            "a datetime in UTC or naive (msgpack keeps no other offset)",
            value.isoformat(),
        )
    value = event.duration
    if type(value) is not float:
        raise _wrong_type(stream, sequence_id, "$.duration", "float", value)
    if not isfinite(value):
        raise _refused(stream, sequence_id, "$.duration", "a finite float", repr(value))
    value = event.attempt
    if type(value) is not int:
        raise _wrong_type(stream, sequence_id, "$.attempt", "int", value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _refused(stream, sequence_id, "$.attempt", _INT_RANGE, str(value))
    value = event.deletes
    if type(value) is not list and (not isinstance(value, list) or isinstance(value, tuple)):
        raise _wrong_type(stream, sequence_id, "$.deletes", "a list of str", value)
    if value:
        for index, key in enumerate(value):
            if type(key) is not str and not _is_str(key):
                raise _wrong_type(stream, sequence_id, f"$.deletes[{index}]", "str", key)
    if event.error is not None:
        _check_error(event.error, stream, sequence_id)
    if event.parent is not None:
        _check_parent(event.parent, stream, sequence_id)
    inputs = event.inputs
    if type(inputs) is not dict and not isinstance(inputs, dict):
        raise _wrong_type(stream, sequence_id, "$.inputs", "dict", inputs)
    writes = event.writes
    if type(writes) is not dict and not isinstance(writes, dict):
        raise _wrong_type(stream, sequence_id, "$.writes", "dict", writes)
    # the one walk over the values
    field = "writes"
    try:
        _check_dict(writes, 1)
        if inputs:
            field = "inputs"
            _check_dict(inputs, 1)
        value = event.result
        if value is not None:
            field = "result"
            _check_item(value, type(value), 0)
    except _Refusal as refusal:
        raise _located(refusal, field, stream, sequence_id) from None


def _check_error(error: Any, stream: tuple[str, str], sequence_id: int) -> None:
    if not isinstance(error, ErrorInfo):
        raise _wrong_type(stream, sequence_id, "$.error", "ErrorInfo or None", error)
    for name in ("type", "message"):
        value = getattr(error, name)
        if not _is_str(value):
            raise _wrong_type(stream, sequence_id, f"$.error.{name}", "str", value)


def _check_parent(parent: Any, stream: tuple[str, str], sequence_id: int) -> None:
    if not isinstance(parent, Lineage):
        raise _wrong_type(stream, sequence_id, "$.parent", "Lineage or None", parent)
    for name in ("partition_key", "app_id", "relation"):
        value = getattr(parent, name)
        if not _is_str(value):
            raise _wrong_type(stream, sequence_id, f"$.parent.{name}", "str", value)
    value = parent.sequence_id
    if type(value) is not int:
        raise _wrong_type(stream, sequence_id, "$.parent.sequence_id", "int", value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _refused(stream, sequence_id, "$.parent.sequence_id", _INT_RANGE, str(value))


def _lone_surrogate(event: Event) -> tuple[str, str] | None:
    """The path and repr of the first str of ``event`` that is not valid UTF-8."""
    fields: list[tuple[str, Any]] = [
        (f"$.{name}", getattr(event, name))
        for name in ("partition_key", "app_id", "kind", "action", "next_action")
    ]
    fields.append(("$.correlation_id", event.correlation_id))
    fields += [(f"$.deletes[{i}]", key) for i, key in enumerate(event.deletes)]
    if isinstance(event.error, ErrorInfo):
        fields += [("$.error.type", event.error.type), ("$.error.message", event.error.message)]
    if isinstance(event.parent, Lineage):
        fields += [
            (f"$.parent.{name}", getattr(event.parent, name))
            for name in ("partition_key", "app_id", "relation")
        ]
    fields += [("$.inputs", event.inputs), ("$.writes", event.writes), ("$.result", event.result)]
    for path, value in fields:
        found = _surrogate_in(value, path)
        if found is not None:
            return found
    return None


def _surrogate_in(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    if depth > MAX_VALUE_DEPTH:  # check_values refuses this deep a value first
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, repr(value)
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _surrogate_in(key, path) is not None:
                return path, f"the key {key!r}"
            found = _surrogate_in(item, f"{path}.{key}", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _surrogate_in(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- upcasting

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[int, Upcaster] = {}


def register_upcaster(from_version: int, function: Upcaster) -> None:
    """Register ``function`` to turn a raw event dict of ``from_version`` into the next.

    The function receives and returns the event as a plain dict and must set
    ``schema_version`` to ``from_version + 1``.
    """
    if from_version >= SCHEMA_VERSION:
        raise ValueError(
            f"an upcaster must start below the current schema_version {SCHEMA_VERSION}, "
            f"got {from_version}"
        )
    _UPCASTERS[from_version] = function


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Carry a raw event dict forward to ``SCHEMA_VERSION``."""
    version = raw.get("schema_version", 1)
    if not isinstance(version, int):
        raise EncodingError(
            f"expected an int schema_version, got {type(version).__name__}",
            path="$.schema_version",
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(version, SCHEMA_VERSION)
    while version < SCHEMA_VERSION:
        step = _UPCASTERS.get(version)
        if step is None:
            raise EncodingError(
                f"no upcaster registered from schema_version {version}", path="$.schema_version"
            )
        raw = step(dict(raw))
        new_version = raw.get("schema_version")
        if new_version != version + 1:
            raise EncodingError(
                f"upcaster from {version} set schema_version {new_version!r}, "
                f"expected {version + 1}",
                path="$.schema_version",
            )
        version = new_version
    return raw


# --------------------------------------------------------------------------- stored body


# _Body and _Delta (like Event, ErrorInfo and Lineage) opt out of the cyclic GC
# (gc=False): they hold plain decoded data, which never refers back to them, so
# no reference cycle passes through one.


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """An event without identity and chain fields, as one SQLite row stores it."""

    kind: str = msgspec.field(name="k")
    action: str | None = msgspec.field(default=None, name="a")
    next_action: str | None = msgspec.field(default=None, name="n")
    inputs: dict[str, Any] = msgspec.field(default_factory=dict, name="i")
    writes: dict[str, Any] = msgspec.field(default_factory=dict, name="w")
    deletes: list[str] = msgspec.field(default_factory=list, name="d")
    result: Any = msgspec.field(default=None, name="r")
    error: ErrorInfo | None = msgspec.field(default=None, name="e")
    timestamp: datetime = msgspec.field(default=_EPOCH, name="t")
    duration: float = msgspec.field(default=0.0, name="du")
    attempt: int = msgspec.field(default=1, name="at")
    parent: Lineage | None = msgspec.field(default=None, name="p")
    correlation_id: str | None = msgspec.field(default=None, name="c")
    schema_version: int = msgspec.field(default=SCHEMA_VERSION, name="v")


class _Delta(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Just the state delta of a stored body: the fast path for folding."""

    writes: dict[str, Any] = msgspec.field(default_factory=dict, name="w")
    deletes: list[str] = msgspec.field(default_factory=list, name="d")
    schema_version: int = msgspec.field(default=SCHEMA_VERSION, name="v")


_BODY_KEYS = {f.name: f.encode_name for f in msgspec.structs.fields(_Body)}

#: ``_Body`` for encoding, built positionally (faster than 14 keywords): the same
#: fields in the same order, with the same keys and defaults, so the same bytes.
_BodyOut = msgspec.defstruct(
    "_BodyOut",
    [
        (
            f.name,
            f.type,
            msgspec.field(
                name=f.encode_name,
                **(
                    {}
                    if f.required
                    else {"default_factory": f.default_factory}
                    if f.default is msgspec.NODEFAULT
                    else {"default": f.default}
                ),
            ),
        )
        for f in msgspec.structs.fields(_Body)
    ],
    frozen=True,
    omit_defaults=True,
    gc=False,
    module=__name__,
)


def _body_of(event: Event) -> Any:
    """The ``_BodyOut`` of an event: what its stored body encodes."""
    return _BodyOut(
        event.kind,
        event.action,
        event.next_action,
        event.inputs,
        event.writes,
        event.deletes,
        event.result,
        event.error,
        event.timestamp,
        event.duration,
        event.attempt,
        event.parent,
        event.correlation_id,
        event.schema_version,
    )


class Codec:
    """A named pair of encoders: ``json`` (default) or ``msgpack``."""

    def __init__(self, name: CodecName = "json") -> None:
        if name == "json":
            self._enc: Any = msgspec.json.Encoder()
            self._event_dec: Any = msgspec.json.Decoder(Event)
            self._body_dec: Any = msgspec.json.Decoder(_Body)
            self._bodies_dec: Any = msgspec.json.Decoder(list[_Body])
            self._delta_dec: Any = msgspec.json.Decoder(_Delta)
            self._raw_dec: Any = msgspec.json.Decoder()
            self.content_type = "application/json"
        elif name == "msgpack":
            self._enc = msgspec.msgpack.Encoder()
            self._event_dec = msgspec.msgpack.Decoder(Event)
            self._body_dec = msgspec.msgpack.Decoder(_Body)
            self._bodies_dec = msgspec.msgpack.Decoder(list[_Body])
            self._delta_dec = msgspec.msgpack.Decoder(_Delta)
            self._raw_dec = msgspec.msgpack.Decoder()
            self.content_type = "application/msgpack"
        else:
            raise ValueError(f"codec must be 'json' or 'msgpack', got {name!r}")
        self.name: CodecName = name

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"

    # --- whole events (wire, export)

    def encode_event(self, event: Event) -> bytes:
        try:
            return self._enc.encode(event)  # type: ignore[no-any-return]
        except ENCODE_ERRORS as exc:
            raise _explain(event, exc) from exc

    def decode_event(self, data: bytes) -> Event:
        """Decode a whole event, upcasting an older schema_version."""
        try:
            event: Event = self._event_dec.decode(data)
        except msgspec.ValidationError as exc:
            raise EncodingError(f"not a statelog event: {exc}", path=_path_of(exc)) from exc
        except msgspec.DecodeError as exc:
            raise EncodingError(f"malformed {self.name} event: {exc}") from exc
        if event.schema_version != SCHEMA_VERSION:
            raw = upcast(self._raw_dec.decode(data))
            event = _convert_event(raw)
        return event

    # --- stored bodies (SQLite rows)

    def encode_body(self, event: Event) -> bytes:
        """The stored body of ``event``: short keys, defaults left out."""
        try:
            return self._enc.encode(_body_of(event))  # type: ignore[no-any-return]
        except ENCODE_ERRORS as exc:
            raise _explain(event, exc) from exc

    def encode_body_buffer(self, event: Event) -> bytearray:
        """``encode_body`` into a new ``bytearray`` (the same bytes).

        For the SQLite store: ``sqlite3`` binds a ``bytearray`` as a BLOB
        straight away, while for ``bytes`` it first looks for an adapter
        (a registry lookup and two attribute lookups per value, ~0.3 us).
        """
        buffer = bytearray()
        try:
            self._enc.encode_into(_body_of(event), buffer)
        except ENCODE_ERRORS as exc:
            raise _explain(event, exc) from exc
        return buffer

    def decode_body(
        self,
        data: bytes,
        *,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        prev_hash: str,
        hash: str,
        upcast_old: bool = True,
    ) -> Event:
        try:
            b: _Body = self._body_dec.decode(data)
        except msgspec.ValidationError as exc:
            raise EncodingError(f"corrupt stored event: {exc}", path=_path_of(exc)) from exc
        except msgspec.DecodeError as exc:
            raise EncodingError(f"corrupt stored event: {exc}") from exc
        event = _event_from_body(b, partition_key, app_id, sequence_id, prev_hash, hash)
        if upcast_old and b.schema_version != SCHEMA_VERSION:
            event = _convert_event(upcast(msgspec.to_builtins(event)))
        return event

    def decode_rows(self, rows: Sequence[Sequence[Any]], prevs: Sequence[bytes]) -> list[Event]:
        """Decode stored rows ``(body, partition_key, app_id, sequence_id, hash, ...)``.

        ``hash`` (in the row) and ``prevs`` (one per row) are raw digests,
        ``b""`` for none. The bodies of a page are joined into one encoded
        array and decoded in one call; a page with a body that does not decode
        or with an older ``schema_version`` goes through ``decode_body`` row by
        row, which upcasts or raises ``EncodingError`` for exactly that row.

        (Decoding each row straight into an ``Event``, with the identity and
        chain spliced into the body's bytes, was measured slower: the splicing
        in Python and the longer keys cost more than the ``Event(...)`` call.)
        """
        if not rows:
            return []
        bodies = [row[0] for row in rows]
        try:
            if not all(bodies):  # an empty body would let a two-event body keep the count
                raise msgspec.DecodeError("an empty stored body")
            if self.name == "msgpack":
                decoded: list[_Body] = self._bodies_dec.decode(
                    b"\xdd" + len(bodies).to_bytes(4, "big") + b"".join(bodies)
                )
            else:
                decoded = self._bodies_dec.decode(b"[" + b",".join(bodies) + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            decoded = []
        if len(decoded) != len(rows):  # a body is bad, or several bodies are one's bytes
            return self._decode_each(rows, prevs)
        events: list[Event] = []
        append = events.append
        event_from_body = _event_from_body
        for b, row, prev in zip(decoded, rows, prevs, strict=True):
            if b.schema_version != SCHEMA_VERSION:
                return self._decode_each(rows, prevs)
            append(event_from_body(b, row[1], row[2], row[3], prev.hex(), row[4].hex()))
        return events

    def _decode_each(self, rows: Sequence[Sequence[Any]], prevs: Sequence[bytes]) -> list[Event]:
        decode = self.decode_body
        return [
            decode(
                row[0],
                partition_key=row[1],
                app_id=row[2],
                sequence_id=row[3],
                prev_hash=bytes(prev).hex(),
                hash=bytes(row[4]).hex(),
            )
            for row, prev in zip(rows, prevs, strict=True)
        ]

    def fold_deltas(
        self, rows: Sequence[Sequence[Any]], state: dict[str, Any], start: int = 0
    ) -> int:
        """Fold the deltas of stored bodies ``rows[start:]`` (rows ``(body,)``) onto ``state``.

        The fast fold path: only ``writes`` and ``deletes`` are decoded, in one
        loop with no call per row. Returns ``len(rows)``, or the index of the
        first body with an older ``schema_version``, which is not folded: the
        caller decodes (upcasts) that one fully and goes on after it.
        """
        decode = self._delta_dec.decode
        update = state.update
        pop = state.pop
        current = SCHEMA_VERSION
        index = start
        try:
            # unpacking each row in the loop header: ~4% less than rows[index][0]
            for index, (body,) in enumerate(islice(rows, start, None), start):
                d: _Delta = decode(body)
                if d.schema_version != current:
                    return index
                if d.writes:
                    update(d.writes)
                if d.deletes:
                    for key in d.deletes:
                        pop(key, None)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise EncodingError(f"corrupt stored event: {exc}") from exc
        return len(rows)


def _event_from_body(
    b: _Body, partition_key: str, app_id: str, sequence_id: int, prev_hash: str, hash: str
) -> Event:
    """The event a stored body and its row's identity and chain make."""
    return Event(
        partition_key=partition_key,
        app_id=app_id,
        sequence_id=sequence_id,
        kind=b.kind,
        action=b.action,
        next_action=b.next_action,
        inputs=b.inputs,
        writes=b.writes,
        deletes=b.deletes,
        result=b.result,
        error=b.error,
        timestamp=b.timestamp,
        duration=b.duration,
        attempt=b.attempt,
        parent=b.parent,
        correlation_id=b.correlation_id,
        schema_version=b.schema_version,
        prev_hash=prev_hash,
        hash=hash,
    )


def _convert_event(raw: Mapping[str, Any]) -> Event:
    try:
        return msgspec.convert(raw, Event)
    except msgspec.ValidationError as exc:
        raise EncodingError(f"upcast event is invalid: {exc}", path=_path_of(exc)) from exc


def _path_of(exc: Exception) -> str | None:
    text = str(exc)
    marker = " - at `"
    if marker in text:
        return text.split(marker, 1)[1].rstrip("`")
    return None


#: What msgspec's encoders raise for a value they cannot write (a lone
#: surrogate is a ``UnicodeEncodeError``, a ``ValueError``).
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def _explain(event: Event, exc: BaseException) -> EncodingError | InvalidEventError:
    """Turn an encoder failure into an error that names the bad value's path."""
    stream = (event.partition_key, event.app_id)
    try:
        check_values(event, stream, event.sequence_id)
    except (EncodingError, InvalidEventError) as error:
        return error
    found = _lone_surrogate(event)
    if found is not None:
        path, got = found
        return _refused(stream, event.sequence_id, path, "a str without lone surrogates", got)
    return EncodingError(f"cannot encode {_where(stream, event.sequence_id)}: {exc}")


JSON = Codec("json")
MSGPACK = Codec("msgpack")


def get_codec(codec: Codec | CodecName) -> Codec:
    if isinstance(codec, Codec):
        return codec
    if codec == "json":
        return JSON
    if codec == "msgpack":
        return MSGPACK
    raise ValueError(f"codec must be 'json' or 'msgpack', got {codec!r}")
