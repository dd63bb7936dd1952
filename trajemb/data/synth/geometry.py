"""Polyline helpers for the synthetic road generator (metres, local frame)."""

from __future__ import annotations

import math

import numpy as np

from trajemb.data.schema import FloatArray


def arc_length_m(xy: FloatArray) -> FloatArray:
    """(P, 2) polyline -> (P,) cumulative arc length starting at 0."""
    d = xy[1:] - xy[:-1]  # np.diff's arithmetic, without its per-call overhead
    seg = np.hypot(d[:, 0], d[:, 1])
    if seg.dtype != np.float64:
        return np.concatenate([[0.0], np.cumsum(seg)])
    out = np.empty(len(xy))
    out[0] = 0.0
    np.cumsum(seg, out=out[1:])
    return out


def columns(x: FloatArray, y: FloatArray) -> FloatArray:
    """``np.stack([x, y], axis=-1)`` of two (P,) float64 arrays, without its per-call overhead (the
    generator calls it thousands of times per scenario)."""
    if x.dtype != np.float64 or y.dtype != np.float64 or x.ndim != 1 or x.shape != y.shape:
        return np.asarray(np.stack([x, y], axis=-1), dtype=np.float64)
    out = np.empty((len(x), 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


def clip(x: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    """``np.clip(x, low, high)`` bit for bit (NaN and signed zeros included: the arguments in the order
    numpy's clip compares them), without its per-call overhead."""
    return np.asarray(np.minimum(high, np.maximum(low, x)))


def resample(xy: FloatArray, spacing_m: float) -> FloatArray:
    """Resample a polyline to (roughly) uniform spacing, keeping both ends."""
    s = arc_length_m(xy)
    total_m = float(s[-1])
    n = max(2, math.ceil(total_m / spacing_m) + 1)
    # np.linspace(0.0, s[-1], n)'s arithmetic, without its per-call overhead.
    s_new = np.arange(n, dtype=np.float64) * (total_m / (n - 1))
    s_new += 0.0
    s_new[-1] = s[-1]
    return columns(np.interp(s_new, s, xy[:, 0]), np.interp(s_new, s, xy[:, 1]))


def gradient_rows(f: FloatArray) -> FloatArray:
    """``np.gradient(f, axis=0)`` of a float64 array of at least 2 rows, by the same arithmetic (central
    differences inside, one-sided at the ends) without its per-call overhead: the generator calls it
    hundreds of times per scenario on short polylines."""
    if f.dtype != np.float64 or len(f) < 2:
        return np.asarray(np.gradient(f, axis=0), dtype=np.float64)
    out = np.empty_like(f)
    out[1:-1] = (f[2:] - f[:-2]) / 2.0
    out[0] = f[1] - f[0]
    out[-1] = f[-1] - f[-2]
    return out


def left_normals(xy: FloatArray) -> FloatArray:
    """(P, 2) unit normals pointing left of the travel direction."""
    tangent = gradient_rows(xy)
    # np.linalg.norm's arithmetic (the square root of the summed squares), without its overhead.
    tangent /= np.sqrt(np.add.reduce(tangent * tangent, axis=1, keepdims=True))
    return columns(-tangent[:, 1], tangent[:, 0])


def offset(xy: FloatArray, left_m: float) -> FloatArray:
    """Shift a polyline sideways by ``left_m`` (negative = right)."""
    return np.asarray(xy + left_normals(xy) * left_m, dtype=np.float64)


def curve(start_xy: FloatArray, heading_rad: float, curvature_per_m: FloatArray, step_m: float) -> FloatArray:
    """Integrate a path from a start pose and a curvature profile sampled every ``step_m``."""
    heading = heading_rad + np.concatenate([[0.0], np.cumsum(curvature_per_m[:-1] * step_m)])
    steps = np.stack([np.cos(heading), np.sin(heading)], axis=-1) * step_m
    return np.asarray(
        start_xy + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], axis=0)]), dtype=np.float64
    )


def bezier(
    p0: FloatArray, h0: FloatArray, p3: FloatArray, h3: FloatArray, handle_m: float, n: int = 40
) -> FloatArray:
    """Cubic Bezier from pose (p0, unit h0) to pose (p3, unit h3)."""
    p1, p2 = p0 + h0 * handle_m, p3 - h3 * handle_m
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.asarray(
        (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3, dtype=np.float64
    )


def curvature_per_m(xy: FloatArray) -> FloatArray:
    """Signed curvature (1/m) along a polyline with roughly uniform spacing."""
    s = arc_length_m(xy)
    heading = np.unwrap(np.arctan2(*gradient_rows(xy).T[::-1]))
    return np.asarray(np.gradient(heading, s, edge_order=1), dtype=np.float64)


def smoothstep(u: FloatArray) -> FloatArray:
    """Quintic ease 0 -> 1 on [0, 1], flat at both ends (a lane change's lateral profile)."""
    u = np.clip(u, 0.0, 1.0)
    return np.asarray(u**3 * (10 - 15 * u + 6 * u**2), dtype=np.float64)
