"""The HTTP routes: runs and operations, apps and their history, health and metrics."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from statelog.engine import ApplicationBuilder, InputError, TransitionError, validate_input
from statelog.eventstore import (
    JSON,
    ConcurrencyError,
    EncodingError,
    Event,
    StreamId,
    UsageError,
    to_plain,
)

from ._auth import ANONYMOUS, Principal
from ._models import ForkRequest, InputRequest, StartRunRequest
from ._operations import Operation, RunRequest, new_operation_id
from ._problems import ProblemError
from ._service import Service, fingerprint, unknown_app
from ._signed_head import signed_head
from ._status import ACTIVE, FINAL

__all__ = ["queue_run", "router", "start_operation"]

router = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="a token from --token-file")
_READ_PAGE = 500
#: The largest SQLite INTEGER: every number that reaches a query is at most this.
_INT64 = 2**63 - 1
_encode = msgspec.json.Encoder().encode


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread,
# a hand-off per request for what is a dict lookup.


async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    service: Service = request.app.state.service
    tokens = service.config.tokens
    if tokens is None:
        return ANONYMOUS
    return tokens.authenticate(request.headers.get("authorization"))


ServiceDep = Annotated[Service, Depends(_service)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
PartitionKey = Annotated[str, Query(max_length=200, description="the app's partition key")]


def _event_json(event: Event) -> Any:
    return msgspec.to_builtins(event)


class _MsgspecJSON(JSONResponse):
    """``JSONResponse`` rendered by msgspec: the same compact UTF-8 JSON as
    ``json.dumps`` here (plain dicts, finite floats), in a few microseconds less (one
    of the per-POST cuts: +15 % closed-loop posts/s together, same-run A/B,
    docs/benchmarks.md session 7)."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def _op_response(op: Operation, status_code: int, **headers: str) -> JSONResponse:
    return _MsgspecJSON(
        op.to_json(),
        status_code=status_code,
        headers={"Location": f"/v1/operations/{op.id}", **headers},
    )


# --------------------------------------------------------------------- runs


