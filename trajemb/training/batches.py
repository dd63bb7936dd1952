"""Training batches made of neighbourhoods, with the hard manoeuvres represented.

A random batch of 1,024 out of 50,000 windows holds almost no window close to another: a loss that
asks the embedding to keep each window's nearest neighbours near (``trajemb.training.soft_neighbor_loss``) then
only sees coarse structure. A neighbourhood batch draws ``batch_size / per_seed`` seed windows and
adds, for each, ``per_seed - 1`` of its ``NEIGHBORS`` nearest training windows in raw trajectory space
(found once with FAISS on a PCA of the windows). Seeds are drawn with replacement; with
``hard_share`` > 0, that share of them comes from the hard classes (turns, U-turns, lane changes by
the table's direction labels), which are otherwise a few per cent of the data.

Legend: N training windows, B batch.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from trajemb.core.errors import ConfigError
from trajemb.retrieval.robustness import HARD_CLASSES
from trajemb.retrieval.search import exact_search

#: Candidate neighbours of each window, and the PCA size they are found in.
NEIGHBORS = 16
PCA_DIM = 16
PCA_FIT_ROWS = 50_000


class NeighborhoodBatches:
    """Rows of neighbourhood batches over the training windows.

    Args:
        xy_agent: (N, T, 2) training windows.
        labels: (N,) direction labels (for ``hard_share``).
        batch_size: B; ``per_seed`` must divide it.
        per_seed: windows per neighbourhood (the seed and ``per_seed - 1`` neighbours).
        hard_share: share of seeds drawn from the hard classes (0: uniform).
        seed: random seed of the PCA fit.
    """

    def __init__(
        self,
        xy_agent: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        per_seed: int,
        hard_share: float,
        seed: int,
    ) -> None:
        if per_seed < 1 or batch_size % per_seed:
            raise ConfigError(
                f"--neighbors-per-seed {per_seed} must be >= 1 and divide --batch-size {batch_size}"
            )
        if not 0.0 <= hard_share < 1.0:
            raise ConfigError(f"--hard-share must be in [0, 1), got {hard_share}")
        n = len(xy_agent)
        if n <= NEIGHBORS:
            raise ConfigError(f"neighbourhood batches need more than {NEIGHBORS} training windows, got {n}")
        flat = np.asarray(xy_agent, dtype=np.float32).reshape(n, -1)
        rng = np.random.default_rng(seed)
        fit = rng.choice(n, size=min(n, PCA_FIT_ROWS), replace=False)
        features = np.ascontiguousarray(
            PCA(min(PCA_DIM, flat.shape[1]), random_state=seed).fit(flat[fit]).transform(flat),
            dtype=np.float32,
        )
        rows = np.arange(n)
        # (N, NEIGHBORS), the window itself left out (identical windows, such as parked ones, need not
        # list it first)
        self.knn = exact_search(features, features, NEIGHBORS, query_rows=rows)[1]
        hard = np.isin(np.asarray(labels, dtype=str), HARD_CLASSES)
        weights = np.ones(n)
        if hard_share > 0 and hard.any() and (~hard).any():
            weights = np.where(hard, hard_share / hard.sum(), (1.0 - hard_share) / (~hard).sum())
        self.p = weights / weights.sum()
        self.seeds_per_batch = batch_size // per_seed
        self.per_seed = per_seed

    def epoch(self, steps: int, rng: np.random.Generator) -> np.ndarray:
        """(steps, B) training-window indices of an epoch's batches (seeds first in each batch).

        The caller seeds ``rng`` by epoch (and rank), so that a resumed run draws the same batches."""
        S = self.seeds_per_batch
        seeds = rng.choice(len(self.p), size=(steps, S), p=self.p)
        pick = rng.integers(0, NEIGHBORS, (steps, S, self.per_seed - 1))
        neighbors = np.take_along_axis(self.knn[seeds], pick, axis=2)  # (steps, S, per_seed - 1)
        return np.concatenate([seeds, neighbors.reshape(steps, -1)], axis=1)
