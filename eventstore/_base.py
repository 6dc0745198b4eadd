"""The ``EventStore`` contract every backend implements, and the pure fold."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from ._chain import BrokenLink, check_batch, check_event, seal, seal_one, verify_events
from ._codec import Codec
from ._errors import ConfigError, EventTooLargeError, StoreClosedError
from ._event import Event, Recorded, StreamId
from ._ops import apply_ops
from ._resource import AsyncResource

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "SYNC_CALLER",
    "EventStore",
    "apply_event",
    "check_count",
    "check_page",
    "check_partition",
    "check_read",
    "check_stream_args",
    "fold",
    "prepare_append",
]

#: True inside a call of the sync face (an app made by ``build()``): the calling
#: thread blocks until the call returns, and the app's event loop is its own and
#: runs nothing else. A store may then write on that thread instead of handing
#: the write to a thread and back (the SQLite store does, for a lone append).
#: Async callers never set it: nothing commits on their event loop's thread.
SYNC_CALLER: ContextVar[bool] = ContextVar("statelog_sync_caller", default=False)

_B = TypeVar("_B", bytes, bytearray)

#: Default limit on one encoded event, in bytes (1 MiB).
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024


#: Sequence ids and positions are SQLite INTEGERs: 64-bit signed.
_INT64 = 1 << 63


def check_count(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a sequence id, position or limit that is not a 64-bit int.

    ``bool`` is refused too (``True`` is not a sequence id). Raises
    ``ConfigError`` naming the argument; nothing is read or written.
    """
    if value is None and optional:
        return
    if type(value) is not int:
        wanted = "an int or None" if optional else "an int"
        raise ConfigError(f"{name} must be {wanted}, got {type(value).__name__} {value!r:.60}")
    if not -_INT64 <= value < _INT64:
        raise ConfigError(f"{name} must fit in 64 bits, got {value}")


def check_partition(partition_key: object, *, optional: bool = False) -> None:
    """Refuse a ``partition_key`` that is not a str (``ConfigError``)."""
    if partition_key is None and optional:
        return
    if not isinstance(partition_key, str):
        wanted = "a str or None" if optional else "a str"
        raise ConfigError(
            f"partition_key must be {wanted}, got {type(partition_key).__name__} "
            f"{partition_key!r:.60}"
        )


def check_stream_args(partition_key: object, app_id: object) -> None:
    """Refuse a stream name no store can hold (``ConfigError``; nothing read).

    ``partition_key`` is a str and ``app_id`` a non-empty str: ``append``
    refuses anything else, so no stream could match. Every backend's read calls
    start here, so a wrong type is an error and not an empty answer.
    """
    check_partition(partition_key)
    if not isinstance(app_id, str) or not app_id:
        raise ConfigError(
            f"app_id must be a non-empty str, got {type(app_id).__name__} {app_id!r:.60}"
        )


def check_read(
    partition_key: object,
    app_id: object,
    from_sequence: object,
    to_sequence: object = None,
    after_position: object = None,
) -> None:
    """``check_stream_args`` plus the sequence range of a ``read`` or fold."""
    check_stream_args(partition_key, app_id)
    check_count("from_sequence", from_sequence)
    check_count("to_sequence", to_sequence, optional=True)
    check_count("after_position", after_position, optional=True)


def check_page(from_position: object, limit: object) -> None:
    """Refuse a ``read_all``/``subscribe`` start or page size of the wrong type."""
    check_count("from_position", from_position)
    check_count("limit", limit, optional=True)


def apply_event(state: dict[str, Any], event: Event, owned: set[str] | None = None) -> None:
    """Apply one event's ``ops`` to ``state`` in place.

    Lists and dicts of ``state`` (and of the event) are never grown in place
    unless ``owned`` names them (see ``apply_ops``): pass one set for a run of
    events folded onto a private ``state``, so appends cost O(item).
    """
    if event.ops:
        apply_ops(state, event.ops, set() if owned is None else owned)


