"""The loss strategies of training: each equals its parts applied by hand; pairs of one track are never
used; the calibrated threshold puts the asked-for share of pairs above it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajemb.training.batch_loss import SoftNeighborBatchLoss, TripletBatchLoss, calibrate_threshold
from trajemb.training.losses import TripletLoss
from trajemb.training.mining import mine_triplets
from trajemb.training.similarity import fft_features, similarity_matrix
from trajemb.training.soft_neighbor_loss import SoftNeighborLoss

B, T, D = 48, 20, 8


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, D) unit embeddings with a graph, (B, T, 2) random walks, (B,) groups of 3 windows each."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=1).requires_grad_()
    xy = torch.cumsum(torch.randn(B, T, 2, generator=g), dim=1)
    return z, xy - xy[:, :1], torch.arange(B) // 3


@pytest.mark.parametrize("mining", ["random", "hard", "semi-hard"])
@pytest.mark.parametrize("similarity", ["cosine", "fft"])
def test_triplet_batch_loss_is_mining_then_the_triplet_loss(mining: str, similarity: str) -> None:
    z, xy, groups = batch()
    sim = similarity_matrix(xy, similarity, 0.5)
    same = groups[:, None] == groups[None, :]
    threshold = float(torch.quantile(sim[~same], 0.9))  # 10 % of the pairs positive
    strategy = TripletBatchLoss(TripletLoss(0.3), similarity, 0.5, threshold, mining, 0.3)
    loss, count = strategy(z, xy, groups, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    triplets = mine_triplets(
        sim, threshold, mining, embeddings=z.detach(), margin=0.3, exclude=same, generator=gen
    )
    assert count == len(triplets) > 0
    torch.testing.assert_close(loss, TripletLoss(0.3)(z, triplets))
    for a, p, n in zip(triplets.anchor, triplets.positive, triplets.negative, strict=True):
        assert groups[a] != groups[p] and groups[a] != groups[n]  # never a pair of one track


@pytest.mark.parametrize("similarity", ["cosine", "fft"])
def test_soft_neighbor_batch_loss_leaves_out_pairs_of_one_track(similarity: str) -> None:
    z, xy, groups = batch(2)
    loss, anchors = SoftNeighborBatchLoss(SoftNeighborLoss(4, 1.0), similarity)(
        z, xy, groups, torch.Generator()
    )
    allowed = groups[:, None] != groups[None, :]
    raw = xy.reshape(B, -1) if similarity == "cosine" else fft_features(xy)
    torch.testing.assert_close(loss, SoftNeighborLoss(4, 1.0)(z, raw, allowed))
    assert anchors == B


def test_calibrated_threshold_splits_off_the_positive_fraction() -> None:
    _, xy, groups = batch(3)
    rows = np.arange(B)
    threshold = calibrate_threshold(xy, groups, rows, "cosine", 0.5, 0.1, B, 0, torch.device("cpu"), 1)
    sim = similarity_matrix(xy, "cosine", 0.5)
    off = groups[:, None] != groups[None, :]
    assert float((sim[off] >= threshold).float().mean()) == pytest.approx(0.1, abs=0.01)
