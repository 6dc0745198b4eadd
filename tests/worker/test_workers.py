"""``statelog worker`` processes in a group on the real test broker (docs/scale-out.md).

Every test uses its own topic prefix and group, 3 s sessions and few partitions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statelog.eventstore import SnapshotStore, StreamId
from statelog.eventstore.kafka import KafkaEventStore
from statelog.worker import Command, CommandProducer, ensure_topics
from tests.worker.harness import TopicAudit, WorkerProcess, covers, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 6
APP = "paced=tests.worker.apps:paced_demo"


class Cluster:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.group = f"{self.prefix}-group"
        self.workers: list[WorkerProcess] = []

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}.events"

    def start(self, name: str, *extra: str) -> WorkerProcess:
        worker = WorkerProcess(
            self.bootstrap, self.prefix, self.group, name, "--demo", "--app", APP, *extra
        )
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    async def settled(self, workers: list[WorkerProcess]) -> None:
        await wait_for(
            lambda: covers(workers, PARTITIONS),
            f"{len(workers)} workers to own the {PARTITIONS} partitions "
            + str({w.name: w.owned() for w in workers}),
            timeout=60,
        )

    async def submit(self, commands: list[Command]) -> None:
        async with CommandProducer(self.bootstrap, prefix=self.prefix) as producer:
            for command in commands:
                await producer.submit(command)

    async def lengths(self, reader: KafkaEventStore, streams: list[StreamId]) -> dict[str, int]:
        await reader.refresh()
        return {
            s.app_id: await reader.last_sequence(s.partition_key, s.app_id) + 1 for s in streams
        }

    def diagnostics(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.tail()}" for w in self.workers)


@pytest.fixture
async def cluster(kafka_bootstrap: str) -> AsyncIterator[Cluster]:
    made = Cluster(kafka_bootstrap)
    await ensure_topics(kafka_bootstrap, made.prefix, PARTITIONS)
    try:
        yield made
    finally:
        for worker in made.workers:
            worker.stop()


def cli(*args: str) -> str:
    """Run ``statelog ARGS``; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "statelog", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def starts(graph: str, count: int, steps: int, prefix: str = "app") -> list[Command]:
    return [
        Command.new("start", f"{prefix}-{n}", partition_key=f"tenant-{n % 4}", graph=graph,
                    max_steps=steps)
        for n in range(count)
    ]  # fmt: skip


async def assert_complete_and_dense(
    cluster: Cluster, reader: KafkaEventStore, commands: list[Command], steps: int
) -> None:
    streams = [c.stream for c in commands]
    await wait_for(
        lambda: _all_at_least(cluster, reader, streams, steps),
        f"all {len(streams)} apps to hold {steps} events\n{cluster.diagnostics()}",
        timeout=90,
        every=0.5,
    )
    for stream in streams:
        events = await reader.read(stream.partition_key, stream.app_id)
        assert [e.sequence_id for e in events] == list(range(len(events)))
        assert steps <= len(events) <= steps + 3  # a step may write a failed attempt too


async def _all_at_least(
    cluster: Cluster, reader: KafkaEventStore, streams: list[StreamId], steps: int
) -> bool:
    lengths = await cluster.lengths(reader, streams)
    return all(n >= steps for n in lengths.values())


async def test_three_workers_run_sixty_demo_apps_without_a_fork(cluster: Cluster) -> None:
    workers = [cluster.start(f"w{n}") for n in range(3)]
    await cluster.settled(workers)
    commands = starts("demo", 60, 12)
    await cluster.submit(commands[1:])
    one = commands[0]  # and one through the command line
    out = cli(
        "submit", "--bootstrap", cluster.bootstrap, "--topic-prefix", cluster.prefix,
        "--graph", "demo", "--app-id", one.app_id, "--partition-key", one.partition_key,
        "--max-steps", "12",
    )  # fmt: skip
    assert set(json.loads(out)) == {"partition", "offset", "idempotency_key"}
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        await assert_complete_and_dense(cluster, reader, commands, 12)
        assert reader.fenced_records == 0
        history = await reader.read(one.partition_key, one.app_id)
    finally:
        await reader.aclose()
    kafka = ["--bootstrap", cluster.bootstrap, "--topic", cluster.events_topic]
    listed = [json.loads(line) for line in cli("apps", "--json", *kafka).splitlines()]
    assert sorted(r["app_id"] for r in listed) == sorted(c.app_id for c in commands)
    shown = cli("history", one.app_id, "--partition-key", one.partition_key, "--json", *kafka)
    assert [json.loads(line)["hash"] for line in shown.splitlines()] == [e.hash for e in history]
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    assert audit.forks() == {}
    ran = {w.name: sum(1 for _ in w.events("assigned")) for w in workers}
    assert all(ran.values()), ran


