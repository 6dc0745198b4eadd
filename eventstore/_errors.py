"""The one exception tree of statelog.

Every error statelog raises is a ``StatelogError``::

    StatelogError
    ├── StoreError
    │   ├── ConcurrencyError      (stream, expected, actual)
    │   ├── StoreUnavailableError (also a ConnectionError)
    │   ├── StoreClosedError
    │   ├── StoreCorruptError     (the file or topic is not a statelog log)
    │   ├── EventTooLargeError    (also a ValueError; stream, sequence_id, size, limit)
    │   └── IntegrityError        (broken hash chain: stream, sequence_id)
    ├── EncodingError             (also a ValueError; keeps msgspec's $.path)
    │   └── SchemaVersionError    (an event from a newer statelog)
    ├── InvalidEventError         (also a ValueError; a malformed event or batch)
    ├── ActionError               (action, sequence_id; __cause__ = user's error)
    ├── StateError                (also a TypeError; an action broke its contract)
    ├── TransitionError
    ├── HookError
    ├── UsageError                (also a RuntimeError; an API called the wrong way)
    ├── ProjectionError           (projection, position, stream, sequence_id)
    └── ClientError
        └── ApiStatusError        (status_code, request)

Driver errors (sqlite3, aiokafka, httpx) are translated at one boundary in each
backend with ``raise ... from exc`` so the original stays in ``__cause__``.
Messages say what was expected and what came in.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActionError",
    "ApiStatusError",
    "ClientError",
    "ConcurrencyError",
    "EncodingError",
    "EventTooLargeError",
    "HookError",
    "IntegrityError",
    "InvalidEventError",
    "ProjectionError",
    "SchemaVersionError",
    "StateError",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "TransitionError",
    "UsageError",
]


def _stream_name(stream: tuple[str, str]) -> str:
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
            f"stream {_stream_name(self.stream)!r}: expected last sequence_id {expected}, "
            f"but the stream is at {actual}; another writer got there first "
            "(nothing was written)"
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
            f"event {_stream_name(self.stream)!r}#{sequence_id} encodes to {size} bytes, "
            f"over the limit of {limit} bytes (nothing was written)"
        )


class IntegrityError(StoreError):
    """The hash chain of a stream is broken."""

    def __init__(self, stream: tuple[str, str], sequence_id: int, reason: str) -> None:
        self.stream = (stream[0], stream[1])
        self.sequence_id = sequence_id
        self.reason = reason
        super().__init__(f"stream {_stream_name(self.stream)!r} broken at #{sequence_id}: {reason}")


class EncodingError(StatelogError, ValueError):
    """A value cannot be encoded or decoded; ``path`` says where (``$.writes.x``)."""

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


class ActionError(StatelogError):
    """A user action raised; the original exception is ``__cause__``."""

    def __init__(
        self, action: str, sequence_id: int, message: str | None = None, *, attempt: int = 1
    ) -> None:
        self.action = action
        self.sequence_id = sequence_id
        self.attempt = attempt  # the attempt (1-based) that failed last
        super().__init__(message or f"action {action!r} failed at sequence_id {sequence_id}")


class StateError(StatelogError, TypeError):
    """An action broke its contract (wrong return type, undeclared write)."""


class TransitionError(StatelogError):
    """The graph is invalid, or no transition applies."""


class HookError(StatelogError):
    """A lifecycle hook is misused (for example an async hook under a sync run)."""


class UsageError(StatelogError, RuntimeError):
    """An API was called the wrong way: a sync call inside a running event loop,
    ``initialize_from`` together with ``with_state``, a method of a closed app."""


class ProjectionError(StatelogError):
    """A projection could not run.

    Its handler failed (``stream``/``sequence_id`` name the event; the
    checkpoint did not advance), its name is unknown, or its read model cannot
    be opened or written (``position`` is then ``None``).
    """

    def __init__(
        self,
        projection: str,
        position: int | None,
        message: str,
        *,
        stream: tuple[str, str] | None = None,
        sequence_id: int | None = None,
    ) -> None:
        self.projection = projection
        self.position = position
        self.stream = stream
        self.sequence_id = sequence_id
        where = f" at position {position}" if position is not None else ""
        if stream is not None:
            where += f" (stream {_stream_name(stream)!r}#{sequence_id})"
        super().__init__(f"projection {projection!r}{where}: {message}")


class ClientError(StatelogError):
    """The HTTP client could not complete a request."""


class ApiStatusError(ClientError):
    """The service answered with an error status."""

    def __init__(self, message: str, *, status_code: int, request: Any = None) -> None:
        self.status_code = status_code
        self.request = request
        super().__init__(message)
