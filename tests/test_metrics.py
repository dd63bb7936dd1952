"""Retrieval metrics pinned against av2's compute_ade / compute_fde and analytic cases."""

from __future__ import annotations

import numpy as np
import torch
from av2.datasets.motion_forecasting.eval.metrics import compute_ade, compute_fde

from trajemb.retrieval.metrics import ade_fde, min_ade_fde, retrieval_min_ade_fde


def test_matches_av2() -> None:
    rng = np.random.default_rng(0)
    query = np.cumsum(rng.normal(size=(4, 60, 2)), axis=1)
    neighbors = query[:, None] + rng.normal(size=(4, 6, 60, 2))
    ade, fde = ade_fde(query, neighbors)
    for q in range(4):
        np.testing.assert_allclose(ade[q], compute_ade(neighbors[q], query[q]), rtol=1e-12)
        np.testing.assert_allclose(fde[q], compute_fde(neighbors[q], query[q]), rtol=1e-12)
    min_ade, min_fde = min_ade_fde(query, neighbors)
    np.testing.assert_allclose(min_ade, [compute_ade(neighbors[q], query[q]).min() for q in range(4)])
    np.testing.assert_allclose(min_fde, [compute_fde(neighbors[q], query[q]).min() for q in range(4)])


def test_analytic_offsets() -> None:
    query = np.zeros((1, 10, 2))
    shifted = np.zeros((1, 2, 10, 2))
    shifted[0, 0, :, 1] = 3.0  # constant 3 m lateral offset: ADE = FDE = 3
    shifted[0, 1, :, 0] = np.linspace(0, 9, 10)  # drifting: ADE 4.5, FDE 9
    ade, fde = ade_fde(query, shifted)
    np.testing.assert_allclose(ade, [[3.0, 4.5]])
    np.testing.assert_allclose(fde, [[3.0, 9.0]])
    min_ade, min_fde = min_ade_fde(query, shifted, valid=np.array([[False, True]]))
    assert (min_ade[0], min_fde[0]) == (4.5, 9.0)


def test_retrieval_on_identical_pairs_is_zero() -> None:
    rng = np.random.default_rng(1)
    base = np.cumsum(rng.normal(size=(5, 30, 2)), axis=1)
    xy = np.concatenate([base, base])  # every window has an exact twin on another track
    emb = torch.from_numpy(xy.reshape(10, -1)).float()
    ade, fde = retrieval_min_ade_fde(xy, emb, np.arange(10), k=1)
    assert ade == 0.0 and fde == 0.0


def test_retrieval_leaves_the_own_track_out_and_survives_a_diverged_model() -> None:
    xy = np.zeros((4, 10, 2))
    xy[:, :, 0] = np.array([0.0, 0.0, 1.0, 3.0])[:, None]  # constant offsets along x
    emb = torch.tensor([[0.0], [0.0], [1.0], [3.0]])
    # rows 0 and 1 are one track: each must look past the other (1 m away), not take its twin (0 m)
    ade, _ = retrieval_min_ade_fde(xy, emb, np.array([0, 0, 1, 2]), k=1)
    assert ade == (1.0 + 1.0 + 1.0 + 2.0) / 4
    nan = torch.full((4, 1), float("nan"))
    assert all(np.isnan(v) for v in retrieval_min_ade_fde(xy, nan, np.arange(4), k=1))
