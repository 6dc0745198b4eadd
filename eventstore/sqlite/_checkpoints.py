"""Signed stream heads in the SQLite file: table ``signed_heads`` and its writer.

The pure logic (canonical bytes, Merkle root, Ed25519) is ``.._checkpoints``;
here are the table, the functions that read and write it on a connection, and
``Checkpointer``, which the store owns when it has a signing key: it counts
committed events and, every ``every`` events or ``interval`` seconds (and at
close), writes one checkpoint on its own thread and connection, so signing
costs one signature per checkpoint and never runs on the event loop.

One checkpoint is one transaction (``BEGIN IMMEDIATE``: the write lock, so
the heads it reads are the log as committed): the heads that moved since the
previous checkpoint's position are read with one indexed query, added to the
heads the previous checkpoints recorded, and signed. On its first run (or
when another process has written checkpoints since) the checkpointer replays
the table under its own public key, so it never signs on top of a checkpoint
it cannot verify, nor after one another key signed after one of its own (a
forgery: a rotation only ever moves to a new key). Such a refusal is a
``CheckpointError``, logged (``statelog.checkpoints``) when a background
checkpoint meets it and raised by the next ``checkpoint()`` and at close; the
appends go on, chained but unsigned, and nothing is written to the table.
A running checkpointer also refuses when the latest checkpoint it signed was
deleted or replaced under it (rows are only ever added).
A checkpoint is one transaction: a process killed while it signs or inserts
leaves the table as it was (tests/eventstore/test_checkpoint_crash.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from .._checkpoints import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    digest,
    key_id,
    make_checkpoint,
    replay,
    sign,
)
from ._schema import connect, translate_error
from ._threads import Reader

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_INTERVAL",
    "TABLE",
    "Checkpointer",
    "read_checkpoints",
]

log = logging.getLogger("statelog.checkpoints")

TABLE = "signed_heads"
DEFAULT_CHECKPOINT_EVERY = 10_000
DEFAULT_CHECKPOINT_INTERVAL = 5.0

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " sequence INTEGER PRIMARY KEY, body BLOB NOT NULL, signature BLOB NOT NULL)"
)


def read_checkpoints(db: sqlite3.Connection, after: int = 0) -> list[tuple[int, SignedCheckpoint]]:
    """The stored checkpoints after sequence ``after``, oldest first (none if no table)."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    if exists is None:
        return []
    return [
        (int(seq), SignedCheckpoint(body=bytes(body), signature=bytes(signature)))
        for seq, body, signature in db.execute(
            f"SELECT sequence, CAST(body AS BLOB), CAST(signature AS BLOB) FROM {TABLE} "
            "WHERE sequence > ? ORDER BY sequence",
            (after,),
        )
    ]


class _State:
    """What the checkpointer knows of the table: the heads after its latest row."""

    def __init__(self) -> None:
        self.sequence = 0
        self.digest = ""
        self.position = 0
        self.heads: dict[tuple[str, str], tuple[int, str]] = {}


_REFUSING = "refusing to sign on top of checkpoints that do not verify: "


def _load(db: sqlite3.Connection, public_key: Any) -> _State:
    # after a key rotation the older checkpoints carry the old key: linked to, not re-checked
    rows = read_checkpoints(db)
    replayed = replay(rows, [public_key], other_keys_ok=True)
    if replayed.problems:
        raise CheckpointError(
            replayed.latest.sequence + 1 if replayed.latest else 1,
            _REFUSING + "; ".join(replayed.problems),
        )
    # ... but a checkpoint of another key *after* one of this key's is no rotation to this
    # key: someone without this key signed on (a forged checkpoint, e.g. over a cut stream)
    own, own_latest = key_id(public_key), 0
    for sequence, signed in rows:
        other = Checkpoint.from_bytes(signed.body).key_id
        if other == own:
            own_latest = sequence
        elif own_latest:
            raise CheckpointError(
                sequence,
                _REFUSING + f"checkpoint #{sequence} is signed by key {other[:16]}..., not by "
                f"this writer's key {own[:16]}... that signed checkpoint #{own_latest} before "
                "it (a forged checkpoint; to go back to an older key, rotate to a new pair)",
            )
    state = _State()
    if replayed.latest is not None:
        state.sequence = replayed.latest.sequence
        state.position = replayed.latest.position
    state.digest = replayed.latest_digest
    state.heads = replayed.heads
    return state


