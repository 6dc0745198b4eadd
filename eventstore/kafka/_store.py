"""``KafkaEventStore``: the log kept in a Kafka topic, with a local SQLite index.

One topic holds every stream; each event is one record in the wire format of
``_wire`` (key ``partition_key/app_id``, the whole event as value, headers).
A stream is pinned to one Kafka partition (the key's murmur2 partition when it
is created), so its records are in order there.

What Kafka gives and what it does not:

* **No conditional append.** Kafka cannot refuse a record because the stream
  moved on. ``append`` checks ``expected_sequence`` against this store's local
  index, which is right for a *single writer per stream*: the caller (or a
  worker group owning the partitions) must make sure no two processes append
  to one stream. Two writers to one stream fork it; readers then keep the
  first chained record of each ``(stream, sequence_id)`` (see below).
* **No atomic batch.** ``append`` sends the batch and waits for every record's
  acknowledgement. If any is not acknowledged it raises
  ``StoreUnavailableError`` and the index does not advance - but a *prefix* of
  the batch may be on the topic. The store re-reads that partition before the
  next append to it and adopts what landed (``last_sequence`` tells), so a
  retry with a stale ``expected_sequence`` gets ``ConcurrencyError``.
* **Readers de-duplicate.** Every reader (this store's catch-up and ``read``)
  keeps, per stream, the first record of each ``sequence_id`` whose
  ``prev_hash`` links to the kept record before it; duplicates, records that
  do not chain and foreign records are skipped (foreign ones with a warning).
* **Positions.** Kafka has no global order across partitions. A position
  encodes ``(partition, offset)`` as ``partition * 2**40 + offset + 1``: in a
  single-partition topic it is simply ``offset + 1`` and works like any other
  store's position. With several partitions ``read_all`` orders by
  ``(partition, offset)``; a position is a resumable cursor within its
  partition only, so ``subscribe`` over several partitions takes
  ``from_offsets={partition: next_offset}`` instead of a position.
* **The local index** (``index_path``, a SQLite file; in memory if ``None``)
  maps each stream to its partition, head (last sequence id and hash) and the
  offset of every event, and remembers how far it has read each partition. It
  is a cache of the topic: ``connect`` (and ``refresh``) catch it up from its
  stored offsets to the end of the topic, so a restarted writer - or one whose
  index was deleted - recovers every head. ``read`` uses it to seek straight to
  an event's offset and to stop at the stream's last record, so reading the
  tail of a stream costs the same whatever else is on the topic. Appends by
  other processes are seen after ``refresh()``.
* **Fences.** ``claim(partition, owner)`` writes a fence record that opens a
  new epoch in a partition; from then on this store's appends to that
  partition carry the epoch (the ``statelog-fence`` header), and every reader
  keeps an event with a fence header only if it names the epoch open at its
  offset. A writer that lost the partition (a paused worker, woken after
  another claimed it) is fenced: its late records are skipped and reported
  (``fenced_records``), and its next append to the partition raises
  ``FencedError`` once it sees the newer epoch. Records without the header
  read as before. A store made with ``claims_required=True`` (a worker's)
  writes *only* with a fence: an append to a partition it holds no claim on
  raises ``FencedError`` (a lost claim) or ``UsageError`` (never claimed).
  See docs/scale-out.md.
* **Child streams** (the first event's ``parent`` is a ``Lineage`` with
  ``relation="child"``, as ``parallel_map`` writes) are created in their
  parent's partition, not their key's, when the index knows the parent: the
  parent's owner writes them with the parent partition's fence, so a paused
  owner's late child records are fenced like the parent's. Readers find a
  stream's partition where its first event is, so they need no rule for it.
* **Signed checkpoints.** With ``signing_key`` (an Ed25519 private key or its
  PEM file), the store signs checkpoints of the heads of the streams it
  appended to, every ``checkpoint_every`` events or ``checkpoint_interval``
  seconds and at close, and publishes them to ``checkpoints_topic`` (default
  ``<topic>.checkpoints``, which must exist): one chain per store, named
  ``writer_id``. See ``_signing`` and docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from os import PathLike
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from .._base import (
    DEFAULT_MAX_EVENT_SIZE,
    EventStore,
    check_count,
    check_page,
    check_partition,
    check_read,
    check_stream_args,
    prepare_append,
    warn_unclosed,
)
from .._checkpoints import load_private_key
from .._codec import Codec, CodecName, get_codec
from .._errors import (
    ConcurrencyError,
    ConfigError,
    EncodingError,
    EventTooLargeError,
    FencedError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from .._event import Event, Recorded, StreamId
from ._index import FLUSH_ROWS, KafkaIndex
from ._signing import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL,
    KafkaCheckpointer,
    checkpoints_topic_for,
    new_writer_id,
)
from ._wire import (
    Fence,
    decode_record,
    encode_fence,
    encode_record,
    fence_claim_of,
    fence_of,
    record_key,
)

__all__ = ["KafkaEventStore", "kafka_position", "split_position"]

logger = logging.getLogger("eventstore.kafka")

#: Bits of a position that hold the offset; the partition sits above them.
POSITION_SHIFT = 40
_OFFSET_MASK = (1 << POSITION_SHIFT) - 1
#: Bytes allowed on top of ``max_event_size`` for a record's key, headers and framing.
_RECORD_OVERHEAD = 64 * 1024
_FETCH_RECORDS = 10_000
#: A read of fewer events than this that ends before the stream's head reads up
#: to ``_READ_AHEAD`` more events in the same fetch, for the next read.
_READ_AHEAD_BELOW = 16
_READ_AHEAD = 1_000


def kafka_position(partition: int, offset: int) -> int:
    """The store position of the record at ``offset`` in ``partition``."""
    return (partition << POSITION_SHIFT) + offset + 1


def split_position(position: int) -> tuple[int, int]:
    """``(partition, offset)`` of a position (``kafka_position``'s inverse)."""
    if position <= 0:
        return 0, 0
    value = position - 1
    return value >> POSITION_SHIFT, value & _OFFSET_MASK


class KafkaEventStore(EventStore):
    """An event store on a Kafka topic (aiokafka), indexed in a local SQLite file.

    ``await store.connect()`` (or ``async with store``) starts the clients and
    catches the index up with the topic; ``aclose()`` stops them. The topic
    must exist (create it with ``retention.ms=-1``: it is a log of record).
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        *,
        index_path: str | Path | None = None,
        codec: Codec | CodecName = "json",
        enable_idempotence: bool = False,
        request_timeout_ms: int = 30_000,
        connect_timeout: float = 10.0,
        hmac_key: bytes | None = None,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        client_id: str = "statelog",
        claims_required: bool = False,
        signing_key: Any = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        checkpoints_topic: str | None = None,
    ) -> None:
        if not topic:
            raise ValueError("topic must be a non-empty string")
        if max_event_size <= 0:
            raise ValueError(f"max_event_size must be > 0, got {max_event_size}")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.index_path = None if index_path is None else Path(index_path)
        self.codec = get_codec(codec)
        self.enable_idempotence = enable_idempotence
        self.request_timeout_ms = request_timeout_ms
        self.connect_timeout = connect_timeout
        self.hmac_key = hmac_key
        self.max_event_size = max_event_size
        self.client_id = client_id
        #: append only to claimed partitions (with their fence); see ``claim``
        self.claims_required = claims_required
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._index = KafkaIndex(topic, self.index_path)
        self._tps: list[TopicPartition] = []
        self._dirty_partitions: set[int] = set()
        #: per partition, the acknowledgements of cancelled appends still in flight
        self._in_flight: dict[int, list[asyncio.Future[list[Any]]]] = {}
        self._ahead: list[Event] = []  # events read past the end of the last short read
        self._locks: dict[StreamId, asyncio.Lock] = {}
        self._read_lock = asyncio.Lock()
        self._index_lock = asyncio.Lock()
        self._connected = False
        self._claims: dict[int, Fence] = {}
        self._lost: dict[int, Fence] = {}  # claims given up or fenced, by partition
        #: how many records of a stale epoch this store has skipped (fenced writes)
        self.fenced_records = 0
        # signed checkpoints (``_signing``): a key object or a PEM file's path
        if isinstance(signing_key, str | PathLike):
            signing_key = load_private_key(signing_key)
        elif signing_key is not None and not hasattr(signing_key, "sign"):
            raise ConfigError(
                "signing_key must be an Ed25519 private key or the path of its PEM file, "
                f"got {type(signing_key).__name__}"
            )
        if type(checkpoint_every) is not int or checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        if not isinstance(checkpoint_interval, int | float) or not checkpoint_interval > 0:
            raise ConfigError(f"checkpoint_interval must be > 0, got {checkpoint_interval!r}")
        self.signing_key = signing_key
        self.checkpoints_topic = checkpoints_topic or checkpoints_topic_for(topic)
        #: the name of this store's checkpoint chain (one per store; see ``_signing``)
        self.writer_id = new_writer_id(client_id)
        self._checkpoint_options = (checkpoint_every, float(checkpoint_interval))
        self._checkpointer: KafkaCheckpointer | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connected else "new"
        return (
            f"KafkaEventStore({self.bootstrap_servers!r}, {self.topic!r}, "
            f"streams={len(self._index.heads)}, {state})"
        )

    def __del__(self) -> None:
        if self._connected and not self._closed:
            warn_unclosed(self)

    @property
    def partitions(self) -> int:
        """How many partitions the topic has (known after ``connect``)."""
        return len(self._tps)

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> KafkaEventStore:
        """Start the clients, open the index and catch it up with the topic.

        Raises ``StoreUnavailableError`` if the broker cannot be reached within
        ``connect_timeout`` seconds or the topic does not exist.
        """
        self._check_open()
        if self._connected:
            return self
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._start_clients()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._stop_clients()
            raise StoreUnavailableError(
                f"cannot reach Kafka at {self.bootstrap_servers!r} (topic {self.topic!r}) "
                f"within {self.connect_timeout} s: {exc!r}"
            ) from exc
        except BaseException:
            await self._stop_clients()
            raise
        self._connected = True
        try:
            if self.signing_key is not None:
                await self._start_checkpoints()
            await self._index.open()
            await self.refresh()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start_clients(self) -> None:
        common: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
        }
        self._producer = AIOKafkaProducer(
            **common,
            acks="all",
            enable_idempotence=self.enable_idempotence,
            max_request_size=max(1024 * 1024, self.max_event_size + _RECORD_OVERHEAD),
            # Many concurrent appends share one in-flight batch per partition;
            # aiokafka's 16 KiB default makes every sender wait for a drain.
            max_batch_size=1024 * 1024,
            linger_ms=0,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **common,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        if self.topic not in await self._consumer.topics():  # asks without auto-creating
            raise StoreUnavailableError(f"topic {self.topic!r} does not exist; create it first")
        partitions = await self._producer.partitions_for(self.topic)
        if not partitions:
            raise StoreUnavailableError(f"topic {self.topic!r} does not exist; create it first")
        self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._tps)
        self._consumer.pause(*self._tps)

    async def _start_checkpoints(self) -> None:
        assert self._consumer is not None
        try:
            known = await self._consumer.topics()
        except (KafkaError, OSError) as exc:
            raise StoreUnavailableError(f"cannot list the topics of Kafka: {exc!r}") from exc
        if self.checkpoints_topic not in known:
            raise StoreUnavailableError(
                f"topic {self.checkpoints_topic!r} (the signed checkpoints of {self.topic!r}) "
                "does not exist; create it first (ensure_topics, or --partitions on worker)"
            )
        every, interval = self._checkpoint_options
        self._checkpointer = KafkaCheckpointer(
            lambda: self._producer,
            self.checkpoints_topic,
            self.signing_key,
            writer=self.writer_id,
            every=every,
            interval=interval,
            timeout=self.request_timeout_ms / 1000 + 1,
        )

    async def checkpoint(self) -> None:
        """Sign and publish a checkpoint of the heads this store wrote, now.

        Needs ``signing_key``; raises ``StoreUnavailableError`` if Kafka does
        not acknowledge it (it is sent again with the next one).
        """
        if self.signing_key is None:
            raise UsageError(f"{self!r} has no signing_key: it cannot sign checkpoints")
        self._check_ready()
        assert self._checkpointer is not None
        await self._checkpointer.flush()

    async def _stop_clients(self) -> None:
        """Stop both clients in a task of its own, waited for shielded: a cancelled close
        still stops both and the caller gets its CancelledError (aiokafka's producer.stop
        swallows a cancel that lands while it awaits its sender task)."""
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None

        async def stop() -> None:
            for client in (producer, consumer):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.stop()

        if producer is not None or consumer is not None:
            await asyncio.shield(asyncio.get_running_loop().create_task(stop()))

    async def aclose(self) -> None:
        if self._closed:
            return
        checkpointer, self._checkpointer = self._checkpointer, None
        try:
            if checkpointer is not None:
                try:
                    await checkpointer.aclose()  # the last checkpoint, at close
                finally:
                    await self._index.close()
            else:
                await self._index.close()
        finally:
            self._closed = True
            await self._stop_clients()

    async def __aenter__(self) -> KafkaEventStore:
        return await self.connect()

    def _check_ready(self) -> None:
        self._check_open()
        if not self._connected:
            raise StoreError("KafkaEventStore is not connected: await store.connect() first")

    # ------------------------------------------------------------------ catching up

    async def refresh(self) -> int:
        """Catch the index up with the end of the topic; return how many events it learned.

        ``connect`` does this; call it to see events other processes appended.
        """
        self._check_ready()
        for partition in list(self._in_flight):
            await self._settle(partition)
        async with self._index_lock:
            ends = await self._end_offsets()
            learned = 0
            for tp in self._tps:
                learned += await self._catch_up_partition(tp.partition, ends[tp.partition])
            self._dirty_partitions.clear()
            await self._index.flush()
        return learned

    async def _end_offsets(self) -> dict[int, int]:
        assert self._consumer is not None
        try:
            async with asyncio.timeout(self.request_timeout_ms / 1000):
                ends = await self._consumer.end_offsets(self._tps)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"cannot read the end offsets of topic {self.topic!r}: {exc!r}"
            ) from exc
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def _catch_up_partition(self, partition: int, listed_end: int) -> int:
        """Read ``partition`` from the index's checkpoint to its end, learning each record.

        ``listed_end`` is what ListOffsets answered. Some brokers (Tansu) answer
        the base offset of the last batch plus one, so the true end is taken
        from the records and the high watermark of the fetches themselves.
        """
        start = self._index.checkpoint.get(partition, 0)
        if listed_end <= start:
            if start == 0:
                return 0
            true_end = await self._probe_end(partition, listed_end)
            if true_end < start:
                raise StoreCorruptError(
                    f"partition {partition} of topic {self.topic!r} ends at offset {true_end}, "
                    f"but the index has read it up to {start}: the topic was recreated or "
                    "truncated; delete the index to rebuild it from the topic"
                )
            if true_end == start:
                return 0
            listed_end = true_end
        learned = 0
        fetch = self._fetch(partition, start, listed_end, follow=True)
        async with self._read_lock, aclosing(fetch) as batches:
            async for batch in batches:
                for record in batch:
                    if await self._learn(partition, record):
                        learned += 1
                self._index.checkpoint[partition] = batch[-1].offset + 1
                if len(self._index.pending) >= FLUSH_ROWS:
                    await self._index.flush()
        return learned

    async def _probe_end(self, partition: int, listed_end: int) -> int:
        """The true end of ``partition``: fetch its last listed record and look past it."""
        if listed_end <= 0:
            return 0
        end = listed_end
        async with (
            self._read_lock,
            aclosing(self._fetch(partition, listed_end - 1, listed_end, follow=True)) as batches,
        ):
            async for batch in batches:
                end = max(end, batch[-1].offset + 1)
        return end

    async def _learn(self, partition: int, record: Any) -> bool:
        """Apply the first-chained-record-wins rule to one record; True if accepted."""
        offset = record.offset
        if (partition, offset) in self._index.skipped:
            return False
        headers = record.headers
        if not record.key:
            claim = fence_claim_of(headers)
            if claim is not None:
                if not self._index.open_fence(partition, offset, claim):
                    logger.info(
                        "stale fence %s[%d]@%d: epoch %d (%s) is not newer than %s",
                        self.topic,
                        partition,
                        offset,
                        claim.epoch,
                        claim.owner,
                        self._index.current_fence(partition),
                    )
                return False
        try:
            event = decode_record(record.key, record.value, headers)
        except EncodingError as exc:
            self._skip(partition, offset, f"foreign record: {exc}")
            return False
        fence = fence_of(headers)
        if fence is not None and fence != self._index.current_fence(partition):
            self.fenced_records += 1
            self._skip(
                partition,
                offset,
                f"fenced: {event.stream}#{event.sequence_id} was written in epoch "
                f"{fence.epoch} ({fence.owner}), the partition is at "
                f"{self._index.current_fence(partition)}",
            )
            return False
        stream = event.stream
        head = self._index.heads.get(stream)
        if head is None:
            if event.sequence_id == 0 and event.prev_hash == "":
                self._index.advance(stream, self._index.new_head(stream, partition), event, offset)
                return True
            self._skip(partition, offset, f"{stream}#{event.sequence_id} has no predecessor")
            return False
        if head.partition != partition:
            self._skip(partition, offset, f"{stream} lives in partition {head.partition}, not here")
            return False
        if event.sequence_id == head.last_seq + 1 and event.prev_hash == head.last_hash:
            self._index.advance(stream, head, event, offset)
            return True
        if event.sequence_id <= head.last_seq:
            known = await self._index.offsets_of(head, [event.sequence_id])
            if known.get(event.sequence_id) == offset:
                return False  # our own append, already in the index
            self._skip(partition, offset)  # a duplicate: the first copy wins
            return False
        self._skip(
            partition,
            offset,
            f"{stream}#{event.sequence_id} does not chain onto #{head.last_seq}",
        )
        return False

    def _skip(self, partition: int, offset: int, why: str | None = None) -> None:
        if why is not None:
            logger.warning("skipping record %s[%d]@%d: %s", self.topic, partition, offset, why)
        self._index.skip(partition, offset)

    async def _fetch(
        self, partition: int, start: int, stop: int, *, follow: bool = False
    ) -> AsyncGenerator[list[Any], None]:
        """Batches of the records of ``partition`` with ``start <= offset < stop``.

        With ``follow``, ``stop`` grows to the high watermark the fetches report
        (read to the true end of the partition). The caller holds ``_read_lock``.
        """
        if start >= stop:
            return
        consumer = self._consumer
        assert consumer is not None
        tp = self._tps[partition]
        consumer.seek(tp, start)
        consumer.resume(tp)
        position = start
        limit = self.request_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            while position < stop:
                try:
                    # Without ``follow`` at most ``stop - position`` records are
                    # wanted: don't let aiokafka materialise the rest of the fetch.
                    want = _FETCH_RECORDS if follow else min(_FETCH_RECORDS, stop - position)
                    data = await consumer.getmany(tp, timeout_ms=100, max_records=want)
                except (KafkaError, OSError) as exc:
                    raise StoreUnavailableError(
                        f"cannot read {self.topic}[{partition}]: {exc!r}"
                    ) from exc
                records = data.get(tp)
                if not records:
                    if loop.time() >= deadline:
                        raise StoreUnavailableError(
                            f"reading {self.topic}[{partition}] from offset {position} got "
                            f"nothing for {limit} s (expected records up to offset {stop})"
                        )
                    continue
                deadline = loop.time() + limit
                if follow:
                    stop = max(stop, consumer.highwater(tp) or 0, records[-1].offset + 1)
                batch = [r for r in records if r.offset < stop]
                position = records[-1].offset + 1
                if batch:
                    yield batch
        finally:
            consumer.pause(tp)

    # ------------------------------------------------------------------ writing

    def _partition_for(self, key: bytes) -> int:
        return int(murmur2(key) & 0x7FFFFFFF) % len(self._tps)

    def _home_of_new(self, first: Event) -> int:
        """The partition a new stream is created in: its parent's for a child stream."""
        parent = first.parent
        if parent is not None and parent.relation == "child":
            known = self._index.heads.get(StreamId(parent.partition_key, parent.app_id))
            if known is not None:
                return known.partition
        return self._partition_for(record_key(first.partition_key, first.app_id))

    def _not_claimed(self, partition: int) -> FencedError | UsageError:
        """Why a ``claims_required`` store may not append to ``partition``."""
        lost = self._lost.get(partition)
        if lost is not None:
            return FencedError(partition, lost, self._index.current_fence(partition))
        return UsageError(
            f"append to {self.topic}[{partition}], which this store has not claimed: "
            "a store made with claims_required=True writes only to claimed partitions"
        )

    def _refuse_bad(self, events: Sequence[Event], expected_sequence: int) -> None:
        """Raise the typed error every store raises for a bad batch; nothing is sent."""
        prepare_append(
            events,
            expected_sequence,
            "",
            codec=self.codec,
            key=self.hmac_key,
            max_size=self.max_event_size,
        )

    async def append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        """Produce a sealed batch and wait for every acknowledgement (see ``_append``).

        With a signing key, the heads of what Kafka acknowledged go into the next
        signed checkpoint.
        """
        recorded = await self._append(events, expected_sequence=expected_sequence)
        if self._checkpointer is not None:
            self._checkpointer.note(recorded)
        return recorded

    async def _append(self, events: Sequence[Event], *, expected_sequence: int) -> list[Recorded]:
        """Produce a sealed batch and wait for every acknowledgement.

        ``expected_sequence`` is checked against the local index (single writer
        per stream). Nothing is sent if the batch is invalid or a record is
        over ``max_event_size``. If an acknowledgement fails,
        ``StoreUnavailableError`` is raised and the index does not advance; a
        prefix of the batch may be on the topic (adopted before the next append).
        """
        self._check_ready()
        events = list(events)
        if not events or not isinstance(events[0], Event) or not _routable(events[0]):
            self._refuse_bad(events, expected_sequence)  # before routing by the identity
        stream = events[0].stream
        lock = self._locks.get(stream)
        if lock is None:
            lock = self._locks[stream] = asyncio.Lock()
        async with lock:
            head = self._index.heads.get(stream)
            if head is None:
                # a new stream is routed by its identity and parent: a bad batch is
                # refused (typed, nothing sent) before they pick its partition
                self._refuse_bad(events, expected_sequence)
                home = self._home_of_new(events[0])
            else:
                home = head.partition
            if self.claims_required and home not in self._claims:
                raise self._not_claimed(home)
            if home in self._dirty_partitions or (self._claims and home not in self._claims):
                # an earlier append to this partition failed: adopt what landed first;
                # or an owner of other partitions writes here (a sub-app's stream whose
                # parent moved to this owner): read what the partition holds first
                await self._reconcile(home)
                head = self._index.heads.get(stream)
            stream, sealed, _ = prepare_append(
                events,
                expected_sequence,
                head.last_hash if head is not None else "",
                codec=self.codec,
                key=self.hmac_key,
                max_size=self.max_event_size,
            )
            actual = head.last_seq if head is not None else -1
            if actual != expected_sequence:
                raise ConcurrencyError(stream, expected_sequence, actual)
            partition = head.partition if head is not None else home
            claim = self._claims.get(partition)
            records = [encode_record(event, self.codec, fence=claim) for event in sealed]
            for event, rec in zip(sealed, records, strict=True):
                size = len(rec.value)
                if size > self.max_event_size:
                    raise EventTooLargeError(stream, event.sequence_id, size, self.max_event_size)
            metas = await self._produce(partition, records)
            first, last = metas[0].offset, metas[-1].offset
            contiguous = last - first + 1 == len(metas)  # nobody else's records in between
            if claim is not None and not (
                contiguous and self._index.checkpoint.get(partition, 0) == first
            ):
                # Something we have not read lies before our records: maybe a newer
                # fence. Read the partition through our records and let the fence rule
                # decide whether they count.
                return await self._verify_claimed(stream, partition, claim, sealed, metas)
            if head is None:
                head = self._index.heads.get(stream) or self._index.new_head(stream, partition)
            out = []
            for event, meta in zip(sealed, metas, strict=True):
                if event.sequence_id > head.last_seq:
                    self._index.advance(stream, head, event, meta.offset)
                out.append(Recorded(kafka_position(partition, meta.offset), event))
            if contiguous and self._index.checkpoint.get(partition, 0) == first:
                self._index.checkpoint[partition] = last + 1
            if len(self._index.pending) >= FLUSH_ROWS:
                await self._index.flush()
            return out

    async def _verify_claimed(
        self,
        stream: StreamId,
        partition: int,
        claim: Fence,
        sealed: Sequence[Event],
        metas: Sequence[Any],
    ) -> list[Recorded]:
        """After an append to a claimed partition that was not contiguous with the index."""
        await self._reconcile(partition)
        head = self._index.heads.get(stream)
        kept: dict[int, int] = {}
        if head is not None:
            kept = await self._index.offsets_of(head, [e.sequence_id for e in sealed])
        if all(kept.get(e.sequence_id) == m.offset for e, m in zip(sealed, metas, strict=True)):
            return [
                Recorded(kafka_position(partition, m.offset), e)
                for e, m in zip(sealed, metas, strict=True)
            ]
        current = self._index.current_fence(partition)
        if current != claim:
            self._give_up(partition)
            raise FencedError(partition, claim, current)
        actual = -1 if head is None else head.last_seq
        raise ConcurrencyError(stream, sealed[0].sequence_id - 1, actual)

    # ------------------------------------------------------------------ fences

    @property
    def claims(self) -> dict[int, Fence]:
        """The partitions this store holds a claim on, and their fences."""
        return dict(self._claims)

    async def claim(self, partition: int, owner: str, *, attempts: int = 5) -> Fence:
        """Open a new epoch in ``partition`` for ``owner``; this store's appends there carry it.

        Writes a fence record one epoch above the newest the partition holds,
        reads the partition through it and checks it is the newest (a claimant
        racing for the same epoch loses to the first record; this one retries).
        Every event before the fence record counts; any later record of an
        older epoch is skipped by every reader.
        """
        self._check_ready()
        if not owner:
            raise UsageError(f"claim: owner must be a non-empty string, got {owner!r}")
        if not 0 <= partition < len(self._tps):
            raise UsageError(f"claim: topic {self.topic!r} has no partition {partition}")
        for _ in range(attempts):
            await self._reconcile(partition)
            current = self._index.current_fence(partition)
            fence = Fence((current.epoch if current else 0) + 1, owner)
            await self._produce(partition, [encode_fence(fence)])
            await self._reconcile(partition)
            if self._index.current_fence(partition) == fence:
                self._claims[partition] = fence
                self._lost.pop(partition, None)
                return fence
        raise StoreError(
            f"could not claim {self.topic}[{partition}] in {attempts} attempts: "
            "other claimants keep opening newer epochs"
        )

    def release(self, partition: int) -> None:
        """Stop writing with this store's fence in ``partition`` (its epoch stays open)."""
        self._give_up(partition)

    def _give_up(self, partition: int) -> None:
        claim = self._claims.pop(partition, None)
        if claim is not None:
            self._lost[partition] = claim

    async def forget_partition(self, partition: int) -> None:
        """Drop the claim and everything the index knows of ``partition``.

        A worker that lost a partition calls this: its index may hold its own
        late records as accepted; the next ``refresh`` or ``claim`` re-reads
        the partition from the topic under the fence rule.
        """
        self._check_ready()
        self._give_up(partition)
        async with self._index_lock:
            await self._index.forget_partition(partition)
            self._ahead = []
            self._dirty_partitions.add(partition)

    async def _produce(self, partition: int, records: Sequence[Any]) -> list[Any]:
        producer = self._producer
        assert producer is not None
        futures = []
        acks: asyncio.Future[list[Any]] | None = None
        try:
            async with asyncio.timeout(self.request_timeout_ms / 1000 + 1):
                for rec in records:
                    futures.append(
                        await producer.send(
                            self.topic,
                            value=rec.value,
                            key=rec.key,
                            partition=partition,
                            headers=rec.headers,
                        )
                    )
                # shielded: if this append is cancelled, its records are still sent;
                # the next append here waits for them (``_settle``) before reading
                acks = asyncio.gather(*futures, return_exceptions=True)
                metas = list(await asyncio.shield(acks))
                for meta in metas:
                    if isinstance(meta, BaseException):
                        raise meta
                return metas
        except (KafkaError, OSError, TimeoutError) as exc:
            self._dirty_partitions.add(partition)
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" warning
            if _too_large(exc):
                raise StoreError(
                    f"the broker refused a record of {self.topic}[{partition}] as too "
                    f"large: {exc!r}; lower max_event_size to the broker's limit"
                ) from exc
            raise StoreUnavailableError(
                f"Kafka did not acknowledge the batch on {self.topic}[{partition}]: {exc!r}; "
                "a prefix of it may be on the topic"
            ) from exc
        except BaseException:
            self._dirty_partitions.add(partition)
            if acks is None and futures:
                acks = asyncio.gather(*futures, return_exceptions=True)
            if acks is not None and not acks.done():
                self._in_flight.setdefault(partition, []).append(acks)
            raise

    async def _settle(self, partition: int) -> None:
        """Wait (bounded) until the records of cancelled appends to ``partition`` are
        acknowledged or failed, so a read of the partition sees those that landed.

        Without it a run cancelled while its event was in flight (the engine then
        records ``cancelled`` at the same sequence) read the partition before that
        event landed, and wrote a second record at the sequence.
        """
        pending = self._in_flight.get(partition)
        while pending:
            with contextlib.suppress(Exception):  # failed or timed out: the read tells
                async with asyncio.timeout(self.request_timeout_ms / 1000 + 1):
                    await asyncio.shield(pending[0])
            pending.pop(0)
        self._in_flight.pop(partition, None)

    async def _reconcile(self, partition: int) -> None:
        """After a failed append: read what landed in ``partition`` and adopt it."""
        await self._settle(partition)
        async with self._index_lock:
            ends = await self._end_offsets()
            await self._catch_up_partition(partition, ends[partition])
            self._dirty_partitions.discard(partition)

    # ------------------------------------------------------------------ reading

    async def last_sequence(self, partition_key: str, app_id: str) -> int:
        check_stream_args(partition_key, app_id)
        self._check_ready()
        head = self._index.heads.get(StreamId(partition_key, app_id))
        return -1 if head is None else head.last_seq

    async def head(self, partition_key: str, app_id: str) -> tuple[int, str]:
        """``(last sequence id, last hash)`` of a stream from the index (``(-1, "")``)."""
        check_stream_args(partition_key, app_id)
        self._check_ready()
        head = self._index.heads.get(StreamId(partition_key, app_id))
        return (-1, "") if head is None else (head.last_seq, head.last_hash)

    async def position_of(self, partition_key: str, app_id: str, sequence_id: int) -> int | None:
        """``kafka_position(partition, offset)`` of one event, from the index."""
        located = await self.locate(partition_key, app_id, sequence_id)
        return None if located is None else kafka_position(*located)

    async def locate(
        self, partition_key: str, app_id: str, sequence_id: int
    ) -> tuple[int, int] | None:
        """``(kafka partition, offset)`` of one event, from the index; ``None`` if unknown.

        A snapshot records these so a reader without this index can seek there.
        """
        check_stream_args(partition_key, app_id)
        check_count("sequence_id", sequence_id)
        self._check_ready()
        head = self._index.heads.get(StreamId(partition_key, app_id))
        if head is None or not 0 <= sequence_id <= head.last_seq:
            return None
        offset = (await self._index.offsets_of(head, [sequence_id])).get(sequence_id)
        return None if offset is None else (head.partition, offset)

    async def streams(self, partition_key: str | None = None) -> list[StreamId]:
        check_partition(partition_key, optional=True)
        self._check_ready()
        return [
            s
            for s in self._index.order
            if partition_key is None or s.partition_key == partition_key
        ]

    async def read(
        self,
        partition_key: str,
        app_id: str,
        *,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        after_position: int | None = None,
        from_offset: int | None = None,
    ) -> list[Event]:
        """Events of one stream; seeks to the offset of ``from_sequence`` and filters by key.

        ``from_offset`` (for example one past a known record's offset) overrides
        the index's start: any offset at or before the record of
        ``from_sequence`` in the stream's partition. Without the stream in the
        index, a read with ``from_offset`` scans to the current end of the partition.
        """
        check_read(partition_key, app_id, from_sequence, to_sequence, after_position)
        check_count("from_offset", from_offset, optional=True)
        self._check_ready()
        stream = StreamId(partition_key, app_id)
        key = record_key(partition_key, app_id)
        if after_position is not None and from_offset is None:
            partition, offset = split_position(after_position)
            if partition == self._partition_for(key):
                from_offset = offset + 1
        start_seq = max(from_sequence, 0)
        head = self._index.heads.get(stream)
        if to_sequence is not None and to_sequence < start_seq:
            return []
        upper: int | None
        fetch_upper: int | None
        if head is not None:
            if start_seq > head.last_seq:
                return []
            upper = head.last_seq if to_sequence is None else min(to_sequence, head.last_seq)
            ahead = self._ahead  # served by the last read's read-ahead?
            if ahead and ahead[0].stream == stream and ahead[0].sequence_id <= start_seq <= upper:
                first = ahead[0].sequence_id
                if ahead[-1].sequence_id >= upper:
                    return ahead[start_seq - first : upper - first + 1]
            fetch_upper = upper
            if upper - start_seq < _READ_AHEAD_BELOW and upper < head.last_seq:
                # A short read before the head (a snapshot's hash check): the rest
                # of the stream is usually read next, and comes in the same fetch.
                fetch_upper = min(head.last_seq, upper + _READ_AHEAD)
            wanted = [fetch_upper] if from_offset is not None else [start_seq, fetch_upper]
            offsets = await self._index.offsets_of(head, wanted)
            if fetch_upper not in offsets or (from_offset is None and start_seq not in offsets):
                raise StoreCorruptError(f"the Kafka index has no offsets for {stream}")
            partition = head.partition
            start = offsets[start_seq] if from_offset is None else from_offset
            stop = offsets[fetch_upper] + 1
        else:
            if from_offset is None:
                return []
            partition = self._partition_for(key)
            upper = fetch_upper = to_sequence
            stop = (await self._end_offsets())[partition]
            start = from_offset
        out: list[Event] = []
        skipped = self._index.skipped
        fetch = self._fetch(partition, start, stop, follow=head is None)
        async with self._read_lock, aclosing(fetch) as batches:
            async for batch in batches:
                for record in batch:
                    if record.key != key or (partition, record.offset) in skipped:
                        continue
                    fence = fence_of(record.headers)
                    if fence is not None and fence != self._index.fence_at(
                        partition, record.offset
                    ):
                        continue
                    try:
                        event = decode_record(record.key, record.value, record.headers)
                    except EncodingError:
                        continue
                    seq = event.sequence_id
                    if out:
                        if seq != out[-1].sequence_id + 1 or event.prev_hash != out[-1].hash:
                            continue  # a duplicate or a record off the chain
                    elif seq != start_seq:
                        continue
                    out.append(event)
                    if fetch_upper is not None and seq >= fetch_upper:
                        break
                else:
                    continue
                break
        if upper is None or not out or out[-1].sequence_id <= upper:
            return out
        keep = upper - start_seq + 1
        self._ahead = out[keep:]
        return out[:keep]

    async def read_all(self, *, from_position: int = 0, limit: int | None = None) -> list[Recorded]:
        """Every kept event, ordered by ``(partition, offset)``, from ``from_position``.

        Catches the index up first, so the answer includes other writers' events.
        """
        check_page(from_position, limit)
        self._check_ready()
        await self.refresh()
        first_partition, first_offset = split_position(from_position)
        cursors = {
            tp.partition: (first_offset if tp.partition == first_partition else 0)
            for tp in self._tps
            if tp.partition >= first_partition
        }
        return await self._scan(cursors, limit)

    async def _scan(self, cursors: dict[int, int], limit: int | None) -> list[Recorded]:
        """Kept events of each partition from its cursor to the index's checkpoint.

        Advances ``cursors`` past what it returns.
        """
        out: list[Recorded] = []
        async with self._read_lock:
            for partition in sorted(cursors):
                stop = self._index.checkpoint.get(partition, 0)
                async with aclosing(self._fetch(partition, cursors[partition], stop)) as batches:
                    async for batch in batches:
                        for record in batch:
                            offset = record.offset
                            if (partition, offset) in self._index.skipped:
                                continue
                            try:
                                event = decode_record(record.key, record.value, record.headers)
                            except EncodingError:
                                continue
                            out.append(Recorded(kafka_position(partition, offset), event))
                            cursors[partition] = offset + 1
                            if limit is not None and len(out) >= limit:
                                return out
                        cursors[partition] = max(cursors[partition], batch[-1].offset + 1)
        return out

    async def subscribe(
        self,
        *,
        from_position: int = 0,
        poll_interval: float = 0.05,
        from_offsets: Mapping[int, int] | None = None,
    ) -> AsyncIterator[Recorded]:
        """Catch up, then tail the topic (``refresh`` every ``poll_interval`` when idle).

        On a topic with several partitions a position is not a cursor across
        them: pass ``from_offsets={partition: next_offset}`` (partitions left out
        start at 0) or ``from_position=0``.
        """
        check_page(from_position, None)
        self._check_ready()
        if from_offsets is not None:
            cursors = {tp.partition: int(from_offsets.get(tp.partition, 0)) for tp in self._tps}
        elif from_position > 0 and len(self._tps) > 1:
            raise UsageError(
                f"topic {self.topic!r} has {len(self._tps)} partitions: subscribe takes "
                "from_offsets={partition: offset} there, not from_position"
            )
        else:
            _, offset = split_position(from_position)
            cursors = {0: offset}
        while True:
            self._check_open()
            await self.refresh()
            batch = await self._scan(cursors, _FETCH_RECORDS)
            for rec in batch:
                yield rec
            if not batch:
                await asyncio.sleep(poll_interval)


def _too_large(exc: BaseException) -> bool:
    return "TooLarge" in type(exc).__name__ or "TooLarge" in repr(exc)


def _routable(event: Event) -> bool:
    """Whether ``event``'s identity makes a record key (both parts str, UTF-8 encodable).

    A bad identity must be named by ``prepare_append`` (the typed error every
    store raises) before the append picks a partition from the key.
    """
    try:
        record_key(event.partition_key, event.app_id)
    except (TypeError, AttributeError, UnicodeEncodeError):
        return False
    return type(event.partition_key) is str and type(event.app_id) is str
