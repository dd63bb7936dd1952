"""Forecast: the futures of the bank windows whose histories are nearest the query's, drawn on the query's
map beside its true future and constant velocity and acceleration, scored with av2's metric functions.
Everything is computed by ``trajemb.analysis.forecast``; this page chooses and draws."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.forecast import (
    ALIGNMENTS,
    CONSTANT_ACCELERATION,
    CONSTANT_VELOCITY,
    KNN_RAW,
    RETRIEVAL_PREFIX,
    ForecastConfig,
    QueryForecast,
    forecast_row,
    forecast_window,
)
from trajemb.analysis.forecast_metrics import score_forecasts
from trajemb.analysis.report import FORECAST_METHODS, definitions_markdown, forecast_definitions
from trajemb.analysis.sketch import SketchConfig, sketch_window
from trajemb.core.errors import TrajembError
from trajemb.data.query import parse_track, query_window
from trajemb.serving.explore import rows_frame
from trajemb.serving.viz import forecast_figure

import state
import ui

RERANKS = (0, 12, 24, 48, 96, 192)
ALIGNMENT_HELP = (
    "How a bank window's future is placed at the query. last_state: its manoeuvre (its deviation from "
    "its own constant velocity) added to the query's constant velocity; last_pose: the future as it left "
    "its last position and heading, put at the query's; agent_frame: the future as it is in the frame "
    "both windows share at their first step."
)
BASELINES = {CONSTANT_VELOCITY: "constant velocity", CONSTANT_ACCELERATION: "constant acceleration"}
#: A 3 s history of one's own, typed: a road user slowing into a left turn.
EXAMPLE = "x, y\n0, 0\n15, 0\n27, 2\n34, 7"
#: Session key: the query version when a history of one's own was last forecast (a pick made since
#: turns the page back to the bundle's window).
OWN_AT = "_forecast-own-version"


def history_models(bundle: Bundle) -> list[str]:
    """The bundle's history models (those that embed a window's first H steps)."""
    return [m for m in bundle.model_names if bundle.history_steps(m) is not None]


def controls(bundle: Bundle, models: list[str]) -> tuple[str, ForecastConfig]:
    """History model, K, alignment and rerank shortlist in the sidebar (defaults: the library's)."""
    if state.get("forecast-model") not in models:
        state.put("forecast-model", models[0])
    model = str(
        st.sidebar.selectbox(
            "History model",
            models,
            help="Only the bundle's history models (they embed a window's first steps)",
            **state.bind("forecast-model"),
        )
    )
    k = int(st.sidebar.slider("Futures K", 1, state.MAX_K, **state.bind("forecast-k")))
    if state.get("alignment") not in ALIGNMENTS:
        state.put("alignment", state.SPECS["alignment"].default)
    alignment = st.sidebar.selectbox("Alignment", ALIGNMENTS, help=ALIGNMENT_HELP, **state.bind("alignment"))
    options = [str(r) for r in RERANKS if r == 0 or r >= k]
    if state.get("rerank") not in options:
        default = state.SPECS["rerank"].default
        state.put("rerank", default if default in options else options[min(1, len(options) - 1)])
    rerank = st.sidebar.selectbox(
        "Rerank shortlist",
        options,
        format_func=lambda r: "off" if r == "0" else r,
        help="The history model's nearest this many histories, re-ranked by raw history distance; off: "
        "its K nearest as they are",
        **state.bind("rerank"),
    )
    history_steps = bundle.history_steps(model)
    assert history_steps is not None
    config = ForecastConfig(history_steps=history_steps, k=k, alignment=alignment, rerank=int(str(rerank)))
    return model, config


def own_history(history_steps: int) -> np.ndarray | None:
    """A history typed as points (the same points as on "Your own query"), made into H steps at 10 Hz."""
    seconds = (history_steps - 1) / 10
    st.caption(
        f"Points in metres in any frame, the road user moving from the first to the last: {history_steps} "
        f"points are 10 Hz samples ({seconds:g} s); with a column t (seconds) or a duration they are timed; "
        f"otherwise they are a path driven at constant speed in {seconds:g} s. A longer drive gives its "
        f"first {seconds:g} s. The forecast starts at its last point."
    )
    if state.get("points") is None:
        state.put("points", EXAMPLE)
    c1, c2 = st.columns([3, 1])
    text = c1.text_area("Points, one 'x, y' per line", height=130, **state.bind("points"))
    duration = c2.number_input(
        "Duration of the drive (s; 0: not given)",
        min_value=0.0,
        max_value=3600.0,
        step=0.5,
        **state.bind("duration-s"),
    )
    try:
        points, times = parse_track(text)
        made = query_window(points, history_steps, times, float(duration) or None)
    except TrajembError as exc:
        ui.alert("Cannot use these points.", exc)
        return None
    st.caption(made.how + ".")  # our own words and numbers
    return np.asarray(made.xy_agent, dtype=np.float64)


def sketched_history(history_steps: int) -> np.ndarray | None:
    """The path drawn on the Sketch page (in its frame, at its speed) made into an H-step history at
    10 Hz by ``trajemb.analysis.sketch`` (at the drawing's speed, its first H steps; without one, the whole path);
    the forecast starts where that history ends."""
    points = state.sketch_points()
    if not len(points):
        st.info("Nothing is drawn yet: draw a path on the Sketch page, then come back here.")
        return None
    speed = float(state.get("sketch-speed") or 0.0)
    frame = str(state.get("sketch-frame") or "agent")
    try:
        made = sketch_window(points, SketchConfig(history_steps, speed or None, None, frame))
    except TrajembError as exc:
        ui.alert("Cannot use the drawn path as a history.", exc)
        return None
    seconds = (history_steps - 1) / 10
    st.caption(
        f"The path drawn on Sketch ({frame} frame"
        + (f", {speed:g} m/s" if speed else ", the whole path")
        + f") as a {seconds:g} s history."
    )
    return np.asarray(made.xy_agent, dtype=np.float64)


def forecast_map(bundle: Bundle, f: QueryForecast, model: str, k: int) -> None:
    """History, the K retrieved futures with their probabilities, the true future and the physical
    models, on the query's map (city frame) or, for a history of one's own, in its agent frame."""
    modes = f.methods[RETRIEVAL_PREFIX + model]
    on_map = f.query_row is not None
    geometry = (
        ui.map_of(bundle, bundle.strings("map_key", [f.query_row])[0]) if f.query_row is not None else None
    )

    def pick(a: Any, b: Any) -> Any:
        return a if on_map else b

    names = [f"#{i + 1} p {p:.2f}" for i, p in enumerate(modes.probability)]
    baselines = {
        label: pick(f.methods[m].xy_city, f.methods[m].xy_agent)[0]
        for m, label in BASELINES.items()
        if m in f.methods and len(f.methods[m].xy_agent)
    }
    figure = forecast_figure(
        pick(f.history_xy_city, f.history_xy_agent),
        list(pick(modes.xy_city, modes.xy_agent)),
        names,
        modes.probability.tolist(),
        modes.rows.tolist(),
        pick(f.truth_xy_city, f.truth_xy_agent),
        baselines,
        geometry,
        city_frame=on_map,
        title=f"{len(modes.rows)} futures by {model} (p: probability), on the query's map"
        if on_map
        else f"{len(modes.rows)} futures by {model} (p: probability), in the history's agent frame",
    )
    st.plotly_chart(
        figure,
        key="forecast-map",
        on_select=lambda: ui.pick_from_plot("forecast-map"),
        selection_mode="points",
        config={"displaylogo": False, "scrollZoom": True},
    )
    if len(modes.rows) < k:
        st.caption(f"Only {len(modes.rows)} of {k} futures found in the bank.")


def scores_table(f: QueryForecast, k: int) -> None:
    """This query's scores per method (av2's functions through ``trajemb.analysis.forecast_metrics``)."""
    definitions = forecast_definitions(k)
    frame = pd.DataFrame.from_dict(
        {m: {c: s.get(c) for c in definitions} for m, s in f.scores.items()}, orient="index"
    ).apply(pd.to_numeric, errors="coerce")
    st.dataframe(
        frame.style.format("{:.2f}", na_rep="\u2013"),
        width="stretch",
        key="forecast-scores",
        column_config={c: st.column_config.Column(c, help=text) for c, (_, text) in definitions.items()},
    )


def source_table(bundle: Bundle, f: QueryForecast, model: str) -> None:
    """The bank windows the futures came from; selecting one makes it the query."""
    modes = f.methods[RETRIEVAL_PREFIX + model]
    rows = modes.rows.tolist()
    columns: dict[str, list[object]] = {
        "rank": list(range(1, len(rows) + 1)),
        "probability": [round(float(p), 3) for p in modes.probability],
        "history distance": [round(float(d), 3) for d in modes.distance],
    }
    if f.truth_xy_agent is not None and rows:
        fde = score_forecasts(modes.xy_agent[None], f.truth_xy_agent[None]).mode_fde_m[0]
        columns["FDE (m)"] = [round(float(v), 2) for v in fde]
    columns.update(ui.label_table_columns(bundle, rows, ("direction", "true_manoeuvre", "object_type")))
    st.caption(
        "The bank windows the futures came from (the query's own scenario is never among them; one window "
        "per track). History distance: what ranked them (after the rerank, metres in raw history space). "
        "FDE: distance between the aligned future's end and the true one. Select a row, or click a future "
        "on the map, to make that window the query."
    )
    ui.results_table(bundle, rows, columns, state.table_key("forecast-table"), table="forecast-table")
    extra = {
        "probability": np.asarray(modes.probability, dtype=np.float64),
        "history_distance": np.asarray(modes.distance, dtype=np.float64),
    }
    if "FDE (m)" in columns:
        extra["fde_m"] = np.asarray(fde, dtype=np.float64)
    ui.downloads(
        lambda: rows_frame(bundle, rows, model, extra),
        ui.file_stem("forecast-sources", model, f"k{len(rows)}"),
        "forecast-download",
    )


def page() -> None:
    st.title("Forecast by retrieval")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    models = history_models(bundle)
    if not models:
        st.info(
            "This bundle has no history model, so it cannot forecast: add one with `trajemb bundle ... "
            "--checkpoint checkpoints/history-cosine-d8` (the built-in default data has two)."
        )
        return
    model, config = controls(bundle, models)
    own_at = st.session_state.pop(OWN_AT, None)
    if own_at is not None and own_at != st.session_state.get(state.VERSION):
        state.put("forecast-query", state.FORECAST_SOURCES[0])  # a window was picked: forecast it
    source = (
        st.segmented_control("Query", state.FORECAST_SOURCES, required=True, **state.bind("forecast-query"))
        or state.FORECAST_SOURCES[0]
    )
    methods = [RETRIEVAL_PREFIX + model, KNN_RAW, CONSTANT_VELOCITY, CONSTANT_ACCELERATION]
    if source == state.FORECAST_SOURCES[0]:
        row = ui.query_bar(bundle, neighbours_link=True)
        with st.spinner("Forecasting"):
            f = forecast_row(bundle, row, config, methods)
    else:
        if source == state.FORECAST_SOURCES[1]:
            history = own_history(config.history_steps)
        else:
            history = sketched_history(config.history_steps)
        st.session_state[OWN_AT] = st.session_state.get(state.VERSION)
        if history is None:
            return
        with st.spinner("Forecasting"):
            f = forecast_window(bundle, history, config=config, methods=methods)
    c1, c2 = st.columns([4, 3])
    with c1:
        forecast_map(bundle, f, model, config.k)
    with c2:
        if f.scores:
            st.markdown(
                f"**Scores of this query** ({config.k} futures, {bundle.num_steps - config.history_steps} steps ahead)"
            )
            scores_table(f, config.k)
        else:
            st.caption("A history of one's own has no true future: nothing to score.")
        with st.expander("What the scores and methods mean"):
            st.markdown(definitions_markdown(forecast_definitions(config.k)))
            st.markdown("\n".join(f"* **{m}**: {text}." for m, text in FORECAST_METHODS.items()))
    source_table(bundle, f, model)


ui.run_page(page)
