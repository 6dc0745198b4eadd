"""``statelog verify`` on a log whose rows hold what statelog never writes: a
finding (exit 1) naming the stream and the row, never an error (exit 2), and
the other streams are still walked. (Exit 2 stays for bad usage, bad keys and
files that are not logs: tests/cli/test_cli_matrix.py.) The crafted-ops
matrix is tests/eventstore/test_verify_crafted_ops.py."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from statelog._cli import main
from tests.cli.test_cli_matrix import make_files

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("deep", [False, True])
def test_a_text_body_is_a_finding_not_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, deep: bool
) -> None:
    make_files(tmp_path)  # body.db: event position 3 has a TEXT body
    db = sqlite3.connect(tmp_path / "body.db")
    try:
        pk, app, seq = db.execute(
            "SELECT s.partition_key, s.app_id, e.sequence_id FROM events e "
            "JOIN streams s ON s.id = e.stream_id WHERE e.position = 3"
        ).fetchone()
    finally:
        db.close()
    code = main(["verify", "--db", str(tmp_path / "body.db"), *(["--deep"] if deep else [])])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert err == ""
    broken = [line for line in out.splitlines() if line.startswith("broken:")]
    assert broken == [
        f"broken: stream {(pk, app)!r} sequence_id {seq} stores a BLOB hash and a TEXT body, "
        "expected BLOBs"
    ], out
    assert "failed: 1 problems in 2 streams, 8 events" in out


def test_in_a_process_a_text_body_is_exit_1_and_no_traceback(tmp_path: Path) -> None:
    make_files(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "verify", "--db", "body.db", "--deep"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == ""
    assert "stores a BLOB hash and a TEXT body, expected BLOBs" in done.stdout
