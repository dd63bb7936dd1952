"""Explore: choose a query window and see its nearest neighbours, overlaid, in a table and on their maps."""

from __future__ import annotations

import streamlit as st

from trajemb.analysis.bundle import Bundle
from trajemb.core.errors import TrajembError
from trajemb.serving.explore import SORT_COLUMNS, page_of, rows_frame, rows_from_id_bytes, search_row
from trajemb.serving.viz import gallery_figure

import cache
import state
import ui

PICK_MODES = ("Filter and pick", "By id", "On the 2-D layout", "From a list of ids")
GALLERY_SIZE = 30
PAGE_ROWS = 200


def _pick_by_id(bundle: Bundle) -> None:
    text = str(st.session_state.get("query-id", "")).strip()
    if not text:
        return
    try:
        state.set_query(bundle.find_row(text))
    except Exception as exc:
        st.session_state[state.NOTICE] = ("Cannot use that id.", str(exc))


def filter_and_pick(bundle: Bundle) -> None:
    """Every window passing the filters, sorted as asked, a page at a time; a row picks the query."""
    path, stamp = cache.stamp_of(bundle)
    ui.label_filters(bundle)
    mask = cache.filter_mask(path, stamp, ui.current_filters())
    matching = int(mask.sum()) if mask is not None else bundle.num_windows
    sorts = [label for label, column in SORT_COLUMNS.items() if column in bundle.column_names]
    if state.get("pick-sort") not in sorts:
        state.put("pick-sort", sorts[0])
    pages = max(1, -(-matching // PAGE_ROWS))
    state.put("pick-page", min(max(1, int(state.get("pick-page"))), pages))
    c1, c2, c3, c4 = st.columns([2, 1, 1, 3], vertical_alignment="bottom")
    sort = c1.selectbox("Sort by", sorts, **state.bind("pick-sort"))
    descending = c2.toggle("Descending", **state.bind("pick-descending"))
    page = c3.number_input("Page", 1, pages, step=1, **state.bind("pick-page"))
    order = cache.sorted_rows(path, stamp, ui.current_filters(), SORT_COLUMNS[sort], descending)
    rows = page_of(order, int(page) - 1, PAGE_ROWS).tolist()
    first = (int(page) - 1) * PAGE_ROWS
    c4.caption(
        f"{matching:,} matching windows; rows {first + 1:,} to {first + len(rows):,} of {matching:,} shown. "
        "Select a row to make it the query. The filters also narrow Random and the 2-D layouts."
        + (
            " Only the windows of the loaded id list (From a list of ids)."
            if any(name == cache.ID_FILTER for name, _ in ui.current_filters())
            else ""
        )
    )
    columns = ui.label_table_columns(bundle, rows, state.FILTERS)
    columns["speed (m/s)"] = bundle.numbers("mean_speed_mps")[rows].tolist() if rows else []
    ui.results_table(bundle, rows, columns, state.table_key("pick-table"), 230, "pick-table")


def by_id(bundle: Bundle) -> None:
    with st.form("by-id", border=False):
        c1, c2 = st.columns([5, 1], vertical_alignment="bottom")
        c1.text_input(
            "Window id (source/scenario/track/start), or scenario/track for its first window", key="query-id"
        )
        c2.form_submit_button("Use as query", on_click=_pick_by_id, args=(bundle,), width="stretch")


def from_list(bundle: Bundle, model: str) -> None:
    """A list of window ids loaded back (any trajemb download, or a file of the user's own): a gallery
    whose items become the query, its table and downloads, and a filter of the pick table and layouts."""
    upload = st.file_uploader(
        "A list of window ids: a CSV or parquet file with a window_id column (any trajemb download or "
        "`--out` file), or text with one id per line",
        type=["csv", "parquet", "pq", "txt"],
        key="id-upload",
    )
    if upload is not None and st.session_state.get("_id-upload-seen") != (upload.file_id, str(bundle.root)):
        st.session_state["_id-upload-seen"] = (upload.file_id, str(bundle.root))
        try:  # the library's capped reader; ids the bundle lacks refuse the list, saying how many and which
            rows = rows_from_id_bytes(bundle, upload.getvalue(), "the file")
        except TrajembError as exc:
            st.session_state.pop(ui.ID_LIST, None)
            st.session_state["_id-upload-error"] = str(exc)
        else:
            st.session_state.pop("_id-upload-error", None)
            st.session_state[ui.ID_LIST] = (str(bundle.root), upload.name, rows, cache.register_id_list(rows))
    if upload is None:
        st.session_state.pop("_id-upload-seen", None)
    error = st.session_state.get("_id-upload-error")
    if error and upload is not None:
        ui.alert("Cannot use this list.", error)
        return
    loaded = ui.id_list(bundle)
    if loaded is None:
        st.caption(
            "Choose a file to see its windows here and to filter the pick table and 2-D layouts by it."
        )
        return
    name, rows = loaded
    st.text(f"{len(rows):,} windows from {name}")
    st.toggle(
        "Filter the pick table, Random and the 2-D layouts to this list",
        help="Together with the label filters",
        **state.bind("id-filter"),
    )
    shown = rows[:GALLERY_SIZE]
    path, stamp = cache.stamp_of(bundle)
    codes, cats = cache.label_values(path, stamp, "direction")
    fig = gallery_figure(
        list(bundle.xy.rows(shown)),
        [cats[c] for c in codes[shown]],
        cats,
        "direction",
        shown.tolist(),
        f"The first {len(shown)} of the listed windows (agent frame); click one to make it the query",
        height=380,
    )
    st.plotly_chart(
        fig,
        key="list-gallery",
        on_select=lambda: ui.pick_from_plot("list-gallery"),
        selection_mode="points",
        config={"displaylogo": False},
    )
    listed = rows[:500].tolist()
    columns = ui.label_table_columns(bundle, listed, ("direction", "true_manoeuvre", "object_type", "city"))
    ui.results_table(bundle, listed, columns, state.table_key("list-table"), 220, "list-table")
    ui.downloads(lambda: rows_frame(bundle, rows, model), ui.file_stem("list", model, name), "list-download")


def on_layout(bundle: Bundle, model: str, row: int, neighbor_rows: list[int]) -> None:
    if bundle.projection(model) is None:
        ui.completion_notice(bundle)
        return
    # A stable key keeps the widget's state. The figure is the same from one query to the next (the
    # companion draws the query and its neighbours over it), so the browser keeps the chart; it is drawn
    # anew (a new WebGL context) only when the figure changes: another view, colouring or bundle.
    key = "layout-pick"
    placeholder = st.empty()
    view = ui.layout_plot(bundle, model, "direction", 8, key, row, neighbor_rows, ui.PICK, "points", 430)
    every = len(view.rows) == view.in_view
    placeholder.caption(
        f"{view.in_view:,} windows in view; "
        + (
            "each is a point: "
            if every
            else f"{len(view.rows):,} of them are points (zoom in to reach every one): "
        )
        + "click one to make it the query. "
        + ui.query_mark(bundle, model, key, row)
        + "; its neighbours are ringed. Scroll or drag to zoom; double-click to see the whole layout."
    )


def page() -> None:
    st.title("Explore neighbours")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    model = ui.model_choice(bundle)
    ui.neighbor_controls(bundle)
    row = ui.query_bar(bundle)
    mode = (
        st.segmented_control("Choose a query", PICK_MODES, required=True, **state.bind("pick-mode"))
        or PICK_MODES[0]
    )
    nb = ui.search_or_error(search_row, bundle, model, row, ui.neighbor_options(bundle, row))
    if mode == PICK_MODES[0]:
        filter_and_pick(bundle)
    elif mode == PICK_MODES[1]:
        by_id(bundle)
    elif mode == PICK_MODES[2]:
        on_layout(bundle, model, row, nb.rows.tolist() if nb is not None else [])
    elif mode == PICK_MODES[3]:
        from_list(bundle, model)
    ui.labels_help()
    if nb is not None:
        ui.show_neighbors(bundle, nb, "explore", model=model)
    ui.completion_notice(bundle, only_running=True)


ui.run_page(page)
