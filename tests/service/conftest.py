"""A real ``statelog serve`` in a subprocess on 127.0.0.1, and helpers to drive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .workflows import APPS

ROOT = Path(__file__).absolute().parents[2]  # not resolve(): a checkout may link it


class ServeProcess:
    """``python -m statelog serve ...``: started, waited for, killed or stopped."""

    def __init__(self, db: Path, *extra: str, apps: list[str] | None = None) -> None:
        self.db = db
        self.log = db.with_suffix(".serve.log")
        args = [sys.executable, "-m", "statelog", "serve", "--db", str(db), "--port", "0"]
        for spec in APPS if apps is None else apps:
            args += ["--app", spec]
        args.append("--demo")
        self.args = [*args, *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> ServeProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        err = open(self.log, "a")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        err.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve never became ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_pipe()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        self._close_pipe()
        return self.proc.returncode

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One service for a test module (tests use their own app ids)."""
    db = tmp_path_factory.mktemp("serve") / "log.db"
    proc = ServeProcess(db).start()
    yield proc
    assert proc.stop() == 0, proc.log.read_text()[-3000:]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start services of one test on its own files; stopped (or killed) at the end."""
    started: list[ServeProcess] = []

    def make(*extra: str, db: Path | None = None, apps: list[str] | None = None) -> ServeProcess:
        proc = ServeProcess(db or tmp_path / "log.db", *extra, apps=apps).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
        proc._close_pipe()


def wait_status(
    client: httpx.Client, op_id: str, statuses: set[str], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll an operation until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/operations/{op_id}").json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"operation {op_id} still {body['status']}: {body}")
        time.sleep(0.02)
