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

from trajemb.schema import FloatArray

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


def knn_excluding_groups(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int,
    query_groups: torch.Tensor,
    database_groups: torch.Tensor,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    """Exact k nearest neighbours by Euclidean distance, skipping database rows of the query's group.

    Args:
        queries: (Q, D); database: (N, D), on the same device.
        query_groups: (Q,) int group id (e.g. track) of each query; database_groups: (N,).

    Returns:
        (Q, K) distances (inf where fewer than K rows qualify) and (Q, K) row indices (-1 there),
        nearest first: FAISS's ``(D, I)`` contract.
    """
    k_eff = min(k, database.shape[0])
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        d = torch.cdist(q.float(), database.float())  # (q, N)
        same = query_groups[start : start + chunk, None] == database_groups[None, :]
        d = d.masked_fill(same, torch.inf)
        dist, idx = torch.topk(d, k_eff, dim=1, largest=False)
        idx = torch.where(torch.isinf(dist), -1, idx)
        dists.append(dist)
        idxs.append(idx)
    dist_all, idx_all = torch.cat(dists), torch.cat(idxs)
    if k_eff < k:
        pad = k - k_eff
        dist_all = torch.cat(
            [dist_all, torch.full((dist_all.shape[0], pad), torch.inf, device=dist_all.device)], 1
        )
        idx_all = torch.cat([idx_all, torch.full((idx_all.shape[0], pad), -1, device=idx_all.device)], 1)
    return dist_all, idx_all


def retrieval_min_ade_fde(
    xy: np.ndarray, embeddings: torch.Tensor, groups: np.ndarray, k: int
) -> tuple[float, float]:
    import torch

    """minADE@k and minFDE@k of a set retrieving among itself (leave-one-track-out).

    Args:
        xy: (N, T, 2) windows in their agent frames.
        embeddings: (N, D) on any device.
        groups: (N,) int track group per window.
    """
    g = torch.as_tensor(groups, device=embeddings.device)
    _, idx = knn_excluding_groups(embeddings, embeddings, k, g, g)
    idx_np = idx.cpu().numpy()
    valid = idx_np >= 0
    neighbors = xy[np.where(valid, idx_np, 0)]  # (N, K, T, 2)
    min_ade, min_fde = min_ade_fde(xy, neighbors, valid)
    ok = np.isfinite(min_ade)
    return float(min_ade[ok].mean()), float(min_fde[ok].mean())
