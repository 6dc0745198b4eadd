"""Signed checkpoints of the SQLite store under SIGKILL and hand-forged rows (issue #13).

A real signing writer (``tests/eventstore/checkpoint_worker.py``) appends in
its own process with a checkpoint every few events over ~1,000 streams (so
each checkpoint's Merkle root takes a while) and is killed with SIGKILL at
seeded random points, half of them right as a checkpoint row is being
inserted; each time the same file is reopened and written on. After every
kill: the file opens, ``statelog verify --public-key`` exits 0 (a checkpoint
behind the log is reported as events after it, not as tampering), every
acknowledged append is there, and the checkpoint chain replays (dense
numbers, previous digests, signatures, root = heads) with the next session's
checkpoints linked to the last one that survived. Then the kill between the
events' commit and the checkpoint's, held deterministically, and checkpoint
rows forged by hand: verify names each with exit 1, and a writer refuses to
sign on top of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from statelog import CheckpointError
from statelog._cli import main
from statelog.eventstore import SQLiteEventStore, generate_key_files, load_public_key
from statelog.eventstore._checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    digest,
    key_id,
    load_private_key,
    make_checkpoint,
    replay,
    sign,
)
from statelog.eventstore.sqlite._checkpoints import read_checkpoints
from tests.ops_support import v2

ROOT = Path(__file__).resolve().parents[2]
PK = "tenant"
STREAMS = 1000  # heads in every checkpoint's Merkle root
KILLS = 24


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.eventstore.checkpoint_worker", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the writer stopped on its own: {err}")
    fact: dict[str, Any] = json.loads(line)
    assert "error" not in fact, fact
    return fact


def kill(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """SIGKILL the writer; the lines it printed before it died."""
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def note_acks(facts: list[dict[str, Any]], acked: dict[str, int]) -> None:
    for fact in facts:
        if "ack" in fact:
            app_id, last = fact["ack"]
            acked[app_id] = max(acked.get(app_id, -1), last)


def on_disk(path: Path) -> tuple[dict[str, int], list[tuple[int, SignedCheckpoint]]]:
    """Every stream's last sequence id and every checkpoint row, read with plain sqlite3."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        heads = dict(
            db.execute(
                "SELECT s.app_id, MAX(e.sequence_id) FROM streams s "
                "JOIN events e ON e.stream_id = s.id GROUP BY s.id"
            ).fetchall()
        )
        return heads, read_checkpoints(db)
    finally:
        db.close()


def verify(capsys: pytest.CaptureFixture[str], path: Path, public: str) -> tuple[int, str]:
    code = main(["verify", "--db", str(path), "--public-key", public])
    out, _ = capsys.readouterr()
    return code, out


def assert_chain(rows: list[tuple[int, SignedCheckpoint]], public: Any) -> Any:
    """The checkpoints replay under ``public`` with no problem, numbered 1, 2, 3, ..."""
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    replayed = replay(rows, [public])
    assert replayed.problems == []
    return replayed


async def seed(path: Path, key: str, streams: int) -> None:
    async with SQLiteEventStore(path, signing_key=key, checkpoint_every=10**9) as store:
        for i in range(streams):
            app_id = f"s{i:04d}"
            await store.append(
                [v2(partition_key=PK, app_id=app_id, sequence_id=0, kind="k", writes={"n": 0})],
                expected_sequence=-1,
            )


