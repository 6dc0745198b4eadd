"""docs/ui.md: its Python blocks run, and every screenshot it shows exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).absolute().parents[2]
PAGE = ROOT / "docs" / "ui.md"


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PAGE.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_block__"})


def test_every_screenshot_is_there_and_small() -> None:
    shots = re.findall(r"\]\((ui/[a-z-]+\.png)\)", PAGE.read_text())
    assert len(shots) >= 5
    for shot in shots:
        path = PAGE.parent / shot
        assert path.is_file(), f"{shot} is missing: STATELOG_UI_SCREENSHOTS=1 pytest tests/ui"
        assert path.stat().st_size < 200_000, f"{shot} is {path.stat().st_size} bytes"
