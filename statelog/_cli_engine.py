"""``statelog demo``, ``statelog history`` and ``statelog state``.

``history`` and ``state`` only read: they open the log read-only (``_cli_open``)
and refuse a file that is not a statelog log without touching it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgspec

from statelog.eventstore import (
    ConfigError,
    Event,
    EventKind,
    IntegrityError,
    StoreError,
    audit_file,
    load_state,
)

from ._cli_keys import add_key_options, add_signing_key_option, hmac_key, public_keys
from ._cli_open import check_bodies, open_log, open_snapshots
from ._cli_types import INT64_MAX, app_id, nonnegative_int, positive_int
from ._cli_worker import add_kafka_source, open_kafka_log

__all__ = ["register"]


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the built-in order workflow (resumes if the app exists)",
        description=(
            "Run a built-in order workflow: receive, check, approval for large orders, "
            "a charge that retries on gateway timeouts, and shipping waves as a parallel "
            "map of sub-applications. Every step is an event; run it again to resume."
        ),
    )
    demo.add_argument("--db", default="statelog.db", metavar="PATH", help="the SQLite log")
    demo.add_argument("--app-id", type=app_id, default="demo-orders", help="the app's id")
    demo.add_argument(
        "--steps", type=positive_int, default=300, metavar="N", help="run until this many steps"
    )
    demo.add_argument(
        "--durability",
        choices=["transactional", "fire_and_forget"],
        default="transactional",
        help="when an append counts as done",
    )
    demo.add_argument(
        "--snapshot-every",
        type=positive_int,
        default=1000,
        metavar="N",
        help="save a snapshot of the state every N steps",
    )
    demo.add_argument("--quiet", action="store_true", help="only the final summary")
    add_signing_key_option(demo)
    demo.set_defaults(handler=_demo)

    history = subparsers.add_parser(
        "history",
        help="show the events of one app",
        description="Show the events of one app, one line each (or JSON). Read-only.",
    )
    history.add_argument("app_id", type=app_id, metavar="APP_ID", help="the app")
    history.add_argument("--db", default="statelog.db", metavar="PATH", help="the SQLite log")
    history.add_argument("--partition-key", default="", metavar="K", help="the app's partition")
    history.add_argument(
        "--from",
        dest="from_sequence",
        type=nonnegative_int,
        default=0,
        metavar="SEQ",
        help="first sequence id to show",
    )
    history.add_argument("--limit", type=positive_int, metavar="N", help="at most N events")
    history.add_argument("--json", action="store_true", help="one JSON event per line")
    add_kafka_source(history)
    add_key_options(history)
    history.set_defaults(handler=_history)

    state = subparsers.add_parser(
        "state",
        help="show an app's state, now or at a past step",
        description="Show an app's state after its last event or after event SEQ. Read-only.",
    )
    state.add_argument("app_id", type=app_id, metavar="APP_ID", help="the app")
    state.add_argument("--db", default="statelog.db", metavar="PATH", help="the SQLite log")
    state.add_argument("--partition-key", default="", metavar="K", help="the app's partition")
    state.add_argument(
        "--at", type=nonnegative_int, metavar="SEQ", help="after event SEQ (default: the last)"
    )
    state.add_argument("--json", action="store_true", help="compact JSON")
    add_key_options(state)
    state.set_defaults(handler=_state)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

    started = time.perf_counter()
    builder = demo_builder()
    if args.signing_key is not None:
        builder = builder.with_signing_key(args.signing_key)
    app = await (
        builder.with_identifiers(app_id=args.app_id)
        .with_store(args.db)
        .with_durability(args.durability)
        .with_snapshots(every=args.snapshot_every)
        .initialize_from(default_state=demo_initial_state(), default_entrypoint=DEMO_ENTRYPOINT)
        .abuild()
    )
    async with app:
        first = app.sequence_id
        if first > 0:
            _out(f"resuming {args.app_id!r} at step {first} (next: {app.position})")
        else:
            _out(f"starting {args.app_id!r} in {args.db} ({args.durability})")
        report_every = max(args.steps // 10, 1)
        step = app.astep
        while app.sequence_id < args.steps:
            await step()
            seq = app.sequence_id
            if not args.quiet and seq % report_every == 0:
                s = app.state
                _out(
                    f"  step {seq:>8}/{args.steps}  orders {s['orders']:>6}  "
                    f"approved {s['approved']:>5}  rejected {s['rejected']:>5}  "
                    f"shipped {s['shipped']:>6}"
                )
        await app.flush()
        elapsed = time.perf_counter() - started
        s = app.state
        ran = app.sequence_id - first
        _out(
            f"done: {args.app_id!r} at step {app.sequence_id} ({ran} new steps in "
            f"{elapsed:.2f} s, {ran / elapsed if elapsed else 0:,.0f} steps/s)"
        )
        _out(
            f"  orders {s['orders']}, approved {s['approved']}, rejected {s['rejected']}, "
            f"charged {s['charged']}, revenue {s['revenue'] / 100:,.2f} EUR, "
            f"shipped {s['shipped']} in {s['waves_sent']} waves"
        )
        _out(f"  see: statelog history {args.app_id} --db {args.db} | tail")
    return 0


async def _history(args: argparse.Namespace) -> int:
    try:
        return await _show_history(args)
    except BrokenPipeError:  # `statelog history ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _show_history(args: argparse.Namespace) -> int:
    if args.bootstrap and (public_keys(args) or args.hmac_key_env is not None):
        raise ConfigError(
            "--public-key and --hmac-key-env check a SQLite log (--db) here; check a Kafka "
            "topic with: statelog verify --bootstrap ... --public-key ..."
        )
    store = await (
        open_kafka_log(args) if args.bootstrap else open_log(args.db, hmac_key=hmac_key(args))
    )
    async with store:
        if not args.bootstrap:
            await check_bodies(args.db, (args.partition_key, args.app_id))
            await _check_keyed(args)
        to = None if args.limit is None else min(args.from_sequence + args.limit - 1, INT64_MAX)
        events = await store.read(
            args.partition_key, args.app_id, from_sequence=args.from_sequence, to_sequence=to
        )
        if not events and await store.last_sequence(args.partition_key, args.app_id) < 0:
            where = args.topic if args.bootstrap else args.db
            raise StoreError(f"no app {args.app_id!r} in {where!r}")
        if args.json:
            encoder = msgspec.json.Encoder()
            for event in events:
                sys.stdout.write(encoder.encode(event).decode() + "\n")
            return 0
        _out(f"{'seq':>7}  {'kind':<16} {'action':<12} {'next':<12} {'att':>3}  changes")
        for e in events:
            changes = describe_change(e)
            if e.error is not None:
                changes = f"{e.error.type}: {e.error.message}"
            if e.parent is not None:
                changes = f"[{e.parent.relation} of {e.parent.app_id}#{e.parent.sequence_id}] " + (
                    changes
                )
            _out(
                f"{e.sequence_id:>7}  {e.kind:<16} {e.action or '-':<12} "
                f"{e.next_action or '-':<12} {e.attempt:>3}  {_clip(changes, 60)}"
            )
    return 0


def describe_change(e: Event) -> str:
    """One line for ``history``: the keys each op touched (``+`` append, ``-`` delete),
    the input received, or where the graph changed."""
    if e.kind == EventKind.GRAPH_CHANGED:
        return f"graph changed: {e.data.get('from')} -> {e.data.get('to')}"
    if e.kind == EventKind.WAITING_FOR_INPUT or e.kind == EventKind.INPUT_RECEIVED:
        return f"input {e.data.get('name')!r}"
    if e.kind == EventKind.HALTED:
        return f"halt {e.data.get('halt')}"
    marks = {"delete": "-", "append": "+", "extend": "+", "increment": "+=", "merge": "|="}
    return ", ".join(f"{marks.get(op['op'], '')}{op['key']}" for op in e.ops)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


async def _check_keyed(args: argparse.Namespace) -> None:
    """With a key option, the app's stream must verify before it is shown."""
    keys = public_keys(args)
    if not keys and args.hmac_key_env is None:
        return
    report = await audit_file(
        args.db,
        hmac_key=hmac_key(args),
        public_keys=keys,
        partition_key=args.partition_key,
        app_id=args.app_id,
    )
    problems = [f for f in report.findings if f.stream in (None, (args.partition_key, args.app_id))]
    if problems:
        raise IntegrityError(
            (args.partition_key, args.app_id),
            problems[0].sequence_id if problems[0].sequence_id is not None else -1,
            f"{problems[0]} (statelog verify lists every problem; nothing shown)",
        )


async def _state(args: argparse.Namespace) -> int:
    store = await open_log(args.db, hmac_key=hmac_key(args))
    async with store:
        await check_bodies(args.db, (args.partition_key, args.app_id))
        await _check_keyed(args)
        snapshots = await open_snapshots(args.db, hmac_key=hmac_key(args))
        try:
            last = await store.last_sequence(args.partition_key, args.app_id)
            if last < 0:
                raise StoreError(f"no app {args.app_id!r} in {args.db!r}")
            if args.at is not None and not 0 <= args.at <= last:
                raise StoreError(
                    f"app {args.app_id!r} has steps 0..{last}; --at {args.at} is outside"
                )
            state, seq = await load_state(
                store, snapshots, args.partition_key, args.app_id, at_sequence=args.at
            )
        finally:
            await snapshots.aclose()
    if args.json:
        _out(json.dumps({"sequence_id": seq, "state": state}, sort_keys=True))
    else:
        _out(f"# {args.app_id} after step {seq}")
        _out(json.dumps(state, indent=2, sort_keys=True))
    return 0
