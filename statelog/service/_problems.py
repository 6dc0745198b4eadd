"""Errors as ``application/problem+json`` (RFC 9457), with a stable ``type`` each.

Every refusal the service makes is a ``ProblemError`` raised in a route (or a
dependency) and turned into one response here. Unexpected exceptions become a
500 ``internal`` problem that names the request id, never a stack trace (the
trace goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

__all__ = ["PROBLEMS", "ProblemError", "install_problem_handlers", "problem_response"]

_log = logging.getLogger("statelog.service")

#: type slug -> (HTTP status, title). The ``type`` URI is ``urn:statelog:problem:<slug>``.
PROBLEMS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "Missing or unknown bearer token"),
    "forbidden": (403, "The token does not allow this"),
    "not-found": (404, "No such resource"),
    "unknown-app": (404, "No such app"),
    "unknown-operation": (404, "No such operation"),
    "method-not-allowed": (405, "Method not allowed"),
    "app-busy": (409, "The app already has a run queued or running"),
    "app-exists": (409, "An app with this id already exists"),
    "not-waiting-for-input": (409, "The app is not waiting for input"),
    "invalid-input": (422, "The input does not fit what the app waits for"),
    "operation-finished": (409, "The operation has already ended"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Send application/json"),
    "invalid-request": (422, "The request is not valid"),
    "malformed-json": (400, "The body is not valid JSON"),
    "unknown-graph": (422, "No workflow is registered under this graph name"),
    "idempotency-key-reused": (422, "The Idempotency-Key was used for a different request"),
    "out-of-range": (422, "The sequence is outside the stream"),
    "queue-full": (429, "Too many runs are queued"),
    "shutting-down": (503, "The service is shutting down"),
    "store-error": (503, "The event store could not serve the request"),
    "internal": (500, "Internal error"),
}


def problem_type(slug: str) -> str:
    return f"urn:statelog:problem:{slug}"


class ProblemError(Exception):
    """A refusal with a stable problem type; the route's answer is its problem document."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if slug not in PROBLEMS:
            raise ValueError(f"unknown problem type {slug!r}")
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = PROBLEMS[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    status, title = PROBLEMS[slug]
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


_HTTP_SLUGS = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed"}


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through ``problem_response``."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.slug, exc.detail, instance=request.url.path, headers=exc.headers, **exc.extra
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem_response(
                "malformed-json",
                "the request body is not valid JSON",
                instance=request.url.path,
                errors=errors,
            )
        where = ".".join(errors[0]["loc"]) if errors else ""
        message = str(errors[0]["msg"]) if errors else "invalid"
        return problem_response(
            "invalid-request",
            f"{where}: {message}" if where else message,
            instance=request.url.path,
            errors=errors,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = _HTTP_SLUGS.get(exc.status_code)
        if slug is None:
            slug = "invalid-request" if exc.status_code < 500 else "internal"
        return problem_response(
            slug,
            str(exc.detail),
            instance=request.url.path,
            headers=None if exc.headers is None else dict(exc.headers),
        )

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        _log.error(
            "unhandled error in %s %s (request %s)",
            request.method,
            request.url.path,
            request_id,
            exc_info=exc,
        )
        return problem_response(
            "internal",
            f"the service failed on this request (request id {request_id})",
            instance=request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
