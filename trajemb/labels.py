"""Window labels for colouring and cluster quality: direction class and speed bin.

Direction comes from the total heading change along the path and from the lateral offset of the end
point that a constant-curvature arc with that heading change would not explain (a lane change shifts
sideways without a net turn). Thresholds are module constants so that they are named and tested.
"""

from __future__ import annotations

import numpy as np

from trajemb.frames import wrap_angle_rad
from trajemb.schema import STEP_S, DirectionClass, FloatArray, StrArray

STATIONARY_MAX_SPEED_MPS: float = 0.5
HEADING_HALF_CHORD_STEPS: int = 2
HEADING_MIN_CHORD_M: float = 0.4
TURN_MIN_HEADING_CHANGE_RAD: float = np.deg2rad(45.0)
U_TURN_MIN_HEADING_CHANGE_RAD: float = np.deg2rad(135.0)
LANE_CHANGE_MAX_HEADING_CHANGE_RAD: float = np.deg2rad(30.0)
LANE_CHANGE_MIN_RESIDUAL_M: float = 2.0

#: Upper edges (m/s) of the speed bins; the last bin is open.
SPEED_BIN_EDGES_MPS: tuple[float, ...] = (0.5, 2.5, 5.0, 10.0, 15.0)
SPEED_BIN_NAMES: tuple[str, ...] = ("0-0.5", "0.5-2.5", "2.5-5", "5-10", "10-15", "15+")


def path_length_m(xy: FloatArray) -> FloatArray:
    """(W, T, 2) -> (W,) summed step lengths."""
    steps = np.diff(xy, axis=1)
    return np.asarray(np.hypot(steps[..., 0], steps[..., 1]).sum(axis=1), dtype=np.float64)


def mean_speed_mps(xy: FloatArray) -> FloatArray:
    """Path length over duration, (W,)."""
    return np.asarray(path_length_m(xy) / ((xy.shape[1] - 1) * STEP_S), dtype=np.float64)


def total_heading_change_rad(xy: FloatArray) -> FloatArray:
    """Signed, unwrapped heading change along each path (positive = left / counter-clockwise).

    The heading at step i is the direction of the chord from step i-2 to i+2 (clipped at the ends), so
    jitter is averaged over 0.4 s while the whole window is covered; chords shorter than
    ``HEADING_MIN_CHORD_M`` (standing still) contribute no change.

    Args:
        xy: (W, T, 2) positions in any frame.
    """
    T = xy.shape[1]
    i = np.arange(T)
    chord = (
        xy[:, np.minimum(i + HEADING_HALF_CHORD_STEPS, T - 1)]
        - xy[:, np.maximum(i - HEADING_HALF_CHORD_STEPS, 0)]
    )
    moving = np.hypot(chord[..., 0], chord[..., 1]) >= HEADING_MIN_CHORD_M
    heading = np.arctan2(chord[..., 1], chord[..., 0])
    # Compare each moving step with the previous moving step (carry the last moving heading forward).
    idx = np.where(moving, i[None, :], -1)
    last_moving = np.maximum.accumulate(idx, axis=1)
    prev_moving = np.concatenate([np.full((xy.shape[0], 1), -1), last_moving[:, :-1]], axis=1)
    has_prev = moving & (prev_moving >= 0)
    prev_heading = np.take_along_axis(heading, np.maximum(prev_moving, 0), axis=1)
    dh = np.where(has_prev, wrap_angle_rad(heading - prev_heading), 0.0)
    return np.asarray(dh.sum(axis=1), dtype=np.float64)


def arc_lateral_offset_m(length_m: FloatArray, heading_change_rad: FloatArray) -> FloatArray:
    """Lateral end offset of a constant-curvature arc of given length and heading change (+y left)."""
    small = np.abs(heading_change_rad) < 1e-6
    safe = np.where(small, 1.0, heading_change_rad)
    return np.where(small, length_m * heading_change_rad / 2.0, length_m * (1.0 - np.cos(safe)) / safe)


def direction_class(xy_agent: FloatArray) -> tuple[StrArray, FloatArray, FloatArray]:
    """Classify each window's manoeuvre.

    Args:
        xy_agent: (W, T, 2) windows in their agent frame.

    Returns:
        (W,) DirectionClass values, (W,) total heading change (rad), (W,) lateral offset of the end
        point (m, +y left).
    """
    dtheta = total_heading_change_rad(xy_agent)
    lateral = xy_agent[:, -1, 1].astype(np.float64)
    length = path_length_m(xy_agent)
    residual = lateral - arc_lateral_offset_m(length, dtheta)
    speed = length / ((xy_agent.shape[1] - 1) * STEP_S)
    abs_dtheta = np.abs(dtheta)
    lane_change = (abs_dtheta < LANE_CHANGE_MAX_HEADING_CHANGE_RAD) & (
        np.abs(residual) >= LANE_CHANGE_MIN_RESIDUAL_M
    )
    labels = np.select(
        [
            speed < STATIONARY_MAX_SPEED_MPS,
            abs_dtheta >= U_TURN_MIN_HEADING_CHANGE_RAD,
            dtheta >= TURN_MIN_HEADING_CHANGE_RAD,
            dtheta <= -TURN_MIN_HEADING_CHANGE_RAD,
            lane_change & (residual > 0),
            lane_change & (residual < 0),
        ],
        [
            DirectionClass.STATIONARY.value,
            DirectionClass.U_TURN.value,
            DirectionClass.LEFT.value,
            DirectionClass.RIGHT.value,
            DirectionClass.LANE_CHANGE_LEFT.value,
            DirectionClass.LANE_CHANGE_RIGHT.value,
        ],
        default=DirectionClass.STRAIGHT.value,
    )
    return labels.astype(np.str_), dtheta, lateral


def speed_bin(speed_mps: FloatArray) -> StrArray:
    """Bin mean speeds into ``SPEED_BIN_NAMES``."""
    idx = np.searchsorted(np.asarray(SPEED_BIN_EDGES_MPS), speed_mps, side="right")
    return np.asarray(SPEED_BIN_NAMES, dtype=np.str_)[idx]


def direction_rules() -> list[tuple[str, str]]:
    """How each direction class is decided, in words, from the thresholds above (first match wins)."""
    turn = np.rad2deg(TURN_MIN_HEADING_CHANGE_RAD)
    return [
        (DirectionClass.STATIONARY.value, f"mean speed below {STATIONARY_MAX_SPEED_MPS:g} m/s"),
        (DirectionClass.U_TURN.value, f"heading turns by {np.rad2deg(U_TURN_MIN_HEADING_CHANGE_RAD):.0f}° or more"),
        (DirectionClass.LEFT.value, f"heading turns left (counter-clockwise) by {turn:.0f}° or more"),
        (DirectionClass.RIGHT.value, f"heading turns right by {turn:.0f}° or more"),
        (DirectionClass.LANE_CHANGE_LEFT.value,
         f"heading changes by less than {np.rad2deg(LANE_CHANGE_MAX_HEADING_CHANGE_RAD):.0f}° but the end point lies "
         f"{LANE_CHANGE_MIN_RESIDUAL_M:g} m or more to the left of where an arc of that heading change would end"),
        (DirectionClass.LANE_CHANGE_RIGHT.value, "the same, to the right"),
        (DirectionClass.STRAIGHT.value, "everything else, including gentle curves of less than "
                                         f"{turn:.0f}° (so a 40° bend on a curved road is 'straight')"),
    ]  # fmt: skip
