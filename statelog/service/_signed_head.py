"""The signed head of one app: what ``GET /v1/apps/{app_id}/verify`` says beyond its chain.

A SQLite log written with a signing key holds signed checkpoints (table
``signed_heads``, see ``eventstore/_checkpoints.py`` and docs/operations.md).
For one stream this finds the latest checkpoint that signed a head of it and
tells:

* which checkpoint (its number, time and ``key_id``) and the head it signed
  (``sequence_id``, ``hash``);
* ``signature_ok``: whether that checkpoint's Ed25519 signature verifies under
  the public key the service was given for its ``key_id`` (``--public-key``,
  or the public half of ``--signing-key``); ``None`` when it has none at all;
* ``head_agrees``: whether the stream still holds every head any checkpoint
  signed of it (the stored event at that sequence has that hash, so the
  stream was neither cut back nor rewritten) and is not shorter than the
  latest one;
* ``problems``: the chain of checkpoints replayed whole (numbering, previous
  digests, signatures, the root), and the above, as sentences.

``status`` sums it up in one word; docs/service.md lists them. A log without
checkpoints (or a Kafka log, which has none yet) is ``unsigned``. Everything
is read on a worker thread over a read-only connection of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from statelog.eventstore import (
    Checkpoint,
    CheckpointError,
    KeyMismatchError,
    SQLiteEventStore,
    load_private_key,
    load_public_key,
)
from statelog.eventstore._checkpoints import Replayed, key_id, replay, verify_signature
from statelog.eventstore.sqlite._checkpoints import read_checkpoints
from statelog.eventstore.sqlite._schema import connect_read_only

__all__ = ["STATUSES", "signed_head", "verifying_keys"]

#: ``signed_head.status``, most serious first: the first that applies is given.
STATUSES = (
    "unsigned",  # the log has no checkpoint, or none signed a head of this app yet
    "key-mismatch",  # its checkpoint names a key the service was not given
    "signature-invalid",  # its checkpoint's signature does not verify under that key
    "head-disagrees",  # the stream no longer holds a head a checkpoint signed
    "checkpoints-invalid",  # the chain of checkpoints is broken elsewhere
    "unchecked",  # signed and the head agrees, but the service has no public key
    "verified",  # signed, the signature verifies, the head agrees
)
_IN_CHUNK = 500  # sequence ids per IN (...) query: under SQLite's variable limit


def verifying_keys(public_keys: Iterable[str], signing_key: str | None) -> list[Any]:
    """The public keys to check checkpoints with: each ``public_keys`` file, and the
    public half of ``signing_key`` (a writer checks what it signed itself).

    A missing or bad key file is ``KeyFileError``.
    """
    keys = [load_public_key(path) for path in public_keys]
    if signing_key:
        keys.append(load_private_key(signing_key).public_key())
    unique: dict[str, Any] = {}
    for key in keys:
        unique.setdefault(key_id(key), key)
    return list(unique.values())


async def signed_head(
    store: Any, public_keys: list[Any], partition_key: str, app_id: str
) -> dict[str, Any]:
    """The ``signed_head`` object of a verify response (see the module doc)."""
    if not isinstance(store, SQLiteEventStore):
        return _unsigned(None, "the log is not a SQLite file: it has no signed checkpoints")
    return await asyncio.to_thread(
        _signed_head, os.fspath(store.path), public_keys, partition_key, app_id
    )


def _unsigned(latest: int | None, reason: str) -> dict[str, Any]:
    return {
        "status": "unsigned",
        "checkpoint": None,
        "created_at": None,
        "key_id": None,
        "sequence_id": None,
        "hash": None,
        "signature_ok": None,
        "head_agrees": None,
        "unsigned_events": None,
        "latest_checkpoint": latest,
        "problems": [],
        "reason": reason,
    }


def _signed_head(
    path: str, public_keys: list[Any], partition_key: str, app_id: str
) -> dict[str, Any]:
    db, _ = connect_read_only(path, busy_timeout=5.0)
    try:
        db.execute("BEGIN")  # one read snapshot: checkpoints and events agree in time
        rows = read_checkpoints(db)
        if not rows:
            return _unsigned(None, "the log has no signed checkpoint")
        stream = (partition_key, app_id)
        latest = rows[-1][0]
        replayed, problems = _replay(path, rows, public_keys)
        signed: dict[int, tuple[str, int]]  # every head of it signed: seq -> (hash, cp)
        covering: tuple[Checkpoint, Any] | None = None
        if replayed is not None and not problems:  # the whole chain holds: use its heads
            signed = dict(replayed.signed.get(stream, {}))
            if signed:
                number = max(cp for _, cp in signed.values())
                item = dict(rows)[number]
                covering = (Checkpoint.from_bytes(item.body), item)
        else:  # something is wrong: read each checkpoint on its own, whatever its chain
            signed, covering = _parse_each(rows, stream)
        if covering is None:
            result = _unsigned(
                latest, f"no checkpoint signed a head of this app yet (latest: #{latest})"
            )
            if problems:
                result["status"] = "checkpoints-invalid"
                result["problems"] = problems
            return result
        checkpoint, item = covering
        head_seq = max(seq for seq, (_, number) in signed.items() if number == checkpoint.sequence)
        head_hash = signed[head_seq][0]
        last, hashes = _stream_hashes(db, stream, sorted(signed))
    finally:
        db.close()

    keys = {key_id(key): key for key in public_keys}
    signature_ok: bool | None = None
    status = ""
    if keys:
        key = keys.get(checkpoint.key_id)
        if key is None:
            signature_ok, status = False, "key-mismatch"
            named = f"a checkpoint is signed by key {checkpoint.key_id[:16]}"
            problems = [p for p in problems if not p.startswith(named)]  # said once, below
            problems.insert(
                0,
                f"checkpoint #{checkpoint.sequence} is signed by key {checkpoint.key_id[:16]}..., "
                "which the service was not given (a forged checkpoint, or a public key missing)",
            )
        else:
            signature_ok = verify_signature(key, item)
            if not signature_ok:
                status = "signature-invalid"
                message = f"checkpoint #{checkpoint.sequence}: signature does not verify"
                if message not in problems:
                    problems.insert(0, message)

    head_problems = []
    if last is None or last < head_seq:
        head_problems.append(
            f"checkpoint #{checkpoint.sequence} signed events 0..{head_seq}, but the stream "
            + ("has no events" if last is None else f"ends at {last}")
            + " (its tail was cut)"
        )
    for seq, (expected, number) in sorted(signed.items()):
        found = hashes.get(seq)
        if found is None and last is not None and seq <= last:
            head_problems.append(f"event {seq}, which checkpoint #{number} signed, is missing")
        elif found is not None and found != expected:
            head_problems.append(
                f"event {seq} is not the event checkpoint #{number} signed "
                "(the stream was cut back or rewritten since)"
            )
    problems += head_problems
    if not status:
        if head_problems:
            status = "head-disagrees"
        elif problems:
            status = "checkpoints-invalid"
        elif not keys:
            status = "unchecked"
        else:
            status = "verified"
    return {
        "status": status,
        "checkpoint": checkpoint.sequence,
        "created_at": checkpoint.created_at,
        "key_id": checkpoint.key_id,
        "sequence_id": head_seq,
        "hash": head_hash,
        "signature_ok": signature_ok,
        "head_agrees": not head_problems,
        "unsigned_events": None if last is None else max(0, last - head_seq),
        "latest_checkpoint": latest,
        "problems": problems,
        "reason": None,
    }


def _parse_each(
    rows: list[Any], stream: tuple[str, str]
) -> tuple[dict[int, tuple[str, int]], tuple[Checkpoint, Any] | None]:
    """Every head of ``stream`` any parsable checkpoint signed, and the latest such one."""
    signed: dict[int, tuple[str, int]] = {}
    covering: tuple[Checkpoint, Any] | None = None
    for _, item in rows:
        try:
            checkpoint = Checkpoint.from_bytes(item.body)
        except CheckpointError:
            continue  # the replay names it
        for pk, app, seq, head_hash in checkpoint.changed:
            if (pk, app) == stream:
                signed[seq] = (head_hash, checkpoint.sequence)
                covering = (checkpoint, item)
    return signed, covering


#: (path, key ids) -> (digest of every stored checkpoint, its replay, problems): one
#: replay per change of the table, not one per request (parsing is most of the cost)
_replays: dict[tuple[str, tuple[str, ...]], tuple[bytes, Replayed | None, list[str]]] = {}
_replays_lock = threading.Lock()


def _replay(
    path: str, rows: list[Any], public_keys: list[Any]
) -> tuple[Replayed | None, list[str]]:
    """The chain of checkpoints replayed whole (numbering, links, signatures, the root)
    and its problems; ``None`` when a checkpoint names a key the service was not given."""
    ids = tuple(sorted(key_id(key) for key in public_keys))
    content = hashlib.sha256()
    for seq, item in rows:
        content.update(b"%d:%d:%d:" % (seq, len(item.body), len(item.signature)))
        content.update(item.body)
        content.update(item.signature)
    digest = content.digest()
    with _replays_lock:
        cached = _replays.get((path, ids))
    if cached is not None and cached[0] == digest:
        return cached[1], list(cached[2])
    replayed: Replayed | None
    try:
        replayed = replay(rows, public_keys)
        problems = list(replayed.problems)
    except KeyMismatchError as exc:
        replayed, problems = None, [str(exc)]
    with _replays_lock:
        _replays[path, ids] = (digest, replayed, problems)
    return replayed, list(problems)


def _stream_hashes(
    db: sqlite3.Connection, stream: tuple[str, str], seqs: list[int]
) -> tuple[int | None, dict[int, str]]:
    """The stream's last sequence id and its event hashes at ``seqs`` (hex)."""
    row = db.execute(
        "SELECT id FROM streams WHERE partition_key = ? AND app_id = ?", stream
    ).fetchone()
    if row is None:
        return None, {}
    stream_id = int(row[0])
    top = db.execute(
        "SELECT MAX(sequence_id) FROM events WHERE stream_id = ?", (stream_id,)
    ).fetchone()
    last = None if top is None or top[0] is None else int(top[0])
    hashes: dict[int, str] = {}
    for start in range(0, len(seqs), _IN_CHUNK):
        chunk = seqs[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for seq, raw in db.execute(
            f"SELECT sequence_id, hash FROM events WHERE stream_id = ? "  # noqa: S608
            f"AND sequence_id IN ({marks})",
            (stream_id, *chunk),
        ):
            hashes[int(seq)] = bytes(raw).hex() if isinstance(raw, bytes) else str(raw)
    return last, hashes
