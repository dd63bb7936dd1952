"""Shared widgets of the explorer pages: bundle and model choice, neighbour controls, the query bar, the
neighbour views. Functions return plain values; the library computes, this module only displays.
Text that comes from data is shown as plain text (``st.text``, table cells, escaped plot labels).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.export import results_bytes
from trajemb.core.errors import TrajembError
from trajemb.data.labels import direction_rules
from trajemb.serving.explore import (
    NeighborOptions,
    Neighbors,
    id_columns,
    neighbor_records,
    neighbors_frame,
    present_labels,
)
from trajemb.serving.viz import NEIGHBOUR_RING_COLOR, QUERY_COLOR, MapPanel, agent_frame_figure, rank_colors

import cache
import companion
import state

#: Session key of the bundle the current run opened (for the URL).
OPENED = "_opened_bundle"
#: Session key of the URL parameters the current run wrote (the page links carry them).
URL_PARAMS = "_url_params"
#: Session key: download key -> (file name, the function that makes its bytes) of the current run's
#: download buttons (the buttons make their files only when clicked; tests call the same functions).
DOWNLOADS = "_downloads"
#: ``layout_plot``'s ``on_select`` that makes a clicked point the query.
PICK = object()
#: Download formats: (format, file suffix, MIME type).
DOWNLOAD_FORMATS = (("csv", "csv", "text/csv"), ("parquet", "parquet", "application/vnd.apache.parquet"))


def md(text: str) -> str:
    """``text`` for a Markdown element (captions, headings) shown as typed: every ASCII punctuation mark
    backslash-escaped (no links, emphasis, code or math), and a ``:`` directly followed by a letter,
    digit or ``/+-_`` broken by a zero-width space (an escaped colon still starts an emoji or icon
    shortcode). Errors and notices do not come here: ``alert`` shows their text as plain text."""
    escaped = re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)
    return re.sub(r"(\\:)(?=\\?[\w/+-])", "\\1\u200b", escaped)


def alert(summary: str, detail: object = "", kind: Literal["error", "warning"] = "error") -> None:
    """An expected failure (or a notice): ``summary``, in our own words and free of data, as the error
    (Markdown), and under it ``detail``, the error's own text, which may quote data (a line of a file,
    an id, a path), as plain text (``st.text``: neither Markdown nor HTML, nothing escaped or inserted,
    so a copy of it is the text itself)."""
    (st.error if kind == "error" else st.warning)(summary)
    if str(detail):
        st.text(str(detail))


def selected_rows(event: Any) -> list[int]:
    """Table rows carried as customdata by the points of a plotly selection."""
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    points = (
        selection.get("points") if isinstance(selection, dict) else getattr(selection, "points", None)
    ) or []
    rows = []
    for p in points:
        data = p.get("customdata")
        if isinstance(data, list):
            data = data[0] if data else None
        if data is not None:
            rows.append(int(data))
    return rows


def pick_from_plot(key: str) -> None:
    """Callback of a clickable plot: its first selected point becomes the query."""
    rows = selected_rows(st.session_state.get(key))
    if rows:
        state.set_query(rows[0])


# -- sidebar ------------------------------------------------------------------------------------------
def bundle_choice() -> Bundle | None:
    """The bundle chosen in the sidebar, opened; None (with the reason shown) when it cannot be.

    Only what the explorer was given can be opened (``cache.allowed_bundles``): a bundle named in a link
    that is not among them is not opened, and the notice does not say whether such a path exists.
    """
    launch = cache.launch_options()
    allowed = cache.allowed_bundles(launch)
    state.init_session(next(iter(allowed), ""))
    asked = state.get(state.BUNDLE)
    if asked and asked not in allowed:
        by_path = {path: name for name, path in allowed.items()}
        if asked in by_path:  # a link written before bundles were named
            state.put(state.BUNDLE, by_path[asked])
        else:
            st.warning(
                "The bundle named in the link is not served here; showing the one this explorer was given."
            )
            state.put(state.BUNDLE, next(iter(allowed), ""))
    if launch.roots and not allowed:
        st.error("No bundles under the served folders.")
        return None
    path: str | None = None
    if allowed:
        names = list(allowed)
        if state.get(state.BUNDLE) not in allowed:
            state.put(state.BUNDLE, names[0])
        if len(names) > 1 or launch.roots:
            st.sidebar.selectbox("Bundle", names, **state.bind(state.BUNDLE, state.reset_for_bundle))
        path = allowed[state.get(state.BUNDLE)]
    try:
        if path is None:
            path = cache.default_bundle_path()
        bundle = cache.open_bundle(path)
        st.session_state[OPENED] = bundle
        return bundle
    except TrajembError as exc:
        alert("Cannot open the bundle.", exc)
    except MemoryError:
        st.error("Cannot open the bundle: not enough memory for it on this machine.")
    except Exception as exc:
        alert("Cannot open the bundle.", f"{path}: {type(exc).__name__}: {exc}")
    return None


def model_choice(bundle: Bundle, label: str = "Model", key: str = state.MODEL, index: int = 0) -> str:
    names = bundle.model_names
    if state.get(key) not in names:
        state.put(key, names[min(index, len(names) - 1)])
    return str(st.sidebar.selectbox(label, names, **state.bind(key)))


def neighbor_controls(bundle: Bundle) -> None:
    """k, object types, one window per track, the query's own scenario and track."""
    st.sidebar.slider("Neighbours k", 1, state.MAX_K, **state.bind(state.K))
    types = [state.SAME_TYPE, state.ANY_TYPE, *cache.label_values(*cache.stamp_of(bundle), "object_type")[1]]
    if state.get(state.TYPES) not in types:
        state.put(state.TYPES, state.SAME_TYPE)
    st.sidebar.selectbox("Neighbour object types", types, **state.bind(state.TYPES))
    st.sidebar.checkbox(
        "One window per track",
        help="Windows of one track overlap and look alike: keep only the nearest of each.",
        **state.bind(state.ONE_PER_TRACK),
    )
    st.sidebar.checkbox("Exclude the query's own track", **state.bind(state.EXCLUDE_TRACK))
    st.sidebar.checkbox("Exclude the query's scenario", **state.bind(state.EXCLUDE_SCENARIO))
    eps = float(state.get(state.DUPLICATE_EPS)) or state.DEFAULT_EPS
    st.sidebar.checkbox(
        "Collapse near-duplicates",
        help=f"A window closer than {eps:g} (embedding distance; the threshold of the Duplicates page) to "
        "a nearer neighbour is left out: near-copies answer once.",
        **state.bind(state.COLLAPSE),
    )


