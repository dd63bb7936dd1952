"""Histories: the first H steps of a window, expressed in the frame of their last state.

A forecaster stands at the last observed step (AV2's "current" timestep) and looks ahead, so the frame
that makes two histories comparable as predictors is the one of their *last* state, as in AV2
agent-centric forecasting (QCNet, Forecast-MAE): origin at the last position, +x along the motion
heading there. In the window's own agent frame (origin at the first step), two histories that end in
the same state but started differently lie far apart, and those that start alike but end in different
states lie close. Raw kNN on histories in the last-state frame gives a 4 % lower minFDE6 than in the
window's frame on the real AV2 fixtures (1.51 against 1.57 m, their own windows as a bank, leave one
scenario out) and 10 % lower on synthetic held-out windows (docs/retrieval-quality.md).

``LastState`` is that state (position, heading, velocity, all in the window's agent frame);
``history_input`` is what history models read and what ``knn_raw`` compares: the (H, 2) history in
its last-state frame. Motion heading at the last step is the direction of the last 0.5 s of motion
(``trajemb.data.frames.motion_heading_rad``); where the object moved less than 0.5 m in that time, the
direction from the latest earlier position at least 0.5 m away, else the window's initial heading
(+x of the agent frame). Velocity is the last step's displacement over one step (the constant-velocity
baseline's estimate, ``trajemb.analysis.motion_models``).

Legend: N windows, T steps, H history steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajemb.core.errors import ConfigError
from trajemb.data.frames import HEADING_LOOKAHEAD_STEPS, MIN_HEADING_DISPLACEMENT_M, motion_heading_rad
from trajemb.data.perturb import Observed, fill_missing
from trajemb.data.schema import STEP_S, BoolArray, Float32Array, FloatArray

#: The history length the shipped history checkpoints read: 3 s at 10 Hz (AV2 observes 5 s).
DEFAULT_HISTORY_STEPS = 30


def rotate(xy: FloatArray, angle_rad: FloatArray) -> FloatArray:
    """Rotate (..., 2) vectors counter-clockwise by ``angle_rad`` (broadcast over the leading axes)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


@dataclass(frozen=True)
class LastState:
    """The state at the last step of N histories, in their windows' agent frames."""

    xy_agent: FloatArray  # (N, 2) position
    heading_rad: FloatArray  # (N,) motion heading
    velocity_mps: FloatArray  # (N, 2) last step's displacement / step

    def to_local(self, xy_agent: FloatArray) -> FloatArray:
        """(N, ..., 2) agent-frame positions -> the frame of the last state (origin there, heading +x)."""
        shape = (len(self.heading_rad),) + (1,) * (xy_agent.ndim - 2)
        return rotate(xy_agent - self.xy_agent.reshape(shape + (2,)), -self.heading_rad.reshape(shape))

    def to_agent(self, xy_local: FloatArray) -> FloatArray:
        """Inverse of ``to_local``."""
        shape = (len(self.heading_rad),) + (1,) * (xy_local.ndim - 2)
        return rotate(xy_local, self.heading_rad.reshape(shape)) + self.xy_agent.reshape(shape + (2,))

    @property
    def velocity_local_mps(self) -> FloatArray:
        """(N, 2) velocity in the last-state frame (x forward, y to the left)."""
        return rotate(self.velocity_mps, -self.heading_rad)


def check_history_steps(history_steps: int, num_steps: int, what: str = "windows") -> None:
    """A history of ``history_steps`` needs at least 2 steps (a velocity) and leaves at least one step of
    future in ``num_steps``-step windows."""
    if isinstance(history_steps, bool) or not isinstance(history_steps, int):
        raise ConfigError(
            f"history_steps must be an integer, got {history_steps!r:.40}", fields=("history_steps",)
        )
    if not 2 <= history_steps <= num_steps - 1:
        raise ConfigError(
            f"history_steps {history_steps} does not fit {num_steps}-step {what}: a history needs at "
            f"least 2 steps and must leave a future of at least 1 step (give 2 to {num_steps - 1})",
            fields=("history_steps",),
        )


def last_state(history_xy: FloatArray) -> LastState:
    """The last state of (N, H, 2) agent-frame histories (module docstring for the rules), H >= 2."""
    xy = np.asarray(history_xy, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[1] < 2 or xy.shape[2] != 2:
        raise ConfigError(f"histories must have shape (N, H >= 2, 2), got {xy.shape}")
    last = xy[:, -1]
    # Fallback heading: towards the last point from the latest earlier point at least the heading
    # displacement away (a slow or stopped object keeps the heading it last moved with), else +x.
    dist = np.linalg.norm(last[:, None] - xy[:, :-1], axis=-1)  # (N, H - 1)
    far = dist >= MIN_HEADING_DISPLACEMENT_M
    latest = np.where(far.any(axis=1), xy.shape[1] - 2 - np.argmax(far[:, ::-1], axis=1), -1)
    rows = np.arange(len(xy))
    delta = last - xy[rows, np.maximum(latest, 0)]
    fallback = np.where(latest >= 0, np.arctan2(delta[:, 1], delta[:, 0]), 0.0)
    heading = motion_heading_rad(xy[:, -(HEADING_LOOKAHEAD_STEPS + 1) :], fallback, at_end=True)
    return LastState(last, heading, (xy[:, -1] - xy[:, -2]) / STEP_S)


def history_input(xy_agent: np.ndarray, history_steps: int) -> Float32Array:
    """(N, T, 2) agent-frame windows -> (N, H, 2) float32: their first H steps in the frame of the last
    of them. What history models embed and ``knn_raw`` compares."""
    xy = np.asarray(xy_agent, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] != 2:
        raise ConfigError(f"windows must have shape (N, T, 2), got {xy.shape}")
    if isinstance(history_steps, bool) or not 2 <= history_steps <= xy.shape[1]:
        raise ConfigError(f"a history of {history_steps!r:.40} steps does not fit {xy.shape[1]}-step windows")
    history = xy[:, :history_steps]
    return np.ascontiguousarray(last_state(history).to_local(history), dtype=np.float32)


def window_in_history_frame(xy_agent: np.ndarray, history_steps: int) -> Float32Array:
    """(N, T, 2) agent-frame windows -> (N, T, 2) float32: the whole windows (history and future) in the
    frame of their history's last state (a history model's training targets with window targets)."""
    xy = np.asarray(xy_agent, dtype=np.float64)
    history_input(xy[:1], history_steps)  # the same checks
    return np.ascontiguousarray(last_state(xy[:, :history_steps]).to_local(xy), dtype=np.float32)


def to_history_frame(xy: FloatArray, valid: BoolArray) -> Observed:
    """Observed (N, H, 2) histories (NaN where missing) re-expressed in the last-state frame of their
    completed selves (``trajemb.data.perturb.fill_missing``), as ``history_input`` would see them: the
    training augmentation's frame for history models (``trajemb.training.augment``)."""
    filled = fill_missing(xy, valid)
    local = last_state(filled).to_local(np.where(valid[..., None], xy, 0.0))
    return Observed(np.where(valid[..., None], local, np.nan), valid.copy())