def test_sigkill_at_random_points_never_tears_the_checkpoint_chain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    public_key = load_public_key(public)
    path = tmp_path / "log.db"
    asyncio.run(seed(path, private, STREAMS))
    rng = random.Random(1313)
    acked: dict[str, int] = {}
    _, rows = on_disk(path)
    survived = rows[-1]  # (sequence, signed) of the latest checkpoint on disk
    inside = behind = 0
    unsigned_before: dict[str, int] = {}
    for round_ in range(KILLS):
        proc = start("loop", str(path), private, str(round_), str(STREAMS))
        try:
            assert read_line(proc).get("status") == "ready"
            facts: list[dict[str, Any]] = []
            target_checkpoint = round_ % 2 == 1
            acks_first = rng.randrange(0, 12) if target_checkpoint else rng.randrange(1, 60)
            killed_at: int | None = None
            while True:
                fact = read_line(proc)
                facts.append(fact)
                acks_first -= "ack" in fact
                if acks_first <= 0 and (not target_checkpoint or "ckpt" in fact):
                    killed_at = fact.get("ckpt")
                    break
            facts += kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        note_acks(facts, acked)

        heads, rows = on_disk(path)
        # every acknowledged append is there (more may be: committed, not yet printed)
        missing = {app: last for app, last in acked.items() if heads.get(app, -1) < last}
        assert missing == {}, f"kill {round_}: acknowledged appends lost: {missing}"
        # no torn row: the chain replays, and what survived before is untouched and linked to
        replayed = assert_chain(rows, public_key)

        def signed_at(app: str, heads_: Any = replayed.heads) -> int:
            return int(heads_.get((PK, app), (-1,))[0])

        seq, signed = survived
        assert rows[seq - 1] == (seq, signed), f"kill {round_}: checkpoint #{seq} was rewritten"
        if len(rows) > seq:
            assert Checkpoint.from_bytes(rows[seq][1].body).previous == digest(signed.body)
        if len(rows) > seq:  # the session signed: what the last one left unsigned is now covered
            late = {app: last for app, last in unsigned_before.items() if signed_at(app) < last}
            assert late == {}, f"kill {round_}: left unsigned by the session before: {late}"
        survived = rows[-1]
        if killed_at is not None and rows[-1][0] < killed_at:
            inside += 1  # killed inside checkpoint #killed_at's transaction: rolled back whole
        # the file reopens and the writer's view agrees with the disk
        assert asyncio.run(_reopen_heads(path)) == heads
        code, out = verify(capsys, path, public)
        assert code == 0, f"kill {round_}: {out}"
        assert "broken" not in out and f"checkpoint #{rows[-1][0]} (signature verified)" in out
        assert replayed.latest is not None
        unsigned = sum(last - signed_at(app) for app, last in heads.items())
        assert f", {unsigned} events after it" in out  # behind the log, said as such
        behind += unsigned > 0
        unsigned_before = {app: last for app, last in heads.items() if signed_at(app) < last}
    print(f"{KILLS} kills: {inside} inside a checkpoint's transaction, {behind} left it behind")
    assert inside > 0  # the window the test is about was hit (a 50 ms one, over 12 tries)
    # a real CLI process, at the end, says the same
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", str(path), "--public-key", public],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def _reopen_heads(path: Path) -> dict[str, int]:
    async with SQLiteEventStore(path, read_only=True) as store:
        return {
            s.app_id: await store.last_sequence(s.partition_key, s.app_id)
            for s in await store.streams()
        }


@pytest.mark.parametrize("where", ["none", "sign", "insert"])
def test_a_kill_between_the_events_commit_and_the_checkpoints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    public_key = load_public_key(public)
    path = tmp_path / "log.db"
    asyncio.run(seed(path, private, 3))
    _, before = on_disk(path)
    proc = start("hold", str(path), private, where)
    try:
        facts = []
        while "held" not in (fact := read_line(proc)):
            facts.append(fact)
        facts += kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    acked: dict[str, int] = {}
    note_acks(facts, acked)
    assert acked == {"h0": 4, "h1": 4, "h2": 4}
    heads, rows = on_disk(path)
    assert {app: heads[app] for app in acked} == acked  # the events are there ...
    assert rows == before  # ... the checkpoint is not, not even in part
    code, out = verify(capsys, path, public)
    assert code == 0 and "broken" not in out and ", 15 events after it" in out

    async def next_session() -> None:
        async with SQLiteEventStore(path, signing_key=private) as store:
            await store.append(
                [v2(partition_key=PK, app_id="s0000", sequence_id=1, kind="k", writes={})],
                expected_sequence=0,
            )

    asyncio.run(next_session())
    heads, rows = on_disk(path)
    assert len(rows) == len(before) + 1
    replayed = assert_chain(rows, public_key)
    latest = Checkpoint.from_bytes(rows[-1][1].body)
    assert latest.previous == digest(before[-1][1].body)  # linked to the one that survived
    covered = {app for _, app, _, _ in latest.changed}
    assert covered == {"h0", "h1", "h2", "s0000"}  # it covers the killed session's events
    assert {app: replayed.heads[PK, app][0] for app in heads} == heads
    code, out = verify(capsys, path, public)
    assert code == 0 and "broken" not in out and ", 0 events after it" in out


# --------------------------------------------------------------------------- forged rows


