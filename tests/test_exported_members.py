"""The public face of each package, pinned: a change to it is a visible decision.

Users import from ``eventstore``, ``engine`` and ``projections``, never from a
private module. Adding or removing a name means editing the list here.
"""

from __future__ import annotations

import importlib
import re

import pytest

EVENTSTORE = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EXPORT_FORMAT_VERSION",
    "JSON",
    "MSGPACK",
    "SCHEMA_VERSION",
    "SNAPSHOT_SCHEMA_VERSION",
    "WIRE_VERSION",
    "ActionError",
    "ApiStatusError",
    "AsyncResource",
    "BrokenLink",
    "ClientError",
    "Codec",
    "ConcurrencyError",
    "DedupIndex",
    "EncodingError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "EventStore",
    "EventTooLargeError",
    "ForeignRecordWarning",
    "HookError",
    "IntegrityError",
    "InvalidEventError",
    "KafkaEventStore",
    "KafkaRecord",
    "KafkaSubscription",
    "Lineage",
    "MemoryEventStore",
    "MemoryRelayCheckpoint",
    "OutboxRelay",
    "ProjectionError",
    "Recorded",
    "RelayCheckpoint",
    "RelayStatus",
    "SQLiteEventStore",
    "SQLiteRelayCheckpoint",
    "SchemaVersionError",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotSkippedWarning",
    "SnapshotStore",
    "StateError",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "StreamId",
    "TransitionError",
    "UsageError",
    "apply_event",
    "canonical_bytes",
    "compute_hash",
    "decode_record",
    "encode_record",
    "export_streams",
    "fold",
    "import_streams",
    "iter_export",
    "kafka_position",
    "load_state",
    "parse_key",
    "prepare_append",
    "record_key",
    "register_upcaster",
    "seal",
    "split_position",
    "to_plain",
    "upcast",
    "utcnow",
    "validate_batch",
    "verify_events",
    "wire_schema",
]

ENGINE = [
    "DEFAULT_DB",
    "Action",
    "Application",
    "ApplicationBuilder",
    "BatchNode",
    "Condition",
    "Delta",
    "Durability",
    "FunctionAction",
    "Graph",
    "HookErrorPolicy",
    "Node",
    "ParallelMap",
    "PostStepHook",
    "PostStepHookAsync",
    "PreStepHook",
    "PreStepHookAsync",
    "State",
    "StepOutcome",
    "StepResult",
    "StreamPosition",
    "Transition",
    "action",
    "batch_action",
    "default",
    "expr",
    "load_position",
    "on",
    "parallel_map",
    "run_action",
    "run_action_sync",
    "when",
]

PROJECTIONS = [
    "BUILTIN_PROJECTIONS",
    "AppIndexProjection",
    "AuditTrailProjection",
    "Checkpoint",
    "CurrentStateProjection",
    "FileSource",
    "Generation",
    "Item",
    "KafkaSource",
    "Progress",
    "Projection",
    "ProjectionContext",
    "ProjectionRunner",
    "ReadModel",
    "Source",
    "StoreSource",
    "SyncProjectionContext",
    "get_projection",
    "open_source",
    "register_projection",
]


@pytest.mark.parametrize(
    ("package", "expected"),
    [("eventstore", EVENTSTORE), ("engine", ENGINE), ("projections", PROJECTIONS)],
)
def test_all_is_pinned(package: str, expected: list[str]) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(expected)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("package", ["eventstore", "engine", "projections"])
def test_all_is_sorted_and_every_name_is_public_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    constants = [n for n in names if re.fullmatch(r"[A-Z0-9_]+", n)]
    classes = [n for n in names if n not in constants and n[0].isupper()]
    functions = [n for n in names if n[0].islower()]
    assert names == sorted(constants) + sorted(classes) + sorted(functions)
    for name in names:
        value = getattr(module, name)
        owner = getattr(value, "__module__", package) or package
        assert owner.split(".")[0] in (package, "typing", "builtins"), (name, owner)
        assert not name.startswith("_")
