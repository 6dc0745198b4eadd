"""Wake-ups for readers of a stream (SSE) when the service appends to it or a run ends."""

from __future__ import annotations

import asyncio
import contextlib

from statelog.eventstore import StreamId

__all__ = ["StreamSignals"]


class StreamSignals:
    """One ``asyncio.Event`` per watched stream, set (and replaced) on every change."""

    def __init__(self) -> None:
        self._events: dict[StreamId, asyncio.Event] = {}
        self.closing = asyncio.Event()

    def notify(self, stream: StreamId) -> None:
        event = self._events.pop(stream, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    async def wait(self, stream: StreamId, seconds: float) -> None:
        """Until the stream changes, the service closes, or ``seconds`` pass."""
        event = self._events.get(stream)
        if event is None:
            event = self._events[stream] = asyncio.Event()
        if self.closing.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