def neighbor_options(bundle: Bundle, row: int | None, query_type: str | None = None) -> NeighborOptions:
    choice = state.get(state.TYPES)
    if choice == state.SAME_TYPE:
        own = query_type if row is None else bundle.strings("object_type", [row])[0]
        types: tuple[str, ...] = (own,) if own else ()
    elif choice == state.ANY_TYPE:
        types = ()
    else:
        types = (str(choice),)
    return NeighborOptions(
        k=int(state.get(state.K)),
        exclude_same_track=bool(state.get(state.EXCLUDE_TRACK)),
        one_per_track=bool(state.get(state.ONE_PER_TRACK)),
        exclude_same_scenario=bool(state.get(state.EXCLUDE_SCENARIO)),
        object_types=types,
        collapse_duplicates_eps=(float(state.get(state.DUPLICATE_EPS)) or state.DEFAULT_EPS)
        if state.get(state.COLLAPSE)
        else None,
    )


# -- the query -----------------------------------------------------------------------------------------
def default_query(bundle: Bundle) -> int:
    """A seeded turn (a more telling first query than a straight line), else any window (chosen once
    per bundle version: every rerun asks, and at a million windows the choice takes 5 ms)."""
    return cache.default_query(*cache.stamp_of(bundle))


#: Session key of the list of window ids loaded on Explore: (bundle folder, file name, rows, key).
ID_LIST = "_id_list"


def id_list(bundle: Bundle) -> tuple[str, np.ndarray] | None:
    """The file name and rows of the id list loaded for this bundle, if any."""
    loaded = st.session_state.get(ID_LIST)
    if loaded is None or loaded[0] != str(bundle.root):
        return None
    return loaded[1], loaded[2]


