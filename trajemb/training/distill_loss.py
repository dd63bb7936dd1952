"""Denoising distillation to the clean code (issue 20): the code of a perturbed window should be the
linear base's code of its clean window.

An encoder with a PCA base (``trajemb.training.linear_base``) retrieves clean windows within 0.5 % of the
raw-space oracle, but reads a noisy or gappy window through the same linear map. This loss teaches its
correction what PCA cannot do: for each window of a batch, ``||z_i - c_i||² / t``, with ``z_i`` the
encoder's code of the input as the encoder sees it (perturbed or clean) and ``c_i`` the code of the
clean window under the linear base as initialised (PCA, kept fixed as the teacher: distilling to a base
that trains would teach it to shrink), averaged over the batch; ``t`` is the soft-neighbour loss's
temperature, so that both losses count squared code distances in one unit. A clean input whose
correction is zero costs nothing: the minimiser is the conditional mean of the clean code given what was
observed (denoising as in Vincent et al., ICML 2008, distilled to a fixed teacher as in Hinton et al.
2015), and on clean windows it is PCA itself.

Legend: B batch, D embedding dim.
"""

from __future__ import annotations

import torch
from torch import nn

from trajemb.core.errors import ConfigError


class CodeDistillationLoss(nn.Module):
    """Mean squared code distance to the clean windows' codes, over a temperature or, with ``neighbors``,
    over each window's local spacing.

    With ``neighbors`` k, window i's squared error is divided by ``s_i²`` instead of ``t``: ``s_i`` is the
    distance from its clean code to the k-th nearest clean code of the batch (allowed pairs only), at
    least ``floor`` times the batch's median positive ``s``. Retrieval only asks that a code stay closer
    to its window's neighbours than to anything else, so an error counts relative to how crowded that
    part of the code space is (slow, dense windows need small errors; fast, sparse ones tolerate large
    ones), as the soft-neighbour loss's bandwidth (``trajemb.training.soft_neighbor_loss``) adapts.
    Measured worse than the temperature for the PCA-distillation recipe (docs/retrieval-quality.md).

    Args:
        temperature: ``t`` (squared embedding distance units), > 0.
        neighbors: None (the temperature) or k >= 1.
        floor: the least ``s_i`` as a share of the batch's median positive spacing, in (0, 1]: identical
            windows (a queue of stopped cars) have no spacing.
    """

    def __init__(self, temperature: float = 1.0, neighbors: int | None = None, floor: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
        if neighbors is not None and neighbors < 1:
            raise ConfigError(f"distillation neighbours must be >= 1, got {neighbors}")
        if not 0 < floor <= 1:
            raise ConfigError(f"distillation spacing floor must be in (0, 1], got {floor}")
        self.temperature = temperature
        self.neighbors = neighbors
        self.floor = floor

    @torch.no_grad()
    def spacing(self, clean_codes: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B, D) clean codes and (B, B) allowed pairs -> (B,) ``s_i`` (see the class docstring)."""
        assert self.neighbors is not None
        c = clean_codes.float()
        d = torch.cdist(c, c).masked_fill(~allowed, torch.inf)
        k = min(self.neighbors, d.shape[1])
        s = torch.topk(d, k, dim=1, largest=False).values[:, -1]
        finite = torch.isfinite(s)
        # The median of the positive spacings: in a batch of mostly identical windows the median is 0.
        positive = finite & (s > 0)
        median = s[positive].median() if bool(positive.any()) else torch.ones((), device=c.device)
        return torch.where(finite, s, median).clamp_min(self.floor * float(median))

    def forward(
        self, embeddings: torch.Tensor, clean_codes: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D) codes of the inputs (with their graph), (B, D) target codes and, with ``neighbors``,
        (B, B) the pairs whose distances set the spacing -> scalar loss ``mean_i sum_d (z_id - c_id)² / t``
        or ``mean_i sum_d (z_id - c_id)² / s_i²`` (the targets are detached)."""
        if embeddings.shape != clean_codes.shape:
            raise ConfigError(
                f"codes {tuple(embeddings.shape)} and clean codes {tuple(clean_codes.shape)} differ in shape"
            )
        error = (embeddings.float() - clean_codes.detach().float()).pow(2).sum(dim=1)
        if self.neighbors is None:
            return error.mean() / self.temperature
        if allowed is None:
            allowed = ~torch.eye(len(clean_codes), dtype=torch.bool, device=clean_codes.device)
        return (error / self.spacing(clean_codes, allowed).pow(2)).mean()
