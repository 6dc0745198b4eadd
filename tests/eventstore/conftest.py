"""Fixtures shared by the eventstore tests: the Node.js verifier, npm-installed once."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "docs" / "verify-node"


@pytest.fixture(scope="session")
def node_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/verify-node copied to a temporary directory with its npm packages installed.

    Node.js and npm are required (they are on every machine this project runs
    on): the test fails, not skips, without them.
    """
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
