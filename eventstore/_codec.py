"""Encoding events: the canonical form (hashed), the stored body, the wire form.

* The **canonical encoding** (``canonical_bytes``) is the RFC 8785 JSON of
  ``hash_view(event)``: every field but ``hash``, timestamps as statelog's
  own RFC 3339 strings. The hash chain is computed over it, whatever codec
  stores the event, so an event keeps its hash through export, import and
  Kafka, and any language can recompute it. Events written as schema v1 keep
  the v1 rule (``_v1``).
* The **wire encoding** (``Codec.encode_event``) is the full event in JSON (the
  default) or msgpack: what Kafka records and export files carry.
* The **stored body** is what the SQLite store keeps per row: the event minus
  its identity and chain fields (those are columns), with short keys and
  defaults omitted, in JSON or msgpack.

Values in ``inputs``, ``ops``, ``result`` and ``data`` must be plain data: ``None``,
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

from ._canonical import canonical_json
from ._errors import EncodingError, InvalidEventError, SchemaVersionError, stream_name
from ._event import _EPOCH, SCHEMA_VERSION, ErrorInfo, Event, LegacyV1, Lineage
from ._ops import apply_ops, ops_of_delta
from ._v1 import upcast_v1_to_v2, v1_canonical_bytes

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
#: (``inputs``, ``ops``, ``result``, ``data``), counting the field's own dict or
#: list: ``inputs={"a": [1]}`` is two levels deep (an op's value is two deeper
#: than the ``ops`` list).
MAX_VALUE_DEPTH = 64

#: The ints an event may hold: what a JSON number holds exactly, so every codec
#: reads them back as the same int and the canonical form (RFC 8785, the hash
#: input) has them.
_INT_MIN = -(2**53 - 1)
_INT_MAX = 2**53 - 1
_INT_RANGE = "an int within +-(2**53 - 1) (a JSON number holds it exactly)"
_PLAIN = "JSON data (None, bool, int, float, str, list, dict with str keys)"
_ZERO = timedelta(0)

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_sorted_encode = msgspec.json.Encoder(order="sorted").encode


_MAX_INT = 2**53 - 1
_ABSENT: Any = object()


def _plain_json(value: Any) -> bool:
    """True when msgspec's sorted JSON of ``value`` is its RFC 8785 form.

    That is: only ``None``, ``bool``, ``str``, ``int`` within +-(2**53 - 1), and
    lists and dicts of them whose member names are ``str`` below U+E000 (where
    code-point order is UTF-16 order) - no float. Anything else returns False,
    and ``canonical_json`` then gives the bytes or raises naming the path. A
    tight loop without paths: this runs on every append.
    """
    t = type(value)
    if t is str or value is None or t is bool:
        return True
    if t is int:
        return bool(-_MAX_INT <= value <= _MAX_INT)
    if t is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and max(key) >= "\ue000"):
                return False
            ti = type(item)
            if ti is str or item is None or ti is bool:
                continue
            if ti is int:
                if not -_MAX_INT <= item <= _MAX_INT:
                    return False
                continue
            if not _plain_json(item):
                return False
        return True
    if t is list:
        for item in value:
            ti = type(item)
            if ti is str or item is None or ti is bool:
                continue
            if ti is int:
                if not -_MAX_INT <= item <= _MAX_INT:
                    return False
                continue
            if not _plain_json(item):
                return False
        return True
    return False


def _plain_ops(ops: list[dict[str, Any]]) -> bool:
    """``_plain_json(ops)`` for a list of operations, with the members inlined."""
    for op in ops:
        if type(op) is not dict:
            return False
        # the common op, {"op": str, "key": str, "value": a scalar}, without the
        # member loop (its names are ASCII) - with the other walks, >= 3 % of a step
        if len(op) == 3 and type(op.get("op")) is str and type(op.get("key")) is str:
            item = op.get("value", _ABSENT)
            ti = type(item)
            if ti is str or item is None or ti is bool:
                continue
            if ti is int:
                if not -_MAX_INT <= item <= _MAX_INT:
                    return False
                continue
            if item is not _ABSENT:
                if not _plain_json(item):
                    return False
                continue
        for key, item in op.items():
            if type(key) is not str or not key.isascii():
                return False
            ti = type(item)
            if ti is str or item is None or ti is bool:
                continue
            if ti is int:
                if not -_MAX_INT <= item <= _MAX_INT:
                    return False
                continue
            if not _plain_json(item):
                return False
    return True


def format_timestamp(ts: datetime) -> str:
    """``ts`` as the canonical form writes it: RFC 3339 UTC, 6 fractional digits, ``Z``.

    The layout is fixed here, not left to a library's defaults: Python's
    ``isoformat`` with ``timespec="microseconds"`` always writes 4-digit years
    and 6 fractional digits; a naive datetime is taken as UTC, an aware one is
    converted to UTC, and the offset is written ``Z``.
    """
    tz = ts.tzinfo
    if tz is UTC:  # what utcnow() and every decoder give: the fast path
        return ts.isoformat(timespec="microseconds")[:-6] + "Z"
    if tz is None:
        return ts.isoformat(timespec="microseconds") + "Z"
    if ts.utcoffset():
        ts = ts.astimezone(UTC)
    # aware UTC: "YYYY-MM-DDTHH:MM:SS.ffffff+00:00", the offset replaced by "Z"
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def hash_view(event: Event) -> dict[str, Any]:
    """The JSON object a v2 event's hash covers: every field but ``hash`` (and ``legacy``).

    Every field is present, defaults included; ``prev_hash`` is a member like
    any other; ``timestamp`` is ``format_timestamp``'s string; ``error`` and
    ``parent`` are objects with all their members.
    """
    error = event.error
    parent = event.parent
    return {
        "partition_key": event.partition_key,
        "app_id": event.app_id,
        "sequence_id": event.sequence_id,
        "kind": event.kind,
        "action": event.action,
        "next_action": event.next_action,
        "inputs": event.inputs,
        "ops": event.ops,
        "result": event.result,
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "traceback": error.traceback},
        "timestamp": format_timestamp(event.timestamp),
        "duration_us": event.duration_us,
        "attempt": event.attempt,
        "parent": None
        if parent is None
        else {
            "partition_key": parent.partition_key,
            "app_id": parent.app_id,
            "sequence_id": parent.sequence_id,
            "relation": parent.relation,
        },
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "data": event.data,
        "schema_version": event.schema_version,
        "prev_hash": event.prev_hash,
    }


class _HashError(msgspec.Struct, frozen=True, gc=False):
    """``error`` in the hash view: every member, in name order."""

    message: str
    traceback: list[str]
    type: str


class _HashParent(msgspec.Struct, frozen=True, gc=False):
    """``parent`` in the hash view: every member, in name order."""

    app_id: str
    partition_key: str
    relation: str
    sequence_id: int


class _HashView(msgspec.Struct, frozen=True, gc=False):
    """``hash_view`` as a struct: its fields declared in name order, so msgspec's
    ``order="deterministic"`` (dict keys sorted, struct fields as declared) writes
    the members sorted, as RFC 8785 does, without building a dict per event."""

    action: str | None
    actor: str | None
    app_id: str
    attempt: int
    correlation_id: str | None
    data: dict[str, Any]
    duration_us: int
    error: _HashError | None
    inputs: dict[str, Any]
    kind: str
    next_action: str | None
    ops: list[dict[str, Any]]
    parent: _HashParent | None
    partition_key: str
    prev_hash: str
    result: Any
    schema_version: int
    sequence_id: int
    timestamp: str | datetime  # a datetime only where msgspec writes format_timestamp's string


_view_encoder = msgspec.json.Encoder(order="deterministic")
_encode_view = _view_encoder.encode


def canonical_bytes(event: Event, plain_ops: bool = False) -> bytes:
    """The bytes the hash chain covers (``hash`` itself never is).

    A v2 event: the RFC 8785 canonical JSON of ``hash_view(event)``, through
    msgspec when the user values (``inputs``, ``ops``, ``result``, ``data``,
    the traceback) hold no float and no member name at or above U+E000 - the
    fixed fields never do. A v1 event (``legacy`` set): the v1 rule, msgspec's
    deterministic JSON of the frozen v1 struct. Raises ``EncodingError``
    (with the path) for a value with no canonical form: an int beyond
    +-(2**53 - 1), NaN or infinity, a non-str key. ``plain_ops``: the caller
    knows the ops hold no float and ASCII names only (``scalar_ops``).
    """
    if event.legacy is not None:
        return v1_canonical_bytes(event)
    try:
        view = plain_view(event, event.prev_hash, plain_ops)
        if view is None:
            return canonical_json(hash_view(event))  # floats, odd names; or raises
        return _encode_view(view)
    except UnicodeEncodeError as exc:
        raise EncodingError(
            "a string holds a lone surrogate, which has no UTF-8 form", path="$"
        ) from exc


def plain_view(event: Event, prev_hash: str, plain_ops: bool = False) -> _HashView | None:
    """The ``_HashView`` of the v2 ``event`` with ``prev_hash``, when msgspec's
    deterministic JSON of it is the RFC 8785 form ``canonical_bytes`` gives; else
    ``None`` (a float or a member name at or above U+E000 in a user value).

    For ``seal``, which chains an event without first copying it to set its
    ``prev_hash``. The caller checks ``legacy`` is ``None`` (a v2 event).
    """
    inputs = event.inputs
    result = event.result
    data = event.data
    error = event.error
    # the fixed fields hold no float and ASCII names: only user values are checked
    if not (
        (not inputs or _plain_json(inputs))
        and (plain_ops or _plain_ops(event.ops))
        and (result is None or _plain_json(result))
        and (not data or _plain_json(data))
        and (error is None or _plain_json(error.traceback))
    ):
        return None
    parent = event.parent
    stamp: str | datetime = event.timestamp
    # msgspec writes an aware-UTC datetime as format_timestamp does ("...ffffffZ")
    # unless its microsecond is 0 (then it leaves the fraction out): ~1 us less per
    # event than isoformat (same-run A/B: >= 3 % of an in-memory step)
    if type(stamp) is not datetime or stamp.tzinfo is not UTC or not stamp.microsecond:
        stamp = format_timestamp(stamp)  # type: ignore[arg-type]
    return _HashView(
        event.action,
        event.actor,
        event.app_id,
        event.attempt,
        event.correlation_id,
        data,
        event.duration_us,
        None if error is None else _HashError(error.message, error.traceback, error.type),
        inputs,
        event.kind,
        event.next_action,
        event.ops,
        None
        if parent is None
        else _HashParent(parent.app_id, parent.partition_key, parent.relation, parent.sequence_id),
        event.partition_key,
        prev_hash,
        result,
        event.schema_version,
        event.sequence_id,
        stamp,
    )


# --------------------------------------------------------------------------- values


def _bad_path(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """Find where in ``value`` a non-plain item sits; return (path, what)."""
    if depth > 200:
        return path, "nesting deeper than 200 levels"
    # exact types: a subclass (an enum, a str subclass msgspec cannot write, an
    # OrderedDict) is not plain as it is and goes through msgspec in ``to_plain``
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return None
    if kind is float:
        if math.isfinite(value):
            return None
        return path, f"non-finite float {value!r} (JSON has no NaN or Infinity)"
    if kind is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"dict key {key!r} of type {type(key).__name__} (keys must be str)"
            found = _bad_path(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if kind is list:
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


def _check_ops(ops: list[Any]) -> None:
    """``_check_list(ops, 1)`` with an op dict's members checked in the loop (its
    keys, values and nested values exactly as ``_check_dict`` does): one call per
    event instead of three (with the other walks, >= 3 % of a step)."""
    for index, op in enumerate(ops):
        if type(op) is not dict:
            try:
                _check_item(op, type(op), 1)
            except _Refusal as refusal:
                refusal.steps.append(f"[{index}]")
                raise
            continue
        for key, item in op.items():
            kind = type(item)
            if (kind is str and type(key) is str) or (
                kind is int and type(key) is str and _INT_MIN <= item <= _INT_MAX
            ):
                continue
            try:
                if type(key) is not str and not _is_str(key):
                    name = "None" if key is None else type(key).__name__
                    raise _Refusal("str dict keys", f"the {name} key {key!r}")
                _check_item(item, kind, 2)
            except _Refusal as refusal:
                refusal.steps.append(f".{key}")
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


def check_values(
    event: Event, stream: tuple[str, str], sequence_id: int, ops_checked: bool = False
) -> None:
    """Refuse ``event`` unless every field reads back identically (and hashes the same).

    ``InvalidEventError`` for a field of the wrong type, ``EncodingError`` for a
    value no codec reads back as it is: a non-JSON value (set, bytes,
    datetime, tuple, ...) in ``inputs``/``ops``/``result``/``data``, NaN or
    Infinity, a non-str dict key, an int outside +-(2**53 - 1), nesting
    deeper than ``MAX_VALUE_DEPTH``, a timestamp with a UTC offset other than
    zero. Both say where (``$.ops[0].value.tags[2]``), what was expected and
    what came in. The shape of each op is ``check_ops``'s. Lone surrogates in
    strs are refused by the encoders (``_explain``).
    The identity, ``sequence_id``, ``kind`` and ``schema_version`` are
    ``check_event``'s. One walk over the values; the fields are plain type
    checks, exact types first. ``ops_checked``: the caller found the ops to be
    scalar sets and appends (``scalar_ops``), whose values pass; not walked again.
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
    value = event.actor
    if value is not None and type(value) is not str and not _is_str(value):
        raise _wrong_type(stream, sequence_id, "$.actor", "str or None", value)
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
    value = event.duration_us
    if type(value) is not int:
        raise _wrong_type(stream, sequence_id, "$.duration_us", "int", value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _refused(stream, sequence_id, "$.duration_us", _INT_RANGE, str(value))
    value = event.attempt
    if type(value) is not int:
        raise _wrong_type(stream, sequence_id, "$.attempt", "int", value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _refused(stream, sequence_id, "$.attempt", _INT_RANGE, str(value))
    value = event.legacy
    if value is not None and not isinstance(value, LegacyV1):
        raise _wrong_type(stream, sequence_id, "$.legacy", "LegacyV1 or None", value)
    if event.error is not None:
        _check_error(event.error, stream, sequence_id)
    if event.parent is not None:
        _check_parent(event.parent, stream, sequence_id)
    inputs = event.inputs
    if type(inputs) is not dict and not isinstance(inputs, dict):
        raise _wrong_type(stream, sequence_id, "$.inputs", "dict", inputs)
    ops = event.ops
    if type(ops) is not list:
        raise _wrong_type(stream, sequence_id, "$.ops", "a list of ops", ops)
    data = event.data
    if type(data) is not dict and not isinstance(data, dict):
        raise _wrong_type(stream, sequence_id, "$.data", "dict", data)
    # the one walk over the values
    field = "ops"
    try:
        if ops and not ops_checked:  # (``ops_checked``: the caller's ``scalar_ops``)
            _check_ops(ops)
        if inputs:
            field = "inputs"
            _check_dict(inputs, 1)
        value = event.result
        if value is not None:
            field = "result"
            _check_item(value, type(value), 0)
        if data:
            field = "data"
            _check_dict(data, 1)
    except _Refusal as refusal:
        raise _located(refusal, field, stream, sequence_id) from None


def _check_error(error: Any, stream: tuple[str, str], sequence_id: int) -> None:
    if not isinstance(error, ErrorInfo):
        raise _wrong_type(stream, sequence_id, "$.error", "ErrorInfo or None", error)
    for name in ("type", "message"):
        value = getattr(error, name)
        if not _is_str(value):
            raise _wrong_type(stream, sequence_id, f"$.error.{name}", "str", value)
    frames = error.traceback
    if type(frames) is not list:
        raise _wrong_type(stream, sequence_id, "$.error.traceback", "a list of str", frames)
    for index, line in enumerate(frames):
        if not _is_str(line):
            raise _wrong_type(stream, sequence_id, f"$.error.traceback[{index}]", "str", line)


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
    fields.append(("$.actor", event.actor))
    if isinstance(event.error, ErrorInfo):
        fields += [("$.error.type", event.error.type), ("$.error.message", event.error.message)]
        fields.append(("$.error.traceback", event.error.traceback))
    if isinstance(event.parent, Lineage):
        fields += [
            (f"$.parent.{name}", getattr(event.parent, name))
            for name in ("partition_key", "app_id", "relation")
        ]
    fields += [("$.inputs", event.inputs), ("$.ops", event.ops), ("$.result", event.result)]
    fields.append(("$.data", event.data))
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
#: statelog's own upcasters; v1 -> v2 turns writes/deletes into set/delete ops.
_UPCASTERS: dict[int, Upcaster] = {1: upcast_v1_to_v2}


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


_V1_ONLY = frozenset({"duration"})

# _Body and _Delta (like Event, ErrorInfo and Lineage) opt out of the cyclic GC
# (gc=False): they hold plain decoded data, which never refers back to them, so
# no reference cycle passes through one.


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """An event without identity and chain fields, as one SQLite row stores it.

    ``v`` defaults to 1 because v1 left it out; v2 bodies always carry
    ``"v":2``. ``w`` and ``d`` (``writes``, ``deletes``) are v1's delta; a v2
    body uses them too, as a compact form of ``ops`` when the ops are only
    ``set`` ops then ``delete`` ops, each key once (``_as_delta``): the same
    ops come back in the same order, folding is a ``dict.update``, and the
    row is as small as before. ``du`` (float seconds) is v1's only.
    """

    kind: str = msgspec.field(name="k")
    action: str | None = msgspec.field(default=None, name="a")
    next_action: str | None = msgspec.field(default=None, name="n")
    inputs: dict[str, Any] = msgspec.field(default_factory=dict, name="i")
    ops: list[dict[str, Any]] = msgspec.field(default_factory=list, name="o")
    result: Any = msgspec.field(default=None, name="r")
    error: ErrorInfo | None = msgspec.field(default=None, name="e")
    timestamp: datetime = msgspec.field(default=_EPOCH, name="t")
    duration_us: int = msgspec.field(default=0, name="us")
    attempt: int = msgspec.field(default=1, name="at")
    parent: Lineage | None = msgspec.field(default=None, name="p")
    actor: str | None = msgspec.field(default=None, name="ac")
    correlation_id: str | None = msgspec.field(default=None, name="c")
    data: dict[str, Any] = msgspec.field(default_factory=dict, name="x")
    schema_version: int = msgspec.field(default=1, name="v")
    legacy: LegacyV1 | None = msgspec.field(default=None, name="l")
    writes: dict[str, Any] = msgspec.field(default_factory=dict, name="w")
    deletes: list[str] = msgspec.field(default_factory=list, name="d")
    duration: float = msgspec.field(default=0.0, name="du")


class _Delta(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Just the state change of a stored body: the fast path for folding."""

    # absent members decode to shared empty defaults, not a new list or dict per body
    # (same-run A/B, fold_stream of 10,000 events: see docs/benchmarks.md)
    ops: tuple[dict[str, Any], ...] = msgspec.field(default=(), name="o")
    writes: dict[str, Any] | None = msgspec.field(default=None, name="w")
    deletes: tuple[str, ...] = msgspec.field(default=(), name="d")
    schema_version: int = msgspec.field(default=1, name="v")


#: The v2 part of ``_Body`` (every field before the v1-only ``w``, ``d``, ``du``).
_BODY_FIELDS = [f for f in msgspec.structs.fields(_Body) if f.name not in _V1_ONLY]
_BODY_KEYS = {f.name: f.encode_name for f in _BODY_FIELDS}

#: ``_Body`` for encoding, built positionally (faster than 16 keywords): the v2
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
        for f in _BODY_FIELDS
    ],
    frozen=True,
    omit_defaults=True,
    gc=False,
    module=__name__,
)


_NO_DELETES: list[str] = []  # never grown: _body_of's deletes when there are none


def _body_of(event: Event, writes: dict[str, Any] | None = None) -> Any:
    """The ``_BodyOut`` of an event: what its stored body encodes.

    ``writes``: ``event.ops`` as ``scalar_sets`` found them, if the caller has it.
    """
    ops = event.ops
    deletes: list[str] = _NO_DELETES
    if writes is not None:
        ops = []
    elif (delta := _as_delta(ops)) is not None:
        ops = []
        writes, deletes = delta
    else:
        writes = {}
    return _BodyOut(
        event.kind,
        event.action,
        event.next_action,
        event.inputs,
        ops,
        event.result,
        event.error,
        event.timestamp,
        event.duration_us,
        event.attempt,
        event.parent,
        event.actor,
        event.correlation_id,
        event.data,
        event.schema_version,
        event.legacy,
        writes,
        deletes,
    )


def _as_delta(ops: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]] | None:
    """``(writes, deletes)`` when ``ops`` are ``set`` ops then ``delete`` ops, each key
    once, so ``ops_of_delta(writes, deletes) == ops``; else ``None``."""
    if not ops:
        return None
    writes: dict[str, Any] = {}
    deletes: list[str] = []
    for op in ops:
        kind = op.get("op")
        key = op.get("key")
        if type(key) is not str:
            return None
        if kind == "set" and not deletes and len(op) == 3 and "value" in op:
            if key in writes:
                return None
            writes[key] = op["value"]
        elif kind == "delete" and len(op) == 2:
            if key in writes or key in deletes:
                return None
            deletes.append(key)
        else:
            return None
    return writes, deletes


class Codec:
    """A named pair of encoders: ``json`` (default) or ``msgpack``."""

    def __init__(self, name: CodecName = "json") -> None:
        if name == "json":
            self._enc: Any = msgspec.json.Encoder()
            self._event_dec: Any = msgspec.json.Decoder(Event)
            self._body_dec: Any = msgspec.json.Decoder(_Body)
            self._delta_dec: Any = msgspec.json.Decoder(_Delta)
            self._raw_dec: Any = msgspec.json.Decoder()
            self.content_type = "application/json"
        elif name == "msgpack":
            self._enc = msgspec.msgpack.Encoder()
            self._event_dec = msgspec.msgpack.Decoder(Event)
            self._body_dec = msgspec.msgpack.Decoder(_Body)
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
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # older msgspec: bad UTF-8
            raise EncodingError(f"malformed {self.name} event: {exc}") from exc
        if event.schema_version != SCHEMA_VERSION:
            raw = upcast(self._raw_dec.decode(data))
            event = _convert_event(raw)
        return event

    # --- stored bodies (SQLite rows)

    def encode_body(self, event: Event, writes: dict[str, Any] | None = None) -> bytes:
        """The stored body of ``event``: short keys, defaults left out.

        ``writes``: the event's ops as ``scalar_sets`` returned them (the store's
        check has them), so they are not looked at again; else ``None``.
        """
        try:
            return self._enc.encode(_body_of(event, writes))  # type: ignore[no-any-return]
        except ENCODE_ERRORS as exc:
            raise _explain(event, exc) from exc

    def encode_body_buffer(self, event: Event, writes: dict[str, Any] | None = None) -> bytearray:
        """``encode_body`` into a new ``bytearray`` (the same bytes).

        For the SQLite store: ``sqlite3`` binds a ``bytearray`` as a BLOB
        straight away, while for ``bytes`` it first looks for an adapter
        (a registry lookup and two attribute lookups per value, ~0.3 us).
        """
        buffer = bytearray()
        try:
            self._enc.encode_into(_body_of(event, writes), buffer)
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
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # older msgspec: bad UTF-8
            raise EncodingError(f"corrupt stored event: {exc}") from exc
        if b.schema_version == SCHEMA_VERSION:
            return _event_from_body(b, partition_key, app_id, sequence_id, prev_hash, hash)
        if b.schema_version > SCHEMA_VERSION:
            raise SchemaVersionError(b.schema_version, SCHEMA_VERSION)
        # An older body is always carried forward, ``upcast_old`` or not: the
        # v1 -> v2 upcaster keeps the v1 fields in ``legacy``, so the event
        # still hashes as it was written (the chain is checked on this form).
        return _convert_event(
            upcast(_v1_raw(b, partition_key, app_id, sequence_id, prev_hash, hash))
        )

    def decode_rows(self, rows: Sequence[Sequence[Any]], prevs: Sequence[bytes]) -> list[Event]:
        """Decode stored rows ``(body, partition_key, app_id, sequence_id, hash, ...)``.

        ``hash`` (in the row) and ``prevs`` (one per row) are raw digests,
        ``b""`` for none. Each body is decoded on its own (never joined with
        its neighbours); a page with a body that does not decode or with an
        older ``schema_version`` goes through ``decode_body`` row by row, which
        upcasts or raises ``EncodingError`` for exactly that row.

        (Decoding each row straight into an ``Event``, with the identity and
        chain spliced into the body's bytes, was measured slower: the splicing
        in Python and the longer keys cost more than the ``Event(...)`` call.)
        """
        if not rows:
            return []
        # each body alone: joined into one array, a crafted body could spill into
        # the next row's bytes and read back as two events that are not the rows
        decode = self._body_dec.decode
        try:
            decoded: list[_Body] = [decode(row[0]) for row in rows]
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            return self._decode_each(rows, prevs)  # names the bad row
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
        self,
        rows: Sequence[Sequence[Any]],
        state: dict[str, Any],
        start: int = 0,
        owned: set[str] | None = None,
    ) -> int:
        """Fold the deltas of stored bodies ``rows[start:]`` (rows ``(body,)``) onto ``state``.

        The fast fold path: only ``ops`` (v1 bodies: ``writes`` and ``deletes``,
        which fold as the v1 -> v2 upcaster's ``set`` and ``delete`` ops) are
        decoded. ``owned`` is ``apply_ops``'s set of keys this fold may grow in
        place; pass the same set when a caller goes on after an index this
        returned. Returns ``len(rows)``, or the index of the first body of
        another ``schema_version`` (not 2 or 1), which is not folded: the caller
        decodes it (which upcasts or refuses) and goes on after it.
        """
        decode = self._delta_dec.decode
        update = state.update
        pop = state.pop
        current = SCHEMA_VERSION
        mine: set[str] = set() if owned is None else owned
        discard = mine.discard
        index = start
        try:
            # unpacking each row in the loop header: ~4% less than rows[index][0]
            for index, (body,) in enumerate(islice(rows, start, None), start):
                d: _Delta = decode(body)
                if d.schema_version == current:
                    if d.ops:
                        apply_ops(state, d.ops, mine)
                        continue
                    # else the compact form (set ops, then delete ops): as v1 folds
                elif d.schema_version != 1:  # newer (refused) or older: decoded fully
                    return index
                writes = d.writes
                if writes:
                    update(writes)
                    if mine:  # a key set whole is no longer this fold's to grow in place
                        for key in writes:
                            discard(key)
                if d.deletes:
                    for key in d.deletes:
                        pop(key, None)
                        discard(key)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise EncodingError(f"corrupt stored event: {exc}") from exc
        return len(rows)


def _event_from_body(
    b: _Body, partition_key: str, app_id: str, sequence_id: int, prev_hash: str, hash: str
) -> Event:
    """The event a stored body and its row's identity and chain make."""
    # the fields every event sets, then the others only where a body has them:
    # msgspec's keyword matching grows with their number (same-run A/B, decode_rows:
    # 2,478 -> 1,765 ns per row, docs/benchmarks.md)
    event = Event(
        partition_key=partition_key,
        app_id=app_id,
        sequence_id=sequence_id,
        kind=b.kind,
        action=b.action,
        next_action=b.next_action,
        ops=b.ops if not (b.writes or b.deletes) else ops_of_delta(b.writes, b.deletes),
        timestamp=b.timestamp,
        duration_us=b.duration_us,
        schema_version=b.schema_version,
        prev_hash=prev_hash,
        hash=hash,
    )
    if (
        b.inputs
        or b.result is not None
        or b.error is not None
        or b.attempt != 1
        or b.parent is not None
        or b.actor is not None
        or b.correlation_id is not None
        or b.data
        or b.legacy is not None
    ):
        event = msgspec.structs.replace(
            event,
            inputs=b.inputs,
            result=b.result,
            error=b.error,
            attempt=b.attempt,
            parent=b.parent,
            actor=b.actor,
            correlation_id=b.correlation_id,
            data=b.data,
            legacy=b.legacy,
        )
    return event


def _v1_raw(
    b: _Body, partition_key: str, app_id: str, sequence_id: int, prev_hash: str, hash: str
) -> dict[str, Any]:
    """A v1 stored body as the raw v1 event dict the upcasters take."""
    to_builtins = msgspec.to_builtins
    return {
        "partition_key": partition_key,
        "app_id": app_id,
        "sequence_id": sequence_id,
        "kind": b.kind,
        "action": b.action,
        "next_action": b.next_action,
        "inputs": b.inputs,
        "writes": b.writes,
        "deletes": b.deletes,
        "result": b.result,
        "error": to_builtins(b.error),
        "timestamp": to_builtins(b.timestamp),
        "duration": b.duration,
        "attempt": b.attempt,
        "parent": to_builtins(b.parent),
        "correlation_id": b.correlation_id,
        "schema_version": b.schema_version,
        "prev_hash": prev_hash,
        "hash": hash,
    }


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
