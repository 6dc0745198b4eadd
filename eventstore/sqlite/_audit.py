"""``verify`` of a SQLite log: one walk on the reader thread that misses nothing it can know.

* Streams come from the ``streams`` table, not from their first event: a
  stream whose first event (or every event) was deleted is reported.
* Every stream's chain is walked page by page (a hole, an edited body or hash,
  a body that does not decode, swapped rows): each problem is a ``Finding``
  naming the stream and the sequence id; the walk goes on after it (the next
  event links to the stored hash), so one edit is one or two findings, not
  the end of the report.
* The signed checkpoints (``signed_heads``) are replayed (numbering, previous
  digest, and with public keys every signature); the heads of the latest
  one are compared with the log (``check_heads``): truncation, a deleted
  stream, a rewritten stream.
* Snapshots (table ``snapshots``, when there is one): the digest (an HMAC
  with the key), the event hash at their sequence against the chain, and with
  ``deep`` (or public keys: the signed log is then the truth a snapshot is
  held to) the state against the fold of the events up to it. With ``deep``
  every stream is folded to its end.
* Whatever a crafted row holds is a finding, never an exception: a hash, body
  or sequence id of a type statelog never writes, an op ``check_ops`` refuses
  or one that cannot apply to the state folded so far (an ``append`` to an
  int, an ``increment`` of a str), a snapshot row of odd types. The fold of a
  stream stops at its first such row (a later snapshot is not compared with
  a fold that is not the log's); the walk goes on, and so do the other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from .._audit import AuditReport, Finding, check_heads
from .._chain import compute_hash
from .._checkpoints import replay
from .._codec import Codec
from .._errors import EncodingError, InvalidEventError, StoreError
from .._event import Event
from .._ops import apply_ops, check_ops
from ._audit_hash import EMPTY, VerifyBody, body_decoder, view_bytes
from ._checkpoints import read_checkpoints
from ._schema import connect_read_only, read_format, translate_error

__all__ = ["audit", "audit_file"]

#: Rows per fetch in a worker process (its cyclic GC is off).
PAGE = 1_000
#: Rows per fetch on a thread of the caller's process. A page's rows and the lists
#: decoded from them are GC-tracked and alive together: at 1,000 rows (more than
#: gen 0's threshold of 700) they set off a collection every page or so, which
#: promoted them into gen 2, and each full collection of the whole process held the
#: GIL, and so the event loop, for up to ~45 ms (1M events, 1 thread: 2,869 / 261 /
#: 24 collections of gen 0 / 1 / 2 at 1,000 rows, 1 / 0 / 0 at 100; no slower).
THREAD_PAGE = 100
#: At most this many findings per stream (a stream rewritten from its start
#: would otherwise print one line per event).
MAX_FINDINGS_PER_STREAM = 20

_state_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def _lenient_text(data: bytes) -> str:
    return str(data, "utf-8", "replace")


def _lenient(db: sqlite3.Connection) -> sqlite3.Connection:
    """``db`` reading a TEXT value that is not UTF-8 (crafted: statelog writes none) with
    U+FFFD in place of the bad bytes, where sqlite3 would raise while fetching the row:
    the walk then names the row (a name or digest so read matches nothing, a body or
    hash read as TEXT is of the wrong type) instead of failing. The walk's own columns
    are BLOBs and INTEGERs: this costs it nothing."""
    db.text_factory = _lenient_text
    return db


def _snapshot_rows(db: sqlite3.Connection) -> dict[tuple[str, str], list[Any]]:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'"
    ).fetchone()
    found: dict[tuple[str, str], list[Any]] = {}
    if exists is None:
        return found
    for row in db.execute(
        "SELECT partition_key, app_id, sequence_id, position, event_hash, digest, "
        "CAST(state AS BLOB) FROM snapshots ORDER BY partition_key, app_id, sequence_id"
    ):
        found.setdefault((row[0], row[1]), []).append(row)
    return found


def audit(
    db: sqlite3.Connection,
    codec: Codec,
    hmac_key: bytes | None,
    public_keys: Iterable[Any],
    partition_key: str | None,
    app_id: str | None,
    deep: bool,
) -> AuditReport:
    """Walk the log on ``db``; see the module doc. Runs whole on the reader thread."""
    plan = _plan(db, hmac_key, list(public_keys), partition_key, app_id, deep)
    return _finish(plan, [audit_streams(db, codec, plan.job, THREAD_PAGE)])


class _Plan(msgspec.Struct, kw_only=True):
    report: AuditReport
    job: Job
    latest: int | None  # the latest checkpoint's sequence
    sizes: list[int]  # events per stream of the job (estimated from the last sequence id)


def _plan(
    db: sqlite3.Connection,
    hmac_key: bytes | None,
    keys: list[Any],
    partition_key: str | None,
    app_id: str | None,
    deep: bool,
) -> _Plan:
    """Replay the checkpoints and list the streams, the heads and the snapshots to check."""
    report = AuditReport(signed=bool(keys))
    replayed = replay(read_checkpoints(db), keys)
    report.findings += [Finding(stream=None, sequence_id=None, reason=p) for p in replayed.problems]
    if replayed.latest is not None:
        report.checkpoint = replayed.latest.sequence
        report.checkpoint_digest = replayed.latest_digest
        report.checkpoint_digests = replayed.digests
        report.checkpoint_position = replayed.latest.position
    elif keys:
        report.findings.append(
            Finding(
                stream=None,
                sequence_id=None,
                reason="no signed checkpoint in the file, but a public key was given "
                "(the checkpoints were deleted, or the writer had no signing key)",
            )
        )
    expected = {
        stream: head
        for stream, head in replayed.heads.items()
        if (partition_key is None or stream[0] == partition_key)
        and (app_id is None or stream[1] == app_id)
    }
    plain: list[SnapshotRow] = []
    for rows in _snapshot_rows(db).values():
        for row in rows:
            shot = _snapshot_row(row)
            if isinstance(shot, Finding):
                if (partition_key is None or row[0] == partition_key) and (
                    app_id is None or row[1] == app_id
                ):
                    report.findings.append(shot)
            else:
                plain.append(shot)
    where, params = [], []
    if partition_key is not None:
        where.append("s.partition_key = ?")
        params.append(partition_key)
    if app_id is not None:
        where.append("s.app_id = ?")
        params.append(app_id)
    streams = db.execute(
        "SELECT s.id, s.partition_key, s.app_id, "
        "(SELECT MAX(sequence_id) FROM events WHERE stream_id = s.id) FROM streams s"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY s.id",
        params,
    ).fetchall()
    job = Job(
        path="",
        hmac_key=hmac_key,
        streams=[(int(i), str(pk), str(app)) for i, pk, app, _ in streams],
        expected=[(pk, app, seq, h) for (pk, app), (seq, h) in expected.items()],
        signed=[
            (pk, app, seq, h, number)
            for (pk, app), by_seq in replayed.signed.items()
            for seq, (h, number) in by_seq.items()
        ],
        snapshots=plain,
        # a signing writer seals its snapshots with a key derived from its private
        # key, which no verifier holds: their state is checked against the fold
        check_fold=deep or bool(keys) or replayed.latest is not None,
        fold_all=deep,
        had_checkpoint=replayed.latest is not None,
        snapshot_mac_private=bool(keys) or replayed.latest is not None,
    )
    latest = replayed.latest.sequence if replayed.latest is not None else None
    # (a sequence_id of another type, crafted, counts for nothing here: the walk names it)
    sizes = [int(last) + 1 if type(last) is int else 0 for *_, last in streams]
    return _Plan(report=report, job=job, latest=latest, sizes=sizes)


def _finish(plan: _Plan, parts: list[Part]) -> AuditReport:
    """Merge the walkers' parts and compare the heads with the latest checkpoint."""
    report = plan.report
    found_last: dict[tuple[str, str], int] = {}
    found_hash_at: dict[tuple[str, str], str] = {}
    for part in parts:
        _merge(report, part)
        found_last.update({(pk, app): last for pk, app, last in part.found_last})
        found_hash_at.update({(pk, app): h for pk, app, h in part.found_hash_at})
    if plan.latest is not None:
        expected = {(pk, app): (seq, h) for pk, app, seq, h in plan.job.expected}
        report.findings += check_heads(expected, found_last, found_hash_at, plan.latest)
    return report


