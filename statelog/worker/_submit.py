"""Putting commands on the topic, and creating the two topics of a deployment."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

from statelog.eventstore import StoreUnavailableError

from ._commands import Command, encode_command, topic_names

__all__ = ["CommandProducer", "ensure_topics"]


class CommandProducer:
    """An async producer of commands (``async with CommandProducer(...) as p``)."""

    def __init__(
        self, bootstrap_servers: str, *, prefix: str = "statelog", connect_timeout: float = 10.0
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic, _ = topic_names(prefix)
        self.connect_timeout = connect_timeout
        self._producer: Any = None

    async def start(self) -> CommandProducer:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", client_id="statelog-submit"
        )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await producer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await producer.stop()
            raise StoreUnavailableError(
                f"cannot reach Kafka at {self.bootstrap_servers!r}: {exc!r}"
            ) from exc
        self._producer = producer
        return self

    async def submit(self, command: Command) -> tuple[int, int]:
        """Send one command and wait for its acknowledgement; ``(partition, offset)``."""
        from aiokafka.errors import KafkaError

        command.check()
        key, value, headers = encode_command(command)
        try:
            meta = await self._producer.send_and_wait(self.topic, value, key=key, headers=headers)
        except (KafkaError, OSError) as exc:
            raise StoreUnavailableError(
                f"Kafka did not acknowledge a command on {self.topic!r}: {exc!r}"
            ) from exc
        return int(meta.partition), int(meta.offset)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> CommandProducer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def ensure_topics(
    bootstrap_servers: str, prefix: str, partitions: int, *, replication: int = 1
) -> int:
    """Create ``{prefix}.commands`` and ``{prefix}.events`` with ``partitions`` each if missing,
    and ``{prefix}.events.checkpoints`` (one partition: the signed checkpoints of
    workers with ``--signing-key``).

    The events and checkpoints topics get ``retention.ms=-1``; use ``replication=3``
    on a real cluster.

    Returns the partition count; raises ``StoreUnavailableError`` if the two
    topics exist with different counts (a stream's commands and events must
    land in the same partition number).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    names = topic_names(prefix)
    checkpoints = f"{names[1]}.checkpoints"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        await admin.start()
        missing = [n for n in (*names, checkpoints) if n not in await admin.list_topics()]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name=n,
                            num_partitions=1 if n == checkpoints else partitions,
                            replication_factor=replication,
                            # the events and their checkpoints are of record: keep them forever
                            topic_configs={} if n == names[0] else {"retention.ms": "-1"},
                        )
                        for n in missing
                    ]
                )
        # describe only topics that exist: some brokers create the ones they describe
        for _ in range(100):
            listed = await admin.list_topics()
            if all(n in listed for n in (*names, checkpoints)):
                break
            await asyncio.sleep(0.1)
        else:
            raise StoreUnavailableError(f"topics {names} were not created")
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
        counts = [described[n] for n in names]
    except KafkaError as exc:
        raise StoreUnavailableError(f"cannot create the topics of {prefix!r}: {exc!r}") from exc
    finally:
        await admin.close()
    if counts[0] != counts[1]:
        raise StoreUnavailableError(
            f"{names[0]} has {counts[0]} partitions and {names[1]} has {counts[1]}: "
            "they must have the same count"
        )
    return counts[0]
