"""A stopping worker: what a rebalance that completes while it leaves may do."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable

import pytest

from statelog.eventstore.kafka import KafkaEventStore
from statelog.worker import Worker
from tests.kafka_helpers import read_topic
from tests.worker.apps import fan_out

pytestmark = pytest.mark.kafka

MakeTopic = Callable[..., Awaitable[str]]


async def test_a_stopping_worker_claims_nothing_a_late_rebalance_assigns(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    # Leaving the group waits for a rebalance under way, whose listener assigns
    # partitions: a claim then would write a fence (taking the partition from its
    # next owner) and hold up SIGTERM; seen as a worker that took > 30 s to stop.
    topic = await make_topic()
    log = io.StringIO()
    worker = Worker(kafka_bootstrap, "g", {"fan": fan_out()}, worker_id="w", log=log)
    store = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    try:
        worker._store = store
        worker._stopping = True  # as run() sets it on its way out
        await worker._assign([0])
        assert worker._owned == {}
        assert store.claims == {}
    finally:
        await store.aclose()
    assert await read_topic(kafka_bootstrap, topic) == []  # no fence record was written
    (line,) = [json.loads(text) for text in log.getvalue().splitlines()]
    assert (line["event"], line["partitions"], line["reason"]) == (
        "not_claimed",
        [0],
        "stopping",
    )
