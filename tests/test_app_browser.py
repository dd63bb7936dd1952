"""End to end in a real browser: serve the explorer on localhost, drive Debian's Chromium with Playwright
the way a person does (table rows, Random, plot clicks, page switches), take screenshots and check them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    add_to_multiselect,
    choose,
    click_plot_point,
    click_table_row,
    go_to,
    plot_point_xy,
    query_line,
    scroll_to,
    selected,
    served_app,
    set_slider,
    slider_value,
    wait_idle,
    wait_query_change,
    wait_text_change,
)
from conftest import REPO_ROOT

SCREENSHOT_DIR = Path(os.environ.get("TRAJEMB_SCREENSHOTS", REPO_ROOT / ".cache" / "screenshots"))

pytestmark = [
    pytest.mark.slow,  # a served app and a browser: tens of seconds each
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("TRAJEMB_REQUIRE_BROWSER"),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]


@pytest.fixture
def server(small_bundle: Path) -> Iterator[str]:
    with served_app(["--bundle", str(small_bundle)]) as url:
        yield url


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A page of Debian's Chromium, 1500 px wide."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "TRAJEMB_REQUIRE_BROWSER is set but chromium is missing"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        page.set_default_timeout(WAIT_MS)  # every wait ends on what the page shows; this bounds a hang
        yield page
        browser.close()


@pytest.fixture(scope="module")
def incomplete_bundle(
    synth_table: Path,
    tiny_checkpoints: list[Path],
    synth_maps: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Two models, no 2-D layouts and no evaluation yet (what the explorer completes in the background)."""
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    config = BundleConfig(
        evaluation=EvalConfig(num_queries=50),
        projection=ProjectionConfig(method="none"),
        evaluate=False,
        device="cpu",
    )
    out = tmp_path_factory.mktemp("incomplete") / "b"
    build_bundle(synth_table, tiny_checkpoints, out, synth_maps, config, progress=False)
    return out


def query_id(page: Any) -> str:
    return query_line(page).removeprefix("Query: ").split()[0]


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
        page.set_default_timeout(WAIT_MS)
        page.goto(server, timeout=WAIT_MS)
        page.get_by_text("minADE@6").first.wait_for(timeout=WAIT_MS)
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
        # The maps are tiles of one pair of axes; the query's window comes first and is not pickable:
        # click the third point of the first neighbour's window.
        window_trace, point = (
            page.locator(".js-plotly-plot")
            .nth(maps)
            .evaluate(
                """gd => { const i = gd._fullData.findIndex(t => t.customdata && t.customdata.length);
                           return [i, gd._fullData[i].customdata.findIndex(v => v !== null) + 2]; }"""
            )
        )
        click_plot_point(page, maps, window_trace, point)
        on_map = wait_query_change(page, before)
        page.screenshot(path=str(SCREENSHOT_DIR / "explore.png"))
        page.locator(".js-plotly-plot").last.screenshot(path=str(SCREENSHOT_DIR / "explore-maps.png"))
        check_screenshot(SCREENSHOT_DIR / "explore-maps.png")

        # A click on the 2-D layout picks the point under the cursor; the chart stays (the query's cross
        # moves over it): no new chart, no new WebGL context per click.
        page.get_by_text("On the 2-D layout").click()
        wait_idle(page)
        cross = page.locator("[data-testid=trajembLayoutMarks] [data-mark=query]")
        cross.wait_for(timeout=WAIT_MS)
        cross_before = cross.get_attribute("d")
        page.locator(".js-plotly-plot").first.evaluate("gd => { gd.__kept = true; }")
        click_plot_point(page, 0, 0, 5)
        wait_query_change(page, on_map)
        assert page.locator(".js-plotly-plot").first.evaluate("gd => gd.__kept === true")
        page.wait_for_function(
            """d => { const c = document.querySelector('[data-testid=trajembLayoutMarks] [data-mark=query]');
                      return c && c.getAttribute('d') !== d; }""",
            arg=cross_before,
            timeout=WAIT_MS,
        )
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
            ).first.wait_for(timeout=WAIT_MS)
            wait_idle(page)
            assert not page.locator("[data-testid=stException]").count(), name
            page.screenshot(path=str(SCREENSHOT_DIR / f"{path}.png"))
            plot = SCREENSHOT_DIR / f"{path}-plot.png"
            page.locator(".js-plotly-plot").first.screenshot(path=str(plot))
            check_screenshot(plot)
        browser.close()


