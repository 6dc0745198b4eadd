"""Waiting for threads to end, for tests that check a close leaves none behind."""

from __future__ import annotations

import asyncio
import threading


async def assert_threads_end(baseline: int, *, seconds: float = 5.0) -> None:
    """Wait up to ``seconds`` for the live threads to be ``baseline`` or fewer; fail if not."""
    for _ in range(int(seconds / 0.05)):
        if threading.active_count() <= baseline:
            return
        await asyncio.sleep(0.05)
    assert threading.active_count() <= baseline, threading.enumerate()
