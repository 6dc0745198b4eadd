"""The relay CLI SIGKILLed at random moments and restarted: at least once, no gaps."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statelog.eventstore import Event, SQLiteEventStore
from statelog.eventstore.kafka import KafkaSubscription, SQLiteRelayCheckpoint
from tests.eventstore.test_kafka_relay import _check_topic
from tests.kafka_broker import FAST_GROUP
from tests.kafka_helpers import append_workload, read_topic
from tests.ops_support import v2

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def _relay_command(db: Path, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "statelog",
        "relay",
        "--db",
        str(db),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--batch-size",
        "5",
        "--progress",
        "0.5",
        *extra,
    ]


def _env() -> dict[str, str]:
    """The relay subprocesses' environment: this one, importing this checkout's packages."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _run_relay(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the relay CLI to its end; its output captured as text."""
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=timeout
    )


async def _append_while(store, stop_at: float, counters: dict[str, int], out: list) -> None:
    """The engine keeps appending while the relay runs (and dies)."""
    n = 0
    while time.monotonic() < stop_at:
        app = f"live-{n % 5}"
        seq = counters.get(app, -1) + 1
        event = v2(
            partition_key="live",
            app_id=app,
            sequence_id=seq,
            kind="action_completed",
            writes={"seq": seq},
        )
        out.extend(await store.append([event], expected_sequence=seq - 1))
        counters[app] = seq
        n += 1
        await asyncio.sleep(0.005)


async def test_relay_killed_at_random_moments_publishes_every_event(
    kafka_bootstrap, make_topic, tmp_path
):
    seed = int(os.environ.get("STATELOG_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topic = await make_topic(partitions=3)
    db = tmp_path / "log.db"
    store = await SQLiteEventStore.open(db)
    recorded = await append_workload(store, streams=8, events=60)
    counters: dict[str, int] = {}
    kills = 0
    try:
        for _round in range(4):
            # A backlog, so the relay is busy publishing when it is killed.
            recorded += await append_workload(store, streams=4, events=50, prefix=f"r{_round}")
            log_path = tmp_path / f"relay-{_round}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    _relay_command(db, kafka_bootstrap, topic),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=_env(),
                )
                try:
                    window = rng.uniform(0.5, 2.0)
                    await _append_while(store, time.monotonic() + window, counters, recorded)
                finally:
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=10)
            assert process.returncode == -signal.SIGKILL, log_path.read_text()
            kills += 1
        # A last relay that runs to the end: everything is published.
        final = _run_relay(_relay_command(db, kafka_bootstrap, topic, "--until-caught-up"), 120)
        assert final.returncode == 0, final.stderr
        assert f"position {len(recorded)}, lag 0" in final.stderr
    finally:
        await store.aclose()
    checkpoint = SQLiteRelayCheckpoint(db, topic)
    assert await checkpoint.load() == len(recorded)
    await checkpoint.aclose()

    records = await read_topic(kafka_bootstrap, topic, expect=len(recorded))
    assert len(records) >= len(recorded), f"seed {seed}"
    _check_topic(records, recorded, exactly_once=False)  # at least once, no reordering
    print(f"seed {seed}: {len(records)} records for {len(recorded)} events")

    # After de-duplication by the subscription: exactly once, in per-stream order.
    events: list[Event] = []
    async with KafkaSubscription(
        kafka_bootstrap, topic, f"kill-{seed}", poll_timeout=0.3, **FAST_GROUP
    ) as sub:
        async with asyncio.timeout(60):
            async for batch in sub.batches():
                events.extend(batch)
                if len(events) >= len(recorded):
                    break
    assert len(events) == len(recorded), f"seed {seed}"
    for stream in {r.event.stream for r in recorded}:
        assert [e for e in events if e.stream == stream] == [
            r.event for r in recorded if r.event.stream == stream
        ], f"seed {seed}"
    assert kills == 4


async def test_relay_cli_stops_cleanly_on_sigterm_and_reports_status(
    kafka_bootstrap, make_topic, tmp_path
):
    topic = await make_topic()
    db = tmp_path / "log.db"
    store = await SQLiteEventStore.open(db)
    recorded = await append_workload(store, streams=3, events=10)
    await store.aclose()
    process = subprocess.Popen(
        _relay_command(db, kafka_bootstrap, topic),
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        checkpoint = SQLiteRelayCheckpoint(db, topic)
        while await checkpoint.load() < len(recorded):
            assert time.monotonic() < deadline and process.poll() is None
            await asyncio.sleep(0.1)
        await checkpoint.aclose()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"stopped, position {len(recorded)}, lag 0" in err
    status = _run_relay([*_relay_command(db, kafka_bootstrap, topic), "--status"], 60)
    assert status.returncode == 0, status.stderr
    assert f"position {len(recorded)}, head {len(recorded)}, lag 0" in status.stdout
    missing = _run_relay(_relay_command(tmp_path / "nope.db", kafka_bootstrap, topic), 60)
    assert missing.returncode == 2 and "no database" in missing.stderr