async def test_kill_9_one_worker_mid_run_its_apps_finish_on_the_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    """With snapshots in a shared file: the new owner loads one and reads the tail."""
    shared = ("--snapshots", str(tmp_path / "snapshots.db"), "--snapshot-every", "10")
    workers = [cluster.start(f"w{n}", *shared) for n in range(3)]
    await cluster.settled(workers)
    steps = 40
    commands = starts("paced", 30, steps)
    await cluster.submit(commands)
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        streams = [c.stream for c in commands]
        victim = workers[0]
        victim_partitions = victim.owned()

        async def some_progress() -> bool:
            lengths = await cluster.lengths(reader, streams)
            return sum(lengths.values()) >= len(streams) * 5

        await wait_for(some_progress, "the apps to be under way", timeout=60)
        before = await cluster.lengths(reader, streams)
        killed_at = time.time()
        victim.signal(signal.SIGKILL)
        victim.proc.wait(10)
        survivors = [w for w in workers if w is not victim]
        await cluster.settled(survivors)
        await assert_complete_and_dense(cluster, reader, commands, steps)
        # time from the kill to the first step of one of the victim's unfinished apps
        resumed = []
        for stream in streams:
            if before[stream.app_id] >= steps:
                continue
            partition = reader._index.heads[stream].partition
            if partition not in victim_partitions:
                continue
            for event in await reader.read(
                stream.partition_key, stream.app_id, from_sequence=before[stream.app_id]
            ):
                stamp = event.timestamp.timestamp()
                if stamp > killed_at:
                    resumed.append(stamp)
                    break
        if resumed:
            print(f"\nkill -9 to first resumed step: {min(resumed) - killed_at:.2f} s")
        async with SnapshotStore(tmp_path / "snapshots.db") as snapshots:
            saved = [await snapshots.sequences(s.partition_key, s.app_id) for s in streams]
        assert all(saved), "every app has snapshots others can load"
    finally:
        await reader.aclose()
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    assert audit.forks() == {}


async def test_a_paused_worker_is_fenced_and_rejoins_without_a_fork(cluster: Cluster) -> None:
    workers = [cluster.start(f"w{n}") for n in range(3)]
    await cluster.settled(workers)
    steps = 50
    commands = starts("paced", 24, steps)
    await cluster.submit(commands)
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        streams = [c.stream for c in commands]
        zombie = workers[1]

        async def some_progress() -> bool:
            lengths = await cluster.lengths(reader, streams)
            return sum(lengths.values()) >= len(streams) * 5

        await wait_for(some_progress, "the apps to be under way", timeout=60)
        zombie.signal(signal.SIGSTOP)
        others = [w for w in workers if w is not zombie]
        try:
            await cluster.settled(others)  # its partitions moved: past the session timeout
        finally:
            zombie.signal(signal.SIGCONT)
        await wait_for(
            lambda: (
                covers(workers, PARTITIONS)
                and zombie.events("assigned")[-1:]
                and len(zombie.events("assigned")) > 1
            ),
            f"the woken worker to rejoin\n{cluster.diagnostics()}",
            timeout=60,
        )
        await assert_complete_and_dense(cluster, reader, commands, steps)
        late = len(zombie.events("fenced"))
        print(f"\nfenced appends reported by the woken worker: {late}; "
              f"records skipped by a reader: {reader.fenced_records}")  # fmt: skip
    finally:
        await reader.aclose()
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    async with KafkaEventStore(cluster.bootstrap, cluster.events_topic) as fresh:
        for stream, seq in audit.forks():
            kept = await fresh.read(stream.partition_key, stream.app_id, from_sequence=seq,
                                    to_sequence=seq)  # fmt: skip
            assert len(kept) == 1
        # the topic may hold a zombie's late records, but a reader keeps one record per
        # (stream, sequence_id) (above) and skips the stale epoch's as fenced
        extra = sum(len(h) - 1 for h in audit.forks().values())
        print(f"extra hashes on the topic: {extra}; fenced by a fresh reader: "
              f"{fresh.fenced_records}")  # fmt: skip
        assert extra == 0 or fresh.fenced_records > 0


