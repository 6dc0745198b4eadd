"""Crafted rows that break the fold, hashes recomputed: each is a finding of ``verify``.

Issue #13 ("verify misses nothing it can know"), and the rule that whatever an
attacker can do to the log, a test does first. A forger with write access
rewrites one event of stream ``('p', 'a')`` with ops statelog never writes (an
unknown op, an op of the wrong shape, or one that cannot apply to the state
folded so far) and recomputes the unkeyed SHA-256 chain from there, and the
snapshot's ``event_hash`` and digest too: the chain holds, only the fold can
tell. ``verify --deep`` (and ``audit_file(deep=True)``, on one thread or in
worker processes) names the stream and the sequence, exits 1 with no
traceback, and says nothing about the clean stream ``('p', 'b')``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statelog._cli import main
from statelog.eventstore import (
    Event,
    Snapshot,
    SnapshotStore,
    SQLiteEventStore,
    generate_key_files,
)
from statelog.eventstore._base import fold
from statelog.eventstore._chain import compute_hash
from statelog.eventstore._snapshots import _digest
from statelog.eventstore.sqlite._audit import audit_file

A = ("p", "a")  # the stream the forger rewrites
B = ("p", "b")  # a clean stream beside it
N = 10
SNAPSHOT_AT = 6
CRAFTED_AT = 3


def _ops(seq: int) -> list[dict[str, Any]]:
    return [
        {"op": "set", "key": "n", "value": seq},
        {"op": "set", "key": "s", "value": "text"},
        {"op": "append", "key": "l", "value": seq},
        {"op": "merge", "key": "m", "value": {str(seq): seq}},
    ]


def _events(stream: tuple[str, str]) -> list[Event]:
    return [
        Event(
            partition_key=stream[0],
            app_id=stream[1],
            sequence_id=seq,
            kind="action_completed",
            action="step",
            ops=_ops(seq),
        )
        for seq in range(N)
    ]


async def _build(path: Path, codec: str, signing_key: str | None) -> None:
    options: dict[str, Any] = {"codec": codec}
    if signing_key is not None:
        options["signing_key"] = signing_key
    async with SQLiteEventStore(path, **options) as store:
        for stream in (A, B):
            await store.append(_events(stream), expected_sequence=-1)
    async with SQLiteEventStore(path, read_only=True) as store:
        stored = {stream: await store.read(*stream) for stream in (A, B)}
    async with SnapshotStore(path) as snapshots:
        for stream in (A, B):
            upto = stored[stream][: SNAPSHOT_AT + 1]
            await snapshots.save(
                Snapshot(
                    partition_key=stream[0],
                    app_id=stream[1],
                    sequence_id=SNAPSHOT_AT,
                    state=fold(upto),
                    position=-1,
                    event_hash=upto[-1].hash,
                )
            )


def _craft(path: Path, seq: int, ops: Any) -> None:
    """Give ``A``'s event ``seq`` the ``ops``, recompute every unkeyed hash from
    there (as a forger would), and the snapshot's ``event_hash`` and digest."""

    async def read() -> tuple[list[Event], Any]:
        async with SQLiteEventStore(path, read_only=True) as store:
            return await store.read(*A), store.codec

    stored, codec = asyncio.run(read())
    prev = stored[seq - 1].hash
    db = sqlite3.connect(path)
    try:
        (stream_id,) = db.execute(
            "SELECT id FROM streams WHERE partition_key = ? AND app_id = ?", A
        ).fetchone()
        for event in stored[seq:]:
            forged = msgspec.structs.replace(
                event, ops=ops if event.sequence_id == seq else event.ops, prev_hash=prev
            )
            forged = msgspec.structs.replace(forged, hash=compute_hash(forged, None))
            prev = forged.hash
            db.execute(
                "UPDATE events SET body = ?, hash = ? WHERE stream_id = ? AND sequence_id = ?",
                (
                    codec.encode_body(forged),
                    bytes.fromhex(forged.hash),
                    stream_id,
                    event.sequence_id,
                ),
            )
            if event.sequence_id == SNAPSHOT_AT:
                _reseal_snapshot(db, forged.hash)
        db.commit()
    finally:
        db.close()


