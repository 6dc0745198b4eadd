"""The plain-path answer of ``POST /v1/runs`` (``_app._Edge``) against the route's:
the same status, headers in the same order and body, for a start and its replay; and
the operation insert without a savepoint (``OperationStore._create`` undoes its own
writes when it refuses a start, the rest of its group commits)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from statelog.service._operations import OperationStore, RunRequest
from statelog.service._problems import ProblemError

from .conftest import ServeProcess

_VARYING = {b"x-request-id", b"date", b"location", b"content-length"}


@pytest.fixture(scope="module")
def http(server: ServeProcess) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _post(http: httpx.Client, body: dict[str, Any], routed: bool, **headers: str) -> httpx.Response:
    """On the plain path (application/json) or through the route (a +json media type)."""
    media = "application/vnd.statelog+json" if routed else "application/json"
    return http.post(
        "/v1/runs", content=json.dumps(body), headers={"content-type": media, **headers}
    )


def _shape(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], list[str]]:
    """Status, headers in order (varying values blanked), body keys in order."""
    assert int(response.headers["content-length"]) == len(response.content)
    headers = [
        (name.lower(), b"" if name.lower() in _VARYING else value)
        for name, value in response.headers.raw
    ]
    return response.status_code, headers, list(response.json())


def test_a_start_and_its_replay_answer_alike_on_both_paths(http: httpx.Client) -> None:
    answers = {}
    for routed in (False, True):
        body = {"graph": "long", "app_id": f"pa-{routed}", "inputs": {"delay": 0.2}}
        first = _post(http, body, routed, **{"Idempotency-Key": f"pa-key-{routed}"})
        replay = _post(http, body, routed, **{"Idempotency-Key": f"pa-key-{routed}"})
        assert first.status_code == 202, first.text
        assert first.headers["location"] == f"/v1/operations/{first.json()['id']}"
        assert replay.json()["id"] == first.json()["id"]
        answers[routed] = (_shape(first), _shape(replay), first.json(), replay.json())
    plain, routed_ = answers[False], answers[True]
    assert plain[0] == routed_[0]  # status, header names and order, body keys
    assert plain[1] == routed_[1]  # the replay (Idempotent-Replayed: true) too
    assert (b"idempotent-replayed", b"true") in plain[1][1]
    for one in (plain, routed_):
        first, replay = one[2], one[3]
        assert {k: v for k, v in first.items() if k not in ("status", "started_at")} == {
            k: v for k, v in replay.items() if k not in ("status", "started_at")
        }
    assert plain[2]["request"] == routed_[2]["request"]


def test_the_plain_path_counts_its_answers_in_metrics(http: httpx.Client) -> None:
    before = http.get("/metrics").text
    assert _post(http, {"graph": "counter", "app_id": "pa-metrics"}, False).status_code == 202
    after = http.get("/metrics").text

    def count(text: str) -> float:
        prefix = (
            "statelog_http_request_duration_seconds_count"
            '{method="POST",route="/v1/runs",status="202"}'
        )
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    assert count(after) == count(before) + 1


def _rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        ops = db.execute("SELECT app_id, graph, phase FROM operations ORDER BY rowid").fetchall()
        apps = db.execute("SELECT app_id, graph FROM apps ORDER BY app_id").fetchall()
    return ops, apps


async def test_a_refused_start_writes_nothing_and_the_rest_of_its_group_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ops"
    store = await OperationStore(path).open()
    request = RunRequest()

    def create(app_id: str, graph: str) -> asyncio.Future[Any]:
        return store.queue_create(
            graph=graph,
            partition_key="",
            app_id=app_id,
            principal="anonymous",
            idempotency_key=None,
            request=request,
            fingerprint="",
        )

    try:
        op, _ = await create("a", "g1")
        await store.finish(op.id, "finished", "completed", sequence_id=1, position=None)
        busy, _ = await create("b", "g1")  # b stays queued: busy
        # one group: a good start, a known app with another graph, a busy app with another
        # graph (the graph refusal comes first), a busy app, another good start
        group = [
            create("c", "g1"),
            create("a", "g2"),
            create("b", "g2"),
            create("b", "g1"),
            create("d", "g2"),
        ]
        outcomes = await asyncio.gather(*group, return_exceptions=True)
        assert not isinstance(outcomes[0], BaseException)
        assert not isinstance(outcomes[4], BaseException)
        refused = outcomes[1:4]
        assert all(isinstance(o, ProblemError) for o in refused), refused
        assert [o.slug for o in refused] == ["invalid-request", "invalid-request", "app-busy"]
    finally:
        await store.aclose()
    ops, apps = _rows(path)
    assert ops == [
        ("a", "g1", "finished"),
        ("b", "g1", "queued"),
        ("c", "g1", "queued"),
        ("d", "g2", "queued"),
    ]
    assert apps == [("a", "g1"), ("b", "g1"), ("c", "g1"), ("d", "g2")]
    assert busy.app_id == "b"


@pytest.mark.parametrize(
    ("name", "prefix", "inputs", "status"),
    [
        ("bom", b"\xef\xbb\xbf", "{}", 202),  # json.loads reads a UTF-8 BOM, msgspec does not
        ("nan", b"", '{"x": NaN}', 422),  # json.loads reads NaN; the route refuses the value
    ],
)
def test_a_body_the_plain_path_cannot_read_is_answered_as_the_route_reads_it(
    http: httpx.Client, name: str, prefix: bytes, inputs: str, status: int
) -> None:
    body = (
        prefix + f'{{"graph": "counter", "app_id": "pa-read-{name}", "inputs": {inputs}}}'.encode()
    )
    response = http.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    if status == 202:
        assert response.json()["app_id"] == f"pa-read-{name}"
