"""The explorer's state: one query, its history, and the settings, mirrored in the URL.

Every way of choosing a query (a table row, Random, an id, a click on the 2-D layout, a neighbour in
the table, the overlay or a map, an item of a selection gallery, the user's own query) goes through
``set_query``, called from the widget's callback, so it changes the query exactly once; nothing else
changes it. Widgets whose selection would otherwise linger are keyed by ``widget_key`` and get a fresh
key whenever the query changes.

**Settings live in one plain session-state dict, never in widget state.** Streamlit drops the value of
a widget that a run does not draw; a run of a fragment (the background completion's status, every few
seconds) moves every session value onto the widget it belongs to and then drops those of widgets the
page does not draw (the model, k, filters and own-query inputs, drawn on other pages), whatever was
written back at the start of full runs. So a widget only shows a setting: ``bind`` sets the widget's
value from the setting before it is drawn and copies it back when the person changes it.

**The URL**: the bundle, model, k, neighbour filters, table filters and the query (``url_params``) are
written into it after every run (only what differs from the defaults; the browser adds one history
entry per change), and read from it on the session's first run and whenever the browser's Back or
Forward brought back an earlier address (``history_navigation``): then the page, settings and query of
that address are restored, and going back to the previous query counts as the in-app Back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.forecast import ForecastConfig
from trajemb.core.errors import TrajembError
from trajemb.serving.explore import LABELS

QUERY = "query_row"
HISTORY = "query_history"
VERSION = "query_version"
NOTICE = "query_notice"
SETTINGS = "_settings"
DEFAULT_ROW = "_default_row"
BUNDLE = "bundle"
MODEL = "model"
K = "k"
TYPES = "neighbor_types"
ONE_PER_TRACK = "one_per_track"
EXCLUDE_SCENARIO = "exclude_scenario"
EXCLUDE_TRACK = "exclude_track"
COLLAPSE = "collapse_duplicates"
DUPLICATE_EPS = "duplicate_eps"
DEFAULT_EPS = 0.01  # ``trajemb mine duplicates --eps``'s default
FILTERS = LABELS  # the label columns a person filters by (those a bundle has are shown)
SAME_TYPE = "same as the query"
ANY_TYPE = "any type"
MAX_HISTORY = 50
MAX_K = 20
EPS_BOUNDS = (1e-6, 10.0)  # the Duplicates page's threshold input
SPEED_BOUNDS = (0.0, 70.0)  # the Sketch page's speed input (m/s)
#: The Forecast page's query: the current window of the bundle, or a history of one's own.
FORECAST_SOURCES = ("A window of the bundle", "Your own history", "The path drawn on Sketch")
_FORECAST = ForecastConfig()  # the library's defaults


@dataclass(frozen=True)
class Setting:
    """A setting: its default, and its URL parameter (None: not in the URL)."""

    default: Any
    url: str | None = None
    kind: str = "str"  # "str", "int", "float" (positive), "bool" or "list"
    #: A "float"'s range, its widget's (min_value, max_value): a URL value outside it is the default, as an
    #: unreadable one is (the widget would show its minimum while other pages used the URL's number).
    bounds: tuple[float, float] = (0.0, math.inf)


SPECS: dict[str, Setting] = {
    BUNDLE: Setting("", "bundle"),
    MODEL: Setting(None, "model"),
    K: Setting(6, "k", "int"),
    TYPES: Setting(SAME_TYPE, "types"),
    ONE_PER_TRACK: Setting(True, "one", "bool"),
    EXCLUDE_SCENARIO: Setting(False, "scen", "bool"),
    EXCLUDE_TRACK: Setting(True, "track", "bool"),
    COLLAPSE: Setting(False, "collapse", "bool"),
    DUPLICATE_EPS: Setting(DEFAULT_EPS, "eps", "float", EPS_BOUNDS),
    "model-a": Setting(None, "a"),
    "model-b": Setting(None, "b"),
    **{f"filter-{name}": Setting((), name, "list") for name in FILTERS},
    "pick-mode": Setting("Filter and pick"),
    "pick-sort": Setting("window id"),
    "pick-descending": Setting(False, kind="bool"),
    "pick-page": Setting(1, kind="int"),
    "query-mode": Setting("Type points"),
    "query-type": Setting(None),
    "points": Setting(None),
    "duration-s": Setting(0.0),
    "clusters": Setting(8, kind="int"),
    "color-by": Setting("direction"),
    "show-prototypes": Setting(False, kind="bool"),
    "playback": Setting(False, kind="bool"),
    "playback-s": Setting(0.0),
    "large-map": Setting("none"),
    # Issue 18: the Forecast page (history model, K, alignment, rerank shortlist; defaults: the library's).
    "forecast-query": Setting(FORECAST_SOURCES[0]),
    "forecast-model": Setting(None, "fmodel"),
    "forecast-k": Setting(_FORECAST.k, "fk", "int"),
    "alignment": Setting(_FORECAST.alignment, "align"),
    "rerank": Setting(str(_FORECAST.rerank), "rerank"),
    "rare-one": Setting(True, "rone", "bool"),
    "rare-top": Setting(100),
    "dup-group": Setting(1),
    "id-filter": Setting(False),
    "sketch": Setting("", "sketch"),
    "sketch-frame": Setting("agent", "frame"),
    "sketch-speed": Setting(0.0, "speed", "float", SPEED_BOUNDS),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _settings() -> dict[str, Any]:
    if SETTINGS not in st.session_state:
        st.session_state[SETTINGS] = {name: spec.default for name, spec in SPECS.items()}
    settings: dict[str, Any] = st.session_state[SETTINGS]
    return settings


def get(name: str) -> Any:
    """The current value of setting ``name``."""
    return _settings().get(name, SPECS[name].default)


def put(name: str, value: Any) -> None:
    _settings()[name] = value


def _copy_back(name: str, then: Callable[[], None] | None) -> None:
    put(name, st.session_state.get(name))
    if then is not None:
        then()


def bind(name: str, on_change: Callable[[], None] | None = None) -> dict[str, Any]:
    """Keyword arguments for the widget that shows setting ``name`` (its key is the setting's name):
    the widget takes the setting's value before it is drawn, and a change made in it is copied back
    (then ``on_change`` runs)."""
    value = get(name)
    st.session_state[name] = list(value) if SPECS[name].kind == "list" else value
    return {"key": name, "on_change": _copy_back, "args": (name, on_change)}


# -- the URL --------------------------------------------------------------------------------------------
def history_navigation() -> bool:
    """Whether this run was started by the browser's Back or Forward (the address it shows is one this
    session wrote earlier). Streamlit tells only its own script-run context."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return bool(getattr(ctx, "is_history_navigation", False))
    except Exception:  # another Streamlit: Back then keeps the session's state, as before
        return False


