"""The reading commands never change a file: not a log, not a file that is no log.

``verify``, ``history``, ``state``, ``export`` and ``apps`` on an unrelated
SQLite database, a 0-byte file and a text file exit 2 with one line, and leave
the file's bytes and the directory listing (no -wal, -shm or -journal) as they
were. On a real log they leave its bytes as they were too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from statelog._cli import main
from statelog.eventstore import SQLiteEventStore
from tests.cli.test_cli_log import events, make_db, statelog

READERS: dict[str, list[str]] = {
    "verify": ["verify"],
    "history": ["history", "orders", "--partition-key", "t"],
    "state": ["state", "orders", "--partition-key", "t"],
    "export": ["export", "out.jsonl"],
    "apps": ["apps"],
}


def unrelated_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(50)])
    db.commit()
    db.close()


FILES = {
    "unrelated-sqlite": unrelated_sqlite,
    "0-byte": lambda path: path.write_bytes(b""),
    "text": lambda path: path.write_text("a text file, not a database\n" * 100),
}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize("command", sorted(READERS))
def test_a_file_that_is_not_a_log_is_refused_untouched(
    tmp_path: Path,
    command: str,
    kind: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    FILES[kind](tmp_path / "data.db")
    before = snapshot(tmp_path)
    code = main([*READERS[command], "--db", "data.db"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert len(err.splitlines()) == 1 and err.startswith("statelog: error: "), err
    assert "statelog event log" in err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_verify_on_another_sqlite_file_in_a_process(tmp_path: Path) -> None:
    unrelated_sqlite(tmp_path / "other.sqlite")
    before = snapshot(tmp_path)
    done = statelog(tmp_path, "verify", "--db", "other.sqlite")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not a statelog event log" in done.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_log_is_left_as_it_was(
    tmp_path: Path,
    command: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(make_db(tmp_path / "statelog.db"))
    before = snapshot(tmp_path)
    assert main(READERS[command]) == 0, capsys.readouterr().err
    after = snapshot(tmp_path)
    after.pop("out.jsonl", None)
    assert after == before


# --------------------------------------------------------------------------- apps


async def make_apps(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        for app in ("order-1", "order-2", "order-10", "invoice-1"):
            await store.append(events(app, 3), expected_sequence=-1)
        await store.append(events("order-1", 2, partition_key="eu"), expected_sequence=-1)


def test_apps_lists_and_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(make_apps(tmp_path / "statelog.db"))

    def apps(*argv: str) -> list[dict[str, object]]:
        assert main(["apps", "--json", *argv]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    every = apps()
    assert [(a["partition_key"], a["app_id"]) for a in every] == [
        ("t", "order-1"),
        ("t", "order-2"),
        ("t", "order-10"),
        ("t", "invoice-1"),
        ("eu", "order-1"),
    ]
    assert every[0]["last_sequence"] == 2 and every[0]["last_action"] == "step"
    assert every[-1]["last_sequence"] == 1
    assert str(every[0]["updated"]).startswith("1970-01-01")  # the events carry no time
    assert [a["app_id"] for a in apps("--partition-key", "eu")] == ["order-1"]
    assert [a["app_id"] for a in apps("--app-id-prefix", "order-1")] == [
        "order-1",
        "order-10",
        "order-1",
    ]
    assert [a["app_id"] for a in apps("--app-id-glob", "order-?")] == [
        "order-1",
        "order-2",
        "order-1",
    ]
    assert [a["app_id"] for a in apps("--app-id-glob", "*-1", "--limit", "2")] == [
        "order-1",
        "invoice-1",
    ]
    assert apps("--app-id-prefix", "nothing") == []

    assert main(["apps", "--partition-key", "t", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PARTITION", "APP_ID", "LAST_SEQ", "LAST_ACTION", "UPDATED"]
    assert lines[1].split()[:4] == ["t", "order-1", "2", "step"]
    assert len(lines) == 3


def test_a_rebuild_leaves_its_source_log_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    asyncio.run(make_db(logs / "statelog.db"))
    before = snapshot(logs)
    into = str(tmp_path / "rm.db")
    source = f"sqlite:{logs / 'statelog.db'}"
    assert main(["projections", "rebuild", "audit_trail", "--from", source, "--into", into]) == 0
    assert "is live with 13 events" in capsys.readouterr().out
    assert snapshot(logs) == before
