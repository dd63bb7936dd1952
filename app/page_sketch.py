"""Sketch a query: draw a path with the mouse (Plotly's "draw open path" tool) in the agent frame or on
the current query's map; ``trajemb.analysis.sketch`` makes it a T-step window at 10 Hz, and its neighbours
show as any query's. The drawing lives in the URL (``sketch``), so a link or the browser's Back
brings it back."""

from __future__ import annotations

import streamlit as st

from trajemb.core.errors import TrajembError
from trajemb.serving.explore import search_sketch, sketch_notes, sketch_query
from trajemb.serving.viz import map_grid_figure, sketch_figure

import cache
import companion
import state
import ui

FRAMES = {"agent": "The agent frame (metres grid)", "city": "The query's map"}
CANVAS = "sketch-canvas"
DRAWN = "sketch-drawn"
#: Session key: the query version and the neighbour rows the last run of this page showed.
SHOWN = "_sketch-shown"
#: Most points a drawing keeps in the URL (every k-th point of a longer drawing, and its last).
URL_POINTS = 200


def encode(points: list[tuple[float, float]]) -> str:
    """Drawn points as URL text: ``x,y;x,y;...`` (centimetres), at most ``URL_POINTS`` of them."""
    step = max(1, -(-len(points) // URL_POINTS))
    kept = points[::step]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in kept)


def _drawn() -> None:
    """Callback of the drawing companion: the drawn path becomes the sketch (one URL entry)."""
    points = companion.drawn_path(DRAWN)
    if points:
        state.put("sketch", encode(points))


def _clear() -> None:
    state.put("sketch", "")


def _frame_changed() -> None:
    state.put("sketch", "")  # a path drawn in one frame means nothing in the other


def page() -> None:
    st.title("Sketch a query")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    # A neighbour picked here (table, overlay, map) is a window of the bundle: show it on Explore. Only
    # a pick among the neighbours the last run showed (Random and Back on the map's query bar stay).
    shown = st.session_state.pop(SHOWN, None)
    if (
        shown is not None
        and shown[0] != st.session_state.get(state.VERSION)
        and st.session_state.get(state.QUERY) in shown[1]
    ):
        st.switch_page("page_explore.py", query_params=state.url_params(bundle))
    model = ui.model_choice(bundle)
    ui.neighbor_controls(bundle)
    T = bundle.num_steps
    window_s = (T - 1) / 10
    if state.get("sketch-frame") not in FRAMES:
        state.put("sketch-frame", "agent")
    c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
    frame = (
        c1.segmented_control(
            "Draw in",
            list(FRAMES),
            format_func=FRAMES.__getitem__,
            required=True,
            **state.bind("sketch-frame", _frame_changed),
        )
        or "agent"
    )
    speed = float(
        c2.number_input(
            "Speed (m/s; 0: the whole path in the window)",
            min_value=state.SPEED_BOUNDS[0],
            max_value=state.SPEED_BOUNDS[1],
            step=1.0,
            help=f"The road user drives along the path at this speed for {window_s:g} s ({T} steps at "
            "10 Hz); 0: as fast as it takes to drive the whole path in that time",
            **state.bind("sketch-speed"),
        )
    )
    c3.button("Clear", key="sketch-clear", on_click=_clear, width="stretch")
    row: int | None = None
    if frame == "city":
        row = ui.query_bar(bundle)
    points = state.sketch_points()
    made = None
    error = None
    if len(points):
        try:
            made = sketch_query(bundle, points, frame, speed or None)
        except TrajembError as exc:
            error = str(exc)
    st.caption(
        "Choose the pencil (draw open path, selected already) and drag the mouse: the path starts where "
        + (
            "you press. The origin is the start, heading +x; a path drawn elsewhere is moved there."
            if frame == "agent"
            else "you press, on the map of the current query's scene (city frame); Random picks another scene."
        )
        + " Each new drawing replaces the last."
    )
    base = None
    if row is not None:
        panel = ui.map_panels(bundle, [row], ["the query's scene"], ["#888888"], [False])
        base = map_grid_figure(panel, columns=1, panel_height=520, margin_m=60.0)
    fig = sketch_figure(points if len(points) else None, made.xy_drawn if made is not None else None, base)
    st.plotly_chart(
        fig, key=CANVAS, config={"displaylogo": False, "modeBarButtonsToAdd": ["drawopenpath", "eraseshape"]}
    )
    companion.sketch_companion(CANVAS, DRAWN, _drawn)
    if error is not None:
        ui.alert("Cannot use this drawing.", error)
        return
    if made is None:
        st.info("Draw a path to find the windows that look like it.")
        return
    st.text(  # our own words and numbers
        f"Drawn: {len(made.points)} points, {made.path_length_m:.1f} m; the query covers "
        f"{made.window_length_m:.1f} m of it: " + "; ".join(sketch_notes(bundle, model, made)) + "."
    )
    types = cache.label_values(*cache.stamp_of(bundle), "object_type")[1]
    if state.get("query-type") not in types:
        state.put("query-type", "vehicle" if "vehicle" in types else types[0])
    own_type = st.selectbox(
        "The drawing is a",
        types,
        help="Used when neighbours must have the query's object type (sidebar)",
        **state.bind("query-type"),
    )
    options = ui.neighbor_options(bundle, None, own_type)
    nb = ui.search_or_error(search_sketch, bundle, model, made, options)
    if nb is not None:
        ui.show_neighbors(bundle, nb, "sketch", model=model, query_window_id="drawn")
        st.session_state[SHOWN] = (st.session_state.get(state.VERSION), set(nb.rows.tolist()))


ui.run_page(page, sketch_page=True)
