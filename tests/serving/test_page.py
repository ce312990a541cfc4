"""The web page in a real browser: Playwright drives Debian's Chromium against ``aurl serve``.

Skipped (with the install hint) where ``/usr/bin/chromium`` is missing; ``.ci/run`` installs it so
CI runs this test. ``playwright install`` is not used: it downloads a browser, and there is no
internet at test time.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path(os.environ.get("AURL_CHROMIUM", "/usr/bin/chromium"))
SHOT = os.environ.get("AURL_PAGE_SCREENSHOT")
"""Where to save the screenshot (docs/img/serve_page.png is made this way); default: tmp_path."""
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
BARS = int(os.environ.get("AURL_PAGE_BARS", "1"))
"""Bars asked for on the page (1 keeps the random tiny model's piece quick)."""
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_serve_bundle, tmp_path_factory):
    """``aurl serve`` in a subprocess (the real uvicorn), on the shipped model when available."""
    model = os.environ.get("AURL_PAGE_MODEL") or str(tiny_serve_bundle.path)
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "aurl.cli", "serve", "--model", model, "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"aurl serve did not start: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_serve_answers_over_real_http(server):
    r = httpx.post(f"{server}/v1/generate", json={"tokens": 16, "seed": 3, "musicxml": False}, timeout=60)  # fmt: skip
    assert r.status_code == 200 and base64.b64decode(r.json()["midi"])[:4] == b"MThd"


def test_page_generates_draws_and_downloads_midi(server, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium (Debian's), or set AURL_CHROMIUM")  # fmt: skip
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 760}, accept_downloads=True)
            page.goto(server)
            page.wait_for_function(
                "document.getElementById('model').textContent.includes('parameters')"
            )
            page.fill("#seed", "7")
            page.evaluate(f"document.getElementById('bars').value = {BARS}; document.getElementById('bars').dispatchEvent(new Event('input'))")  # fmt: skip
            page.get_by_role("button", name="Generate").click()
            # notes appear on the piano roll while the piece streams in, then the result arrives
            page.wait_for_function("Number(document.getElementById('roll').dataset.notes) > 0", timeout=120_000)  # fmt: skip
            page.wait_for_function("window.aurl.result !== null", timeout=120_000)
            status = page.text_content("#status")
            assert "notes" in status and "seed 7" in status, status
            drawn = int(page.get_attribute("#roll", "data-notes"))
            assert drawn == len(page.evaluate("window.aurl.result.notes")) > 0
            with page.expect_download() as info:
                page.click("#dl-midi")
            midi = Path(info.value.path()).read_bytes()
            assert midi[:4] == b"MThd"
            from aurl.data.midi_io import load_score_bytes

            score, _ = load_score_bytes(midi, "download.mid")
            assert score.note_num() == drawn
            assert page.get_attribute("#dl-xml", "class").split().count("disabled") == 0
            page.click("#play")  # the synth starts (no audio device is needed to schedule it)
            assert page.text_content("#play").strip().endswith("Stop")
            page.click("#play")
            shot = Path(SHOT) if SHOT else tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(text.split(f"\n{name} ")[1].split()[0])


def test_client_disconnect_frees_its_row(server):
    before = _metric(server, "aurl_tokens_total")
    body = {"tokens": 4000, "seed": 1, "musicxml": False}
    with httpx.stream("POST", f"{server}/v1/generate/stream", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("event: note"):
                break  # hang up mid-piece
    for _ in range(100):
        if _metric(server, "aurl_batch_rows") == 0:
            break
        time.sleep(0.05)
    assert _metric(server, "aurl_batch_rows") == 0
    assert _metric(server, "aurl_tokens_total") - before < 4000  # the row stopped early
