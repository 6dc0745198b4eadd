"""A signing writer in its own process, for tests/eventstore/test_checkpoint_crash.py.

    python -m tests.eventstore.checkpoint_worker loop DB KEY SEED STREAMS
        append to STREAMS streams until killed, a checkpoint every few events
    python -m tests.eventstore.checkpoint_worker hold DB KEY WHERE
        append to a few streams, then write one checkpoint and stop inside it:
        WHERE is "sign" (signed, nothing inserted), "insert" (the row inserted,
        not committed) or "none" (no checkpoint at all: killed before one)

It prints one JSON line per fact and flushes: ``{"ack": [app_id, last]}`` once
an append returned (committed), ``{"ckpt": n}`` when the checkpoint thread
starts inserting row ``n`` (then it sleeps a little inside the transaction, so
a kill on that line lands inside it most of the time), ``{"held": WHERE}``
when ``hold`` is parked. The checkpoint thread is watched with SQLite's own
trace callback on its connection (the store's code and the file are real).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import threading
import time
from typing import Any

from statelog.eventstore import SQLiteEventStore
from statelog.eventstore.sqlite import _checkpoints
from tests.ops_support import v2

PK = "tenant"
_out = threading.Lock()


def say(**fields: object) -> None:
    line = json.dumps(fields) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def watch_checkpoints(on_statement: Any) -> None:
    """Call ``on_statement(sql)`` for each statement the checkpoint thread runs."""
    connect = _checkpoints.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(on_statement)
        return db

    _checkpoints.connect = traced  # type: ignore[assignment]


def stored(db: str) -> tuple[dict[str, int], int]:
    """Every stream's last sequence id, and the latest checkpoint's sequence, as on disk."""
    conn = sqlite3.connect(db)
    try:
        heads = dict(
            conn.execute(
                "SELECT s.app_id, MAX(e.sequence_id) FROM streams s "
                "JOIN events e ON e.stream_id = s.id GROUP BY s.id"
            ).fetchall()
        )
        try:
            (latest,) = conn.execute(f"SELECT MAX(sequence) FROM {_checkpoints.TABLE}").fetchone()
        except sqlite3.OperationalError:  # no checkpoint table yet
            latest = 0
    finally:
        conn.close()
    return heads, latest or 0


def event(app_id: str, seq: int, rng: random.Random) -> Any:
    return v2(
        partition_key=PK,
        app_id=app_id,
        sequence_id=seq,
        kind="action_completed",
        writes={"n": seq, "pad": "x" * rng.randrange(40)},
    )


async def loop(db: str, key: str, seed: int, streams: int) -> None:
    rng = random.Random(seed)
    heads, sequence = stored(db)

    def on_statement(statement: str) -> None:
        nonlocal sequence
        if statement.startswith(f"INSERT INTO {_checkpoints.TABLE}"):
            sequence += 1  # one checkpointer: its rows are numbered one after the other
            say(ckpt=sequence)
            time.sleep(0.05)  # widen the window inside the checkpoint's transaction

    watch_checkpoints(on_statement)
    async with SQLiteEventStore(
        db, signing_key=key, checkpoint_every=4, checkpoint_interval=0.02, busy_timeout=30
    ) as store:
        names = [f"s{i:04d}" for i in range(streams)]
        say(status="ready")

        async def writer(lane: int) -> None:
            mine = names[lane::4]
            while True:
                app_id = rng.choice(mine)
                last = heads.get(app_id, -1)
                size = rng.choice([1, 1, 2, 3])
                batch = [event(app_id, last + 1 + i, rng) for i in range(size)]
                await store.append(batch, expected_sequence=last)
                heads[app_id] = last + size
                say(ack=[app_id, last + size])

        await asyncio.gather(*(writer(lane) for lane in range(4)))


async def hold(db: str, key: str, where: str) -> None:
    parked = threading.Event()

    def on_statement(statement: str) -> None:
        if where == "insert" and statement == "COMMIT" and parked.is_set():
            say(held=where)
            time.sleep(3600)  # the row is inserted, the transaction not committed

    def signing(private_key: Any, checkpoint: Any) -> Any:
        signed = sign(private_key, checkpoint)
        if where == "sign":
            say(held=where)
            time.sleep(3600)  # signed, not inserted
        parked.set()
        return signed

    sign = _checkpoints.sign
    _checkpoints.sign = signing  # type: ignore[assignment]
    watch_checkpoints(on_statement)
    rng = random.Random(0)
    async with SQLiteEventStore(
        db, signing_key=key, checkpoint_every=10**9, checkpoint_interval=1e9
    ) as store:
        heads, _ = stored(db)
        for app_id in ("h0", "h1", "h2"):
            last = heads.get(app_id, -1)
            await store.append(
                [event(app_id, last + 1 + i, rng) for i in range(5)], expected_sequence=last
            )
            say(ack=[app_id, last + 5])
        if where == "none":
            say(held=where)
            await asyncio.sleep(3600)  # committed, no checkpoint started
        await store.checkpoint()
        say(error="the checkpoint was not held")


def main(argv: list[str]) -> None:
    mode, db, key, *rest = argv
    if mode == "loop":
        asyncio.run(loop(db, key, int(rest[0]), int(rest[1])))
    elif mode == "hold":
        asyncio.run(hold(db, key, rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
