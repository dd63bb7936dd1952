"""Forecasting by retrieval: the futures of the nearest histories in a bank, beside physical baselines.

A T-step window is an H-step history and a (T - H)-step future. A **bank** is a bundle
(``trajemb.analysis.bundle``) whose windows, split the same way, are (history, future) pairs: for a query's
history, the futures of the K nearest bank histories are a motion prior (kNN priors are a classic
Argoverse baseline; "Recall to Predict", the sequel of arXiv 2506.02571, builds a forecaster on such a
bank). Methods (``ForecastBank.methods``), side by side on the same queries:

* ``retrieval_<model>``: nearest histories by a learned history embedding, a model of the bank whose
  input is the history in its last-state frame (``trajemb.data.history``; the bundle holds the bank's
  history embeddings and their index, docs/bundles.md): its index gives a shortlist of ``rerank``
  (48) histories, of which the K nearest in raw space are kept (``rerank`` 0: its K nearest as they are);
* ``knn_raw``: exact nearest histories in raw space, the flattened last-state-frame histories (metres);
* ``constant_velocity``, ``constant_acceleration``: ``trajemb.analysis.motion_models``, one forecast each.

Rules: a query's own scenario is never in the bank (bank windows of the same source and scenario id
are excluded through ``trajemb.retrieval.search``'s exclusion groups), and only the nearest window of each bank
track counts (``one_per_track``: a track's windows overlap and would repeat one future K times).

**Alignment** of a retrieved future to the query (``ForecastConfig.alignment``):

* ``last_state`` (default): the bank future, in the frame of its history's last state, as its
  deviation from that window's own constant-velocity extrapolation, added to the query's
  constant-velocity extrapolation in the query's last-state frame. The neighbour brings its manoeuvre
  (braking, turning, a lane change), the query its own position, heading and speed.
* ``last_pose``: the bank future in the frame of its history's last position and heading, placed at
  the query's last position and heading.
* ``agent_frame``: the bank future as it is in its window's agent frame, which query and bank share at
  step 0 (the frame of the first history step).

On the real AV2 fixtures with their own windows as a bank (leave one scenario out) raw kNN gives
minFDE6 1.51 m with ``last_state``, 1.89 m with ``last_pose`` and 2.74 m with ``agent_frame`` (constant
velocity: 2.79 m): a history's first step says little about where its last state is, and the query's
own speed is the largest part of its next 3 s. On synthetic held-out windows ``last_pose`` is ahead
(1.72 against 2.07 m): the generator sets speeds by road geometry (curves, stop lines) more than real
traffic does (docs/retrieval-quality.md, "Forecasting by retrieval").

**Probabilities**: a softmax of -d / tau over the K search distances (``trajemb.analysis.forecast_metrics``). On
a set of queries, tau is fitted per method by 2-fold cross-fitting over the queries' scenarios (the
queries of one half of the scenarios get the tau fitted on the other half's), so no query's
probabilities are fitted on its own future; a single query (the explorer) uses the tau stored in the
bank's evaluation report (``forecast_report``), else one fitted on bank windows as queries.

Legend: N bank windows, Q queries, T steps, H history steps, F = T - H future steps, K forecasts,
D embedding dim.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_STEP_HZ
from tqdm import tqdm

from trajemb.analysis.forecast_metrics import (
    MISS_THRESHOLD_M,
    QueryScores,
    fit_temperature,
    score_forecasts,
    softmax_probabilities,
)
from trajemb.analysis.motion_models import constant_acceleration, constant_velocity, future_times_s
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.fields import K_BOUNDS, K_MAX, K_MODES_DEFAULT
from trajemb.core.validate import check_float, check_int, check_seed
from trajemb.data.frames import agent_to_city
from trajemb.data.history import DEFAULT_HISTORY_STEPS, check_history_steps, history_input, last_state, rotate
from trajemb.data.schema import MAX_WINDOW_STEPS, FloatArray, IntArray
from trajemb.retrieval.search import Groups, SearchIndex, exact_index, parallel_exact, rerank, search

if TYPE_CHECKING:
    from trajemb.analysis.bundle import Bundle
    from trajemb.data.store import TrajectoryTable
    from trajemb.training.embed import Embedder
    from trajemb.training.model import TrajectoryEncoder

log = logging.getLogger(__name__)

Alignment = Literal["last_state", "last_pose", "agent_frame"]
ALIGNMENTS: tuple[str, ...] = ("last_state", "last_pose", "agent_frame")
KNN_RAW = "knn_raw"
CONSTANT_VELOCITY = "constant_velocity"
CONSTANT_ACCELERATION = "constant_acceleration"
RETRIEVAL_PREFIX = "retrieval_"
PHYSICAL_METHODS = (CONSTANT_VELOCITY, CONSTANT_ACCELERATION)
#: Largest K a forecast accepts (the bound of every k, ``trajemb.core.fields``).
MAX_K = K_MAX
#: Bank windows used as queries to fit the temperatures a single query's probabilities use, when the
#: bank's report holds none.
CALIBRATION_QUERIES = 1000
#: Shortlist of a learned history embedding re-ranked by raw history distance (``ForecastConfig.rerank``):
#: on the synthetic bank, 48 brought the learned models within 2 % of raw kNN on synthetic and 2 to 3 %
#: on real queries (without: 4 and 10 %); 96 gained under 0.5 % more.
DEFAULT_RERANK = 48
MAX_RERANK = 10_000
#: Queries forecast at once (bounds the (Q, K, F, 2) futures held in memory).
CHUNK_QUERIES = 4096


@dataclass(frozen=True)
class ForecastConfig:
    """How queries are forecast (module docstring): history length, K, the alignment of retrieved
    futures, one window per bank track, the miss threshold (av2's 2 m) and the seed of sampled queries."""

    history_steps: int = DEFAULT_HISTORY_STEPS
    k: int = K_MODES_DEFAULT
    alignment: Alignment = "last_state"
    one_per_track: bool = True
    # Learned retrieval: the embedding's ``rerank`` nearest histories (a shortlist from its index) are
    # re-ranked by raw history distance and the K nearest kept; 0: the embedding's K nearest as they are.
    rerank: int = DEFAULT_RERANK
    miss_threshold_m: float = MISS_THRESHOLD_M
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("history_steps", self.history_steps, 2, MAX_WINDOW_STEPS - 1)
        check_int("k", self.k, int(K_BOUNDS.low or 1), K_MAX)
        check_int("rerank", self.rerank, 0, MAX_RERANK)
        if 0 < self.rerank < self.k:
            raise ConfigError(
                f"rerank {self.rerank} must be 0 (off) or at least k {self.k}", fields=("rerank", "k")
            )
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(
                f"alignment must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r:.40}",
                fields=("alignment",),
            )
        if not isinstance(self.one_per_track, bool):
            raise ConfigError(f"one_per_track must be true or false, got {self.one_per_track!r:.40}")
        check_float("miss threshold", self.miss_threshold_m, 0.0, 1000.0, low_open=True)
        check_seed("seed", self.seed)


@dataclass(frozen=True)
class MethodForecasts:
    """K forecasts of Q queries by one method, in the queries' agent frames."""

    xy_agent: FloatArray  # (Q, K, F, 2), NaN where missing
    distance: FloatArray  # (Q, K) search distances, inf where missing (physical models: 0, then inf)
    rows: IntArray  # (Q, K) bank rows the futures came from, -1 where none (physical models: -1)
    probability: FloatArray  # (Q, K), 0 where missing

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(np.isfinite(self.xy_agent).all(axis=(2, 3)))


def is_retrieval(method: str) -> bool:
    return method == KNN_RAW or method.startswith(RETRIEVAL_PREFIX)


def step_hz(window_config: object, where: object) -> float:
    """The step rate a table or bundle's window config records (AV2's 10 Hz where it records none);
    ``where``: the file or folder it was read from, for the message."""
    value = window_config.get("step_hz") if isinstance(window_config, dict) else None
    if value is None:
        return float(AV2_SCENARIO_STEP_HZ)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise DataError(f"{where}: the window config has an invalid step rate {value!r:.40}")
    return float(value)


def scenario_keys(
    sources: Sequence[str] | np.ndarray, scenario_ids: Sequence[str] | np.ndarray
) -> np.ndarray:
    """(Q,) ``source/scenario_id`` keys: what makes a scenario the same one in a bank and a query table."""
    return np.char.add(
        np.char.add(np.asarray(sources, dtype=np.str_), "/"), np.asarray(scenario_ids, dtype=np.str_)
    )


def scenario_folds(keys: np.ndarray) -> np.ndarray:
    """(Q,) 0 or 1: the cross-fitting half of each query's scenario (a stable hash of its key)."""
    uniq, inverse = np.unique(np.asarray(keys, dtype=np.str_), return_inverse=True)
    folds = np.array([zlib.crc32(k.encode()) % 2 for k in uniq.tolist()], dtype=np.int64)
    return folds[inverse] if len(uniq) else np.zeros(0, dtype=np.int64)


class ForecastBank:
    """A bundle as a bank of (history, future) pairs: its search indices and the alignment of its futures.

    Thread-safe for reading, like the bundle. Refuses (``ConfigError``) a history that leaves no future
    in the bank's windows and a K above the bank's windows (or its tracks, with ``one_per_track``).
    """

    def __init__(self, bundle: Bundle, config: ForecastConfig = ForecastConfig()) -> None:
        check_history_steps(config.history_steps, bundle.num_steps, "bank windows")
        self.bundle = bundle
        self.config = config
        self.history_steps = config.history_steps
        self.future_steps = bundle.num_steps - config.history_steps
        self.tracks = Groups.of(bundle.groups)
        self.scenarios = Groups.of(bundle.scenario_groups)
        num_tracks = int((self.tracks.sizes > 0).sum())
        if config.k > bundle.num_windows:
            raise ConfigError(f"--k {config.k} is above the bank's {bundle.num_windows} windows")
        if config.one_per_track and config.k > num_tracks:
            raise ConfigError(
                f"--k {config.k} is above the bank's {num_tracks} tracks (one future per track); lower --k"
            )
        self._lock = threading.RLock()
        self._raw_index: SearchIndex | None = None
        self._encoders: dict[str, TrajectoryEncoder] = {}
        self._embedders: dict[str, Embedder] = {}
        self._scenario_keys: pa.Array | None = None
        self._temperatures: dict[str, float] = {}

    # -- what the bank offers ---------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        """The bank's history models of this history length."""
        return [m for m in self.bundle.model_names if self.bundle.history_steps(m) == self.history_steps]

    @property
    def methods(self) -> list[str]:
        """Every method this bank can forecast with, learned retrieval first."""
        return [RETRIEVAL_PREFIX + m for m in self.models] + [KNN_RAW, *PHYSICAL_METHODS]

    def check_methods(self, methods: Sequence[str]) -> list[str]:
        known = self.methods
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise ConfigError(
                f"method(s) {', '.join(unknown)} not available on this bank; it has {', '.join(known)}"
            )
        return list(methods)

    def scenario_group_of(self, keys: np.ndarray) -> IntArray:
        """(Q,) the bank's scenario group of each ``source/scenario_id`` key (``scenario_keys``), -1 where
        the bank has none of that scenario."""
        with self._lock:
            if self._scenario_keys is None:
                source = self.bundle.column("source").cast(pa.string())
                scenario = self.bundle.column("scenario_id").cast(pa.string())
                # Group ids are the dictionary codes of these keys (``bundle_build``): code i is key i.
                encoded = pc.dictionary_encode(pc.binary_join_element_wise(source, scenario, "/"))
                if not np.array_equal(encoded.indices.to_numpy(zero_copy_only=False), self.scenarios.ids):
                    raise DataError(f"{self.bundle.root}: scenario groups do not match the scenario ids")
                self._scenario_keys = encoded.dictionary
        found = pc.index_in(
            pa.array(np.asarray(keys, dtype=np.str_).tolist(), pa.string()), value_set=self._scenario_keys
        )
        return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

    # -- search -----------------------------------------------------------------------------------
    def raw_features(self, rows: np.ndarray | None = None, chunk: int = 262_144) -> np.ndarray:
        """(N, 2 H) float32 flattened last-state-frame histories of the bank (or of ``rows``)."""
        xy = self.bundle.xy
        idx = np.arange(self.bundle.num_windows) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(idx), 2 * self.history_steps), dtype=np.float32)
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            window = xy.rows(part) if rows is not None else xy.all()[part[0] : part[-1] + 1]
            out[start : start + len(part)] = history_input(np.asarray(window), self.history_steps).reshape(
                len(part), -1
            )
        return out

    def raw_index(self) -> SearchIndex:
        """Exact index over ``raw_features`` (split over the cores from 100k windows, for single queries)."""
        with self._lock:
            if self._raw_index is None:
                features = self.raw_features()
                self._raw_index = parallel_exact(exact_index(features), features)
            return self._raw_index

    def encoder(self, model: str) -> TrajectoryEncoder:
        with self._lock:
            if model not in self._encoders:
                self._encoders[model] = self.bundle.encoder(model)[0]
            return self._encoders[model]

    def embedder(self, model: str) -> Embedder:
        """The history model's embedder, kept: it derives the model's inference constants once, not
        once per query (a third of embedding one history)."""
        from trajemb.training.embed import Embedder

        with self._lock:
            if model not in self._embedders:
                self._embedders[model] = Embedder(self.encoder(model))
            return self._embedders[model]

    def features(self, method: str, history_xy: np.ndarray) -> np.ndarray:
        """(Q, H, 2) agent-frame histories -> (Q, D) search features of a retrieval method."""
        x = history_input(history_xy, self.history_steps)
        if method == KNN_RAW:
            return x.reshape(len(x), -1)
        return self.embedder(method.removeprefix(RETRIEVAL_PREFIX))(x)

    def search(
        self,
        method: str,
        history_xy: np.ndarray,
        query_groups: np.ndarray,
        query_rows: np.ndarray | None = None,
    ) -> tuple[FloatArray, IntArray]:
        """(Q, K) distances and bank rows of the nearest histories, the queries' scenarios left out."""
        feats = self.features(method, history_xy)
        shortlist = method != KNN_RAW and self.config.rerank > 0
        if method == KNN_RAW:
            index, embeddings = self.raw_index(), None
        else:
            model = method.removeprefix(RETRIEVAL_PREFIX)
            index, embeddings = self.bundle.index(model).index, self.bundle.embeddings(model)
        dist, rows = search(
            index,
            feats,
            self.config.rerank if shortlist else self.config.k,
            query_rows=query_rows,
            exclude=self.scenarios,
            query_groups=np.asarray(query_groups, dtype=np.int64),
            distinct=self.tracks if self.config.one_per_track else None,
            embeddings=embeddings,
        )
        if shortlist:
            raw = self.features(KNN_RAW, history_xy)
            dist, rows = rerank(rows, raw, self.raw_features, self.config.k)
        return dist.astype(np.float64), rows

    # -- futures ----------------------------------------------------------------------------------
    def futures(self, rows: np.ndarray, history_xy: np.ndarray) -> FloatArray:
        """(Q, K) bank rows (-1 = none) and (Q, H, 2) query histories -> (Q, K, F, 2) the rows' futures
        aligned to each query (``config.alignment``), in the query's agent frame; NaN where none."""
        rows = np.asarray(rows, dtype=np.int64)
        q, k = rows.shape
        out = np.full((q, k, self.future_steps, 2), np.nan)
        ok = rows >= 0
        if not ok.any():
            return out
        uniq, inverse = np.unique(rows[ok], return_inverse=True)
        bank_xy = self.bundle.xy.rows(uniq).astype(np.float64)  # (U, T, 2)
        qi = np.nonzero(ok)[0]
        history = np.asarray(history_xy, dtype=np.float64)[:, : self.history_steps]
        out[ok] = align_futures(bank_xy, inverse, history[qi], self.history_steps, self.config.alignment)
        return out

    def temperature(self, method: str) -> float:
        """tau of a retrieval method for single queries: from the bank's forecast report where it holds
        one for this config, else fitted on ``CALIBRATION_QUERIES`` bank windows (once per bank)."""
        with self._lock:
            if method not in self._temperatures:
                stored = self._stored_temperature(method)
                self._temperatures[method] = stored if stored is not None else self._calibrate(method)
            return self._temperatures[method]

    def _stored_temperature(self, method: str) -> float | None:
        for model in self.models:
            report = self.bundle.report(model) or {}
            forecast = report.get("forecast")
            if not isinstance(forecast, dict) or forecast.get("config") != _config_dict(self.config):
                continue
            value = (
                forecast.get("temperature", {}).get(method)
                if isinstance(forecast.get("temperature"), dict)
                else None
            )
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return float(value)
        return None

    def _calibrate(self, method: str) -> float:
        rng = np.random.default_rng(self.config.seed + 11)
        n = self.bundle.num_windows
        rows = np.sort(rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False))
        xy = self.bundle.xy.rows(rows).astype(np.float64)
        f = retrieve(self, method, xy[:, : self.history_steps], self.scenarios.ids[rows], rows)
        scores = score_forecasts(f.xy_agent, xy[:, self.history_steps :], valid=f.valid)
        return fit_temperature(f.distance, scores.mode_fde_m)


