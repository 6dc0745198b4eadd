"""The public face of each package, pinned: a change to it is a visible decision.

Users import from ``statelog`` and its public subpackages, never from a
private module. Adding or removing a name means editing the list here.
"""

from __future__ import annotations

import importlib
import re

import pytest

STATELOG = [
    "ActionError",
    "AppExistsError",
    "Application",
    "ApplicationBuilder",
    "CheckpointError",
    "ConcurrencyError",
    "ConfigError",
    "EncodingError",
    "EventTooLargeError",
    "FencedError",
    "GraphChangedError",
    "HookError",
    "InputError",
    "IntegrityError",
    "InvalidEventError",
    "KeyFileError",
    "KeyMismatchError",
    "ProjectionError",
    "SchemaVersionError",
    "Secret",
    "State",
    "StateError",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "TransitionError",
    "UsageError",
    "__version__",
    "action",
    "default",
    "expr",
    "wait_for_input",
    "when",
]

EVENTSTORE = [
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
    "LegacyV1",
    "Lineage",
    "LoadedStream",
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
    "apply_ops",
    "audit_export",
    "audit_file",
    "canonical_bytes",
    "canonical_json",
    "compute_hash",
    "diff_ops",
    "export_streams",
    "fold",
    "generate_key_files",
    "import_streams",
    "iter_checkpoints",
    "iter_export",
    "load_private_key",
    "load_public_key",
    "load_state",
    "load_stream",
    "merkle_root",
    "ops_of_delta",
    "prepare_append",
    "register_upcaster",
    "seal",
    "snapshot_mac_key",
    "stream_name",
    "to_plain",
    "upcast",
    "utcnow",
    "validate_batch",
    "verify_events",
]

EVENTSTORE_SQLITE = [
    "FORMAT",
    "FORMAT_VERSION",
    "SQLiteEventStore",
    "Synchronous",
    "audit_file",
    "translate_error",
]

EVENTSTORE_KAFKA = [
    "WIRE_VERSION",
    "AnchorRecord",
    "DedupIndex",
    "Fence",
    "FencedError",
    "ForeignRecordWarning",
    "KafkaAuditReport",
    "KafkaEventStore",
    "KafkaRecord",
    "KafkaSubscription",
    "MemoryRelayCheckpoint",
    "OutboxRelay",
    "RelayCheckpoint",
    "RelayStatus",
    "SQLiteRelayCheckpoint",
    "audit_kafka",
    "check_chains",
    "checkpoints_topic_for",
    "decode_record",
    "encode_record",
    "kafka_position",
    "parse_key",
    "read_anchor_records",
    "record_key",
    "split_position",
    "wire_schema",
]

ENGINE = [
    "DEFAULT_DB",
    "Action",
    "ActionError",
    "AppExistsError",
    "Application",
    "ApplicationBuilder",
    "BatchNode",
    "Condition",
    "Delta",
    "Durability",
    "FunctionAction",
    "Graph",
    "GraphChangedError",
    "GraphChangedWarning",
    "HookError",
    "HookErrorPolicy",
    "InputError",
    "Node",
    "ParallelMap",
    "PostStepHook",
    "PostStepHookAsync",
    "PreStepHook",
    "PreStepHookAsync",
    "Secret",
    "State",
    "StateError",
    "StepOutcome",
    "StepResult",
    "StreamPosition",
    "Transition",
    "TransitionError",
    "action",
    "batch_action",
    "default",
    "expr",
    "load_position",
    "on",
    "parallel_map",
    "run_action",
    "run_action_sync",
    "validate_input",
    "wait_for_input",
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
    "ProjectionError",
    "ProjectionRunner",
    "ReadModel",
    "Source",
    "StoreSource",
    "SyncProjectionContext",
    "get_projection",
    "open_source",
    "register_projection",
]

PACKAGES = [
    ("statelog", STATELOG),
    ("statelog.eventstore", EVENTSTORE),
    ("statelog.eventstore.sqlite", EVENTSTORE_SQLITE),
    ("statelog.eventstore.kafka", EVENTSTORE_KAFKA),
    ("statelog.engine", ENGINE),
    ("statelog.projections", PROJECTIONS),
]


@pytest.mark.parametrize(("package", "expected"), PACKAGES)
def test_all_is_pinned(package: str, expected: list[str]) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(expected)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("package", [p for p, _ in PACKAGES])
def test_all_is_sorted_and_every_name_is_public_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    names = [n for n in module.__all__ if n != "__version__"]
    constants = [n for n in names if re.fullmatch(r"[A-Z0-9_]+", n)]
    classes = [n for n in names if n not in constants and n[0].isupper()]
    functions = [n for n in names if n[0].islower()]
    assert names == sorted(constants) + sorted(classes) + sorted(functions)
    for name in names:
        value = getattr(module, name)
        owner = getattr(value, "__module__", package) or package
        assert owner.split(".")[0] in ("statelog", "typing", "builtins"), (name, owner)
        assert not name.startswith("_")


def test_every_error_is_reexported_from_statelog() -> None:
    import statelog

    for package in [p for p, _ in PACKAGES]:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, Exception):
                if issubclass(value, Warning):
                    continue
                assert issubclass(value, statelog.StatelogError), (package, name)
                assert getattr(statelog, name, None) is value, (package, name)
