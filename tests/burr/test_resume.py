"""Burr's counter example, killed with SIGKILL mid-run, resumes from statelog's log.

The example (counter_app.py, Burr's own but for its persister line) already
builds with ``initialize_from(persister, resume_at_next_action=True, ...)``.
A first process is killed while it counts; a second one, same app id, picks
up where the log ends and finishes. Its final state is the state of an
uninterrupted run, and ``statelog verify`` passes on the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from statelog.eventstore import Event, SQLiteEventStore, fold

HERE = Path(__file__).resolve().parent
APP_ID = "a7c8e525-58f9-4e84-b4b3-f5b80b5b0d0e"  # the example's own
COUNT_UP_TO = 20
KILL_AFTER = "counted to 5"


def _command(storage: Path) -> list[str]:
    return [
        sys.executable,
        "-u",
        str(HERE / "run_counter.py"),
        APP_ID,
        str(COUNT_UP_TO),
        str(storage),
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _finish(workdir: Path) -> dict[str, Any]:
    done = subprocess.run(
        _command(workdir / "tracking"),
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    final = [line for line in done.stdout.splitlines() if line.startswith("final ")]
    assert len(final) == 1, done.stdout
    state: dict[str, Any] = json.loads(final[0].removeprefix("final "))
    return state


def _events(db: Path) -> list[Event]:
    async def go() -> list[Event]:
        async with SQLiteEventStore(db) as store:
            return await store.read("demo-user", APP_ID)

    return asyncio.run(go())


def test_a_killed_burr_app_resumes_from_the_log(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    expected = _finish(straight)
    assert expected["counter"] == COUNT_UP_TO

    first = subprocess.Popen(
        _command(killed / "tracking"),
        cwd=killed,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.strip() == KILL_AFTER:
                break
        else:
            raise AssertionError("the first run ended before it was killed")
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=60)
        if first.stdout is not None:
            first.stdout.close()
    assert first.returncode == -signal.SIGKILL

    interrupted = _events(killed / "demos.db")
    # the kill landed mid-run: some counts saved, the result step not reached
    assert 4 <= len(interrupted) < COUNT_UP_TO
    assert {e.action for e in interrupted} == {"counter"}

    resumed = _finish(killed)
    assert resumed == expected

    events = _events(killed / "demos.db")
    assert [e.sequence_id for e in events] == list(range(COUNT_UP_TO + 1))
    assert events[: len(interrupted)] == interrupted  # the second run only appended
    assert events[-1].action == "result"
    assert fold(events) == expected
    verify = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", str(killed / "demos.db")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    history = subprocess.run(
        [
            sys.executable,
            "-m",
            "statelog",
            "history",
            APP_ID,
            "--db",
            str(killed / "demos.db"),
            "--partition-key",
            "demo-user",
        ],
        capture_output=True,
        text=True,
    )
    assert history.returncode == 0, history.stderr
    assert history.stdout.count("action_completed") == COUNT_UP_TO + 1
