"""A drawn path made into a T-step agent-frame window: analytic cases for timing, resampling by arc
length and the agent frame (in either drawing frame), the labels a table would give, and one-line
refusals of drawings no road user could make. No Streamlit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trajemb.analysis.sketch import MAX_POINTS, SketchConfig, SketchError, sketch_window
from trajemb.core.errors import ConfigError
from trajemb.data.frames import agent_to_city
from trajemb.data.labels import direction_class


def rotate(xy: np.ndarray, theta: float, offset: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return xy @ np.array([[c, s], [-s, c]]) + np.asarray(offset)


def test_a_straight_path_is_the_window_at_the_speed_that_covers_it() -> None:
    sketch = sketch_window([[0, 0], [59, 0]])  # 59 m in 5.9 s: 10 m/s
    np.testing.assert_allclose(sketch.xy_agent, np.stack([np.arange(60.0), np.zeros(60)], 1), atol=1e-5)
    assert sketch.speed_mps == pytest.approx(10.0) and sketch.path_length_m == pytest.approx(59.0)
    assert sketch.xy_agent.dtype == np.float32 and sketch.xy_agent.shape == (60, 2)
    assert any("10.0 m/s" in note for note in sketch.notes)
    short = sketch_window([[0, 0], [29, 0]], SketchConfig(num_steps=30))  # T = 30 works too
    np.testing.assert_allclose(short.xy_agent[:, 0], np.arange(30.0), atol=1e-5)


def test_a_speed_or_a_duration_takes_the_first_part_of_the_path() -> None:
    by_speed = sketch_window([[0, 0], [59, 0]], SketchConfig(speed_mps=5.0))
    by_duration = sketch_window([[0, 0], [59, 0]], SketchConfig(duration_s=11.8))
    for sketch in (by_speed, by_duration):
        np.testing.assert_allclose(sketch.xy_agent[:, 0], 0.5 * np.arange(60), atol=1e-5)
        assert sketch.window_length_m == pytest.approx(29.5)
        assert any("covers the first 29.5 m of the 59.0 m path" in note for note in sketch.notes)


def test_positions_are_spaced_by_arc_length_along_the_drawn_pieces() -> None:
    """Unevenly drawn points: (0,0) (1,0) (10,0) (10,10), 20 m in 5.9 s. Position i lies i * 20/59 m
    along the path: on the x axis up to 10 m, then up the line x = 10."""
    sketch = sketch_window([[0, 0], [1, 0], [10, 0], [10, 10]])
    s = np.arange(60) * 20 / 59
    expected = np.where(s[:, None] <= 10, np.stack([s, 0 * s], 1), np.stack([10 + 0 * s, s - 10], 1))
    np.testing.assert_allclose(sketch.xy_drawn, expected, atol=1e-9)
    np.testing.assert_allclose(sketch.xy_agent, expected, atol=1e-5)  # already starts at 0 heading +x


def test_a_path_on_the_map_becomes_the_same_agent_frame_window() -> None:
    """A left turn drawn in city coordinates, turned by 30 degrees and far from the origin: the same
    window as drawn in the agent frame, with the origin and heading the agent frame defines, and
    mapped back onto the drawing."""
    t = np.linspace(0, math.pi / 2, 40)
    turn = np.concatenate(
        [
            np.stack([np.linspace(0, 20, 20), np.zeros(20)], 1),
            np.stack([20 + 15 * np.sin(t), 15 - 15 * np.cos(t)], 1),
        ]
    )
    city = rotate(turn, math.radians(30), (5000.0, -2000.0))
    agent = sketch_window(turn, SketchConfig(speed_mps=7.0))
    drawn = sketch_window(city, SketchConfig(speed_mps=7.0, frame="city"))
    np.testing.assert_allclose(drawn.xy_agent, agent.xy_agent, atol=1e-3)
    np.testing.assert_allclose(drawn.origin_xy, [5000.0, -2000.0])
    assert drawn.theta_rad == pytest.approx(math.radians(30), abs=1e-6)
    back = agent_to_city(
        drawn.xy_agent[None].astype(np.float64), drawn.origin_xy[None], np.array([drawn.theta_rad])
    )
    np.testing.assert_allclose(back[0], drawn.xy_drawn, atol=1e-2)
    assert direction_class(agent.xy_agent[None].astype(np.float64))[0][0] == "left"
    mirrored = sketch_window(turn * [1, -1], SketchConfig(speed_mps=7.0))
    assert direction_class(mirrored.xy_agent[None].astype(np.float64))[0][0] == "right"


def test_an_agent_frame_drawing_off_the_origin_is_moved_and_turned() -> None:
    sketch = sketch_window([[3, 4], [3, 34]])  # drawn heading +y from (3, 4)
    np.testing.assert_allclose(sketch.xy_agent[:, 1], 0, atol=1e-5)
    np.testing.assert_allclose(sketch.xy_agent[-1], [30, 0], atol=1e-4)
    assert any("moved by (-3.0, -4.0) m and turned by -90 degrees" in note for note in sketch.notes)


def test_repeated_points_are_one_point() -> None:
    sketch = sketch_window([[0, 0], [0, 0], [0.001, 0], [30, 0], [30, 0]])
    assert len(sketch.points) == 2 and sketch.notes[0] == "3 repeated point(s) dropped"


@pytest.mark.parametrize(
    ("points", "config", "message"),
    [
        ([[1, 1]], SketchConfig(), "fewer than two distinct points"),
        ([[1, 1], [1, 1], [1.001, 1]], SketchConfig(), "fewer than two distinct points"),
        ([], SketchConfig(), "no points"),
        ([[0, 0], [0.5, 0]], SketchConfig(), r"0\.50 m long, too short"),
        (
            [[0, 0], [600, 0]],
            SketchConfig(),
            r"101\.7 m/s \(366 km/h\) is faster than any road user \(limit 70 m/s",
        ),
        (
            [[0, 0], [20, 0]],
            SketchConfig(speed_mps=10),
            r"needs 59\.0 m: draw on, or lower the speed to at most 3\.4 m/s",
        ),
        ([[0, 0], [20, 0]], SketchConfig(duration_s=3), r"shorter than the window \(5\.9 s\)"),
        ([[0, 0], [10, 0], [5, 0.5]], SketchConfig(), "doubles back on itself at"),
        ([[0, 0], [10, 0], [15, 5], [10, 10], [5, 5], [10, -5]], SketchConfig(), "crosses itself"),
        ([[0, 0], [np.nan, 1]], SketchConfig(), "finite coordinates"),
        ([[0, 0, 0], [1, 1, 1]], SketchConfig(), r"\(x, y\) pairs"),
        ([["a", "b"]], SketchConfig(), "points must be numbers"),
        ([[0, 0]] * (MAX_POINTS + 1), SketchConfig(), f"at most {MAX_POINTS}"),
    ],
)
def test_drawings_no_road_user_could_make_are_refused_in_one_line(
    points: object, config: SketchConfig, message: str
) -> None:
    with pytest.raises(SketchError, match=message) as info:
        sketch_window(points, config)
    assert "\n" not in str(info.value) and str(info.value).startswith("drawing: ")


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="a speed or a duration, not both"):
        SketchConfig(speed_mps=3, duration_s=6)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="speed"):
            SketchConfig(speed_mps=bad)
    with pytest.raises(ConfigError, match="frame must be agent or city"):
        SketchConfig(frame="pixels")
    with pytest.raises(ConfigError, match="steps"):
        SketchConfig(num_steps=1)
