"""The service and its client: 202 latency, runs/s through HTTP, client overhead.

    python bench/bench_service.py            # ~1 minute on 2 cores
    python bench/bench_service.py --quick    # smaller sizes
    python bench/bench_service.py --tiny     # a smoke run (the test suite's)

All figures come from one run on this machine; nothing is asserted.

* POST /v1/runs -> 202 latency, p50 / p99, with 1, 16 and 64 clients posting at
  once (each client posts again as soon as its 202 is back). The runs behind the
  202s are real (10 steps each) and run under the scheduler while clients post.
* Completed 10-step runs per second: N runs submitted through the service
  (``--max-concurrent-runs 16``) until the last one completed, against the same
  N runs in-process (the same builder, the same SQLite log layout, 16 at once).
  Goal: >= 0.5x.
* Client overhead: ``AsyncClient.get_app`` against a raw ``httpx.AsyncClient``
  GET of the same URL (plus ``.json()``), one call at a time, alternating
  rounds. Goal: <= 1.2x.

The service is a real ``statelog serve`` subprocess on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).absolute().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from statelog import ApplicationBuilder, State, action, default, expr  # noqa: E402


@action(reads=["count"], writes=["count"])
def tick(state: State) -> State:
    return state.increment(count=1)


@action(reads=["count"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)


def counter10() -> ApplicationBuilder:
    """Ten steps: nine ticks and a terminal ``finish``."""
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, finish=finish)
        .with_transitions(("tick", "tick", expr("count < 9")), ("tick", "finish", default))
        .with_state(count=0, done=False)
        .with_entrypoint("tick")
    )


class Server:
    def __init__(self, workdir: Path, name: str, max_concurrent: int = 16) -> None:
        self.db = workdir / f"{name}.db"
        self.args = [
            sys.executable,
            "-m",
            "statelog",
            "serve",
            "--db",
            str(self.db),
            "--port",
            "0",
            "--app",
            "counter10=bench.bench_service:counter10",
            "--max-concurrent-runs",
            str(max_concurrent),
            "--log-level",
            "warning",
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"statelog serve did not start: {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def wait_all(http: httpx.AsyncClient) -> None:
    """Until nothing is queued or running (``/readyz`` counts both)."""
    while True:
        ready = (await http.get("/readyz")).json()
        if ready["queued"] == 0 and ready["running"] == 0:
            return
        await asyncio.sleep(0.02)


async def latency(url: str, clients: int, per_client: int, tag: str) -> list[float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        samples: list[float] = []

        async def client(n: int) -> None:
            for i in range(per_client):
                started = time.perf_counter()
                response = await http.post(
                    "/v1/runs", json={"graph": "counter10", "app_id": f"{tag}-{n}-{i}"}
                )
                samples.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise SystemExit(f"POST /v1/runs -> {response.status_code}: {response.text}")

        await asyncio.gather(*(client(n) for n in range(clients)))
        await wait_all(http)  # the next level starts on an idle service
    return samples


async def through_service(url: str, runs: int) -> float:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        sem = asyncio.Semaphore(32)

        async def one(n: int) -> None:
            async with sem:
                response = await http.post(
                    "/v1/runs", json={"graph": "counter10", "app_id": f"r{n}"}
                )
                assert response.status_code == 202, response.text

        await asyncio.gather(*(one(n) for n in range(runs)))
        await wait_all(http)
        return runs / (time.perf_counter() - started)


async def in_process(path: Path, runs: int, concurrency: int = 16) -> float:
    from statelog.eventstore import SnapshotStore, SQLiteEventStore

    store = await SQLiteEventStore.open(path)
    snapshots = await SnapshotStore.open(path)
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with sem:
            app = await (
                counter10()
                .with_state(count=0, done=False)
                .with_identifiers(app_id=f"p{n}")
                .with_store(store, snapshots=snapshots)
                .abuild()
            )
            async with app:
                await app.arun()

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(runs)))
    rate = runs / (time.perf_counter() - started)
    await snapshots.aclose()
    await store.aclose()
    return rate


async def client_overhead(url: str, calls: int, rounds: int) -> dict[str, float]:
    """Per call, wall and this process's CPU time: raw httpx against AsyncClient."""
    from statelog.client import AsyncClient

    async with httpx.AsyncClient(base_url=url, timeout=30) as raw, AsyncClient(url) as client:
        await raw.post("/v1/runs", json={"graph": "counter10", "app_id": "ovh"})
        await asyncio.sleep(0.5)
        figures: dict[str, list[float]] = {"raw": [], "client": [], "raw_cpu": [], "client_cpu": []}

        async def raw_call() -> None:
            (await raw.get("/v1/apps/ovh", params={"partition_key": ""})).json()

        async def client_call() -> None:
            await client.get_app("ovh")

        for _ in range(rounds):
            for name, call in (("raw", raw_call), ("client", client_call)):
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    await call()
                figures[name].append((time.perf_counter() - wall) / calls)
                figures[f"{name}_cpu"].append((time.process_time() - cpu) / calls)
    return {name: statistics.median(values) for name, values in figures.items()}


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = {
        "tiny": (5, 20, 2, 2),
        "quick": (50, 200, 100, 3),
        "full": (200, 1000, 300, 5),
    }[args.size]
    per_level, runs, calls, rounds = sizes
    results: dict[str, Any] = {}
    with Server(workdir, "latency") as server:
        for clients in (1, 16, 64):
            per_client = max(1, per_level * (1 if clients == 1 else 4) // clients)
            samples = await latency(server.url, clients, per_client, f"c{clients}")
            results[f"latency_{clients}"] = {
                "n": len(samples),
                "p50_ms": pct(samples, 0.5) * 1000,
                "p99_ms": pct(samples, 0.99) * 1000,
            }
    with Server(workdir, "runs") as server:
        results["service_runs_per_s"] = await through_service(server.url, runs)
        results["overhead"] = await client_overhead(server.url, calls, rounds)
    results["in_process_runs_per_s"] = await in_process(workdir / "inproc.db", runs)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="size", action="store_const", const="quick")
    group.add_argument("--tiny", dest="size", action="store_const", const="tiny")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.set_defaults(size="full")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(main_async(args, Path(tmp)))
    load = os.getloadavg()[0]
    print(f"statelog service bench ({args.size}), {os.cpu_count()} CPUs, load {load:.1f}")
    print("POST /v1/runs -> 202 latency (ms):")
    for clients in (1, 16, 64):
        row = results[f"latency_{clients}"]
        print(
            f"  {clients:>2} clients: p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f}  "
            f"({row['n']} requests; goal p99 <= 10 ms at 64)"
        )
    service, local = results["service_runs_per_s"], results["in_process_runs_per_s"]
    print(
        f"completed 10-step runs/s: service {service:,.0f}, in-process {local:,.0f}, "
        f"ratio {service / local:.2f}x (goal >= 0.5x)"
    )
    over = results["overhead"]
    print(
        f"per call (GET /v1/apps/ID), wall: raw httpx {over['raw'] * 1e6:,.0f} us, AsyncClient "
        f"{over['client'] * 1e6:,.0f} us, ratio {over['client'] / over['raw']:.2f}x (goal <= 1.2x)"
    )
    print(
        f"per call, CPU of the calling process: raw httpx {over['raw_cpu'] * 1e6:,.0f} us, "
        f"AsyncClient {over['client_cpu'] * 1e6:,.0f} us, "
        f"ratio {over['client_cpu'] / over['raw_cpu']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
