"""``statelog verify``, ``export``, ``import`` and ``apps``: the log on the command line.

``--db`` defaults to ``statelog.db`` in the working directory. ``verify``,
``export`` and ``apps`` only read (``_cli_open``): a missing file, or one that
is not a statelog log, is an error and is left untouched. Exit codes: 0 done
(chain intact), 1 a broken link was found, 2 an error (missing file, not a
log, refused import). ``verify`` reports whatever a crafted row holds (an op
that does not fold, a body or hash that is not a BLOB) as a finding, exit 1;
exit 2 is for bad usage, keys, and files that are not logs.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Any

from statelog import eventstore
from statelog.eventstore import (
    UNKEYED_LIMITS,
    AuditReport,
    ConfigError,
    EventStore,
    Finding,
    StreamId,
    audit_export,
    audit_file,
    export_streams,
    import_streams,
)

from ._cli import fail
from ._cli_keys import add_key_options, add_signing_key_option, hmac_key, public_keys
from ._cli_open import check_bodies, open_log, read_file_checkpoints
from ._cli_types import app_id, positive_int
from ._cli_worker import add_kafka_source, open_kafka_log

DEFAULT_DB = "statelog.db"


def register(subparsers: Any) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="check every stream's chain, the signed checkpoints and the snapshots",
        description="Verify every stream of the streams table (or of one app): its hash "
        "chain, its head against the latest signed checkpoint (--public-key), and its "
        "snapshots. Exit 0 when intact, 1 when anything is wrong (each problem printed as "
        "stream, sequence_id and reason), 2 on an error (not a statelog log, a bad key). "
        "The file is opened read-only.",
    )
    _common(verify)
    add_key_options(verify, hmac=False)
    verify.add_argument(
        "--export",
        metavar="FILE.jsonl",
        help="verify this export file offline instead of --db (its chains, and its "
        "checkpoints with --public-key)",
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="also fold each stream up to each snapshot and compare the snapshot's state",
    )
    verify.add_argument(
        "--expect-checkpoint",
        metavar="SEQ[:DIGEST]",
        help="the latest checkpoint published elsewhere (the Kafka anchor): fail if the "
        "file's is older (a rollback) or, at SEQ, has another digest",
    )
    verify.add_argument(
        "app_id", nargs="?", type=app_id, metavar="APP_ID", help="only streams of this app"
    )
    verify.add_argument("--partition-key", metavar="K", help="only streams of this partition key")
    add_kafka_source(verify)
    verify.add_argument(
        "--checkpoints-topic",
        metavar="T",
        help="with --bootstrap: the signed checkpoints (default: TOPIC.checkpoints)",
    )
    verify.set_defaults(handler=run_verify)

    export = subparsers.add_parser(
        "export",
        help="write streams to a JSON-lines file",
        description="Write streams (all, or those of the given apps) to OUT as JSON lines: a "
        "header line, then one event per line, streams in creation order. The log is "
        "opened read-only.",
    )
    _common(export)
    export.add_argument(
        "--app-id",
        action="append",
        dest="app_ids",
        type=app_id,
        metavar="ID",
        help="export only this app's streams (repeat for more)",
    )
    export.add_argument("--partition-key", metavar="K", help="only streams of this partition key")
    export.add_argument("out", metavar="OUT.jsonl", help="the file to write")
    add_key_options(export, hmac=False)
    export.set_defaults(handler=run_export)

    import_ = subparsers.add_parser(
        "import",
        help="append the streams of a JSON-lines export file",
        description="Append the streams of an export file to the database (created if "
        "missing). The whole file is checked first: a tampered file, or one signed with "
        "another HMAC key, is refused and nothing is written.",
    )
    _common(import_)
    import_.add_argument("input", metavar="IN.jsonl", help="the export file to read")
    add_key_options(import_, hmac=False)
    add_signing_key_option(import_)
    import_.set_defaults(handler=run_import)

    apps = subparsers.add_parser(
        "apps",
        help="list the apps in the log (last step, last action, last update)",
        description="List the apps (streams) of the log in creation order: partition key, "
        "app id, last sequence id, last action and the time of the last event. The log "
        "is opened read-only.",
    )
    _common(apps, key=False)
    apps.add_argument("--partition-key", metavar="K", help="only apps of this partition key")
    apps.add_argument("--app-id-prefix", metavar="PREFIX", help="only app ids starting so")
    apps.add_argument(
        "--app-id-glob", metavar="PATTERN", help="only app ids matching this glob (* ? [..])"
    )
    apps.add_argument("--limit", type=positive_int, metavar="N", help="at most N apps")
    apps.add_argument("--json", action="store_true", help="one JSON object per line")
    add_kafka_source(apps)
    apps.set_defaults(handler=run_apps)


def _common(parser: argparse.ArgumentParser, *, key: bool = True) -> None:
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help="the log file")
    if key:
        parser.add_argument(
            "--hmac-key-env",
            metavar="VAR",
            help="read the chain's HMAC key from this environment variable",
        )


def _store_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.hmac_key_env is None:
        return {}
    key = os.environ.get(args.hmac_key_env)
    if not key:
        raise ConfigError(f"environment variable {args.hmac_key_env} is not set (--hmac-key-env)")
    return {"hmac_key": key.encode()}


# --------------------------------------------------------------------------- verify


async def run_verify(args: argparse.Namespace) -> int:
    keys = public_keys(args)
    if args.bootstrap:
        return await _verify_kafka(args, keys)
    if args.export is not None:
        if not await asyncio.to_thread(Path(args.export).is_file):
            return fail(f"no export file at {args.export!r}")
        report = await audit_export(args.export, hmac_key=hmac_key(args), public_keys=keys)
        return _print_report(args, report, keys)
    store = await open_log(args.db)  # refuses a missing file or one that is not a log
    await store.aclose()
    # (no check_bodies: the walk names a row of odd types itself, as a finding)
    report = await audit_file(
        args.db,
        hmac_key=hmac_key(args),
        public_keys=keys,
        partition_key=args.partition_key,
        app_id=args.app_id,
        deep=args.deep,
    )
    if args.app_id is not None and report.streams == 0:
        return fail(f"no stream of app {args.app_id!r} in {args.db!r}")
    return _print_report(args, report, keys)


async def _verify_kafka(args: argparse.Namespace, keys: list[Any]) -> int:
    """``verify --bootstrap``: the topic's chains and the signed checkpoints of its writers."""
    from statelog.eventstore.kafka import audit_kafka

    for flag, given in (
        ("--export", args.export is not None),
        ("--deep", args.deep),
        ("--expect-checkpoint", args.expect_checkpoint is not None),
    ):
        if given:
            raise ConfigError(f"{flag} checks a SQLite log or an export, not a Kafka topic")
    store = await open_kafka_log(args)
    try:
        report = await audit_kafka(
            store,
            checkpoints_topic=args.checkpoints_topic,
            hmac_key=hmac_key(args),
            public_keys=keys,
            partition_key=args.partition_key,
            app_id=args.app_id,
        )
    finally:
        await store.aclose()
    if args.app_id is not None and report.streams == 0 and report.ok:
        return fail(f"no stream of app {args.app_id!r} in topic {args.topic!r}")
    for finding in report.findings:
        print(f"broken: {finding}")
    summary = f"{report.streams} streams, {report.events} events"
    if report.writers:
        how = "signatures verified" if report.signed else "signatures NOT checked: no --public-key"
        summary += (
            f"; {report.checkpoints} checkpoints of {len(report.writers)} "
            f"writer{'' if len(report.writers) == 1 else 's'} ({how}), "
            f"{report.unsigned_events} events after the signed heads"
        )
    if report.skipped_records:
        summary += f"; {report.skipped_records} records skipped (duplicates, fenced, off-chain)"
    return _conclude(report.ok, len(report.findings), summary, not report.writers and not keys)


