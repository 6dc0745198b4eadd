"""The attack matrix: each tampering, made with plain sqlite3 on a real file, with and
without signed checkpoints, and what ``statelog verify`` says about it.

Every detected attack is NAMED: the stream (a quoted pair), the sequence id
and what is wrong. What an unkeyed chain cannot know is asserted as the
documented limit: verify says ok, and docs/operations.md says it cannot tell.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from statelog import KeyFileError, KeyMismatchError
from statelog._cli import main
from statelog.eventstore import (
    Event,
    Snapshot,
    SnapshotStore,
    SQLiteEventStore,
    StoreCorruptError,
    generate_key_files,
    load_public_key,
    seal,
)
from statelog.eventstore._snapshots import _digest
from statelog.eventstore.sqlite._audit import audit_file

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
A = ("a", "b/c")  # two streams whose old "partition/app" names were the same
B = ("a/b", "c")
N_A = 120
N_B = 60


def events(stream: tuple[str, str], start: int, stop: int) -> list[Event]:
    return [
        Event(
            partition_key=stream[0],
            app_id=stream[1],
            sequence_id=seq,
            kind="action_completed",
            action="step",
            ops=[
                {"op": "set", "key": "n", "value": seq},
                {"op": "set", "key": "balance", "value": 1000 + seq},
            ],
        )
        for seq in range(start, stop)
    ]


async def _build(path: Path, key: Path | None) -> None:
    options: dict[str, Any] = {}
    if key is not None:
        # checkpoints at known points: after A#39, A#79, A#119, and at close (B)
        options = {"signing_key": key, "checkpoint_every": 10**9, "checkpoint_interval": 1e9}
    async with SQLiteEventStore(path, **options) as store:
        for seq in range(0, N_A, 10):
            await store.append(events(A, seq, seq + 10), expected_sequence=seq - 1)
            if key is not None and seq % 40 == 30:
                await store.checkpoint()
        await store.append(events(B, 0, N_B), expected_sequence=-1)
        (at_50,) = await store.read(*A, from_sequence=50, to_sequence=50)
    async with SnapshotStore(path) as snapshots:
        state = {"n": 50, "balance": 1050}
        await snapshots.save(
            Snapshot(
                partition_key=A[0],
                app_id=A[1],
                sequence_id=50,
                state=state,
                position=-1,
                event_hash=at_50.hash,
            )
        )


@pytest.fixture(params=["signed", "unsigned"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path | None]:
    """A log of two streams and a snapshot; with its public key when signed."""
    path = tmp_path / "log.db"
    if request.param == "signed":
        private, public = generate_key_files(tmp_path / "key")
        asyncio.run(_build(path, Path(private)))
        return path, Path(public)
    asyncio.run(_build(path, None))
    return path, None


def verify(
    capsys: pytest.CaptureFixture[str], path: Path, public: Path | None, *more: str
) -> tuple[int, str, str]:
    argv = ["verify", "--db", str(path), *more]
    if public is not None:
        argv += ["--public-key", str(public)]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def sql(path: Path, statement: str, *params: Any) -> int:
    db = sqlite3.connect(path)
    try:
        changed = db.execute(statement, params).rowcount
        db.commit()
    finally:
        db.close()
    return changed


def row(stream: tuple[str, str], seq: int) -> str:
    pk, app = stream
    return (
        f"stream_id = (SELECT id FROM streams WHERE partition_key = '{pk}' AND app_id = '{app}')"
        f" AND sequence_id = {seq}"
    )


def body_of(path: Path, stream: tuple[str, str], seq: int) -> bytes:
    db = sqlite3.connect(path)
    try:
        (body,) = db.execute(f"SELECT body FROM events WHERE {row(stream, seq)}").fetchone()
    finally:
        db.close()
    return bytes(body)


def documented_limit(phrase: str) -> None:
    text = " ".join(DOCS.read_text().split())
    assert phrase in text, f"docs/operations.md does not document: {phrase!r}"


# --------------------------------------------------------------------------- baseline


def test_an_untouched_log_verifies(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    code, out, _ = verify(capsys, path, public)
    assert code == 0, out
    assert out.startswith("ok: 2 streams, 180 events")
    if public is not None:
        assert "signature verified" in out and "0 events after it" in out


def test_stream_names_are_unambiguous(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    sql(path, f"UPDATE events SET hash = zeroblob(32) WHERE {row(A, 3)}")
    sql(path, f"UPDATE events SET hash = zeroblob(32) WHERE {row(B, 3)}")
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a', 'b/c') sequence_id 3" in out
    assert "stream ('a/b', 'c') sequence_id 3" in out


# --------------------------------------------------------------------------- the chain


def test_edit_a_byte_of_a_body(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    body = body_of(path, A, 7)
    old, new = msgspec.msgpack.encode(1007), msgspec.msgpack.encode(1008)
    assert body.count(old) == 1
    sql(path, f"UPDATE events SET body = ? WHERE {row(A, 7)}", body.replace(old, new))
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "broken: stream ('a', 'b/c') sequence_id 7 its hash does not match" in out


def test_edit_a_hash(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    sql(path, f"UPDATE events SET hash = zeroblob(32) WHERE {row(B, 20)}")
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a/b', 'c') sequence_id 20 its hash does not match" in out


def test_delete_a_middle_row(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    assert sql(path, f"DELETE FROM events WHERE {row(A, 60)}") == 1
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a', 'b/c') sequence_id 60 is missing: sequence_id 60 deleted" in out


def test_delete_sequence_0(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    assert sql(path, f"DELETE FROM events WHERE {row(B, 0)}") == 1
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a/b', 'c') sequence_id 0 is missing" in out
    assert "2 streams" in out  # the stream is still counted, not hidden


def _without_unique_index(path: Path) -> None:
    """Rebuild ``events`` without its UNIQUE (stream_id, sequence_id) index."""
    db = sqlite3.connect(path)
    try:
        db.executescript(
            "CREATE TABLE bare (position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL,"
            " sequence_id INTEGER NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL);"
            "INSERT INTO bare SELECT position, stream_id, sequence_id, hash, body FROM events;"
            "DROP TABLE events; ALTER TABLE bare RENAME TO events;"
        )
    finally:
        db.close()


@pytest.mark.parametrize("copy", ["identical", "forged"])
def test_a_second_row_for_a_sequence_id(
    capsys: pytest.CaptureFixture[str], log: Any, copy: str
) -> None:
    path, public = log
    _without_unique_index(path)
    forged = "hash" if copy == "identical" else "zeroblob(32)"
    assert (
        sql(
            path,
            "INSERT INTO events (stream_id, sequence_id, hash, body) "
            f"SELECT stream_id, sequence_id, {forged}, body FROM events WHERE {row(A, 60)}",
        )
        == 1
    )
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "broken: stream ('a', 'b/c') sequence_id 60 has more than one row" in out
    assert "missing" not in out  # it used to read as a deleted sequence_id 61

    async def reads() -> list[str]:
        errors = []
        async with SQLiteEventStore(path, read_only=True) as store:
            broken = await store.verify(*A)
            assert broken is not None and broken.sequence_id == 60, broken
            assert "more than one row" in broken.reason
            for call in (store.read(*A), store.fold_stream(*A), store.read_all()):
                with pytest.raises(StoreCorruptError) as caught:
                    await call
                errors.append(str(caught.value))
        return errors

    for error in asyncio.run(reads()):
        assert "more than one row with sequence_id 60" in error, error


def test_swap_two_rows_bodies(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    b10, b11 = body_of(path, A, 10), body_of(path, A, 11)
    sql(path, f"UPDATE events SET body = ? WHERE {row(A, 10)}", b11)
    sql(path, f"UPDATE events SET body = ? WHERE {row(A, 11)}", b10)
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a', 'b/c') sequence_id 10 its hash does not match" in out
    assert "stream ('a', 'b/c') sequence_id 11 its hash does not match" in out


def test_delete_every_event_of_a_stream(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    sql(path, "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE app_id = 'c')")
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "stream ('a/b', 'c') has no events" in out


# --------------------------------------------------------------------------- the heads


@pytest.mark.parametrize("cut", [1, 50])
def test_delete_the_last_rows(capsys: pytest.CaptureFixture[str], log: Any, cut: int) -> None:
    path, public = log
    stream_id = f"(SELECT id FROM streams WHERE app_id = '{A[1]}')"
    deleted = sql(
        path, f"DELETE FROM events WHERE stream_id = {stream_id} AND sequence_id >= ?", N_A - cut
    )
    assert deleted == cut
    code, out, _ = verify(capsys, path, public)
    if public is None:
        assert code == 0, out  # the documented limit
        documented_limit("An unkeyed log cannot detect truncation")
        return
    assert code == 1
    assert (
        f"stream ('a', 'b/c') sequence_id {N_A - cut} is missing: the stream ends at "
        f"sequence_id {N_A - cut - 1}, checkpoint #" in out
    )


def test_delete_a_whole_stream(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    sql(path, "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE app_id = 'c')")
    sql(path, "DELETE FROM streams WHERE app_id = 'c'")
    code, out, _ = verify(capsys, path, public)
    if public is None:
        assert (code, out.split(";")[0]) == (0, "ok: 1 streams, 120 events")
        documented_limit("a deleted whole stream")
        return
    assert code == 1
    assert "stream ('a/b', 'c') is missing: checkpoint #" in out
    assert "a whole stream was deleted" in out


def _rewrite(path: Path, stream: tuple[str, str], start: int) -> None:
    """Change ``balance`` at ``start`` and recompute every SHA-256 hash from there."""

    async def read() -> list[Event]:
        async with SQLiteEventStore(path, read_only=True) as store:
            return await store.read(*stream)

    stored = asyncio.run(read())
    forged = [
        msgspec.structs.replace(
            stored[start], ops=[{"op": "set", "key": "balance", "value": 10**9}]
        )
    ]
    forged += stored[start + 1 :]
    resealed = seal(forged, stored[start - 1].hash)

    async def codec_of() -> Any:
        async with SQLiteEventStore(path, read_only=True) as store:
            return store.codec

    codec = asyncio.run(codec_of())
    for event in resealed:
        sql(
            path,
            f"UPDATE events SET body = ?, hash = ? WHERE {row(stream, event.sequence_id)}",
            codec.encode_body(event),
            bytes.fromhex(event.hash),
        )


def test_rewrite_a_stream_with_recomputed_hashes(
    capsys: pytest.CaptureFixture[str], log: Any
) -> None:
    path, public = log
    _rewrite(path, A, 100)
    code, out, _ = verify(capsys, path, public)
    if public is None:
        assert code == 0, out
        documented_limit("or a consistent rewrite by someone with write access")
        return
    assert code == 1
    assert f"stream ('a', 'b/c') sequence_id {N_A - 1} has hash" in out
    assert "(the stream was rewritten)" in out


# --------------------------------------------------------------------------- snapshots


def _forge_snapshot(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        pk, app, seq, position, event_hash = db.execute(
            "SELECT partition_key, app_id, sequence_id, position, event_hash FROM snapshots"
        ).fetchone()
        state = msgspec.msgpack.encode({"n": 50, "balance": 10**9})
        digest = _digest(None, (pk, app, seq, position, event_hash, state))
        db.execute("UPDATE snapshots SET state = ?, digest = ?", (state, digest))
        db.commit()
    finally:
        db.close()


def test_forge_a_snapshot(capsys: pytest.CaptureFixture[str], log: Any) -> None:
    path, public = log
    _forge_snapshot(path)
    code, out, _ = verify(capsys, path, public)
    if public is None:
        assert code == 0, out  # not folded: the documented limit ...
        documented_limit("a forged snapshot that kept the right `event_hash`")
        code, out, _ = verify(capsys, path, public, "--deep")  # ... that --deep lifts
    assert code == 1
    assert "stream ('a', 'b/c') sequence_id 50 snapshot: its state is not the fold" in out


def test_a_snapshot_that_does_not_match_the_chain(
    capsys: pytest.CaptureFixture[str], log: Any
) -> None:
    path, public = log
    db = sqlite3.connect(path)
    pk, app, seq, position, _, blob = db.execute(
        "SELECT partition_key, app_id, sequence_id, position, event_hash, state FROM snapshots"
    ).fetchone()
    db.execute(
        "UPDATE snapshots SET event_hash = ?, digest = ?",
        ("00" * 32, _digest(None, (pk, app, seq, position, "00" * 32, blob))),
    )
    db.commit()
    db.close()
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert "sequence_id 50 snapshot: its event_hash is not the hash of the event" in out


# --------------------------------------------------------------------------- checkpoints


def test_roll_back_to_an_older_checkpoint(
    capsys: pytest.CaptureFixture[str], log: Any, tmp_path: Path
) -> None:
    path, public = log
    if public is None:
        # unsigned: restoring an older copy of the file is consistent in itself
        old = tmp_path / "old.db"
        shutil.copy(path, old)
        sql(path, f"DELETE FROM events WHERE {row(B, N_B - 1)}")
        shutil.copy(old, path)
        assert verify(capsys, path, None)[0] == 0
        documented_limit("restore an older copy of the whole file | **not detected**")
        return
    db = sqlite3.connect(path)
    rows = db.execute("SELECT sequence, body, signature FROM signed_heads ORDER BY 1").fetchall()
    assert len(rows) == 4
    # the newest checkpoint replaced by an older one (validly signed, but old)
    db.execute(
        "UPDATE signed_heads SET body = ?, signature = ? WHERE sequence = ?",
        (rows[0][1], rows[0][2], rows[-1][0]),
    )
    db.commit()
    db.close()
    code, out, _ = verify(capsys, path, public)
    assert code == 1
    assert f"checkpoint #{rows[-1][0]}: carries sequence 1" in out


def test_a_rolled_back_file_is_caught_by_the_anchor(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)

    async def more() -> None:
        async with SQLiteEventStore(path, signing_key=private) as store:
            await store.append(events(B, N_B, N_B + 5), expected_sequence=N_B - 1)

    asyncio.run(more())
    anchored = asyncio.run(audit_file(path, public_keys=[load_public_key(public)]))
    assert anchored.ok and anchored.checkpoint is not None
    shutil.copy(backup, path)  # the older, consistent file put back
    code, out, _ = verify(capsys, path, Path(public))
    assert code == 0  # consistent in itself: only the anchor can tell
    code, out, _ = verify(
        capsys,
        path,
        Path(public),
        "--expect-checkpoint",
        f"{anchored.checkpoint}:{anchored.checkpoint_digest}",
    )
    assert code == 1
    assert f"but #{anchored.checkpoint} was published: the log was rolled back" in out


def test_deleted_checkpoints_with_a_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    sql(path, "DELETE FROM signed_heads")
    code, out, _ = verify(capsys, path, Path(public))
    assert code == 1 and "no signed checkpoint in the file" in out


def test_a_forged_checkpoint_signature(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    assert sql(path, "UPDATE signed_heads SET signature = zeroblob(64) WHERE sequence = 2") == 1
    code, out, _ = verify(capsys, path, Path(public))
    assert code == 1 and "checkpoint #2: signature does not verify" in out


# --------------------------------------------------------------------------- keys


def test_key_errors_are_typed_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    _, other = generate_key_files(tmp_path / "other")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    corrupt = tmp_path / "corrupt.pub"
    corrupt.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    for key, expected in (
        (Path(other), "wrong --public-key"),
        (tmp_path / "missing.pub", "does not exist"),
        (corrupt, "is not a PEM public key"),
    ):
        code, out, err = verify(capsys, path, key)
        assert code == 2, out
        assert err.count("\n") == 1 and expected in err and out == ""
    with pytest.raises(KeyMismatchError):
        asyncio.run(audit_file(path, public_keys=[load_public_key(other)]))
    with pytest.raises(KeyFileError):
        load_public_key(corrupt)
    with pytest.raises(KeyFileError):
        SQLiteEventStore(path, signing_key=public)  # a public key is not a signing key


def test_a_cut_tail_written_over_again_is_caught_by_an_earlier_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Cut a signed stream back and let the writer append and sign on: the latest
    checkpoint then covers the new tail, but an earlier one signed the old events."""
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    stream_id = f"(SELECT id FROM streams WHERE app_id = '{A[1]}')"
    assert (
        sql(path, f"DELETE FROM events WHERE stream_id = {stream_id} AND sequence_id >= 70") == 50
    )

    async def write_on() -> None:
        async with SQLiteEventStore(path, signing_key=private) as store:
            await store.append(events(A, 70, 75), expected_sequence=69)

    asyncio.run(write_on())
    code, out, _ = verify(capsys, path, Path(public))
    assert code == 1
    assert "stream ('a', 'b/c') sequence_id 79 is not the event checkpoint #2 signed" in out


