"""Apache Burr persisters that write statelog's log: a door for Burr users.

``AsyncStatelogPersister`` implements Burr's ``AsyncBaseStatePersister`` and
``StatelogPersister`` its ``BaseStatePersister``; the sync one runs the async
one on a private event loop (a daemon thread), so there is one implementation.
Swap Burr's persister line for one of these and the app's saves become a
statelog stream that ``statelog verify``, ``history``, ``relay`` and the
projections read::

    persister = StatelogPersister.from_path("app.db")  # was SQLitePersister(...)
    persister.initialize()

How a save maps onto the log (see docs/burr.md):

- Burr hands a persister the whole state after every step. Each save becomes
  one event whose ``writes``/``deletes`` are the change from the stream's
  previous save (``burr_state_delta``), so folding the stream gives Burr's
  state back, at any event.
- ``position`` is the event's ``action``; status ``"completed"`` is kind
  ``action_completed``, ``"failed"`` is ``action_failed`` (with ``next_action``
  = the action, where Burr resumes). Another status string is kept in
  ``result["burr_status"]`` on an ``action_completed`` event.
- The stream stays dense: an event's ``sequence_id`` is always its offset. Burr
  counts from 0 too, so a plain run or a resume lines up one to one; when Burr
  saves another number (a fork's first save continues its parent's count, a
  rewind repeats one) the event keeps Burr's number in
  ``result["burr_sequence_id"]``, and ``load(sequence_id=n)`` finds the latest
  event that Burr numbered ``n``.
- ``partition_key=None`` is stored as ``""`` (Burr's own ``SQLitePersister``
  does the same), so ``None`` and ``""`` name one partition.

State goes through Burr's ``State.serialize``/``State.deserialize`` (with
``serde_kwargs``), so custom serde keeps working; the serialised values must be
JSON data, or the save raises ``EncodingError`` naming the key.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from os import PathLike
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, cast

import msgspec
from burr.core import serde
from burr.core.persistence import (
    AsyncBaseStatePersister,
    BaseStatePersister,
    PersistedStateData,
)
from burr.core.state import FIELD_SERIALIZATION, State

from statelog.eventstore import (
    ConcurrencyError,
    EncodingError,
    Event,
    EventKind,
    EventStore,
    SQLiteEventStore,
    UsageError,
    apply_ops,
    diff_ops,
    fold,
    to_plain,
    utcnow,
)
from statelog.eventstore._base import SYNC_CALLER

__all__ = ["AsyncStatelogPersister", "StatelogPersister", "burr_state_delta"]

_T = TypeVar("_T")

#: The partition a ``partition_key=None`` save or load uses (as Burr's SQLitePersister).
PARTITION_KEY_DEFAULT = ""
#: Streams whose head (last sequence and folded state) a persister keeps in memory.
_HEADS = 1024
#: Appends retried after another writer got to the stream first.
_RETRIES = 8

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _plain_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``_plain_copy`` of operations: their new parts copied and checked."""
    try:
        copy: list[dict[str, Any]] = _json_decode(_json_encode(ops))
        if copy == ops:
            return copy
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        pass
    for op in ops:  # name the bad value by its state key, as Burr users know it
        key = op["key"]
        for member in ("value", "values", "by"):
            if member in op:
                where = f"$.{key}" if op["op"] in ("set", "merge") else f"$.{key}[+]"
                op[member] = to_plain(op[member], path=where)
    plain: list[dict[str, Any]] = _json_decode(_json_encode(ops))
    return plain


def _plain_copy(writes: dict[str, Any]) -> dict[str, Any]:
    """A private copy of ``writes`` as JSON data, or ``EncodingError`` naming the bad value.

    Only what changed is checked: unchanged values equal ones already stored.
    One JSON round trip in C both copies and checks: a value JSON cannot hold
    (NaN, bytes, a set, a tuple, an object) does not come back equal, and then
    ``to_plain`` names it (or turns tuples into lists).
    """
    try:
        copy: dict[str, Any] = _json_decode(_json_encode(writes))
        if copy == writes:
            return copy
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        pass
    plain: dict[str, Any] = _json_decode(_json_encode(to_plain(writes)))
    return plain


