"""The hash chain: pure functions to seal a batch and to verify a stream.

Each event's ``hash`` is SHA-256 (or HMAC-SHA-256 with a key) over its
canonical encoding (``canonical_bytes``: RFC 8785 JSON of every field but
``hash``), which includes ``prev_hash`` - the previous event's hash, ``""``
for sequence 0. Changing any byte of an event, its sequence, or the order
of events breaks the chain at that event or the next one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ._codec import (
    ENCODE_ERRORS,
    _explain,
    _is_str,
    _view_encoder,
    _wrong_type,
    canonical_bytes,
    check_values,
    plain_view,
)
from ._errors import EncodingError, InvalidEventError
from ._event import SCHEMA_VERSION, Event, StreamId
from ._ops import check_ops, common_ops, scalar_ops, scalar_sets

__all__ = [
    "BrokenLink",
    "check_batch",
    "check_event",
    "compute_hash",
    "seal",
    "seal_one",
    "validate_batch",
    "verify_events",
]


class BrokenLink(msgspec.Struct, frozen=True, kw_only=True):
    """The first place a stream's chain does not hold."""

    partition_key: str
    app_id: str
    sequence_id: int
    reason: str

    @property
    def stream(self) -> StreamId:
        return StreamId(self.partition_key, self.app_id)

    def __str__(self) -> str:
        return f"{self.stream}#{self.sequence_id}: {self.reason}"


#: ``tuple.__new__(StreamId, (a, b))`` is ``StreamId(a, b)`` without the Python-level
#: ``__new__`` a NamedTuple has (~0.3 us less per append).
_new_tuple = tuple.__new__
_sha256 = hashlib.sha256
_encode_canonical = canonical_bytes
#: An HMAC-SHA-256 object per key with nothing fed yet: ``copy()`` reuses its
#: hashed pads instead of ``hmac.new`` deriving them again for every event.
_HMACS: dict[bytes, hmac.HMAC] = {}


def _keyed(data: bytes | bytearray, key: bytes) -> hmac.HMAC:
    """An HMAC-SHA-256 of ``data`` under ``key``, from the key's cached template."""
    template = _HMACS.get(key)
    if template is None:
        if len(_HMACS) >= 16:
            _HMACS.clear()
        template = _HMACS[key] = hmac.new(key, digestmod=hashlib.sha256)
    mac = template.copy()
    mac.update(data)
    return mac


def hash_bytes(data: bytes | bytearray, key: bytes | None) -> str:
    """The hex SHA-256 of ``data``, or its HMAC-SHA-256 under ``key``."""
    if key is None:
        return _sha256(data).hexdigest()
    return _keyed(data, key).hexdigest()


def compute_hash(event: Event, key: bytes | None = None) -> str:
    """The hex digest of ``event`` (its own ``hash`` field is ignored)."""
    return hash_bytes(canonical_bytes(event), key)


def validate_batch(events: Sequence[Event], expected_sequence: int) -> StreamId:
    """Check a batch before anything is written; return its stream (``check_batch``)."""
    return check_batch(events, expected_sequence)[0]


