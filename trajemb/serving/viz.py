"""Plotly figure builders for the explorer: maps, trajectories in agent and city frames, 2-D layouts.

Figures are assembled as plain dicts and wrapped without plotly's per-property validation
(``_validate=False``; the tests validate every builder's output once), which keeps a redraw of the
explorer in milliseconds. Polylines of one kind share a trace, separated by ``None`` gaps. Every
string that comes from data goes through ``plain`` (plotly renders a subset of HTML in titles, legends
and hover text). Colours: the Okabe-Ito palette (safe for the common colour-vision deficiencies), with
fixed colours per direction class and per object type, and a distinct colour per neighbour rank
(``RANK_COLORS``).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from trajemb.data.maps import MapGeometry

#: Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#000000",
    "#F0E442",
)
#: Paul Tol's "muted" scheme, for categorical labels with more values than Okabe-Ito has colours.
TOL_MUTED: tuple[str, ...] = (
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
    "#DDDDDD",
)
PALETTE: tuple[str, ...] = OKABE_ITO + TOL_MUTED
QUERY_COLOR = "#000000"
#: The rings around the query's neighbours on the 2-D layout (drawn over a white halo): a magenta no
#: class of any label has, so that a ring never reads as points of some class (they were Okabe-Ito's
#: vermilion, the colour of u_turn and motorcyclist). The nearest class colours, lane_change_right's
#: #CC79A7 and Tol's #AA4499, are 18.4 and 18.7 away in CIEDE2000; 3.1:1 contrast on the white plot.
NEIGHBOUR_RING_COLOR = "#FF00FF"
#: One hue per direction class (how each class is decided: ``trajemb.data.labels``).
DIRECTION_COLORS: dict[str, str] = {
    # Left and right manoeuvres in unrelated hues (blue / orange, green / purple), so that a turn is
    # never confused with its own lane change or with its mirror image.
    "straight": "#999999",
    "left": "#0072B2",
    "right": "#E69F00",
    "u_turn": "#D55E00",
    "lane_change_left": "#009E73",
    "lane_change_right": "#CC79A7",
    "stationary": "#000000",
}
#: One hue per AV2 object type.
OBJECT_TYPE_COLORS: dict[str, str] = {
    "vehicle": "#0072B2",
    "bus": "#E69F00",
    "pedestrian": "#009E73",
    "cyclist": "#CC79A7",
    "motorcyclist": "#D55E00",
    "riderless_bicycle": "#56B4E9",
    "moped": "#882255",
    "static": "#999999",
    "background": "#DDDDDD",
    "construction": "#999933",
    "unknown": "#000000",
}
#: Plot toolbars stand upright in a strip of their own on the right (lying along the top they covered
#: the titles of the map panels and of narrow plots).
TOOLBAR: dict[str, Any] = {"orientation": "v"}
TOOLBAR_PX = 36


def plain(text: object) -> str:
    """A data string made safe for plotly text (which renders a subset of HTML)."""
    return html.escape(str(text), quote=False)


def label_colors(label_name: str, categories: Sequence[str]) -> list[str]:
    """A colour for each category: fixed for direction and object type, the palette otherwise."""
    fixed = (
        DIRECTION_COLORS
        if label_name == "direction"
        else OBJECT_TYPE_COLORS
        if label_name == "object_type"
        else {}
    )
    out, i = [], 0
    for cat in categories:
        if cat in fixed:
            out.append(fixed[cat])
        else:
            out.append(PALETTE[i % len(PALETTE)])
            i += 1
    return out


#: One colour per neighbour rank, up to the explorer's largest k (20), most distinct first. Chosen by a
#: greedy farthest-point search in CIEDE2000 (CIE76, plain CIELAB distance, called two saturated
#: purples 35 apart that look alike: 9.8 in CIEDE2000) over the sRGB colours that (a) have a contrast of
#: at least 3:1 (WCAG's minimum for graphics) on white, on the grey drivable area and on the yellow
#: crosswalks, (b) are clearly not black, the query's colour (L* >= 42, CIEDE2000 >= 38 from black: the
#: dark green, brown and olive of the former palette read as black beside the query's dotted line),
#: (c) are not greys (chroma >= 30) and stand apart from the lane lines and the other road users. Each
#: prefix is thus as spread as the search could make it: any two of the first 20 are at least 11.9
#: apart (CIEDE2000), of the first 10 at least 16; the last two are swapped so that neighbouring ranks
#: differ more (ranks 18 and 19 were a blue and a violet). tests/test_viz.py checks these properties.
RANK_COLORS: tuple[str, ...] = (
    "#0972B0",
    "#728400",
    "#F60000",
    "#D300DC",
    "#008A78",
    "#8D5800",
    "#9E4F61",
    "#4F46F6",
    "#1A722C",
    "#956A9E",
    "#B06A4F",
    "#F60058",
    "#C10084",
    "#B03E00",
    "#84723E",
    "#00849E",
    "#B93535",
    "#4F72F6",
    "#C16100",
    "#9561DC",
)
#: Map backgrounds the rank colours must stand out on (``map_traces``), as drawn over white.
MAP_FILLS = {"drivable area": "rgba(200,200,200,0.45)", "crosswalk": "rgba(240,200,60,0.35)"}
#: Lane boundaries, and the other road users of a scenario at their most opaque (their marker during
#: playback; their lines are fainter), which the rank colours must not be taken for.
LANE_COLOR = "rgba(110,110,110,0.8)"
OTHERS_RGB = "60,60,140"
OTHERS_COLOR = f"rgba({OTHERS_RGB},0.8)"


def rank_colors(k: int) -> list[str]:
    """A colour per neighbour rank (``RANK_COLORS``; repeated beyond 20)."""
    return [RANK_COLORS[i % len(RANK_COLORS)] for i in range(max(0, k))]


def figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A plotly figure from plain dicts, without per-property validation.

    With a ``datarevision``: Streamlit draws a chart whose figure changed as a new one, then passes it
    through its theme (a JSON copy) and hands the copy to ``Plotly.react``, whose new arrays made
    Plotly compute and draw every trace a second time; with a revision it compares the revision
    instead of the arrays (a chart whose data changes is a new chart in Streamlit, so one value does).
    """
    return go.Figure(data=data, layout={"datarevision": 0, **layout}, _validate=False)


