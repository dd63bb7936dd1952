"""End to end in a real browser: serve the explorer on localhost, drive Debian's Chromium with Playwright,
choose a query, wait for the neighbours, take a screenshot and check it is not blank."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As root, without a sandbox; no background traffic (this machine has no network beyond localhost).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT_DIR = Path(os.environ.get("TRAJEMB_SCREENSHOTS", REPO_ROOT / ".cache" / "screenshots"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(small_bundle: Path) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app" / "streamlit_app.py"),
           "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
           "--browser.gatherUsageStats=false", "--", "--bundle", str(small_bundle)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"streamlit did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_explorer_in_chromium(server: str) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "explore.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1800})
        page.goto(server, timeout=60_000)
        page.get_by_role("heading", name="Explore neighbours").wait_for(timeout=90_000)
        page.get_by_text("minADE@6").first.wait_for(timeout=90_000)
        first_query = page.locator("p", has_text="Query").locator("code").first.inner_text()
        assert first_query.startswith("synthetic/")
        page.get_by_role("button", name="Random query").click()
        page.wait_for_function(  # the query line shows another window id
            "q => ![...document.querySelectorAll('p code')].some(e => e.innerText === q)",
            arg=first_query,
            timeout=60_000,
        )
        page.get_by_text("minADE@6").first.wait_for(timeout=60_000)
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=60_000
        )
        page.wait_for_timeout(1500)  # let plotly finish drawing
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape[0] > 800 and img.shape[1] > 1000
    assert img.std() > 20, "screenshot is (nearly) blank"
    assert len(np.unique(img.reshape(-1, 3)[::50], axis=0)) > 50, "screenshot has almost no colours"
