"""``verify``'s fast path: a stored body straight to the bytes its hash covers.

``canonical_bytes(event)`` (``eventstore/_codec.py``) is the reference: the
RFC 8785 form of the event's hash view. Reaching it from a stored row the
ordinary way costs a whole ``Event`` per row (``decode_rows``), a walk in
Python over every user value (no float? no unsafe integer? only str member
names?), ``format_timestamp`` and ``ops_of_delta``. ``view_bytes`` builds the
same bytes from the row with less:

* the body is decoded into ``VerifyBody``: ``_Body``'s fields with the same
  names and defaults, but the user values (``inputs``, ``ops``, ``result``,
  ``data``, ``w``) typed as ``Plain``: JSON without floats, with integers
  within +-(2**53 - 1) and str member names, nested at most ``DEPTH`` deep.
  msgspec checks that while decoding, in C; a body that decodes so decodes
  as ``_Body`` too, to the same values, and is one whose msgspec JSON is
  RFC 8785 (but for the member order, below). A body that does not (a float,
  deeper nesting, a body of another shape) is for the reference path;
* ``error`` and ``parent`` are decoded into structs whose fields are in name
  order and always written, as the hash view wants them;
* the view is one ``HashView`` struct (fields in RFC 8785 order) encoded by
  msgspec's deterministic encoder, as ``canonical_bytes`` does;
* a compact body (``w``/``d``) gives its ops as small structs (``key``,
  ``op``, ``value`` in name order) instead of dicts;
* the timestamp is left to msgspec when that writes ``format_timestamp``'s
  string (UTC, microseconds not 0; a test holds them equal), else formatted;
* member names are sorted by code point, RFC 8785 sorts them by UTF-16 code
  unit: the two orders differ only between a character at or above U+10000
  and one in U+E000-U+FFFF, so bytes with a character at or above U+10000
  anywhere (a UTF-8 lead byte F0-F4) go to the reference path.

``view_bytes`` returns ``None`` whenever it cannot promise the reference's
bytes (also for a body of another ``schema_version`` or a v1 ``legacy``
event); the caller then takes the reference path for that row. Each body is
decoded on its own (never a page joined into one array, where one crafted
body could shift its neighbours' bytes onto the wrong rows).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import repeat
from typing import Annotated, Any, Union

import msgspec

from .._canonical import MAX_SAFE_INTEGER
from .._codec import format_timestamp
from .._event import _EPOCH, SCHEMA_VERSION

__all__ = ["DEPTH", "EMPTY", "VerifyBody", "body_decoder", "view_bytes"]

_Scalar = Union[  # noqa: UP007 (a runtime type for msgspec, spelled as msgspec shows it)
    None, bool, Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)], str
]


def _nest(inner: Any) -> Any:
    return Union[_Scalar, list[inner], dict[str, inner]]  # noqa: UP007


#: How deep a user value may nest for the fast path (deeper: the reference path).
DEPTH = 6
Plain: Any = _Scalar
for _ in range(DEPTH):
    Plain = _nest(Plain)


class _Empty(msgspec.Struct, frozen=True, gc=False):
    """An object with no members: ``{}`` when encoded, shared, never changed."""


#: The default of ``VerifyBody``'s dict members (not a dict: test ``is EMPTY``).
EMPTY: Any = _Empty()
#: The default of its list members.
NONE: Any = ()


class ViewError(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``ErrorInfo`` as stored (same names, types, defaults), fields in name order."""

    message: str
    traceback: list[str] = []
    type: str