def current_filters() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The label filters, and the loaded id list where it filters too (``cache.ID_FILTER``)."""
    filters = tuple((name, tuple(state.get(f"filter-{name}") or ())) for name in state.FILTERS)
    loaded = st.session_state.get(ID_LIST)
    opened = st.session_state.get(OPENED)
    if loaded is not None and state.get("id-filter") and opened is not None and loaded[0] == str(opened.root):
        if cache.id_list_rows(loaded[3]) is None:  # this process forgot it (many lists since): again
            cache.register_id_list(loaded[2])
        filters += ((cache.ID_FILTER, (loaded[3],)),)
    return filters


def label_filters(bundle: Bundle) -> None:
    """A multiselect per label column the bundle has; they narrow the pick table, Random, the 2-D
    layouts and their selections (the same filters on every page)."""
    path, stamp = cache.stamp_of(bundle)
    names = present_labels(bundle, state.FILTERS)
    for col, name in zip(st.columns(len(names)), names, strict=True):
        options = cache.label_values(path, stamp, name)[1]
        key = f"filter-{name}"
        state.put(key, tuple(v for v in state.get(key) if v in options))
        col.multiselect(name.replace("_", " "), options, **state.bind(key))


def random_query(bundle: Bundle) -> None:
    """Callback: a random window among those passing the table filters."""
    mask = cache.filter_mask(*cache.stamp_of(bundle), current_filters())
    rows = np.flatnonzero(mask) if mask is not None else None
    if rows is not None and not len(rows):
        st.session_state[state.NOTICE] = "No window passes the filters: nothing to pick at random."
        return
    rng = np.random.default_rng()
    state.set_query(int(rng.choice(rows)) if rows is not None else int(rng.integers(bundle.num_windows)))


def describe(bundle: Bundle, row: int) -> str:
    """One line about a window (plain text)."""

    def get(name: str) -> str:
        return bundle.strings(name, [row])[0]

    speed = float(bundle.numbers("mean_speed_mps")[row])
    return (
        f"{get('window_id')}  ·  {get('object_type')}  ·  {get('direction')}  ·  {speed:.1f} m/s  ·  "
        f"{get('city')}  ·  {get('source')}"
    )


def query_bar(bundle: Bundle, neighbours_link: bool = False) -> int:
    """Back and Random, and the current query described (``neighbours_link``: with a link to its
    neighbours on Explore, and a note when a choice on this page has just changed it); returns the
    query row."""
    row = state.ensure_query(bundle, default_query(bundle))
    notice = st.session_state.pop(state.NOTICE, None)
    if notice:  # (summary, detail) or our own words alone
        summary, detail = notice if isinstance(notice, tuple) else (str(notice), "")
        alert(summary, detail, "warning")
    if neighbours_link:
        seen = st.session_state.get("_bar-version")
        st.session_state["_bar-version"] = st.session_state.get(state.VERSION)
        if seen is not None and seen != st.session_state.get(state.VERSION):
            st.toast(md("New query: " + bundle.strings("window_id", [row])[0]), icon=":material/my_location:")
    c1, c2, c3 = st.columns([1, 1, 8], vertical_alignment="center")
    c1.button(
        "Back",
        key="back",
        on_click=state.back,
        disabled=not st.session_state.get(state.HISTORY),
        help="Return to the previous query",
        width="stretch",
    )
    c2.button(
        "Random",
        key="random",
        on_click=random_query,
        args=(bundle,),
        width="stretch",
        help="A random window among those passing the table filters",
    )
    c3.text("Query: " + describe(bundle, row))
    if neighbours_link:
        st.page_link(
            "page_explore.py",
            label="Its neighbours on Explore",
            icon=":material/travel_explore:",
            query_params=state.url_params(bundle),
        )
    return row


# -- downloads ---------------------------------------------------------------------------------------
def file_stem(*parts: object) -> str:
    """A safe, meaningful file name stem from ``parts`` (ids and settings): ``trajemb-`` then the parts
    joined by ``-``, anything but letters, digits, ``.``, ``_`` and ``-`` turned into ``_``, at most 120
    characters."""
    words = [re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("._-") for p in parts]
    return ("trajemb-" + "-".join(w for w in words if w))[:120]


def downloads(make_frame: Callable[[], pd.DataFrame], stem: str, key: str) -> None:
    """CSV and parquet download buttons of a list: the bytes ``trajemb.analysis.export.results_bytes`` makes of
    the ``trajemb.analysis.export`` table ``make_frame`` returns (what ``--out`` writes), made only when the
    button is clicked (a cluster can hold a hundred thousand windows)."""
    made = st.session_state.setdefault(DOWNLOADS, {})
    columns = st.columns([1, 1, 6], vertical_alignment="center")
    for col, (fmt, suffix, mime) in zip(columns, DOWNLOAD_FORMATS, strict=False):
        name = f"{stem}.{suffix}"

        def data(fmt: str = fmt) -> bytes:
            return results_bytes(make_frame(), fmt)

        made[f"{key}-{fmt}"] = (name, data)
        col.download_button(
            fmt.upper() if fmt == "csv" else "Parquet",
            data,
            file_name=name,
            mime=mime,
            key=f"{key}-{fmt}",
            icon=":material/download:",
            on_click="ignore",
            help=f"Download this list as {name}: AV2 ids, labels, distance, bundle and model",
            width="stretch",
        )


# -- lists of windows -----------------------------------------------------------------------------------
#: How the columns of every list of windows are drawn (widths in pixels; help on hover of the header).
COLUMNS: dict[str, Any] = {
    "rank": st.column_config.NumberColumn("rank", width=42, format="%d"),
    "shared": st.column_config.TextColumn("shared", width=52, help="Also among the other model's neighbours"),
    "distance": st.column_config.NumberColumn(
        "distance",
        width=68,
        format="%.3f",
        help="Euclidean distance between the embeddings of the query and the neighbour (what ranks them)",
    ),
    "gap": st.column_config.NumberColumn(
        "gap", width=56, format="%.3f", help="How much farther in the embedding than the rank before"
    ),
    "ADE (m)": st.column_config.NumberColumn(
        "ADE (m)",
        width=62,
        format="%.2f",
        help="Average distance to the query over the window (agent frames)",
    ),
    "FDE (m)": st.column_config.NumberColumn(
        "FDE (m)", width=62, format="%.2f", help="Distance between the end points (agent frames)"
    ),
    "speed (m/s)": st.column_config.NumberColumn("speed (m/s)", width=80, format="%.1f"),
    "direction": st.column_config.TextColumn("direction", width=120),
    "true manoeuvre": st.column_config.TextColumn(
        "true manoeuvre", width=120, help="What the synthetic generator built the road user to do"
    ),
    "type": st.column_config.TextColumn("type", width=85),
    "speed bin": st.column_config.TextColumn("speed bin", width=70),
    "city": st.column_config.TextColumn("city", width=90),
    "source": st.column_config.TextColumn("source", width=85),
    "scenario": st.column_config.TextColumn(
        "scenario", width=92, help="The first characters of the scenario id (in full in the window id)"
    ),
    "track": st.column_config.TextColumn(
        "track", width=82, help="Track id (long ids cut; in full in the window id)"
    ),
    "start": st.column_config.NumberColumn(
        "start", width=52, format="%d", help="Timestep (10 Hz) of the window's first point in its scenario"
    ),
    "uniqueness": st.column_config.NumberColumn(
        "uniqueness",
        width=80,
        format="%.3f",
        help="Embedding distance to the k-th nearest window of another track: the larger, the rarer",
    ),
    "group": st.column_config.NumberColumn("group", width=52, format="%d", help="1 = the largest group"),
    "window id": st.column_config.TextColumn(
        "window id", width="medium", help="source/scenario/track/start: paste it into By id to come back"
    ),
}
#: Label columns as the tables name them.
LABEL_TITLES = {
    "direction": "direction",
    "true_manoeuvre": "true manoeuvre",
    "object_type": "type",
    "speed_bin": "speed bin",
    "city": "city",
    "source": "source",
}


def label_table_columns(bundle: Bundle, rows: list[int], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Label columns of ``rows`` for a table (those of ``names`` the bundle has)."""
    return {LABEL_TITLES[n]: bundle.strings(n, rows) for n in present_labels(bundle, names)}