def test_settings_survive_the_background_completion(
    incomplete_bundle: Path, tmp_path: Path, chromium: Any
) -> None:
    """Issue 22, bugs 1 and 3. While another process completes the bundle (it holds the completion
    lock), the explorer's own completion waits and says so with that process's progress, redrawn every
    few seconds; those redraws (fragment runs) once reset the model, k, the filters and the own-query
    inputs of pages not shown, and stripped the URL."""
    from trajemb.serving.completion import ProgressFile, Step, completion_lock

    bundle = tmp_path / "b"
    shutil.copytree(incomplete_bundle, bundle)
    page = chromium
    with completion_lock(bundle), served_app(["--bundle", str(bundle)]) as url:
        page.goto(url + "/evaluation", timeout=WAIT_MS)
        page.get_by_role("button", name="Compute them now, in the background").click()
        wait_text_change(
            page, f"waiting for another process (pid {os.getpid()}) that holds this bundle's lock", ""
        )
        other = ProgressFile(bundle, [Step("2-D layout of model x", 30.0), Step("evaluation", 60.0)])
        status = wait_text_change(
            page, f"waiting for another process (pid {other.progress.pid}) that is completing this bundle", ""
        )
        assert "2-D layout of model x (step 1 of 2" in status

        go_to(page, "Explore", "Explore neighbours")
        set_slider(page, "Neighbours k", 9)
        choose(page, "Model", "fft-d4")
        add_to_multiselect(page, "direction", "straight")
        go_to(page, "Your own query")
        page.get_by_role("textbox", name="Points, one 'x, y' per line").fill("x, y\n0, 0\n10, 1\n20, 4")
        page.keyboard.press("Control+Enter")
        wait_idle(page)
        page.get_by_role("radio", name="Upload a CSV").or_(
            page.get_by_text("Upload a CSV", exact=True)
        ).first.click()
        wait_idle(page)
        csv = tmp_path / "path.csv"
        csv.write_text("x,y\n0,0\n5,0\n10,1\n15,3\n")
        page.locator("input[type=file]").set_input_files(str(csv))
        page.get_by_text("minADE@").first.wait_for(timeout=WAIT_MS)
        wait_idle(page)
        for _ in range(3):
            go_to(page, "Evaluation")
            status = wait_text_change(page, "waiting for another process", "")
            wait_text_change(page, "waiting for another process", status)  # the status redrew: a fragment ran
            wait_idle(page)
            go_to(page, "Explore", "Explore neighbours")
            assert slider_value(page, "Neighbours k") == "9"
            assert selected(page, "Model") == "fft-d4"
            params = parse_qs(urlparse(page.url).query)
            assert params.get("k") == ["9"] and params.get("model") == ["fft-d4"], page.url
            assert params.get("direction") == ["straight"], page.url
            go_to(page, "Your own query")
            assert page.get_by_text("Using the file uploaded earlier: path.csv").count()
        page.get_by_text("Type points", exact=True).first.click()
        wait_idle(page)
        assert "20, 4" in page.get_by_role("textbox", name="Points, one 'x, y' per line").input_value()
        other.close()