def _split(plan: _Plan, workers: int) -> list[Job]:
    """The plan's job as ``workers`` jobs of about as many events each (whole streams)."""
    bins: list[list[tuple[int, str, str]]] = [[] for _ in range(workers)]
    loads = [0] * workers
    order = sorted(range(len(plan.sizes)), key=lambda i: -plan.sizes[i])
    for i in order:
        lightest = loads.index(min(loads))
        bins[lightest].append(plan.job.streams[i])
        loads[lightest] += plan.sizes[i] + 1
    return [
        msgspec.structs.replace(plan.job, streams=sorted(streams)) for streams in bins if streams
    ]


SnapshotRow = tuple[str, str, int, int, str, str, bytes]


def _snapshot_row(row: Any) -> SnapshotRow | Finding:
    """A stored snapshot row with its types made plain (an odd digest or state fails
    its checksum); a stream or sequence of a type statelog never writes is a finding."""
    pk, app, seq, position, event_hash, digest, blob = row
    if type(seq) is not int or type(position) is not int:
        stream = (pk, app) if type(pk) is str and type(app) is str else None
        return Finding(
            stream=stream,
            sequence_id=seq if type(seq) is int else None,
            reason=f"snapshot: its row stores sequence_id {seq!r} and position {position!r}, "
            "expected INTEGERs" + ("" if stream is not None else f" (stream {pk!r}, {app!r})"),
        )
    return (
        str(pk),
        str(app),
        int(seq),
        int(position),
        str(event_hash),
        digest if isinstance(digest, str) else "",
        bytes(blob) if isinstance(blob, bytes) else b"",
    )


