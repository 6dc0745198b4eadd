"""statelog's log: events, codecs, the hash chain, the stores and snapshots.

The core lives here; each backend is a subpackage that owns its driver:
``statelog.eventstore.sqlite`` (the embedded default, re-exported here) and
``statelog.eventstore.kafka`` (imported only when used).
"""

from ._base import DEFAULT_MAX_EVENT_SIZE, EventStore, apply_event, fold, prepare_append
from ._chain import BrokenLink, compute_hash, seal, validate_batch, verify_events
from ._codec import (
    JSON,
    MAX_VALUE_DEPTH,
    MSGPACK,
    Codec,
    canonical_bytes,
    register_upcaster,
    to_plain,
    upcast,
)
from ._errors import (
    ConcurrencyError,
    ConfigError,
    EncodingError,
    EventTooLargeError,
    FencedError,
    IntegrityError,
    InvalidEventError,
    SchemaVersionError,
    StatelogError,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UsageError,
    stream_name,
)
from ._event import SCHEMA_VERSION, ErrorInfo, Event, EventKind, Lineage, Recorded, StreamId, utcnow
from ._export import EXPORT_FORMAT_VERSION, export_streams, import_streams, iter_export
from ._memory import MemoryEventStore
from ._resource import AsyncResource
from ._snapshots import (
    SNAPSHOT_SCHEMA_VERSION,
    Snapshot,
    SnapshotBackend,
    SnapshotPolicy,
    SnapshotSkippedWarning,
    SnapshotStore,
    load_state,
)
from .sqlite import SQLiteEventStore

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EXPORT_FORMAT_VERSION",
    "JSON",
    "MAX_VALUE_DEPTH",
    "MSGPACK",
    "SCHEMA_VERSION",
    "SNAPSHOT_SCHEMA_VERSION",
    "AsyncResource",
    "BrokenLink",
    "Codec",
    "ConcurrencyError",
    "ConfigError",
    "EncodingError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "EventStore",
    "EventTooLargeError",
    "FencedError",
    "IntegrityError",
    "InvalidEventError",
    "Lineage",
    "MemoryEventStore",
    "Recorded",
    "SQLiteEventStore",
    "SchemaVersionError",
    "Snapshot",
    "SnapshotBackend",
    "SnapshotPolicy",
    "SnapshotSkippedWarning",
    "SnapshotStore",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "StreamId",
    "UsageError",
    "apply_event",
    "canonical_bytes",
    "compute_hash",
    "export_streams",
    "fold",
    "import_streams",
    "iter_export",
    "load_state",
    "prepare_append",
    "register_upcaster",
    "seal",
    "stream_name",
    "to_plain",
    "upcast",
    "utcnow",
    "validate_batch",
    "verify_events",
]
