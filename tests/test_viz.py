"""Figure builders: valid plotly figures (checked with validation on, as the builders skip it), data text
escaped, distinct colours, and the layout image drawing every point where it belongs."""

from __future__ import annotations

import io
import math

import numpy as np
import plotly.graph_objects as go
import pytest
from coloraide import Color
from PIL import Image

from trajemb.data.maps import MapGeometry
from trajemb.serving.viz import (
    DIRECTION_COLORS,
    LANE_COLOR,
    MAP_FILLS,
    OBJECT_TYPE_COLORS,
    OTHERS_COLOR,
    QUERY_COLOR,
    MapPanel,
    agent_frame_figure,
    gallery_figure,
    grouped_bar_figure,
    label_colors,
    map_grid_figure,
    metric_vs_dim_figure,
    plain,
    projection_figure,
    projection_raster,
    rank_colors,
)


def validated(fig: go.Figure) -> go.Figure:
    """Build the figure again with plotly's validation on: raises on any invalid property."""
    return go.Figure(fig.to_dict())


def path(n: int = 30, turn: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return np.stack([30 * t, turn * 30 * t**2], axis=1)


def test_every_builder_makes_a_valid_figure() -> None:
    square = np.array([[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]], dtype=float)
    geometry = MapGeometry([square[:2]], [square[:2]], [square], [square])
    panels = [
        MapPanel(f"#{i} left", path(turn=0.1 * i) + 5, "#0072B2", geometry, [path() + 1], row=i)
        for i in range(5)
    ]
    xy = np.random.default_rng(0).normal(size=(500, 2))
    codes = np.arange(500) % 3
    figures = [
        agent_frame_figure(path(), [path(turn=0.2), path(turn=-0.2)], ["a", "b"], rows=[1, 2]),
        map_grid_figure(panels),
        map_grid_figure(panels[:1]),
        projection_figure(
            xy, codes, ["left", "right", "straight"], "direction", np.arange(500), (), 3, [4, 5]
        ),
        projection_figure(
            xy,
            codes,
            ["a", "b", "c"],
            "city",
            np.arange(0, 500, 7),
            [("data:image/png;base64,", (-3, 3, -3, 3)), ("data:image/png;base64,", (-1, 1, -1, 1))],
            view=(-1, 1, -1, 1),
            hover_cards=True,
        ),
        gallery_figure(
            [path(), path(turn=1)], ["left", "right"], ["left", "right"], "direction", [0, 1], "t"
        ),
        grouped_bar_figure(
            {"m": {"minADE@1": 1.0, "minADE@5": 0.5}, "oracle": {"minADE@1": 0.4}},
            ["minADE@1", "minADE@5"],
            "t",
            "m",
        ),
        metric_vs_dim_figure({"cosine": [(4, 0.6), (16, 0.5)]}, {"oracle": 0.4}, "minADE@5"),
    ]
    for fig in figures:
        validated(fig)
        # Issue 22, bug 7: the toolbar lying along the top covered titles; it stands in a strip of its own.
        assert fig.layout.modebar.orientation == "v" and fig.layout.margin.r >= 30
        # Issue 22 item 10: Streamlit's theme pass after drawing compares the revision, not every array.
        assert fig.layout.datarevision is not None
    grid = figures[1]
    assert sorted(picked_rows(grid)) == [0, 1, 2, 3, 4]


def picked_rows(fig: go.Figure) -> set[int]:
    """The rows a click on a figure's points can pick (their customdata)."""
    return {int(v) for t in fig.data if t.customdata is not None for v in t.customdata if v is not None}


def test_map_grid_is_one_set_of_axes_with_each_map_clipped_to_its_tile() -> None:
    """Issue 22 item 10: seven maps as seven subplots of nine traces each made every query change cost
    the browser hundreds of milliseconds in Plotly. The grid is one pair of axes holding a tile per map:
    a map more adds one trace (its window's line, for its colour), every map's geometry (larger than its
    tile here: a 2 km road and long lanes) is clipped to its tile, each window stays pickable and names
    itself on hover, and the query's own window is not pickable."""
    road = np.array([[-1000.0, -8], [1000, -8], [1000, 8], [-1000, 8], [-1000, -8]])
    lane = np.array([[-1000.0, 0], [1000, 0]])
    crossing = np.array([[10.0, -8], [14, -8], [14, 8], [10, 8], [10, -8]])
    geometry = MapGeometry([lane], [lane], [road], [crossing])

    def panels(n: int) -> list[MapPanel]:
        return [
            MapPanel(
                "query" if i == 0 else f"#{i} left",
                path(turn=0.1 * i) + [100.0 * i, 0],
                QUERY_COLOR if i == 0 else rank_colors(n)[i - 1],
                geometry,
                [np.array([[-500.0, 3], [500, 3]])],  # another road user passing far beyond the tile
                None if i == 0 else 10 + i,
            )
            for i in range(n)
        ]

    seven, three = map_grid_figure(panels(7), columns=3), map_grid_figure(panels(3), columns=3)
    validated(seven)
    layout = seven.to_dict()["layout"]
    assert [k for k in layout if k.startswith(("xaxis", "yaxis"))] == ["xaxis", "yaxis"]
    assert len(seven.data) == len(three.data) + 4
    assert picked_rows(seven) == {11, 12, 13, 14, 15, 16}  # the query (row None) is not pickable
    pick = next(t for t in seven.data if t.customdata is not None)
    assert any(v is None for v in pick.customdata)
    assert {"#3 left", "query"} <= set(pick.hovertext)
    frame = next(t for t in seven.data if t.mode == "lines" and t.line.color == "#ccc")
    corners = np.column_stack([frame.x, frame.y]).reshape(-1, 6, 2)[:, :5]  # 5 corners, then a gap
    assert len(corners) == 7
    tiles = [(c[:, 0].min(), c[:, 0].max(), c[:, 1].min(), c[:, 1].max()) for c in corners]
    for a, b in [(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1 :]]:  # tiles never overlap
        assert a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2]
    drawn = 0
    for t in seven.data:
        if t.mode == "text" or t.x is None:
            continue
        xy = np.column_stack([t.x, t.y]).astype(float)
        xy = xy[np.isfinite(xy).all(axis=1)]
        inside = np.zeros(len(xy), bool)
        for x0, x1, y0, y1 in tiles:
            inside |= (
                (xy[:, 0] >= x0 - 1e-9)
                & (xy[:, 0] <= x1 + 1e-9)
                & (xy[:, 1] >= y0 - 1e-9)
                & (xy[:, 1] <= y1 + 1e-9)
            )
        assert inside.all(), t.line.color if t.mode == "lines" else t.mode
        drawn += len(xy)
    assert drawn > 7 * 30  # the windows at least
    fills = [t for t in seven.data if t.fill == "toself"]
    assert len(fills) == 2 and {t.fillcolor for t in fills} == set(MAP_FILLS.values())
    # Each tile shows its own window's part of the road: the road is cut at the tile's edges.
    road_x = np.asarray(fills[0].x, dtype=float)
    assert np.isfinite(road_x).sum() >= 7 * 4
    # One map alone stays in city metres (one map large, the sketch canvas).
    one = map_grid_figure(panels(1))
    assert one.layout.xaxis.range[0] == pytest.approx(float(path()[:, 0].min()) - 20.0)


