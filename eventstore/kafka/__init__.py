"""The Kafka backend: the store, the wire format, the outbox relay and the subscription.

Importing this package loads aiokafka (``pip install "statelog[kafka]"``);
``import statelog`` and ``import statelog.eventstore`` do not.
"""

from .._errors import FencedError
from ._relay import (
    MemoryRelayCheckpoint,
    OutboxRelay,
    RelayCheckpoint,
    RelayStatus,
    SQLiteRelayCheckpoint,
)
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
    "DedupIndex",
    "Fence",
    "FencedError",
    "ForeignRecordWarning",
    "KafkaEventStore",
    "KafkaRecord",
    "KafkaSubscription",
    "MemoryRelayCheckpoint",
    "OutboxRelay",
    "RelayCheckpoint",
    "RelayStatus",
    "SQLiteRelayCheckpoint",
    "decode_record",
    "encode_record",
    "kafka_position",
    "parse_key",
    "record_key",
    "split_position",
    "wire_schema",
]
