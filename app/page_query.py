"""Your own query: upload a CSV of x, y points or type a few control points, and retrieve neighbours."""

from __future__ import annotations

import numpy as np
import streamlit as st

from trajemb.embed import embed_windows
from trajemb.errors import TrajembError
from trajemb.query import parse_points, points_to_window

import cache
import ui

EXAMPLE = "x, y\n0, 0\n20, 0\n35, 5\n42, 18\n44, 35"


def page() -> None:
    st.title("Your own query")
    path = ui.bundle_path()
    if path is None:
        return
    model = ui.model_select(path)
    k = ui.k_slider()
    bundle = cache.open_bundle(path)
    T = bundle.table.num_steps
    st.caption(f"Give exactly {T} points (10 Hz samples) or a few control points of a path driven at constant "
               "speed; any frame: the query is moved to its own agent frame.")  # fmt: skip
    upload = st.file_uploader("CSV with x and y columns (metres)", type=["csv", "txt"], key="upload")
    text = st.text_area("…or type points, one 'x, y' per line", EXAMPLE, height=150, key="points")
    source = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else text
    try:
        window = points_to_window(parse_points(source), T)
    except TrajembError as exc:
        st.error(f"Cannot use these points: {exc}")
        return
    m = cache.bundle_model(path, model)
    z = embed_windows(m.encoder, window[None].astype(np.float32))
    dist, rows = m.index.search(z, k)
    table = ui.result_frame(path, window, dist[0], rows[0])
    ui.show_neighbors(path, None, table, query_xy=window, key="own")


page()
