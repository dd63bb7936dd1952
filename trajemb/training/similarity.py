"""Pairwise trajectory similarities that decide positives and negatives for mining.

Both follow "Contrast & Compress" (arXiv 2506.02571):

* **Cosine**: ``cos(dir_a, dir_b) / (1 + f * ||a - b||)`` with ``dir = last - first`` point and
  ``||a - b||`` the Euclidean norm of the flattened difference (agent frame, metres).
* **FFT**: cosine similarity of the L2-normalised, flattened magnitudes of the real FFT along time
  (first T//2 + 1 coefficients per coordinate). Magnitudes ignore phase, so mirrored and time-reversed
  trajectories look identical to it: it cannot tell a left from a right turn.

Legend: B batch, T steps. Inputs are (B, T, 2) tensors in the agent frame; outputs (B, B) on the same
device.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from trajemb.core.errors import ConfigError

SimilarityName = Literal["cosine", "fft"]
SIMILARITIES: tuple[str, ...] = get_args(SimilarityName)
DEFAULT_SHAPE_WEIGHT = 0.5


def cosine_similarity_matrix(xy: torch.Tensor, shape_weight: float = DEFAULT_SHAPE_WEIGHT) -> torch.Tensor:
    """(B, T, 2) -> (B, B): direction cosine damped by flattened shape distance (weight ``f``)."""
    if shape_weight < 0:
        raise ConfigError(f"shape_weight (f) must be >= 0, got {shape_weight}")
    flat = xy.reshape(xy.shape[0], -1).float()
    dist = torch.cdist(flat, flat, p=2)  # (B, B)
    direction = (xy[:, -1] - xy[:, 0]).float()  # (B, 2)
    unit = F.normalize(direction, dim=-1, eps=1e-8)
    cos_dir = unit @ unit.T
    return cos_dir / (1.0 + shape_weight * dist)


def fft_features(xy: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) -> (B, (T//2 + 1) * 2) L2-normalised real-FFT magnitudes along time."""
    mag = torch.fft.rfft(xy.float(), dim=1).abs()  # (B, T//2+1, 2)
    return F.normalize(mag.reshape(xy.shape[0], -1), dim=-1, eps=1e-8)


def fft_similarity_matrix(xy: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) -> (B, B) cosine similarity of FFT magnitude features."""
    feats = fft_features(xy)
    return feats @ feats.T


def similarity_matrix(
    xy: torch.Tensor, name: str, shape_weight: float = DEFAULT_SHAPE_WEIGHT
) -> torch.Tensor:
    """Dispatch on the similarity's name (``cosine`` or ``fft``)."""
    if name == "cosine":
        return cosine_similarity_matrix(xy, shape_weight)
    if name == "fft":
        return fft_similarity_matrix(xy)
    raise ConfigError(f"unknown similarity {name!r}; expected one of {', '.join(SIMILARITIES)}")
