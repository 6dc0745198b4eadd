"""KafkaEventStore against a real Kafka-protocol broker (the ``kafka_bootstrap`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from statelog import eventstore
from statelog.eventstore import (
    ConcurrencyError,
    Event,
    EventTooLargeError,
    InvalidEventError,
    MemoryEventStore,
    Recorded,
    SnapshotStore,
    StoreClosedError,
    StoreUnavailableError,
    StreamId,
    UsageError,
    fold,
    load_state,
    seal,
)
from statelog.eventstore.kafka import KafkaEventStore, encode_record, kafka_position, split_position
from tests.contract.store_contract import StoreContract
from tests.ops_support import v2, writes_of

MakeTopic = Callable[..., Awaitable[str]]


def ev(app: str, seq: int, pk: str = "pk", **writes: Any) -> Event:
    return v2(
        partition_key=pk,
        app_id=app,
        sequence_id=seq,
        kind="action_completed",
        action="step",
        writes=writes or {"n": seq},
    )


def batch(app: str, start: int, count: int, pk: str = "pk") -> list[Event]:
    return [ev(app, seq, pk) for seq in range(start, start + count)]


@pytest.fixture
async def topic(make_topic: MakeTopic) -> str:
    return await make_topic()


@pytest.fixture
async def store(kafka_bootstrap: str, topic: str, tmp_path: Path) -> AsyncIterator[KafkaEventStore]:
    async with KafkaEventStore(
        kafka_bootstrap, topic, index_path=tmp_path / "index.db", request_timeout_ms=10_000
    ) as s:
        yield s


async def raw_records(bootstrap: str, topic: str, partition: int = 0) -> list[Any]:
    """Every record of one partition, read with a plain aiokafka consumer."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        out: list[Any] = []
        idle = 0
        while idle < 3:
            data = await consumer.getmany(tp, timeout_ms=200)
            records = data.get(tp, [])
            idle = 0 if records else idle + 1
            out.extend(records)
        return out
    finally:
        await consumer.stop()


