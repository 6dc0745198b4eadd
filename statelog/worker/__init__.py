"""Scale out on Kafka: workers that own partitions and run their streams (docs/scale-out.md).

Importing this package loads aiokafka (the ``kafka`` extra); ``import statelog`` does not.
"""

from ._commands import (
    COMMAND_HEADER,
    Command,
    CommandKind,
    decode_command,
    encode_command,
    topic_names,
)
from ._submit import CommandProducer, ensure_topics
from ._worker import Worker

__all__ = [
    "COMMAND_HEADER",
    "Command",
    "CommandKind",
    "CommandProducer",
    "Worker",
    "decode_command",
    "encode_command",
    "ensure_topics",
    "topic_names",
]
