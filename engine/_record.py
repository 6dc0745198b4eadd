"""What the engine writes into the record besides state: errors, the graph, redaction.

Pure functions, no I/O:

* ``error_info(exc)`` - the ``ErrorInfo`` of an exception: type, message and
  a bounded traceback summary (the innermost ``TRACEBACK_FRAMES`` frames, each
  ``"dir/file.py:line in function"`` clipped to ``FRAME_CHARS``).
* ``graph_fingerprint(graph, entrypoint)`` - a SHA-256 over the RFC 8785 JSON
  of the action names, each action's code hash and the transitions (source,
  target, condition). The same graph in another process gives the same value.
* ``Secret`` - wrap an input value to keep it out of the log: the action gets
  the value, every event records ``REDACTED`` in its place.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Final, Generic, TypeVar

from statelog.eventstore import ErrorInfo
from statelog.eventstore._canonical import canonical_json_fast

from ._actions import Action, FunctionAction, Node
from ._transitions import Graph

__all__ = [
    "FRAME_CHARS",
    "REDACTED",
    "TRACEBACK_FRAMES",
    "Secret",
    "error_info",
    "graph_fingerprint",
    "recorded_inputs",
    "split_secrets",
]

#: How many frames of a traceback an event keeps (the innermost ones).
TRACEBACK_FRAMES: Final = 8
#: The longest a frame's line may be.
FRAME_CHARS: Final = 200
#: What the log holds in place of a redacted value.
REDACTED: Final = "<redacted>"

T = TypeVar("T")


class Secret(Generic[T]):
    """An input value that must never reach the log.

    ``app.arun(inputs={"api_key": Secret(key)})``: the action receives the
    plain value; ``run_started`` and the action's event record
    ``"<redacted>"``. ``repr`` never shows the value.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


def error_info(exc: BaseException) -> ErrorInfo:
    """Type, message and the bounded traceback summary of ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    lines = []
    for frame in frames:
        parts = frame.filename.replace(os.sep, "/").rsplit("/", 2)
        where = "/".join(parts[-2:])
        lines.append(f"{where}:{frame.lineno} in {frame.name}"[:FRAME_CHARS])
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=lines)


def _code_hash(action: Action) -> str:
    """A hash of the code an action runs (its function's, or its node's methods')."""
    # keyed by the code object, not the function: a builder made per run or per
    # resume defines new functions over the same code (the hash reads only the code)
    fn = getattr(action, "fn", None)
    code = getattr(getattr(fn, "__func__", fn), "__code__", fn)
    key = (type(action), code, tuple(action.reads), tuple(action.writes))
    known = _CODE_HASHES.get(key)
    if known is None:
        if len(_CODE_HASHES) > 4096:
            _CODE_HASHES.clear()
        known = _CODE_HASHES[key] = _compute_code_hash(action)
    return known


_CODE_HASHES: dict[tuple[Any, ...], str] = {}


def _compute_code_hash(action: Action) -> str:
    if isinstance(action, FunctionAction):
        parts: Iterable[Any] = [action.fn]
    elif isinstance(action, Node):
        cls = type(action)
        parts = [getattr(cls, m) for m in ("prep", "exec", "post", "exec_fallback")]
    else:
        parts = [type(action)]
    digest = hashlib.sha256()
    for part in parts:
        code = getattr(getattr(part, "__func__", part), "__code__", None)
        if code is not None:
            digest.update(code.co_code)
            digest.update(repr(_consts(code.co_consts)).encode())
            digest.update(repr(code.co_names).encode())
        else:
            digest.update(f"{type(part).__module__}.{type(part).__qualname__}".encode())
    digest.update(repr(sorted(action.reads)).encode())
    digest.update(repr(sorted(action.writes)).encode())
    return digest.hexdigest()[:16]


def _consts(consts: tuple[Any, ...]) -> list[Any]:
    """Code constants without addresses (nested code objects by their bytecode)."""
    out: list[Any] = []
    for c in consts:
        if inspect.iscode(c):
            out.append(c.co_code.hex())
        else:
            out.append(c)
    return out


def graph_fingerprint(graph: Graph) -> str:
    """``"sha256:<hex>"`` of the graph: actions, their code, transitions."""
    view = {
        "actions": {name: _code_hash(act) for name, act in sorted(graph.actions.items())},
        "transitions": [[t.source, t.target, repr(t.condition)] for t in graph.transitions],
    }
    return "sha256:" + hashlib.sha256(canonical_json_fast(view)).hexdigest()


def split_secrets(
    inputs: Mapping[str, Any], redact: frozenset[str]
) -> tuple[dict[str, Any], frozenset[str]]:
    """``inputs`` with ``Secret`` wrappers removed, and the names to redact."""
    plain: dict[str, Any] = {}
    hidden = set(redact)
    for key, value in inputs.items():
        if isinstance(value, Secret):
            hidden.add(key)
            plain[key] = value.value
        else:
            plain[key] = value
    return plain, frozenset(hidden)


def recorded_inputs(
    action: Action, given: Mapping[str, Any], redact: frozenset[str]
) -> dict[str, Any]:
    """What an action's event records of ``given``: its declared inputs, redacted."""
    if not given:
        return {}
    if action._sig.var_kw:
        names: Iterable[str] = given
    else:
        names = [n for n in (*action._sig.required, *action._sig.optional) if n in given]
    if redact:
        return {n: REDACTED if n in redact else given[n] for n in names}
    return {n: given[n] for n in names}