def align_futures(
    bank_xy: np.ndarray,
    bank_rows: np.ndarray,
    history_xy: np.ndarray,
    history_steps: int,
    alignment: Alignment,
) -> FloatArray:
    """The futures of bank windows aligned to query histories (module docstring, "Alignment"), pairwise.

    Args:
        bank_xy: (U, T, 2) bank windows in their agent frames.
        bank_rows: (M,) which of the U windows each pair takes.
        history_xy: (M, H, 2) each pair's query history in its agent frame.

    Returns:
        (M, F, 2) the futures in the queries' agent frames.
    """
    bank_xy = np.asarray(bank_xy, dtype=np.float64)
    h = history_steps
    if alignment == "agent_frame":
        return np.asarray(bank_xy[:, h:][bank_rows], dtype=np.float64)  # the shared step-0 frame as it is
    bank_state = last_state(bank_xy[:, :h])
    local = bank_state.to_local(bank_xy[:, h:])[bank_rows]  # (M, F, 2) in each bank last-state frame
    query_state = last_state(np.asarray(history_xy, dtype=np.float64)[:, :h])
    if alignment == "last_state":
        t = future_times_s(bank_xy.shape[1] - h)[None, :, None]
        drift = query_state.velocity_local_mps - bank_state.velocity_local_mps[bank_rows]
        local = local + drift[:, None, :] * t
    return rotate(local, query_state.heading_rad[:, None]) + query_state.xy_agent[:, None]