def test_data_text_is_escaped() -> None:
    evil = "<img src=http://x/y.png><b>car</b>"
    assert plain(evil) == "&lt;img src=http://x/y.png&gt;&lt;b&gt;car&lt;/b&gt;"
    fig = agent_frame_figure(path(), [path()], [evil])
    spec = fig.to_json()
    assert "<img" not in spec and "<b>car" not in spec


def test_colours_are_distinct() -> None:
    assert len(set(DIRECTION_COLORS.values())) == len(DIRECTION_COLORS)
    assert DIRECTION_COLORS["right"] != DIRECTION_COLORS["lane_change_right"]
    assert OBJECT_TYPE_COLORS["bus"] != OBJECT_TYPE_COLORS["vehicle"]
    assert len(set(label_colors("city", [f"c{i}" for i in range(12)]))) == 12


def _rgb(color: str) -> np.ndarray:
    """sRGB in [0, 1] of ``#RRGGBB`` or ``rgba(r,g,b,a)`` drawn over white."""
    if color.startswith("#"):
        return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    r, g, b, a = (float(v) for v in color[color.index("(") + 1 : -1].split(","))
    return a * np.array([r, g, b]) / 255.0 + (1 - a)


def _color(rgb: np.ndarray) -> Color:
    return Color("srgb", [float(v) for v in rgb])


