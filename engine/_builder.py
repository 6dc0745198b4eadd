"""``ApplicationBuilder``: the Burr-shaped way to make an ``Application``.

Three ways to start, exclusive with each other:

* ``with_state`` / ``with_entrypoint`` - a new app; its first event,
  ``app_initialized``, carries the initial state as ``set`` ops and the graph
  fingerprint. If the stream
  already exists that append fails with ``AppExistsError`` (a
  ``ConcurrencyError``) and nothing is written.
* ``initialize_from(store, resume_at_next_action=True, default_state=,
  default_entrypoint=, on_graph_change=)`` - resume the stream if it exists
  (latest snapshot plus the events after it), else start it from the
  defaults. A stream recorded under another graph fingerprint warns
  (``GraphChangedWarning``) and records ``graph_changed``, or with
  ``on_graph_change="refuse"`` raises ``GraphChangedError``.
* ``fork_from(app_id=, partition_key=, sequence_id=)`` - a new stream whose
  first event, ``forked``, carries the source's state at ``sequence_id`` and a
  ``Lineage`` pointing back at it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from statelog.eventstore import (
    ConcurrencyError,
    ConfigError,
    Event,
    EventKind,
    EventStore,
    Lineage,
    SnapshotBackend,
    SnapshotPolicy,
    SnapshotStore,
    SQLiteEventStore,
    UsageError,
    load_private_key,
    load_stream,
    snapshot_mac_key,
    to_plain,
    utcnow,
)

from ._actions import Action
from ._application import Application
from ._durability import Durability, make_writer
from ._errors import AppExistsError, GraphChangedError, GraphChangedWarning, TransitionError
from ._hooks import HookErrorPolicy, HookSet
from ._lifecycle import Lifeline, watch_async, watch_sync
from ._record import graph_fingerprint
from ._state import State
from ._transitions import Graph

__all__ = ["DEFAULT_DB", "ApplicationBuilder", "StreamPosition", "load_position"]

#: The embedded default store: this file in the working directory.
DEFAULT_DB = "statelog.db"

_UNSET: Any = object()

GraphChangePolicy = Literal["warn", "refuse"]


class StreamPosition:
    """Where a stored stream stands: its folded state, last sequence and next action."""

    __slots__ = (
        "graph",
        "last_event",
        "origin",
        "pending",
        "provided",
        "sequence_id",
        "snapshot",
        "snapshot_bytes",
        "state",
    )

    def __init__(
        self,
        state: dict[str, Any],
        sequence_id: int,
        last_event: Event | None,
        origin: int,
        *,
        pending: tuple[str, dict[str, Any] | None] | None = None,
        provided: dict[str, Any] | None = None,
        graph: str | None = None,
        snapshot: int = -1,
        snapshot_bytes: int | None = None,
    ) -> None:
        self.state = state
        self.sequence_id = sequence_id
        #: the sequence id of the snapshot the state was loaded from (-1: none), and
        #: the size of its stored state when the read gave it
        self.snapshot = snapshot
        self.snapshot_bytes = snapshot_bytes
        self.last_event = last_event
        self.origin = origin
        #: the input the position waits for: (name, schema), or None
        self.pending = pending
        #: inputs received for the position (input_received after its last step)
        self.provided = provided or {}
        #: the latest graph fingerprint the log recorded (None: none, e.g. a v1 log)
        self.graph = graph

    @property
    def next_action(self) -> str | None:
        return self.last_event.next_action if self.last_event is not None else None

    @property
    def exists(self) -> bool:
        return self.sequence_id >= 0


async def load_position(
    store: EventStore,
    snapshots: SnapshotBackend | None,
    partition_key: str,
    app_id: str,
    *,
    at_sequence: int | None = None,
) -> StreamPosition:
    """Load a stream's state (snapshot + tail) and its last event, without running code."""
    # the state, the last 4 events and (SQLite) the first event in one call: one
    # reader hop instead of three (same-run A/B: see docs/benchmarks.md)
    loaded = await load_stream(
        store, snapshots, partition_key, app_id, at_sequence=at_sequence, tail=4
    )
    state, last, window, first_read = loaded.state, loaded.last, loaded.tail, loaded.first
    if last < 0:
        return StreamPosition(state, -1, None, 0)
    # The tail after the last state-changing step: where attempts of the
    # position started (origin), what input it waits for or received; and the
    # latest graph fingerprint. The last 4 events usually hold the tail (a long
    # run of failures or lifecycle events reads further, 64 at a time); the
    # graph, when the tail has none, is the stream's first event's.
    tail: list[Event] = []
    graph: str | None = None
    found_step = False
    while window:
        for earlier in reversed(window):
            if graph is None:
                graph = _graph_of(earlier)
            if not found_step:
                tail.append(earlier)
                found_step = earlier.kind in _STEP_KINDS
            if found_step and graph is not None:
                break
        first = window[0].sequence_id
        if found_step or first == 0:
            break
        window = await store.read(
            partition_key, app_id, from_sequence=max(0, first - 64), to_sequence=first - 1
        )
    tail.reverse()
    event = tail[-1]
    origin = tail[0].sequence_id + 1 if tail[0].kind in _STEP_KINDS else 0
    pending: tuple[str, dict[str, Any] | None] | None = None
    provided: dict[str, Any] = {}
    for e in tail:
        if e.kind == EventKind.WAITING_FOR_INPUT:
            pending = (e.data.get("name", ""), e.data.get("schema"))
        elif e.kind == EventKind.INPUT_RECEIVED:
            pending = None
            provided.update(e.inputs)
    if graph is None and window and window[0].sequence_id > 0:
        # beyond the window: the stream's first event records the graph it started with
        if first_read is not None:
            graph = _graph_of(first_read)
        else:
            first_event = await store.read(partition_key, app_id, from_sequence=0, to_sequence=0)
            if first_event:
                graph = _graph_of(first_event[0])
    return StreamPosition(
        state,
        last,
        event,
        origin,
        pending=pending,
        provided=provided,
        graph=graph,
        snapshot=loaded.snapshot,
        snapshot_bytes=loaded.snapshot_bytes,
    )


