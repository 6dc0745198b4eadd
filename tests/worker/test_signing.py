"""``statelog worker --signing-key``: each worker signs its own checkpoint chain (real broker).

Two workers with one key run demo apps; each publishes a chain to
``{prefix}.events.checkpoints``; ``statelog verify --bootstrap --public-key``
replays both and holds every signed head against the events topic. A copy of
the topic without a stream's last event, and an old checkpoint published
again as the newest, are named.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statelog.eventstore import generate_key_files
from statelog.eventstore._checkpoints import Checkpoint
from statelog.eventstore.kafka import KafkaEventStore, decode_record, read_anchor_records
from statelog.eventstore.kafka._signing import encode_anchor
from statelog.worker import ensure_topics
from tests.eventstore.test_kafka_signing import cli, copy_topic, publish
from tests.service.conftest import ServeProcess
from tests.worker.harness import WorkerProcess, covers, wait_for
from tests.worker.test_workers import PARTITIONS, Cluster, starts

pytestmark = pytest.mark.kafka


@pytest.fixture
async def cluster(kafka_bootstrap: str) -> AsyncIterator[Cluster]:
    made = Cluster(kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, made.prefix, PARTITIONS)  # with .events.checkpoints
    try:
        yield made
    finally:
        for worker in made.workers:
            worker.stop()


async def test_signing_workers_publish_chains_that_verify_and_name_tampering(
    cluster: Cluster, tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "signing.key")
    signing = ["--signing-key", private, "--checkpoint-seconds", "0.5"]
    workers = [cluster.start(f"w{n}", *signing) for n in range(2)]
    await cluster.settled(workers)
    commands = starts("demo", 12, 10)
    await cluster.submit(commands)
    kafka = ["--bootstrap", cluster.bootstrap, "--topic", cluster.events_topic]

    async def all_signed() -> bool:  # the workers sign every 0.5 s while they write
        done = cli("verify", *kafka, "--public-key", public)
        return done.returncode == 0 and ", 0 events after the signed heads" in done.stdout

    await wait_for(all_signed, f"every head signed\n{cluster.diagnostics()}", timeout=90, every=1)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        worker.stop()
    chains = {w.events("started")[0]["checkpoint_writer"]: w.name for w in workers}
    assert len(chains) == 2
    assert all(
        w.events("stopped")[0]["checkpoints_topic"].endswith(".checkpoints") for w in workers
    )

    done = cli("verify", *kafka, "--public-key", public)
    assert done.returncode == 0, done.stdout + done.stderr + cluster.diagnostics()
    assert "of 2 writers (signatures verified), 0 events after the signed heads" in done.stdout
    checkpoints = f"{cluster.events_topic}.checkpoints"
    records, problems = await read_anchor_records(cluster.bootstrap, checkpoints)
    assert problems == [] and {r.writer for r in records} == set(chains)

    # a copy of the events topic without one app's last event
    victim = commands[0].stream
    rows = [json.loads(line) for line in cli("apps", *kafka, "--json").stdout.splitlines()]
    (last,) = [r["last_sequence"] for r in rows if r["app_id"] == victim.app_id]

    def cut(record: Any) -> Any:
        if record.key:
            event = decode_record(record.key, record.value, record.headers)
            if event.stream == victim and event.sequence_id == last:
                return None
        return record.key, record.value, list(record.headers)

    mirror = await copy_topic(cluster.bootstrap, cluster.events_topic, partitions=PARTITIONS,
                              edit=cut)  # fmt: skip
    done = cli("verify", "--bootstrap", cluster.bootstrap, "--topic", mirror,
               "--checkpoints-topic", checkpoints, "--public-key", public)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"broken: stream {tuple(victim)!r} sequence_id {last} is missing: the stream ends at "
        f"sequence_id {last - 1}" in done.stdout
    )
    assert done.stdout.count("broken:") == 1

    # an old checkpoint of one chain published again as its newest
    writer = sorted(chains)[0]
    chain = [r for r in records if r.writer == writer]
    await publish(
        cluster.bootstrap,
        checkpoints,
        encode_anchor(writer, chain[-1].sequence + 1, chain[0].signed),
    )
    done = cli("verify", *kafka, "--public-key", public)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"broken: writer {writer!r}: checkpoint #{chain[-1].sequence + 1}: carries sequence 1"
        in done.stdout
    )


async def test_serve_kafka_signs_what_it_writes_itself(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``serve --kafka --signing-key``: the workers sign the runs, the service its forks."""
    private, public = generate_key_files(tmp_path / "signing.key")
    prefix = f"s{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, prefix, 2)
    worker = WorkerProcess(
        kafka_bootstrap, prefix, f"{prefix}-g", "w0", "--demo", "--signing-key", private
    )
    serve = ServeProcess(
        tmp_path / "ops.db", "--kafka", kafka_bootstrap, "--topic-prefix", prefix,
        "--signing-key", private, apps=[],
    )  # fmt: skip
    try:
        await wait_for(lambda: covers([worker], 2), "the worker to own the partitions", 60)
        await asyncio.to_thread(serve.start)
        async with httpx.AsyncClient(base_url=serve.url, timeout=10) as client:
            answer = await client.post(
                "/v1/runs", json={"graph": "demo", "app_id": "via-serve", "max_steps": 6}
            )
            assert answer.status_code == 202, answer.text
            op_id = answer.json()["id"]

            async def ended() -> bool:
                body = (await client.get(f"/v1/operations/{op_id}")).json()
                return body["status"] not in ("queued", "running")

            await wait_for(ended, "the run to end", 60)
            forked = await client.post(
                "/v1/apps/via-serve/fork", json={"new_app_id": "branch", "sequence_id": 3}
            )
            assert forked.status_code == 201, forked.text
    finally:
        if serve.proc is not None:
            assert serve.stop() == 0  # the service's last checkpoint, at close
        worker.stop()
    kafka = ["--bootstrap", kafka_bootstrap, "--topic", f"{prefix}.events"]
    done = cli("verify", *kafka, "--public-key", public)
    assert done.returncode == 0, done.stdout + done.stderr + worker.tail()
    assert "ok: 2 streams" in done.stdout
    assert "of 2 writers (signatures verified), 0 events after the signed heads" in done.stdout
    records, _ = await read_anchor_records(kafka_bootstrap, f"{prefix}.events.checkpoints")
    service_chain = [r for r in records if r.writer != worker.events("stopped")[0].get(
        "checkpoint_writer"
    )]  # fmt: skip
    (body,) = {r.signed.body for r in service_chain}  # one fork, one checkpoint at close
    assert b'"branch"' in body


