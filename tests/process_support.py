"""Running a Python script in a fresh interpreter, for tests of what a process leaves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_python(
    script: Path, *args: str, flags: tuple[str, ...] = (), timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (cwd: its folder) with ``flags`` for the interpreter; the test fails
    if it has not exited within ``timeout`` seconds (a hang at exit is a bug)."""
    try:
        return subprocess.run(
            [sys.executable, *flags, str(script), *args],
            cwd=script.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script did not exit within {timeout:g} s; stderr: {exc.stderr!r}")
