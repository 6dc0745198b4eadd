"""Every Python code block in README.md and docs/ runs, and its asserts hold.

Blocks run in a fresh working directory, one page's blocks in isolation from
each other. docs/kafka.md runs against the test broker: its ```python blocks
in order on one topic (they build on each other), each ```py block on a topic
of its own. docs/wire-format.md runs too, but for its confluent-kafka loop with a
user's ``handle``; the same decoding runs in
tests/eventstore/test_kafka_relay.py::test_plain_confluent_consumer_decodes_the_wire_format.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STANDALONE = [
    "README.md",
    "docs/quickstart.md",
    "docs/concepts.md",
    "docs/store-api.md",
    "docs/engine.md",
    "docs/actions.md",
    "docs/projections.md",
    "docs/wire-format.md",
]
BLOCK = re.compile(r"^```(python|py)\n(.*?)^```", re.S | re.M)


def blocks(page: str) -> list[tuple[str, int, str]]:
    """(fence, line, code) of every Python block of ``page``."""
    text = (ROOT / page).read_text()
    return [
        (m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in BLOCK.finditer(text)
        if "confluent_kafka" not in m.group(2)  # needs a broker and a handler of yours
    ]


def run_block(page: str, line: int, code: str) -> None:
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__doc_block__"})


def test_every_page_has_blocks_to_run() -> None:
    for page in [*STANDALONE, "docs/kafka.md"]:
        assert blocks(page), f"{page} has no Python block: update STANDALONE"


@pytest.mark.parametrize(
    ("page", "line", "code"),
    [(page, line, code) for page in STANDALONE for _, line, code in blocks(page)],
    ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else str(v)[:8],
)
def test_doc_block_runs(
    page: str, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statelog.eventstore import _codec

    monkeypatch.chdir(tmp_path)
    # a block may register upcasters: on a copy (statelog's v1 -> v2 kept)
    monkeypatch.setattr(_codec, "_UPCASTERS", dict(_codec._UPCASTERS))
    run_block(page, line, code)


@pytest.mark.kafka
def test_kafka_doc_blocks_run(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.kafka_broker import create_topic

    monkeypatch.chdir(tmp_path)
    shared = asyncio.run(create_topic(kafka_bootstrap))
    for fence, line, code in blocks("docs/kafka.md"):
        topic = shared if fence == "python" else asyncio.run(create_topic(kafka_bootstrap))
        code = code.replace("localhost:9092", kafka_bootstrap)
        code = re.sub(r"\bstatelog\.events\b", topic, code)
        run_block("docs/kafka.md", line, code)