def _joined(polylines: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Polylines in one x and one y array, separated by NaN (a gap in plotly)."""
    if not polylines:
        return np.zeros(0), np.zeros(0)
    parts = []
    gap = np.full((1, 2), np.nan)
    for p in polylines:
        parts += [np.asarray(p, dtype=np.float64)[:, :2], gap]
    xy = np.concatenate(parts).astype(np.float32)  # centimetres in float32: half the bytes of float64
    return xy[:, 0], xy[:, 1]


def _clip_lines(
    polylines: Sequence[np.ndarray], box: tuple[float, float, float, float] | None
) -> list[np.ndarray]:
    """The pieces of each line that pass through ``box`` (one point beyond each edge kept, so the line
    still reaches the border): a lane boundary several hundred metres long sends only what is seen."""
    if box is None:
        return list(polylines)
    x0, y0, x1, y1 = box
    out = []
    for p in polylines:
        inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
        keep = inside.copy()
        keep[:-1] |= inside[1:]
        keep[1:] |= inside[:-1]
        if keep.all():
            out.append(p)
            continue
        idx = np.flatnonzero(keep)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
            if len(run) >= 2:
                out.append(p[run])
    return out


def _crop(polylines: Sequence[np.ndarray], box: tuple[float, float, float, float] | None) -> list[np.ndarray]:
    if box is None:
        return list(polylines)
    x0, y0, x1, y1 = box
    return [
        p
        for p in polylines
        if p[:, 0].max() >= x0 and p[:, 0].min() <= x1 and p[:, 1].max() >= y0 and p[:, 1].min() <= y1
    ]


def _heading_deg(xy: np.ndarray) -> float:
    """Plotly marker angle (degrees clockwise from up) of the direction of travel at the end of ``xy``."""
    d = np.asarray(xy[-1], dtype=np.float64) - np.asarray(xy[max(0, len(xy) - 4)], dtype=np.float64)
    if not np.isfinite(d).all() or np.hypot(*d) < 1e-6:
        return 90.0
    return float(90.0 - math.degrees(math.atan2(d[1], d[0])))


def _ends(
    paths: Sequence[np.ndarray],
    colors: Sequence[str],
    size: float | Sequence[float],
    axes: dict[str, str] | None = None,
    starts: bool | Sequence[bool] = True,
) -> list[dict[str, Any]]:
    """Start (circle; ``starts``) and end (arrow along the direction of travel) markers of each path, in
    one trace (each trace is a layer that the browser draws and compares again on every redraw), the
    start circles under the arrows. ``size`` and ``starts`` are one for all paths or one per path (every
    end of a map grid in one trace)."""
    if not paths:
        return []
    n = len(paths)
    sizes = [float(size)] * n if isinstance(size, int | float) else [float(v) for v in size]
    first = [i for i, start in enumerate([starts] * n if isinstance(starts, bool) else starts) if start]
    xy = np.array([paths[i][0] for i in first] + [p[-1] for p in paths])
    return [
        {
            "type": "scatter",
            "mode": "markers",
            "showlegend": False,
            "hoverinfo": "skip",
            **(axes or {}),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "marker": {
                "symbol": ["circle"] * len(first) + ["arrow"] * n,
                "size": [sizes[i] * 0.7 for i in first] + [v * 1.3 for v in sizes],
                "color": [colors[i] for i in first] + list(colors),
                "angle": [0.0] * len(first) + [_heading_deg(p) for p in paths],
                "line": {"color": "white", "width": [1.0] * len(first) + [0.5] * n},
            },
        }
    ]


def _axis(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 11}},
        "showgrid": True,
        "gridcolor": "#eee",
        "zeroline": False,
        **extra,
    }


def agent_frame_figure(
    query_xy: np.ndarray | None,
    neighbors_xy: Sequence[np.ndarray],
    names: Sequence[str],
    colors: Sequence[str] | None = None,
    rows: Sequence[int] | None = None,
    title: str = "Query and neighbours (agent frame)",
    height: int = 430,
) -> go.Figure:
    """Query (thick black dots) and neighbours overlaid in the agent frame; circles mark starts, arrows
    ends. ``rows`` (customdata) lets a click on a neighbour select it."""
    colors = list(colors or rank_colors(len(neighbors_xy)))
    data: list[dict[str, Any]] = []
    for i, (xy, name) in enumerate(zip(neighbors_xy, names, strict=True)):
        data += _clickable_line(
            xy,
            {"name": plain(name), "legendgroup": f"n{i}"},
            {"color": colors[i], "width": 2},
            {"size": 5, "color": colors[i]},
            None if rows is None else int(rows[i]),
            f"{plain(name)}<extra></extra>",
        )
    paths, path_colors = list(neighbors_xy), colors[: len(neighbors_xy)]
    if query_xy is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": np.round(query_xy[:, 0], 2),
                "y": np.round(query_xy[:, 1], 2),
                "name": "query",
                "line": {"color": QUERY_COLOR, "width": 4, "dash": "dot"},
                "hoverinfo": "skip",
            }
        )
        paths, path_colors = [*paths, query_xy], [*path_colors, QUERY_COLOR]
    data += _ends(paths, path_colors, 9)
    # Below the plot, as many entries a row as their names allow (at the side, a column of 20
    # neighbours was cut after #17; five long names a row overlapped each other in a narrow plot).
    longest = max((len(n) for n in [*names, "query"]), default=0)
    per_row = 5 if longest <= 5 else 3 if longest <= 12 else 2
    layout = _legend_below_layout(title, height, len(neighbors_xy) + (query_xy is not None), per_row)
    layout["xaxis"] = _axis("x (m, agent frame: initial heading)")
    layout["yaxis"] = _axis("y (m, to the left)", scaleanchor="x", scaleratio=1)
    return figure(data, layout)


#: Pixels from the bottom of a plot to the top of a legend drawn below it: under the x axis's tick
#: labels and title, which end about 64 px under it (at -0.14 of a 335-pixel plot, 47 px, the first
#: legend row covered the title).
LEGEND_BELOW_PX = 72
#: Pixels of one row of such a legend in Chromium (entries in 10-point type, 29 px apart).
LEGEND_ROW_PX = 30


def _legend_below_layout(title: str, height: int, entries: int, per_row: int) -> dict[str, Any]:
    """The layout of a pannable plot of paths with its legend below it, ``per_row`` entries a row, its
    top ``LEGEND_BELOW_PX`` under the plot whatever the plot's height (the figure grows by
    ``LEGEND_ROW_PX`` a legend row, so that no entry is cut off or scrolled); the caller adds the axes."""
    legend_rows = math.ceil(entries / per_row)
    top_px, axis_px = 35, LEGEND_BELOW_PX + 10  # above the plot; below it, besides the legend rows
    plot_px = height - top_px - axis_px  # the figure's height less both margins, its legend rows aside
    return {
        "title": {"text": plain(title), "font": {"size": 13}},
        "height": height + LEGEND_ROW_PX * legend_rows,
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": TOOLBAR_PX, "t": top_px, "b": axis_px + LEGEND_ROW_PX * legend_rows},
        "modebar": TOOLBAR,
        "clickmode": "event+select",
        "dragmode": "pan",
        "hovermode": "closest",  # as Streamlit would set it: set here, it needs no second pass
        "legend": {
            "orientation": "h",
            "font": {"size": 10},
            "x": 0,
            "xanchor": "left",
            "y": -LEGEND_BELOW_PX / plot_px,  # paper coordinates: fractions of the plot's height
            "yanchor": "top",
            "entrywidth": 1.0 / per_row,
            "entrywidthmode": "fraction",
        },
    }


@dataclass(frozen=True)
class MapPanel:
    """One window on its map: city-frame geometry, title, colour, the other road users around it."""

    title: str
    window_xy: np.ndarray  # (T, 2) city frame
    color: str
    geometry: MapGeometry | None = None
    others_xy: Sequence[np.ndarray] = ()
    row: int | None = None  # customdata: a click on the window picks this row
    others_offset: Sequence[int] = ()  # step of the window at which each other polyline starts
    hover: Sequence[str] = ()  # lines shown on hovering the window (default: the title), e.g. title and id


def map_traces(
    geometry: MapGeometry, box: tuple[float, float, float, float] | None, axes: dict[str, str]
) -> list[dict[str, Any]]:
    """Drivable areas and crossings (filled) and lane boundaries (lines) in the city frame."""
    traces = []
    for polys, fill in (
        (geometry.drivable_areas, MAP_FILLS["drivable area"]),
        (geometry.crossings, MAP_FILLS["crosswalk"]),
    ):
        x, y = _joined(_crop(polys, box))
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": y,
                "fill": "toself",
                "fillcolor": fill,
                "line": {"width": 0},
                "hoverinfo": "skip",
                "showlegend": False,
                **axes,
            }
        )
    x, y = _joined(_clip_lines(_crop(geometry.lane_boundaries, box), box))
    traces.append(
        {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": y,
            "line": {"color": LANE_COLOR, "width": 0.8},
            "hoverinfo": "skip",
            "showlegend": False,
            **axes,
        }
    )
    return traces


#: Every this many steps a trajectory carries a marker one can click (plotly selects points, not
#: lines); a marker on each of the 60 steps made every redraw of the maps and the overlay several times
#: slower in the browser (one SVG node each).
CLICK_EVERY = 5


def _clickable_line(
    xy: np.ndarray,
    common: dict[str, Any],
    line: dict[str, Any],
    marker: dict[str, Any],
    row: int | None,
    hovertemplate: str,
) -> list[dict[str, Any]]:
    """A trajectory as a line, and markers every ``CLICK_EVERY`` steps (and at the end) that carry its
    ``row`` as customdata, so that a click near it picks it."""
    take = np.unique(np.r_[np.arange(0, len(xy), CLICK_EVERY), len(xy) - 1])
    points: dict[str, Any] = {
        "type": "scatter",
        "mode": "markers",
        "x": np.round(xy[take, 0], 2),
        "y": np.round(xy[take, 1], 2),
        "marker": marker,
        "unselected": {"marker": {"opacity": 1}},
        "hovertemplate": hovertemplate,
        **common,
        "showlegend": False,
    }
    if row is not None:
        points["customdata"] = np.full(len(take), row)
    path = {
        "type": "scatter",
        "mode": "lines",
        "x": np.round(xy[:, 0], 2),
        "y": np.round(xy[:, 1], 2),
        "line": line,
        "hoverinfo": "skip",
        **common,
    }
    return [path, points]


#: The map grid's tiles (``map_grid_figure``): width 1 in the figure's units, the map's height from the
#: panel height over this expected tile width in pixels (three tiles beside the overlay on Explore), a
#: strip for the title above each map, and the gap between tiles.
TILE_PX = 200
TILE_TITLE = 0.1
TILE_GAP = 0.05


@dataclass(frozen=True)
class _Tile:
    """Where a panel's map goes in the grid's one pair of axes: ``box`` (x0, y0, x1, y1, city metres)
    is drawn at ``scale`` figure units per metre with its lower left corner at ``corner``."""

    box: tuple[float, float, float, float]
    scale: float
    corner: tuple[float, float]

    def place(self, xy: np.ndarray) -> np.ndarray:
        """(P, 2) city metres -> figure units."""
        return (np.asarray(xy, dtype=np.float64)[:, :2] - self.box[:2]) * self.scale + self.corner


def _clip_polygons(
    polygons: Sequence[np.ndarray], box: tuple[float, float, float, float]
) -> list[np.ndarray]:
    """The parts of closed polygons inside ``box`` (matplotlib's polygon clipping)."""
    from matplotlib.path import Path
    from matplotlib.transforms import Bbox

    if not polygons:
        return []
    compound = Path.make_compound_path(*[Path(np.asarray(p)[:, :2], closed=True) for p in polygons])
    clipped = compound.clip_to_bbox(Bbox([box[:2], box[2:]]))
    polys = [np.asarray(p) for p in clipped.to_polygons()]
    return [p for p in polys if len(p) >= 3]


def _clip_polylines(lines: Sequence[np.ndarray], tile: _Tile) -> list[np.ndarray]:
    """The parts of open polylines inside the tile's box, placed in the grid (matplotlib's line
    clipping, which pads its rectangle by one unit: done in thousandths of a tile, then held to the
    tile's edge)."""
    from matplotlib.path import Path

    if not lines:
        return []
    placed = [tile.place(p) for p in lines if len(p) >= 2]
    if not placed:
        return []
    compound = Path.make_compound_path(*[Path(p * 1000.0) for p in placed])
    (x0, y0), (x1, y1) = tile.place(np.array([tile.box[:2], tile.box[2:]])) * 1000.0
    clipped = compound.cleaned(clip=(x0, y0, x1, y1))
    lo, hi = np.array([x0, y0]) / 1000.0, np.array([x1, y1]) / 1000.0
    pieces = [np.clip(np.asarray(p) / 1000.0, lo, hi) for p in clipped.to_polygons(closed_only=False)]
    return [p for p in pieces if len(p) >= 2]


def _tiles(
    panels: Sequence[MapPanel], columns: int, panel_height: int, margin_m: float
) -> tuple[list[_Tile], tuple[float, float, float, float]]:
    """A tile per panel (its window's extent plus ``margin_m``, widened to the tile's shape) and the
    grid's extent (x0, x1, y0, y1) in figure units. One panel stays in city metres (one map large, the
    sketch canvas: its axes are the city frame)."""
    boxes = []
    for panel in panels:
        x0, y0 = panel.window_xy.min(axis=0) - margin_m
        x1, y1 = panel.window_xy.max(axis=0) + margin_m
        boxes.append((float(x0), float(y0), float(x1), float(y1)))
    if len(panels) == 1:
        x0, y0, x1, y1 = boxes[0]
        return [_Tile(boxes[0], 1.0, (x0, y0))], (x0, x1, y0, y1)
    aspect = max(0.3, (panel_height - TILE_TITLE * TILE_PX) / TILE_PX - TILE_TITLE)
    rows_n = math.ceil(len(panels) / columns)
    tiles = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        r, c = divmod(i, columns)
        width, height = max(x1 - x0, (y1 - y0) / aspect), max(y1 - y0, (x1 - x0) * aspect)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
        top = -r * (aspect + TILE_TITLE + TILE_GAP) - TILE_TITLE
        tiles.append(_Tile(box, 1.0 / width, (c * (1 + TILE_GAP), top - aspect)))
    extent = (
        0.0,
        columns * (1 + TILE_GAP) - TILE_GAP,
        -rows_n * (aspect + TILE_TITLE + TILE_GAP) + TILE_GAP,
        0.0,
    )
    return tiles, extent


def map_grid_figure(
    panels: Sequence[MapPanel],
    columns: int = 3,
    panel_height: int = 270,
    margin_m: float = 20.0,
    at_step: int | None = None,
) -> go.Figure:
    """Every panel as a small map, tiled in ONE pair of axes: the window thick, other road users of its
    scenario during the same seconds thin and faint, start circle, end arrow, a scale bar (each map has
    its own zoom). What the browser redraws on every query is a handful of traces whatever the number
    of maps (one per kind of line or marker over all maps, plus one line per window for its colour):
    seven maps in seven subplots of nine traces each took Plotly several times as long. Everything is
    clipped to its tile. Each window's points carry its row (customdata) and title (hover): a click
    picks it. One panel is drawn in city metres (pannable).

    ``at_step``: the scene at one moment, the same step of every window (playback): each window thick
    up to that step and faint after it, with a dot where it is; the other road users as dots where
    they are then (those present; ``others_offset`` places them in time), with their path so far."""
    n = max(1, len(panels))
    columns = max(1, min(columns, n))
    rows_n = math.ceil(n / columns)
    tiles, (gx0, gx1, gy0, gy1) = (
        _tiles(panels, columns, panel_height, margin_m) if panels else ([], (0, 1, 0, 1))
    )
    single = len(panels) == 1
    drivable: list[np.ndarray] = []
    crossings: list[np.ndarray] = []
    lanes: list[np.ndarray] = []
    others: list[np.ndarray] = []
    others_now: list[np.ndarray] = []
    windows: list[dict[str, Any]] = []
    pick_xy, pick_color, pick_row, pick_text = [], [], [], []
    end_paths: list[np.ndarray] = []
    end_colors: list[str] = []
    end_sizes: list[float] = []
    end_starts: list[bool] = []
    here_xy, here_color = [], []
    bars: list[np.ndarray] = []
    text_xy, text, text_pos, text_size = [], [], [], []
    frames: list[np.ndarray] = []
    for panel, tile in zip(panels, tiles, strict=True):
        box = tile.box
        if panel.geometry is not None:
            g = panel.geometry
            if single:  # its own axes clip it
                drivable += _crop(g.drivable_areas, box)
                crossings += _crop(g.crossings, box)
                lanes += _clip_lines(_crop(g.lane_boundaries, box), box)
            else:
                drivable += [tile.place(p) for p in _clip_polygons(_crop(g.drivable_areas, box), box)]
                crossings += [tile.place(p) for p in _clip_polygons(_crop(g.crossings, box), box)]
                lanes += _clip_polylines(_crop(g.lane_boundaries, box), tile)
        window = tile.place(panel.window_xy)
        if at_step is None:
            others += list(panel.others_xy) if single else _clip_polylines(panel.others_xy, tile)
            kept = [p for p in panel.others_xy if len(p) >= 2]
            if single:
                end_paths += kept
            else:  # an end arrow only where the end lies in the tile
                x0, y0, x1, y1 = box
                end_paths += [tile.place(p) for p in kept if x0 <= p[-1, 0] <= x1 and y0 <= p[-1, 1] <= y1]
            end_colors += [f"rgba({OTHERS_RGB},0.45)"] * (len(end_paths) - len(end_colors))
            end_sizes += [6.0] * (len(end_paths) - len(end_sizes))
            end_starts += [False] * (len(end_paths) - len(end_starts))
            windows.append({"xy": window, "color": panel.color, "width": 3.5, "opacity": 1.0})
            end_paths.append(window)
            end_colors.append(panel.color)
            end_sizes.append(11.0)
            end_starts.append(True)
        else:
            trails, now = _others_at(panel, at_step)
            others += trails if single else _clip_polylines(trails, tile)
            x0, y0, x1, y1 = box
            others_now += [tile.place(p[None]) for p in now if x0 <= p[0] <= x1 and y0 <= p[1] <= y1]
            j = int(np.clip(at_step, 0, len(window) - 1))
            windows.append({"xy": window, "color": panel.color, "width": 2, "opacity": 0.35})
            windows.append({"xy": window[: j + 1], "color": panel.color, "width": 4, "opacity": 1.0})
            here_xy.append(window[j])
            here_color.append(panel.color)
        take = np.unique(np.r_[np.arange(0, len(window), CLICK_EVERY), len(window) - 1])
        pick_xy.append(window[take])
        pick_color += [panel.color] * len(take)
        pick_row += [panel.row] * len(take)
        pick_text += ["<br>".join(plain(line) for line in (panel.hover or [panel.title]))] * len(take)
        # A scale bar of a round length (about a fifth of the map) in its lower left corner.
        width_m = box[2] - box[0]
        length = max((v for v in (5, 10, 20, 50, 100, 200, 500, 1000) if v <= width_m / 4), default=5)
        bx, by = box[0] + 0.05 * width_m, box[1] + 0.06 * (box[3] - box[1])
        bar = tile.place(np.array([[bx, by], [bx + length, by]]))
        bars.append(bar)
        text_xy.append(bar.mean(axis=0))
        text.append(f"{length} m")
        text_pos.append("top center")
        text_size.append(9)
        if not single:  # the title above its map, and a frame around it
            frames.append(
                tile.place(np.array([box[:2], (box[2], box[1]), box[2:], (box[0], box[3]), box[:2]]))
            )
            text_xy.append(np.array([tile.corner[0], tile.corner[1] + (box[3] - box[1]) * tile.scale]))
            text.append(f"<span style='color:{panel.color}'>■</span> {plain(panel.title)}")
            text_pos.append("top right")
            text_size.append(11)
    skip = {"hoverinfo": "skip", "showlegend": False}
    data: list[dict[str, Any]] = []
    for polygons, fill in ((drivable, MAP_FILLS["drivable area"]), (crossings, MAP_FILLS["crosswalk"])):
        if polygons:
            x, y = _joined(polygons)
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": x,
                    "y": y,
                    "fill": "toself",
                    "fillcolor": fill,
                    "line": {"width": 0},
                    **skip,
                }
            )
    for lines, style in (
        (lanes, {"color": LANE_COLOR, "width": 0.8}),
        (others, {"color": f"rgba({OTHERS_RGB},{0.35 if at_step is None else 0.45})", "width": 1.5}),
    ):
        if lines:
            x, y = _joined(lines)
            data.append({"type": "scatter", "mode": "lines", "x": x, "y": y, "line": style, **skip})

    def dots(xy: np.ndarray, size: float, color: str | list[str], outline_px: float) -> dict[str, Any]:
        """Positions at one moment (playback): filled dots outlined in white."""
        marker = {"size": size, "color": color, "line": {"color": "white", "width": outline_px}}
        return {"type": "scatter", "mode": "markers", "x": xy[:, 0], "y": xy[:, 1], "marker": marker, **skip}

    if others_now:
        data.append(dots(np.concatenate(others_now), 8, OTHERS_COLOR, 1))
    for w in windows:  # one line per window: a line has one colour
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": np.round(w["xy"][:, 0], 4),
                "y": np.round(w["xy"][:, 1], 4),
                "line": {"color": w["color"], "width": w["width"]},
                "opacity": w["opacity"],
                **skip,
            }
        )
    if here_xy:
        data.append(dots(np.asarray(here_xy), 13, here_color, 2))
    data += _ends(end_paths, end_colors, end_sizes, starts=end_starts)
    if pick_xy:
        xy = np.concatenate(pick_xy)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": np.round(xy[:, 0], 4),
                "y": np.round(xy[:, 1], 4),
                "marker": {"size": 4 if at_step is not None else 5, "color": pick_color},
                "opacity": 0.35 if at_step is not None else 1.0,
                "unselected": {"marker": {"opacity": 1}},
                "customdata": pick_row,
                "hovertext": pick_text,
                "hovertemplate": "%{hovertext}<extra></extra>",
                "showlegend": False,
            }
        )
    if frames:
        x, y = _joined(frames)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": y,
                "line": {"color": "#ccc", "width": 1},
                **skip,
            }
        )
    if bars:
        x, y = _joined(bars)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": y,
                "line": {"color": "#333", "width": 2},
                **skip,
            }
        )
        xy = np.asarray(text_xy)
        data.append(
            {
                "type": "scatter",
                "mode": "text",
                "x": xy[:, 0],
                "y": xy[:, 1],
                "text": text,
                "textposition": text_pos,
                "textfont": {"size": text_size, "color": "#222"},
                **skip,
            }
        )
    fixed = {} if single else {"fixedrange": True}
    layout: dict[str, Any] = {
        "height": rows_n * panel_height + (30 if single else 20),
        "plot_bgcolor": "white",
        "showlegend": False,
        "margin": {"l": 10, "r": TOOLBAR_PX, "t": 30 if single else 10, "b": 10, "autoexpand": False},
        "modebar": TOOLBAR,
        "clickmode": "event+select",
        "dragmode": "pan" if single else False,
        "hovermode": "closest",
        "xaxis": {"range": [gx0, gx1], "visible": False, "constrain": "domain", **fixed},
        "yaxis": {"range": [gy0, gy1], "visible": False, "scaleanchor": "x", "constrain": "domain", **fixed},
    }
    if single and panels:
        layout["annotations"] = [
            {
                "text": f"<span style='color:{panels[0].color}'>■</span> {plain(panels[0].title)}",
                "x": 0,
                "y": 1,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "left",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 11, "color": "#222"},
            }
        ]
    return figure(data, layout)