def _pick_from_table(key: str, rows: list[int], table: str | None = None) -> None:
    selection = st.session_state.get(key)
    picked = selection.selection.rows if selection is not None else []
    if picked:
        state.set_query(rows[picked[0]])
        if table is not None:
            state.table_picked(table)


def results_table(
    bundle: Bundle,
    rows: list[int],
    columns: dict[str, list[Any]],
    key: str,
    height: int | Literal["auto"] = "auto",
    table: str | None = None,
) -> None:
    """Every list of windows the explorer shows: rank (and shared) where given, the ids as scenario,
    track and start, then ``columns`` (one value per row of ``rows``), then the full window id;
    selecting a row makes that window the query (``table``: a pick table keyed by ``state.table_key``).
    The one place that draws such a list, so that what is added here (an export, say) reaches every
    list."""
    ids = id_columns(bundle, rows)
    lead: dict[str, list[Any]] = {c: columns[c] for c in ("rank", "shared") if c in columns}
    rest = {c: v for c, v in columns.items() if c not in lead}
    # Which window first (rank, then scenario, track and start: visible in half-width tables too), then
    # what it is, then the full id.
    full_id = {"window id": ids.pop("window id")}
    data: dict[str, Any] = {**lead, **ids, **rest, **full_id}
    frame = pd.DataFrame(data)
    column_config: dict[str, Any] = {str(c): COLUMNS[c] for c in frame.columns if c in COLUMNS}
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config=column_config,
        key=key,
        on_select=lambda: _pick_from_table(key, rows, table),
        selection_mode="single-row",
        height=height,
        placeholder="\u2013",
    )


