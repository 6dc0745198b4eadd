"""Workflows the service tests register with ``--app NAME=tests.service.workflows:ATTR``."""

from __future__ import annotations

import asyncio

from statelog.engine import ApplicationBuilder, State, action, default, expr


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


#: ``--app`` specs for every workflow above.
APPS = [
    "counter=tests.service.workflows:counter",
    "long=tests.service.workflows:long_counter",
    "failing=tests.service.workflows:failing",
]