def _print_report(args: argparse.Namespace, report: AuditReport, keys: list[Any]) -> int:
    if args.expect_checkpoint is not None:
        report.findings += _expect(report, args.expect_checkpoint)
    for finding in report.findings:
        print(f"broken: {finding}")
    summary = f"{report.streams} streams, {report.events} events"
    if report.checkpoint is not None:
        how = "signature verified" if report.signed else "signature NOT checked: no --public-key"
        summary += (
            f"; checkpoint #{report.checkpoint} ({how}), {report.unsigned_events} events after it"
        )
    if report.snapshots:
        summary += f"; {report.snapshots} snapshots"
    return _conclude(
        report.ok, len(report.findings), summary, report.checkpoint is None and not keys
    )


def _conclude(ok: bool, problems: int, summary: str, unkeyed: bool) -> int:
    """The last line of a verify report and its exit code (1: a problem found)."""
    if not ok:
        print(f"failed: {problems} problems in {summary}")
        return 1
    print(f"ok: {summary}")
    if unkeyed:  # nothing signed was checked: say what an unkeyed walk cannot see
        print(f"note: {UNKEYED_LIMITS}", file=sys.stderr)
    return 0


def _expect(report: AuditReport, expected: str) -> list[Finding]:
    """``--expect-checkpoint SEQ[:DIGEST]``: the latest checkpoint is at least SEQ
    and, with DIGEST, the file's checkpoint SEQ is the one published (a deleted
    anchored checkpoint that a writer signed again, then signed past, differs)."""
    seq_text, _, digest = expected.partition(":")
    if not seq_text.isdigit():
        raise ConfigError(f"--expect-checkpoint wants SEQ or SEQ:DIGEST, got {expected!r}")
    seq = int(seq_text)
    latest = report.checkpoint or 0
    if latest < seq:
        return [
            Finding(
                stream=None,
                sequence_id=None,
                reason=f"the latest checkpoint is #{latest}, but #{seq} was published: the "
                "log was rolled back to an older checkpoint",
            )
        ]
    have = report.checkpoint_digests.get(seq, "")
    if digest and digest != have:
        held = f"has digest {have[:16]}..." if have else "is not in the file's checked chain"
        return [
            Finding(
                stream=None,
                sequence_id=None,
                reason=f"checkpoint #{seq} {held}, the one published is {digest[:16]}...",
            )
        ]
    return []


