"""The Python code blocks of docs/kafka.md run against the test broker."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.kafka_broker import create_topic

pytestmark = pytest.mark.kafka

PAGE = Path(__file__).resolve().parent.parent / "docs" / "kafka.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_kafka_doc_blocks_run_in_order(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    topic = asyncio.run(create_topic(kafka_bootstrap))
    text = PAGE.read_text()
    blocks = [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]
    assert len(blocks) == 2
    for line, code in blocks:
        code = code.replace("localhost:9092", kafka_bootstrap).replace("statelog.events", topic)
        exec(compile(code, f"docs/kafka.md:{line}", "exec"), {"__name__": "__doc_block__"})
