"""The service and its client: 202 latency, runs/s through HTTP, client overhead.

    python bench/bench_service.py            # ~1 minute on 2 cores
    python bench/bench_service.py --quick    # smaller sizes
    python bench/bench_service.py --tiny     # a smoke run (the test suite's)
    python bench/bench_service.py --rate 300 # the open-loop rate (default 200/s)

All figures come from one run on this machine; nothing is asserted. The service
is a real ``statelog serve`` subprocess on 127.0.0.1 (``--max-concurrent-runs
16``); every 202 queues a real 10-step run, which runs under the scheduler while
the clients post (and each level waits until they have all completed).

The load generator is not the bench's process and not httpx: a third process
(``--loadgen``, started per load) speaks HTTP/1.1 over keep-alive asyncio
streams, ~0.1 ms of CPU per request where an ``httpx.AsyncClient`` spends
~1.3 ms (64 httpx clients in one process saturate its core before the service's).
Each line prints the load generator's CPU per request and the service's (the
POST and the run it queued, from /proc), so it shows which one is the limit.

* POST /v1/runs -> 202 latency, p50 / p99:
  - closed loop, 1, 16 and 64 clients (one connection each, posting again as soon
    as its 202 is back): saturation figures. With N clients always waiting,
    latency = N / throughput (Little's law): at 64 clients p99 <= 10 ms would need
    more than 6,400 requests/s, so the closed-loop 64 figure measures throughput.
  - open loop, 64 connections at a fixed rate (``--rate``, default 200/s): requests
    leave on schedule whether or not earlier ones were answered; a latency counts
    from its scheduled time, so waiting for a free connection (the service fell
    behind) is counted, not omitted. This is the figure for the goal
    (p99 <= 10 ms at 64 clients).
  - the floor: ``GET /healthz`` in the same open loop (no run, no disk, no
    body), same run: what this machine and the HTTP stack give at best.
  Before the levels, a few requests warm up the routes (FastAPI builds a route's
  state at its first request).
* Both sides of the runs/s ratio first run N/20 runs unmeasured (the first runs
  of a process pay imports and caches: ~0.5 ms of CPU more per run over the first
  300).
* Completed 10-step runs per second: N runs submitted through the service (32
  connections of the load generator) until ``/readyz`` says nothing is queued or
  running, against the same N runs in-process: the same builder as the service's
  scheduler (``Workflow.builder()``, identifiers, ``initialize_from``), the same
  SQLite log and snapshot store on one file, ``astream`` to the end, 16 at once.
  The service adds HTTP, the operations file and its scheduler. The two sides
  alternate in rounds (8 rounds of N/8 in the full size) against one server and
  one in-process log file, and the figures are the medians: the load of a shared
  machine moves between minutes, and one block after the other measured the load
  as much as the code. Goal: >= 0.5x.
* Client overhead: ``AsyncClient.get_app`` against a raw ``httpx.AsyncClient``
  GET of the same URL (plus ``.json()``), one call at a time, alternating
  rounds, in the bench's own process. Goal: <= 1.2x.
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
    def __init__(
        self, workdir: Path, name: str, max_concurrent: int = 16, loop: str = "auto"
    ) -> None:
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
            "--loop",
            loop,
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


# --------------------------------------------------------------- the load generator
# Runs in its own process (``--loadgen SPEC``), so its CPU is not the server's or the
# bench's: a raw HTTP/1.1 keep-alive client over asyncio streams, ~20x cheaper per
# request than httpx (it prints its own CPU per request, to show it is not the limit).


class RawHttp:
    """One keep-alive HTTP/1.1 connection; one request at a time; no TLS, no redirects."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._host_header = f"Host: {hostport}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> RawHttp:
        # asyncio sets TCP_NODELAY on the socket
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if method in ("POST", "PUT", "PATCH"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        self.writer.write(head + b"\r\n" + body)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if not chunked:
            return status, await self.reader.readexactly(length)
        data = b""
        while size := int((await self.reader.readline()).strip(), 16):
            data += await self.reader.readexactly(size + 2)
        await self.reader.readline()
        return status, data


def _run_body(app_id: str) -> bytes:
    return json.dumps({"graph": "counter10", "app_id": app_id}).encode()


async def _post_run(conn: RawHttp, app_id: str) -> None:
    status, data = await conn.request("POST", "/v1/runs", _run_body(app_id))
    if status != 202:
        raise SystemExit(f"POST /v1/runs -> {status}: {data!r}")


async def _wait_idle(conn: RawHttp) -> None:
    """Until nothing is queued or running (``/readyz`` counts both)."""
    while True:
        ready = json.loads((await conn.request("GET", "/readyz"))[1])
        if ready["queued"] == 0 and ready["running"] == 0:
            return
        # polled often: a round lasts ~0.3 s, and each poll's wait counts against the
        # service (20 ms, as before 2026-12-07 08:30, was ~3 % of a round on average)
        await asyncio.sleep(0.005)


async def _connections(url: str, n: int) -> list[RawHttp]:
    return list(await asyncio.gather(*(RawHttp(url).open() for _ in range(n))))


async def closed_loop(url: str, clients: int, per_client: int, tag: str) -> dict[str, Any]:
    """``clients`` connections, each posting again as soon as its 202 is back."""
    conns = await _connections(url, clients)
    samples: list[float] = []

    async def client(n: int) -> None:
        for i in range(per_client):
            started = time.perf_counter()
            await _post_run(conns[n], f"{tag}-{n}-{i}")
            samples.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await _wait_idle(conns[0])  # the next level starts on an idle service
    for conn in conns:
        conn.close()
    return {"samples": samples, "rate": len(samples) / wall, "cpu": cpu / len(samples)}


async def open_loop(
    url: str, clients: int, rate: float, total: int, tag: str, floor: bool = False
) -> dict[str, Any]:
    """Requests sent on a fixed schedule (``rate`` per second) over ``clients``
    connections; each latency counts from its scheduled time, so a request that
    waits for a free connection (the service fell behind) counts its wait too.
    ``floor``: ``GET /healthz`` instead of a run (the machine's and HTTP's floor)."""
    conns = await _connections(url, clients)
    idle: asyncio.Queue[RawHttp] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)
    samples: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(conn: RawHttp, i: int, due: float) -> None:
        if floor:
            await conn.request("GET", "/healthz")
        else:
            await _post_run(conn, f"{tag}-{i}")
        samples.append(time.perf_counter() - due)
        idle.put_nowait(conn)

    cpu = time.process_time()
    begin = time.perf_counter() + 0.05
    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await idle.get()
        tasks.append(asyncio.create_task(one(conn, i, due)))
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
    await _wait_idle(conns[0])
    for conn in conns:
        conn.close()
    return {"samples": samples, "rate": total / wall, "cpu": cpu / total}


