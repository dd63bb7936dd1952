"""Benchmark: what a person waits in the explorer, measured in a real browser (Debian's Chromium driven by
Playwright), beside the server-side time of a rerun (Streamlit's AppTest).

For a bundle (default: the ~100k-window bundle of ``scripts/bench_scale.py``, else built here):
* server side: a rerun of the Explore page after a query change (search, table, overlay, maps);
* browser: opening the bundle to the first neighbours drawn; Random clicked repeatedly, and the bytes
  the server sent for each click; a switch to the Embedding space page and back; a box selection on
  the 2-D layout until its gallery shows; Explore switched to "On the 2-D layout"; a click on the
  2-D layout. Each is timed as a person waits: from the click to the last change of the page (a
  MutationObserver in the page records every change; the page must then stay unchanged for
  ``--quiet-ms``, which is not counted), not to Streamlit's "running" indicator, which it shows only
  once a run has lasted half a second.
``--first-start`` instead measures the README's main command on an empty cache: server start to the
first neighbours on screen, with the build stages the page showed on the way.

``--rare`` instead times the Rare page (issue 17): its first opening, opened again from Explore, and
opened by its link in a new session, each until the page has stopped changing.

Usage: python scripts/bench_app.py [--bundle PATH] [--clicks 20] [--first-start | --rare]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUERY_CHANGED = """q => [...document.querySelectorAll('[data-testid=stText]')]
                      .some(e => e.innerText.startsWith('Query: ') && e.innerText !== q)"""
sys.path.insert(0, str(REPO / "tests"))

from browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    click_plot_point,
    peak_rss_gb,
    query_line,
    served_app,
    wait_settled,
    watch_changes,
)


def stats(label: str, ms: list[float]) -> None:
    a = np.asarray(ms)
    print(
        f"  {label:52s} median {np.median(a):7.0f} ms  p95 {np.percentile(a, 95):7.0f} ms  max {a.max():7.0f} ms  (n={len(a)})"
    )


def default_bundle() -> Path:
    candidate = REPO / ".cache" / "bench_scale" / "n100000" / "bundle"
    if (candidate / "bundle.json").is_file():
        return candidate
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle
    from trajemb.serving.pipeline import build_default_table, shipped_checkpoints

    work = REPO / ".cache" / "bench_app"
    build_default_table(work, 950, seed=11, progress=True)
    out = work / "bundle"
    if not (out / "bundle.json").is_file():
        ckpt = next(c for c in shipped_checkpoints() if c.name == "compact-cosine-d16")
        data = work / "default-s11-n950"
        build_bundle(
            data / "table.parquet",
            [ckpt],
            out,
            data / "maps",
            BundleConfig(evaluation=EvalConfig(num_queries=500)),
        )
    return out


def server_side(bundle: Path, reruns: int) -> None:
    from streamlit.testing.v1 import AppTest

    from trajemb.analysis.bundle import Bundle

    os.environ["TRAJEMB_BUNDLE"] = str(bundle)
    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=600)
    at.run()
    n = Bundle(bundle).num_windows
    rows = np.random.default_rng(0).choice(n, reruns, replace=False)
    ms = []
    for i, row in enumerate(rows):
        at.session_state["query_row"] = int(row)
        at.session_state["query_version"] = 1000 + i
        t0 = time.perf_counter()
        at.run()
        ms.append(1000 * (time.perf_counter() - t0))
        assert not at.exception, at.exception
    stats(f"server: Explore rerun after a query change ({n:,} windows)", ms)


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int | str) -> float:
    """CPU time (user + system) a process has used so far, ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_MS