def _parse(name: str, params: Any) -> Any:
    """Setting ``name`` from the URL parameters; its default where absent or unreadable."""
    spec = SPECS[name]
    assert spec.url is not None
    if spec.url not in params:
        return spec.default
    if spec.kind == "list":
        return tuple(v for v in params.get_all(spec.url) if v)
    raw = str(params[spec.url])
    if spec.kind == "bool":
        word = raw.strip().lower()
        return word in _TRUE if word in _TRUE + _FALSE else spec.default  # neither yes nor no: default
    if spec.kind == "float":
        try:
            value = float(raw)
        except ValueError:
            return spec.default
        low, high = spec.bounds
        return value if math.isfinite(value) and low <= value <= high else spec.default
    if spec.kind == "int":
        try:
            return min(MAX_K, max(1, int(raw)))
        except ValueError:
            return spec.default
    return raw


def read_url(launch_bundle: str) -> None:
    """The settings and query of the address the browser shows (absent parameters: the defaults)."""
    params = st.query_params
    before = get(BUNDLE)
    for name, spec in SPECS.items():
        if spec.url is not None:
            put(name, _parse(name, params))
    if not get(BUNDLE):
        put(BUNDLE, launch_bundle)
    if before != get(BUNDLE) and st.session_state.get(QUERY) is not None:
        reset_for_bundle()
    st.session_state["_url_query"] = params.get("q") or ""  # "" = the bundle's default query


def init_session(launch_bundle: str = "") -> None:
    """Read the URL on the session's first run and after the browser's Back or Forward."""
    st.session_state.setdefault(VERSION, 0)
    st.session_state.setdefault(HISTORY, [])
    if st.session_state.get("_url_read") and not history_navigation():
        return
    st.session_state["_url_read"] = True
    st.session_state["_launch_bundle"] = launch_bundle
    read_url(launch_bundle)


