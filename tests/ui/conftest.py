"""Fixtures for the UI tests: seeded logs behind a real uvicorn, and Debian's Chromium.

Playwright for Python drives ``/usr/bin/chromium`` (``STATELOG_CHROMIUM`` to
change it; ``playwright install`` is never needed). Without Chromium or
Playwright the tests skip, and FAIL when ``STATELOG_REQUIRE_BROWSER=1`` (CI).
``STATELOG_UI_SCREENSHOTS=1`` writes the pages' screenshots to docs/ui/.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).absolute().parents[2]
CHROMIUM = os.environ.get("STATELOG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "docs" / "ui"
BIG = 100_000
FINAL = {"halted", "completed", "failed", "cancelled", "timed_out", "interrupted"}
WRITE_TOKEN = "write-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
XSS = "<script>alert(1)</script>"


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def require_browser() -> None:
    missing = _missing_browser()
    if missing is None:
        return
    if os.environ.get("STATELOG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"STATELOG_REQUIRE_BROWSER=1 but {missing}", pytrace=False)
    pytest.skip(missing)


class Process:
    """A server subprocess on 127.0.0.1: started, its URL read from stdout, stopped."""

    def __init__(self, args: list[str], marker: str, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        err = open(log, "a")  # noqa: SIM115 - the child keeps it
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        err.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if marker not in line:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{log.read_text()[-3000:]}")
        self.url = line.strip().rsplit(" ", 1)[-1].removesuffix("/ui/")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError("server never answered /healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve(db: Path, *extra: str) -> Process:
    return Process(
        ["-m", "tests.ui.serve", "--db", str(db), *extra], "listening on", db.with_suffix(".log")
    )


async def _seed_big(db: Path) -> None:
    """One stream of BIG events, written straight to the store (batches of 2,000)."""
    from statelog.eventstore import Event, SQLiteEventStore

    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    async with await SQLiteEventStore.open(db) as store:
        for base in range(0, BIG, 2000):
            events = [
                Event(
                    partition_key="bulk",
                    app_id="big-stream",
                    sequence_id=i,
                    kind="action_completed",
                    action="step",
                    next_action="step",
                    ops=[
                        {"op": "set", "key": "n", "value": i},
                        {"op": "set", "key": "last", "value": f"item-{i}"},
                    ],
                    timestamp=start + timedelta(milliseconds=i),
                    duration_us=500,
                )
                for i in range(base, min(base + 2000, BIG))
            ]
            await store.append(events, expected_sequence=base - 1)


@dataclass
class Seeded:
    db: Path
    url: str
    apps: dict[str, tuple[str, str]] = field(default_factory=dict)  # app_id -> (pk, graph)

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=10)

    def run(self, graph: str, app_id: str, pk: str, token: str | None = None, **extra: Any) -> str:
        response = self.post(
            "/v1/runs", {"graph": graph, "app_id": app_id, "partition_key": pk, **extra}, token
        )
        assert response.status_code == 202, response.text
        self.apps[app_id] = (pk, graph)
        op_id: str = response.json()["id"]
        return op_id

    def wait(self, op_id: str, token: str | None = None, timeout: float = 30) -> dict[str, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            op: dict[str, Any] = httpx.get(
                f"{self.url}/v1/operations/{op_id}", headers=headers, timeout=5
            ).json()
            if op["status"] in FINAL:
                return op
            time.sleep(0.05)
        raise AssertionError(f"operation {op_id} did not end")


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A service over a log with apps of every status, a fork, an XSS value, 100k events."""
    db = tmp_path_factory.mktemp("ui") / "ui.db"
    started = time.perf_counter()
    # in a thread of its own: pytest-asyncio may have a loop running in this one
    seeder = threading.Thread(target=asyncio.run, args=(_seed_big(db),))
    seeder.start()
    seeder.join()
    assert db.exists()
    print(f"\nseeded {BIG:,} events in {time.perf_counter() - started:.1f} s")
    server = serve(db)
    try:
        s = Seeded(db=db, url=server.url)
        s.apps["big-stream"] = ("bulk", "")
        ops = [
            s.run("counter", "order-a1", "tenant-a"),
            s.run("counter", "order-a2", "tenant-a"),
            s.run("counter", "order-b1", "tenant-b"),
            s.run("counter", "order-b2", "tenant-b"),
            s.run("failing", "payment-7", "tenant-a"),
            s.run("noted", "xss-note", "tenant-b", inputs={"text": XSS}),
            s.run("counter", "order-halted", "tenant-a", halt_after=["tick"]),
        ]
        for op in ops:
            s.wait(op)
        fork = s.post(
            "/v1/apps/order-a1/fork?partition_key=tenant-a",
            {"new_app_id": "order-a1-retry", "sequence_id": 2},
        )
        assert fork.status_code == 201, fork.text
        s.apps["order-a1-retry"] = ("tenant-a", "counter")
        yield s
    finally:
        server.stop()


# Package scope, not session: while sync_playwright() is open its event loop
# counts as running in this thread, and every async test after tests/ui would
# fail with "Runner.run() cannot be called from a running event loop".
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A Playwright page that records every dialog (none may ever open), script error
    and request (all must go to the server under test)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def ui(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    wrapped = Page(page)
    try:
        yield wrapped
    finally:
        context.close()
    assert wrapped.dialogs == [], f"a dialog opened: {wrapped.dialogs}"
    assert wrapped.errors == [], f"script errors: {wrapped.errors}"
    # no CDN, no network: every request goes to the server under test (or is inline data)
    elsewhere = [u for u in wrapped.requests if not u.startswith(("http://127.0.0.1:", "data:"))]
    assert elsewhere == [], f"requests off the server: {elsewhere}"
    assert any("/ui/js/main.js" in u for u in wrapped.requests)


def shot(
    page: Any,
    name: str,
    *,
    full_page: bool = False,
    height: int | None = None,
    element: Any = None,
) -> None:
    """Save docs/ui/NAME.png when STATELOG_UI_SCREENSHOTS=1 (of ``element``, a locator,
    when given)."""
    if os.environ.get("STATELOG_UI_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    if element is not None:
        element.screenshot(path=str(path), animations="disabled")
        return
    clip = None if height is None else {"x": 0, "y": 0, "width": 1280, "height": height}
    page.screenshot(path=str(path), full_page=full_page, clip=clip, animations="disabled")
