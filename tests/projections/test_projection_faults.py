"""Kill -9 a projection process mid-rebuild and mid-live-run: nothing applied twice or skipped.

The worker is the real CLI (``python -m statelog projections ...``) running the
``seen`` projection, whose table has UNIQUE(stream, sequence_id): an event
applied twice makes the worker fail, an event skipped is missing at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from statelog._cli import main
from statelog.eventstore import SQLiteEventStore
from tests.projection_support import append_simple, make_events, wait_until

REPO = Path(__file__).resolve().parents[2]


def worker_env(delay: float) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "STATELOG_TEST_SEEN_DELAY": str(delay)}


async def spawn(*args: str, delay: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statelog",
        "projections",
        *args,
        "--import",
        "tests.projection_support",
        cwd=REPO,
        env=worker_env(delay),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def seen_rows(into: Path) -> list[tuple[str, str, int, int]]:
    db = sqlite3.connect(into)
    try:
        return db.execute(
            "SELECT partition_key, app_id, sequence_id, position FROM seen ORDER BY position"
        ).fetchall()
    finally:
        db.close()


def checkpoint_events(into: Path) -> int:
    if not into.exists():
        return 0
    db = sqlite3.connect(into)
    try:
        row = db.execute(
            "SELECT events FROM statelog_projections WHERE name = 'seen' AND status = 'live'"
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


async def expected_rows(log: Path) -> list[tuple[str, str, int, int]]:
    async with await SQLiteEventStore.open(log) as store:
        return [
            (r.event.partition_key, r.event.app_id, r.event.sequence_id, r.position)
            for r in await store.read_all()
        ]


async def kill_at_random(
    proc: asyncio.subprocess.Process, rng: random.Random
) -> tuple[bool, bytes]:
    """SIGKILL ``proc`` at a random moment: whether it was killed (False: it finished
    first), and its stderr. The pipe is read to its end either way: one left open
    past the test's loop is an unclosed FileIO, which warns (an error in this suite)
    in whichever later test happens to collect it."""
    try:
        await asyncio.wait_for(proc.wait(), rng.uniform(0.4, 1.6))
        killed = False
    except TimeoutError:
        proc.send_signal(signal.SIGKILL)
        killed = True
    _, err = await proc.communicate()
    return killed, err


async def test_kill_9_during_a_rebuild_then_resume(tmp_path: Path) -> None:
    log, into = tmp_path / "log.db", tmp_path / "rm.db"
    async with await SQLiteEventStore.open(log) as store:
        total = await append_simple(store, streams=6, per_stream=500, batch=25)
    rng = random.Random(5)
    args = ("rebuild", "seen", "--from", f"sqlite:{log}", "--into", str(into))
    kills = 0
    for _ in range(4):
        # 177 batches of 17 with 12 ms each inside the transaction: ~2 s of work,
        # so a kill drawn from 0.4-1.6 s lands mid-rebuild however fast the machine.
        proc = await spawn(*args, "--batch-size", "17", "--quiet", delay=0.012)
        killed, err = await kill_at_random(proc, rng)
        if killed:
            kills += 1
        else:
            assert proc.returncode == 0, err.decode()
            break
    assert kills >= 1
    proc = await spawn(*args, "--quiet", delay=0.0)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    rows = seen_rows(into)
    assert len(rows) == total
    assert rows == await expected_rows(log)


async def test_kill_9_during_a_live_run_then_resume(tmp_path: Path) -> None:
    log, into = tmp_path / "log.db", tmp_path / "rm.db"
    rng = random.Random(9)
    args = ("run", "seen", "--from", f"sqlite:{log}", "--into", str(into), "--batch-size", "13")
    async with await SQLiteEventStore.open(log) as store:
        await append_simple(store, streams=3, per_stream=100, batch=10)
        written = [0]

        async def keep_appending() -> None:
            index = 0
            while True:
                events_app = f"live-{index % 4}"
                last = await store.last_sequence("p", events_app)
                specs = [({"n": index}, [], "tick")] * rng.randint(1, 5)
                batch = make_events("p", events_app, last + 1, specs, [index])
                await store.append(batch, expected_sequence=last)
                written[0] += len(batch)
                index += 1
                await asyncio.sleep(0.002)

        appender = asyncio.create_task(keep_appending())
        try:
            kills = 0
            for _ in range(4):
                proc = await spawn(*args, delay=0.002)
                killed, err = await kill_at_random(proc, rng)
                if killed:
                    kills += 1
                else:  # pragma: no cover - a live run does not end by itself
                    pytest.fail(err.decode())
            assert kills == 4 and written[0] > 0
        finally:
            appender.cancel()
            await asyncio.gather(appender, return_exceptions=True)
    expected = await expected_rows(log)
    proc = await spawn(*args, delay=0.0)
    try:
        await wait_until(lambda: checkpoint_events(into) >= len(expected), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert seen_rows(into) == expected


# --------------------------------------------------------------------------- the CLI


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.db"

    async def make() -> None:
        async with await SQLiteEventStore.open(log) as store:
            await append_simple(store, streams=2, per_stream=10, batch=5)

    asyncio.run(make())
    into = str(tmp_path / "rm.db")
    assert main(["projections", "rebuild", "nope", "--from", f"sqlite:{log}", "--into", into]) == 2
    assert "unknown projection" in capsys.readouterr().err
    missing = f"sqlite:{tmp_path / 'missing.db'}"
    assert main(["projections", "rebuild", "audit_trail", "--from", missing, "--into", into]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
    bad_into = str(tmp_path / "no" / "dir" / "rm.db")
    assert (
        main(
            ["projections", "rebuild", "audit_trail", "--from", f"sqlite:{log}", "--into", bad_into]
        )
        == 2
    )
    assert "cannot open the read model" in capsys.readouterr().err


def test_cli_list_rebuild_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.db"

    async def make() -> None:
        async with await SQLiteEventStore.open(log) as store:
            await append_simple(store, streams=2, per_stream=10, batch=5)

    asyncio.run(make())
    assert main(["projections", "list"]) == 0
    assert "audit_trail\tv2" in capsys.readouterr().out
    into = str(tmp_path / "rm.db")
    assert (
        main(["projections", "rebuild", "app_index", "--from", f"sqlite:{log}", "--into", into])
        == 0
    )
    out, err = capsys.readouterr()
    assert "generation 1 (v2) is live with 20 events" in out and "100%" in err
    assert main(["projections", "status", "--into", into]) == 0
    assert "app_index\tgeneration=1\tv2\tlive\tevents=20\tposition=20" in capsys.readouterr().out
