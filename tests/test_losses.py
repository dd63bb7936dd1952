"""Triplet loss against torch's TripletMarginLoss and an analytic case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trajemb.core.errors import ConfigError
from trajemb.training.losses import TripletLoss
from trajemb.training.mining import Triplets


def test_matches_torch_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 8, generator=g)
    t = Triplets(torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 0, 1]))
    zn = F.normalize(z, dim=-1)
    ref = torch.nn.TripletMarginLoss(margin=0.3, p=2, eps=0.0)(zn[t.anchor], zn[t.positive], zn[t.negative])
    assert TripletLoss(0.3)(z, t).item() == pytest.approx(ref.item(), abs=1e-6)


def test_analytic_case() -> None:
    # a = p, n orthogonal: d_ap = 0, d_an = sqrt(2) -> loss = max(0, margin - sqrt(2)).
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert TripletLoss(0.3)(z, t).item() == 0.0
    assert TripletLoss(2.0)(z, t).item() == pytest.approx(2.0 - 2**0.5)
    # a = n, p opposite: d_ap = 2, d_an = 0 -> 2 + margin.
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert TripletLoss(0.3)(z, t).item() == pytest.approx(2.3)


def test_no_triplets_is_zero_with_grad() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    none = torch.empty(0, dtype=torch.long)
    loss = TripletLoss()(z, Triplets(none, none, none))
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None
    with pytest.raises(ConfigError, match="margin must be > 0"):
        TripletLoss(0.0)