def _others_at(panel: MapPanel, step: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The other road users present at ``step`` of the window: their paths so far and where they are
    (city frame)."""
    offsets = list(panel.others_offset) or [0] * len(panel.others_xy)
    trails, now = [], []
    for offset, poly in zip(offsets, panel.others_xy, strict=True):
        j = step - int(offset)
        if 0 <= j < len(poly):
            trails.append(poly[: j + 1])
            now.append(np.asarray(poly[j]))
    return trails, now


def projection_raster(
    xy: np.ndarray,
    codes: np.ndarray,
    colors: Sequence[str],
    extent: tuple[float, float, float, float],
    size_px: tuple[int, int] = (900, 640),
    point_px: int = 3,
) -> bytes:
    """PNG of a point cloud of any size: each point covers ``point_px`` x ``point_px`` pixels (about
    the size of a marker at the image's size on the page, so that a sparse view is not a few faint
    dots), each pixel takes the colour of its most frequent category, and its opacity grows with the
    log of its point count. ``extent`` (x0, x1, y0, y1) maps to the image; points outside are left out."""
    from PIL import Image
    from scipy.ndimage import uniform_filter

    w, h = size_px
    x0, x1, y0, y1 = extent
    inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    xy, codes = xy[inside], codes[inside]
    px = np.clip(((xy[:, 0] - x0) / max(x1 - x0, 1e-9) * (w - 1)).astype(np.int64), 0, w - 1)
    py = np.clip(((y1 - xy[:, 1]) / max(y1 - y0, 1e-9) * (h - 1)).astype(np.int64), 0, h - 1)
    flat = py * w + px
    num_cats = len(colors)
    counts = np.zeros((num_cats, h, w), dtype=np.float32)
    for c in range(num_cats):
        sel = codes == c
        if sel.any():
            counts[c] = np.bincount(flat[sel], minlength=w * h).reshape(h, w)
    if point_px > 1:  # each point spread over its square: a box sum over point_px x point_px
        counts = uniform_filter(counts, size=(1, point_px, point_px), mode="constant") * point_px**2
    per_pixel = counts.reshape(num_cats, -1)
    total = per_pixel.sum(axis=0)
    top = per_pixel.argmax(axis=0)
    rgb = np.array([[int(col[i : i + 2], 16) for i in (1, 3, 5)] for col in colors], dtype=np.uint8)
    image = np.zeros((w * h, 4), dtype=np.uint8)
    image[:, :3] = rgb[top]
    filled = total > 0.5
    alpha = np.where(filled, 90 + 165 * np.log1p(total) / np.log1p(max(1.0, float(total.max()))), 0)
    image[:, 3] = alpha.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image.reshape(h, w, 4), "RGBA").save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


Raster = tuple[str, tuple[float, float, float, float]]  # image URL, extent (x0, x1, y0, y1)


def projection_figure(
    xy: np.ndarray,
    codes: np.ndarray,
    categories: Sequence[str],
    label_name: str,
    rows: np.ndarray,
    raster: Sequence[Raster] = (),
    query_row: int | None = None,
    neighbor_rows: Sequence[int] = (),
    height: int = 560,
    dragmode: str = "zoom",
    view: tuple[float, float, float, float] | None = None,
    hover_cards: bool = False,
    marks: bool = True,
    full: tuple[float, float, float, float] | None = None,
    clickmode: str = "event+select",
) -> go.Figure:
    """2-D layout coloured by a label: ``rows`` drawn as WebGL markers (every row in view, or one
    pickable point per grid cell over ``raster`` images (url, extent), the whole layout's and, zoomed
    in, the view's drawn finer on top); neighbours ringed, the query marked. Points carry their row as
    customdata, so a click or selection picks rows. ``view``: the axes' extent (default: the images').
    ``hover_cards``: a companion draws the hover card (``app/companion.py``), so plotly's is off.
    ``marks=False``: the query and its neighbours are left to the companion, so that the figure stays
    the same from one query to the next (a changed figure is a new chart in Streamlit: a new WebGL
    context and every point and image drawn again on each click). ``full``: the whole layout's extent,
    where Plotly's autoscale (the Autoscale button, a double-click) lands however few of the points a
    zoomed figure holds (it knew only those, and crept outward a little at each double-click).
    ``clickmode``: Plotly's; "event" where clicks are picked up by a companion, not by a selection."""
    rasters = list(raster)
    colors = label_colors(label_name, categories)
    data: list[dict[str, Any]] = []
    small = not rasters
    for c, cat in enumerate(categories):
        sel = rows[codes[rows] == c]
        if not len(sel) and not small:
            continue
        trace: dict[str, Any] = {
            "type": "scattergl",
            "mode": "markers",
            "name": plain(cat),
            "x": xy[sel, 0],
            "y": xy[sel, 1],
            "customdata": sel,
            "marker": {"size": 4 if small else 5, "color": colors[c], "opacity": 0.6 if small else 0.3},
            "unselected": {
                "marker": {"opacity": 0.6 if small else 0.3}
            },  # a click picks; it does not dim the rest
        }
        if hover_cards:
            trace["hoverinfo"] = "none"
        else:
            trace["hovertemplate"] = f"{plain(label_name)}: {plain(cat)}<extra></extra>"
        data.append(trace)
    if len(neighbor_rows) and marks:
        h = np.asarray(neighbor_rows)
        data.append(
            {
                "type": "scattergl",
                "mode": "markers",
                "name": "neighbours",
                "x": xy[h, 0],
                "y": xy[h, 1],
                "customdata": h,
                **({"hoverinfo": "none"} if hover_cards else {"hovertemplate": "neighbour<extra></extra>"}),
                "marker": {
                    "size": 17,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": NEIGHBOUR_RING_COLOR, "width": 3},
                },
            }
        )
    if query_row is not None and marks:
        data.append(
            {
                "type": "scattergl",
                "mode": "markers",
                "name": "query",
                "x": xy[[query_row], 0],
                "y": xy[[query_row], 1],
                "customdata": [query_row],
                **({"hoverinfo": "none"} if hover_cards else {"hovertemplate": "query<extra></extra>"}),
                "marker": {
                    "size": 11,
                    "symbol": "x",
                    "color": QUERY_COLOR,
                    "line": {"color": "white", "width": 1},
                },
            }
        )
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 40, "r": TOOLBAR_PX, "t": 20, "b": 80},
        "modebar": TOOLBAR,
        "plot_bgcolor": "white",
        # Below the plot: at the side the upright toolbar covered its top entries.
        "legend": {
            "title": {"text": plain(label_name)},
            "itemsizing": "constant",
            "orientation": "h",
            "x": 0,
            "y": -0.14,
            "yanchor": "top",
        },
        "dragmode": dragmode,
        "clickmode": clickmode,
        "uirevision": "keep",
        "hovermode": "closest",
        "xaxis": {"title": {"text": "UMAP 1"}, "showgrid": False, "zeroline": False},
        "yaxis": {"title": {"text": "UMAP 2"}, "showgrid": False, "zeroline": False},
    }
    if rasters:
        layout["images"] = [
            {
                "source": url,
                "xref": "x",
                "yref": "y",
                "x": x0,
                "y": y1,
                "sizex": x1 - x0,
                "sizey": y1 - y0,
                "sizing": "stretch",
                "layer": "below",
            }
            for url, (x0, x1, y0, y1) in rasters
        ]
    extent = view or (rasters[0][1] if rasters else None)
    if extent is not None:
        layout["xaxis"]["range"] = [extent[0], extent[1]]
        layout["yaxis"]["range"] = [extent[2], extent[3]]
    if full is not None:
        layout["xaxis"]["autorangeoptions"] = {"minallowed": full[0], "maxallowed": full[1]}
        layout["yaxis"]["autorangeoptions"] = {"minallowed": full[2], "maxallowed": full[3]}
    return figure(data, layout)


