"""How far motion is from real motion: per-feature samples of trajectory windows and their distances.

Every feature is read from positions alone (any frame: each is invariant to rotation and translation),
so that a synthetic table and a real one are measured by the same rule whatever their sources record.
Positions are smoothed and differentiated with a Savitzky-Golay filter (``scipy.signal.savgol_filter``:
a cubic over ``SMOOTH_STEPS`` steps), as trajectory statistics of tracked road users usually are
(finite differences of tracker output measure the tracker's noise, not the motion); the noise itself
is its own feature (``jitter_m``, from the raw positions).

Features (``FEATURES``; each a sample per step, per window, per stop or per track):

* per step: ``speed_mps``; where faster than ``TURNING_MIN_SPEED_MPS`` (direction is undefined at a
  standstill): ``accel_lon_mps2`` and ``accel_lat_mps2`` (acceleration along and across the velocity,
  left positive), ``jerk_lon_mps3`` (third derivative along the velocity), ``yaw_rate_radps`` and
  ``curvature_per_m`` (of the path, left positive); every step: ``jitter_m``, how far a position lies
  from the midpoint of its two neighbours (half the second difference: a few millimetres for smooth
  motion at 10 Hz, the tracker's noise otherwise);
* per window: ``heading_change_rad`` (signed, ``trajemb.data.labels.total_heading_change_rad``, the
  direction labels' own measure) and ``stop_fraction`` (share of steps slower than
  ``STOP_MAX_SPEED_MPS``, the labels' stationary speed);
* per stop: ``stop_duration_s``, each run of stopped steps inside a track's stretch of windows;
* per track: ``track_length_s``, how long the table sees the track (its windows' span), at most an AV2
  scenario's 11 s so that 15 s sensor logs and 11 s scenarios compare.

Windows of one track overlap; per-step and per-stop samples take each step of a track once (from the
window in which it lies most central, where the smoother sees both sides of it), so a state is not
counted once per window that shows it.

Distances per feature (``feature_distance``): the Wasserstein-1 distance in units of the real sample's
standard deviation (``scipy.stats.wasserstein_distance``) and the two-sample Kolmogorov-Smirnov
statistic (``scipy.stats.ks_2samp``).

Legend: N windows, T steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_TOTAL_TIMESTEPS
from scipy.signal import savgol_filter
from scipy.stats import ks_2samp, wasserstein_distance

from trajemb.core.errors import DataError
from trajemb.data.labels import STATIONARY_MAX_SPEED_MPS, total_heading_change_rad
from trajemb.data.schema import STEP_S, BoolArray, FloatArray, IntArray

#: Savitzky-Golay smoothing: a cubic fitted over this many steps (1 s at 10 Hz) around each step.
SMOOTH_STEPS = 11
SMOOTH_ORDER = 3
#: Direction-dependent features (accelerations along and across, jerk, yaw rate, curvature) only where
#: the smoothed speed is at least this: at a standstill the direction of motion is the tracker's noise.
TURNING_MIN_SPEED_MPS = 1.0
#: A step is stopped below this smoothed speed (the direction labels' stationary speed).
STOP_MAX_SPEED_MPS = STATIONARY_MAX_SPEED_MPS
#: A window is moving when its net displacement over its duration is at least this (m/s): ``trajemb
#: prepare``'s default filter, applied again so that tables prepared with ``--min-speed 0`` compare.
MOVING_MIN_SPEED_MPS = 1.0
#: Longest track length counted (s): an AV2 motion-forecasting scenario.
MAX_TRACK_LENGTH_S = (AV2_SCENARIO_TOTAL_TIMESTEPS - 1) * STEP_S

Level = Literal["step", "window", "stop", "track"]


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    level: Level
    label: str


FEATURES: tuple[Feature, ...] = (
    Feature("speed_mps", "m/s", "step", "speed"),
    Feature("accel_lon_mps2", "m/s²", "step", "longitudinal acceleration"),
    Feature("accel_lat_mps2", "m/s²", "step", "lateral acceleration"),
    Feature("jerk_lon_mps3", "m/s³", "step", "longitudinal jerk"),
    Feature("yaw_rate_radps", "rad/s", "step", "yaw rate"),
    Feature("curvature_per_m", "1/m", "step", "curvature"),
    Feature("heading_change_rad", "rad", "window", "heading change per window"),
    Feature("stop_fraction", "", "window", "stop fraction"),
    Feature("stop_duration_s", "s", "stop", "stop duration"),
    Feature("jitter_m", "m", "step", "step-to-step jitter"),
    Feature("track_length_s", "s", "track", "track length"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


@dataclass(frozen=True)
class Derivatives:
    """Smoothed motion of N windows: (N, T, 2) velocity, acceleration and jerk in the windows' frame."""

    velocity_mps: FloatArray
    accel_mps2: FloatArray
    jerk_mps3: FloatArray

    @property
    def speed_mps(self) -> FloatArray:
        """(N, T)"""
        return np.asarray(np.hypot(self.velocity_mps[..., 0], self.velocity_mps[..., 1]), dtype=np.float64)


