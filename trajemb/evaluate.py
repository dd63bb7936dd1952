"""Retrieval evaluation of embeddings, as the paper reports it, beside honest baselines.

For sampled query windows: retrieve k neighbours among all windows (excluding the query itself and
windows of its own track) and score query-vs-neighbour minADE@k / minFDE@k (rule in ``metrics``),
direction-label precision@k, mirror confusion@k (how often a left-turn or lane-change-left query
gets right-side neighbours and vice versa: FFT magnitudes cannot tell mirrored trajectories apart),
silhouette by direction class, encode time per window and search time per query. Baselines on the
same queries: the oracle (exact kNN in raw trajectory space by flattened Euclidean distance: a
near-best reference, not an exact bound, since ADE averages per-step distances while the flattened
norm sums squared ones, so a low-D projection can beat it by a hair), random neighbours, PCA to the
same D, FFT magnitude features and an untrained encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from trajemb.errors import ConfigError
from trajemb.index import IndexSpec, NeighborIndex, build_index
from trajemb.metrics import min_ade_fde
from trajemb.model import EncoderConfig, TrajectoryEncoder
from trajemb.schema import DirectionClass
from trajemb.similarity import fft_features
from trajemb.store import TrajectoryTable
from trajemb.validate import check_int, check_seed

#: Each sided manoeuvre and its mirror image.
MIRRORED_DIRECTION: dict[str, str] = {
    DirectionClass.LEFT.value: DirectionClass.RIGHT.value,
    DirectionClass.RIGHT.value: DirectionClass.LEFT.value,
    DirectionClass.LANE_CHANGE_LEFT.value: DirectionClass.LANE_CHANGE_RIGHT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value: DirectionClass.LANE_CHANGE_LEFT.value,
}


@dataclass(frozen=True)
class EvalConfig:
    """``max_corpus``: above this many windows, models and baselines are all evaluated on the same
    seeded random subset of this size (the oracle and the untrained encoder cost O(N) per method)."""

    num_queries: int = 2000
    ks: tuple[int, ...] = (1, 5, 10)
    silhouette_sample: int = 5000
    seed: int = 0
    max_corpus: int = 200_000

    def __post_init__(self) -> None:
        check_int("--queries", self.num_queries, 1, 10_000_000)
        check_int("silhouette_sample", self.silhouette_sample, 2, 10_000_000)
        check_int("--eval-corpus", self.max_corpus, 2)
        check_seed("--seed", self.seed)
        if not self.ks:
            raise ConfigError("evaluation needs at least one k")
        for k in self.ks:
            check_int("evaluation k", k, 1, 1000)


def evaluation_corpus(n: int, config: EvalConfig) -> np.ndarray:
    """Sorted rows of the windows retrieval is evaluated among: all of them up to ``max_corpus``."""
    if n <= config.max_corpus:
        return np.arange(n)
    rng = np.random.default_rng(config.seed + 2)
    return np.sort(rng.choice(n, size=config.max_corpus, replace=False))


def sample_queries(n: int, config: EvalConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(n, size=min(config.num_queries, n), replace=False))


def score_neighbors(
    table: TrajectoryTable, queries: np.ndarray, neighbor_ids: np.ndarray, ks: tuple[int, ...]
) -> dict[str, float]:
    """minADE@k, minFDE@k, direction precision@k and mirror confusion@k of (Q, K) neighbour rows.

    -1 marks "no neighbour". Mirror confusion@k: over queries with a sided direction (left, right,
    lane change left/right), the mean fraction of their valid neighbours labelled with the mirrored
    direction; NaN when no query is sided.
    """
    xy = table.xy_agent
    labels = table.meta["direction"].to_numpy(dtype=str)
    mirrored = np.array([MIRRORED_DIRECTION.get(label, "") for label in labels[queries]])
    sided = mirrored != ""
    out: dict[str, float] = {}
    for k in ks:
        ids = neighbor_ids[:, :k]
        valid = ids >= 0
        ade, fde = min_ade_fde(xy[queries], xy[np.maximum(ids, 0)], valid)
        ok = np.isfinite(ade)
        out[f"minADE@{k}"] = float(ade[ok].mean())
        out[f"minFDE@{k}"] = float(fde[ok].mean())
        neighbor_labels = labels[np.maximum(ids, 0)]
        num_valid = np.maximum(valid.sum(axis=1), 1)
        same = (neighbor_labels == labels[queries][:, None]) & valid
        out[f"precision@{k}"] = float((same.sum(axis=1) / num_valid).mean())
        flipped = (neighbor_labels == mirrored[:, None]) & valid & sided[:, None]
        per_query = flipped.sum(axis=1) / num_valid
        out[f"mirror_confusion@{k}"] = float(per_query[sided].mean()) if sided.any() else float("nan")
    return out


def evaluate_features(
    table: TrajectoryTable,
    features: np.ndarray,
    queries: np.ndarray,
    groups: np.ndarray,
    config: EvalConfig,
    index_spec: IndexSpec = IndexSpec(kind="flat"),
) -> dict[str, float]:
    """Score retrieval by Euclidean kNN on any (N, F) features (embeddings or a baseline's); exact by
    default, so that the report measures the features, not an index's approximation."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    index = NeighborIndex(build_index(feats, index_spec), groups)
    t0 = time.perf_counter()
    _, ids = index.search(feats[queries], max(config.ks), groups[queries], queries)
    search_s = time.perf_counter() - t0
    report = score_neighbors(table, queries, ids, config.ks)
    report["search_ms_per_query"] = 1000.0 * search_s / len(queries)
    report["silhouette_direction"] = silhouette(feats, table.meta["direction"].to_numpy(dtype=str), config)
    report["dim"] = int(feats.shape[1])
    return report


def silhouette(features: np.ndarray, labels: np.ndarray, config: EvalConfig) -> float:
    """Silhouette of the direction classes (Euclidean) on a seeded sample; NaN with < 2 classes."""
    rng = np.random.default_rng(config.seed + 1)
    rows = rng.choice(len(labels), size=min(config.silhouette_sample, len(labels)), replace=False)
    if len(set(labels[rows].tolist())) < 2:
        return float("nan")
    return float(silhouette_score(features[rows], labels[rows], metric="euclidean"))


def random_neighbors(queries: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(Q, k) uniformly random rows outside each query's track."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(queries), k), dtype=np.int64)
    for i, q in enumerate(queries):
        picked: list[int] = []
        while len(picked) < k:
            cand = rng.integers(0, len(groups), size=2 * k)
            picked += [int(c) for c in cand if groups[c] != groups[q] and c not in picked][: k - len(picked)]
        out[i] = picked
    return out


def baseline_reports(
    table: TrajectoryTable, dim: int, config: EvalConfig, seed: int = 0, groups: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Oracle, random, PCA-D, FFT features and an untrained encoder (width 64, 1 layer) at D = ``dim``,
    on the same queries as ``sample_queries``; ``groups`` defaults to ``table.track_groups()``."""
    groups = table.track_groups() if groups is None else groups
    queries = sample_queries(len(table), config)
    flat = table.xy_agent.reshape(len(table), -1)
    reports = {"oracle_raw": evaluate_features(table, flat, queries, groups, config)}
    ids = random_neighbors(queries, groups, max(config.ks), config.seed)
    reports["random"] = {**score_neighbors(table, queries, ids, config.ks), "dim": 0}
    fit_rows = np.random.default_rng(seed).choice(len(flat), size=min(len(flat), 50_000), replace=False)
    pca = PCA(n_components=min(dim, flat.shape[1]), random_state=seed).fit(flat[fit_rows])
    reports[f"pca_{dim}"] = evaluate_features(table, pca.transform(flat), queries, groups, config)
    fft = fft_features(torch.from_numpy(np.array(table.xy_agent))).numpy()
    reports["fft_magnitudes"] = evaluate_features(table, fft, queries, groups, config)
    torch.manual_seed(seed)
    untrained = TrajectoryEncoder(EncoderConfig(embedding_dim=dim, d_model=64, num_layers=1, num_heads=4))
    from trajemb.embed import embed_windows

    reports[f"untrained_encoder_{dim}"] = evaluate_features(
        table, embed_windows(untrained, table.xy_agent), queries, groups, config
    )
    return reports


def report_table(reports: dict[str, dict[str, Any]], ks: tuple[int, ...] = (1, 5, 10)) -> str:
    """Markdown table of reports (one row each)."""
    cols = (
        [f"minADE@{k}" for k in ks]
        + [f"minFDE@{k}" for k in ks]
        + [f"precision@{ks[-1]}", f"mirror_confusion@{ks[-1]}", "silhouette_direction"]
    )
    lines = ["| model | D | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, r in reports.items():
        values = [f"{r[c]:.3f}" if isinstance(r.get(c), float) and np.isfinite(r[c]) else "-" for c in cols]
        lines.append(f"| {name} | {r.get('dim', '-')} | " + " | ".join(values) + " |")
    return "\n".join(lines)
