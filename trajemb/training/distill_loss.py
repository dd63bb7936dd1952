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
    """Mean squared code distance to the clean windows' codes, over a temperature.

    Args:
        temperature: ``t`` (squared embedding distance units), > 0.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, clean_codes: torch.Tensor) -> torch.Tensor:
        """(B, D) codes of the inputs (with their graph) and (B, D) target codes -> scalar loss
        ``mean_i sum_d (z_id - c_id)² / t`` (the targets are detached)."""
        if embeddings.shape != clean_codes.shape:
            raise ConfigError(
                f"codes {tuple(embeddings.shape)} and clean codes {tuple(clean_codes.shape)} differ in shape"
            )
        diff = embeddings.float() - clean_codes.detach().float()
        return diff.pow(2).sum(dim=1).mean() / self.temperature