#: The explorer's largest k (``app/state.py``'s ``MAX_K``; tests/test_app.py checks they agree).
MAX_RANKS = 20


def test_every_rank_is_distinct_and_legible_on_the_map() -> None:
    """Issue 22: at k = 20 ranks 14, 16 and 18 were near-black beside the query's black dotted line,
    ranks 2 and 13 two purples alike (CIELAB's CIE76 distance called them 35 apart; CIEDE2000 9.8),
    and before that 18-20 pale yellow on yellow crosswalks. For every k up to the largest, the first k
    rank colours stay apart from each other and from black in CIEDE2000 (coloraide's), are no greys,
    stand apart from the lane lines and the other road users, and have WCAG's 3:1 contrast on every
    map background."""
    white = np.ones(3)
    grey = _rgb(MAP_FILLS["drivable area"])
    crosswalk_alone = _rgb(MAP_FILLS["crosswalk"])
    alpha = float(MAP_FILLS["crosswalk"].split(",")[-1].rstrip(")"))
    crosswalk_on_road = crosswalk_alone - (1 - alpha) * white + (1 - alpha) * grey
    backgrounds = [_color(b) for b in (white, grey, crosswalk_alone, crosswalk_on_road)]
    query, lanes, others = (_color(_rgb(c)) for c in (QUERY_COLOR, LANE_COLOR, OTHERS_COLOR))
    ranks = rank_colors(MAX_RANKS)
    colors = [Color(c) for c in ranks]
    assert len(set(ranks)) == MAX_RANKS
    for hex_color, color in zip(ranks, colors, strict=True):
        for background in backgrounds:
            assert color.contrast(background, method="wcag21") >= 3.0, hex_color  # not pale
        lightness, a, b = color.convert("lab-d65").coords()
        assert lightness >= 40 and color.delta_e(query, method="2000") >= 35, hex_color  # not near black
        assert math.hypot(a, b) >= 30, hex_color  # not a grey among the grey lanes
        assert color.delta_e(lanes, method="2000") >= 20, hex_color
        assert color.delta_e(others, method="2000") >= 12, hex_color
    for k in range(2, MAX_RANKS + 1):
        first = colors[:k]
        closest = min(a.delta_e(b, method="2000") for i, a in enumerate(first) for b in first[i + 1 :])
        assert closest >= (16 if k <= 10 else 11.5), (k, closest)
    neighbouring = [colors[i].delta_e(colors[i + 1], method="2000") for i in range(MAX_RANKS - 1)]
    assert min(neighbouring) >= 18, neighbouring  # ranks read side by side in legends and tables
    assert rank_colors(3) == ranks[:3]  # a rank keeps its colour whatever k
    assert rank_colors(MAX_RANKS + 1)[-1] == ranks[0]  # beyond the palette: repeated, never an error


def test_overlay_legend_holds_twenty_neighbours_without_overlap() -> None:
    fig = agent_frame_figure(path(), [path()] * 20, [f"#{i + 1}" for i in range(20)])
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.entrywidth == pytest.approx(0.2)  # 5 a row, 5 rows
    assert fig.layout.height >= 430 + 20 * 5
    # Long names (a rank and its label, as the explorer gives up to six neighbours) get wider entries
    # and more rows: five "#5 lane_change_right" a row overlapped in a narrow plot.
    names = ["#1 straight", "#2 left", "#3 right", "#4 straight", "#5 lane_change_right", "#6 u_turn"]
    fig = agent_frame_figure(path(), [path()] * 6, names)
    assert fig.layout.legend.entrywidth == pytest.approx(0.5) and fig.layout.height >= 430 + 20 * 4


