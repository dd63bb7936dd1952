"""Perturbations, the robustness curves and the mean rank, on analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from trajemb.data.perturb import Observed, Perturbation, fill_missing, perturb, to_own_frame
from trajemb.retrieval.robustness import (
    RobustnessConfig,
    encoder_features,
    halves,
    mean_rank,
    offset_partners,
    pca_features,
    raw_features,
    retrieval_scores,
    robustness_curves,
)
from trajemb.training.model import EncoderConfig, TrajectoryEncoder

T = 60


def _fan(n: int = 40, seed: int = 0) -> np.ndarray:
    """(n, T, 2) constant-speed arcs of varied speed and curvature in their agent frame (as the table's
    windows: origin at the first step, heading of the first 0.5 s along +x)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) * 0.1
    speed = rng.uniform(3.0, 15.0, n)[:, None]
    kappa = rng.uniform(-0.05, 0.05, n)[:, None]
    s = speed * t
    theta = kappa * s
    x = np.where(np.abs(kappa) < 1e-9, s, np.sin(theta) / np.where(kappa == 0, 1, kappa))
    y = np.where(np.abs(kappa) < 1e-9, 0.0, (1 - np.cos(theta)) / np.where(kappa == 0, 1, kappa))
    xy = np.stack([x, y], axis=-1)
    return to_own_frame(xy, np.ones((n, T), dtype=bool)).xy


def test_fill_missing_interpolates_and_extrapolates_lines_exactly() -> None:
    xy = np.stack([np.arange(T) * 2.0, np.arange(T) * -0.5], axis=-1)[None]  # a straight constant-speed line
    valid = np.zeros((1, T), dtype=bool)
    valid[0, [5, 9, 30, 31]] = True
    filled = fill_missing(np.where(valid[..., None], xy, np.nan), valid)
    np.testing.assert_allclose(filled, xy, atol=1e-9)


def test_perturbations_keep_their_promises() -> None:
    xy = _fan(20)
    rng = np.random.default_rng(1)
    noisy = perturb(xy, Perturbation("noise", noise_m=0.5), rng)
    assert noisy.valid.all()
    np.testing.assert_allclose(noisy.xy[:, 0], 0.0, atol=1e-9)  # re-expressed in its own frame
    dropped = perturb(xy, Perturbation("drop", drop_fraction=0.3), rng)
    assert 0.6 < dropped.valid.mean() < 0.8 and (dropped.valid.sum(axis=1) >= 2).all()
    # Smooth arcs interpolate well (the perturbed window itself is re-expressed in the frame its own
    # first, possibly missing, steps give, so compare in the clean frame).
    gaps = np.where(dropped.valid[..., None], xy, np.nan)
    np.testing.assert_allclose(fill_missing(gaps, dropped.valid), xy, atol=0.3)
    short = perturb(xy, Perturbation("short", keep_s=3.0), rng)
    assert short.valid[:, :31].all() and not short.valid[:, 31:].any()
    clean = perturb(xy, Perturbation(), rng)
    np.testing.assert_array_equal(clean.xy, xy)


def test_scores_on_a_known_case() -> None:
    xy = np.zeros((3, T, 2))
    xy[1, :, 1] = 1.0  # 1 m beside the query all along
    xy[2, :, 1] = 3.0
    labels = np.array(["left", "left", "straight"])
    scores = retrieval_scores(xy[[0]], xy, labels[[0]], labels, np.array([[2, 1]]), k_ade=2, k_precision=2)
    assert scores["minADE@2"] == pytest.approx(1.0)
    assert scores["precision@2"] == 0.5 and scores["hard_precision@2"] == 0.5 and scores["hard_queries"] == 1


def test_curves_and_mean_rank_on_a_small_set() -> None:
    xy = _fan(60)
    labels = np.where(xy[:, -1, 1] > 2, "left", np.where(xy[:, -1, 1] < -2, "right", "straight"))
    groups = np.arange(60)
    starts = np.zeros(60, dtype=np.int64)
    flat = xy.reshape(60, -1)
    torch.manual_seed(0)
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=4, d_model=16, num_heads=2)).eval()
    methods = {
        "oracle": raw_features,
        "pca": pca_features(PCA(4).fit(flat)),
        "encoder": encoder_features(model),
    }
    config = RobustnessConfig(
        noise_m=(0.5,), drop_fraction=(0.3,), noise_drop=(), short_s=(3.0,), offset_s=(1.0,)
    )
    curves = robustness_curves(methods, xy, labels, groups, starts, np.arange(10), seed=0, config=config)
    oracle = curves["oracle"]
    assert set(oracle) == {"clean", "noise_m", "drop", "short_query_s"}  # no partner windows: no offset curve
    assert oracle["noise_m"]["0.5"]["minADE@5"] > oracle["clean"]["0"]["minADE@5"]
    assert curves["encoder"]["drop"]["0.3"]["queries"] == 10
    rank = mean_rank(raw_features, xy, groups, np.arange(20))
    assert rank["mean_rank"] == 1.0 and rank["top1"] == 1.0  # interpolated halves find their twin
    even, odd = halves(xy)
    assert even.valid[:, ::2].all() and not even.valid[:, 1::2].any() and (odd.valid == ~even.valid).all()


def test_offset_partners() -> None:
    groups = np.array([0, 0, 0, 1])
    starts = np.array([0, 10, 20, 0])
    np.testing.assert_array_equal(offset_partners(groups, starts, np.array([0, 1, 2, 3]), 10), [1, 2, -1, -1])


def test_masked_encoder_ignores_missing_steps() -> None:
    """What the encoder features read of a window with missing steps does not depend on the values there."""
    torch.manual_seed(0)
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=4, d_model=16, num_heads=2)).eval()
    xy = _fan(4)
    valid = np.ones((4, T), dtype=bool)
    valid[:, 10:20] = False
    a = encoder_features(model, missing="mask")(Observed(np.where(valid[..., None], xy, np.nan), valid))
    b = encoder_features(model, missing="mask")(Observed(np.where(valid[..., None], xy, 123.0), valid))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_mean_rank_counts_ties_against_the_twin() -> None:
    """A collapsed embedding (every window at one point) ranks the twin last, not first."""
    xy = _fan(40)
    groups = np.arange(40)
    collapsed = mean_rank(lambda obs: np.ones((len(obs.valid), 4), np.float32), xy, groups, np.arange(10))
    assert collapsed["mean_rank"] == 40.0 and collapsed["top1"] == 0.0  # behind the 39 other tracks
