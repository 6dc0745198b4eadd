"""Workflows the service tests register with ``--app NAME=tests.service.workflows:ATTR``."""

from __future__ import annotations

import asyncio

from statelog.engine import ApplicationBuilder, State, action, default, expr, wait_for_input


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


def counter(limit: int = 10) -> ApplicationBuilder:
    """``tick`` until count == limit, then ``finish`` (terminal): limit + 1 steps."""
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, finish=finish)
        .with_transitions(("tick", "tick", expr(f"count < {limit}")), ("tick", "finish", default))
        .with_state(count=0, done=False)
        .with_entrypoint("tick")
    )


def long_counter() -> ApplicationBuilder:
    """30 ticks then finish (slow with ``inputs={"delay": ...}``)."""
    return counter(30)


def failing() -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(tick=tick, explode=explode)
        .with_transitions(("tick", "explode"))
        .with_state(count=0)
        .with_entrypoint("tick")
    )


APPROVAL = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "by": {"type": "string"}},
    "required": ["ok", "by"],
}


@action(reads=["amount"], writes=["approved", "approver"])
def review(state: State, approval: dict | None = None) -> State:
    if approval is None:
        wait_for_input("approval", schema=APPROVAL)  # the app waits here
    assert approval is not None
    return state.update(approved=approval["ok"], approver=approval["by"])


@action(reads=["approved"], writes=["paid"])
def pay(state: State) -> State:
    return state.update(paid=state["approved"])


def refund() -> ApplicationBuilder:
    """``review`` waits for human input ``approval``, then ``pay`` (terminal)."""
    return (
        ApplicationBuilder()
        .with_actions(review=review, pay=pay)
        .with_transitions(("review", "pay"))
        .with_state(amount=900)
        .with_entrypoint("review")
    )


#: ``--app`` specs for every workflow above.
APPS = [
    "counter=tests.service.workflows:counter",
    "long=tests.service.workflows:long_counter",
    "failing=tests.service.workflows:failing",
    "refund=tests.service.workflows:refund",
]
