"""Your own query: upload a CSV of x, y points or type a few control points, and retrieve neighbours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.embed import embed_windows
from trajemb.errors import TrajembError
from trajemb.metrics import ade_fde
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
    rows = rows[0][rows[0] >= 0]
    xy = bundle.table.xy_agent
    ade, fde = ade_fde(window[None], xy[rows][None])
    meta = bundle.table.meta.iloc[rows]
    table = pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "row": rows, "distance": np.sqrt(dist[0][: len(rows)]),
        "ADE (m)": ade[0], "FDE (m)": fde[0], "direction": meta["direction"].to_numpy(),
        "object type": meta["object_type"].to_numpy(), "speed (m/s)": meta["mean_speed_mps"].to_numpy().round(1),
        "window id": meta["window_id"].to_numpy(),
    })  # fmt: skip
    ui.show_neighbors(path, None, table, query_xy=window, key="own")


page()
