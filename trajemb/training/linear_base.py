"""The linear base of a PCA-residual encoder (issue 20): PCA of the training windows, scaled to the loss.

Agent-frame windows lie close to a low-dimensional linear space, so PCA to D numbers retrieves within
0.5 % of the raw-space oracle's minADE on clean windows (docs/retrieval-quality.md). An encoder built
with ``EncoderConfig(linear_base="pca")`` adds a linear map of the flattened window to its Transformer's
output, whose last layer starts at zero; ``init_pca_base`` sets that map to the PCA projection of the
training windows, times one scale: the soft-neighbour loss (``trajemb.training.soft_neighbor_loss``) compares
squared embedding distances with a fixed temperature, so PCA's coordinates in metres are rescaled to
the scale at which they alone give the lowest loss on a few training batches (a bounded 1-D search,
``scipy.optimize.minimize_scalar``). Retrieval is unchanged by the scale: a fresh model retrieves
exactly as PCA does, and training moves it from there.

Legend: N windows, B batch, T steps, D embedding dim.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.decomposition import PCA

from trajemb.core.errors import ConfigError
from trajemb.training.model import TrajectoryEncoder

log = logging.getLogger(__name__)

#: Windows PCA is fitted on at most (a seeded sample), as the PCA baseline of ``trajemb.analysis.evaluate``.
MAX_FIT_WINDOWS = 50_000
#: The scale is searched over exp([-12, 6]): far beyond windows in millimetres or kilometres.
LOG_SCALE_BOUNDS = (-12.0, 6.0)


def fit_pca(xy_agent: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of (N, T, 2) agent-frame windows flattened to (N, T * 2): (D, T * 2) components and the
    (T * 2,) mean, float64, fitted on a seeded sample of at most ``MAX_FIT_WINDOWS`` windows.

    Raises:
        ConfigError: fewer windows than D, or windows of too few steps for D components.
    """
    flat = np.asarray(xy_agent, dtype=np.float64).reshape(len(xy_agent), -1)
    if len(flat) <= dim or flat.shape[1] < dim:
        raise ConfigError(
            f"a linear base of {dim} components needs more than {dim} windows of at least {dim / 2:g} steps, "
            f"got {len(flat)} windows of {flat.shape[1] // 2} steps"
        )
    rows = np.random.default_rng(seed).choice(len(flat), size=min(len(flat), MAX_FIT_WINDOWS), replace=False)
    pca = PCA(n_components=dim, random_state=seed).fit(flat[np.sort(rows)])
    return np.asarray(pca.components_, dtype=np.float64), np.asarray(pca.mean_, dtype=np.float64)


def loss_scale(loss_of_scale: Callable[[float], float]) -> float:
    """The scale s > 0 minimising ``loss_of_scale(s)`` (searched on log s within ``LOG_SCALE_BOUNDS``)."""
    result = minimize_scalar(
        lambda log_s: loss_of_scale(math.exp(log_s)), bounds=LOG_SCALE_BOUNDS, method="bounded"
    )
    return math.exp(float(result.x))


@torch.no_grad()
def set_linear_base(model: TrajectoryEncoder, components: np.ndarray, mean: np.ndarray, scale: float) -> None:
    """Make ``model``'s linear base ``scale * components @ (window - mean)``.

    Args:
        components: (D, T * 2) projection; mean: (T * 2,) the windows' mean; scale > 0.
    """
    base = model.linear_base
    if base is None:
        raise ConfigError("this encoder has no linear base (EncoderConfig.linear_base is none)")
    if components.shape != tuple(base.weight.shape) or mean.shape != (base.weight.shape[1],):
        raise ConfigError(
            f"a linear base of shape {tuple(base.weight.shape)} cannot take components {components.shape} "
            f"and mean {mean.shape}"
        )
    weight = scale * components
    base.weight.copy_(torch.from_numpy(weight))
    base.bias.copy_(torch.from_numpy(-(weight @ mean)))


@torch.no_grad()
def init_pca_base(
    model: TrajectoryEncoder,
    xy_train: np.ndarray,
    batches: Sequence[tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]],
    seed: int,
) -> float:
    """Fit PCA on (N, T, 2) training windows and set ``model``'s linear base to it at the scale that
    minimises the loss of the base alone; returns that scale.

    Args:
        batches: (xy (B, T, 2) clean inputs, loss of (B, D) embeddings) of a few training batches.
    """
    components, mean = fit_pca(xy_train, model.config.embedding_dim, seed)
    features = [
        torch.from_numpy((xy.reshape(len(xy), -1).double().numpy() - mean) @ components.T).float()
        for xy, _ in batches
    ]

    def mean_loss(scale: float) -> float:
        return float(
            np.mean([float(loss(scale * f)) for f, (_, loss) in zip(features, batches, strict=True)])
        )

    scale = loss_scale(mean_loss)
    set_linear_base(model, components, mean, scale)
    log.info(
        "linear base: PCA to %d of %d windows, scale %.4g (loss %.4f at the start)",
        len(components),
        len(xy_train),
        scale,
        mean_loss(scale),
    )
    return scale
