"""``mount_ui``: the static pages at ``/ui`` and the one route they need of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC_DIR", "mount_ui"]

#: The pages: index.html, app.css and the ES modules under js/.
STATIC_DIR = Path(__file__).parent / "static"

#: Only this server's own files and API; no inline script, no plug-ins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class _Pages(StaticFiles):
    """Static files with a strict Content-Security-Policy and no caching of stale pages."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response


def _session(request: Request) -> dict[str, Any]:
    """What the pages may show: auth on or off, and whether this caller may write.

    Without a token file everyone may write (unless the service is read-only);
    with one, the caller's bearer token decides (a wrong token is a 401 problem).
    """
    service = getattr(request.app.state, "service", None)
    read_only = bool(getattr(service, "read_only", False))
    config = getattr(service, "config", None)
    tokens = getattr(config, "tokens", None)
    if tokens is None:
        return {
            "auth": False,
            "authenticated": True,
            "write": not read_only,
            "read_only": read_only,
        }
    header = request.headers.get("authorization")
    if not header:
        return {"auth": True, "authenticated": False, "write": False, "read_only": read_only}
    principal = tokens.authenticate(header)
    return {
        "auth": True,
        "authenticated": True,
        "write": principal.can_write() and not read_only,
        "read_only": read_only,
        "token": principal.name,
        "partitions": principal.partitions,
    }


def mount_ui(app: FastAPI, *, path: str = "/ui") -> None:
    """Serve the history browser at ``path`` (default ``/ui``) on a service app.

    Call it once after ``create_app`` (or on ``create_read_only_app``'s app, which
    does). The pages use the app's ``/v1`` routes with the token the user enters.
    """
    path = "/" + path.strip("/")
    mounted: set[str] | None = getattr(app.state, "statelog_ui_paths", None)
    if mounted is None:
        mounted = app.state.statelog_ui_paths = set()
    if path in mounted:  # mounted twice (by the service and by its caller): once is enough
        return
    mounted.add(path)

    async def session(request: Request) -> JSONResponse:
        return JSONResponse(_session(request), headers={"Cache-Control": "no-store"})

    async def to_index() -> RedirectResponse:
        return RedirectResponse(f"{path}/", status_code=307)

    app.add_api_route(f"{path}/session", session, methods=["GET"], include_in_schema=False)
    app.add_api_route(path, to_index, methods=["GET"], include_in_schema=False)
    app.mount(path, _Pages(directory=STATIC_DIR, html=True), name="ui")