class Job(msgspec.Struct, kw_only=True):
    """The streams one walker (this thread, or a worker process) checks."""

    path: str
    hmac_key: bytes | None
    streams: list[tuple[int, str, str]]  # (db id, partition_key, app_id)
    expected: list[tuple[str, str, int, str]]  # the latest checkpoint's heads
    signed: list[tuple[str, str, int, str, int]]  # every signed head, with its checkpoint
    snapshots: list[SnapshotRow]
    check_fold: bool
    had_checkpoint: bool
    #: the snapshots' checksums may be MACs only their (signing) writer can make
    snapshot_mac_private: bool = False
    fold_all: bool = False  # fold every stream to its end (--deep), not only up to its snapshots


class Part(msgspec.Struct, kw_only=True):
    """What one walker found."""

    streams: int = 0
    events: int = 0
    snapshots: int = 0
    unsigned_events: int = 0
    findings: list[Finding] = msgspec.field(default_factory=list)
    found_last: list[tuple[str, str, int]] = msgspec.field(default_factory=list)
    found_hash_at: list[tuple[str, str, str]] = msgspec.field(default_factory=list)


def _merge(report: AuditReport, part: Part) -> None:
    report.streams += part.streams
    report.events += part.events
    report.snapshots += part.snapshots
    report.unsigned_events += part.unsigned_events
    report.findings += part.findings


def audit_streams(db: sqlite3.Connection, codec: Codec, job: Job, page: int = PAGE) -> Part:
    """Walk the chain of each stream of ``job``: holes, edits, signed heads, snapshots,
    reading ``page`` rows at a time."""
    from .._snapshots import _digest  # (the snapshot table's own checksum)

    hmac_key = job.hmac_key
    expected = {(pk, app): (seq, h) for pk, app, seq, h in job.expected}
    signed: dict[tuple[str, str], dict[int, tuple[str, int]]] = {}
    for pk, app, seq, h, number in job.signed:
        signed.setdefault((pk, app), {})[seq] = (h, number)
    snapshots: dict[tuple[str, str], list[SnapshotRow]] = {}
    for row in job.snapshots:
        snapshots.setdefault((row[0], row[1]), []).append(row)
    part = Part()
    for db_id, pk, app in job.streams:
        stream = (pk, app)
        part.streams += 1
        head = expected.get(stream)
        shots = snapshots.get(stream, [])
        earlier = signed.get(stream, {})  # every head a checkpoint signed
        wanted = {row[2] for row in shots} | set(earlier)
        if head is not None:
            wanted.add(head[0])
        fold_to = -1  # fold the events up to this sequence id
        if job.fold_all:
            fold_to = sys.maxsize
        elif job.check_fold and shots:
            fold_to = max(row[2] for row in shots)
        last, hashes, folded, findings, count = _walk(
            db, codec, hmac_key, db_id, stream, wanted, fold_to, {row[2] for row in shots}, page
        )
        part.events += count
        part.findings += findings
        if last is None:
            part.findings.append(
                Finding(
                    stream=stream,
                    sequence_id=None,
                    reason="has no events: every event of the stream was deleted",
                )
            )
            continue
        part.found_last.append((pk, app, last))
        for seq, (signed_hash, checkpoint) in sorted(earlier.items()):
            if (head is None or seq != head[0]) and hashes.get(seq) != signed_hash:
                part.findings.append(
                    Finding(
                        stream=stream,
                        sequence_id=seq,
                        reason=f"is not the event checkpoint #{checkpoint} signed (the "
                        "stream was cut back or rewritten since)",
                    )
                )
        if head is not None:
            if head[0] in hashes:
                part.found_hash_at.append((pk, app, hashes[head[0]]))
            part.unsigned_events += max(0, last - head[0])
        elif job.had_checkpoint:
            part.unsigned_events += last + 1
        for row in shots:
            part.snapshots += 1
            part.findings += _check_snapshot(
                row, hashes, folded, hmac_key, _digest, job.check_fold, job.snapshot_mac_private
            )
    return part