def _reseal_snapshot(db: sqlite3.Connection, event_hash: str) -> None:
    pk, app, seq, position, state = db.execute(
        "SELECT partition_key, app_id, sequence_id, position, state FROM snapshots "
        "WHERE partition_key = ? AND app_id = ?",
        A,
    ).fetchone()
    digest = _digest(None, (pk, app, seq, position, event_hash, state))
    db.execute(
        "UPDATE snapshots SET event_hash = ?, digest = ? WHERE partition_key = ? AND app_id = ?",
        (event_hash, digest, pk, app),
    )


def verify(capsys: pytest.CaptureFixture[str], path: Path, *more: str) -> tuple[int, str, str]:
    code = main(["verify", "--db", str(path), *more])
    out, err = capsys.readouterr()
    return code, out, err


#: Ops statelog never writes or that cannot apply to the state folded so far
#: (``n`` holds an int, ``s`` a str, ``l`` a list, ``m`` a dict), and what the
#: finding says about each.
BROKEN: dict[str, tuple[Any, str]] = {
    "unknown op": ([{"op": "frob", "key": "n"}], "at `$.ops[0].op`, got str 'frob'"),
    "op not a str": ([{"op": 7, "key": "n", "value": 1}], "at `$.ops[0].op`"),
    "no op member": ([{"key": "n", "value": 1}], "at `$.ops[0].op`"),
    "key not a str": ([{"op": "set", "key": 5, "value": 1}], "at `$.ops[0].key`"),
    "set without value": ([{"op": "set", "key": "n"}], "expected the members op, key, value"),
    "delete with a value": ([{"op": "delete", "key": "n", "value": 1}], "expected the members"),
    "append to an int": ([{"op": "append", "key": "n", "value": 1}], "cannot append state key 'n'"),
    "append a float to an int (reference path)": (
        [{"op": "append", "key": "n", "value": 1.5}],
        "cannot append state key 'n'",
    ),
    "extend a str": ([{"op": "extend", "key": "s", "values": [1]}], "cannot extend state key 's'"),
    "extend by an int": ([{"op": "extend", "key": "l", "values": 5}], "at `$.ops[0].values`"),
    "increment a str": ([{"op": "increment", "key": "s", "by": 1}], "cannot increment state key"),
    "increment a list": ([{"op": "increment", "key": "l", "by": 1}], "cannot increment state key"),
    "increment by a str": ([{"op": "increment", "key": "n", "by": "1"}], "at `$.ops[0].by`"),
    "merge into a str": ([{"op": "merge", "key": "s", "value": {"a": 1}}], "cannot merge state"),
    "merge into a list": ([{"op": "merge", "key": "l", "value": {"a": 1}}], "list"),
    "merge a str": ([{"op": "merge", "key": "m", "value": "ab"}], "at `$.ops[0].value`"),
    "merge a list": ([{"op": "merge", "key": "m", "value": [[1, 2]]}], "at `$.ops[0].value`"),
    "a good op, then a bad one": (
        [{"op": "set", "key": "n", "value": 1}, {"op": "append", "key": "n", "value": 2}],
        "cannot append state key 'n'",
    ),
}

NAMED = f"broken: stream ('p', 'a') sequence_id {CRAFTED_AT} its ops do not fold: "


