"""The chain card in Chromium: a running signed service shows its signed head's sequence
and time; the same log with its tail cut shows the head disagreeing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from statelog.eventstore import generate_key_files

from .conftest import ROOT, Page, Process, Seeded, serve, shot
from .test_browser import expect, open_app

APP = "signed-order"
PK = "tenant-s"


def signed_head(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/apps/{APP}/verify", params={"partition_key": PK}, timeout=10)
    assert response.status_code == 200, response.text
    head: dict[str, Any] = response.json()["signed_head"]
    return head


def shown_time(created_at: str) -> str:
    """How the page writes a checkpoint's time: ``2026-12-07 06:51:28.283 UTC``."""
    return f"{created_at[:10]} {created_at[11:23]} UTC"


def test_the_chain_card_shows_the_signed_head_and_its_time(ui: Page, tmp_path: Path) -> None:
    db = tmp_path / "signed.db"
    key, public = generate_key_files(tmp_path / "signing.key")
    server = serve(db, "--signing-key", key)
    try:
        seeded = Seeded(db=db, url=server.url)
        seeded.wait(seeded.run("counter", APP, PK))
        # the writer signs a checkpoint within its interval (5 s) of the last append
        deadline = time.monotonic() + 30
        while (head := signed_head(server.url))["status"] != "verified":
            assert head["status"] == "unsigned", head
            assert time.monotonic() < deadline, f"no checkpoint signed: {head}"
            time.sleep(0.2)
        page = open_app(ui, seeded, APP)
        last = page.locator("#app-last-seq").inner_text()
        assert head["sequence_id"] == int(last)
        card = page.locator("#chain-status")
        expect(card.locator("#chain-walk")).to_have_text(f"✓ verified: events 0..{last}")
        signed = card.locator("#chain-signed")
        expect(signed).to_have_attribute("data-status", "verified")
        expect(signed).to_have_text(
            f"✓ signed head: seq {last} at {shown_time(head['created_at'])}"
        )
        expect(card.locator("#chain-checkpoint")).to_have_text(
            f"checkpoint #{head['checkpoint']}, key {head['key_id'][:16]}…"
        )
        shot(page, "chain", element=page.locator("div.cards").first)
    finally:
        server.stop()

    # a tail cut after signing: the chain still walks, the signed head disagrees
    with sqlite3.connect(db) as conn:
        cut = conn.execute(
            "DELETE FROM events WHERE sequence_id > ? AND stream_id = "
            "(SELECT id FROM streams WHERE partition_key = ? AND app_id = ?)",
            (int(last) - 2, PK, APP),
        ).rowcount
    assert cut == 2
    server = Process(  # the read-only browser of the file, checking with the public key
        ["-m", "statelog", "ui", "--db", str(db), "--port", "0", "--public-key", public],
        "statelog ui: http://127.0.0.1:",
        tmp_path / "statelog-ui.log",
    )
    try:
        page = open_app(ui, Seeded(db=db, url=server.url, apps={APP: (PK, "counter")}), APP)
        expect(page.locator("#chain-walk")).to_have_text(f"✓ verified: events 0..{int(last) - 2}")
        signed = page.locator("#chain-signed")
        expect(signed).to_have_attribute("data-status", "head-disagrees")
        expect(signed).to_contain_text(f"✕ head disagrees: checkpoint #{head['checkpoint']}")
        expect(signed.locator(".chain-broken")).to_be_visible()
        expect(page.locator("#chain-status .chain-problems")).to_contain_text(
            f"the stream ends at {int(last) - 2} (its tail was cut)"
        )
    finally:
        server.stop()


def test_an_unsigned_log_says_not_signed(ui: Page, seeded: Seeded) -> None:
    page = open_app(ui, seeded, "order-b1")
    expect(page.locator("#chain-walk")).to_contain_text("✓ verified: events 0..")
    signed = page.locator("#chain-signed")
    expect(signed).to_have_attribute("data-status", "unsigned")
    expect(signed).to_have_text("not signed — the log has no signed checkpoint")


def test_statelog_ui_refuses_a_bad_public_key_file(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    written = subprocess.run(  # a log to open: written by the writer helper, closed
        [sys.executable, "-m", "tests.ui.writer", str(db), "a", "0", "2"],
        cwd=ROOT,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    done = subprocess.run(
        [sys.executable, "-m", "statelog", "ui", "--db", str(db), "--port", "0"]
        + ["--public-key", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], done.stderr


def test_a_parallel_maps_children_link_both_ways(ui: Page, tmp_path: Path) -> None:
    """Issue #15's lineage: a parent lists its parallel children, each links back."""
    server = serve(tmp_path / "parallel.db")
    try:
        seeded = Seeded(db=tmp_path / "parallel.db", url=server.url)
        assert seeded.wait(seeded.run("shipment", "ship-1", "tenant-p"))["status"] == "completed"
        page = open_app(ui, seeded, "ship-1")
        children = page.locator("#lineage-box a.app-link")
        expect(children).to_have_count(2)
        names = children.all_inner_texts()
        assert len(names) == 2 and all(n.startswith("ship-1.quotes.") for n in names), names
        children.first.click()
        expect(page.locator("h1.app-title")).to_have_text(names[0])
        expect(page.locator("#lineage-box")).to_contain_text("child of ship-1 at #")
        page.locator("#lineage-box a.app-link").click()
        expect(page.locator("h1.app-title")).to_have_text("ship-1")
    finally:
        server.stop()
