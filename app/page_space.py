"""Embedding space: the 2-D layout coloured by any label or k-means cluster; a box or lasso selection
becomes a gallery whose items can become the query; cluster prototypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.analysis.bundle import Bundle
from trajemb.serving.explore import (
    LABELS,
    cluster_frame,
    cluster_summaries,
    rows_frame,
    rows_in_box,
    rows_in_lasso,
)
from trajemb.serving.viz import gallery_figure, rank_colors

import cache
import state
import ui

COLOR_BY = (*LABELS, "category", "k-means cluster")
SELECTION = "space_selection"
CLEARED = "_space-cleared"
SCATTER = "space-scatter"
GALLERY_SIZE = 30


def _clear_selection() -> None:
    st.session_state[SELECTION] = None
    st.session_state[CLEARED] = st.session_state.get(CLEARED, 0) + 1


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
    row = ui.query_bar(bundle, neighbours_link=True)
    path, stamp = cache.stamp_of(bundle)
    xy = bundle.projection(model)
    if xy is None:
        ui.completion_notice(bundle)
        return
    ui.label_filters(bundle)
    colors = [c for c in COLOR_BY if c in bundle.column_names or c == "k-means cluster"]
    if state.get("color-by") not in colors:
        state.put("color-by", colors[0])
    c1, c2 = st.columns([2, 1])
    color_by = c1.selectbox("Colour by", colors, **state.bind("color-by"))
    clusters = c2.slider(
        "k-means clusters", 2, 20, disabled=color_by != "k-means cluster", **state.bind("clusters")
    )
    codes, cats = cache.layout_labels(path, stamp, model, color_by, clusters)
    mask = cache.filter_mask(path, stamp, ui.current_filters())
    active = "; ".join(
        f"{name.replace('_', ' ')}: {', '.join(picked)}"
        for name, picked in ui.current_filters()
        if picked and name != cache.ID_FILTER
    )
    listed = ui.id_list(bundle)
    if listed is not None and any(name == cache.ID_FILTER for name, _ in ui.current_filters()):
        active = "; ".join(filter(None, [active, f"the {len(listed[1]):,} windows of {listed[0]}"]))
    shown = f"{bundle.num_windows:,} windows"
    if mask is not None:
        shown = f"{int(mask.sum()):,} of {shown} (filtered: {active})"
    method = (bundle.model_entry(model).get("projection") or {}).get("method", "UMAP")
    st.caption(
        ui.md(
            f"{shown}, {bundle.embedding_dim(model)}-D embeddings of {model} projected to 2-D ({method} UMAP)."
        )
        + " Draw a box or lasso (toolbar) to see the selected trajectories. "
        + ui.query_mark(bundle, model, SCATTER, row)
        + ". Scroll to zoom (every window becomes a point once few enough are in view), double-click to "
        "see the whole layout; hover a point to see it."
    )
    # A new key drops the drawn selection; the zoom and the drag tool stay (kept under SCATTER).
    key = f"{SCATTER}-{st.session_state.get(CLEARED, 0)}"
    ui.layout_plot(
        bundle,
        model,
        color_by,
        clusters,
        key,
        row,
        [],
        lambda: _select(bundle, model, key),
        ("box", "lasso"),
        560,
        dragmode="lasso",
        state_key=SCATTER,
    )
    ui.labels_help()
    selection = st.session_state.get(SELECTION)
    if selection is not None and selection[0] == str(bundle.root) and selection[1] == model:
        show_selection(bundle, model, selection[2], codes, cats, color_by)
        st.button("Clear the selection", key="clear-selection", on_click=_clear_selection)
    if st.toggle("Show the cluster prototypes (k-means medoids)", **state.bind("show-prototypes")):
        prototypes(bundle, model, clusters)


def show_selection(
    bundle: Bundle, model: str, rows: np.ndarray, codes: np.ndarray, cats: list[str], color_by: str
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
    st.caption(
        f"The first {len(first):,} of the selected windows; select a row to make it the query. The "
        f"downloads hold all {len(rows):,}."
    )
    label_names = ("direction", "true_manoeuvre", "object_type", "speed_bin", "city")
    ui.results_table(
        bundle,
        first,
        ui.label_table_columns(bundle, first, label_names),
        state.table_key("selection-table"),
        220,
        "selection-table",
    )
    ui.downloads(
        lambda: rows_frame(bundle, rows, model),
        ui.file_stem("selection", model, f"{len(rows)}windows"),
        "selection-download",
    )


def prototypes(bundle: Bundle, model: str, clusters: int) -> None:
    """Each k-means cluster named by its dominant manoeuvre and speed, with its size and class mix, and
    its prototype (the window nearest its mean embedding) on its own map; a click picks the query."""
    path, stamp = cache.stamp_of(bundle)
    labels, medoids = cache.clusters(path, stamp, model, clusters)
    label = "true_manoeuvre" if "true_manoeuvre" in bundle.column_names else "direction"
    codes, names = cache.label_values(path, stamp, label)
    summaries = cluster_summaries(labels, medoids, codes, names, bundle.numbers("mean_speed_mps"))
    if label == "true_manoeuvre" and all(s.mix[0][0] == "unknown" for s in summaries):
        label = "direction"  # real data: no ground truth
        codes, names = cache.label_values(path, stamp, label)
        summaries = cluster_summaries(labels, medoids, codes, names, bundle.numbers("mean_speed_mps"))
    st.caption(
        ui.md(
            f"{clusters} k-means clusters of the {model} embeddings, largest first, named by their most "
            f"frequent {label.replace('_', ' ')} and their median speed. Each prototype is the window "
            "nearest its cluster's mean embedding; click one on its map to make it the query."
        )
    )
    st.dataframe(
        pd.DataFrame(
            {
                "cluster": [s.cluster for s in summaries],
                "name": [s.name for s in summaries],
                "windows": [s.size for s in summaries],
                "median speed (m/s)": [round(s.speed_mps, 1) for s in summaries],
                "mix": [
                    ", ".join(f"{c} {share:.0%}" for c, share in s.mix[:4] if share >= 0.005)
                    for s in summaries
                ],
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "mix": st.column_config.TextColumn(
                "mix", width="large", help="Share of each class in the cluster"
            )
        },
    )
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    chosen = int(
        c1.selectbox(
            "Download the windows of cluster",
            [s.cluster for s in summaries],
            key="cluster-download-choice",
            help="Every window of the cluster, nearest its mean embedding first",
        )
    )
    with c2:
        ui.downloads(
            lambda: cluster_frame(bundle, model, labels, chosen),
            ui.file_stem("cluster", chosen, "of", clusters, model),
            "cluster-download",
        )
    rows = [s.medoid for s in summaries]
    colors = rank_colors(len(summaries))  # legible on the maps
    titles = [f"cluster {s.cluster}: {s.name}" for s in summaries]
    ui.draw_map_rows(bundle, rows, titles, colors, [True] * len(rows), "prototypes")


ui.run_page(page)