def gallery_figure(
    paths_xy: Sequence[np.ndarray],
    labels: Sequence[str],
    categories: Sequence[str],
    label_name: str,
    rows: Sequence[int],
    title: str,
    height: int = 460,
) -> go.Figure:
    """Selected trajectories overlaid in the agent frame, one legend entry per category; a click on a
    trajectory picks its row."""
    colors = dict(zip(categories, label_colors(label_name, categories), strict=True))
    data: list[dict[str, Any]] = []
    for cat in categories:
        idx = [i for i, lab in enumerate(labels) if lab == cat]
        if not idx:
            continue
        gap = np.full((1, 2), np.nan)
        xy = np.concatenate([np.concatenate([paths_xy[i], gap]) for i in idx])
        custom = np.concatenate([np.full(len(paths_xy[i]) + 1, int(rows[i])) for i in idx])
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plain(cat),
                "x": np.round(xy[:, 0], 2),
                "y": np.round(xy[:, 1], 2),
                "customdata": custom,
                "line": {"color": colors[cat], "width": 1.5},
                "marker": {"size": 2.5, "color": colors[cat]},
                "unselected": {"marker": {"opacity": 1}},
                "opacity": 0.8,
                "hovertemplate": f"{plain(cat)}, row %{{customdata}}<extra></extra>",
            }
        )
    data += _ends(list(paths_xy), [colors[lab] for lab in labels], 6)
    layout = {
        "title": {"text": plain(title), "font": {"size": 13}},
        "height": height,
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": TOOLBAR_PX, "t": 35, "b": 40},
        "modebar": TOOLBAR,
        "clickmode": "event+select",
        "legend": {"title": {"text": plain(label_name)}},
        "xaxis": _axis("x (m, agent frame)"),
        "yaxis": _axis("y (m, to the left)", scaleanchor="x", scaleratio=1),
    }
    return figure(data, layout)


