"""A signing Kafka writer for the kill -9 test: claims every partition, then appends
to a few shared streams (continuing their heads) and checkpoints, in a loop.

    python kafka_signing_writer.py BOOTSTRAP TOPIC PRIVATE_KEY EVERY [--steps N]

Prints ``writing`` once it holds its claims; without ``--steps`` it writes until
killed, with it each of its two writing tasks appends N events, then it closes
(its last checkpoint at close).
"""

from __future__ import annotations

import asyncio
import sys

from statelog.eventstore import Event
from statelog.eventstore.kafka import KafkaEventStore

STREAMS = [(f"pk/{n % 3}", f"shared-{n}") for n in range(5)]


async def write(store: KafkaEventStore, streams: list[tuple[str, str]], steps: int | None) -> None:
    """Append to ``streams`` in turn (continuing their heads); ``checkpoint()`` every 7th."""
    n = 0
    while steps is None or n < steps:
        partition_key, app_id = streams[n % len(streams)]
        seq = await store.last_sequence(partition_key, app_id) + 1
        event = Event(
            partition_key=partition_key, app_id=app_id, sequence_id=seq,
            kind="action_completed" if seq else "app_initialized", action="step",
            data={"n": n},
        )  # fmt: skip
        await store.append([event], expected_sequence=seq - 1)
        if n % 7 == 6:
            await store.checkpoint()
        n += 1


async def main(bootstrap: str, topic: str, key: str, every: int, steps: int | None) -> None:
    store = KafkaEventStore(
        bootstrap, topic, signing_key=key, checkpoint_every=every,
        checkpoint_interval=0.02, client_id="killed", claims_required=True,
    )  # fmt: skip
    async with store:
        for partition in range(store.partitions):
            await store.claim(partition, store.writer_id)
        print("writing", flush=True)
        # two writers in one store (as a worker's partitions, or a service's requests):
        # checkpoints started by one's appends run while the other calls checkpoint()
        async with asyncio.TaskGroup() as group:
            group.create_task(write(store, STREAMS[:3], steps))
            group.create_task(write(store, STREAMS[3:], steps))


if __name__ == "__main__":
    args = sys.argv[1:]
    steps = None
    if "--steps" in args:
        at = args.index("--steps")
        steps = int(args[at + 1])
        del args[at : at + 2]
    bootstrap, topic, key, every = args
    asyncio.run(main(bootstrap, topic, key, int(every), steps))
