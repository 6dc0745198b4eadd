"""Runs through a real service: start -> 202 -> poll, halt/resume, cancel, fork, failures."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from statelog.eventstore import Event, EventKind
from statelog.service import derive_status

from .conftest import ServeProcess, wait_status

FINAL = {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}


@pytest.fixture(scope="module")
def http(server: ServeProcess) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def start(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/runs", json=body)
    assert response.status_code == 202, response.text
    op: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/operations/{op['id']}"
    return op


def events(http: httpx.Client, app_id: str, **params: Any) -> list[dict[str, Any]]:
    response = http.get(f"/v1/apps/{app_id}/events", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def events_so_far(http: httpx.Client, app_id: str) -> list[dict[str, Any]]:
    """``events``, or none while the run is still queued (its app is not in the log yet)."""
    response = http.get(f"/v1/apps/{app_id}/events")
    if response.status_code == 404:
        assert response.json()["type"] == "urn:statelog:problem:unknown-app", response.text
        return []
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def test_start_answers_202_then_the_run_completes(http: httpx.Client) -> None:
    op = start(http, graph="counter", app_id="c-complete")
    assert op["status"] == "queued" and op["app_id"] == "c-complete"
    done = wait_status(http, op["id"], FINAL)
    assert done["status"] == "completed"
    # app_initialized, run_started, 10 ticks, finish, completed
    assert (done["sequence_id"], done["position"], done["error"]) == (13, None, None)
    got = events(http, "c-complete")
    assert [e["sequence_id"] for e in got] == list(range(14))
    assert got[0]["kind"] == "app_initialized" and got[1]["kind"] == "run_started"
    assert got[-1]["kind"] == "completed" and got[-2]["action"] == "finish"
    state = http.get("/v1/apps/c-complete/state").json()
    assert state["state"] == {"count": 10, "done": True} and state["sequence_id"] == 13
    assert http.get("/v1/apps/c-complete/state", params={"at": 4}).json()["state"]["count"] == 3
    app = http.get("/v1/apps/c-complete").json()
    assert (app["status"], app["graph"], app["operation_id"]) == ("completed", "counter", op["id"])


def test_halt_after_then_resume_with_the_same_app_id(http: httpx.Client) -> None:
    first = wait_status(
        http, start(http, graph="counter", app_id="c-halt", halt_after=["tick"])["id"], FINAL
    )
    # app_initialized, run_started, tick, halted
    assert (first["status"], first["sequence_id"], first["position"]) == ("halted", 3, "tick")
    second = wait_status(
        http, start(http, graph="counter", app_id="c-halt", max_steps=3)["id"], FINAL
    )
    # run_started, then three steps
    assert (second["status"], second["sequence_id"]) == ("halted", 7)
    before = start(http, graph="counter", app_id="c-halt", halt_before=["finish"])
    assert wait_status(http, before["id"], FINAL)["position"] == "finish"
    last = wait_status(http, start(http, graph="counter", app_id="c-halt")["id"], FINAL)
    # halt_before finish: run_started, 6 ticks, halted; then run_started, finish, completed
    assert (last["status"], last["sequence_id"]) == ("completed", 18)
    assert [e["sequence_id"] for e in events(http, "c-halt")] == list(range(19))
    assert http.get("/v1/apps/c-halt/verify").json()["ok"] is True


def test_cancel_mid_run_stops_at_a_step_boundary(http: httpx.Client) -> None:
    op = start(http, graph="long", app_id="c-cancel", inputs={"delay": 0.05})
    deadline = time.monotonic() + 20
    while len(events_so_far(http, "c-cancel")) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = http.delete(f"/v1/operations/{op['id']}")
    assert response.status_code in (200, 202), response.text
    assert response.json()["cancel_requested"] is True
    done = wait_status(http, op["id"], FINAL)
    assert done["status"] == "cancelled"
    written = events(http, "c-cancel")
    assert 5 <= len(written) < 33  # stopped before the end
    assert done["sequence_id"] == written[-1]["sequence_id"]
    assert written[1]["kind"] == "run_started"
    assert all(e["kind"] == "action_completed" for e in written[2:-1])
    assert written[-1]["kind"] == "cancelled"  # recorded in the log, at a step boundary
    assert written[-1]["action"] == written[-2]["next_action"]
    time.sleep(0.2)
    assert len(events(http, "c-cancel")) == len(written)  # nothing after the cancel
    again = http.delete(f"/v1/operations/{op['id']}")
    assert again.status_code == 409
    assert again.json()["type"] == "urn:statelog:problem:operation-finished"
    app = http.get("/v1/apps/c-cancel").json()
    assert app["status"] == "cancelled"
    # a cancelled app resumes with a new run
    resumed = wait_status(http, start(http, graph="long", app_id="c-cancel")["id"], FINAL)
    # two runs: 2 run_started, 31 steps, cancelled, completed
    assert resumed["status"] == "completed" and resumed["sequence_id"] == 35


def test_fork_from_a_sequence_to_a_new_app(http: httpx.Client) -> None:
    wait_status(http, start(http, graph="counter", app_id="c-src")["id"], FINAL)
    # sequence 6 of the source is its 5th tick (after app_initialized and run_started)
    response = http.post("/v1/apps/c-src/fork", json={"new_app_id": "c-fork", "sequence_id": 6})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/apps/c-fork"
    assert (response.json()["status"], response.json()["graph"]) == ("halted", "counter")
    first = events(http, "c-fork")
    assert len(first) == 1 and first[0]["kind"] == "forked"
    parent = first[0]["parent"]
    assert (parent["app_id"], parent["sequence_id"], parent.get("relation", "fork")) == (
        "c-src",
        6,
        "fork",
    )
    assert http.get("/v1/apps/c-fork/state").json()["state"]["count"] == 5
    done = wait_status(http, start(http, graph="counter", app_id="c-fork")["id"], FINAL)
    assert done["status"] == "completed"
    assert http.get("/v1/apps/c-fork/state").json()["state"]["count"] == 10
    assert len(events(http, "c-src")) == 14  # the source is untouched
    clash = http.post("/v1/apps/c-src/fork", json={"new_app_id": "c-fork"})
    assert clash.status_code == 409 and clash.json()["type"].endswith(":app-exists")
    beyond = http.post("/v1/apps/c-src/fork", json={"new_app_id": "c-x", "sequence_id": 99})
    assert beyond.status_code == 422 and beyond.json()["type"].endswith(":out-of-range")


def test_a_failing_action_ends_the_operation_failed(http: httpx.Client) -> None:
    done = wait_status(http, start(http, graph="failing", app_id="c-fail")["id"], FINAL)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "ValueError" and done["error"]["sequence_id"] == 3
    assert events(http, "c-fail")[-1]["kind"] == "action_failed"
    assert http.get("/v1/apps/c-fail").json()["status"] == "failed"


def test_input_is_refused_while_the_engine_cannot_wait(http: httpx.Client) -> None:
    wait_status(http, start(http, graph="counter", app_id="c-input", max_steps=2)["id"], FINAL)
    before = events(http, "c-input")
    response = http.post("/v1/apps/c-input/input", json={"inputs": {"approved": True}})
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "urn:statelog:problem:not-waiting-for-input"
    assert problem["status"] == "halted"
    assert response.headers["content-type"] == "application/problem+json"
    assert events(http, "c-input") == before
    bad = http.post("/v1/apps/c-input/input", json={"inputs": "yes"})
    assert bad.status_code == 422
    missing = http.post("/v1/apps/nobody/input", json={"inputs": {}})
    assert missing.status_code == 404 and missing.json()["type"].endswith(":unknown-app")


def test_an_idempotency_key_returns_the_first_operation(http: httpx.Client) -> None:
    body = {"graph": "counter", "app_id": "c-idem"}
    first = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "key-c-idem"})
    second = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "key-c-idem"})
    assert first.status_code == 202
    assert second.status_code in (200, 202)
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    wait_status(http, first.json()["id"], FINAL)
    reused = http.post(
        "/v1/runs", json={**body, "max_steps": 1}, headers={"Idempotency-Key": "key-c-idem"}
    )
    assert reused.status_code == 422
    assert reused.json()["type"].endswith(":idempotency-key-reused")
    ops = http.get("/v1/operations", params={"limit": 1000}).json()["operations"]
    assert [op["id"] for op in ops if op["app_id"] == "c-idem"] == [first.json()["id"]]


def test_one_run_at_a_time_per_app(http: httpx.Client) -> None:
    op = start(http, graph="long", app_id="c-busy", inputs={"delay": 0.05})
    busy = http.post("/v1/runs", json={"graph": "long", "app_id": "c-busy"})
    assert busy.status_code == 409
    assert busy.json()["type"].endswith(":app-busy") and busy.json()["operation_id"] == op["id"]
    other = http.post("/v1/runs", json={"graph": "counter", "app_id": "c-busy"})
    assert other.status_code in (409, 422)
    http.delete(f"/v1/operations/{op['id']}")
    wait_status(http, op["id"], FINAL)
    wrong = http.post("/v1/runs", json={"graph": "counter", "app_id": "c-busy"})
    assert wrong.status_code == 422 and "runs graph 'long'" in wrong.json()["detail"]


def test_apps_listing_filters_and_pages(http: httpx.Client) -> None:
    for name in ("c-list-1", "c-list-2", "c-list-3"):
        wait_status(
            http, start(http, graph="counter", app_id=name, partition_key="lst")["id"], FINAL
        )
    seen: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page = http.get(
            "/v1/apps", params={"partition_key": "lst", "limit": 2, "cursor": cursor}
        ).json()
        seen += [a["app_id"] for a in page["apps"]]
        cursor = page["next_cursor"]
    assert seen == ["c-list-1", "c-list-2", "c-list-3"]
    done = http.get("/v1/apps", params={"status": "completed", "graph": "counter"}).json()
    assert all(a["status"] == "completed" and a["graph"] == "counter" for a in done["apps"])
    assert http.get("/v1/apps", params={"graph": "nope"}).json()["apps"] == []
    app = http.get("/v1/apps/c-list-1", params={"partition_key": "lst"}).json()
    assert app["partition_key"] == "lst" and app["status"] == "completed"
    assert http.get("/v1/apps/c-list-1").status_code == 404  # other partition


def test_export_streams_json_lines_that_import_and_verify(http: httpx.Client) -> None:
    import asyncio

    from statelog.eventstore import MemoryEventStore, import_streams

    wait_status(http, start(http, graph="counter", app_id="c-export")["id"], FINAL)
    response = http.get("/v1/apps/c-export/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    assert json.loads(lines[0]) == {"statelog_export": 1} and len(lines) == 15

    async def reimport() -> None:
        path = "c-export.jsonl"
        store = MemoryEventStore()
        with open(path, "w") as handle:
            handle.write(response.text)
        assert await import_streams(store, path) == 14
        assert await store.verify() is None

    import os
    import tempfile

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            asyncio.run(reimport())
        finally:
            os.chdir(cwd)
    verified = http.get("/v1/apps/c-export/verify").json()
    assert {k: verified[k] for k in ("ok", "sequence_id", "broken")} == {
        "ok": True,
        "sequence_id": 13,
        "broken": None,
    }
    assert verified["signed_head"]["status"] == "unsigned"  # no --signing-key


def test_health_ready_and_metrics(http: httpx.Client) -> None:
    # its own completed run: the module's other tests may run in another worker process
    wait_status(http, start(http, graph="counter", app_id="c-metrics")["id"], FINAL)
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["status"] == "ready"
    text = http.get("/metrics").text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and " " in line
    }
    assert values["statelog_steps_total"] > 0
    assert values["statelog_appends_total"] >= values["statelog_steps_total"]
    assert "statelog_queue_depth" in values and "statelog_runs_running_max" in values
    assert any(k.startswith("statelog_http_request_duration_seconds_bucket") for k in values)
    assert 'statelog_runs_finished_total{status="completed"}' in values


def _event(kind: str, next_action: str | None) -> Event:
    return Event(partition_key="", app_id="a", sequence_id=3, kind=kind, next_action=next_action)


def test_derive_status_reads_the_phase_then_the_last_event() -> None:
    completed = _event(EventKind.ACTION_COMPLETED, None)
    halted = _event(EventKind.ACTION_COMPLETED, "tick")
    failed = _event(EventKind.ACTION_FAILED, "tick")
    assert derive_status(None, None) == "unknown"
    assert derive_status(None, "queued") == "queued"
    assert derive_status(halted, "running") == "running"
    assert derive_status(halted, "cancelled") == "cancelled"
    assert derive_status(halted, "timed_out") == "timed_out"
    assert derive_status(completed, "finished") == "completed"
    assert derive_status(halted, "finished") == "halted"
    assert derive_status(failed, "finished") == "failed"
    assert derive_status(failed, None) == "failed"
    assert derive_status(completed, None) == "completed"


def test_wait_for_input_then_post_input_completes_the_run(http: httpx.Client) -> None:
    """review waits for `approval`; the input is checked, recorded, and the run goes on."""
    op = start(http, graph="refund", app_id="r-input")
    waiting = wait_status(http, op["id"], FINAL | {"waiting_for_input"})
    assert waiting["status"] == "waiting_for_input"
    assert http.get("/v1/apps/r-input").json()["status"] == "waiting_for_input"
    before = events(http, "r-input")
    assert before[-1]["kind"] == "waiting_for_input"
    assert before[-1]["data"]["name"] == "approval"
    # a value that does not fit the schema, or another name: 422 and nothing written
    misfit = {"inputs": {"approval": {"ok": "yes", "by": "ann"}}}
    other = {"inputs": {"refund": True}}
    for body in (misfit, other):
        refused = http.post("/v1/apps/r-input/input", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "urn:statelog:problem:invalid-input"
    assert events(http, "r-input") == before
    given = {"inputs": {"approval": {"ok": True, "by": "ann"}}, "actor": "ann"}
    accepted = http.post("/v1/apps/r-input/input", json=given)
    assert accepted.status_code == 202, accepted.text
    done = wait_status(http, accepted.json()["id"], FINAL)
    assert done["status"] == "completed"
    kinds = [e["kind"] for e in events(http, "r-input")]
    assert (
        kinds.index("waiting_for_input") < kinds.index("input_received") < kinds.index("completed")
    )
    received = next(e for e in events(http, "r-input") if e["kind"] == "input_received")
    assert received["inputs"] == {"approval": {"ok": True, "by": "ann"}}
    state = http.get("/v1/apps/r-input/state").json()["state"]
    assert (state["approved"], state["approver"], state["paid"]) == (True, "ann", True)
    again = http.post("/v1/apps/r-input/input", json=given)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:statelog:problem:not-waiting-for-input"


def test_graphs_are_served_as_registered(http: httpx.Client) -> None:
    counter = http.get("/v1/graphs/counter")
    assert counter.status_code == 200, counter.text
    assert counter.json() == {
        "name": "counter",
        "entrypoint": "tick",
        "actions": ["finish", "tick"],
        "transitions": [["tick", "tick", "expr('count < 10')"], ["tick", "finish", "default"]],
    }
    names = [g["name"] for g in http.get("/v1/graphs").json()["graphs"]]
    assert names == sorted(names) and {"counter", "refund", "long"} <= set(names)
    unknown = http.get("/v1/graphs/nope")
    assert unknown.status_code == 422  # as for a run of an unknown graph
    assert unknown.json()["type"] == "urn:statelog:problem:unknown-graph"


def test_post_runs_answers_alike_on_its_plain_path_and_through_the_route(
    http: httpx.Client,
) -> None:
    """``_Edge`` answers a plain ``POST /v1/runs`` itself and hands every other one to the
    route: both queue runs, refuse with the same problems and count as ``/v1/runs``."""
    plain = start(http, graph="counter", app_id="c-plain")  # application/json: the plain path
    routed = http.post(  # a +json media type: the route reads it as JSON, the plain path not
        "/v1/runs",
        content=json.dumps({"graph": "counter", "app_id": "c-routed"}),
        headers={"content-type": "application/vnd.statelog+json"},
    )
    assert routed.status_code == 202, routed.text
    assert routed.headers["location"] == f"/v1/operations/{routed.json()['id']}"
    for op in (plain, routed.json()):
        assert wait_status(http, op["id"], FINAL)["status"] == "completed"
        assert op.keys() == plain.keys()
    # refused on the plain path (a problem from queue_run) and by the route (its body checks)
    unknown = http.post("/v1/runs", json={"graph": "nope", "app_id": "c-nope"})
    assert unknown.status_code == 422 and unknown.json()["type"].endswith(":unknown-graph")
    assert unknown.json()["instance"] == "/v1/runs" and unknown.headers["x-request-id"]
    assert unknown.headers["content-type"] == "application/problem+json"
    malformed = http.post(
        "/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["type"].endswith(":malformed-json")
    extra = http.post("/v1/runs", json={"graph": "counter", "app_id": "c-extra", "x": 1})
    assert extra.status_code == 422 and extra.json()["type"].endswith(":invalid-request")
    long_key = http.post(
        "/v1/runs",
        json={"graph": "counter", "app_id": "c-key"},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert long_key.status_code == 422
    ops = http.get("/v1/operations", params={"limit": 1000}).json()["operations"]
    assert not {"c-nope", "c-extra", "c-key"} & {op["app_id"] for op in ops}
    text = http.get("/metrics").text
    assert 'method="POST",route="/v1/runs",status="202"' in text
    assert 'method="POST",route="/v1/runs",status="422"' in text
    assert 'method="POST",route="unmatched"' not in text  # the plain path labels its own
