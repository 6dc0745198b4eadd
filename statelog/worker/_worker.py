"""``Worker``: a member of a consumer group that owns partitions and runs their streams.

The group is on ``{prefix}.commands``. When the group assigns partition ``p``
to a worker, the worker *claims* partition ``p`` of ``{prefix}.events``
(``KafkaEventStore.claim``: a fence record one epoch above the last) before it
reads a command of ``p``; every event it writes there carries that epoch, and
readers drop records of an older epoch written after the fence. When ``p`` is
revoked (or an append finds a newer fence) the worker stops the streams of
``p``, commits what is done and forgets what its index knew of ``p``.

Per partition, commands run in offset order per stream (streams run side by
side); the offset committed is the lowest one still running, so a command is
acknowledged only after the events it wrote were acknowledged by Kafka
(``acks=all``). A command redelivered after a crash is harmless: see
``_commands`` for why each kind is idempotent.

A ``cancel`` is a command like the others, acknowledged only once its
``cancelled`` event is durable: on dispatch it stops every earlier command of
its stream (the running one at its next step, queued ones before they start);
in its turn it records ``cancelled`` with its idempotency key as the
correlation id, unless the stream already holds that event (a redelivery). So
a cancel whose owner died before acting on it takes effect on the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TextIO

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from statelog.engine import ActionError
from statelog.eventstore import (
    ConfigError,
    Event,
    EventKind,
    FencedError,
    SnapshotStore,
    StoreError,
    StreamId,
    load_private_key,
    snapshot_mac_key,
    utcnow,
)

from ._commands import Command, decode_command, topic_names

__all__ = ["Worker"]

logger = logging.getLogger("statelog.worker")

#: Exact duplicates (same idempotency key) remembered per partition.
_SEEN_KEYS = 4096
#: How long a stopping worker waits for its last commit, and then for its
#: consumer to leave the group (which waits for a rebalance under way).
_STOP_COMMIT_SECONDS = 5.0
_STOP_CONSUMER_SECONDS = 5.0
#: The longest one poll of the commands topic may wait before ``stop`` is looked at.
_POLL_SECONDS = 1.0


class _Stream:
    """The queue of commands of one stream on its owner, and the task draining it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, Command]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        #: commands at lower offsets are cancelled (the offset of the newest cancel)
        self.cancel_before = -1


class _Partition:
    """What a worker holds for one owned partition."""

    def __init__(self, partition: int, fence: Any) -> None:
        self.partition = partition
        self.fence = fence
        self.streams: dict[StreamId, _Stream] = {}
        self.running: set[int] = set()  # offsets of commands not yet done
        self.next_offset: int | None = None  # one past the highest offset received
        self.committed: int | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()

    def commit_offset(self) -> int | None:
        if self.running:
            return min(self.running)
        return self.next_offset