async def runs_through(url: str, runs: int, tag: str = "r", clients: int = 32) -> dict[str, Any]:
    """Submit ``runs`` runs over ``clients`` connections; until the last one completed."""
    conns = await _connections(url, clients)
    pending = iter(range(runs))
    started = time.perf_counter()

    async def client(conn: RawHttp) -> None:
        for n in pending:
            await _post_run(conn, f"{tag}{n}")

    await asyncio.gather(*(client(conn) for conn in conns))
    await _wait_idle(conns[0])
    rate = runs / (time.perf_counter() - started)
    for conn in conns:
        conn.close()
    return {"rate": rate}


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    if kind == "closed":
        return await closed_loop(**spec)
    if kind == "open":
        return await open_loop(**spec)
    return await runs_through(**spec)


def loadgen(**spec: Any) -> dict[str, Any]:
    """Run one load in a separate process (``--loadgen``) and return its JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"load generator failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --------------------------------------------------------------- in-process baseline


async def in_process(path: Path, runs: int, tag: str = "p", concurrency: int = 16) -> float:
    """The service's work without the service: the same runs, built the way its
    scheduler builds them (``Workflow.builder()``, identifiers, the SQLite log and
    its snapshot store on one file, ``initialize_from``), ``concurrency`` at once."""
    from statelog.eventstore import SnapshotStore, SQLiteEventStore
    from statelog.service import Workflow

    workflow = Workflow("counter10", counter10)
    store = await SQLiteEventStore.open(path)
    snapshots = await SnapshotStore.open(path)
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with sem:
            app = await (
                workflow.builder()
                .with_identifiers(app_id=f"{tag}{n}", partition_key="")
                .with_store(store, snapshots=snapshots)
                .initialize_from(
                    default_state=workflow.initial_state, default_entrypoint=workflow.entrypoint
                )
                .abuild()
            )
            async with app:
                async for _ in app.astream():
                    pass

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


def _cpu_seconds(pid: int) -> float | None:
    """A process's CPU time (user + system) from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _served(server: Server, **spec: Any) -> dict[str, Any]:
    """One load against ``server``, with the server's CPU per request it took."""
    assert server.proc is not None
    before = _cpu_seconds(server.proc.pid)
    result = loadgen(url=server.url, **spec)
    after = _cpu_seconds(server.proc.pid)
    result["server_cpu"] = None if before is None or after is None else after - before
    return result


