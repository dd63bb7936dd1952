"""Direction classes and speed bins on analytic trajectories (agent frame, 10 Hz, 6 s)."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.labels import (
    arc_lateral_offset_m,
    direction_class,
    mean_speed_mps,
    speed_bin,
    total_heading_change_rad,
)

T = 60
S_M = np.linspace(0.0, 60.0, T)  # 10 m/s


def arc(turn_deg: float, length_m: float = 60.0) -> np.ndarray:
    s = np.linspace(0.0, length_m, T)
    k = np.deg2rad(turn_deg) / length_m
    if k == 0:
        return np.stack([s, np.zeros_like(s)], axis=-1)
    return np.stack([np.sin(k * s) / k, (1 - np.cos(k * s)) / k], axis=-1)


def lane_change(offset_m: float) -> np.ndarray:
    u = np.clip((S_M - 15.0) / 30.0, 0, 1)
    return np.stack([S_M, offset_m * u**3 * (10 - 15 * u + 6 * u**2)], axis=-1)


@pytest.mark.parametrize(
    ("xy", "expected"),
    [
        (arc(0.0), "straight"),
        (arc(20.0), "straight"),  # a gentle bend is not a lane change
        (arc(-20.0), "straight"),
        (arc(90.0, 30.0), "left"),
        (arc(-90.0, 30.0), "right"),
        (arc(180.0, 30.0), "u_turn"),
        (arc(-175.0, 30.0), "u_turn"),
        (lane_change(3.5), "lane_change_left"),
        (lane_change(-3.5), "lane_change_right"),
        (np.zeros((T, 2)) + np.random.default_rng(0).normal(0, 0.02, (T, 2)), "stationary"),
    ],
)
def test_direction_class(xy: np.ndarray, expected: str) -> None:
    labels, _, _ = direction_class(xy[None])
    assert labels.tolist() == [expected]


def test_heading_change_is_signed_and_unwrapped() -> None:
    xy = np.stack([arc(90.0, 30.0), arc(-90.0, 30.0), arc(270.0, 40.0)])
    # Chords clip at the window ends, so a turn that fills the whole window reads a few % low.
    np.testing.assert_allclose(total_heading_change_rad(xy), np.deg2rad([90.0, -90.0, 270.0]), rtol=0.04)


def test_heading_change_ignores_standstill() -> None:
    """A car that stops mid-window adds no spurious heading change from jitter while stopped."""
    rng = np.random.default_rng(1)
    xy = np.concatenate(
        [
            arc(0.0, 20.0)[:20],
            np.full((20, 2), [20.0 * 19 / 59, 0.0]),
            arc(0.0, 20.0)[:20] + np.array([7.0, 0.0]),
        ]
    )
    xy = xy + rng.normal(0, 0.02, xy.shape)
    assert abs(total_heading_change_rad(xy[None])[0]) < np.deg2rad(10)


def test_arc_offset_matches_geometry() -> None:
    for turn in (10.0, 45.0, -60.0):
        xy = arc(turn)
        np.testing.assert_allclose(
            arc_lateral_offset_m(np.array([60.0]), np.deg2rad([turn])), [xy[-1, 1]], rtol=1e-6
        )


def test_speed_and_bins() -> None:
    np.testing.assert_allclose(mean_speed_mps(arc(0.0)[None]), [60.0 / 5.9])
    assert speed_bin(np.array([0.0, 0.49, 0.5, 3.0, 7.5, 12.0, 30.0])).tolist() == [
        "0-0.5", "0-0.5", "0.5-2.5", "2.5-5", "5-10", "10-15", "15+",
    ]  # fmt: skip