def _config_dict(config: ForecastConfig) -> dict[str, Any]:
    return {
        "history_steps": config.history_steps,
        "k": config.k,
        "alignment": config.alignment,
        "one_per_track": config.one_per_track,
        "rerank": config.rerank,
    }


# -- forecasts of one method --------------------------------------------------------------------------
def physical(method: str, history_xy: np.ndarray, future_steps: int, k: int) -> MethodForecasts:
    """A physical model's one forecast per query, as K slots (the others empty)."""
    model = {CONSTANT_VELOCITY: constant_velocity, CONSTANT_ACCELERATION: constant_acceleration}[method]
    q = len(history_xy)
    xy = np.full((q, k, future_steps, 2), np.nan)
    xy[:, 0] = model(history_xy, future_steps)
    distance = np.full((q, k), np.inf)
    distance[:, 0] = 0.0
    probability = np.zeros((q, k))
    probability[:, 0] = 1.0
    return MethodForecasts(xy, distance, np.full((q, k), -1, dtype=np.int64), probability)


def retrieve(
    bank: ForecastBank,
    method: str,
    history_xy: np.ndarray,
    query_groups: np.ndarray,
    query_rows: np.ndarray | None = None,
    temperature: float | np.ndarray | None = None,
) -> MethodForecasts:
    """The futures of the K nearest bank histories (uniform probabilities without ``temperature``; a
    (Q,) array gives each query its own)."""
    dist, rows = bank.search(method, history_xy, query_groups, query_rows)
    xy = bank.futures(rows, history_xy)
    if temperature is None:
        valid = rows >= 0
        probability = valid / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    else:
        tau = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (len(dist),))
        probability = np.zeros_like(dist)
        for value in np.unique(tau):
            sel = tau == value
            probability[sel] = softmax_probabilities(dist[sel], float(value))
    return MethodForecasts(xy, dist, rows, probability)


