"""The broker fixture itself: a real broker answers, topics are created explicitly."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import tests.kafka_broker as kb
from tests.kafka_broker import BrokerStartError, answers_metadata, create_topic, docker_answers


async def _roundtrip(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        batch = await consumer.getmany(*tps, timeout_ms=5000)
        return [record.value for records in batch.values() for record in records]
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_session_broker_answers_and_topics_are_explicit(kafka_bootstrap, make_topic):
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert answers_metadata(host, int(port))
    topic = await make_topic(partitions=3)
    other = await make_topic()
    assert topic != other
    assert await _roundtrip(kafka_bootstrap, topic, b"hello") == [b"hello"]


@pytest.mark.kafka
async def test_restarted_broker_is_a_new_empty_broker(broker_factory, restartable_broker):
    topic = await create_topic(restartable_broker.bootstrap)
    assert await _roundtrip(restartable_broker.bootstrap, topic, b"one") == [b"one"]
    restartable_broker.stop()
    assert not answers_metadata("127.0.0.1", restartable_broker.port, timeout=0.2)
    fresh = broker_factory.restart(restartable_broker)
    assert fresh.port == restartable_broker.port
    await create_topic(fresh.bootstrap, topic)
    assert await _roundtrip(fresh.bootstrap, topic, b"two") == [b"two"]


def test_a_broker_that_cannot_start_fails_loudly_with_its_log(monkeypatch, tmp_path):
    script = tmp_path / "broken-broker"
    script.write_text("#!/bin/sh\necho 'cannot bind: permission denied'\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setattr(kb, "tansu_binary", lambda: str(script))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert not docker_answers()
    with pytest.raises(BrokerStartError, match="exited with code 3") as caught:
        kb._resolve_session_broker()
    assert "no Kafka-protocol broker" in str(caught.value)
    assert "cannot bind: permission denied" in str(caught.value)


def test_nothing_listening_does_not_answer_metadata():
    assert not answers_metadata("127.0.0.1", kb._free_port(), timeout=0.2)
