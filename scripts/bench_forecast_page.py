"""Benchmark: the explorer's Forecast page as a person waits for it, in Debian's Chromium (Playwright), and
the library call behind it.

For a bundle with a history model (default: the built-in default data, built here if missing):
* library: ``trajemb.analysis.forecast.forecast_row`` for random rows (the page's four methods: the history
  model, raw kNN, constant velocity and acceleration), first call (model, raw index and temperatures)
  and warm, half a second apart;
* browser: the page opened to its forecast drawn (the server already up, nothing forecast yet), opened
  again (warm), Random clicked repeatedly, a click on a retrieved future (its bank window becomes the
  query). Each is timed to the last change of the page: a MutationObserver records every change, and
  the page must then stay unchanged for ``--quiet-ms`` (not counted), as in ``scripts/bench_app.py``.

The load average of the minute before is printed beside each figure (the machine is shared).

Usage: flock /work/heavy.lock python scripts/bench_forecast_page.py [--bundle PATH] [--clicks 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_app import QUERY_CHANGED, stats, timed  # noqa: E402

from browser import CHROMIUM, CHROMIUM_ARGS, click_plot_point, query_line, served_app, wait_settled  # noqa: E402

SETTLED = "Scores of this query"


def load() -> str:
    return f"(load {os.getloadavg()[0]:.1f})"


def default_bundle() -> Path:
    from trajemb.serving.pipeline import build_default_bundle

    return build_default_bundle(REPO / ".cache", progress=True, complete=False)


def library(bundle_path: Path, queries: int) -> None:
    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.forecast import (
        CONSTANT_ACCELERATION,
        CONSTANT_VELOCITY,
        KNN_RAW,
        RETRIEVAL_PREFIX,
        ForecastConfig,
        forecast_row,
    )

    bundle = Bundle(bundle_path)
    model = next(m for m in bundle.model_names if bundle.history_steps(m) is not None)
    methods = [RETRIEVAL_PREFIX + model, KNN_RAW, CONSTANT_VELOCITY, CONSTANT_ACCELERATION]
    config = ForecastConfig(history_steps=bundle.history_steps(model) or 30)
    rows = np.random.default_rng(0).choice(bundle.num_windows, queries + 1, replace=False)
    print(f"library: {bundle.num_windows:,} windows, history model {model} {load()}")
    t0 = time.perf_counter()
    forecast_row(bundle, int(rows[0]), config, methods)
    print(
        f"  first forecast_row (model, raw index, temperatures)   {1000 * (time.perf_counter() - t0):7.0f} ms"
    )
    ms = []
    for row in rows[1:]:
        time.sleep(0.5)  # as between a person's clicks: back to back, faiss's and torch's threads contend
        t0 = time.perf_counter()
        forecast_row(bundle, int(row), config, methods)
        ms.append(1000 * (time.perf_counter() - t0))
    stats(f"forecast_row, warm {load()}", ms)


def browser(bundle: Path, clicks: int, quiet_ms: int) -> None:
    from playwright.sync_api import sync_playwright

    with served_app(["--bundle", str(bundle)]) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page: Any = chromium.new_page(viewport={"width": 1500, "height": 1800})
        for label in ("first open (cold server caches)", "opened again (warm)"):
            before = load()
            t0 = time.perf_counter()
            page.goto(url + "/forecast", timeout=300_000)
            page.get_by_text(SETTLED).first.wait_for(timeout=300_000)
            wait_settled(page, quiet_ms, 300_000)
            settled_s = time.perf_counter() - t0 - quiet_ms / 1000
            print(f"  browser: Forecast page {label:32s} {settled_s:7.2f} s {before}")
        ms = []
        before = load()
        for _ in range(clicks):
            q = query_line(page)
            ms.append(
                timed(
                    page,
                    lambda: page.get_by_role("button", name="Random").click(),
                    partial(page.wait_for_function, QUERY_CHANGED, arg=q, timeout=60_000),
                    quiet_ms,
                )
            )
        stats(f"browser: Random -> forecast settled {before}", ms)
        ms = []
        before = load()
        for _ in range(max(3, clicks // 3)):
            q = query_line(page)
            plot = page.locator(".js-plotly-plot").first
            trace, points = plot.evaluate(
                """gd => { const i = gd._fullData.findIndex(t => t.customdata && t.customdata.length);
                           return [i, gd._fullData[i].x.length]; }"""
            )

            def click(trace: int = trace, points: int = points) -> None:
                click_plot_point(page, 0, trace, points - 1)

            ms.append(
                timed(
                    page,
                    click,
                    partial(page.wait_for_function, QUERY_CHANGED, arg=q, timeout=60_000),
                    quiet_ms,
                )
            )
        stats(f"browser: click on a future -> its window forecast {before}", ms)
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--quiet-ms", type=int, default=1000)
    args = parser.parse_args()
    bundle = args.bundle or default_bundle()
    library(bundle, args.queries)
    if CHROMIUM is None:
        print("browser: not measured (Debian's chromium is not installed)")
        return
    browser(bundle, args.clicks, args.quiet_ms)


if __name__ == "__main__":
    main()