class Worker:
    """Run the registered workflows for the streams of the partitions this worker owns."""

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        workflows: Mapping[str, Any],
        *,
        prefix: str = "statelog",
        snapshots: str | None = None,
        snapshot_every: int = 50,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        concurrency: int = 64,
        worker_id: str | None = None,
        log: TextIO | None = None,
        signing_key: Any = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
    ) -> None:
        if not workflows:
            raise ConfigError("a worker needs at least one workflow (--app or --demo)")
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.workflows = dict(workflows)
        self.commands_topic, self.events_topic = topic_names(prefix)
        self.snapshots_path = snapshots
        self.snapshot_every = snapshot_every
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._log_to = log if log is not None else sys.stdout
        self._limit = asyncio.Semaphore(concurrency)
        self._owned: dict[int, _Partition] = {}
        self._claims = 0
        self._stopping = False  # set once run() is on its way out: nothing new is claimed
        self._background: set[asyncio.Task[None]] = set()
        self._store: Any = None
        self._consumer: Any = None
        self._snapshots: SnapshotStore | None = None
        self.steps = 0
        # signed checkpoints of the heads this worker writes (a key or its PEM file's path)
        if isinstance(signing_key, str | os.PathLike):
            signing_key = load_private_key(signing_key)
        self.signing_key = signing_key
        self._checkpoint_options: dict[str, Any] = {}
        if checkpoint_every is not None:
            self._checkpoint_options["checkpoint_every"] = checkpoint_every
        if checkpoint_interval is not None:
            self._checkpoint_options["checkpoint_interval"] = checkpoint_interval

    # ------------------------------------------------------------------ reporting

    def report(self, what: str, **fields: Any) -> None:
        """One JSON line per ownership change, fence or failure (for operators and tests)."""
        line = {"event": what, "worker": self.worker_id, "t": time.time(), **fields}
        self._log_to.write(json.dumps(line, default=str) + "\n")
        self._log_to.flush()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Join the group and run commands until ``stop`` is set (or cancelled)."""
        from statelog.eventstore.kafka import KafkaEventStore

        stop = stop or asyncio.Event()
        store = KafkaEventStore(
            self.bootstrap_servers,
            self.events_topic,
            client_id=f"statelog-{self.worker_id}",
            claims_required=True,  # every record this worker writes carries a fence
            signing_key=self.signing_key,
            **self._checkpoint_options,
        )
        await store.connect()
        self._store = store
        if self.snapshots_path:
            # a signing worker seals its snapshots with a MAC derived from its key, so a
            # snapshot forged without the key is skipped on resume (as SQLite writers do)
            mac = snapshot_mac_key(self.signing_key) if self.signing_key is not None else None
            self._snapshots = await SnapshotStore(self.snapshots_path, hmac_key=mac).connect()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group,
            client_id=f"statelog-{self.worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=max(60_000, self.session_timeout_ms * 2),
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        committer: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            partitions = consumer.partitions_for_topic(self.commands_topic) or set()
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(self.commands_topic) or set()
            if partitions and len(partitions) != store.partitions:
                raise ConfigError(
                    f"{self.commands_topic} has {len(partitions)} partitions and "
                    f"{self.events_topic} has {store.partitions}: they must have the same count"
                )
            consumer.subscribe([self.commands_topic], listener=_Listener(self))
            self.report(
                "started", group=self.group, topic=self.commands_topic, **self._signed(store)
            )
            committer = asyncio.create_task(self._commit_loop(stop))
            while not stop.is_set():
                try:
                    # bounded: in a rebalance getmany waits for the new assignment, and a
                    # SIGTERM (stop) must not wait for that (seen: > 30 s on the test broker)
                    batches = await asyncio.wait_for(
                        consumer.getmany(timeout_ms=200, max_records=500), _POLL_SECONDS
                    )
                except TimeoutError:
                    continue
                early = False
                for tp, records in batches.items():
                    owned = self._owned.get(tp.partition)
                    if owned is None:
                        # assigned, but its claim is still being written: read these again
                        if records and tp in consumer.assignment():
                            consumer.seek(tp, records[0].offset)
                            early = True
                        continue
                    for record in records:
                        self._dispatch(owned, record)
                if early:
                    await asyncio.sleep(0.05)
        finally:
            self._stopping = True
            self.report("stopping", owned=sorted(self._owned))
            if committer is not None:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
            stopping = dict(self._owned)
            for partition in stopping:
                with contextlib.suppress(Exception):
                    await self._drop(partition, reason="stopping")
            # their last offsets, in one commit, best effort and bounded: SIGTERM never
            # waits long on the group's coordinator (redelivery is harmless: fences and
            # idempotency keys)
            try:
                await asyncio.wait_for(self._commit(stopping), _STOP_COMMIT_SECONDS)
            except TimeoutError:
                self.report("commit_timeout", seconds=_STOP_COMMIT_SECONDS)
            except Exception:  # as above: the next owner runs them again
                pass
            # Leaving the group waits for a rebalance under way (the JoinGroup and
            # the listener it runs); bounded too, so SIGTERM is never held up for
            # long: the group drops a member that went silent after its session.
            try:
                await asyncio.wait_for(consumer.stop(), _STOP_CONSUMER_SECONDS)
            except TimeoutError:
                self.report("stop_timeout", seconds=_STOP_CONSUMER_SECONDS)
            except Exception:
                pass
            if self._snapshots is not None:
                await self._snapshots.aclose()
            await store.aclose()
            self.report("stopped", steps=self.steps, **self._signed(store))

    @staticmethod
    def _signed(store: Any) -> dict[str, Any]:
        """For the ``started``/``stopped`` lines: the worker's checkpoint chain."""
        if store.signing_key is None:
            return {}
        return {"checkpoint_writer": store.writer_id, "checkpoints_topic": store.checkpoints_topic}

    # ------------------------------------------------------------------ ownership

    async def _assign(self, partitions: list[int]) -> None:
        if self._stopping:
            # a rebalance that completes while this worker leaves the group: claiming
            # would fence the partitions' next owners for nothing, and hold up the stop
            self.report("not_claimed", partitions=sorted(partitions), reason="stopping")
            return
        store = self._store
        for partition in sorted(partitions):
            if partition in self._owned:
                continue
            self._claims += 1
            fence = await store.claim(partition, f"{self.worker_id}#{self._claims}")
            position = await self._consumer.committed(_tp(self.commands_topic, partition))
            owned = _Partition(partition, fence)
            owned.committed = position
            self._owned[partition] = owned
            self.report(
                "assigned",
                partition=partition,
                epoch=fence.epoch,
                owner=fence.owner,
                from_offset=position,
            )

    async def _drop(self, partition: int, *, reason: str) -> None:
        owned = self._owned.pop(partition, None)
        if owned is None:
            return
        tasks = [s.task for s in owned.streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if reason == "revoked":  # (a stopping worker commits them all at once: run)
            with contextlib.suppress(Exception):  # best effort: redelivery is harmless
                await asyncio.wait_for(self._commit({partition: owned}), _STOP_COMMIT_SECONDS)
        await self._store.forget_partition(partition)
        self.report("released", partition=partition, reason=reason, epoch=owned.fence.epoch)

    # ------------------------------------------------------------------ commands

    def _dispatch(self, owned: _Partition, record: Any) -> None:
        offset = int(record.offset)
        owned.next_offset = max(owned.next_offset or 0, offset + 1)
        try:
            command = decode_command(record.value)
            command.check()
        except (msgspec.DecodeError, ConfigError) as exc:
            self.report("bad_command", partition=owned.partition, offset=offset, error=str(exc))
            return
        key = command.idempotency_key
        if key and key in owned.seen:
            self.report("duplicate", partition=owned.partition, offset=offset, key=key)
            return
        if key:
            owned.seen[key] = None
            if len(owned.seen) > _SEEN_KEYS:
                owned.seen.popitem(last=False)
        stream = owned.streams.get(command.stream)
        if stream is None:
            stream = owned.streams[command.stream] = _Stream()
        if command.kind == "cancel":
            stream.cancel_before = max(stream.cancel_before, offset)
            self.report(
                "cancel", partition=owned.partition, stream=str(command.stream), offset=offset
            )
        owned.running.add(offset)
        stream.queue.put_nowait((offset, command))
        if stream.task is None or stream.task.done():
            stream.task = asyncio.create_task(self._drain(owned, command.stream, stream))

    async def _drain(self, owned: _Partition, sid: StreamId, stream: _Stream) -> None:
        while not stream.queue.empty():
            offset, command = stream.queue.get_nowait()
            delay = 0.5
            while True:
                if command.kind != "cancel" and offset < stream.cancel_before:
                    self.report(
                        "skipped",
                        stream=str(sid),
                        offset=offset,
                        key=command.idempotency_key,
                        reason="cancelled",
                    )
                    break
                try:
                    async with self._limit:
                        await self._execute(command, stream, offset)
                except FencedError as exc:
                    self.report("fenced", partition=exc.partition, error=str(exc))
                    if exc.partition != owned.partition:
                        # not this partition's claim (a stream this store never owned)
                        self.report("error", stream=str(sid), error=str(exc))
                    elif self._owned.get(owned.partition) is owned:
                        task = asyncio.create_task(self._drop(owned.partition, reason="fenced"))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                    return
                except ActionError as exc:
                    self.report("action_failed", stream=str(sid), error=str(exc))
                except StoreError as exc:
                    # not acknowledged: try again (from what the topic holds) until it
                    # works or the partition moves; the next owner would redo it anyway
                    self.report("store_error", stream=str(sid), error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    with contextlib.suppress(StoreError):
                        await self._store.refresh()
                    continue
                except ConfigError as exc:
                    self.report("bad_command", stream=str(sid), error=str(exc))
                except Exception as exc:  # a bug in a workflow or here: reported, not hidden
                    logger.exception("command %s of %s failed", command.idempotency_key, sid)
                    self.report("error", stream=str(sid), error=repr(exc))
                break
            owned.running.discard(offset)

    async def _execute(self, command: Command, stream: _Stream, offset: int) -> None:
        if command.kind == "cancel":
            await self._cancel(command)
            return
        workflow = self.workflows.get(command.graph)
        if workflow is None and command.kind in ("start", "resume"):
            raise ConfigError(f"unknown graph {command.graph!r} (known: {sorted(self.workflows)})")
        if workflow is None:
            workflow = next(iter(self.workflows.values())) if len(self.workflows) == 1 else None
            if workflow is None:
                raise ConfigError("an input command for a worker with several graphs needs graph")
        builder = (
            workflow.builder()
            .with_identifiers(app_id=command.app_id, partition_key=command.partition_key)
            .with_store(self._store, snapshots=self._snapshots)
            .initialize_from(
                default_state=workflow.initial_state, default_entrypoint=workflow.entrypoint
            )
        )
        if self._snapshots is not None:
            builder = builder.with_snapshots(every=self.snapshot_every)
        app = await builder.abuild()
        try:
            base = 0 if command.at_sequence is None else command.at_sequence + 1
            if command.kind == "input":
                if app.sequence_id != command.at_sequence:
                    self.report(
                        "stale_input",
                        stream=str(command.stream),
                        key=command.idempotency_key,
                        at_sequence=command.at_sequence,
                        actual=app.sequence_id,
                    )
                    return
                await app.astep(command.inputs or None)
                self.steps += 1
                return
            target = None if command.max_steps is None else base + command.max_steps
            if target is not None and app.sequence_id + 1 >= target:
                return
            events = app.astream(inputs=command.inputs or None)
            async with contextlib.aclosing(events):
                async for _ in events:
                    self.steps += 1
                    if offset < stream.cancel_before:
                        break
                    if target is not None and app.sequence_id + 1 >= target:
                        break
        finally:
            await app.aclose()

    async def _cancel(self, command: Command) -> None:
        """Record ``cancelled`` once per cancel command (a redelivery finds it recorded).

        The event is the one ``Application.acancel`` writes (``action`` and
        ``next_action``: the app's position), with the command's key as its
        correlation id; it needs no graph, so a cancel names none.
        """
        key = command.idempotency_key
        pk, app_id = command.partition_key, command.app_id
        events = await self._store.read(pk, app_id)
        position = events[-1].next_action if events else None
        if position is None:
            # nothing ever ran, or the app completed: there is no run to cancel
            self.report("cancel_noop", stream=str(command.stream), key=key, events=len(events))
            return
        for event in reversed(events):
            if key and event.kind == EventKind.CANCELLED and event.correlation_id == key:
                self.report(
                    "duplicate", stream=str(command.stream), key=key, recorded=event.sequence_id
                )
                return
        last = events[-1].sequence_id
        cancelled = Event(
            partition_key=pk,
            app_id=app_id,
            sequence_id=last + 1,
            kind=EventKind.CANCELLED,
            action=position,
            next_action=position,
            timestamp=utcnow(),
            correlation_id=key or None,
        )
        await self._store.append([cancelled], expected_sequence=last)
        self.report("cancelled", stream=str(command.stream), key=key, sequence_id=last + 1)

    # ------------------------------------------------------------------ offsets

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            with contextlib.suppress(Exception):
                await self._commit(self._owned)

    async def _commit(self, owned: Mapping[int, _Partition]) -> None:
        offsets = {}
        for partition, state in owned.items():
            offset = state.commit_offset()
            if offset is not None and offset != state.committed:
                offsets[_tp(self.commands_topic, partition)] = OffsetAndMetadata(offset, "")
        if offsets:
            await self._consumer.commit(offsets)
            for tp, meta in offsets.items():
                held = owned.get(tp.partition)
                if held is not None:
                    held.committed = meta.offset


def _tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Claims assigned partitions before their commands run; drops revoked ones."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            await self.worker._drop(tp.partition, reason="revoked")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker._assign([tp.partition for tp in assigned])
