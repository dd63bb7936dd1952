"""Rare: the most unique windows of a model (the long tail a forecaster fails on), each on its map,
with the label filters; a click makes one the query, and the list downloads."""

from __future__ import annotations

import numpy as np
import streamlit as st

from trajemb.serving.explore import rows_frame
from trajemb.serving.viz import rank_colors

import cache
import state
import ui

MAPS = 9
TABLE_ROWS = 500


def page() -> None:
    st.title("Rare windows")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    model = ui.model_choice(bundle)
    ui.query_bar(bundle, neighbours_link=True)
    path, stamp = cache.stamp_of(bundle)
    info = bundle.uniqueness_info(model)
    if bundle.uniqueness(model) is None:
        with st.spinner("This bundle has no stored uniqueness for this model: computing it…"):
            cache.uniqueness(path, stamp, model)
        how = (
            "computed here, in memory (this bundle was built before uniqueness was stored; "
            "`trajemb complete` stores it)"
        )
    else:
        k = (info or {}).get("k")
        how = f"stored in the bundle (k = {k})" if isinstance(k, int) else "stored in the bundle"
    st.caption(
        "Uniqueness of a window: the embedding distance to its k-th nearest window on another track. "
        f"The larger, the rarer the behaviour in this bundle. Scores {how}."
    )
    ui.label_filters(bundle)
    c1, c2, c3 = st.columns([2, 2, 4], vertical_alignment="bottom")
    one = c1.toggle(
        "One per track",
        help="Only each track's most unique window (a track's windows overlap and score alike)",
        **state.bind("rare-one"),
    )
    top = int(
        c2.number_input(
            "Windows in the list",
            1,
            100_000,
            step=50,
            help="How many the downloads hold",
            **state.bind("rare-top"),
        )
    )
    order = cache.rare_order(path, stamp, model, ui.current_filters(), bool(one))
    rows = order[:top]
    scores = cache.uniqueness(path, stamp, model)
    c3.caption(
        f"{len(order):,} windows pass the filters"
        + (" (one per track)" if one else "")
        + f"; the {len(rows):,} most unique, most unique first. Click one on its map or select it in "
        "the table to make it the query."
    )
    if not len(rows):
        st.info("No window passes the filters.")
        return
    shown = rows[:MAPS].tolist()
    direction = bundle.strings("direction", shown)
    kind = bundle.strings("object_type", shown)
    titles = [
        f"#{i + 1} u={scores[r]:.3f}: {d}, {t}"
        for i, (r, d, t) in enumerate(zip(shown, direction, kind, strict=True))
    ]
    ui.draw_map_rows(bundle, shown, titles, rank_colors(len(shown)), [True] * len(shown), "rare-maps")
    listed = rows[:TABLE_ROWS].tolist()
    columns: dict[str, list[object]] = {
        "rank": list(range(1, len(listed) + 1)),
        "uniqueness": np.asarray(scores[listed], dtype=np.float64).tolist(),
        "speed (m/s)": bundle.numbers("mean_speed_mps")[listed].tolist(),
    }
    columns.update(
        ui.label_table_columns(bundle, listed, ("direction", "true_manoeuvre", "object_type", "city"))
    )
    ui.results_table(bundle, listed, columns, state.table_key("rare-table"), 300, "rare-table")
    labels = [v for name, values in ui.current_filters() if name != cache.ID_FILTER for v in values]
    ui.downloads(  # ``trajemb.serving.explore.rare_frame`` of these settings (and the id list's filter, if on)
        lambda: rows_frame(bundle, rows, model, {"uniqueness": scores[rows].astype(np.float64)}),
        ui.file_stem("rare", model, f"top{len(rows)}", *labels),
        "rare-download",
    )


ui.run_page(page)
