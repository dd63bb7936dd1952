"""A user's own points: parsing, resampling, agent frame, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.errors import DataError
from trajemb.query import parse_points, points_to_window


def test_parse_with_and_without_header() -> None:
    a = parse_points("x, y\n0, 0\n10, 0\n20, 5")
    b = parse_points("0 ,0\n10,0\n20,5")
    c = parse_points("t,y,x\n0,0,0\n1,0,10\n2,5,20")  # columns by name, in any order
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no points given"),
        ("abc", "header must name columns x and y"),
        ("x,y\n1,2", "need at least 2 points"),
        ("x,y\n1,2\n3,nan", "NaN or infinite"),
        ("a,b\n1,2\n3,4", "header must name columns x and y"),
        ("1\n2\n3", "line 1: each line needs two numbers"),
        ("x,y\n1,2\n3,hello", "line 3: x and y must be numbers"),
    ],
)
def test_bad_points(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_points(text)


def test_control_points_become_agent_frame_window() -> None:
    pts = np.array([[100.0, 50.0], [100.0, 80.0], [100.0, 110.0]])  # heading north
    w = points_to_window(pts, 60)
    assert w.shape == (60, 2)
    np.testing.assert_allclose(w[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(w[:, 1], 0.0, atol=1e-9)  # straight ahead along +x
    np.testing.assert_allclose(np.diff(w[:, 0]), 60.0 / 59)  # constant speed resampling
    exact = np.cumsum(np.ones((60, 2)), axis=0)
    np.testing.assert_allclose(np.hypot(*points_to_window(exact, 60)[-1]), np.hypot(59, 59))
    with pytest.raises(DataError, match="do not move"):
        points_to_window(np.ones((3, 2)), 60)