def test_browser_back_and_forward(server: str, chromium: Any) -> None:
    """Issue 22, bug 2: the browser's Back and Forward move through queries and pages like the in-app
    Back, in one press each; the address they bring back stays."""
    page = chromium
    page.goto(server, timeout=WAIT_MS)
    page.get_by_text("minADE@").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    first = query_id(page)
    before = query_line(page)
    page.get_by_role("button", name="Random").click()
    wait_query_change(page, before)
    second = query_id(page)
    page.wait_for_function("q => location.search.includes(encodeURIComponent(q))", arg=second)
    length = page.evaluate("history.length")
    before = query_line(page)
    page.get_by_role("button", name="Random").click()
    wait_query_change(page, before)
    third = query_id(page)
    page.wait_for_function("q => location.search.includes(encodeURIComponent(q))", arg=third)
    assert page.evaluate("history.length") == length + 1  # one entry per query
    assert len({first, second, third}) == 3

    def settled(expected: str) -> None:
        page.wait_for_function(
            """q => [...document.querySelectorAll('[data-testid=stText]')]
                  .some(e => e.innerText.startsWith('Query: ' + q + ' '))""",
            arg=expected,
            timeout=WAIT_MS,
        )
        wait_idle(page)
        assert query_id(page) == expected  # not rewritten once the run ended
        assert parse_qs(urlparse(page.url).query).get("q", [None])[0] in (expected, None), page.url

    # Pages: one entry per visit, and Back returns to the page and its query.
    length = page.evaluate("history.length")
    go_to(page, "Evaluation")
    assert page.evaluate("history.length") == length + 1
    page.evaluate("history.back()")
    page.get_by_role("heading", name="Explore neighbours").first.wait_for(timeout=WAIT_MS)
    settled(third)
    page.evaluate("history.back()")
    settled(second)
    page.evaluate("history.back()")
    settled(first)
    page.evaluate("history.forward()")
    settled(second)
    # The in-app Back agrees (each browser Back to the previous query counted as a Back).
    page.get_by_role("button", name="Back").click()
    settled(first)


def test_layout_redraws_where_one_zooms_and_hover_shows_the_window(server: str, chromium: Any) -> None:
    """Issue 22, bug 11: zooming enlarged the picture instead of redrawing it, and hover said only
    "direction / row N". Zooming now redraws the view with every window in it a pickable point, and
    hovering a point shows its id and a drawing of its trajectory."""
    page = chromium
    plot = _open_layout(page, server)
    before = page.get_by_text("windows in view").first.inner_text()

    # The query's cross, drawn by the companion over the plot.
    cross = page.locator("[data-testid=trajembLayoutMarks] [data-mark=query]")
    cross.wait_for(timeout=WAIT_MS)
    box = cross.bounding_box()
    assert box is not None
    qx, qy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(qx - 50, qy - 40)
    page.mouse.down()
    page.mouse.move(qx + 50, qy + 40, steps=6)
    page.mouse.up()
    page.wait_for_function(
        """b => [...document.querySelectorAll('p')].some(p => p.innerText.includes('windows in view') && p.innerText !== b)""",
        arg=before,
        timeout=WAIT_MS,
    )
    wait_idle(page)
    caption = page.get_by_text("windows in view").first.inner_text()
    in_view = int(caption.split(" windows in view")[0].replace(",", ""))
    assert "each is a point" in caption and 0 < in_view < int(before.split(" windows")[0].replace(",", ""))
    drawn = plot.evaluate(
        "gd => gd._fullData.filter(t => !['query', 'neighbours'].includes(t.name)).reduce((n, t) => n + t.x.length, 0)"
    )
    assert drawn == in_view  # every window in view is a point one can pick
    trace = plot.evaluate(
        "gd => gd._fullData.findIndex(t => !['query', 'neighbours'].includes(t.name) && t.x.length)"
    )
    hx, hy = plot_point_xy(plot, trace, 0)
    page.mouse.move(hx, hy)
    card = page.locator("[data-testid=trajembHoverCard]")
    card.wait_for(state="visible", timeout=WAIT_MS)
    text = card.inner_text()
    assert re.search(r"/\d+/\d+", text), text  # scenario/track/start
    assert card.locator("polyline").count() == 1  # the trajectory, drawn


@pytest.fixture(scope="module")
def layout_server(small_bundle: Path) -> Iterator[str]:
    """One served explorer for the layout tests below (each opens its own session)."""
    with served_app(["--bundle", str(small_bundle)]) as url:
        yield url


def _open_layout(page: Any, url: str) -> Any:
    """Explore's "On the 2-D layout", settled; returns the plot."""
    page.goto(url, timeout=WAIT_MS)
    page.get_by_text("minADE@").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    page.get_by_text("On the 2-D layout").click()
    page.get_by_text("windows in view").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    plot = page.locator(".js-plotly-plot").first
    scroll_to(page, plot)
    return plot