def neighbor_columns(bundle: Bundle, nb: Neighbors, shared: set[int] | None = None) -> dict[str, list[Any]]:
    """The neighbour table's columns before the ids: rank, (shared), distance and gap in the embedding,
    ADE, FDE, speed and labels."""
    records = neighbor_records(bundle, nb)
    columns: dict[str, list[Any]] = {"rank": [r["rank"] for r in records]}
    if shared is not None:
        columns["shared"] = ["yes" if r["row"] in shared else "" for r in records]
    columns.update(
        {
            "distance": [r["distance"] for r in records],
            "gap": [r["gap"] for r in records],
            "ADE (m)": [r["ade_m"] for r in records],
            "FDE (m)": [r["fde_m"] for r in records],
            "speed (m/s)": [r["speed_mps"] for r in records],
        }
    )
    columns.update(
        label_table_columns(bundle, nb.rows.tolist(), ("direction", "true_manoeuvre", "object_type"))
    )
    return columns


def neighbor_table(bundle: Bundle, nb: Neighbors, key: str, shared: set[int] | None = None) -> None:
    """The neighbour table; selecting a row makes that neighbour the query."""
    # Kept (updated in place) while nothing is selected in it: a new table per query was the last
    # thing on the page to finish drawing.
    results_table(
        bundle, nb.rows.tolist(), neighbor_columns(bundle, nb, shared), state.table_key(key), table=key
    )


#: Plotly's double-click window on the 2-D layout (its default is 500 ms): a click picks its point once
#: this long has passed without a second click (the companion waits it out, so that a double-click, which
#: shows the whole layout, never changes the query), so it is added to every pick's wait (issue 22: a
#: click on the layout at 1M settled in 1.06 s median with 500 ms, the goal being 1 s at p95).
DOUBLE_CLICK_MS = 300


def _zoom_key(key: str, model: str) -> str:
    """The companion's state (zoom, drag tool, pick) of the layout plot ``key`` of ``model``."""
    return f"{key}-zoom-{model}"


def layout_plot(
    bundle: Bundle,
    model: str,
    color_by: str,
    cluster_k: int,
    key: str,
    query_row: int | None,
    neighbor_rows: list[int],
    on_select: Any,
    selection_mode: Any,
    height: int,
    dragmode: str = "zoom",
    state_key: str | None = None,
) -> cache.LayoutView:
    """The 2-D layout of ``model`` at the zoom the person chose: zooming in redraws the view (finer
    image, every window pickable once few enough are in view), and hovering a point shows its id and a
    drawing of its trajectory (``companion``). ``on_select``: the plot's selection callback, or
    ``PICK`` to make a clicked point the query (once no double-click follows: the whole layout).
    ``dragmode``: the drag tool until one is chosen in the toolbar (then kept, under ``state_key``,
    default ``key``, also when the plot is drawn under a new ``key``)."""
    path, stamp = cache.stamp_of(bundle)
    zoom_key = _zoom_key(state_key or key, model)
    filters, zoom = current_filters(), companion.view_of(zoom_key)
    view = cache.layout_view(path, stamp, model, color_by, filters, cluster_k, zoom)
    images = tuple(
        (cache.image_url(png, f"{model}.{color_by}.{i}"), extent)
        for i, (png, extent) in enumerate(view.images)
    )
    pick = on_select is PICK  # the companion picks (clickmode "event"): Streamlit's selection is not used
    fig = cache.layout_figure(
        path,
        stamp,
        model,
        color_by,
        filters,
        cluster_k,
        zoom,
        images,
        height,
        companion.dragmode_of(zoom_key) or dragmode,
        "event" if pick else "event+select",
    )
    st.plotly_chart(
        fig,
        key=key,
        on_select="ignore" if pick else on_select,
        selection_mode=selection_mode,
        config={"displaylogo": False, "scrollZoom": True, "doubleClickDelay": DOUBLE_CLICK_MS},
    )
    # The query and its neighbours are drawn by the companion over the plot: the figure stays the
    # same from one query to the next, so the browser keeps the chart instead of drawing it anew.
    xy = bundle.projection(model)
    assert xy is not None
    marks = {
        "query": None if query_row is None else [float(v) for v in xy[query_row]],
        "neighbours": [[float(v) for v in xy[r]] for r in neighbor_rows],
        "ring": NEIGHBOUR_RING_COLOR,
    }

    def picked() -> None:
        row = companion.picked(zoom_key)
        if row is not None and 0 <= row < bundle.num_windows:
            state.set_query(row)

    companion.layout_companion(key, view.full, view.cards_json, zoom_key, marks, picked if pick else None)
    return view


