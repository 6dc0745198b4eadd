"""``statelog demo``, ``history`` and ``state`` on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from statelog._cli import main
from statelog.eventstore import SQLiteEventStore, fold

APP = "demo-orders"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def read_events(db: Path, app_id: str = APP) -> list[Any]:
    async with await SQLiteEventStore.open(db) as store:
        assert await store.verify() is None
        return await store.read("", app_id)


def test_demo_runs_on_the_default_file_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "starting" in out and "done:" in out
    db = tmp_path / "statelog.db"
    assert db.exists()
    events = asyncio.run(read_events(db))
    assert events[-1].sequence_id == 300
    kinds = {e.kind for e in events}
    assert {"app_initialized", "action_completed"} <= kinds
    actions = {e.action for e in events}
    assert {"receive", "check", "approve", "charge", "plan_waves", "ship"} <= actions
    assert any(e.action == "charge" and e.attempt == 2 for e in events)  # the retried step
    ship = next(e for e in events if e.action == "ship" and e.kind == "action_completed")
    child = asyncio.run(read_events(db, ship.result[0]))
    assert child[0].parent is not None and child[0].parent.relation == "child"

    code, out, _ = run(capsys, "demo", "--steps", "350")
    assert code == 0
    assert "resuming 'demo-orders' at step 300" in out
    assert asyncio.run(read_events(db))[-1].sequence_id == 350


def test_history_and_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "h.db")
    assert run(capsys, "demo", "--db", db, "--steps", "120", "--snapshot-every", "25")[0] == 0
    code, out, _ = run(capsys, "history", APP, "--db", db, "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["sequence_id"] for e in lines] == list(range(121))
    code, out, _ = run(capsys, "history", APP, "--db", db)
    assert code == 0
    assert "app_initialized" in out and "receive" in out
    events = asyncio.run(read_events(Path(db)))
    for at in (0, 1, 24, 25, 26, 77, 120):
        code, out, _ = run(capsys, "state", APP, "--db", db, "--at", str(at), "--json")
        assert code == 0
        shown = json.loads(out)
        assert shown == {"sequence_id": at, "state": fold(events[: at + 1])}
    code, out, _ = run(capsys, "state", APP, "--db", db)
    assert code == 0
    assert json.loads(out.split("\n", 1)[1]) == fold(events)


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.db")
    code, _, err = run(capsys, "history", APP, "--db", missing)
    assert code == 2 and "does not exist" in err
    assert not os.path.exists(missing)
    db = str(tmp_path / "e.db")
    assert run(capsys, "demo", "--db", db, "--steps", "10")[0] == 0
    code, _, err = run(capsys, "state", "nope", "--db", db)
    assert code == 2 and "no app 'nope'" in err
    code, _, err = run(capsys, "state", APP, "--db", db, "--at", "99")
    assert code == 2 and "0..10" in err
