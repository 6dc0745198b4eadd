"""Admission first: run steps give way to ``POST /v1/runs`` requests, in a bounded way.

One process serves the requests and steps the runs on one event loop. A burst of
POSTs queues a run per request, and up to ``max_concurrent_runs`` running runs
each take loop turns per step (and thread hand-offs to the log): a 202 then waits
behind the steps of the runs that the earlier 202s queued. So while a start
request is in flight, a run at a step boundary (or about to build its app) waits
in line; every ``interval`` seconds the oldest waiting run is let through (one
step), and as soon as no start request is in flight all of them go on. A run
waiting in line of ``n`` waits at most ``n * interval`` seconds per step, however
long the burst lasts (starvation-free, FIFO), and runs keep stepping (about
``1 / interval`` steps per second in all) while the 202s stay fast. Letting one
through at a time, not all at once, keeps a burst of steps from stalling the
requests of that moment. Only ``POST /v1/runs`` counts: a long request (an event
stream, an export) never holds the runs back.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["AdmissionFirst"]


class AdmissionFirst:
    """Counts the start requests in flight; runs wait at ``boundary()`` while any is."""

    __slots__ = ("_timer", "_waiting", "active", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self) -> None:
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0 and self._waiting:
            self._release_all()

    async def boundary(self) -> None:
        """Return at once when no start request is in flight; else wait in line."""
        if self.active == 0 or self.interval <= 0:
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        if self._timer is None:
            self._arm()
        await turn  # a cancelled waiter cancels only its own future

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._release_one)

    def _release_one(self) -> None:
        self._timer = None
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # (a cancelled one gives its turn to the next)
                turn.set_result(None)
                break
        if self._waiting:
            self._arm()

    def _release_all(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for turn in waiting:
            if not turn.done():
                turn.set_result(None)