def _ranges(plot: Any) -> list[float]:
    return list(plot.evaluate("gd => [...gd._fullLayout.xaxis.range, ...gd._fullLayout.yaxis.range]"))


def _plot_area(plot: Any) -> list[float]:
    """Left, top, width, height of the plot area on the page (px)."""
    return list(
        plot.evaluate(
            """gd => { const s = gd._fullLayout._size, b = gd.getBoundingClientRect();
                       return [b.left + s.l, b.top + s.t, s.w, s.h]; }"""
        )
    )


def _box_zoom_away_from_query(page: Any, plot: Any) -> None:
    """Drag a zoom box over the quarter of the plot farthest from the query's cross, and wait for the
    redraw of that view."""
    left, top, w, h = _plot_area(plot)
    box = page.locator("[data-testid=trajembLayoutMarks] [data-mark=query]").first.bounding_box()
    assert box is not None
    qx, qy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    x0 = left + (0.55 * w if qx < left + w / 2 else 0.05 * w)
    y0 = top + (0.55 * h if qy < top + h / 2 else 0.05 * h)
    before = page.get_by_text("windows in view").first.inner_text()
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 0.4 * w, y0 + 0.4 * h, steps=6)
    page.mouse.up()
    page.wait_for_function(
        """b => [...document.querySelectorAll('p')].some(p => p.innerText.includes('windows in view') && p.innerText !== b)""",
        arg=before,
        timeout=WAIT_MS,
    )
    wait_idle(page)


def _caption(page: Any) -> str:
    """The layout's caption ("N windows in view; ..."): drawn by the server for the view it was told of."""
    return str(page.get_by_text("windows in view").first.inner_text())


