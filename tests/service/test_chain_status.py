"""``GET /v1/apps/{app_id}/verify`` with signed checkpoints: ``signed_head`` through a real
``statelog serve`` writing a signed log, then over that log restarted with the right
public key, a wrong one, none, and after the log was tampered with."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from statelog.eventstore import Checkpoint, generate_key_files

from .conftest import ROOT, ServeProcess, wait_status

APP = "signed-app"
PK = "tenant-s"


def verify(server: ServeProcess, app_id: str = APP, pk: str = PK) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/v1/apps/{app_id}/verify", params={"partition_key": pk}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"ok", "sequence_id", "broken", "signed_head"}
    return body


def run_counter(server: ServeProcess, app_id: str = APP, pk: str = PK) -> list[dict[str, Any]]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(
            "/v1/runs", json={"graph": "counter", "app_id": app_id, "partition_key": pk}
        )
        assert response.status_code == 202, response.text
        wait_status(client, response.json()["id"], {"completed"})
        events: list[dict[str, Any]] = client.get(
            f"/v1/apps/{app_id}/events", params={"partition_key": pk}
        ).json()["events"]
    return events


def sql(db: Path, statement: str, *params: Any) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(statement, params).rowcount


@pytest.fixture
def signed_log(tmp_path: Path, make_server: Any) -> tuple[Path, str, list[dict[str, Any]]]:
    """A log a service signed (``--signing-key``): one completed app, checkpointed at close."""
    key, _ = generate_key_files(tmp_path / "signing.key")
    writer = make_server("--signing-key", key)
    events = run_counter(writer)
    assert writer.stop() == 0, writer.log.read_text()[-3000:]
    return tmp_path / "log.db", key, events


def test_the_right_public_key_verifies_the_signed_head(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any
) -> None:
    db, key, events = signed_log
    server = make_server("--public-key", key + ".pub", db=db)
    body = verify(server)
    head = body["signed_head"]
    print(head)
    assert body["ok"] is True and body["sequence_id"] == events[-1]["sequence_id"]
    assert head["status"] == "verified"
    assert head["signature_ok"] is True and head["head_agrees"] is True
    assert head["checkpoint"] >= 1 and head["checkpoint"] == head["latest_checkpoint"]
    # the head it signed is the stream's last event, and the time is the checkpoint's
    assert head["sequence_id"] == events[-1]["sequence_id"]
    assert head["hash"] == events[-1]["hash"]
    assert head["created_at"].endswith("Z")
    assert head["created_at"][:19] >= events[-1]["timestamp"][:19]  # signed after the event
    assert head["unsigned_events"] == 0 and head["problems"] == []


def test_without_a_public_key_the_signature_is_unchecked(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any
) -> None:
    db, _, events = signed_log
    head = verify(make_server(db=db))["signed_head"]
    assert head["status"] == "unchecked"
    assert head["signature_ok"] is None and head["head_agrees"] is True
    assert head["sequence_id"] == events[-1]["sequence_id"]


def test_a_wrong_public_key_is_a_key_mismatch(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any, tmp_path: Path
) -> None:
    db, _, _ = signed_log
    _, other = generate_key_files(tmp_path / "other.key")
    head = verify(make_server("--public-key", other, db=db))["signed_head"]
    print(head)
    assert head["status"] == "key-mismatch"
    assert head["signature_ok"] is False
    assert "not given" in head["problems"][0]


def test_a_cut_tail_disagrees_with_the_signed_head(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any
) -> None:
    db, key, events = signed_log
    last = events[-1]["sequence_id"]
    cut = sql(
        db,
        "DELETE FROM events WHERE sequence_id > ? AND stream_id = "
        "(SELECT id FROM streams WHERE partition_key = ? AND app_id = ?)",
        last - 2,
        PK,
        APP,
    )
    assert cut == 2
    body = verify(make_server("--public-key", key + ".pub", db=db))
    head = body["signed_head"]
    print(head)
    assert body["ok"] is True  # the chain alone cannot see a cut tail
    assert body["sequence_id"] == last - 2
    assert head["status"] == "head-disagrees" and head["head_agrees"] is False
    assert head["signature_ok"] is True and head["sequence_id"] == last
    assert any(f"ends at {last - 2}" in p for p in head["problems"])


def test_a_forged_head_does_not_verify(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any, tmp_path: Path
) -> None:
    """Cut the tail, then rewrite the latest checkpoint to sign the shorter head: without
    the private key its signature no longer verifies (re-signed with another key, the
    key it names is not the service's)."""
    db, key, events = signed_log
    new_last = events[-1]["sequence_id"] - 3
    sql(
        db,
        "DELETE FROM events WHERE sequence_id > ? AND stream_id = "
        "(SELECT id FROM streams WHERE partition_key = ? AND app_id = ?)",
        new_last,
        PK,
        APP,
    )
    with sqlite3.connect(db) as conn:
        number, body = conn.execute(
            "SELECT sequence, body FROM signed_heads ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        checkpoint = Checkpoint.from_bytes(bytes(body))
        forged = msgspec.structs.replace(
            checkpoint,
            changed=[
                (pk, app, new_last, events[new_last]["hash"])
                if (pk, app) == (PK, APP)
                else (pk, app, seq, h)
                for pk, app, seq, h in checkpoint.changed
            ],
        )
        conn.execute(
            "UPDATE signed_heads SET body = ? WHERE sequence = ?", (forged.to_bytes(), number)
        )
    server = make_server("--public-key", key + ".pub", db=db)
    head = verify(server)["signed_head"]
    print(head)
    assert head["status"] == "signature-invalid" and head["signature_ok"] is False
    assert head["sequence_id"] == new_last  # what the forged checkpoint claims ...
    assert head["head_agrees"] is True  # ... matches the cut stream, and proves nothing
    assert f"checkpoint #{number}: signature does not verify" in head["problems"]
    assert server.stop() == 0

    # the same forgery signed with the attacker's own key: a key the service was not given
    from statelog.eventstore import load_private_key
    from statelog.eventstore._checkpoints import key_id, sign

    attacker = load_private_key(generate_key_files(tmp_path / "attacker.key")[0])
    resigned = sign(
        attacker,
        msgspec.structs.replace(forged, key_id=key_id(attacker.public_key())),
    )
    sql(
        db,
        "UPDATE signed_heads SET body = ?, signature = ? WHERE sequence = ?",
        resigned.body,
        resigned.signature,
        number,
    )
    head = verify(make_server("--public-key", key + ".pub", db=db))["signed_head"]
    assert head["status"] == "key-mismatch" and head["signature_ok"] is False


def test_an_unsigned_log_says_unsigned(make_server: Any) -> None:
    server = make_server()
    events = run_counter(server)
    body = verify(server)
    head = body["signed_head"]
    assert body["ok"] is True and body["sequence_id"] == events[-1]["sequence_id"]
    assert head["status"] == "unsigned"
    assert head["checkpoint"] is None and head["latest_checkpoint"] is None
    assert head["sequence_id"] is None and head["signature_ok"] is None
    assert head["reason"] == "the log has no signed checkpoint"


@pytest.mark.parametrize("content", [None, b"not a key\n"])
def test_serve_refuses_a_bad_public_key_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pub"
    if content is not None:
        path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "serve", "--db", str(tmp_path / "x.db"), "--demo"]
        + ["--port", "0", "--public-key", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("statelog: error:"), done.stderr
    assert str(path) in lines[0]
    assert not (tmp_path / "x.db").exists()  # nothing written


def test_a_checkpoint_altered_while_the_service_runs_is_seen_at_once(
    signed_log: tuple[Path, str, list[dict[str, Any]]], make_server: Any
) -> None:
    """The service keeps its last replay of the checkpoints; any change to them is a new
    one. Altered here: a later checkpoint that signed another app only, so only the
    replay of the whole chain can tell."""
    db, key, _ = signed_log
    writer = make_server("--signing-key", key, db=db)
    run_counter(writer, app_id="other-app")
    assert writer.stop() == 0
    server = make_server("--public-key", key + ".pub", db=db)
    first = verify(server)["signed_head"]
    assert first["status"] == "verified" and first["checkpoint"] < first["latest_checkpoint"]
    assert verify(server)["signed_head"]["status"] == "verified"  # the kept replay
    latest = first["latest_checkpoint"]
    assert sql(db, "UPDATE signed_heads SET signature = zeroblob(64) WHERE sequence = ?", latest)
    head = verify(server)["signed_head"]
    assert head["status"] == "checkpoints-invalid" and head["signature_ok"] is True
    assert f"checkpoint #{latest}: signature does not verify" in head["problems"]
