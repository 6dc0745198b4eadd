"""The Python blocks of docs/client.md and docs/service.md run, against a live service."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, ServeProcess

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: str) -> list[tuple[int, str]]:
    text = (ROOT / page).read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize(("line", "code"), _blocks("docs/client.md"), ids=lambda v: str(v)[:6])
def test_client_page_runs(server: ServeProcess, line: int, code: str) -> None:
    code = code.replace("http://127.0.0.1:8000", server.url)
    namespace: dict[str, Any] = {"__name__": "__doc_block__"}
    exec(compile(code, f"docs/client.md:{line}", "exec"), namespace)
    client = namespace.get("client")
    if client is not None and hasattr(client, "aclose"):  # the configuration example
        import asyncio

        asyncio.run(client.aclose())


def test_readme_client_block_runs(server: ServeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(
        r"^```python client\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M
    )
    assert len(blocks) == 1
    code = blocks[0].replace("http://127.0.0.1:8000", server.url)
    exec(compile(code, "README.md", "exec"), {"__name__": "__doc_block__"})
    # app_initialized, run_started, then 5 steps
    assert capsys.readouterr().out.split() == ["halted", "6"]


def test_service_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks("docs/service.md")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "flows.py").write_text(blocks[0][1])
    monkeypatch.syspath_prepend(str(tmp_path))
    from statelog.service import Workflow, load_workflow

    workflow = load_workflow("orders=myapp.flows:orders_builder")
    assert isinstance(workflow, Workflow) and workflow.entrypoint == "tick"
    exec(compile(blocks[1][1], "docs/service.md", "exec"), {"__name__": "__doc_block__"})
    sys.modules.pop("myapp.flows", None)
    sys.modules.pop("myapp", None)
