"""The Kafka backend: the store, the wire format, the outbox relay and the subscription.

Importing this package loads aiokafka (``pip install "statelog[kafka]"``);
``import statelog`` and ``import statelog.eventstore`` do not.
"""

from .._errors import FencedError
from ._audit import KafkaAuditReport, audit_kafka, check_chains, read_anchor_records
from ._relay import (
    MemoryRelayCheckpoint,
    OutboxRelay,
    RelayCheckpoint,
    RelayStatus,
    SQLiteRelayCheckpoint,
)
from ._signing import AnchorRecord, checkpoints_topic_for
from ._store import KafkaEventStore, kafka_position, split_position
from ._subscription import DedupIndex, ForeignRecordWarning, KafkaSubscription
from ._wire import (
    WIRE_VERSION,
    Fence,
    KafkaRecord,
    decode_record,
    encode_record,
    parse_key,
    record_key,
    wire_schema,
)

__all__ = [
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
