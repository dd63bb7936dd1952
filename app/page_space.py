"""Embedding space: the 2-D layout coloured by any label or k-means cluster; a box or lasso selection
becomes a gallery whose items can become the query; cluster prototypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.bundle import Bundle
from trajemb.explore import rows_in_box, rows_in_lasso
from trajemb.viz import gallery_figure, projection_figure

import cache
import state
import ui

COLOR_BY = ("direction", "object_type", "speed_bin", "source", "city", "category", "k-means cluster")
SELECTION = "space_selection"
GALLERY_SIZE = 30


def _select(bundle: Bundle, model: str, key: str) -> None:
    """Callback of the layout: rows inside the box or lasso, among every window passing the filters."""
    event = st.session_state.get(key)
    selection = getattr(event, "selection", None) if event is not None else None
    if selection is None:
        return
    xy = bundle.projection(model)
    if xy is None:
        return
    boxes = selection.get("box") or []
    lassos = selection.get("lasso") or []
    hits: list[np.ndarray] = []
    for box in boxes:
        hits.append(rows_in_box(xy, tuple(box["x"][:2]), tuple(box["y"][:2])))
    for lasso in lassos:
        hits.append(rows_in_lasso(xy, list(lasso["x"]), list(lasso["y"])))
    if not hits:
        hits = [np.asarray(ui.selected_rows(event), dtype=np.int64)]
    rows = np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)
    mask = cache.filter_mask(*cache.stamp_of(bundle), ui.current_filters())
    if mask is not None:
        rows = rows[mask[rows]]
    st.session_state[SELECTION] = (str(bundle.root), model, rows)


def page() -> None:
    st.title("Embedding space")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    model = ui.model_choice(bundle)
    row = state.ensure_query(bundle, ui.default_query(bundle))
    path, stamp = cache.stamp_of(bundle)
    xy = bundle.projection(model)
    if xy is None:
        ui.completion_notice(bundle)
        return
    c1, c2 = st.columns([2, 1])
    color_by = c1.selectbox("Colour by", COLOR_BY, **state.bind("color-by"))
    clusters = c2.slider(
        "k-means clusters", 2, 20, disabled=color_by != "k-means cluster", **state.bind("clusters")
    )
    codes, cats = cache.layout_labels(path, stamp, model, color_by, clusters)
    view = cache.layout_view(path, stamp, model, color_by, ui.current_filters(), clusters)
    raster = (
        (cache.image_url(view.png, f"{model}.{color_by}.{clusters}"), view.extent)
        if view.png is not None
        else None
    )
    mask = cache.filter_mask(path, stamp, ui.current_filters())
    active = "; ".join(
        f"{name.replace('_', ' ')}: {', '.join(picked)}" for name, picked in ui.current_filters() if picked
    )
    shown = f"{bundle.num_windows:,} windows"
    if mask is not None:
        shown = f"{int(mask.sum()):,} of {shown} (filtered on the Explore page: {active})"
    method = (bundle.model_entry(model).get("projection") or {}).get("method", "UMAP")
    st.caption(
        ui.md(
            f"{shown}, {bundle.embedding_dim(model)}-D embeddings of {model} projected to 2-D ({method} UMAP)."
        )
        + " Draw a box or lasso (toolbar) to see the selected trajectories; the black cross is the query."
    )
    fig = projection_figure(xy, codes, cats, color_by, view.rows, raster, row, (), dragmode="lasso")
    key = "space-scatter"
    st.plotly_chart(
        fig,
        key=key,
        on_select=lambda: _select(bundle, model, key),
        selection_mode=("box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    ui.labels_help()
    selection = st.session_state.get(SELECTION)
    if selection is not None and selection[0] == str(bundle.root) and selection[1] == model:
        show_selection(bundle, selection[2], codes, cats, color_by)
    if st.toggle("Show the cluster prototypes (k-means medoids)", **state.bind("show-prototypes")):
        prototypes(bundle, model, clusters)


def show_selection(
    bundle: Bundle, rows: np.ndarray, codes: np.ndarray, cats: list[str], color_by: str
) -> None:
    st.subheader(f"Selection: {len(rows):,} windows")
    if not len(rows):
        st.caption("The selection holds no window (of those passing the filters).")
        return
    counts = pd.Series([cats[c] for c in codes[rows]]).value_counts()
    st.caption(
        ui.md("By " + color_by.replace("_", " ") + ": " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    )
    shown = np.sort(np.random.default_rng(0).choice(rows, size=min(GALLERY_SIZE, len(rows)), replace=False))
    labels = [cats[c] for c in codes[shown]]
    fig = gallery_figure(
        list(bundle.xy.rows(shown)),
        labels,
        cats,
        color_by,
        shown.tolist(),
        f"{len(shown)} of the selected trajectories (agent frame); click one to make it the query",
    )
    key = "gallery"
    st.plotly_chart(
        fig,
        key=key,
        on_select=lambda: ui.pick_from_plot(key),
        selection_mode="points",
        config={"displaylogo": False},
    )
    first = rows[:500].tolist()
    st.caption(f"The first {len(first):,} of the selected windows; select a row to make it the query.")
    labels = ("direction", "true_manoeuvre", "object_type", "speed_bin", "city")
    ui.results_table(
        bundle, first, ui.label_table_columns(bundle, first, labels), state.widget_key("selection-table"), 220
    )


def prototypes(bundle: Bundle, model: str, clusters: int) -> None:
    path, stamp = cache.stamp_of(bundle)
    labels, medoids = cache.clusters(path, stamp, model, clusters)
    rows = [medoids[c] for c in sorted(medoids)]
    sizes = np.bincount(labels, minlength=len(medoids))
    direction = bundle.strings("direction", rows)
    names = [f"cluster {c} ({sizes[c]:,}): {direction[i]}" for i, c in enumerate(sorted(medoids))]
    fig = gallery_figure(
        list(bundle.xy.rows(rows)),
        names,
        names,
        "cluster",
        rows,
        "Medoid trajectory of each k-means cluster (agent frame); click one to make it the query",
    )
    key = "prototypes"
    st.plotly_chart(
        fig,
        key=key,
        on_select=lambda: ui.pick_from_plot(key),
        selection_mode="points",
        config={"displaylogo": False},
    )


ui.run_page(page)