def test_layout_image_puts_each_class_where_its_points_are() -> None:
    xy = np.array([[0.0, 0.0]] * 50 + [[10.0, 10.0]] * 50)
    codes = np.array([0] * 50 + [1] * 50)
    png = projection_raster(
        xy, codes, ["#0000FF", "#FF0000"], (0.0, 10.0, 0.0, 10.0), size_px=(11, 11), point_px=1
    )
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert image.shape == (11, 11, 4)
    assert tuple(image[10, 0, :3]) == (0, 0, 255) and image[10, 0, 3] > 0  # (0, 0): bottom left, blue
    assert tuple(image[0, 10, :3]) == (255, 0, 0) and image[0, 10, 3] > 0  # (10, 10): top right, red
    assert image[5, 5, 3] == 0  # empty pixels are transparent
    spread = np.asarray(
        Image.open(
            io.BytesIO(
                projection_raster(xy, codes, ["#0000FF", "#FF0000"], (0.0, 10.0, 0.0, 10.0), (11, 11), 3)
            )
        )
    )
    assert spread[9, 1, 3] > 0 and tuple(spread[9, 1, :3]) == (0, 0, 255)  # a point covers 3 x 3 pixels
    assert spread[8, 2, 3] == 0 and spread[5, 5, 3] == 0
    outside = projection_raster(xy, codes, ["#0000FF", "#FF0000"], (-1.0, 1.0, -1.0, 1.0), (11, 11), 1)
    view = np.asarray(Image.open(io.BytesIO(outside)))
    assert view[:, :, 3].sum() > 0 and view[0, 10, 3] == 0  # (10, 10) lies outside the view: not drawn


def test_playback_draws_each_scene_at_one_moment() -> None:
    """Maps at one step of their windows: the window thick up to that step with a dot where it is, and
    the other road users present then as dots (one that starts later is not there yet)."""
    window = path(60)
    early, late = path(40) + [0.0, 5.0], path(20) + [0.0, -5.0]
    panel = MapPanel("#1 left", window, "#0072B2", None, [early, late], 7, [0, 30])
    still = map_grid_figure([panel])
    moving = map_grid_figure([panel], at_step=10)
    validated(moving)
    dots = [t for t in moving.data if t.mode == "markers" and t.marker.size in (8, 13)]
    assert len(dots) == 2
    me = next(t for t in dots if t.marker.size == 13)
    assert (me.x[0], me.y[0]) == pytest.approx(tuple(window[10]))
    others = next(t for t in dots if t.marker.size == 8)
    assert len(others.x) == 1 and (others.x[0], others.y[0]) == pytest.approx(
        tuple(early[10])
    )  # late: not yet
    clickable = [t for t in moving.data if t.customdata is not None]
    assert len(clickable) == 1 and clickable[0].customdata[0] == 7  # still picks the window
    assert not [t for t in still.data if t.mode == "markers" and t.marker.size == 13]


def test_forecast_figure_draws_every_future_from_the_last_history_point() -> None:
    from trajemb.serving.viz import forecast_figure

    square = np.array([[0, 0], [80, 0], [80, 80], [0, 80], [0, 0]], dtype=float)
    geometry = MapGeometry([square[:2]], [square[:2]], [square], [square])
    history = path(30)
    futures = [path(30, turn=0.1 * i)[1:] + history[-1] for i in range(3)]
    fig = forecast_figure(
        history,
        futures,
        ["#1 <b>p</b> 0.5", "#2 p 0.3", "#3 p 0.2"],
        [0.5, 0.3, 0.2],
        rows=[7, 8, 9],
        truth_xy=futures[0] + 1,
        baselines={"constant velocity": futures[1] - 1, "constant acceleration": futures[2] - 2},
        geometry=geometry,
    )
    validated(fig)
    traces = [{k: t[k] for k in ("name", "mode", "x", "y", "line", "customdata", "fill")} for t in fig.data]
    names = [t.get("name") for t in traces if t.get("mode") == "lines" and t.get("name")]
    assert names[:3] == ["#1 &lt;b&gt;p&lt;/b&gt; 0.5", "#2 p 0.3", "#3 p 0.2"]  # data text escaped
    assert {"history", "true future", "constant velocity", "constant acceleration"} <= set(names)
    lines = {t["name"]: t for t in traces if t.get("mode") == "lines" and t.get("name")}
    for name in ("#2 p 0.3", "true future", "constant velocity"):
        start = (float(lines[name]["x"][0]), float(lines[name]["y"][0]))
        assert start == pytest.approx(tuple(np.round(history[-1], 2)))
    # The most probable future is drawn widest; each future's clickable points carry its bank row.
    assert lines["#1 &lt;b&gt;p&lt;/b&gt; 0.5"]["line"]["width"] > lines["#3 p 0.2"]["line"]["width"]
    assert sorted(
        {int(v) for t in traces for v in (t["customdata"] if t["customdata"] is not None else [])}
    ) == [7, 8, 9]
    assert any(t.get("fill") == "toself" for t in traces)  # the map is drawn under the paths