#: Kinds of event that change the state: the position's attempts start after the last.
_STEP_KINDS = frozenset({EventKind.ACTION_COMPLETED, EventKind.APP_INITIALIZED, EventKind.FORKED})


def _graph_of(event: Event) -> str | None:
    if event.kind == EventKind.GRAPH_CHANGED:
        value = event.data.get("to")
    else:
        value = event.data.get("graph")
    return value if isinstance(value, str) else None


async def _connect_given(snapshots: SnapshotBackend | None) -> None:
    """Connect a ``SnapshotStore`` the caller passed unopened, as an event store
    connects on its first use, instead of failing at the app's first snapshot
    (``every`` steps later); a closed one raises ``StoreClosedError`` here,
    before anything is written. It stays the caller's to close, as an event
    store they pass does (two apps may share it). Other backends connect lazily
    (a ``RedisSnapshotStore``'s client): no round trip per build."""
    if isinstance(snapshots, SnapshotStore) and not snapshots.connected:
        await snapshots.connect()


class ApplicationBuilder:
    """Collects the parts of an application; ``build()`` / ``abuild()`` make it."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._transitions: list[tuple[Any, ...]] = []
        self._state: Mapping[str, Any] | None = None
        self._entrypoint: str | None = None
        self._app_id: str | None = None
        self._partition_key = ""
        self._store: Any = _UNSET
        self._snapshots: Any = _UNSET
        self._store_options: dict[str, Any] = {}  # SQLiteEventStore options (signing_key)
        self._synchronous: Literal["NORMAL", "FULL"] | None = None  # with_store(path, ...)
        self._policy = SnapshotPolicy(every=1000)
        self._hooks: list[object] = []
        self._on_hook_error: HookErrorPolicy = "log"
        self._durability: Durability = "transactional"
        self._init: tuple[Any, bool, Mapping[str, Any] | None, str | None] | None = None
        self._fork: tuple[str, str, int | None] | None = None
        self._parent: Lineage | None = None
        self._redact: frozenset[str] = frozenset()
        self._on_graph_change: GraphChangePolicy = "warn"

    # --------------------------------------------------------------- parts

    def with_actions(self, *actions: Action, **named: Action) -> ApplicationBuilder:
        """Register actions, by keyword (``fetch=fetch_action``) or by their own names."""
        for act in actions:
            name = getattr(act, "name", None)
            if not isinstance(act, Action) or not name:
                raise ConfigError(
                    f"with_actions takes named actions (@action functions, Node instances), "
                    f"got {act!r}; pass it by keyword to name it"
                )
            self._add_action(name, act)
        for name, act in named.items():
            if not isinstance(act, Action):
                raise ConfigError(
                    f"action {name!r} must be an Action (@action function, Node instance), "
                    f"got {type(act).__name__}"
                )
            if act.name != name:
                act = act.with_name(name)
            self._add_action(name, act)
        return self

    def _add_action(self, name: str, act: Action) -> None:
        if name in self._actions and self._actions[name] is not act:
            raise ConfigError(f"two different actions are named {name!r}; rename one")
        self._actions[name] = act

    def with_transitions(self, *transitions: tuple[Any, ...]) -> ApplicationBuilder:
        """``(from, to)`` or ``(from, to, condition)``; ``from`` may be a list of names."""
        for spec in transitions:
            if type(spec) is not tuple or len(spec) not in (2, 3):
                raise ConfigError(
                    "with_transitions takes tuples (from, to) or (from, to, condition), "
                    f"got {spec!r}"
                )
        self._transitions.extend(transitions)
        return self

    def with_state(
        self, state: Mapping[str, Any] | None = None, **values: Any
    ) -> ApplicationBuilder:
        """The initial state of a new app (exclusive with initialize_from / fork_from)."""
        if state is not None:
            _check_state("with_state", "state", state)
        merged = dict(state or {})
        merged.update(values)
        self._state = {**(self._state or {}), **merged}
        return self

    def with_entrypoint(self, action: str) -> ApplicationBuilder:
        """The action a new app starts at."""
        _check_name("with_entrypoint", "action", action)
        self._entrypoint = action
        return self

    def with_identifiers(
        self, *, app_id: str | None = None, partition_key: str | None = None
    ) -> ApplicationBuilder:
        """The stream: ``app_id`` (default: a new UUID) and ``partition_key`` (default ``""``)."""
        if app_id is not None:
            _check_name("with_identifiers", "app_id", app_id)
        if partition_key is not None:
            _check_str("with_identifiers", "partition_key", partition_key)
        if app_id is not None:
            self._app_id = app_id
        if partition_key is not None:
            self._partition_key = partition_key
        return self

    def with_store(
        self,
        store: EventStore | str | os.PathLike[str],
        *,
        snapshots: SnapshotBackend | None = _UNSET,
        synchronous: Literal["NORMAL", "FULL"] | None = None,
    ) -> ApplicationBuilder:
        """Where events go: an open ``EventStore``, or a path for an SQLite file.

        With a path the app opens ``SQLiteEventStore`` and a ``SnapshotStore`` on
        the same file and closes both in ``aclose()``; ``synchronous`` is their
        SQLite setting, ``"NORMAL"`` (the default: survives a crash of the
        process) or ``"FULL"`` (survives a power cut too; one fsync per commit).
        Without ``with_store`` the default is the file ``statelog.db`` in the
        working directory. A ``snapshots`` store passed unopened is connected when
        the app is built; like an event store passed in, it stays the caller's
        to close.
        """
        if isinstance(store, str | os.PathLike):
            if not os.fspath(store):
                raise ConfigError("with_store: the path is empty; expected an SQLite file's path")
            if synchronous is not None:
                mode = synchronous.upper() if isinstance(synchronous, str) else None
                if mode not in ("NORMAL", "FULL"):  # any case, as SQLiteEventStore takes it
                    raise ConfigError(
                        "with_store: synchronous must be 'NORMAL' or 'FULL', got "
                        + _describe(synchronous)
                    )
                synchronous = "FULL" if mode == "FULL" else "NORMAL"
        elif not isinstance(store, EventStore):
            raise ConfigError("with_store takes an EventStore or a path, got " + _describe(store))
        elif synchronous is not None:
            raise ConfigError(
                "with_store: synchronous applies to a path the app opens (an open store "
                f"has its own), got synchronous={synchronous!r} with {_describe(store)}"
            )
        self._synchronous = synchronous
        if snapshots not in (_UNSET, None) and not isinstance(snapshots, SnapshotBackend):
            raise ConfigError(
                "with_store: snapshots must be a SnapshotBackend (SnapshotStore, "
                "RedisSnapshotStore) or None, got " + _describe(snapshots)
            )
        self._store = store
        self._snapshots = snapshots
        return self

    def with_signing_key(
        self,
        key: Any,
        *,
        every: int | None = None,
        seconds: float | None = None,
    ) -> ApplicationBuilder:
        """Sign checkpoints of the stream heads with this Ed25519 private key.

        ``key`` is an ``Ed25519PrivateKey`` or the path of its PEM file
        (``statelog keys generate``); a missing or bad file raises
        ``KeyFileError`` here. Applies when the app opens the SQLite file itself
        (``with_store(path)``); an open store takes ``signing_key=`` instead.
        ``every`` events / ``seconds`` override the store's checkpoint period.
        The snapshots the app opens on that file are then sealed with a MAC
        derived from the key, so a snapshot forged without it is skipped on
        resume.
        """
        if isinstance(key, str | os.PathLike):
            key = load_private_key(key)
        elif not hasattr(key, "sign") or not hasattr(key, "public_key"):
            raise ConfigError(
                "with_signing_key takes an Ed25519 private key or a path, got " + _describe(key)
            )
        if every is not None and (type(every) is not int or every < 1):
            raise ConfigError(f"with_signing_key: every must be an int >= 1, got {every!r}")
        if seconds is not None and not (type(seconds) in (int, float) and seconds > 0):
            raise ConfigError(f"with_signing_key: seconds must be > 0, got {seconds!r}")
        options: dict[str, Any] = {"signing_key": key}
        if every is not None:
            options["checkpoint_every"] = every
        if seconds is not None:
            options["checkpoint_interval"] = float(seconds)
        self._store_options = options
        return self

    def with_snapshots(
        self,
        every: int | None = 1000,
        seconds: float | None = None,
        *,
        at_halt: bool = True,
        bytes_per_event: int | None = 256,
    ) -> ApplicationBuilder:
        """Snapshot every ``every`` events and/or ``seconds``, and when a run halts.

        Once a snapshot is over 16 KiB, the next waits until the events since
        number its size / ``bytes_per_event`` (``SnapshotPolicy``): the snapshots
        of a growing state then cost ~``bytes_per_event`` per event, not a whole
        copy every ``every`` events. ``None`` removes that bound."""
        if every is not None and (type(every) is not int or every < 1):
            raise ConfigError(f"with_snapshots: every must be an int >= 1 or None, got {every!r}")
        if seconds is not None and (
            type(seconds) not in (int, float) or not 0 < seconds < float("inf")
        ):
            raise ConfigError(
                f"with_snapshots: seconds must be a number > 0 or None, got {seconds!r}"
            )
        if type(at_halt) is not bool:
            raise ConfigError(f"with_snapshots: at_halt must be a bool, got {at_halt!r}")
        if bytes_per_event is not None and (
            type(bytes_per_event) is not int or bytes_per_event < 1
        ):
            raise ConfigError(
                "with_snapshots: bytes_per_event must be an int >= 1 or None, "
                f"got {bytes_per_event!r}"
            )
        self._policy = SnapshotPolicy(
            every=every, seconds=seconds, at_halt=at_halt, bytes_per_event=bytes_per_event
        )
        return self

    def with_hooks(self, *hooks: object, on_error: HookErrorPolicy = "log") -> ApplicationBuilder:
        """Pre/post step hooks, sync or async; ``on_error``: "log", "warn" or "raise"."""
        HookSet([*self._hooks, *hooks], on_error)  # validate now: misuse raises here
        self._hooks.extend(hooks)
        self._on_hook_error = on_error
        return self

    def with_redaction(self, *names: str) -> ApplicationBuilder:
        """Keep the inputs called ``names`` out of the log: the actions receive
        them, every event records ``"<redacted>"`` in their place (as for a
        ``Secret`` input)."""
        for name in names:
            _check_name("with_redaction", "name", name)
        self._redact = self._redact | frozenset(names)
        return self

    def with_durability(self, mode: Durability) -> ApplicationBuilder:
        """``"transactional"`` (default) or ``"fire_and_forget"``."""
        if mode not in ("transactional", "fire_and_forget"):
            raise ConfigError(
                f"with_durability: expected 'transactional' or 'fire_and_forget', got {mode!r}"
            )
        self._durability = mode
        return self

    def initialize_from(
        self,
        store: EventStore | None = None,
        *,
        resume_at_next_action: bool = True,
        default_state: Mapping[str, Any] | None = None,
        default_entrypoint: str,
        on_graph_change: GraphChangePolicy = "warn",
    ) -> ApplicationBuilder:
        """Resume the stream from ``store`` (default: the app's store) or start it fresh.

        With ``resume_at_next_action=False`` the loaded state starts again at
        ``default_entrypoint``. When the log recorded another graph fingerprint
        (actions, their code, transitions), ``on_graph_change="warn"`` warns
        and records a ``graph_changed`` event; ``"refuse"`` raises
        ``GraphChangedError`` and writes nothing.
        """
        if on_graph_change not in ("warn", "refuse"):
            raise ConfigError(
                f"initialize_from: on_graph_change must be 'warn' or 'refuse', "
                f"got {on_graph_change!r}"
            )
        self._on_graph_change = on_graph_change
        if store is not None and not isinstance(store, EventStore):
            raise ConfigError(
                "initialize_from: store must be an EventStore or None, got " + _describe(store)
            )
        if type(resume_at_next_action) is not bool:
            raise ConfigError(
                "initialize_from: resume_at_next_action must be a bool, "
                f"got {resume_at_next_action!r}"
            )
        if default_state is not None:
            _check_state("initialize_from", "default_state", default_state)
        _check_name("initialize_from", "default_entrypoint", default_entrypoint)
        self._init = (store, resume_at_next_action, default_state, default_entrypoint)
        return self

    def fork_from(
        self, *, app_id: str, partition_key: str = "", sequence_id: int | None = None
    ) -> ApplicationBuilder:
        """Start a new stream from another one's state at ``sequence_id`` (default: its last)."""
        _check_name("fork_from", "app_id", app_id)
        _check_str("fork_from", "partition_key", partition_key)
        if sequence_id is not None and (type(sequence_id) is not int or sequence_id < 0):
            raise ConfigError(
                f"fork_from: sequence_id must be an int >= 0 or None, got {sequence_id!r}"
            )
        self._fork = (partition_key, app_id, sequence_id)
        return self

    def with_parent(self, lineage: Lineage) -> ApplicationBuilder:
        """Link a new app's first event to a parent stream (used by parallel map)."""
        if not isinstance(lineage, Lineage):
            raise ConfigError(f"with_parent takes a Lineage, got {_describe(lineage)}")
        self._parent = lineage
        return self

    # --------------------------------------------------------------- building

    def _check(self) -> None:
        modes = []
        if self._state is not None or self._entrypoint is not None:
            modes.append("with_state/with_entrypoint")
        if self._init is not None:
            modes.append("initialize_from")
        if self._fork is not None:
            modes.append("fork_from")
        if len(modes) > 1:
            raise UsageError(f"{' and '.join(modes)} are exclusive: pick one way to start the app")
        if not modes:
            raise UsageError(
                "no way to start the app: call with_entrypoint (and with_state), "
                "initialize_from or fork_from"
            )
        if not self._actions:
            raise UsageError("the app has no actions: call with_actions")
        init_store = self._init[0] if self._init is not None else None
        if init_store is not None and self._store is not _UNSET and init_store is not self._store:
            raise UsageError(
                "initialize_from(store) and with_store(...) name different stores; "
                "an app reads and writes one stream in one store"
            )

    def build(self) -> Application:
        """Build on the app's own event loop; use the sync face (step/run/iterate/close)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError("build() was called inside a running event loop; use await abuild()")
        self._check()
        runner = asyncio.Runner()
        try:
            return runner.run(self._abuild(runner))
        except BaseException:
            runner.close()
            raise

    async def abuild(self) -> Application:
        """Build in the running event loop; use the async face (astep/arun/...)."""
        self._check()
        return await self._abuild(None)

    async def _open_stores(self) -> tuple[EventStore, SnapshotBackend | None, list[Any]]:
        self._check_snapshots_writable()
        store = self._store
        if store is _UNSET and self._init is not None and self._init[0] is not None:
            store = self._init[0]
        if store is _UNSET:
            store = DEFAULT_DB
        if isinstance(store, EventStore):
            snapshots = None if self._snapshots is _UNSET else self._snapshots
            await _connect_given(snapshots)
            return store, snapshots, []
        path = os.fspath(store)
        owned: list[Any] = []
        try:
            options = dict(self._store_options)
            if self._synchronous is not None:
                options["synchronous"] = self._synchronous
            event_store = await SQLiteEventStore.open(path, **options)
            owned.append(event_store)
            snapshots = self._snapshots
            if snapshots is not _UNSET:
                await _connect_given(snapshots)
            else:
                signing_key = self._store_options.get("signing_key")
                # a signing writer seals its snapshots with a key derived from its own
                mac = snapshot_mac_key(signing_key) if signing_key is not None else None
                snapshots = await SnapshotStore.open(
                    path, hmac_key=mac, synchronous=self._synchronous or "NORMAL"
                )
                owned.append(snapshots)
        except BaseException:
            for resource in reversed(owned):
                await resource.aclose()
            raise
        return event_store, snapshots, owned

    def _check_snapshots_writable(self) -> None:
        """A read-only snapshot store with a policy that saves fails here, not at the
        app's first snapshot (``every`` steps into a run)."""
        snapshots = self._snapshots
        if not getattr(snapshots, "read_only", False):
            return
        policy = self._policy
        if policy.every is not None or policy.seconds is not None or policy.at_halt:
            raise ConfigError(
                f"with_store: {snapshots!r} is read-only, and the app would save snapshots "
                f"to it ({policy}); pass a writable snapshot store, or "
                "with_snapshots(every=None, at_halt=False) to only resume from it"
            )

    async def _abuild(self, runner: asyncio.Runner | None) -> Application:
        store, snapshots, owned = await self._open_stores()
        try:
            app = await self._assemble(store, snapshots, owned, runner)
        except BaseException:
            for resource in reversed(owned):
                await resource.aclose()
            raise
        # an app nobody closes is released for them (see _lifecycle)
        if runner is None:
            await watch_async(app, app._life)
        else:
            app._forget = watch_sync(app, runner, app._life)
        return app

    async def _assemble(
        self,
        store: EventStore,
        snapshots: SnapshotBackend | None,
        owned: list[Any],
        runner: asyncio.Runner | None,
    ) -> Application:
        app_id = self._app_id or uuid.uuid4().hex
        pk = self._partition_key
        entrypoint = self._entrypoint
        if self._init is not None:
            entrypoint = self._init[3]
        graph = Graph(self._actions, self._transitions, entrypoint)
        fingerprint = graph_fingerprint(graph)
        hooks = HookSet(self._hooks, self._on_hook_error)
        writer = make_writer(self._durability, store)

        def make(
            state: State,
            position: str | None,
            seq: int,
            origin: int,
            found: StreamPosition | None = None,
        ) -> Application:
            return Application(
                graph=graph,
                state=state,
                position=position,
                sequence_id=seq,
                app_id=app_id,
                partition_key=pk,
                store=store,
                snapshots=snapshots,
                snapshot_policy=self._policy,
                writer=writer,
                hooks=hooks,
                origin=origin,
                durability=self._durability,
                life=Lifeline(f"Application(app_id={app_id!r})", writer, owned),
                runner=runner,
                fingerprint=fingerprint,
                redact=self._redact,
                pending=None if found is None else found.pending,
                provided=None if found is None else found.provided,
                snapshot_sequence=-1 if found is None else found.snapshot,
                snapshot_bytes=None if found is None else found.snapshot_bytes,
            )

        if self._fork is not None:
            src_pk, src_app, at = self._fork
            if (src_pk, src_app) == (pk, app_id):
                raise UsageError(f"fork_from {src_app!r} into itself: give a new app_id")
            src = await load_position(store, snapshots, src_pk, src_app, at_sequence=at)
            if not src.exists or (at is not None and src.sequence_id != at):
                raise UsageError(
                    f"cannot fork {src_pk + '/' if src_pk else ''}{src_app!r} at "
                    f"sequence_id {at}: the stream ends at {src.sequence_id}"
                )
            position = src.next_action
            _check_position(graph, position, src_app)
            lineage = Lineage(
                partition_key=src_pk, app_id=src_app, sequence_id=src.sequence_id, relation="fork"
            )
            state = await _start(
                store, pk, app_id, src.state, position, EventKind.FORKED, lineage, fingerprint
            )
            return make(state, position, 0, 1)

        if self._init is not None:
            _, resume_next, default_state, default_entry = self._init
            found = await load_position(store, snapshots, pk, app_id)
            if found.exists:
                seq = found.sequence_id
                if resume_next:
                    position = found.next_action
                    _check_position(graph, position, app_id)
                    origin = found.origin
                else:
                    position, origin = default_entry, seq + 1
                    found.pending, found.provided = None, {}
                if found.graph is not None and found.graph != fingerprint:
                    if self._on_graph_change == "refuse":
                        raise GraphChangedError(app_id, found.graph, fingerprint)
                    warnings.warn(
                        f"app {app_id!r} resumes with a changed graph: the log recorded "
                        f"{found.graph}, this app's graph is {fingerprint} "
                        "(recorded as a graph_changed event)",
                        GraphChangedWarning,
                        stacklevel=4,
                    )
                    seq += 1
                    await store.append(
                        [
                            Event(
                                partition_key=pk,
                                app_id=app_id,
                                sequence_id=seq,
                                kind=EventKind.GRAPH_CHANGED,
                                next_action=position,
                                data={"from": found.graph, "to": fingerprint},
                                timestamp=utcnow(),
                            )
                        ],
                        expected_sequence=seq - 1,
                    )
                return make(State.from_fold(found.state), position, seq, origin, found)
            initial, entry = dict(default_state or {}), default_entry
        else:
            initial, entry = dict(self._state or {}), entrypoint
        if entry is None:
            raise UsageError("a new app needs an entrypoint: call with_entrypoint")
        # initialize_from found no stream: if one appears now, another writer
        # raced us (ConcurrencyError); a with_state app names an existing app.
        state = await _start(
            store,
            pk,
            app_id,
            initial,
            entry,
            EventKind.APP_INITIALIZED,
            self._parent,
            fingerprint,
            exists_error=self._init is None,
        )
        return make(state, entry, 0, 1)


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_str(method: str, name: str, value: object) -> None:
    if type(value) is not str:
        raise ConfigError(f"{method}: {name} must be a str, got {_describe(value)}")


def _check_name(method: str, name: str, value: object) -> None:
    _check_str(method, name, value)
    if not value:
        raise ConfigError(f"{method}: {name} must be a non-empty str, got ''")


def _check_state(method: str, name: str, state: object) -> None:
    if not isinstance(state, Mapping):
        raise ConfigError(f"{method}: {name} must be a mapping, got {_describe(state)}")
    for key in state:
        if type(key) is not str:
            raise ConfigError(f"{method}: {name} keys must be str, got {_describe(key)}")


def _check_position(graph: Graph, position: str | None, app_id: str) -> None:
    if position is not None and position not in graph.actions:
        raise TransitionError(
            f"stream {app_id!r} continues at action {position!r}, which this app does not have "
            f"(known: {sorted(graph.actions)})"
        )


async def _start(
    store: EventStore,
    partition_key: str,
    app_id: str,
    initial: Mapping[str, Any],
    entry: str | None,
    kind: str,
    parent: Lineage | None,
    fingerprint: str,
    *,
    exists_error: bool = True,
) -> State:
    """Write a stream's first event (always awaited: a clash raises at build).

    If the stream exists, ``AppExistsError`` (``exists_error``) or the store's
    ``ConcurrencyError``.
    """
    writes = {key: to_plain(value, path=f"$.writes.{key}") for key, value in initial.items()}
    event = Event(
        partition_key=partition_key,
        app_id=app_id,
        sequence_id=0,
        kind=kind,
        next_action=entry,
        ops=[{"op": "set", "key": key, "value": value} for key, value in writes.items()],
        timestamp=utcnow(),
        parent=parent,
        data={"graph": fingerprint},
    )
    try:
        await store.append([event], expected_sequence=-1)
    except ConcurrencyError as exc:
        if not exists_error:
            raise
        raise AppExistsError((partition_key, app_id), exc.actual) from exc
    return State.from_fold(dict(writes))
