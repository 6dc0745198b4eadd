"""statelog's log: events, codecs, the hash chain, the stores and snapshots.

The core lives here; each backend is a subpackage that owns its driver:
``statelog.eventstore.sqlite`` (the embedded default, re-exported here) and
``statelog.eventstore.kafka`` (imported only when used).
"""

from ._audit import UNKEYED_LIMITS, AuditReport, Finding
from ._base import DEFAULT_MAX_EVENT_SIZE, EventStore, apply_event, fold, prepare_append
from ._chain import BrokenLink, compute_hash, seal, validate_batch, verify_events
from ._checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    generate_key_files,
    load_private_key,
    load_public_key,
    merkle_root,
)
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
    CheckpointError,
    ConcurrencyError,
    ConfigError,
    EncodingError,
    EventTooLargeError,
    FencedError,
    IntegrityError,
    InvalidEventError,
    KeyFileError,
    KeyMismatchError,
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
from .sqlite import SQLiteEventStore, audit_file

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EXPORT_FORMAT_VERSION",
    "JSON",
    "MAX_VALUE_DEPTH",
    "MSGPACK",
    "SCHEMA_VERSION",
    "SNAPSHOT_SCHEMA_VERSION",
    "UNKEYED_LIMITS",
    "AsyncResource",
    "AuditReport",
    "BrokenLink",
    "Checkpoint",
    "CheckpointError",
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
    "Finding",
    "IntegrityError",
    "InvalidEventError",
    "KeyFileError",
    "KeyMismatchError",
    "Lineage",
    "MemoryEventStore",
    "Recorded",
    "SQLiteEventStore",
    "SchemaVersionError",
    "SignedCheckpoint",
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
    "audit_file",
    "canonical_bytes",
    "compute_hash",
    "export_streams",
    "fold",
    "generate_key_files",
    "import_streams",
    "iter_export",
    "load_private_key",
    "load_public_key",
    "load_state",
    "merkle_root",
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