def _settle_on_whole(page: Any, whole: list[float], caption: str) -> list[float]:
    """Until the layout's axes show ``whole`` again (or 30 s: the old layout crept outward and never got
    there) and the server has drawn the whole layout (its caption reads ``caption`` again), then until
    the page settles; returns the axes' ranges. The axes change in the page at once, the caption only
    after the companion has reported the view and the script has run: waiting on the axes alone, the
    next zoom began while that run was under way, and its own wait took the run's caption for its own."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(
            """w => { const fl = (document.querySelector('.js-plotly-plot') || {})._fullLayout;
                      if (!fl || !fl.xaxis || !fl.yaxis) return false;
                      const r = [...fl.xaxis.range, ...fl.yaxis.range];
                      return r.every((v, i) => Math.abs(v - w[i]) <= 1e-6 * (Math.abs(w[i]) + 1)); }""",
            arg=whole,
            timeout=30_000,
        )
        page.wait_for_function(
            """c => [...document.querySelectorAll('p')].some(p => p.innerText === c)""",
            arg=caption,
            timeout=WAIT_MS,
        )
    wait_idle(page)
    return _ranges(page.locator(".js-plotly-plot").first)


def test_layout_double_click_and_toolbar_return_to_the_whole_layout(
    layout_server: str, chromium: Any
) -> None:
    """Issue 22 (layout), bug 1: after a box zoom, a double-click, "Reset axes" and "Autoscale" crept
    outward a little (the zoomed drawing holds only the points in view, so Plotly's autorange knew only
    those). Each now returns to the whole layout in one step."""
    page = chromium
    plot = _open_layout(page, layout_server)
    whole, whole_caption = _ranges(plot), _caption(page)
    left, top, w, h = _plot_area(plot)
    for how in ("double-click", "Reset axes", "Autoscale"):
        _box_zoom_away_from_query(page, plot)
        plot = page.locator(".js-plotly-plot").first
        assert _ranges(plot)[1] - _ranges(plot)[0] < 0.6 * (whole[1] - whole[0])
        if how == "double-click":
            page.mouse.dblclick(left + w / 2, top + h / 2)
        else:
            page.mouse.move(left + w / 2, top + h / 2)
            plot.locator(f"[data-title='{how}']").click()
        assert _settle_on_whole(page, whole, whole_caption) == pytest.approx(whole, rel=1e-6, abs=1e-6), how
    page.screenshot(path=str(SCREENSHOT_DIR / "layout-back-to-whole.png"))


def test_layout_shows_where_a_query_outside_the_view_is(layout_server: str, chromium: Any) -> None:
    """Issue 22 (layout), bug 2: zoomed away from the query, nothing showed where it was and the caption
    still spoke of the black cross. An arrow on the edge now points towards it, and the caption says so."""
    page = chromium
    plot = _open_layout(page, layout_server)
    _box_zoom_away_from_query(page, plot)
    marks = page.locator("[data-testid=trajembLayoutMarks]")
    arrow = marks.locator("[data-mark=query-outside]")
    arrow.wait_for(timeout=30_000)
    assert marks.locator("[data-mark=query]").count() == 0
    page.get_by_text("The query is outside this view").first.wait_for(timeout=30_000)
    # The arrow lies on the plot's edge, on the side of the query.
    plot = page.locator(".js-plotly-plot").first
    left, top, w, h = _plot_area(plot)
    box = arrow.bounding_box()
    assert box is not None
    ax, ay = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert min(ax - left, left + w - ax, ay - top, top + h - ay) < 25
    page.screenshot(path=str(SCREENSHOT_DIR / "layout-query-outside.png"))
    # Back to the whole layout: the cross again.
    page.mouse.dblclick(left + w / 2, top + h / 2)
    marks.locator("[data-mark=query]").wait_for(timeout=30_000)
    # The cross is drawn in the page at once; the caption once the script has run for the whole view.
    page.get_by_text("The query is the black cross").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    assert marks.locator("[data-mark=query-outside]").count() == 0


#: The time between the two clicks of a person's double-click, on the page's clock (Plotly counts two
#: clicks as one double-click when the second ends within ``ui.DOUBLE_CLICK_MS`` of the first's start).
DOUBLE_CLICK_GAP_MS = 200


def test_layout_double_click_keeps_the_query(layout_server: str, chromium: Any) -> None:
    """Issue 22 (layout), bug 3: the first click of a double-click on a point picked it as the query
    (Plotly reports that click before it knows a second one follows). A double-click now only shows the
    whole layout; a single click still picks."""
    page = chromium
    # The page's clocks are Playwright's (they run as usual until paused), so that the double-click below
    # is timed as Plotly times it, on the page's clock, whatever the load on the machine.
    page.clock.install()
    plot = _open_layout(page, layout_server)
    whole, whole_caption = _ranges(plot), _caption(page)
    _box_zoom_away_from_query(page, plot)
    plot = page.locator(".js-plotly-plot").first
    before = query_line(page)

    trace = plot.evaluate("gd => gd._fullData.findIndex(t => t.x.length)")
    x, y = plot_point_xy(plot, trace, 0)
    # A person's double-click: two clicks DOUBLE_CLICK_GAP_MS apart on the page's clock, paused for the
    # gesture. Unpaused, the time Playwright takes to deliver each event counted too: on a loaded
    # machine the page saw the clicks more than ui.DOUBLE_CLICK_MS apart, two single clicks. In real
    # time the first click has reached the server before the second is made (Playwright's dblclick
    # sends both at once, and the first click's pick then never showed).
    page.mouse.move(x, y)
    page.clock.pause_at(page.evaluate("Date.now()") + 1)
    page.mouse.down()
    page.mouse.up()
    page.clock.run_for(DOUBLE_CLICK_GAP_MS)  # the page's timers due in the gap run
    page.wait_for_timeout(DOUBLE_CLICK_GAP_MS)  # real time: what the first click sent reaches the server
    page.mouse.down(click_count=2)
    page.mouse.up(click_count=2)
    page.clock.resume()
    _settle_on_whole(page, whole, whole_caption)
    assert query_line(page) == before
    # A single click on a point still makes it the query.
    trace = plot.evaluate("gd => gd._fullData.findIndex(t => t.x.length > 3)")
    x, y = plot_point_xy(plot, trace, 3)
    page.mouse.click(x, y)
    wait_query_change(page, before)


def test_layout_rings_have_a_colour_no_class_has(layout_server: str, chromium: Any) -> None:
    """Issue 22 (layout), bug 5: the neighbour rings were the orange of the u_turn class."""
    from trajemb.serving.viz import DIRECTION_COLORS, OBJECT_TYPE_COLORS, PALETTE

    page = chromium
    _open_layout(page, layout_server)
    rings = page.locator("[data-testid=trajembLayoutMarks] [data-mark=neighbour]")
    rings.first.wait_for(timeout=WAIT_MS)
    strokes = {str(s).upper() for s in rings.evaluate_all("rs => rs.map(r => r.getAttribute('stroke'))")}
    classes = {c.upper() for c in (*DIRECTION_COLORS.values(), *OBJECT_TYPE_COLORS.values(), *PALETTE)}
    assert len(strokes) == 1 and not strokes & classes, strokes


def test_space_keeps_the_drag_tool_when_a_selection_is_cleared(layout_server: str, chromium: Any) -> None:
    """Issue 22 (layout), bug 4: clearing a selection on Embedding space switched Box Select back to
    Lasso."""
    page = chromium
    page.goto(layout_server, timeout=WAIT_MS)
    page.get_by_text("minADE@").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    go_to(page, "Embedding space")
    plot = page.locator(".js-plotly-plot").first
    scroll_to(page, plot)
    left, top, w, h = _plot_area(plot)
    page.mouse.move(left + w / 2, top + h / 2)
    plot.locator("[data-title='Box Select']").click()
    page.wait_for_function(
        "() => document.querySelector('.js-plotly-plot')._fullLayout.dragmode === 'select'", timeout=WAIT_MS
    )
    wait_idle(page)
    page.mouse.move(left + 0.2 * w, top + 0.2 * h)
    page.mouse.down()
    page.mouse.move(left + 0.8 * w, top + 0.8 * h, steps=6)
    page.mouse.up()
    page.get_by_role("button", name="Clear the selection").wait_for(timeout=WAIT_MS)
    wait_idle(page)
    page.get_by_role("button", name="Clear the selection").click()
    page.get_by_role("button", name="Clear the selection").wait_for(state="detached", timeout=WAIT_MS)
    wait_idle(page)
    dragmode = page.locator(".js-plotly-plot").first.evaluate("gd => gd._fullLayout.dragmode")
    assert dragmode == "select"
    page.screenshot(path=str(SCREENSHOT_DIR / "space-after-clear.png"))


def test_forecast_page_in_chromium(forecast_bundle: Path, chromium: Any) -> None:
    """Issue 18: the Forecast page draws its map; a click on a retrieved future, and a row of the source
    table, make that bank window the query."""
    from trajemb.analysis.bundle import Bundle

    page = chromium
    bundle = Bundle(forecast_bundle)
    with served_app(["--bundle", str(forecast_bundle)]) as url:
        page.goto(url + "/forecast", timeout=WAIT_MS)
        page.get_by_role("heading", name="Forecast by retrieval").first.wait_for(timeout=WAIT_MS)
        page.get_by_text("Scores of this query").first.wait_for(timeout=WAIT_MS)
        wait_idle(page)
        assert not page.locator("[data-testid=stException]").count()
        first = query_line(page)
        plot = page.locator(".js-plotly-plot").first
        names = plot.evaluate("gd => gd._fullData.filter(t => t.mode === 'lines').map(t => t.name)")
        assert {"history", "true future", "constant velocity"} <= set(names)
        assert sum(n.startswith("#") for n in names) == 6
        assert plot.evaluate("gd => gd._fullData.some(t => t.fill === 'toself')")  # the query's map
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        plot.screenshot(path=str(SCREENSHOT_DIR / "forecast-plot.png"))
        check_screenshot(SCREENSHOT_DIR / "forecast-plot.png")
        page.screenshot(path=str(SCREENSHOT_DIR / "forecast.png"))

        # A click on the end of the most probable future: the bank window it came from is the query.
        trace, points, row = plot.evaluate(
            """gd => { const i = gd._fullData.findIndex(t => t.customdata && t.customdata.length);
                       return [i, gd._fullData[i].x.length, gd._fullData[i].customdata[0]]; }"""
        )
        click_plot_point(page, 0, trace, points - 1)
        picked = wait_query_change(page, first)
        assert query_id(page) == bundle.strings("window_id", [int(row)])[0]
        # A row of the source table, too.
        page.get_by_text("Scores of this query").first.wait_for()
        sources = page.locator("[data-testid=stDataFrame]").count() - 1
        click_table_row(page, sources, 1)
        assert wait_query_change(page, picked) != picked
        assert not page.locator("[data-testid=stException]").count()


def drag_path(page: Any, plot_index: int, points_xy: list[tuple[float, float]], steps: int = 6) -> None:
    """Drag the mouse through ``points_xy`` (data coordinates of the plot's first axes) with the button
    held: real mouse events (Chrome DevTools' Input.dispatchMouseEvent, as a person's hand makes)."""
    plot = page.locator(".js-plotly-plot").nth(plot_index)
    scroll_to(page, plot)
    pixels = plot.evaluate(
        """(gd, pts) => {
             const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
             return pts.map(([x, y]) => [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)]);
           }""",
        [list(p) for p in points_xy],
    )
    page.mouse.move(*pixels[0])
    page.mouse.down()
    for x, y in pixels[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def test_sketch_a_query_with_the_mouse(server: str, chromium: Any) -> None:
    """Issue 17: a path drawn with the mouse (Plotly's draw-open-path tool, real drags) becomes a query
    whose neighbours appear; the drawing is in the URL, and the browser's Back takes it away again."""
    page = chromium
    page.goto(server + "/sketch", timeout=WAIT_MS)
    page.get_by_text("Draw a path to find the windows that look like it.").wait_for(timeout=WAIT_MS)
    wait_idle(page)
    # A left turn: ahead 20 m, then bending to the left.
    drag_path(page, 0, [(0, 0), (10, 0), (20, 1), (28, 5), (33, 12), (35, 20)])
    page.get_by_text("minADE@6").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    drawn = next(t for t in page.locator("[data-testid=stText]").all_inner_texts() if t.startswith("Drawn: "))
    length_m = float(re.search(r"points, ([0-9.]+) m", drawn).group(1))  # type: ignore[union-attr]
    assert 35 < length_m < 50, drawn  # about the 42 m dragged
    url = urlparse(page.url)
    sketch = parse_qs(url.query)["sketch"][0]
    xy = np.array([[float(v) for v in p.split(",")] for p in sketch.split(";")])
    assert np.allclose(xy[0], [0, 0], atol=1.0) and np.allclose(xy[-1], [35, 20], atol=1.0)
    table = page.locator("[data-testid=stDataFrame]").last
    assert "drawn" not in table.inner_text()  # a table of the bundle's windows
    assert page.locator("[data-testid=stDataFrame]").count() >= 1
    neighbours = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p._fullData.length)"
    )
    assert len(neighbours) >= 2  # the canvas, the overlay (and the maps)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "sketch.png"))
    # The neighbours download as a file made when the button is clicked (``trajemb.analysis.export``'s table).
    with page.expect_download(timeout=WAIT_MS) as download:
        page.locator(".st-key-sketch-download-csv button").first.click()
    assert download.value.suggested_filename.startswith("trajemb-neighbours-")
    import pandas as pd

    frame = pd.read_csv(download.value.path())
    assert len(frame) == 6 and set(frame["query_window_id"]) == {"drawn"}
    assert frame["window_id"].str.startswith("synthetic/").all()
    wait_idle(page)
    # The browser's Back: the address before the drawing, so no drawing.
    page.go_back()
    page.get_by_text("Draw a path to find the windows that look like it.").wait_for(timeout=WAIT_MS)
    assert "sketch=" not in page.url
    # On the query's map (city frame): a 30 m drag across the middle of the map.
    page.get_by_text("The query's map", exact=True).click()
    page.get_by_text("Query: ").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    x0, x1, y0, y1 = page.locator(".js-plotly-plot").first.evaluate(
        "gd => [...gd._fullLayout.xaxis.range, ...gd._fullLayout.yaxis.range]"
    )
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    drag_path(page, 0, [(cx - 15, cy), (cx, cy + 1), (cx + 15, cy + 3)])
    try:
        drawn = wait_text_change(page, "Drawn: ", "")
        page.get_by_text("minADE@6").first.wait_for(timeout=WAIT_MS)
    finally:
        page.screenshot(path=str(SCREENSHOT_DIR / "sketch-map.png"))
    wait_idle(page)
    assert parse_qs(urlparse(page.url).query)["frame"] == ["city"]
    assert 25 < float(re.search(r"points, ([0-9.]+) m", drawn).group(1)) < 35, drawn  # type: ignore[union-attr]


