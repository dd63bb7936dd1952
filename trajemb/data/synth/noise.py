"""Random processes of the generator: smooth noise (drivers' speed and lane keeping, the slow part of
a tracker's error) and the tracking noise applied to what is written to the scenario files.

Smooth noise is white noise through a Gaussian filter, scaled to unit standard deviation: a stationary
process whose correlation time is the filter's width, with derivatives of every order (unlike an
Ornstein-Uhlenbeck process, whose velocity is white), so that it bends paths and speeds without adding
jerk a real road user would not have.

Legend: A road users, S steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from trajemb.data.schema import STEP_S, BoolArray, FloatArray
from trajemb.data.synth.behaviour import TrackerNoise

#: The Gaussian filter is cut at this many standard deviations (scipy's default).
_TRUNCATE = 4.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_s: float) -> FloatArray:
    """Unit-variance smooth noise along the last axis (10 Hz steps), correlated over ``correlation_s``
    (the Gaussian filter's standard deviation in seconds).

    The filter is applied in the frequency domain (``numpy.fft``) over a stretch long enough that the
    circular convolution does not tie the end of a row to its start.
    """
    sigma = correlation_s / STEP_S
    n = 1 << int(np.ceil(np.log2(shape[-1] + 2 * _TRUNCATE * sigma)))
    white = rng.standard_normal((*shape[:-1], n))
    gain, variance = _filter(n, sigma)
    smooth = np.fft.irfft(np.fft.rfft(white, axis=-1) * gain, n, axis=-1)[..., : shape[-1]]
    return np.asarray(smooth / np.sqrt(variance), dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _filter(n: int, sigma: float) -> tuple[FloatArray, float]:
    """The Gaussian filter's gain over the ``n``-point real spectrum and the variance it leaves of unit
    white noise (a few distinct filters serve every scenario: computed once each)."""
    freq = np.fft.rfftfreq(n)
    gain = np.exp(-0.5 * (2.0 * np.pi * freq * sigma) ** 2)
    gain.flags.writeable = False
    # Variance of the filtered unit white noise, by Parseval over the full spectrum.
    power = gain**2
    variance = (power[0] + 2.0 * power[1:-1].sum() + power[-1]) / n
    return gain, variance


@dataclass(frozen=True)
class Tracked:
    """What a tracker reports of A tracks: (A, S, 2) positions and velocities, (A, S) headings."""

    xy: FloatArray
    velocity_mps: FloatArray
    heading_rad: FloatArray


def track(
    rng: np.random.Generator,
    xy: FloatArray,
    heading_rad: FloatArray,
    noise: list[TrackerNoise],
    moving_min_speed_mps: float = 0.5,
) -> Tracked:
    """The tracker's view of (A, S, 2) true positions (finite everywhere) with (A, S) true headings.

    Positions get the slow error and white noise; the velocity is the derivative of the positions
    with the slow error only (a tracker filters its velocity); the heading is the direction of that
    velocity where the object moves faster than ``moving_min_speed_mps``, held from the last moving
    step (or the true heading) where it stands, plus white noise.
    """
    A, S = xy.shape[:2]
    slow_m = np.array([n.slow_m for n in noise])[:, None, None]
    spread = np.array([n.white_spread for n in noise])
    white_m = (np.array([n.white_m for n in noise]) * np.exp(spread * rng.standard_normal(A)))[:, None, None]
    corr = np.array([n.slow_correlation_s for n in noise])
    slow = np.empty((A, S, 2))
    for value in np.unique(corr):  # one filter per correlation time
        rows = np.flatnonzero(corr == value)
        slow[rows] = smooth_noise(rng, (len(rows), 2, S), float(value)).transpose(0, 2, 1)
    smooth_xy = xy + slow * slow_m
    velocity = np.gradient(smooth_xy, STEP_S, axis=1)
    speed = np.hypot(velocity[..., 0], velocity[..., 1])
    moving: BoolArray = speed >= moving_min_speed_mps
    motion_heading = np.arctan2(velocity[..., 1], velocity[..., 0])
    steps = np.arange(S)[None, :]
    last_moving = np.maximum.accumulate(np.where(moving, steps, -1), axis=1)
    held = np.take_along_axis(motion_heading, np.maximum(last_moving, 0), axis=1)
    heading = np.where(moving, motion_heading, np.where(last_moving >= 0, held, heading_rad))
    heading = heading + rng.standard_normal((A, S)) * np.array([n.heading_rad for n in noise])[:, None]
    return Tracked(
        smooth_xy + rng.standard_normal((A, S, 2)) * white_m,
        velocity,
        (heading + np.pi) % (2 * np.pi) - np.pi,
    )
