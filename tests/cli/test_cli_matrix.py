"""Every sub-command, fed a missing, a malformed and an out-of-range argument.

Each case must end with exit code 2 and exactly one line on stderr,
``statelog: error: ...``, and never a traceback. The cases run in-process
through ``statelog._cli.main`` (fast); a few run as real processes too.
``test_every_command_has_cases`` keeps the table complete: a new sub-command
without cases fails it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from statelog import __version__
from statelog._cli import build_parser, main
from statelog.eventstore import SQLiteEventStore
from tests.cli.test_cli_log import events

TOO_BIG = str(2**70)  # 1180591620717411303424: over SQLite's int64
INT64_OVER = str(2**63)
RELAY = ["relay", "--db", "log.db", "--bootstrap", "127.0.0.1:9", "--topic", "t"]

#: (command, case label, argv). Paths are relative to the test's working directory:
#: log.db is a statelog log, text.db a text file, other.db an unrelated SQLite
#: database, empty.db a 0-byte file, body.db a log whose event has a TEXT body.
CASES: list[tuple[str, str, list[str]]] = [
    # --- the top level
    ("", "no command", []),
    ("", "unknown command", ["nope"]),
    # --- verify
    ("verify", "missing --db value", ["verify", "--db"]),
    ("verify", "missing file", ["verify", "--db", "missing.db"]),
    ("verify", "empty app id", ["verify", "--db", "log.db", ""]),
    ("verify", "text file", ["verify", "--db", "text.db"]),
    ("verify", "unrelated sqlite", ["verify", "--db", "other.db"]),
    ("verify", "0-byte file", ["verify", "--db", "empty.db"]),
    # (a TEXT body is a finding of verify, exit 1: tests/cli/test_cli_verify_data.py)
    ("verify", "unknown app", ["verify", "--db", "log.db", "nope"]),
    ("verify", "unset key variable", ["verify", "--db", "log.db", "--hmac-key-env", "NO_SUCH_V"]),
    ("verify", "missing public key", ["verify", "--db", "log.db", "--public-key", "no.pub"]),
    ("verify", "corrupt public key", ["verify", "--db", "log.db", "--public-key", "text.db"]),
    ("verify", "bad --expect-checkpoint", ["verify", "--db", "log.db", "--expect-checkpoint", "x"]),
    ("state", "missing public key", ["state", "x", "--db", "log.db", "--public-key", "no.pub"]),
    ("history", "missing public key", ["history", "x", "--db", "log.db", "--public-key", "n"]),
    # --- keys
    ("keys generate", "missing --out", ["keys", "generate"]),
    ("keys generate", "existing file", ["keys", "generate", "--out", "log.db"]),
    ("keys generate", "no such directory", ["keys", "generate", "--out", "no/such/dir/k"]),
    # --- export
    ("export", "missing OUT", ["export", "--db", "log.db"]),
    ("export", "empty app id", ["export", "--db", "log.db", "--app-id", "", "out.jsonl"]),
    ("export", "unknown app", ["export", "--db", "log.db", "--app-id", "nope", "out.jsonl"]),
    ("export", "unrelated sqlite", ["export", "--db", "other.db", "out.jsonl"]),
    ("export", "TEXT body", ["export", "--db", "body.db", "out.jsonl"]),
    ("export", "unwritable OUT", ["export", "--db", "log.db", "no/such/dir/out.jsonl"]),
    # --- import
    ("import", "missing IN", ["import", "--db", "new.db"]),
    ("import", "no such IN", ["import", "--db", "new.db", "missing.jsonl"]),
    ("import", "malformed IN", ["import", "--db", "new.db", "text.db"]),
    ("import", "into a text file", ["import", "--db", "text.db", "log.jsonl"]),
    # --- apps
    ("apps", "missing --limit value", ["apps", "--db", "log.db", "--limit"]),
    ("apps", "malformed --limit", ["apps", "--db", "log.db", "--limit", "ten"]),
    ("apps", "--limit 0", ["apps", "--db", "log.db", "--limit", "0"]),
    ("apps", "--limit over int64", ["apps", "--db", "log.db", "--limit", INT64_OVER]),
    ("apps", "missing file", ["apps", "--db", "missing.db"]),
    ("apps", "text file", ["apps", "--db", "text.db"]),
    ("apps", "0-byte file", ["apps", "--db", "empty.db"]),
    # --- demo
    ("demo", "missing --steps value", ["demo", "--db", "demo.db", "--steps"]),
    ("demo", "malformed --steps", ["demo", "--db", "demo.db", "--steps", "many"]),
    ("demo", "--steps 0", ["demo", "--db", "demo.db", "--steps", "0"]),
    ("demo", "--snapshot-every 0", ["demo", "--db", "demo.db", "--snapshot-every", "0"]),
    ("demo", "--snapshot-every -5", ["demo", "--db", "demo.db", "--snapshot-every", "-5"]),
    ("demo", "empty app id", ["demo", "--db", "demo.db", "--app-id", ""]),
    ("demo", "unknown durability", ["demo", "--db", "demo.db", "--durability", "maybe"]),
    ("demo", "text file", ["demo", "--db", "text.db", "--steps", "3"]),
    # --- history
    ("history", "missing APP_ID", ["history", "--db", "log.db"]),
    ("history", "empty app id", ["history", "--db", "log.db", ""]),
    ("history", "malformed --from", ["history", "--db", "log.db", "orders", "--from", "x"]),
    ("history", "--from -1", ["history", "--db", "log.db", "orders", "--from", "-1"]),
    ("history", "--from 2**70", ["history", "--db", "log.db", "orders", "--from", TOO_BIG]),
    ("history", "--from 2**63", ["history", "--db", "log.db", "orders", "--from", INT64_OVER]),
    ("history", "--limit 0", ["history", "--db", "log.db", "orders", "--limit", "0"]),
    ("history", "unknown app", ["history", "--db", "log.db", "nope"]),
    ("history", "missing file", ["history", "--db", "missing.db", "orders"]),
    ("history", "unrelated sqlite", ["history", "--db", "other.db", "orders"]),
    ("history", "TEXT body", ["history", "--db", "body.db", "orders", "--partition-key", "t"]),
    # --- state
    ("state", "missing APP_ID", ["state", "--db", "log.db"]),
    ("state", "empty app id", ["state", "--db", "log.db", ""]),
    ("state", "malformed --at", ["state", "--db", "log.db", "orders", "--at", "last"]),
    ("state", "--at -1", ["state", "--db", "log.db", "orders", "--at", "-1"]),
    ("state", "--at 2**70", ["state", "--db", "log.db", "orders", "--at", TOO_BIG]),
    ("state", "--at past the end", ["state", "--db", "log.db", "orders", "--at", "99"]),
    ("state", "0-byte file", ["state", "--db", "empty.db", "orders"]),
    ("state", "TEXT body", ["state", "--db", "body.db", "orders", "--partition-key", "t"]),
    # --- relay (nothing here reaches a broker)
    ("relay", "missing --topic", ["relay", "--db", "log.db", "--bootstrap", "127.0.0.1:9"]),
    (
        "relay",
        "malformed --batch-size",
        [*RELAY, "--batch-size", "lots"],
    ),
    (
        "relay",
        "--batch-size 0",
        [*RELAY, "--batch-size", "0"],
    ),
    (
        "relay",
        "--max-record-bytes 0",
        [*RELAY, "--max-record-bytes", "0"],
    ),
    (
        "relay",
        "--connect-timeout -1",
        [*RELAY, "--connect-timeout", "-1"],
    ),
    (
        "relay",
        "--outage-timeout nan",
        [*RELAY, "--outage-timeout", "nan"],
    ),
    (
        "relay",
        "--progress 0",
        [*RELAY, "--progress", "0"],
    ),
    ("relay", "empty --topic", ["relay", "--db", "log.db", "--bootstrap", "h:9", "--topic", ""]),
    (
        "relay",
        "missing file",
        ["relay", "--db", "missing.db", "--bootstrap", "h:9", "--topic", "t"],
    ),
    # --- worker and submit (nothing here reaches a broker)
    ("worker", "missing --group", ["worker", "--bootstrap", "h:9", "--demo"]),
    ("worker", "no workflow", ["worker", "--bootstrap", "h:9", "--group", "g"]),
    (
        "worker",
        "--concurrency 0",
        ["worker", "--bootstrap", "h:9", "--group", "g", "--concurrency", "0"],
    ),
    ("worker", "bad --app", ["worker", "--bootstrap", "h:9", "--group", "g", "--app", "nocolon"]),
    ("submit", "missing --app-id", ["submit", "--bootstrap", "h:9", "--graph", "demo"]),
    (
        "submit",
        "--inputs not JSON",
        ["submit", "--bootstrap", "h:9", "--graph", "demo", "--app-id", "a", "--inputs", "{"],
    ),
    (
        "submit",
        "input without --at-sequence",
        ["submit", "--bootstrap", "h:9", "--app-id", "a", "--command", "input"],
    ),
    ("submit", "start without --graph", ["submit", "--bootstrap", "h:9", "--app-id", "a"]),
    # --- serve (all checked before a server starts)
    ("serve", "missing --signing-key file", ["serve", "--db", "log.db", "--signing-key", "no.key"]),
    ("demo", "corrupt --signing-key", ["demo", "--db", "new.db", "--signing-key", "text.db"]),
    (
        "import",
        "missing --public-key",
        ["import", "--db", "n.db", "log.jsonl", "--public-key", "n"],
    ),
    ("serve", "missing --port value", ["serve", "--db", "log.db", "--port"]),
    ("serve", "malformed --port", ["serve", "--db", "log.db", "--port", "http"]),
    ("serve", "--port 70000", ["serve", "--db", "log.db", "--port", "70000"]),
    ("serve", "--max-concurrent-runs 0", ["serve", "--db", "log.db", "--max-concurrent-runs", "0"]),
    ("serve", "--run-timeout -1", ["serve", "--db", "log.db", "--run-timeout", "-1"]),
    ("serve", "--max-queued-runs 0", ["serve", "--db", "log.db", "--max-queued-runs", "0"]),
    ("serve", "--admission-interval -1", ["serve", "--db", "log.db", "--admission-interval", "-1"]),
    ("serve", "malformed --admission-interval", ["serve", "--admission-interval", "soon"]),
    ("serve", "unknown --loop", ["serve", "--db", "log.db", "--loop", "trio"]),
    ("serve", "missing --loop value", ["serve", "--db", "log.db", "--loop"]),
    # --- ui (all checked before a server starts)
    ("ui", "missing --db", ["ui"]),
    ("ui", "missing file", ["ui", "--db", "missing.db"]),
    ("ui", "not a log", ["ui", "--db", "other.db"]),
    ("ui", "text file", ["ui", "--db", "text.db"]),
    ("ui", "empty file", ["ui", "--db", "empty.db"]),
    ("ui", "--port 70000", ["ui", "--db", "log.db", "--port", "70000"]),
    ("ui", "malformed --port", ["ui", "--db", "log.db", "--port", "http"]),
    # --- projections
    ("projections", "no action", ["projections"]),
    ("projections list", "missing --import value", ["projections", "list", "--import"]),
    ("projections list", "unknown module", ["projections", "list", "--import", "no_such_mod_x"]),
    ("projections list", "extra argument", ["projections", "list", "extra"]),
    ("projections status", "missing --into value", ["projections", "status", "--into"]),
    ("projections status", "no read model", ["projections", "status", "--into", "missing.db"]),
    ("projections status", "text file", ["projections", "status", "--into", "text.db"]),
    ("projections rebuild", "missing NAME", ["projections", "rebuild", "--from", "sqlite:log.db"]),
    (
        "projections rebuild",
        "unknown NAME",
        ["projections", "rebuild", "nope", "--from", "sqlite:log.db", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--from nope:x",
        ["projections", "rebuild", "audit_trail", "--from", "nope:x", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--from a bare path",
        ["projections", "rebuild", "audit_trail", "--from", "log.db", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--from kafka without topic",
        [
            "projections",
            "rebuild",
            "audit_trail",
            "--from",
            "kafka://127.0.0.1:9",
            "--into",
            "rm.db",
        ],
    ),
    (
        "projections rebuild",
        "--from kafka bad port",
        ["projections", "rebuild", "audit_trail", "--from", "kafka://h:port/t", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--from unrelated sqlite",
        ["projections", "rebuild", "audit_trail", "--from", "sqlite:other.db", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--from a text file",
        ["projections", "rebuild", "audit_trail", "--from", "sqlite:text.db", "--into", "rm.db"],
    ),
    (
        "projections rebuild",
        "--batch-size 0",
        ["projections", "rebuild", "audit_trail", "--from", "sqlite:log.db", "--batch-size", "0"],
    ),
    (
        "projections rebuild",
        "--timeout 0",
        ["projections", "rebuild", "audit_trail", "--from", "sqlite:log.db", "--timeout", "0"],
    ),
    (
        "projections rebuild",
        "--timeout inf",
        ["projections", "rebuild", "audit_trail", "--from", "sqlite:log.db", "--timeout", "inf"],
    ),
    ("projections run", "--batch-size x", ["projections", "run", "--batch-size", "x"]),
    (
        "projections run",
        "unknown NAME",
        ["projections", "run", "nope", "--from", "sqlite:log.db", "--into", "rm.db"],
    ),
    (
        "projections run",
        "missing source",
        ["projections", "run", "--from", "sqlite:missing.db", "--into", "rm.db"],
    ),
]


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every runnable sub-command, e.g. ``verify`` and ``projections rebuild``."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += leaf_commands(sub, f"{prefix} {name}".strip())
    return found or [prefix]


def make_files(where: Path) -> None:
    async def make_log(path: Path) -> None:
        async with SQLiteEventStore(path) as store:
            await store.append(events("orders", 5), expected_sequence=-1)
            await store.append(events("billing", 3, partition_key=""), expected_sequence=-1)

    asyncio.run(make_log(where / "log.db"))
    asyncio.run(make_log(where / "body.db"))
    db = sqlite3.connect(where / "body.db")
    db.execute("UPDATE events SET body = 'not bytes' WHERE position = 3")
    db.commit()
    db.close()
    db = sqlite3.connect(where / "other.db")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('hello')")
    db.commit()
    db.close()
    (where / "text.db").write_text("this is a text file, not a database\n" * 50)
    (where / "empty.db").write_bytes(b"")
    (where / "log.jsonl").write_text("")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("matrix-files")
    make_files(where)
    return where


@pytest.fixture
def workdir(files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for path in files.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_one_error_line(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err + out, err
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("statelog: error: "), err


def test_every_command_has_cases() -> None:
    commands = leaf_commands(build_parser())
    assert {"verify", "history", "apps", "projections rebuild", "relay"} <= set(commands)
    covered = {command for command, _, _ in CASES}
    assert set(commands) <= covered, sorted(set(commands) - covered)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for command in leaf_commands(build_parser()):
        assert command.split()[0] in shown


@pytest.mark.parametrize(
    "argv",
    [argv for _, _, argv in CASES],
    ids=[f"{c or 'statelog'}: {label}" for c, label, _ in CASES],
)
def test_bad_argument_is_one_line_and_exit_2(
    workdir: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    code = main(argv)
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err)
    if argv and argv[0] in ("verify", "history", "state", "export", "apps"):
        assert sorted(p.name for p in workdir.iterdir()) == before  # read-only: nothing new


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"statelog {__version__}"


def test_option_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, shown in [
        (["history", "--help"], ["(default: statelog.db)", "(default: 0)", '(default: "")']),
        (["demo", "--help"], ["(default: 300)", "(default: 1000)", "(default: demo-orders)"]),
        (["relay", "--help"], ["(default: 2000)", "(default: 30.0)"]),
        (["projections", "rebuild", "--help"], ["(default: 60.0)", "(default: projections.db)"]),
    ]:
        assert main(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        for default in shown:
            assert default in text, (argv, default)


# --------------------------------------------------------------------------- as real processes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "--db", "log.db", "orders", "--from", TOO_BIG],
        ["demo", "--db", "demo.db", "--snapshot-every", "0"],
        ["export", "--db", "body.db", "out.jsonl"],  # (verify: a finding, exit 1)
        [
            "relay",
            "--db",
            "log.db",
            "--bootstrap",
            "127.0.0.1:9",
            "--topic",
            "t",
            "--batch-size",
            "0",
        ],
        ["projections", "rebuild", "audit_trail", "--from", "nope:x"],
        ["state", "--db", "other.db", "orders"],
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_bad_argument_in_a_process(workdir: Path, argv: list[str]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "statelog", *argv],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_error_line(done.returncode, done.stdout, done.stderr)


def test_help_does_not_load_aiokafka(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from statelog._cli import main\n"
        "try:\n    main(['--help'])\nfinally:\n"
        "    assert 'aiokafka' not in sys.modules, 'statelog --help loaded aiokafka'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
