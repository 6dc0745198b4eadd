"""The Python code blocks of docs/projections.md run and their asserts hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "projections.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[int, str]]:
    text = PAGE.read_text()
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1)) for match in BLOCK.finditer(text)
    ]


@pytest.mark.parametrize(("line", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_doc_block_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/projections.md:{line}", "exec"), {"__name__": "__doc_block__"})
