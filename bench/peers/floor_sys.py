"""The floor: what SQLite itself costs for the same rows, with no library around it.

Not a peer but a yardstick measured in the same run. Durable rows: stdlib
``sqlite3`` on the calling thread, WAL, one ``BEGIN IMMEDIATE`` + ``INSERT`` of the
step's delta (JSON, with its SHA-256) + ``COMMIT`` per step -- the work any
durable-per-step log must do. Resume: from an open connection, read the latest
snapshot blob, decode it, fold the events after it, then one durable step. No hash chain
is checked, no event is validated, nothing leaves the thread: a library can
only come close to these figures, never beat them.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bench.peers._base import DurableConfig, System, pragmas
from bench.workloads import ACTIONS, STEPS, expected_count, initial_state

SNAPSHOT_EVERY = 1_000
T = TypeVar("T")
_encode = msgspec.json.encode
_decode = msgspec.json.decode

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL,"
    " sequence_id INTEGER NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL,"
    " UNIQUE (stream_id, sequence_id))",
    "CREATE TABLE IF NOT EXISTS snapshots (sequence_id INTEGER PRIMARY KEY, state BLOB NOT NULL)",
)
_INSERT = "INSERT INTO events (stream_id, sequence_id, hash, body) VALUES (1, ?, ?, ?)"


def _connect(path: Path, synchronous: str, *, threads: bool = False) -> sqlite3.Connection:
    """``threads``: the connection is used from worker threads (one at a time)."""
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=not threads)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    if synchronous == "FULL":
        # the WAL tuning statelog's store uses at FULL (eventstore/sqlite/_schema.py,
        # FULL_WAL_CHECKPOINT): the floor gets every trick the library gets
        con.execute("PRAGMA wal_autocheckpoint=200")
    for statement in _SCHEMA:
        con.execute(statement)
    return con


def _append(con: sqlite3.Connection, sequence_id: int, delta: dict[str, object]) -> None:
    body = _encode(delta)
    con.execute("BEGIN IMMEDIATE")
    con.execute(_INSERT, (sequence_id, hashlib.sha256(body).digest(), body))
    con.execute("COMMIT")


def _load(con: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
    """The latest snapshot and the events after it, folded: (last sequence, state)."""
    seq, blob = con.execute(
        "SELECT sequence_id, state FROM snapshots ORDER BY sequence_id DESC LIMIT 1"
    ).fetchone()
    state = _decode(blob)
    for (body,) in con.execute(
        "SELECT body FROM events WHERE stream_id = 1 AND sequence_id > ? ORDER BY sequence_id",
        (seq,),
    ):
        state.update(_decode(body))
        seq += 1
    return seq, state


class Floor(System):
    name = "sqlite3 floor"
    durable_rows = {
        "full": DurableConfig("stdlib sqlite3, INSERT + COMMIT per step", "WAL", "FULL"),
        "normal": DurableConfig("stdlib sqlite3, INSERT + COMMIT per step", "WAL", "NORMAL"),
    }

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    async def durable(self, steps: int, path: Path, config: DurableConfig) -> tuple[float, str]:
        assert config.synchronous is not None
        con = _connect(path, config.synchronous)
        try:
            state = initial_state()
            start = time.perf_counter()
            for i in range(steps):
                delta = STEPS[ACTIONS[i % 3]](state)
                state.update(delta)
                _append(con, i, delta)
            elapsed = time.perf_counter() - start
            assert state["count"] == expected_count(steps)
            return elapsed, pragmas(con)
        finally:
            con.close()

    async def build_history(self, path: Path, steps: int) -> None:
        con = _connect(path, "NORMAL")
        try:
            state = initial_state()
            con.execute("BEGIN")
            for i in range(steps):
                delta = STEPS[ACTIONS[i % 3]](state)
                state.update(delta)
                body = _encode(delta)
                con.execute(_INSERT, (i, hashlib.sha256(body).digest(), body))
                if (i + 1) % SNAPSHOT_EVERY == 0 or i == steps - 1:
                    con.execute(
                        "INSERT INTO snapshots (sequence_id, state) VALUES (?, ?)",
                        (i, _encode(state)),
                    )
            con.execute("COMMIT")
        finally:
            con.close()

    #: whether the resume's disk work runs on worker threads (``FloorOffLoop``)
    off_loop = False

    async def _disk(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this thread (the floor) or a worker thread (off the loop)."""
        return await asyncio.to_thread(fn, *args) if self.off_loop else fn(*args)

    async def resume(self, path: Path, steps: int) -> float:
        # opened before timing, as every system's store is
        con = _connect(path, "NORMAL", threads=self.off_loop)
        try:
            start = time.perf_counter()
            seq, state = await self._disk(_load, con)
            delta = STEPS[ACTIONS[(seq + 1) % 3]](state)
            state.update(delta)
            await self._disk(_append, con, seq + 1, delta)
            elapsed = time.perf_counter() - start
        finally:
            con.close()
        if state["count"] < expected_count(steps):
            raise AssertionError(f"{self.name} resumed from the wrong state")
        return elapsed


class FloorOffLoop(Floor):
    """The floor of an asyncio library that keeps the disk off its event loop.

    The same bare resume as ``Floor``, but the read (snapshot and the events
    after it) and the durable step each run on a worker thread
    (``asyncio.to_thread``), as a library must that never blocks the loop:
    the difference from ``Floor`` is what two hand-offs cost on this machine.
    Only resume is measured; the durable rows are ``Floor``'s.
    """

    name = "sqlite3 floor, off the loop"
    durable_rows: dict[str, DurableConfig | str] = {}

    off_loop = True
