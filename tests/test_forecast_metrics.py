"""Forecast scores pinned to av2's own metric functions; probabilities and their temperature."""

from __future__ import annotations

import numpy as np
import pytest
from av2.datasets.motion_forecasting.eval.metrics import (
    compute_ade,
    compute_brier_fde,
    compute_fde,
    compute_is_missed_prediction,
)

from trajemb.analysis.forecast_metrics import (
    fit_temperature,
    score_forecasts,
    score_names,
    softmax_probabilities,
)


def test_scores_equal_av2_on_random_forecasts() -> None:
    rng = np.random.default_rng(0)
    forecasts = rng.normal(0, 3, (40, 6, 30, 2))
    truth = rng.normal(0, 3, (40, 30, 2))
    p = rng.dirichlet(np.ones(6), size=40)
    s = score_forecasts(forecasts, truth, p)
    for i in range(40):
        fde = compute_fde(forecasts[i], truth[i])
        best = int(np.argmin(fde))  # the AV2 leaderboard's best of K: smallest final displacement
        assert s.best[i] == best
        assert s.min_fde_m[i] == pytest.approx(fde[best])
        assert s.min_ade_m[i] == pytest.approx(compute_ade(forecasts[i], truth[i])[best])
        assert s.missed[i] == compute_is_missed_prediction(forecasts[i], truth[i])[best]
        assert s.brier_min_fde_m[i] == pytest.approx(compute_brier_fde(forecasts[i], truth[i], p[i])[best])
    summary = s.summary(6)
    assert (
        list(summary)
        == [*score_names(6), "queries"]
        == ["minADE6", "minFDE6", "MR6", "brier_minFDE6", "queries"]
    )
    assert summary["queries"] == 40
    assert summary["MR6"] == pytest.approx(s.missed.mean())


def test_missing_forecasts_are_left_out_and_probabilities_renormalised() -> None:
    truth = np.zeros((2, 5, 2))
    forecasts = np.full((2, 3, 5, 2), np.nan)
    forecasts[0, 0] = 1.0  # 1.41 m off
    forecasts[0, 1] = 3.0  # 4.24 m off
    p = np.array([[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    s = score_forecasts(forecasts, truth, p)
    assert s.best.tolist() == [0, -1] and s.scored.tolist() == [True, False]
    assert s.min_fde_m[0] == pytest.approx(np.sqrt(2))
    assert s.brier_min_fde_m[0] == pytest.approx(np.sqrt(2) + 0.5**2)  # p of the valid two: 0.5, 0.5
    assert s.missed[0] == np.False_
    assert np.isinf(s.mode_fde_m[0, 2]) and s.summary(3)["queries"] == 1


def test_a_single_forecast_with_probability_one_has_no_brier_term() -> None:
    rng = np.random.default_rng(1)
    forecasts, truth = rng.normal(size=(10, 1, 8, 2)), rng.normal(size=(10, 8, 2))
    s = score_forecasts(forecasts, truth, np.ones((10, 1)))
    np.testing.assert_allclose(s.brier_min_fde_m, s.min_fde_m)


def test_softmax_probabilities() -> None:
    d = np.array([[1.0, 2.0, np.inf], [0.5, 0.5, 0.5]])
    p = softmax_probabilities(d, 1.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 2] == 0.0 and p[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    np.testing.assert_allclose(p[1], 1 / 3)
    np.testing.assert_allclose(softmax_probabilities(d, 1e-6)[0], [1.0, 0.0, 0.0])
    assert softmax_probabilities(np.full((1, 2), np.inf), 1.0).tolist() == [[0.0, 0.0]]


def test_temperature_follows_how_telling_the_distances_are() -> None:
    rng = np.random.default_rng(2)
    d = np.sort(rng.uniform(0, 1, (500, 6)), axis=1)
    nearest_best = np.tile(np.arange(6.0), (500, 1))  # the nearest neighbour always ends closest
    random_best = rng.permuted(np.tile(np.arange(6.0), (500, 1)), axis=1)
    sharp, flat = fit_temperature(d, nearest_best), fit_temperature(d, random_best)
    assert sharp < flat
    p_sharp = softmax_probabilities(d, sharp)[:, 0].mean()
    assert p_sharp > 0.9
    p_flat = softmax_probabilities(d, flat)
    assert np.abs(p_flat - 1 / 6).max() < 0.1  # nothing to learn: close to uniform
