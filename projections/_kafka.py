"""``KafkaSource``: a topic of statelog records (``eventstore`` wire format).

Offline (``follow=False``) it assigns every partition itself, seeks each to
the checkpoint's offset (or the beginning) and stops at the end offsets it saw
when it started (and a fetch comes back empty). Live (``follow=True``) it
joins a consumer group; on every assignment it seeks to the offsets of the
read model's checkpoint, never to Kafka's committed offsets (the read model is
the one source of truth for how far it got). Run one runner process per read
model and group: the checkpoint row holds every partition's offset.

``timeout`` bounds every wait on the broker: one answer (connect, metadata,
offsets) and, offline, the time without progress towards the end offsets. A
wait longer than ``notice_after`` is announced through ``on_wait`` (what it
waits for, and for how long it still will); a wait past ``timeout`` raises
``StoreUnavailableError`` naming it. ``timeout=None`` waits for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeVar
from urllib.parse import urlsplit

from statelog.eventstore import Recorded, StoreUnavailableError

from ._checkpoint import Checkpoint, Item
from ._sources import Source

__all__ = ["KafkaSource"]

T = TypeVar("T")

#: Consumer group timings that suit Tansu and real Kafka alike.
GROUP_OPTIONS: dict[str, Any] = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "request_timeout_ms": 5000,
}


class KafkaSource(Source):
    """Events of one topic; the checkpoint holds the next offset of each partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        group_id: str = "statelog-projections",
        fetch_timeout: float = 0.5,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        notice_after: float = 2.0,
        **consumer_options: Any,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.fetch_timeout = fetch_timeout
        self.timeout = timeout
        self.on_wait = on_wait
        self.notice_after = notice_after
        self.consumer_options = consumer_options
        self.uri = f"kafka://{bootstrap}/{topic}"

    @classmethod
    async def from_uri(cls, uri: str, **options: Any) -> KafkaSource:
        parts = urlsplit(uri)
        topic = parts.path.lstrip("/")
        if parts.scheme != "kafka" or not parts.netloc or not topic:
            raise ValueError(f"expected kafka://HOST:PORT/TOPIC, got {uri!r}")
        source = cls(parts.netloc, topic, **options)
        await source._check_topic()
        return source

    async def _wait(self, what: str, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result; announced after ``notice_after``, given up after ``timeout``."""
        task = asyncio.ensure_future(awaitable)
        try:
            first = self.notice_after
            if self.timeout is not None:
                first = min(first, self.timeout)
            done, _ = await asyncio.wait({task}, timeout=first)
            if not done and (self.timeout is None or first < self.timeout):
                self._notice(what, first)
                rest = None if self.timeout is None else self.timeout - first
                done, _ = await asyncio.wait({task}, timeout=rest)
            if not done:
                raise StoreUnavailableError(
                    f"gave up waiting {self.timeout:g} s for {what} "
                    f"from the Kafka broker at {self.bootstrap}"
                )
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _notice(self, what: str, waited: float) -> None:
        if self.on_wait is None:
            return
        left = "" if self.timeout is None else f", giving up after {self.timeout:g} s"
        self.on_wait(
            f"waiting for {what} from the Kafka broker at {self.bootstrap} "
            f"({waited:.0f} s so far{left})"
        )

    def _consumer(self, group_id: str | None) -> Any:
        from aiokafka import AIOKafkaConsumer

        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            "fetch_max_bytes": 32 * 1024 * 1024,
            "client_id": f"statelog-projection-{uuid.uuid4().hex[:8]}",
            **GROUP_OPTIONS,
        }
        options.update(self.consumer_options)
        return AIOKafkaConsumer(group_id=group_id, **options)

    async def _partitions(self, consumer: Any) -> list[Any]:
        from aiokafka import TopicPartition

        topics = await self._wait("the list of topics", consumer.topics())
        if self.topic not in topics:
            raise StoreUnavailableError(f"no Kafka topic {self.topic!r} at {self.bootstrap}")
        numbers = consumer.partitions_for_topic(self.topic) or set()
        return [TopicPartition(self.topic, p) for p in sorted(numbers)]

    async def _start(self, consumer: Any) -> None:
        from aiokafka.errors import KafkaError

        try:
            await self._wait("a connection", consumer.start())
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            if isinstance(exc, StoreUnavailableError):  # the deadline passed
                raise
            raise StoreUnavailableError(
                f"cannot reach the Kafka broker at {self.bootstrap}: {exc}"
            ) from exc

    async def _check_topic(self) -> None:
        consumer = self._consumer(None)
        await self._start(consumer)
        try:
            await self._partitions(consumer)
        finally:
            await consumer.stop()

    async def total(self) -> int | None:
        consumer = self._consumer(None)
        await self._start(consumer)
        try:
            partitions = await self._partitions(consumer)
            start = await self._wait(
                f"the first offsets of topic {self.topic!r}", consumer.beginning_offsets(partitions)
            )
            end = await self._wait(
                f"the end offsets of topic {self.topic!r}", consumer.end_offsets(partitions)
            )
            return int(sum(end[tp] - start[tp] for tp in partitions))
        finally:
            await consumer.stop()

    async def items(
        self, checkpoint: Checkpoint, *, batch_size: int, follow: bool
    ) -> AsyncIterator[list[Item]]:
        if follow:
            async for batch in self._follow(checkpoint, batch_size):
                yield batch
            return
        consumer = self._consumer(None)
        await self._start(consumer)
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            for tp in partitions:
                if tp.partition in checkpoint.offsets:
                    consumer.seek(tp, checkpoint.offsets[tp.partition])
                else:
                    await self._wait(
                        f"the first offset of {tp.topic}[{tp.partition}]",
                        consumer.seek_to_beginning(tp),
                    )
            end = await self._wait(
                f"the end offsets of topic {self.topic!r}", consumer.end_offsets(partitions)
            )
            loop = asyncio.get_running_loop()
            moved = loop.time()
            notice_at = self.notice_after
            positions: dict[Any, int] = {}
            # Read until every partition reached the end offsets seen at the
            # start AND a fetch comes back empty: some brokers (Tansu) report
            # the end of a multi-record batch short, so the offsets alone are a
            # lower bound.
            while True:
                fetched = await consumer.getmany(
                    timeout_ms=int(self.fetch_timeout * 1000), max_records=batch_size
                )
                chunk = [_item(msg) for messages in fetched.values() for msg in messages]
                if chunk:
                    moved, notice_at = loop.time(), self.notice_after
                    yield chunk
                    continue
                for tp in partitions:
                    positions[tp] = await self._wait(
                        f"the position in {tp.topic}[{tp.partition}]", consumer.position(tp)
                    )
                behind = [tp for tp in partitions if positions[tp] < end[tp]]
                if not behind:
                    return
                stalled = loop.time() - moved
                what = f"records up to the end offsets ({_lag(behind, positions, end)})"
                if self.timeout is not None and stalled >= self.timeout:
                    raise StoreUnavailableError(
                        f"gave up waiting {self.timeout:g} s for {what} "
                        f"from the Kafka broker at {self.bootstrap}"
                    )
                if stalled >= notice_at:
                    self._notice(what, stalled)
                    notice_at = stalled + max(self.notice_after, 5.0)
        finally:
            await consumer.stop()

    async def _follow(self, checkpoint: Checkpoint, batch_size: int) -> AsyncIterator[list[Item]]:
        from aiokafka import ConsumerRebalanceListener

        consumer = self._consumer(self.group_id)
        delivered = dict(checkpoint.offsets)

        class SeekToCheckpoint(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
                return None

            async def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
                for tp in assigned:
                    if tp.partition in delivered:
                        consumer.seek(tp, delivered[tp.partition])
                    else:
                        await consumer.seek_to_beginning(tp)

        await self._start(consumer)
        try:
            await self._partitions(consumer)
            consumer.subscribe([self.topic], listener=SeekToCheckpoint())
            while True:
                fetched = await consumer.getmany(
                    timeout_ms=int(self.fetch_timeout * 1000), max_records=batch_size
                )
                batch = [_item(msg) for messages in fetched.values() for msg in messages]
                if batch:
                    for item in batch:
                        delivered[item.partition] = item.offset + 1
                    yield batch
                else:
                    await asyncio.sleep(0)
        finally:
            await consumer.stop()


def _lag(behind: list[Any], positions: dict[Any, int], end: dict[Any, int]) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}] at offset {positions[tp]} of {end[tp]}" for tp in behind
    )


def _item(msg: Any) -> Item:
    from statelog.eventstore.kafka import decode_record  # aiokafka is loaded only when used

    event = decode_record(msg.key, msg.value, msg.headers)
    return Item(Recorded(0, event), msg.partition, msg.offset)
