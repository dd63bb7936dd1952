"""Triplet margin loss on L2-normalised embeddings (Euclidean distance), as in arXiv 2506.02571.

``loss = mean(max(0, ||a - p|| - ||a - n|| + margin))`` over the mined triplets; margin 0.3 by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trajemb.core.errors import ConfigError
from trajemb.training.mining import Triplets

DEFAULT_MARGIN = 0.3


class TripletLoss(nn.Module):
    """Triplet margin loss over index triplets into one batch of embeddings."""

    def __init__(self, margin: float = DEFAULT_MARGIN) -> None:
        super().__init__()
        if margin <= 0:
            raise ConfigError(f"margin must be > 0, got {margin}")
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, triplets: Triplets) -> torch.Tensor:
        """embeddings (B, D) -> scalar loss (0 with no triplets, still attached to the graph)."""
        if len(triplets) == 0:
            return embeddings.sum() * 0.0
        z = F.normalize(embeddings.float(), dim=-1)
        d_ap = (z[triplets.anchor] - z[triplets.positive]).norm(dim=-1)
        d_an = (z[triplets.anchor] - z[triplets.negative]).norm(dim=-1)
        return F.relu(d_ap - d_an + self.margin).mean()
