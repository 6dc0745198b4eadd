"""Signed checkpoints of Kafka writers, and ``verify --bootstrap`` (the real test broker).

Each writer (a ``KafkaEventStore`` with ``signing_key``) publishes its own
chain to ``<topic>.checkpoints``; ``audit_kafka`` / ``statelog verify
--bootstrap --public-key`` replays every chain and holds every signed head
against the topic. The attacks are made on copies of the topics (Kafka cannot
delete a record in the middle or at the end of a partition): a topic mirrored
without a stream's tail, with a rewritten head (hash recomputed), and a
checkpoints topic with a forged, a replayed and a duplicated-under-one-number
checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from statelog.eventstore import (
    Event,
    KeyMismatchError,
    SignedCheckpoint,
    StoreUnavailableError,
    compute_hash,
    generate_key_files,
    load_public_key,
)
from statelog.eventstore._checkpoints import Checkpoint
from statelog.eventstore.kafka import (
    KafkaEventStore,
    audit_kafka,
    decode_record,
    encode_record,
    read_anchor_records,
)
from statelog.eventstore.kafka._signing import encode_anchor
from tests.kafka_broker import create_topic
from tests.kafka_helpers import append_workload, read_topic
from tests.worker.harness import wait_for

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statelog", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def topics(bootstrap: str, partitions: int = 2) -> tuple[str, str]:
    """A fresh events topic and its checkpoints topic (created explicitly: Tansu)."""
    events = await create_topic(bootstrap, partitions=partitions)
    checkpoints = await create_topic(bootstrap, f"{events}.checkpoints")
    return events, checkpoints


async def copy_topic(
    bootstrap: str, source: str, *, partitions: int, edit: Any = None, name: str | None = None
) -> str:
    """``source`` copied record by record into a new topic (same partition, same order);
    ``edit(record)`` returns ``(key, value, headers)``, or ``None`` to drop a record."""
    target = await create_topic(bootstrap, name, partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for record in await read_topic(bootstrap, source):
            item = (record.key, record.value, list(record.headers))
            if edit is not None:
                item = edit(record)
                if item is None:
                    continue
            key, value, headers = item
            await producer.send_and_wait(
                target, value, key=key, headers=headers, partition=record.partition
            )
    finally:
        await producer.stop()
    return target


async def publish(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, value, key=b"statelog-checkpoints", headers=[("kind", b"checkpoint")]
        )
    finally:
        await producer.stop()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    return generate_key_files(tmp_path / "signing.key")


async def signed_log(bootstrap: str, private: str) -> tuple[str, str, list[str]]:
    """Two writers (two chains) on one topic; returns the topics and the writer ids."""
    events, checkpoints = await topics(bootstrap)
    writers = []
    for prefix, streams in (("first", 3), ("second", 2)):
        store = KafkaEventStore(
            bootstrap, events, signing_key=private, checkpoint_every=7, client_id=prefix
        )
        async with store:
            await append_workload(store, streams=streams, events=6, prefix=prefix)
        writers.append(store.writer_id)
    return events, checkpoints, writers


async def test_two_writers_publish_their_own_chains_and_they_verify(kafka_bootstrap, keys):
    private, public = keys
    events, checkpoints, writers = await signed_log(kafka_bootstrap, private)
    records, problems = await read_anchor_records(kafka_bootstrap, checkpoints)
    assert problems == []
    by_writer: dict[str, list[int]] = {}
    for record in records:
        by_writer.setdefault(record.writer, []).append(record.sequence)
    # 18 and 12 events, one checkpoint every 7 events (when none is in flight) and one at
    # close: each chain dense from 1, its last one covering all its writer's streams
    assert set(by_writer) == set(writers)
    for writer, sequences in by_writer.items():
        assert len(sequences) >= 2 and sequences == list(range(1, len(sequences) + 1)), writer
    last = Checkpoint.from_bytes([r for r in records if r.writer == writers[0]][-1].signed.body)
    assert last.streams == 3 and last.position == 18
    raw = await read_topic(kafka_bootstrap, checkpoints)
    assert {r.key for r in raw} == {b"statelog-checkpoints"}
    assert all(dict(r.headers)["kind"] == b"checkpoint" for r in raw)

    async with KafkaEventStore(kafka_bootstrap, events) as reader:
        report = await audit_kafka(reader, public_keys=[load_public_key(public)])
    assert report.ok, report.findings
    assert report.writers == {w: len(by_writer[w]) for w in writers}
    assert (report.streams, report.events, report.unsigned_events) == (5, 30, 0)

    done = cli("verify", "--bootstrap", kafka_bootstrap, "--topic", events, "--public-key", public)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"ok: 5 streams, 30 events; {len(records)} checkpoints of 2 writers (signatures "
        "verified), 0 events after the signed heads" in done.stdout
    )


async def test_a_cut_tail_a_deleted_stream_and_a_rewritten_head_are_named(kafka_bootstrap, keys):
    private, public = keys
    events, checkpoints, _ = await signed_log(kafka_bootstrap, private)
    originals = [decode_record(r.key, r.value, r.headers) for r in await read_topic(
        kafka_bootstrap, events
    )]  # fmt: skip
    heads = {e.stream: e for e in originals}

    def edit(record: Any) -> Any:
        event = decode_record(record.key, record.value, record.headers)
        if event.app_id == "first-0" and event.sequence_id >= 4:
            return None  # its last two events cut
        if event.app_id == "second-1":
            return None  # the whole stream gone
        if event.app_id == "first-1" and event == heads[event.stream]:
            forged = msgspec.structs.replace(event, actor="mallory", hash="")
            forged = msgspec.structs.replace(forged, hash=compute_hash(forged))
            return encode_record(forged)  # a new head with a recomputed hash
        return record.key, record.value, list(record.headers)

    mirror = await copy_topic(kafka_bootstrap, events, partitions=2, edit=edit)
    done = cli(
        "verify", "--bootstrap", kafka_bootstrap, "--topic", mirror,
        "--checkpoints-topic", checkpoints, "--public-key", public,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert (
        "broken: stream ('tenant/0', 'first-0') sequence_id 4 is missing: the stream ends at "
        "sequence_id 3" in out
    )
    assert "(its last events were deleted)" in out
    assert re.search(
        r"stream \('tenant/1', 'second-1'\) is missing: checkpoint #\d+ of writer", out
    )
    assert "(a whole stream was deleted)" in out
    assert "stream ('tenant/1', 'first-1') sequence_id 5 has hash" in out
    assert "(the stream was rewritten)" in out
    assert out.count("broken:") == 3
    # without the key the same mirror passes: the chains alone cannot tell
    unsigned = cli("verify", "--bootstrap", kafka_bootstrap, "--topic", mirror,
                   "--checkpoints-topic", f"{mirror}.none")  # fmt: skip
    assert unsigned.returncode == 0, unsigned.stdout + unsigned.stderr
    assert "cannot detect" in unsigned.stderr


async def test_an_edited_body_is_named_from_the_topic(kafka_bootstrap, keys):
    private, public = keys
    events, checkpoints, _ = await signed_log(kafka_bootstrap, private)

    def edit(record: Any) -> Any:
        event = decode_record(record.key, record.value, record.headers)
        if event.app_id == "second-0" and event.sequence_id == 2:
            value = json.loads(record.value)
            value["actor"] = "mallory"  # the hash is left as it was
            return record.key, json.dumps(value).encode(), list(record.headers)
        return record.key, record.value, list(record.headers)

    mirror = await copy_topic(kafka_bootstrap, events, partitions=2, edit=edit)
    async with KafkaEventStore(kafka_bootstrap, mirror) as reader:
        report = await audit_kafka(
            reader, checkpoints_topic=checkpoints, public_keys=[load_public_key(public)]
        )
    assert [str(f) for f in report.findings] == [
        "stream ('tenant/0', 'second-0') sequence_id 2 its hash does not match its content "
        "and its predecessor's hash"
    ]


async def checkpoint_copy(bootstrap: str, checkpoints: str, extra: bytes) -> str:
    copy = await copy_topic(bootstrap, checkpoints, partitions=1)
    await publish(bootstrap, copy, extra)
    return copy


async def test_forged_and_replayed_checkpoints_are_named(kafka_bootstrap, keys):
    private, public = keys
    events, checkpoints, writers = await signed_log(kafka_bootstrap, private)
    records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
    chain = [r for r in records if r.writer == writers[0]]
    first, latest = chain[0], chain[-1]
    base = ["verify", "--bootstrap", kafka_bootstrap, "--topic", events, "--public-key", public]

    # an old checkpoint published again as the chain's next one
    replayed = await checkpoint_copy(
        kafka_bootstrap, checkpoints, encode_anchor(writers[0], latest.sequence + 1, first.signed)
    )
    done = cli(*base, "--checkpoints-topic", replayed)
    assert done.returncode == 1, done.stdout + done.stderr
    # (how many checkpoints the chain has depends on timing: one every 7 events
    # when none is in flight, so the replayed copy's number is read, not assumed)
    n = latest.sequence + 1
    assert (
        f"broken: writer {writers[0]!r}: checkpoint #{n}: carries sequence 1, expected {n} "
        "(an old checkpoint replayed" in done.stdout
    )

    async def with_latest_signature(body: Checkpoint) -> str:
        """A copy of the checkpoints topic plus ``body`` under the latest one's signature."""
        stolen = SignedCheckpoint(body=body.to_bytes(), signature=latest.signed.signature)
        return await checkpoint_copy(
            kafka_bootstrap, checkpoints, encode_anchor(writers[0], body.sequence, stolen)
        )

    # the latest checkpoint with its heads edited (re-canonicalised), the signature kept
    body = Checkpoint.from_bytes(latest.signed.body)
    edited = msgspec.structs.replace(
        body, sequence=body.sequence + 1, previous="00" * 32, changed=body.changed[:1]
    )
    done = cli(*base, "--checkpoints-topic", await with_latest_signature(edited))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"checkpoint #{n}: does not link to checkpoint #{n - 1}" in done.stdout
    linked = msgspec.structs.replace(edited, previous=_digest(latest.signed.body))
    done = cli(*base, "--checkpoints-topic", await with_latest_signature(linked))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"broken: writer {writers[0]!r}: checkpoint #{n}: signature does not verify" in (
        done.stdout
    )

    # a second, different checkpoint under a number the chain has
    twice = await checkpoint_copy(
        kafka_bootstrap, checkpoints, encode_anchor(writers[0], 2, first.signed)
    )
    done = cli(*base, "--checkpoints-topic", twice)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"broken: writer {writers[0]!r}: checkpoint #2 at offset" in done.stdout
    assert "(a forged checkpoint, or an old one replayed under this number)" in done.stdout

    # a byte-identical redelivery is not a problem (publishing is at least once)
    again = await checkpoint_copy(
        kafka_bootstrap, checkpoints, encode_anchor(writers[0], first.sequence, first.signed)
    )
    done = cli(*base, "--checkpoints-topic", again)
    assert done.returncode == 0, done.stdout + done.stderr


