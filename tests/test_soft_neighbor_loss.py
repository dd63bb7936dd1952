"""The soft-neighbour loss against a per-anchor reference and on analytic cases; augmentation and
neighbourhood batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.training.augment import AugmentConfig, augment
from trajemb.training.batches import NEIGHBORS, NeighborhoodBatches
from trajemb.training.soft_neighbor_loss import SoftNeighborLoss


def _reference(
    z: np.ndarray, raw: np.ndarray, allowed: np.ndarray, neighbors: int, temperature: float
) -> float:
    """The loss written anchor by anchor, in float64 numpy."""
    losses = []
    for i in range(len(z)):
        others = np.flatnonzero(allowed[i])
        if others.size == 0:
            continue
        d = np.linalg.norm(raw[others] - raw[i], axis=1)
        s = np.sort(d)[min(neighbors, d.size) - 1]
        p = np.exp(-(d**2) / (2 * s**2))
        p /= p.sum()
        e = -np.sum((z[others] - z[i]) ** 2, axis=1) / temperature
        log_q = e - np.log(np.exp(e - e.max()).sum()) - e.max()
        losses.append(-(p * log_q).sum())
    return float(np.mean(losses))


def test_matches_the_per_anchor_reference() -> None:
    rng = np.random.default_rng(0)
    z, raw = rng.normal(size=(12, 4)), rng.normal(size=(12, 20)) * 5
    groups = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9])
    allowed = groups[:, None] != groups[None, :]
    loss = SoftNeighborLoss(neighbors=3, temperature=0.5)
    got = loss(torch.from_numpy(z), torch.from_numpy(raw), torch.from_numpy(allowed))
    assert float(got) == pytest.approx(_reference(z, raw, allowed, 3, 0.5), rel=1e-5)


def test_lowest_when_the_embedding_keeps_the_neighbours() -> None:
    """Two tight pairs far apart: an embedding that keeps each pair together beats one that swaps them."""
    raw = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
    allowed = ~torch.eye(4, dtype=torch.bool)
    loss = SoftNeighborLoss(neighbors=1)
    kept = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    swapped = torch.tensor([[0.0], [5.0], [0.1], [5.1]])
    assert float(loss(kept, raw, allowed)) < float(loss(swapped, raw, allowed))
    nothing = torch.zeros(4, 4, dtype=torch.bool)
    zero = loss(kept.requires_grad_(), raw, nothing)
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="neighbours"):
        SoftNeighborLoss(neighbors=0)
    with pytest.raises(ConfigError, match="temperature"):
        SoftNeighborLoss(temperature=0.0)


def test_augment_masks_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    xy = np.cumsum(np.ones((50, 60, 2)), axis=1)
    x, valid = augment(xy, AugmentConfig(), rng)
    assert valid.all() and np.array_equal(x, xy.astype(np.float32))
    x, valid = augment(xy, AugmentConfig(prob=0.5, noise_m=0.5, drop=0.4, short_prob=0.2), rng)
    changed = ~valid.all(axis=1) | ~np.isclose(x, xy).all(axis=(1, 2))
    assert 10 < changed.sum() < 40
    assert (x[~valid] == 0).all() and (valid.sum(axis=1) >= 2).all()
    assert (~valid[:, 30:]).all(axis=1).any()  # some windows only observed for their first half


def test_augment_completes_missing_steps_as_pca_reads_them() -> None:
    """``missing="complete"``: the same perturbations as masking (same random draws), the missing steps
    filled by ``fill_missing`` (what PCA and the robustness curves read) and every step valid."""
    from trajemb.data.perturb import fill_missing

    xy = np.cumsum(np.random.default_rng(3).normal(size=(60, 60, 2)), axis=1)
    masked = AugmentConfig(prob=0.5, noise_m=0.5, drop=0.4, short_prob=0.2)
    x_mask, valid = augment(xy, masked, np.random.default_rng(0))
    x_full, valid_full = augment(
        xy, AugmentConfig(**{**masked.to_dict(), "missing": "complete"}), np.random.default_rng(0)
    )
    assert valid_full.all() and not valid.all()
    expected = fill_missing(np.where(valid[..., None], x_mask, np.nan).astype(np.float64), valid)
    np.testing.assert_allclose(x_full, expected, rtol=1e-5, atol=1e-4)
    assert "missing" not in masked.to_dict()  # the keys of earlier releases


def test_neighborhood_batches() -> None:
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(size=(400, 20, 2)), axis=1)
    labels = np.where(np.arange(400) < 20, "left", "straight")
    batches = NeighborhoodBatches(xy, labels, 64, 4, 0.5, seed=0)
    rows = batches.epoch(30, np.random.default_rng(1))
    assert rows.shape == (30, 64)
    seeds = rows[:, :16]
    assert 0.35 < (seeds < 20).mean() < 0.65  # half the seeds from the 5 % of hard windows
    assert np.isin(rows[0, 16:19], batches.knn[rows[0, 0]]).all() and batches.knn.shape == (400, NEIGHBORS)
    with pytest.raises(ConfigError, match="divide"):
        NeighborhoodBatches(xy, labels, 64, 5, 0.0, seed=0)
