"""A user's own query: points from a CSV or typed control points -> one agent-frame window of T steps."""

from __future__ import annotations

import re

import numpy as np

from trajemb.errors import DataError
from trajemb.frames import city_to_agent, motion_heading_rad
from trajemb.schema import FloatArray
from trajemb.synth.geometry import arc_length_m

MAX_POINTS = 10_000


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_points(text: str) -> FloatArray:
    """Parse ``x, y`` rows (comma, semicolon or space separated; a header naming ``x`` and ``y`` picks those
    columns by name, otherwise the first two columns are x and y; lines starting with ``#`` are skipped).

    Raises:
        DataError: naming the line, for anything that is not two numbers per row; fewer than 2 points;
            NaN or infinite values.
    """
    lines = [
        (n, ln.strip())
        for n, ln in enumerate(text.splitlines(), start=1)
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if not lines:
        raise DataError(
            "no points given: enter one 'x, y' pair per line or upload a CSV with x and y columns"
        )
    ix, iy = 0, 1
    first = [t for t in re.split(r"[,;\s]+", lines[0][1]) if t]
    if not all(_is_number(t) for t in first):
        names = [t.strip().lower() for t in first]
        if "x" not in names or "y" not in names:
            raise DataError(f"the header must name columns x and y, got {', '.join(first)}")
        ix, iy = names.index("x"), names.index("y")
        lines = lines[1:]
    rows = []
    for n, line in lines:
        tokens = [t for t in re.split(r"[,;\s]+", line) if t]
        if len(tokens) <= max(ix, iy):
            raise DataError(f"line {n}: each line needs two numbers, x and y, got {line!r}")
        try:
            rows.append((float(tokens[ix]), float(tokens[iy])))
        except ValueError as exc:
            raise DataError(f"line {n}: x and y must be numbers, got {line!r}") from exc
    if len(rows) < 2:
        raise DataError(f"need at least 2 points, got {len(rows)}")
    if len(rows) > MAX_POINTS:
        raise DataError(f"too many points ({len(rows)}); at most {MAX_POINTS}")
    xy = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(xy).all():
        raise DataError("some x or y values are NaN or infinite")
    return xy


def points_to_window(points_xy: FloatArray, num_steps: int) -> FloatArray:
    """(P, 2) positions -> (T, 2) agent-frame window.

    Exactly T points are taken as 10 Hz samples; otherwise the points are control points of a path
    driven at constant speed, resampled to T steps by arc length.
    """
    if len(points_xy) != num_steps:
        s = arc_length_m(points_xy)
        if s[-1] <= 0:
            raise DataError("the points do not move: every point is the same")
        s_new = np.linspace(0.0, s[-1], num_steps)
        points_xy = np.stack(
            [np.interp(s_new, s, points_xy[:, 0]), np.interp(s_new, s, points_xy[:, 1])], axis=-1
        )
    xy = points_xy[None].astype(np.float64)
    theta = motion_heading_rad(xy, np.array([0.0]))
    return np.asarray(city_to_agent(xy, xy[:, 0], theta)[0], dtype=np.float64)