def _check_snapshot(
    row: Any,
    hashes: dict[int, str],
    folded: dict[int, dict[str, Any]],
    hmac_key: bytes | None,
    digest_of: Any,
    deep: bool,
    mac_private: bool = False,
) -> list[Finding]:
    pk, app, seq, position, event_hash, digest, blob = row
    stream = (pk, app)

    def bad(reason: str) -> list[Finding]:
        return [Finding(stream=stream, sequence_id=seq, reason=f"snapshot: {reason}")]

    expected = digest_of(hmac_key, (pk, app, seq, position, event_hash, blob))
    # (compare_digest refuses a str that is not ASCII: a crafted digest is just wrong)
    if not isinstance(digest, str) or not digest.isascii():
        return bad("its checksum does not match its state (edited, or another HMAC key)")
    if not hmac.compare_digest(expected, digest) and not (mac_private and deep):
        # (a signing writer's MAC cannot be recomputed here: the fold below decides)
        return bad("its checksum does not match its state (edited, or another HMAC key)")
    chain = hashes.get(seq)
    if chain is None:
        return bad("the log has no event at its sequence_id")
    if not (chain + str(event_hash)).isascii() or not hmac.compare_digest(chain, str(event_hash)):
        return bad("its event_hash is not the hash of the event at its sequence_id")
    if deep:
        try:
            state = _state_decoder.decode(blob)
        except (msgspec.DecodeError, RecursionError) as exc:  # (nested too deep)
            return bad(f"its state does not decode: {exc}")
        try:
            differs = seq in folded and state != folded[seq]
        except RecursionError:  # nested too deep to compare: statelog never writes such state
            return bad("its state is nested too deep to compare with the fold")
        if differs:
            return bad("its state is not the fold of the events up to it (forged)")
    return []


