"""Soft-neighbour loss: the embedding's neighbourhoods should be the trajectories' own.

A soft-target (multi-positive) contrastive loss beside the paper's triplet loss (``trajemb.training.losses``).
Within a batch, each anchor i gets a target distribution over the other windows from their distance in
raw trajectory space, ``p_ij ∝ exp(-d_ij² / (2 s_i²))`` with ``s_i`` the distance to the anchor's
``neighbors``-th nearest window (the bandwidth adapts to how crowded its part of the space is, as
t-SNE's perplexity does), and the embedding a distribution ``q_ij = softmax_j(-||z_i - z_j||² / t)``;
the loss is the cross-entropy ``-sum_j p_ij log q_ij`` averaged over anchors: SNE's objective
(Hinton & Roweis 2003) in its parametric form (van der Maaten 2009), which is what nearest-neighbour
retrieval asks of an embedding. Every positive of the triplet loss (a close window) is here a weighted
positive and every other window a weighted negative.

Legend: B batch, D embedding dim, F flattened trajectory features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trajemb.core.errors import ConfigError

DEFAULT_NEIGHBORS = 5


class SoftNeighborLoss(nn.Module):
    """Cross-entropy between raw-space and embedding-space neighbour distributions within a batch.

    Args:
        neighbors: the bandwidth of anchor i is its distance to its ``neighbors``-th nearest window.
        temperature: ``t`` of the embedding distribution (squared embedding distance units).
    """

    def __init__(self, neighbors: int = DEFAULT_NEIGHBORS, temperature: float = 1.0) -> None:
        super().__init__()
        if neighbors < 1:
            raise ConfigError(f"soft-neighbour bandwidth neighbours must be >= 1, got {neighbors}")
        if not temperature > 0:
            raise ConfigError(f"soft-neighbour temperature must be > 0, got {temperature}")
        self.neighbors = neighbors
        self.temperature = temperature

    def targets(self, raw_distance: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B, B) raw distances and (B, B) pairs that may be neighbours -> (B, B) target rows (each sums
        to 1 over allowed pairs, 0 elsewhere; all 0 for an anchor without any allowed pair)."""
        d = raw_distance.float().masked_fill(~allowed, torch.inf)
        k = min(self.neighbors, d.shape[1])
        bandwidth = torch.topk(d, k, dim=1, largest=False).values[:, -1]  # (B,)
        bandwidth = torch.where(torch.isfinite(bandwidth), bandwidth, d.masked_fill(~allowed, 0).amax(dim=1))
        logits = -(d**2) / (2.0 * bandwidth.clamp_min(1e-6)[:, None] ** 2)
        p = torch.softmax(logits.masked_fill(~allowed, -torch.inf), dim=1)
        return torch.nan_to_num(p, nan=0.0)

    def forward(self, embeddings: torch.Tensor, raw: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            embeddings: (B, D) embeddings of the (possibly augmented) inputs.
            raw: (B, F) the targets' space: clean trajectories flattened (metres), or any features
                of them (the trainer passes FFT magnitudes for the FFT similarity).
            allowed: (B, B) bool, pairs that may be neighbours (not the window itself, not its track).

        Returns:
            Scalar loss (0, still attached to the graph, when no anchor has an allowed pair).
        """
        with torch.no_grad():
            p = self.targets(torch.cdist(raw.float(), raw.float()), allowed)
        z = embeddings.float()
        logits = -torch.cdist(z, z).pow(2) / self.temperature
        log_q = F.log_softmax(logits.masked_fill(~allowed, -torch.inf), dim=1)
        has = allowed.any(dim=1)
        if not bool(has.any()):
            return embeddings.sum() * 0.0
        loss = -(p * torch.nan_to_num(log_q, neginf=0.0)).sum(dim=1)
        return loss[has].mean()
