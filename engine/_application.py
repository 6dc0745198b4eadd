"""``Application``: runs a graph of actions, one event per step.

Async first: ``astep``, ``arun``, ``aiterate``, ``astream``. The sync face
(``step``, ``run``, ``iterate``, ``close``) wraps the async methods on the
application's own event loop (an ``asyncio.Runner`` made by
``ApplicationBuilder.build()``), so async actions and hooks run there too -
nothing is ever skipped. Calling the sync face inside a running event loop, or
on an app built with ``abuild()``, raises ``UsageError``. An app nobody closes
is released for its user (at exit, when collected, or when its loop ends; see
``_lifecycle``).

Per step the application appends one event with ``expected_sequence``:
``action_completed`` (the state change as ops, the action's declared inputs,
result, duration, attempt, next_action) or ``action_failed`` (error type,
message and traceback summary, attempt; the state is unchanged and
next_action is the failed action, so a resume re-runs it). Each failed
attempt that is retried (or handed to a fallback) is an ``attempt_failed``
event before it. A run (``arun``/``aiterate``/``astream``) starts with
``run_started`` (actor, correlation_id, the run's inputs once, the graph
fingerprint) and ends with ``halted``, ``completed``, ``waiting_for_input``,
``action_failed`` or ``cancelled``; ``aprovide_input`` records
``input_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
)
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from statelog.eventstore import (
    AsyncResource,
    ConfigError,
    Event,
    EventKind,
    EventStore,
    Recorded,
    Snapshot,
    SnapshotBackend,
    SnapshotPolicy,
    UsageError,
    to_plain,
    utcnow,
)
from statelog.eventstore._base import SYNC_CALLER

from ._actions import attempt_sink, run_action, run_inline, runs_inline
from ._durability import TransactionalWriter, Writer
from ._errors import ActionError, InputError
from ._hooks import HookSet
from ._input import InputRequired, validate
from ._lifecycle import Lifeline, run_sync
from ._record import error_info, recorded_inputs, split_secrets
from ._state import State
from ._transitions import Graph

__all__ = ["Application", "StepResult"]

T = TypeVar("T")

_COMPLETED = EventKind.ACTION_COMPLETED.value
_FAILED = EventKind.ACTION_FAILED.value
_EMPTY_SET: frozenset[str] = frozenset()
_EMPTY: dict[str, Any] = {}
_now = datetime.now  # _now(UTC) is eventstore.utcnow() without the extra call, once per step
_tuple_new = tuple.__new__  # StepResult(...) without the Python-level __new__


class StepResult(NamedTuple):
    """What one step did: the action's name, its result and the state after it.

    Unpacks like Burr's ``(action, result, state)``. ``action`` is ``None`` when
    ``arun`` halted before running anything.
    """

    action: str | None
    result: Any
    state: State


class Application(AsyncResource):
    """A running workflow whose every step is an event of stream ``(partition_key, app_id)``.

    Made by ``ApplicationBuilder``; not constructed directly.
    """

    _last_event: Event  # the event of the last step astep completed

    def __init__(
        self,
        *,
        graph: Graph,
        state: State,
        position: str | None,
        sequence_id: int,
        app_id: str,
        partition_key: str,
        store: EventStore,
        snapshots: SnapshotBackend | None,
        snapshot_policy: SnapshotPolicy,
        writer: Writer,
        hooks: HookSet,
        origin: int,
        durability: str,
        life: Lifeline,
        runner: asyncio.Runner | None,
        fingerprint: str = "",
        redact: frozenset[str] = _EMPTY_SET,
        pending: tuple[str, dict[str, Any] | None] | None = None,
        provided: dict[str, Any] | None = None,
        snapshot_sequence: int = -1,
        snapshot_bytes: int | None = None,
    ) -> None:
        self._graph = graph
        self._fingerprint = fingerprint
        self._redact = redact
        self._pending = pending  # (name, schema) of the input the position waits for
        self._provided: dict[str, Any] = provided or {}  # received inputs for the position
        self._actor: str | None = None  # of the current run
        self._correlation_id: str | None = None
        self._step_inputs: dict[str, Any] = _EMPTY
        self._record_lock: asyncio.Lock | None = None
        self._actions = graph.actions
        self._state = state
        self._position = position
        self._sequence_id = sequence_id
        self._app_id = app_id
        self._partition_key = partition_key
        self._store = store
        self._snapshots = snapshots
        self._policy = snapshot_policy
        self._writer = writer
        self._hooks = hooks
        self._origin = origin  # first sequence of the current position's attempts
        self._durability = durability
        self._life = life
        self._runner = runner
        self._forget: Callable[[], None] | None = None  # the sync face's finaliser
        self._closed = False
        self._last_recorded: Recorded | None = None
        # A resumed app counts its events since the snapshot it was loaded from (in
        # whichever process that was taken), with that snapshot's size when the read
        # gave it: an app resumed for each turn of a chat still spaces them out.
        self._snap_seq = snapshot_sequence if snapshot_sequence >= 0 else sequence_id
        self._snap_time = time.monotonic()
        # the last snapshot's size (SnapshotPolicy.bytes_per_event), when known
        self._snap_bytes = snapshot_bytes if snapshot_sequence >= 0 else None
        self._snap_every = snapshot_policy.every if snapshots is not None else None
        self._snap_seconds = snapshot_policy.seconds if snapshots is not None else None
        self._append = store.append if isinstance(writer, TransactionalWriter) else None
        self._parallel = {
            n for n, a in graph.actions.items() if getattr(a, "is_parallel_map", False)
        }
        # sorted once here, not on every step: the actions run without a coroutine,
        # the actions whose next action needs no evaluation, whether hooks exist
        self._inline = frozenset(
            n for n, a in graph.actions.items() if n not in self._parallel and runs_inline(a)
        )
        self._fixed = graph._fixed
        self._hooked = hooks.active

    def __repr__(self) -> str:
        return (
            f"Application(app_id={self._app_id!r}, partition_key={self._partition_key!r}, "
            f"sequence_id={self._sequence_id}, position={self._position!r})"
        )

    # --------------------------------------------------------------- properties

    @property
    def state(self) -> State:
        """The state after the last step."""
        return self._state

    @property
    def sequence_id(self) -> int:
        """The sequence id of the last event this app wrote (or loaded)."""
        return self._sequence_id

    @property
    def position(self) -> str | None:
        """The action the next step runs; ``None`` once the app reached a terminal action."""
        return self._position

    @property
    def app_id(self) -> str:
        return self._app_id

    @property
    def partition_key(self) -> str:
        return self._partition_key

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def store(self) -> EventStore:
        return self._store

    @property
    def durability(self) -> str:
        return self._durability

    @property
    def graph_fingerprint(self) -> str:
        """``"sha256:..."`` of this app's graph (recorded in ``run_started``)."""
        return self._fingerprint

    @property
    def waiting_for(self) -> str | None:
        """The name of the input the app waits for, or ``None``."""
        return self._pending[0] if self._pending is not None else None

    # --------------------------------------------------------------- stepping

    async def astep(self, inputs: Mapping[str, Any] | None = None) -> StepResult | None:
        """Run the action at ``position``; write its event; return ``None`` when done.

        A failing action writes ``action_failed`` and raises ``ActionError``
        (``__cause__`` is the action's exception). A contract error (wrong return
        type, undeclared write, unencodable value, no transition) writes nothing
        and raises.
        """
        # The one step, used by every run method (through _steps); what it returns
        # is built right here, and its event is left in _last_event for astream.
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        name = self._position
        if name is None:
            return None
        if self._pending is not None:
            raise InputError(
                f"action {name!r} waits for input {self._pending[0]!r}: "
                f"provide it with `await app.aprovide_input({self._pending[0]!r}, value)`"
            )
        action = self._actions[name]
        hidden = self._redact
        if inputs:
            given, hidden = self._plain_inputs(inputs)
        else:
            given = _EMPTY
        if self._provided:
            given = {**given, **self._provided}
        seq = self._sequence_id + 1
        state = self._state
        hooked = self._hooked
        if hooked:
            await self._hooks.run_pre(
                partition_key=self._partition_key,
                app_id=self._app_id,
                sequence_id=seq,
                position=name,
                state=state,
                inputs=given,
            )
        recorded = recorded_inputs(action, given, hidden) if given else _EMPTY
        try:
            if name in self._inline:
                outcome = run_inline(action, state, given)
            else:
                self._step_inputs = recorded
                token = attempt_sink.set(self._attempt_failed)
                try:
                    if name in self._parallel:
                        run_children = action.run_children  # type: ignore[attr-defined]
                        outcome = await run_children(self, state, given, self._origin)
                    else:
                        outcome = await run_action(action, state, given)
                finally:
                    attempt_sink.reset(token)
        except ActionError as exc:
            await self._record_failure(name, recorded, exc)
            raise
        except InputRequired as ask:
            await self._record_wait(name, recorded, ask)
            return None
        seq = self._sequence_id + 1  # attempt_failed events may have taken sequence ids
        result, new_state, label, attempt, duration = outcome
        fixed = self._fixed
        if name in fixed:
            next_action = fixed[name]
        else:
            next_action = self._graph.next_action(name, new_state, label)
        event = Event(
            partition_key=self._partition_key,
            app_id=self._app_id,
            sequence_id=seq,
            kind=_COMPLETED,
            action=name,
            next_action=next_action,
            inputs=recorded,
            ops=new_state._op_list(),
            result=result,
            timestamp=_now(UTC),
            duration_us=int(duration * 1_000_000),
            attempt=attempt,
            actor=self._actor,
            correlation_id=self._correlation_id,
        )
        append = self._append
        if next_action is None:
            # the end: the step and ``completed`` in one append, so a crash between
            # them cannot leave a finished app without its completed event
            await self._write_final(event)
        elif append is not None:  # transactional: straight to the store
            self._last_recorded = (await append((event,), expected_sequence=seq - 1))[-1]
        else:
            await self._writer.write(event)
        self._sequence_id = seq if next_action is not None else seq + 1
        self._origin = seq + 1
        self._state = new_state.rebase()
        self._position = next_action
        if self._provided:
            self._provided = {}
        if hooked:
            await self._hooks.run_post(
                partition_key=self._partition_key,
                app_id=self._app_id,
                sequence_id=seq,
                position=name,
                state=self._state,
                inputs=given,
                result=result,
                exception=None,
            )
        # both are None without a snapshot store
        every = self._snap_every
        if (every is not None and seq - self._snap_seq >= every) or self._snap_seconds is not None:
            await self._maybe_snapshot(halted=False)
        self._last_event = event  # no await from here to the caller reading it
        return _tuple_new(StepResult, (name, result, self._state))

    def _plain_inputs(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
        """Run inputs as plain data with ``Secret`` unwrapped, and the names to redact."""
        if not isinstance(inputs, Mapping):
            raise ConfigError(
                f"inputs must be a mapping of input names to values, "
                f"got {type(inputs).__name__} {inputs!r}"
            )
        plain, hidden = split_secrets(inputs, self._redact)
        return to_plain(plain, path="$.inputs"), hidden

    async def _record(
        self,
        kind: str,
        *,
        action: str | None = None,
        next_action: Any = _EMPTY,
        inputs: dict[str, Any] = _EMPTY,
        data: dict[str, Any] = _EMPTY,
        **fields: Any,
    ) -> Event:
        """Write one event of ``kind`` at the next sequence (``next_action``: the position).

        Serialised by a lock: the children of a parallel map and the items of a
        batch may record (``child_completed``, ``attempt_failed``) at once.
        """
        lock = self._record_lock
        if lock is None:
            lock = self._record_lock = asyncio.Lock()
        async with lock:
            return await self._record_now(kind, action, next_action, inputs, data, fields)

    async def _record_now(
        self,
        kind: str,
        action: str | None,
        next_action: Any,
        inputs: dict[str, Any],
        data: dict[str, Any],
        fields: dict[str, Any],
    ) -> Event:
        seq = self._sequence_id + 1
        event = Event(
            partition_key=self._partition_key,
            app_id=self._app_id,
            sequence_id=seq,
            kind=kind,
            action=action,
            next_action=self._position if next_action is _EMPTY else next_action,
            inputs=inputs,
            data=data,
            timestamp=utcnow(),
            actor=self._actor,
            correlation_id=self._correlation_id,
            **fields,
        )
        self._last_recorded = await self._writer.write(event)
        self._sequence_id = seq
        return event

    async def _write_final(self, event: Event) -> None:
        """Write a terminal step's event and ``completed`` after it, in one append."""
        seq = event.sequence_id
        completed = Event(
            partition_key=self._partition_key,
            app_id=self._app_id,
            sequence_id=seq + 1,
            kind=EventKind.COMPLETED,
            action=event.action,
            timestamp=event.timestamp,
            actor=self._actor,
            correlation_id=self._correlation_id,
        )
        if self._append is not None:
            recorded = await self._append((event, completed), expected_sequence=seq - 1)
            self._last_recorded = recorded[-1]
        else:
            await self._writer.write(event)
            await self._writer.write(completed)

    async def _attempt_failed(
        self, name: str, attempt: int, exc: BaseException, seconds: float
    ) -> None:
        """The attempt sink: one ``attempt_failed`` event per failed attempt that goes on."""
        await self._record(
            EventKind.ATTEMPT_FAILED,
            action=name,
            next_action=name,
            inputs=self._step_inputs,
            error=error_info(exc),
            attempt=attempt,
            duration_us=int(seconds * 1_000_000),
        )

    async def _record_failure(self, name: str, inputs: dict[str, Any], exc: ActionError) -> None:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        await self._record(
            _FAILED,
            action=name,
            next_action=name,
            inputs=inputs,
            error=error_info(cause),
            attempt=int(getattr(exc, "attempt", 1)),
        )
        seq = self._sequence_id
        exc.sequence_id = seq
        if self._hooks.active:
            await self._hooks.run_post(
                partition_key=self._partition_key,
                app_id=self._app_id,
                sequence_id=seq,
                position=name,
                state=self._state,
                inputs=inputs,
                result=None,
                exception=cause,
            )

    async def _record_wait(self, name: str, inputs: dict[str, Any], ask: InputRequired) -> None:
        data: dict[str, Any] = {"name": ask.name}
        if ask.schema is not None:
            data["schema"] = to_plain(ask.schema, path="$.data.schema")
        await self._record(
            EventKind.WAITING_FOR_INPUT, action=name, next_action=name, inputs=inputs, data=data
        )
        self._pending = (ask.name, ask.schema)

    async def aprovide_input(self, name: str, value: Any) -> None:
        """Give the waiting action its input ``name``; the next run hands it over.

        The value is checked against the schema the action gave
        ``wait_for_input`` (``InputError`` naming the path if it does not fit,
        and nothing is written) and recorded as ``input_received``.
        """
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        pending = self._pending
        if pending is None or pending[0] != name:
            waits = f"it waits for {pending[0]!r}" if pending else "it waits for no input"
            raise InputError(f"app {self._app_id!r} cannot take input {name!r}: {waits}")
        plain = to_plain(value, path=f"$.inputs.{name}")
        validate(pending[1], plain)
        await self._record(
            EventKind.INPUT_RECEIVED,
            action=self._position,
            inputs={name: plain},
            data={"name": name},
        )
        self._pending = None
        self._provided = {**self._provided, name: plain}

    async def _steps(
        self,
        halt_before: Collection[str],
        halt_after: Collection[str],
        inputs: Mapping[str, Any] | None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> AsyncGenerator[tuple[str, Event, Any], None]:
        """The run loop of arun, aiterate and astream: ``run_started``, steps until a
        halt (``halted``), a terminal action (``completed``), a wait for input or a
        failure; snapshot at the end. A cancelled run records ``cancelled``."""
        self._check_halts(halt_before, halt_after)
        for what, value in (("actor", actor), ("correlation_id", correlation_id)):
            if value is not None and type(value) is not str:
                raise ConfigError(f"{what} must be a str or None, got {value!r}")
        if self._position is None or self._pending is not None:
            return  # completed, or waiting for input: nothing to run
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        run_inputs: dict[str, Any] = _EMPTY
        if inputs:
            plain, hidden = self._plain_inputs(inputs)
            run_inputs = {k: ("<redacted>" if k in hidden else v) for k, v in plain.items()}
        self._actor, self._correlation_id = actor, correlation_id
        try:
            await self._record(
                EventKind.RUN_STARTED,
                inputs=run_inputs,
                data={"graph": self._fingerprint},
            )
            step = self.astep
            while True:
                position = self._position
                if position is None or self._pending is not None:
                    break
                if position in halt_before:
                    await self._record(EventKind.HALTED, action=position, data={"halt": "before"})
                    break
                done = await step(inputs)
                if done is None:
                    break
                yield position, self._last_event, done.result
                if position in halt_after and self._position is not None:
                    await self._record(EventKind.HALTED, action=position, data={"halt": "after"})
                    break
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record_cancelled())
            raise
        finally:
            self._actor = self._correlation_id = None
        await self._maybe_snapshot(halted=True)

    async def acancel(self) -> None:
        """Record that the current run was cancelled here: a ``cancelled`` event.

        For a caller that stops a run between steps (a service's cancel): the
        app keeps its position, and a later run resumes from it.
        """
        if self._closed:
            raise UsageError(f"{self!r} is closed")
        await self._record_cancelled()

    async def _record_cancelled(self) -> None:
        await self._writer.flush()
        await self._record(EventKind.CANCELLED, action=self._position)

    async def aiterate(
        self,
        *,
        halt_before: Collection[str] = (),
        halt_after: Collection[str] = (),
        inputs: Mapping[str, Any] | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> AsyncGenerator[StepResult, None]:
        """Step until a halt condition or a terminal action, yielding each step."""
        steps = self._steps(halt_before, halt_after, inputs, actor, correlation_id)
        async for position, _, result in steps:
            yield StepResult(position, result, self._state)

    async def arun(
        self,
        *,
        halt_before: Collection[str] = (),
        halt_after: Collection[str] = (),
        inputs: Mapping[str, Any] | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> StepResult:
        """Run until a halt condition, a terminal action or a wait for input; return
        the last step.

        ``inputs`` are given to every step (as in Burr); each action's event
        records only the ones it takes, ``run_started`` all of them, once
        (``Secret`` values and ``with_redaction`` names as ``"<redacted>"``).
        ``actor`` and ``correlation_id`` (who or what started the run) go on
        every event of the run. With neither halt set, the app runs until an
        action with no way out.
        """
        last: tuple[str | None, Any] = (None, None)
        steps = self._steps(halt_before, halt_after, inputs, actor, correlation_id)
        async for position, _, result in steps:
            last = (position, result)
        return StepResult(last[0], last[1], self._state)

    async def astream(
        self,
        *,
        halt_before: Collection[str] = (),
        halt_after: Collection[str] = (),
        inputs: Mapping[str, Any] | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Like ``aiterate``, but yield each step's event as written (for progress, UIs)."""
        steps = self._steps(halt_before, halt_after, inputs, actor, correlation_id)
        async for _, event, _ in steps:
            yield event

    def _check_halts(self, halt_before: Collection[str], halt_after: Collection[str]) -> None:
        for arg, names in (("halt_before", halt_before), ("halt_after", halt_after)):
            if isinstance(names, str) or not isinstance(names, Collection):
                raise ConfigError(
                    f"{arg} takes a list of action names, got {type(names).__name__} {names!r}"
                )
            for name in names:
                if name not in self._actions:
                    raise ConfigError(
                        f"{arg}: cannot halt at {name!r}, no such action "
                        f"(known: {sorted(self._actions)})"
                    )

    # --------------------------------------------------------------- durability, snapshots

    async def flush(self) -> None:
        """Wait until every event is committed (fire_and_forget); raise a write failure."""
        await self._writer.flush()

    async def _maybe_snapshot(self, *, halted: bool) -> None:
        snapshots = self._snapshots
        if snapshots is None or self._closed:
            return
        since = self._sequence_id - self._snap_seq
        elapsed = time.monotonic() - self._snap_time
        if not self._policy.due(since, elapsed, halted=halted, last_bytes=self._snap_bytes):
            return
        await self.snapshot()

    async def snapshot(self) -> None:
        """Save a snapshot of the current state now (after flushing pending events)."""
        snapshots = self._snapshots
        if snapshots is None or self._sequence_id < 0:
            return
        await self._writer.flush()
        rec = self._last_recorded
        seq = self._sequence_id
        if rec is None or rec.event.sequence_id != seq:
            rec = getattr(self._writer, "last_recorded", None)
        if rec is not None and rec.event.sequence_id == seq:
            position, event_hash = rec.position, rec.event.hash
        else:
            events = await self._store.read(
                self._partition_key, self._app_id, from_sequence=seq, to_sequence=seq
            )
            if not events:
                return
            known = await self._store.position_of(self._partition_key, self._app_id, seq)
            position, event_hash = (-1 if known is None else known), events[0].hash
        size = await snapshots.save(
            Snapshot(
                partition_key=self._partition_key,
                app_id=self._app_id,
                sequence_id=seq,
                state=self._state.get_all(),
                position=position,
                event_hash=event_hash,
            )
        )
        self._snap_seq = seq
        self._snap_time = time.monotonic()
        self._snap_bytes = size if type(size) is int else None

    # --------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Flush, snapshot at halt (per policy), close stores the app opened. Idempotent."""
        if self._closed:
            return
        try:
            await self._writer.flush()
            await self._maybe_snapshot(halted=True)
        finally:
            self._closed = True
            await self._life.release()

    # --------------------------------------------------------------- the sync face

    def _runner_or_raise(self, method: str) -> asyncio.Runner:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError(
                f"Application.{method}() was called inside a running event loop; "
                f"use `await app.a{method}(...)` there"
            )
        if self._runner is None:
            raise UsageError(
                f"Application.{method}() needs an app made by build(); this one was made by "
                f"abuild() and lives in its event loop: use `await app.a{method}(...)`"
            )
        return self._runner

    def _sync(self, method: str, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the app's own loop, then commit what it queued.

        The loop runs only inside these calls, so a fire-and-forget writer could
        not make progress between them: each call returns once its events are
        committed (a transactional step was committed before it returned anyway).
        """
        try:
            runner = self._runner_or_raise(method)
        except UsageError:
            work.close()
            raise
        return run_sync(runner, self._committed(work))

    async def _committed(self, work: Coroutine[Any, Any, T]) -> T:
        # the caller's thread blocks for this call: a store may write on it (SYNC_CALLER)
        SYNC_CALLER.set(True)
        try:
            result = await work
        except BaseException:
            with contextlib.suppress(Exception):
                await self._writer.flush()
            raise
        await self._writer.flush()
        return result

    def step(self, inputs: Mapping[str, Any] | None = None) -> StepResult | None:
        """``astep`` on the app's own loop (an app made by ``build()``)."""
        return self._sync("step", self.astep(inputs))

    def run(
        self,
        *,
        halt_before: Collection[str] = (),
        halt_after: Collection[str] = (),
        inputs: Mapping[str, Any] | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
    ) -> StepResult:
        """``arun`` on the app's own loop (an app made by ``build()``)."""
        return self._sync(
            "run",
            self.arun(
                halt_before=halt_before,
                halt_after=halt_after,
                inputs=inputs,
                actor=actor,
                correlation_id=correlation_id,
            ),
        )

    def provide_input(self, name: str, value: Any) -> None:
        """``aprovide_input`` on the app's own loop (an app made by ``build()``)."""
        self._sync("provide_input", self.aprovide_input(name, value))

    def iterate(
        self,
        *,
        halt_before: Collection[str] = (),
        halt_after: Collection[str] = (),
        inputs: Mapping[str, Any] | None = None,
    ) -> Iterator[StepResult]:
        """``aiterate`` on the app's own loop, one step per item."""
        self._runner_or_raise("iterate")
        agen = self.aiterate(halt_before=halt_before, halt_after=halt_after, inputs=inputs)
        try:
            while True:
                try:
                    item = self._sync("iterate", _anext(agen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._sync("iterate", agen.aclose())

    def close(self) -> None:
        """``aclose`` on the app's own loop, then close that loop. Idempotent."""
        runner = self._runner_or_raise("close")
        if self._forget is None:
            return  # closed already
        forget, self._forget = self._forget, None
        forget()
        try:
            runner.run(self.aclose())
        finally:
            runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _anext(agen: AsyncIterator[T]) -> Coroutine[Any, Any, T]:
    async def next_item() -> T:
        return await agen.__anext__()

    return next_item()