def test_an_upload_too_large_is_refused_in_one_visible_line(
    server: str, chromium: Any, tmp_path: Path
) -> None:
    """Issue 22: a CSV over 2 MiB on "Your own query" was refused by Streamlit's uploader chip alone (the
    reason only on hovering it), while the previous file's error stayed on the page as if it were
    this file's. Now the refusal is one line on the page, in place of the previous file's error."""
    page = chromium
    page.goto(server + "/query", timeout=WAIT_MS)
    page.get_by_role("heading", name="Your own query").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("Upload a CSV", exact=True).first.click()
    wait_idle(page)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    page.locator("input[type=file]").set_input_files(str(binary))
    page.get_by_text("not UTF-8", exact=False).first.wait_for(timeout=WAIT_MS)
    big = tmp_path / "many.csv"
    big.write_text("x,y\n" + "".join(f"{i}.25,{i}.5\n" for i in range(300_000)))  # about 4.7 MB
    assert big.stat().st_size > 2 << 20
    page.locator("input[type=file]").set_input_files(str(big))
    refusal = page.locator("[data-testid=stAlert]").filter(has_text="more than the 2 MiB")
    refusal.first.wait_for(timeout=WAIT_MS)
    wait_idle(page)
    alerts = page.locator("[data-testid=stAlert]").all_inner_texts()
    assert len(alerts) == 1 and "\n" not in alerts[0].strip(), alerts  # one line, the only alert
    assert not page.get_by_text("not UTF-8", exact=False).count()  # the earlier file's error is gone
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "upload-too-large.png"))


