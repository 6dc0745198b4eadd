"""``MemoryEventStore``: the contract in a dict, for tests and scratch work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from ._base import (
    DEFAULT_MAX_EVENT_SIZE,
    EventStore,
    check_page,
    check_partition,
    check_read,
    check_stream_args,
    prepare_append,
    prepare_one,
)
from ._codec import Codec, CodecName, get_codec
from ._errors import ConcurrencyError
from ._event import Event, Recorded, StreamId

__all__ = ["MemoryEventStore"]


class MemoryEventStore(EventStore):
    """An in-process store. Same validation, chain and errors as the durable ones."""

    def __init__(
        self,
        *,
        hmac_key: bytes | None = None,
        codec: Codec | CodecName = "json",
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        self.hmac_key = hmac_key
        self.codec = get_codec(codec)
        self.max_event_size = max_event_size
        self._streams: dict[StreamId, list[Event]] = {}
        self._log: list[Recorded] = []
        self._changed = asyncio.Condition()
        #: subscribers between their "anything new?" test and waking up; appends
        #: notify only when there are some (same-run A/B: >= 3 % per append)
        self._waiting = 0

    def __repr__(self) -> str:
        return f"MemoryEventStore(streams={len(self._streams)}, events={len(self._log)})"

    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        self._check_open()
        events = list(events)
        first = events[0] if events else None
        if (
            len(events) == 1
            and type(first) is Event
            and type(first.partition_key) is str
            and type(first.app_id) is str
            and type(expected_sequence) is int  # prepare_one checks no more than that
        ):
            # one event for a stream with events up to expected_sequence (the common
            # case): its identity was checked when the stream was created, so only the
            # event's own checks run, as on SQLite (same-run A/B: >= 3 % per append)
            stream = StreamId(first.partition_key, first.app_id)
            current = self._streams.get(stream)
            if current and len(current) - 1 == expected_sequence:
                sealed_one = prepare_one(
                    first,
                    stream,
                    expected_sequence,
                    current[-1].hash,
                    self.codec.encode_body,
                    self.hmac_key,
                    self.max_event_size,
                )[0]
                rec = Recorded(len(self._log) + 1, sealed_one)
                self._log.append(rec)
                current.append(sealed_one)
                if self._waiting:
                    await self._notify()
                return [rec]
        head = (
            self._streams.get(StreamId(first.partition_key, first.app_id))
            # a bad identity (unhashable, say) finds no head; prepare_append refuses it
            if isinstance(first, Event)
            and isinstance(first.partition_key, str)
            and isinstance(first.app_id, str)
            else None
        )
        head_hash = head[-1].hash if head else ""
        stream, sealed, _ = prepare_append(
            events,
            expected_sequence,
            head_hash,
            codec=self.codec,
            key=self.hmac_key,
            max_size=self.max_event_size,
        )
        current = self._streams.get(stream)
        actual = len(current) - 1 if current else -1
        if actual != expected_sequence:
            raise ConcurrencyError(stream, expected_sequence, actual)
        if current is None:
            current = self._streams[stream] = []
        recorded = []
        for event in sealed:
            rec = Recorded(len(self._log) + 1, event)
            self._log.append(rec)
            current.append(event)
            recorded.append(rec)
        if self._waiting:
            await self._notify()
        return recorded

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,  # nothing to seek in memory
    ) -> list[Event]:
        check_read(partition_key, app_id, from_sequence, to_sequence, after_position)
        self._check_open()
        events = self._streams.get(StreamId(partition_key, app_id), [])
        stop = None if to_sequence is None else max(to_sequence + 1, 0)
        return events[max(from_sequence, 0) : stop]

    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        check_stream_args(partition_key, app_id)
        self._check_open()
        return len(self._streams.get(StreamId(partition_key, app_id), [])) - 1

    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        check_partition(partition_key, optional=True)
        self._check_open()
        return [
            s for s in self._streams if partition_key is None or s.partition_key == partition_key
        ]

    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        check_page(from_position, limit)
        self._check_open()
        start = max(from_position, 1) - 1
        stop = None if limit is None else start + limit
        return self._log[start:stop]

    async def aclose(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()  # wake subscribers: they raise StoreClosedError

    async def subscribe(
        self, *, from_position: int = 0, poll_interval: float = 0.05
    ) -> AsyncIterator[Recorded]:
        check_page(from_position, None)
        position = max(from_position, 1)
        while True:
            self._check_open()
            batch = self._log[position - 1 :]
            for rec in batch:
                yield rec
            position += len(batch)
            # counted before the test, so an append after it (even one that runs
            # while this waits for the lock) sees a waiter and notifies
            self._waiting += 1
            try:
                async with self._changed:
                    if len(self._log) < position:
                        await self._changed.wait()
            finally:
                self._waiting -= 1
