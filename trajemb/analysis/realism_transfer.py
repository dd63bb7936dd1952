"""The transfer test of ``trajemb realism``: synthetic motion as a motion prior for real road users.

Every window of the real table is a query: its first H steps a history, its last F steps the future to
forecast (``trajemb.analysis.forecast``'s split). Each bank (the real bank, each synthetic table) offers the
futures of its K nearest histories, found and aligned exactly as ``trajemb forecast``'s ``knn_raw``
method does: exact search on the flattened last-state-frame histories (``trajemb.data.history``) through
``trajemb.retrieval.search`` with the query's own scenario left out of the bank and one window per bank track,
futures aligned by ``trajemb.analysis.forecast.align_futures`` (``last_state`` by default), scored with av2's
metric functions (``trajemb.analysis.forecast_metrics``). Raw kNN needs no model, so the test measures the
data and not an encoder trained on one of them.

The **ratio** of a bank is its minFDE over the real bank's on the same queries: 1.0 means synthetic
windows are as good a prior as real ones. Constant velocity is shown beside them as the floor a motion
prior has to beat.

Legend: N bank windows, Q queries, T steps, H history steps, F future steps, K forecasts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from trajemb.analysis.forecast import Alignment, align_futures, scenario_keys
from trajemb.analysis.forecast_metrics import QueryScores, score_forecasts, score_names
from trajemb.analysis.motion_models import constant_velocity
from trajemb.core.errors import DataError
from trajemb.data.history import DEFAULT_HISTORY_STEPS, check_history_steps, history_input
from trajemb.data.store import TrajectoryTable
from trajemb.retrieval.search import Groups, exact_search

#: Forecasts per query (AV2's K = 6).
TRANSFER_K = 6
REAL_BANK = "real"
CONSTANT_VELOCITY = "constant velocity"


@dataclass(frozen=True)
class TransferConfig:
    history_steps: int = DEFAULT_HISTORY_STEPS
    k: int = TRANSFER_K
    alignment: Alignment = "last_state"


def _keys(table: TrajectoryTable) -> np.ndarray:
    meta = table.meta
    return scenario_keys(meta["source"].to_numpy(dtype=str), meta["scenario_id"].to_numpy(dtype=str))


def bank_scores(
    bank: TrajectoryTable,
    queries_xy: np.ndarray,
    query_keys: np.ndarray,
    config: TransferConfig,
    where: str = "the bank",
) -> QueryScores:
    """Raw-kNN forecasts of (Q, T, 2) query windows from ``bank`` (module docstring), scored per query;
    ``where``: the bank's file, for messages.

    Raises:
        DataError: the bank has fewer tracks than K.
    """
    h = config.history_steps
    tracks = Groups.of(bank.track_groups())
    if int((tracks.sizes > 0).sum()) < config.k:
        raise DataError(
            f"{where}: a bank of {len(tracks.sizes)} tracks cannot give {config.k} futures of distinct "
            "tracks for the transfer test; give a table of more tracks, or --no-transfer"
        )
    bank_keys, scenario_ids = np.unique(_keys(bank), return_inverse=True)
    scenarios = Groups.of(scenario_ids)
    # The bank's scenario of each query (-1: none of the bank's scenarios is the query's).
    found = np.searchsorted(bank_keys, query_keys)
    found = np.minimum(found, len(bank_keys) - 1)
    query_groups = np.where(bank_keys[found] == query_keys, found, -1)
    db = np.ascontiguousarray(history_input(bank.xy_agent, h).reshape(len(bank), -1))
    q = np.ascontiguousarray(history_input(queries_xy, h).reshape(len(queries_xy), -1))
    _, rows = exact_search(db, q, config.k, exclude=scenarios, query_groups=query_groups, distinct=tracks)
    ok = rows >= 0
    futures = np.full((len(q), config.k, bank.num_steps - h, 2), np.nan)
    pair_query = np.nonzero(ok)[0]
    futures[ok] = align_futures(
        bank.xy_agent, rows[ok], np.asarray(queries_xy, dtype=np.float64)[pair_query, :h], h, config.alignment
    )
    return score_forecasts(futures, np.asarray(queries_xy, dtype=np.float64)[:, h:], valid=ok)


def _summary(scores: QueryScores, k: int, select: np.ndarray | None = None) -> dict[str, float | int]:
    if select is not None:
        scores = QueryScores(*(getattr(scores, name)[select] for name in QueryScores.__dataclass_fields__))
    s = scores.summary(k)
    ade, fde, mr, _ = score_names(k)
    return {"minADE": s[ade], "minFDE": s[fde], "MR": s[mr], "queries": s["queries"]}


def transfer_test(
    queries: TrajectoryTable,
    real_bank: TrajectoryTable,
    synthetic: dict[str, TrajectoryTable],
    config: TransferConfig = TransferConfig(),
    progress: bool = False,
    where: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """minADE/minFDE of every window of ``queries`` forecast from each bank (module docstring);
    ``where``: each bank's file by bank name (``"real"`` for ``real_bank``), for messages.

    Returns:
        ``{"k", "history_steps", "method", "queries", "banks": {name: {"windows", "minADE", "minFDE",
        "MR", "ratio", "by_type": {object type: {"minFDE", "queries", "ratio"}}}}}``; the real bank is
        ``"real"`` and constant velocity ``"constant velocity"`` (0 windows).
    """
    check_history_steps(config.history_steps, queries.num_steps, "query windows")
    if len(queries) == 0:
        raise DataError("the transfer test has no real query windows")
    xy = np.asarray(queries.xy_agent, dtype=np.float64)
    keys = _keys(queries)
    types = queries.meta["object_type"].to_numpy(dtype=str)
    banks = {REAL_BANK: real_bank, **synthetic}
    per_bank: dict[str, QueryScores] = {}
    bar = tqdm(total=len(banks) + 1, desc="transfer", unit="bank", disable=not progress)
    for name, bank in banks.items():
        per_bank[name] = bank_scores(bank, xy, keys, config, (where or {}).get(name, f"bank {name}"))
        bar.update()
    h = config.history_steps
    cv = constant_velocity(xy[:, :h], xy.shape[1] - h)[:, None]
    per_bank[CONSTANT_VELOCITY] = score_forecasts(cv, xy[:, h:])
    bar.update()
    bar.close()
    windows = {name: len(bank) for name, bank in banks.items()} | {CONSTANT_VELOCITY: 0}
    real = _summary(per_bank[REAL_BANK], config.k)
    out: dict[str, Any] = {}
    for name, scores in per_bank.items():
        k = 1 if name == CONSTANT_VELOCITY else config.k
        entry: dict[str, Any] = {"windows": windows[name], **_summary(scores, k)}
        entry["ratio"] = float(entry["minFDE"]) / float(real["minFDE"])
        entry["by_type"] = {}
        for t in sorted(set(types)):
            select = types == t
            part = _summary(scores, k, select)
            real_part = _summary(per_bank[REAL_BANK], config.k, select)
            entry["by_type"][t] = {
                "minFDE": part["minFDE"],
                "queries": part["queries"],
                "ratio": float(part["minFDE"]) / float(real_part["minFDE"]),
            }
        out[name] = entry
    return {
        "k": config.k,
        "history_steps": h,
        "method": f"raw kNN on histories, {config.alignment} alignment, one window per bank track",
        "queries": len(xy),
        "banks": out,
    }
