"""The running service's parts in one object: config, stores, scheduler, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import msgspec

from statelog.eventstore import (
    Event,
    EventStore,
    SnapshotStore,
    SQLiteEventStore,
    StreamId,
    load_private_key,
    snapshot_mac_key,
)

from ._admission import AdmissionFirst
from ._auth import TokenTable
from ._metrics import Metrics
from ._operations import Operation, OperationStore, RunRequest, service_db_path
from ._problems import ProblemError
from ._scheduler import RunScheduler
from ._signals import StreamSignals
from ._signed_head import verifying_keys
from ._status import Status, derive_status
from ._workflows import Workflow

__all__ = ["Service", "ServiceConfig"]


class ServiceConfig(msgspec.Struct, kw_only=True):
    """What ``create_app`` needs; ``statelog serve`` fills it from its options."""

    db: str = "statelog.db"
    workflows: Sequence[Workflow] = ()
    tokens: TokenTable | None = None
    max_concurrent_runs: int = 16
    max_queued_runs: int = 10_000
    run_timeout: float = 3600.0
    max_body_bytes: int = 1024 * 1024
    shutdown_grace: float = 10.0
    operations_db: str | None = None
    sse_poll_interval: float = 1.0
    sse_keepalive: float = 15.0
    #: ``serve --kafka``: runs go to ``statelog worker``s as commands; the log is
    #: ``{kafka_prefix}.events`` (``db`` keeps only the operations)
    kafka: str | None = None
    kafka_prefix: str = "statelog"
    #: an Ed25519 private key's PEM file: the log signs checkpoints of its heads (with
    #: ``kafka``, those the service writes itself, in its own chain)
    signing_key: str | None = None
    #: Ed25519 public keys' PEM files (several after a rotation): ``verify`` checks the
    #: signed checkpoints with them (and with ``signing_key``'s public half)
    public_keys: Sequence[str] = ()
    #: while ``POST /v1/runs`` requests are in flight, runs wait in line at their step
    #: boundaries and one is let through every this many seconds (0: runs never wait);
    #: see ``_admission.AdmissionFirst`` and docs/service.md, Scheduling
    #: (5 ms, not 2: same-run A/B, closed loop 64, +15 % posts/s, p99 -8 %; docs/benchmarks.md)
    admission_interval: float = 0.005


class Service:
    """Built by the app's lifespan; routes reach it as ``request.app.state.service``."""

    def __init__(self, config: ServiceConfig) -> None:
        names = [w.name for w in config.workflows]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"graph names registered twice: {duplicates}")
        if config.max_concurrent_runs < 1:
            raise ValueError("max_concurrent_runs must be >= 1")
        self.config = config
        self.workflows = {w.name: w for w in config.workflows}
        self.public_keys = verifying_keys(config.public_keys, config.signing_key)
        self.metrics = Metrics()
        self.signals = StreamSignals()
        self.admission = AdmissionFirst(config.admission_interval)
        self.ready = False
        self._store: EventStore | None = None
        self._closing: list[Any] = []
        self._snapshots: SnapshotStore | None = None
        self._ops: OperationStore | None = None
        self._scheduler: RunScheduler | None = None

    @property
    def store(self) -> EventStore:
        assert self._store is not None, "the service is not started"
        return self._store

    @property
    def snapshots(self) -> SnapshotStore | None:
        return self._snapshots

    @property
    def operations(self) -> OperationStore:
        assert self._ops is not None, "the service is not started"
        return self._ops

    @property
    def scheduler(self) -> RunScheduler:
        assert self._scheduler is not None, "the service is not started"
        return self._scheduler

    async def start(self) -> None:
        config = self.config
        directory = os.path.dirname(os.path.abspath(config.db))  # noqa: ASYNC240
        if not os.path.isdir(directory):  # noqa: ASYNC240 - one stat at startup
            raise FileNotFoundError(f"no directory for --db {config.db!r}")
        remote = None
        if config.kafka:
            from statelog.eventstore.kafka import KafkaEventStore
            from statelog.worker import CommandProducer
            from statelog.worker._remote import RemoteRuns

            events = f"{config.kafka_prefix}.events"
            # with a key, what the service writes itself (forks) is signed in its own chain
            self._store = await KafkaEventStore(
                config.kafka, events, signing_key=config.signing_key
            ).connect()
            producer = await CommandProducer(config.kafka, prefix=config.kafka_prefix).start()
            self._closing.append(producer)
            remote = RemoteRuns(producer, self._store)
        else:
            signing_key = load_private_key(config.signing_key) if config.signing_key else None
            self._store = await SQLiteEventStore.open(config.db, signing_key=signing_key)
            self._snapshots = await SnapshotStore.open(
                config.db, hmac_key=snapshot_mac_key(signing_key) if signing_key else None
            )
        self._ops = await OperationStore(config.operations_db or service_db_path(config.db)).open()
        self._scheduler = RunScheduler(
            remote=remote,
            store=self._store,
            snapshots=self._snapshots,
            operations=self._ops,
            workflows=self.workflows,
            metrics=self.metrics,
            signals=self.signals,
            max_concurrent=config.max_concurrent_runs,
            run_timeout=config.run_timeout,
            admission=self.admission,
        )
        await self._scheduler.recover()
        self._scheduler.start()
        self.ready = True

    def begin_shutdown(self) -> None:
        """Stop answering as ready and end open event streams (SIGTERM, first thing)."""
        self.ready = False
        self.signals.closing.set()
        self.signals.notify_all()

    async def stop(self) -> None:
        self.begin_shutdown()
        try:
            if self._scheduler is not None:
                await self._scheduler.stop(self.config.shutdown_grace)
        finally:
            for resource in (self._ops, self._snapshots, self._store, *self._closing):
                if resource is not None:
                    await resource.aclose()

    # ------------------------------------------------------------------ helpers

    def workflow(self, graph: str) -> Workflow:
        found = self.workflows.get(graph)
        if found is None:
            raise ProblemError(
                "unknown-graph",
                f"no workflow is registered as {graph!r} (known: {sorted(self.workflows)})",
            )
        return found

    async def last_event(self, partition_key: str, app_id: str) -> Event | None:
        last = await self.store.last_sequence(partition_key, app_id)
        if last < 0:
            return None
        found = await self.store.read(partition_key, app_id, from_sequence=last, to_sequence=last)
        return found[-1] if found else None

    async def require_app(self, partition_key: str, app_id: str) -> Event:
        """The app's last event, or a 404 ``unknown-app`` problem."""
        event = await self.last_event(partition_key, app_id)
        if event is None:
            raise unknown_app(partition_key, app_id)
        return event

    async def app_status(
        self, partition_key: str, app_id: str, last_event: Event | None = None
    ) -> tuple[Status, Operation | None, Event | None]:
        """Status of an app (``derive_status`` of its last event and latest operation)."""
        if last_event is None:
            # the operations file and the log have their own threads: ask both at once
            # (same-run A/B with get_app's single read: GET /v1/apps/ID 3.4 -> 1.7 ms)
            op, last_event = await asyncio.gather(
                self.operations.latest_for_app(partition_key, app_id),
                self.last_event(partition_key, app_id),
            )
        else:
            op = await self.operations.latest_for_app(partition_key, app_id)
        return derive_status(last_event, None if op is None else op.phase), op, last_event


def unknown_app(partition_key: str, app_id: str) -> ProblemError:
    """The 404 ``unknown-app`` problem."""
    return ProblemError(
        "unknown-app", f"no app {str(StreamId(partition_key, app_id))!r} in the log"
    )


def fingerprint(graph: str, partition_key: str, app_id: str | None, request: RunRequest) -> str:
    """What an Idempotency-Key is bound to: the same key with another body is refused."""
    body: dict[str, Any] = {
        "graph": graph,
        "partition_key": partition_key,
        "app_id": app_id,
        "request": msgspec.to_builtins(request),
    }
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()
