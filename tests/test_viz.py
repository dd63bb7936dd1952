"""Figure builders: valid plotly figures (checked with validation on, as the builders skip it), data text
escaped, distinct colours, and the layout image drawing every point where it belongs."""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from trajemb.data.maps import MapGeometry
from trajemb.viz import (
    DIRECTION_COLORS,
    OBJECT_TYPE_COLORS,
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
            xy, codes, ["left", "right", "straight"], "direction", np.arange(500), None, 3, [4, 5]
        ),
        projection_figure(
            xy,
            codes,
            ["a", "b", "c"],
            "city",
            np.arange(0, 500, 7),
            ("data:image/png;base64,", (-3, 3, -3, 3)),
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
    grid = figures[1]
    assert len([k for k in grid.to_dict()["layout"] if k.startswith("xaxis")]) == 5
    clickable = [t for t in grid.data if t.customdata is not None]
    assert sorted({int(np.asarray(t.customdata)[0]) for t in clickable}) == [0, 1, 2, 3, 4]


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
    ranks = rank_colors(20)
    assert len(ranks) == 20 and ranks[0] != ranks[-1]


def test_layout_image_puts_each_class_where_its_points_are() -> None:
    xy = np.array([[0.0, 0.0]] * 50 + [[10.0, 10.0]] * 50)
    codes = np.array([0] * 50 + [1] * 50)
    png = projection_raster(xy, codes, ["#0000FF", "#FF0000"], (0.0, 10.0, 0.0, 10.0), size_px=(11, 11))
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    assert image.shape == (11, 11, 4)
    assert tuple(image[10, 0, :3]) == (0, 0, 255) and image[10, 0, 3] > 0  # (0, 0): bottom left, blue
    assert tuple(image[0, 10, :3]) == (255, 0, 0) and image[0, 10, 3] > 0  # (10, 10): top right, red
    assert image[5, 5, 3] == 0  # empty pixels are transparent
