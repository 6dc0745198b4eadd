"""``statelog relay``: publish a SQLite log to a Kafka topic (the outbox relay).

The relay keeps its position in table ``statelog_relay`` of the same SQLite
file (one row per ``--name``, default the topic), written only after the
broker acknowledged a batch, so a killed relay restarts where the broker last
confirmed - at least once, never with a gap. It prints a progress line
(position, lag, published) every ``--progress`` seconds to stderr.

Exit codes: 0 stopped (SIGTERM/SIGINT, or caught up with ``--until-caught-up``),
2 an error (missing database, broker unreachable within ``--connect-timeout``,
an event over the record size limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statelog import eventstore

from ._cli import fail
from ._cli_types import positive_int, seconds

if TYPE_CHECKING:  # statelog.eventstore.kafka loads aiokafka: only when a relay runs
    from statelog.eventstore.kafka import OutboxRelay, RelayStatus


def register(subparsers: Any) -> None:
    relay = subparsers.add_parser(
        "relay",
        help="publish the log to a Kafka topic, at least once, in per-stream order",
        description="Publish every event of a SQLite log to a Kafka topic (one record per "
        "event, key partition_key/app_id; see docs/wire-format.md), resuming from the "
        "position stored in the same file. Waits out broker outages with backoff.",
    )
    relay.add_argument("--db", required=True, metavar="PATH", help="the SQLite log")
    relay.add_argument(
        "--bootstrap", required=True, type=_text, metavar="HOST:PORT", help="Kafka brokers"
    )
    relay.add_argument(
        "--topic", required=True, type=_text, metavar="T", help="topic to publish to"
    )
    relay.add_argument(
        "--name",
        type=_text,
        metavar="NAME",
        help="relay name for the stored position (default: the topic)",
    )
    relay.add_argument(
        "--codec", choices=["json", "msgpack"], default="json", help="record value format"
    )
    relay.add_argument(
        "--batch-size", type=positive_int, default=2000, metavar="N", help="events per batch"
    )
    relay.add_argument(
        "--max-record-bytes",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="record size limit",
    )
    relay.add_argument(
        "--connect-timeout",
        type=seconds,
        default=30.0,
        metavar="S",
        help="give up (exit 2) if the broker cannot be reached at start within S seconds",
    )
    relay.add_argument(
        "--outage-timeout",
        type=seconds,
        default=None,
        metavar="S",
        help="give up after an outage of S seconds (default: wait for ever)",
    )
    relay.add_argument(
        "--enable-idempotence",
        action="store_true",
        help="use Kafka's idempotent producer (not supported by every broker, e.g. Tansu)",
    )
    relay.add_argument(
        "--until-caught-up", action="store_true", help="exit 0 once nothing is pending"
    )
    relay.add_argument(
        "--progress", type=seconds, default=5.0, metavar="S", help="progress line every S seconds"
    )
    relay.add_argument(
        "--status", action="store_true", help="print the stored position and lag, then exit"
    )
    relay.set_defaults(handler=run_relay)


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value, got an empty string")
    return text


def _print(status: RelayStatus) -> None:
    print(f"statelog: {status.line()}", file=sys.stderr, flush=True)


def run_relay(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    if not Path(args.db).exists():
        return fail(f"no database at {args.db!r}")
    return _run_relay(args)


async def _run_relay(args: argparse.Namespace) -> int:
    from statelog.eventstore.kafka import OutboxRelay, SQLiteRelayCheckpoint

    logging.basicConfig(level=logging.WARNING, format="statelog: %(message)s")
    store = await eventstore.SQLiteEventStore.open(args.db)
    checkpoint = SQLiteRelayCheckpoint(args.db, args.name or args.topic)
    try:
        if args.status:
            position = await checkpoint.load()
            head = await checkpoint.log_head()
            if head is None:
                head = await _head(store)
            print(f"topic {args.topic}: position {position}, head {head}, lag {head - position}")
            return 0
        relay = OutboxRelay(
            store,
            bootstrap_servers=args.bootstrap,
            topic=args.topic,
            codec=args.codec,
            batch_size=args.batch_size,
            max_record_bytes=args.max_record_bytes,
            checkpoint=checkpoint,
            connect_timeout=args.connect_timeout,
            outage_timeout=args.outage_timeout,
            enable_idempotence=args.enable_idempotence,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, relay.stop)
        reporter = asyncio.create_task(_report(relay, args.progress))
        try:
            await relay.start()
            _print(relay.status())
            status = await relay.run(until_caught_up=args.until_caught_up)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await relay.aclose()
        _print(status)
        return 0
    finally:
        await checkpoint.aclose()
        await store.aclose()


async def _report(relay: OutboxRelay, every: float) -> None:
    while True:
        await asyncio.sleep(max(every, 0.1))
        _print(relay.status())


async def _head(store: Any) -> int:
    last_position = getattr(store, "last_position", None)
    if callable(last_position):
        return int(await last_position())
    head = 0
    async for batch in store.iter_all(from_position=0):
        head = batch[-1].position
    return head
