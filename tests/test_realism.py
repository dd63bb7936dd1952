"""Realism features on analytic motion, the owned-step rule against brute force, distances against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from trajemb.analysis.realism import (
    FEATURE_NAMES,
    MAX_TRACK_LENGTH_S,
    feature_distance,
    feature_samples,
    moving_windows,
    owned_steps,
)
from trajemb.core.errors import DataError

T = 60
DT = 0.1
TIMES = np.arange(T) * DT


def _one(xy: np.ndarray, start: int = 0) -> dict[str, np.ndarray]:
    return feature_samples(xy[None], np.zeros(1, dtype=np.int64), np.array([start]))


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return xy @ np.array([[c, -s], [s, c]]).T


def test_straight_constant_speed() -> None:
    xy = np.stack([5.0 * TIMES, np.zeros(T)], axis=-1)
    f = _one(xy)
    np.testing.assert_allclose(f["speed_mps"], 5.0, atol=1e-9)
    for name in ("accel_lon_mps2", "accel_lat_mps2", "jerk_lon_mps3", "yaw_rate_radps", "curvature_per_m"):
        np.testing.assert_allclose(f[name], 0.0, atol=1e-9)
    np.testing.assert_allclose(f["jitter_m"], 0.0, atol=1e-12)
    assert f["heading_change_rad"][0] == pytest.approx(0.0, abs=1e-9)
    assert f["stop_fraction"][0] == 0.0 and len(f["stop_duration_s"]) == 0
    assert f["track_length_s"][0] == pytest.approx((T - 1) * DT)


@pytest.mark.parametrize("radius_m, speed_mps, direction", [(20.0, 6.0, 1), (50.0, 10.0, -1)])
def test_circle(radius_m: float, speed_mps: float, direction: int) -> None:
    """On a circle: curvature 1/R, yaw rate v/R, lateral acceleration v^2/R (left positive), no
    longitudinal acceleration; the heading turns by v t / R."""
    angle = direction * speed_mps * TIMES / radius_m
    xy = np.stack([radius_m * np.sin(np.abs(angle)), direction * radius_m * (1 - np.cos(angle))], axis=-1)
    f = _one(_rotate(xy, 0.7) + [100.0, -40.0])
    # A cubic fit to a circle: within 1 % at the window's edges, 0.3 % inside.
    np.testing.assert_allclose(f["curvature_per_m"], direction / radius_m, rtol=1e-2)
    np.testing.assert_allclose(f["curvature_per_m"][10:-10], direction / radius_m, rtol=3e-3)
    np.testing.assert_allclose(f["yaw_rate_radps"], direction * speed_mps / radius_m, rtol=1e-2)
    np.testing.assert_allclose(f["accel_lat_mps2"], direction * speed_mps**2 / radius_m, rtol=1e-2)
    np.testing.assert_allclose(f["accel_lon_mps2"], 0.0, atol=2e-2)
    np.testing.assert_allclose(f["speed_mps"], speed_mps, rtol=1e-3)
    assert f["heading_change_rad"][0] == pytest.approx(angle[-1], rel=0.05)


def test_constant_acceleration_is_exact() -> None:
    """A cubic smoother differentiates a quadratic path exactly: accel a, jerk 0."""
    xy = np.stack([2.0 * TIMES + 0.5 * 1.5 * TIMES**2, np.zeros(T)], axis=-1)
    f = _one(xy)
    np.testing.assert_allclose(f["accel_lon_mps2"], 1.5, atol=1e-8)
    np.testing.assert_allclose(f["jerk_lon_mps3"], 0.0, atol=1e-8)
    np.testing.assert_allclose(f["speed_mps"], 2.0 + 1.5 * TIMES, atol=1e-8)


def test_features_do_not_depend_on_the_frame() -> None:
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal([0.8, 0.1], 0.05, (4, T, 2)), axis=1)
    track, start = np.array([0, 0, 1, 2]), np.array([0, 10, 0, 5])
    a = feature_samples(xy, track, start)
    b = feature_samples(np.stack([_rotate(w, 1.3) + [5.0, 7.0] for w in xy]), track, start)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(a[name], b[name], atol=1e-9, err_msg=name)


def test_stops_and_jitter() -> None:
    """A stop of 2 s in the middle of a window; jitter is half the second difference."""
    speed = np.where((TIMES >= 2.0) & (TIMES < 4.0), 0.0, 4.0)
    x = np.concatenate([[0.0], np.cumsum(speed[:-1] * DT)])
    xy = np.stack([x, np.zeros(T)], axis=-1)
    f = _one(xy)
    assert f["stop_fraction"][0] == pytest.approx(20 / T, abs=4 / T)  # the smoother blurs the edges
    assert len(f["stop_duration_s"]) == 1 and f["stop_duration_s"][0] == pytest.approx(2.0, abs=0.4)
    bumped = xy.copy()
    bumped[30, 1] += 0.01
    jitter = _one(bumped)["jitter_m"]  # steps 1 .. T-2
    assert jitter[30 - 1] == pytest.approx(0.01) and jitter[29 - 1] == pytest.approx(0.005)


def _owned_reference(track: np.ndarray, start: np.ndarray, t: int) -> np.ndarray:
    """For each (track, step): the window holding it most centrally, the earliest (by start, then row
    order) among equals."""
    best: dict[tuple[int, int], tuple[float, int, int, int]] = {}
    for i in np.lexsort((start, track)):
        for k in range(t):
            key = (int(track[i]), int(start[i]) + k)
            rank = (-min(k, t - 1 - k), int(start[i]), int(i), k)
            if key not in best or rank < best[key]:
                best[key] = rank
    out = np.zeros((len(track), t), dtype=bool)
    for _, _, i, k in best.values():
        out[i, k] = True
    return out


def test_owned_steps_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        # Distinct (track, start) pairs, as the windows of a table are.
        pairs = rng.choice(4 * 50, size=int(rng.integers(1, 30)), replace=False)
        track, start = pairs // 50, pairs % 50
        t = int(rng.integers(2, 25))
        np.testing.assert_array_equal(owned_steps(track, start, t), _owned_reference(track, start, t))


def test_stop_runs_follow_the_track_not_the_window() -> None:
    """A stop that spans two overlapping windows of one track is one stop, counted once."""
    speed = np.where((np.arange(80) >= 50) & (np.arange(80) < 65), 0.0, 3.0)
    x = np.concatenate([[0.0], np.cumsum(speed[:-1] * DT)])
    line = np.stack([x, np.zeros(80)], axis=-1)
    windows = np.stack([line[0:T], line[20 : 20 + T]])
    f = feature_samples(windows, np.array([7, 7]), np.array([0, 20]))
    assert len(f["stop_duration_s"]) == 1 and f["stop_duration_s"][0] == pytest.approx(1.5, abs=0.4)
    assert len(f["speed_mps"]) == 80 and len(f["track_length_s"]) == 1
    assert f["track_length_s"][0] == pytest.approx(7.9)


def test_track_length_is_capped_at_a_scenario() -> None:
    xy = np.stack([np.stack([2.0 * TIMES, np.zeros(T)], axis=-1)] * 3)
    f = feature_samples(xy, np.zeros(3, dtype=np.int64), np.array([0, 60, 120]))
    assert f["track_length_s"][0] == MAX_TRACK_LENGTH_S


def test_moving_windows_and_short_windows() -> None:
    xy = np.zeros((2, T, 2))
    xy[1, :, 0] = TIMES * 1.2
    np.testing.assert_array_equal(moving_windows(xy), [False, True])
    with pytest.raises(DataError, match="T >= 11"):
        feature_samples(np.zeros((1, 5, 2)), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))


def test_distances_are_scipy_s() -> None:
    rng = np.random.default_rng(1)
    real, synth = rng.normal(0.0, 2.0, 4000), rng.normal(2.0, 2.0, 3000)
    d = feature_distance(real, synth)
    assert d.w1_over_std == pytest.approx(wasserstein_distance(real, synth) / np.std(real))
    assert d.w1_over_std == pytest.approx(1.0, abs=0.08)  # a shift by one standard deviation
    assert d.ks == pytest.approx(ks_2samp(real, synth).statistic)
    assert feature_distance(real, real).w1_over_std == 0.0
    empty = feature_distance(real, np.zeros(0))
    assert np.isnan(empty.w1_over_std) and np.isnan(empty.ks) and empty.n_synthetic == 0
