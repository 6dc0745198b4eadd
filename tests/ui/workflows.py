"""Workflows the UI tests run through a real service (``tests.ui.workflows:ATTR``)."""

from __future__ import annotations

import asyncio
from typing import Any

from statelog.engine import (
    ApplicationBuilder,
    Node,
    State,
    action,
    default,
    expr,
    parallel_map,
    wait_for_input,
)


@action(reads=["count"], writes=["count"])
async def tick(state: State, delay: float = 0.0) -> State:
    if delay:
        await asyncio.sleep(delay)
    return state.increment(count=1)


@action(reads=["count"], writes=["done"])
def finish(state: State) -> State:
    return state.update(done=True)


@action(reads=["count"], writes=["count"])
def explode(state: State) -> State:
    raise ValueError("the gauge broke")


class Charge(Node):
    """Fails its first attempt, then charges: a step with a failed attempt before success."""

    reads = ["count"]
    writes = ["charged", "receipt"]
    max_retries = 3
    wait = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._tries = 0

    def prep(self, state: State) -> Any:
        return state["count"]

    def exec(self, prep_res: Any) -> Any:
        self._tries += 1
        if self._tries == 1:
            raise TimeoutError("payment gateway timed out")
        return {"amount": 100 * prep_res, "currency": "EUR"}

    def post(self, state: State, prep_res: Any, exec_res: Any) -> tuple[str | None, State]:
        return None, state.update(charged=True, receipt=exec_res)


@action(reads=["count"], writes=["note", "labels", "count"])
def note(state: State, text: str = "") -> State:
    return state.update(note=text, labels={text: [text, 1]}).increment(count=1)


def counter(limit: int = 4) -> ApplicationBuilder:
    """``tick`` until count == limit, then ``finish``."""
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, finish=finish)
        .with_transitions(("tick", "tick", expr(f"count < {limit}")), ("tick", "finish", default))
        .with_state(count=0, done=False)
        .with_entrypoint("tick")
    )


def slow() -> ApplicationBuilder:
    """60 ticks then finish: slow with ``inputs={"delay": ...}`` (the live test)."""
    return counter(60)


def failing() -> ApplicationBuilder:
    """tick, charge (its first attempt fails), then explode: ends failed."""
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, charge=Charge(), explode=explode)
        .with_transitions(("tick", "charge"), ("charge", "explode"))
        .with_state(count=0, charged=False)
        .with_entrypoint("tick")
    )


def noted() -> ApplicationBuilder:
    """note (writes its ``text`` input into state) then finish."""
    return (
        ApplicationBuilder()
        .with_actions(note=note, finish=finish)
        .with_transitions(("note", "finish"))
        .with_state(count=0, done=False)
        .with_entrypoint("note")
    )


APPROVAL = {
    "type": "object",
    "required": ["ok", "by"],
    "properties": {"ok": {"type": "boolean"}, "by": {"type": "string", "minLength": 2}},
}


@action(reads=["count"], writes=["approved", "approver"])
def review(state: State, approval: dict[str, Any] | None = None) -> State:
    if approval is None:
        wait_for_input("approval", schema=APPROVAL)  # the app waits here for a person
    assert approval is not None
    return state.update(approved=approval["ok"], approver=approval["by"])


def approval() -> ApplicationBuilder:
    """review (waits for human input ``approval``) then finish."""
    return (
        ApplicationBuilder()
        .with_actions(review=review, finish=finish)
        .with_transitions(("review", "finish"))
        .with_state(count=0, done=False)
        .with_entrypoint("review")
    )


@action(reads=["item"], writes=["price"])
def quote(state: State) -> State:
    return state.update(price=len(state["item"]) * 10)


@action(reads=[], writes=["carriers"])
def plan(state: State) -> State:
    return state.update(carriers=["dhl", "ups"])


def shipment() -> ApplicationBuilder:
    """plan, then a parallel map: one child app per carrier (the lineage test)."""
    quotes = parallel_map(
        actions={"quote": quote},
        transitions=[],
        entrypoint="quote",
        items="carriers",
        item_key="item",
        result_key="price",
        writes=["prices"],
    )
    return (
        ApplicationBuilder()
        .with_actions(plan=plan, quotes=quotes)
        .with_transitions(("plan", "quotes"))
        .with_state()
        .with_entrypoint("plan")
    )


APPS = [
    "counter=tests.ui.workflows:counter",
    "slow=tests.ui.workflows:slow",
    "failing=tests.ui.workflows:failing",
    "noted=tests.ui.workflows:noted",
    "approval=tests.ui.workflows:approval",
    "shipment=tests.ui.workflows:shipment",
]
