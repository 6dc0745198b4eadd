"""The canonical form, re-checked in another language: Node.js and the npm ``canonicalize``.

Node.js and npm are required (they are on every machine this project runs on);
the test fails, not skips, without them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

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
