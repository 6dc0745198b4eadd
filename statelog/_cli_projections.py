"""``statelog projections list|status|rebuild|run``: read models on the command line.

``--into`` is the read-model file (default ``projections.db``); ``--from`` is the
event source: ``sqlite:PATH`` (default ``sqlite:statelog.db``), ``file:PATH`` (an
export) or ``kafka://HOST:PORT/TOPIC``. ``--import MODULE`` loads a module that
registers more projections (``projections.register_projection``).
A ``sqlite:`` source is only read: a file that is not a statelog log is refused
untouched. ``rebuild --from kafka://...`` gives up after ``--timeout`` seconds
of waiting on the broker, and says on stderr what it waits for.
Exit codes: 0 done, 2 an error (unknown projection, missing source, unwritable
read model, a broker that does not answer, a handler that failed - the message
names the event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from statelog.eventstore import ConfigError, StoreUnavailableError
from statelog.projections import (
    BUILTIN_PROJECTIONS,
    Progress,
    ProjectionRunner,
    ReadModel,
    Source,
    get_projection,
    open_source,
)
from statelog.projections._builtins import known_projections

from ._cli_open import open_log_source
from ._cli_types import positive_int, seconds, source_uri

DEFAULT_INTO = "projections.db"
DEFAULT_FROM = "sqlite:statelog.db"
DEFAULT_TIMEOUT = 60.0


def register(subparsers: Any) -> None:
    top = subparsers.add_parser(
        "projections",
        help="list, rebuild and run read models (audit_trail, current_state, app_index)",
        description="Read models folded from the log: list them, show their status, "
        "rebuild one offline (blue/green) or keep them current live.",
    )
    sub = top.add_subparsers(dest="projections_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the projections this statelog knows")
    _imports(listing)
    listing.set_defaults(handler=run_list)

    status = sub.add_parser("status", help="generations, checkpoints and progress in a read model")
    _imports(status)
    _into(status)
    status.set_defaults(handler=run_status)

    rebuild = sub.add_parser(
        "rebuild",
        help="rebuild one projection from the start of a source",
        description="Rebuild NAME into a new generation from the start of the source, "
        "then swap it in atomically; the old generation serves until then. An "
        "interrupted rebuild of the same version from the same source resumes.",
    )
    rebuild.add_argument("name", metavar="NAME", help="the projection (see `projections list`)")
    _imports(rebuild)
    _source(rebuild)
    _into(rebuild)
    rebuild.add_argument(
        "--batch-size", type=positive_int, default=5000, metavar="N", help="events per batch"
    )
    rebuild.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="kafka:// only: give up (exit 2) after waiting this long for the broker",
    )
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    rebuild.set_defaults(handler=run_rebuild)

    live = sub.add_parser(
        "run",
        help="keep projections current as events arrive (until Ctrl-C)",
        description="Follow the source live. A projection whose version changed is first "
        "rebuilt blue/green, then swapped in and followed.",
    )
    live.add_argument(
        "names", nargs="*", metavar="NAME", help="projections to run (default: the built-ins)"
    )
    _imports(live)
    _source(live)
    _into(live)
    live.add_argument(
        "--batch-size", type=positive_int, default=1000, metavar="N", help="events per batch"
    )
    live.set_defaults(handler=run_live)


def _imports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it registers projections); repeatable",
    )


def _into(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--into",
        default=DEFAULT_INTO,
        metavar="PATH",
        help="the read-model SQLite file",
    )


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        type=source_uri,
        default=DEFAULT_FROM,
        metavar="URI",
        help="sqlite:PATH | file:PATH | kafka://HOST:PORT/TOPIC",
    )


def _load(args: argparse.Namespace) -> None:
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: {exc}") from exc


async def _open_source(uri: str, **options: Any) -> Source:
    """``open_source``, but a ``sqlite:`` log is opened read-only (a non-log is left untouched)."""
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:")
        return await open_log_source(path[2:] if path.startswith("//") else path)
    if uri.startswith("kafka://"):
        # aiokafka logs every failed connection attempt; the waits are reported instead.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    else:
        options = {}
    return await open_source(uri, **options)


def _say(message: str) -> None:
    print(f"statelog: {message}", file=sys.stderr, flush=True)


def run_list(args: argparse.Namespace) -> int:
    _load(args)
    for cls in known_projections():
        kinds = "all" if cls.kinds is None else ",".join(sorted(cls.kinds))
        tables = ",".join(cls.tables)
        print(f"{cls.name}\tv{cls.version}\tkinds={kinds}\ttables={tables}")
    return 0


async def run_status(args: argparse.Namespace) -> int:
    _load(args)
    if not await asyncio.to_thread(Path(args.into).is_file):
        raise StoreUnavailableError(f"no read model at {args.into!r}")
    async with await ReadModel.open(args.into) as model:
        generations = await model.generations()
    if not generations:
        print("no projections in this read model")
    for gen in generations:
        where = (
            f"offsets={dict(sorted(gen.checkpoint.offsets.items()))}"
            if gen.checkpoint.offsets
            else f"position={gen.checkpoint.position}"
        )
        print(
            f"{gen.name}\tgeneration={gen.generation}\tv{gen.version}\t{gen.status}\t"
            f"events={gen.checkpoint.events}\t{where}\tsource={gen.source}\t"
            f"updated={gen.updated_at}"
        )
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(p: Progress) -> str:
    """``[#####.....]  48% 480,000/1,000,000 152,000 ev/s ETA 0:00:03`` (no bar if no total)."""
    if p.total:
        fraction = min(p.events / p.total, 1.0)
        bar = "#" * int(fraction * 30)
        head = f"[{bar:<30}] {fraction:4.0%} {p.events:,}/{p.total:,}"
    else:
        head = f"{p.events:,} events"
    tail = f"done in {_duration(p.elapsed)}" if p.done else f"ETA {_duration(p.eta)}"
    return f"{p.projection} g{p.generation} {head} {p.rate:,.0f} ev/s {tail}"


def _printer(quiet: bool) -> Any:
    if quiet:
        return None
    tty = sys.stderr.isatty()

    def show(p: Progress) -> None:
        line = progress_line(p)
        if tty:
            end = "\n" if p.done else ""
            print(f"\r{line}\x1b[K", end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


async def run_rebuild(args: argparse.Namespace) -> int:
    _load(args)
    projection = get_projection(args.name)
    source = await _open_source(args.source, timeout=args.timeout, on_wait=_say)
    try:
        async with ProjectionRunner(
            projection, args.into, batch_size=args.batch_size, on_progress=_printer(args.quiet)
        ) as runner:
            gen = await runner.rebuild(source)
    finally:
        await source.aclose()
    print(
        f"{gen.name}: generation {gen.generation} (v{gen.version}) is live with "
        f"{gen.checkpoint.events:,} events from {gen.source}"
    )
    return 0


async def run_live(args: argparse.Namespace) -> int:
    _load(args)
    names = args.names or sorted(BUILTIN_PROJECTIONS)
    projections = [get_projection(name) for name in names]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sources = []
    runners: list[ProjectionRunner] = []
    try:
        for projection in projections:
            group = f"statelog-projection-{projection.name}"
            sources.append(await _open_source(args.source, group_id=group, on_wait=_say))
            runners.append(
                await ProjectionRunner(projection, args.into, batch_size=args.batch_size).open()
            )
        print(f"following {args.source} into {args.into}: {', '.join(names)}", file=sys.stderr)
        await asyncio.gather(*(r.run(s, stop=stop) for r, s in zip(runners, sources, strict=True)))
    finally:
        for runner in runners:
            await runner.aclose()
        for source in sources:
            await source.aclose()
    return 0