def test_sketch_figure_draws_with_plotlys_own_tool() -> None:
    """The drawing canvas: Plotly's draw-open-path drag mode, the agent frame's origin marked, the
    drawn path (on top) and the window made of it; on a map, the map's own traces kept."""
    from trajemb.serving.viz import SKETCH_COLOR, sketch_figure

    empty = sketch_figure(None, None)
    assert empty.layout.dragmode == "drawopenpath" and empty.layout.yaxis.scaleanchor == "x"
    assert [t.name for t in empty.data] == ["start (origin, heading +x)"]
    drawn = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 5.0]])
    window = np.stack([np.linspace(0, 20, 60), np.zeros(60)], axis=1)
    fig = sketch_figure(drawn, window)
    names = [t.name for t in fig.data]
    assert names[-2:] == ["the query: 60 steps at 10 Hz", "drawn"]
    assert list(fig.data[-1].x) == [0.0, 10.0, 20.0] and fig.data[-1].line.color == SKETCH_COLOR
    base = go.Figure(data=[go.Scatter(x=[0, 1], y=[0, 1], name="lane")])
    on_map = sketch_figure(drawn, window, base)
    assert [t.name for t in on_map.data] == ["lane", "the query: 60 steps at 10 Hz", "drawn"]
    assert [t.showlegend for t in on_map.data] == [False, True, True]
    assert on_map.layout.dragmode == "drawopenpath"


def test_hovering_a_map_window_shows_its_lines_as_plain_text() -> None:
    square = np.array([[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]], dtype=float)
    geometry = MapGeometry([square[:2]], [square[:2]], [square], [square])
    panels = [
        MapPanel("query", path() + 5, "#000000", geometry),
        MapPanel("#1 left", path(turn=0.1) + 5, "#0072B2", geometry, row=3, hover=("#1 left", "s<b>/7/10")),
        MapPanel("#2 right", path(turn=-0.1) + 5, "#D55E00", geometry, row=4),
    ]
    fig = map_grid_figure(panels)
    picks = [t for t in fig.data if t.customdata is not None and len(t.customdata)]
    assert len(picks) == 1
    texts = dict(zip(np.asarray(picks[0].customdata).ravel().tolist(), picks[0].hovertext, strict=True))
    assert texts[3] == "#1 left<br>s&lt;b&gt;/7/10"  # one line each, the id's markup shown as text
    assert texts[4] == "#2 right"  # without hover lines: the title


def test_neighbour_rings_stand_out_from_every_class_colour() -> None:
    """Issue 22 (layout), bug 5: the layout's neighbour rings were the orange of u_turn (and of
    motorcyclist). Their colour is now apart from every colour a class of any label can have and from
    the query's black (CIEDE2000, coloraide's), and legible on the white plot."""
    xy = np.random.default_rng(0).normal(size=(50, 2))
    codes = np.arange(50) % 3
    fig = projection_figure(xy, codes, ["left", "right", "u_turn"], "direction", np.arange(50), (), 3, [4])
    (rings,) = [t for t in fig.data if t.name == "neighbours"]
    ring = Color(rings.marker.line.color)
    many = label_colors("city", [str(i) for i in range(40)])  # the whole palette of other labels
    for color in {*DIRECTION_COLORS.values(), *OBJECT_TYPE_COLORS.values(), *many, QUERY_COLOR}:
        assert ring.delta_e(Color(color), method="2000") >= 15, color
    assert ring.contrast(Color("white"), method="wcag21") >= 3.0


def test_layout_autoscale_lands_on_the_whole_layout() -> None:
    """Issue 22 (layout), bug 1: a zoomed layout holds only the points in view, so Plotly's autoscale
    (a double-click, the Autoscale button) knew only those. The figure carries the whole layout's
    extent as the exact bounds of any autorange."""
    xy = np.random.default_rng(0).normal(size=(200, 2))
    full = (-4.0, 4.5, -3.5, 4.0)
    zoomed = np.flatnonzero((np.abs(xy) < 0.5).all(axis=1))
    fig = validated(
        projection_figure(
            xy, np.zeros(200, int), ["a"], "city", zoomed, view=(-0.5, 0.5, -0.5, 0.5), full=full
        )
    )
    assert list(fig.layout.xaxis.range) == [-0.5, 0.5]
    x, y = fig.layout.xaxis.autorangeoptions, fig.layout.yaxis.autorangeoptions
    assert (x.minallowed, x.maxallowed, y.minallowed, y.maxallowed) == full
