"""Explore: choose a query window and see its nearest neighbours, overlaid, in a table and on their maps."""

from __future__ import annotations

import numpy as np
import streamlit as st

from trajemb.bundle import Bundle
from trajemb.explore import search_row
from trajemb.viz import projection_figure

import cache
import state
import ui

PICK_MODES = ("Filter and pick", "By id", "On the 2-D layout")
TABLE_ROWS = 500


def _pick_by_id(bundle: Bundle) -> None:
    text = str(st.session_state.get("query-id", "")).strip()
    if not text:
        return
    try:
        state.set_query(bundle.find_row(text))
    except Exception as exc:
        st.session_state[state.NOTICE] = f"Cannot use that id: {exc}"


def filter_and_pick(bundle: Bundle) -> None:
    path, stamp = cache.stamp_of(bundle)
    cols = st.columns(len(state.FILTERS))
    for col, name in zip(cols, state.FILTERS, strict=True):
        options = cache.label_values(path, stamp, name)[1]
        key = f"filter-{name}"
        state.put(key, tuple(v for v in state.get(key) if v in options))
        col.multiselect(name.replace("_", " "), options, **state.bind(key))
    mask = cache.filter_mask(path, stamp, ui.current_filters())
    rows = (
        np.flatnonzero(mask)[:TABLE_ROWS]
        if mask is not None
        else np.arange(min(TABLE_ROWS, bundle.num_windows))
    )
    matching = int(mask.sum()) if mask is not None else bundle.num_windows
    st.caption(
        f"{matching:,} matching windows (the first {len(rows)} listed); select a row to make it the query. "
        "The filters also narrow Random and the 2-D layout."
    )
    frame = bundle.frame(["window_id", "direction", "object_type", "speed_bin", "city", "source"], rows)
    key = state.table_key("pick-table")
    row_list = rows.tolist()
    st.dataframe(
        frame,
        hide_index=True,
        on_select=lambda: ui._pick_from_table(key, row_list, "pick-table"),
        selection_mode="single-row",
        key=key,
        height=230,
        width="stretch",
    )


def by_id(bundle: Bundle) -> None:
    with st.form("by-id", border=False):
        c1, c2 = st.columns([5, 1], vertical_alignment="bottom")
        c1.text_input(
            "Window id (source/scenario/track/start), or scenario/track for its first window", key="query-id"
        )
        c2.form_submit_button("Use as query", on_click=_pick_by_id, args=(bundle,), width="stretch")


def on_layout(bundle: Bundle, model: str, row: int, neighbor_rows: list[int]) -> None:
    path, stamp = cache.stamp_of(bundle)
    xy = bundle.projection(model)
    if xy is None:
        ui.completion_notice(bundle)
        return
    view = cache.layout_view(path, stamp, model, "direction", ui.current_filters(), 8)
    codes, cats = cache.label_values(path, stamp, "direction")
    raster = (cache.image_url(view.png, f"{model}.direction"), view.extent) if view.png is not None else None
    fig = projection_figure(xy, codes, cats, "direction", view.rows, raster, row, neighbor_rows, height=430)
    key = "layout-pick"  # a stable key: the chart updates in place instead of a new WebGL context per click
    st.caption(
        "Click a point to make it the query; the query is the black cross, its neighbours are ringed."
        + (
            " Large corpus: the image shows every window, the faint dots are the pickable ones."
            if raster
            else ""
        )
    )
    st.plotly_chart(
        fig,
        key=key,
        on_select=lambda: ui.pick_from_plot(key),
        selection_mode="points",
        config={"displaylogo": False, "scrollZoom": True},
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
    ui.labels_help()
    if nb is not None:
        ui.show_neighbors(bundle, nb, "explore")
    ui.completion_notice(bundle, only_running=True)


ui.run_page(page)