def derivatives(xy: np.ndarray, step_s: float = STEP_S) -> Derivatives:
    """Savitzky-Golay velocity, acceleration and jerk of (N, T, 2) positions (T >= ``SMOOTH_STEPS``)."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] != 2 or xy.shape[1] < SMOOTH_STEPS:
        raise DataError(f"windows of shape {xy.shape}: expected (N, T, 2) with T >= {SMOOTH_STEPS} steps")

    def d(order: int) -> FloatArray:
        return np.asarray(
            savgol_filter(xy, SMOOTH_STEPS, SMOOTH_ORDER, deriv=order, delta=step_s, axis=1, mode="interp"),
            dtype=np.float64,
        )

    return Derivatives(d(1), d(2), d(3))


def moving_windows(xy: np.ndarray, step_s: float = STEP_S) -> BoolArray:
    """(N,) windows whose net displacement over their duration is at least ``MOVING_MIN_SPEED_MPS``."""
    xy = np.asarray(xy, dtype=np.float64)
    net_m = np.hypot(*(xy[:, -1] - xy[:, 0]).T)
    return np.asarray(net_m / ((xy.shape[1] - 1) * step_s) >= MOVING_MIN_SPEED_MPS, dtype=bool)


def owned_steps(track: IntArray, start_step: IntArray, num_steps: int) -> BoolArray:
    """(N, T) the steps each window takes its samples from: of the windows of a track that hold a step,
    the one in which it lies most central (ties: the earlier window), away from the smoother's edges.

    Args:
        track: (N,) track of each window (any int id).
        start_step: (N,) first step of each window in its track's time line.
    """
    track = np.asarray(track, dtype=np.int64)
    start = np.asarray(start_step, dtype=np.int64)
    order = np.lexsort((start, track))
    s = start[order]
    first = np.concatenate([[True], track[order][1:] != track[order][:-1]])
    last = np.concatenate([first[1:], [True]])
    # Windows have one length, so the most central window of a step is the one whose centre is
    # nearest: a window holds the steps between the midpoints to its neighbours' centres (2x, integers).
    twice_lo = np.where(first, np.iinfo(np.int64).min // 2, np.concatenate([[0], s[:-1]]) + s + num_steps - 1)
    twice_hi = np.where(last, np.iinfo(np.int64).max // 2, s + np.concatenate([s[1:], [0]]) + num_steps - 1)
    twice_t = 2 * (s[:, None] + np.arange(num_steps)[None, :])
    owned_sorted = (twice_t > twice_lo[:, None]) & (twice_t <= twice_hi[:, None])
    owned = np.empty_like(owned_sorted)
    owned[order] = owned_sorted
    return owned


def _runs(mask: BoolArray) -> IntArray:
    """Lengths of the runs of True in each row of a (N, T) mask, all rows together."""
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    starts = np.flatnonzero(edges.ravel() == 1)
    ends = np.flatnonzero(edges.ravel() == -1)
    return np.asarray(ends - starts, dtype=np.int64)


def feature_samples(
    xy: np.ndarray, track: IntArray, start_step: IntArray, step_s: float = STEP_S
) -> dict[str, FloatArray]:
    """Every feature's samples (``FEATURES``) of N windows of one kind of road user.

    Args:
        xy: (N, T, 2) positions (m) in any frame (agent or city).
        track: (N,) track of each window (windows of one track overlap).
        start_step: (N,) first step of each window.

    Returns:
        {feature name: (M,) samples}, M depending on the feature's level.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n, t = xy.shape[:2]
    if n == 0:
        return {name: np.zeros(0) for name in FEATURE_NAMES}
    motion = derivatives(xy, step_s)
    v, a, j = motion.velocity_mps, motion.accel_mps2, motion.jerk_mps3
    speed = motion.speed_mps
    owned = owned_steps(track, start_step, t)
    turning = owned & (speed >= TURNING_MIN_SPEED_MPS)
    safe = np.where(turning, speed, 1.0)
    cross = v[..., 0] * a[..., 1] - v[..., 1] * a[..., 0]
    jitter = np.full((n, t), np.nan)
    jitter[:, 1:-1] = np.hypot(*(xy[:, 1:-1] - (xy[:, :-2] + xy[:, 2:]) / 2).transpose(2, 0, 1))
    stopped = speed < STOP_MAX_SPEED_MPS
    stop_runs = _stop_runs(stopped, owned, np.asarray(track), np.asarray(start_step))
    return {
        "speed_mps": speed[owned],
        "accel_lon_mps2": ((v * a).sum(-1) / safe)[turning],
        "accel_lat_mps2": (cross / safe)[turning],
        "jerk_lon_mps3": ((v * j).sum(-1) / safe)[turning],
        "yaw_rate_radps": (cross / safe**2)[turning],
        "curvature_per_m": (cross / safe**3)[turning],
        "heading_change_rad": total_heading_change_rad(xy),
        "stop_fraction": stopped.mean(axis=1),
        "stop_duration_s": stop_runs * step_s,
        "jitter_m": jitter[owned & np.isfinite(jitter)],
        "track_length_s": _track_lengths_s(np.asarray(track), np.asarray(start_step), t, step_s),
    }


