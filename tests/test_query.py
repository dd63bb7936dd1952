"""A user's own points: parsing, resampling, agent frame, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.core.errors import DataError
from trajemb.data.query import parse_points, parse_track, points_to_window, query_window


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,5;2,5\n3,5;4,5", [[1.5, 2.5], [3.5, 4.5]]),  # European CSV: decimal commas, ';' columns
        ("x;y\n1,5;2\n3;4,25", [[1.5, 2.0], [3.0, 4.25]]),
        ("x\ty\n1,5\t2,5\n3\t4", [[1.5, 2.5], [3.0, 4.0]]),
        ("\ufeffx,y\n1.5,2.5\n3,4", [[1.5, 2.5], [3.0, 4.0]]),  # a byte-order mark from a spreadsheet
        ("1 2\n3 4", [[1.0, 2.0], [3.0, 4.0]]),
    ],
)
def test_separators_and_decimal_commas(text: str, expected: list[list[float]]) -> None:
    np.testing.assert_array_equal(parse_points(text), np.asarray(expected))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,5,2,5\n3,5,4,5", r"got 4 in '1,5,2,5'; decimal commas\? separate the columns with ';'"),
        ("x,y\n1,5,2,5\n1,2", "line 2: each line needs two numbers, x and y, got 4"),
        ("t,x,y\n0,1,5,2,5\n1,1,2", "line 2: each line needs 3 columns like the header, got 5"),
        ("1,5 2,5\n1 2", "line 1: each line needs two numbers"),
        ("1e308,0\n0,1e308", "coordinates up to 1e\\+308 m"),
        ("0,0\n1e7,1e7\n2e7,0", "at most 1e\\+07 m"),
        ("1_000,2\n3,4", "line 1: x and y must be numbers"),
        ("x,x,y\n1,2,3\n4,5,6", "name columns x and y once each"),
        ("0,0,0\n1,1,1", "each line needs two numbers"),  # no header: which two columns? refuse
    ],
)
def test_ambiguous_or_absurd_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_points(text)


def test_window_from_points_is_finite_or_refused() -> None:
    with pytest.raises(DataError, match="finite and within"):
        points_to_window(np.array([[0.0, 0.0], [1e308, 1e308]]), 60)
    assert np.isfinite(points_to_window(np.array([[9e6, 9e6], [9e6 + 100.0, 9e6 - 50.0]]), 60)).all()
    with pytest.raises(DataError, match="faster than any road user"):  # 9e6 m in 5.9 s
        points_to_window(np.array([[0.0, 0.0], [9e6, 9e6]]), 60)


def test_an_upload_is_used_whole_or_not_at_all() -> None:
    """A file over the limit is refused, never cut (a number cut in half is another number), and so is
    one that is not UTF-8."""
    from trajemb.data.query import MAX_UPLOAD_BYTES, decode_upload

    rows = "x,y\n" + "".join(f"{i}.123456789,{i}.987654321\n" for i in range(100))
    assert decode_upload(rows.encode(), "q.csv") == rows
    assert decode_upload(b"\xef\xbb\xbf" + rows.encode(), "q.csv") == rows  # a byte-order mark
    big = (rows * (MAX_UPLOAD_BYTES // len(rows) + 1)).encode()
    with pytest.raises(
        DataError, match=r"q\.csv is [\d,]+ bytes, more than the 2,097,152 read; nothing of it was used"
    ):
        decode_upload(big, "q.csv")
    assert decode_upload(big[:MAX_UPLOAD_BYTES], "q.csv")  # up to the limit, read whole
    with pytest.raises(DataError, match=r"q\.csv is not UTF-8 text \(byte 6\)"):
        decode_upload(b"x,y\n1,\xff\n", "q.csv")


def test_a_long_drive_is_not_squeezed_into_one_window() -> None:
    """Issue 22, bug 8: 200 points of a 20 s drive at 10 m/s became a 6 s window at 33.7 m/s without a
    word. Times (a t column) or a duration now give the first 5.9 s at the true speed, and without
    either the person is told what was assumed."""
    from trajemb.data.labels import mean_speed_mps

    t = np.arange(200) * 0.1  # 19.9 s at 10 Hz
    xy = np.stack([10.0 * t, np.zeros_like(t)], axis=1)  # 10 m/s along x
    squeezed = query_window(xy, 60)
    assert mean_speed_mps(squeezed.xy_agent[None])[0] == pytest.approx(199 / 5.9, rel=1e-3)
    assert "constant speed in 5.9 s" in squeezed.how and "duration or a time column" in squeezed.how
    for made in (query_window(xy, 60, duration_s=19.9), query_window(xy, 60, t_s=t)):
        np.testing.assert_allclose(made.xy_agent[:, 0], 10.0 * t[:60], atol=1e-9)
        assert mean_speed_mps(made.xy_agent[None])[0] == pytest.approx(10.0, rel=1e-6)
        assert "first 5.9 s" in made.how
    text = "t,x,y\n" + "\n".join(f"{a:.1f},{b:.1f},0" for a, b in zip(t, xy[:, 0], strict=True))
    points, times = parse_track(text)
    assert times is not None and times[-1] == pytest.approx(19.9)
    np.testing.assert_allclose(query_window(points, 60, times).xy_agent, query_window(xy, 60, t_s=t).xy_agent)
    assert parse_track("x,y\n0,0\n1,1")[1] is None
    assert "10 Hz samples" in query_window(xy[:60], 60).how
    with pytest.raises(DataError, match=r"span 1\.0 s"):
        query_window(xy[:11], 60, t_s=t[:11])
    with pytest.raises(DataError, match="shorter than a window"):
        query_window(xy, 60, duration_s=3.0)
    with pytest.raises(DataError, match="increase"):
        parse_track("t,x,y\n0,0,0\n0,1,0")


@pytest.mark.parametrize(
    ("points", "t_s", "duration_s"),
    [
        ([[0.0, 0.0], [99999.0, 0.0]], None, None),  # typed: 100 km in the window's 5.9 s
        ([[0.0, 0.0], [500.0, 0.0]], None, 6.0),  # 500 m in 6 s: 83 m/s
        ([[0.0, 0.0], [10.0, 0.0], [600.0, 0.0]], [0.0, 0.1, 6.0], None),  # times given, 100 m/s
    ],
)
def test_a_query_faster_than_any_road_user_is_refused(
    points: list[list[float]], t_s: list[float] | None, duration_s: float | None
) -> None:
    with pytest.raises(DataError, match="faster than any road user"):
        query_window(np.array(points), 60, None if t_s is None else np.array(t_s), duration_s)


def test_a_motorway_speed_query_is_kept() -> None:
    # 65 m/s (234 km/h) over the window is fast but real; the limit is the Sketch page's, 70 m/s
    window = query_window(np.array([[0.0, 0.0], [65.0 * 5.9, 0.0]]), 60).xy_agent
    assert window[-1, 0] == pytest.approx(65.0 * 5.9)