def chromium_cpu_ms() -> float:
    """CPU time used so far by Chromium's child processes (renderers, GPU, network), ms."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            # Chromium rewrites its children's command lines into one string: look for the words.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"chrom" in cmdline.split(b" ")[0] and b"--type=" in cmdline:
                total += cpu_ms(pid)
        except OSError:
            continue
    return total


#: Per timed label: (Chromium CPU ms, server CPU ms) of each interaction. CPU time, unlike the time a
#: person waits, hardly grows with other jobs on the machine: it tells whether a change made the
#: browser's or the server's work smaller when the wall-clock figures are too noisy to tell.
CPU: dict[str, list[tuple[float, float]]] = {}


def timed(
    page: Any, action: Callable[[], object], done: Callable[[], object], quiet_ms: int, label: str = ""
) -> float:
    """Milliseconds a person waits: from just before ``action`` to the last change of the page once
    ``done`` has seen the result (a MutationObserver records every change; the page must then stay
    unchanged for ``quiet_ms``, which is not counted). Tooltips and plot hover labels are not changes.
    With ``label``, the CPU time Chromium and the server spent meanwhile is kept in ``CPU``."""
    import browser as harness

    server = harness.last_server_pid
    c0, s0 = chromium_cpu_ms(), cpu_ms(server) if server else 0.0
    t0 = watch_changes(page)
    action()
    page.mouse.move(2, 2)  # no tooltip or hover label under a resting mouse
    done()
    waited = wait_settled(page, quiet_ms) - t0
    if label:
        CPU.setdefault(label, []).append(
            (chromium_cpu_ms() - c0, (cpu_ms(server) - s0) if server else float("nan"))
        )
    return waited


def cpu_stats(label: str) -> None:
    """Median CPU time of the interactions timed under ``label`` (the quiet period included)."""
    spent = CPU.get(label)
    if spent:
        print(
            f"    CPU per interaction (median): Chromium {statistics.median(c for c, _ in spent):6.0f} ms, "
            f"server {statistics.median(s for _, s in spent):6.0f} ms"
        )


def browser(bundle: Path, clicks: int, quiet_ms: int) -> None:
    from playwright.sync_api import sync_playwright

    with served_app(["--bundle", str(bundle)]) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1500, "height": 1800})
        received: list[int] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: received.append(len(payload))))
        t0 = time.perf_counter()
        page.goto(url, timeout=300_000)
        page.get_by_text("minADE@").first.wait_for(timeout=300_000)
        wait_settled(page, quiet_ms, 300_000)
        print(
            f"  browser: open the bundle to the first neighbours drawn        {time.perf_counter() - t0:7.1f} s"
        )
        click_ms, sent = [], []
        for _ in range(clicks):
            before = query_line(page)
            received.clear()
            click_ms.append(
                timed(
                    page,
                    lambda: page.get_by_role("button", name="Random").click(),
                    partial(page.wait_for_function, QUERY_CHANGED, arg=before, timeout=60_000),
                    quiet_ms,
                    "random",
                )
            )
            sent.append(sum(received))
        stats("browser: Random clicked -> page settled", click_ms)
        cpu_stats("random")
        print(
            f"  browser: bytes sent by the server per click                  median "
            f"{statistics.median(sent) / 1e3:7.0f} kB  max {max(sent) / 1e3:7.0f} kB"
        )
        switch_ms = []
        for _ in range(4):
            for name, heading in (("Embedding space", "Embedding space"), ("Explore", "Explore neighbours")):
                switch_ms.append(
                    timed(
                        page,
                        page.get_by_role("link", name=name, exact=True).click,
                        partial(page.get_by_role("heading", name=heading).first.wait_for, timeout=120_000),
                        quiet_ms,
                        "switch",
                    )
                )
        stats("browser: page switch (Explore <-> Embedding space)", switch_ms)
        cpu_stats("switch")
        page.get_by_role("link", name="Embedding space", exact=True).click()
        page.get_by_role("heading", name="Embedding space").first.wait_for(timeout=120_000)
        wait_settled(page, quiet_ms)
        select_ms = []
        for i in range(3):
            plot = page.locator(".js-plotly-plot").first
            plot.evaluate("el => el.scrollIntoView({block: 'center'})")
            page.locator(".modebar-btn[data-attr='dragmode'][data-val='select']").first.click()
            wait_settled(page, quiet_ms)  # choosing a tool reruns the page (the tool is kept, issue 22)
            plot = page.locator(".js-plotly-plot").first
            box = plot.bounding_box()
            assert box is not None, "the plot is not on the page"
            x0, y0 = box["x"] + box["width"] * (0.30 + 0.1 * i), box["y"] + box["height"] * 0.30

            def drag(x0: float = x0, y0: float = y0, box: Any = box) -> None:
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move(x0 + box["width"] * 0.15, y0 + box["height"] * 0.25, steps=8)
                page.mouse.up()

            select_ms.append(
                timed(
                    page,
                    drag,
                    lambda: page.get_by_text("Selection:").first.wait_for(timeout=120_000),
                    quiet_ms,
                )
            )
        stats("browser: box selection -> gallery drawn", select_ms)
        page.get_by_role("link", name="Explore", exact=True).click()
        page.get_by_role("heading", name="Explore neighbours").first.wait_for(timeout=120_000)
        wait_settled(page, quiet_ms)
        layout_ms = [
            timed(
                page,
                lambda: page.get_by_text("On the 2-D layout").click(),
                lambda: page.locator(".js-plotly-plot").first.wait_for(timeout=120_000),
                quiet_ms,
            )
        ]
        stats("browser: Explore switched to 'On the 2-D layout'", layout_ms)
        pick_ms = []
        for i in range(5):
            before = query_line(page)
            pick_ms.append(
                timed(
                    page,
                    partial(click_plot_point, page, 0, 0, 3 + 7 * i),
                    partial(page.wait_for_function, QUERY_CHANGED, arg=before, timeout=60_000),
                    quiet_ms,
                    "layout click",
                )
            )
        stats("browser: click on the 2-D layout -> page settled", pick_ms)
        cpu_stats("layout click")
        import browser as harness

        if harness.last_server_pid is not None:
            print(
                f"  server process peak memory (VmHWM)                          {peak_rss_gb(harness.last_server_pid):7.2f} GB"
            )
        chromium.close()


def first_start(follow: bool = False) -> None:
    """The README's main command on an empty cache: server start to the first neighbours on screen
    (``follow``: then the background completion to its end, with the time left the page showed)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as cache:
        t_start = time.perf_counter()
        with served_app([], env={"TRAJEMB_CACHE": cache}) as url, sync_playwright() as p:
            served = time.perf_counter() - t_start
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = chromium.new_page(viewport={"width": 1500, "height": 1800})
            page.goto(url, timeout=600_000)
            stages: list[str] = []
            deadline = time.perf_counter() + 600
            while time.perf_counter() < deadline:
                for line in page.locator("[data-testid=stText]").all_inner_texts():
                    if line[:2].isdigit() and line not in stages:
                        stages.append(line)
                if page.get_by_text("minADE@").count():
                    break
                page.wait_for_timeout(250)
            wait_settled(page, 1000, 300_000)
            total = time.perf_counter() - t_start
            print(
                f"  first start: server up after {served:.1f} s; first neighbours on screen {total:.1f} s after the command"
            )
            for line in stages:
                print(f"    {line}")
            if follow:
                follow_completion(page, Path(cache), t_start)
            chromium.close()


