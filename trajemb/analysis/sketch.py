"""A drawn path becomes a query: points in, a T-step agent-frame window at 10 Hz out.

A person draws a path with the mouse, in the agent frame (a metres grid, starting at the origin and
heading along +x) or on a scene's map (city coordinates). ``sketch_window`` turns it into the window
a road user following the path would give, by the same rules as every window of a trajectory table:

1. Cleaning: consecutive points closer than ``MIN_SPACING_M`` are one point (a mouse repeats
   positions). At least two distinct points must remain, the path must be at least ``MIN_PATH_M``
   long, and it may neither double back on itself (two consecutive pieces turning by more than
   ``MAX_TURN_DEG``: a road user's window does not reverse in place) nor cross itself.
2. Timing: the road user moves along the path at constant speed. Given nothing, the whole path is
   the window (speed = path length / window duration, ``(T - 1) / 10`` s); given ``speed_mps``, the
   window covers the first ``speed * duration`` metres, and a shorter path is too short for it; given
   ``duration_s`` (how long the drawn path takes), the speed is ``length / duration_s``, and a duration
   shorter than the window would run past the end of the path. Speeds above
   ``MAX_ROAD_USER_SPEED_MPS`` (what no road user drives) are refused.
3. Resampling: T positions at 10 Hz by arc length along the path (linear between drawn points).
4. The agent frame as ``trajemb.data.windows`` defines it: the first position is the origin, the heading
   is the direction of motion over the first 0.5 s (``trajemb.data.frames.motion_heading_rad``); a drawing
   in the agent frame that does not start at the origin heading +x is moved and turned the same way.

``Sketch.notes`` says what was done, for the explorer to show beside the drawing.

Legend: P drawn points, T steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trajemb.core.errors import ConfigError, DataError
from trajemb.core.validate import check_float, check_int
from trajemb.data.frames import city_to_agent, motion_heading_rad
from trajemb.data.schema import MAX_ROAD_USER_SPEED_MPS, MAX_WINDOW_STEPS, STEP_S

#: Consecutive drawn points closer than this are one point.
MIN_SPACING_M = 0.01
#: Shortest path a window is made from.
MIN_PATH_M = 1.0
#: Two consecutive pieces of the path turning by more than this double back on themselves.
MAX_TURN_DEG = 150.0
#: Most drawn points taken (a drawing has a few hundred; the crossing test compares every pair).
MAX_POINTS = 2000
#: Drawn coordinates beyond this (metres) are refused: AV2 city coordinates stay well inside it.
MAX_COORDINATE_M = 1e7
#: Below this the table's moving filter (``WindowConfig.min_speed_mps``) leaves few windows to find.
SLOW_MPS = 1.0


class SketchError(DataError):
    """A drawing that cannot become a window; the message says why and what to draw instead."""


@dataclass(frozen=True)
class SketchConfig:
    """How a drawing becomes a window: ``num_steps`` T (the bundle's), at most one of ``speed_mps``
    and ``duration_s`` (module docstring), and the ``frame`` it was drawn in."""

    num_steps: int = 60
    speed_mps: float | None = None
    duration_s: float | None = None
    frame: str = "agent"

    def __post_init__(self) -> None:
        check_int("steps", self.num_steps, 2, MAX_WINDOW_STEPS)
        if self.speed_mps is not None and self.duration_s is not None:
            raise ConfigError("give a speed or a duration, not both")
        if self.speed_mps is not None:
            check_float("speed (m/s)", self.speed_mps, 0.0, low_open=True)
        if self.duration_s is not None:
            check_float("duration (s)", self.duration_s, 0.0, low_open=True)
        if self.frame not in ("agent", "city"):
            raise ConfigError(f"frame must be agent or city, got {self.frame!r}")

    @property
    def window_s(self) -> float:
        """How long a window lasts: (T - 1) steps of 0.1 s."""
        return (self.num_steps - 1) * STEP_S


@dataclass(frozen=True)
class Sketch:
    """A drawing made into a window."""

    xy_agent: np.ndarray  # (T, 2) float32, the query: agent frame
    xy_drawn: np.ndarray  # (T, 2) float64, the same positions in the frame it was drawn in
    points: np.ndarray  # (P, 2) float64, the drawn points kept (repeats dropped), drawn frame
    origin_xy: np.ndarray  # (2,) the agent frame's origin in the drawn frame
    theta_rad: float  # the agent frame's heading in the drawn frame
    speed_mps: float
    path_length_m: float
    window_length_m: float
    notes: tuple[str, ...]


def _fail(message: str) -> SketchError:
    return SketchError(f"drawing: {message}")


def _clean(points: object) -> tuple[np.ndarray, int]:
    """(P, 2) finite float64 points without consecutive repeats, and how many repeats were dropped."""
    try:
        xy = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _fail(f"points must be numbers ({exc})") from None
    if xy.size == 0:
        raise _fail("no points; draw at least two distinct points")
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise _fail(f"points must be (x, y) pairs, got an array of shape {xy.shape}")
    if len(xy) > MAX_POINTS:
        raise _fail(f"{len(xy)} points; at most {MAX_POINTS} (draw a simpler path)")
    if not np.isfinite(xy).all() or (len(xy) and np.abs(xy).max() > MAX_COORDINATE_M):
        raise _fail(f"points must be finite coordinates within {MAX_COORDINATE_M:g} m")
    keep = [0]
    for i in range(1, len(xy)):
        if math.dist(xy[i], xy[keep[-1]]) >= MIN_SPACING_M:
            keep.append(i)
    if len(keep) < 2:
        raise _fail(f"fewer than two distinct points ({len(xy)} drawn); draw a path")
    return xy[keep], len(xy) - len(keep)


def _check_shape(xy: np.ndarray) -> None:
    """Refuse a path that doubles back or crosses itself (module docstring)."""
    seg = np.diff(xy, axis=0)
    unit = seg / np.linalg.norm(seg, axis=1, keepdims=True)
    cos_turn = (unit[:-1] * unit[1:]).sum(axis=1)
    back = np.flatnonzero(cos_turn < math.cos(math.radians(MAX_TURN_DEG)))
    if len(back):
        x, y = xy[back[0] + 1]
        raise _fail(
            f"the path doubles back on itself at ({x:.1f}, {y:.1f}) m (a turn of more than "
            f"{MAX_TURN_DEG:.0f} degrees); road users do not reverse in place: draw it without turning back"
        )
    m = len(seg)
    if m < 3:
        return
    # Segments i and j > i + 1 cross when each one's ends lie on both sides of the other (strictly).
    a, b = xy[:-1], xy[1:]
    i, j = np.triu_indices(m, k=2)

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        cross_z = (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])
        return np.asarray(np.sign(cross_z))

    cross = (side(a[i], b[i], a[j]) * side(a[i], b[i], b[j]) < 0) & (
        side(a[j], b[j], a[i]) * side(a[j], b[j], b[i]) < 0
    )
    if cross.any():
        k = int(np.flatnonzero(cross)[0])
        x, y = (a[j[k]] + b[j[k]]) / 2
        raise _fail(f"the path crosses itself near ({x:.1f}, {y:.1f}) m; draw a path that does not")


def sketch_window(points: object, config: SketchConfig = SketchConfig()) -> Sketch:
    """(P, 2) drawn points (metres, in ``config.frame``) -> the T-step agent-frame window of a road
    user following them (module docstring).

    Raises:
        SketchError: fewer than two distinct points, too short, too fast, doubling back or crossing.
    """
    xy, repeats = _clean(points)
    _check_shape(xy)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    length = float(arc[-1])
    if length < MIN_PATH_M:
        raise _fail(
            f"the path is {length:.2f} m long, too short for a window; draw at least {MIN_PATH_M:g} m"
        )
    window_s = config.window_s
    notes = [f"{repeats} repeated point(s) dropped"] if repeats else []
    if config.speed_mps is not None:
        speed = config.speed_mps
        needed = speed * window_s
        if needed > length * (1 + 1e-9):
            raise _fail(
                f"the path is {length:.1f} m long; at {speed:g} m/s a {window_s:.1f} s window needs "
                f"{needed:.1f} m: draw on, or lower the speed to at most {length / window_s:.1f} m/s"
            )
    elif config.duration_s is not None:
        if config.duration_s < window_s * (1 - 1e-9):
            raise _fail(
                f"a duration of {config.duration_s:g} s is shorter than the window ({window_s:.1f} s), "
                f"which would run past the end of the path: give at least {window_s:.1f} s"
            )
        speed = length / config.duration_s
    else:
        speed = length / window_s
    if speed > MAX_ROAD_USER_SPEED_MPS:
        raise _fail(
            f"{speed:.1f} m/s ({speed * 3.6:.0f} km/h) is faster than any road user (limit "
            f"{MAX_ROAD_USER_SPEED_MPS:g} m/s = {MAX_ROAD_USER_SPEED_MPS * 3.6:.0f} km/h): draw a shorter "
            "path, give a lower speed or a longer duration"
        )
    covered = min(length, speed * window_s)
    if covered < length * (1 - 1e-9):
        notes.append(f"the window covers the first {covered:.1f} m of the {length:.1f} m path")
    notes.append(
        f"{config.num_steps} steps at 10 Hz ({window_s:.1f} s) at {speed:.1f} m/s ({speed * 3.6:.0f} km/h)"
    )
    if speed < SLOW_MPS:
        notes.append(f"slower than the {SLOW_MPS:g} m/s below which tables leave windows out by default")
    s = np.minimum(speed * STEP_S * np.arange(config.num_steps), length)
    drawn = np.stack([np.interp(s, arc, xy[:, 0]), np.interp(s, arc, xy[:, 1])], axis=1)
    first_piece = xy[1] - xy[0]
    fallback = np.array([math.atan2(first_piece[1], first_piece[0])])
    theta = float(motion_heading_rad(drawn[None], fallback)[0])
    origin = drawn[0].copy()
    agent = city_to_agent(drawn[None], origin[None], np.array([theta]))[0]
    if config.frame == "agent" and (np.hypot(*origin) > 0.05 or abs(theta) > math.radians(1.0)):
        notes.append(
            f"moved by ({-origin[0]:.1f}, {-origin[1]:.1f}) m and turned by {-math.degrees(theta):.0f} "
            "degrees to start at the origin heading +x"
        )
    return Sketch(
        xy_agent=agent.astype(np.float32),
        xy_drawn=drawn,
        points=xy,
        origin_xy=origin,
        theta_rad=theta,
        speed_mps=float(speed),
        path_length_m=length,
        window_length_m=float(covered),
        notes=tuple(notes),
    )
