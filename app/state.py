"""The explorer's state: one query, its history, and the view settings, mirrored in the URL.

Every way of choosing a query (a table row, Random, an id, a click on the 2-D layout, a neighbour in
the table, the overlay or a map, an item of a selection gallery, the user's own query) goes through
``set_query``, called from the widget's callback, so it changes the query exactly once; nothing else
changes it. Widgets whose selection would otherwise linger are keyed by ``widget_key`` and get a fresh
key whenever the query changes. The bundle, model, k, neighbour filters, table filters and the query
live in ``st.query_params``, so a view can be reloaded or sent to a colleague; ``back`` returns to the
previous query.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from trajemb.bundle import Bundle
from trajemb.errors import TrajembError

QUERY = "query_row"
HISTORY = "query_history"
VERSION = "query_version"
NOTICE = "query_notice"
BUNDLE = "bundle"
MODEL = "model"
K = "k"
TYPES = "neighbor_types"
ONE_PER_TRACK = "one_per_track"
EXCLUDE_SCENARIO = "exclude_scenario"
EXCLUDE_TRACK = "exclude_track"
FILTERS = ("direction", "object_type", "city", "speed_bin", "source")
SAME_TYPE = "same as the query"
ANY_TYPE = "any type"
MAX_HISTORY = 50

#: URL parameter -> session key, for the plain settings.
_URL_KEYS = {
    "bundle": BUNDLE,
    "model": MODEL,
    "k": K,
    "types": TYPES,
    "one": ONE_PER_TRACK,
    "scen": EXCLUDE_SCENARIO,
    "track": EXCLUDE_TRACK,
    "a": "model-a",
    "b": "model-b",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_BOOLS = {ONE_PER_TRACK, EXCLUDE_SCENARIO, EXCLUDE_TRACK}
_DEFAULTS: dict[str, Any] = {
    K: 6,
    TYPES: SAME_TYPE,
    ONE_PER_TRACK: True,
    EXCLUDE_SCENARIO: False,
    EXCLUDE_TRACK: True,
    "pick-mode": "Filter and pick",
    "query-mode": "Type points",
    "clusters": 8,
    "color-by": "direction",
    "show-prototypes": False,
}


#: Widget keys whose values must outlive the pages that do not draw them.
PERSISTENT = (
    BUNDLE,
    MODEL,
    K,
    TYPES,
    ONE_PER_TRACK,
    EXCLUDE_SCENARIO,
    EXCLUDE_TRACK,
    "model-a",
    "model-b",
    "color-by",
    "clusters",
    "pick-mode",
    "query-mode",
    "show-prototypes",
    "points",
    "own-upload",
    *(f"filter-{name}" for name in FILTERS),
)


def init_session() -> None:
    """Read the URL into the session once per browser session; keep the settings alive on every run.

    Streamlit forgets a widget's value when a run does not draw the widget (a page without the k slider,
    a run stopped by an error); writing each value back before any widget is drawn keeps it.
    """
    for key in PERSISTENT:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
        elif key in _DEFAULTS:
            st.session_state[key] = _DEFAULTS[key]
    if st.session_state.get("_url_read"):
        return
    st.session_state["_url_read"] = True
    params = st.query_params
    for name, key in _URL_KEYS.items():
        if name not in params:
            st.session_state.setdefault(key, _DEFAULTS.get(key))
            continue
        value: Any = params[name]
        if key in _BOOLS:
            word = str(value).strip().lower()
            if word not in _TRUE + _FALSE:  # neither yes nor no: keep the default, never flip it
                st.session_state.setdefault(key, _DEFAULTS.get(key))
                continue
            value = word in _TRUE
        elif key == K:
            try:
                value = min(20, max(1, int(value)))
            except ValueError:
                value = _DEFAULTS[K]
        st.session_state[key] = value
    for name in FILTERS:
        if name in params:
            st.session_state[f"filter-{name}"] = [v for v in params.get_all(name) if v]
    st.session_state["_url_query"] = params.get("q")
    st.session_state.setdefault(VERSION, 0)
    st.session_state.setdefault(HISTORY, [])


def sync_url(bundle: Bundle | None) -> None:
    """Write the current settings and query into the URL (only what differs from the defaults)."""
    wanted: dict[str, Any] = {}
    for name, key in _URL_KEYS.items():
        value = st.session_state.get(key)
        if value is None or value == "" or value == _DEFAULTS.get(key):
            continue
        wanted[name] = ("1" if value else "0") if key in _BOOLS else str(value)
    for name in FILTERS:
        picked = st.session_state.get(f"filter-{name}") or []
        if picked:
            wanted[name] = [str(v) for v in picked]
    if bundle is not None and st.session_state.get(QUERY) is not None:
        wanted["q"] = bundle.strings("window_id", [int(st.session_state[QUERY])])[0]
    current = {
        k: (st.query_params.get_all(k) if isinstance(wanted.get(k), list) else st.query_params.get(k))
        for k in st.query_params
    }
    if current != wanted:
        st.query_params.from_dict(wanted)


def ensure_query(bundle: Bundle, default_row: int) -> int:
    """The current query row: from the URL on the first run, else the session's, else ``default_row``."""
    url_query = st.session_state.pop("_url_query", None)
    if url_query:
        try:
            st.session_state[QUERY] = bundle.find_row(url_query)
        except TrajembError as exc:
            st.session_state[NOTICE] = f"The query in the link is not in this bundle: {exc}"
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
    """A new bundle: forget the query and its history (rows mean other windows there)."""
    st.session_state[QUERY] = None
    st.session_state[HISTORY] = []
    st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1
    for name in FILTERS:
        st.session_state.pop(f"filter-{name}", None)
