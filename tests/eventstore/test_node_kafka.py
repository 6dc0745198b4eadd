"""The Node.js verifier reads the events topic itself: ``node verify.mjs --kafka``.

docs/verify-node/verify.mjs reads every record of a topic with kafkajs (the
real broker fixture, tests/kafka_broker.py), decodes each one (JSON or
msgpack value, key, headers, fences) and re-checks every hash and every
``prev_hash`` link with the record rules of statelog's own Kafka readers:
duplicates pass and are counted, stale-epoch records are fenced (reported, not
a failure), a fork, a gap, a broken link or a hash that does not match its
content is named, exit 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from statelog.eventstore import Event, Lineage, SQLiteEventStore, seal
from statelog.eventstore.kafka import (
    Fence,
    FencedError,
    KafkaEventStore,
    MemoryRelayCheckpoint,
    OutboxRelay,
    encode_record,
    record_key,
)
from tests.kafka_broker import FAST_GROUP
from tests.kafka_helpers import produce_raw, read_topic

MakeTopic = Callable[..., Awaitable[str]]
KEY = "k3y-ü"


def _node_kafka(
    verifier: Path, bootstrap: str, topic: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["node", str(verifier), "--kafka", bootstrap, "--topic", topic, "--timeout", "120"]
    # Tansu joins a group in about half the session timeout (tests/kafka_broker.py)
    args += ["--session-timeout", str(FAST_GROUP["session_timeout_ms"])]
    env = dict(os.environ)
    if key is not None:
        env["STATELOG_NODE_KEY"] = key
        args += ["--hmac-key-env", "STATELOG_NODE_KEY"]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts of the verifier's last line: {'v2 events checked': 12, 'duplicates': 0, ...}."""
    last = done.stdout.strip().splitlines()[-1]
    counts = {name: int(n) for n, name in re.findall(r"(\d+) ([a-z0-9 ]+?)(?= in |;|$)", last)}
    counts["ok"] = int(last.startswith("ok: "))
    return counts


def _event(app_id: str, seq: int, *, pk: str = "p", value: object = 0) -> Event:
    return Event(
        partition_key=pk,
        app_id=app_id,
        sequence_id=seq,
        kind="action_completed" if seq else "app_initialized",
        action="step",
        ops=[{"op": "set", "key": "v", "value": value}],
        result={"ü": [1.5, 1e21, -0.0, 2**53 - 1], "nested": {"b": 1, "a": None}},
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 7 * seq + 1, tzinfo=UTC),
        duration_us=seq,
    )


def _run(app_id: str, count: int, *, pk: str = "p") -> list[Event]:
    return [_event(app_id, seq, pk=pk, value=seq + 0.25) for seq in range(count)]


# --------------------------------------------------------------------------- what statelog writes


