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
    "LegacyV1",
    "Lineage",
    "Recorded",
    "StreamId",
    "utcnow",
]

#: The schema version this statelog writes. Older versions are upcast on read.
SCHEMA_VERSION = 2


class StreamId(NamedTuple):
    """The identity of one stream: ``(partition_key, app_id)``."""

    partition_key: str
    app_id: str

    def __str__(self) -> str:
        return f"{self.partition_key}/{self.app_id}" if self.partition_key else self.app_id


class EventKind(StrEnum):
    """The kinds of event statelog itself writes. Stores accept any non-empty kind.

    docs/wire-format.md lists the fields each kind sets.
    """

    APP_INITIALIZED = "app_initialized"
    RUN_STARTED = "run_started"
    ACTION_COMPLETED = "action_completed"
    ATTEMPT_FAILED = "attempt_failed"
    ACTION_FAILED = "action_failed"
    HALTED = "halted"
    WAITING_FOR_INPUT = "waiting_for_input"
    INPUT_RECEIVED = "input_received"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FORKED = "forked"
    CHILD_COMPLETED = "child_completed"
    GRAPH_CHANGED = "graph_changed"


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
    """What went wrong in a failed attempt or action step.

    ``traceback`` is a bounded summary of where it was raised, innermost frame
    last, each ``"file:line in function"`` (the engine keeps at most 8 frames
    of at most 200 characters each).
    """

    type: str
    message: str
    traceback: list[str] = []


class LegacyV1(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The fields of a schema v1 event that v2 does not keep as they were.

    Set only on events written as v1 and carried forward by the upcaster: the
    v1 hash is recomputed from them (``writes``, ``deletes``, ``duration`` in
    float seconds), while folding uses the event's ``ops``.
    """

    writes: dict[str, Any] = {}
    deletes: list[str] = []
    duration: float = 0.0


def utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One immutable record of one stream (schema v2).

    ``sequence_id`` is the offset in the stream (dense, from 0). ``ops`` is the
    state change as operations (``_ops``); folding applies them in sequence
    order. ``inputs`` holds only what the action declared (``run_started``: the
    run's inputs, once). ``data`` holds the kind-specific fields
    (docs/wire-format.md lists them per kind). ``duration_us`` is integer
    microseconds: no fixed field holds a float, so the canonical form of an
    event whose user values hold no float is msgspec's sorted JSON.
    ``prev_hash``/``hash`` form a SHA-256 (or HMAC-SHA-256) chain over the RFC
    8785 canonical JSON of the event; stores set them on append. ``legacy`` is
    set only on events written as schema v1 (see ``LegacyV1``).
    """

    partition_key: str
    app_id: str
    sequence_id: int
    kind: str
    action: str | None = None
    next_action: str | None = None
    inputs: dict[str, Any] = {}
    ops: list[dict[str, Any]] = []
    result: Any = None
    error: ErrorInfo | None = None
    timestamp: datetime = _EPOCH
    duration_us: int = 0
    attempt: int = 1
    parent: Lineage | None = None
    actor: str | None = None
    correlation_id: str | None = None
    data: dict[str, Any] = {}
    schema_version: int = SCHEMA_VERSION
    prev_hash: str = ""
    hash: str = ""
    legacy: LegacyV1 | None = None

    @property
    def stream(self) -> StreamId:
        return StreamId(self.partition_key, self.app_id)


class Recorded(NamedTuple):
    """An event with its global position in the store that holds it."""

    position: int
    event: Event
