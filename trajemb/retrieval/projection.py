"""2-D layouts of embeddings for the explorer: UMAP (McInnes et al., umap-learn), at any size.

Methods:
* ``full``: UMAP over every row. Seeded, hence single-threaded (umap-learn ignores ``n_jobs`` with a
  ``random_state``); its spectral initialisation grows past minutes and gigabytes towards 1M rows.
* ``sample``: UMAP fitted on ``sample_size`` seeded rows; every other row is placed at the
  distance-weighted mean of the layout positions of its ``place_k`` nearest sample rows in embedding
  space (exact FAISS search), which is how umap-learn's ``transform`` initialises new points, without
  its extra optimisation epochs. Linear in N: about a minute for 1M rows on 2 cores.
* ``auto``: ``full`` up to ``full_max_rows`` rows, ``sample`` above.
* ``none``: no layout.
``seed`` None drops reproducibility for umap-learn's parallel mode. ``scripts/bench_scale.py`` measures
what ``sample`` loses against ``full`` (trustworthiness, scikit-learn) and what it gains in time.

Legend: N rows, D embedding dim.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajemb.core.errors import ConfigError
from trajemb.core.fields import K_BOUNDS, K_NEIGHBORS_DEFAULT, check_fields, param
from trajemb.core.validate import MAX_SEED
from trajemb.data.schema import Float32Array

log = logging.getLogger(__name__)

PROJECTION_METHODS: tuple[str, ...] = ("auto", "full", "sample", "none")


@dataclass(frozen=True)
class ProjectionConfig:
    method: str = param(
        "auto",
        help="2-D layout: auto (full UMAP up to full_max_rows windows, UMAP of a sample + placement above), "
        "full, sample, none",
        choices=PROJECTION_METHODS,
    )
    sample_size: int = param(
        50_000, help="rows the UMAP is fitted on with method sample", low=10, high=10_000_000
    )
    full_max_rows: int = param(100_000, help="largest full UMAP of method auto", low=10)
    place_k: int = param(
        K_NEIGHBORS_DEFAULT, help="fitted neighbours that place each other row", bounds=K_BOUNDS
    )
    n_neighbors: int = param(15, help="UMAP n_neighbors", low=2, high=1000)
    min_dist: float = param(0.1, help="UMAP min_dist", low=0.0, high=1.0)
    seed: int | None = param(0, help="UMAP seed (None: parallel, not reproducible)", low=0, high=MAX_SEED)

    def __post_init__(self) -> None:
        check_fields(self)

    def resolved_method(self, num_rows: int) -> str:
        if self.method != "auto":
            return self.method
        return "full" if num_rows <= self.full_max_rows else "sample"


def umap_2d(
    embeddings: np.ndarray, seed: int | None = 0, n_neighbors: int = 15, min_dist: float = 0.1
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
        n_jobs=1 if seed is not None else -1,  # a seeded UMAP is single-threaded anyway
        init="spectral" if n > n_neighbors + 2 else "random",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        xy = reducer.fit_transform(np.asarray(embeddings, dtype=np.float32))
    return np.ascontiguousarray(xy, dtype=np.float32)


def place_by_neighbors(
    sample_embeddings: np.ndarray,
    sample_xy: np.ndarray,
    embeddings: np.ndarray,
    k: int = 10,
    chunk_rows: int = 65_536,
    progress: bool = False,
) -> Float32Array:
    """(M, 2) positions of (M, D) ``embeddings``: the inverse-distance-weighted mean of the layout
    positions ``sample_xy`` of their k nearest ``sample_embeddings`` (exact search up to 20k sample rows,
    IVF with 16 probed cells above)."""
    from tqdm import tqdm

    from trajemb.retrieval.index import IndexSpec, build_search_index
    from trajemb.retrieval.search import search

    base = np.ascontiguousarray(sample_embeddings, dtype=np.float32)
    # Above 20k sample rows exact search would compare every row with every sample row (1M x 50k): an
    # IVF index over the sample finds the same few nearest sample rows at a fraction of the cost.
    spec = (
        IndexSpec(kind="ivf", nlist=int(4 * math.sqrt(len(base))), nprobe=16)
        if len(base) > 20_000
        else IndexSpec(kind="flat")
    )
    index, _ = build_search_index(base, spec)
    k = min(k, len(sample_embeddings))
    out = np.empty((len(embeddings), 2), dtype=np.float32)
    bar = tqdm(
        total=len(embeddings),
        desc="place",
        unit="pt",
        unit_scale=True,
        disable=not progress,
        dynamic_ncols=True,
    )
    for start in range(0, len(embeddings), chunk_rows):
        q = np.ascontiguousarray(embeddings[start : start + chunk_rows], dtype=np.float32)
        dist, ids = search(index, q, k)
        # Inverse-distance weights; a row the IVF probes found no sample row for falls back to exact search.
        lost = ids[:, 0] < 0
        if lost.any():
            dist[lost], ids[lost] = search(
                index, q[lost], k, allowed=np.ones(len(base), bool), embeddings=base
            )
        w = np.where(ids >= 0, 1.0 / (dist + 1e-6), 0.0)
        w /= w.sum(axis=1, keepdims=True)
        out[start : start + len(q)] = np.einsum("mk,mkc->mc", w, sample_xy[np.maximum(ids, 0)])
        bar.update(len(q))
    bar.close()
    return out


def project_2d(
    embeddings: Any, config: ProjectionConfig = ProjectionConfig(), progress: bool = False
) -> tuple[Float32Array, dict[str, Any]]:
    """(N, D) embeddings (an array or anything with ``rows(idx)``/``__len__``, read in chunks) ->
    (N, 2) layout and a description of how it was made (method, sample size, seconds)."""
    n = len(embeddings)
    method = config.resolved_method(n)
    if method == "none":
        raise ConfigError("projection method 'none' makes no layout")
    t0 = time.perf_counter()
    read = embeddings.rows if hasattr(embeddings, "rows") else (lambda idx: np.asarray(embeddings[idx]))
    info: dict[str, Any] = {
        "method": method,
        "num_rows": n,
        "seed": config.seed,
        "n_neighbors": config.n_neighbors,
        "min_dist": config.min_dist,
    }
    from tqdm import tqdm

    # One bar over every row: a full UMAP moves it once at the end; a sampled one by the sample when its
    # fit is done, then by each placed chunk.
    # Closed however the stage ends (a signal included), so that its last line is not printed after
    # the command's own.
    with tqdm(
        total=n, desc="layout", unit="pt", unit_scale=True, disable=not progress, dynamic_ncols=True
    ) as bar:
        if method == "full" or n <= config.sample_size:
            xy = umap_2d(read(slice(None)), config.seed, config.n_neighbors, config.min_dist)
            info["method"] = "full"
            bar.update(n)
        else:
            rng = np.random.default_rng(config.seed)
            sample = np.sort(rng.choice(n, size=config.sample_size, replace=False))
            sample_emb = read(sample)
            log.info("UMAP of a %d-row sample of %d rows", len(sample), n)
            t_fit = time.perf_counter()
            sample_xy = umap_2d(sample_emb, config.seed, config.n_neighbors, config.min_dist)
            info["fit_s"] = time.perf_counter() - t_fit
            bar.update(len(sample))
            log.info(
                "UMAP fit in %.1f s; placing the other %d rows by their %d nearest sample rows",
                info["fit_s"],
                n - len(sample),
                config.place_k,
            )
            t_place = time.perf_counter()
            xy = np.empty((n, 2), dtype=np.float32)
            chunk = 262_144
            for start in range(0, n, chunk):
                rows = read(slice(start, start + chunk))
                xy[start : start + chunk] = place_by_neighbors(sample_emb, sample_xy, rows, config.place_k)
                in_sample = np.searchsorted(sample, start + len(rows)) - np.searchsorted(sample, start)
                bar.update(len(rows) - int(in_sample))  # sample rows were counted with the fit
            xy[sample] = sample_xy  # sample rows keep their fitted position exactly
            info.update(
                sample_size=len(sample), place_k=config.place_k, place_s=time.perf_counter() - t_place
            )
    info["seconds"] = time.perf_counter() - t0
    return np.ascontiguousarray(xy, dtype=np.float32), info


def trustworthiness_on_sample(
    embeddings: np.ndarray, xy: np.ndarray, sample: int = 5000, k: int = 10, seed: int = 0
) -> float:
    """scikit-learn's trustworthiness (how many 2-D neighbours are true neighbours) on a sample."""
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(xy), size=min(sample, len(xy)), replace=False)
    return float(trustworthiness(np.asarray(embeddings[rows]), np.asarray(xy[rows]), n_neighbors=k))