def forecast_method(
    bank: ForecastBank,
    method: str,
    history_xy: np.ndarray,
    query_groups: np.ndarray,
    query_rows: np.ndarray | None = None,
    temperature: float | np.ndarray | None = None,
) -> MethodForecasts:
    """Forecasts of Q (H, 2) agent-frame histories by ``method`` (retrieval or physical)."""
    if method in PHYSICAL_METHODS:
        return physical(method, np.asarray(history_xy, dtype=np.float64), bank.future_steps, bank.config.k)
    return retrieve(bank, method, history_xy, query_groups, query_rows, temperature)


# -- scores over a set of queries ---------------------------------------------------------------------
@dataclass(frozen=True)
class ForecastResult:
    """Scores of every method on the same queries (``scores`` is what ``trajemb forecast --json`` prints)."""

    config: ForecastConfig
    scores: dict[
        str, dict[str, float | int]
    ]  # {method: {minADE<k>, minFDE<k>, MR<k>, brier_minFDE<k>, queries}}
    temperature: dict[str, list[float]]  # retrieval methods: tau of each cross-fitting fold (fold 0, fold 1)
    query_scores: dict[str, QueryScores] = field(repr=False)


def evaluate_queries(
    bank: ForecastBank,
    xy_agent: np.ndarray,
    keys: np.ndarray,
    query_rows: np.ndarray | None = None,
    methods: Sequence[str] | None = None,
    progress: bool = False,
) -> ForecastResult:
    """Forecast (Q, T, 2) query windows (their first H steps) with every method and score them against
    their last F steps.

    Args:
        keys: (Q,) ``source/scenario_id`` of each query (``scenario_keys``): its scenario is left out of
            the bank, and its half for cross-fitting the temperatures.
        query_rows: (Q,) the queries' own bank rows where they are bank windows (else None).
    """
    config = bank.config
    h, f = bank.history_steps, bank.future_steps
    xy = np.asarray(xy_agent)
    if xy.ndim != 3 or xy.shape[1] != h + f:
        raise DataError(f"query windows have shape {xy.shape}, the bank's windows are ({h + f}, 2) steps")
    methods = bank.check_methods(methods) if methods is not None else bank.methods
    groups = bank.scenario_group_of(keys)
    folds = scenario_folds(keys)
    scores: dict[str, dict[str, float | int]] = {}
    temperatures: dict[str, list[float]] = {}
    per_query: dict[str, QueryScores] = {}
    chunks = [np.arange(s, min(s + CHUNK_QUERIES, len(xy))) for s in range(0, len(xy), CHUNK_QUERIES)]
    bar = tqdm(
        total=len(methods) * len(xy), desc="forecast", unit="query", unit_scale=True, disable=not progress
    )
    for method in methods:
        parts: list[QueryScores] = []
        distances: list[np.ndarray] = []
        kept: list[MethodForecasts] = []
        for idx in chunks:
            window = np.asarray(xy[idx], dtype=np.float64)
            rows = None if query_rows is None else np.asarray(query_rows)[idx]
            forecasts = forecast_method(bank, method, window[:, :h], groups[idx], rows)
            parts.append(
                score_forecasts(
                    forecasts.xy_agent,
                    window[:, h:],
                    forecasts.probability,
                    forecasts.valid,
                    config.miss_threshold_m,
                )
            )
            if is_retrieval(method):
                distances.append(forecasts.distance)
                kept.append(forecasts)
            bar.update(len(idx))
        result = _concat_scores(parts)
        if is_retrieval(method):
            dist = np.concatenate(distances) if distances else np.zeros((0, config.k))
            tau = _cross_fit_temperatures(bank, method, dist, result.mode_fde_m, folds)
            temperatures[method] = [float(tau[0]), float(tau[1])]
            rescored = []
            for idx, forecasts in zip(chunks, kept, strict=True):
                probability = np.zeros_like(forecasts.distance)
                for fold in (0, 1):
                    sel = folds[idx] == fold
                    probability[sel] = softmax_probabilities(forecasts.distance[sel], tau[fold])
                window = np.asarray(xy[idx], dtype=np.float64)
                rescored.append(
                    score_forecasts(
                        forecasts.xy_agent,
                        window[:, h:],
                        probability,
                        forecasts.valid,
                        config.miss_threshold_m,
                    )
                )
            result = _concat_scores(rescored)
        per_query[method] = result
        scores[method] = result.summary(config.k)
    bar.close()
    return ForecastResult(config, scores, temperatures, per_query)


