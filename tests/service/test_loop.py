"""``statelog serve --loop``: the event loop it serves on, and a missing uvloop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ROOT, wait_status


@pytest.mark.parametrize(
    ("loop", "expected"),
    [
        ("asyncio", "event loop asyncio.unix_events._UnixSelectorEventLoop"),
        ("uvloop", "event loop uvloop.Loop"),
        ("auto", "event loop uvloop.Loop"),  # the service extra installs uvloop
    ],
)
def test_serve_runs_on_the_loop_it_is_given(make_server: Any, loop: str, expected: str) -> None:
    server = make_server("--loop", loop)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        started = http.post("/v1/runs", json={"graph": "counter", "app_id": f"on-{loop}"})
        assert started.status_code == 202, started.text
        done = wait_status(http, started.json()["id"], {"completed", "failed"})
        assert done["status"] == "completed", done
    assert expected in server.log.read_text()


def test_loop_uvloop_without_uvloop_is_one_line_and_exit_2(tmp_path: Path) -> None:
    hidden = tmp_path / "hide"
    (hidden / "uvloop").mkdir(parents=True)
    (hidden / "uvloop" / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)])}
    base = [sys.executable, "-m", "statelog", "serve", "--db", str(tmp_path / "x.db"), "--demo"]
    done = subprocess.run(
        [*base, "--port", "0", "--loop", "uvloop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "statelog: error: --loop uvloop: uvloop is not installed (pip install uvloop)"
    ], done.stderr
    assert not (tmp_path / "x.db").exists()  # nothing written