def _digest(body: bytes) -> str:
    from statelog.eventstore._checkpoints import digest

    return digest(body)


async def test_bad_keys_are_typed_errors_with_exit_2(kafka_bootstrap, keys, tmp_path):
    private, public = keys
    events, _, _ = await signed_log(kafka_bootstrap, private)
    other_private, other_public = generate_key_files(tmp_path / "other.key")
    corrupt = tmp_path / "corrupt.pub"
    corrupt.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    kafka = ["--bootstrap", kafka_bootstrap, "--topic", events]
    for key, says in (
        (str(tmp_path / "missing.pub"), "does not exist"),
        (str(corrupt), "is not a PEM public key"),
        (other_public, "none of the public keys given"),
    ):
        done = cli("verify", *kafka, "--public-key", key)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith("statelog: error:") and says in done.stderr
        assert done.stderr.count("\n") == 1
    with pytest.raises(KeyMismatchError):
        async with KafkaEventStore(kafka_bootstrap, events) as reader:
            await audit_kafka(reader, public_keys=[load_public_key(other_public)])
    # the writers' side: the worker refuses a bad key before it joins the group
    for key, says in ((str(tmp_path / "missing.key"), "does not exist"), (str(corrupt), "PEM")):
        done = cli("worker", "--bootstrap", kafka_bootstrap, "--group", "g", "--demo",
                   "--signing-key", key)  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        assert says in done.stderr and done.stdout == ""
    # a key given and no checkpoints topic: an error, not a pass
    bare = await create_topic(kafka_bootstrap)
    done = cli("verify", "--bootstrap", kafka_bootstrap, "--topic", bare, "--public-key", public)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not exist" in done.stderr