def _concat_scores(parts: list[QueryScores]) -> QueryScores:
    if not parts:
        e = np.zeros(0)
        return QueryScores(e, e, np.zeros(0, dtype=bool), e, np.zeros(0, dtype=np.int64), np.zeros((0, 0)))
    return QueryScores(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in QueryScores.__dataclass_fields__)
    )


def _cross_fit_temperatures(
    bank: ForecastBank, method: str, distance: np.ndarray, mode_fde_m: np.ndarray, folds: np.ndarray
) -> tuple[float, float]:
    """(tau for fold 0, tau for fold 1): each fitted on the other fold's queries; where a fold is empty
    (the queries come from one scenario), both are fitted on bank windows as queries."""
    if not ((folds == 0).any() and (folds == 1).any()):
        tau = bank.temperature(method)
        return tau, tau
    return (
        fit_temperature(distance[folds == 1], mode_fde_m[folds == 1]),
        fit_temperature(distance[folds == 0], mode_fde_m[folds == 0]),
    )


def check_query_windows(bank: ForecastBank, num_steps: int, window_config: object, what: str) -> None:
    """Query windows must hold a history and a future, and match the bank's length and step rate."""
    h = bank.history_steps
    if num_steps < h + 1:
        raise DataError(
            f"{what}: windows of {num_steps} steps are shorter than --history-steps {h} + 1 step of future"
        )
    bundle = bank.bundle
    if num_steps != bundle.num_steps:
        raise DataError(
            f"{what}: windows of {num_steps} steps, but the bank {bundle.root} was built from "
            f"{bundle.num_steps}-step windows; prepare both with the same --steps"
        )
    from trajemb.analysis.bundle import MANIFEST

    ours = step_hz(window_config, what)
    theirs = step_hz(bundle.manifest.get("table_window_config"), bundle.root / MANIFEST)
    if ours != theirs:
        raise DataError(
            f"{what}: windows at {ours:g} Hz, but the bank {bundle.root} was built at {theirs:g} Hz; "
            "prepare both at the same step rate"
        )


