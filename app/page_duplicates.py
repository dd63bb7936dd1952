"""Duplicates: windows of different tracks closer than a threshold in the model's space, grouped; how
much of the bundle is near-duplicated at a few thresholds; each group's members on their maps; the
groups download."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.serving.explore import duplicates_frame
from trajemb.serving.viz import rank_colors

import cache
import state
import ui

GROUPS_SHOWN = 500
MAPS = 6


def report_table(report: dict[str, object]) -> pd.DataFrame:
    levels = report["levels"]
    assert isinstance(levels, list)
    return pd.DataFrame(
        {
            "eps": [lv["eps"] for lv in levels],
            "pairs": [lv["pairs"] for lv in levels],
            "windows in a group": [lv["windows"] for lv in levels],
            "share of windows": [f"{lv['share']:.2%}" for lv in levels],
            "tracks": [lv["tracks"] for lv in levels],
            "groups": [lv["groups"] for lv in levels],
            "largest group": [lv["largest_group"] for lv in levels],
            "pairs close in raw space": [
                f"{lv['raw_check']['confirmed_share']:.0%}"
                if isinstance(lv.get("raw_check"), dict) and "confirmed_share" in lv["raw_check"]
                else ""
                for lv in levels
            ],
        }
    )


def page() -> None:
    st.title("Near-duplicates")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    model = ui.model_choice(bundle)
    ui.query_bar(bundle, neighbours_link=True)
    path, stamp = cache.stamp_of(bundle)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    if not float(state.get(state.DUPLICATE_EPS)) > 0:
        state.put(state.DUPLICATE_EPS, state.DEFAULT_EPS)
    eps = float(
        c1.number_input(
            "Threshold eps (embedding distance)",
            min_value=state.EPS_BOUNDS[0],
            max_value=state.EPS_BOUNDS[1],
            step=0.005,
            format="%.4f",
            help="Windows of different tracks closer than this in the model's space are near-duplicates "
            "(also the sidebar's 'Collapse near-duplicates' threshold)",
            **state.bind(state.DUPLICATE_EPS),
        )
    )
    c2.caption(
        "Near-duplicates: windows of different tracks strictly closer than eps in the model's embedding "
        "space, grouped as connected pairs (`trajemb mine duplicates`). A copied scenario comes back as "
        "one group per track. The report below also gives how many of the pairs are within "
        "0.1 m RMS in raw space."
    )
    with st.spinner("Finding near-duplicates…"):
        report, groups = cache.duplicates(path, stamp, model, eps)
    st.dataframe(
        report_table(report),
        hide_index=True,
        column_config={"eps": st.column_config.NumberColumn("eps", format="%.4f")},
    )
    st.caption(
        f"{bundle.num_windows:,} windows; the range search was "
        + ("exact" if report.get("exact") else "approximate (the probed cells of the IVF index)")
        + f", {float(report.get('search_s', 0.0)):.1f} s."
    )
    if not groups.num_groups:
        st.info(f"No near-duplicates below eps = {eps:g}: try a larger threshold.")
        return
    st.subheader(f"{groups.num_groups:,} groups at eps = {eps:g}")
    ui.downloads(
        lambda: duplicates_frame(bundle, model, eps, groups=groups),
        ui.file_stem("duplicates", model, f"eps{eps:g}"),
        "duplicates-download",
    )
    members = groups.members()
    label = groups.labels[members]
    first = np.r_[True, label[1:] != label[:-1]]
    representatives = members[first][:GROUPS_SHOWN]
    numbers = label[first][:GROUPS_SHOWN]
    st.caption(
        f"The {len(numbers):,} largest groups, each by its first window (select one to make it the "
        "query); pick a group below to see its members."
    )
    columns: dict[str, list[object]] = {
        "group": numbers.tolist(),
        "windows": groups.sizes[numbers].tolist(),
        "tracks": groups.tracks[numbers].tolist(),
    }
    columns.update(
        ui.label_table_columns(bundle, representatives.tolist(), ("direction", "object_type", "city"))
    )
    ui.results_table(
        bundle, representatives.tolist(), columns, state.table_key("groups-table"), 260, "groups-table"
    )
    state.put("dup-group", min(max(1, int(state.get("dup-group"))), groups.num_groups))
    chosen = int(st.number_input("Group", 1, groups.num_groups, step=1, **state.bind("dup-group")))
    rows = members[label == chosen]
    emb = bundle.embeddings(model)
    dist = np.sqrt(
        ((emb.rows(rows).astype(np.float64) - emb.rows(rows[:1]).astype(np.float64)) ** 2).sum(axis=1)
    )
    st.caption(
        f"Group {chosen}: {len(rows):,} windows of {int(groups.tracks[chosen]):,} tracks; distance to its "
        "first window in the embedding."
    )
    listed = rows[:GROUPS_SHOWN].tolist()
    member_columns: dict[str, list[object]] = {"distance": dist[: len(listed)].tolist()}
    member_columns.update(
        ui.label_table_columns(bundle, listed, ("direction", "object_type", "city", "source"))
    )
    ui.results_table(bundle, listed, member_columns, state.table_key("members-table"), 220, "members-table")
    shown = listed[:MAPS]
    kind = bundle.strings("object_type", shown)
    ui.draw_map_rows(
        bundle,
        shown,
        [f"member {i + 1}: {k}" for i, k in enumerate(kind)],
        rank_colors(len(shown)),
        [True] * len(shown),
        "duplicate-maps",
    )


ui.run_page(page)
