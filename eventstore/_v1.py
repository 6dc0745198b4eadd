"""Schema v1, frozen: the v1 hash rule and the upcaster that carries v1 events forward.

A v1 event's hash is SHA-256 (or HMAC-SHA-256) over msgspec's deterministic
JSON of the whole v1 ``Event`` struct with ``hash`` blank. That encoding
depends on the struct's exact fields, their order and defaults, so the v1
structs are kept here as they were at d1425d8 and never change: adding a field
to today's ``Event`` must not change how a v1 event hashes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ._event import _EPOCH, Event
from ._ops import ops_of_delta

__all__ = ["upcast_v1_to_v2", "v1_canonical_bytes"]


class _LineageV1(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    partition_key: str
    app_id: str
    sequence_id: int
    relation: str = "fork"


class _ErrorInfoV1(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    type: str
    message: str


class _EventV1(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    partition_key: str
    app_id: str
    sequence_id: int
    kind: str
    action: str | None = None
    next_action: str | None = None
    inputs: dict[str, Any] = {}
    writes: dict[str, Any] = {}
    deletes: list[str] = []
    result: Any = None
    error: _ErrorInfoV1 | None = None
    timestamp: datetime = _EPOCH
    duration: float = 0.0
    attempt: int = 1
    parent: _LineageV1 | None = None
    correlation_id: str | None = None
    schema_version: int = 1
    prev_hash: str = ""
    hash: str = ""


_encode_v1 = msgspec.json.Encoder(order="deterministic").encode


def v1_canonical_bytes(event: Event) -> bytes:
    """The bytes a v1 event's hash covers, rebuilt from its carried-forward form."""
    legacy = event.legacy
    assert legacy is not None
    error = event.error
    parent = event.parent
    return _encode_v1(
        _EventV1(
            partition_key=event.partition_key,
            app_id=event.app_id,
            sequence_id=event.sequence_id,
            kind=event.kind,
            action=event.action,
            next_action=event.next_action,
            inputs=event.inputs,
            writes=legacy.writes,
            deletes=legacy.deletes,
            result=event.result,
            error=None if error is None else _ErrorInfoV1(type=error.type, message=error.message),
            timestamp=event.timestamp,
            duration=legacy.duration,
            attempt=event.attempt,
            parent=None
            if parent is None
            else _LineageV1(
                partition_key=parent.partition_key,
                app_id=parent.app_id,
                sequence_id=parent.sequence_id,
                relation=parent.relation,
            ),
            correlation_id=event.correlation_id,
            schema_version=1,
            prev_hash=event.prev_hash,
            hash="",
        )
    )


def upcast_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw v1 event dict as v2: ``writes`` -> ``set`` ops, ``deletes`` -> ``delete`` ops.

    ``duration`` (float seconds) becomes ``duration_us``; the v1 fields that v2
    cannot hold as they were go to ``legacy``, so the event still verifies.
    """
    writes = raw.pop("writes", None) or {}
    deletes = raw.pop("deletes", None) or []
    duration = raw.pop("duration", 0.0) or 0.0
    raw["ops"] = ops_of_delta(writes, deletes)
    raw["duration_us"] = round(duration * 1_000_000)
    raw["legacy"] = {"writes": writes, "deletes": deletes, "duration": float(duration)}
    raw["schema_version"] = 2
    return raw
