"""The side-by-side bench runs end to end with tiny sizes and produces every row.

No timing is asserted: only that each figure has a real statelog value and, for each
peer, either a value or an ``n/a`` with its reason.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402

PEERS = ("burr", "langgraph", "eventsourcing")
PEER_MODULES = ("burr", "langgraph", "eventsourcing")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    md = tmp_path / "table.md"
    code = run.main(
        ["--tiny", "--json", str(out), "--markdown", str(md), "--workdir", str(tmp_path / "w")]
    )
    assert code == 0
    printed = capsys.readouterr().out
    return json.loads(out.read_text()), printed + md.read_text()


def _check_statelog_rows(results: dict, printed: str) -> None:
    keys = [f["key"] for f in results["figures"]]
    assert keys[:8] == [
        "mem",
        "durable_full",
        "durable_normal",
        "durable_default",
        "durable_async",
        "durable_best",
        "durable_background",
        "concurrent",
    ]
    assert sum(k.startswith("resume_") for k in keys) == 3
    assert keys[-3:] == ["bytes", "replay", "rebuild"]
    for fig in results["figures"]:
        assert fig["label"] in printed
        cell = results["cells"][fig["key"]]["statelog"]
        assert isinstance(cell["value"], int | float), (fig["key"], cell["note"])
        assert cell["value"] > 0
    for key in ("durable_full", "durable_normal", "durable_async", "durable_background"):
        assert "WAL+" in results["cells"][key]["statelog"]["note"]


def test_bench_without_peers_gives_statelog_rows_and_na_for_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clean checkout with only the dev extra: make every peer unimportable.
    for name in list(sys.modules):
        if name.split(".")[0] in PEER_MODULES:
            monkeypatch.delitem(sys.modules, name)
    for name in PEER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)

    results, printed = _run(tmp_path, capsys)

    _check_statelog_rows(results, printed)
    assert results["systems"] == ["statelog", *PEERS, "floor", "floor_off_loop"]
    for fig in results["figures"]:
        for peer in PEERS:
            cell = results["cells"][fig["key"]][peer]
            assert cell["value"] is None
            assert cell["note"].startswith("n/a: "), cell["note"]
            assert "not installed" in cell["note"]
    assert "n/a [" in printed
    _check_floor_rows(results)


def _check_floor_rows(results: dict) -> None:
    """The sqlite3 floor needs nothing installed: its rows are measured in every run."""
    floor = {key: cells["floor"] for key, cells in results["cells"].items()}
    measured = {"durable_full", "durable_normal", "durable_best", "bytes"}
    measured |= {key for key in floor if key.startswith("resume_")}
    for key, cell in floor.items():
        if key in measured:
            assert isinstance(cell["value"], int | float) and cell["value"] > 0, (key, cell)
        else:
            assert cell["value"] is None and cell["note"].startswith("n/a: "), (key, cell)
    assert "WAL+FULL" in floor["durable_full"]["note"]
    # the off-loop floor: only resume (its reads and its step on worker threads)
    off_loop = {key: cells["floor_off_loop"] for key, cells in results["cells"].items()}
    for key, cell in off_loop.items():
        if key.startswith("resume_") or key == "bytes":
            assert isinstance(cell["value"], int | float) and cell["value"] > 0, (key, cell)
        else:
            assert cell["value"] is None and cell["note"].startswith("n/a: "), (key, cell)


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in PEER_MODULES),
    reason="the bench extra is not installed (pip install -e '.[bench]')",
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_bench_with_peers_fills_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, printed = _run(tmp_path, capsys)

    _check_statelog_rows(results, printed)
    for fig in results["figures"]:
        for peer in PEERS:
            cell = results["cells"][fig["key"]][peer]
            assert not cell["note"].startswith("error"), (fig["key"], peer, cell["note"])
            if cell["value"] is None:
                assert cell["note"].startswith("n/a: "), (fig["key"], peer, cell["note"])
    # The figures each peer can give are real numbers, not n/a.
    for peer in PEERS:
        for key in ("mem", "durable_full", "durable_default", "concurrent", "bytes"):
            assert results["cells"][key][peer]["value"] is not None, (key, peer)
    assert results["cells"]["replay"]["eventsourcing"]["value"] is not None
    assert results["cells"]["rebuild"]["eventsourcing"]["value"] is not None
    # each durable row runs every system at the pragmas it names, read back from SQLite
    # (eventsourcing's pool has no synchronous setting: the bench sets NORMAL for it)
    for key, pragmas in (
        ("durable_full", "WAL+FULL"),
        ("durable_normal", "WAL+NORMAL"),
        ("concurrent", "WAL+NORMAL"),
    ):
        for peer in PEERS:
            cell = results["cells"][key][peer]
            assert cell["value"] is not None and pragmas in cell["note"], (key, peer, cell)
    _check_floor_rows(results)
