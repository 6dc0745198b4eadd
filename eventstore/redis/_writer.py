"""``ScriptWriter``: runs the append script for many callers, concurrent calls sent together.

A call made while none is in flight is sent at once. Calls made while one is in
flight wait for it, then go out together as one pipeline: one send and one
round trip for all of them, where each would otherwise cost its own (the
client's CPU per call is what limits appends from many tasks). On the server
each script still runs alone and answers for itself: one caller's conflict
does not fail another's append. This is SQLite's group commit without the
shared transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["ScriptWriter"]


class _Call(NamedTuple):
    keys: Sequence[str]
    args: Sequence[Any]
    future: asyncio.Future[Any]


class ScriptWriter:
    """One Lua script, run for concurrent callers in groups (see the module)."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._busy = False  # a call or a group is in flight
        self._queue: list[_Call] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply for ``keys`` and ``args``; raises the driver's errors."""
        if not self._busy:
            self._busy = True
            try:
                return await self._script(keys=keys, args=args)
            finally:
                self._busy = False
                self._start_group()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(keys, args, future))
        return await future

    async def wait_idle(self) -> None:
        """Wait until the group in flight (if any) and the calls queued behind it are sent."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    def _start_group(self) -> None:
        if self._queue and not self._busy:
            self._busy = True
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                # a caller cancelled before its call was sent leaves nothing behind
                group = [call for call in self._queue if not call.future.done()]
                self._queue = []
                if group:
                    await self._send(group)
        finally:
            self._busy = False

    async def _send(self, group: list[_Call]) -> None:
        pending = group
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for call in pending:
                pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
            try:
                results = await pipe.execute(raise_on_error=False)
                retry = []
                for call, result in zip(pending, results, strict=True):
                    if isinstance(result, NoScriptError) and attempt == 0:
                        retry.append(call)  # not run: the server lost its scripts (a restart)
                    elif not call.future.done():
                        if isinstance(result, BaseException):
                            call.future.set_exception(result)
                        else:
                            call.future.set_result(result)
                if retry:
                    await self._client.script_load(self._script.script)
            except Exception as exc:  # the connection: every call's outcome is unknown
                for call in pending:
                    if not call.future.done():
                        call.future.set_exception(exc)
                return
            if not retry:
                return
            pending = retry