def query_mark(bundle: Bundle, model: str, key: str, row: int | None) -> str:
    """How a caption names the query's mark on the layout plot whose companion state is ``key`` (the
    ``state_key`` or ``key`` of ``layout_plot``): the black cross, or, when the zoom leaves the query
    out, the arrow at the edge that points towards it."""
    view = companion.view_of(_zoom_key(key, model))
    xy = bundle.projection(model)
    if row is None or view is None or xy is None:
        return "The query is the black cross"
    x, y = (float(v) for v in xy[row])
    if min(view[:2]) <= x <= max(view[:2]) and min(view[2:]) <= y <= max(view[2:]):
        return "The query is the black cross"
    return "The query is outside this view: the black arrow on the edge points towards it"


def overlay(
    bundle: Bundle, nb: Neighbors, key: str, names: list[str] | None = None, height: int = 430
) -> None:
    """Query and neighbours in the agent frame; clicking a neighbour makes it the query."""
    xy = bundle.xy.rows(nb.rows) if len(nb) else np.zeros((0, bundle.num_steps, 2), np.float32)
    direction = bundle.strings("direction", nb.rows.tolist())
    # Past six neighbours the legend holds the ranks alone (the table has the labels).
    names = names or [f"#{i + 1}" + (f" {d}" if len(nb) <= 6 else "") for i, d in enumerate(direction)]
    fig = agent_frame_figure(
        nb.query_xy, list(xy), names, rank_colors(len(nb)), nb.rows.tolist(), height=height
    )
    wkey = key  # a stable key: a click selects a point once (the chart is drawn anew for each query)
    st.plotly_chart(
        fig,
        key=wkey,
        on_select=lambda: pick_from_plot(wkey),
        selection_mode="points",
        config={"displaylogo": False, "scrollZoom": True},
    )


def map_of(bundle: Bundle, map_key: str) -> Any:
    """The reduced map ``map_key`` of the bundle (cached), or None where it has none."""
    return cache.map_geometry(*cache.stamp_of(bundle), map_key)


def map_panels(
    bundle: Bundle, rows: list[int], titles: list[str], colors: list[str], pickable: list[bool]
) -> list[MapPanel]:
    """Each of ``rows`` on its own map with the other road users of its scenario during the same
    seconds (placed in time, for playback)."""
    return cache.map_panels(*cache.stamp_of(bundle), rows, titles, colors, pickable)


def draw_map_rows(
    bundle: Bundle,
    rows: list[int],
    titles: list[str],
    colors: list[str],
    pickable: list[bool],
    key: str,
    at_step: int | None = None,
    panel_height: int = 230,
) -> None:
    """``rows`` on their maps in one figure (``map_panels``: each with the other road users of its
    scenario), three or two to a row; a click on a pickable window makes it the query. The figure is
    built once per bundle version and arguments (``cache.map_figure``): going back to a page shows
    the same maps without building them again."""
    path, stamp = cache.stamp_of(bundle)
    columns = 3 if len(rows) > 4 else 2 if len(rows) > 1 else 1
    figure = cache.map_figure(
        path,
        stamp,
        tuple(rows),
        tuple(titles),
        tuple(colors),
        tuple(pickable),
        columns,
        panel_height,
        at_step,
    )
    st.plotly_chart(
        figure,
        key=key,
        on_select=lambda: pick_from_plot(key),
        selection_mode="points",
        config={"displaylogo": False, "scrollZoom": True},
    )


