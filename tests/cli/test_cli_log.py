"""``statelog verify / export / import`` run as real processes on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from statelog import eventstore
from statelog.eventstore import Event
from tests.ops_support import v2

REPO = Path(__file__).resolve().parents[2]


def statelog(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "statelog", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def events(app_id: str, n: int, partition_key: str = "t") -> list[Event]:
    return [
        v2(
            partition_key=partition_key,
            app_id=app_id,
            sequence_id=seq,
            kind="action_completed",
            action="step",
            writes={"count": seq + 1000, "name": f"n{seq}"},
        )
        for seq in range(n)
    ]


async def make_db(path: Path, *, hmac_key: bytes | None = None) -> None:
    async with eventstore.SQLiteEventStore(path, hmac_key=hmac_key) as store:
        await store.append(events("orders", 6), expected_sequence=-1)
        await store.append(events("billing", 4, partition_key=""), expected_sequence=-1)
        await store.append(events("orders", 9)[6:], expected_sequence=5)


def tamper(path: Path, sql: str, *params: object) -> None:
    """Run one UPDATE on the SQLite store's ``events`` table, behind the store's back."""
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(sql, params)
        assert cursor.rowcount == 1
        conn.commit()
    finally:
        conn.close()


def row_of(app_id: str, sequence_id: int) -> str:
    return (
        f"stream_id = (SELECT id FROM streams WHERE app_id = '{app_id}') "
        f"AND sequence_id = {sequence_id}"
    )


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "statelog.db"
    await make_db(path)
    return path


# --------------------------------------------------------------------------- verify


def test_verify_intact_db_in_the_working_directory(db: Path) -> None:
    done = statelog(db.parent, "verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: 2 streams, 13 events"


def test_verify_one_app_and_one_partition(db: Path) -> None:
    one = statelog(db.parent, "verify", "--db", str(db), "orders")
    assert (one.returncode, one.stdout.strip()) == (0, "ok: 1 streams, 9 events")
    part = statelog(db.parent, "verify", "--db", str(db), "--partition-key", "")
    assert (part.returncode, part.stdout.strip()) == (0, "ok: 1 streams, 4 events")
    missing = statelog(db.parent, "verify", "--db", str(db), "nope")
    assert missing.returncode == 2 and "no stream of app 'nope'" in missing.stderr


def test_verify_names_a_changed_hash(db: Path) -> None:
    tamper(db, f"UPDATE events SET hash = ? WHERE {row_of('orders', 3)}", bytes(32))
    done = statelog(db.parent, "verify", "--db", str(db))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stream ('t', 'orders') sequence_id 3" in done.stdout
    assert "hash does not match" in done.stdout


def test_verify_names_a_changed_payload(db: Path) -> None:
    # The stored body of event 7 holds the number 1007; make it 1008 (same length).
    conn = sqlite3.connect(db)
    (body,) = conn.execute(f"SELECT body FROM events WHERE {row_of('orders', 7)}").fetchone()
    conn.close()
    old = msgspec.msgpack.encode(1007)
    assert body.count(old) == 1
    tamper(
        db,
        f"UPDATE events SET body = ? WHERE {row_of('orders', 7)}",
        body.replace(old, msgspec.msgpack.encode(1008)),
    )
    done = statelog(db.parent, "verify", "--db", str(db), "orders")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stream ('t', 'orders') sequence_id 7" in done.stdout


def test_verify_names_a_changed_sequence(db: Path) -> None:
    tamper(db, f"UPDATE events SET sequence_id = 99 WHERE {row_of('billing', 2)}")
    done = statelog(db.parent, "verify", "--db", str(db))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stream ('', 'billing') sequence_id 2" in done.stdout


async def test_verify_with_the_hmac_key(tmp_path: Path) -> None:
    path = tmp_path / "signed.db"
    await make_db(path, hmac_key=b"s3cret")
    good = statelog(
        tmp_path, "verify", "--db", str(path), "--hmac-key-env", "KEY", env={"KEY": "s3cret"}
    )
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = statelog(
        tmp_path, "verify", "--db", str(path), "--hmac-key-env", "KEY", env={"KEY": "guess"}
    )
    assert wrong.returncode == 1 and "sequence_id 0" in wrong.stdout
    unset = statelog(tmp_path, "verify", "--db", str(path), "--hmac-key-env", "NOT_SET_ANYWHERE")
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE" in unset.stderr


def test_missing_db_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    for args in (["verify"], ["export", "out.jsonl"], ["verify", "--db", "x/y.db"]):
        done = statelog(tmp_path, *args)
        assert done.returncode == 2, args
        assert "does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "statelog.db"
    junk.write_bytes(b"definitely not sqlite\n" * 300)
    done = statelog(tmp_path, "verify")
    assert done.returncode == 2
    assert done.stderr.startswith("statelog: error:")
    assert junk.read_bytes() == b"definitely not sqlite\n" * 300


# --------------------------------------------------------------------------- export / import


def test_export_import_export_is_byte_for_byte(db: Path) -> None:
    tmp = db.parent
    first = statelog(tmp, "export", "--db", str(db), "first.jsonl")
    assert first.returncode == 0, first.stderr
    assert "exported 13 events of 2 streams" in first.stdout
    loaded = statelog(tmp, "import", "--db", "copy.db", "first.jsonl")
    assert loaded.returncode == 0, loaded.stderr
    assert "imported 13 events" in loaded.stdout
    again = statelog(tmp, "export", "--db", "copy.db", "second.jsonl")
    assert again.returncode == 0, again.stderr
    assert (tmp / "first.jsonl").read_bytes() == (tmp / "second.jsonl").read_bytes()
    assert statelog(tmp, "verify", "--db", "copy.db").stdout.strip() == "ok: 2 streams, 13 events"


def test_export_selected_apps(db: Path) -> None:
    tmp = db.parent
    done = statelog(tmp, "export", "--app-id", "billing", "--app-id", "orders", "both.jsonl")
    assert done.returncode == 0 and "13 events of 2 streams" in done.stdout
    one = statelog(tmp, "export", "--app-id", "billing", "billing.jsonl")
    assert one.returncode == 0 and "4 events of 1 streams" in one.stdout
    assert {e.app_id for e in eventstore.iter_export(tmp / "billing.jsonl")} == {"billing"}
    bad = statelog(tmp, "export", "--app-id", "ghost", "ghost.jsonl")
    assert bad.returncode == 2 and "'ghost'" in bad.stderr
    assert not (tmp / "ghost.jsonl").exists()


def test_import_of_a_tampered_file_writes_nothing(db: Path) -> None:
    tmp = db.parent
    assert statelog(tmp, "export", "all.jsonl").returncode == 0
    text = (tmp / "all.jsonl").read_text()
    (tmp / "all.jsonl").write_text(
        text.replace('"key":"count","value":1004', '"key":"count","value":1005', 1)
    )
    done = statelog(tmp, "import", "--db", "target.db", "all.jsonl")
    assert done.returncode == 2
    assert "'t/orders' broken at #4" in done.stderr
    assert statelog(tmp, "verify", "--db", "target.db").stdout.strip() == "ok: 0 streams, 0 events"


def test_export_into_a_missing_directory(db: Path) -> None:
    done = statelog(db.parent, "export", "no/such/dir/out.jsonl")
    assert done.returncode == 2
    assert "cannot write 'no/such/dir/out.jsonl'" in done.stderr


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    done = statelog(tmp_path, "import", "nothing.jsonl")
    assert done.returncode == 2 and "no export file" in done.stderr
    assert list(tmp_path.iterdir()) == []


async def test_sigkill_during_import_then_import_again_completes(tmp_path: Path) -> None:
    """An import killed midway leaves whole batches; running it again finishes the job."""
    import random
    import signal
    import time

    source = tmp_path / "source.db"
    async with eventstore.SQLiteEventStore(source) as store:
        for app in range(8):
            await store.append(events(f"app{app}", 1500), expected_sequence=-1)
    assert statelog(tmp_path, "export", "--db", str(source), "big.jsonl").returncode == 0
    rng = random.Random(7)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    for round_ in range(2):
        target = tmp_path / f"target{round_}.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "statelog", "import", "--db", str(target), "big.jsonl"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.2, 0.7))  # the file is open: check, then batches of 1,000
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            check = statelog(tmp_path, "verify", "--db", str(target))
            assert check.returncode == 0, check.stdout + check.stderr
        done = statelog(tmp_path, "import", "--db", str(target), "big.jsonl")
        assert done.returncode == 0, done.stderr
        again = statelog(tmp_path, "export", "--db", str(target), f"again{round_}.jsonl")
        assert again.returncode == 0, again.stderr
        assert (tmp_path / f"again{round_}.jsonl").read_bytes() == (
            tmp_path / "big.jsonl"
        ).read_bytes()