async def test_a_signing_store_needs_its_checkpoints_topic(kafka_bootstrap, keys):
    private, _ = keys
    events = await create_topic(kafka_bootstrap)
    store = KafkaEventStore(kafka_bootstrap, events, signing_key=private)
    with pytest.raises(StoreUnavailableError, match=r"\.checkpoints.*does not exist"):
        await store.connect()
    assert await read_topic(kafka_bootstrap, events) == []  # nothing written


async def test_checkpoint_now_and_nothing_when_no_head_moved(kafka_bootstrap, keys):
    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap, partitions=1)
    async with KafkaEventStore(kafka_bootstrap, events, signing_key=private) as store:
        await append_workload(store, streams=2, events=3)
        await store.checkpoint()
        await store.checkpoint()  # no head moved: no second checkpoint
        records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
        assert [r.sequence for r in records] == [1]
        body = Checkpoint.from_bytes(records[0].signed.body)
        assert sorted(body.changed) == sorted(
            (e.partition_key, e.app_id, e.sequence_id, e.hash)
            for e in [await _last(store, s) for s in await store.streams()]
        )
    records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
    assert [r.sequence for r in records] == [1]  # nothing new at close either
    assert KafkaEventStore(kafka_bootstrap, events).signing_key is None


async def _last(store: KafkaEventStore, stream: Any) -> Event:
    last = await store.last_sequence(*stream)
    (event,) = await store.read(*stream, from_sequence=last)
    return event


