"""``statelog worker`` and ``statelog submit``: scale out on Kafka (docs/scale-out.md).

``worker`` joins a consumer group on ``{prefix}.commands`` and runs the streams
of the partitions it owns, writing their events to ``{prefix}.events`` with
the partition's fence. It prints one JSON line per ownership change on stdout
and stops on SIGTERM/SIGINT (exit 0). ``submit`` puts one command on the
commands topic and prints its partition and offset.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from ._cli_keys import add_signing_key_option
from ._cli_types import app_id, nonnegative_int, positive_int, seconds


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run workflows for the Kafka partitions this worker owns in a group",
        description="Join a consumer group on {prefix}.commands and run the commands of the "
        "partitions it is assigned, writing events to {prefix}.events with a fence per "
        "partition (a paused worker that lost its partitions cannot fork a stream).",
    )
    worker.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="Kafka brokers")
    worker.add_argument("--group", required=True, metavar="NAME", help="consumer group")
    worker.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="[NAME=]MODULE:ATTR",
        help="a workflow: an ApplicationBuilder or a callable returning one (repeatable)",
    )
    worker.add_argument("--demo", action="store_true", help="register the demo graph 'demo'")
    worker.add_argument("--topic-prefix", default="statelog", metavar="P", help="topic prefix")
    worker.add_argument(
        "--partitions",
        type=positive_int,
        default=None,
        metavar="N",
        help="create the two topics with N partitions if they are missing",
    )
    worker.add_argument(
        "--replication",
        type=positive_int,
        default=1,
        metavar="N",
        help="replication factor of topics --partitions creates",
    )
    worker.add_argument(
        "--snapshots",
        metavar="PATH",
        help="a SnapshotStore file all workers share (default: none; resume replays the log)",
    )
    worker.add_argument(
        "--snapshot-every", type=positive_int, default=50, metavar="N", help="events per snapshot"
    )
    worker.add_argument(
        "--session-timeout",
        type=positive_int,
        default=10_000,
        metavar="MS",
        help="group session timeout: how long a silent worker keeps its partitions",
    )
    worker.add_argument(
        "--heartbeat", type=positive_int, default=1_000, metavar="MS", help="heartbeat interval"
    )
    worker.add_argument(
        "--concurrency", type=positive_int, default=64, metavar="N", help="streams run at once"
    )
    worker.add_argument("--id", metavar="ID", help="worker id in logs and fences")
    add_signing_key_option(worker)
    worker.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --signing-key: sign a checkpoint every N events (default 10000)",
    )
    worker.add_argument(
        "--checkpoint-seconds",
        type=seconds,
        default=None,
        metavar="S",
        help="with --signing-key: and at least every S seconds while writing (default 5)",
    )
    worker.set_defaults(handler=_worker)

    submit = subparsers.add_parser(
        "submit",
        help="put a run command on the Kafka commands topic",
        description="Put one command (start, resume, input, cancel) for a stream on "
        "{prefix}.commands; the worker owning its partition runs it.",
    )
    submit.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="Kafka brokers")
    submit.add_argument("--graph", default="", metavar="G", help="registered graph name")
    submit.add_argument("--app-id", required=True, type=app_id, metavar="ID", help="the app")
    submit.add_argument("--partition-key", default="", metavar="PK", help="the partition key")
    submit.add_argument(
        "--command", choices=["start", "resume", "input", "cancel"], default="start"
    )
    submit.add_argument("--inputs", default=None, metavar="JSON", help="inputs, a JSON object")
    submit.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop once the stream holds N events past --at-sequence (idempotent)",
    )
    submit.add_argument(
        "--at-sequence",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="the stream's last sequence id as the submitter saw it (required for input)",
    )
    submit.add_argument("--idempotency-key", default=None, metavar="KEY")
    submit.add_argument("--topic-prefix", default="statelog", metavar="P", help="topic prefix")
    submit.add_argument(
        "--partitions",
        type=positive_int,
        default=None,
        metavar="N",
        help="create the two topics with N partitions if they are missing",
    )
    submit.set_defaults(handler=_submit)


def add_kafka_source(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``/``--topic``: read the log from a Kafka topic instead of ``--db``."""
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="read the log from Kafka instead of --db"
    )
    parser.add_argument(
        "--topic", default="statelog.events", metavar="T", help="the events topic (--bootstrap)"
    )


async def open_kafka_log(args: argparse.Namespace) -> Any:
    """A connected ``KafkaEventStore`` on ``args.topic`` (its index in memory)."""
    from statelog.eventstore.kafka import KafkaEventStore

    return await KafkaEventStore(args.bootstrap, args.topic).connect()


def _workflows(args: argparse.Namespace) -> dict[str, Any]:
    from statelog.service._workflows import demo_workflow, load_workflow

    found = {}
    if args.demo:
        found["demo"] = demo_workflow()
    for spec in args.app:
        workflow = load_workflow(spec)
        found[workflow.name] = workflow
    return found


async def _worker(args: argparse.Namespace) -> int:
    from statelog.eventstore import load_private_key
    from statelog.worker import Worker, ensure_topics

    from ._cli import fail

    workflows = _workflows(args)
    if not workflows:
        return fail("worker: no workflow: give --app MODULE:ATTR or --demo")
    if args.signing_key is None and (
        args.checkpoint_every is not None or args.checkpoint_seconds is not None
    ):
        return fail("worker: --checkpoint-every/--checkpoint-seconds need --signing-key")
    # a missing or bad key file: KeyFileError, one line, exit 2, before joining the group
    signing_key = None if args.signing_key is None else load_private_key(args.signing_key)
    if args.partitions is not None:
        await ensure_topics(
            args.bootstrap, args.topic_prefix, args.partitions, replication=args.replication
        )
    worker = Worker(
        args.bootstrap,
        args.group,
        workflows,
        prefix=args.topic_prefix,
        snapshots=args.snapshots,
        snapshot_every=args.snapshot_every,
        session_timeout_ms=args.session_timeout,
        heartbeat_interval_ms=args.heartbeat,
        concurrency=args.concurrency,
        worker_id=args.id,
        signing_key=signing_key,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval=args.checkpoint_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
    return 0


async def _submit(args: argparse.Namespace) -> int:
    from statelog.worker import Command, CommandProducer, ensure_topics

    from ._cli import fail

    inputs: dict[str, Any] = {}
    if args.inputs is not None:
        try:
            inputs = json.loads(args.inputs)
        except json.JSONDecodeError as exc:
            return fail(f"submit: --inputs is not JSON: {exc}")
        if not isinstance(inputs, dict):
            return fail("submit: --inputs must be a JSON object")
    fields: dict[str, Any] = {
        "graph": args.graph,
        "partition_key": args.partition_key,
        "inputs": inputs,
        "max_steps": args.max_steps,
        "at_sequence": args.at_sequence,
    }
    if args.idempotency_key:
        fields["idempotency_key"] = args.idempotency_key
    command = Command.new(args.command, args.app_id, **fields)
    if args.partitions is not None:
        await ensure_topics(args.bootstrap, args.topic_prefix, args.partitions)
    async with CommandProducer(args.bootstrap, prefix=args.topic_prefix) as producer:
        partition, offset = await producer.submit(command)
    print(
        json.dumps(
            {"partition": partition, "offset": offset, "idempotency_key": command.idempotency_key}
        )
    )
    return 0