async def test_duplicate_and_reordered_commands_never_run_a_step_twice(
    cluster: Cluster,
) -> None:
    workers = [cluster.start(f"w{n}") for n in range(2)]
    await cluster.settled(workers)
    first = starts("demo", 8, 10, prefix="dup")
    # a resume to 14 sent before the start to 10, then every start again (a
    # producer retry) with the same idempotency key, then again with new keys
    resumes = [
        Command.new("resume", c.app_id, partition_key=c.partition_key, graph="demo",
                    max_steps=14)
        for c in first
    ]  # fmt: skip
    again = [
        Command.new("start", c.app_id, partition_key=c.partition_key, graph="demo", max_steps=10)
        for c in first
    ]
    await cluster.submit(resumes + first + first + again)
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        await assert_complete_and_dense(cluster, reader, first, 14)
        # nothing more comes: wait until every worker committed every command
        await asyncio.sleep(0)
        for command in first:
            events = await reader.read(command.partition_key, command.app_id)
            steps = [e for e in events if e.kind != "attempt_failed"]
            assert 14 <= len(events) <= 16
            orders = [e for e in steps if e.action == "receive"]
            assert len(orders) == len({e.sequence_id for e in orders})
    finally:
        await reader.aclose()
    dupes = sum(len(w.events("duplicate")) for w in workers)
    assert dupes >= 1
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    assert audit.forks() == {}


async def test_input_runs_once_at_its_sequence_and_cancel_stops_a_run(cluster: Cluster) -> None:
    worker = cluster.start("w0")
    await cluster.settled([worker])
    (start,) = starts("demo", 1, 5, prefix="in")
    endless = Command.new("start", "endless", graph="paced", max_steps=1_000_000)
    await cluster.submit([start, endless])
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        await assert_complete_and_dense(cluster, reader, [start], 5)
        last = await reader.last_sequence(start.partition_key, start.app_id)
        stream = {"partition_key": start.partition_key, "graph": "demo", "inputs": {"note": "hi"}}
        given = Command.new("input", start.app_id, at_sequence=last, **stream)
        # the same input again (a new key: a resubmission) and one from a stale view
        again = Command.new("input", start.app_id, at_sequence=last, **stream)
        stale = Command.new("input", start.app_id, at_sequence=last - 2, **stream)
        await cluster.submit([given, again, stale])
        await wait_for(
            lambda: len(worker.events("stale_input")) >= 2, "two stale inputs reported", 60
        )
        await reader.refresh()
        events = await reader.read(start.partition_key, start.app_id)
        after = [e for e in events if e.sequence_id > last and e.kind != "attempt_failed"]
        assert len(after) == 1, [(e.sequence_id, e.kind, e.action) for e in events]
        # cancel: the endless run stops growing
        await cluster.submit([Command.new("cancel", "endless")])

        async def stopped() -> bool:
            first = (await cluster.lengths(reader, [endless.stream]))["endless"]
            await asyncio.sleep(0.5)
            return first == (await cluster.lengths(reader, [endless.stream]))["endless"] > 0

        await wait_for(stopped, "the cancelled run to stop", 60)
        assert worker.events("cancel")
    finally:
        await reader.aclose()
    worker.stop()  # SIGTERM: it leaves the group and exits 0
    assert worker.proc.returncode == 0, worker.tail()
    assert worker.events("stopped")