def grouped_bar_figure(
    values: dict[str, dict[str, float]], metrics: Sequence[str], title: str, y_title: str, height: int = 380
) -> go.Figure:
    """One group of bars per metric, one bar per method (``values[method][metric]``)."""
    data = []
    for i, (method, row) in enumerate(values.items()):
        data.append(
            {
                "type": "bar",
                "name": plain(method),
                "x": list(metrics),
                "y": [row.get(m) for m in metrics],
                "marker": {"color": PALETTE[i % len(PALETTE)]},
                "hovertemplate": f"{plain(method)}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
            }
        )
    layout = {
        "title": {"text": plain(title), "font": {"size": 13}},
        "barmode": "group",
        "height": height,
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": TOOLBAR_PX, "t": 35, "b": 40},
        "modebar": TOOLBAR,
        "legend": {"orientation": "h", "y": -0.18},
        "yaxis": _axis(y_title, type="log"),  # random neighbours are an order of magnitude worse
        "xaxis": {"type": "category"},
    }
    return figure(data, layout)


def _line_trace(name: str, points: Sequence[tuple[float, float]], index: int) -> dict[str, Any]:
    """A line with markers through (x, y) ``points``, in the ``index``-th palette colour."""
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "name": plain(name),
        "x": [p[0] for p in points],
        "y": [p[1] for p in points],
        "line": {"color": PALETTE[index % len(PALETTE)]},
    }


