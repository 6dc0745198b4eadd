"""KafkaSubscription against a real broker: de-dup, commits, foreign records."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from statelog.eventstore import EncodingError, Event, MemoryEventStore
from statelog.eventstore.kafka import (
    DedupIndex,
    ForeignRecordWarning,
    KafkaSubscription,
    MemoryRelayCheckpoint,
    OutboxRelay,
    encode_record,
)
from tests.kafka_broker import FAST_GROUP
from tests.kafka_helpers import append_workload, produce_raw

pytestmark = pytest.mark.kafka


def _subscription(bootstrap: str, topic: str, group: str | None = None) -> KafkaSubscription:
    return KafkaSubscription(
        bootstrap,
        topic,
        group or f"g-{uuid.uuid4().hex[:8]}",
        poll_timeout=0.3,
        **FAST_GROUP,
    )


async def _collect(
    sub: KafkaSubscription, count: int, timeout: float = 30.0, *, commit: bool = False
) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for batch in sub.batches():
            events.extend(batch)
            if len(events) >= count:
                if commit:
                    await sub.commit()
                break
    return events


async def _publish(store, bootstrap, topic, checkpoint=None) -> None:
    async with OutboxRelay(
        store, bootstrap_servers=bootstrap, topic=topic, checkpoint=checkpoint
    ) as relay:
        await relay.run(until_caught_up=True)


async def test_duplicates_on_the_topic_are_delivered_once_in_order(kafka_bootstrap, make_topic):
    topic = await make_topic(partitions=3)
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=6, events=10)
    await _publish(store, kafka_bootstrap, topic)
    # A relay that lost its checkpoint publishes everything again (at least once).
    await _publish(store, kafka_bootstrap, topic, MemoryRelayCheckpoint(len(recorded) // 2))
    more = await append_workload(store, streams=2, events=3, prefix="more")
    await _publish(store, kafka_bootstrap, topic, MemoryRelayCheckpoint(len(recorded)))
    expected = recorded + more
    async with _subscription(kafka_bootstrap, topic) as sub:
        events = await _collect(sub, len(expected))
        # Nothing more arrives: the duplicates were dropped, not delayed.
        events.extend(await _drain(sub))
    assert sorted((e.stream, e.sequence_id) for e in events) == sorted(
        (r.event.stream, r.event.sequence_id) for r in expected
    )
    for stream in {r.event.stream for r in expected}:
        got = [e for e in events if e.stream == stream]
        assert got == [r.event for r in expected if r.event.stream == stream]
    assert sub.duplicates >= len(recorded) - len(recorded) // 2


async def _drain(sub: KafkaSubscription, rounds: int = 3) -> list[Event]:
    extra: list[Event] = []
    for _ in range(rounds):
        events, offsets = await sub._fetch()
        sub._pending.update(offsets)
        extra.extend(events)
    return extra


async def test_commits_only_processed_events_and_resumes_after_them(kafka_bootstrap, make_topic):
    topic = await make_topic()
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=2, events=10)
    await _publish(store, kafka_bootstrap, topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: list[Event] = []
    async with _subscription(kafka_bootstrap, topic, group) as sub:
        async for event in sub:
            seen.append(event)
            if len(seen) == 5:
                break  # the fifth was not acknowledged by asking for the next one
    # The four events the loop moved past were committed at close; the fifth was
    # not acknowledged, so a new member starts with it: at least once.
    async with _subscription(kafka_bootstrap, topic, group) as sub:
        again = await _collect(sub, len(recorded) - 4, commit=True)
    assert again[0] == seen[4]
    assert len(again) == len(recorded) - 4
    # Everything was acknowledged by commit() inside the loop: nothing is redelivered.
    async with _subscription(kafka_bootstrap, topic, group) as sub:
        assert await _drain(sub) == []


async def test_run_handler_and_persisted_dedup_index(kafka_bootstrap, make_topic):
    topic = await make_topic()
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=3, events=4)
    await _publish(store, kafka_bootstrap, topic)
    handled: list[Event] = []
    stop = asyncio.Event()

    async def handler(event: Event) -> None:
        handled.append(event)
        if len(handled) == len(recorded):
            stop.set()

    async with _subscription(kafka_bootstrap, topic) as sub:
        await asyncio.wait_for(sub.run(handler, stop=stop), 30)
        saved = sub.dedup.dumps()
    assert sorted((e.stream, e.sequence_id) for e in handled) == sorted(
        (r.event.stream, r.event.sequence_id) for r in recorded
    )
    # A new group reading everything again with the saved index delivers nothing twice.
    restored = DedupIndex.loads(saved)
    assert len(restored) == 3
    async with KafkaSubscription(
        kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", dedup=restored, **FAST_GROUP
    ) as sub:
        assert await _drain(sub) == []
        assert sub.duplicates == len(recorded)
    with pytest.raises(EncodingError):
        DedupIndex.loads(b"not json")


async def test_foreign_records_are_skipped_with_a_warning(kafka_bootstrap, make_topic):
    topic = await make_topic()
    store = MemoryEventStore()
    recorded = await append_workload(store, streams=1, events=2)
    good = [encode_record(r.event) for r in recorded]
    await produce_raw(kafka_bootstrap, topic, b"hello from another service", key=b"x")
    await produce_raw(kafka_bootstrap, topic, good[0].value, good[0].key, good[0].headers)
    tampered = [(n, b"99" if n == "sequence_id" else v) for n, v in good[1].headers]
    await produce_raw(kafka_bootstrap, topic, good[1].value, good[1].key, tampered)
    await produce_raw(kafka_bootstrap, topic, b"{not json", b"a/b", good[1].headers)
    await produce_raw(kafka_bootstrap, topic, good[1].value, good[1].key, good[1].headers)
    async with _subscription(kafka_bootstrap, topic) as sub:
        with pytest.warns(ForeignRecordWarning) as caught:
            events = await _collect(sub, 2)
    assert events == [r.event for r in recorded]
    assert sub.foreign == 3
    messages = " | ".join(str(w.message) for w in caught)
    assert "no 'statelog-wire' header" in messages
    assert "headers disagree" in messages
