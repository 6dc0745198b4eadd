"""Commands: what ``statelog submit`` and the service put on ``{prefix}.commands``.

One record per command, keyed like the stream's events (``record_key``), so a
stream's commands and its events sit in the same partition number of the two
topics (they must have the same partition count) and one worker owns both.

Every command is idempotent by its meaning, not by a memory of keys:

* ``start`` / ``resume`` run the app until its stream holds ``base + max_steps``
  events (``base`` is ``at_sequence + 1``, or 0) or it halts: running one twice,
  or after its work is done, writes nothing.
* ``input`` runs one step with ``inputs`` only if the stream's last sequence id
  is still ``at_sequence``: a duplicate finds the stream moved on.
* ``cancel`` stops the stream's commands before it (a running one at its next
  step, queued ones before they start) and records one ``cancelled`` event
  whose correlation id is its idempotency key; a redelivered cancel finds that
  event and records nothing. It is acknowledged only after the event is durable.

The ``idempotency_key`` names the command in logs and lets an owner drop an
exact duplicate it already handled without building the app.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

from statelog.eventstore import ConfigError, StreamId

__all__ = [
    "COMMAND_HEADER",
    "Command",
    "CommandKind",
    "decode_command",
    "encode_command",
    "topic_names",
]

CommandKind = Literal["start", "resume", "input", "cancel"]
#: The header that marks a command record (its value: the command format version).
COMMAND_HEADER = "statelog-command"
_VERSION = b"1"


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """One run request for one stream."""

    kind: CommandKind
    app_id: str
    partition_key: str = ""
    graph: str = ""
    inputs: dict[str, Any] = {}
    max_steps: int | None = None
    at_sequence: int | None = None
    idempotency_key: str = ""
    submitted_at: float = 0.0

    @property
    def stream(self) -> StreamId:
        return StreamId(self.partition_key, self.app_id)

    @classmethod
    def new(cls, kind: CommandKind, app_id: str, **fields: Any) -> Command:
        """A command with a fresh idempotency key and ``submitted_at`` now."""
        fields.setdefault("idempotency_key", uuid.uuid4().hex)
        fields.setdefault("submitted_at", time.time())
        command = cls(kind=kind, app_id=app_id, **fields)
        command.check()
        return command

    def check(self) -> None:
        """Raise ``ConfigError`` for a command no worker could run."""
        if not self.app_id:
            raise ConfigError("a command needs an app_id")
        if self.kind in ("start", "resume") and not self.graph:
            raise ConfigError(f"a {self.kind} command needs a graph")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.kind == "input" and self.at_sequence is None:
            raise ConfigError("an input command needs at_sequence (the stream's last sequence id)")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Command)


def encode_command(command: Command) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of the command's record."""
    from statelog.eventstore.kafka import record_key

    key = record_key(command.partition_key, command.app_id)
    return key, _encoder.encode(command), [(COMMAND_HEADER, _VERSION)]


def decode_command(value: bytes | None) -> Command:
    """The command of a record's value; ``msgspec.DecodeError`` if it is not one."""
    if value is None:
        raise msgspec.DecodeError("a command record has no value")
    return _decoder.decode(value)


def topic_names(prefix: str) -> tuple[str, str]:
    """``(commands topic, events topic)`` for a topic prefix."""
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"topic prefix {prefix!r} must be non-empty, without spaces")
    return f"{prefix}.commands", f"{prefix}.events"
