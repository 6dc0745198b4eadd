"""A separate OS process appending to a SQLite event log (for the fault tests).

    python -m tests.sqlite_worker race DB NAME ROUNDS   # race for each next sequence
    python -m tests.sqlite_worker loop DB SEED          # append until killed
    python -m tests.sqlite_worker append DB APP_ID N    # append N events to one stream
    python -m tests.sqlite_worker acked DB SEED         # at FULL, say each append once it returns

Every mode prints one JSON line per outcome and flushes, so the parent can
follow along (``ready`` after the first commit in ``loop`` mode).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from statelog.eventstore import ConcurrencyError, Event, SQLiteEventStore
from tests.ops_support import v2

PK = "tenant"


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def event(app_id: str, seq: int, **writes: object) -> Event:
    return v2(
        partition_key=PK, app_id=app_id, sequence_id=seq, kind="action_completed", writes=writes
    )


async def race(db: str, name: str, rounds: int) -> None:
    async with SQLiteEventStore(db, busy_timeout=30) as store:
        await store.last_sequence(PK, "race")
        say(status="ready")
        sys.stdin.readline()  # the parent starts every racer at once
        for _ in range(rounds):
            last = await store.last_sequence(PK, "race")
            try:
                await store.append([event("race", last + 1, by=name)], expected_sequence=last)
            except ConcurrencyError as exc:
                say(outcome="lost", seq=last + 1, actual=exc.actual)
            else:
                say(outcome="won", seq=last + 1)


async def loop(db: str, seed: int) -> None:
    rng = random.Random(seed)
    async with SQLiteEventStore(db, busy_timeout=30) as store:
        heads: dict[str, int] = {}
        for stream in await store.streams():
            heads[stream.app_id] = await store.last_sequence(stream.partition_key, stream.app_id)

        async def writer(app_id: str) -> None:
            while True:
                last = heads.get(app_id, -1)
                size = rng.choice([1, 1, 1, 2, 5, 50, 1500])
                batch = [
                    event(app_id, last + 1 + i, i=i, pad="x" * rng.randrange(200))
                    for i in range(size)
                ]
                await store.append(batch, expected_sequence=last)
                heads[app_id] = last + size

        await store.append([event(f"ready-{seed}", 0)], expected_sequence=-1)
        say(status="ready")
        await asyncio.gather(*(writer(f"s{i}") for i in range(8)))


async def append(db: str, app_id: str, count: int) -> None:
    async with SQLiteEventStore(db, busy_timeout=30) as store:
        last = await store.last_sequence(PK, app_id)
        for seq in range(last + 1, last + 1 + count):
            await store.append([event(app_id, seq)], expected_sequence=seq - 1)
        say(status="done")


async def acked(db: str, seed: int) -> None:
    """Append at ``synchronous=FULL`` until killed; say each append once it has returned.

    Events of ~4 KB fill the WAL fast, so the store's early checkpoints at FULL
    (``FULL_WAL_CHECKPOINT`` pages) run every few dozen appends: a kill lands in
    one now and then.
    """
    rng = random.Random(seed)
    app_id = f"acked-{seed}"
    async with SQLiteEventStore(db, synchronous="FULL", busy_timeout=30) as store:
        last = await store.last_sequence(PK, app_id)
        say(status="ready")
        while True:
            size = rng.choice([1, 1, 2, 5, 20])
            batch = [event(app_id, last + 1 + i, pad="x" * 4000) for i in range(size)]
            await store.append(batch, expected_sequence=last)
            last += size
            say(acked=last)


def main(argv: list[str]) -> None:
    mode, db, *rest = argv
    if mode == "race":
        asyncio.run(race(db, rest[0], int(rest[1])))
    elif mode == "loop":
        asyncio.run(loop(db, int(rest[0])))
    elif mode == "append":
        asyncio.run(append(db, rest[0], int(rest[1])))
    elif mode == "acked":
        asyncio.run(acked(db, int(rest[0])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