def _walk(
    db: sqlite3.Connection,
    codec: Codec,
    key: bytes | None,
    db_id: int,
    stream: tuple[str, str],
    wanted: set[int],
    fold_to: int,
    fold_at: set[int],
    page: int = PAGE,
) -> tuple[int | None, dict[int, str], dict[int, dict[str, Any]], list[Finding], int]:
    """Walk one stream's chain. Returns its last sequence id (``None``: no events),
    the hashes at the ``wanted`` sequence ids, the fold (of the events up to
    ``fold_to``) at each of ``fold_at``, the findings and the number of events.

    A row of odd types, a body that does not decode, or ops that do not fold
    end the fold (each a finding): ``folded`` then holds only the sequence ids
    before it, so no snapshot after it is compared with a fold that is not the log's.

    Each row's hash is first recomputed on the fast path (``_audit_hash``); a
    row it cannot vouch for, or whose hash it finds wrong, is decoded and
    hashed the reference way (``compute_hash``) before anything is reported.
    """
    findings: list[Finding] = []
    hashes: dict[int, str] = {}
    folded: dict[int, dict[str, Any]] = {}
    state: dict[str, Any] = {}
    owned: set[str] = set()
    pk, app = stream
    decode = body_decoder(codec.name)
    sha256 = hashlib.sha256
    cursor = db.execute(
        "SELECT body, sequence_id, hash FROM events WHERE stream_id = ? ORDER BY sequence_id",
        (db_id,),
    )
    want = 0
    prev = b""
    count = 0
    last: int | None = None

    def note(sequence_id: int | None, reason: str) -> None:
        if len(findings) < MAX_FINDINGS_PER_STREAM:
            findings.append(Finding(stream=stream, sequence_id=sequence_id, reason=reason))
        elif len(findings) == MAX_FINDINGS_PER_STREAM:
            findings.append(
                Finding(stream=stream, sequence_id=None, reason="more problems not listed")
            )

    def note_jump(want: int, seq: int) -> None:
        if seq < want:  # the UNIQUE index refuses this: the table was rebuilt without it
            note(seq, "has more than one row: a row was copied or inserted")
            return
        gap = f"{want}" if seq == want + 1 else f"{want} to {seq - 1}"
        note(want, f"is missing: sequence_id {gap} deleted (the stream jumps to {seq})")

    # No time.sleep(0) between pages: the interpreter hands the GIL to a waiting
    # thread (the event loop) every sys.getswitchinterval() (5 ms) anyway, and on
    # a busy machine each sleep(0) gave the core away for milliseconds.
    while rows := cursor.fetchmany(page):
        count += len(rows)
        try:
            bodies: list[VerifyBody | None] = list(map(decode, [row[0] for row in rows]))
        except (msgspec.DecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError):
            bodies = [_decode_fast(decode, row[0]) for row in rows]
        for (body, seq, stored), b in zip(rows, bodies, strict=True):
            if type(seq) is not int or type(body) is not bytes or type(stored) is not bytes:
                # statelog writes INTEGER sequence ids and BLOB hashes and bodies only
                if type(seq) is not int:
                    note(None, f"a row stores sequence_id {seq!r}, expected an INTEGER")
                    continue
                if seq != want:
                    note_jump(want, seq)
                note(
                    seq,
                    f"stores a {_sql_type(stored)} hash and a {_sql_type(body)} body, "
                    "expected BLOBs",
                )
                if seq in wanted:
                    hashes[seq] = stored.hex() if type(stored) is bytes else str(stored)
                fold_to = min(fold_to, seq - 1)
                prev = stored if type(stored) is bytes else b""
                want = seq + 1
                last = seq
                continue
            if seq != want:
                note_jump(want, seq)
            data = None if b is None else view_bytes(b, pk, app, seq, prev.hex())
            event: Event | None = None
            if data is not None:  # the fast path
                # (a hash it finds wrong is not reported before the reference agrees)
                if (
                    seq == want
                    and (sha256(data).digest() if key is None else hmac.digest(key, data, "sha256"))
                    != stored
                    and not _hash_ok(codec, (body, pk, app, seq, stored), prev, key)
                ):
                    note(seq, "its hash does not match its content and its predecessor's hash")
            else:  # the reference path: the whole event, compute_hash
                event = _decode_one(codec, (body, pk, app, seq, stored), prev)
                if event is None:
                    note(seq, "its stored body does not decode")
                    if seq in wanted:
                        hashes[seq] = stored.hex()
                    fold_to = min(fold_to, seq - 1)  # its ops are unknown: the fold ends
                    prev = stored
                    want = seq + 1
                    last = seq
                    continue
                if seq == want and not _matches(event, stored, key):
                    note(seq, "its hash does not match its content and its predecessor's hash")
            if seq in wanted:
                hashes[seq] = stored.hex()
            if seq <= fold_to:
                problem = _fold_row(state, event, b, owned)
                if problem is not None:
                    note(seq, f"its ops do not fold: {problem}")
                    fold_to = seq - 1  # the state from here on is unknown
                elif seq in fold_at:
                    folded[seq] = dict(state)
                    owned.clear()  # the copy shares the containers: grow none in place
            prev = stored
            want = seq + 1
            last = seq
    return last, hashes, folded, findings, count


def _sql_type(value: Any) -> str:
    """The SQLite storage class of a value read back (``typeof``)."""
    kinds = {bytes: "BLOB", str: "TEXT", int: "INTEGER", float: "REAL"}
    return "NULL" if value is None else kinds.get(type(value), type(value).__name__)


