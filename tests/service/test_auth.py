"""Auth matrix and bad input: each refusal has its documented status and problem type,
and a refused request writes nothing (neither to the log nor to the operations)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ServeProcess, wait_status

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
TENANT_A = "tenant-a-writer-0123456789"
FINAL = {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("auth")
    tokens = root / "tokens"
    tokens.write_text(
        f"# token scope partitions\n{ADMIN} write *\n{READER} read *\n{TENANT_A} write tenant-a*\n"
    )
    proc = ServeProcess(
        root / "log.db", "--token-file", str(tokens), "--max-body-bytes", "4096"
    ).start()
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        op = http.post(
            "/v1/runs",
            json={"graph": "counter", "app_id": "b-app", "partition_key": "tenant-b"},
            headers=admin,
        ).json()
        http.headers.update(admin)
        wait_status(http, op["id"], FINAL)
    yield proc
    assert proc.stop() == 0


def written(proc: ServeProcess) -> tuple[int, int]:
    """(events in the log, operations) - read-only, straight from the files."""
    counts = []
    for path, table in ((proc.db, "events"), (Path(f"{proc.db}-service"), "operations")):
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            counts.append(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    return counts[0], counts[1]


def _bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


START_B = {"graph": "counter", "app_id": "new-b", "partition_key": "tenant-b"}


@pytest.mark.parametrize(
    ("token", "method", "path", "body", "status", "problem"),
    [
        (None, "POST", "/v1/runs", START_B, 401, "unauthorized"),
        ("not-a-known-token-at-all", "POST", "/v1/runs", START_B, 401, "unauthorized"),
        (None, "GET", "/v1/apps/b-app?partition_key=tenant-b", None, 401, "unauthorized"),
        (READER, "POST", "/v1/runs", START_B, 403, "forbidden"),
        (TENANT_A, "POST", "/v1/runs", START_B, 403, "forbidden"),
        (TENANT_A, "GET", "/v1/apps/b-app?partition_key=tenant-b", None, 403, "forbidden"),
        (TENANT_A, "GET", "/v1/apps/b-app/events?partition_key=tenant-b", None, 403, "forbidden"),
        (
            TENANT_A,
            "POST",
            "/v1/apps/b-app/fork?partition_key=tenant-b",
            {"new_app_id": "stolen", "partition_key": "tenant-a"},
            403,
            "forbidden",
        ),
        (
            READER,
            "POST",
            "/v1/apps/b-app/input?partition_key=tenant-b",
            {"inputs": {}},
            403,
            "forbidden",
        ),
        (ADMIN, "POST", "/v1/runs", {"graph": "nope", "app_id": "x"}, 422, "unknown-graph"),
        (ADMIN, "POST", "/v1/runs", {"graph": "counter", "halt_after": ["nope"]}, 422, None),
        (ADMIN, "POST", "/v1/runs", {"graph": "counter", "max_steps": 0}, 422, None),
        (ADMIN, "POST", "/v1/runs", {"graph": "counter", "surprise": 1}, 422, None),
        (ADMIN, "POST", "/v1/runs", {"graph": "counter", "app_id": "a/b"}, 422, None),
        (ADMIN, "GET", "/v1/apps/b-app/state?partition_key=tenant-b&at=-1", None, 422, None),
        (
            ADMIN,
            "GET",
            "/v1/apps/b-app/state?partition_key=tenant-b&at=999",
            None,
            422,
            "out-of-range",
        ),
        (ADMIN, "GET", "/v1/apps/ghost", None, 404, "unknown-app"),
        (ADMIN, "GET", "/v1/apps/ghost/events", None, 404, "unknown-app"),
        (ADMIN, "GET", "/v1/apps/ghost/verify", None, 404, "unknown-app"),
        (ADMIN, "GET", "/v1/apps/ghost/export", None, 404, "unknown-app"),
        (ADMIN, "POST", "/v1/apps/ghost/fork", {"new_app_id": "g2"}, 404, "unknown-app"),
        (ADMIN, "GET", "/v1/operations/0000", None, 404, "unknown-operation"),
        (ADMIN, "DELETE", "/v1/operations/0000", None, 404, "unknown-operation"),
        (ADMIN, "GET", "/v2/nothing", None, 404, "not-found"),
        (ADMIN, "PUT", "/v1/runs", {}, 405, "method-not-allowed"),
    ],
)
def test_refusals_have_their_status_and_type_and_write_nothing(
    secured: ServeProcess,
    token: str | None,
    method: str,
    path: str,
    body: Any,
    status: int,
    problem: str | None,
) -> None:
    before = written(secured)
    response = httpx.request(
        method, secured.url + path, json=body, headers=_bearer(token), timeout=10
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    assert document["status"] == status and document["detail"]
    assert document["type"] == f"urn:statelog:problem:{problem or 'invalid-request'}"
    assert "Traceback" not in response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert written(secured) == before


def test_malformed_json_and_oversize_bodies_are_refused(secured: ServeProcess) -> None:
    before = written(secured)
    headers = {**_bearer(ADMIN), "Content-Type": "application/json"}
    broken = httpx.post(secured.url + "/v1/runs", content=b'{"graph": ', headers=headers)
    assert broken.status_code == 400
    assert broken.json()["type"] == "urn:statelog:problem:malformed-json"
    big = {"graph": "counter", "inputs": {"blob": "x" * 5000}}
    huge = httpx.post(secured.url + "/v1/runs", json=big, headers=headers)
    assert huge.status_code == 413
    assert huge.json()["type"] == "urn:statelog:problem:payload-too-large"

    def chunks() -> Any:  # no Content-Length: the limit is counted as the body arrives
        yield b'{"graph": "counter", "inputs": {"blob": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    streamed = httpx.post(secured.url + "/v1/runs", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert written(secured) == before


def test_the_right_tokens_are_let_in(secured: ServeProcess) -> None:
    reader = httpx.get(
        secured.url + "/v1/apps/b-app",
        params={"partition_key": "tenant-b"},
        headers=_bearer(READER),
    )
    assert reader.status_code == 200 and reader.json()["status"] == "completed"
    start = httpx.post(
        secured.url + "/v1/runs",
        json={"graph": "counter", "app_id": "a-app", "partition_key": "tenant-a1"},
        headers=_bearer(TENANT_A),
    )
    assert start.status_code == 202
    with httpx.Client(base_url=secured.url, headers=_bearer(TENANT_A)) as http:
        # an app is listed once its first event is in the log: wait for the run
        wait_status(http, start.json()["id"], FINAL)
    listing = httpx.get(secured.url + "/v1/apps", headers=_bearer(TENANT_A)).json()["apps"]
    assert {a["partition_key"] for a in listing} == {"tenant-a1"}  # tenant-b is not shown
    ops = httpx.get(secured.url + "/v1/operations", headers=_bearer(TENANT_A)).json()
    assert {op["partition_key"] for op in ops["operations"]} == {"tenant-a1"}
    foreign = httpx.get(secured.url + "/v1/operations", headers=_bearer(ADMIN)).json()
    b_op = next(op for op in foreign["operations"] if op["app_id"] == "b-app")
    hidden = httpx.get(f"{secured.url}/v1/operations/{b_op['id']}", headers=_bearer(TENANT_A))
    assert hidden.status_code == 404  # not even its existence
    assert httpx.get(secured.url + "/healthz").status_code == 200  # no token needed
    assert httpx.get(secured.url + "/metrics").status_code == 200


def test_serve_refuses_a_public_address_without_tokens_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from statelog._cli import main

    db = str(tmp_path / "log.db")
    for args, words in [
        (["--host", "0.0.0.0", "--demo", "--db", db], "without --token-file"),
        (["--app", "nonsense", "--db", db], "expected [NAME=]MODULE:ATTR"),
        (["--app", "x=no_such_module_here:b", "--db", db], "cannot import"),
        (["--db", db], "no workflow to serve"),
        (["--demo", "--db", str(tmp_path / "missing" / "log.db")], "no directory"),
        (["--demo", "--db", db, "--token-file", str(tmp_path / "none")], "No such file"),
        (["--demo", "--db", db, "--max-concurrent-runs", "0"], "expected an integer >= 1"),
    ]:
        assert main(["serve", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("statelog: error:") and words in err, (words, err)
    assert not (tmp_path / "log.db").exists()  # nothing was created
