"""Workflows the worker tests register with ``--app`` (the demo, paced)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from statelog.engine import ApplicationBuilder, PostStepHookAsync

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
