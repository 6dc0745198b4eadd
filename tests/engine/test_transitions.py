"""Conditions and the Graph: combination, label matching, validation, next_action."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from statelog.engine import TransitionError
from statelog.engine._actions import Node, action
from statelog.engine._state import State
from statelog.engine._transitions import Condition, Graph, Transition, default, expr, on, when


class Tier(enum.Enum):
    GOLD = "gold"


S = State.based({"status": "open", "score": 0.9, "tier": "gold", "pair": [1, 2]})


def test_when() -> None:
    assert when(status="open").evaluate(S)
    assert not when(status="closed").evaluate(S)
    assert when(status="open", tier="gold").evaluate(S)
    assert not when(status="open", tier="silver").evaluate(S)
    assert not when(missing=None).evaluate(S)  # a missing key never equals
    assert when(tier=Tier.GOLD).evaluate(S)  # values are normalised like state values
    assert when(pair=(1, 2)).evaluate(S)
    assert when(status="open", tier="gold").reads == {"status", "tier"}
    assert repr(when(status="open")) == "when(status='open')"
    assert when(status="open").evaluate({"status": "open"})  # any mapping
    with pytest.raises(TransitionError):
        when()
    with pytest.raises(TransitionError):
        when(x=object())


def test_expr_condition() -> None:
    c = expr("score > 0.5 and status == 'open'")
    assert c.evaluate(S)
    assert c.reads == {"score", "status"}
    assert not expr("len(pair) > 2").evaluate(S)
    assert expr("pair").evaluate(S) is True  # truthiness, as a bool
    with pytest.raises(TransitionError, match="attribute access"):
        expr("status.upper() == 'OPEN'")
    with pytest.raises(TransitionError, match="not in the state"):
        expr("nope == 1").evaluate(S)


def test_on_and_default() -> None:
    assert on("approve").evaluate(S, label="approve")
    assert not on("approve").evaluate(S, label="reject")
    assert not on("approve").evaluate(S)
    assert on("x").reads == frozenset()
    assert default.evaluate(S) and default.evaluate({}, label="x")
    assert default.always and repr(default) == "default"
    with pytest.raises(TransitionError):
        on(3)  # type: ignore[arg-type]


def test_combinations() -> None:
    is_open = when(status="open")
    high = expr("score > 0.95")
    assert (is_open | high).evaluate(S)
    assert not (is_open & high).evaluate(S)
    assert (is_open & ~high).evaluate(S)
    assert not (~is_open).evaluate(S)
    assert (is_open | high).reads == {"status", "score"}
    assert (on("ok") & is_open).evaluate(S, label="ok")
    assert not (on("ok") & is_open).evaluate(S, label="no")
    assert (default | high) is default
    assert (high | default) is default
    assert (default & high) is high and (high & default) is high
    assert not (~default).evaluate(S)
    assert repr(is_open | ~high) == "(when(status='open') | ~expr('score > 0.95'))"
    with pytest.raises(TransitionError):
        is_open | "status == 'open'"  # type: ignore[operator]


def test_condition_lmda() -> None:
    c = Condition.lmda(lambda s: s["score"] > 0.5, reads=["score"])
    assert c.evaluate(S) and c.reads == {"score"}
    with pytest.raises(TransitionError):
        Condition.lmda(3, reads=[])  # type: ignore[arg-type]


# ---------------------------------------------------------------- graph


@action(reads=[], writes=[])
def noop(state: State) -> State:
    return state


class Review(Node):
    def post(self, state: State, prep_res: Any, exec_res: Any) -> Any:
        return "approve", state


ACTIONS = {
    "start": noop,
    "review": Review(),
    "approve": noop,
    "reject": noop,
    "escalate": noop,
    "done": noop,
}
TRANSITIONS: list[Any] = [
    ("start", "review"),
    ("review", "approve", on("approve")),
    ("review", "reject", on("reject")),
    ("review", "escalate", expr("score > 0.99")),
    (["approve", "reject"], "done"),
    ("escalate", "review", when(status="open")),
    ("escalate", "done", default),
]


def test_graph_builds_and_routes() -> None:
    g = Graph(ACTIONS, TRANSITIONS, "start")
    assert g.entrypoint == "start" and "review" in g and "nope" not in g
    assert g.next_action("start", S) == "review"
    assert g.next_action("review", S, label="approve") == "approve"
    assert g.next_action("review", S, label="reject") == "reject"
    assert g.next_action("approve", S) == "done"
    assert g.next_action("reject", S) == "done"
    assert g.next_action("escalate", S) == "review"
    assert g.next_action("escalate", S.update(status="closed")) == "done"
    assert g.next_action("done", S) is None  # terminal: the app completes
    assert g.terminal_actions == {"done"}
    assert g.reachable("approve") == {"approve", "done"}
    assert g.outgoing("approve") == [Transition("approve", "done", default)]
    assert len(g.transitions) == 8
    assert "Graph(6 actions" in repr(g)


def test_first_matching_transition_in_declaration_order() -> None:
    g = Graph(
        {"a": noop, "b": noop, "c": noop},
        [("a", "b", expr("score > 0.5")), ("a", "c", expr("score > 0.1")), ("b", "c")],
        "a",
    )
    assert g.next_action("a", S) == "b"
    assert g.next_action("a", S.update(score=0.2)) == "c"


def test_no_transition_holds() -> None:
    g = Graph(ACTIONS, TRANSITIONS, "start")
    with pytest.raises(TransitionError, match="no transition out of 'review' holds") as info:
        g.next_action("review", S, label="maybe")
    assert "label='maybe'" in str(info.value) and "'approve' if on('approve')" in str(info.value)


def test_condition_errors_name_the_action() -> None:
    g = Graph({"a": noop, "b": noop}, [("a", "b", expr("missing > 1"))], "a")
    with pytest.raises(TransitionError, match="after 'a'.*'missing'"):
        g.next_action("a", S)


def test_next_action_of_unknown_action() -> None:
    g = Graph(ACTIONS, TRANSITIONS, "start")
    with pytest.raises(TransitionError, match="unknown action 'ghost'"):
        g.next_action("ghost", S)


@pytest.mark.parametrize(
    "actions, transitions, entrypoint, fragment",
    [
        ({"a": noop}, [("a", "zz")], "a", "unknown action 'zz'"),
        ({"a": noop}, [("zz", "a")], "a", "unknown action 'zz'"),
        ({"a": noop}, [(["a", "zz"], "a")], "a", "unknown action 'zz'"),
        ({"a": noop}, [], "zz", "entrypoint 'zz' is not an action"),
        ({"a": noop, "b": noop, "c": noop}, [("a", "b")], "a", "['c'] cannot be reached"),
        ({"a": noop, "b": noop}, [("b", "a")], "a", "['b'] cannot be reached"),
        (
            {"a": noop, "b": noop, "c": noop},
            [("a", "b"), ("a", "c", when(x=1)), ("b", "c")],
            "a",
            "'a' -> 'c' (when(x=1)) can never be taken",
        ),
        ({"a": noop}, [("a",)], "a", "a transition is (from, to)"),
        ({"a": noop}, ["a"], "a", "a transition is (from, to)"),
        ({"a": noop}, [("a", "a", "x == 1")], "a", "must be a condition"),
        ({"a": noop}, [([], "a")], "a", "`from` must be"),
        ({}, [], None, "at least one action"),
        ({"a": print}, [], None, "not an action"),
        ({"": noop}, [], None, "non-empty str"),
    ],
)
def test_graph_validation(
    actions: dict[str, Any], transitions: list[Any], entrypoint: str | None, fragment: str
) -> None:
    with pytest.raises(TransitionError) as info:
        Graph(actions, transitions, entrypoint)
    assert fragment in str(info.value)


def test_graph_without_entrypoint_skips_reachability() -> None:
    g = Graph({"a": noop, "b": noop}, [], None)
    assert g.entrypoint is None and g.terminal_actions == {"a", "b"}


def test_cycles_are_fine() -> None:
    g = Graph({"ask": noop, "answer": noop}, [("ask", "answer"), ("answer", "ask")], "ask")
    assert g.next_action("answer", S) == "ask"
    assert g.terminal_actions == set()


def test_transitions_that_can_never_be_taken() -> None:
    # no way out: a function action returns no label, so on() after it never holds
    with pytest.raises(TransitionError, match="returns no label"):
        Graph({"a": noop, "b": noop}, [("a", "b", on("ok"))], "a")
    with pytest.raises(TransitionError, match="can never be taken"):
        Graph({"a": noop, "b": noop}, [("a", "b", on("ok") & when(x=1))], "a")
    with pytest.raises(TransitionError, match="can never be taken"):
        Graph({"a": noop, "b": noop}, [("a", "b", ~default)], "a")
    # ~on() after a function action always holds, so what follows is dead
    with pytest.raises(TransitionError, match=r"~on\('x'\)\) always holds"):
        Graph({"a": noop, "b": noop, "c": noop}, [("a", "b", ~on("x")), ("a", "c")], "a")
    # fine: may hold
    Graph({"a": noop, "b": noop}, [("a", "b", on("ok") | when(x=1))], "a")
    Graph({"r": Review(), "b": noop}, [("r", "b", on("ok"))], "r")
    Graph({"r": Review(), "b": noop, "c": noop}, [("r", "b", ~on("x")), ("r", "c")], "r")


def test_static_facts() -> None:
    assert on("x").holds_never(labelled=False) and not on("x").holds_never(labelled=True)
    assert (~on("x")).holds_always(labelled=False)
    assert default.holds_always(labelled=True) and (~default).holds_never(labelled=True)
    assert not when(a=1).holds_always(labelled=False)
    assert not when(a=1).holds_never(labelled=False)
    assert (when(a=1) | default).holds_always(labelled=False)
