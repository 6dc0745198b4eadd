"""The immutable ``State`` an application moves through, and the ``Delta`` it records.

``State`` follows Apache Burr's shape (``update``, ``append``, ``extend``,
``increment``, ``wipe``, ``merge``, ``subset``, ``get_all``): every method
returns a new ``State`` and leaves the old one untouched. Unlike Burr it never
deep-copies: values are plain JSON data (``to_plain`` runs on every value
written, so what the application holds equals what a replay of the log yields)
and are shared between states, which must treat them as read-only.

Each ``State`` knows what changed since its *base* (``State.based``,
``State.from_fold`` or ``rebase()``): ``state.delta`` gives the operations
that turn the base into it (``set``, ``delete``, ``append``, ``extend``,
``increment``, ``merge``; see ``statelog.eventstore``'s ``_ops``), each with
only the new part, plus the keys written and deleted. The operations are what
an event stores: an append costs the size of the item, not of the list.

Cost: a state is a shared, never-mutated ``base`` dict plus a small overlay of
the keys changed on top of it. An operation copies only the overlay, so it is
O(keys changed); the overlay is folded into a new base once it grows to a
quarter of the base (amortised O(1) per changed key). Reads are two dict
lookups at most.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, Final

from statelog.eventstore import EncodingError, diff_ops, to_plain

from ._errors import StateError

__all__ = ["Delta", "State"]


class _Deleted:
    """Marker of a key deleted in an overlay."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<deleted>"


_DELETED: Final = _Deleted()
_MISSING: Final = object()
_new = object.__new__


