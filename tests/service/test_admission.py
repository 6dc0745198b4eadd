"""Admission first (docs/service.md, Scheduling): runs wait at step boundaries while
start requests are in flight, one let through per interval, oldest first, all as
soon as none is in flight; a start whose body is still arriving holds nothing back;
the ``--loop`` and ``--admission-interval`` options of ``statelog serve``."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from statelog.service._admission import AdmissionFirst

from .conftest import wait_status

ROOT = Path(__file__).absolute().parent.parent.parent


async def test_no_start_in_flight_means_no_wait() -> None:
    gate = AdmissionFirst(3600.0)
    await asyncio.wait_for(gate.boundary(), 5)  # returns without waiting for the interval
    gate.enter()
    gate.leave()
    await asyncio.wait_for(gate.boundary(), 5)


async def test_all_go_on_when_the_last_start_is_answered() -> None:
    gate = AdmissionFirst(3600.0)  # the interval never comes: only leave() releases
    gate.enter()
    gate.enter()
    waiters = [asyncio.create_task(gate.boundary()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.leave()
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)  # one start still in flight
    gate.leave()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)


async def test_one_at_a_time_oldest_first_while_starts_keep_coming() -> None:
    gate = AdmissionFirst(0.001)
    gate.enter()  # a start in flight for the whole test: only the interval releases
    order: list[int] = []

    async def run(n: int) -> None:
        await gate.boundary()
        order.append(n)

    waiters = [asyncio.create_task(run(n)) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*waiters), 30)  # every run got its turn
    assert order == [0, 1, 2, 3]
    gate.leave()


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    gate = AdmissionFirst(0.001)
    gate.enter()
    first = asyncio.create_task(gate.boundary())
    second = asyncio.create_task(gate.boundary())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 30)
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.leave()


async def test_interval_zero_never_waits() -> None:
    gate = AdmissionFirst(0.0)
    gate.enter()
    await asyncio.wait_for(gate.boundary(), 5)
    gate.leave()


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
def test_a_start_whose_body_is_arriving_holds_no_run_back(make_server: Any, loop: str) -> None:
    # an interval of an hour: if a start in flight counted before its body was read,
    # the run below would wait that hour at its first step boundary
    server = make_server("--admission-interval", "3600", "--loop", loop)
    host, port = server.url.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as slow:
        body = b'{"graph": "counter", "app_id": "slow"}'
        slow.sendall(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body[:10]
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            started = http.post("/v1/runs", json={"graph": "counter", "app_id": "fast"})
            assert started.status_code == 202, started.text
            done = wait_status(http, started.json()["id"], {"completed", "failed"})
            assert done["status"] == "completed", done  # while the slow start waits
        slow.sendall(body[10:])  # the slow start is answered as any other
        assert slow.recv(65536).startswith(b"HTTP/1.1 202 ")


@pytest.mark.parametrize(
    "option", [["--admission-interval", "-1"], ["--admission-interval", "soon"]]
)
def test_serve_refuses_a_bad_admission_interval(tmp_path: Path, option: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "serve", "--db", str(tmp_path / "x.db"), "--demo"]
        + ["--port", "0", *option],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--admission-interval" in done.stderr
    assert not (tmp_path / "x.db").exists()  # nothing written
