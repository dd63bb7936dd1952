"""2-D UMAP projection of embeddings (McInnes et al., umap-learn), seeded so bundles are reproducible."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from trajemb.schema import Float32Array

log = logging.getLogger(__name__)


def umap_2d(
    embeddings: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1
) -> Float32Array:
    """(N, D) -> (N, 2) float32 UMAP coordinates (Euclidean metric, as the index)."""
    import umap  # imported lazily: numba compiles on first import

    n = embeddings.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=min_dist,
        metric="euclidean",
        random_state=seed,
        n_jobs=1,  # a seeded UMAP is single-threaded anyway; saying so silences its warning
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        xy = reducer.fit_transform(np.asarray(embeddings, dtype=np.float32))
    return np.ascontiguousarray(xy, dtype=np.float32)
