"""In-batch triplet mining with a similarity threshold, fully vectorised (no loop over anchors).

For anchor i, j != i is a positive when ``sim[i, j] >= threshold`` and a negative otherwise
(arXiv 2506.02571). Every window of a batch is encoded once; triplets are index triples into that
batch, so anchor, positive and negative embeddings come from the same forward pass.

Strategies:
* ``random``: a uniformly random positive and negative per anchor.
* ``hard``: the least similar positive and the most similar negative (by trajectory similarity, as
  the original's ``hard_mining``).
* ``semi-hard``: a random positive; a random negative farther from the anchor than the positive but
  within the margin (FaceNet's semi-hard condition, measured in embedding space), falling back to the
  most similar negative where none qualifies. (The original measures this condition on raw
  trajectories; embedding space is the standard definition and needs no extra (B, B) distances.)

Anchors without any positive or without any negative yield no triplet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from trajemb.core.errors import ConfigError

MiningName = Literal["random", "hard", "semi-hard"]
MINING_STRATEGIES: tuple[str, ...] = get_args(MiningName)


@dataclass(frozen=True)
class Triplets:
    """Index triples into a batch, each (M,) int64."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchor.shape[0])


def pair_masks(
    sim: torch.Tensor, threshold: float, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) similarity -> (positive, negative) boolean masks, the diagonal excluded from both.

    ``exclude`` (B, B) bool marks pairs that may be neither (e.g. windows of the same track).
    """
    B = sim.shape[0]
    allowed = ~torch.eye(B, dtype=torch.bool, device=sim.device)
    if exclude is not None:
        allowed &= ~exclude
    return (sim >= threshold) & allowed, (sim < threshold) & allowed


def _random_choice(mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per row, a uniformly random column where ``mask`` is True (rows without one give garbage)."""
    scores = torch.rand(mask.shape, device=mask.device, generator=generator)
    return torch.where(mask, scores, -1.0).argmax(dim=1)


def mine_triplets(
    sim: torch.Tensor,
    threshold: float,
    strategy: str = "random",
    embeddings: torch.Tensor | None = None,
    margin: float = 0.3,
    exclude: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Triplets:
    """Mine one triplet per eligible anchor.

    Args:
        sim: (B, B) trajectory similarities.
        threshold: positive when ``sim >= threshold``.
        strategy: ``random``, ``hard`` or ``semi-hard``.
        embeddings: (B, D) L2-normalised embeddings, required for ``semi-hard``.
        margin: triplet margin, used by ``semi-hard``.
        exclude: (B, B) pairs that are neither positive nor negative.
        generator: random generator on ``sim``'s device, for reproducible mining.
    """
    pos_mask, neg_mask = pair_masks(sim, threshold, exclude)
    eligible = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if strategy == "random":
        pos = _random_choice(pos_mask, generator)
        neg = _random_choice(neg_mask, generator)
    elif strategy == "hard":
        pos = torch.where(pos_mask, sim, torch.inf).argmin(dim=1)
        neg = torch.where(neg_mask, sim, -torch.inf).argmax(dim=1)
    elif strategy == "semi-hard":
        if embeddings is None:
            raise ConfigError("semi-hard mining needs the batch embeddings")
        pos = _random_choice(pos_mask, generator)
        with torch.no_grad():
            dist = torch.cdist(embeddings.float(), embeddings.float())  # (B, B)
        d_ap = dist.gather(1, pos[:, None])  # (B, 1)
        semi = neg_mask & (dist > d_ap) & (dist < d_ap + margin)
        hardest = torch.where(neg_mask, sim, -torch.inf).argmax(dim=1)
        neg = torch.where(semi.any(dim=1), _random_choice(semi, generator), hardest)
    else:
        raise ConfigError(
            f"unknown mining strategy {strategy!r}; expected one of {', '.join(MINING_STRATEGIES)}"
        )
    anchor = torch.nonzero(eligible).squeeze(1)
    return Triplets(anchor, pos[anchor], neg[anchor])