def url_params(bundle: Bundle | None) -> dict[str, str | list[str]]:
    """The URL parameters of the current settings and query: only what differs from the defaults (the
    launch bundle, the bundle's default query)."""
    wanted: dict[str, str | list[str]] = {}
    defaults = {BUNDLE: st.session_state.get("_launch_bundle", "")}
    if bundle is not None:
        names = bundle.model_names
        defaults.update({MODEL: names[0], "model-a": names[0], "model-b": names[len(names) // 2]})
        histories = [m for m in names if bundle.model_entry(m).get("history_steps") is not None]
        defaults["forecast-model"] = histories[0] if histories else None  # read, not checked: never raises
    for name, spec in SPECS.items():
        value = get(name)
        if spec.url is None or value is None or value == "" or value == spec.default:
            continue
        if value == defaults.get(name):
            continue
        if spec.kind == "list":
            if value:
                wanted[spec.url] = [str(v) for v in value]
        elif spec.kind == "bool":
            wanted[spec.url] = "1" if value else "0"
        else:
            wanted[spec.url] = str(value)
    row = st.session_state.get(QUERY)
    pending = st.session_state.get("_url_query")
    if pending:  # an address read on a page without a query: keep its query for the next one
        wanted["q"] = str(pending)
    elif pending is None and bundle is not None and row not in (None, st.session_state.get(DEFAULT_ROW)):
        wanted["q"] = bundle.strings("window_id", [int(row)])[0]
    shown = st.query_params
    if bundle is None and pending is None and shown.get("bundle") == wanted.get("bundle"):
        # The bundle was refused (the page says why): what only it can name (the query as a window id,
        # models when at their defaults) stays as the address has it, so that a reload once the bundle
        # is mended shows the same query.
        for name in ("q", "model", "a", "b", "fmodel"):
            if name in shown:
                wanted[name] = shown[name]
            else:
                wanted.pop(name, None)
    return wanted


def sync_url(bundle: Bundle | None) -> None:
    """Write the current settings and query into the URL where they differ from what it shows."""
    wanted = url_params(bundle)
    current = {
        k: (st.query_params.get_all(k) if isinstance(wanted.get(k), list) else st.query_params.get(k))
        for k in st.query_params
    }
    if current != wanted:
        st.query_params.from_dict(wanted)


# -- the query ------------------------------------------------------------------------------------------
def ensure_query(bundle: Bundle, default_row: int) -> int:
    """The current query row: from the URL when it was just read (going back to the previous query
    is the in-app Back), else the session's, else ``default_row``."""
    st.session_state[DEFAULT_ROW] = int(default_row)
    url_query = st.session_state.pop("_url_query", None)
    if url_query is not None:
        try:
            wanted = bundle.find_row(url_query) if url_query else int(default_row)
        except TrajembError as exc:
            st.session_state[NOTICE] = ("The query in the link is not in this bundle.", str(exc))
        else:
            history = st.session_state.get(HISTORY) or []
            if history and history[-1] == wanted:
                back()
            else:
                set_query(wanted)
    row = st.session_state.get(QUERY)
    if row is None or not 0 <= int(row) < bundle.num_windows:
        st.session_state[QUERY] = int(default_row)
        st.session_state[HISTORY] = []
    return int(st.session_state[QUERY])


def set_query(row: int) -> None:
    """Make ``row`` the query (callbacks call this once per choice); the previous one goes to history."""
    current = st.session_state.get(QUERY)
    if current is not None and int(current) == int(row):
        return
    if current is not None:
        history = st.session_state.setdefault(HISTORY, [])
        history.append(int(current))
        del history[:-MAX_HISTORY]
    st.session_state[QUERY] = int(row)
    st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1


def back() -> None:
    history = st.session_state.get(HISTORY) or []
    if history:
        st.session_state[QUERY] = history.pop()
        st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1


def table_key(name: str) -> str:
    """A key for a table whose rows do not change with the query (the pick table): kept while nothing is
    selected in it, so that a new query does not rebuild it, and renewed once a selection made in it
    is out of date (the query has changed since), so that no stale row stays ticked."""
    epoch_key, picked_key = f"_{name}-epoch", f"_{name}-picked-at"
    picked_at = st.session_state.get(picked_key)
    if picked_at is not None and picked_at != st.session_state.get(VERSION, 0):
        st.session_state[epoch_key] = st.session_state.get(epoch_key, 0) + 1
        st.session_state[picked_key] = None
    return f"{name}-{st.session_state.get(epoch_key, 0)}"


def table_picked(name: str) -> None:
    """Record that the query was just chosen in table ``name`` (see ``table_key``)."""
    st.session_state[f"_{name}-picked-at"] = st.session_state.get(VERSION, 0)


def widget_key(name: str) -> str:
    """A widget key that changes with the query, so a lingering selection never re-applies itself."""
    return f"{name}-{st.session_state.get(VERSION, 0)}"


def reset_for_bundle() -> None:
    """A new bundle: forget the query and its history (rows mean other windows there) and the filters."""
    st.session_state[QUERY] = None
    st.session_state[HISTORY] = []
    st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1
    for name in FILTERS:
        put(f"filter-{name}", ())


def sketch_points() -> np.ndarray:
    """(P, 2) points of the drawing in the ``sketch`` setting (``x,y;x,y;...``, as the Sketch page
    writes it); a malformed text gives no points, which ``trajemb.analysis.sketch`` refuses in one line."""
    text = str(get("sketch") or "")
    try:
        return np.array([[float(v) for v in pair.split(",")] for pair in text.split(";") if pair], np.float64)
    except ValueError:
        return np.zeros((0, 2))
