"""The outbox relay: publish a store's committed events to a Kafka topic, at least once.

The local log (SQLite) stays the truth. ``OutboxRelay`` reads it in global
order from its own stored position, publishes each event as one record (see
docs/wire-format.md) and moves the position forward only after the broker has
acknowledged every record of the batch. So:

* **at least once** - a crash or an outage between the acknowledgement and the
  checkpoint write re-publishes that batch; consumers de-duplicate on
  ``(stream, sequence_id)`` (``KafkaSubscription`` does);
* **no gaps** - the position never passes an unacknowledged event;
* **per-stream order** - the key keeps a stream in one partition (Kafka's
  default murmur2 partitioning, as the Java client); each batch is handed to
  the producer as one explicit record batch per partition (``send_batch``),
  which the broker appends whole or not at all, and the next batch starts only
  when the previous one is acknowledged, so a failure can never leave a later
  event of a stream on the topic without the earlier ones before it.

**Anchoring.** When the log is a SQLite file with signed checkpoints
(``SQLiteEventStore(signing_key=...)``), the relay also publishes each new
checkpoint, after the batch that covers it (never before the events of its
``position`` were acknowledged), to ``anchor_topic`` (default
``<topic>.checkpoints``): one record per checkpoint, key
``statelog-checkpoints`` (so one partition, in order), header
``kind: checkpoint``, value ``{"sequence":N,"body":"<canonical JSON>",
"signature":"<hex>"}`` (docs/wire-format.md). Whoever consumes that topic
holds the heads independently of the writer's file: ``statelog verify
--expect-checkpoint N:DIGEST`` with the latest one detects a log rolled back
to an older copy. At least once, like the events (a restart re-publishes
from checkpoint 1); consumers keep the highest ``sequence``.

While the broker is down the relay waits with bounded exponential backoff and
the engine keeps appending to SQLite; when the broker is back the relay
publishes everything pending. Kafka transactions are never needed. The
idempotent producer is off by default (``enable_idempotence``), because
brokers like Tansu do not support it; duplicates are handled by consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from .._aiosqlite import connect_aiosqlite
from .._base import EventStore
from .._codec import Codec, CodecName, get_codec
from .._errors import EventTooLargeError, StoreError, StoreUnavailableError
from .._event import Recorded, utcnow
from .._resource import AsyncResource
from ..sqlite._schema import translate_error
from ._wire import KafkaRecord, encode_record

__all__ = [
    "MemoryRelayCheckpoint",
    "OutboxRelay",
    "RelayCheckpoint",
    "RelayStatus",
    "SQLiteRelayCheckpoint",
]

log = logging.getLogger("statelog.relay")

#: Kafka's per-record framing (length, attributes, deltas, varints), an upper bound in bytes.
_RECORD_OVERHEAD = 64
#: A record batch's own header (61 bytes in format v2), rounded up.
_BATCH_OVERHEAD = 1024


def _record_size(record: KafkaRecord) -> int:
    """The bytes ``record`` takes in a Kafka record batch (an upper bound)."""
    size = len(record.key) + len(record.value) + _RECORD_OVERHEAD
    for name, value in record.headers:
        size += len(name) + len(value) + 10
    return size


RelayState = Literal["new", "connecting", "publishing", "idle", "waiting", "stopped", "failed"]


# --------------------------------------------------------------------------- checkpoints

#: The key of every record on the anchor topic (one partition, in order).
ANCHOR_KEY = b"statelog-checkpoints"


def _checkpoints_after(path: str, sequence: int) -> list[tuple[int, bytes, bytes]]:
    """The signed checkpoints of the SQLite log at ``path`` after ``sequence`` (read-only)."""
    from ..sqlite._checkpoints import read_checkpoints
    from ..sqlite._schema import read_only_uri

    uri, _ = read_only_uri(path)
    db = sqlite3.connect(uri, uri=True)
    try:
        return [
            (seq, item.body, item.signature) for seq, item in read_checkpoints(db) if seq > sequence
        ]
    finally:
        db.close()


def _covers(body: bytes) -> int:
    """The log position a signed checkpoint's body covers (0 if it does not say)."""
    try:
        return int(msgspec.json.decode(body).get("position", 0))
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return 0