class ViewParent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``Lineage`` as stored (same names, types, defaults), fields in name order."""

    app_id: str
    partition_key: str
    relation: str = "fork"
    sequence_id: int


class VerifyBody(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``_Body`` (``eventstore/_codec.py``) field for field, user values ``Plain``."""

    kind: str = msgspec.field(name="k")
    action: str | None = msgspec.field(default=None, name="a")
    next_action: str | None = msgspec.field(default=None, name="n")
    # Absent members share one immutable default instead of a new dict or list per
    # body (same-run A/B: -0.2 us of ~1 us per decode); EMPTY encodes as {}, NONE as [].
    inputs: dict[str, Plain] = msgspec.field(default=EMPTY, name="i")
    ops: list[dict[str, Plain]] = msgspec.field(default=NONE, name="o")
    result: Plain = msgspec.field(default=None, name="r")
    error: ViewError | None = msgspec.field(default=None, name="e")
    timestamp: datetime = msgspec.field(default=_EPOCH, name="t")
    duration_us: int = msgspec.field(default=0, name="us")
    attempt: int = msgspec.field(default=1, name="at")
    parent: ViewParent | None = msgspec.field(default=None, name="p")
    actor: str | None = msgspec.field(default=None, name="ac")
    correlation_id: str | None = msgspec.field(default=None, name="c")
    data: dict[str, Plain] = msgspec.field(default=EMPTY, name="x")
    schema_version: int = msgspec.field(default=1, name="v")
    legacy: Any = msgspec.field(default=None, name="l")  # any value: the reference decides
    writes: dict[str, Plain] = msgspec.field(default=EMPTY, name="w")
    deletes: list[str] = msgspec.field(default=NONE, name="d")
    duration: float = msgspec.field(default=0.0, name="du")


class HashView(msgspec.Struct, frozen=True, gc=False):
    """``hash_view`` with its members in RFC 8785 order (as ``_codec._HashView``)."""

    action: str | None
    actor: str | None
    app_id: str
    attempt: int
    correlation_id: str | None
    data: dict[str, Any]
    duration_us: int
    error: ViewError | None
    inputs: dict[str, Any]
    kind: str
    next_action: str | None
    ops: Any
    parent: ViewParent | None
    partition_key: str
    prev_hash: str
    result: Any
    schema_version: int
    sequence_id: int
    timestamp: Any  # a UTC datetime msgspec writes as format_timestamp does, or that string


class SetOp(msgspec.Struct, frozen=True, gc=False):
    """``{"op": "set", "key": k, "value": v}`` with its members in name order."""

    key: str
    op: str
    value: Any


class DeleteOp(msgspec.Struct, frozen=True, gc=False):
    """``{"op": "delete", "key": k}`` with its members in name order."""

    key: str
    op: str


_encode = msgspec.json.Encoder(order="deterministic").encode
_SET = repeat("set")  # endless: each map stops at its own end
_DELETE = repeat("delete")
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # the lead byte of a 4-byte UTF-8 sequence
_EPOCH_TEXT = format_timestamp(_EPOCH)


def body_decoder(codec_name: str) -> Any:
    """The ``decode`` of ``VerifyBody`` for a store's codec (``json`` or ``msgpack``)."""
    if codec_name == "msgpack":
        return msgspec.msgpack.Decoder(VerifyBody).decode
    return msgspec.json.Decoder(VerifyBody).decode


def view_bytes(
    b: VerifyBody, partition_key: str, app_id: str, sequence_id: int, prev_hash: str
) -> bytes | None:
    """``canonical_bytes`` of the event the body ``b`` and its row make, or ``None``
    when only the reference path can say (see the module doc)."""
    if b.schema_version != SCHEMA_VERSION or b.legacy is not None:
        return None
    writes = b.writes
    deletes = b.deletes
    if (writes is not EMPTY and writes) or deletes:  # the compact form: it wins over "o"
        ops: Any = []
        if writes is not EMPTY:
            ops += map(SetOp, writes, _SET, writes.values())
        if deletes:
            ops += map(DeleteOp, deletes, _DELETE)
    else:
        ops = b.ops
    ts: Any = b.timestamp
    if ts is _EPOCH:  # a body without "t" (the decoder hands out the default itself)
        ts = _EPOCH_TEXT
    elif ts.tzinfo is not UTC or not ts.microsecond:
        ts = format_timestamp(ts)
    try:
        data = _encode(
            HashView(
                b.action,
                b.actor,
                app_id,
                b.attempt,
                b.correlation_id,
                b.data,
                b.duration_us,
                b.error,
                b.inputs,
                b.kind,
                b.next_action,
                ops,
                b.parent,
                partition_key,
                prev_hash,
                b.result,
                b.schema_version,
                sequence_id,
                ts,
            )
        )
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        return None  # a lone surrogate, say: the reference names it
    if not data.isascii() and _ASTRAL.search(data) is not None:
        return None  # a character at or above U+10000: UTF-16 order may differ
    return data