def forecast_table(
    bundle: Bundle,
    table: TrajectoryTable,
    config: ForecastConfig = ForecastConfig(),
    methods: Sequence[str] | None = None,
    progress: bool = False,
    what: str = "queries",
) -> ForecastResult:
    """Every window of ``table`` as a query against the bank ``bundle`` (``trajemb forecast``)."""
    bank = forecast_bank(bundle, config)
    check_query_windows(bank, table.num_steps, table.manifest.get("window_config"), what)
    if len(table) == 0:
        raise DataError(f"{what}: the table holds no windows")
    meta = table.meta
    keys = scenario_keys(meta["source"].to_numpy(dtype=str), meta["scenario_id"].to_numpy(dtype=str))
    return evaluate_queries(bank, table.xy_agent, keys, None, methods, progress)


def forecast_report(
    bundle: Bundle, config: ForecastConfig = ForecastConfig(), num_queries: int = 2000, progress: bool = False
) -> dict[str, Any]:
    """The bank's own windows as queries, leave-one-scenario-out (a seeded sample of ``num_queries``):
    the ``forecast`` entry of a history model's evaluation report (docs/bundles.md)."""
    check_int("forecast queries", num_queries, 1)
    bank = forecast_bank(bundle, config)
    n = bundle.num_windows
    rows = np.sort(np.random.default_rng(config.seed + 10).choice(n, size=min(num_queries, n), replace=False))
    result = evaluate_queries(bank, bundle.xy.rows(rows), _row_keys(bundle, rows), rows, None, progress)
    return {
        "config": _config_dict(config),
        "bank": "this bundle, leave one scenario out",
        "bank_windows": n,
        "queries": len(rows),
        "methods": result.scores,
        "temperature": {m: float(np.mean(t)) for m, t in result.temperature.items()},
        "temperature_folds": result.temperature,
    }


