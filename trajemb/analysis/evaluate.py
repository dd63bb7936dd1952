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

Beyond the averages over all queries (dominated by easy straight windows), each report holds:

* ``per_class[class]``: over the queries of one class, ``queries``, ``minADE@k``, ``minFDE@k``,
  ``precision@k`` (share of the k neighbours of the query's class) and ``recall@k`` (share of queries
  with at least one neighbour of their class among k: Recall@K of deep metric learning); ``hard``: the
  same over the queries of the hard classes (``trajemb.retrieval.robustness.HARD_CLASSES``). Classes are the
  generator's true manoeuvres where every window has one (``label``: ``true_manoeuvre``), else the
  heuristic direction labels (``direction``).
* ``silhouette_label``: silhouette of those classes.
* ``neighbors``: how neighbours are chosen (``EvalConfig.one_per_track``: only the nearest window of a
  track counts; ``exclude_scenario``: none from the query's scenario).
* ``mean_rank`` and ``robustness`` where ``EvalConfig`` asks for them (``trajemb.retrieval.robustness``).
* ``rare_enrichment`` (issue 17), where every window has a true manoeuvre (synthetic data): how well
  uniqueness in these features (distance to the 10th nearest other track, ``trajemb.analysis.uniqueness``)
  finds the classes the generator makes least often: their share among the 1 % most unique windows
  over their share in all, on at most ``EvalConfig.rare_corpus`` seeded windows of the corpus.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from trajemb.analysis.uniqueness import rare_enrichment
from trajemb.core.errors import ConfigError
from trajemb.core.fields import K_MAX, check_fields, param
from trajemb.core.validate import MAX_SEED, check_int
from trajemb.data.schema import UNKNOWN_MANOEUVRE, DirectionClass
from trajemb.data.store import TrajectoryTable
from trajemb.retrieval.index import IndexSpec, build_index
from trajemb.retrieval.metrics import min_ade_fde
from trajemb.retrieval.robustness import (
    HARD_CLASSES,
    Featurizer,
    MissingSteps,
    encoder_features,
    mean_rank,
    pca_features,
    raw_features,
    robustness_curves,
)
from trajemb.retrieval.search import Groups, SearchIndex, search
from trajemb.training.model import EncoderConfig, TrajectoryEncoder
from trajemb.training.similarity import fft_features

#: Each sided manoeuvre and its mirror image.
MIRRORED_DIRECTION: dict[str, str] = {
    DirectionClass.LEFT.value: DirectionClass.RIGHT.value,
    DirectionClass.RIGHT.value: DirectionClass.LEFT.value,
    DirectionClass.LANE_CHANGE_LEFT.value: DirectionClass.LANE_CHANGE_RIGHT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value: DirectionClass.LANE_CHANGE_LEFT.value,
}


#: Smallest database the mean rank and the robustness curves may be asked to use (a smaller table is
#: used whole).
MIN_SCORED_CORPUS = 100


@dataclass(frozen=True)
class EvalConfig:
    """``max_corpus``: above this many windows, models and baselines are all evaluated on the same
    seeded random subset of this size (the oracle and the untrained encoder cost O(N) per method)."""

    num_queries: int = param(2000, help="evaluation queries", low=1, high=10_000_000)
    ks: tuple[int, ...] = param((1, 5, 10), help="k of the precision@k and minADE@k columns")
    silhouette_sample: int = param(5000, help="windows the silhouette is computed on", low=2, high=10_000_000)
    seed: int = param(0, help="seed of the sampled queries and corpus", low=0, high=MAX_SEED)
    max_corpus: int = param(
        200_000, help="evaluate among at most this many windows (a seeded sample above)", low=2
    )
    one_per_track: bool = param(False, help="only the nearest window of each track counts as a neighbour")
    exclude_scenario: bool = param(False, help="no neighbours from the query's own scenario")
    mean_rank: bool = param(True, help="the mean rank of twin halves")
    mean_rank_queries: int = param(1000, help="queries of the mean rank", low=1, high=10_000_000)
    # Scores among a handful of windows say nothing (every method ranks first): at least 100.
    mean_rank_corpus: int = param(
        20_000, help="database size of the mean rank (TrajCL: 100000)", low=MIN_SCORED_CORPUS
    )
    robustness: bool = param(
        False, help="robustness curves (noise, dropped steps, short query, offset; minutes on a CPU)"
    )
    robustness_queries: int = param(1000, help="queries of the robustness curves", low=1, high=10_000_000)
    robustness_corpus: int = param(20_000, help="database of the robustness curves", low=MIN_SCORED_CORPUS)
    # How encoders read windows with missing steps in the robustness curves (``trajemb.retrieval.robustness``).
    encoder_missing: MissingSteps = param(
        "interpolate",
        help="robustness: encoders read windows with missing steps completed (as PCA) or masked",
    )
    rare_corpus: int = param(
        50_000, help="windows the rare-class enrichment is measured on", low=MIN_SCORED_CORPUS
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.ks:
            raise ConfigError("evaluation needs at least one k", fields=("ks",))
        for k in self.ks:
            check_int("ks", k, 1, K_MAX)


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


def evaluation_labels(table: TrajectoryTable) -> tuple[np.ndarray, str]:
    """(N,) classes for per-class scores and the name of their column: the generator's true
    manoeuvres where every window has one, else the heuristic direction labels."""
    if "true_manoeuvre" in table.meta:
        true = table.meta["true_manoeuvre"].to_numpy(dtype=str)
        if len(true) and not (true == UNKNOWN_MANOEUVRE).any():
            return true, "true_manoeuvre"
    return table.meta["direction"].to_numpy(dtype=str), "direction"


def scenario_groups(table: TrajectoryTable, groups: np.ndarray) -> np.ndarray:
    """(N,) scenario of each window (a ``scenario_group`` column where given, else from the ids)."""
    meta = table.meta
    if "scenario_group" in meta:
        return np.asarray(meta["scenario_group"].to_numpy(dtype=np.int64))
    if {"source", "scenario_id"} <= set(meta.columns):
        keys = (meta["source"] + "/" + meta["scenario_id"]).to_numpy(dtype=str)
        return np.unique(keys, return_inverse=True)[1].astype(np.int64)
    return np.asarray(groups, dtype=np.int64)  # no scenario ids: each track stands alone


def neighbor_rule(
    table: TrajectoryTable, groups: np.ndarray, config: EvalConfig
) -> tuple[Groups, Groups | None]:
    """The evaluation's neighbour rule as ``trajemb.retrieval.search`` groups: rows excluded with a query (its
    track, or its scenario with ``exclude_scenario``) and, with ``one_per_track``, tracks of which only
    the nearest window counts."""
    tracks = Groups.of(groups)
    exclude = Groups.of(scenario_groups(table, groups)) if config.exclude_scenario else tracks
    return exclude, tracks if config.one_per_track else None


def neighbors_for_scoring(
    table: TrajectoryTable,
    features: np.ndarray,
    queries: np.ndarray,
    groups: np.ndarray,
    config: EvalConfig,
    index: SearchIndex | None = None,
) -> np.ndarray:
    """(Q, K) neighbours of the ``queries`` rows by ``config``'s rule (``neighbor_rule``), through
    ``index`` over the (N, F) ``features`` (exact flat when None)."""
    exclude, distinct = neighbor_rule(table, groups, config)
    feats = np.ascontiguousarray(features, dtype=np.float32)
    return search(
        build_index(feats, IndexSpec(kind="flat")) if index is None else index,
        feats[queries],
        max(config.ks),
        query_rows=queries,
        exclude=exclude,
        query_groups=exclude.ids[queries],
        distinct=distinct,
    )[1]


def per_class_scores(
    xy: np.ndarray, labels: np.ndarray, queries: np.ndarray, neighbor_ids: np.ndarray, ks: tuple[int, ...]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Scores over the queries of each class, and over those of the hard classes (module docstring)."""
    classes: dict[str, dict[str, float]] = {}
    query_labels = labels[queries]
    scores: dict[str, np.ndarray] = {}
    for k in ks:
        ids = neighbor_ids[:, :k]
        valid = ids >= 0
        ade, fde = min_ade_fde(xy[queries], xy[np.maximum(ids, 0)], valid)
        same = (labels[np.maximum(ids, 0)] == query_labels[:, None]) & valid
        scores[f"minADE@{k}"], scores[f"minFDE@{k}"] = ade, fde
        scores[f"precision@{k}"] = same.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        scores[f"recall@{k}"] = same.any(axis=1).astype(np.float64)

    def summary(mask: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {"queries": int(mask.sum())}
        for name, values in scores.items():
            v = values[mask]
            v = v[np.isfinite(v)]
            out[name] = float(v.mean()) if v.size else float("nan")
        return out

    for c in sorted(set(query_labels.tolist())):
        classes[c] = summary(query_labels == c)
    return classes, summary(np.isin(query_labels, HARD_CLASSES))


def evaluate_features(
    table: TrajectoryTable,
    features: np.ndarray,
    queries: np.ndarray,
    groups: np.ndarray,
    config: EvalConfig,
    index_spec: IndexSpec = IndexSpec(kind="flat"),
) -> dict[str, Any]:
    """Score retrieval by Euclidean kNN on any (N, F) features (embeddings or a baseline's); exact by
    default, so that the report measures the features, not an index's approximation."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    index = build_index(feats, index_spec)
    t0 = time.perf_counter()  # the search whose neighbours are scored is the one timed
    ids = neighbors_for_scoring(table, feats, queries, groups, config, index)
    search_s = time.perf_counter() - t0
    report: dict[str, Any] = dict(score_neighbors(table, queries, ids, config.ks))
    report["search_ms_per_query"] = 1000.0 * search_s / len(queries)
    report["silhouette_direction"] = silhouette(feats, table.meta["direction"].to_numpy(dtype=str), config)
    labels, label_name = evaluation_labels(table)
    report["label"] = label_name
    report["silhouette_label"] = silhouette(feats, labels, config)
    report["per_class"], report["hard"] = per_class_scores(table.xy_agent, labels, queries, ids, config.ks)
    report["neighbors"] = {"one_per_track": config.one_per_track, "exclude_scenario": config.exclude_scenario}
    report["dim"] = int(feats.shape[1])
    if label_name == "true_manoeuvre":
        rows = _subset(len(feats), config.rare_corpus, config.seed + 8)
        report["rare_enrichment"] = rare_enrichment(feats[rows], labels[rows], np.asarray(groups)[rows])
    return report


def _subset(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``size`` of ``n`` rows (all of them when fewer)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def featurizer_reports(
    table: TrajectoryTable, methods: dict[str, Featurizer], groups: np.ndarray, config: EvalConfig
) -> dict[str, dict[str, Any]]:
    """``mean_rank`` and ``robustness`` of each method, as ``config`` asks (``trajemb.retrieval.robustness``):
    ``{method: {"mean_rank": {...}, "robustness": {...}}}``."""
    out: dict[str, dict[str, Any]] = {name: {} for name in methods}
    groups = np.asarray(groups, dtype=np.int64)
    if config.mean_rank:
        db = _subset(len(table), config.mean_rank_corpus, config.seed + 4)
        q = _subset(len(db), config.mean_rank_queries, config.seed + 5)
        for name, featurize in methods.items():
            out[name]["mean_rank"] = mean_rank(featurize, table.xy_agent[db], groups[db], q)
    if config.robustness:
        corpus = _subset(len(table), config.robustness_corpus, config.seed + 6)
        labels, label_name = evaluation_labels(table)
        q = _subset(len(corpus), config.robustness_queries, config.seed + 7)
        starts = (
            table.meta["start_timestep"].to_numpy(dtype=np.int64)[corpus]
            if "start_timestep" in table.meta
            else np.zeros(len(corpus), dtype=np.int64)
        )
        curves = robustness_curves(
            methods, table.xy_agent[corpus], labels[corpus], groups[corpus], starts, q, config.seed
        )
        for name in methods:
            out[name]["robustness"] = {**curves[name], "label": label_name, "corpus": len(corpus)}
    return out


def encoder_reports(
    table: TrajectoryTable, model: TrajectoryEncoder, groups: np.ndarray, config: EvalConfig
) -> dict[str, Any]:
    """``mean_rank`` and ``robustness`` of a learned encoder (empty when ``config`` asks for neither)."""
    if not (config.mean_rank or config.robustness):
        return {}
    featurize = encoder_features(model, missing=config.encoder_missing)
    report = featurizer_reports(table, {"model": featurize}, groups, config)["model"]
    if "robustness" in report:
        report["robustness"]["encoder_missing"] = config.encoder_missing
    return report


def silhouette(features: np.ndarray, labels: np.ndarray, config: EvalConfig) -> float:
    """Silhouette of the direction classes (Euclidean) on a seeded sample; NaN with < 2 classes."""
    rng = np.random.default_rng(config.seed + 1)
    rows = rng.choice(len(labels), size=min(config.silhouette_sample, len(labels)), replace=False)
    if not 2 <= len(set(labels[rows].tolist())) < len(rows):  # silhouette needs 2 to n - 1 classes
        return float("nan")
    return float(silhouette_score(features[rows], labels[rows], metric="euclidean"))


def random_neighbors(queries: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(Q, k) uniformly random distinct rows outside each query's track; -1 ("no neighbour") where
    fewer than k rows lie outside it."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        outside = len(groups) - int(np.count_nonzero(groups == groups[q]))
        if outside <= 4 * k:  # few candidates: draw from the explicit list
            rows = np.flatnonzero(groups != groups[q])
            picked = rng.choice(rows, size=min(k, len(rows)), replace=False).tolist()
        else:  # rejection sampling: each draw lands outside the track with probability > 4k / N
            picked = []
            while len(picked) < k:
                cand = rng.integers(0, len(groups), size=2 * k)
                picked += [int(c) for c in cand if groups[c] != groups[q] and c not in picked][
                    : k - len(picked)
                ]
        out[i, : len(picked)] = picked
    return out


def _fit_pca(flat: np.ndarray, dim: int, seed: int) -> PCA:
    """PCA to ``dim`` components fitted on a seeded sample of at most 50,000 of the (N, T * 2) rows."""
    fit_rows = np.random.default_rng(seed).choice(len(flat), size=min(len(flat), 50_000), replace=False)
    # PCA gives at most as many components as it has windows (a tiny table): its report says its D.
    return PCA(n_components=min(dim, flat.shape[1], len(fit_rows)), random_state=seed).fit(flat[fit_rows])


def baseline_robustness(
    table: TrajectoryTable,
    dims: int | Iterable[int],
    config: EvalConfig,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """The robustness curves of the oracle and of PCA at each D of ``dims`` alone (what
    ``baseline_reports`` adds to them when ``config.robustness`` is on, the same numbers):
    ``{"oracle_raw": {"robustness": ...}, "pca_<D>": {...}}``."""
    groups = table.track_groups() if groups is None else groups
    flat = table.xy_agent.reshape(len(table), -1)
    featurizers: dict[str, Featurizer] = {"oracle_raw": raw_features}
    for dim in sorted({dims} if isinstance(dims, int) else set(dims)):
        featurizers[f"pca_{dim}"] = pca_features(_fit_pca(flat, dim, seed))
    return featurizer_reports(table, featurizers, groups, replace(config, mean_rank=False, robustness=True))


def baseline_reports(
    table: TrajectoryTable,
    dims: int | Iterable[int],
    config: EvalConfig,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """The baselines on the same queries as ``sample_queries``: those that do not depend on D once
    (``oracle_raw``, ``random``, ``fft_magnitudes``), PCA and an untrained encoder (width 64, 1 layer)
    at each D of ``dims`` (``pca_<D>``, ``untrained_encoder_<D>``); ``groups`` defaults to
    ``table.track_groups()``."""
    from trajemb.training.embed import embed_windows

    groups = table.track_groups() if groups is None else groups
    queries = sample_queries(len(table), config)
    flat = table.xy_agent.reshape(len(table), -1)
    reports: dict[str, dict[str, Any]] = {
        "oracle_raw": evaluate_features(table, flat, queries, groups, config)
    }
    ids = random_neighbors(queries, groups, max(config.ks), config.seed)
    labels, label_name = evaluation_labels(table)
    per_class, hard = per_class_scores(table.xy_agent, labels, queries, ids, config.ks)
    reports["random"] = {
        **score_neighbors(table, queries, ids, config.ks),
        "dim": 0,
        "label": label_name,
        "per_class": per_class,
        "hard": hard,
    }
    fft = fft_features(torch.from_numpy(np.array(table.xy_agent))).numpy()
    reports["fft_magnitudes"] = evaluate_features(table, fft, queries, groups, config)
    featurizers: dict[str, Featurizer] = {"oracle_raw": raw_features}
    for dim in sorted({dims} if isinstance(dims, int) else set(dims)):
        pca = _fit_pca(flat, dim, seed)
        reports[f"pca_{dim}"] = evaluate_features(table, pca.transform(flat), queries, groups, config)
        featurizers[f"pca_{dim}"] = pca_features(pca)
        torch.manual_seed(seed)
        untrained = TrajectoryEncoder(EncoderConfig(embedding_dim=dim, d_model=64, num_layers=1, num_heads=4))
        reports[f"untrained_encoder_{dim}"] = evaluate_features(
            table, embed_windows(untrained, table.xy_agent), queries, groups, config
        )
    for name, extra in featurizer_reports(table, featurizers, groups, config).items():
        reports[name].update(extra)
    return reports
