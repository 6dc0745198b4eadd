"""A string with a lone surrogate (JSON's "\\ud800") anywhere in a body: 422, nothing written.

json.loads reads such escapes as str values that have no UTF-8 form; before,
one in a run's inputs reached the operations file's insert: 500 on the plain
path, a dropped connection with an Idempotency-Key.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import ServeProcess, wait_status


@pytest.fixture(scope="module")
def http(server: ServeProcess) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _post(http: httpx.Client, path: str, body: str, **headers: str) -> httpx.Response:
    return http.post(
        path, content=body.encode(), headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize(
    "inputs",
    [
        r'{"x": "\ud800"}',
        r'{"\udfff": 1}',
        r'{"x": {"deep": [1, ["ok", "a\ud800b"]]}}',
    ],
    ids=["a value", "a key", "nested"],
)
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_a_run_whose_inputs_hold_a_lone_surrogate_is_refused(
    http: httpx.Client, inputs: str, keyed: bool
) -> None:
    headers = {"Idempotency-Key": f"surrogate-{inputs}-{keyed}"} if keyed else {}
    before = http.get("/v1/operations").json()
    body = '{"graph": "counter", "app_id": "s-run", "inputs": ' + inputs + "}"
    response = _post(http, "/v1/runs", body, **headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:statelog:problem:invalid-request"
    assert "lone surrogate" in problem["detail"]
    assert http.get("/v1/operations").json() == before
    assert http.get("/v1/apps/s-run").status_code == 404
    # the service is as it was: the same run without the bad string starts
    fine = http.post("/v1/runs", json={"graph": "counter", "app_id": f"s-ok-{keyed}"})
    assert fine.status_code == 202, fine.text
    wait_status(http, fine.json()["id"], {"completed"})


def test_input_and_fork_bodies_with_a_lone_surrogate_are_refused(http: httpx.Client) -> None:
    started = http.post("/v1/runs", json={"graph": "counter", "app_id": "s-src"})
    wait_status(http, started.json()["id"], {"completed"})
    events = http.get("/v1/apps/s-src/events").json()["events"]
    for path, body in [
        ("/v1/apps/s-src/input", r'{"inputs": {"answer": "\ud800"}}'),
        ("/v1/apps/s-src/fork", r'{"new_app_id": "s-fork", "partition_key": "\ud800"}'),
    ]:
        response = _post(http, path, body)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["type"] == "urn:statelog:problem:invalid-request", path
    assert http.get("/v1/apps/s-src/events").json()["events"] == events
    assert http.get("/v1/apps/s-fork").status_code == 404
