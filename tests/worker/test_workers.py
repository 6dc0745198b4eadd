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

from statelog.eventstore import Event, SnapshotStore, StreamId
from statelog.eventstore.kafka import KafkaEventStore
from statelog.worker import Command, CommandProducer, ensure_topics
from tests.worker.harness import TopicAudit, WorkerProcess, covers, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 6
APP = "paced=tests.worker.apps:paced_demo"
FAN = "fan=tests.worker.apps:fan_out"


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
    cluster: Cluster,
    reader: KafkaEventStore,
    commands: list[Command],
    steps: int,
    slack: int = 3,
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
        # a step may write a failed attempt too; a parallel step its children's completions
        assert steps <= len(events) <= steps + slack


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
    print(f"extra hashes on the topic: {audit.extra_hashes()}; stale-epoch records: "
          f"{len(audit.stale)}")  # fmt: skip
    await assert_fenced_exactly(cluster, audit)


async def assert_fenced_exactly(cluster: Cluster, audit: TopicAudit) -> None:
    """What the topic holds after a zombie, judged record by record.

    Every record a worker writes carries its partition's fence, so every late
    write of a zombie is a stale-epoch record; and a writer never puts two
    records at one sequence in its own epoch. So the only hashes besides the
    accepted one at a ``(stream, sequence_id)`` are on stale-epoch records, and
    a fresh reader skips as fenced exactly those.

    Two bugs made this fail before. "Fenced 12 vs 18 extra hashes": a zombie
    whose claim was dropped by one stream's ``FencedError`` went on appending
    its other streams of that partition *without* a fence header (readers
    accept such a record when it chains, or skip it as a duplicate, uncounted;
    the code before the fix, run again, left 4 such records: 16 extra hashes, 12
    fenced); now that append raises ``FencedError``. And a run cancelled by a
    rebalance while its ``run_started`` was in flight recorded ``cancelled`` at
    the same sequence (same epoch, second record skipped as a duplicate); now
    the store waits for a cancelled append's records before it reads on.
    """
    assert audit.unfenced == []
    unexplained = audit.unexplained()
    assert unexplained == [], audit.describe(unexplained)
    async with KafkaEventStore(cluster.bootstrap, cluster.events_topic) as fresh:
        for stream, chain in audit.accepted.items():
            kept = await fresh.read(stream.partition_key, stream.app_id)
            assert [e.hash for e in kept] == [e.hash for e in chain], stream
        assert fresh.fenced_records == len(audit.stale)


async def test_a_paused_worker_inside_parallel_maps_cannot_fork_their_children(
    cluster: Cluster,
) -> None:
    """parallel_map children live in their parent's partition and carry its fence."""
    workers = [cluster.start(f"w{n}", "--app", FAN) for n in range(3)]
    await cluster.settled(workers)
    steps = 180  # about 30 rounds of three children, two paced steps each
    commands = [
        Command.new("start", f"fan-{n}", partition_key=f"tenant-{n % 3}", graph="fan",
                    max_steps=steps)
        for n in range(12)
    ]  # fmt: skip
    await cluster.submit(commands)
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()
    try:
        streams = [c.stream for c in commands]
        zombie = workers[2]

        async def some_progress() -> bool:
            lengths = await cluster.lengths(reader, streams)
            return sum(lengths.values()) >= len(streams) * 15

        await wait_for(some_progress, "the fan-outs to be under way", timeout=60)
        zombie.signal(signal.SIGSTOP)
        others = [w for w in workers if w is not zombie]
        try:
            await cluster.settled(others)
        finally:
            zombie.signal(signal.SIGCONT)
        await wait_for(
            lambda: covers(workers, PARTITIONS) and len(zombie.events("assigned")) > 1,
            f"the woken worker to rejoin\n{cluster.diagnostics()}",
            timeout=60,
        )
        await assert_complete_and_dense(cluster, reader, commands, steps, slack=12)
    finally:
        await reader.aclose()
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    children = [s for s in audit.accepted if ".fan." in s.app_id]
    parents = {c.stream for c in commands}
    assert children and set(audit.accepted) == parents | set(children)
    for parent in parents:
        for event in audit.accepted[parent]:
            if event.action == "fan" and event.kind == "action_completed":
                for child in event.result:
                    chain = audit.accepted[StreamId(parent.partition_key, child)]
                    assert chain[-1].kind == "completed", (child, [e.kind for e in chain])
    for child in children:
        parent = StreamId(child.partition_key, child.app_id.split(".fan.")[0])
        assert audit.home[child] == audit.home[parent], child
    late_children = [e for _, e in audit.stale if ".fan." in e.app_id]
    print(f"\nstale-epoch records: {len(audit.stale)} ({len(late_children)} of children); "
          f"extra hashes: {audit.extra_hashes()}; fenced reports of the woken worker: "
          f"{len(zombie.events('fenced'))}")  # fmt: skip
    await assert_fenced_exactly(cluster, audit)


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
        cancel = Command.new("cancel", "endless")
        await cluster.submit([cancel])

        async def stopped() -> bool:
            first = (await cluster.lengths(reader, [endless.stream]))["endless"]
            await asyncio.sleep(0.5)
            return first == (await cluster.lengths(reader, [endless.stream]))["endless"] > 0

        await wait_for(stopped, "the cancelled run to stop", 60)
        assert worker.events("cancel")
        events = await reader.read(endless.partition_key, endless.app_id)
        cancels = [e for e in events if e.kind == "cancelled"]
        assert [e.correlation_id for e in cancels] == [cancel.idempotency_key]
        assert events[-1] == cancels[0]
    finally:
        await reader.aclose()
    worker.stop()  # SIGTERM: it leaves the group and exits 0
    assert worker.proc.returncode == 0, worker.tail()
    assert worker.events("stopped")


