"""Agent-frame normalisation: translate to the first point, rotate the initial heading onto +x.

The origin and heading are kept so that windows map back to the city frame, as in QCNet /
Forecast-MAE preprocessing.
"""

from __future__ import annotations

import numpy as np

from trajemb.data.schema import FloatArray

#: Look-ahead (steps) for the motion heading at the start and end of a window: 0.5 s at 10 Hz.
HEADING_LOOKAHEAD_STEPS: int = 5
#: Below this displacement over the look-ahead the motion direction is noise; use the recorded heading.
MIN_HEADING_DISPLACEMENT_M: float = 0.5


def wrap_angle_rad(angle_rad: FloatArray) -> FloatArray:
    """Wrap angles to [-pi, pi)."""
    return np.asarray((angle_rad + np.pi) % (2.0 * np.pi) - np.pi, dtype=np.float64)


def motion_heading_rad(xy: FloatArray, fallback_heading_rad: FloatArray, at_end: bool = False) -> FloatArray:
    """Heading of motion at the start (or end) of each window.

    Args:
        xy: (W, T, 2) positions.
        fallback_heading_rad: (W,) heading used where the object moved less than
            ``MIN_HEADING_DISPLACEMENT_M`` over the look-ahead (NaN falls back to 0).
        at_end: measure over the last look-ahead steps instead of the first.

    Returns:
        (W,) heading in the frame of ``xy``.
    """
    k = min(HEADING_LOOKAHEAD_STEPS, xy.shape[1] - 1)
    delta = xy[:, -1] - xy[:, -1 - k] if at_end else xy[:, k] - xy[:, 0]
    moved = np.hypot(delta[:, 0], delta[:, 1]) >= MIN_HEADING_DISPLACEMENT_M
    fallback = np.nan_to_num(fallback_heading_rad, nan=0.0)
    return np.where(moved, np.arctan2(delta[:, 1], delta[:, 0]), fallback)


def city_to_agent(xy_city: FloatArray, origin_xy_city: FloatArray, theta_rad: FloatArray) -> FloatArray:
    """Express (W, T, 2) city-frame positions in each window's agent frame: R(-theta) (p - origin)."""
    d = xy_city - origin_xy_city[:, None, :]
    c, s = np.cos(theta_rad)[:, None], np.sin(theta_rad)[:, None]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def agent_to_city(xy_agent: FloatArray, origin_xy_city: FloatArray, theta_rad: FloatArray) -> FloatArray:
    """Inverse of ``city_to_agent``: R(theta) p + origin, for (W, T, 2) positions."""
    c, s = np.cos(theta_rad)[:, None], np.sin(theta_rad)[:, None]
    x, y = xy_agent[..., 0], xy_agent[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1) + origin_xy_city[:, None, :]