def check_batch(
    events: Sequence[Event], expected_sequence: int
) -> tuple[StreamId, bool, list[dict[str, Any] | None]]:
    """Check a batch before anything is written; return its stream.

    A batch is non-empty, belongs to one stream with a non-empty ``app_id``,
    and its sequence ids run ``expected_sequence + 1, + 2, ...`` with no gap;
    each event passes ``check_event``. Also returns whether every event's ops
    are scalar sets and appends (``scalar_ops``), for ``seal``'s ``plain_ops``,
    and each event's ``writes`` (``check_event``'s), for its body.
    """
    if not events:
        raise InvalidEventError("append needs at least one event, got an empty batch")
    first = events[0]
    if not isinstance(first, Event):
        raise InvalidEventError(f"expected Event objects, got {type(first).__name__}")
    partition_key = first.partition_key
    app_id = first.app_id
    if not _is_str(app_id):
        raise _wrong_type(first.stream, first.sequence_id, "$.app_id", "str", app_id)
    if not app_id:
        raise InvalidEventError("app_id must be a non-empty string, got an empty one")
    if not _is_str(partition_key):
        raise _wrong_type(first.stream, first.sequence_id, "$.partition_key", "str", partition_key)
    if "\x00" in app_id or "\x00" in partition_key:
        raise InvalidEventError("app_id and partition_key must not contain NUL characters")
    if type(expected_sequence) is not int or expected_sequence < -1:
        raise InvalidEventError(
            f"expected_sequence must be an int >= -1 (-1 for a new stream), "
            f"got {expected_sequence!r}"
        )
    stream = _new_tuple(StreamId, (partition_key, app_id))
    want = expected_sequence + 1
    plain = True
    deltas: list[dict[str, Any] | None] = []
    for event in events:
        if event is not first:
            if not isinstance(event, Event):
                raise InvalidEventError(f"expected Event objects, got {type(event).__name__}")
            if event.app_id != app_id or event.partition_key != partition_key:
                raise InvalidEventError(
                    f"one append holds one stream: {stream} and "
                    f"{StreamId(event.partition_key, event.app_id)} are mixed"
                )
        scalar, writes = check_event(event, stream, want)
        plain = scalar and plain
        deltas.append(writes)
        want += 1
    return stream, plain, deltas


def check_event(event: Event, stream: StreamId, want: int) -> tuple[bool, dict[str, Any] | None]:
    """The checks of one event of a batch for ``stream``: sequence ``want``, kind,
    version, and that every other field reads back as it is (``check_values``).

    ``validate_batch`` runs them on every event, after the batch-wide checks
    (one stream, a valid ``app_id``); a store that knows the stream already
    (it has written to it) may run just these on a one-event append. Returns
    whether the ops are scalar sets and appends (``scalar_ops``; or none), and
    when they are scalar sets only, their ``writes`` (``scalar_sets``: the
    stored body's form, which ``Codec.encode_body`` then need not work out).
    """
    sequence_id = event.sequence_id
    if type(sequence_id) is not int:  # 1.0 == True == 1, but would not read back as 1
        raise _wrong_type(stream, want, "$.sequence_id", "int", sequence_id)
    if sequence_id != want:
        raise InvalidEventError(
            f"sequence gap in batch for {stream}: expected sequence_id {want}, got {sequence_id}"
        )
    kind = event.kind
    if type(kind) is not str and not _is_str(kind):
        raise _wrong_type(stream, want, "$.kind", "a non-empty str", kind)
    if not kind:
        raise InvalidEventError(f"event {stream}#{want}: expected a non-empty str at `$.kind`")
    version = event.schema_version
    if version != SCHEMA_VERSION or type(version) is not int:
        if type(version) is not int:
            raise _wrong_type(stream, want, "$.schema_version", "int", version)
        raise InvalidEventError(
            f"event {stream}#{want}: expected {SCHEMA_VERSION} at `$.schema_version` "
            f"(new events are written at it), got {version}"
        )
    ops = event.ops
    # ops of scalar sets and appends (most events) pass the shape check, the value
    # check and the hash's float test in one walk (same-run A/B: -5.5 % instructions
    # and -7 % CPU per in-memory append, -12 % per in-memory step)
    writes = scalar_sets(ops) if ops and type(ops) is list else None
    plain = writes is not None or not ops or (type(ops) is list and scalar_ops(ops))
    # the message is built only for ops that may be refused: the f-string (with
    # StreamId.__str__) cost ~0.3 us per event (same-run A/B: >= 3 % with the rest)
    if not plain and not common_ops(ops):
        check_ops(ops, f"event {stream}#{want}")
    check_values(event, stream, want, plain)
    return plain, writes