async def produce_raw(bootstrap: str, topic: str, records: list[tuple[Any, ...]]) -> None:
    """Produce ``(key, value, headers)`` records with a plain producer, partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=v, key=k, headers=h, partition=0)
            for k, v, h in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- basics


async def test_append_read_and_positions(store: KafkaEventStore) -> None:
    recorded = await store.append(batch("a", 0, 3), expected_sequence=-1)
    assert [r.position for r in recorded] == [1, 2, 3]  # one partition: offset + 1
    recorded += await store.append(batch("b", 0, 2), expected_sequence=-1)
    recorded += await store.append(batch("a", 3, 2), expected_sequence=2)
    assert await store.last_sequence("pk", "a") == 4
    assert await store.last_sequence("pk", "b") == 1
    assert await store.last_sequence("pk", "nope") == -1
    events = await store.read("pk", "a")
    assert [e.sequence_id for e in events] == [0, 1, 2, 3, 4]
    assert events == [r.event for r in recorded if r.event.app_id == "a"]
    assert [e.sequence_id for e in await store.read("pk", "a", from_sequence=2, to_sequence=3)] == [
        2,
        3,
    ]
    assert await store.read("pk", "a", from_sequence=9) == []
    assert await store.read("pk", "a", from_sequence=3, to_sequence=1) == []
    assert await store.streams() == [StreamId("pk", "a"), StreamId("pk", "b")]
    assert await store.verify() is None
    assert fold(events) == {"n": 4}
    everything = await store.read_all()
    assert everything == recorded
    assert await store.read_all(from_position=4, limit=2) == recorded[3:5]
    assert await store.head("pk", "a") == (4, events[-1].hash)
    assert await store.locate("pk", "a", 3) == (0, 5)
    assert await store.locate("pk", "a", 7) is None


async def test_a_writer_that_is_behind_gets_concurrency_error(
    store: KafkaEventStore, kafka_bootstrap: str, topic: str
) -> None:
    await store.append(batch("a", 0, 2), expected_sequence=-1)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(batch("a", 1, 1), expected_sequence=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    with pytest.raises(InvalidEventError):
        await store.append([], expected_sequence=-1)
    with pytest.raises(InvalidEventError):
        await store.append(batch("a", 5, 1), expected_sequence=1)  # a gap
    assert len(await raw_records(kafka_bootstrap, topic)) == 2


async def test_concurrent_appends_to_one_stream_do_not_fork(store: KafkaEventStore) -> None:
    results = await asyncio.gather(
        *(store.append(batch("a", 0, 1), expected_sequence=-1) for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, list) for r in results) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if not isinstance(r, list))
    assert len(await store.read("pk", "a")) == 1


async def test_msgpack_and_hmac(kafka_bootstrap: str, topic: str) -> None:
    async with KafkaEventStore(kafka_bootstrap, topic, codec="msgpack", hmac_key=b"k") as s:
        await s.append(batch("a", 0, 3), expected_sequence=-1)
        assert await s.verify() is None
        events = await s.read("pk", "a")
    async with KafkaEventStore(kafka_bootstrap, topic, hmac_key=b"other") as s:
        assert await s.read("pk", "a") == events  # the chain is kept; the key differs
        broken = await s.verify()
        assert broken is not None and broken.sequence_id == 0


# --------------------------------------------------------------------------- restart


@pytest.mark.parametrize("keep_index", [True, False])
async def test_a_restarted_writer_recovers_heads_from_the_topic(
    kafka_bootstrap: str, topic: str, tmp_path: Path, keep_index: bool
) -> None:
    index = tmp_path / "index.db"
    async with KafkaEventStore(kafka_bootstrap, topic, index_path=index) as s:
        await s.append(batch("a", 0, 3), expected_sequence=-1)
        await s.append(batch("b", 0, 1, pk="other/pk"), expected_sequence=-1)
        expected = await s.read("pk", "a")
    # another process appends while the first is down
    async with KafkaEventStore(kafka_bootstrap, topic) as other:
        await other.append(batch("a", 3, 2), expected_sequence=2)
        expected += await other.read("pk", "a", from_sequence=3)
    if not keep_index:
        for path in tmp_path.glob("index.db*"):
            path.unlink()
    async with KafkaEventStore(kafka_bootstrap, topic, index_path=index) as s:
        assert await s.last_sequence("pk", "a") == 4
        assert await s.last_sequence("other/pk", "b") == 0
        assert await s.read("pk", "a") == expected
        with pytest.raises(ConcurrencyError):
            await s.append(batch("a", 3, 1), expected_sequence=2)
        await s.append(batch("a", 5, 1), expected_sequence=4)
        assert await s.verify() is None


async def test_an_index_of_another_topic_is_refused(
    kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
) -> None:
    index = tmp_path / "index.db"
    first, second = await make_topic(), await make_topic()
    async with KafkaEventStore(kafka_bootstrap, first, index_path=index):
        pass
    with pytest.raises(eventstore.StoreCorruptError, match="belongs to topic"):
        await KafkaEventStore(kafka_bootstrap, second, index_path=index).connect()


async def test_refresh_sees_other_writers(kafka_bootstrap: str, topic: str) -> None:
    async with (
        KafkaEventStore(kafka_bootstrap, topic) as reader,
        KafkaEventStore(kafka_bootstrap, topic) as writer,
    ):
        await writer.append(batch("a", 0, 2), expected_sequence=-1)
        assert await reader.last_sequence("pk", "a") == -1
        assert await reader.refresh() == 2
        assert await reader.last_sequence("pk", "a") == 1
        assert await reader.refresh() == 0


# --------------------------------------------------------------------------- bad input


async def test_unreachable_bootstrap_raises_store_unavailable(topic: str) -> None:
    store = KafkaEventStore("127.0.0.1:1", topic, connect_timeout=2.0)
    async with asyncio.timeout(30):  # a guard against hanging, not a timing assertion
        with pytest.raises(StoreUnavailableError, match="cannot reach Kafka"):
            await store.connect()
        with pytest.raises(StoreUnavailableError):  # connect may be retried
            await store.connect()
    await store.aclose()


async def test_a_missing_topic_raises_store_unavailable(kafka_bootstrap: str) -> None:
    missing = f"statelog-no-such-topic-{uuid.uuid4().hex[:8]}"
    store = KafkaEventStore(kafka_bootstrap, missing, connect_timeout=5.0)
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await store.connect()


async def test_an_event_over_the_size_limit_publishes_nothing(
    kafka_bootstrap: str, topic: str
) -> None:
    async with KafkaEventStore(kafka_bootstrap, topic, max_event_size=2_000) as s:
        events = batch("a", 0, 3)
        events[1] = ev("a", 1, blob="x" * 5_000)
        with pytest.raises(EventTooLargeError) as caught:
            await s.append(events, expected_sequence=-1)
        assert caught.value.sequence_id == 1
        assert caught.value.limit == 2_000
        assert "nothing was written" in str(caught.value)
        assert await s.last_sequence("pk", "a") == -1
        await s.append(batch("b", 0, 1), expected_sequence=-1)
    records = await raw_records(kafka_bootstrap, topic)
    assert [r.key for r in records] == [b"pk/b"]


async def test_use_before_connect_and_after_close(kafka_bootstrap: str, topic: str) -> None:
    store = KafkaEventStore(kafka_bootstrap, topic)
    with pytest.raises(eventstore.StoreError, match="not connected"):
        await store.last_sequence("pk", "a")
    await store.connect()
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.append(batch("a", 0, 1), expected_sequence=-1)


async def test_broker_down_during_append_raises_store_unavailable(
    restartable_broker: Any, tmp_path: Path
) -> None:
    from tests.kafka_broker import create_topic

    topic = await create_topic(restartable_broker.bootstrap)
    async with KafkaEventStore(
        restartable_broker.bootstrap, topic, request_timeout_ms=2_000, connect_timeout=5
    ) as s:
        await s.append(batch("a", 0, 1), expected_sequence=-1)
        restartable_broker.stop()
        async with asyncio.timeout(60):
            with pytest.raises(StoreUnavailableError):
                await s.append(batch("a", 1, 1), expected_sequence=0)
        assert await s.last_sequence("pk", "a") == 0


async def test_a_cancelled_append_is_adopted_before_the_next_one(store: KafkaEventStore) -> None:
    """Cancelled after its records were queued, an append may still land on the topic."""
    await store.append(batch("a", 0, 1), expected_sequence=-1)
    outcomes = set()
    for attempt in range(6):
        last = await store.last_sequence("pk", "a")
        task = asyncio.create_task(store.append(batch("a", last + 1, 3), expected_sequence=last))
        for _ in range(attempt):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # let whatever was sent land
        try:
            await store.append(batch("a", last + 1, 1), expected_sequence=last)
            outcomes.add("nothing landed")
        except ConcurrencyError as exc:
            assert exc.actual > last  # the landed records were adopted first
            outcomes.add("adopted")
        events = await store.read("pk", "a")
        assert [e.sequence_id for e in events] == list(range(len(events)))
        assert await store.last_sequence("pk", "a") == len(events) - 1
    assert await store.verify() is None
    assert "adopted" in outcomes  # cancelled after sending, the batch landed and was adopted
    # the first append of a new stream, too (its partition is known only by its key)
    adopted = 0
    for attempt in range(6):
        task = asyncio.create_task(store.append(batch(f"new{attempt}", 0, 2), expected_sequence=-1))
        for _ in range(attempt):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        try:
            await store.append(batch(f"new{attempt}", 0, 1), expected_sequence=-1)
        except ConcurrencyError:
            adopted += 1
        assert await store.verify() is None
    assert adopted


# --------------------------------------------------------------------------- what readers keep


async def test_duplicates_foreign_and_unchained_records_are_skipped(
    store: KafkaEventStore, kafka_bootstrap: str, topic: str, caplog: Any
) -> None:
    recorded = await store.append(batch("a", 0, 2), expected_sequence=-1)
    sealed = [r.event for r in recorded]
    dup = encode_record(sealed[1])
    forged = encode_record(seal([ev("a", 2)], "not-the-head-hash")[0])
    # a prefix of a batch that was never acknowledged, as a failed append leaves it
    prefix = encode_record(seal([ev("a", 2, n=20)], sealed[1].hash)[0])
    retry = encode_record(seal([ev("a", 2, n=99)], sealed[1].hash)[0])
    await produce_raw(
        kafka_bootstrap,
        topic,
        [
            (b"not a statelog key", b"{}", []),
            tuple(dup),
            tuple(forged),
            tuple(prefix),
            tuple(retry),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="eventstore.kafka"):
        assert await store.refresh() == 1
    assert "foreign record" in caplog.text
    assert "does not chain" in caplog.text
    events = await store.read("pk", "a")
    assert [writes_of(e)["n"] for e in events] == [0, 1, 20]  # the first chained copy wins
    assert [r.event for r in await store.read_all()] == events
    # the writer adopted the landed prefix: a stale retry is refused
    with pytest.raises(ConcurrencyError):
        await store.append([ev("a", 2)], expected_sequence=1)
    await store.append([ev("a", 3)], expected_sequence=2)
    assert await store.verify() is None


async def test_read_from_a_snapshot_offset(store: KafkaEventStore) -> None:
    await store.append(batch("a", 0, 10), expected_sequence=-1)
    await store.append(batch("b", 0, 10), expected_sequence=-1)
    await store.append(batch("a", 10, 5), expected_sequence=9)
    where = await store.locate("pk", "a", 11)
    assert where is not None
    partition, offset = where
    assert split_position(kafka_position(partition, offset)) == where
    tail = await store.read("pk", "a", from_sequence=12, from_offset=offset + 1)
    assert [e.sequence_id for e in tail] == [12, 13, 14]
    assert tail == await store.read("pk", "a", from_sequence=12)


async def test_a_short_read_reads_ahead_for_the_next_one(store: KafkaEventStore) -> None:
    await store.append(batch("a", 0, 50), expected_sequence=-1)
    await store.append(batch("b", 0, 50), expected_sequence=-1)
    full = await store.read("pk", "a")
    assert await store.read("pk", "a", from_sequence=10, to_sequence=10) == full[10:11]
    assert await store.read("pk", "a", from_sequence=11) == full[11:]  # from the read-ahead
    assert await store.read("pk", "a", from_sequence=12, to_sequence=20) == full[12:21]
    assert [e.app_id for e in await store.read("pk", "b", from_sequence=11)] == ["b"] * 39
    await store.read("pk", "a", from_sequence=10, to_sequence=10)
    await store.append(batch("a", 50, 5), expected_sequence=49)
    again = await store.read("pk", "a", from_sequence=11)
    assert [e.sequence_id for e in again] == list(range(11, 55))
    assert again[:39] == full[11:]


async def test_every_range_and_every_snapshot_point_agree_with_a_full_read(
    store: KafkaEventStore,
) -> None:
    import random

    rng = random.Random(4)
    events = _stepper("law")[:80]
    start = 0
    while start < len(events):  # uneven batches, interleaved with another stream
        size = rng.randint(1, 9)
        await store.append(events[start : start + size], expected_sequence=start - 1)
        await store.append([ev(f"noise{start}", 0)], expected_sequence=-1)
        start += size
    full = await store.read("tenant", "law")
    assert [writes_of(e) for e in full] == [writes_of(e) for e in events]
    for _ in range(60):
        lo, hi = sorted(rng.sample(range(-2, 85), 2))
        got = await store.read("tenant", "law", from_sequence=lo, to_sequence=hi)
        assert got == full[max(lo, 0) : hi + 1], (lo, hi)
    for seq in range(len(full)):  # snapshot at seq + replay == full replay
        where = await store.locate("tenant", "law", seq)
        assert where is not None
        tail = await store.read("tenant", "law", from_sequence=seq + 1, from_offset=where[1] + 1)
        assert fold(tail, fold(full[: seq + 1])) == fold(full)


# --------------------------------------------------------------------------- partitions


async def test_several_partitions(kafka_bootstrap: str, make_topic: MakeTopic) -> None:
    topic = await make_topic(partitions=3)
    apps = [f"app-{i}" for i in range(12)]
    async with KafkaEventStore(kafka_bootstrap, topic) as s:
        assert s.partitions == 3
        for app in apps:
            await s.append(batch(app, 0, 3), expected_sequence=-1)
        parts = {split_position(r.position)[0] for r in await s.read_all()}
        assert len(parts) > 1
        for app in apps:
            assert [e.sequence_id for e in await s.read("pk", app)] == [0, 1, 2]
        everything = await s.read_all()
        assert len(everything) == 36
        assert [r.position for r in everything] == sorted(r.position for r in everything)
        with pytest.raises(UsageError, match="from_offsets"):
            await anext(s.subscribe(from_position=5))
        seen = []
        async for rec in s.subscribe(from_offsets={0: 0}):
            seen.append(rec)
            if len(seen) == 36:
                break
        assert sorted(seen) == everything


async def test_subscribe_catches_up_then_tails(store: KafkaEventStore) -> None:
    await store.append(batch("a", 0, 3), expected_sequence=-1)
    seen: list[Recorded] = []

    async def consume() -> None:
        async for rec in store.subscribe(from_position=2, poll_interval=0.01):
            seen.append(rec)
            if len(seen) == 4:
                return

    task = asyncio.create_task(consume())
    while len(seen) < 2:
        await asyncio.sleep(0.01)
    await store.append(batch("a", 3, 2), expected_sequence=2)
    await asyncio.wait_for(task, 30)
    assert [r.position for r in seen] == [2, 3, 4, 5]
    assert [r.event.sequence_id for r in seen] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- resume


def _stepper(app: str) -> list[Event]:
    """A hand-made workflow: counters, a rename and a delete every so often."""
    out = []
    for seq in range(200):
        writes: dict[str, Any] = {"n": seq, f"k{seq % 7}": seq * 3}
        deletes = [f"k{(seq + 3) % 7}"] if seq % 5 == 0 else []
        out.append(
            v2(
                partition_key="tenant",
                app_id=app,
                sequence_id=seq,
                kind="action_completed",
                action="step",
                writes=writes,
                deletes=deletes,
            )
        )
    return out


async def test_resume_from_snapshot_and_seek_equals_the_sqlite_run(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    from statelog.engine import ApplicationBuilder, State, action, default, when

    @action(reads=["n"], writes=["n", "log"])
    def count(state: State) -> State:
        return state.update(n=state["n"] + 1, log=[*state.get("log", []), state["n"]][-5:])

    @action(reads=["n"], writes=["done"])
    def finish(state: State) -> State:
        return state.update(done=True)

    def builder(store: Any, snapshots: SnapshotStore) -> ApplicationBuilder:
        return (
            ApplicationBuilder()
            .with_actions(count=count, finish=finish)
            .with_transitions(("count", "finish", when(n=60)), ("count", "count", default))
            .with_identifiers(app_id="wf", partition_key="tenant")
            .with_store(store, snapshots=snapshots)
            .with_snapshots(every=16)
        )

    sqlite_cls = getattr(eventstore, "SQLiteEventStore", None)
    baseline_store: Any = (
        sqlite_cls(tmp_path / "log.db") if sqlite_cls is not None else MemoryEventStore()
    )
    if hasattr(baseline_store, "connect"):
        await baseline_store.connect()
    states = []
    for name, make in [
        ("sqlite", lambda: baseline_store),
        ("kafka", lambda: KafkaEventStore(kafka_bootstrap, topic, index_path=tmp_path / "i.db")),
    ]:
        async with SnapshotStore(tmp_path / f"snap-{name}.db") as snapshots:
            store = make()
            if isinstance(store, KafkaEventStore):
                await store.connect()
            app = await builder(store, snapshots).with_state(n=0).with_entrypoint("count").abuild()
            async with app:
                await app.arun(halt_after=["count"])  # one step, then stop
                for _ in range(40):
                    await app.astep()
            if isinstance(store, KafkaEventStore):
                await store.aclose()
                for path in tmp_path.glob("i.db*"):
                    path.unlink()  # a writer on a new machine: index rebuilt from the topic
                store = make()
                await store.connect()
            resumed = (
                await builder(store, snapshots).initialize_from(default_entrypoint="count").abuild()
            )
            async with resumed:
                assert resumed.state == app.state
                await resumed.arun()
                states.append((resumed.state.get_all(), resumed.sequence_id))
            # the same state by hand: latest snapshot + seek to the event after it
            snap = await snapshots.load("tenant", "wf", store=store)
            assert snap is not None
            if isinstance(store, KafkaEventStore):
                # the engine recorded where the snapshot's event sits on the topic
                where = await store.locate("tenant", "wf", snap.sequence_id)
                assert where is not None
                assert snap.position == kafka_position(*where)
                tail = await store.read(
                    "tenant",
                    "wf",
                    from_sequence=snap.sequence_id + 1,
                    after_position=snap.position,
                )
            else:
                tail = await store.read("tenant", "wf", from_sequence=snap.sequence_id + 1)
            assert fold(tail, snap.state) == states[-1][0]
            assert await load_state(store, snapshots, "tenant", "wf") == (
                states[-1][0],
                states[-1][1],
            )
            await store.aclose()
    assert states[0] == states[1]
    assert states[0][0]["done"] is True


async def test_hand_written_events_fold_the_same_on_kafka_and_memory(
    store: KafkaEventStore, tmp_path: Path
) -> None:
    memory = MemoryEventStore()
    events = _stepper("x")
    for chunk in range(0, 200, 25):
        await store.append(events[chunk : chunk + 25], expected_sequence=chunk - 1)
        await memory.append(events[chunk : chunk + 25], expected_sequence=chunk - 1)
    kafka_events = await store.read("tenant", "x")
    assert kafka_events == await memory.read("tenant", "x")
    async with SnapshotStore(tmp_path / "snap.db") as snapshots:
        state = fold(kafka_events[:150])
        where = await store.locate("tenant", "x", 149)
        assert where is not None
        await snapshots.save(
            eventstore.Snapshot(
                partition_key="tenant",
                app_id="x",
                sequence_id=149,
                state=state,
                position=kafka_position(*where),
                event_hash=kafka_events[149].hash,
            )
        )
        snap = await snapshots.load("tenant", "x", store=store)
        assert snap is not None and snap.position == kafka_position(*where)
        tail = await store.read("tenant", "x", from_sequence=150, after_position=snap.position)
        assert fold(tail, snap.state) == fold(await memory.read("tenant", "x"))


# --------------------------------------------------------------------------- the contract


class TestKafkaEventStoreContract(StoreContract):
    """The shared suite on a fresh topic per test (one topic per ``tmp_path``).

    ``supports_cross_process`` is off: Kafka has no conditional append, so two
    stores on one topic do not see each other's appends until ``refresh()``,
    and two writers racing one stream fork it (the first chained record wins
    for readers). One writer per stream is the caller's job (docs/kafka.md).
    """

    durable = True  # the topic and the index file outlive the store
    supports_cross_process = False

    @pytest.fixture(autouse=True)
    async def _broker(self, kafka_bootstrap: str, make_topic: MakeTopic) -> None:
        self.bootstrap = kafka_bootstrap
        self.make_topic = make_topic
        self.topics: dict[Path, str] = {}

    async def make_store(self, tmp_path: Path, **options: Any) -> eventstore.EventStore:
        if tmp_path not in self.topics:
            self.topics[tmp_path] = await self.make_topic()
        store = KafkaEventStore(
            self.bootstrap,
            self.topics[tmp_path],
            index_path=tmp_path / "kafka-index.db",
            request_timeout_ms=10_000,
            **options,
        )
        return await store.connect()


class TestKafkaEventStoreContractMsgpackNoIndexFile(TestKafkaEventStoreContract):
    """msgpack values, the index in memory: every reopen rebuilds it from the topic."""

    async def make_store(self, tmp_path: Path, **options: Any) -> eventstore.EventStore:
        if tmp_path not in self.topics:
            self.topics[tmp_path] = await self.make_topic()
        store = KafkaEventStore(self.bootstrap, self.topics[tmp_path], codec="msgpack", **options)
        return await store.connect()


# --------------------------------------------------------------------------- kill -9

_WRITER = """
import asyncio, sys
from statelog.eventstore import Event
from statelog.eventstore.kafka import KafkaEventStore

