"""A user's own query: points from a CSV or typed control points -> one agent-frame window of T steps.

Text from an upload is untrusted: it is refused with the line named rather than guessed at (decimal
commas are read only where the column separator makes them unambiguous).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from trajemb.core.errors import DataError
from trajemb.data.frames import city_to_agent, motion_heading_rad
from trajemb.data.schema import MAX_ABS_COORD_M, MAX_ROAD_USER_SPEED_MPS, STEP_S, FloatArray
from trajemb.data.synth.geometry import arc_length_m

MAX_POINTS = 10_000
#: Longest text parsed at all (a CSV of MAX_POINTS rows is well under a megabyte).
MAX_TEXT_CHARS = 5_000_000
#: Largest uploaded file read (the explorer's ``server.maxUploadSize`` is the same 2 MiB).
MAX_UPLOAD_BYTES = 2 << 20

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")
_NON_FINITE = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def _delimiter(lines: list[str]) -> str | None:
    """The column separator of the whole text: ``;`` or a tab where any line has one (then a comma
    inside a number is a decimal comma, as in European spreadsheets), else ``,``, else white space
    (None). A comma-separated file with decimal commas (``1,5,2,5``) cannot be told apart from four
    columns, so it is refused by the column count, never misread."""
    for sep in (";", "\t", ","):
        if any(sep in line for line in lines):
            return sep
    return None


def _fields(line: str, sep: str | None) -> list[str]:
    return line.split() if sep is None else [t.strip() for t in line.split(sep)]


def _number(token: str, decimal_comma: bool) -> float | None:
    """``token`` as a float, or None where it is not a plain decimal number (``1_000``, ``0x1f`` and
    thousands separators are refused rather than guessed at)."""
    if decimal_comma and _DECIMAL_COMMA.fullmatch(token):
        token = token.replace(",", ".")
    if _NUMBER.fullmatch(token) or token.lower() in _NON_FINITE:
        return float(token)
    return None


def decode_upload(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> str:
    """The text of an uploaded file, whole or not at all: a file over ``max_bytes`` is refused, never cut
    (a number cut in half would be read as another number), and so is one that is not UTF-8 (a byte
    replaced by U+FFFD could silently split or join a number).

    Raises:
        DataError: naming the file, its size or the first undecodable byte.
    """
    if len(data) > max_bytes:
        raise DataError(
            f"{name} is {len(data):,} bytes, more than the {max_bytes:,} read; nothing of it was used "
            f"(a query needs at most {MAX_POINTS:,} points)"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text (byte {exc.start}); save it as a UTF-8 CSV") from None


def parse_points(text: str) -> FloatArray:
    """Parse ``x, y`` rows into (P, 2) positions (``parse_track``, without the times)."""
    return parse_track(text)[0]


#: Header names of a time column (seconds), in any case.
TIME_COLUMNS = ("t", "t_s", "time", "time_s", "timestamp_s")


def parse_track(text: str) -> tuple[FloatArray, FloatArray | None]:
    """Parse ``x, y`` rows into (P, 2) positions, and their times (P,) in seconds where the header
    names a time column (``TIME_COLUMNS``), else None.

    Columns are separated by ``;``, tabs, ``,`` or white space, the same throughout the text; with ``;``
    or tabs a decimal comma is read as a decimal point (``1,5;2,5`` is x = 1.5, y = 2.5). A first line
    that is not all numbers is a header naming the columns (``x`` and ``y`` are picked by name, in any
    order); without a header every line must hold exactly two numbers, x and y. Lines starting with
    ``#`` and blank lines are skipped; a byte-order mark is ignored.

    Raises:
        DataError: naming the line, for anything that is not a number in a column; a line with another
            number of columns than the header (or than 2); fewer than 2 or more than ``MAX_POINTS``
            points; NaN or infinite values; coordinates beyond ``MAX_ABS_COORD_M``.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(f"the text has {len(text)} characters; at most {MAX_TEXT_CHARS} are read")
    text = text.removeprefix("\ufeff")
    lines = [
        (n, ln.strip())
        for n, ln in enumerate(text.splitlines(), start=1)
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if not lines:
        raise DataError(
            "no points given: enter one 'x, y' pair per line or upload a CSV with x and y columns"
        )
    if len(lines) > MAX_POINTS + 1:
        raise DataError(f"too many points ({len(lines)} lines); at most {MAX_POINTS}")
    sep = _delimiter([ln for _, ln in lines])
    decimal_comma = sep != ","
    ix, iy, width, it = 0, 1, 2, -1
    first = _fields(lines[0][1], sep)
    # A header names columns: some field has letters and is not a number ("nan" is one).
    if any(_number(t, decimal_comma) is None and any(c.isalpha() for c in t) for t in first):
        names = [t.strip().lower() for t in first]
        if names.count("x") != 1 or names.count("y") != 1:
            raise DataError(f"the header must name columns x and y once each, got {', '.join(first)}")
        ix, iy, width = names.index("x"), names.index("y"), len(names)
        it = next((names.index(n) for n in TIME_COLUMNS if names.count(n) == 1), -1)
        lines = lines[1:]
    rows = []
    for n, line in lines:
        tokens = _fields(line, sep)
        if len(tokens) != width:
            hint = (
                "; decimal commas? separate the columns with ';'"
                if sep == "," and len(tokens) > width
                else ""
            )
            need = "two numbers, x and y," if width == 2 else f"{width} columns like the header,"
            raise DataError(f"line {n}: each line needs {need} got {len(tokens)} in {line!r:.80}{hint}")
        x, y = _number(tokens[ix], decimal_comma), _number(tokens[iy], decimal_comma)
        if x is None or y is None:
            raise DataError(f"line {n}: x and y must be numbers, got {line!r:.80}")
        t = _number(tokens[it], decimal_comma) if it >= 0 else 0.0
        if t is None:
            raise DataError(f"line {n}: the time {first[it]} must be a number of seconds, got {line!r:.80}")
        rows.append((x, y, t))
    if len(rows) < 2:
        raise DataError(f"need at least 2 points, got {len(rows)}")
    table = np.asarray(rows, dtype=np.float64)
    xy = table[:, :2]
    if not np.isfinite(xy).all():
        raise DataError("some x or y values are NaN or infinite")
    if np.abs(xy).max() > MAX_ABS_COORD_M:
        raise DataError(
            f"coordinates up to {np.abs(xy).max():.3g} m; at most {MAX_ABS_COORD_M:.0e} m (metres in a city frame)"
        )
    if it < 0:
        return xy, None
    t_s = table[:, 2]
    if not np.isfinite(t_s).all() or not (np.diff(t_s) > 0).all():
        raise DataError(f"the times ({first[it]}) must be finite seconds that increase from line to line")
    return xy, t_s


@dataclass(frozen=True)
class QueryWindow:
    """A user's points as one window, and what was done to them (one sentence to show the person)."""

    xy_agent: FloatArray  # (T, 2)
    how: str


def points_to_window(points_xy: FloatArray, num_steps: int) -> FloatArray:
    """(P, 2) positions -> (T, 2) agent-frame window (``query_window`` without times or a duration)."""
    return query_window(points_xy, num_steps).xy_agent


def query_window(
    points_xy: FloatArray, num_steps: int, t_s: FloatArray | None = None, duration_s: float | None = None
) -> QueryWindow:
    """(P, 2) positions -> a (T, 2) agent-frame window of T steps at 10 Hz, and what was done.

    * With times ``t_s`` (P,) in seconds: positions are interpolated at 10 Hz from the first time; a
      longer track gives its first (T - 1) / 10 s.
    * With ``duration_s``: the points are a path driven at constant speed over that many seconds; a
      longer drive gives its first (T - 1) / 10 s.
    * Otherwise exactly T points are 10 Hz samples, and any other number is a path driven at constant
      speed over the window's (T - 1) / 10 s (then the speed is the path's length over that time).

    Raises:
        DataError: too few points, non-finite or far-off positions, points that do not move, times
            that do not increase, times / a duration shorter than the window, or a window faster on
            average than any road user (``MAX_ROAD_USER_SPEED_MPS``).
    """
    points_xy = np.asarray(points_xy, dtype=np.float64)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2 or len(points_xy) < 2:
        raise DataError(f"expected (P >= 2, 2) points, got shape {points_xy.shape}")
    if not np.isfinite(points_xy).all() or np.abs(points_xy).max() > MAX_ABS_COORD_M:
        raise DataError(f"points must be finite and within {MAX_ABS_COORD_M:.0e} m of the origin")
    window_s = (num_steps - 1) * STEP_S
    p = len(points_xy)
    if t_s is not None:
        t = np.asarray(t_s, dtype=np.float64)
        if t.shape != (p,) or not np.isfinite(t).all() or not (np.diff(t) > 0).all():
            raise DataError("times must be one finite number of seconds per point, increasing")
        span = float(t[-1] - t[0])
        if span < window_s - 1e-6:
            raise DataError(f"the points span {span:.1f} s; a window needs {window_s:.1f} s")
        at = t[0] + np.arange(num_steps) * STEP_S
        xy = np.stack([np.interp(at, t, points_xy[:, 0]), np.interp(at, t, points_xy[:, 1])], axis=-1)
        how = f"{p} points with times over {span:.1f} s: positions at 10 Hz" + (
            f", the first {window_s:.1f} s" if span > window_s + 1e-6 else ""
        )
    elif duration_s is not None and duration_s > 0:
        if duration_s < window_s - 1e-6:
            raise DataError(f"a duration of {duration_s:g} s is shorter than a window ({window_s:.1f} s)")
        xy = _resample_path(points_xy, num_steps, window_s / duration_s)
        how = f"{p} points of a path driven at constant speed over {duration_s:g} s" + (
            f": its first {window_s:.1f} s" if duration_s > window_s + 1e-6 else ""
        )
    elif p == num_steps:
        xy = points_xy
        how = f"{p} points taken as 10 Hz samples ({window_s:.1f} s)"
    else:
        xy = _resample_path(points_xy, num_steps, 1.0)
        how = (
            f"{p} points, not {num_steps}: taken as a path driven at constant speed in {window_s:.1f} s (the "
            "window's length); if they cover a longer drive, give its duration or a time column (t, seconds)"
        )
    speed_mps = float(arc_length_m(xy)[-1]) / window_s
    if speed_mps > MAX_ROAD_USER_SPEED_MPS:  # as the Sketch page refuses it: no neighbour means anything
        raise DataError(
            f"{how}: {speed_mps:.1f} m/s ({speed_mps * 3.6:.0f} km/h) on average, faster than any road user "
            f"(limit {MAX_ROAD_USER_SPEED_MPS:g} m/s = {MAX_ROAD_USER_SPEED_MPS * 3.6:.0f} km/h): check the "
            "units (metres), or give the drive's duration or a time column (t, seconds)"
        )
    xy = xy[None].astype(np.float64)
    theta = motion_heading_rad(xy, np.array([0.0]))
    window = np.asarray(city_to_agent(xy, xy[:, 0], theta)[0], dtype=np.float64)
    if not np.isfinite(window).all():  # cannot happen within the bounds above; never return garbage
        raise DataError("the points give a window with non-finite positions")
    return QueryWindow(window, how)


def _resample_path(points_xy: FloatArray, num_steps: int, share: float) -> FloatArray:
    """T points at equal arc-length steps over the first ``share`` of the path's length."""
    s = arc_length_m(points_xy)
    if s[-1] <= 0:
        raise DataError("the points do not move: every point is the same")
    s_new = np.linspace(0.0, s[-1] * share, num_steps)
    return np.stack([np.interp(s_new, s, points_xy[:, 0]), np.interp(s_new, s, points_xy[:, 1])], axis=-1)