def write_checkpoint(db: sqlite3.Connection, private_key: Any, state: _State | None) -> _State:
    """Write one checkpoint if any head moved since the last; return the new state."""
    db.execute(f"{_CREATE}")  # outside the transaction: DDL is cheap when it exists
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute(f"SELECT MAX(sequence) FROM {TABLE}").fetchone()
        stored = int(row[0]) if row and row[0] is not None else 0
        if state is not None and state.sequence:
            # rows are only ever added: the latest this writer signed is still there as signed
            # (one indexed row, not the table: a row taken out further back is verify's to name)
            mine = db.execute(
                f"SELECT CAST(body AS BLOB) FROM {TABLE} WHERE sequence = ?", (state.sequence,)
            ).fetchone()
            if mine is None or digest(bytes(mine[0])) != state.digest:
                raise CheckpointError(
                    state.sequence,
                    f"{_REFUSING}checkpoint #{state.sequence}, which this writer signed, is no "
                    "longer in the table as signed (deleted, replaced or rolled back under it)",
                )
        if state is None or stored != state.sequence:
            state = _load(db, private_key.public_key())
        changed = [
            (str(pk), str(app), int(seq), bytes(raw).hex())
            for pk, app, seq, raw in db.execute(
                "SELECT s.partition_key, s.app_id, e.sequence_id, e.hash FROM events e "
                "JOIN streams s ON s.id = e.stream_id WHERE e.position IN "
                "(SELECT MAX(position) FROM events WHERE position > ? GROUP BY stream_id)",
                (state.position,),
            )
        ]
        if not changed:
            db.execute("ROLLBACK")
            return state
        position = int(db.execute("SELECT MAX(position) FROM events").fetchone()[0])
        heads = dict(state.heads)
        for pk, app, seq, head_hash in changed:
            heads[pk, app] = (seq, head_hash)
        checkpoint = make_checkpoint(
            sequence=state.sequence + 1,
            previous=state.digest,
            position=position,
            created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            key_id=key_id(private_key.public_key()),
            heads=heads,
            changed=changed,
        )
        signed = sign(private_key, checkpoint)
        db.execute(
            f"INSERT INTO {TABLE} (sequence, body, signature) VALUES (?, ?, ?)",
            (checkpoint.sequence, signed.body, signed.signature),
        )
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
    new = _State()
    new.sequence, new.position, new.heads = checkpoint.sequence, position, heads
    new.digest = digest(signed.body)
    return new


class Checkpointer:
    """Writes signed checkpoints of a store's file in the background (see the module doc).

    ``note(n)`` after each commit; ``flush()`` writes one now; ``aclose()``
    writes the last one and stops the thread. A checkpoint that fails is
    raised by the next ``flush``/``aclose``.
    """

    def __init__(
        self,
        path: str,
        private_key: Any,
        *,
        synchronous: str,
        busy_timeout: float,
        every: int = DEFAULT_CHECKPOINT_EVERY,
        interval: float = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        self.path = path
        self.every = every
        self.interval = interval
        self._private_key = private_key
        self._thread = Reader(
            path,
            lambda: (connect(path, synchronous=synchronous, busy_timeout=busy_timeout), False),
            name=f"statelog-checkpoints:{path}",
        )
        self._state: _State | None = None
        self._pending = 0
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._logged: str | None = None

    def note(self, events: int) -> None:
        """``events`` more were committed: start a checkpoint if one is due."""
        self._pending += events
        if self._task is not None and not self._task.done():
            return
        if self._pending >= self.every or time.monotonic() - self._last >= self.interval:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending and (self._task is None or self._task.done()):
            self._start()

    def _start(self) -> None:
        self._pending = 0
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            self._state = await self._thread.call(write_checkpoint, self._private_key, self._state)
        except sqlite3.Error as exc:
            self._error = translate_error(exc, self.path, doing="cannot write a checkpoint")
            self._error.__cause__ = exc
        except Exception as exc:  # kept for flush/aclose: a background task must not lose it
            self._error = exc
        else:
            self._logged = None
            return
        # said as it happens (once per reason), not only at the next flush or close: the
        # appends go on, chained but unsigned, until the checkpoints verify again
        if str(self._error) != self._logged:
            self._logged = str(self._error)
            log.error("%s: no checkpoint written: %s", self.path, self._error)

    async def flush(self) -> None:
        """Write a checkpoint of everything committed so far; raise a failed one."""
        if self._task is not None:
            await asyncio.shield(self._task)
        self._pending = 0
        await self._write()
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            await self.flush()
        finally:
            await self._thread.aclose()

    def stop(self) -> None:
        if self._timer is not None:
            with contextlib.suppress(RuntimeError):
                self._timer.cancel()
        self._thread.stop()