def fold(events: Iterable[Event], state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The state after ``events``, starting from ``state`` (or empty). Pure: copies."""
    result = dict(state) if state is not None else {}
    owned: set[str] = set()
    for event in events:
        if event.ops:
            apply_ops(result, event.ops, owned)
    return result


def prepare_append(
    events: Sequence[Event],
    expected_sequence: int,
    head_hash: str,
    *,
    codec: Codec,
    key: bytes | None,
    max_size: int,
) -> tuple[StreamId, list[Event], list[bytes]]:
    """Validate, seal and encode a batch; raise before anything is written.

    Returns the stream, the sealed events and each one's stored body. The caller
    still checks ``expected_sequence`` against the stream and writes atomically.
    """
    return prepare_batch(events, expected_sequence, head_hash, codec.encode_body, key, max_size)


def prepare_batch(
    events: Sequence[Event],
    expected_sequence: int,
    head_hash: str,
    encode: Callable[[Event, dict[str, Any] | None], _B],
    key: bytes | None,
    max_size: int,
) -> tuple[StreamId, list[Event], list[_B]]:
    """``prepare_append`` with the body encoder given (``Codec.encode_body``, or
    ``Codec.encode_body_buffer`` for the SQLite store), positional for speed."""
    # plain: the check found the ops scalar, the hash skips its walk (same-run A/B: >= 3 %);
    # deltas: each event's writes when its ops are scalar sets, for its body
    stream, plain, deltas = check_batch(events, expected_sequence)
    if len(events) == 1:  # the common case, without the loops
        body = encode(events[0], deltas[0])
        bodies = [body]
        if len(body) > max_size:
            raise EventTooLargeError(stream, events[0].sequence_id, len(body), max_size)
    else:
        bodies = [encode(event, writes) for event, writes in zip(events, deltas, strict=True)]
        for event, body in zip(events, bodies, strict=True):
            if len(body) > max_size:
                raise EventTooLargeError(stream, event.sequence_id, len(body), max_size)
    return stream, seal(events, head_hash, key, plain_ops=plain), bodies


def prepare_one(
    event: Event,
    stream: StreamId,
    expected_sequence: int,
    head_hash: str,
    encode: Callable[[Event, dict[str, Any] | None], _B],
    key: bytes | None,
    max_size: int,
) -> tuple[Event, _B, bytearray]:
    """``prepare_batch`` of one event for a stream the store has written to.

    ``stream`` is ``event``'s stream, already validated (it has a head in the
    store), and ``expected_sequence`` an ``int``; the event's own checks run
    (``check_event``). Returns the sealed event, its body and its raw digest.
    About 1 us less per append than the general path on one event: no batch
    loops, and the digest is taken as bytes once.
    """
    plain, writes = check_event(event, stream, expected_sequence + 1)
    body = encode(event, writes)
    if len(body) > max_size:
        raise EventTooLargeError(stream, event.sequence_id, len(body), max_size)
    sealed, digest = seal_one(event, head_hash, key, plain)
    return sealed, body, digest


class EventStore(AsyncResource, ABC):
    """An append-only log of streams of events.

    Positions are global, start at 1 and grow in commit order; ``read_all`` and
    ``subscribe`` take ``from_position`` inclusive, so ``0`` means "from the
    start" and a reader that applied position ``p`` resumes at ``p + 1``.
    ``last_sequence`` of an empty stream is ``-1``, the ``expected_sequence`` a
    writer passes to create one.
    """

    hmac_key: bytes | None = None
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    _closed: bool = False

    # --- writing

    @abstractmethod
    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        """Append ``events`` (one stream, dense sequence ids) all or nothing.

        ``expected_sequence`` is the last sequence id the writer knows (``-1`` for
        a new stream). A writer that is behind gets ``ConcurrencyError`` and
        nothing is written. The store sets ``prev_hash`` and ``hash``; the sealed
        events are returned with their positions.

        An event that would not read back identically is refused before
        anything is written: ``InvalidEventError`` for a field of the wrong
        type, ``EncodingError`` for a value no codec keeps as it is (a set,
        NaN, a non-str key, ...); both name the path (``$.ops[0].value.tags[2]``).
        docs/store-api.md, "What append accepts", has the rules.
        """

    # --- reading

    @abstractmethod
    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,
    ) -> list[Event]:
        """The events of one stream from ``from_sequence`` to ``to_sequence`` inclusive.

        ``after_position`` is a hint: the global position of an earlier event of
        this stream (a snapshot's). A store that can seek starts reading after
        it; others ignore it.
        """

    @abstractmethod
    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        """The last sequence id of a stream, ``-1`` if it has none."""

    @abstractmethod
    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        """Every stream (of one partition key, if given), in order of creation."""

    @abstractmethod
    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        """Events of every stream in global commit order, from ``from_position``."""

    @abstractmethod
    def subscribe(
        self, *, from_position: int = 0, poll_interval: float = 0.05
    ) -> AsyncIterator[Recorded]:
        """Catch up from ``from_position``, then yield new events as they commit."""

    async def fold_stream(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        state: Mapping[str, Any] | None = None,
        after_position: int | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Fold a stream's events from ``from_sequence`` onto ``state``.

        Returns the state and the last sequence id folded (``from_sequence - 1``
        if there was nothing). ``after_position`` is the hint ``read`` takes.
        Backends may override with a faster path.
        """
        events = await self.read(
            partition_key, app_id, from_sequence=from_sequence, after_position=after_position
        )
        last = events[-1].sequence_id if events else from_sequence - 1
        return fold(events, state), last

    async def iter_all(
        self, *, from_position: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[Recorded]]:
        """Page through ``read_all`` in batches (for offline rebuilds)."""
        position = from_position
        while True:
            batch = await self.read_all(from_position=position, limit=batch_size)
            if not batch:
                return
            yield batch
            position = batch[-1].position + 1

    async def position_of(self, partition_key: str, app_id: str, sequence_id: int) -> int | None:
        """The global position of one event, if the store can tell it; else ``None``.

        A snapshot records it, and passes it back to ``read``/``fold_stream`` as
        ``after_position`` so a store that can seek starts there.
        """
        check_stream_args(partition_key, app_id)
        check_count("sequence_id", sequence_id)
        return None

    async def verify(
        self, partition_key: str | None = None, app_id: str | None = None
    ) -> BrokenLink | None:
        """Walk the chain of one stream (or every stream); return the first broken link."""
        for stream in await self._verify_targets(partition_key, app_id):
            events = await self.read(stream.partition_key, stream.app_id)
            broken = verify_events(events, key=self.hmac_key)
            if broken is not None:
                return broken
        return None

    async def _verify_targets(
        self, partition_key: str | None, app_id: str | None
    ) -> list[StreamId]:
        """The streams ``verify`` walks: one (``app_id`` given) or every one."""
        check_partition(partition_key, optional=True)
        if app_id is None:
            return await self.streams(partition_key)
        check_stream_args(partition_key or "", app_id)
        return [StreamId(partition_key or "", app_id)]

    # --- lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{type(self).__name__} is closed")

    async def aclose(self) -> None:
        self._closed = True


def warn_unclosed(obj: object) -> None:
    warnings.warn(f"unclosed {obj!r}", ResourceWarning, stacklevel=2)
