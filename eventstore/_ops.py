"""State operations: what a schema v2 event records as its state change.

An operation is a plain JSON object with an ``"op"`` member, the state ``key``
it changes, and only the new part:

=============  ============================  ==========================================
``op``         members                       folding ``state`` (a dict)
=============  ============================  ==========================================
``set``        ``key``, ``value``            ``state[key] = value``
``delete``     ``key``                       ``state.pop(key)`` (absent: nothing)
``append``     ``key``, ``value``            ``state[key].append(value)`` (absent: [])
``extend``     ``key``, ``values`` (list)    ``state[key].extend(values)`` (absent: [])
``increment``  ``key``, ``by`` (number)      ``state[key] += by`` (absent: 0)
``merge``      ``key``, ``value`` (object)   ``state[key].update(value)`` (absent: {})
=============  ============================  ==========================================

Operations apply in list order, events in sequence order. An append costs the
size of the item, never the size of the list. These are plain dicts, not
structs, so the JSON form is exactly what a reader in another language sees
and the canonical hash covers them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ._errors import EncodingError, InvalidEventError

__all__ = [
    "OP_KINDS",
    "apply_ops",
    "check_ops",
    "diff_ops",
    "json_equal",
    "op_between",
    "ops_of_delta",
]

_encode = msgspec.json.Encoder(order="sorted").encode

#: The operation kinds, and the member each carries besides ``op`` and ``key``.
OP_KINDS: Mapping[str, str | None] = {
    "set": "value",
    "delete": None,
    "append": "value",
    "extend": "values",
    "increment": "by",
    "merge": "value",
}


def ops_of_delta(writes: Mapping[str, Any], deletes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The operations of a v1 delta: a ``set`` per write, then a ``delete`` per delete."""
    ops: list[dict[str, Any]] = [{"op": "set", "key": k, "value": v} for k, v in writes.items()]
    if deletes:  # no generator for the common case of none: half the cost of a one-write call
        ops += [{"op": "delete", "key": k} for k in deletes]
    return ops


def json_equal(a: Any, b: Any) -> bool:
    """Equal as stored JSON: ``1``, ``1.0`` and ``True`` differ, as do ``[1]`` and ``[True]``
    and ``0.0`` and ``-0.0``; the order of an object's members does not matter."""
    if type(a) is not type(b) or a != b:
        return False
    if type(a) is list or type(a) is dict or type(a) is float:
        return _encode(a) == _encode(b)
    return True


_NOTHING: Any = object()


def op_between(key: str, old: Any, new: Any) -> dict[str, Any]:
    """The smallest operation that turns ``old`` (``_NOTHING``: absent) into ``new``.

    A list that grew at its end is an ``append`` or ``extend`` of the new
    items; a dict that only gained or changed members a ``merge`` of those;
    anything else a ``set``.
    """
    if type(old) is list and type(new) is list:
        n = len(old)
        if len(new) > n and json_equal(new[:n], old):
            if len(new) == n + 1:
                return {"op": "append", "key": key, "value": new[n]}
            return {"op": "extend", "key": key, "values": new[n:]}
    elif (
        type(old) is dict
        and type(new) is dict
        and len(new) >= len(old)
        and all(k in new for k in old)
    ):
        part = {k: v for k, v in new.items() if not json_equal(old.get(k, _NOTHING), v)}
        if len(part) < len(new):
            return {"op": "merge", "key": key, "value": part}
    return {"op": "set", "key": key, "value": new}


def diff_ops(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The operations that turn the state ``previous`` into ``current`` (pure).

    One per changed key (``op_between``), then a ``delete`` per key gone.
    """
    ops = [
        op_between(key, previous.get(key, _NOTHING), value)
        for key, value in current.items()
        if not json_equal(previous.get(key, _NOTHING), value)
    ]
    ops.extend({"op": "delete", "key": key} for key in previous if key not in current)
    return ops


def common_ops(ops: Any) -> bool:
    """True if ``ops`` is a list of well-formed ``set``, ``append`` and ``merge`` ops
    (the common shapes, in one cheap test each): ``check_ops`` would pass it."""
    if type(ops) is not list:
        return False
    for op in ops:
        if (
            type(op) is dict
            and len(op) == 3
            and type(op.get("key")) is str
            and ((k := op.get("op")) == "set" or k == "append" or k == "merge")
            and "value" in op
            and (k != "merge" or type(op["value"]) is dict)
        ):
            continue
        return False
    return True


_SAFE_INT = 2**53 - 1


def scalar_ops(ops: list[Any]) -> bool:
    """True if every op of the list ``ops`` is a ``set`` or ``append`` of a str, a
    bool, ``None`` or an int within +-(2**53 - 1): ``check_ops`` and the store's
    value check (``check_values``) would pass them, and they hold no float: one
    walk does for the three (same-run A/B: >= 3 %, docs/benchmarks.md)."""
    for op in ops:
        if (
            type(op) is dict
            and len(op) == 3
            and type(op.get("key")) is str
            and ((k := op.get("op")) == "set" or k == "append")
            and _plain_scalar(op.get("value", _ABSENT))
        ):
            continue
        return False
    return True


def _plain_scalar(value: Any) -> bool:
    """A str, a bool, ``None`` or an int within +-(2**53 - 1): no float, nothing to walk."""
    kind = type(value)
    return (
        kind is str
        or value is None
        or kind is bool
        or (kind is int and -_SAFE_INT <= value <= _SAFE_INT)
    )


def scalar_sets(ops: list[Any]) -> dict[str, Any] | None:
    """``{key: value}`` when every op of the non-empty list ``ops`` is a ``set`` of a
    str, a bool, ``None`` or an int within +-(2**53 - 1), each to another key: then
    ``scalar_ops`` holds, and these are the stored body's ``writes`` (what
    ``_as_delta`` gives). Else ``None``. The common step's ops, checked and put in
    the body's form in one walk (same-run A/B: docs/benchmarks.md, session 7)."""
    writes: dict[str, Any] = {}
    for op in ops:
        if (
            type(op) is dict
            and len(op) == 3
            and op.get("op") == "set"
            and type(key := op.get("key")) is str
            and key not in writes
        ):
            value = op.get("value", _ABSENT)
            if _plain_scalar(value):
                writes[key] = value
                continue
        return None
    return writes