# --------------------------------------------------------------------------- export / import


async def run_export(args: argparse.Namespace) -> int:
    store = await open_log(args.db, **_store_options(args))
    try:
        await check_bodies(args.db)
        streams = [
            s
            for s in await store.streams(args.partition_key)
            if args.app_ids is None or s.app_id in args.app_ids
        ]
        if args.app_ids is not None:
            absent = sorted(set(args.app_ids) - {s.app_id for s in streams})
            if absent:
                return fail(f"no stream of app {', '.join(map(repr, absent))} in {args.db!r}")
        keys = public_keys(args)
        if keys or args.hmac_key_env is not None:
            report = await audit_file(args.db, hmac_key=hmac_key(args), public_keys=keys)
            if not report.ok:
                return fail(
                    f"{args.db!r} does not verify ({report.findings[0]}; "
                    f"{len(report.findings)} problems): nothing exported"
                )
        checkpoints = await read_file_checkpoints(args.db)
        try:
            count = await export_streams(store, args.out, streams=streams, checkpoints=checkpoints)
        except OSError as exc:
            return fail(f"cannot write {args.out!r}: {exc.strerror or exc}")
        signed = f" and {len(checkpoints)} signed checkpoints" if checkpoints else ""
        print(f"exported {count} events of {len(streams)} streams{signed} to {args.out}")
        return 0
    finally:
        await store.aclose()


async def run_import(args: argparse.Namespace) -> int:
    options = _store_options(args)
    if not await asyncio.to_thread(Path(args.input).is_file):
        return fail(f"no export file at {args.input!r}")
    if args.signing_key is not None:
        options["signing_key"] = args.signing_key
    keys = public_keys(args)
    store = await eventstore.SQLiteEventStore.open(args.db, **options)
    try:
        try:
            count = await import_streams(store, args.input, public_keys=keys)
        except OSError as exc:
            return fail(f"cannot read {args.input!r}: {exc.strerror or exc}")
        print(f"imported {count} events into {args.db}")
        return 0
    finally:
        await store.aclose()


# --------------------------------------------------------------------------- apps


async def run_apps(args: argparse.Namespace) -> int:
    store = await (open_kafka_log(args) if args.bootstrap else open_log(args.db))
    try:
        if not args.bootstrap:
            await check_bodies(args.db)
        shown = 0
        for stream in await store.streams(args.partition_key):
            if args.limit is not None and shown >= args.limit:
                break
            if args.app_id_prefix is not None and not stream.app_id.startswith(args.app_id_prefix):
                continue
            if args.app_id_glob is not None and not fnmatch.fnmatchcase(
                stream.app_id, args.app_id_glob
            ):
                continue
            row = await _app_row(store, stream)
            if row is None:
                continue
            if args.json:
                sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
            else:
                if shown == 0:
                    _line("PARTITION", "APP_ID", "LAST_SEQ", "LAST_ACTION", "UPDATED")
                _line(
                    row["partition_key"] or '""',
                    row["app_id"],
                    str(row["last_sequence"]),
                    row["last_action"] or "-",
                    row["updated"],
                )
            shown += 1
        if shown == 0 and not args.json:
            print("no apps", file=sys.stderr)
        return 0
    finally:
        await store.aclose()


async def _app_row(store: EventStore, stream: StreamId) -> dict[str, Any] | None:
    last = await store.last_sequence(*stream)
    if last < 0:
        return None
    (event,) = await store.read(*stream, from_sequence=last, to_sequence=last)
    return {
        "partition_key": stream.partition_key,
        "app_id": stream.app_id,
        "last_sequence": last,
        "last_action": event.action,
        "last_kind": event.kind,
        "updated": event.timestamp.isoformat(timespec="seconds"),
    }


def _line(partition: str, app: str, seq: str, action: str, updated: str) -> None:
    sys.stdout.write(f"{partition:<12} {app:<28} {seq:>9}  {action:<16} {updated}\n")
