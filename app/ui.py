"""Shared widgets and state of the explorer pages: the bundle, the model, the query, neighbour views.

Functions return plain values; session state is initialised once, behind a guard.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.errors import TrajembError
from trajemb.metrics import ade_fde
from trajemb.schema import DirectionClass
from trajemb.store import TrajectoryTable
from trajemb.viz import PALETTE, agent_frame_figure, city_frame_figure

import cache

QUERY = "query_row"
BUNDLE = "bundle_choice"


def selected_rows(event: object) -> list[int]:
    """Table rows picked in a plotly selection (points carry their row in customdata)."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    rows = []
    for p in points:
        data = p.get("customdata")
        if isinstance(data, list):
            data = data[0] if data else None
        if data is not None:
            rows.append(int(data))
    return rows


def init_state(table: TrajectoryTable) -> None:
    """Start on a seeded turn (a more telling first query than a straight line), else any window."""
    if QUERY not in st.session_state or st.session_state[QUERY] >= len(table):
        directions = table.meta["direction"].to_numpy(dtype=str)
        turns = np.flatnonzero(np.isin(directions, [DirectionClass.LEFT.value, DirectionClass.RIGHT.value]))
        rows = turns if turns.size else np.arange(len(directions))
        st.session_state[QUERY] = int(np.random.default_rng(0).choice(rows))


def bundle_path() -> str | None:
    """The bundle chosen in the sidebar (default: command line / env, else the built-in default)."""
    # A plain session key, not the widget's: widget state does not survive a page switch.
    if BUNDLE not in st.session_state:
        st.session_state[BUNDLE] = cache.requested_bundle_path() or ""
    typed = st.sidebar.text_input("Bundle folder (empty: built-in default)", value=st.session_state[BUNDLE],
                                  help="A folder written by `trajemb bundle`.")  # fmt: skip
    st.session_state[BUNDLE] = typed
    path = typed.strip() or None
    try:
        if path is None:
            path = cache.default_bundle_path()
        cache.open_bundle(path)
    except TrajembError as exc:
        st.error(f"Cannot open the bundle: {exc}")
        return None
    return path


def model_select(path: str, label: str = "Model", key: str = "model", index: int = 0) -> str:
    names = cache.open_bundle(path).model_names
    return str(st.sidebar.selectbox(label, names, index=min(index, len(names) - 1), key=key))


def k_slider() -> int:
    return int(st.sidebar.slider("Neighbours k", 1, 20, 6, key="k"))


def describe(path: str, row: int) -> str:
    m = cache.open_bundle(path).table.meta.iloc[row]
    return (f"`{m.window_id}` · {m.object_type} · {m.direction} · {m.mean_speed_mps:.1f} m/s · {m.city} · "
            f"{m.source}")  # fmt: skip


def neighbor_frame(path: str, model: str, row: int, k: int, exclude_same_track: bool = True) -> pd.DataFrame:
    """Neighbours of table row ``row`` with distance, ADE / FDE to the query (agent frames) and labels."""
    bundle = cache.open_bundle(path)
    cache.bundle_model(path, model)
    dist, rows = bundle.neighbors(model, row, k, exclude_same_track)
    return result_frame(path, bundle.table.xy_agent[row], dist, rows)


def result_frame(path: str, query_xy: np.ndarray, sq_dist: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """A table of search results (FAISS's squared distances and rows, -1 = none) against a query window."""
    bundle = cache.open_bundle(path)
    keep = rows >= 0
    rows, dist = rows[keep], np.sqrt(sq_dist[keep])
    xy = bundle.table.xy_agent
    ade, fde = ade_fde(query_xy[None], xy[rows][None])
    meta = bundle.table.meta.iloc[rows]
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "row": rows, "distance": dist,
        "ADE (m)": ade[0], "FDE (m)": fde[0], "direction": meta["direction"].to_numpy(),
        "object type": meta["object_type"].to_numpy(), "speed (m/s)": meta["mean_speed_mps"].to_numpy().round(1),
        "window id": meta["window_id"].to_numpy(),
    })  # fmt: skip


def show_neighbors(path: str, row: int | None, table: pd.DataFrame, query_xy: np.ndarray | None = None,
                   maps: int = 6, key: str = "n") -> None:  # fmt: skip
    """Overlay in the agent frame, the table with minADE/minFDE, and each neighbour on its map."""
    bundle = cache.open_bundle(path)
    xy = bundle.table.xy_agent
    if query_xy is None and row is not None:
        query_xy = xy[row]
    c1, c2 = st.columns([3, 2])
    with c1:
        names = [f"#{r} {d}" for r, d in zip(table["rank"], table["direction"], strict=True)]
        fig = agent_frame_figure(query_xy, [xy[r] for r in table["row"]], names)
        st.plotly_chart(fig, key=f"{key}-overlay")
    with c2:
        if len(table):
            m1, m2 = st.columns(2)
            m1.metric(f"minADE@{len(table)}", f"{table['ADE (m)'].min():.2f} m")
            m2.metric(f"minFDE@{len(table)}", f"{table['FDE (m)'].min():.2f} m")
        st.dataframe(table.drop(columns=["row"]).style.format({"distance": "{:.3f}", "ADE (m)": "{:.2f}", "FDE (m)": "{:.2f}"}),
                     hide_index=True, height=320)  # fmt: skip
    if maps <= 0 or not len(table):
        return
    st.markdown(
        "**Neighbours on their maps** (city frame; other road users of the scenario in the background)"
    )
    city = cache.city_xy(path)
    by_scenario = cache.scenario_rows(path)
    meta = bundle.table.meta
    cols = st.columns(3)
    for i, r in enumerate(table["row"].to_numpy()[:maps]):
        m = meta.iloc[r]
        same_time = by_scenario[(m.source, m.scenario_id)]
        same_time = same_time[
            (meta["start_timestep"].to_numpy()[same_time] == m.start_timestep) & (same_time != r)
        ]
        geometry = cache.map_geometry(path, m.map_key)
        fig = city_frame_figure(geometry, city[r], [city[o] for o in same_time[:40]],
                                title=f"#{i + 1} {m.direction}, {m.object_type}", color=PALETTE[i % len(PALETTE)])  # fmt: skip
        with cols[i % 3]:
            st.plotly_chart(fig, key=f"{key}-map-{i}")
