"""Retrieval that holds up: robustness curves and the trajectory-similarity literature's mean rank.

**Methods** turn windows into features from what was observed (``Observed``): PCA and the raw-space
oracle need complete windows, so they read ``fill_missing``'s (interpolated, extrapolated at constant
velocity); a learned encoder can instead mask the missing steps
(``TrajectoryEncoder.forward_inference(xy, valid)``), or read the completed window too
(``EvalConfig.encoder_missing``).

**Robustness curves** (``robustness_curves``): query and corpus windows perturbed alike
(``trajemb.data.perturb``: position noise, dropped steps, both; a shorter query against full windows), a
time offset (the query is the same track's window starting later, standing for the window it was cut
after). Neighbours are retrieved from perturbed features and scored on clean geometry against the
clean query (what a user wants back); hard-class precision@k counts neighbours of the query's own
class over queries of the hard classes (turns, U-turns, lane changes).

**Mean rank** (``mean_rank``; Chang et al., TrajCL, ICDE 2023, and the methods it compares with):
every window is split into two interleaved halves (even and odd steps); the even half of each query
searches the odd halves of the database, and the rank of its own odd half (1 = nearest) is averaged
over queries. Other windows of the query's track are left out of the database (they overlap it).
Halves keep the window's frame, as TrajCL's halves keep their coordinates.

Legend: N windows, Q queries, T steps, F features, K neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from trajemb.data.perturb import Observed, Perturbation, perturb
from trajemb.data.schema import STEP_S, DirectionClass
from trajemb.retrieval.metrics import min_ade_fde
from trajemb.retrieval.search import Groups, exact_search, rank_of

log = logging.getLogger(__name__)

#: Classes whose retrieval is hard (and rare): what a user most wants found.
HARD_CLASSES: tuple[str, ...] = (
    DirectionClass.LEFT.value,
    DirectionClass.RIGHT.value,
    DirectionClass.U_TURN.value,
    DirectionClass.LANE_CHANGE_LEFT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value,
)
#: Windows per encoder call.
BATCH = 1024

Featurizer = Callable[[Observed], np.ndarray]
MissingSteps = Literal["interpolate", "mask"]


def encoder_features(model: Any, device: str = "cpu", missing: MissingSteps = "interpolate") -> Featurizer:
    """Features of a ``TrajectoryEncoder``. ``missing``: ``interpolate`` reads the completed window, as PCA
    and the oracle do; ``mask`` hides missing steps from attention and pooling instead (measured worse
    for the compact encoders: docs/bundles.md, "Evaluation report")."""

    def features(obs: Observed) -> np.ndarray:
        model.eval()
        if missing == "interpolate":
            obs = Observed(obs.filled(), np.ones_like(obs.valid))
        xy = torch.as_tensor(obs.zeroed(), dtype=torch.float32)
        valid = torch.as_tensor(obs.valid)
        out = []
        with torch.inference_mode():
            for start in range(0, len(xy), BATCH):
                mask = valid[start : start + BATCH]
                z = model.forward_inference(
                    xy[start : start + BATCH].to(device), None if bool(mask.all()) else mask.to(device)
                )
                out.append(z.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.embedding_dim), np.float32)

    return features


def pca_features(pca: Any) -> Featurizer:
    """Features of a fitted ``sklearn.decomposition.PCA`` on flattened complete windows."""
    return lambda obs: np.asarray(pca.transform(obs.filled().reshape(len(obs.valid), -1)), dtype=np.float32)


def raw_features(obs: Observed) -> np.ndarray:
    """The oracle's features: the flattened complete window."""
    return np.asarray(obs.filled().reshape(len(obs.valid), -1), dtype=np.float32)


def retrieval_scores(
    xy_query: np.ndarray,
    xy_corpus: np.ndarray,
    labels_query: np.ndarray,
    labels_corpus: np.ndarray,
    neighbor_ids: np.ndarray,
    k_ade: int = 5,
    k_precision: int = 10,
) -> dict[str, float]:
    """minADE@k_ade on clean geometry, precision@k_precision and its hard-class mean of (Q, K) neighbours."""
    ids = neighbor_ids[:, :k_ade]
    valid = ids >= 0
    ade, _ = min_ade_fde(xy_query, xy_corpus[np.maximum(ids, 0)], valid)
    ids = neighbor_ids[:, :k_precision]
    valid = ids >= 0
    same = (labels_corpus[np.maximum(ids, 0)] == labels_query[:, None]) & valid
    precision = same.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    hard = np.isin(labels_query, HARD_CLASSES)
    ok = np.isfinite(ade)
    return {
        f"minADE@{k_ade}": float(ade[ok].mean()),
        f"precision@{k_precision}": float(precision.mean()),
        f"hard_precision@{k_precision}": float(precision[hard].mean()) if hard.any() else float("nan"),
        "queries": len(ids),
        "hard_queries": int(hard.sum()),
    }


@dataclass(frozen=True)
class RobustnessConfig:
    """Levels of each perturbation; the query and corpus sizes are ``EvalConfig``'s."""

    noise_m: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    drop_fraction: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    noise_drop: tuple[tuple[float, float], ...] = ((0.5, 0.3),)
    short_s: tuple[float, ...] = (3.0,)
    offset_s: tuple[float, ...] = (0.5, 1.0, 2.0)