async def _signed_log(path: Path, key: str) -> None:
    """Three streams, five checkpoints (#1 .. #5)."""
    async with SQLiteEventStore(path, signing_key=key, checkpoint_every=10**9) as store:
        for n in range(5):
            for app_id in ("a", "b", "c"):
                await store.append(
                    [v2(partition_key=PK, app_id=app_id, sequence_id=n, kind="k", writes={})],
                    expected_sequence=n - 1,
                )
            await store.checkpoint()


def _forge(path: Path, how: str) -> None:
    db = sqlite3.connect(path)
    rows = {
        seq: (bytes(body), bytes(sig))
        for seq, body, sig in db.execute("SELECT sequence, body, signature FROM signed_heads")
    }
    if how == "truncated body":
        db.execute("UPDATE signed_heads SET body = ? WHERE sequence = 3", (rows[3][0][:-12],))
    elif how == "another body's signature":
        db.execute("UPDATE signed_heads SET signature = ? WHERE sequence = 3", (rows[4][1],))
    elif how == "sequence duplicated":
        db.execute("UPDATE signed_heads SET body = ?, signature = ? WHERE sequence = 3", rows[2])
    elif how == "middle row deleted":
        db.execute("DELETE FROM signed_heads WHERE sequence = 3")
    elif how == "last body truncated":
        db.execute("UPDATE signed_heads SET body = ? WHERE sequence = 5", (rows[5][0][:-1],))
    else:  # pragma: no cover
        raise AssertionError(how)
    db.commit()
    db.close()


FORGERIES = {
    "truncated body": "checkpoint #3: malformed checkpoint",
    "another body's signature": "checkpoint #3: signature does not verify",
    "sequence duplicated": "checkpoint #3: carries sequence 2, expected 3",
    "middle row deleted": "checkpoint #4: carries sequence 4, expected 3",
    "last body truncated": "checkpoint #5: malformed checkpoint",
}