@pytest.fixture(params=["json", "msgpack"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    asyncio.run(_build(path, request.param, None))
    return path


def test_the_untouched_log_verifies_deep(capsys: pytest.CaptureFixture[str], log: Path) -> None:
    code, out, _ = verify(capsys, log, "--deep")
    assert code == 0, out
    assert "2 streams, 20 events; 2 snapshots" in out


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_crafted_op_is_named_by_verify_deep(
    capsys: pytest.CaptureFixture[str], log: Path, case: str
) -> None:
    ops, says = BROKEN[case]
    _craft(log, CRAFTED_AT, ops)
    code, out, err = verify(capsys, log)
    assert code == 0, out  # the chain holds: without --deep nothing folds (the documented limit)
    code, out, err = verify(capsys, log, "--deep")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert "error" not in err
    lines = [line for line in out.splitlines() if line.startswith("broken:")]
    assert len(lines) == 1, out  # the fold stops there: the later snapshot is not held to it
    assert lines[0].startswith(NAMED), out
    assert says in lines[0], out
    assert "('p', 'b')" not in out  # the clean stream is not reported
    assert "2 streams, 20 events; 2 snapshots" in out  # ... and was walked


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_crafted_op_is_a_finding_of_audit_file(log: Path, case: str, workers: int) -> None:
    """The Python API, on one thread and in worker processes: a finding, no exception."""
    ops, says = BROKEN[case]
    _craft(log, CRAFTED_AT, ops)
    report = asyncio.run(audit_file(log, deep=True, workers=workers))
    assert (report.streams, report.events, report.snapshots) == (2, 2 * N, 2)
    assert [(f.stream, f.sequence_id) for f in report.findings] == [(A, CRAFTED_AT)]
    (finding,) = report.findings
    assert finding.reason.startswith("its ops do not fold: ")
    assert says in finding.reason


def test_a_crafted_op_after_the_last_snapshot_is_named_by_deep(
    capsys: pytest.CaptureFixture[str], log: Path
) -> None:
    """``--deep`` folds every stream to its end, not only up to its snapshots."""
    _craft(log, N - 1, [{"op": "increment", "key": "s", "by": 1}])
    code, out, err = verify(capsys, log, "--deep")
    assert code == 1, (out, err)
    assert f"broken: stream ('p', 'a') sequence_id {N - 1} its ops do not fold: " in out
    assert "('p', 'b')" not in out


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "delete", "key": "absent"}],  # a delete of a missing key: nothing (as _ops says)
        [{"op": "increment", "key": "n", "by": 1.5}],
        [{"op": "increment", "key": "new", "by": 2}],
        [{"op": "append", "key": "new", "value": 1}],
    ],
)
def test_a_crafted_op_that_folds_is_held_to_the_snapshot(
    capsys: pytest.CaptureFixture[str], log: Path, ops: list[dict[str, Any]]
) -> None:
    """Ops that fold (by ``_ops``' table) are no finding by themselves; the
    snapshot, taken before the forgery, then is not the fold: named."""
    _craft(log, CRAFTED_AT, ops)
    code, out, err = verify(capsys, log, "--deep")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert out.splitlines()[0] == (
        f"broken: stream ('p', 'a') sequence_id {SNAPSHOT_AT} snapshot: its state is not "
        "the fold of the events up to it (forged)"
    )
    assert "('p', 'b')" not in out


