"""The hash chain, re-checked in another language: Node.js, npm ``canonicalize``, node:crypto.

docs/verify-node/verify.mjs checks the RFC 8785 vectors and whole exports: every
export of hypothesis-generated runs passes, every tampered variant fails.

Node.js and npm are required (they are on every machine this project runs on);
the test fails, not skips, without them. The ``node_verifier`` fixture (npm
install, once a session) is in conftest.py; the Kafka half is test_node_kafka.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog.eventstore import (
    JSON,
    Event,
    SQLiteEventStore,
    audit_export,
    export_streams,
    generate_key_files,
    load_private_key,
    load_public_key,
    seal,
)
from statelog.eventstore.sqlite._checkpoints import read_checkpoints

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "canonical-vectors.json"


def _run(verifier: Path, vectors: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(verifier), "--vectors", str(vectors)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_node_canonicalize_agrees_with_every_vector(node_verifier: Path) -> None:
    done = _run(node_verifier, VECTORS)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(json.loads(VECTORS.read_text(encoding="utf-8")))
    assert f"{count} of {count} vectors match" in done.stdout


def test_node_verifier_rejects_a_vector_statelog_did_not_write(
    node_verifier: Path, tmp_path: Path
) -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    forged = tmp_path / "forged.json"
    # Python's float formatting, not RFC 8785's: the verifier must notice.
    vectors[0] = {"name": "python-repr", "json": "[1.0, 1e21]", "canonical": "[1.0,1e+21]"}
    forged.write_text(json.dumps(vectors), encoding="utf-8")
    done = _run(node_verifier, forged)
    assert done.returncode == 1
    assert "MISMATCH python-repr" in done.stdout


# --------------------------------------------------------------------------- exports

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)
ops = st.one_of(
    st.builds(
        lambda k, v: {"op": "set", "key": k, "value": v}, st.sampled_from("abc"), json_values
    ),
    st.builds(lambda k: {"op": "delete", "key": k}, st.sampled_from("abc")),
    st.builds(lambda v: {"op": "append", "key": "log", "value": v}, json_values),
    st.builds(lambda n: {"op": "increment", "key": "n", "by": n}, st.integers(-5, 5)),
)
steps = st.lists(
    st.tuples(
        st.lists(ops, max_size=3), json_values, st.dictionaries(st.sampled_from("xy"), json_values)
    ),
    min_size=1,
    max_size=6,
)


async def _export(tmp: Path, runs: list[list[Any]], key: bytes | None) -> Path:
    """Each run as a stream of a fresh SQLite log (sealed by the store), exported."""
    db, out = tmp / "log.db", tmp / "out.jsonl"
    async with await SQLiteEventStore.open(db, hmac_key=key) as store:
        for index, run in enumerate(runs):
            events = [
                Event(
                    partition_key="p/ü" if index % 2 else "",
                    app_id=f"app-{index}",
                    sequence_id=seq,
                    kind="action_completed",
                    action="step",
                    inputs=inputs,
                    ops=step_ops,
                    result=result,
                    timestamp=datetime(2026, 1, 2, 3, 4, 5, seq * 7, tzinfo=UTC),
                    duration_us=seq,
                )
                for seq, (step_ops, result, inputs) in enumerate(run)
            ]
            await store.append(events, expected_sequence=-1)
        await export_streams(store, out)
    return out


def _node_export(
    verifier: Path, path: Path, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["node", str(verifier), "--export", str(path)]
    env = dict(os.environ)
    if key is not None:
        env["STATELOG_NODE_KEY"] = key
        args += ["--hmac-key-env", "STATELOG_NODE_KEY"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=st.lists(steps, min_size=1, max_size=3), keyed=st.booleans())
def test_node_accepts_every_export_of_generated_runs(
    node_verifier: Path, tmp_path_factory: pytest.TempPathFactory, runs: list[Any], keyed: bool
) -> None:
    key = "k3y-ü" if keyed else None
    out = asyncio.run(_export(tmp_path_factory.mktemp("run"), runs, key and key.encode()))
    done = _node_export(node_verifier, out, key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok: {sum(map(len, runs))} v2 events checked")
    if keyed:  # and the same file under the wrong key is refused
        assert _node_export(node_verifier, out, "wrong").returncode == 1


def _tamper(lines: list[str], how: str) -> list[str]:
    body = lines[1:]  # the header stays
    if how == "value":
        body[1] = body[1].replace('"value":1', '"value":2', 1)
    elif how == "hash":
        record = json.loads(body[1])
        record["hash"] = "0" * 64
        body[1] = json.dumps(record)
    elif how == "prev_hash":
        record = json.loads(body[2])
        record["prev_hash"] = json.loads(body[0])["hash"]
        body[2] = json.dumps(record)
    elif how == "delete middle":
        del body[1]
    elif how == "delete first":
        del body[0]
    elif how == "swap":
        body[1], body[2] = body[2], body[1]
    elif how == "timestamp":
        body[1] = body[1].replace("05.000007Z", "05.000008Z", 1)
    return [lines[0], *body]


@pytest.mark.parametrize(
    "how", ["value", "hash", "prev_hash", "delete middle", "delete first", "swap", "timestamp"]
)
def test_node_rejects_each_tampered_variant(node_verifier: Path, tmp_path: Path, how: str) -> None:
    run = [([{"op": "set", "key": "a", "value": i}], None, {}) for i in range(5)]
    out = asyncio.run(_export(tmp_path, [run], None))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert _node_export(node_verifier, out).returncode == 0
    forged = tmp_path / "forged.jsonl"
    changed = _tamper(lines, how)
    assert changed != lines
    forged.write_text("\n".join(changed) + "\n", encoding="utf-8")
    done = _node_export(node_verifier, forged)
    assert done.returncode == 1, done.stdout
    assert "BROKEN" in done.stdout


# --------------------------------------------------------------------------- checkpoints


async def _signed_export(tmp: Path) -> tuple[Path, Path]:
    """A log written in two sessions by a signing store (two checkpoints), exported."""
    private, public = generate_key_files(tmp / "key")
    db, out = tmp / "log.db", tmp / "signed.jsonl"
    runs = {"a": 8, "b": 3, "ü/c": 2}
    async with SQLiteEventStore(db, signing_key=private) as store:
        for app_id, count in runs.items():
            await store.append(_plain_events(app_id, 0, count), expected_sequence=-1)
    async with SQLiteEventStore(db, signing_key=private) as store:
        await store.append(_plain_events("a", 8, 10), expected_sequence=7)
    conn = sqlite3.connect(db)
    checkpoints = read_checkpoints(conn)
    conn.close()
    assert len(checkpoints) >= 2, checkpoints
    async with SQLiteEventStore(db, read_only=True) as store:
        await export_streams(store, out, checkpoints=checkpoints)
    return out, Path(public)


def _plain_events(app_id: str, start: int, stop: int) -> list[Event]:
    return [
        Event(
            partition_key="p",
            app_id=app_id,
            sequence_id=seq,
            kind="action_completed",
            ops=[{"op": "set", "key": "balance", "value": seq}],
        )
        for seq in range(start, stop)
    ]


def _node_signed(
    verifier: Path, path: Path, public: Path | None
) -> subprocess.CompletedProcess[str]:
    args = ["node", str(verifier), "--export", str(path)]
    if public is not None:
        args += ["--public-key", str(public)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _reseal(records: list[dict[str, Any]], start: int) -> None:
    """Recompute the SHA-256 chain of ``records`` from index ``start`` (a consistent rewrite)."""
    prev = records[start - 1]["hash"] if start else ""
    for record in records[start:]:
        record["prev_hash"] = prev
        event = JSON.decode_event(json.dumps(record, ensure_ascii=False).encode())
        (sealed,) = seal([event], prev)
        record["hash"] = prev = sealed.hash


def _forge(lines: list[str], how: str, tmp: Path) -> list[str]:
    header, rest = lines[0], lines[1:]
    events = [json.loads(line) for line in rest if "statelog_checkpoint" not in line]
    checkpoints = [json.loads(line) for line in rest if "statelog_checkpoint" in line]
    stream_a = [e for e in events if e["app_id"] == "a"]
    others = [e for e in events if e["app_id"] != "a"]
    if how == "checkpoint body edited":
        inner = checkpoints[-1]["statelog_checkpoint"]
        body = json.loads(inner["body"])
        body["changed"][0][3] = "0" * 64  # a head hash, the signature left as it was
        inner["body"] = rfc8785.dumps(body).decode()
    elif how == "checkpoint re-signed by another key":
        other, _ = generate_key_files(tmp / "other")
        inner = checkpoints[-1]["statelog_checkpoint"]
        inner["signature"] = load_private_key(other).sign(inner["body"].encode()).hex()
    elif how == "old checkpoint replayed":
        checkpoints.append(checkpoints[0])
    elif how == "first checkpoint deleted":
        del checkpoints[0]
    elif how == "tail deleted":
        del stream_a[-2:]
    elif how == "stream deleted":
        others = [e for e in others if e["app_id"] != "b"]
    elif how == "stream rewritten":
        stream_a[3]["ops"] = [{"op": "set", "key": "balance", "value": 10**9}]
        _reseal(stream_a, 3)
    body = [json.dumps(e, ensure_ascii=False) for e in stream_a + others]
    body += [json.dumps(c, ensure_ascii=False) for c in checkpoints]
    return [header, *body]


#: each forgery, and what the Node verifier must say of it
FORGERIES = {
    "checkpoint body edited": "checkpoint #2: signature does not verify",
    "checkpoint re-signed by another key": "checkpoint #2: signature does not verify",
    "old checkpoint replayed": "checkpoint #1 carries sequence 1, expected 3",
    "first checkpoint deleted": "checkpoint #2 carries sequence 2, expected 1",
    "tail deleted": 'stream ["p","a"]: ends at 7, checkpoint #2 signed it up to 9',
    "stream deleted": 'stream ["p","b"]: is missing, checkpoint #2 signed it up to 2',
    "stream rewritten": 'stream ["p","a"] sequence_id 9: is not the event checkpoint #2 signed',
}


def test_node_checks_the_signed_checkpoints_of_an_export(
    node_verifier: Path, tmp_path: Path
) -> None:
    out, public = asyncio.run(_signed_export(tmp_path))
    checked = _node_signed(node_verifier, out, public)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "15 v2 events checked in 3 streams" in checked.stdout
    assert "checkpoints (signatures checked)" in checked.stdout
    unkeyed = _node_signed(node_verifier, out, None)
    assert unkeyed.returncode == 0, unkeyed.stdout
    assert "(signatures not checked)" in unkeyed.stdout
    # Python's own offline audit agrees with the file as it is
    report = asyncio.run(audit_export(out, public_keys=[load_public_key(public)]))
    assert report.findings == []


@pytest.mark.parametrize("how", FORGERIES)
def test_node_names_each_forgery_of_a_signed_export(
    node_verifier: Path, tmp_path: Path, how: str
) -> None:
    out, public = asyncio.run(_signed_export(tmp_path))
    lines = out.read_text(encoding="utf-8").splitlines()
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join(_forge(lines, how, tmp_path)) + "\n", encoding="utf-8")
    done = _node_signed(node_verifier, forged, public)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout
    assert FORGERIES[how] in done.stdout, done.stdout
    # and statelog's own audit names it too: the two verifiers agree
    report = asyncio.run(audit_export(forged, public_keys=[load_public_key(public)]))
    assert report.findings, how


def test_without_the_public_key_a_forged_signature_is_the_documented_limit(
    node_verifier: Path, tmp_path: Path
) -> None:
    # The chain of checkpoints and the heads are checked with or without a key;
    # only the key tells a signature made by someone else (docs/operations.md).
    out, public = asyncio.run(_signed_export(tmp_path))
    lines = out.read_text(encoding="utf-8").splitlines()
    forged = tmp_path / "forged.jsonl"
    forged.write_text(
        "\n".join(_forge(lines, "checkpoint re-signed by another key", tmp_path)) + "\n",
        encoding="utf-8",
    )
    assert _node_signed(node_verifier, forged, None).returncode == 0
    assert _node_signed(node_verifier, forged, public).returncode == 1


@pytest.mark.parametrize("what", ["missing", "not a key", "rsa"])
def test_node_refuses_a_bad_public_key_file_with_exit_2(
    node_verifier: Path, tmp_path: Path, what: str
) -> None:
    out, _ = asyncio.run(_signed_export(tmp_path))
    key = tmp_path / "bad.pub"
    if what == "not a key":
        key.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    elif what == "rsa":
        rsa = _rsa_public_pem()
        key.write_bytes(rsa)
    done = _node_signed(node_verifier, out, key)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() and "Error" not in done.stderr.splitlines()[0][:5]


def _rsa_public_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
