"""``kill -9`` with runs in flight, then a restart: every run ends exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import ROOT, wait_status

FINAL = {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}


def _all_operations(http: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = http.get("/v1/operations", params={"cursor": cursor, "limit": 100}).json()
        found += page["operations"]
        if page["next_cursor"] is None:
            return found
        cursor = page["next_cursor"]


def _events_of(db: Path, app_id: str) -> list[tuple[int, str]]:
    uri = db.absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute(
            "SELECT e.sequence_id FROM events e JOIN streams s ON s.id = e.stream_id "
            "WHERE s.app_id = ? ORDER BY e.sequence_id",
            (app_id,),
        ).fetchall()
    finally:
        conn.close()
    return [(row[0], app_id) for row in rows]


def _check_runs_ended_once(http: httpx.Client, db: Path, apps: list[str], ops: list[str]) -> None:
    listed = _all_operations(http)
    assert sorted(op["id"] for op in listed) == sorted(ops)  # none lost, none duplicated
    finished = [wait_status(http, op["id"], FINAL, timeout=60) for op in listed]
    last_of = {}
    for app_id in apps:
        events = http.get(f"/v1/apps/{app_id}/events").json()["events"]
        n = len(events)
        assert [e["sequence_id"] for e in events] == list(range(n))  # dense
        last_of[app_id] = n - 1
        kinds = [e["kind"] for e in events]
        # each (re)start of the run records run_started; the steps are never repeated
        # the last step and completed are one append: a kill never splits them
        assert kinds[0] == "app_initialized" and kinds[-1] == "completed"
        assert set(kinds[1:-1]) <= {"run_started", "action_completed", "cancelled"}
        steps = [e["action"] for e in events if e["kind"] == "action_completed"]
        assert steps == ["tick"] * 30 + ["finish"]
        state = http.get(f"/v1/apps/{app_id}/state").json()["state"]
        assert state == {"count": 30, "done": True}  # no step applied twice
        assert [seq for seq, _ in _events_of(db, app_id)] == list(range(n))
    for done in finished:
        assert done["status"] == "completed", done
        assert done["sequence_id"] == last_of[done["app_id"]]
        assert http.get(f"/v1/apps/{app_id}/verify").json()["ok"] is True
    verify = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_kill_9_with_20_runs_in_flight_then_restart(make_server: Any, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    first = make_server("--max-concurrent-runs", "20", db=db)
    apps = [f"k9-{n:02d}" for n in range(20)]
    with httpx.Client(base_url=first.url, timeout=10) as http:
        ops = [
            http.post(
                "/v1/runs", json={"graph": "long", "app_id": app, "inputs": {"delay": 0.1}}
            ).json()["id"]
            for app in apps
        ]
        deadline = time.monotonic() + 30
        while True:  # every run has written some steps and none has finished
            progress = [len(_events_of(db, app)) for app in apps]
            if min(progress) >= 3:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.05)
        assert all(op["status"] == "running" for op in _all_operations(http))
    assert max(len(_events_of(db, app)) for app in apps) < 32
    first.kill9()

    second = make_server("--max-concurrent-runs", "20", db=db)
    with httpx.Client(base_url=second.url, timeout=10) as http:
        _check_runs_ended_once(http, db, apps, ops)
        resumed = [op["resumed"] for op in _all_operations(http)]
        assert resumed == [1] * 20
        metrics = http.get("/metrics").text
        assert "statelog_runs_resumed_total 20" in metrics
    assert second.stop() == 0


def test_sigterm_stops_at_a_step_boundary_and_the_runs_resume(
    make_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    first = make_server("--max-concurrent-runs", "2", "--shutdown-grace", "5", db=db)
    apps = ["term-0", "term-1", "term-2"]  # two run, one waits in the queue
    with httpx.Client(base_url=first.url, timeout=10) as http:
        ops = [
            http.post(
                "/v1/runs", json={"graph": "long", "app_id": app, "inputs": {"delay": 0.05}}
            ).json()["id"]
            for app in apps
        ]
        deadline = time.monotonic() + 30
        while len(_events_of(db, "term-0")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert first.stop() == 0  # graceful: exit code 0
    second = make_server("--max-concurrent-runs", "2", db=db)
    with httpx.Client(base_url=second.url, timeout=10) as http:
        _check_runs_ended_once(http, db, apps, ops)
        assert [op["resumed"] for op in _all_operations(http)] == [0, 0, 0]


def test_a_restart_honours_cancels_and_ends_runs_of_a_missing_graph(
    make_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    first = make_server(db=db)
    with httpx.Client(base_url=first.url, timeout=10) as http:
        slow = {"graph": "long", "inputs": {"delay": 0.5}}
        cancelled = http.post("/v1/runs", json={**slow, "app_id": "gone-1"}).json()["id"]
        orphan = http.post("/v1/runs", json={**slow, "app_id": "gone-2"}).json()["id"]
        deadline = time.monotonic() + 30
        while min(len(_events_of(db, "gone-1")), len(_events_of(db, "gone-2"))) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.delete(f"/v1/operations/{cancelled}").json()["cancel_requested"] is True
    first.kill9()  # before the step in progress (0.5 s) reaches its boundary
    before = {app: _events_of(db, app) for app in ("gone-1", "gone-2")}

    second = make_server(db=db, apps=["counter=tests.service.workflows:counter"])
    with httpx.Client(base_url=second.url, timeout=10) as http:
        assert wait_status(http, cancelled, FINAL)["status"] == "cancelled"
        ended = wait_status(http, orphan, FINAL)
        assert ended["status"] == "interrupted"
        assert ended["error"]["type"] == "UnknownGraph" and "'long'" in ended["error"]["message"]
        time.sleep(0.3)
        assert {app: _events_of(db, app) for app in before} == before  # nothing ran
        for app in before:
            assert http.get(f"/v1/apps/{app}/verify").json()["ok"] is True
    assert second.stop() == 0