async def test_a_cancel_whose_owner_dies_before_acting_takes_effect_on_the_next_owner(
    cluster: Cluster,
) -> None:
    workers = [cluster.start(f"w{n}") for n in range(3)]
    await cluster.settled(workers)
    run = Command.new("start", "doomed", partition_key="t", graph="paced", max_steps=1_000_000)
    await cluster.submit([run])
    reader = await KafkaEventStore(cluster.bootstrap, cluster.events_topic).connect()

    def owner_of(partition: int) -> WorkerProcess:
        (owner,) = [w for w in cluster.live() if partition in w.owned()]
        return owner

    async def cancelled_events() -> list[Event]:
        await reader.refresh()
        events = await reader.read(run.partition_key, run.app_id)
        return [e for e in events if e.kind == "cancelled"]

    try:
        await wait_for(
            lambda: _all_at_least(cluster, reader, [run.stream], 5), "the run to be under way"
        )
        partition = reader._index.heads[run.stream].partition
        first = owner_of(partition)
        # the owner never reads the cancel: it is stopped, then killed
        first.signal(signal.SIGSTOP)
        cancel = Command.new("cancel", run.app_id, partition_key=run.partition_key)
        await cluster.submit([cancel])
        first.signal(signal.SIGKILL)
        first.proc.wait(10)
        await cluster.settled([w for w in workers if w is not first])
        await wait_for(cancelled_events, f"the cancel to be recorded\n{cluster.diagnostics()}")
        lengths: list[int] = []

        async def stopped() -> bool:
            lengths.append((await cluster.lengths(reader, [run.stream]))[run.app_id])
            return len(lengths) > 3 and lengths[-1] == lengths[-4]

        await wait_for(stopped, "the cancelled run to stop growing", every=0.5)
        events = await reader.read(run.partition_key, run.app_id)
        assert events[-1].kind == "cancelled"
        assert events[-1].correlation_id == cancel.idempotency_key
        # a producer retry of the same cancel reaches a third owner, which finds it
        # in the log (not in its memory of keys) and records nothing
        second = owner_of(partition)
        second.signal(signal.SIGKILL)
        second.proc.wait(10)
        last = [w for w in workers if w not in (first, second)]
        await cluster.settled(last)
        await cluster.submit([cancel])
        await wait_for(
            lambda: any(
                e.get("key") == cancel.idempotency_key for e in last[0].events("duplicate")
            ),
            f"the third owner to find the cancel recorded\n{cluster.diagnostics()}",
        )
        assert [e.correlation_id for e in await cancelled_events()] == [cancel.idempotency_key]
        assert len(await reader.read(run.partition_key, run.app_id)) == len(events)
    finally:
        await reader.aclose()
    audit = await TopicAudit.read(cluster.bootstrap, cluster.events_topic)
    assert audit.unexplained() == []
