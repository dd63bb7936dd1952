"""How the embeddings of one batch become a loss: the strategies ``trajemb train`` chooses between.

* ``TripletBatchLoss``: the paper's recipe (arXiv 2506.02571): the (B, B) trajectory similarity of the
  batch, index triplets mined from it (``trajemb.training.mining``, vectorised; pairs of one track are never
  mined) and the triplet margin loss (``trajemb.training.losses``). Its mining scope is the process's own batch
  (``rank``) or, under ``torchrun``, the batches of all ranks gathered (``global``): every rank mines the
  same global triplets and keeps those anchored in its own rows, scaled so that DDP's gradient average
  is the gradient of the mean over all global triplets.
* ``SoftNeighborBatchLoss``: the soft-neighbour loss (``trajemb.training.soft_neighbor_loss``) against targets
  in the similarity's own space.
* ``DistilledBatchLoss`` (issue 20, an encoder with a linear base): denoising distillation to the base's
  code of the clean window (``trajemb.training.distill_loss``) plus a weighted soft-neighbour loss.

``calibrate_threshold`` sets the triplet strategy's positive threshold from the data when none is given.

Legend: B batch, T steps, D embedding dim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from trajemb.training import distributed
from trajemb.training.distill_loss import CodeDistillationLoss
from trajemb.training.losses import TripletLoss
from trajemb.training.mining import Triplets, mine_triplets
from trajemb.training.similarity import fft_features, similarity_matrix
from trajemb.training.soft_neighbor_loss import SoftNeighborLoss

log = logging.getLogger(__name__)


class BatchLoss(Protocol):
    def __call__(
        self,
        z: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator,
        across_ranks: bool = False,
    ) -> tuple[torch.Tensor, int]:
        """Loss of a batch and how many anchors it used (mined triplets, or anchors with a neighbour).

        Args:
            z: (B, D) embeddings of the batch (with their graph).
            targets: (B, T, 2) what the loss compares: the windows, in the agent frame.
            groups: (B,) track ids; windows of one track are never each other's positive or negative.
            generator: the random stream of mining (on the device of ``z``).
            across_ranks: a training step that every rank runs together (global mining may gather).
        """
        ...


@dataclass
class TripletBatchLoss:
    """Mined triplets and the triplet margin loss (see the module docstring)."""

    loss_fn: TripletLoss
    similarity: str
    shape_weight: float
    threshold: float
    mining: str
    margin: float
    scope: str = "rank"
    dist: distributed.DistEnv | None = None

    def __call__(
        self,
        z: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator,
        across_ranks: bool = False,
    ) -> tuple[torch.Tensor, int]:
        if across_ranks and self.scope == "global" and self.dist is not None and self.dist.is_distributed:
            return self._global(z, targets, groups, generator, self.dist)
        triplets = self._mine(z, targets, groups, generator)
        return self.loss_fn(z, triplets), len(triplets)

    def _mine(
        self, z: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, generator: torch.Generator
    ) -> Triplets:
        """Triplets (anchor, positive, negative) of one batch: similar by the targets, never two windows
        of one group, ranked by the current embeddings ``z`` (N, D)."""
        with torch.no_grad():
            sim = similarity_matrix(targets, self.similarity, self.shape_weight)
        return mine_triplets(
            sim,
            self.threshold,
            self.mining,
            embeddings=z.detach(),
            margin=self.margin,
            exclude=groups[:, None] == groups[None, :],
            generator=generator,
        )

    def _global(
        self,
        z: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator,
        dist: distributed.DistEnv,
    ) -> tuple[torch.Tensor, int]:
        """Mining within the batches of all ranks. Every rank mines the same global triplets (same
        gathered data, same generator state) and keeps those anchored in its own rows; scaling by the
        rank's share makes DDP's gradient average the gradient of the mean over all global triplets."""
        xg, gg, zg, own = distributed.gather_global_batch(targets, groups, z, dist)
        every = self._mine(zg, xg, gg, generator)
        mine = distributed.own_anchors(every, own)
        share = len(mine) * dist.world_size / max(1, len(every))
        return self.loss_fn(zg, mine) * share, len(mine)


@dataclass
class SoftNeighborBatchLoss:
    """The soft-neighbour loss; pairs of one track are left out."""

    loss_fn: SoftNeighborLoss
    similarity: str

    def __call__(
        self,
        z: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator,
        across_ranks: bool = False,
    ) -> tuple[torch.Tensor, int]:
        # Targets in the similarity's own space: the Cosine similarity's shape distance (flattened
        # metres) or the FFT similarity's magnitude features (blind to mirror images, as the paper's).
        flat = targets.reshape(len(targets), -1) if self.similarity == "cosine" else fft_features(targets)
        allowed = ~(groups[:, None] == groups[None, :])
        return self.loss_fn(z, flat, allowed), int(allowed.any(dim=1).sum())


@dataclass
class DistilledBatchLoss:
    """``distill_weight`` x the distillation loss to ``clean_code`` of the clean windows plus
    ``soft_weight`` x the soft-neighbour loss (left out when 0).

    ``clean_code``: (B, T, 2) clean windows -> (B, D) their target codes (the encoder's linear base).
    """

    soft: SoftNeighborBatchLoss
    distill: CodeDistillationLoss
    clean_code: Callable[[torch.Tensor], torch.Tensor]
    distill_weight: float
    soft_weight: float

    def __call__(
        self,
        z: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        generator: torch.Generator,
        across_ranks: bool = False,
    ) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            codes = self.clean_code(targets)
        loss = self.distill_weight * self.distill(z, codes, ~(groups[:, None] == groups[None, :]))
        if self.soft_weight == 0:
            return loss, len(z)
        soft, anchors = self.soft(z, targets, groups, generator, across_ranks)
        return loss + self.soft_weight * soft, anchors


@torch.no_grad()
def calibrate_threshold(
    xy: torch.Tensor,
    groups: torch.Tensor,
    rows: np.ndarray,
    similarity: str,
    shape_weight: float,
    positive_fraction: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    num_batches: int = 8,
) -> float:
    """The similarity above which ``positive_fraction`` of in-batch pairs lie (other tracks only),
    averaged over ``num_batches`` seeded batches of ``rows``.

    The paper's fixed threshold (0.8) is scale-dependent: with the Cosine similarity's flattened
    distance in metres, 6 s windows of all road users almost never reach it, while FFT similarities
    of nearly all pairs exceed it. A quantile gives every similarity the same positive rate.

    Args:
        xy: (N, T, 2) windows (CPU); groups: (N,) track ids; rows: the training rows to draw from.
    """
    gen = torch.Generator().manual_seed(seed + 3)
    values = []
    for _ in range(num_batches):
        batch = torch.from_numpy(rows[torch.randperm(len(rows), generator=gen)[:batch_size].numpy()])
        xb, gb = xy[batch].to(device), groups[batch].to(device)
        sim = similarity_matrix(xb, similarity, shape_weight)
        off = ~(gb[:, None] == gb[None, :])
        values.append(torch.quantile(sim[off].float()[:1_000_000].cpu(), 1.0 - positive_fraction))
    threshold = float(torch.stack(values).mean())
    log.info(
        "calibrated %s similarity threshold %.4f (%.1f%% positive pairs)",
        similarity,
        threshold,
        100 * positive_fraction,
    )
    return threshold