def map_grid(bundle: Bundle, nb: Neighbors, key: str, query_title: str = "query") -> None:
    """The query (when it is a window of the bundle) and every neighbour on its own map, each with the
    other road users of its scenario during the same seconds; clicking a neighbour makes it the query.
    A time slider plays every map through its window together; one map can be shown large."""
    rows = ([nb.query_row] if nb.query_row is not None else []) + nb.rows.tolist()
    if not rows:
        return
    direction = bundle.strings("direction", rows)
    kind = bundle.strings("object_type", rows)
    colors = rank_colors(len(nb))
    titles, panel_colors, pickable = [], [], []
    for i in range(len(rows)):
        is_query = nb.query_row is not None and i == 0
        rank = i if nb.query_row is not None else i + 1
        titles.append(
            f"{query_title}: {direction[i]}, {kind[i]}" if is_query else f"#{rank} {direction[i]}, {kind[i]}"
        )
        panel_colors.append(QUERY_COLOR if is_query else colors[rank - 1])
        pickable.append(not is_query)
    st.caption(
        "On their maps (city frame). Thin lines: the other road users of the scenario during the same "
        "seconds; circle = start, arrow = end. Click a neighbour to make it the query."
    )
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    seconds = (bundle.num_steps - 1) / 10
    at_step = None
    if c1.toggle(
        "Play through time", help="Every map at the same moment of its window", **state.bind("playback")
    ):
        t = c1.slider("Time in the window (s)", 0.0, seconds, step=0.1, **state.bind("playback-s"))
        at_step = round(float(t) * 10)
    names = ["none", *[t.split(":")[0].split(" ")[0] for t in titles]]
    if state.get("large-map") not in names:
        state.put("large-map", "none")
    large = c2.selectbox(
        "One map large",
        names,
        help="Show one of these maps large, above the others",
        **state.bind("large-map"),
    )
    if large != "none":
        i = names.index(large) - 1
        draw_map_rows(
            bundle, [rows[i]], [titles[i]], [panel_colors[i]], [pickable[i]], f"{key}-large", at_step, 560
        )
    draw_map_rows(bundle, rows, titles, panel_colors, pickable, key, at_step)


def neighbor_downloads(
    bundle: Bundle, model: str, nb: Neighbors, key: str, query_window_id: str = ""
) -> None:
    """The neighbour list as CSV and parquet (``trajemb.serving.explore.neighbors_frame``); ``query_window_id``:
    ``drawn`` for a sketch, empty for a window of the user's own (a bundle query names itself)."""
    query = query_window_id or (
        bundle.strings("window_id", [nb.query_row])[0] if nb.query_row is not None else "own"
    )
    parts = query.split("/")
    named = "-".join(p[:12] for p in parts[1:]) if len(parts) == 4 else query
    downloads(
        lambda: neighbors_frame(bundle, model, nb, query_window_id),
        file_stem("neighbours", model, named, f"k{len(nb)}"),
        f"{key}-download",
    )


def show_neighbors(
    bundle: Bundle,
    nb: Neighbors,
    key: str,
    maps: bool = True,
    model: str | None = None,
    query_window_id: str = "",
) -> None:
    """Overlay and table side by side (with its downloads where ``model`` is given), then the maps."""
    if not len(nb):
        st.warning(
            "No neighbours pass the neighbour filters (object type, scenario, track); loosen them in the sidebar."
        )
        return
    m1, m2, m3 = st.columns([1, 1, 3])
    m1.metric(
        f"minADE@{len(nb)}",
        f"{nb.min_ade_m:.2f} m",
        help="Smallest average distance between the query "
        "and a neighbour over the window (both in their agent frames)",
    )
    m2.metric(f"minFDE@{len(nb)}", f"{nb.min_fde_m:.2f} m", help="Smallest distance between their end points")
    if len(nb) < nb.options.k:
        m3.caption(f"Only {len(nb)} of {nb.options.k} neighbours pass the neighbour filters.")
    neighbor_table(bundle, nb, f"{key}-table")
    if model is not None:
        neighbor_downloads(bundle, model, nb, key, query_window_id)
    if not maps:
        overlay(bundle, nb, f"{key}-overlay")
        return
    c1, c2 = st.columns([2, 3])
    with c1:
        overlay(bundle, nb, f"{key}-overlay")
    with c2:
        map_grid(bundle, nb, f"{key}-maps")


