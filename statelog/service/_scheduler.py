"""The bounded run scheduler: one queue, ``max_concurrent_runs`` workers.

``POST /v1/runs`` commits an operation and puts it on the queue; a worker
takes it, builds the app with ``initialize_from`` (so a new app starts and an
existing one resumes from its log) and steps it until a halt, ``max_steps``,
the end, a failure, a cancel or its timeout. Cancels and graceful stops take
effect at a step boundary. Runs live in the scheduler's worker tasks, never in
a request's background task, so they do not die with a request.

Ending: every operation ends exactly once (``OperationStore.finish`` only
moves a queued or running operation). A graceful stop puts running operations
back in the queue phase; so does a ``kill -9`` (their phase stays running) -
both are resumed by ``recover()`` at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from statelog.engine import ActionError, Application
from statelog.eventstore import Event, EventStore, SnapshotStore, StatelogError, StreamId

from ._admission import AdmissionFirst
from ._metrics import Metrics
from ._operations import Operation, OperationStore
from ._signals import StreamSignals
from ._status import Phase, derive_status
from ._workflows import Workflow

__all__ = ["RunScheduler"]

_log = logging.getLogger("statelog.service.runs")

_Stop = Literal["done", "cancelled", "stopping", "max_steps"]


class _Running:
    """A run a worker is executing: its operation and the flag a cancel sets."""

    __slots__ = ("cancel", "op")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.cancel = asyncio.Event()


class RunScheduler:
    """Runs operations from a queue on at most ``max_concurrent`` workers."""

    def __init__(
        self,
        *,
        store: EventStore,
        snapshots: SnapshotStore | None,
        operations: OperationStore,
        workflows: dict[str, Workflow],
        metrics: Metrics,
        signals: StreamSignals,
        max_concurrent: int,
        run_timeout: float,
        remote: Any | None = None,
        admission: AdmissionFirst | None = None,
    ) -> None:
        self._admission = admission or AdmissionFirst(0.0)
        self._remote = remote  # statelog.worker.RemoteRuns with serve --kafka
        self._store = store
        self._snapshots = snapshots
        self._ops = operations
        self._workflows = workflows
        self._metrics = metrics
        self._signals = signals
        self.max_concurrent = max_concurrent
        self.run_timeout = run_timeout
        self._queue: asyncio.Queue[Operation] = asyncio.Queue()
        self._running: dict[str, _Running] = {}
        self._skip: set[str] = set()  # queued operations cancelled before a worker took them
        self._workers: list[asyncio.Task[None]] = []
        self._idle: set[asyncio.Task[Any]] = set()  # workers waiting for an operation
        self._stopping = asyncio.Event()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        for n in range(self.max_concurrent):
            self._workers.append(asyncio.create_task(self._work(), name=f"statelog-run-{n}"))

    def submit(self, op: Operation) -> None:
        self._queue.put_nowait(op)
        self._metrics.queue_depth = self._queue.qsize()

    async def recover(self) -> list[Operation]:
        """Queue again what a previous process left queued or running (oldest first)."""
        resumed = []
        for op in await self._ops.unfinished():
            if op.cancel_requested:
                await self._end(op, "cancelled", None)
                continue
            if op.graph not in self._workflows:
                await self._end(
                    op,
                    "interrupted",
                    None,
                    error={
                        "type": "UnknownGraph",
                        "message": f"graph {op.graph!r} is not registered in this service; "
                        "restart it with that graph to resume the run",
                    },
                )
                continue
            again = await self._ops.requeue(op.id, resumed=op.phase == "running")
            if again is not None:
                if op.phase == "running":
                    self._metrics.runs_resumed += 1
                self.submit(again)
                resumed.append(again)
        return resumed

    async def cancel(self, op: Operation) -> Operation | None:
        """Cancel a queued run now, a running one at its next step boundary."""
        running = self._running.get(op.id)
        if running is not None:
            running.cancel.set()
        else:
            self._skip.add(op.id)  # before any await: a worker taking it now skips it
        marked = await self._ops.request_cancel(op.id)
        running = self._running.get(op.id)
        if running is not None:
            running.cancel.set()
            self._skip.discard(op.id)
            return marked
        if marked is not None and marked.phase == "queued":
            # still in the queue: the worker that takes it skips it (and ends it, if
            # it comes first: then this answers with the operation as it ended)
            return await self._end(marked, "cancelled", None) or await self._ops.get(op.id)
        return marked

    async def stop(self, grace: float) -> None:
        """Stop taking runs; let running ones reach a step boundary (``grace`` seconds)."""
        self._stopping.set()
        for idle in self._idle:
            idle.cancel()
        busy = [t for t in self._workers if not t.done()]
        if busy:
            done, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
            for task in busy:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # ------------------------------------------------------------------ workers

    async def _work(self) -> None:
        worker = asyncio.current_task()
        assert worker is not None
        while not self._stopping.is_set():
            # ``Queue.get`` takes the operation off the queue only when this task runs
            # again, and ``_run`` counts it as running before its first await: the
            # operation is always counted (``/readyz``), queued or running
            self._idle.add(worker)
            try:
                op = await self._queue.get()
            except asyncio.CancelledError:
                return  # stop() cancels idle workers; the operation stays queued
            finally:
                self._idle.discard(worker)
            self._metrics.queue_depth = self._queue.qsize()
            if op.id in self._skip:  # cancelled while it waited
                self._skip.discard(op.id)
                # cancel() ends it too, unless its request was cancelled midway; it
                # ends once, and never stays queued with its app refused as busy. It
                # counts as running until it has ended: /readyz never shows it gone
                # while the file still says queued
                self._running[op.id] = _Running(op)
                try:
                    with contextlib.suppress(StatelogError):
                        await self._end(op, "cancelled", None)
                finally:
                    self._running.pop(op.id, None)
                continue
            await self._run(op)

    async def _run(self, op: Operation) -> None:
        if self._remote is not None:
            await self._run_remote(op)
            return
        running = _Running(op)
        self._running[op.id] = running  # before any await: a cancel now stops the run
        self._metrics.run_started()
        started = time.monotonic()
        stream = StreamId(op.partition_key, op.app_id)
        app: Application | None = None
        try:
            await self._admission.boundary()  # start requests first (bounded wait)
            app = await self._build(op)
            marked = await self._ops.mark_running(op.id, app.sequence_id)
            if marked is None:
                return  # ended while it was being built (a cancel): nothing to run
            op = running.op = marked
            self._signals.notify(stream)
            if op.cancel_requested or running.cancel.is_set():
                await self._end(op, "cancelled", app)
                return
            request = op.request
            if request.input_name is not None and app.waiting_for == request.input_name:
                # (after a restart the input may be in the log already: then it waits no more)
                await app.aprovide_input(request.input_name, request.input_value)
                self._signals.notify(stream)
            budget = op.request.timeout or self.run_timeout
            try:
                async with asyncio.timeout(budget):
                    how, last = await self._steps(app, op, running)
            except TimeoutError:
                await self._end(op, "timed_out", app)
                return
            if how == "stopping":
                await self._ops.requeue(op.id, resumed=False)
                return
            if how == "cancelled":
                await app.acancel()  # the log says so too: a `cancelled` event
                await self._end(op, "cancelled", app)
                return
            await self._end(op, "finished", app, last_event=last)
        except ActionError as exc:
            cause = exc.__cause__ or exc
            error = {
                "type": type(cause).__name__,
                "message": str(cause),
                "sequence_id": exc.sequence_id,
            }
            await self._end(op, "finished", app, error=error)
        except (StatelogError, ValueError, LookupError) as exc:
            # a store failure, a stream another writer moved, an unknown position:
            # recorded on the operation; the log holds only what was committed
            error = {"type": type(exc).__name__, "message": str(exc)}
            await self._end(op, "failed", app, error=error)
        except asyncio.CancelledError:
            # the grace of a graceful stop ran out: the step was cancelled (an append
            # commits whole or not at all); the run resumes at the next start
            with contextlib.suppress(Exception):
                await asyncio.shield(self._ops.requeue(op.id, resumed=False))
            raise
        finally:
            self._running.pop(op.id, None)
            self._metrics.run_stopped()
            self._metrics.run_seconds.observe(time.monotonic() - started)
            if app is not None:
                with contextlib.suppress(Exception):
                    await app.aclose()
            self._signals.notify(stream)

    async def _run_remote(self, op: Operation) -> None:
        """``serve --kafka``: the run goes to the workers; this follows its stream."""
        running = _Running(op)
        self._running[op.id] = running
        self._metrics.run_started()
        stream = StreamId(op.partition_key, op.app_id)
        remote: Any = self._remote
        try:
            marked = await self._ops.mark_running(
                op.id, await remote.head(op.partition_key, op.app_id)
            )
            if marked is None:
                return
            op = running.op = marked
            if op.cancel_requested or running.cancel.is_set():
                await self._end(op, "cancelled", None)
                return
            try:
                async with asyncio.timeout(op.request.timeout or self.run_timeout):
                    how, last = await remote.run(
                        op, running.cancel, self._stopping, lambda: self._signals.notify(stream)
                    )
            except TimeoutError:
                running.cancel.set()
                await self._end(op, "timed_out", None)
                return
            if how == "stopping":
                await self._ops.requeue(op.id, resumed=False)
                return
            await self._end(op, "cancelled" if how == "cancelled" else "finished", None,
                            last_event=last)  # fmt: skip
        except (StatelogError, ValueError, LookupError) as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            await self._end(op, "failed", None, error=error)
        finally:
            self._running.pop(op.id, None)
            self._metrics.run_stopped()
            self._signals.notify(stream)

    async def _build(self, op: Operation) -> Application:
        workflow = self._workflows[op.graph]
        builder = (
            workflow.builder()
            .with_identifiers(app_id=op.app_id, partition_key=op.partition_key)
            .with_store(self._store, snapshots=self._snapshots)
            .initialize_from(
                default_state=workflow.initial_state, default_entrypoint=workflow.entrypoint
            )
        )
        return await builder.abuild()

    async def _steps(
        self, app: Application, op: Operation, running: _Running
    ) -> tuple[_Stop, Event | None]:
        """Step until the run stops; how it stopped and the last event it wrote."""
        request = op.request
        base = op.base_sequence if op.base_sequence is not None else app.sequence_id
        max_steps = request.max_steps
        # steps taken before a restart are counted by sequence (lifecycle events
        # included: a close upper bound); this attempt counts its steps exactly
        taken = app.sequence_id - base
        if max_steps is not None and taken >= max_steps:
            return "max_steps", None
        stream = StreamId(op.partition_key, op.app_id)
        metrics = self._metrics
        admission = self._admission
        last: Event | None = None
        events = app.astream(
            halt_before=request.halt_before,
            halt_after=request.halt_after,
            inputs=request.inputs or None,
        )
        async with contextlib.aclosing(events):
            async for last in events:
                metrics.steps += 1
                metrics.appends += 1
                self._signals.notify(stream)
                await admission.boundary()  # start requests first (bounded wait)
                if self._stopping.is_set():
                    return "stopping", last
                if running.cancel.is_set():
                    return "cancelled", last
                taken += 1
                if max_steps is not None and taken >= max_steps:
                    return "max_steps", last
        return "done", last

    async def _end(
        self,
        op: Operation,
        phase: Phase,
        app: Application | None,
        *,
        last_event: Event | None = None,
        error: dict[str, Any] | None = None,
    ) -> Operation | None:
        """End the operation (once); ``last_event``, when the caller has it, saves a read."""
        if app is not None:
            sequence_id: int = app.sequence_id
            position = app.position
        else:
            sequence_id = await self._store.last_sequence(op.partition_key, op.app_id)
            position = None
        last = last_event
        if last is not None and last.sequence_id != sequence_id:
            last = None
        if phase == "finished" and last is None and sequence_id >= 0:
            found = await self._store.read(
                op.partition_key, op.app_id, from_sequence=sequence_id, to_sequence=sequence_id
            )
            last = found[-1] if found else None
        if last is not None and app is None:
            position = last.next_action
        status = derive_status(last, phase)
        ended = await self._ops.finish(
            op.id,
            phase,
            status,
            sequence_id=None if sequence_id < 0 else sequence_id,
            position=position,
            error=error,
        )
        if ended is not None:
            self._metrics.runs_finished[status] += 1
            _log.info(
                "operation %s %s/%s ended %s at sequence %s",
                op.id,
                op.partition_key,
                op.app_id,
                status,
                sequence_id,
            )
        self._signals.notify(StreamId(op.partition_key, op.app_id))
        return ended
