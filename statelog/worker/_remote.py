"""``RemoteRuns``: how ``statelog serve --kafka`` runs an operation on the workers.

The service keeps its operations (queue, status, idempotency) as before; a run
is one ``start`` command on ``{prefix}.commands`` (idempotency key: the
operation id, ``at_sequence``: the stream's last sequence id when the run
first started, so a requeued run does not run further), and the service
follows the stream on ``{prefix}.events`` until it stops: ``max_steps``
reached, the app completed or an action failed. A cancel sends a ``cancel``
command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from statelog.eventstore import ConfigError, Event, EventKind

from ._commands import Command
from ._submit import CommandProducer

__all__ = ["RemoteRuns"]


class RemoteRuns:
    """Dispatch runs to the workers and follow them on the events topic."""

    def __init__(self, producer: CommandProducer, store: Any, *, poll: float = 0.1) -> None:
        self.producer = producer
        self.store = store  # a connected KafkaEventStore on the events topic
        self.poll = poll

    async def head(self, partition_key: str, app_id: str) -> int:
        """The stream's last sequence id as the topic has it now."""
        await self.store.refresh()
        return int(await self.store.last_sequence(partition_key, app_id))

    async def run(
        self,
        op: Any,
        cancel: asyncio.Event,
        stopping: asyncio.Event,
        progress: Callable[[], None],
    ) -> tuple[str, Event | None]:
        """Send the run and wait until it stops; ``(how, last event)`` as the scheduler's."""
        request = op.request
        if request.halt_before or request.halt_after:
            raise ConfigError("halt_before / halt_after are not supported with --kafka runs")
        base = op.base_sequence if op.base_sequence is not None else -1
        command = Command.new(
            "start",
            op.app_id,
            partition_key=op.partition_key,
            graph=op.graph,
            inputs=dict(request.inputs or {}),
            max_steps=request.max_steps,
            at_sequence=base if base >= 0 else None,
            idempotency_key=op.id,
        )
        await self.producer.submit(command)
        target = None if request.max_steps is None else base + 1 + request.max_steps
        seen = base
        while True:
            if cancel.is_set():
                await self.producer.submit(
                    Command.new("cancel", op.app_id, partition_key=op.partition_key)
                )
                return "cancelled", None
            if stopping.is_set():
                return "stopping", None
            last = await self.head(op.partition_key, op.app_id)
            if last > seen:
                seen = last
                progress()
                (event,) = await self.store.read(
                    op.partition_key, op.app_id, from_sequence=last, to_sequence=last
                )
                if target is not None and last + 1 >= target:
                    return "max_steps", event
                if event.next_action is None or event.kind == EventKind.ACTION_FAILED:
                    return "done", event
            await asyncio.sleep(self.poll)
