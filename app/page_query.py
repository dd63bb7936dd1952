"""Your own query: upload a CSV of x, y points or type a few control points, and retrieve neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.core.errors import TrajembError
from trajemb.data.labels import direction_class, mean_speed_mps, path_length_m
from trajemb.data.query import MAX_UPLOAD_BYTES, decode_upload, parse_track, query_window
from trajemb.serving.explore import search_window

import cache
import state
import ui

EXAMPLE = "x, y\n0, 0\n20, 0\n35, 5\n42, 18\n44, 35"
MODES = ("Type points", "Upload a CSV")


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
        f"Points in metres in any frame (the query is moved to its own agent frame): {T} points are 10 Hz "
        f"samples ({(T - 1) / 10:g} s); a column t (seconds) gives their times; otherwise give the duration "
        "of the drive below, or the points are taken as a path driven at constant speed in "
        f"{(T - 1) / 10:g} s. A longer drive gives its first {(T - 1) / 10:g} s."
    )
    mode = st.segmented_control("Input", MODES, required=True, **state.bind("query-mode")) or MODES[0]
    if mode == MODES[1]:
        upload = st.file_uploader(
            f"CSV with x and y columns (metres), at most {MAX_UPLOAD_BYTES >> 20} MiB",
            type=["csv", "txt"],
            key="upload",
        )
        if upload is not None and upload.size > MAX_UPLOAD_BYTES:  # said here, not only on the file's chip
            st.session_state.pop("own-upload", None)
            ui.alert(
                f"Cannot use this file: {upload.size / (1 << 20):.1f} MiB, more than the "
                f"{MAX_UPLOAD_BYTES >> 20} MiB a query file may have; nothing of it was used."
            )
            return
        if upload is not None:
            try:  # whole or not at all: a cut file would change the query without a word
                st.session_state["own-upload"] = (upload.name, decode_upload(upload.getvalue(), upload.name))
            except TrajembError as exc:
                st.session_state.pop("own-upload", None)
                ui.alert("Cannot use this file.", exc)
                return
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
    c1, c2 = st.columns(2)
    query_type = c1.selectbox(
        "The query is a",
        types,
        help="Used when neighbours must have the query's object type",
        **state.bind("query-type"),
    )
    duration = c2.number_input(
        "Duration of the drive (s; 0: not given)",
        min_value=0.0,
        max_value=3600.0,
        step=0.5,
        help="How long the road user took along these points (ignored when the points have a t column)",
        **state.bind("duration-s"),
    )
    try:
        points, times = parse_track(source)
        made = query_window(points, T, times, float(duration) or None)
    except TrajembError as exc:
        ui.alert("Cannot use these points.", exc)
        return
    window = made.xy_agent
    st.caption(made.how + ".")  # our own words and numbers, no text from the input
    label = direction_class(window[None].astype(np.float64))[0][0]
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "input": origin,
                    "points": len(points),
                    "length (m)": round(float(path_length_m(window[None])[0]), 1),
                    "window (s)": (T - 1) / 10,
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
        ui.show_neighbors(bundle, nb, "own", model=model)
        st.session_state["own-drawn-version"] = st.session_state.get(state.VERSION)


ui.run_page(page, own_query_page=True)