async def test_one_verifier_reads_the_relays_chain_too(kafka_bootstrap, keys, tmp_path):
    """A SQLite log relayed to Kafka: its anchored chain (writer "") verifies the same way,
    and the relay never anchors a checkpoint before the events it covers."""
    from statelog.eventstore import SQLiteEventStore
    from statelog.eventstore.kafka import OutboxRelay

    private, public = keys
    db = tmp_path / "log.db"
    async with SQLiteEventStore(db, signing_key=private) as store:
        await append_workload(store, streams=3, events=4)
        await store.checkpoint()  # covers all 12 events
    events, checkpoints = await topics(kafka_bootstrap)
    async with SQLiteEventStore(db) as store:
        relay = OutboxRelay(store, bootstrap_servers=kafka_bootstrap, topic=events, batch_size=5)
        async with relay:
            assert await relay.publish_batch() == 5
            records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
            assert all(Checkpoint.from_bytes(r.signed.body).position <= 5 for r in records)
            await relay.run(until_caught_up=True)
    records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
    assert records and {r.writer for r in records} == {""}
    done = cli("verify", "--bootstrap", kafka_bootstrap, "--topic", events, "--public-key", public)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 3 streams, 12 events; " in done.stdout
    assert "of 1 writer (signatures verified), 0 events after the signed heads" in done.stdout


