"""Fences in KafkaEventStore: a writer that lost its partition cannot fork a stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.partitioner import murmur2

from statelog.eventstore import ConcurrencyError, Event, Lineage, UsageError, seal
from statelog.eventstore.kafka import (
    DedupIndex,
    FencedError,
    KafkaEventStore,
    KafkaSubscription,
    encode_record,
    record_key,
)
from statelog.eventstore.kafka._wire import fence_of
from tests.kafka_broker import FAST_GROUP
from tests.kafka_helpers import produce_raw, read_topic

pytestmark = pytest.mark.kafka

MakeTopic = Callable[..., Awaitable[str]]


def ev(app: str, seq: int) -> Event:
    return Event(
        partition_key="pk", app_id=app, sequence_id=seq, kind="action_completed", action="step"
    )


async def test_a_zombie_writer_is_fenced_and_readers_skip_its_records(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic()
    old = await KafkaEventStore(kafka_bootstrap, topic).connect()
    new = await KafkaEventStore(kafka_bootstrap, topic).connect()
    try:
        first = await old.claim(0, "old")
        await old.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
        await new.refresh()
        second = await new.claim(0, "new")
        assert second.epoch == first.epoch + 1
        assert await new.last_sequence("pk", "a") == 1  # what came before the fence counts
        # the zombie wakes and writes the next event: on the topic, but fenced
        with pytest.raises(FencedError) as caught:
            await old.append([ev("a", 2)], expected_sequence=1)
        assert caught.value.current == second
        assert old.claims == {}
        written = await new.append([ev("a", 2), ev("a", 3)], expected_sequence=1)
        assert [r.event.sequence_id for r in written] == [2, 3]
        async with KafkaEventStore(kafka_bootstrap, topic) as reader:
            events = await reader.read("pk", "a")
            assert [e.sequence_id for e in events] == [0, 1, 2, 3]
            assert events[2].hash == written[0].event.hash
            assert reader.fenced_records == 1
            assert [r.event.sequence_id for r in await reader.read_all()] == [0, 1, 2, 3]
        raw = await read_topic(kafka_bootstrap, topic)
        assert len(raw) == 2 + 1 + 1 + 1 + 2  # events, fences and the zombie's record
    finally:
        await old.aclose()
        await new.aclose()


async def test_a_stale_epoch_record_arriving_first_does_not_win(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """The zombie's record lands after the fence but before the owner's: still skipped."""
    topic = await make_topic()
    owner = await KafkaEventStore(kafka_bootstrap, topic).connect()
    try:
        old = await owner.claim(0, "old")
        await owner.append([ev("b", 0)], expected_sequence=-1)
        head = (await owner.read("pk", "b"))[-1]
        await owner.claim(0, "new")
        stale = Event(partition_key="pk", app_id="b", sequence_id=1, kind="halted", action="step")
        rec = encode_record(seal([stale], prev_hash=head.hash)[0], fence=old)
        await produce_raw(kafka_bootstrap, topic, rec.value, key=rec.key, headers=rec.headers)
        await owner.append([ev("b", 1)], expected_sequence=0)
        async with KafkaEventStore(kafka_bootstrap, topic) as reader:
            events = await reader.read("pk", "b")
            assert [e.kind for e in events] == ["action_completed", "action_completed"]
            assert reader.fenced_records == 1
    finally:
        await owner.aclose()


async def test_records_without_a_fence_read_as_before(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic()
    async with KafkaEventStore(kafka_bootstrap, topic) as store:
        await store.append([ev("c", 0)], expected_sequence=-1)
        await store.claim(0, "w")
        await store.append([ev("c", 1)], expected_sequence=0)
        store.release(0)
        await store.append([ev("c", 2)], expected_sequence=1)
    async with KafkaEventStore(kafka_bootstrap, topic) as reader:
        assert [e.sequence_id for e in await reader.read("pk", "c")] == [0, 1, 2]
        assert reader.fenced_records == 0


async def test_a_subscription_skips_fenced_records_and_fence_records_silently(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic()
    owner = await KafkaEventStore(kafka_bootstrap, topic).connect()
    try:
        old = await owner.claim(0, "old")
        await owner.append([ev("s", 0)], expected_sequence=-1)
        head = (await owner.read("pk", "s"))[-1]
        await owner.claim(0, "new")
        late = seal([ev("s", 1)], prev_hash=head.hash)[0]
        rec = encode_record(late, fence=old)
        await produce_raw(kafka_bootstrap, topic, rec.value, key=rec.key, headers=rec.headers)
        written = await owner.append([ev("s", 1), ev("s", 2)], expected_sequence=0)
    finally:
        await owner.aclose()
    group = f"g-{uuid.uuid4().hex[:8]}"
    sub = KafkaSubscription(kafka_bootstrap, topic, group, **FAST_GROUP)  # type: ignore[arg-type]
    got: list[Event] = []
    async with sub:
        async for event in sub:
            got.append(event)
            if len(got) == 3:
                break
    assert [e.hash for e in got[1:]] == [r.event.hash for r in written]
    assert sub.fenced == 1 and sub.foreign == 0
    restored = DedupIndex.loads(sub.dedup.dumps())
    assert restored.fences == sub.dedup.fences and restored.fences


def child_of(parent: Event, app: str, seq: int) -> Event:
    lineage = Lineage(
        partition_key=parent.partition_key,
        app_id=parent.app_id,
        sequence_id=parent.sequence_id,
        relation="child",
    )
    return Event(
        partition_key="pk",
        app_id=app,
        sequence_id=seq,
        kind="action_completed",
        action="step",
        parent=lineage if seq == 0 else None,
    )


def other_partition(partitions: int, home: int) -> str:
    """An app id whose own key hashes to another partition than ``home``."""
    for n in range(1000):
        app = f"child-{n}"
        if (murmur2(record_key("pk", app)) & 0x7FFFFFFF) % partitions != home:
            return app
    raise AssertionError("no key hashes elsewhere")


async def test_a_child_stream_lives_in_its_parents_partition_under_its_fence(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """A zombie's late child records are fenced like its parent's."""
    topic = await make_topic(partitions=3)
    old = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    new = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    try:
        home = old._partition_for(record_key("pk", "parent"))
        first = await old.claim(home, "old")
        (parent,) = await old.append([ev("parent", 0)], expected_sequence=-1)
        child = other_partition(3, home)
        await old.append([child_of(parent.event, child, 0)], expected_sequence=-1)
        await new.refresh()
        await new.claim(home, "new")
        with pytest.raises(FencedError) as caught:  # the zombie's next child event
            await old.append([child_of(parent.event, child, 1)], expected_sequence=0)
        assert caught.value.ours == first
        mine = await new.append([child_of(parent.event, child, 1)], expected_sequence=0)
        raw = [r for r in await read_topic(kafka_bootstrap, topic) if r.key]
        assert {r.partition for r in raw} == {home}
        assert all(fence_of(r.headers) is not None for r in raw)
        async with KafkaEventStore(kafka_bootstrap, topic) as reader:
            events = await reader.read("pk", child)
            assert [e.hash for e in events[1:]] == [mine[0].event.hash]
            assert reader.fenced_records == 1
    finally:
        await old.aclose()
        await new.aclose()


async def test_a_store_that_requires_claims_writes_nothing_without_one(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """After losing a claim (fenced or released), no append goes out without a fence."""
    topic = await make_topic()
    store = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    try:
        with pytest.raises(UsageError, match="not claimed"):
            await store.append([ev("u", 0)], expected_sequence=-1)
        fence = await store.claim(0, "w")
        await store.append([ev("u", 0)], expected_sequence=-1)
        store.release(0)
        with pytest.raises(FencedError) as caught:
            await store.append([ev("u", 1)], expected_sequence=0)
        assert caught.value.ours == fence
        await store.forget_partition(0)
        with pytest.raises(FencedError):
            await store.append([ev("v", 0)], expected_sequence=-1)
        raw = await read_topic(kafka_bootstrap, topic)
        assert len(raw) == 2  # the fence record and u#0
    finally:
        await store.aclose()


async def test_an_append_cancelled_in_flight_is_adopted_not_written_twice(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """A run cancelled while its event is in flight records ``cancelled`` at the same
    sequence next (the engine does): the store waits for the first record's
    acknowledgement before it reads the partition, so the second gets
    ``ConcurrencyError`` instead of landing as a second record at that sequence."""
    topic = await make_topic()
    async with KafkaEventStore(kafka_bootstrap, topic, claims_required=True) as store:
        await store.claim(0, "w")
        outcomes = {"landed first": 0, "never sent": 0}
        for n in range(30):
            app = f"x{n}"
            first = asyncio.create_task(store.append([ev(app, 0)], expected_sequence=-1))
            for _ in range(n % 6 + 1):  # cancel it at different points of the send
                await asyncio.sleep(0)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            late = Event(partition_key="pk", app_id=app, sequence_id=0, kind="cancelled")
            try:
                await store.append([late], expected_sequence=-1)
                outcomes["never sent"] += 1
            except ConcurrencyError:
                outcomes["landed first"] += 1
    raw = [r for r in await read_topic(kafka_bootstrap, topic) if r.key]
    per_stream: dict[bytes, int] = {}
    for record in raw:
        per_stream[record.key] = per_stream.get(record.key, 0) + 1
    assert sorted(per_stream.values()) == [1] * 30, outcomes
    print(outcomes)
