"""Snapshots of a signing writer, checked by a verifier that holds only the public key.

A signing writer seals each snapshot's checksum with a MAC derived from its
private key (``snapshot_mac_key``), which no verifier holds. ``verify`` must
neither call those honest snapshots forged (it once reported every one as
"its checksum does not match its state") nor let a forged one through: with
checkpoints in the file, each snapshot's state is checked against the fold.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from statelog.eventstore._snapshots import _digest


def _statelog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statelog", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def signed_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("signed-demo")
    key = where / "key"
    assert _statelog("keys", "generate", "--out", str(key)).returncode == 0
    db = where / "demo.db"
    done = _statelog("demo", "--db", str(db), "--signing-key", str(key), "--snapshot-every", "25")
    assert done.returncode == 0, done.stderr
    return db, Path(f"{key}.pub")


def _copy(db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.db"
    with sqlite3.connect(db) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


@pytest.mark.parametrize("keyed", [True, False], ids=["public-key", "no-key"])
def test_honest_snapshots_of_a_signing_writer_verify(
    signed_demo: tuple[Path, Path], keyed: bool
) -> None:
    db, public = signed_demo
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] > 0
    args = ["verify", "--db", str(db), *(["--public-key", str(public)] if keyed else [])]
    done = _statelog(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checksum" not in done.stdout


@pytest.mark.parametrize("keyed", [True, False], ids=["public-key", "no-key"])
def test_a_forged_snapshot_of_a_signing_writer_is_named(
    signed_demo: tuple[Path, Path], tmp_path: Path, keyed: bool
) -> None:
    db = _copy(signed_demo[0], tmp_path)
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT id, partition_key, app_id, sequence_id, position, event_hash, state "
            "FROM snapshots ORDER BY id LIMIT 1"
        ).fetchone()
        ident, pk, app, seq, position, event_hash, blob = row
        state = msgspec.msgpack.decode(blob)
        key = sorted(state)[0]
        state[key] = "forged"  # and its checksum recomputed as a forger can: unkeyed
        forged = msgspec.msgpack.encode(state)
        digest = _digest(None, (pk, app, seq, position, event_hash, forged))
        conn.execute(
            "UPDATE snapshots SET state = ?, digest = ? WHERE id = ?", (forged, digest, ident)
        )
    args = ["verify", "--db", str(db)]
    if keyed:
        args += ["--public-key", str(signed_demo[1])]
    done = _statelog(*args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "snapshot: its state is not the fold of the events up to it (forged)" in done.stdout
    assert f"sequence_id {seq}" in done.stdout or f"#{seq}" in done.stdout, done.stdout