def metric_vs_dim_figure(
    points: dict[str, list[tuple[int, float]]], reference: dict[str, float], metric: str, height: int = 360
) -> go.Figure:
    """``metric`` against embedding dimension D, one line per group (e.g. mining similarity), with
    horizontal reference lines (oracle, PCA)."""
    data = [_line_trace(name, sorted(pts), i) for i, (name, pts) in enumerate(points.items())]
    dims = sorted({p[0] for pts in points.values() for p in pts})
    for j, (name, y) in enumerate(reference.items()):
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": plain(name),
                "x": [dims[0], dims[-1]] if dims else [0, 1],
                "y": [y, y],
                "line": {"color": "#555", "dash": ["dot", "dash", "dashdot"][j % 3], "width": 1.5},
            }
        )
    layout = {
        "title": {"text": f"{plain(metric)} against embedding dimension D", "font": {"size": 13}},
        "height": height,
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": TOOLBAR_PX, "t": 35, "b": 40},
        "modebar": TOOLBAR,
        "xaxis": _axis("D", type="log", tickvals=dims),
        "yaxis": _axis(f"{plain(metric)} (m)"),
    }
    return figure(data, layout)


def curves_figure(
    curves: dict[str, list[tuple[float, float]]],
    title: str,
    x_title: str,
    y_title: str,
    dashed: Sequence[str] = (),
    height: int = 420,
) -> go.Figure:
    """One line with markers per method (e.g. a robustness curve: a score against a perturbation's
    level); methods named in ``dashed`` (baselines) are drawn dashed, so models stand out."""
    data = []
    for i, (name, points) in enumerate(curves.items()):
        trace = _line_trace(name, points, i)
        trace["line"]["dash"] = "dash" if name in dashed else "solid"
        trace["hovertemplate"] = (
            f"{plain(name)}<br>{plain(x_title)} %{{x}}<br>{plain(y_title)} %{{y:.3f}}<extra></extra>"
        )
        data.append(trace)
    layout = {
        "title": {"text": plain(title), "font": {"size": 13}},
        "height": height,
        "plot_bgcolor": "white",
        "margin": {"l": 50, "r": TOOLBAR_PX, "t": 35, "b": 10},
        "modebar": TOOLBAR,
        "legend": {"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.25, "x": 0},
        "xaxis": _axis(x_title),
        "yaxis": _axis(y_title),
    }
    return figure(data, layout)


#: How the forecast figure draws the query and the physical baselines (retrieved futures: rank colours).
FORECAST_STYLES: dict[str, dict[str, Any]] = {
    "history": {"color": QUERY_COLOR, "width": 4},
    "true future": {"color": QUERY_COLOR, "width": 3, "dash": "dot"},
    "constant velocity": {"color": "#6E6E6E", "width": 2.5, "dash": "dash"},
    "constant acceleration": {"color": "#6E6E6E", "width": 2.5, "dash": "dashdot"},
}


def forecast_figure(
    history_xy: np.ndarray,
    futures_xy: Sequence[np.ndarray],
    names: Sequence[str],
    probabilities: Sequence[float],
    rows: Sequence[int] | None = None,
    truth_xy: np.ndarray | None = None,
    baselines: dict[str, np.ndarray] | None = None,
    geometry: MapGeometry | None = None,
    city_frame: bool = True,
    title: str = "Forecast",
    height: int = 560,
    margin_m: float = 15.0,
) -> go.Figure:
    """One query's forecast: its (H, 2) history (thick black), K (F, 2) retrieved futures (rank colours,
    wider and more opaque the more probable; ``rows`` as customdata, so that a click picks the bank
    window a future came from), the (F, 2) true future (black dots) and the physical ``baselines`` (name
    -> (F, 2), grey dashes), all in one frame: the city frame on the query's map (``geometry``), or the
    query's agent frame. Every future starts at the history's last point."""
    last = np.asarray(history_xy, dtype=np.float64)[-1:]
    colors = rank_colors(len(futures_xy))
    data: list[dict[str, Any]] = []
    paths: list[np.ndarray] = [np.asarray(history_xy, dtype=np.float64)]
    for i, (xy, name, p) in enumerate(zip(futures_xy, names, probabilities, strict=True)):
        path = np.concatenate([last, np.asarray(xy, dtype=np.float64)])
        paths.append(path)
        data += _clickable_line(
            path,
            {"name": plain(name), "legendgroup": f"f{i}", "opacity": float(0.45 + 0.55 * min(1.0, 2 * p))},
            {"color": colors[i], "width": float(1.5 + 5 * p)},
            {"size": 5, "color": colors[i]},
            None if rows is None else int(rows[i]),
            f"{plain(name)}<extra></extra>",
        )
    extra: dict[str, np.ndarray | None] = {"true future": truth_xy, **(baselines or {})}
    for name, line_xy in extra.items():
        if line_xy is None:
            continue
        path = np.concatenate([last, np.asarray(line_xy, dtype=np.float64)])
        paths.append(path)
        style = FORECAST_STYLES.get(name, FORECAST_STYLES["constant velocity"])
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": np.round(path[:, 0], 2),
                "y": np.round(path[:, 1], 2),
                "name": plain(name),
                "line": style,
                "hovertemplate": f"{plain(name)}<extra></extra>",
            }
        )
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "x": np.round(paths[0][:, 0], 2),
            "y": np.round(paths[0][:, 1], 2),
            "name": "history",
            "line": FORECAST_STYLES["history"],
            "hovertemplate": "history<extra></extra>",
        }
    )
    data += _ends([paths[0]], [QUERY_COLOR], 11)
    data += _ends(paths[1:], [*colors, *["#6E6E6E"] * (len(paths) - 1 - len(colors))], 9, starts=False)
    everything = np.concatenate(paths)
    everything = everything[np.isfinite(everything).all(axis=1)]
    x0, y0 = everything.min(axis=0) - margin_m
    x1, y1 = everything.max(axis=0) + margin_m
    box = (float(x0), float(y0), float(x1), float(y1))
    if geometry is not None:
        data = map_traces(geometry, box, {"xaxis": "x", "yaxis": "y"}) + data
    frame = "city frame" if city_frame else "agent frame: initial heading"
    layout = _legend_below_layout(title, height, len(futures_xy) + len(extra) + 1, 3)
    layout["xaxis"] = _axis(f"x (m, {frame})", range=[box[0], box[2]])
    layout["yaxis"] = _axis("y (m)", range=[box[1], box[3]], scaleanchor="x", scaleratio=1)
    return figure(data, layout)