class RelayCheckpoint(ABC):
    """Where a relay keeps the last acknowledged global position (0: nothing yet)."""

    @abstractmethod
    async def load(self) -> int: ...

    @abstractmethod
    async def save(self, position: int) -> None: ...

    async def log_head(self) -> int | None:
        """The last global position of the log, if this checkpoint can see it."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class MemoryRelayCheckpoint(RelayCheckpoint):
    """A checkpoint in memory (tests; a restart publishes everything again)."""

    def __init__(self, position: int = 0) -> None:
        self.position = position

    async def load(self) -> int:
        return self.position

    async def save(self, position: int) -> None:
        self.position = position


class SQLiteRelayCheckpoint(RelayCheckpoint):
    """A row in table ``statelog_relay`` of a SQLite file (normally the log's own file).

    One row per relay ``name`` (default: the topic), so several relays can feed
    several topics from one log. The row is written only after the broker has
    acknowledged a batch.
    """

    TABLE = "statelog_relay"

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = str(path)
        self.name = name
        self._db: Any = None

    async def _conn(self) -> Any:
        if self._db is None:
            try:
                db = await connect_aiosqlite(self.path, timeout=30)
                await db.execute("PRAGMA busy_timeout = 30000")
                await db.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.TABLE} ("
                    "name TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at TEXT NOT NULL)"
                )
                await db.commit()
            except (sqlite3.Error, ValueError) as exc:
                with contextlib.suppress(Exception):
                    await db.close()
                raise translate_error(
                    exc, self.path, doing=f"cannot open relay checkpoint in {self.path!r}"
                ) from exc
            self._db = db
        return self._db

    async def load(self) -> int:
        db = await self._conn()
        try:
            async with db.execute(
                f"SELECT position FROM {self.TABLE} WHERE name = ?", (self.name,)
            ) as cursor:
                row = await cursor.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self.path, doing="cannot read relay checkpoint") from exc
        return int(row[0]) if row else 0

    async def save(self, position: int) -> None:
        db = await self._conn()
        try:
            await db.execute(
                f"INSERT INTO {self.TABLE} (name, position, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET position = excluded.position, "
                "updated_at = excluded.updated_at",
                (self.name, position, utcnow().isoformat()),
            )
            await db.commit()
        except (sqlite3.Error, ValueError) as exc:
            raise translate_error(exc, self.path, doing="cannot save relay checkpoint") from exc

    async def log_head(self) -> int | None:
        """``MAX(position)`` of the SQLite store's ``events`` table in the same file."""
        db = await self._conn()
        try:
            async with db.execute("SELECT MAX(position) FROM events") as cursor:
                row = await cursor.fetchone()
        except Exception:  # not a SQLiteEventStore file (or another layout): unknown
            return None
        return int(row[0]) if row and row[0] is not None else 0

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


# --------------------------------------------------------------------------- status


class RelayStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a relay's progress."""

    topic: str
    state: RelayState
    position: int  # last acknowledged global position
    head: int  # last global position seen in the store
    lag: int  # head - position: events committed locally, not yet acknowledged
    # (head comes from the store's async ``last_position()`` if it has one, else from
    # the SQLite checkpoint's file; with neither, it is the last position read)
    published: int  # records acknowledged by this relay since it started
    batches: int
    retries: int
    last_error: str | None = None
    last_ack_at: datetime | None = None

    def line(self) -> str:
        text = (
            f"relay {self.topic}: {self.state}, position {self.position}, lag {self.lag}, "
            f"published {self.published} in {self.batches} batches"
        )
        if self.last_error and self.state == "waiting":
            text += f", waiting: {self.last_error}"
        return text


# --------------------------------------------------------------------------- relay


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 key hash (aiokafka's implementation, imported lazily)."""
    from aiokafka.partitioner import murmur2 as _murmur2

    return int(_murmur2(data))


def _kafka_errors() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import KafkaError

    return (KafkaError, OSError, asyncio.TimeoutError)


def _fatal_kafka_error(exc: BaseException) -> bool:
    from aiokafka.errors import (
        InvalidTopicError,
        MessageSizeTooLargeError,
        RecordListTooLargeError,
        RecordTooLargeError,
        TopicAuthorizationFailedError,
    )

    return isinstance(
        exc,
        MessageSizeTooLargeError
        | RecordListTooLargeError
        | RecordTooLargeError
        | TopicAuthorizationFailedError
        | InvalidTopicError,
    )


class OutboxRelay(AsyncResource):
    """Publish ``store``'s events to ``topic`` in order, at least once.

    ``await relay.run()`` publishes until ``stop()`` (or, with
    ``until_caught_up=True``, until nothing is pending); ``await
    relay.publish_batch()`` publishes one batch. ``status()`` reports position
    and lag; ``on_progress`` is called with a ``RelayStatus`` after each batch.

    ``start()`` raises ``StoreUnavailableError`` when the broker cannot be
    reached within ``connect_timeout`` seconds. Once running, an outage is
    waited out with backoff from ``backoff_initial`` doubling to
    ``backoff_max`` seconds (``outage_timeout`` seconds at most if set, then
    ``StoreUnavailableError``). An event whose record is over
    ``max_record_bytes`` raises ``EventTooLargeError`` after every event
    before it was published; none of it is sent.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        bootstrap_servers: str,
        topic: str,
        codec: Codec | CodecName = "json",
        batch_size: int = 2000,
        max_batch_bytes: int = 900_000,
        max_record_bytes: int = 1_000_000,
        checkpoint: RelayCheckpoint | None = None,
        poll_interval: float = 0.05,
        connect_timeout: float = 30.0,
        request_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        outage_timeout: float | None = None,
        enable_idempotence: bool = False,
        acks: int | str = "all",
        producer_options: dict[str, Any] | None = None,
        on_progress: Callable[[RelayStatus], None] | None = None,
        anchor_topic: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_record_bytes > max_batch_bytes:
            max_batch_bytes = max_record_bytes
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.codec = get_codec(codec)
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.max_record_bytes = max_record_bytes
        self.checkpoint = checkpoint if checkpoint is not None else MemoryRelayCheckpoint()
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.outage_timeout = outage_timeout
        self.enable_idempotence = enable_idempotence
        self.acks = acks
        self.producer_options = dict(producer_options or {})
        self.on_progress = on_progress
        self._producer: Any = None
        self._position = 0
        self._head = 0
        self._published = 0
        self._batches = 0
        self._retries = 0
        self._state: RelayState = "new"
        self._last_error: str | None = None
        self._last_ack_at: datetime | None = None
        self._stopping = asyncio.Event()
        self._started = False
        self._buffer: deque[tuple[Recorded, KafkaRecord, int]] = deque()
        self._cursor = 0  # the last position read into the buffer
        self._key_hashes: dict[bytes, int] = {}
        self.anchor_topic = anchor_topic or f"{topic}.checkpoints"
        self._anchored = 0  # the last checkpoint sequence published to anchor_topic
        self._anchor_due = False  # a batch was published and its _anchor did not finish

    def __repr__(self) -> str:
        return f"OutboxRelay(topic={self.topic!r}, position={self._position}, state={self._state})"

    # --- status

    def status(self) -> RelayStatus:
        head = max(self._head, self._position)
        return RelayStatus(
            topic=self.topic,
            state=self._state,
            position=self._position,
            head=head,
            lag=head - self._position,
            published=self._published,
            batches=self._batches,
            retries=self._retries,
            last_error=self._last_error,
            last_ack_at=self._last_ack_at,
        )

    @property
    def position(self) -> int:
        return self._position

    # --- lifecycle

    def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "request_timeout_ms": int(self.request_timeout * 1000),
            "max_batch_size": self.max_batch_bytes + _BATCH_OVERHEAD,
            "max_request_size": self.max_batch_bytes + 2 * _BATCH_OVERHEAD,
            "linger_ms": 0,
            "client_id": f"statelog-relay-{self.topic}",
        }
        options.update(self.producer_options)
        return AIOKafkaProducer(**options)

    async def _connect_once(self, limit: float) -> None:
        """Start a producer and wait for the topic's metadata; raise a Kafka error if not."""
        producer = self._new_producer()
        try:
            async with asyncio.timeout(max(limit, 0.01)):
                await producer.start()
                await producer.partitions_for(self.topic)
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        self._last_error = None

    async def _connect(self, limit: float) -> None:
        """Connect, retrying with backoff; ``StoreUnavailableError`` after ``limit`` s."""
        self._state = "connecting"
        deadline = time.monotonic() + limit
        attempt = 0
        while True:
            try:
                await self._connect_once(min(deadline - time.monotonic(), self.request_timeout))
                return
            except _kafka_errors() as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline or self._stopping.is_set():
                    hint = (
                        " (enable_idempotence is on: not every broker supports the "
                        "idempotent producer's InitProducerId)"
                        if self.enable_idempotence
                        else ""
                    )
                    raise StoreUnavailableError(
                        f"cannot reach Kafka at {self.bootstrap_servers!r} (topic "
                        f"{self.topic!r}) within {limit} s: {self._last_error}{hint}"
                    ) from exc
            attempt += 1
            self._retries += 1
            await self._sleep(self._backoff(attempt), deadline)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt - 1, 30))
        return float(delay * (0.5 + random.random() / 2))

    async def _sleep(self, delay: float, deadline: float | None = None) -> None:
        if deadline is not None:
            delay = max(min(delay, deadline - time.monotonic()), 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def start(self) -> None:
        """Load the stored position and connect; ``StoreUnavailableError`` on timeout."""
        if self._started:
            return
        self._position = await self.checkpoint.load()
        self._head = self._position
        self._reset_reader()
        await self._connect(self.connect_timeout)
        self._started = True
        self._state = "idle"
        log.info(
            "relay to %s on %s starts at position %d",
            self.topic,
            self.bootstrap_servers,
            self._position,
        )

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.request_timeout):
                    await producer.stop()

    def stop(self) -> None:
        """Ask ``run()`` to return after the batch in flight."""
        self._stopping.set()

    async def aclose(self) -> None:
        self._stopping.set()
        await self._drop_producer()
        await self.checkpoint.aclose()
        self._state = "stopped"

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    # --- publishing

    def _reset_reader(self) -> None:
        """Forget what was read ahead: the next batch starts after the acknowledged position."""
        self._buffer.clear()
        self._cursor = self._position

    async def _fill(self) -> None:
        """Read and encode the next events into the read-ahead buffer."""
        if len(self._buffer) >= self.batch_size:
            return
        rows = await self.store.read_all(from_position=self._cursor + 1, limit=self.batch_size)
        codec = self.codec
        append = self._buffer.append
        for rec in rows:
            record = encode_record(rec.event, codec)
            append((rec, record, _record_size(record)))
        if rows:
            self._cursor = rows[-1].position
            self._head = max(self._head, self._cursor)

    def _take(self) -> tuple[list[Recorded], list[KafkaRecord]]:
        """The next batch from the buffer: at most batch_size and max_batch_bytes."""
        recorded: list[Recorded] = []
        records: list[KafkaRecord] = []
        size = 0
        buffer = self._buffer
        while buffer and len(recorded) < self.batch_size:
            rec, record, record_size = buffer[0]
            if record_size > self.max_record_bytes:
                if recorded:
                    break  # publish what comes before it first
                event = rec.event
                raise EventTooLargeError(
                    event.stream, event.sequence_id, record_size, self.max_record_bytes
                )
            if recorded and size + record_size > self.max_batch_bytes:
                break
            buffer.popleft()
            size += record_size
            recorded.append(rec)
            records.append(record)
        return recorded, records

    async def _send_all(
        self, records: list[KafkaRecord]
    ) -> tuple[list[asyncio.Future[Any]], BaseException | None, int]:
        """Hand the records to the producer as one record batch per partition.

        A Kafka record batch is appended to its partition whole or not at all,
        so a batch of the relay lands per partition all or nothing. Returns the
        futures, the error if handing over failed, and how many records (a
        prefix) were handed over.
        """
        producer = self._producer
        topic = self.topic
        partition_of = self._partitioner(producer)
        futures: list[asyncio.Future[Any]] = []
        builders: dict[int, Any] = {}
        sent = len(records)
        for index, (key, value, headers) in enumerate(records):
            partition = partition_of(key)
            if partition is None:  # a custom partitioner decides: one send per record
                return await self._send_each(records)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                sent = index  # that partition's batch is full: the rest goes next time
                break
        try:
            for partition, builder in builders.items():
                futures.append(await producer.send_batch(builder, topic, partition=partition))
        except _kafka_errors() as exc:
            return futures, exc, sent
        return futures, None, sent

    async def _send_each(
        self, records: list[KafkaRecord]
    ) -> tuple[list[asyncio.Future[Any]], BaseException | None, int]:
        send = self._producer.send
        futures: list[asyncio.Future[Any]] = []
        try:
            for key, value, headers in records:
                futures.append(await send(self.topic, value, key=key, headers=headers))
        except _kafka_errors() as exc:
            return futures, exc, len(records)
        return futures, None, len(records)

    def _partitioner(self, producer: Any) -> Callable[[bytes], int | None]:
        """Kafka's default key partitioning (murmur2, as the Java client), cached per key.

        aiokafka hashes every key in pure Python; a relay sends the same stream
        keys over and over, so the hash is kept (up to 100,000 keys). With a
        custom ``partitioner`` in ``producer_options`` the producer decides.
        """
        if "partitioner" in self.producer_options:
            return lambda key: None
        known = producer.client.cluster.partitions_for_topic(self.topic)
        if not known:
            return lambda key: None
        partitions: list[int] = sorted(int(p) for p in known)
        count = len(partitions)
        cache = self._key_hashes

        def partition_of(key: bytes) -> int:
            hashed = cache.get(key)
            if hashed is None:
                if len(cache) >= 100_000:
                    cache.clear()
                hashed = cache[key] = murmur2(key) & 0x7FFFFFFF
            return partitions[hashed % count]

        return partition_of

    @staticmethod
    async def _acknowledged(
        futures: list[asyncio.Future[Any]], error: BaseException | None
    ) -> None:
        """Wait for every acknowledgement; raise the first failure.

        Every future already handed to the producer is awaited, even after an
        error, so nothing of the batch is still in flight when it is retried.
        """
        results = await asyncio.gather(*futures, return_exceptions=True)
        if error is None:
            error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error

    async def publish_batch(self) -> int:
        """Publish the next batch and store the position; return how many (0: none)."""
        if not self._started:
            await self.start()
        if self._producer is None:
            await self._connect_once(self.request_timeout)
        if not self._buffer:
            await self._fill()
        recorded, records = self._take()
        if not recorded:
            await self._refresh_head()
            if self._anchor_due:
                await self._anchor()  # the last batch's anchoring was cut (cancelled)
            self._state = "idle"
            return 0
        self._state = "publishing"
        read_ahead: asyncio.Task[None] | None = None
        try:
            futures, error, sent = await self._send_all(records)
            if sent < len(records):
                for item in reversed(list(zip(recorded[sent:], records[sent:], strict=True))):
                    self._buffer.appendleft((item[0], item[1], _record_size(item[1])))
                del recorded[sent:]
            # Read and encode the next batch while the broker acknowledges this one.
            read_ahead = asyncio.create_task(self._fill()) if error is None else None
            await self._acknowledged(futures, error)
            position = recorded[-1].position
            await self.checkpoint.save(position)
        except BaseException:
            # failed, or cancelled, before the position was stored (even while handing
            # the batch over): the batch goes again from the stored position
            if read_ahead is not None:
                read_ahead.cancel()
                with contextlib.suppress(BaseException):
                    await read_ahead
            self._reset_reader()
            raise
        # stored: counted before the next await (a cancel there must not leave the
        # position behind, or the relay idles with a lag and never anchors the rest)
        self._position = position
        self._published += len(recorded)
        self._batches += 1
        self._last_ack_at = utcnow()
        self._last_error = None
        self._anchor_due = True
        await self._refresh_head()
        if read_ahead is not None:
            try:
                await read_ahead
            except BaseException:
                self._reset_reader()
                raise
        await self._anchor()
        if self.on_progress is not None:
            self.on_progress(self.status())
        return len(recorded)

    async def _anchor(self) -> None:
        """Publish the log's signed checkpoints newer than the last one published."""
        path = getattr(self.store, "path", None)
        if not isinstance(path, str) or self._producer is None:
            return
        try:
            fresh = await asyncio.to_thread(_checkpoints_after, path, self._anchored)
        except sqlite3.Error as exc:
            raise translate_error(exc, path, doing="cannot read the signed checkpoints") from exc
        for sequence, body, signature in fresh:
            if _covers(body) > self._position:
                # it signs heads the topic does not hold yet: a verifier reading the topic
                # now would call them cut; it goes after the batch that covers it
                break
            value = msgspec.json.encode(
                {"sequence": sequence, "body": body.decode(), "signature": signature.hex()}
            )
            await self._producer.send_and_wait(
                self.anchor_topic,
                value,
                key=ANCHOR_KEY,
                headers=[("kind", b"checkpoint")],
            )
            self._anchored = sequence
        self._anchor_due = False

    async def _refresh_head(self) -> None:
        """Learn the log's last position, for ``lag``: from the store if it can say
        (an async ``last_position()``), else from the checkpoint's view of the file."""
        with contextlib.suppress(Exception):
            last_position = getattr(self.store, "last_position", None)
            head = await last_position() if callable(last_position) else None
            if head is None:
                head = await self.checkpoint.log_head()
            if head is not None:
                self._head = max(self._head, int(head))

    async def run(self, *, until_caught_up: bool = False) -> RelayStatus:
        """Publish until ``stop()`` (or until nothing is pending); return the final status."""
        await self.start()
        outage_started: float | None = None
        attempt = 0
        while not self._stopping.is_set():
            try:
                count = await self.publish_batch()
            except _kafka_errors() as exc:
                if _fatal_kafka_error(exc):
                    self._state = "failed"
                    raise StoreError(
                        f"Kafka refused a batch for topic {self.topic!r}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                attempt += 1
                self._retries += 1
                now = time.monotonic()
                outage_started = outage_started or now
                self._state = "waiting"
                self._last_error = f"{type(exc).__name__}: {exc}"
                if self.outage_timeout is not None and now - outage_started > self.outage_timeout:
                    self._state = "failed"
                    raise StoreUnavailableError(
                        f"Kafka at {self.bootstrap_servers!r} unavailable for more than "
                        f"{self.outage_timeout} s: {self._last_error}"
                    ) from exc
                delay = self._backoff(attempt)
                log.warning(
                    "relay to %s: publish failed (%s); retrying from position %d in %.2f s",
                    self.topic,
                    self._last_error,
                    self._position + 1,
                    delay,
                )
                await self._drop_producer()
                await self._refresh_head()
                await self._sleep(delay)
                continue
            attempt = 0
            outage_started = None
            if count == 0:
                if until_caught_up:
                    break
                await self._sleep(self.poll_interval)
        if self._state != "failed":
            self._state = "stopped" if self._stopping.is_set() else "idle"
        return self.status()