def _fold_row(
    state: dict[str, Any], event: Event | None, b: VerifyBody | None, owned: set[str]
) -> str | None:
    """Fold one row (its whole ``event``, or else its fast-path body ``b``) onto
    ``state``; ``None``, or why its ops do not fold (never an exception)."""
    if event is not None:
        ops: Any = event.ops
    elif b is not None:
        writes = {} if b.writes is EMPTY else b.writes
        if writes or b.deletes:  # the compact form (it wins over "o"; str keys: always folds)
            _fold_compact(state, writes, b.deletes, owned)
            return None
        ops = b.ops
    else:
        return "its body does not decode"
    if not ops:
        return None
    try:
        check_ops(ops, "")  # the shapes statelog writes (a crafted op may be any JSON)
        apply_ops(state, ops, owned)
    except (InvalidEventError, EncodingError) as exc:
        return str(exc).removeprefix(": ")
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # an op check_ops passes that still cannot apply to what the state holds
        return f"{type(exc).__name__}: {exc}"
    return None


def _decode_fast(decode: Any, body: Any) -> VerifyBody | None:
    try:
        return decode(body)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError):
        return None


def _matches(event: Event, stored: Any, key: bytes | None) -> bool:
    """``compute_hash`` (the reference) of ``event`` is the stored hash."""
    if type(stored) is not bytes:
        return False
    try:
        return hmac.compare_digest(compute_hash(event, key), stored.hex())
    # no canonical form (an unsafe integer, NaN, nesting too deep): not what was sealed
    except (EncodingError, RecursionError):
        return False


def _fold_compact(
    state: dict[str, Any], writes: dict[str, Any], deletes: Any, owned: set[str]
) -> None:
    """``apply_event`` of a compact v2 body's ``w`` and ``d`` (``set`` then ``delete`` ops)."""
    for name, value in writes.items():
        state[name] = value
        owned.discard(name)
    for name in deletes:
        state.pop(name, None)
        owned.discard(name)


def _decode_one(codec: Codec, row: Any, prev: bytes) -> Event | None:
    try:
        return codec.decode_body(
            row[0],
            partition_key=row[1],
            app_id=row[2],
            sequence_id=row[3],
            prev_hash=bytes(prev).hex(),
            hash=bytes(row[4]).hex() if isinstance(row[4], bytes) else str(row[4]),
            upcast_old=False,
        )
    except (EncodingError, TypeError, ValueError, RecursionError):  # (nested too deep)
        return None


def _hash_ok(codec: Codec, row: Any, prev: bytes, key: bytes | None) -> bool:
    """``compute_hash`` (the reference) of the row as written (not upcast) is its hash."""
    raw = _decode_one(codec, row, prev)
    return raw is not None and _matches(raw, row[4], key)


#: A log of at least this many events is walked by worker processes (if there are cores).
PARALLEL_EVENTS = 200_000


def _estimate(path: str, busy_timeout: float, partition_key: str | None, app_id: str | None) -> int:
    """About how many events the walk will see: the log's last position, or (one
    app or partition key) the last sequence ids of its streams: index lookups."""
    db, _ = connect_read_only(path, busy_timeout=busy_timeout)
    try:
        if partition_key is None and app_id is None:
            row = db.execute("SELECT MAX(position) FROM events").fetchone()
        else:
            where, params = [], []
            if partition_key is not None:
                where.append("partition_key = ?")
                params.append(partition_key)
            if app_id is not None:
                where.append("app_id = ?")
                params.append(app_id)
            row = db.execute(
                "SELECT SUM((SELECT MAX(sequence_id) + 1 FROM events WHERE stream_id = s.id)) "
                f"FROM streams s WHERE {' AND '.join(where)}",
                params,
            ).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])
    finally:
        db.close()


@contextlib.contextmanager
def _read_snapshot(path: str, busy_timeout: float) -> Iterator[tuple[sqlite3.Connection, Codec]]:
    """A read-only connection to ``path`` and its codec, inside one read snapshot
    (a writer committing meanwhile changes nothing the caller sees)."""
    db, _ = connect_read_only(path, busy_timeout=busy_timeout)
    try:
        _lenient(db)
        codec = read_format(db, path)
        db.execute("BEGIN")
        try:
            yield db, codec
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()