def test_state_and_history_with_a_key_refuse_a_tampered_stream(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    for command in ("state", "history"):
        argv = [command, A[1], "--partition-key", A[0], "--db", str(path)]
        assert main([*argv, "--public-key", public]) == 0
        capsys.readouterr()
    sql(path, f"DELETE FROM events WHERE {row(A, N_A - 1)}")
    for command in ("state", "history"):
        argv = [command, A[1], "--partition-key", A[0], "--db", str(path)]
        assert main(argv) == 0  # without a key: shown (the documented limit)
        capsys.readouterr()
        assert main([*argv, "--public-key", public]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert "stream ('a', 'b/c') sequence_id 119 is missing" in err


def test_worker_processes_find_what_one_thread_finds(log: Any) -> None:
    """The same tampered log walked on one thread and split over 2 processes."""
    path, public = log
    sql(path, f"UPDATE events SET hash = zeroblob(32) WHERE {row(A, 3)}")
    sql(path, f"DELETE FROM events WHERE {row(B, 0)}")
    sql(path, f"DELETE FROM events WHERE {row(A, N_A - 1)}")
    _forge_snapshot(path)
    keys = [load_public_key(public)] if public is not None else []

    async def both() -> tuple[Any, Any]:
        one = await audit_file(path, public_keys=keys, deep=True, workers=1)
        split = await audit_file(path, public_keys=keys, deep=True, workers=2)
        return one, split

    one, split = asyncio.run(both())
    assert sorted(map(str, one.findings)) == sorted(map(str, split.findings))
    assert len(one.findings) >= 4 if public is not None else len(one.findings) >= 3
    assert (one.streams, one.events, one.snapshots, one.unsigned_events) == (
        split.streams,
        split.events,
        split.snapshots,
        split.unsigned_events,
    )


def test_export_with_a_key_refuses_a_tampered_log_and_carries_checkpoints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(private)))
    out = tmp_path / "out.jsonl"
    assert main(["export", "--db", str(path), "--public-key", public, str(out)]) == 0
    assert "and 4 signed checkpoints" in capsys.readouterr().out
    code, printed, _ = verify(capsys, path, Path(public), "--export", str(out))
    assert code == 0 and "signature verified" in printed
    # the file imports into a new store that signs on, and that store verifies
    target = tmp_path / "copy.db"
    argv = ["import", "--db", str(target), str(out), "--public-key", public]
    assert main([*argv, "--signing-key", private]) == 0
    capsys.readouterr()
    assert verify(capsys, target, Path(public))[0] == 0
    sql(path, f"DELETE FROM events WHERE {row(B, N_B - 1)}")
    again = tmp_path / "again.jsonl"
    assert main(["export", "--db", str(path), "--public-key", public, str(again)]) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and "('a/b', 'c')" in err and not again.exists()


def test_a_key_rotation_continues_the_chain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old_private, old_public = generate_key_files(tmp_path / "old")
    new_private, new_public = generate_key_files(tmp_path / "new")
    path = tmp_path / "log.db"
    asyncio.run(_build(path, Path(old_private)))

    async def write_on() -> None:
        async with SQLiteEventStore(path, signing_key=new_private) as store:
            await store.append(events(B, N_B, N_B + 5), expected_sequence=N_B - 1)

    asyncio.run(write_on())
    code, out, _ = verify(capsys, path, Path(old_public), "--public-key", new_public)
    assert code == 0 and "checkpoint #5 (signature verified), 0 events after it" in out
    code, _, err = verify(capsys, path, Path(new_public))  # the old key's part is unproven
    assert code == 2 and "wrong --public-key" in err
