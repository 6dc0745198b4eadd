"""200 runs submitted at once with --max-concurrent-runs 16: all complete, never more than 16
at once (from the server's gauge and from the log itself); the 202 latencies are printed."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx


def _run_spans(db: Path) -> dict[str, tuple[datetime, datetime]]:
    """Per app: the timestamps of its first and last events, read from the log."""
    from statelog.eventstore import SQLiteEventStore

    async def read() -> dict[str, tuple[datetime, datetime]]:
        spans: dict[str, tuple[datetime, datetime]] = {}
        async with await SQLiteEventStore.open(db) as store:
            for record in await store.read_all():
                event = record.event
                first = spans.get(event.app_id, (event.timestamp, event.timestamp))[0]
                spans[event.app_id] = (first, event.timestamp)
        return spans

    return asyncio.run(read())


def _max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    points = [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans]
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


def test_200_runs_at_once_under_a_cap_of_16(make_server: Any, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    server = make_server("--max-concurrent-runs", "16", db=db)

    async def submit_all() -> tuple[list[str], list[float]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:

            async def one(n: int) -> tuple[str, float]:
                started = time.perf_counter()
                response = await http.post(
                    "/v1/runs",
                    json={"graph": "counter", "app_id": f"load-{n:03d}", "inputs": {"delay": 0.01}},
                )
                elapsed = time.perf_counter() - started
                assert response.status_code == 202, response.text
                return response.json()["id"], elapsed

            results = await asyncio.gather(*(one(n) for n in range(200)))
        return [op for op, _ in results], [t for _, t in results]

    ops, latencies = asyncio.run(submit_all())
    assert len(set(ops)) == 200
    with httpx.Client(base_url=server.url, timeout=30) as http:
        deadline = time.monotonic() + 120
        while True:
            page = http.get("/v1/operations", params={"limit": 1000}).json()["operations"]
            statuses = [op["status"] for op in page]
            if all(s not in ("queued", "running") for s in statuses):
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.2)
        assert statuses == ["completed"] * 200
        metrics = http.get("/metrics").text
    gauge = int(
        next(
            line.split()[1]
            for line in metrics.splitlines()
            if line.startswith("statelog_runs_running_max ")
        )
    )
    assert 1 <= gauge <= 16
    # the log's own view: a run spans its first to its last event; at most 16 overlap
    spans = _run_spans(db)
    assert len(spans) == 200
    assert _max_overlap(list(spans.values())) <= 16
    ms = sorted(t * 1000 for t in latencies)
    print(
        f"\n202 latency with 200 at once: p50 {statistics.median(ms):.1f} ms, "
        f"p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms, max {ms[-1]:.1f} ms; "
        f"server-side peak of concurrent runs {gauge}, from the log "
        f"{_max_overlap(list(spans.values()))}"
    )
