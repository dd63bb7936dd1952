"""Explore: choose a query window and see its nearest neighbours, overlaid and on their maps."""

from __future__ import annotations

import numpy as np
import streamlit as st

from trajemb.errors import TrajembError
from trajemb.viz import embedding_scatter

import cache
import ui

FILTERS = ("direction", "object_type", "city", "speed_bin", "source")


def choose_query(path: str, model: str) -> None:
    bundle = cache.open_bundle(path)
    meta = bundle.table.meta
    by_filter, by_id, by_umap = st.tabs(["Filter and pick", "By id", "Click the UMAP"])
    with by_filter:
        cols = st.columns(len(FILTERS))
        mask = np.ones(len(meta), dtype=bool)
        for col, name in zip(cols, FILTERS, strict=True):
            options = sorted(meta[name].unique().tolist())
            picked = col.multiselect(name.replace("_", " "), options, key=f"filter-{name}")
            if picked:
                mask &= meta[name].isin(picked).to_numpy()
        rows = np.flatnonzero(mask)
        left, right = st.columns([4, 1])
        left.caption(f"{len(rows)} matching windows (first 500 listed); select a row to make it the query")
        if right.button("Random query", key="random", disabled=not len(rows)):
            st.session_state[ui.QUERY] = int(np.random.default_rng().choice(rows))
        shown = meta.iloc[rows[:500]][
            ["window_id", "direction", "object_type", "speed_bin", "city", "source"]
        ]
        event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row", key="pick-table",
                             height=220)  # fmt: skip
        picked_rows = event.selection.rows if event is not None else []
        if picked_rows:
            st.session_state[ui.QUERY] = int(rows[picked_rows[0]])
    with by_id:
        with st.form("by-id"):
            wid = st.text_input("Window id (source/scenario/track/start) or scenario/track", key="query-id")
            submitted = st.form_submit_button("Use as query")
        if submitted and wid.strip():
            try:
                st.session_state[ui.QUERY] = find_row(path, wid.strip())
            except TrajembError as exc:
                st.error(str(exc))
    with by_umap:
        m = cache.bundle_model(path, model)
        if m.umap_xy is None:
            st.info("This bundle has no UMAP projection (built with --no-umap).")
        else:
            fig = embedding_scatter(m.umap_xy, meta["direction"].to_numpy(dtype=str), "direction",
                                    query=st.session_state[ui.QUERY], height=420)  # fmt: skip
            fig.update_layout(dragmode="zoom", clickmode="event+select")
            event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="umap-pick")
            picked = ui.selected_rows(event)
            if picked:
                st.session_state[ui.QUERY] = picked[0]


def find_row(path: str, text: str) -> int:
    """A window id, or ``scenario/track`` (its first window)."""
    bundle = cache.open_bundle(path)
    if text in bundle.row_of_id:
        return bundle.row_of_id[text]
    meta = bundle.table.meta
    parts = text.split("/")
    if len(parts) == 2:
        hits = np.flatnonzero(
            (meta["scenario_id"] == parts[0]).to_numpy() & (meta["track_id"] == parts[1]).to_numpy()
        )
        if len(hits):
            return int(hits[0])
    return bundle.row(text)  # raises with an example of a valid id


def page() -> None:
    st.title("Explore neighbours")
    path = ui.bundle_path()
    if path is None:
        return
    model = ui.model_select(path)
    k = ui.k_slider()
    exclude = st.sidebar.checkbox("Exclude the query's own track", value=True, key="exclude")
    ui.init_state(cache.open_bundle(path).table)
    choose_query(path, model)
    row = int(st.session_state[ui.QUERY])
    st.markdown(f"**Query** {ui.describe(path, row)}")
    try:
        table = ui.neighbor_frame(path, model, row, k, exclude)
    except TrajembError as exc:
        st.error(str(exc))
        return
    ui.show_neighbors(path, row, table, key="explore")


page()
