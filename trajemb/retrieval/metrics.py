"""Retrieval metrics: ADE / FDE between a query window and its retrieved neighbours.

Rule ("query-vs-neighbour minADE@k", as the paper's evaluation): for each query, take its k nearest
database windows by embedding distance, excluding the query itself and every window of the same track;
ADE is the mean over the T steps of the Euclidean distance between query and neighbour, both in their
own agent frames; FDE the distance at the last step; minADE@k / minFDE@k is the minimum over the k
neighbours, averaged over queries. Per-neighbour values equal av2's ``compute_ade`` / ``compute_fde``
with the neighbours as the K "forecasts" and the query as ground truth (tests pin this).

Legend: Q queries, K neighbours, T steps, N database rows, D embedding dim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trajemb.data.schema import FloatArray
from trajemb.retrieval.search import Groups, exact_search

if TYPE_CHECKING:  # torch is imported by the functions that need it: `trajemb search` starts without it
    import torch


def ade_fde(query_xy: np.ndarray, neighbor_xy: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """(Q, T, 2) queries and (Q, K, T, 2) neighbours -> (Q, K) ADE and (Q, K) FDE in metres."""
    err = np.linalg.norm(neighbor_xy.astype(np.float64) - query_xy[:, None].astype(np.float64), axis=-1)
    return err.mean(axis=-1), err[..., -1]


def min_ade_fde(
    query_xy: np.ndarray, neighbor_xy: np.ndarray, valid: np.ndarray | None = None
) -> tuple[FloatArray, FloatArray]:
    """(Q,) minADE and minFDE over the K neighbours; ``valid`` (Q, K) masks missing neighbours."""
    ade, fde = ade_fde(query_xy, neighbor_xy)
    if valid is not None:
        ade = np.where(valid, ade, np.inf)
        fde = np.where(valid, fde, np.inf)
    return ade.min(axis=1), fde.min(axis=1)


def retrieval_min_ade_fde(
    xy: np.ndarray, embeddings: torch.Tensor, groups: np.ndarray, k: int
) -> tuple[float, float]:
    """minADE@k and minFDE@k of a set retrieving among itself (leave-one-track-out, exact search on
    the embeddings' device); NaN where the embeddings are not finite (a diverged run).

    Args:
        xy: (N, T, 2) windows in their agent frames.
        embeddings: (N, D) on any device.
        groups: (N,) int track group per window.
    """
    feats = embeddings.detach().float().cpu().numpy()
    if not np.isfinite(feats).all():
        return float("nan"), float("nan")
    tracks = Groups.of(groups)
    _, idx = exact_search(
        feats, feats, k, exclude=tracks, query_groups=tracks.ids, device=embeddings.device.type
    )
    valid = idx >= 0
    neighbors = xy[np.where(valid, idx, 0)]  # (N, K, T, 2)
    min_ade, min_fde = min_ade_fde(xy, neighbors, valid)
    ok = np.isfinite(min_ade)
    return float(min_ade[ok].mean()), float(min_fde[ok].mean())
