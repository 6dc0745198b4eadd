"""The event: one immutable record per action step, identical in every store."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "ErrorInfo",
    "Event",
    "EventKind",
    "Lineage",
    "Recorded",
    "StreamId",
    "utcnow",
]

#: The schema version this statelog writes. Older versions are upcast on read.
SCHEMA_VERSION = 1


class StreamId(NamedTuple):
    """The identity of one stream: ``(partition_key, app_id)``."""

    partition_key: str
    app_id: str

    def __str__(self) -> str:
        return f"{self.partition_key}/{self.app_id}" if self.partition_key else self.app_id


class EventKind(StrEnum):
    """The kinds of event statelog itself writes. Stores accept any non-empty kind."""

    APP_INITIALIZED = "app_initialized"
    ACTION_COMPLETED = "action_completed"
    ACTION_FAILED = "action_failed"
    FORKED = "forked"
    HALTED = "halted"
    CHILD_COMPLETED = "child_completed"


# gc=False (Lineage, ErrorInfo, Event): these frozen structs hold plain data -
# str, int, float, datetime, other gc=False structs, and dicts/lists of JSON
# values - which never refer back to an event, so no reference cycle can pass
# through one and the cyclic GC need not track them. Reading a page of 10,000
# events then no longer sets off collections that walk all of them (about a
# quarter of the read time). A caller that put an event inside its own
# ``writes`` would leak that cycle, not crash; ``to_plain`` refuses such values.


class Lineage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Where a stream came from: the parent stream and the sequence it branched at."""

    partition_key: str
    app_id: str
    sequence_id: int
    relation: str = "fork"  # "fork" or "child"


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What went wrong in a failed action step."""

    type: str
    message: str


def utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One immutable step of one stream.

    ``sequence_id`` is the offset in the stream (dense, from 0). ``writes`` and
    ``deletes`` are the state delta; folding applies them in sequence order.
    ``prev_hash``/``hash`` form a SHA-256 (or HMAC-SHA-256) chain over the
    canonical encoding; stores set them on append.
    """

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
    error: ErrorInfo | None = None
    timestamp: datetime = _EPOCH
    duration: float = 0.0
    attempt: int = 1
    parent: Lineage | None = None
    correlation_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    prev_hash: str = ""
    hash: str = ""

    @property
    def stream(self) -> StreamId:
        return StreamId(self.partition_key, self.app_id)


class Recorded(NamedTuple):
    """An event with its global position in the store that holds it."""

    position: int
    event: Event
