"""``statelog serve`` itself (the real command, not the test server) serves the pages at /ui."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import Process


def test_statelog_serve_serves_the_ui(tmp_path: Path) -> None:
    server = Process(
        ["-m", "statelog", "serve", "--db", str(tmp_path / "log.db"), "--port", "0", "--demo"],
        "statelog serve: listening on",
        tmp_path / "serve.log",
    )
    try:
        redirect = httpx.get(f"{server.url}/ui", timeout=10)
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/"
        page = httpx.get(f"{server.url}/ui/", timeout=10)
        assert page.status_code == 200, page.text
        assert 'src="js/main.js"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"{server.url}/ui/js/pages/app.js", timeout=10).status_code == 200
        session = httpx.get(f"{server.url}/ui/session", timeout=10).json()
        assert session["write"] is True and session["auth"] is False
    finally:
        server.stop()
