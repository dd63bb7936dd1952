"""Generator 1's road users (``trajemb synth --generator 1``), kept as they were. Road users on
synthetic routes: speed profiles along arc length, sampled at 10 Hz.

A speed profile respects a desired speed, a lateral-acceleration limit in curves
(``v <= sqrt(a_lat / |kappa|)``), acceleration and braking limits, and optional stops (a stop line with
a wait, or a queue start). The forward / backward passes of the classic velocity planner are closed
forms over running minima, so each agent costs a few numpy calls, not a loop over grid points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajemb.data.schema import STEP_S, BoolArray, FloatArray
from trajemb.data.synth.geometry import arc_length_m, curvature_per_m, gradient_rows


@dataclass(frozen=True)
class Driver:
    """How one road user moves."""

    desired_speed_mps: float
    accel_mps2: float
    decel_mps2: float
    lateral_accel_mps2: float
    initial_speed_mps: float
    stop_at_m: float | None = None  # arc length of a stop on the route
    wait_s: float = 0.0  # wait there (or at the start, if initial speed is 0)


@dataclass(frozen=True)
class Motion:
    xy: FloatArray  # (S, 2) positions, NaN where the agent is not on its route
    heading_rad: FloatArray  # (S,)
    velocity_mps: FloatArray  # (S, 2)
    valid: BoolArray  # (S,)
    route_s_m: FloatArray  # (S,) noise-free arc length along the route (0 standing still), NaN where invalid


def speed_profile(s_m: FloatArray, kappa_per_m: FloatArray, driver: Driver) -> FloatArray:
    """Feasible speed (m/s) at each arc-length sample ``s_m`` (uniformly spaced, starting at 0)."""
    v_max = np.minimum(
        driver.desired_speed_mps, np.sqrt(driver.lateral_accel_mps2 / np.maximum(np.abs(kappa_per_m), 1e-6))
    )
    v2 = v_max**2
    v2[0] = min(v2[0], driver.initial_speed_mps**2)
    if driver.stop_at_m is not None:
        v2[int(np.searchsorted(s_m, driver.stop_at_m))] = 0.0
    # Forward pass: v_i^2 = min_j<=i (v_j^2 + 2 a (s_i - s_j)); backward with the braking limit.
    a, d = driver.accel_mps2, driver.decel_mps2
    fwd = 2 * a * s_m + np.minimum.accumulate(v2 - 2 * a * s_m)
    bwd = -2 * d * s_m + np.minimum.accumulate((fwd + 2 * d * s_m)[::-1])[::-1]
    return np.sqrt(np.maximum(bwd, 0.0))


def heading_path_at(xy_path: FloatArray) -> FloatArray:
    """Unwrapped tangent heading at each point of a path (repeated points take their neighbours')."""
    tangent = gradient_rows(xy_path)
    return np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))


def drive(route_xy: FloatArray, s0_m: float, driver: Driver, t0_s: float, num_steps: int) -> Motion:
    """Follow ``route_xy`` from arc length ``s0_m``, entering the scene at time ``t0_s``.

    Returns positions at 10 Hz for ``num_steps`` steps; the agent is invalid before ``t0_s`` and after
    it reaches the end of its route.
    """
    s_full = arc_length_m(route_xy)
    start = int(np.searchsorted(s_full, s0_m))
    xy_path = route_xy[start:]
    s = s_full[start:] - s_full[start]
    kappa = curvature_per_m(xy_path) if len(xy_path) > 3 else np.zeros(len(xy_path))
    stop = None if driver.stop_at_m is None or driver.stop_at_m < s0_m else driver.stop_at_m - s0_m
    if stop is not None and stop > s[-1]:
        stop = None  # the stop lies past the end of the route
    drv = Driver(
        driver.desired_speed_mps,
        driver.accel_mps2,
        driver.decel_mps2,
        driver.lateral_accel_mps2,
        driver.initial_speed_mps,
        stop,
        driver.wait_s,
    )
    v = speed_profile(s, kappa, drv)
    dt = 2.0 * np.diff(s) / np.maximum(v[:-1] + v[1:], 1e-3)
    t = t0_s + np.concatenate([[0.0], np.cumsum(dt)])
    hold = None
    if drv.initial_speed_mps == 0.0 and driver.wait_s > 0:
        hold = 0  # queued at the start
    elif stop is not None and driver.wait_s > 0:
        hold = int(np.searchsorted(s, stop))
    if hold is not None:  # stand still at grid point ``hold`` for wait_s: duplicate it in time
        t = np.concatenate([t[: hold + 1], t[hold:] + driver.wait_s])
        s = np.concatenate([s[: hold + 1], s[hold:]])
        v = np.concatenate([v[: hold + 1], v[hold:]])
        xy_path = np.concatenate([xy_path[: hold + 1], xy_path[hold:]])
    times = np.arange(num_steps) * STEP_S
    valid = (times >= t0_s) & (times <= t[-1])
    xy = np.stack([np.interp(times, t, xy_path[:, 0]), np.interp(times, t, xy_path[:, 1])], axis=-1)
    speed = np.interp(times, t, v)
    heading = np.interp(times, t, heading_path_at(xy_path))
    velocity = np.stack([np.cos(heading), np.sin(heading)], axis=-1) * speed[:, None]
    xy[~valid] = np.nan
    route_s = np.where(valid, np.interp(times, t, s) + s_full[start], np.nan)
    return Motion(xy, (heading + np.pi) % (2 * np.pi) - np.pi, velocity, valid, route_s)


def standing(
    xy: FloatArray, heading_rad: float, num_steps: int, rng: np.random.Generator, jitter_m: float
) -> Motion:
    """A parked or standing object with detection jitter."""
    pos = xy[None, :] + rng.normal(0.0, jitter_m, (num_steps, 2))
    heading = heading_rad + rng.normal(0.0, 0.01, num_steps)
    return Motion(
        pos,
        (heading + np.pi) % (2 * np.pi) - np.pi,
        np.zeros((num_steps, 2)),
        np.ones(num_steps, dtype=bool),
        np.zeros(num_steps),
    )