def check_ops(ops: Any, where: str) -> None:
    """Refuse a malformed operation list (``InvalidEventError`` naming ``$.ops[i]``)."""
    if type(ops) is not list:
        raise InvalidEventError(
            f"{where}: expected a list of ops at `$.ops`, got {type(ops).__name__} {ops!r}"
        )
    if common_ops(ops):
        return
    for i, op in enumerate(ops):
        at = f"$.ops[{i}]"
        if type(op) is not dict:
            raise InvalidEventError(
                f"{where}: expected an op object at `{at}`, got {type(op).__name__} {op!r}"
            )
        kind: Any = op.get("op")
        if kind not in OP_KINDS:
            raise InvalidEventError(
                f"{where}: expected one of {sorted(OP_KINDS)} at `{at}.op`, "
                f"got {type(kind).__name__} {kind!r}"
            )
        key = op.get("key")
        if type(key) is not str:
            raise InvalidEventError(
                f"{where}: expected a str at `{at}.key`, got {type(key).__name__} {key!r}"
            )
        member = OP_KINDS[kind]
        want = 2 if member is None else 3
        if len(op) != want or (member is not None and member not in op):
            takes = f"op, key{', ' + member if member else ''}"
            raise InvalidEventError(
                f"{where}: expected the members {takes} at `{at}` ({kind}), got {sorted(op)}"
            )
        if kind == "extend" and type(op["values"]) is not list:
            got = op["values"]
            raise InvalidEventError(
                f"{where}: expected a list at `{at}.values`, got {type(got).__name__} {got!r}"
            )
        elif kind == "merge" and type(op["value"]) is not dict:
            got = op["value"]
            raise InvalidEventError(
                f"{where}: expected an object at `{at}.value`, got {type(got).__name__} {got!r}"
            )
        elif kind == "increment":
            by = op["by"]
            if type(by) is not int and type(by) is not float:
                raise InvalidEventError(
                    f"{where}: expected a number at `{at}.by`, got {type(by).__name__} {by!r}"
                )


def _bad(kind: str, key: str, held: Any, want: str) -> EncodingError:
    return EncodingError(
        f"cannot {kind} state key {key!r}: it holds a {type(held).__name__}, expected {want}",
        path=f"$.state.{key}",
    )


def _own(state: dict[str, Any], key: str, kind: str, owned: set[str], container: type) -> Any:
    """``state[key]`` as a container this fold owns (copied once; absent: empty)."""
    held: Any = state.get(key, _ABSENT)
    if key in owned and type(held) is container:
        return held
    if held is _ABSENT:
        held = container()
    elif type(held) is not container:
        raise _bad(kind, key, held, "a list" if container is list else "an object")
    else:
        held = container(held)
    state[key] = held
    owned.add(key)
    return held


_ABSENT: Any = object()


def apply_ops(state: dict[str, Any], ops: Sequence[Mapping[str, Any]], owned: set[str]) -> None:
    """Apply ``ops`` to ``state`` in place.

    ``owned`` names the keys whose list or dict this fold made itself and may
    grow in place; any other container (an event's value, a snapshot's) is
    copied once before its first append or merge, so an event is never
    changed by folding it. Pass the same set for every event of one fold.
    """
    for op in ops:
        kind = op["op"]
        key = op["key"]
        if kind == "set":
            state[key] = op["value"]
            owned.discard(key)
        elif kind == "append":
            _own(state, key, kind, owned, list).append(op["value"])
        elif kind == "delete":
            state.pop(key, None)
            owned.discard(key)
        elif kind == "extend":
            _own(state, key, kind, owned, list).extend(op["values"])
        elif kind == "increment":
            held = state.get(key, 0)
            if type(held) is not int and type(held) is not float:
                raise _bad(kind, key, held, "a number")
            state[key] = held + op["by"]
        elif kind == "merge":
            _own(state, key, kind, owned, dict).update(op["value"])
        else:
            raise EncodingError(f"unknown state operation {kind!r}", path="$.ops")
