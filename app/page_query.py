"""Your own query: upload a CSV of x, y points or type a few control points, and retrieve neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.errors import TrajembError
from trajemb.explore import search_window
from trajemb.labels import direction_class, mean_speed_mps, path_length_m
from trajemb.query import parse_points, points_to_window

import cache
import state
import ui

EXAMPLE = "x, y\n0, 0\n20, 0\n35, 5\n42, 18\n44, 35"
MODES = ("Type points", "Upload a CSV")
MAX_UPLOAD_BYTES = 2_000_000


def page() -> None:
    st.title("Your own query")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    # A neighbour picked here (table, overlay, map) is a window of the bundle: show it on Explore.
    if st.session_state.get("own-drawn-version") not in (None, st.session_state.get(state.VERSION)):
        st.session_state.pop("own-drawn-version", None)
        st.switch_page("page_explore.py", query_params=state.url_params(bundle))
    model = ui.model_choice(bundle)
    ui.neighbor_controls(bundle)
    T = bundle.num_steps
    st.caption(
        f"Give exactly {T} points (10 Hz samples, {(T - 1) / 10:g} s) or a few control points of a path driven "
        "at constant speed over that time, in metres in any frame: the query is moved to its own agent frame."
    )
    mode = st.segmented_control("Input", MODES, required=True, **state.bind("query-mode")) or MODES[0]
    if mode == MODES[1]:
        upload = st.file_uploader("CSV with x and y columns (metres)", type=["csv", "txt"], key="upload")
        if upload is not None:
            st.session_state["own-upload"] = (
                upload.name,
                upload.getvalue()[:MAX_UPLOAD_BYTES].decode("utf-8", errors="replace"),
            )
        kept = st.session_state.get("own-upload")
        if kept is None:
            st.info("Choose a file to use it as the query.")
            return
        if upload is None:
            st.caption(
                ui.md(f"Using the file uploaded earlier: {kept[0]}. Choose another file to replace it.")
            )
        source, origin = kept[1], f"file {kept[0]}"
    else:
        if state.get("points") is None:
            state.put("points", EXAMPLE)
        source = st.text_area("Points, one 'x, y' per line", height=150, **state.bind("points"))
        origin = "typed points"
    types = cache.label_values(*cache.stamp_of(bundle), "object_type")[1]
    if state.get("query-type") not in types:
        state.put("query-type", "vehicle" if "vehicle" in types else types[0])
    query_type = st.selectbox(
        "The query is a",
        types,
        help="Used when neighbours must have the query's object type",
        **state.bind("query-type"),
    )
    try:
        points = parse_points(source)
        window = points_to_window(points, T)
    except TrajembError as exc:
        st.error(f"Cannot use these points: {ui.md(str(exc))}")
        return
    label = direction_class(window[None].astype(np.float64))[0][0]
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "input": origin,
                    "points": len(points),
                    "length (m)": round(float(path_length_m(window[None])[0]), 1),
                    "duration (s)": (T - 1) / 10,
                    "mean speed (m/s)": round(float(mean_speed_mps(window[None])[0]), 1),
                    "direction": str(label),
                }
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    options = ui.neighbor_options(bundle, None, query_type)
    nb = ui.search_or_error(search_window, bundle, model, window, options)
    if nb is not None:
        ui.show_neighbors(bundle, nb, "own")
        st.session_state["own-drawn-version"] = st.session_state.get(state.VERSION)


ui.run_page(page, own_query_page=True)
