"""``statelog serve``: the HTTP service (FastAPI on uvicorn; the ``service`` extra).

Everything a user can get wrong (a bad ``--app``, a missing token file, a
public address without tokens, a missing directory) is checked before the
server starts and is one line on stderr with exit code 2. Once listening it
prints ``statelog serve: listening on http://HOST:PORT`` on stdout (with the
real port when ``--port 0``). SIGTERM or Ctrl-C: stop accepting, end event
streams, let running steps reach a boundary (``--shutdown-grace``), flush, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import logging.handlers
import math
import os
import queue
import signal
import socket
import sys
from typing import Any

from statelog.eventstore import ConfigError, load_private_key

from ._cli_keys import add_key_options, add_signing_key_option, public_keys

__all__ = ["register"]


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP service: runs, operations, history, SSE (needs the service extra)",
        description="Serve runs and the audited history over HTTP. POST /v1/runs answers 202 "
        "at once and the run proceeds in the background under a bounded scheduler; "
        "operations survive a restart. Binding a non-loopback address needs --token-file.",
    )
    serve.add_argument("--db", default="statelog.db", help="the SQLite log")
    add_signing_key_option(serve)
    add_key_options(serve, hmac=False)  # --public-key: GET .../verify checks signed heads
    serve.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="[NAME=]MODULE:ATTR",
        help="register a workflow (an ApplicationBuilder or a callable returning one); "
        "repeat for more",
    )
    serve.add_argument("--demo", action="store_true", help="register the demo workflow as 'demo'")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument(
        "--token-file", metavar="PATH", help="bearer tokens: 'TOKEN read|write GLOB' per line"
    )
    serve.add_argument("--max-concurrent-runs", type=positive_int, default=16, metavar="N")
    serve.add_argument("--max-queued-runs", type=positive_int, default=10_000, metavar="N")
    serve.add_argument(
        "--run-timeout", type=seconds, default=3600.0, metavar="S", help="per run attempt"
    )
    serve.add_argument(
        "--admission-interval",
        type=non_negative_seconds,
        default=0.005,
        metavar="S",
        help="while POST /v1/runs requests are in flight, runs wait at step boundaries "
        "and one is let through every S seconds (0: runs never wait)",
    )
    serve.add_argument("--max-body-bytes", type=positive_int, default=1024 * 1024, metavar="N")
    serve.add_argument("--shutdown-grace", type=seconds, default=10.0, metavar="S")
    serve.add_argument(
        "--operations-db", metavar="PATH", help="the operations file (default: DB-service)"
    )
    serve.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        help="run on statelog workers: put runs on {prefix}.commands, read {prefix}.events",
    )
    serve.add_argument("--topic-prefix", default="statelog", metavar="P", help="with --kafka")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    serve.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="the event loop: uvloop when it is installed (auto), or asyncio's own",
    )
    serve.set_defaults(handler=_serve_on_loop)


def _serve_on_loop(args: argparse.Namespace) -> Any:
    """``_serve`` on the event loop ``--loop`` names. The ``service`` extra installs
    uvloop (not on Windows): same-run A/B, closed loop 64, it answered ~15-20 % more
    POSTs per second with a lower p50 and p99 (docs/benchmarks.md, Service 202
    latency (session 7)). ``asyncio`` gives the standard loop; so does ``auto``
    where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        if args.loop == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
        return _serve(args)  # a coroutine: the CLI runs it with asyncio.run
    if args.loop == "asyncio":
        return _serve(args)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(args))


def positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from statelog.service import (
            ServiceConfig,
            create_app,
            demo_workflow,
            load_token_file,
            load_workflow,
        )
        from statelog.service import (
            service_of as _service_of,
        )
    except ImportError as exc:
        raise ConfigError(
            f"serve needs the service extra: pip install 'statelog[service]' ({exc})"
        ) from exc

    if not _loopback(args.host) and args.token_file is None:
        raise ConfigError(
            f"refusing to serve on {args.host} without --token-file "
            "(only a loopback address may run without tokens)"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    directory = os.path.dirname(os.path.abspath(args.db))  # noqa: ASYNC240
    if not os.path.isdir(directory):  # noqa: ASYNC240 - checks before serving
        raise ConfigError(f"no directory {directory!r} for --db {args.db!r}")
    tokens = None if args.token_file is None else load_token_file(args.token_file)
    if "" not in sys.path and os.getcwd() not in sys.path:  # noqa: ASYNC240
        sys.path.insert(0, os.getcwd())  # --app modules of the working directory
    workflows = [load_workflow(spec) for spec in args.app]
    if args.demo:
        workflows.append(demo_workflow())
    if not workflows:
        raise ConfigError("no workflow to serve: give --app NAME=MODULE:ATTR or --demo")
    config = ServiceConfig(
        db=args.db,
        workflows=workflows,
        tokens=tokens,
        max_concurrent_runs=args.max_concurrent_runs,
        max_queued_runs=args.max_queued_runs,
        run_timeout=args.run_timeout,
        max_body_bytes=args.max_body_bytes,
        shutdown_grace=args.shutdown_grace,
        operations_db=args.operations_db,
        kafka=args.kafka,
        kafka_prefix=args.topic_prefix,
        signing_key=args.signing_key,
        public_keys=args.public_keys or (),
        admission_interval=args.admission_interval,
    )
    if args.public_keys:
        if args.kafka:
            raise ConfigError(
                "--public-key checks the signed checkpoints of a SQLite log; with --kafka "
                "the log is the topic (signed checkpoints are not there yet)"
            )
        public_keys(args)  # a bad key file: one line, exit 2, before serving
    if args.signing_key is not None:
        # a bad key file: one line, exit 2, before serving. With --kafka the workers write
        # the runs (give them --signing-key too); the service signs what it writes itself
        # (forks) in its own chain on {prefix}.events.checkpoints
        load_private_key(args.signing_key)
    app = create_app(config)
    service = _service_of(app)

    level = getattr(logging, args.log_level.upper())
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    # The event loop only queues a record (the access log writes one per request); a
    # thread writes them, so a slow or full stderr (a pipe to a log collector, a
    # disk) never stalls the loop. Stopping the listener writes what is queued.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    handler = logging.handlers.QueueHandler(records)
    root = logging.getLogger("statelog")
    root.addHandler(handler)
    root.setLevel(level)
    uv = logging.getLogger("uvicorn")
    uv.addHandler(handler)
    uv.setLevel(max(level, logging.WARNING))

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name it (without
    # it a response's second write waits ~40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        listener.stop()
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                # start-up's objects (FastAPI, pydantic, the workflows) live as long as the
                # process: frozen, collections walk only what requests and runs allocate
                # (same-run A/B, 8 alternating rounds: server CPU per run 0.87 -> 0.75 ms)
                gc.collect()
                gc.freeze()
                # a young-generation collection every 20,000 allocations, not 700: same-run
                # A/B, closed loop 64, +5 % posts/s, p99 -18 % (docs/benchmarks.md, session 7)
                gc.set_threshold(20_000, *gc.get_threshold()[1:])
                print(f"statelog serve: listening on http://{shown}:{port}", flush=True)
                loop = type(asyncio.get_running_loop())
                logging.getLogger("statelog.service").info(
                    "serving on http://%s:%d, event loop %s.%s",
                    shown,
                    port,
                    loop.__module__,
                    loop.__qualname__,
                )

        def handle_exit(self, sig: int, frame: Any) -> None:
            service.begin_shutdown()  # readyz answers 503, event streams end
            super().handle_exit(sig, frame)
            # uvicorn raises a captured SIGTERM again after its shutdown; a graceful
            # stop is a clean exit here (exit code 0), so it is not re-raised
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
                captured.remove(sig)

    server = Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(int(args.shutdown_grace), 1),
        )
    )
    # STATELOG_SERVE_PROFILE=PATH: cProfile the serving thread (the event loop) and
    # write its stats to PATH at exit (pstats format), for profiling the service under
    # a bench; STATELOG_SERVE_PROFILE_CLOCK=cpu times the thread's CPU, not wall time
    profile_path = os.environ.get("STATELOG_SERVE_PROFILE")
    profiler = None
    if profile_path:
        import cProfile
        import time

        cpu_clock = os.environ.get("STATELOG_SERVE_PROFILE_CLOCK") == "cpu"
        profiler = cProfile.Profile(time.thread_time) if cpu_clock else cProfile.Profile()
        profiler.enable()
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        listener.stop()
        if profiler is not None and profile_path:
            profiler.disable()
            profiler.dump_stats(profile_path)
    if not server.started:
        raise ConfigError("the service did not start (see the log above)")
    return 0