def follow_completion(page: Any, cache: Path, t_start: float, limit_s: float = 3600) -> None:
    """After the first neighbours: when every 2-D layout, the evaluation and the robustness curves of
    the default data were in place (read from its manifest), and what the page said about the time
    left meanwhile (the status line, every 30 s)."""
    from trajemb.analysis.bundle import MANIFEST
    from trajemb.serving.bundle_build import missing_robustness

    manifest = next(cache.glob(f"default-*/bundle/{MANIFEST}"))
    seen: dict[str, float] = {}
    said: list[str] = []
    last_said = 0.0
    while time.perf_counter() - t_start < limit_s:
        models = json.loads(manifest.read_text())["models"].values()
        now = time.perf_counter() - t_start
        if "layouts" not in seen and all(m.get("projection") for m in models):
            seen["layouts"] = now
        if "evaluation" not in seen and all(m.get("evaluated") for m in models):
            seen["evaluation"] = now
        if "evaluation" in seen and not missing_robustness(manifest.parent):
            seen["robustness"] = now
            break
        if now - last_said >= 30:
            last_said = now
            lines = [t for t in page.locator("[data-testid=stText]").all_inner_texts() if "step " in t]
            if lines:
                said.append(f"{now:6.0f} s: {lines[0]}")
        time.sleep(2)
    for name, at in seen.items():
        print(f"  first start: {name} done {at:.0f} s after the command")
    for line in said:
        print(f"    page said at {line}")


def mining_pages(bundle: Path, repeats: int, quiet_ms: int) -> None:
    """Issue 17: the Rare page opened (from a link, and from Explore by the sidebar) until the page has
    stopped changing, its maps drawn; the first opening (the server's first rarity order) apart."""
    from playwright.sync_api import sync_playwright

    with served_app(["--bundle", str(bundle)]) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1500, "height": 1800})
        page.goto(url, timeout=300_000)
        page.get_by_text("minADE@").first.wait_for(timeout=300_000)
        wait_settled(page, quiet_ms, 300_000)

        def open_rare() -> None:
            page.get_by_role("link", name="Rare", exact=True).click()

        def rare_drawn() -> None:
            page.get_by_role("heading", name="Rare windows").first.wait_for(timeout=300_000)
            page.get_by_text("windows pass the filters").first.wait_for(timeout=300_000)

        def back_to_explore() -> None:
            page.get_by_role("link", name="Explore", exact=True).click()
            page.get_by_role("heading", name="Explore neighbours").first.wait_for(timeout=300_000)
            wait_settled(page, quiet_ms)

        first = timed(page, open_rare, rare_drawn, quiet_ms)
        print(f"  browser: Rare page, first opening (Explore -> Rare)           {first:7.0f} ms")
        switch_ms = []
        for _ in range(repeats):
            back_to_explore()
            switch_ms.append(timed(page, open_rare, rare_drawn, quiet_ms))
        stats("browser: Rare page opened from Explore (sidebar link)", switch_ms)
        link_ms = []
        for _ in range(repeats):
            page.goto(url + "/rare", timeout=300_000)
            rare_drawn()
            # The page's clock starts at the navigation: its last change is the time waited.
            link_ms.append(wait_settled(page, quiet_ms))
        stats("browser: Rare page loaded from its link (new session)", link_ms)
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--reruns", type=int, default=30)
    parser.add_argument("--first-start", action="store_true")
    parser.add_argument("--rare", action="store_true", help="only the Rare page (issue 17), --clicks times")
    parser.add_argument(
        "--follow", action="store_true", help="with --first-start: also time the background completion"
    )
    parser.add_argument(
        "--quiet-ms",
        type=int,
        default=1000,
        help="the page counts as settled after this long without a change (not counted in the figures)",
    )
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}")
    if args.first_start:
        first_start(args.follow)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return
    bundle = Path(args.bundle) if args.bundle else default_bundle()
    print(f"bundle {bundle}")
    if args.rare:
        mining_pages(bundle, args.clicks, args.quiet_ms)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return
    server_side(bundle, args.reruns)
    browser(bundle, args.clicks, args.quiet_ms)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
