"""Plotly figure builders for the explorer: maps, trajectories in agent and city frames, scatter plots.

Polylines of one kind go into one trace, separated by ``None`` gaps: a map is a handful of traces, not
hundreds, which keeps redraws fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from trajemb.data.maps import MapGeometry
from trajemb.schema import FloatArray

#: Colour-blind-safe qualitative palette (Okabe-Ito), then Plotly's defaults.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
)  # fmt: skip
QUERY_COLOR = "#000000"
#: Fixed colours per direction class, so every page speaks the same colour language.
DIRECTION_COLORS: dict[str, str] = {
    "straight": "#9E9E9E", "left": "#009E73", "right": "#E69F00", "u_turn": "#CC79A7",
    "lane_change_left": "#0072B2", "lane_change_right": "#D55E00", "stationary": "#000000",
}  # fmt: skip


def category_color(label_name: str, category: str, i: int) -> str:
    if label_name == "direction" and category in DIRECTION_COLORS:
        return DIRECTION_COLORS[category]
    return PALETTE[i % len(PALETTE)]


def _joined(polylines: Sequence[FloatArray]) -> tuple[list[float | None], list[float | None]]:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for p in polylines:
        xs += p[:, 0].tolist() + [None]
        ys += p[:, 1].tolist() + [None]
    return xs, ys


def _crop(polylines: Sequence[FloatArray], box: tuple[float, float, float, float] | None) -> list[FloatArray]:
    if box is None:
        return list(polylines)
    x0, y0, x1, y1 = box
    return [
        p
        for p in polylines
        if (p[:, 0].max() >= x0) and (p[:, 0].min() <= x1) and (p[:, 1].max() >= y0) and (p[:, 1].min() <= y1)
    ]


def map_traces(
    geometry: MapGeometry, box: tuple[float, float, float, float] | None = None
) -> list[go.Scatter]:
    """Drivable areas (filled), crossings (filled), lane boundaries (lines) in the city frame."""
    traces = []
    for polys, fill, name in ((geometry.drivable_areas, "rgba(200,200,200,0.45)", "drivable area"),
                              (geometry.crossings, "rgba(240,200,60,0.35)", "crossing")):  # fmt: skip
        xs, ys = _joined(_crop(polys, box))
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=fill, line={"width": 0},
                                 name=name, hoverinfo="skip", showlegend=False))  # fmt: skip
    xs, ys = _joined(_crop(geometry.lane_boundaries, box))
    traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "rgba(110,110,110,0.8)", "width": 0.8},
                             name="lane boundary", hoverinfo="skip", showlegend=False))  # fmt: skip
    return traces


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 50, "r": 10, "t": 35, "b": 40},
        plot_bgcolor="white",
        legend={"orientation": "h", "y": -0.2, "font": {"size": 10}},
    )
    fig.update_xaxes(title_text=x_title, showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(
        title_text=y_title, showgrid=True, gridcolor="#eee", zeroline=False, scaleanchor="x", scaleratio=1
    )
    return fig


def agent_frame_figure(
    query_xy: FloatArray | None,
    neighbors_xy: Sequence[FloatArray],
    names: Sequence[str],
    title: str = "Query and neighbours (agent frame)",
    height: int = 420,
) -> go.Figure:
    """Query (thick black) and neighbours overlaid in the agent frame; start points marked."""
    fig = go.Figure()
    for i, (xy, name) in enumerate(zip(neighbors_xy, names, strict=True)):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", line={"color": color, "width": 2}, name=name)
        )
        fig.add_trace(go.Scatter(x=xy[-1:, 0], y=xy[-1:, 1], mode="markers", marker={"color": color, "size": 6},
                                 showlegend=False, hoverinfo="skip"))  # fmt: skip
    if query_xy is not None:
        fig.add_trace(go.Scatter(x=query_xy[:, 0], y=query_xy[:, 1], mode="lines", name="query",
                                 line={"color": QUERY_COLOR, "width": 4, "dash": "dot"}))  # fmt: skip
        fig.add_trace(go.Scatter(x=query_xy[-1:, 0], y=query_xy[-1:, 1], mode="markers", showlegend=False,
                                 marker={"color": QUERY_COLOR, "size": 9, "symbol": "x"}, hoverinfo="skip"))  # fmt: skip
    return _layout(fig, title, "x (m, agent frame: initial heading)", "y (m, left)", height)


def city_frame_figure(
    geometry: MapGeometry | None,
    window_xy: FloatArray,
    others_xy: Sequence[FloatArray] = (),
    title: str = "",
    color: str = PALETTE[0],
    margin_m: float = 25.0,
    height: int = 320,
) -> go.Figure:
    """One window on its map in the city frame, other road users of the scenario faint behind it."""
    x0, y0 = window_xy.min(axis=0) - margin_m
    x1, y1 = window_xy.max(axis=0) + margin_m
    box = (float(x0), float(y0), float(x1), float(y1))
    fig = go.Figure(map_traces(geometry, box) if geometry is not None else [])
    if len(others_xy):
        xs, ys = _joined(list(others_xy))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "rgba(80,80,200,0.25)", "width": 1.5},
                                 name="other road users", hoverinfo="skip"))  # fmt: skip
    fig.add_trace(go.Scatter(x=window_xy[:, 0], y=window_xy[:, 1], mode="lines", line={"color": color, "width": 3},
                             name="window"))  # fmt: skip
    fig.add_trace(go.Scatter(x=window_xy[-1:, 0], y=window_xy[-1:, 1], mode="markers", marker={"color": color, "size": 8},
                             showlegend=False, hoverinfo="skip"))  # fmt: skip
    fig = _layout(fig, title, "x (m, city frame)", "y (m, city frame)", height)
    fig.update_xaxes(range=[box[0], box[2]])
    fig.update_yaxes(range=[box[1], box[3]])
    fig.update_layout(showlegend=False)
    return fig


def embedding_scatter(
    xy: FloatArray,
    labels: np.ndarray,
    label_name: str,
    highlight: Sequence[int] = (),
    query: int | None = None,
    height: int = 560,
) -> go.Figure:
    """WebGL scatter of 2-D points coloured by a categorical label; neighbours and query highlighted."""
    fig = go.Figure()
    cats = sorted(set(labels.tolist()), key=str)
    for i, cat in enumerate(cats):
        rows = np.flatnonzero(labels == cat)
        fig.add_trace(go.Scattergl(
            x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=str(cat), customdata=rows,
            marker={"size": 3, "color": category_color(label_name, str(cat), i), "opacity": 0.6},
            hovertemplate=f"{label_name}: {cat}<br>row %{{customdata}}<extra></extra>",
        ))  # fmt: skip
    if len(highlight):
        h = np.asarray(highlight)
        ring = {"size": 9, "color": "rgba(0,0,0,0)", "line": {"color": "#D55E00", "width": 2}}
        fig.add_trace(
            go.Scattergl(x=xy[h, 0], y=xy[h, 1], mode="markers", name="neighbours", customdata=h, marker=ring)
        )
    if query is not None:
        fig.add_trace(go.Scattergl(x=xy[[query], 0], y=xy[[query], 1], mode="markers", name="query", customdata=[query],
                                   marker={"size": 14, "symbol": "x", "color": QUERY_COLOR}))  # fmt: skip
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": 30, "b": 40}, plot_bgcolor="white",
                      legend={"title": {"text": label_name}, "itemsizing": "constant"}, dragmode="lasso")  # fmt: skip
    fig.update_xaxes(title_text="UMAP 1", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="UMAP 2", showgrid=False, zeroline=False)
    return fig


def metric_vs_k_figure(
    reports: dict[str, dict[str, float]], metric: str = "minADE", ks: Sequence[int] = (1, 5, 10)
) -> go.Figure:
    """``metric``@k against k, one line per model or baseline (metres)."""
    fig = go.Figure()
    for i, (name, r) in enumerate(reports.items()):
        ys = [r.get(f"{metric}@{k}") for k in ks]
        if all(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=list(ks), y=ys, mode="lines+markers", name=name,
                                     line={"color": PALETTE[i % len(PALETTE)]}))  # fmt: skip
    fig.update_layout(height=380, margin={"l": 50, "r": 10, "t": 35, "b": 40}, plot_bgcolor="white",
                      title={"text": f"{metric}@k (query vs retrieved neighbours)", "font": {"size": 13}})  # fmt: skip
    fig.update_xaxes(title_text="k (neighbours)", tickvals=list(ks), gridcolor="#eee")
    fig.update_yaxes(title_text=f"{metric} (m)", type="log", gridcolor="#eee")
    return fig