def burr_state_delta(
    previous: Mapping[str, Any], current: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The change from one saved (serialised) Burr state to the next, as operations.

    Pure: applying them to ``previous`` (``statelog.eventstore.apply_ops``)
    gives ``current``. Burr saves the whole state after every step; the delta
    holds only the new part: an item appended to a list is an ``append`` op of
    that item, a dict that gained members a ``merge`` of them, any other
    change a ``set`` of the new value, a key gone a ``delete``.
    """
    return diff_ops(previous, current)


_PLAIN_TYPES = (bool, int, float, str, dict, list, type(None))
#: Burr's own serialisers of JSON values: each returns its value or an equal copy.
_BURR_SERIALIZERS = {
    bool: serde.serialize_primitive,
    int: serde.serialize_primitive,
    float: serde.serialize_primitive,
    str: serde.serialize_primitive,
    dict: serde.serialize_dict,
    list: serde.serialize_list,
    object: serde.serialize.dispatch(object),  # None stays None (anything else: str)
}
_MISSING: Any = object()


def _serde_keeps_json() -> bool:
    """True while Burr's serde turns JSON values (and subclasses) into equal copies.

    It does unless another serialiser was registered for a JSON type or a
    subclass of one (a per-key field serde is checked key by key).
    """
    for cls, fn in serde.serialize.registry.items():
        if cls in _BURR_SERIALIZERS:
            if fn is not _BURR_SERIALIZERS[cls]:
                return False
        elif issubclass(cls, _PLAIN_TYPES) and not any(
            fn is burrs and issubclass(cls, base)
            for base, burrs in _BURR_SERIALIZERS.items()
            if base is not object
        ):
            return False
    return True


def _same_stored(raw: Any, stored: Any) -> bool:
    """Whether Burr state value ``raw`` serialises to ``stored``, told without serialising.

    Python's ``==`` refuses what Burr's serde would turn into something else
    (a tuple, a datetime, a dataclass, an object are never equal to JSON
    data); the JSON bytes refuse the numbers ``==`` confuses (``1``, ``1.0``,
    ``True``, a ``Decimal``). A false ``False`` only costs a full serialise.
    """
    if type(raw) is not type(stored) or raw != stored:
        return False
    if type(stored) is list or type(stored) is dict or type(stored) is float:  # -0.0 == 0.0
        try:
            return _json_encode(raw) == _json_encode(stored)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
            return False
    return True


def _serialize(key: str, value: Any, serde_kwargs: Mapping[str, Any]) -> Any:
    """``value`` as Burr's ``State.serialize`` would give it for ``key``."""
    return State({key: value}).serialize(**serde_kwargs)[key]


def _state_ops(
    stored: Mapping[str, Any], state: State[Any], serde_kwargs: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``burr_state_delta(stored, state.serialize(**serde_kwargs))``, without serialising it all.

    Burr's serialise copies the whole state at every save; here a value that
    still equals its stored form (``_same_stored``) is skipped, and a list
    that only grew has only its new items serialised. Anything else is
    serialised by Burr and diffed as before (same-run A/B: see the commit).
    """
    keeps_json = _serde_keeps_json()
    ops: list[dict[str, Any]] = []
    current = state.get_all()
    for key, value in current.items():
        old = stored.get(key, _MISSING)
        if keeps_json and old is not _MISSING and key not in FIELD_SERIALIZATION:
            if _same_stored(value, old):
                continue
            n = len(old) if type(old) is list else -1
            if type(value) is list and len(value) > n >= 0 and _same_stored(value[:n], old):
                new = _serialize(key, value[n:], serde_kwargs)
                if len(new) == 1:
                    ops.append({"op": "append", "key": key, "value": new[0]})
                else:
                    ops.append({"op": "extend", "key": key, "values": new})
                continue
        before = {} if old is _MISSING else {key: old}
        ops += burr_state_delta(before, _plain_copy({key: _serialize(key, value, serde_kwargs)}))
    ops.extend({"op": "delete", "key": key} for key in stored if key not in current)
    return ops


def _kind(status: str) -> str:
    return EventKind.ACTION_FAILED if status == "failed" else EventKind.ACTION_COMPLETED


def _burr_meta(event: Event) -> Mapping[str, Any]:
    result = event.result
    return result if isinstance(result, dict) else {}


def _burr_sequence(event: Event) -> int:
    value = _burr_meta(event).get("burr_sequence_id", event.sequence_id)
    return value if isinstance(value, int) else event.sequence_id


def _burr_status(event: Event) -> str:
    status = _burr_meta(event).get("burr_status")
    if isinstance(status, str):
        return status
    return "failed" if event.kind == EventKind.ACTION_FAILED else "completed"


def _holds_data(path: str) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


class _Head:
    """What a persister knows of a stream's end: its last sequence id and state."""

    __slots__ = ("last", "owned", "state")

    def __init__(self, last: int, state: dict[str, Any]) -> None:
        self.last = last
        self.state = state
        self.owned: set[str] = set()  # apply_ops: the containers it may grow in place


class AsyncStatelogPersister(AsyncBaseStatePersister):
    """Burr's async persister interface over a statelog ``EventStore``.

    ``AsyncStatelogPersister(store)`` uses a store you own (and close);
    ``from_path(path)`` opens a SQLite log that ``aclose()`` (or ``close()``,
    or ``async with``) closes. ``serde_kwargs`` go to Burr's
    ``State.serialize``/``State.deserialize``.
    """

    PARTITION_KEY_DEFAULT = PARTITION_KEY_DEFAULT

    def __init__(
        self,
        store: EventStore,
        *,
        serde_kwargs: Mapping[str, Any] | None = None,
        close_store: bool = False,
    ) -> None:
        if not isinstance(store, EventStore):
            raise TypeError(f"store must be a statelog EventStore, got {type(store).__name__}")
        self.store = store
        self.serde_kwargs: dict[str, Any] = dict(serde_kwargs or {})
        self._close_store = close_store
        self._initialized = False
        self._heads: OrderedDict[tuple[str, str], _Head] = OrderedDict()

    @classmethod
    def from_path(
        cls,
        path: str | PathLike[str],
        *,
        serde_kwargs: Mapping[str, Any] | None = None,
        **store_options: Any,
    ) -> Self:
        """A persister on the SQLite log at ``path`` (created if absent), closed with it.

        ``store_options`` go to ``SQLiteEventStore`` (``synchronous``,
        ``hmac_key``, ``codec``, ...). The file is opened by ``initialize()``
        or on first use.
        """
        store = SQLiteEventStore(path, **store_options)
        return cls(store, serde_kwargs=serde_kwargs, close_store=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    # --- Burr's interface

    async def initialize(self) -> None:
        """Open the log (a SQLite file and its schema are created if absent)."""
        connect = cast(
            "Callable[[], Awaitable[object]] | None", getattr(self.store, "connect", None)
        )
        if connect is not None:
            await connect()
        self._initialized = True

    async def is_initialized(self) -> bool:
        """True once ``initialize()`` has opened the log, or its SQLite file exists.

        Burr's builder asks before a run. Every method opens the log on first
        use, so ``initialize()`` is only needed to create a new file up front.
        """
        if not self._initialized and isinstance(self.store, SQLiteEventStore):
            return await asyncio.to_thread(_holds_data, self.store.path)
        return self._initialized

    async def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State[Any],
        status: Literal["completed", "failed"],
        **kwargs: Any,
    ) -> None:
        """Append Burr's state after step ``sequence_id`` as the delta from the last save."""
        stream = (partition_key if partition_key is not None else PARTITION_KEY_DEFAULT, app_id)
        for _ in range(_RETRIES):
            head = await self._head(stream)
            try:
                ops = _plain_ops(_state_ops(head.state, state, self.serde_kwargs))
            except EncodingError as exc:
                raise EncodingError(
                    f"Burr state of {app_id!r} at sequence_id {sequence_id}: {exc}", path=exc.path
                ) from exc
            offset = head.last + 1
            meta: dict[str, Any] = {}
            if sequence_id != offset:
                meta["burr_sequence_id"] = sequence_id
            if status not in ("completed", "failed"):
                meta["burr_status"] = status
            event = Event(
                partition_key=stream[0],
                app_id=app_id,
                sequence_id=offset,
                kind=_kind(status),
                action=position,
                next_action=position if status == "failed" else None,
                ops=ops,
                result=meta or None,
                timestamp=utcnow(),
            )
            try:
                await self.store.append([event], expected_sequence=head.last)
            except ConcurrencyError:
                self._heads.pop(stream, None)  # another writer moved on: fold again
                continue
            apply_ops(head.state, ops, head.owned)  # private copies: Burr's may be shared
            head.last = offset
            return
        raise ConcurrencyError(stream, head.last, await self.store.last_sequence(*stream))

    async def load(
        self,
        partition_key: str | None,
        app_id: str | None,
        sequence_id: int | None = None,
        **kwargs: Any,
    ) -> PersistedStateData | None:
        """Burr's state after its step ``sequence_id`` (the latest if ``None``), by folding.

        ``None`` if the app has no such step, or ``app_id`` is ``None``.
        """
        if app_id is None:
            return None
        pk = partition_key if partition_key is not None else PARTITION_KEY_DEFAULT
        if sequence_id is None:
            folded, last = await self.store.fold_stream(pk, app_id)
            if last < 0:
                return None
            events = await self.store.read(pk, app_id, from_sequence=last, to_sequence=last)
            event = events[0]
        else:
            events = await self.store.read(pk, app_id)
            found = [i for i, e in enumerate(events) if _burr_sequence(e) == sequence_id]
            if not found:
                return None
            event = events[found[-1]]
            folded = fold(events[: found[-1] + 1])
        return {
            "partition_key": pk,
            "app_id": app_id,
            "sequence_id": _burr_sequence(event),
            "position": event.action or "",
            "state": State.deserialize(folded, **self.serde_kwargs),
            "created_at": event.timestamp.isoformat(),
            "status": _burr_status(event),
        }

    async def list_app_ids(self, partition_key: str | None, **kwargs: Any) -> list[str]:
        """The apps of a partition, most recently saved first (as Burr's SQLitePersister)."""
        pk = partition_key if partition_key is not None else PARTITION_KEY_DEFAULT
        latest: list[tuple[datetime, int, str]] = []
        for order, stream in enumerate(await self.store.streams(pk)):
            last = await self.store.last_sequence(pk, stream.app_id)
            tail = await self.store.read(pk, stream.app_id, from_sequence=last, to_sequence=last)
            if tail:  # a stream is listed once it has an event
                latest.append((tail[-1].timestamp, order, stream.app_id))
        latest.sort(reverse=True)
        return [app_id for _, _, app_id in latest]

    # --- lifecycle

    async def aclose(self) -> None:
        """Close the log if this persister opened it (``from_path``). Idempotent."""
        self._heads.clear()
        if self._close_store:
            await self.store.aclose()

    async def close(self) -> None:
        """``aclose()`` under the name Burr's async persisters use."""
        await self.aclose()

    async def cleanup(self) -> None:
        """``aclose()`` under the other name Burr's persisters use."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the heads

    async def _head(self, stream: tuple[str, str]) -> _Head:
        head = self._heads.get(stream)
        if head is None:
            state, last = await self.store.fold_stream(*stream)
            head = self._heads[stream] = _Head(last, state)
            if len(self._heads) > _HEADS:
                self._heads.popitem(last=False)
        else:
            self._heads.move_to_end(stream)
        return head


class _LoopThread:
    """A private event loop on a daemon thread, for the sync persister's calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # daemon: never keeps the interpreter alive; threads it starts (aiosqlite's
        # connection thread) inherit that, so an unclosed log cannot either.
        self.thread = threading.Thread(
            target=self._serve, name="statelog-burr-persister", daemon=True
        )
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise UsageError(
                "StatelogPersister is the sync persister and blocks its caller; it was "
                "called inside a running event loop. Use AsyncStatelogPersister with "
                "ApplicationBuilder.abuild() instead"
            )
        if not self.thread.is_alive():
            coro.close()
            raise UsageError("StatelogPersister is closed")
        return asyncio.run_coroutine_threadsafe(_sync_caller(coro), self.loop).result()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self.thread:
                self.thread.join()


async def _sync_caller(coro: Coroutine[Any, Any, _T]) -> _T:
    """``coro`` as a sync caller's (``SYNC_CALLER``): its caller blocks for it and this
    loop is the persister's own, so the store writes a lone save on this thread
    instead of handing it to its writer thread and back."""
    SYNC_CALLER.set(True)  # in this task's own context: nothing else sees it
    return await coro


_open_sync: weakref.WeakSet[StatelogPersister] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    # atexit runs while daemon threads still live: close what a program left open
    # (Burr's examples never close their persister) so the log is closed cleanly.
    for persister in list(_open_sync):
        with contextlib.suppress(Exception):  # the process is ending; the log is durable
            persister.close()


class StatelogPersister(BaseStatePersister):
    """Burr's sync persister interface: ``AsyncStatelogPersister`` run on a private loop.

    ``from_path(path)`` opens a SQLite log; ``StatelogPersister(store)`` takes
    over a store that is not open on an event loop yet: it is opened on the
    persister's own thread and closed with the persister, since it cannot be
    used from another loop. ``close()`` (or ``with``) closes it; one left open
    is closed when the interpreter exits. Calling it inside a running event
    loop raises ``UsageError``: an async app uses ``AsyncStatelogPersister``.
    """

    PARTITION_KEY_DEFAULT = PARTITION_KEY_DEFAULT

    def __init__(self, store: EventStore, *, serde_kwargs: Mapping[str, Any] | None = None) -> None:
        self._async = AsyncStatelogPersister(store, serde_kwargs=serde_kwargs, close_store=True)
        self._runner = _LoopThread()
        self._closed = False
        _open_sync.add(self)

    @classmethod
    def from_path(
        cls,
        path: str | PathLike[str],
        *,
        serde_kwargs: Mapping[str, Any] | None = None,
        **store_options: Any,
    ) -> Self:
        """A persister on the SQLite log at ``path`` (created if absent), closed with it."""
        return cls(SQLiteEventStore(path, **store_options), serde_kwargs=serde_kwargs)

    @property
    def store(self) -> EventStore:
        return self._async.store

    @property
    def serde_kwargs(self) -> dict[str, Any]:
        return self._async.serde_kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise UsageError(f"{self!r} is closed")
        return self._runner.run(coro)

    # --- Burr's interface (each call runs the async persister's)

    def initialize(self) -> None:
        """Open the log (a SQLite file and its schema are created if absent)."""
        self._run(self._async.initialize())

    def is_initialized(self) -> bool:
        """True once ``initialize()`` has opened the log (Burr's builder asks)."""
        return self._run(self._async.is_initialized())

    def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State[Any],
        status: Literal["completed", "failed"],
        **kwargs: Any,
    ) -> None:
        """Append Burr's state after step ``sequence_id`` as the delta from the last save."""
        self._run(
            self._async.save(partition_key, app_id, sequence_id, position, state, status, **kwargs)
        )

    def load(
        self,
        partition_key: str | None,
        app_id: str | None,
        sequence_id: int | None = None,
        **kwargs: Any,
    ) -> PersistedStateData | None:
        """Burr's state after its step ``sequence_id`` (the latest if ``None``), by folding."""
        return self._run(self._async.load(partition_key, app_id, sequence_id, **kwargs))

    def list_app_ids(self, partition_key: str | None, **kwargs: Any) -> list[str]:
        """The apps of a partition, most recently saved first."""
        return self._run(self._async.list_app_ids(partition_key, **kwargs))

    # --- lifecycle

    def close(self) -> None:
        """Close the log if this persister opened it, and stop its thread. Idempotent."""
        if self._closed:
            return
        try:
            self._runner.run(self._async.aclose())
        finally:
            self._closed = True
            _open_sync.discard(self)
            self._runner.stop()

    def cleanup(self) -> None:
        """``close()`` under the name Burr's SQLitePersister uses."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self._closed = True
            runner = self._runner
            if runner.thread.is_alive():
                runner.loop.call_soon_threadsafe(runner.loop.stop)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
