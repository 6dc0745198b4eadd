"""Workflows the worker tests register with ``--app`` (the demo paced, a fan-out)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from statelog.engine import ApplicationBuilder, PostStepHookAsync, State, action, parallel_map

#: Seconds each step of ``paced_demo`` waits after its event is written.
PACE = float(os.environ.get("STATELOG_TEST_PACE", "0.02"))


class Pace(PostStepHookAsync):
    async def post_step(self, **kwargs: Any) -> None:
        await asyncio.sleep(PACE)


def paced_demo() -> ApplicationBuilder:
    """The demo order flow with a pause after every step, so runs are still going when a
    test kills or pauses a worker."""
    from statelog._demo import DEMO_ENTRYPOINT, demo_builder, demo_initial_state

    return (
        demo_builder()
        .with_state(demo_initial_state())
        .with_entrypoint(DEMO_ENTRYPOINT)
        .with_hooks(Pace(), on_error="raise")
    )


@action(reads=["rounds"], writes=["rounds", "items"])
def plan(state: State) -> State:
    rounds = state["rounds"] + 1
    return state.update(rounds=rounds, items=[rounds * 10 + n for n in range(3)])


@action(reads=["item"], writes=["half"])
async def split(state: State) -> State:
    await asyncio.sleep(PACE)
    return state.update(half=state["item"] // 2)


@action(reads=["item", "half"], writes=["total"])
async def join(state: State) -> State:
    await asyncio.sleep(PACE)
    return state.update(total=state["item"] + state["half"])


@action(reads=["sums"], writes=["sums"])
def tally(state: State) -> State:
    return state.update(sums=state["sums"] + 1)


def fan_out() -> ApplicationBuilder:
    """A loop whose every other step is a ``parallel_map`` of three paced children
    (two steps each), so a paused owner is usually inside one when it wakes."""
    fan = parallel_map(
        actions={"split": split, "join": join},
        transitions=[("split", "join")],
        entrypoint="split",
        items="items",
        result_key="total",
        writes=["results"],
    )
    return (
        ApplicationBuilder()
        .with_actions(plan=plan, fan=fan, tally=tally)
        .with_transitions(("plan", "fan"), ("fan", "tally"), ("tally", "plan"))
        .with_state({"rounds": 0, "items": [], "results": [], "sums": 0})
        .with_entrypoint("plan")
    )