def _plan_file(
    path: str,
    hmac_key: bytes | None,
    public_keys: list[Any],
    partition_key: str | None,
    app_id: str | None,
    deep: bool,
    busy_timeout: float,
) -> _Plan:
    with _read_snapshot(path, busy_timeout) as (db, _):
        return _plan(db, hmac_key, public_keys, partition_key, app_id, deep)


def _audit_file(
    path: str,
    hmac_key: bytes | None,
    public_keys: list[Any],
    partition_key: str | None,
    app_id: str | None,
    deep: bool,
    busy_timeout: float,
) -> AuditReport:
    """The whole walk on this thread, in one read snapshot."""
    with _read_snapshot(path, busy_timeout) as (db, codec):
        plan = _plan(db, hmac_key, public_keys, partition_key, app_id, deep)
        return _finish(plan, [audit_streams(db, codec, plan.job, THREAD_PAGE)])


def _start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    """Worker processes, started before their jobs are known: they import while the
    plan is made. Started on a worker thread (a fork and exec in the event loop's
    thread held it for ~20 ms each on a busy machine)."""
    command = [sys.executable, "-m", "statelog.eventstore.sqlite._audit_worker"]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            )
    except BaseException:
        _stop(processes)
        raise
    return processes


async def _run_worker(process: subprocess.Popen[bytes], job: Job | None) -> Part:
    """Hand ``job`` to a started worker (``None``: nothing to do, it exits) and read its part."""
    data = b"" if job is None else msgspec.json.encode(job)
    out, err = await asyncio.to_thread(process.communicate, data)
    if process.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        where = "" if job is None else f" on {job.path!r}"
        raise StoreError(f"a verify worker{where} exited with {process.returncode}: {last[0]}")
    return Part() if job is None else msgspec.json.decode(out, type=Part)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kill the workers still running (verify failed or was cancelled) and reap them."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        process.wait()


async def audit_file(
    path: str | os.PathLike[str],
    *,
    hmac_key: bytes | None = None,
    public_keys: Iterable[Any] = (),
    partition_key: str | None = None,
    app_id: str | None = None,
    deep: bool = False,
    busy_timeout: float = 5.0,
    workers: int | None = None,
) -> AuditReport:
    """Verify the SQLite log at ``path`` (opened read-only, on a worker thread).

    See the module doc for what is checked. ``public_keys``: the Ed25519 public
    keys the checkpoints are signed with (``load_public_key``); a checkpoint
    signed by another key raises ``KeyMismatchError``.

    A log of ``PARALLEL_EVENTS`` or more is walked by worker processes, one
    per core (at most 4; one on a single core), its streams split into parts
    of about equal size; the workers are started first, so they import while
    the plan is made on a worker thread. No walk then runs in this process: a
    CPU-bound thread here would compete with the event loop for the GIL, and
    on a busy machine each hand-over can keep the loop waiting for tens of
    milliseconds. A smaller log (or ``workers=1``) is walked on one worker
    thread; ``workers=N`` (N > 1) always splits over N processes.
    """
    name = os.fspath(path)
    keys = list(public_keys)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        count = 0  # worker processes (0: walk on a worker thread of this process)
        if workers is None:
            size = await asyncio.to_thread(_estimate, name, busy_timeout, partition_key, app_id)
            if size >= PARALLEL_EVENTS:
                count = min(os.cpu_count() or 1, 4)  # one core: still off this process
        elif workers > 1:
            count = workers
        if count == 0:
            return await asyncio.to_thread(
                _audit_file, name, hmac_key, keys, partition_key, app_id, deep, busy_timeout
            )
        processes = await asyncio.to_thread(_start_workers, count)
        plan = await asyncio.to_thread(
            _plan_file, name, hmac_key, keys, partition_key, app_id, deep, busy_timeout
        )
        plan = msgspec.structs.replace(plan, job=msgspec.structs.replace(plan.job, path=name))
        jobs: list[Job | None] = [*_split(plan, count)]
        jobs += [None] * (count - len(jobs))  # fewer streams than workers
        parts = await asyncio.gather(
            *(_run_worker(process, job) for process, job in zip(processes, jobs, strict=True))
        )
        return _finish(plan, list(parts))
    except sqlite3.Error as exc:
        raise translate_error(exc, name, doing="cannot verify") from exc
    finally:
        if processes:
            await asyncio.to_thread(_stop, processes)