def test_with_a_public_key_the_fold_up_to_the_snapshots_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With ``--public-key`` (no ``--deep``) snapshots are held to the fold: the
    crafted op is named there too, beside the rewritten head the checkpoint shows."""
    path = tmp_path / "log.db"
    private, public = generate_key_files(tmp_path / "key")
    asyncio.run(_build(path, "json", str(private)))
    _craft(path, CRAFTED_AT, [{"op": "frob", "key": "n"}])
    code, out, err = verify(capsys, path, "--public-key", str(public))
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert NAMED + "expected one of" in out
    assert "('p', 'b')" not in out


def _sql(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


A_ROW = "stream_id = (SELECT id FROM streams WHERE app_id = 'a')"


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        (
            f"UPDATE events SET body = CAST(body AS TEXT) WHERE {A_ROW} AND sequence_id = 3",
            "broken: stream ('p', 'a') sequence_id 3 stores a BLOB hash and a TEXT body, "
            "expected BLOBs",
        ),
        (
            f"UPDATE events SET hash = 42 WHERE {A_ROW} AND sequence_id = 3",
            "broken: stream ('p', 'a') sequence_id 3 stores a INTEGER hash and a BLOB body",
        ),
        (
            f"UPDATE events SET body = 7 WHERE {A_ROW} AND sequence_id = 3",
            "broken: stream ('p', 'a') sequence_id 3 stores a BLOB hash and a INTEGER body",
        ),
        (  # TEXT that is not UTF-8: sqlite3 cannot even fetch it as a str
            f"UPDATE events SET hash = CAST(X'ff00' AS TEXT) WHERE {A_ROW} AND sequence_id = 3",
            "broken: stream ('p', 'a') sequence_id 3 stores a TEXT hash and a BLOB body",
        ),
        (
            f"UPDATE events SET sequence_id = 'x' WHERE {A_ROW} AND sequence_id = 9",
            "broken: stream ('p', 'a') a row stores sequence_id 'x', expected an INTEGER",
        ),
        (
            f"UPDATE events SET sequence_id = 2.5 WHERE {A_ROW} AND sequence_id = 3",
            "broken: stream ('p', 'a') a row stores sequence_id 2.5, expected an INTEGER",
        ),
        (  # the hash at the snapshot's sequence, TEXT and not UTF-8
            f"UPDATE events SET hash = CAST(X'ff00' AS TEXT) WHERE {A_ROW} AND sequence_id = 6",
            "broken: stream ('p', 'a') sequence_id 6 snapshot: its event_hash is not the hash",
        ),
        (
            "UPDATE snapshots SET position = 'q' WHERE app_id = 'a'",
            "broken: stream ('p', 'a') sequence_id 6 snapshot: its row stores sequence_id 6 "
            "and position 'q', expected INTEGERs",
        ),
        (
            "UPDATE snapshots SET sequence_id = 'z' WHERE app_id = 'a'",
            "broken: stream ('p', 'a') snapshot: its row stores sequence_id 'z'",
        ),
        (
            "UPDATE snapshots SET digest = CAST(X'ff' AS TEXT) WHERE app_id = 'a'",
            "broken: stream ('p', 'a') sequence_id 6 snapshot: its checksum does not match",
        ),
        (
            f"UPDATE events SET sequence_id = CAST(X'ff' AS TEXT) "
            f"WHERE {A_ROW} AND sequence_id = 9",
            "broken: stream ('p', 'a') a row stores sequence_id '\ufffd', expected an INTEGER",
        ),
        (  # the chain covers the stream's name: the renamed stream's first event is named
            "UPDATE streams SET app_id = CAST(X'61ff' AS TEXT) WHERE app_id = 'a'",
            "broken: stream ('p', 'a\ufffd') sequence_id 0 its hash does not match",
        ),
    ],
)
def test_a_row_of_odd_types_is_a_finding(
    capsys: pytest.CaptureFixture[str], log: Path, statement: str, says: str
) -> None:
    """Types statelog never writes: a finding naming the row (exit 1), not a refusal
    of the whole file (exit 2); the walk goes on and the other stream is clean."""
    _sql(log, statement)
    for more in ((), ("--deep",)):
        code, out, err = verify(capsys, log, *more)
        assert code == 1, (out, err)
        assert "Traceback" not in out + err
        assert says in out, out
        assert "('p', 'b')" not in out
        report = asyncio.run(audit_file(log, deep=bool(more), workers=2))
        assert not report.ok
        assert all(f.stream != B for f in report.findings), report.findings


DEPTH = 100_000  # far beyond the interpreter's recursion limit


def _deep_body(path: Path) -> bytes:
    """A body of the log's codec whose ``l`` member nests ``DEPTH`` lists deep."""
    db = sqlite3.connect(path)
    try:
        (body,) = db.execute("SELECT body FROM events LIMIT 1").fetchone()
    finally:
        db.close()
    if bytes(body).startswith(b"{"):  # json
        return b'{"k":"x","v":2,"l":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    return b"\x83\xa1k\xa1x\xa1v\x02\xa1l" + b"\x91" * DEPTH + b"\x90"  # msgpack


def test_a_body_nested_too_deep_is_a_finding(capsys: pytest.CaptureFixture[str], log: Path) -> None:
    _sql_params(
        log, f"UPDATE events SET body = ? WHERE {A_ROW} AND sequence_id = 3", _deep_body(log)
    )
    code, out, err = verify(capsys, log, "--deep")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert (
        out.splitlines()[0]
        == "broken: stream ('p', 'a') sequence_id 3 its stored body does not decode"
    )
    assert "('p', 'b')" not in out


def test_a_snapshot_state_nested_too_deep_is_a_finding(
    capsys: pytest.CaptureFixture[str], log: Path
) -> None:
    """The digest recomputed: only decoding the state (``--deep``) can tell."""
    db = sqlite3.connect(log)
    try:
        pk, app, seq, position, event_hash = db.execute(
            "SELECT partition_key, app_id, sequence_id, position, event_hash FROM snapshots "
            "WHERE app_id = 'a'"
        ).fetchone()
        state = b"\x81\xa1n" + b"\x91" * DEPTH + b"\x90"  # {"n": [[[...]]]}
        digest = _digest(None, (pk, app, seq, position, event_hash, state))
        db.execute("UPDATE snapshots SET state = ?, digest = ? WHERE app_id = 'a'", (state, digest))
        db.commit()
    finally:
        db.close()
    code, out, err = verify(capsys, log, "--deep")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert out.startswith(
        "broken: stream ('p', 'a') sequence_id 6 snapshot: its state does not decode"
    ), out
    assert "('p', 'b')" not in out


def _sql_params(path: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(statement, params)
        db.commit()
    finally:
        db.close()