@router.post("/v1/runs", status_code=202, tags=["runs"])
async def start_run(
    body: StartRunRequest,
    service: ServiceDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Queue a run; answer 202 with the operation and ``Location`` at once."""
    return await queue_run(service, principal, body, idempotency_key)


async def queue_run(
    service: Service, principal: Principal, body: StartRunRequest, idempotency_key: str | None
) -> JSONResponse:
    """What ``POST /v1/runs`` does once its body, token and headers are read."""
    op, replayed = await start_operation(service, principal, body, idempotency_key)
    if replayed:
        return _op_response(
            op, 202 if op.status in ACTIVE else 200, **{"Idempotent-Replayed": "true"}
        )
    return _op_response(op, 202)


async def start_operation(
    service: Service, principal: Principal, body: StartRunRequest, idempotency_key: str | None
) -> tuple[Operation, bool]:
    """``queue_run`` up to its answer: the operation and whether it is a replay (an
    earlier start with the same Idempotency-Key). The route above (``queue_run``) and
    the plain-ASGI path of ``_app._Edge`` share it."""
    principal.require(body.partition_key, write=True)
    if not service.ready:
        raise ProblemError("shutting-down", "the service is not accepting runs")
    workflow = service.workflow(body.graph)
    for name in (*body.halt_before, *body.halt_after):
        if name not in workflow.actions:
            raise ProblemError(
                "invalid-request",
                f"cannot halt at {name!r}: graph {body.graph!r} has no such action "
                f"(known: {sorted(workflow.actions)})",
            )
    try:
        inputs = to_plain(body.inputs, path="$.inputs")
    except EncodingError as exc:
        raise ProblemError("invalid-request", str(exc)) from exc
    request = RunRequest(
        inputs=inputs,
        halt_before=body.halt_before,
        halt_after=body.halt_after,
        max_steps=body.max_steps,
        timeout=body.timeout,
        actor=body.actor,
    )
    scheduler = service.scheduler
    if scheduler.queued >= service.config.max_queued_runs:
        raise ProblemError(
            "queue-full",
            f"{scheduler.queued} runs are queued (limit {service.config.max_queued_runs})",
            headers={"Retry-After": "1"},
        )
    # time-ordered, as the operation ids: a new app lands at the right edge of the log's
    # and the operations file's indexes (same-run, closed loop 64 without app ids: bytes
    # written per POST and its run 71 -> 43 KB, posts/s +20 %; docs/benchmarks.md, session 10)
    app_id = body.app_id or new_operation_id()
    op, replayed = await create_and_submit(
        service,
        graph=body.graph,
        partition_key=body.partition_key,
        app_id=app_id,
        principal=principal.name,
        idempotency_key=idempotency_key,
        request=request,
        # only a retry with the same Idempotency-Key compares it (none: nothing to hash)
        fingerprint=""
        if idempotency_key is None
        else fingerprint(body.graph, body.partition_key, body.app_id, request),
    )
    return op, replayed


async def create_and_submit(service: Service, **fields: Any) -> tuple[Operation, bool]:
    """``operations.queue_create`` and, for a new operation, ``scheduler.submit``: both or
    neither, even when the request is cancelled meanwhile (its client went away, a
    shutdown ran out of grace). The insert commits on the operations file's thread
    whether or not its caller still waits, so the submit is the insert's own ``then``
    (called by the operations store once it has committed, before the caller wakes,
    even when the caller was cancelled): a committed operation always reaches the
    scheduler, never waits "queued" for a restart while a replay of its
    Idempotency-Key answers 202. (A task per POST for the pair cost ~20 % of
    closed-loop posts/s, same-run A/B, docs/benchmarks.md; ``then`` instead of a
    done-callback and ``asyncio.shield``: session 9.)"""
    return await service.operations.queue_create(
        **fields, then=functools.partial(_submit_created, service)
    )


def _submit_created(service: Service, created: tuple[Operation, bool]) -> None:
    op, replayed = created
    if not replayed:  # a replayed one was submitted when it was created
        service.scheduler.submit(op)


@router.get("/v1/operations", tags=["operations"])
async def list_operations(
    service: ServiceDep,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[int, Query(ge=0, le=_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Operations in creation order; pass ``next_cursor`` back as ``cursor``."""
    found = await service.operations.listing(
        after=cursor, limit=limit, status=status, partition_keys=principal.sees
    )
    next_cursor = found[-1].cursor if len(found) == limit else None
    return {"operations": [op.to_json() for op in found], "next_cursor": next_cursor}


async def _visible_op(service: Service, principal: Principal, op_id: str) -> Operation:
    op = await service.operations.get(op_id)
    if op is None or not principal.sees(op.partition_key):
        raise ProblemError("unknown-operation", f"no operation {op_id!r}")
    return op


@router.get("/v1/operations/{op_id}", tags=["operations"])
async def get_operation(op_id: str, service: ServiceDep, principal: PrincipalDep) -> JSONResponse:
    """An operation's status (queued, running, halted, completed, failed, ...)."""
    op = await _visible_op(service, principal, op_id)
    body = op.to_json()
    if op.phase == "running":  # progress comes from the log
        last = await service.last_event(op.partition_key, op.app_id)
        if last is not None:
            body["sequence_id"], body["position"] = last.sequence_id, last.next_action
    return JSONResponse(body)


@router.delete("/v1/operations/{op_id}", tags=["operations"])
async def cancel_operation(
    op_id: str, service: ServiceDep, principal: PrincipalDep
) -> JSONResponse:
    """Cancel: a queued run at once (200), a running one at its next step boundary (202)."""
    op = await _visible_op(service, principal, op_id)
    principal.require(op.partition_key, write=True)
    if op.status in FINAL:
        raise ProblemError(
            "operation-finished", f"operation {op_id} already ended {op.status}", status=op.status
        )
    after = await service.scheduler.cancel(op)
    if after is None:
        after = await service.operations.get(op_id)
        assert after is not None
    return _op_response(after, 200 if after.status in FINAL else 202)


# --------------------------------------------------------------------- apps


async def _app_json(service: Service, partition_key: str, app_id: str) -> dict[str, Any]:
    status, op, last = await service.app_status(partition_key, app_id)
    graph = op.graph if op is not None else await service.operations.graph_of(partition_key, app_id)
    return {
        "app_id": app_id,
        "partition_key": partition_key,
        "graph": graph,
        "status": status,
        "sequence_id": None if last is None else last.sequence_id,
        "position": None if last is None else last.next_action,
        "operation_id": None if op is None else op.id,
        "error": None if last is None or last.error is None else msgspec.to_builtins(last.error),
    }


@router.get("/v1/graphs", tags=["graphs"])
async def list_graphs(service: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """The registered workflows' graphs (entrypoint, actions, transitions)."""
    return {"graphs": [service.workflows[name].describe() for name in sorted(service.workflows)]}


@router.get("/v1/graphs/{name}", tags=["graphs"])
async def get_graph(name: str, service: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """One registered graph (``404 unknown-graph`` if none has that name)."""
    return service.workflow(name).describe()


@router.get("/v1/apps", tags=["apps"])
async def list_apps(
    service: ServiceDep,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(max_length=40)] = None,
    graph: Annotated[str | None, Query(max_length=200)] = None,
    partition_key: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[int, Query(ge=0, le=_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Apps in creation order with their status; filter, and page with ``cursor``."""
    if partition_key is not None:
        principal.require(partition_key, write=False)
    streams = await service.store.streams(partition_key)
    found: list[dict[str, Any]] = []
    index = cursor
    while index < len(streams) and len(found) < limit:
        stream = streams[index]
        index += 1
        if not principal.sees(stream.partition_key):
            continue
        item = await _app_json(service, stream.partition_key, stream.app_id)
        if (status is None or item["status"] == status) and (
            graph is None or item["graph"] == graph
        ):
            found.append(item)
    return {"apps": found, "next_cursor": index if index < len(streams) else None}


@router.get("/v1/apps/{app_id}", tags=["apps"])
async def get_app(
    app_id: str, service: ServiceDep, principal: PrincipalDep, partition_key: PartitionKey = ""
) -> dict[str, Any]:
    """An app's status, position and last sequence."""
    principal.require(partition_key, write=False)
    found = await _app_json(service, partition_key, app_id)
    if found["sequence_id"] is None:  # no event in the log: not an app (yet)
        raise unknown_app(partition_key, app_id)
    return found


@router.get("/v1/apps/{app_id}/events", tags=["apps"])
async def get_events(
    app_id: str,
    service: ServiceDep,
    principal: PrincipalDep,
    partition_key: PartitionKey = "",
    from_: Annotated[int, Query(alias="from", ge=0, le=_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Events of an app from sequence ``from`` (at most ``limit``)."""
    principal.require(partition_key, write=False)
    last = await service.require_app(partition_key, app_id)
    events = await service.store.read(
        partition_key, app_id, from_sequence=from_, to_sequence=min(from_ + limit - 1, _INT64)
    )
    after = events[-1].sequence_id + 1 if events else None
    more = after is not None and after <= last.sequence_id
    return {"events": [_event_json(e) for e in events], "next_from": after if more else None}


@router.get("/v1/apps/{app_id}/state", tags=["apps"])
async def get_state(
    app_id: str,
    service: ServiceDep,
    principal: PrincipalDep,
    partition_key: PartitionKey = "",
    at: Annotated[int | None, Query(ge=0, le=_INT64, description="after event SEQ")] = None,
) -> dict[str, Any]:
    """The app's state now, or after event ``at``."""
    from statelog.eventstore import load_state

    principal.require(partition_key, write=False)
    last = await service.require_app(partition_key, app_id)
    if at is not None and at > last.sequence_id:
        raise ProblemError(
            "out-of-range",
            f"app {app_id!r} has events 0..{last.sequence_id}; at={at} is outside",
        )
    state, seq = await load_state(
        service.store, service.snapshots, partition_key, app_id, at_sequence=at
    )
    return {"app_id": app_id, "partition_key": partition_key, "sequence_id": seq, "state": state}


@router.get("/v1/apps/{app_id}/verify", tags=["apps"])
async def verify_app(
    app_id: str, service: ServiceDep, principal: PrincipalDep, partition_key: PartitionKey = ""
) -> dict[str, Any]:
    """Walk the app's hash chain (``ok`` false names the first broken link), and check
    its head against the latest signed checkpoint (``signed_head``; docs/service.md)."""
    principal.require(partition_key, write=False)
    last = await service.require_app(partition_key, app_id)
    broken = await service.store.verify(partition_key, app_id)
    signed = await signed_head(service.store, service.public_keys, partition_key, app_id)
    return {
        "ok": broken is None,
        "sequence_id": last.sequence_id,
        "broken": None if broken is None else msgspec.to_builtins(broken),
        "signed_head": signed,
    }


@router.get(
    "/v1/apps/{app_id}/export",
    tags=["apps"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_app(
    app_id: str, service: ServiceDep, principal: PrincipalDep, partition_key: PartitionKey = ""
) -> StreamingResponse:
    """The app's events as JSON lines (the ``statelog export`` format), streamed."""
    principal.require(partition_key, write=False)
    await service.require_app(partition_key, app_id)
    store = service.store

    async def lines() -> AsyncIterator[bytes]:
        yield b'{"statelog_export":1}\n'
        start = 0
        while True:
            events = await store.read(
                partition_key, app_id, from_sequence=start, to_sequence=start + _READ_PAGE - 1
            )
            if not events:
                return
            yield b"".join(JSON.encode_event(e) + b"\n" for e in events)
            start = events[-1].sequence_id + 1

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/v1/apps/{app_id}/input", status_code=202, tags=["apps"])
async def provide_input(
    app_id: str,
    body: InputRequest,
    service: ServiceDep,
    principal: PrincipalDep,
    partition_key: PartitionKey = "",
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Human input for an app waiting for it: checked now, then the run goes on (202).

    ``inputs`` holds exactly the one input the app waits for (its log's last
    event, ``waiting_for_input``, names it and may give a JSON Schema). The
    value is checked against that schema here (``422 invalid-input``, nothing
    written); the operation then records ``input_received`` and runs the app on
    like a start. ``409 not-waiting-for-input`` for an app that is not waiting.
    """
    principal.require(partition_key, write=True)
    if not service.ready:
        raise ProblemError("shutting-down", "the service is not accepting runs")
    try:
        inputs = to_plain(body.inputs, path="$.inputs")
    except EncodingError as exc:
        raise ProblemError("invalid-request", str(exc)) from exc
    last = await service.require_app(partition_key, app_id)
    status, latest, last_event = await service.app_status(partition_key, app_id, last)
    earlier = None
    if status != "waiting_for_input" and idempotency_key is not None:
        # a retry of an input already taken (its answer was lost): no longer waiting,
        # the app is answered by the key, as a retried start is
        earlier = await service.operations.by_key(principal.name, idempotency_key)
    if earlier is not None and earlier.request.input_name is not None:
        name, graph = earlier.request.input_name, earlier.graph
        if set(inputs) != {name}:
            raise ProblemError(
                "idempotency-key-reused",
                f"Idempotency-Key {idempotency_key!r} was used for another request "
                f"(operation {earlier.id})",
            )
    elif status != "waiting_for_input" or last_event is None or latest is None:
        raise ProblemError(
            "not-waiting-for-input",
            f"app {app_id!r} is {status}, not waiting_for_input",
            status=status,
        )
    else:
        waits_for = last_event.data.get("name")
        if not isinstance(waits_for, str) or set(inputs) != {waits_for}:
            raise ProblemError(
                "invalid-input",
                f"app {app_id!r} waits for input {waits_for!r}: send {{'inputs': "
                f"{{{waits_for!r}: value}}}}, got the names {sorted(inputs)}",
            )
        name, graph = waits_for, latest.graph
        try:
            validate_input(last_event.data.get("schema"), inputs[name], f"$.inputs.{name}")
        except InputError as exc:
            raise ProblemError("invalid-input", str(exc)) from exc
    request = RunRequest(input_name=name, input_value=inputs[name], actor=body.actor)
    op, replayed = await create_and_submit(  # an earlier one: the same again, or key-reused
        service,
        graph=graph,
        partition_key=partition_key,
        app_id=app_id,
        principal=principal.name,
        idempotency_key=idempotency_key,
        request=request,
        fingerprint=fingerprint(graph, partition_key, app_id, request),
    )
    if replayed:
        return _op_response(
            op, 202 if op.status in ACTIVE else 200, **{"Idempotent-Replayed": "true"}
        )
    return _op_response(op, 202)


@router.post("/v1/apps/{app_id}/fork", status_code=201, tags=["apps"])
async def fork_app(
    app_id: str,
    body: ForkRequest,
    service: ServiceDep,
    principal: PrincipalDep,
    partition_key: PartitionKey = "",
) -> JSONResponse:
    """A new app from this one's state at ``sequence_id``; its first event is ``forked``."""
    new_pk = partition_key if body.partition_key is None else body.partition_key
    principal.require(partition_key, write=False)
    principal.require(new_pk, write=True)
    last = await service.require_app(partition_key, app_id)
    if body.sequence_id is not None and body.sequence_id > last.sequence_id:
        raise ProblemError(
            "out-of-range",
            f"app {app_id!r} has events 0..{last.sequence_id}; "
            f"sequence_id={body.sequence_id} is outside",
        )
    graph = body.graph or await service.operations.graph_of(partition_key, app_id)
    if graph is None:
        raise ProblemError(
            "invalid-request",
            f"the service does not know the graph of app {app_id!r}: pass 'graph'",
        )
    workflow = service.workflow(graph)
    if await service.store.last_sequence(new_pk, body.new_app_id) >= 0:
        raise ProblemError("app-exists", f"app {body.new_app_id!r} already exists")
    builder: ApplicationBuilder = (
        workflow.builder()
        .with_identifiers(app_id=body.new_app_id, partition_key=new_pk)
        .with_store(service.store, snapshots=service.snapshots)
        .fork_from(app_id=app_id, partition_key=partition_key, sequence_id=body.sequence_id)
    )
    try:
        forked = await builder.abuild()
    except ConcurrencyError as exc:
        raise ProblemError("app-exists", f"app {body.new_app_id!r} already exists") from exc
    except (UsageError, TransitionError) as exc:
        raise ProblemError("invalid-request", str(exc)) from exc
    await forked.aclose()
    service.metrics.appends += 1
    await service.operations.remember_app(new_pk, body.new_app_id, graph)
    item = await _app_json(service, new_pk, body.new_app_id)
    location = f"/v1/apps/{body.new_app_id}" + (f"?partition_key={new_pk}" if new_pk else "")
    return JSONResponse(item, status_code=201, headers={"Location": location})


# --------------------------------------------------------------------- SSE


def _sse(event: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + data + b"\n\n"


@router.get(
    "/v1/apps/{app_id}/events/stream",
    tags=["apps"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    app_id: str,
    request: Request,
    service: ServiceDep,
    principal: PrincipalDep,
    partition_key: PartitionKey = "",
    from_: Annotated[int | None, Query(alias="from", ge=0, le=_INT64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events: every event from ``from`` (or after ``Last-Event-ID``) on, then
    new ones as they are written. Each message's ``id`` is the sequence id, its ``event``
    the kind; a ``status`` message (no id) reports the app's status when it changes."""
    principal.require(partition_key, write=False)
    start = from_ or 0
    if last_event_id is not None:
        try:
            start = int(last_event_id) + 1
        except ValueError as exc:
            raise ProblemError(
                "invalid-request", f"Last-Event-ID must be a sequence id, got {last_event_id!r}"
            ) from exc
        if not 0 <= start <= _INT64:
            raise ProblemError("invalid-request", "Last-Event-ID must be a sequence id >= 0")
    if (
        await service.store.last_sequence(partition_key, app_id) < 0
        and await service.operations.latest_for_app(partition_key, app_id) is None
    ):
        raise ProblemError("unknown-app", f"no app {app_id!r}")
    stream = StreamId(partition_key, app_id)
    config = service.config

    async def messages() -> AsyncIterator[bytes]:
        service.metrics.sse_clients += 1
        try:
            next_seq = start
            reported: tuple[str, str | None] | None = None
            quiet = 0.0
            yield b"retry: 1000\n\n"
            while not service.signals.closing.is_set():
                events = await service.store.read(
                    partition_key,
                    app_id,
                    from_sequence=next_seq,
                    to_sequence=min(next_seq + _READ_PAGE - 1, _INT64),
                )
                for event in events:
                    yield _sse(event.kind, _encode(event), event.sequence_id)
                if events:
                    next_seq = events[-1].sequence_id + 1
                    quiet = 0.0
                    if len(events) == _READ_PAGE:
                        continue
                status, op, _ = await service.app_status(partition_key, app_id)
                now = (status, None if op is None else op.id)
                if now != reported:
                    reported = now
                    data = {"status": status, "operation_id": now[1], "next_sequence": next_seq}
                    yield _sse("status", _encode(data))
                waited = time.monotonic()
                await service.signals.wait(stream, config.sse_poll_interval)
                quiet += time.monotonic() - waited
                if quiet >= config.sse_keepalive:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
        finally:
            service.metrics.sse_clients -= 1

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --------------------------------------------------------------------- health


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(service: ServiceDep) -> Response:
    """Ready to take runs (stores open, not shutting down)."""
    if not service.ready:
        raise ProblemError("shutting-down", "the service is not ready")
    return JSONResponse(
        {
            "status": "ready",
            "queued": service.scheduler.queued,
            "running": service.scheduler.running,
        }
    )


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> PlainTextResponse:
    """Prometheus text: steps, appends, queue depth, runs, run durations, HTTP latency."""
    return PlainTextResponse(
        service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