def seal(
    events: Iterable[Event], prev_hash: str, key: bytes | None = None, *, plain_ops: bool = False
) -> list[Event]:
    """Return ``events`` with ``prev_hash`` and ``hash`` set, chained from ``prev_hash``.

    ``plain_ops``: ``check_batch`` found every event's ops to be scalar sets and
    appends, which hold no float (``canonical_bytes`` need not look again).
    """
    sealed = []
    replace = msgspec.structs.replace
    # the canonical bytes of each event go into one buffer, not a new bytes object
    # per event (same-run A/B with the one replace below: docs/benchmarks.md, session 7)
    buffer = bytearray()
    encode_into = _view_encoder.encode_into
    try:
        for event in events:
            view = plain_view(event, prev_hash, plain_ops) if event.legacy is None else None
            if view is not None:
                encode_into(view, buffer)
                data: bytes | bytearray = buffer
            else:  # a float, an odd name, a v1 event: the general way
                data = _encode_canonical(replace(event, prev_hash=prev_hash, hash=""), plain_ops)
            # keyless: inline, the hot path of every keyless append (~0.2 us)
            digest = _sha256(data).hexdigest() if key is None else hash_bytes(data, key)
            sealed.append(replace(event, prev_hash=prev_hash, hash=digest))
            prev_hash = digest
    except EncodingError as exc:  # no canonical form (an unsafe int, NaN): named
        if exc.path in (None, "$"):  # a lone surrogate somewhere: find it
            raise _explain(event, exc) from exc
        raise
    except ENCODE_ERRORS as exc:  # a lone surrogate in the identity, say
        raise _explain(event, exc) from exc
    return sealed


def seal_one(
    event: Event, prev_hash: str, key: bytes | None = None, plain_ops: bool = False
) -> tuple[Event, bytearray]:
    """``seal([event], prev_hash, key, plain_ops=plain_ops)[0]`` and its hash as raw bytes.

    For a store that keeps the digest as a BLOB: ``bytes.hex`` of one digest
    is cheaper than ``hexdigest`` followed by ``bytearray.fromhex``.
    """
    try:
        view = plain_view(event, prev_hash, plain_ops) if event.legacy is None else None
        if view is not None:
            data = _view_encoder.encode(view)
        else:  # a float, an odd name, a v1 event: the general way
            linked = msgspec.structs.replace(event, prev_hash=prev_hash, hash="")
            data = _encode_canonical(linked, plain_ops)
    except EncodingError as exc:
        if exc.path in (None, "$"):
            raise _explain(event, exc) from exc
        raise
    except ENCODE_ERRORS as exc:
        raise _explain(event, exc) from exc
    raw = bytearray(_sha256(data).digest() if key is None else _keyed(data, key).digest())
    return msgspec.structs.replace(event, prev_hash=prev_hash, hash=raw.hex()), raw


def verify_events(
    events: Iterable[Event],
    *,
    prev_hash: str = "",
    first_sequence: int = 0,
    key: bytes | None = None,
) -> BrokenLink | None:
    """Walk one stream's events in order; return the first broken link or ``None``."""
    want = first_sequence
    for event in events:

        def broken(reason: str, event: Event = event) -> BrokenLink:
            return BrokenLink(
                partition_key=event.partition_key,
                app_id=event.app_id,
                sequence_id=event.sequence_id,
                reason=reason,
            )

        if event.sequence_id != want:
            return BrokenLink(
                partition_key=event.partition_key,
                app_id=event.app_id,
                sequence_id=want,
                reason=f"expected sequence_id {want}, found {event.sequence_id}",
            )
        if event.prev_hash != prev_hash:
            return broken("prev_hash does not match the previous event's hash")
        digest = compute_hash(event, key)
        if not hmac.compare_digest(digest, event.hash):
            return broken("hash does not match the event's content")
        prev_hash = event.hash
        want += 1
    return None