def search_or_error(fn: Any, *args: Any) -> Neighbors | None:
    try:
        result: Neighbors = fn(*args)
        return result
    except TrajembError as exc:
        alert("Cannot find the neighbours.", exc)
        return None


def run_page(page: Any, own_query_page: bool = False, sketch_page: bool = False) -> None:
    """Run a page, then mirror the settings and query in the URL (whatever the page showed); an
    expected error (a corrupt or modified bundle file found while reading it) becomes one line on the
    page, never a traceback."""
    st.session_state.pop(OPENED, None)
    if not own_query_page:  # the own-query page follows a pick to Explore only while it is shown
        st.session_state.pop("own-drawn-version", None)
    if not sketch_page:  # the sketch page follows a pick among its neighbours only while it is shown
        st.session_state.pop("_sketch-shown", None)
    try:
        page()
    except TrajembError as exc:
        alert("Cannot show this page.", exc)
    except MemoryError:  # a size in a file too large for this machine: one line, not a traceback
        st.error("Cannot show this page: not enough memory on this machine for what it needs.")
    state.sync_url(st.session_state.get(OPENED))
    st.session_state[URL_PARAMS] = state.url_params(st.session_state.get(OPENED))


def labels_help() -> None:
    with st.expander("How the labels are decided"):
        st.markdown(
            "**Direction** is read from the lane graph wherever a window has a map (every AV2 and synthetic "
            "window): the *passage* it drives through (junction connectors, or a short stretch off every "
            "lane) and the lane it is matched to. Without a map (your own query, pedestrians, stretches off "
            "the map) the window's shape decides: its heading change within tight bends, its total heading "
            "change, and how far its end point lies sideways of where an arc would end. The rules are tried "
            "from the top; the first that matches wins."
        )
        st.table(
            pd.DataFrame(
                [(r.name, r.on_map, r.by_shape) for r in direction_rules()],
                columns=["class", "on the map", "by shape (no map)"],
            ).set_index("class")
        )
        st.caption(
            "True manoeuvre (synthetic data only): what the generator built the road user to do, the "
            "ground truth the direction labels are scored against. Speed bins: mean speed over the window "
            "(path length / duration). Object type, category, city and source come from the data."
        )


def completion_notice(bundle: Bundle, only_running: bool = False) -> None:
    """What to do about a bundle without 2-D layouts or evaluation: while a background completion runs
    (this explorer's, or another process's that it waits for), its progress, redrawn every few seconds,
    and the page reruns as each step lands; otherwise a button that starts one (served bundles: the
    command to run). ``only_running``: say nothing unless layouts or evaluation are still missing."""
    path = str(bundle.root)
    status = cache.completion_status(path)
    if status is None and only_running:  # nothing runs: nothing to say (and no manifest to read)
        return
    complete = cache.bundle_is_complete(path)
    if status is None:
        if only_running or complete:
            return
        st.info(
            "This bundle has no 2-D layout or evaluation yet (built with `--projection none` or `--no-eval`)."
        )
        if cache.launch_options().roots:
            st.caption("Its owner can add them with `trajemb complete --bundle <folder>`.")
        elif st.button("Compute them now, in the background", key="complete-now"):
            cache.complete_in_background(path)
            st.rerun()
        return
    if status.state == "failed":
        st.error("Computing the 2-D layouts and evaluation in the background failed.")
        st.text(status.text)
        return
    if complete and only_running:
        return
    st.info(
        "Computing the robustness curves in the background; they appear here when they are ready."
        if complete
        else "Computing the 2-D layouts and evaluation in the background; this page fills in as each is ready."
    )
    stamp = cache.bundle_stamp(path)

    @st.fragment(run_every=3)
    def _poll() -> None:
        now = cache.completion_status(path)
        st.text(now.text if now is not None else "done")
        if now is None or now.state == "failed" or cache.bundle_stamp(path) != stamp:
            st.rerun(scope="app")

    _poll()
