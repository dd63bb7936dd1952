"""Driving the explorer in Debian's Chromium with Playwright: a served app, waits, and the clicks a person
makes (table rows, plot points). Shared by the browser test and ``scripts/bench_app.py``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As root, without a sandbox; no background traffic (this machine has no network beyond localhost).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: How long any wait on the page may take before the test fails. It bounds a hang, it paces nothing:
#: every wait ends as soon as the page shows what it waits for, so a loaded machine (2 cores shared by
#: several jobs) only makes the test slower, not red. ``TRAJEMB_BROWSER_WAIT_S`` overrides it.
WAIT_MS = int(float(os.environ.get("TRAJEMB_BROWSER_WAIT_S", "600")) * 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: pid of the last server ``served_app`` started (benchmarks read its memory from /proc).
last_server_pid: int | None = None


def peak_rss_gb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process, GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


@contextlib.contextmanager
def served_app(
    args: list[str], env: dict[str, str] | None = None, timeout_s: float = WAIT_MS / 1000
) -> Iterator[str]:
    """``streamlit run app/streamlit_app.py -- ARGS`` on a free localhost port; yields its URL once its
    health endpoint answers (polled; ``timeout_s`` only bounds a server that never comes up)."""
    global last_server_pid
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO_ROOT / "app" / "streamlit_app.py"),
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false",
        "--",
        *args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    last_server_pid = proc.pid
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"streamlit did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_idle(page: Any, timeout_ms: int = WAIT_MS, quiet_ms: int = 400) -> None:
    """Until Streamlit has finished the current run and the page has not changed for ``quiet_ms``
    (Streamlit shows its "Running" indicator only after half a second, so its absence alone says
    nothing about a short run), with the plots drawn."""
    wait_settled(page, quiet_ms, timeout_ms)


def query_line(page: Any) -> str:
    """The text of the current query line ("Query: <id> · ...")."""
    for el in page.locator("[data-testid=stText]").all():
        text = el.inner_text()
        if text.startswith("Query: "):
            return str(text)
    return ""


def wait_query_change(page: Any, before: str, timeout_ms: int = WAIT_MS) -> str:
    page.wait_for_function(
        """q => [...document.querySelectorAll('[data-testid=stText]')]
              .some(e => e.innerText.startsWith('Query: ') && e.innerText !== q)""",
        arg=before,
        timeout=timeout_ms,
    )
    wait_idle(page, timeout_ms)
    return query_line(page)


def scroll_to(page: Any, locator: Any) -> None:
    """Scroll ``locator`` to the middle of the view and wait until it stands still there (its box the
    same in two successive frames), so that coordinates read from it next are where a click lands."""
    locator.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.wait_for_function(
        """el => new Promise(done => {
             const a = el.getBoundingClientRect();
             requestAnimationFrame(() => requestAnimationFrame(() => {
               const b = el.getBoundingClientRect();
               done(a.top === b.top && a.left === b.left && a.height === b.height && b.height > 0);
             }));
           })""",
        arg=locator.element_handle(timeout=WAIT_MS),
        timeout=WAIT_MS,
    )


def click_table_row(page: Any, table_index: int, row: int) -> None:
    """Select data row ``row`` of the ``table_index``-th dataframe by clicking its selection box."""
    grid = page.locator("[data-testid=stDataFrame]").nth(table_index)
    scroll_to(page, grid)
    row_px = 35  # glide data grid: header and rows are 35 px high
    # Playwright's click waits until the grid is visible, stable and the topmost element at that point.
    grid.click(position={"x": 18, "y": row_px * (row + 1) + row_px / 2}, timeout=WAIT_MS)


def plot_point_xy(plot: Any, trace: int = 0, point: int = 0) -> tuple[float, float]:
    """Where the ``point``-th point of ``trace`` of a plotly chart (a locator) is drawn, in page pixels."""
    x, y = plot.evaluate(
        """(gd, [t, i]) => {
             const fl = gd._fullLayout, tr = gd._fullData[t];
             const xa = fl[(tr.xaxis || 'x').replace('x', 'xaxis')], ya = fl[(tr.yaxis || 'y').replace('y', 'yaxis')];
             const x = tr.x[i], y = tr.y[i];
             const box = gd.getBoundingClientRect();
             return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
           }""",
        [trace, point],
    )
    return float(x), float(y)


def click_plot_point(page: Any, plot_index: int, trace: int = 0, point: int = 0) -> None:
    """Click the ``point``-th point of ``trace`` of the ``plot_index``-th plotly chart, where it is drawn."""
    plot = page.locator(".js-plotly-plot").nth(plot_index)
    scroll_to(page, plot)
    page.mouse.click(*plot_point_xy(plot, trace, point))


def go_to(page: Any, name: str, heading: str | None = None) -> None:
    """Click the sidebar link of page ``name`` and wait for its heading and the end of the run."""
    page.get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=heading or name).first.wait_for(timeout=WAIT_MS)
    wait_idle(page)


def slider_value(page: Any, label: str) -> str:
    """The value a slider shows."""
    slider = page.locator("[data-testid=stSlider]").filter(has_text=label).first
    return str(slider.locator("[data-testid=stSliderThumbValue]").inner_text())


def set_slider(page: Any, label: str, value: int) -> None:
    """Move a slider to ``value`` with the keyboard, as a person can."""
    handle = page.get_by_role("slider", name=label).first
    handle.focus()
    current = int(slider_value(page, label))
    for _ in range(abs(value - current)):
        page.keyboard.press("ArrowRight" if value > current else "ArrowLeft")
    page.wait_for_function(
        """([label, v]) => [...document.querySelectorAll('[data-testid=stSlider]')]
              .some(s => s.innerText.includes(label) &&
                         s.querySelector('[data-testid=stSliderThumbValue]').innerText === String(v))""",
        arg=[label, value],
        timeout=WAIT_MS,
    )
    wait_idle(page)


def choose(page: Any, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    page.get_by_role("combobox", name=label).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_idle(page)


def selected(page: Any, label: str) -> str:
    """The option a select box shows."""
    return str(page.get_by_role("combobox", name=label).first.input_value())


def wait_text_change(page: Any, prefix: str, before: str, timeout_ms: int = WAIT_MS) -> str:
    """Until some text element starting with ``prefix`` reads other than ``before``; returns it."""
    page.wait_for_function(
        """([p, b]) => [...document.querySelectorAll('[data-testid=stText]')]
              .some(e => e.innerText.startsWith(p) && e.innerText !== b)""",
        arg=[prefix, before],
        timeout=timeout_ms,
    )
    texts: list[str] = page.locator("[data-testid=stText]").all_inner_texts()
    return next(t for t in texts if t.startswith(prefix))


def add_to_multiselect(page: Any, label: str, option: str) -> None:
    """Add ``option`` to the multiselect labelled ``label`` and close its list."""
    page.get_by_role("combobox", name=label).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    page.keyboard.press("Escape")
    wait_idle(page)


#: Records the time of every change to the page (nodes, attributes, text) in ``window.__lastChange``,
#: except tooltips and plot hover labels (they follow the mouse, not the app).
_WATCH = """() => {
  if (window.__watch) return;
  window.__lastChange = performance.now();
  const ignored = '[role=tooltip], [data-baseweb=tooltip], [data-testid=stTooltipContent], .hoverlayer';
  window.__watch = new MutationObserver(records => {
    for (const r of records) {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (el && el.closest && el.closest(ignored)) continue;
      window.__lastChange = performance.now();
      return;
    }
  });
  window.__watch.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def watch_changes(page: Any) -> float:
    """Start recording changes to the page (once per page load); returns the page's clock now (ms)."""
    page.evaluate(_WATCH)
    return float(page.evaluate("performance.now()"))


def wait_settled(page: Any, quiet_ms: int = 1000, timeout_ms: int = WAIT_MS) -> float:
    """Until no script run is in progress and the page has not changed for ``quiet_ms``: what a person
    waits for. Returns the page's clock (ms) at its last change, so that a caller can time an action
    from its own start to the moment the page stopped changing (the quiet period itself not counted).
    Plots must also have finished drawing."""
    watch_changes(page)
    page.wait_for_function(
        """ms => !document.querySelector('[data-testid=stStatusWidget]')
                && [...document.querySelectorAll('.js-plotly-plot')].every(p => p._fullLayout && !p._transitioning)
                && performance.now() - window.__lastChange >= ms""",
        arg=quiet_ms,
        timeout=timeout_ms,
        polling=50,
    )
    return float(page.evaluate("window.__lastChange"))