@pytest.mark.parametrize("neighbours", [6, 20])
@pytest.mark.parametrize("height", [380, 430, 560])
def test_legend_below_a_plot_leaves_the_axis_title_readable(
    chromium: Any, neighbours: int, height: int
) -> None:
    """The legend under the agent-frame overlay and the forecast plot starts below the x axis's title in
    Chromium at every height the app draws them (at -0.14 of the plot's height, the first row of the
    Explore page's legend covered the title)."""
    from trajemb.serving.viz import agent_frame_figure, forecast_figure

    rng = np.random.default_rng(0)
    paths = [np.cumsum(rng.normal(0.5, 0.2, (60, 2)), axis=0) for _ in range(neighbours)]
    names = [f"#{i + 1} lane_change_left" if neighbours <= 6 else f"#{i + 1}" for i in range(neighbours)]
    figures = {
        "overlay": agent_frame_figure(paths[0], paths, names, height=height),
        "forecast": forecast_figure(
            paths[0][:30], [p[30:] for p in paths], names, [1 / neighbours] * neighbours, height=height
        ),
    }
    page = chromium
    for name, fig in figures.items():
        page.set_content(fig.to_html(include_plotlyjs=True, full_html=True))
        page.locator(".legend").first.wait_for()
        title = page.locator(".g-xtitle").first.bounding_box()
        legend = page.locator(".legend").first.bounding_box()
        assert title is not None and legend is not None
        assert legend["y"] >= title["y"] + title["height"] + 2, (name, title, legend)
        svg = page.locator(".main-svg").first.bounding_box()
        traces = page.locator(".legend .traces")
        entries = [traces.nth(i).bounding_box() for i in range(traces.count())]
        lowest = max(e["y"] + e["height"] for e in entries if e is not None)
        assert svg is not None and lowest <= svg["y"] + svg["height"], (name, lowest, svg)  # none cut off