def _latency_row(result: dict[str, Any]) -> dict[str, Any]:
    samples = result.pop("samples")
    result.update(n=len(samples), p50_ms=pct(samples, 0.5) * 1000, p99_ms=pct(samples, 0.99) * 1000)
    return result


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = {
        "tiny": (5, 20, 10, 2, 2),
        "quick": (50, 200, 200, 100, 3),
        "full": (200, 2000, 1000, 300, 5),
    }[args.size]
    per_level, runs, open_total, calls, rounds = sizes
    runs_rounds = 8 if args.size == "full" else 2
    warm = max(2, runs // 20)
    results: dict[str, Any] = {}
    with Server(workdir, "latency", loop=args.loop) as server:
        loadgen(url=server.url, kind="closed", clients=4, per_client=5, tag="warm")
        for clients in (1, 16, 64):
            per_client = max(1, per_level * (1 if clients == 1 else 4) // clients)
            row = _served(
                server, kind="closed", clients=clients, per_client=per_client, tag=f"c{clients}"
            )
            results[f"latency_{clients}"] = _latency_row(row)
        row = _served(server, kind="open", clients=64, rate=args.rate, total=open_total, tag="open")
        results["latency_open"] = _latency_row(row)
        row = _served(
            server, kind="open", clients=64, rate=args.rate, total=open_total, tag="f", floor=True
        )
        results["latency_floor"] = _latency_row(row)
    # runs/s: the service and the in-process baseline alternate in rounds (the load of
    # a shared machine moves between minutes); the figures are medians over the rounds
    service_rates: list[float] = []
    local_rates: list[float] = []
    with Server(workdir, "runs", loop=args.loop) as server:
        loadgen(url=server.url, kind="runs", runs=warm, tag="w")  # first-run imports, caches
        await in_process(workdir / "inproc.db", warm, tag="w")
        for r in range(runs_rounds):
            size = runs // runs_rounds
            served = loadgen(url=server.url, kind="runs", runs=size, tag=f"r{r}-")
            service_rates.append(served["rate"])
            local_rates.append(await in_process(workdir / "inproc.db", size, tag=f"p{r}-"))
        results["overhead"] = await client_overhead(server.url, calls, rounds)
    results["service_runs_per_s"] = statistics.median(service_rates)
    results["in_process_runs_per_s"] = statistics.median(local_rates)
    results["runs_rounds"] = list(zip(service_rates, local_rates, strict=True))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="size", action="store_const", const="quick")
    group.add_argument("--tiny", dest="size", action="store_const", const="tiny")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="open-loop requests/s (64 connections)"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="the service's event loop (statelog serve --loop; auto: uvloop when installed)",
    )
    parser.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    parser.set_defaults(size="full")
    args = parser.parse_args(argv)
    if args.loadgen is not None:  # the load generator's own process
        print(json.dumps(asyncio.run(_loadgen(json.loads(args.loadgen)))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(main_async(args, Path(tmp)))
    load = os.getloadavg()
    print(
        f"statelog service bench ({args.size}, --loop {args.loop}), {os.cpu_count()} CPUs, "
        f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print("POST /v1/runs -> 202 latency (ms), load generator in its own process:")

    def row_line(label: str, row: dict[str, Any]) -> str:
        server_cpu = row["server_cpu"]
        per = (
            ""
            if server_cpu is None
            else f", service CPU {server_cpu / row['n'] * 1e3:.2f} ms (the POST and its run)"
        )
        return (
            f"  {label}: p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f}  "
            f"({row['n']} requests at {row['rate']:,.0f}/s; per request: load generator CPU "
            f"{row['cpu'] * 1e3:.2f} ms{per})"
        )

    for clients in (1, 16, 64):
        print(row_line(f"closed loop, {clients:>2} clients", results[f"latency_{clients}"]))
    print(row_line(f"open loop, {args.rate:,.0f}/s on 64", results["latency_open"]))
    floor = results["latency_floor"]
    print(
        f"  floor, GET /healthz open loop at the same rate: p50 {floor['p50_ms']:7.2f}  "
        f"p99 {floor['p99_ms']:7.2f}  (this machine and the HTTP stack, no run, no disk)"
    )
    print("  (goal: p99 <= 10 ms at 64 clients)")
    service, local = results["service_runs_per_s"], results["in_process_runs_per_s"]
    print(
        f"completed 10-step runs/s (median of {len(results['runs_rounds'])} alternating rounds): "
        f"service {service:,.0f}, in-process {local:,.0f}, ratio {service / local:.2f}x "
        "(goal >= 0.5x)"
    )
    print(
        "  rounds, service / in-process: "
        + ", ".join(f"{a:,.0f} / {b:,.0f} ({a / b:.2f}x)" for a, b in results["runs_rounds"])
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