def _plain(key: str, value: Any) -> Any:
    """``to_plain`` with a fast path for scalars; errors name ``$.writes.<key>``."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float and math.isfinite(value):
        return value
    if isinstance(value, State):
        return dict(value._data())  # already plain
    return to_plain(value, path=f"$.writes.{key}")


def _check_key(key: Any) -> str:
    if type(key) is not str:
        raise EncodingError(
            f"state keys must be str, got {key!r} of type {type(key).__name__}",
            path=f"$.writes.{key}",
        )
    return key


class Delta:
    """The changes of a ``State`` since its base.

    ``ops`` are the operations, in order, that turn the base into the state
    (what an event records). ``writes`` maps each written key to its new
    value; ``deletes`` lists deleted keys. A key is in at most one of them:
    writing a key then deleting it ends as a delete, deleting then writing
    ends as a write.
    """

    __slots__ = ("deletes", "ops", "writes")

    def __init__(
        self,
        writes: dict[str, Any] | None = None,
        deletes: list[str] | None = None,
        ops: list[dict[str, Any]] | None = None,
    ):
        self.writes: dict[str, Any] = writes if writes is not None else {}
        self.deletes: list[str] = deletes if deletes is not None else []
        self.ops: list[dict[str, Any]] = ops if ops is not None else []

    @property
    def keys(self) -> set[str]:
        """Every key written or deleted."""
        return set(self.writes).union(self.deletes)

    def __bool__(self) -> bool:
        return bool(self.writes) or bool(self.deletes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delta):
            return NotImplemented
        return self.writes == other.writes and self.deletes == other.deletes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Delta(writes={self.writes!r}, deletes={self.deletes!r}, ops={self.ops!r})"


class State(Mapping[str, Any]):
    """An immutable mapping of state keys to plain values that records its delta.

    ``State(initial)`` normalises ``initial`` and records every key of it as
    written (the delta of "creating" the state); ``State.based(initial)`` does
    the same with an empty delta. Every other method returns a new ``State``.
    """

    __slots__ = ("_base", "_changed", "_merged", "_ops", "_over", "_root")

    _base: dict[str, Any]  # shared, never mutated
    _over: dict[str, Any]  # keys changed on top of _base (_DELETED marks a delete)
    _changed: dict[str, Any]  # keys changed since the rebase point (_DELETED: deleted)
    _merged: dict[str, Any] | None  # cached materialisation of _base + _over
    _root: object  # identity of the rebase point: states sharing it have comparable deltas
    _ops: tuple[dict[str, Any], ...]  # operations since the rebase point, in order

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        data = self._normalise(initial)
        self._base = data
        self._over = {}
        self._changed = dict(data)
        self._merged = data
        self._root = object()
        self._ops = tuple({"op": "set", "key": k, "value": v} for k, v in data.items())

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _normalise(initial: Mapping[str, Any] | None) -> dict[str, Any]:
        if initial is None:
            return {}
        if isinstance(initial, State):
            return initial._data()
        if not isinstance(initial, Mapping):
            raise StateError(
                f"State() expects a mapping of str keys to values, got {type(initial).__name__}"
            )
        return {_check_key(k): _plain(k, v) for k, v in initial.items()}

    @classmethod
    def _make(
        cls,
        base: dict[str, Any],
        over: dict[str, Any],
        changed: dict[str, Any],
        root: object,
        ops: tuple[dict[str, Any], ...] = (),
    ) -> State:
        self = object.__new__(cls)
        self._base = base
        self._over = over
        self._changed = changed
        self._merged = None if over else base
        self._root = root
        self._ops = ops
        return self

    @classmethod
    def based(cls, initial: Mapping[str, Any] | None = None) -> State:
        """A state holding ``initial`` (normalised) with an empty delta."""
        return cls._make(cls._normalise(initial), {}, {}, object())

    @classmethod
    def from_fold(cls, data: dict[str, Any]) -> State:
        """A rebased state over ``data``, a folded dict of plain values.

        ``data`` is taken as is (no copy, no normalisation): it must hold plain
        values only and must not be mutated afterwards.
        """
        return cls._make(data, {}, {}, object())

    def rebase(self) -> State:
        """The same data with an empty delta (a new rebase point)."""
        new = _new(State)
        new._base = self._base
        new._over = self._over
        new._changed = {}
        new._merged = self._merged
        new._root = object()
        new._ops = ()
        return new

    # ------------------------------------------------------------------ reading

    def __getitem__(self, key: str) -> Any:
        over = self._over
        if over:
            value = over.get(key, _MISSING)
            if value is not _MISSING:
                if value is _DELETED:
                    raise KeyError(key)
                return value
        return self._base[key]

    def get(self, key: str, default: Any = None) -> Any:
        over = self._over
        if over:
            value = over.get(key, _MISSING)
            if value is not _MISSING:
                return default if value is _DELETED else value
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        over = self._over
        if over:
            value = over.get(key, _MISSING)  # type: ignore[call-overload]
            if value is not _MISSING:
                return value is not _DELETED
        return key in self._base

    def _data(self) -> dict[str, Any]:
        """The materialised mapping (cached; never mutate it)."""
        merged = self._merged
        if merged is None:
            merged = dict(self._base)
            for key, value in self._over.items():
                if value is _DELETED:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            self._merged = merged
        return merged

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def keys(self) -> KeysView[str]:
        return self._data().keys()

    def items(self) -> ItemsView[str, Any]:
        return self._data().items()

    def values(self) -> ValuesView[Any]:
        return self._data().values()

    def get_all(self) -> dict[str, Any]:
        """The whole state as a new dict (a shallow copy)."""
        return dict(self._data())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, State):
            return self._data() == other._data()
        if isinstance(other, Mapping):
            return self._data() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"State({self._data()!r})"

    def __copy__(self) -> State:
        return self

    @property
    def delta(self) -> Delta:
        """The keys written (with values) and deleted since the rebase point."""
        delta = _new(Delta)
        delta.writes, delta.deletes = self._delta_parts()
        delta.ops = self._op_list()
        return delta

    def _op_list(self) -> list[dict[str, Any]]:
        """The operations since the rebase point, without ones a later set/delete voids."""
        ops = self._ops
        if len(ops) < 2:
            return list(ops)
        voided: set[str] = set()
        kept: list[dict[str, Any]] = []
        for op in reversed(ops):
            key = op["key"]
            if key in voided:
                continue
            if op["op"] == "set" or op["op"] == "delete":
                voided.add(key)
            kept.append(op)
        kept.reverse()
        return kept

    def _delta_parts(self) -> tuple[dict[str, Any], list[str]]:
        """``delta`` as fresh ``(writes, deletes)``, without the ``Delta`` object (per step)."""
        changed = self._changed
        if _DELETED not in changed.values():
            return dict(changed), []
        writes: dict[str, Any] = {}
        deletes: list[str] = []
        for key, value in changed.items():
            if value is _DELETED:
                deletes.append(key)
            else:
                writes[key] = value
        return writes, deletes

    def changed_keys(self) -> Iterable[str]:
        """The keys written or deleted since the rebase point (a live view; cheap)."""
        return self._changed.keys()

    # ------------------------------------------------------------------ writing

    def _apply(self, changes: dict[str, Any], ops: tuple[dict[str, Any], ...]) -> State:
        """A new state with ``changes`` (a fresh dict: key -> plain value or _DELETED) on
        top, recorded as ``ops``."""
        # dicts are never mutated once a State holds them, so `changes` may be shared
        over = {**self._over, **changes} if self._over else changes
        changed = {**self._changed, **changes} if self._changed else changes
        base = self._base
        new = _new(State)
        if len(over) * 4 > len(base) + 32:
            # fold the overlay into a fresh base (amortised over the changes)
            base = dict(base)
            for key, value in over.items():
                if value is _DELETED:
                    base.pop(key, None)
                else:
                    base[key] = value
            over = {}
            new._merged = base
        else:
            new._merged = None
        new._base = base
        new._over = over
        new._changed = changed
        new._root = self._root
        new._ops = self._ops + ops if self._ops else ops
        return new

    def update(self, **updates: Any) -> State:
        """Set keys to values (upsert)."""
        for key, value in updates.items():
            t = type(value)
            if not (t is str or t is int or t is bool or value is None):
                updates[key] = _plain(key, value)
        return self._apply(updates, _sets(updates))

    def merge(self, other: Mapping[str, Any]) -> State:
        """Set every key of ``other`` (a mapping or a ``State``) to its value."""
        if isinstance(other, State):
            if not len(other):
                return self
            changes = dict(other._data())
            return self._apply(changes, _sets(changes))
        if not isinstance(other, Mapping):
            raise StateError(f"merge() expects a mapping, got {type(other).__name__}")
        changes = {_check_key(k): _plain(k, v) for k, v in other.items()}
        return self._apply(changes, _sets(changes))

    def merge_into(self, **updates: Mapping[str, Any]) -> State:
        """Update the dict at each key with a mapping (a missing key starts as ``{}``).

        Recorded as a ``merge`` operation holding only the given members.
        """
        changes: dict[str, Any] = {}
        ops: list[dict[str, Any]] = []
        for key, members in updates.items():
            current = self.get(key, _MISSING)
            if current is _MISSING:
                current = {}
            elif type(current) is not dict:
                raise StateError(
                    f"cannot merge into state key {key!r}: it holds a "
                    f"{type(current).__name__}, expected a dict"
                )
            if not isinstance(members, Mapping):
                raise StateError(
                    f"merge_into({key}=...) expects a mapping, got {type(members).__name__}"
                )
            part = {_check_key(k): _plain(f"{key}.{k}", v) for k, v in members.items()}
            changes[key] = {**current, **part}
            ops.append({"op": "merge", "key": key, "value": part})
        return self._apply(changes, tuple(ops))

    def append(self, **updates: Any) -> State:
        """Append one value to each list (a missing key starts an empty list)."""
        changes: dict[str, Any] = {}
        ops: list[dict[str, Any]] = []
        for key, value in updates.items():
            current = self.get(key, _MISSING)
            if current is _MISSING:
                current = []
            elif not isinstance(current, list):
                raise StateError(
                    f"cannot append to state key {key!r}: it holds a "
                    f"{type(current).__name__}, expected a list"
                )
            item = (
                value
                if _is_scalar(value)
                else to_plain(value, path=f"$.writes.{key}[{len(current)}]")
            )
            changes[key] = [*current, item]
            ops.append({"op": "append", "key": key, "value": item})
        return self._apply(changes, tuple(ops))

    def extend(self, **updates: Iterable[Any]) -> State:
        """Extend each list with the values of an iterable (a missing key starts empty)."""
        changes: dict[str, Any] = {}
        ops: list[dict[str, Any]] = []
        for key, values in updates.items():
            current = self.get(key, _MISSING)
            if current is _MISSING:
                current = []
            elif not isinstance(current, list):
                raise StateError(
                    f"cannot extend state key {key!r}: it holds a "
                    f"{type(current).__name__}, expected a list"
                )
            if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
                raise StateError(
                    f"extend({key}=...) expects a list or other iterable of values, "
                    f"got {type(values).__name__}"
                )
            start = len(current)
            items = [
                v if _is_scalar(v) else to_plain(v, path=f"$.writes.{key}[{start + i}]")
                for i, v in enumerate(values)
            ]
            changes[key] = [*current, *items]
            ops.append({"op": "extend", "key": key, "values": items})
        return self._apply(changes, tuple(ops))

    def increment(self, **updates: int | float) -> State:
        """Add a number to each key (a missing key starts at 0)."""
        changes: dict[str, Any] = {}
        ops: list[dict[str, Any]] = []
        for key, amount in updates.items():
            if not _is_number(amount):
                raise StateError(
                    f"increment({key}=...) expects an int or float, got {type(amount).__name__}"
                )
            current = self.get(key, 0)
            if not _is_number(current):
                raise StateError(
                    f"cannot increment state key {key!r}: it holds a "
                    f"{type(current).__name__}, expected a number"
                )
            changes[key] = _plain(key, current + amount)
            ops.append({"op": "increment", "key": key, "by": amount})
        return self._apply(changes, tuple(ops))

    def wipe(self, delete: Iterable[str] | None = None, keep: Iterable[str] | None = None) -> State:
        """Delete the keys in ``delete``, or every key not in ``keep``, or (neither) all.

        Keys that are not in the state are ignored.
        """
        if delete is not None and keep is not None:
            raise StateError("wipe() takes delete= or keep=, not both")
        if isinstance(delete, str) or isinstance(keep, str):
            raise StateError("wipe() expects a list of keys, not a str")
        if delete is not None:
            doomed = [key for key in delete if key in self]
        elif keep is not None:
            kept = set(keep)
            doomed = [key for key in self._data() if key not in kept]
        else:
            doomed = list(self._data())
        if not doomed:
            return self
        return self._apply(
            dict.fromkeys(doomed, _DELETED), tuple({"op": "delete", "key": k} for k in doomed)
        )

    def subset(self, *keys: str, ignore_missing: bool = True) -> State:
        """Only ``keys`` (the other keys are deleted, and the delta says so)."""
        if not ignore_missing:
            missing = [key for key in keys if key not in self]
            if missing:
                raise KeyError(f"subset(): keys not in the state: {missing}")
        return self.wipe(keep=keys)

    # ------------------------------------------------------------------ lineage

    def descends_from(self, other: State) -> bool:
        """True when this state was derived from ``other``'s rebase point."""
        return self._root is other._root

    def diff_from(self, other: State) -> State:
        """This state's data, rebased on ``other`` with the smallest delta that turns it into this.

        Used when an action returns a ``State`` it built from scratch: the
        delta is computed by comparing the two (O(size of the state)). A list
        that grew at its end becomes an ``append`` or ``extend`` of the new
        items, a dict that only gained or changed members a ``merge`` of those;
        anything else a ``set`` or ``delete``.
        """
        mine = self._data()
        theirs = other._data()
        ops = diff_ops(theirs, mine)
        changes = {op["key"]: _DELETED if op["op"] == "delete" else mine[op["key"]] for op in ops}
        return State._make(mine, {}, changes, other._root, tuple(ops))


def _sets(changes: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    if len(changes) == 1:  # update(key=value), the common step, without the loop
        [(key, value)] = changes.items()
        return ({"op": "set", "key": key, "value": value},)
    return tuple([{"op": "set", "key": k, "value": v} for k, v in changes.items()])


def _is_scalar(value: Any) -> bool:
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    return t is float and math.isfinite(value)


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float
