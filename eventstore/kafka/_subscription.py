"""``KafkaSubscription``: typed, de-duplicated events from a topic, for other services.

The contract (at least once, de-duplicated per process):

* Records are read with a **consumer group**; offsets are committed
  **manually, only after processing**: an event counts as processed when the
  consumer asks for the next one (the iterator resumes), or when a
  ``run(handler)`` handler returned. Processed offsets are committed before
  a fetch once ``commit_interval`` seconds (default 1) passed since the last
  commit, and at ``aclose()``; ``commit()`` inside
  the loop also acknowledges the event or batch in hand (use it before a
  ``break``, which otherwise leaves that one to be delivered again). A crash before a commit
  delivers those events again - so handlers must tolerate a repeat after a crash
  or a rebalance (the at-least-once part).
* Within one consumer process, each ``(stream, sequence_id)`` is delivered
  **once**: the subscription keeps the last ``sequence_id`` seen per stream and
  drops a record at or below it (the relay publishes at least once, so
  duplicates on the topic are normal). Memory: one dict entry per stream seen,
  roughly 150 bytes plus the key strings. The index is per process and lost on
  restart unless you persist it (``DedupIndex.dumps()`` / ``DedupIndex.loads()``
  and pass it as ``dedup=``), ideally in the same transaction as your handler's
  effects; a partition moved to another process by a rebalance starts with that
  process's index.
* Per-stream order is the topic's order: a stream's records share one
  partition, and the relay never leaves a later event of a stream on the topic
  before an earlier one.
* Records that are not statelog records (no ``statelog-wire`` header, garbled,
  headers disagreeing with the value, an unknown codec) are skipped with a
  ``ForeignRecordWarning`` and committed past; they never stop the consumer.
* **Fences** (topics written by workers, docs/scale-out.md): fence records are
  read silently; an event whose ``statelog-fence`` header is not the newest
  fence seen in its partition is a late write of a writer that lost the
  partition: it is skipped and counted (``fenced``). The fences seen are part
  of ``DedupIndex`` (and its dump), so a subscription restarted with its index
  keeps judging; without it, the first fence it reads opens the epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from .._errors import EncodingError, StoreUnavailableError
from .._event import Event
from .._resource import AsyncResource
from ._wire import H_FENCE, Fence, decode_record, fence_claim_of, fence_of

__all__ = ["DedupIndex", "ForeignRecordWarning", "KafkaSubscription"]

log = logging.getLogger("statelog.subscription")


class ForeignRecordWarning(UserWarning):
    """A record on a statelog topic is not a statelog event; it was skipped."""


class _DedupDump(msgspec.Struct, frozen=True):
    version: int
    streams: list[tuple[str, str, int]]
    fences: list[tuple[str, int, int, str]] = []


class DedupIndex:
    """The last ``sequence_id`` delivered per stream (one process's memory)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], int] = {}  # (partition_key, app_id) -> sequence_id
        self.fences: dict[tuple[str, int], Fence] = {}  # (topic, partition) -> newest fence

    def fenced(self, record: Any) -> bool | None:
        """``None`` for an event record without a fence; else whether to skip the record.

        A fence record (always skipped) opens a newer epoch in its partition; an
        event of another epoch than the partition's newest is fenced.
        """
        where = (record.topic, record.partition)
        if not record.key:
            claim = fence_claim_of(record.headers)
            if claim is None:
                return None
            current = self.fences.get(where)
            if current is None or claim.epoch > current.epoch:
                self.fences[where] = claim
            return True
        fence = fence_of(record.headers)
        if fence is None:
            return None
        current = self.fences.get(where)
        if current is None:
            self.fences[where] = current = fence
        return fence != current

    def __len__(self) -> int:
        return len(self.last)

    def seen(self, event: Event) -> bool:
        """True if ``event`` was delivered before; otherwise record it and return False."""
        stream = (event.partition_key, event.app_id)  # equal to, and cheaper than, a StreamId
        last = self.last.get(stream)
        if last is not None and event.sequence_id <= last:
            return True
        self.last[stream] = event.sequence_id
        return False

    def dumps(self) -> bytes:
        streams = [(pk, app, seq) for (pk, app), seq in self.last.items()]
        fences = [(t, p, f.epoch, f.owner) for (t, p), f in self.fences.items()]
        return msgspec.json.encode(_DedupDump(1, streams, fences))

    @classmethod
    def loads(cls, data: bytes) -> DedupIndex:
        try:
            dump = msgspec.json.decode(data, type=_DedupDump)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise EncodingError(f"not a de-duplication index: {exc}") from exc
        index = cls()
        index.last = {(pk, app): seq for pk, app, seq in dump.streams}
        index.fences = {(t, p): Fence(e, o) for t, p, e, o in dump.fences}
        return index


Handler = Callable[[Event], Awaitable[None] | None]


class KafkaSubscription(AsyncResource):
    """Consume statelog events from ``topic`` as consumer group ``group_id``.

    Use as an async context manager, then either ``async for event in sub``,
    ``async for events in sub.batches()`` (a de-duplicated list per fetch), or
    ``await sub.run(handler)``. See the module docstring for the delivery
    contract. ``start()`` raises ``StoreUnavailableError`` if the broker cannot
    be reached within ``connect_timeout`` seconds.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        *,
        auto_offset_reset: str = "earliest",
        max_records: int = 5000,
        poll_timeout: float = 1.0,
        commit_interval: float = 1.0,
        connect_timeout: float = 30.0,
        dedup: DedupIndex | None = None,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        request_timeout_ms: int = 30_000,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.max_records = max_records
        self.poll_timeout = poll_timeout
        self.commit_interval = commit_interval
        self._last_commit = time.monotonic()
        self.connect_timeout = connect_timeout
        self.dedup = dedup if dedup is not None else DedupIndex()
        self.duplicates = 0
        self.foreign = 0
        self.fenced = 0
        self.delivered = 0
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "request_timeout_ms": request_timeout_ms,
            "client_id": f"statelog-subscription-{group_id}",
        }
        self._options.update(consumer_options or {})
        self._consumer: Any = None
        self._pending: dict[Any, int] = {}  # TopicPartition -> next offset, processed
        self._current: dict[Any, int] = {}  # offsets of the event or batch in hand
        self._closed = False

    def __repr__(self) -> str:
        return f"KafkaSubscription(topic={self.topic!r}, group_id={self.group_id!r})"

    # --- lifecycle

    async def start(self) -> None:
        if self._consumer is not None:
            return
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        deadline = time.monotonic() + self.connect_timeout
        delay = 0.1
        while True:
            consumer = AIOKafkaConsumer(self.topic, **self._options)
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                    await consumer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                if time.monotonic() + delay >= deadline:
                    raise StoreUnavailableError(
                        f"cannot reach Kafka at {self.bootstrap_servers!r} within "
                        f"{self.connect_timeout} s: {type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._consumer = consumer
            return

    async def aclose(self) -> None:
        """Commit what was processed and leave the group."""
        if self._closed:
            return
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await self._commit(consumer)
            finally:
                await consumer.stop()

    async def __aenter__(self) -> KafkaSubscription:
        await self.start()
        return self

    # --- committing

    async def commit(self) -> None:
        """Commit every event processed so far, and the current event or batch.

        Call it inside the loop to acknowledge the event (or batch) in hand
        before leaving the loop; ``aclose()`` commits only what the loop moved
        past.
        """
        self._pending.update(self._current)
        self._current = {}
        if self._consumer is not None:
            await self._commit(self._consumer)

    async def _commit(self, consumer: Any) -> None:
        if not self._pending:
            return
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

        offsets, self._pending = self._pending, {}
        self._last_commit = time.monotonic()
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: the new owner re-reads from the last commit.
            log.warning("commit of %s failed (%s); events will be redelivered", offsets, exc)
        except KafkaError as exc:
            raise StoreUnavailableError(f"commit to Kafka failed: {exc}") from exc

    # --- reading

    def _skip_foreign(self, record: Any, exc: EncodingError) -> None:
        self.foreign += 1
        warnings.warn(
            ForeignRecordWarning(
                f"skipped a record that is not a statelog event at {record.topic}"
                f"[{record.partition}]@{record.offset}: {exc}"
            ),
            stacklevel=4,
        )

    def _decode(self, record: Any) -> Event | None:
        skip = self.dedup.fenced(record)
        if skip:
            self.fenced += bool(record.key)
            return None
        try:
            event = decode_record(record.key, record.value, record.headers)
        except EncodingError as exc:
            self._skip_foreign(record, exc)
            return None
        if self.dedup.seen(event):
            self.duplicates += 1
            return None
        return event

    async def _getmany(self) -> dict[Any, list[Any]]:
        consumer = self._consumer
        if consumer is None:
            await self.start()
            consumer = self._consumer
        if self._pending and time.monotonic() - self._last_commit >= self.commit_interval:
            await self._commit(consumer)
        from aiokafka.errors import KafkaError

        try:
            batch: dict[Any, list[Any]] = await consumer.getmany(
                timeout_ms=int(self.poll_timeout * 1000), max_records=self.max_records
            )
        except KafkaError as exc:
            raise StoreUnavailableError(f"fetch from Kafka failed: {exc}") from exc
        return batch

    async def _fetch(self) -> tuple[list[Event], dict[Any, int]]:
        """One fetch: the new events and the offsets to commit once they are processed."""
        batch = await self._getmany()
        events: list[Event] = []
        offsets: dict[Any, int] = {}
        append = events.append
        last = self.dedup.last
        fenced = self.dedup.fenced
        duplicates = 0
        for tp, records in batch.items():
            for record in records:  # the hot loop: decode_record and DedupIndex.seen inlined
                headers = record.headers
                maybe_fence = not record.key or (headers and headers[-1][0] == H_FENCE)
                if maybe_fence and fenced(record):
                    self.fenced += bool(record.key)
                    continue
                try:
                    event = decode_record(record.key, record.value, record.headers)
                except EncodingError as exc:
                    self._skip_foreign(record, exc)
                    continue
                stream = (event.partition_key, event.app_id)
                seen = last.get(stream)
                if seen is not None and event.sequence_id <= seen:
                    duplicates += 1
                    continue
                last[stream] = event.sequence_id
                append(event)
            if records:
                offsets[tp] = records[-1].offset + 1
        self.duplicates += duplicates
        return events, offsets

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Yield a de-duplicated list of events per fetch (empty lists are skipped).

        A batch counts as processed when the loop asks for the next one, or
        when ``commit()`` is called while it is the current batch.
        """
        while not self._closed:
            events, offsets = await self._fetch()
            if events:
                self.delivered += len(events)
                self._current = offsets
                yield events
                self._current = {}
            self._pending.update(offsets)

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Yield events one by one.

        An event counts as processed when the next one is asked for, or when
        ``commit()`` is called while it is the current event.
        """
        while not self._closed:
            batch = await self._getmany()
            for tp, records in batch.items():
                for record in records:
                    event = self._decode(record)
                    if event is not None:
                        self.delivered += 1
                        self._current = {tp: record.offset + 1}
                        yield event
                        self._current = {}
                    self._pending[tp] = record.offset + 1

    async def run(self, handler: Handler, *, stop: asyncio.Event | None = None) -> None:
        """Call ``handler(event)`` (sync or async) for each event until ``stop`` is set."""
        is_async = inspect.iscoroutinefunction(handler)
        while not self._closed and not (stop is not None and stop.is_set()):
            events, offsets = await self._fetch()
            for event in events:
                result = handler(event)
                if is_async and result is not None:
                    await result
                self.delivered += 1
            self._pending.update(offsets)
        await self.commit()
