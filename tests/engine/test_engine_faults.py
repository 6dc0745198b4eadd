"""Kill -9 the demo at random moments, race two processes on one app: no gap, no fork.

Everything runs against real SQLite files; the reference run is the same
deterministic workflow, uninterrupted, in memory.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state
from statelog.eventstore import MemoryEventStore, SnapshotStore, SQLiteEventStore, fold, load_state

ROOT = Path(__file__).resolve().parents[2]
APP = "demo-orders"


def demo_cmd(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "statelog", "demo", "--db", str(db), "--quiet", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        demo_cmd(db, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )


def kill_after_start(proc: subprocess.Popen[str], delay: float) -> None:
    """Wait for the demo's first line (the app is open and stepping), then SIGKILL it."""
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


async def check_stream(db: Path) -> tuple[int, dict[str, Any]]:
    """The app's stream (and every child's) is dense and its chain verifies."""
    async with await SQLiteEventStore.open(db) as store:
        assert await store.verify() is None
        events = await store.read("", APP)
        assert [e.sequence_id for e in events] == list(range(len(events)))
        return events[-1].sequence_id, fold(events)


async def completed_steps(db: Path) -> int:
    """How many steps the app completed (a killed attempt may be recorded twice as
    ``attempt_failed``: the resumed process tries again, so sequence ids shift)."""
    async with await SQLiteEventStore.open(db) as store:
        events = await store.read("", APP)
    return sum(1 for e in events if e.kind == "action_completed")


async def reference(steps: int) -> dict[str, Any]:
    """An uninterrupted in-memory run of ``steps`` completed steps: the final state."""
    store = MemoryEventStore()
    app = await (
        demo_builder()
        .with_identifiers(app_id=APP)
        .with_store(store)
        .initialize_from(default_state=demo_initial_state(), default_entrypoint=DEMO_ENTRYPOINT)
        .abuild()
    )
    done = 0
    async with app:
        while done < steps:
            await app.astep()
            done += 1
    return app.state.get_all()


def test_kill_9_transactional_demo_20_times_then_finish(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    rng = random.Random(20)
    last = -1
    for _ in range(20):
        proc = start(db, "--steps", "100000", "--snapshot-every", "500")
        kill_after_start(proc, rng.uniform(0.0, 0.35))
        seq, _ = asyncio.run(check_stream(db))
        assert seq >= last  # committed steps are never lost
        last = seq
    final_steps = last + 150
    done = subprocess.run(
        demo_cmd(db, "--steps", str(final_steps)),
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    seq, folded = asyncio.run(check_stream(db))
    # demo --steps N stops once the stream reaches N; a step that retried wrote its
    # attempt_failed events too, so the last one may go a little past N
    assert final_steps <= seq < final_steps + 4
    assert folded == asyncio.run(reference(asyncio.run(completed_steps(db))))
    probes = sorted(rng.sample(range(final_steps + 1), 15))

    async def states_at() -> None:
        async with (
            await SQLiteEventStore.open(db) as store,
            await SnapshotStore.open(db) as snapshots,
        ):
            events = await store.read("", APP)
            for probe in probes:  # snapshot + replay == the fold of the log up to there
                state, got = await load_state(store, snapshots, "", APP, at_sequence=probe)
                assert (got, state) == (probe, fold(events[: probe + 1]))

    asyncio.run(states_at())


def test_kill_9_fire_and_forget_loses_only_a_tail(tmp_path: Path) -> None:
    db = tmp_path / "ff.db"
    rng = random.Random(7)
    for _ in range(4):
        proc = start(db, "--steps", "100000", "--durability", "fire_and_forget")
        kill_after_start(proc, rng.uniform(0.1, 0.4))
        asyncio.run(check_stream(db))  # dense and verified: no gap, no fork
    seq, _ = asyncio.run(check_stream(db))
    done = subprocess.run(
        demo_cmd(db, "--steps", str(seq + 100), "--durability", "fire_and_forget"),
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    final, folded = asyncio.run(check_stream(db))
    assert folded == asyncio.run(reference(asyncio.run(completed_steps(db))))


def test_two_processes_on_one_app_one_gets_concurrency_error(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    first = subprocess.run(
        demo_cmd(db, "--steps", "5"), capture_output=True, text=True, env=env(), cwd=ROOT
    )
    assert first.returncode == 0, first.stderr
    a = start(db, "--steps", "10000000")
    b = start(db, "--steps", "10000000")
    procs = [a, b]
    try:
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        _, err = loser.communicate(timeout=10)
        assert loser.returncode == 2, err
        assert "expected last sequence_id" in err
        assert APP in err  # the message names the stream
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.communicate(timeout=30)
    asyncio.run(check_stream(db))  # one history, no fork


SYNC_DEMO = """
import sys
from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

app = (
    demo_builder()
    .with_identifiers(app_id=sys.argv[2])
    .with_store(sys.argv[1], synchronous=sys.argv[3])
    .initialize_from(default_state=demo_initial_state(), default_entrypoint=DEMO_ENTRYPOINT)
    .build()
)
print("open", flush=True)
while True:
    app.step()
    print(app.sequence_id, flush=True)  # acknowledged: committed before step() returned
"""


def test_kill_9_a_sync_app_writing_on_its_own_thread(tmp_path: Path) -> None:
    """The sync face writes its lone appends on the calling thread (``SYNC_CALLER``):
    killed at random moments, in both synchronous modes, no acknowledged step is
    lost, the stream stays dense, its chain verifies and it folds like a clean run."""
    db = tmp_path / "sync.db"
    rng = random.Random(9)
    for i in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", SYNC_DEMO, str(db), APP, ("NORMAL", "FULL")[i % 2]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open", proc.communicate(timeout=30)
        time.sleep(rng.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        acknowledged = [int(line) for line in out.split()]
        seq, _ = asyncio.run(check_stream(db))
        if acknowledged:
            assert seq >= acknowledged[-1]  # every acknowledged step is in the file
    seq, folded = asyncio.run(check_stream(db))
    assert seq > 12
    assert folded == asyncio.run(reference(asyncio.run(completed_steps(db))))