def _stop_runs(stopped: BoolArray, owned: BoolArray, track: IntArray, start_step: IntArray) -> IntArray:
    """Runs of stopped steps along each track's time line (its windows' owned steps laid end to end)."""
    if not stopped.any():
        return np.zeros(0, dtype=np.int64)
    t = stopped.shape[1]
    ids, inverse = np.unique(track, return_inverse=True)
    first = np.full(len(ids), np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, start_step)
    last = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(last, inverse, start_step + t)
    length = last - first
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    # One time line per track, separated by a False step so that runs never join across tracks.
    line = np.zeros(int(length.sum() + len(ids)), dtype=bool)
    pos = (offset + np.arange(len(ids)))[inverse][:, None] + (start_step - first[inverse])[:, None]
    pos = pos + np.arange(t)[None, :]
    line[pos[owned]] = stopped[owned]
    return _runs(line[None, :])


def _track_lengths_s(track: IntArray, start_step: IntArray, num_steps: int, step_s: float) -> FloatArray:
    ids, inverse = np.unique(track, return_inverse=True)
    first = np.full(len(ids), np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, start_step)
    last = np.zeros(len(ids), dtype=np.int64)
    np.maximum.at(last, inverse, start_step + num_steps - 1)
    return np.asarray(np.minimum((last - first) * step_s, MAX_TRACK_LENGTH_S), dtype=np.float64)


@dataclass(frozen=True)
class FeatureDistance:
    """How far one feature's synthetic samples are from its real ones."""

    n_real: int
    n_synthetic: int
    w1_over_std: float  # Wasserstein-1 / real standard deviation; NaN without samples on a side
    ks: float  # Kolmogorov-Smirnov statistic; NaN without samples on a side
    real_quantiles: tuple[float, float, float]  # 10th, 50th, 90th percentile; NaN without samples
    synthetic_quantiles: tuple[float, float, float]


QUANTILES = (0.1, 0.5, 0.9)


def _quantiles(x: FloatArray) -> tuple[float, float, float]:
    if len(x) == 0:
        return (float("nan"),) * 3
    q = np.quantile(x, QUANTILES)
    return float(q[0]), float(q[1]), float(q[2])


def feature_distance(real: FloatArray, synthetic: FloatArray) -> FeatureDistance:
    """Wasserstein-1 over the real standard deviation and the KS statistic of two samples."""
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    if len(real) == 0 or len(synthetic) == 0:
        w1, ks = float("nan"), float("nan")
    else:
        std = float(np.std(real))
        w1 = float(wasserstein_distance(real, synthetic)) / std if std > 0 else float("nan")
        # The statistic is the same whichever way its p-value (unused) is computed; the asymptotic
        # p-value divides by zero for a sample of one.
        with np.errstate(divide="ignore"):
            ks = float(ks_2samp(real, synthetic, method="asymp").statistic)
    return FeatureDistance(len(real), len(synthetic), w1, ks, _quantiles(real), _quantiles(synthetic))
