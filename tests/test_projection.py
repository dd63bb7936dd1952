"""2-D layouts: full UMAP for small sets, a fitted sample plus placement for large ones."""

from __future__ import annotations

import numpy as np
import pytest

from trajemb.core.errors import ConfigError
from trajemb.retrieval.projection import (
    ProjectionConfig,
    place_by_neighbors,
    project_2d,
    trustworthiness_on_sample,
)


def blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (6, 8))
    return (centres[rng.integers(0, 6, n)] + rng.normal(0, 0.3, (n, 8))).astype(np.float32)


@pytest.mark.slow  # UMAP's first fit compiles with numba: ten seconds
def test_sampled_layout_covers_every_row() -> None:
    x = blobs(3000)
    xy, info = project_2d(x, ProjectionConfig(method="sample", sample_size=600))
    assert xy.shape == (3000, 2) and np.isfinite(xy).all()
    assert info["method"] == "sample" and info["sample_size"] == 600
    assert trustworthiness_on_sample(x, xy, sample=1000) > 0.8
    chunked = project_2d(x, ProjectionConfig(method="sample", sample_size=600))[0]
    np.testing.assert_array_equal(xy, chunked)  # seeded: reproducible


def test_placement_is_a_weighted_mean_of_sample_positions() -> None:
    sample = np.eye(3, dtype=np.float32)
    sample_xy = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    placed = place_by_neighbors(sample, sample_xy, np.eye(3, dtype=np.float32), k=1)
    np.testing.assert_allclose(placed, sample_xy)  # each point on its own sample point
    mid = place_by_neighbors(sample, sample_xy, np.array([[0.5, 0.5, 0]], np.float32), k=2)
    np.testing.assert_allclose(mid, [[5, 0]], atol=1e-3)


def test_methods_and_validation() -> None:
    assert ProjectionConfig().resolved_method(10) == "full"
    assert ProjectionConfig(full_max_rows=100).resolved_method(101) == "sample"
    with pytest.raises(ConfigError):
        ProjectionConfig(method="tsne")
    with pytest.raises(ConfigError):
        project_2d(blobs(10), ProjectionConfig(method="none"))
