"""Physical motion models: the baselines a retrieved motion prior has to beat.

* **Constant velocity**: the last step's displacement, repeated (the estimate ``trajemb.data.history``'s
  last state carries; on the real AV2 fixtures it gives minFDE 2.79 m over 3 s, averaging the velocity
  over more steps only made it worse: 2.94 m over 3 steps, 3.09 m over 5).
* **Constant acceleration**: acceleration from the mean velocities of the last two 0.5 s spans of the
  history, velocity at the last step from the last span's mean and that acceleration (so that constant
  acceleration is continued exactly), kept until the object would stop: a braking object comes to
  rest instead of reversing. The span was chosen on synthetic held-out windows (0.3 s, 0.5 s, 1 s:
  minFDE over 3 s 6.23, 4.37 and 4.72 m, where constant velocity gives 5.96), shorter where the
  history holds fewer than 11 steps; with 2 steps it is constant velocity.

Both extrapolate in the window's agent frame from its history's last position, one forecast each.

Legend: N windows, H history steps, F future steps.
"""

from __future__ import annotations

import numpy as np

from trajemb.core.errors import ConfigError
from trajemb.data.schema import STEP_S, FloatArray

#: Steps of each of the two spans the constant-acceleration model estimates from (0.5 s at 10 Hz).
ACCELERATION_SPAN_STEPS = 5


def _check(history_xy: np.ndarray, future_steps: int) -> FloatArray:
    xy = np.asarray(history_xy, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[1] < 2 or xy.shape[2] != 2:
        raise ConfigError(f"histories must have shape (N, H >= 2, 2), got {xy.shape}")
    if isinstance(future_steps, bool) or not isinstance(future_steps, int) or future_steps < 1:
        raise ConfigError(f"future steps must be a positive integer, got {future_steps!r:.40}")
    return xy


def future_times_s(future_steps: int) -> FloatArray:
    """(F,) seconds after the last history step of each future step."""
    return np.arange(1, future_steps + 1, dtype=np.float64) * STEP_S


def constant_velocity(history_xy: np.ndarray, future_steps: int) -> FloatArray:
    """(N, H, 2) histories -> (N, F, 2) futures at the last step's velocity, same frame."""
    xy = _check(history_xy, future_steps)
    velocity = (xy[:, -1] - xy[:, -2]) / STEP_S
    return xy[:, -1, None] + velocity[:, None] * future_times_s(future_steps)[None, :, None]


def constant_acceleration(history_xy: np.ndarray, future_steps: int) -> FloatArray:
    """(N, H, 2) histories -> (N, F, 2) futures at constant acceleration until standstill, same frame."""
    xy = _check(history_xy, future_steps)
    span = min(ACCELERATION_SPAN_STEPS, (xy.shape[1] - 1) // 2)
    if span < 1:
        return constant_velocity(xy, future_steps)
    duration_s = span * STEP_S
    recent = (xy[:, -1] - xy[:, -1 - span]) / duration_s  # mean velocity of the last span (its middle)
    before = (xy[:, -1 - span] - xy[:, -1 - 2 * span]) / duration_s
    accel = (recent - before) / duration_s
    velocity = recent + accel * (duration_s / 2)  # at the last step
    # Along the velocity, a braking object stops at -|v|^2 / (v . a); it stays there.
    along = (velocity * accel).sum(axis=1)
    speed_sq = (velocity * velocity).sum(axis=1)
    stop_s = np.where(along < 0, speed_sq / np.maximum(-along, 1e-12), np.inf)
    t = np.minimum(future_times_s(future_steps)[None, :], stop_s[:, None])[..., None]  # (N, F, 1)
    out: FloatArray = xy[:, -1, None] + velocity[:, None] * t + 0.5 * accel[:, None] * t * t
    return out
