"""The distillation loss against a numpy reference and on analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.training.distill_loss import CodeDistillationLoss


def test_distillation_loss_matches_a_reference() -> None:
    rng = np.random.default_rng(0)
    z, c = rng.normal(size=(37, 4)), rng.normal(size=(37, 4))
    expected = ((z - c) ** 2).sum(axis=1).mean() / 2.5
    got = CodeDistillationLoss(temperature=2.5)(torch.tensor(z), torch.tensor(c))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_analytic_cases_and_gradient() -> None:
    """Zero at the clean codes; a shift of a along one axis costs a² / t; the gradient is 2 (z - c) / (B t)
    and never reaches the targets."""
    c = torch.randn(8, 4, requires_grad=True)
    loss = CodeDistillationLoss(temperature=0.5)
    assert float(loss(c.detach().clone(), c)) == 0.0
    z = (c.detach() + torch.tensor([0.0, 3.0, 0.0, 0.0])).requires_grad_(True)
    value = loss(z, c)
    assert float(value.detach()) == pytest.approx(9.0 / 0.5)
    value.backward()  # type: ignore[no-untyped-call]
    assert z.grad is not None and c.grad is None
    torch.testing.assert_close(z.grad, 2 * (z - c).detach() / (8 * 0.5))


def test_distillation_loss_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        CodeDistillationLoss(temperature=0.0)
    with pytest.raises(ConfigError, match="differ in shape"):
        CodeDistillationLoss()(torch.zeros(3, 4), torch.zeros(3, 8))


def test_distillation_loss_relative_to_the_local_spacing() -> None:
    """``neighbors``: codes 0, 1, 3, 7 on a line are 1, 1, 2 and 4 from their nearest other code, so a
    shift of 1 costs 1, 1, 1/4 and 1/16; pairs that are not allowed do not count as neighbours; identical
    codes get the floor of the median positive spacing rather than 0."""
    c = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    loss = CodeDistillationLoss(neighbors=1, floor=0.01)
    assert float(loss(c + 1.0, c)) == pytest.approx((1 + 1 + 1 / 4 + 1 / 16) / 4)
    allowed = ~torch.eye(4, dtype=torch.bool)
    allowed[0, 1] = allowed[1, 0] = False  # one track: 0 and 1 are not each other's neighbours
    torch.testing.assert_close(loss.spacing(c, allowed), torch.tensor([3.0, 2.0, 2.0, 4.0]))
    same = torch.zeros(4, 1)
    spacing = CodeDistillationLoss(neighbors=1, floor=0.5).spacing(
        torch.cat([same, c + 10]), ~torch.eye(8, dtype=torch.bool)
    )
    # More than half of the batch identical: the floor is half the median positive spacing (1), not 0.
    torch.testing.assert_close(spacing, torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 2.0, 4.0]))