async def test_after_kill_9_the_streams_move_to_another_chain_and_still_verify(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A worker killed mid-run: its chain ends at its last published checkpoint, the new
    owner signs the same streams further on in its own chain; both hold."""
    private, public = generate_key_files(tmp_path / "signing.key")
    signing = ["--signing-key", private, "--checkpoint-seconds", "0.3"]
    workers = [cluster.start(f"w{n}", *signing) for n in range(2)]
    await cluster.settled(workers)
    steps = 60  # 20 ms a step: mid-run when the victim has signed twice (every 0.3 s)
    commands = starts("paced", 12, steps)
    await cluster.submit(commands)
    checkpoints = f"{cluster.events_topic}.checkpoints"
    victim, survivor = workers
    victim_chain = victim.events("started")[0]["checkpoint_writer"]

    async def victim_signed() -> bool:
        records, _ = await read_anchor_records(cluster.bootstrap, checkpoints)
        return sum(r.writer == victim_chain for r in records) >= 2

    await wait_for(victim_signed, f"the victim's checkpoints\n{cluster.diagnostics()}", 60)
    victim.signal(signal.SIGKILL)
    victim.proc.wait(10)
    await cluster.settled([survivor])
    kafka = ["--bootstrap", cluster.bootstrap, "--topic", cluster.events_topic]
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        await wait_for(
            lambda: _all_at(cluster, reader, commands, steps),
            f"the apps to finish on the survivor\n{cluster.diagnostics()}",
            timeout=90,
            every=0.5,
        )
    finally:
        await reader.aclose()
    survivor.signal(signal.SIGTERM)
    survivor.stop()
    done = cli("verify", *kafka, "--public-key", public)
    assert done.returncode == 0, done.stdout + done.stderr + cluster.diagnostics()
    # (what the victim wrote after its last checkpoint and did not move on is unsigned)
    assert "of 2 writers (signatures verified)" in done.stdout
    records, _ = await read_anchor_records(cluster.bootstrap, checkpoints)
    signed_by: dict[tuple[str, str], set[str]] = {}
    for record in records:
        for pk, app, _, _ in Checkpoint.from_bytes(record.signed.body).changed:
            signed_by.setdefault((pk, app), set()).add(record.writer)
    moved = [s for s, chains in signed_by.items() if len(chains) == 2]
    assert moved, signed_by  # the victim's unfinished apps, signed by both chains


async def _all_at(
    cluster: Cluster, reader: KafkaEventStore, commands: list[Any], steps: int
) -> bool:
    lengths = await cluster.lengths(reader, [c.stream for c in commands])
    return all(n >= steps for n in lengths.values())
