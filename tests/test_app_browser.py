"""End to end in a real browser: serve the explorer on localhost, drive Debian's Chromium with Playwright
the way a person does (table rows, Random, plot clicks, page switches), take screenshots and check them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    click_plot_point,
    click_table_row,
    query_line,
    served_app,
    wait_idle,
    wait_query_change,
)
from conftest import REPO_ROOT

SCREENSHOT_DIR = Path(os.environ.get("TRAJEMB_SCREENSHOTS", REPO_ROOT / ".cache" / "screenshots"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("TRAJEMB_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)


@pytest.fixture
def server(small_bundle: Path) -> Iterator[str]:
    with served_app(["--bundle", str(small_bundle)]) as url:
        yield url


def check_screenshot(path: Path) -> None:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert img.shape[0] > 200 and img.shape[1] > 400
    drawn = (img.min(axis=2) < 230).mean()  # share of pixels that are not page background
    assert drawn > 0.01, f"{path} is (nearly) blank ({drawn:.3f} drawn)"
    assert len(np.unique(img.reshape(-1, 3)[::50], axis=0)) > 50, f"{path} has almost no colours"


def test_explorer_in_chromium(server: str) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "TRAJEMB_REQUIRE_BROWSER is set but chromium is missing"
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 2200})
        page.goto(server, timeout=60_000)
        page.get_by_text("minADE@6").first.wait_for(timeout=90_000)
        wait_idle(page)
        first = query_line(page)
        assert first.startswith("Query: synthetic/")

        # A neighbour picked in the neighbour table becomes the query ...
        neighbour_table = page.locator("[data-testid=stDataFrame]").count() - 1
        click_table_row(page, neighbour_table, 0)
        picked = wait_query_change(page, first)
        # ... and Random still works afterwards (it did nothing once a table row had been selected).
        page.get_by_role("button", name="Random").click()
        after_random = wait_query_change(page, picked)
        # A row of the pick table, then Random again.
        click_table_row(page, 0, 3)
        from_table = wait_query_change(page, after_random)
        page.get_by_role("button", name="Random").click()
        again = wait_query_change(page, from_table)
        # Back returns to the previous query.
        page.get_by_role("button", name="Back").click()
        assert wait_query_change(page, again) == from_table
        # A click on a neighbour's map makes it the query.
        maps = page.locator(".js-plotly-plot").count() - 1
        before = query_line(page)
        window_trace = (
            page.locator(".js-plotly-plot")
            .nth(maps)
            .evaluate(
                "gd => gd._fullData.findIndex(t => t.customdata && t.customdata.length && t.xaxis === 'x2')"
            )
        )
        click_plot_point(page, maps, window_trace, 10)
        on_map = wait_query_change(page, before)
        page.screenshot(path=str(SCREENSHOT_DIR / "explore.png"))
        page.locator(".js-plotly-plot").last.screenshot(path=str(SCREENSHOT_DIR / "explore-maps.png"))
        check_screenshot(SCREENSHOT_DIR / "explore-maps.png")

        # A click on the 2-D layout picks the point under the cursor.
        page.get_by_text("On the 2-D layout").click()
        wait_idle(page)
        click_plot_point(page, 0, 0, 5)
        wait_query_change(page, on_map)
        page.screenshot(path=str(SCREENSHOT_DIR / "explore-layout.png"))

        # Every page draws.
        for name, path in (
            ("Embedding space", "space"),
            ("Compare models", "compare"),
            ("Evaluation", "evaluation"),
            ("Your own query", "query"),
        ):
            page.get_by_role("link", name=name).click()
            page.get_by_role(
                "heading", name=name if name != "Explore" else "Explore neighbours"
            ).first.wait_for(timeout=60_000)
            wait_idle(page)
            assert not page.locator("[data-testid=stException]").count(), name
            page.screenshot(path=str(SCREENSHOT_DIR / f"{path}.png"))
            plot = SCREENSHOT_DIR / f"{path}-plot.png"
            page.locator(".js-plotly-plot").first.screenshot(path=str(plot))
            check_screenshot(plot)
        browser.close()
