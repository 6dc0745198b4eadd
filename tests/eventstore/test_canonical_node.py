"""The hash chain, re-checked in another language: Node.js, npm ``canonicalize``, node:crypto.

docs/verify-node/verify.mjs checks the RFC 8785 vectors and whole exports: every
export of hypothesis-generated runs passes, every tampered variant fails.

Node.js and npm are required (they are on every machine this project runs on);
the test fails, not skips, without them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statelog.eventstore import Event, SQLiteEventStore, export_streams

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "docs" / "verify-node"
VECTORS = ROOT / "docs" / "canonical-vectors.json"


@pytest.fixture(scope="session")
def node_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are required for the cross-language verifier"
    where = tmp_path_factory.mktemp("verify-node")
    for name in ("package.json", "verify.mjs"):
        shutil.copy(VERIFIER / name, where / name)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return where / "verify.mjs"


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