def _row_keys(bundle: Bundle, rows: np.ndarray) -> np.ndarray:
    return scenario_keys(bundle.strings("source", rows), bundle.strings("scenario_id", rows))


# -- one query, for the explorer ----------------------------------------------------------------------
@dataclass(frozen=True)
class ModeSet:
    """One method's forecasts of one query (K' <= K: missing ones left out), most probable first."""

    xy_agent: FloatArray  # (K', F, 2) in the query's agent frame
    xy_city: FloatArray  # (K', F, 2) in the city frame
    probability: FloatArray  # (K',)
    rows: IntArray  # (K',) bank rows the futures came from (-1: a physical model)
    distance: FloatArray  # (K',) search distances (0: a physical model)


@dataclass(frozen=True)
class QueryForecast:
    """Everything the explorer's Forecast page draws for one query."""

    query_row: int | None  # the bank row of the query, None for a window of one's own
    history_xy_agent: FloatArray  # (H, 2)
    history_xy_city: FloatArray  # (H, 2)
    truth_xy_agent: FloatArray | None  # (F, 2) the true future, None for a history alone
    truth_xy_city: FloatArray | None
    methods: dict[str, ModeSet]
    scores: dict[str, dict[str, float | int]]  # this query's scores per method (empty without a truth)


_banks: weakref.WeakKeyDictionary[Bundle, dict[ForecastConfig, ForecastBank]] = weakref.WeakKeyDictionary()
_banks_lock = threading.Lock()