async def main(bootstrap, topic, index):
    async with KafkaEventStore(bootstrap, topic, index_path=index) as store:
        seq = {app: await store.last_sequence("pk", app) for app in ("a", "b", "c")}
        while True:
            for app in seq:
                batch = [
                    Event(partition_key="pk", app_id=app, sequence_id=seq[app] + 1 + i,
                          kind="action_completed",
                          ops=[{"op": "set", "key": "n", "value": seq[app] + 1 + i}])
                    for i in range(5)
                ]
                await store.append(batch, expected_sequence=seq[app])
                seq[app] += 5
            print(seq["a"], flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("round_", range(2))
async def test_a_writer_killed_mid_append_resumes_from_the_topic(
    kafka_bootstrap: str, topic: str, tmp_path: Path, round_: int
) -> None:
    import random
    import signal
    import subprocess
    import sys

    index = tmp_path / "index.db"
    root = Path(__file__).resolve().parents[2]
    for _ in range(2):  # kill it twice: the second run starts from a crashed index
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, kafka_bootstrap, topic, str(index)],
            stdout=subprocess.PIPE,
            cwd=root,
        )
        assert proc.stdout is not None
        try:
            for _ in range(random.randint(3, 40)):
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                assert line, "the writer died before it was killed"
            await asyncio.sleep(random.random() * 0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
    async with (
        KafkaEventStore(kafka_bootstrap, topic, index_path=index) as crashed,
        KafkaEventStore(kafka_bootstrap, topic) as fresh,
    ):
        assert await crashed.verify() is None
        for app in ("a", "b", "c"):
            last = await crashed.last_sequence("pk", app)
            assert last == await fresh.last_sequence("pk", app)
            assert last >= 14
            events = await crashed.read("pk", app)
            assert [e.sequence_id for e in events] == list(range(last + 1))
            assert events == await fresh.read("pk", app)
            await crashed.append([ev(app, last + 1)], expected_sequence=last)
        assert await crashed.verify() is None


# --------------------------------------------------------------------------- a broken index


async def test_a_garbled_index_file_is_refused(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    index = tmp_path / "index.db"
    index.write_bytes(b"this is not a SQLite database, " * 100)
    store = KafkaEventStore(kafka_bootstrap, topic, index_path=index)
    with pytest.raises(eventstore.StoreCorruptError, match="cannot open the Kafka index"):
        await store.connect()
    index.unlink()  # the remedy: the index is a cache of the topic
    async with KafkaEventStore(kafka_bootstrap, topic, index_path=index) as s:
        await s.append(batch("a", 0, 1), expected_sequence=-1)


async def test_an_index_ahead_of_a_recreated_topic_is_refused(
    broker_factory: Any, tmp_path: Path
) -> None:
    from tests.kafka_broker import create_topic

    broker = broker_factory.start()
    topic = await create_topic(broker.bootstrap)
    index = tmp_path / "index.db"
    async with KafkaEventStore(broker.bootstrap, topic, index_path=index) as s:
        await s.append(batch("a", 0, 5), expected_sequence=-1)
    broker = broker_factory.restart(broker)  # memory storage: the topic and its records are gone
    await create_topic(broker.bootstrap, topic)
    with pytest.raises(eventstore.StoreCorruptError, match="recreated or truncated"):
        await KafkaEventStore(broker.bootstrap, topic, index_path=index).connect()
