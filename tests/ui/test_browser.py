"""The history browser in Chromium against a real uvicorn over seeded SQLite logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import BIG, READ_TOKEN, ROOT, WRITE_TOKEN, XSS, Page, Process, Seeded, serve, shot


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def open_apps(ui: Page, seeded: Seeded, query: str = "") -> Any:
    page = ui.page
    page.goto(f"{seeded.url}/ui/#/{query}")
    page.wait_for_selector("tr.app-row, #apps-empty")
    return page


def clear_filters(page: Any, seeded: Seeded) -> None:
    page.click("#f-clear")
    expect(page.locator("tr.app-row")).to_have_count(len(seeded.apps))


def shown_apps(page: Any) -> set[str]:
    ids: list[str] = page.locator("tr.app-row").evaluate_all(
        "rows => rows.map(r => r.dataset.appId)"
    )
    return set(ids)


def open_app(ui: Page, seeded: Seeded, app_id: str) -> Any:
    pk = seeded.apps[app_id][0]
    page = ui.page
    page.goto(f"{seeded.url}/ui/#/app?id={app_id}&pk={pk}")
    page.wait_for_selector("tr.ev")
    return page


def test_apps_list_shows_seeded_apps_and_filters_narrow_it(ui: Page, seeded: Seeded) -> None:
    page = open_apps(ui, seeded)
    assert shown_apps(page) == set(seeded.apps)
    failed = page.locator("tr.app-row.row-failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("payment-7")
    expect(page.locator("tr[data-app-id='order-a1'] td.last-action")).to_have_text("finish")
    expect(page.locator("tr[data-app-id='payment-7'] td.last-action")).to_have_text("explode")
    shot(page, "apps")

    page.select_option("#f-status", "failed")
    page.click("#f-apply")
    expect(page.locator("tr.app-row")).to_have_count(1)
    assert shown_apps(page) == {"payment-7"}

    clear_filters(page, seeded)
    page.fill("#f-partition", "tenant-b")
    page.click("#f-apply")
    expect(page.locator("tr.app-row")).to_have_count(3)
    assert shown_apps(page) == {"order-b1", "order-b2", "xss-note"}

    page.fill("#f-partition", "")
    page.fill("#f-graph", "counter")
    page.select_option("#f-status", "completed")
    page.click("#f-apply")
    expect(page.locator("tr.app-row")).to_have_count(4)
    assert shown_apps(page) == {"order-a1", "order-a2", "order-b1", "order-b2"}

    clear_filters(page, seeded)
    page.fill("#f-q", "a1")
    page.press("#f-q", "Enter")
    expect(page.locator("tr.app-row")).to_have_count(2)
    assert shown_apps(page) == {"order-a1", "order-a1-retry"}


def test_the_apps_list_pages_through_every_app(ui: Page, seeded: Seeded) -> None:
    page = open_apps(ui, seeded, "?limit=4")
    pages = [shown_apps(page)]
    while page.locator("#apps-next").count():
        page.click("#apps-next")
        page.wait_for_function(
            """(shown) => {
              const rows = [...document.querySelectorAll('tr.app-row')];
              return rows.length > 0 && !rows.some(r => shown.includes(r.dataset.appId));
            }""",
            arg=sorted(pages[-1]),
        )
        pages.append(shown_apps(page))
    assert len(pages) >= 3 and all(1 <= len(p) <= 4 for p in pages)
    every = set().union(*pages)
    assert sum(len(p) for p in pages) == len(every)  # no app on two pages
    assert set(seeded.apps) <= every
    page.click("#apps-prev")
    expect(page.locator("tr.app-row")).to_have_count(len(pages[-2]))
    assert shown_apps(page) == pages[-2]


def test_an_app_shows_its_timeline_failure_diff_and_state(ui: Page, seeded: Seeded) -> None:
    page = open_apps(ui, seeded)
    page.click("tr[data-app-id='payment-7'] a.app-link")
    page.wait_for_selector("tr.ev")
    # app_initialized, run_started, count, attempt_failed, charge, action_failed
    expect(page.locator("tr.ev")).to_have_count(6)
    expect(page.locator("#app-status")).to_contain_text("failed")
    # the failed step: its kind, its error (the failed attempt before it is its own row)
    failed = page.locator("tr.ev.ev-fail[data-kind='action_failed']")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("action failed")
    expect(failed).to_contain_text("ValueError: the gauge broke")
    # the step whose first attempt failed before it succeeded
    retried = page.locator("tr.ev.ev-retried")
    expect(retried).to_contain_text("2 (1 failed)")
    expect(retried.locator(".change-cell")).to_contain_text(
        'receipt = {"amount":100,"currency":"EUR"}'
    )
    expect(page.locator("#chain-status")).to_contain_text("verified: events 0..5")
    expect(page.locator("#graph-box svg .node.current")).to_have_attribute("data-action", "explode")

    # state after #2 (count): count 1, not charged yet
    page.fill("#state-at", "2")
    page.click("#state-show")
    expect(page.locator("#state-label")).to_have_text("State after event #2")
    tree = page.locator("#state-tree")
    expect(tree).to_contain_text("count: 1")
    expect(tree).to_contain_text("charged: false")
    expect(tree).not_to_contain_text("receipt")

    # diff #2 -> #4 (charge): charged flips, the receipt appears
    page.fill("#diff-a", "2")
    page.fill("#diff-b", "4")
    page.click("#diff-show")
    rows = page.locator("#diff-out table.diff tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#diff-out tr.d-changed")).to_contain_text("charged")
    expect(page.locator("#diff-out tr.d-added")).to_contain_text("receipt")
    shot(page, "app", full_page=True)

    # a row's State button shows the state after that event
    page.click("#ev-0 button")
    expect(page.locator("#state-label")).to_have_text("State after event #0")
    expect(tree).to_contain_text("count: 0")


def test_a_fork_links_to_its_parent(ui: Page, seeded: Seeded) -> None:
    page = open_app(ui, seeded, "order-a1-retry")
    link = page.locator("#lineage-box a.app-link")
    expect(link).to_have_text("order-a1")
    expect(page.locator("#lineage-box")).to_contain_text("forked from order-a1 at #2")
    expect(page.locator("tr.ev").first).to_contain_text("forked")
    shot(page, "lineage")
    link.click()
    expect(page.locator("h1.app-title")).to_have_text("order-a1")


def test_a_value_with_markup_renders_as_inert_text(ui: Page, seeded: Seeded) -> None:
    page = open_app(ui, seeded, "xss-note")
    expect(page.locator("#timeline-table")).to_contain_text(f"note = {XSS!r}".replace("'", '"'))
    expect(page.locator("#state-tree")).to_contain_text(XSS)
    # nothing from the log became an element: only the page's own module script exists
    assert page.locator("#view script").count() == 0
    assert page.evaluate("document.scripts.length") == 1
    page.fill("#diff-a", "0")
    page.fill("#diff-b", "2")
    page.click("#diff-show")
    expect(page.locator("#diff-out")).to_contain_text(XSS)
    time.sleep(0.2)  # give a script, had one been injected, the chance to run
    assert ui.dialogs == []
    shot(page, "xss")


def test_the_first_page_of_a_100k_event_stream_renders(ui: Page, seeded: Seeded) -> None:
    page = ui.page
    started = time.perf_counter()
    page.goto(f"{seeded.url}/ui/#/app?id=big-stream&pk=bulk")
    page.wait_for_selector("#ev-49")
    elapsed = time.perf_counter() - started
    print(f"\nfirst page of a {BIG:,}-event stream rendered in {elapsed * 1000:.0f} ms")
    expect(page.locator("tr.ev")).to_have_count(50)
    expect(page.locator("#page-label")).to_have_text(f"Events #0–#49 of 0–{BIG - 1}")
    shot(page, "big-stream")
    page.click("#tl-latest")
    # the page's first read of the state after #99999 folds the whole stream on the
    # service's reader thread, ahead of this page read: slow on a loaded machine
    expect(page.locator(f"#ev-{BIG - 1}")).to_be_visible(timeout=60_000)
    page.fill("#tl-goto", "54321")
    page.click("#tl-go")
    expect(page.locator("#ev-54321")).to_contain_text('"item-54321"', timeout=60_000)
    expect(page.locator("tr.ev")).to_have_count(50)


def test_a_running_apps_timeline_grows_live_and_can_be_cancelled(ui: Page, seeded: Seeded) -> None:
    op = seeded.run("slow", "live-run", "tenant-a", inputs={"delay": 0.1})
    page = open_app(ui, seeded, "live-run")
    expect(page.locator("#follow-live")).to_have_attribute("aria-pressed", "true")
    before = page.locator("tr.ev").count()
    page.wait_for_function(
        "(n) => document.querySelectorAll('tr.ev').length >= n", arg=before + 5, timeout=20_000
    )
    last_seq = int(page.locator("#app-last-seq").inner_text())
    assert last_seq >= before + 4
    # each event once, in order: a page loaded while the SSE catches up shows no duplicate
    seqs = page.locator("tr.ev").evaluate_all("rows => rows.map(r => Number(r.dataset.seq))")
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    shot(page, "live", height=640)
    cancel = page.locator("#cancel-op")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.locator("#app-status")).to_contain_text("cancelled", timeout=20_000)
    assert seeded.wait(op)["status"] == "cancelled"
    expect(page.locator("#cancel-op")).to_have_count(0)


def tab_reaches_every_control(page: Any) -> None:
    controls: int = page.evaluate(
        """() => {
        const all = [...document.querySelectorAll(
          'a[href], button:not([disabled]), input:not([disabled]), select, textarea, summary')]
          .filter(el => el.getClientRects().length > 0);
        all.forEach((el, i) => { el.dataset.kb = String(i); });
        return all.length;
    }"""
    )
    assert controls > 5
    reached: set[str] = set()
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(controls * 2 + 10):
        page.keyboard.press("Tab")
        kb = page.evaluate("document.activeElement && document.activeElement.dataset.kb")
        if kb is not None:
            reached.add(kb)
        if len(reached) == controls:
            break
    missing = page.evaluate(
        "(reached) => [...document.querySelectorAll('[data-kb]')]"
        ".filter(el => !reached.includes(el.dataset.kb)).map(el => el.outerHTML.slice(0, 80))",
        sorted(reached),
    )
    assert missing == []
    # and it shows where it is: the focused control has an outline
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_keyboard_reaches_every_control(ui: Page, seeded: Seeded) -> None:
    page = open_apps(ui, seeded)
    tab_reaches_every_control(page)
    page = open_app(ui, seeded, "payment-7")
    page.wait_for_selector("#chain-status .chain-ok")
    tab_reaches_every_control(page)
    # Enter on a focused link navigates; Space on a focused button acts
    page.focus("#back-to-apps")
    page.keyboard.press("Enter")
    page.wait_for_selector("tr.app-row")


def test_the_input_form_checks_values_against_the_schema(ui: Page, seeded: Seeded) -> None:
    """The waiting-for-input form (the engine cannot wait yet: the component alone)."""
    page = open_apps(ui, seeded)
    page.evaluate(
        """async () => {
        const { inputForm } = await import('/ui/js/form.js');
        const schema = {type: 'object', required: ['approver', 'amount'], properties: {
          approver: {type: 'string', minLength: 2, title: 'Approver'},
          amount: {type: 'integer', minimum: 1, maximum: 500},
          decision: {enum: ['approve', 'reject']},
          urgent: {type: 'boolean'}}};
        window.sent = null;
        const form = inputForm(schema, async (inputs) => { window.sent = inputs; });
        form.id = 'test-form';
        document.getElementById('view').prepend(form);
    }"""
    )
    page.click("#test-form button[type=submit]")
    expect(page.locator("#input-0-error")).to_have_text("required")
    expect(page.locator("#input-1-error")).to_have_text("required")
    page.fill("#input-0", "<b>x</b>")
    page.fill("#input-1", "900")
    page.click("#test-form button[type=submit]")
    expect(page.locator("#input-1-error")).to_have_text("must be ≤ 500")
    assert page.evaluate("window.sent") is None
    page.fill("#input-1", "250")
    page.select_option("#input-2", "reject")
    page.check("#input-3")
    page.click("#test-form button[type=submit]")
    expect(page.locator("#test-form .form-status")).to_have_text("Sent.")
    assert page.evaluate("window.sent") == {
        "approver": "<b>x</b>",
        "amount": 250,
        "decision": "reject",
        "urgent": True,
    }


def test_a_waiting_apps_input_form_completes_the_run(ui: Page, seeded: Seeded) -> None:
    """An app waits for `approval`; its page shows the form; sending it completes the run."""
    op = seeded.run("approval", "needs-approval", "tenant-a")
    deadline = time.monotonic() + 30
    while httpx.get(f"{seeded.url}/v1/operations/{op}", timeout=5).json()["status"] != (
        "waiting_for_input"
    ):
        assert time.monotonic() < deadline, "the app never waited for input"
        time.sleep(0.05)
    # in the apps table a waiting app stands out (a coloured row and a marked badge)
    apps = open_apps(ui, seeded, "?status=waiting_for_input")
    row = apps.locator("tr.app-row[data-app-id='needs-approval']")
    expect(row).to_have_class("app-row row-waiting_for_input")
    expect(row.locator("span.status")).to_have_text("✋ waiting for input")
    page = open_app(ui, seeded, "needs-approval")
    expect(page.locator("#app-status")).to_contain_text("waiting")
    form = page.locator("form.input-form")
    expect(form).to_be_visible()
    form.locator("button[type=submit]").click()  # empty: refused in the page, nothing sent
    expect(page.locator("#input-1-error")).to_have_text("required")
    page.check("#input-0")
    page.fill("#input-1", "ann")
    form.locator("button[type=submit]").click()
    expect(page.locator("#app-status")).to_contain_text("completed", timeout=20_000)
    state = httpx.get(
        f"{seeded.url}/v1/apps/needs-approval/state", params={"partition_key": "tenant-a"}
    ).json()["state"]
    assert (state["approved"], state["approver"], state["done"]) == (True, "ann", True)
    kinds = [
        e["kind"]
        for e in httpx.get(
            f"{seeded.url}/v1/apps/needs-approval/events", params={"partition_key": "tenant-a"}
        ).json()["events"]
    ]
    assert (
        kinds.index("waiting_for_input") < kinds.index("input_received") < kinds.index("completed")
    )


@pytest.fixture(scope="module")
def with_tokens(seeded: Seeded) -> Any:
    """A second service over the same log with a token file (read and write tokens)."""
    tokens = seeded.db.with_name("tokens.txt")
    tokens.write_text(f"{WRITE_TOKEN} write *\n{READ_TOKEN} read *\n")
    server = serve(seeded.db.with_name("tokens.db"), "--token-file", str(tokens))
    try:
        yield server
    finally:
        server.stop()


def use_token(page: Any, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-save")


def test_a_read_token_sees_no_write_controls(ui: Page, with_tokens: Process) -> None:
    s = Seeded(db=with_tokens.log, url=with_tokens.url)
    op = s.run("slow", "guarded", "tenant-a", WRITE_TOKEN, inputs={"delay": 0.1})
    page = ui.page
    page.goto(f"{s.url}/ui/#/app?id=guarded&pk=tenant-a")
    expect(page.locator("#token-scope")).to_have_text("no token")
    assert httpx.get(f"{s.url}/v1/apps").status_code == 401
    use_token(page, READ_TOKEN)
    expect(page.locator("#token-scope")).to_have_text("read-only token")
    page.wait_for_selector("tr.ev")
    expect(page.locator("#app-status")).to_contain_text("running")
    expect(page.locator("#follow-live")).to_be_visible()
    assert page.locator("#cancel-op").count() == 0
    use_token(page, WRITE_TOKEN)
    expect(page.locator("#token-scope")).to_have_text("write token")
    expect(page.locator("#cancel-op")).to_be_visible()
    page.click("#cancel-op")
    assert s.wait(op, WRITE_TOKEN)["status"] == "cancelled"


def test_statelog_ui_serves_a_log_read_only(ui: Page, seeded: Seeded) -> None:
    # the log and its WAL stay untouched (a WAL reader takes its read locks in -shm)
    files = [seeded.db, seeded.db.with_name("ui.db-wal")]
    before = [(p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]
    server = Process(
        ["-m", "statelog", "ui", "--db", str(seeded.db), "--port", "0"],
        "statelog ui: http://127.0.0.1:",
        seeded.db.with_name("statelog-ui.log"),
    )
    try:
        page = ui.page
        page.goto(f"{server.url}/ui/")
        page.wait_for_selector("tr.app-row")
        assert {"payment-7", "big-stream", "xss-note"} <= shown_apps(page)
        expect(page.locator("#session")).to_contain_text("read-only log")
        session = httpx.get(f"{server.url}/ui/session").json()
        assert session["write"] is False and session["read_only"] is True
        for method, path in [
            ("POST", "/v1/runs"),
            ("POST", "/v1/apps/payment-7/input"),
            ("POST", "/v1/apps/payment-7/fork"),
            ("DELETE", "/v1/operations/x"),
        ]:
            assert httpx.request(method, server.url + path, json={}).status_code in (404, 405)
        page.click("tr[data-app-id='payment-7'] a.app-link")
        expect(page.locator("tr.ev.ev-fail[data-kind='action_failed']")).to_contain_text(
            "the gauge broke"
        )
        expect(page.locator("#chain-status")).to_contain_text("verified")
        assert page.locator("#cancel-op").count() == 0
        response = page.goto(f"{server.url}/ui/")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
    finally:
        server.stop()
    after = [(p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]
    assert after == before


def start_writer(db: Path, app_id: str, start: int, count: int) -> subprocess.Popen[str]:
    """``tests.ui.writer``: appends, prints ``wrote``, holds the log open until stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ui.writer", str(db), app_id, str(start), str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "wrote"
    return proc


