"""Agent-frame normalisation on analytic cases."""

from __future__ import annotations

import numpy as np

from trajemb.data.frames import agent_to_city, city_to_agent, motion_heading_rad, wrap_angle_rad


def test_agent_frame_puts_start_at_origin_heading_along_x() -> None:
    t = np.arange(60) * 0.1
    theta = np.deg2rad(130.0)
    origin = np.array([1200.0, -35.5])
    xy_city = origin + np.stack([np.cos(theta) * 10 * t, np.sin(theta) * 10 * t], axis=-1)
    est = motion_heading_rad(xy_city[None], np.array([np.nan]))
    np.testing.assert_allclose(est, [theta])
    xy_agent = city_to_agent(xy_city[None], origin[None], est)[0]
    np.testing.assert_allclose(xy_agent[:, 1], 0.0, atol=1e-9)
    np.testing.assert_allclose(xy_agent[:, 0], 10 * t, atol=1e-9)
    np.testing.assert_allclose(agent_to_city(xy_agent[None], origin[None], est)[0], xy_city, atol=1e-9)


def test_standing_object_uses_recorded_heading() -> None:
    xy = np.zeros((2, 30, 2)) + np.array([5.0, 5.0])
    xy[1, :, 0] += np.linspace(0, 0.2, 30)  # jitter below the 0.5 m threshold
    np.testing.assert_allclose(motion_heading_rad(xy, np.array([0.7, -2.0])), [0.7, -2.0])
    np.testing.assert_allclose(motion_heading_rad(xy, np.array([np.nan, np.nan])), [0.0, 0.0])


def test_wrap_angle() -> None:
    np.testing.assert_allclose(
        wrap_angle_rad(np.array([3 * np.pi / 2, -3 * np.pi / 2, 0.1])), [-np.pi / 2, np.pi / 2, 0.1]
    )