async def test_a_fenced_zombie_never_signs_what_readers_skip(kafka_bootstrap, keys):
    """Ownership moves: the old owner's chain keeps the heads it wrote before the fence,
    the new owner's chain the heads after; the zombie's fenced append is not signed, so
    verify passes and the stream is held by both chains."""
    from statelog.eventstore import FencedError

    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap, partitions=1)
    old = await KafkaEventStore(kafka_bootstrap, events, signing_key=private).connect()
    new = await KafkaEventStore(kafka_bootstrap, events, signing_key=private).connect()
    try:
        await old.claim(0, "old")
        await old.append([ev("a", 0), ev("a", 1)], expected_sequence=-1)
        await old.checkpoint()
        await new.refresh()
        await new.claim(0, "new")
        with pytest.raises(FencedError):
            await old.append([ev("a", 2, "zombie")], expected_sequence=1)
        written = await new.append([ev("a", 2), ev("a", 3)], expected_sequence=1)
    finally:
        await old.aclose()  # its last checkpoint: nothing moved since #1 (the fenced one)
        await new.aclose()
    records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
    heads = {
        r.writer: [tuple(h) for h in Checkpoint.from_bytes(r.signed.body).changed] for r in records
    }
    assert heads == {
        old.writer_id: [("pk", "a", 1, heads[old.writer_id][0][3])],
        new.writer_id: [("pk", "a", 3, written[-1].event.hash)],
    }
    async with KafkaEventStore(kafka_bootstrap, events) as reader:
        report = await audit_kafka(reader, public_keys=[load_public_key(public)])
        assert reader.fenced_records == 1
    assert report.ok, report.findings
    assert report.writers == {old.writer_id: 1, new.writer_id: 1}


def ev(app: str, seq: int, actor: str | None = None) -> Event:
    return Event(
        partition_key="pk", app_id=app, sequence_id=seq, kind="action_completed",
        action="step", actor=actor,
    )  # fmt: skip


def test_kept_merkle_leaves_give_merkle_roots_bytes():
    """The checkpointer's kept leaves (only moved heads re-hashed) give the same root as
    ``merkle_root`` over every head, as streams are added and move, in any name order."""
    import random

    from statelog.eventstore._checkpoints import merkle_root
    from statelog.eventstore.kafka._signing import _Leaves

    rng = random.Random(7)
    leaves, heads = _Leaves(), {}
    names = ["", "a", "a/b", "b", "é", "Z", "tenant/1", "\U0001f600", "a\x00"]
    for _ in range(40):
        changed = {
            (rng.choice(names), rng.choice(names) + str(rng.randrange(30))): (
                rng.randrange(10**6),
                f"{rng.getrandbits(256):064x}",
            )
            for _ in range(rng.randrange(1, 12))
        }
        heads.update(changed)
        leaves.update(changed)
        assert leaves.root() == merkle_root(heads)
    assert _Leaves().root() == merkle_root({})


async def test_heads_noted_while_a_checkpoint_runs_are_signed_without_more_writes(
    kafka_bootstrap, keys
):
    """Appends that land while a checkpoint is being signed and published get their own
    checkpoint ``checkpoint_interval`` later, even if the writer goes idle (not only at
    close)."""
    private, public = keys
    events, checkpoints = await topics(kafka_bootstrap, partitions=1)
    store = KafkaEventStore(
        kafka_bootstrap, events, signing_key=private, checkpoint_every=1, checkpoint_interval=0.2
    )
    async with store:
        # the first append starts a checkpoint; the second is acknowledged while that one
        # is signed and published (one produce against a signature and a produce)
        await store.append([ev("a", 0)], expected_sequence=-1)
        await store.append([ev("b", 0)], expected_sequence=-1)

        async def both_signed() -> bool:
            records, _ = await read_anchor_records(kafka_bootstrap, checkpoints)
            heads = {tuple(h[:3]) for r in records for h in Checkpoint.from_bytes(
                r.signed.body
            ).changed}  # fmt: skip
            return heads == {("pk", "a", 0), ("pk", "b", 0)}

        await wait_for(both_signed, "both heads signed while the store is open", timeout=20)
    async with KafkaEventStore(kafka_bootstrap, events) as reader:
        report = await audit_kafka(reader, public_keys=[load_public_key(public)])
    assert report.ok and report.unsigned_events == 0, report.findings
