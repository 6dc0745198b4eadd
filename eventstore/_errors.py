"""The one exception tree of statelog.

Every error statelog raises is a ``StatelogError``::

    StatelogError
    ├── StoreError
    │   ├── ConcurrencyError      (stream, expected, actual)
    │   ├── StoreUnavailableError (also a ConnectionError)
    │   ├── StoreClosedError
    │   ├── FencedError           (a writer's claim on a Kafka partition is over)
    │   ├── StoreCorruptError     (the file or topic is not a statelog log)
    │   ├── EventTooLargeError    (also a ValueError; stream, sequence_id, size, limit)
    │   ├── IntegrityError        (broken hash chain: stream, sequence_id)
    │   └── CheckpointError       (a signed checkpoint does not verify: sequence)
    ├── EncodingError             (also a ValueError; keeps msgspec's $.path)
    │   └── SchemaVersionError    (an event from a newer statelog)
    ├── InvalidEventError         (also a ValueError; a malformed event or batch)
    ├── ConfigError               (also a ValueError; a bad argument, nothing done)
    │   ├── KeyFileError          (a key file missing, unreadable, not Ed25519 PEM)
    │   └── KeyMismatchError      (checkpoints signed by another key than the one given)
    ├── UsageError                (also a RuntimeError; an API called the wrong way)
    ├── ActionError, StateError, TransitionError, HookError   (statelog.engine)
    └── ProjectionError                                       (statelog.projections)

This module holds the root and the log's own errors; the engine and the
projections define theirs in their own ``_errors`` modules, and ``statelog``
re-exports every one.

Driver errors (sqlite3, aiokafka, httpx) are translated at one boundary in each
backend with ``raise ... from exc`` so the original stays in ``__cause__``.
Messages say what was expected and what came in.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConcurrencyError",
    "ConfigError",
    "EncodingError",
    "EventTooLargeError",
    "FencedError",
    "IntegrityError",
    "InvalidEventError",
    "KeyFileError",
    "KeyMismatchError",
    "SchemaVersionError",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "UsageError",
    "stream_name",
]


def stream_name(stream: tuple[str, str]) -> str:
    partition_key, app_id = stream
    return f"{partition_key}/{app_id}" if partition_key else app_id


class StatelogError(Exception):
    """Base class of every error raised by statelog."""


class StoreError(StatelogError):
    """A store could not do what was asked."""


class ConcurrencyError(StoreError):
    """A writer was behind: the stream's last sequence is not what it expected.

    Nothing of the rejected append was written.
    """

    def __init__(self, stream: tuple[str, str], expected: int, actual: int) -> None:
        self.stream = (stream[0], stream[1])
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_name(self.stream)!r}: expected last sequence_id {expected}, "
            f"but the stream is at {actual}; another writer got there first "
            "(nothing was written)"
        )


class FencedError(StoreError):
    """This writer's claim on a Kafka partition is over: another owner opened a newer epoch.

    The records of the append that raised it are on the topic but every reader
    skips them; the claim is dropped, so the caller must stop writing there.
    ``ours`` and ``current`` are the two fences (epoch, owner).
    """

    def __init__(self, partition: int, ours: tuple[int, str], current: tuple[int, str] | None):
        self.partition = partition
        self.ours = ours
        self.current = current
        now = f"epoch {current[0]} ({current[1]})" if current else "an unknown epoch"
        super().__init__(
            f"partition {partition} is fenced: this writer holds epoch {ours[0]} ({ours[1]}), "
            f"the partition is at {now}"
        )


class StoreUnavailableError(StoreError, ConnectionError):
    """The backing database or broker cannot be reached."""


class StoreClosedError(StoreError):
    """The store was used after ``aclose()``."""


class StoreCorruptError(StoreError):
    """The file (or topic) is not a readable statelog log."""


class EventTooLargeError(StoreError, ValueError):
    """An encoded event is over the store's size limit; nothing was written."""

    def __init__(self, stream: tuple[str, str], sequence_id: int, size: int, limit: int) -> None:
        self.stream = (stream[0], stream[1])
        self.sequence_id = sequence_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"event {stream_name(self.stream)!r}#{sequence_id} encodes to {size} bytes, "
            f"over the limit of {limit} bytes (nothing was written)"
        )


class IntegrityError(StoreError):
    """The hash chain of a stream is broken."""

    def __init__(self, stream: tuple[str, str], sequence_id: int, reason: str) -> None:
        self.stream = (stream[0], stream[1])
        self.sequence_id = sequence_id
        self.reason = reason
        super().__init__(f"stream {stream_name(self.stream)!r} broken at #{sequence_id}: {reason}")


class EncodingError(StatelogError, ValueError):
    """A value cannot be encoded or decoded; ``path`` says where (``$.ops[0].value``)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class SchemaVersionError(EncodingError):
    """An event was written by a newer statelog than this one."""

    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"event schema_version {found} is newer than this statelog understands "
            f"(up to {supported}); upgrade statelog to read it",
            path="$.schema_version",
        )


class InvalidEventError(StatelogError, ValueError):
    """An event or a batch of events is malformed (empty app_id, a gap, mixed streams)."""


class ConfigError(StatelogError, ValueError):
    """An argument is wrong: a bad type, an empty or out-of-range value.

    Raised before anything is done, so nothing was written.
    """


class UsageError(StatelogError, RuntimeError):
    """An API was called the wrong way: a sync call inside a running event loop,
    ``initialize_from`` together with ``with_state``, a method of a closed app."""


class KeyFileError(ConfigError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


class KeyMismatchError(ConfigError):
    """The public key given is not the one the checkpoints were signed with."""

    def __init__(self, expected: str, given: str) -> None:
        self.expected = expected
        self.given = given
        super().__init__(
            f"a checkpoint is signed by key {expected[:16]}..., none of the public keys "
            f"given ({given[:16] or 'none'}...): wrong --public-key, an old key missing "
            "after a rotation, or a forged checkpoint"
        )


class CheckpointError(StoreError):
    """A checkpoint does not verify (signature, numbering, previous digest or root)."""

    def __init__(self, sequence: int, reason: str) -> None:
        self.sequence = sequence
        self.reason = reason
        super().__init__(f"checkpoint #{sequence}: {reason}")
