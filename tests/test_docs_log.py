"""The Python code blocks of the log's docs pages run and their asserts hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["concepts.md", "store-api.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((page, line, match.group(1)))
    return found


@pytest.mark.parametrize(("page", "line", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_doc_block_runs(
    page: str, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventstore import _codec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_codec, "_UPCASTERS", {})  # blocks may register upcasters
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__doc_block__"})