@pytest.mark.parametrize("how", sorted(FORGERIES))
def test_a_forged_checkpoint_row_is_named_and_never_signed_on(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    how: str,
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_signed_log(path, private))
    code, out = verify(capsys, path, public)
    assert code == 0, out
    _forge(path, how)
    code, out = verify(capsys, path, public)
    assert code == 1, out
    assert f"broken: {FORGERIES[how]}" in out or FORGERIES[how] in out, out
    _, forged = on_disk(path)

    async def reopen() -> None:
        # checkpoint_every=1: the append starts a checkpoint in the background
        async with SQLiteEventStore(path, signing_key=private, checkpoint_every=1) as store:
            await store.append(
                [v2(partition_key=PK, app_id="a", sequence_id=5, kind="k", writes={})],
                expected_sequence=4,
            )
            for _ in range(400):  # the background checkpoint says it as it happens
                if any(r.name == "statelog.checkpoints" for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the refused background checkpoint was not logged")
            with pytest.raises(CheckpointError, match="refusing to sign on top of checkpoints"):
                await store.checkpoint()
        # at close too: the last checkpoint is refused the same way, not skipped silently

    with (
        caplog.at_level(logging.ERROR, "statelog.checkpoints"),
        pytest.raises(CheckpointError, match=FORGERIES[how].split(": ", 1)[1]),
    ):
        asyncio.run(reopen())
    heads, rows = on_disk(path)
    assert rows == forged  # nothing signed on top of the broken chain
    assert heads["a"] == 5  # the append itself was committed (it is chained, just unsigned)
    # said as it happened (the background checkpoint after the append), once
    said = [r.getMessage() for r in caplog.records if r.name == "statelog.checkpoints"]
    assert len(said) == 1 and "no checkpoint written" in said[0], said


def test_a_checkpoint_another_key_signed_after_the_writers_own_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Cut stream 'a' back by one event and sign a matching checkpoint #6 with another key."""
    private, public = generate_key_files(tmp_path / "key")
    other, _ = generate_key_files(tmp_path / "attacker")
    path = tmp_path / "log.db"
    asyncio.run(_signed_log(path, private))
    db = sqlite3.connect(path)
    db.execute(
        "DELETE FROM events WHERE sequence_id = 4 AND stream_id = "
        "(SELECT id FROM streams WHERE app_id = 'a')"
    )
    (a3,) = db.execute(
        "SELECT e.hash FROM events e JOIN streams s ON s.id = e.stream_id "
        "WHERE s.app_id = 'a' AND e.sequence_id = 3"
    ).fetchone()
    rows = read_checkpoints(db)
    replayed = replay(rows, [load_public_key(public)])
    heads = dict(replayed.heads)
    heads[PK, "a"] = (3, bytes(a3).hex())
    attacker = load_private_key(other)
    assert replayed.latest is not None
    forged = sign(
        attacker,
        make_checkpoint(
            sequence=6,
            previous=replayed.latest_digest,
            position=replayed.latest.position,
            created_at=replayed.latest.created_at,
            key_id=key_id(attacker.public_key()),
            heads=heads,
            changed=[(PK, "a", 3, bytes(a3).hex())],
        ),
    )
    db.execute("INSERT INTO signed_heads VALUES (6, ?, ?)", (forged.body, forged.signature))
    db.commit()
    db.close()
    # verify with the writer's public key cannot check #6: a typed error, exit 2
    assert main(["verify", "--db", str(path), "--public-key", public]) == 2
    assert "wrong --public-key" in capsys.readouterr().err

    async def reopen() -> None:
        async with SQLiteEventStore(path, signing_key=private) as store:
            await store.append(
                [v2(partition_key=PK, app_id="b", sequence_id=5, kind="k", writes={})],
                expected_sequence=4,
            )
            with pytest.raises(CheckpointError, match="checkpoint #6 is signed by key") as error:
                await store.checkpoint()
            assert error.value.sequence == 6
            assert "that signed checkpoint #5 before it" in error.value.reason

    with pytest.raises(CheckpointError, match="a forged checkpoint"):
        asyncio.run(reopen())
    _, after = on_disk(path)
    assert [seq for seq, _ in after] == [1, 2, 3, 4, 5, 6]  # the writer did not sign on


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM signed_heads WHERE sequence = 3",
        "UPDATE signed_heads SET (body, signature) = "
        "(SELECT body, signature FROM signed_heads WHERE sequence = 2) WHERE sequence = 3",
    ],
    ids=["deleted", "replaced by an older one"],
)
def test_the_newest_row_taken_from_under_a_running_writer_is_refused(
    tmp_path: Path, statement: str
) -> None:
    """The writer's own view of the table is no licence to sign over a change to it."""
    reason = "checkpoint #3, which this writer signed, is no longer in the table as signed"
    private, _ = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"

    async def run() -> None:
        async with SQLiteEventStore(path, signing_key=private, checkpoint_every=10**9) as store:
            for n in range(3):
                await store.append(
                    [v2(partition_key=PK, app_id="a", sequence_id=n, kind="k", writes={})],
                    expected_sequence=n - 1,
                )
                await store.checkpoint()
            db = sqlite3.connect(path)
            db.execute(statement)
            db.commit()
            db.close()
            _, tampered = on_disk(path)
            await store.append(
                [v2(partition_key=PK, app_id="a", sequence_id=3, kind="k", writes={})],
                expected_sequence=2,
            )
            with pytest.raises(CheckpointError, match=reason):
                await store.checkpoint()
            _, rows = on_disk(path)
            assert rows == tampered  # nothing signed in place of the row or on top of it
            with pytest.raises(CheckpointError, match=reason):
                await store.aclose()

    asyncio.run(run())


def test_an_anchored_checkpoint_re_signed_after_its_deletion_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, public = generate_key_files(tmp_path / "key")
    path = tmp_path / "log.db"
    asyncio.run(_signed_log(path, private))
    _, rows = on_disk(path)
    anchored = f"5:{digest(rows[4][1].body)}"  # what the anchor topic holds
    db = sqlite3.connect(path)  # cut stream 'a' back and drop the checkpoint that signed it
    db.execute("DELETE FROM signed_heads WHERE sequence = 5")
    db.execute(
        "DELETE FROM events WHERE sequence_id = 4 AND stream_id = "
        "(SELECT id FROM streams WHERE app_id = 'a')"
    )
    db.commit()
    db.close()

    async def write_on() -> None:  # a writer, restarted, signs a new #5 and a #6
        async with SQLiteEventStore(path, signing_key=private, checkpoint_every=10**9) as store:
            for n in (5, 6):
                await store.append(
                    [v2(partition_key=PK, app_id="b", sequence_id=n, kind="k", writes={})],
                    expected_sequence=n - 1,
                )
                await store.checkpoint()

    asyncio.run(write_on())
    code = main(
        ["verify", "--db", str(path), "--public-key", public, "--expect-checkpoint", anchored]
    )
    out, _ = capsys.readouterr()
    assert code == 1, out
    assert "checkpoint #5 has digest" in out and "the one published is" in out, out
