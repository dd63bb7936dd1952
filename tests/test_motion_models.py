"""Constant velocity and constant acceleration against analytic motion."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.analysis.motion_models import constant_acceleration, constant_velocity, future_times_s
from trajemb.core.errors import ConfigError
from trajemb.data.schema import STEP_S


def quadratic(v0: np.ndarray, a: np.ndarray, steps: int) -> np.ndarray:
    t = np.arange(steps) * STEP_S
    return v0 * t[:, None] + 0.5 * a * t[:, None] ** 2


def test_constant_velocity_continues_a_straight_line() -> None:
    full = quadratic(np.array([6.0, -2.0]), np.zeros(2), 60)[None]
    np.testing.assert_allclose(constant_velocity(full[:, :30], 30), full[:, 30:], atol=1e-9)


def test_constant_acceleration_continues_constant_acceleration() -> None:
    full = quadratic(np.array([4.0, 1.0]), np.array([1.5, 0.5]), 60)[None]
    np.testing.assert_allclose(constant_acceleration(full[:, :30], 30), full[:, 30:], atol=1e-9)
    assert not np.allclose(constant_velocity(full[:, :30], 30), full[:, 30:], atol=0.5)


def test_a_braking_object_stops_instead_of_reversing() -> None:
    # 10 m/s braking at 4 m/s^2 along +x: at step 29 it has 2.8 s of braking left (7.84 m... then rest)
    full = quadratic(np.array([10.0, 0.0]), np.array([-2.0, 0.0]), 30)[None]
    future = constant_acceleration(full, 40)[0]
    speed_now = 10.0 - 2.0 * 29 * STEP_S
    stop = full[0, -1, 0] + speed_now**2 / (2 * 2.0)
    assert future[:, 0].max() == pytest.approx(stop)
    assert np.all(np.diff(future[:, 0]) >= -1e-12)  # never backwards
    np.testing.assert_allclose(future[-5:, 0], stop)


def test_short_histories_fall_back_to_constant_velocity() -> None:
    xy = quadratic(np.array([3.0, 0.0]), np.array([2.0, 0.0]), 2)[None]
    np.testing.assert_array_equal(constant_acceleration(xy, 10), constant_velocity(xy, 10))
    assert future_times_s(3) == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("bad", [np.zeros((3, 1, 2)), np.zeros((3, 5)), np.zeros((3, 5, 3))])
def test_bad_histories_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        constant_velocity(bad, 5)
    with pytest.raises(ConfigError):
        constant_acceleration(np.zeros((1, 5, 2)), 0)
