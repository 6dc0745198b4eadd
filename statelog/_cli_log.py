"""``statelog verify``, ``statelog export`` and ``statelog import``: the log on the command line.

``--db`` defaults to ``statelog.db`` in the working directory. ``verify`` and
``export`` only read: a missing database file is an error, never a new empty
one. Exit codes: 0 done (chain intact), 1 a broken link was found, 2 an error
(missing file, unreadable database, refused import).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from statelog import eventstore
from statelog.eventstore import (
    BrokenLink,
    EncodingError,
    EventStore,
    StreamId,
    export_streams,
    import_streams,
    verify_events,
)

DEFAULT_DB = "statelog.db"
_LOCATE_CHUNK = 1_000


def register(subparsers: Any) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="walk the hash chain; exit 1 and name the first broken link",
        description="Verify the hash chain of every stream (or of one app). Exit 0 when "
        "intact, 1 at the first broken link (printed as stream, sequence_id and reason).",
    )
    _common(verify)
    verify.add_argument("app_id", nargs="?", metavar="APP_ID", help="only streams of this app")
    verify.add_argument("--partition-key", metavar="K", help="only streams of this partition key")
    verify.set_defaults(handler=run_verify)

    export = subparsers.add_parser(
        "export",
        help="write streams to a JSON-lines file",
        description="Write streams (all, or those of the given apps) to OUT as JSON lines: a "
        "header line, then one event per line, streams in creation order.",
    )
    _common(export)
    export.add_argument(
        "--app-id",
        action="append",
        dest="app_ids",
        metavar="ID",
        help="export only this app's streams (repeat for more)",
    )
    export.add_argument("--partition-key", metavar="K", help="only streams of this partition key")
    export.add_argument("out", metavar="OUT.jsonl", help="the file to write")
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
    import_.set_defaults(handler=run_import)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=DEFAULT_DB, metavar="PATH", help=f"the database (default {DEFAULT_DB})"
    )
    parser.add_argument(
        "--hmac-key-env",
        metavar="VAR",
        help="read the chain's HMAC key from this environment variable",
    )


def _error(message: str) -> int:
    print(f"statelog: error: {message}", file=sys.stderr)
    return 2


def _store_options(args: argparse.Namespace) -> dict[str, Any] | str:
    if args.hmac_key_env is None:
        return {}
    key = os.environ.get(args.hmac_key_env)
    if not key:
        return f"environment variable {args.hmac_key_env} is not set (--hmac-key-env)"
    return {"hmac_key": key.encode()}


def _is_file(path: str) -> bool:
    return Path(path).is_file()


async def _open(args: argparse.Namespace, options: dict[str, Any]) -> EventStore:
    store: EventStore = await eventstore.SQLiteEventStore.open(args.db, **options)
    return store


async def _open_existing(args: argparse.Namespace) -> EventStore | str:
    """The store at ``--db``, or why it cannot be opened (a bad key option, no file)."""
    options = _store_options(args)
    if isinstance(options, str):
        return options
    if not _is_file(args.db):
        return f"no database at {args.db!r} (use --db PATH)"
    return await _open(args, options)


# --------------------------------------------------------------------------- verify


async def run_verify(args: argparse.Namespace) -> int:
    store = await _open_existing(args)
    if isinstance(store, str):
        return _error(store)
    try:
        targets = [
            s
            for s in await store.streams(args.partition_key)
            if args.app_id is None or s.app_id == args.app_id
        ]
        if args.app_id is not None and not targets:
            return _error(f"no stream of app {args.app_id!r} in {args.db!r}")
        events = 0
        for stream in targets:
            broken = await _verify_stream(store, stream)
            if broken is not None:
                print(
                    f"broken: stream {str(broken.stream)!r} sequence_id {broken.sequence_id}: "
                    f"{broken.reason}"
                )
                return 1
            events += await store.last_sequence(*stream) + 1
        print(f"ok: {len(targets)} streams, {events} events")
        return 0
    finally:
        await store.aclose()


async def _verify_stream(store: EventStore, stream: StreamId) -> BrokenLink | None:
    try:
        return await store.verify(stream.partition_key, stream.app_id)
    except EncodingError as exc:
        # A stored event that no longer decodes is a broken link too: find which one.
        return await _locate_undecodable(store, stream, exc)


async def _locate_undecodable(
    store: EventStore, stream: StreamId, error: EncodingError
) -> BrokenLink:
    last = await store.last_sequence(*stream)
    prev_hash, start = "", 0
    while start <= last:
        stop = min(start + _LOCATE_CHUNK - 1, last)
        try:
            chunk = await store.read(*stream, from_sequence=start, to_sequence=stop)
        except EncodingError:
            for seq in range(start, stop + 1):
                try:
                    await store.read(*stream, from_sequence=seq, to_sequence=seq)
                except EncodingError as exc:
                    return _link(stream, seq, f"stored event does not decode: {exc}")
            chunk = []  # pragma: no cover - the chunk failed, so one event must
        broken = verify_events(chunk, prev_hash=prev_hash, first_sequence=start, key=store.hmac_key)
        if broken is not None:
            return broken
        if chunk:
            prev_hash = chunk[-1].hash
        start = stop + 1
    return _link(stream, last + 1, f"stream does not decode: {error}")


def _link(stream: StreamId, sequence_id: int, reason: str) -> BrokenLink:
    return BrokenLink(
        partition_key=stream.partition_key,
        app_id=stream.app_id,
        sequence_id=sequence_id,
        reason=reason,
    )


# --------------------------------------------------------------------------- export / import


async def run_export(args: argparse.Namespace) -> int:
    store = await _open_existing(args)
    if isinstance(store, str):
        return _error(store)
    try:
        streams = [
            s
            for s in await store.streams(args.partition_key)
            if args.app_ids is None or s.app_id in args.app_ids
        ]
        if args.app_ids is not None:
            absent = sorted(set(args.app_ids) - {s.app_id for s in streams})
            if absent:
                return _error(f"no stream of app {', '.join(map(repr, absent))} in {args.db!r}")
        try:
            count = await export_streams(store, args.out, streams=streams)
        except OSError as exc:
            return _error(f"cannot write {args.out!r}: {exc.strerror or exc}")
        print(f"exported {count} events of {len(streams)} streams to {args.out}")
        return 0
    finally:
        await store.aclose()


async def run_import(args: argparse.Namespace) -> int:
    options = _store_options(args)
    if isinstance(options, str):
        return _error(options)
    if not _is_file(args.input):
        return _error(f"no export file at {args.input!r}")
    store = await _open(args, options)
    try:
        try:
            count = await import_streams(store, args.input)
        except OSError as exc:
            return _error(f"cannot read {args.input!r}: {exc.strerror or exc}")
        print(f"imported {count} events into {args.db}")
        return 0
    finally:
        await store.aclose()