#: The agent-frame drawing area of a sketch (metres): x from behind the start to well ahead, y either side.
SKETCH_X_M = (-10.0, 90.0)
SKETCH_Y_M = (-50.0, 50.0)
SKETCH_COLOR = "#d62728"


def sketch_figure(
    drawn_xy: np.ndarray | None,
    window_xy: np.ndarray | None,
    base: go.Figure | None = None,
    height: int = 520,
) -> go.Figure:
    """A figure to draw a path on with Plotly's own "draw open path" tool (the drag mode): the agent
    frame's metres grid with the origin and +x heading marked, or ``base`` (a map of one scene, city
    frame). ``drawn_xy`` (P, 2): the path drawn last, as drawn (dashed); ``window_xy`` (T, 2): the
    window made of it, in the same frame (black dots, start circled)."""
    data: list[dict[str, Any]] = []
    if base is None:
        layout: dict[str, Any] = {
            "height": height,
            "plot_bgcolor": "white",
            "showlegend": True,
            "legend": {"orientation": "h", "y": 1.0, "yanchor": "bottom"},
            "margin": {"l": 40, "r": TOOLBAR_PX, "t": 40, "b": 40},
            "modebar": TOOLBAR,
            "xaxis": {
                "range": list(SKETCH_X_M),
                "dtick": 10,
                "gridcolor": "#e5e5e5",
                "zerolinecolor": "#999",
                "title": {"text": "x (m), heading at the start"},
                "constrain": "domain",
            },
            "yaxis": {
                "range": list(SKETCH_Y_M),
                "dtick": 10,
                "gridcolor": "#e5e5e5",
                "zerolinecolor": "#999",
                "title": {"text": "y (m), left"},
                "scaleanchor": "x",
                "constrain": "domain",
            },
            "annotations": [
                {
                    "x": 8,
                    "y": 0,
                    "ax": 0,
                    "ay": 0,
                    "xref": "x",
                    "yref": "y",
                    "axref": "x",
                    "ayref": "y",
                    "showarrow": True,
                    "arrowhead": 2,
                    "arrowwidth": 2,
                    "arrowcolor": "#555",
                    "text": "",
                }
            ],
        }
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [0.0],
                "y": [0.0],
                "name": "start (origin, heading +x)",
                "marker": {"size": 10, "color": "#555", "symbol": "circle-open", "line": {"width": 2}},
                "hoverinfo": "skip",
            }
        )
        fig = figure(data, layout)
    else:
        fig = go.Figure(base)
        fig.update_traces(showlegend=False)  # the map's own lines and road users need no legend
        fig.update_layout(
            showlegend=True,
            legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        )
    traces: list[dict[str, Any]] = []
    if window_xy is not None and len(window_xy):
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": np.round(window_xy[:, 0], 2),
                "y": np.round(window_xy[:, 1], 2),
                "name": f"the query: {len(window_xy)} steps at 10 Hz",
                "showlegend": True,
                "marker": {"size": 4, "color": QUERY_COLOR},
                "hoverinfo": "skip",
            }
        )
    if drawn_xy is not None and len(drawn_xy):
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": np.round(drawn_xy[:, 0], 2),
                "y": np.round(drawn_xy[:, 1], 2),
                "name": "drawn",
                "showlegend": True,
                "line": {"color": SKETCH_COLOR, "width": 2, "dash": "dash"},
                "hoverinfo": "skip",
            }
        )
    for trace in traces:
        fig.add_trace(trace)
    fig.update_layout(
        dragmode="drawopenpath",
        newshape={"line": {"color": SKETCH_COLOR, "width": 3}, "opacity": 0.9},
        clickmode="none",
    )
    return fig