def forecast_bank(bundle: Bundle, config: ForecastConfig = ForecastConfig()) -> ForecastBank:
    """The bank of an opened bundle under ``config``, built once per bundle and config."""
    with _banks_lock:
        per_bundle = _banks.setdefault(bundle, {})
        if config not in per_bundle:
            per_bundle[config] = ForecastBank(bundle, config)
        return per_bundle[config]


def forecast_row(
    bundle: Bundle, row: int, config: ForecastConfig = ForecastConfig(), methods: Sequence[str] | None = None
) -> QueryForecast:
    """Forecast window ``row`` of the bundle from its first H steps, with its own scenario left out of
    the bank; its last F steps are the truth it is scored against."""
    if not 0 <= row < bundle.num_windows:
        raise DataError(f"row {row} outside [0, {bundle.num_windows})")
    origin = np.array([bundle.numbers("origin_x_city_m")[row], bundle.numbers("origin_y_city_m")[row]])
    theta = float(bundle.numbers("theta_rad")[row])
    bank = forecast_bank(bundle, config)
    return _forecast_one(bank, bundle.xy.rows(row), origin, theta, int(bank.scenarios.ids[row]), row, methods)


def forecast_window(
    bundle: Bundle,
    xy_agent: np.ndarray,
    origin_xy_city: Sequence[float] | np.ndarray = (0.0, 0.0),
    theta_rad: float = 0.0,
    config: ForecastConfig = ForecastConfig(),
    methods: Sequence[str] | None = None,
    scenario_key: str | None = None,
) -> QueryForecast:
    """Forecast a window of one's own (a sketch, or a window of another table): an (H, 2) history, or a
    (T, 2) window whose last F steps are the truth, in its agent frame placed at ``origin_xy_city`` with
    heading ``theta_rad``; ``scenario_key`` (``source/scenario_id``) leaves that scenario out of the bank."""
    bank = forecast_bank(bundle, config)
    xy = np.asarray(xy_agent, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] not in (bank.history_steps, bundle.num_steps):
        raise DataError(
            f"a query must have shape ({bank.history_steps}, 2) (a history) or ({bundle.num_steps}, 2) "
            f"(a window), got {xy.shape}"
        )
    if not np.isfinite(xy).all() or np.abs(xy).max() > 1e5:
        raise DataError("query coordinates must be finite and within 100 km of the first point")
    group = -1 if scenario_key is None else int(bank.scenario_group_of(np.array([scenario_key]))[0])
    return _forecast_one(
        bank, xy, np.asarray(origin_xy_city, dtype=np.float64), float(theta_rad), group, None, methods
    )


def _forecast_one(
    bank: ForecastBank,
    xy: np.ndarray,
    origin: np.ndarray,
    theta: float,
    group: int,
    row: int | None,
    methods: Sequence[str] | None,
) -> QueryForecast:
    h = bank.history_steps
    window = np.asarray(xy, dtype=np.float64)[None]
    history = window[:, :h]
    truth = window[0, h:] if window.shape[1] > h else None
    origin_b, theta_b = origin[None], np.array([theta])

    def city(points: np.ndarray) -> FloatArray:
        return agent_to_city(points.reshape(1, -1, 2), origin_b, theta_b).reshape(points.shape)

    out: dict[str, ModeSet] = {}
    scores: dict[str, dict[str, float | int]] = {}
    for method in bank.check_methods(methods) if methods is not None else bank.methods:
        tau = bank.temperature(method) if is_retrieval(method) else None
        f = forecast_method(
            bank, method, history, np.array([group]), None if row is None else np.array([row]), tau
        )
        keep = f.valid[0]
        order = np.argsort(-f.probability[0][keep], kind="stable")
        xy_agent = f.xy_agent[0][keep][order]
        out[method] = ModeSet(
            xy_agent,
            city(xy_agent),
            f.probability[0][keep][order],
            f.rows[0][keep][order],
            f.distance[0][keep][order],
        )
        if truth is not None:
            s = score_forecasts(f.xy_agent, truth[None], f.probability, f.valid, bank.config.miss_threshold_m)
            scores[method] = s.summary(bank.config.k)
    return QueryForecast(
        row, history[0], city(history[0]), truth, None if truth is None else city(truth), out, scores
    )