def _conditions(config: RobustnessConfig) -> list[tuple[str, str, Perturbation, Perturbation]]:
    """(name, level, query perturbation, corpus perturbation) of every condition but the offsets."""
    out = [("clean", "0", Perturbation(), Perturbation())]
    for s in config.noise_m:
        p = Perturbation("noise", noise_m=s)
        out.append(("noise_m", f"{s:g}", p, p))
    for f in config.drop_fraction:
        p = Perturbation("drop", drop_fraction=f)
        out.append(("drop", f"{f:g}", p, p))
    for s, f in config.noise_drop:
        p = Perturbation("noise_drop", noise_m=s, drop_fraction=f)
        out.append(("noise_m+drop", f"{s:g}+{f:g}", p, p))
    for s in config.short_s:
        out.append(("short_query_s", f"{s:g}", Perturbation("short", keep_s=s), Perturbation()))
    return out


def offset_partners(
    track_groups: np.ndarray, start_step: np.ndarray, queries: np.ndarray, offset_steps: int
) -> np.ndarray:
    """(Q,) row of the same track's window starting ``offset_steps`` after each query's, or -1."""
    key = {
        (int(g), int(s)): i
        for i, (g, s) in enumerate(zip(track_groups.tolist(), start_step.tolist(), strict=True))
    }
    return np.asarray(
        [key.get((int(track_groups[q]), int(start_step[q]) + offset_steps), -1) for q in queries.tolist()],
        dtype=np.int64,
    )


def robustness_curves(
    methods: dict[str, Featurizer],
    xy: np.ndarray,
    labels: np.ndarray,
    track_groups: np.ndarray,
    start_step: np.ndarray,
    queries: np.ndarray,
    seed: int,
    config: RobustnessConfig = RobustnessConfig(),
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{method: {perturbation: {level: scores}}}`` (scores of ``retrieval_scores``).

    Args:
        methods: name -> features of observed windows.
        xy: (N, T, 2) clean corpus windows (agent frame); labels: (N,) class of each.
        track_groups: (N,) track of each window; start_step: (N,) its first step (for the offsets).
        queries: (Q,) corpus rows used as queries.
        seed: perturbations draw from ``seed`` (the same draws for every method).
    """
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {name: {} for name in methods}
    xy = np.asarray(xy, dtype=np.float64)
    tracks = Groups.of(track_groups)

    def neighbors(corpus_f: np.ndarray, query_f: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
        """(Q, 10) rows nearest to each query, exact, the query's track left out."""
        return exact_search(corpus_f, query_f, 10, exclude=tracks, query_groups=tracks.ids[query_rows])[1]

    for i, (name, level, p_query, p_corpus) in enumerate(_conditions(config)):
        rng = np.random.default_rng([seed, i])
        corpus_obs = perturb(xy, p_corpus, rng)
        # Alike perturbations: each query is its own perturbed corpus window (its track is left out).
        query_obs = None if p_query == p_corpus else perturb(xy[queries], p_query, rng)
        for method, featurize in methods.items():
            corpus_f = featurize(corpus_obs)
            query_f = corpus_f[queries] if query_obs is None else featurize(query_obs)
            ids = neighbors(corpus_f, query_f, queries)
            out[method].setdefault(name, {})[level] = retrieval_scores(
                xy[queries], xy, labels[queries], labels, ids
            )
        log.info("robustness: %s %s done", name, level)
    clean = Observed(xy, np.ones(xy.shape[:2], dtype=bool))
    steps_per_s = round(1.0 / STEP_S)
    for seconds in config.offset_s:
        partner = offset_partners(track_groups, start_step, queries, round(seconds * steps_per_s))
        has = partner >= 0
        if not has.any():
            continue
        for method, featurize in methods.items():
            corpus_f = featurize(clean)
            ids = neighbors(corpus_f, corpus_f[partner[has]], queries[has])
            scores = retrieval_scores(xy[queries[has]], xy, labels[queries[has]], labels, ids)
            out[method].setdefault("offset_s", {})[f"{seconds:g}"] = scores
    return out


def halves(xy: np.ndarray) -> tuple[Observed, Observed]:
    """The even-step and odd-step halves of (N, T, 2) windows, in the windows' own frame."""
    xy = np.asarray(xy, dtype=np.float64)
    even = np.zeros(xy.shape[:2], dtype=bool)
    even[:, 0::2] = True
    return (
        Observed(np.where(even[..., None], xy, np.nan), even),
        Observed(np.where(~even[..., None], xy, np.nan), ~even),
    )


def mean_rank(
    featurize: Featurizer, xy: np.ndarray, track_groups: np.ndarray, queries: np.ndarray, chunk: int = 256
) -> dict[str, float]:
    """Mean rank of each query's twin half among the database's halves (module docstring).

    Args:
        featurize: a method's features.
        xy: (N, T, 2) database windows; queries: (Q,) rows of the database used as queries.
        track_groups: (N,) track of each window.

    Returns:
        ``mean_rank`` (1 = always first), ``top1`` (share ranked first), ``queries``, ``database``.
    """
    even, odd = halves(xy)
    db = np.asarray(featurize(odd), dtype=np.float32)
    qf = np.asarray(featurize(Observed(even.xy[queries], even.valid[queries])), dtype=np.float32)
    tracks = Groups.of(track_groups)
    ranks = rank_of(db, qf, queries, tracks, tracks.ids[queries], chunk)
    return {
        "mean_rank": float(ranks.mean()),
        "top1": float((ranks == 1).mean()),
        "queries": len(queries),
        "database": len(xy),
    }
