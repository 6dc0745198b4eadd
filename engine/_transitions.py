"""Transitions: conditions (``when``, ``expr``, ``on``, ``default``) and the ``Graph``.

Conditions follow Apache Burr: ``when(status="new")`` holds when every key
equals its value, ``expr("...")`` evaluates a safe expression (see ``_expr``),
``default`` always holds; they combine with ``|``, ``&`` and ``~``. ``on(label)``
holds when a node's ``post`` returned that label (PocketFlow's actions).

A ``Graph`` checks its actions and transitions once, when it is built, and
picks the next action after each step: the first transition out of the
current action, in declaration order, whose condition holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from statelog.eventstore import EncodingError, to_plain

from ._actions import Action
from ._errors import TransitionError
from ._expr import Expression

__all__ = ["Condition", "Graph", "Transition", "default", "expr", "on", "when"]

_MISSING = object()

Check = Callable[[Mapping[str, Any], "str | None"], Any]


class Condition:
    """A predicate over the state (and the label of the step that just ran).

    ``evaluate(state, label=None) -> bool``; ``reads`` is the set of state keys
    it looks at. Combine with ``a | b``, ``a & b``, ``~a``.
    """

    __slots__ = ("_check", "_facts", "always", "description", "reads")

    def __init__(
        self,
        check: Check,
        reads: Iterable[str] = (),
        description: str = "<condition>",
        *,
        always: bool = False,
        facts: _Facts | None = None,
    ) -> None:
        self._check = check
        self.reads: frozenset[str] = frozenset(reads)
        self.description = description
        self.always = always
        # what is known without a state: per "the action returns labels" (index
        # 0: no, 1: yes), (always holds, never holds)
        self._facts: _Facts = facts or (((True, False),) * 2 if always else _UNKNOWN)

    def holds_always(self, *, labelled: bool) -> bool:
        """True when it holds whatever the state (``labelled``: the action returns labels)."""
        return self._facts[labelled][0]

    def holds_never(self, *, labelled: bool) -> bool:
        """True when it cannot hold whatever the state (e.g. ``on()`` after a function)."""
        return self._facts[labelled][1]

    def evaluate(self, state: Mapping[str, Any], *, label: str | None = None) -> bool:
        """True when the condition holds for ``state`` after a step that returned ``label``."""
        return self.always or bool(self._check(state, label))

    @classmethod
    def lmda(
        cls, fn: Callable[[Mapping[str, Any]], Any], reads: Iterable[str], name: str | None = None
    ) -> Condition:
        """A condition from a Python function of the state (Burr's ``Condition.lmda``)."""
        if not callable(fn):
            raise TransitionError(f"Condition.lmda expects a function, got {fn!r}")
        return cls(
            lambda state, label: fn(state),
            reads,
            name or f"lmda({getattr(fn, '__name__', 'fn')})",
        )

    def __or__(self, other: Condition) -> Condition:
        other = _condition(other)
        if self.always or other.always:
            return default
        a, b = self._check, other._check
        return Condition(
            lambda state, label: a(state, label) or b(state, label),
            self.reads | other.reads,
            f"({self.description} | {other.description})",
            facts=_combine(self._facts, other._facts, any_of=True),
        )

    def __and__(self, other: Condition) -> Condition:
        other = _condition(other)
        if self.always:
            return other
        if other.always:
            return self
        a, b = self._check, other._check
        return Condition(
            lambda state, label: a(state, label) and b(state, label),
            self.reads | other.reads,
            f"({self.description} & {other.description})",
            facts=_combine(self._facts, other._facts, any_of=False),
        )

    def __invert__(self) -> Condition:
        a = self._check
        flipped = tuple((never, always) for always, never in self._facts)
        if self.always:
            return Condition(lambda state, label: False, (), "~default", facts=flipped)
        return Condition(
            lambda state, label: not a(state, label),
            self.reads,
            f"~{self.description}",
            facts=flipped,
        )

    def __repr__(self) -> str:
        return self.description


_Facts = tuple[tuple[bool, bool], ...]
_UNKNOWN: _Facts = ((False, False), (False, False))


def _combine(a: _Facts, b: _Facts, *, any_of: bool) -> _Facts:
    if any_of:
        return tuple((x[0] or y[0], x[1] and y[1]) for x, y in zip(a, b, strict=True))
    return tuple((x[0] and y[0], x[1] or y[1]) for x, y in zip(a, b, strict=True))


def _condition(value: Any) -> Condition:
    if not isinstance(value, Condition):
        raise TransitionError(
            f"conditions combine with other conditions, got {type(value).__name__}"
        )
    return value


#: The condition that always holds.
default = Condition(lambda state, label: True, (), "default", always=True)


def when(**values: Any) -> Condition:
    """Holds when ``state[key] == value`` for every key (a missing key: false)."""
    if not values:
        raise TransitionError("when() needs at least one key=value")
    try:
        expected = {key: to_plain(value, path=f"$.when.{key}") for key, value in values.items()}
    except EncodingError as exc:
        raise TransitionError(f"when(): {exc}") from exc
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    missing = _MISSING
    if len(expected) == 1:
        ((key, value),) = expected.items()

        def one(state: Mapping[str, Any], label: str | None) -> bool:
            return bool(state.get(key, missing) == value)

        return Condition(one, expected, f"when({text})")
    pairs = tuple(expected.items())

    def every(state: Mapping[str, Any], label: str | None) -> bool:
        get = state.get
        return all(get(k, missing) == v for k, v in pairs)

    return Condition(every, expected, f"when({text})")


def expr(source: str) -> Condition:
    """Holds when the safe expression ``source`` is truthy (see the grammar in ``_expr``)."""
    compiled = Expression(source)
    return Condition(compiled.check, compiled.reads, f"expr({source!r})")


def on(label: str) -> Condition:
    """Holds when the step that just ran returned ``label`` (a node's ``post``)."""
    if type(label) is not str:
        raise TransitionError(f"on() expects a str label, got {label!r}")
    # after an action that returns no label (a function action) it can never hold
    facts = ((False, True), (False, False))
    return Condition(lambda state, got: got == label, (), f"on({label!r})", facts=facts)


# --------------------------------------------------------------------------- graph


class Transition(NamedTuple):
    """One edge: from ``source`` to ``target`` when ``condition`` holds."""

    source: str
    target: str
    condition: Condition


TransitionSpec = tuple[str | Sequence[str], str] | tuple[str | Sequence[str], str, Condition]


class Graph:
    """Actions and the transitions between them, validated when built.

    Raises ``TransitionError`` for: a transition naming an unknown action, an
    entrypoint that is not an action, actions that cannot be reached from the
    entrypoint, a transition that can never be taken (an unconditional one from
    the same action comes before it, or its condition cannot hold after that
    action, e.g. ``on(label)`` after a function action, which returns no
    label), or a malformed transition.
    """

    def __init__(
        self,
        actions: Mapping[str, Action],
        transitions: Sequence[TransitionSpec],
        entrypoint: str | None = None,
    ) -> None:
        if not isinstance(actions, Mapping) or not actions:
            raise TransitionError("a graph needs at least one action")
        for name, act in actions.items():
            if type(name) is not str or not name:
                raise TransitionError(f"action names must be non-empty str, got {name!r}")
            if not isinstance(act, Action):
                raise TransitionError(
                    f"{name!r} is a {type(act).__name__}, not an action "
                    "(use @action or a Node subclass)"
                )
        self.actions: dict[str, Action] = dict(actions)
        self.transitions: list[Transition] = []
        for spec in transitions:
            self.transitions.extend(self._parse(spec))
        out: dict[str, list[tuple[str, Condition]]] = {}
        unconditional: dict[str, Transition] = {}
        for t in self.transitions:
            first = unconditional.get(t.source)
            where = f"transition {t.source!r} -> {t.target!r} ({t.condition!r})"
            if first is not None:
                raise TransitionError(
                    f"{where} can never be taken: {first.source!r} -> {first.target!r} "
                    f"({first.condition!r}) always holds and comes before it"
                )
            labelled = self.actions[t.source].returns_label
            if t.condition.holds_never(labelled=labelled):
                why = " (a function action returns no label for on())" if not labelled else ""
                raise TransitionError(f"{where} can never be taken{why}")
            if t.condition.holds_always(labelled=labelled):
                unconditional[t.source] = t
            out.setdefault(t.source, []).append((t.target, t.condition))
        self._out: dict[str, tuple[tuple[str, Condition], ...]] = {
            source: tuple(edges) for source, edges in out.items()
        }
        # the next action of each action whose first way out always holds, and
        # None for terminal actions: next_action without evaluating anything
        self._fixed: dict[str, str | None] = {
            name: None for name in self.actions if name not in self._out
        }
        for source, edges in self._out.items():
            if edges[0][1].always:
                self._fixed[source] = edges[0][0]
        if entrypoint is not None:
            if entrypoint not in self.actions:
                raise TransitionError(
                    f"entrypoint {entrypoint!r} is not an action (known: {sorted(self.actions)})"
                )
            unreachable = [n for n in self.actions if n not in self.reachable(entrypoint)]
            if unreachable:
                raise TransitionError(
                    f"action(s) {unreachable} cannot be reached from the entrypoint "
                    f"{entrypoint!r}; add a transition to them or remove them"
                )
        self.entrypoint = entrypoint

    def _parse(self, spec: Any) -> list[Transition]:
        if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
            raise TransitionError(
                f"a transition is (from, to) or (from, to, condition), got {spec!r}"
            )
        sources, target = spec[0], spec[1]
        condition = spec[2] if len(spec) == 3 else default
        if not isinstance(condition, Condition):
            raise TransitionError(
                f"transition {spec!r}: the third item must be a condition "
                f"(when/expr/on/default), got {type(condition).__name__}"
            )
        if isinstance(sources, str):
            sources = [sources]
        elif not isinstance(sources, Sequence) or not sources:
            raise TransitionError(f"transition {spec!r}: `from` must be an action name or a list")
        for name in [*sources, target]:
            if type(name) is not str or name not in self.actions:
                raise TransitionError(
                    f"transition {_show(spec)}: unknown action {name!r} "
                    f"(known: {sorted(self.actions)})"
                )
        return [Transition(source, target, condition) for source in sources]

    def reachable(self, start: str) -> set[str]:
        """The actions reachable from ``start`` (itself included), ignoring conditions."""
        seen = {start}
        todo = [start]
        while todo:
            for target, _ in self._out.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    def outgoing(self, name: str) -> list[Transition]:
        """The transitions out of ``name``, in declaration order."""
        return [Transition(name, target, cond) for target, cond in self._out.get(name, ())]

    @property
    def terminal_actions(self) -> set[str]:
        """Actions with no outgoing transition: the app completes after them."""
        return {name for name in self.actions if name not in self._out}

    def __contains__(self, name: object) -> bool:
        return name in self.actions

    def next_action(
        self, current: str, state: Mapping[str, Any], label: str | None = None
    ) -> str | None:
        """The action after ``current``: the first transition whose condition holds.

        ``None`` when ``current`` has no outgoing transition (the app completes);
        ``TransitionError`` when it has some but none holds.
        """
        edges = self._out.get(current)
        if edges is None:
            if current not in self.actions:
                raise TransitionError(f"unknown action {current!r} (known: {sorted(self.actions)})")
            return None
        try:
            for target, condition in edges:
                if condition.always or condition._check(state, label):
                    return target
        except TransitionError as exc:
            raise TransitionError(f"choosing the action after {current!r}: {exc}") from exc
        tried = ", ".join(f"{target!r} if {cond!r}" for target, cond in edges)
        raise TransitionError(
            f"no transition out of {current!r} holds (label={label!r}); tried: {tried}"
        )

    def __repr__(self) -> str:
        return (
            f"Graph({len(self.actions)} actions, {len(self.transitions)} transitions, "
            f"entrypoint={self.entrypoint!r})"
        )


def _show(spec: Any) -> str:
    parts = [repr(p) for p in spec[:2]]
    return "(" + ", ".join(parts) + (", ...)" if len(spec) == 3 else ")")