def stop_writer(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(timeout=15) == 0
    proc.stdout.close()


def test_statelog_ui_follows_a_log_another_process_writes(ui: Page, tmp_path: Path) -> None:
    db = tmp_path / "followed.db"
    stop_writer(start_writer(db, "tail", 0, 3))  # a log closed cleanly
    server = Process(
        ["-m", "statelog", "ui", "--db", str(db), "--port", "0"],
        "statelog ui: http://127.0.0.1:",
        tmp_path / "statelog-ui.log",
    )
    try:
        page = ui.page
        page.goto(f"{server.url}/ui/#/app?id=tail&pk=")
        expect(page.locator("tr.ev")).to_have_count(3)
        page.click("#follow-live")
        expect(page.locator("#follow-live")).to_have_attribute("aria-pressed", "true")
        writer = start_writer(db, "tail", 3, 4)  # a writer comes and keeps running
        try:
            expect(page.locator("tr.ev")).to_have_count(7, timeout=15_000)
            expect(page.locator("#app-last-seq")).to_have_text("6")
        finally:
            stop_writer(writer)
    finally:
        server.stop()


def test_v2_events_render_their_kind_ops_and_traceback(ui: Page, seeded: Seeded) -> None:
    """The event renderers take the v2 record (lifecycle kinds, ``ops``, a traceback) and
    kinds they do not know, so the timeline needs no rewrite when the engine writes them."""
    page = open_apps(ui, seeded)
    page.evaluate(
        """async () => {
        const ev = await import('/ui/js/events.js');
        const row = (e) => {
          const div = document.createElement('div');
          div.className = 'v2-event';
          div.append(ev.renderKind(e), ev.renderAttempt(e), ev.renderChanges(e));
          const err = ev.renderError(e);
          if (err) div.append(err);
          return div;
        };
        const view = document.getElementById('view');
        view.prepend(
          row({kind: 'attempt_failed', attempt: 2, ops: [], error: {type: 'TimeoutError',
               message: 'gateway', traceback: 'Traceback (most recent call last):\\n'
                 + '  File "a.py", line 3, in charge\\nTimeoutError: gateway'}}),
          row({kind: 'action_completed', ops: [
               {op: 'append', path: 'items', value: '<i>x</i>'},
               {op: 'increment', path: 'count', value: 2},
               {op: 'delete', path: 'draft'},
               {op: 'reticulate', path: 'splines', value: 1}]}),
          row({kind: 'some_future_kind', writes: {a: 1}}));
    }"""
    )
    rows = page.locator(".v2-event")
    expect(rows).to_have_count(3)
    failed = rows.nth(0)
    expect(failed.locator(".kind")).to_have_text("attempt failed")
    expect(failed.locator(".kind")).to_have_class("kind tone-fail")
    expect(failed).to_contain_text("2 (2 failed)")
    expect(failed.locator(".traceback summary")).to_have_text("Traceback: TimeoutError: gateway")
    ops = rows.nth(1).locator("ul.changes li")
    expect(ops).to_have_text(
        [
            'append items += "<i>x</i>"',
            "increment count + 2",
            "delete draft",
            "reticulate splines → 1",
        ]
    )
    expect(rows.nth(2).locator(".kind")).to_have_text("some_future_kind")
    expect(rows.nth(2).locator(".kind")).to_have_class("kind tone-other")
    expect(rows.nth(2)).to_contain_text("set a = 1")
    assert page.locator("#view i").count() == 0
