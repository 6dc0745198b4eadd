"""docs/burr.md is a tested claim: its Python blocks run, its CLI lines work on their log.

tests/test_docs.py runs the pages of the core docs; this page needs Burr, so
its blocks run here, in order, in one fresh working directory.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "burr.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def blocks(fence: str) -> list[str]:
    return [m.group(2) for m in BLOCK.finditer(PAGE.read_text()) if m.group(1) == fence]


def test_the_page_runs_and_its_cli_lines_read_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    python = blocks("python")
    assert len(python) == 2
    for code in python:
        exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_block__"})
    assert (tmp_path / "demos.db").exists() and (tmp_path / "chat.db").exists()

    lines = blocks("bash")[0].splitlines()
    assert len(lines) == 4
    for line in lines:
        argv = line.split("#")[0].split()
        if argv[1] == "relay":  # the relay needs a broker: check its options exist
            assert "--bootstrap" in argv and "--topic" in argv
            argv = [*argv[:2], "--help"]
        done = subprocess.run(
            [sys.executable, "-m", "statelog", *argv[1:]], capture_output=True, text=True
        )
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
