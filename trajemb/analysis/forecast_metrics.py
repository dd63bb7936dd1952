"""Scores of multi-modal forecasts with av2's own metric functions, and the probabilities of retrieved
futures.

Per query, with K forecasts (fewer where a method found fewer) and the true future, av2's
``compute_ade``, ``compute_fde``, ``compute_is_missed_prediction`` and ``compute_brier_fde``
(``av2.datasets.motion_forecasting.eval.metrics``) give per-forecast values; as on the AV2 leaderboard
the best of the K is the forecast with the smallest final displacement: minFDE is its FDE, minADE its
ADE, the miss rate MR the share of queries whose best forecast ends more than 2 m off, and
brier-minFDE its FDE plus (1 - p)^2 with p its probability. A method with one forecast (constant
velocity) gives it probability 1, so its brier-minFDE is its minFDE.

Probabilities of retrieved futures come from the search distances: a softmax of -d / tau over the
query's K neighbours. tau (one per method and bank: distances are in metres for raw kNN and in
embedding units for a learned model) minimises the mean Brier term (1 - p_best)^2 over a log-spaced
grid (``TEMPERATURE_GRID``, relative to the median gap between the nearest and the K-th distance), on
queries other than the ones it is applied to (``trajemb.analysis.forecast``).

Legend: Q queries, K forecasts per query, F future steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from av2.datasets.motion_forecasting.eval.metrics import (
    compute_ade,
    compute_brier_fde,
    compute_fde,
    compute_is_missed_prediction,
)

from trajemb.core.errors import ConfigError
from trajemb.data.schema import BoolArray, FloatArray, IntArray

#: av2's miss threshold (``compute_is_missed_prediction``'s default).
MISS_THRESHOLD_M = 2.0
#: Candidate temperatures, as multiples of the median gap between the nearest and the K-th distance.
TEMPERATURE_GRID: FloatArray = np.geomspace(1.0 / 256, 256.0, 65)
#: Score names of a method's summary at K forecasts (``score_names``).
SCORE_KEYS = ("minADE", "minFDE", "MR", "brier_minFDE")


def score_names(k: int) -> tuple[str, str, str, str]:
    """The summary keys at ``k`` forecasts: ``minADE6``, ``minFDE6``, ``MR6``, ``brier_minFDE6`` for 6."""
    return (f"minADE{k}", f"minFDE{k}", f"MR{k}", f"brier_minFDE{k}")


@dataclass(frozen=True)
class QueryScores:
    """Per-query scores of one method (NaN, False and -1 where a query has no forecast at all)."""

    min_ade_m: FloatArray  # (Q,) ADE of the best forecast
    min_fde_m: FloatArray  # (Q,) FDE of the best forecast
    missed: BoolArray  # (Q,) best forecast's final displacement above the miss threshold
    brier_min_fde_m: FloatArray  # (Q,) FDE + (1 - p)^2 of the best forecast
    best: IntArray  # (Q,) index of the best forecast among the K
    mode_fde_m: FloatArray  # (Q, K) FDE of every forecast, inf where missing

    @property
    def scored(self) -> BoolArray:
        return np.asarray(self.best >= 0)

    def summary(self, k: int) -> dict[str, float | int]:
        """``{minADE<k>, minFDE<k>, MR<k>, brier_minFDE<k>, queries}`` over the scored queries."""
        ok = self.scored
        names = score_names(k)
        values = (self.min_ade_m, self.min_fde_m, self.missed.astype(np.float64), self.brier_min_fde_m)
        out: dict[str, float | int] = {
            name: float(v[ok].mean()) if ok.any() else float("nan")
            for name, v in zip(names, values, strict=True)
        }
        out["queries"] = int(ok.sum())
        return out


def score_forecasts(
    forecasts_xy: np.ndarray,
    truth_xy: np.ndarray,
    probabilities: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    miss_threshold_m: float = MISS_THRESHOLD_M,
) -> QueryScores:
    """Score (Q, K, F, 2) forecasts against (Q, F, 2) true futures (same frame) with av2's functions.

    Args:
        probabilities: (Q, K), renormalised over each query's valid forecasts; None: uniform.
        valid: (Q, K) True where a forecast exists; None: all (missing forecasts may also be NaN).
    """
    f = np.asarray(forecasts_xy, dtype=np.float64)
    gt = np.asarray(truth_xy, dtype=np.float64)
    if f.ndim != 4 or gt.ndim != 3 or f.shape[0] != gt.shape[0] or f.shape[2:] != gt.shape[1:]:
        raise ConfigError(f"forecasts {f.shape} and truths {gt.shape} do not match (Q, K, F, 2) / (Q, F, 2)")
    q, k = f.shape[:2]
    ok: BoolArray = np.asarray(np.isfinite(f).all(axis=(2, 3)))
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    p = np.ones((q, k)) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
    ade = np.full(q, np.nan)
    fde = np.full(q, np.nan)
    brier = np.full(q, np.nan)
    missed = np.zeros(q, dtype=bool)
    best = np.full(q, -1, dtype=np.int64)
    mode_fde = np.full((q, k), np.inf)
    for i in range(q):
        modes = np.flatnonzero(ok[i])
        if modes.size == 0:
            continue
        fi = f[i, modes]
        pi = np.clip(p[i, modes], 0.0, None)
        pi = pi / pi.sum() if pi.sum() > 0 else np.full(modes.size, 1.0 / modes.size)
        pi = np.minimum(pi, 1.0)  # av2 refuses 1 + 1e-16
        fde_i = compute_fde(fi, gt[i])
        j = int(np.argmin(fde_i))
        mode_fde[i, modes] = fde_i
        best[i] = int(modes[j])
        fde[i] = float(fde_i[j])
        ade[i] = float(compute_ade(fi[j : j + 1], gt[i])[0])
        missed[i] = bool(compute_is_missed_prediction(fi[j : j + 1], gt[i], miss_threshold_m)[0])
        brier[i] = float(compute_brier_fde(fi[j : j + 1], gt[i], pi[j : j + 1])[0])
    return QueryScores(ade, fde, missed, brier, best, mode_fde)


def softmax_probabilities(distances: np.ndarray, temperature: float) -> FloatArray:
    """(Q, K) distances (inf where missing) -> (Q, K) softmax of -d / temperature (0 where missing)."""
    d = np.asarray(distances, dtype=np.float64)
    finite = np.isfinite(d)
    nearest = np.where(finite, d, np.inf).min(axis=1, keepdims=True)
    z = np.where(finite, -(d - np.where(np.isfinite(nearest), nearest, 0.0)) / temperature, -np.inf)
    w = np.exp(z)
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


def fit_temperature(distances: np.ndarray, mode_fde_m: np.ndarray) -> float:
    """The temperature of ``TEMPERATURE_GRID`` minimising the mean Brier term (1 - p_best)^2, where the
    best forecast of each query is the one with the smallest final displacement.

    Args:
        distances: (Q, K) search distances, inf where missing.
        mode_fde_m: (Q, K) FDE of each forecast, inf where missing.
    """
    d = np.asarray(distances, dtype=np.float64)
    fde = np.asarray(mode_fde_m, dtype=np.float64)
    has = np.isfinite(fde).any(axis=1) & np.isfinite(d).any(axis=1)
    if not has.any():
        return 1.0
    d, fde = d[has], fde[has]
    best = np.argmin(fde, axis=1)
    finite = np.where(np.isfinite(d), d, np.nan)
    gap = np.nanmax(finite, axis=1) - np.nanmin(finite, axis=1)
    scale = float(np.median(gap[gap > 0])) if (gap > 0).any() else 1.0
    rows = np.arange(len(d))
    losses = [
        float(np.mean((1.0 - softmax_probabilities(d, scale * t)[rows, best]) ** 2)) for t in TEMPERATURE_GRID
    ]
    return float(scale * TEMPERATURE_GRID[int(np.argmin(losses))])
