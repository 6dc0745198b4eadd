"""The outbox relay against a real broker: clean runs, outages, sizes, plain consumers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import confluent_kafka
import pytest
from aiokafka.partitioner import murmur2

from statelog.eventstore import (
    EventTooLargeError,
    MemoryEventStore,
    SQLiteEventStore,
    StoreUnavailableError,
)
from statelog.eventstore.kafka import (
    MemoryRelayCheckpoint,
    OutboxRelay,
    SQLiteRelayCheckpoint,
    decode_record,
    record_key,
)
from tests.kafka_broker import FAST_GROUP, create_topic
from tests.kafka_helpers import append_workload, read_topic
from tests.ops_support import v2

pytestmark = pytest.mark.kafka


def _check_topic(records, recorded, *, exactly_once: bool) -> None:
    """Every event is on the topic, per-stream in order; exactly once if asked."""
    by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
    partitions: dict[tuple[str, str], set[int]] = defaultdict(set)
    for record in records:
        event = decode_record(record.key, record.value, record.headers)
        by_stream[event.stream].append(event.sequence_id)
        partitions[event.stream].add(record.partition)
    expected: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rec in recorded:
        expected[rec.event.stream].append(rec.event.sequence_id)
    assert set(by_stream) == set(expected)
    for stream, seqs in by_stream.items():
        assert len(partitions[stream]) == 1, f"{stream} spread over partitions"
        if exactly_once:
            assert seqs == expected[stream]
        else:
            deduped, last = [], -1
            for seq in seqs:
                assert seq <= last + 1, f"{stream}: {seq} on the topic before {last + 1}"
                if seq > last:
                    deduped.append(seq)
                    last = seq
            assert deduped == expected[stream]


async def test_clean_run_publishes_every_event_once_in_stream_order(kafka_bootstrap, make_topic):
    topic = await make_topic(partitions=3)
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=12, events=15)
    progress = []
    relay = OutboxRelay(
        store,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        batch_size=50,
        on_progress=progress.append,
    )
    async with relay:
        status = await relay.run(until_caught_up=True)
    assert status.position == len(recorded) == status.head
    assert status.lag == 0 and status.published == len(recorded)
    assert progress and progress[-1].position == len(recorded)
    records = await read_topic(kafka_bootstrap, topic, expect=len(recorded))
    assert len(records) == len(recorded)
    _check_topic(records, recorded, exactly_once=True)
    by_hash = {rec.event.hash: rec.event for rec in recorded}
    for record in records:
        # The partition is Kafka's default for the key (murmur2, as the Java client).
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3
        headers = dict(record.headers)
        event = by_hash[headers["hash"].decode()]
        assert record.key == record_key(event.partition_key, event.app_id)
        assert headers["sequence_id"] == str(event.sequence_id).encode()
        assert headers["kind"] == event.kind.encode()
        assert headers["schema_version"] == b"2"
        assert headers["content-type"] == b"application/json"
        assert decode_record(record.key, record.value, record.headers) == event


async def test_a_batch_larger_than_a_producer_batch_is_split_in_order(kafka_bootstrap, make_topic):
    topic = await make_topic(partitions=2)
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=5, events=12)
    relay = OutboxRelay(
        store,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        batch_size=1000,
        max_record_bytes=3000,
        max_batch_bytes=100_000,
        producer_options={"max_batch_size": 3000},  # a few records per record batch
    )
    async with relay:
        status = await relay.run(until_caught_up=True)
    assert status.position == len(recorded)
    assert status.batches > 5
    records = await read_topic(kafka_bootstrap, topic, expect=len(recorded))
    _check_topic(records, recorded, exactly_once=True)


async def test_relay_resumes_from_its_checkpoint_and_tails_new_events(kafka_bootstrap, make_topic):
    topic = await make_topic()
    store = MemoryEventStore()
    first = await append_workload(store, streams=3, events=4)
    checkpoint = MemoryRelayCheckpoint()
    async with OutboxRelay(
        store, bootstrap_servers=kafka_bootstrap, topic=topic, checkpoint=checkpoint
    ) as relay:
        await relay.run(until_caught_up=True)
    assert checkpoint.position == len(first)
    second = await append_workload(store, streams=3, events=6, prefix="later")
    async with OutboxRelay(
        store, bootstrap_servers=kafka_bootstrap, topic=topic, checkpoint=checkpoint
    ) as relay:
        task = asyncio.create_task(relay.run())
        await _until(lambda: relay.position == len(first) + len(second))
        third = await append_workload(store, streams=2, events=2, prefix="live")
        await _until(lambda: relay.position == len(first) + len(second) + len(third))
        relay.stop()
        await task
    records = await read_topic(kafka_bootstrap, topic, expect=len(first + second + third))
    _check_topic(records, first + second + third, exactly_once=True)


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_broker_outage_relay_waits_then_publishes_everything_pending(
    broker_factory, tmp_path
):
    broker = broker_factory.start()
    topic = await create_topic(broker.bootstrap, partitions=2)
    store = await SQLiteEventStore.open(tmp_path / "log.db")
    before = await append_workload(store, streams=4, events=5)
    relay = OutboxRelay(
        store,
        bootstrap_servers=broker.bootstrap,
        topic=topic,
        checkpoint=SQLiteRelayCheckpoint(tmp_path / "log.db", topic),
        batch_size=20,
        request_timeout=2.0,
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    await relay.start()
    task = asyncio.create_task(relay.run())
    try:
        await _until(lambda: relay.position == len(before))
        broker.stop()
        acked_at_outage = relay.position
        # The engine keeps writing to its local log while the broker is down.
        during = await append_workload(store, streams=4, events=5, prefix="outage")
        await _until(
            lambda: relay.status().state == "waiting" and relay.status().lag == len(during)
        )
        assert relay.position == acked_at_outage
        fresh = broker_factory.restart(broker)
        await create_topic(fresh.bootstrap, topic, partitions=2)
        await _until(lambda: relay.position == len(before) + len(during))
    finally:
        relay.stop()
        await task
        await relay.aclose()
        await store.aclose()
    assert relay.status().retries >= 1
    pending = [rec for rec in before + during if rec.position > acked_at_outage]
    records = await read_topic(fresh.bootstrap, topic, expect=len(pending))
    _check_topic(records, pending, exactly_once=True)


async def test_unreachable_bootstrap_raises_store_unavailable_in_time(kafka_bootstrap):
    from tests.kafka_broker import _free_port

    bootstrap = f"127.0.0.1:{_free_port()}"
    relay = OutboxRelay(
        MemoryEventStore(), bootstrap_servers=bootstrap, topic="t", connect_timeout=1.0
    )
    # connect_timeout ends it: without it start() would retry for ever (wait_for is only a
    # guard against that hang, far above the 1 s: a TimeoutError is not the error expected)
    with pytest.raises(StoreUnavailableError, match="cannot reach Kafka"):
        await asyncio.wait_for(relay.start(), 120)
    await relay.aclose()

    from statelog.eventstore.kafka import KafkaSubscription

    sub = KafkaSubscription(bootstrap, "t", "g", connect_timeout=1.0)
    with pytest.raises(StoreUnavailableError):
        await sub.start()
    await sub.aclose()


async def test_record_over_the_size_limit_is_refused_whole(kafka_bootstrap, make_topic):
    topic = await make_topic()
    store = MemoryEventStore()
    small = await append_workload(store, streams=1, events=3)
    big = v2(
        partition_key="tenant/0",
        app_id="app-0",
        sequence_id=3,
        kind="action_completed",
        writes={"blob": "y" * 20_000},
    )
    await store.append([big], expected_sequence=2)
    after = await append_workload(store, streams=1, events=1, prefix="after")
    relay = OutboxRelay(
        store, bootstrap_servers=kafka_bootstrap, topic=topic, max_record_bytes=10_000
    )
    async with relay:
        with pytest.raises(EventTooLargeError, match=r"app-0'#3 encodes to \d+ bytes"):
            await relay.run(until_caught_up=True)
        assert relay.position == len(small)
    records = await read_topic(kafka_bootstrap, topic, expect=len(small))
    assert len(records) == len(small)  # everything before it; nothing of it or after it
    assert all(len(r.value) < 10_000 for r in records)
    assert after  # still only in the local log


async def test_plain_confluent_consumer_decodes_the_wire_format(kafka_bootstrap, make_topic):
    """A consumer with confluent-kafka and json only: no statelog code decodes."""
    topic = await make_topic(partitions=2)
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=5, events=4)
    async with OutboxRelay(store, bootstrap_servers=kafka_bootstrap, topic=topic) as relay:
        await relay.run(until_caught_up=True)

    def consume() -> list[dict]:
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"plain-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": FAST_GROUP["session_timeout_ms"],
                "heartbeat.interval.ms": FAST_GROUP["heartbeat_interval_ms"],
            }
        )
        consumer.subscribe([topic])
        seen: list[dict] = []
        last: dict[tuple[str, str], int] = {}
        deadline = time.monotonic() + 30
        try:
            while len(seen) < len(recorded) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                headers = {k: v.decode() for k, v in (msg.headers() or [])}
                assert headers["statelog-wire"] == "1"
                assert headers["content-type"] == "application/json"
                event = json.loads(msg.value())
                pk, _, app = msg.key().decode().partition("/")
                unescape = lambda s: s.replace("%2F", "/").replace("%25", "%")  # noqa: E731
                assert (unescape(pk), unescape(app)) == (event["partition_key"], event["app_id"])
                assert int(headers["sequence_id"]) == event["sequence_id"]
                assert headers["hash"] == event["hash"]
                stream = (event["partition_key"], event["app_id"])
                if event["sequence_id"] <= last.get(stream, -1):
                    continue
                last[stream] = event["sequence_id"]
                seen.append(event)
                consumer.commit(msg, asynchronous=False)
        finally:
            consumer.close()
        return seen

    seen = await asyncio.to_thread(consume)
    assert len(seen) == len(recorded)
    expected = {(r.event.stream, r.event.sequence_id): r.event for r in recorded}
    for raw in seen:
        event = expected[((raw["partition_key"], raw["app_id"]), raw["sequence_id"])]
        assert raw["ops"] == event.ops
        assert raw["kind"] == event.kind
        assert raw["prev_hash"] == event.prev_hash


async def test_the_relay_anchors_the_signed_checkpoints(kafka_bootstrap, make_topic, tmp_path):
    from statelog.eventstore import SignedCheckpoint, generate_key_files, load_public_key
    from statelog.eventstore._checkpoints import replay

    private, public = generate_key_files(tmp_path / "key")
    db = tmp_path / "log.db"
    async with SQLiteEventStore(db, signing_key=private) as store:
        await append_workload(store, streams=3, events=5)
        await store.checkpoint()
        await append_workload(store, streams=2, events=4, prefix="more")
    topic = await make_topic(partitions=2)
    anchor = await make_topic(partitions=1)
    async with SQLiteEventStore(db) as store:
        relay = OutboxRelay(
            store, bootstrap_servers=kafka_bootstrap, topic=topic, anchor_topic=anchor
        )
        async with relay:
            await relay.run(until_caught_up=True)
    records = await read_topic(kafka_bootstrap, anchor, expect=2)
    assert [r.key for r in records] == [b"statelog-checkpoints"] * 2
    assert all(dict(r.headers)["kind"] == b"checkpoint" for r in records)
    signed = []
    for record in records:
        value = json.loads(record.value)
        signed.append(
            (
                value["sequence"],
                SignedCheckpoint(
                    body=value["body"].encode(), signature=bytes.fromhex(value["signature"])
                ),
            )
        )
    replayed = replay(signed, [load_public_key(public)])
    assert not replayed.problems and replayed.latest is not None
    assert replayed.latest.sequence == 2 and replayed.latest.streams == 5