async def test_node_passes_events_a_kafka_store_wrote(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic(partitions=3)
    streams = {("p", "a"): 6, ("", "b"): 3, ("t/1", "c%/d"): 4, ("ü", "e"): 1}
    async with KafkaEventStore(kafka_bootstrap, topic) as store:
        for (pk, app), count in streams.items():
            await store.append(_run(app, count, pk=pk), expected_sequence=-1)
        await store.append([_event("a", 6, value="more")], expected_sequence=5)
    done = _node_kafka(node_verifier, kafka_bootstrap, topic)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _summary(done)
    assert counts["v2 events checked"] == sum(streams.values()) + 1
    assert counts["streams"] == len(streams)
    assert counts["duplicates"] == counts["fenced"] == 0


async def test_node_checks_a_msgpack_topic_under_its_hmac_key(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic(partitions=2)
    async with KafkaEventStore(
        kafka_bootstrap, topic, codec="msgpack", hmac_key=KEY.encode()
    ) as store:
        for app in ("a", "b", "c"):
            await store.append(_run(app, 4), expected_sequence=-1)
    done = _node_kafka(node_verifier, kafka_bootstrap, topic, KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary(done)["v2 events checked"] == 12
    # the same topic under the wrong key (or none) is refused, record by record
    wrong = _node_kafka(node_verifier, kafka_bootstrap, topic, "wrong")
    assert wrong.returncode == 1, wrong.stdout
    assert wrong.stdout.count("hash does not match its content") == 12
    assert _node_kafka(node_verifier, kafka_bootstrap, topic).returncode == 1


async def test_node_passes_what_the_relay_published_from_a_sqlite_log(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
) -> None:
    topic = await make_topic(partitions=3)
    async with await SQLiteEventStore.open(tmp_path / "log.db", hmac_key=KEY.encode()) as store:
        for n in range(5):
            await store.append(_run(f"app-{n}", 3 + n, pk=f"tenant/{n % 2}"), expected_sequence=-1)
        # published twice (a relay that lost its checkpoint): every record again
        for _ in range(2):
            async with OutboxRelay(
                store,
                bootstrap_servers=kafka_bootstrap,
                topic=topic,
                checkpoint=MemoryRelayCheckpoint(),
            ) as relay:
                await relay.run(until_caught_up=True)
    events = sum(3 + n for n in range(5))
    assert len(await read_topic(kafka_bootstrap, topic, expect=2 * events)) == 2 * events
    done = _node_kafka(node_verifier, kafka_bootstrap, topic, KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _summary(done)
    assert counts["v2 events checked"] == 2 * events  # every copy re-hashed
    assert counts["duplicates"] == events
    assert counts["streams"] == 5


async def test_duplicates_with_the_same_hash_pass_and_are_counted(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic()
    async with KafkaEventStore(kafka_bootstrap, topic) as store:
        recorded = await store.append(_run("a", 4), expected_sequence=-1)
    for rec in (recorded[1], recorded[3], recorded[1]):  # producer retries, byte for byte
        key, value, headers = encode_record(rec.event)
        await produce_raw(kafka_bootstrap, topic, value, key=key, headers=headers)
    done = _node_kafka(node_verifier, kafka_bootstrap, topic)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary(done)["duplicates"] == 3


async def test_a_zombie_writers_stale_records_are_fenced_not_forks(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic(partitions=2)
    old = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    new = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    try:
        home = old._partition_for(record_key("p", "a"))
        first = await old.claim(home, "old")
        await old.append([_event("a", 0)], expected_sequence=-1)
        await old.append([_event("a", 1)], expected_sequence=0)
        child = Event(  # a child stream in its parent's partition, under the fence
            partition_key="p",
            app_id="a-child",
            sequence_id=0,
            kind="app_initialized",
            parent=Lineage(partition_key="p", app_id="a", sequence_id=0, relation="child"),
        )
        await old.append([child], expected_sequence=-1)
        await new.refresh()
        await new.claim(home, "new")
        with contextlib.suppress(FencedError):  # the zombie wakes up and writes #2
            await old.append([_event("a", 2, value="zombie")], expected_sequence=1)
        mine = await new.append([_event("a", 2, value="owner")], expected_sequence=1)
        # and one more late record of the old epoch, produced straight onto the topic
        (stale,) = seal([_event("a", 3, value="late")], mine[0].event.hash)
        key, value, headers = encode_record(stale, fence=first)
        await produce_raw(kafka_bootstrap, topic, value, key=key, headers=headers)
    finally:
        await old.aclose()
        await new.aclose()
    async with KafkaEventStore(kafka_bootstrap, topic) as reader:
        assert [e.hash for e in await reader.read("p", "a")][2:] == [mine[0].event.hash]
        python_fenced = reader.fenced_records
    done = _node_kafka(node_verifier, kafka_bootstrap, topic)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = _summary(done)
    assert counts["fenced"] == python_fenced >= 1  # the same rule as statelog's reader
    assert counts["fence records"] == 2
    assert counts["streams"] == 2
    assert 'stream ["p","a"] sequence_id 3: fenced' in done.stdout
    assert "written in epoch 1 (old), the partition is at epoch 2 (new)" in done.stdout


# --------------------------------------------------------------------------- tampered records


def _forged(how: str, chain: list[Event]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """One record produced straight onto the topic after ``chain`` (a, sequence 0..4)."""
    if how == "edited value, old hash":
        edited = msgspec.structs.replace(chain[2], ops=[{"op": "set", "key": "v", "value": 10**9}])
        return encode_record(edited)
    if how == "recomputed hash, prev_hash does not link":
        (forged,) = seal([_event("a", 5, value=10**9)], chain[3].hash)
        return encode_record(forged)
    if how == "a gap in sequence ids":
        (forged,) = seal([_event("a", 6, value=10**9)], chain[4].hash)
        return encode_record(forged)
    if how == "a fork with no newer fence":
        (forged,) = seal([_event("a", 3, value=10**9)], chain[2].hash)
        return encode_record(forged)
    if how == "headers disagree with the value":
        key, value, headers = encode_record(chain[4])
        return key, value, [(n, b"0" * 64 if n == "hash" else v) for n, v in headers]
    raise AssertionError(how)


#: each forgery, and what the Node verifier must say of it
FORGERIES = {
    "edited value, old hash": 'stream ["p","a"] sequence_id 2: hash does not match its content',
    "recomputed hash, prev_hash does not link": (
        'stream ["p","a"] sequence_id 5: prev_hash does not link'
    ),
    "a gap in sequence ids": 'stream ["p","a"] sequence_id 6: expected sequence_id 5 (a gap)',
    "a fork with no newer fence": 'stream ["p","a"] sequence_id 3: a fork',
    "headers disagree with the value": (
        "not a statelog record: the value disagrees with its hash header"
    ),
}


@pytest.mark.parametrize("how", FORGERIES)
async def test_node_names_each_tampered_record(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic, how: str
) -> None:
    topic = await make_topic()
    async with KafkaEventStore(kafka_bootstrap, topic) as store:
        recorded = await store.append(_run("a", 5), expected_sequence=-1)
        await store.append(_run("b", 2), expected_sequence=-1)
    key, value, headers = _forged(how, [rec.event for rec in recorded])
    await produce_raw(kafka_bootstrap, topic, value, key=key, headers=headers)
    done = _node_kafka(node_verifier, kafka_bootstrap, topic)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout
    problems = [line for line in done.stdout.splitlines()[:-1] if not line.startswith("note:")]
    assert len(problems) == 1, done.stdout
    assert "partition 0 offset 7: " in problems[0]  # the forged record, and only it
    assert FORGERIES[how] in problems[0], done.stdout


async def test_a_fork_under_the_current_fence_is_still_a_fork(
    node_verifier: Path, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    # The fence explains only a stale epoch: a second record for #1 carrying the
    # epoch that is open (a forged one, or two writers sharing a claim) is a fork.
    topic = await make_topic()
    store = await KafkaEventStore(kafka_bootstrap, topic, claims_required=True).connect()
    try:
        fence = await store.claim(0, "w")
        recorded = await store.append(_run("a", 3), expected_sequence=-1)
    finally:
        await store.aclose()
    (forged,) = seal([_event("a", 1, value="forked")], recorded[0].event.hash)
    for claim in (fence, Fence(fence.epoch - 1, "w")):  # the open epoch, then a stale one
        key, value, headers = encode_record(forged, fence=claim)
        await produce_raw(kafka_bootstrap, topic, value, key=key, headers=headers)
    done = _node_kafka(node_verifier, kafka_bootstrap, topic)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'partition 0 offset 4: stream ["p","a"] sequence_id 1: a fork' in done.stdout
    assert _summary(done)["fenced"] == 1  # the stale-epoch copy is fenced, not a fork


async def test_a_missing_topic_is_exit_2(node_verifier: Path, kafka_bootstrap: str) -> None:
    done = _node_kafka(node_verifier, kafka_bootstrap, "statelog-no-such-topic")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot read topic statelog-no-such-topic" in done.stderr


@pytest.mark.parametrize("value", ["0", "999", "3000.5", "soon", "300001"])
def test_a_bad_session_timeout_is_exit_2(node_verifier: Path, value: str) -> None:
    done = subprocess.run(
        ["node", str(node_verifier), "--kafka", "127.0.0.1:1", "--topic", "t"]
        + ["--session-timeout", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--session-timeout {value}: expected milliseconds" in done.stderr
