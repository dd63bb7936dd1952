"""Nearest-neighbour search: the one module every search of trajemb goes through.

Two layers:

* **Raw indices** (``SearchIndex``) keep FAISS's ``(D, I)`` contract: (Q, k) *squared* L2 distances,
  ascending, and (Q, k) row ids with -1 for "no result". They are FAISS indices (exact flat, IVF,
  HNSW: built by ``trajemb.retrieval.index``), ``TorchFlatIndex`` (exact, PyTorch, for CUDA devices FAISS cannot
  use) and ``ShardedFlatIndex`` (exact, rows split over the cores for single queries).
* **Rules** (``search``, and ``NeighborIndex`` which binds an index to its rows' tracks): which rows may
  answer a query. The query's own row; every row of the query's *exclusion group* (its track, or its
  scenario); rows outside an ``allowed`` mask; and all but the nearest row of each *distinct group*
  (one window per track); with ``collapse_eps``, near-duplicates: walking the results nearest first, a
  row within ``collapse_eps`` of a row already returned is left out, so each clump of near-identical
  windows answers once, by its nearest row. Results are **Euclidean** distances (not squared: the one
  distance unit of trajemb above this module), nearest first, (inf, -1) where fewer than k rows qualify.
* **Range search** (``range_search``): every row strictly closer than a radius, under the same rules
  (own row, exclusion groups, allowed rows), in FAISS's ``(lims, D, I)`` layout (``RangeResult``):
  exact for exact indices, what the probed cells hold for IVF and HNSW.

With an exact index the rules cost no results: ``search`` returns what brute force over the
qualifying rows returns (tests pin it). It fetches enough candidates for the usual case (k, or 4 k
with one row per distinct group, plus the rows the query's exclusion group holds, plus one) and, for
the queries whose candidates ran out before k survived the rules, fetches four times as many until
k survive or every row was seen. With an approximate index the candidates are what the index finds; allowed rows missed
by an IVF index's probes are searched exactly (``embeddings`` given).

``rerank`` re-ranks a shortlist exactly in another feature space. ``measure_recall`` and
``recall_at_k`` compare an approximate index with exact search, ``rank_of`` gives the rank of a given
row among a query's neighbours (the mean-rank measure of ``trajemb.retrieval.robustness``).

Legend: N database rows, Q queries, D feature dim, k neighbours, R range-search results.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from trajemb.core.errors import ConfigError, DataError
from trajemb.core.validate import check_float

if TYPE_CHECKING:
    import torch

#: Allowed-row masks with at most this many rows are searched exactly over those rows.
SMALL_SUBSET_ROWS = 20_000
#: Rows sampled as queries to measure recall@10 of an approximate index against exact search.
RECALL_QUERIES = 1000
#: Exact indices of at least this many rows are split over the cores for single queries.
PARALLEL_EXACT_ROWS = 100_000
#: Searches of at most this many queries run FAISS on one OpenMP thread: it parallelises over queries,
#: so a team of threads only adds start-up and, on a busy machine, waits for a core (one query against
#: 1M rows on 2 cores, the other core busy: 24 ms with two threads, 3.8 ms with one).
FEW_QUERIES = 4
#: Elements of the (queries x rows) distance matrix that ``TorchFlatIndex`` holds at once (float32: 1 GiB).
TORCH_DISTANCE_ELEMENTS = 1 << 28
#: How much more to fetch, each time the candidates of a query ran out before k survived the rules.
REFETCH_FACTOR = 4
#: Candidates fetched per result at first with one row per distinct group (more where they fall short).
DISTINCT_FETCH = 4
#: Candidates (queries x fetched rows) held at once by ``search`` (about 400 MB of distances and ids).
CANDIDATE_ELEMENTS = 1 << 25
#: Most results ``range_search`` gathers before refusing (12 bytes each: about 1.6 GB).
MAX_RANGE_RESULTS = 1 << 27
#: Queries of ``range_search``'s first call at most, and of any call.
RANGE_FIRST_CHUNK = 1024
RANGE_MAX_CHUNK = 65_536


class SearchIndex(Protocol):
    d: int
    ntotal: int

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) float32, C-contiguous and finite, or a one-line ``DataError``."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"embeddings have shape {x.shape}, expected (N, D) with N, D >= 1")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise DataError(f"{bad} of {len(x)} embeddings are NaN or infinite: the model or its input is broken")
    return x


def pad(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k') results padded to (Q, k) with (inf, -1); float32 distances, int64 ids."""
    if dist.shape[1] < k:
        extra = k - dist.shape[1]
        dist = np.concatenate([dist, np.full((dist.shape[0], extra), np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((ids.shape[0], extra), -1, np.int64)], axis=1)
    return dist.astype(np.float32), ids.astype(np.int64)


# -- exact raw indices -------------------------------------------------------------------------------
class TorchFlatIndex:
    """Exact L2 search with PyTorch on any device (for GPUs FAISS cannot use).

    Queries go in chunks whose distance matrix holds at most ``max_elements`` values (at least one
    query per chunk), so memory stays bounded for N up to ``max_elements`` rows (8,192 queries at a
    time against 10M rows would need 328 GB)."""

    def __init__(
        self,
        embeddings: np.ndarray | torch.Tensor,
        device: torch.device | str,
        chunk: int = 8192,
        max_elements: int = TORCH_DISTANCE_ELEMENTS,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.db = torch.as_tensor(embeddings, dtype=torch.float32, device=self.device)
        self.db_sq = (self.db * self.db).sum(dim=1)
        self.d = int(self.db.shape[1])
        self.ntotal = int(self.db.shape[0])
        self.chunk = max(1, min(chunk, max_elements // max(self.ntotal, 1)))

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        k_eff = min(k, self.ntotal)
        if x.shape[0] == 0:
            return pad(np.empty((0, k_eff), np.float32), np.empty((0, k_eff), np.int64), k)
        dists, ids = [], []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.chunk):
                q = torch.as_tensor(x[start : start + self.chunk], dtype=torch.float32, device=self.device)
                # |q|^2 - 2 q.x + |x|^2 in one (chunk, N) buffer: addmm, then in-place adds
                d2 = torch.addmm(self.db_sq[None], q, self.db.T, alpha=-2.0)
                d2.add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0.0)
                dist, idx = torch.topk(d2, k_eff, dim=1, largest=False)
                dists.append(dist.cpu().numpy())
                ids.append(idx.cpu().numpy().astype(np.int64))
        return pad(np.concatenate(dists), np.concatenate(ids), k)

    def range_search(self, x: np.ndarray, sq_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FAISS's ``range_search``: (Q + 1,) lims, (R,) squared distances strictly below ``sq_radius``
        and (R,) rows, query by query."""
        import torch

        queries, dists, ids = [], [], []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.chunk):
                q = torch.as_tensor(x[start : start + self.chunk], dtype=torch.float32, device=self.device)
                # Differences, not |q|^2 + |x|^2 - 2 q.x: near-identical rows far from the origin
                # must come out near zero (see ``range_search``).
                d2 = torch.cdist(q, self.db, compute_mode="donot_use_mm_for_euclid_dist").square_()
                qi, row = torch.nonzero(d2 < sq_radius, as_tuple=True)
                queries.append(qi.cpu().numpy() + start)
                dists.append(d2[qi, row].cpu().numpy())
                ids.append(row.cpu().numpy().astype(np.int64))
        return _as_lims(queries, dists, ids, x.shape[0])


def _as_lims(
    queries: list[np.ndarray], dists: list[np.ndarray], ids: list[np.ndarray], num_queries: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Results given as (query, distance, row) parts -> FAISS's (lims, D, I), grouped by query."""
    qi = np.concatenate(queries) if queries else np.zeros(0, np.int64)
    d = np.concatenate(dists).astype(np.float32) if dists else np.zeros(0, np.float32)
    rows = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    order = np.argsort(qi, kind="stable")
    lims = np.zeros(num_queries + 1, np.int64)
    np.cumsum(np.bincount(qi, minlength=num_queries), out=lims[1:])
    return lims, d[order], rows[order]


class ShardedFlatIndex:
    """Exact L2 search over row ranges searched in parallel threads.

    FAISS parallelises a flat search over queries, so a single query (the explorer's case) runs on
    one core; splitting the rows over one shard per core lets every core scan a part. Each shard's
    thread runs FAISS on one OpenMP thread (otherwise every shard would start a team of its own and
    the cores are oversubscribed). Results are identical to ``IndexFlatL2``. ``allowed`` filters rows
    exactly (an id selector per shard, in local row numbers).
    """

    def __init__(self, embeddings: np.ndarray, shards: int) -> None:
        x = check_embeddings(embeddings)
        self.d, self.ntotal = int(x.shape[1]), int(x.shape[0])
        bounds = np.linspace(0, self.ntotal, max(1, shards) + 1).astype(np.int64)
        self.parts: list[tuple[int, faiss.IndexFlatL2]] = []
        for start, stop in itertools.pairwise(bounds.tolist()):
            flat = faiss.IndexFlatL2(self.d)
            flat.add(x[start:stop])
            self.parts.append((start, flat))
        # OpenMP's thread count is per calling thread: one per shard thread.
        self._pool = ThreadPoolExecutor(len(self.parts), initializer=faiss.omp_set_num_threads, initargs=(1,))

    def search(
        self, x: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(x, dtype=np.float32)

        def one(part: tuple[int, faiss.IndexFlatL2]) -> tuple[np.ndarray, np.ndarray]:
            start, flat = part
            kk = min(k, flat.ntotal)
            if allowed is None:
                dist, ids = flat.search(q, kk)
            else:
                bitmap = np.packbits(
                    np.asarray(allowed[start : start + flat.ntotal], dtype=bool), bitorder="little"
                )
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBitmap(flat.ntotal, faiss.swig_ptr(bitmap))
                dist, ids = flat.search(q, kk, params=params)
            return dist, np.where(ids >= 0, ids + start, -1)

        results = list(self._pool.map(one, self.parts))
        dist = np.concatenate([r[0] for r in results], axis=1)
        ids = np.concatenate([r[1] for r in results], axis=1)
        dist = np.where(ids >= 0, dist, np.inf)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return pad(np.take_along_axis(dist, order, axis=1), np.take_along_axis(ids, order, axis=1), k)

    def range_search(self, x: np.ndarray, sq_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FAISS's ``range_search`` over every shard, merged query by query."""
        q = np.ascontiguousarray(x, dtype=np.float32)

        def one(part: tuple[int, faiss.IndexFlatL2]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            start, flat = part
            lims, dist, ids = flat.range_search(q, sq_radius)
            counts: np.ndarray = np.diff(np.asarray(lims, dtype=np.int64))
            return np.repeat(np.arange(len(q)), counts), dist, ids + start

        parts = list(self._pool.map(one, self.parts))
        return _as_lims([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], len(q))


def exact_index(features: np.ndarray, device: str = "cpu") -> SearchIndex:
    """An exact index over (N, D) features: FAISS flat on the CPU, ``TorchFlatIndex`` on other devices."""
    x = check_embeddings(features)
    if device != "cpu":
        return TorchFlatIndex(x, device)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    return flat


def parallel_exact(index: Any, embeddings: np.ndarray, min_rows: int = PARALLEL_EXACT_ROWS) -> Any:
    """A flat index over ``min_rows`` rows or more becomes a ``ShardedFlatIndex`` with a shard per core."""
    cores = os.cpu_count() or 1
    if isinstance(index, faiss.IndexFlat) and index.ntotal >= min_rows and cores > 1:
        return ShardedFlatIndex(embeddings, cores)
    return index


def describe_index(index: SearchIndex) -> dict[str, Any]:
    """What a raw index is: ``kind`` (flat, ivf, hnsw, or its type), whether its searches are
    ``exact`` and its ``nprobe`` (IVF; 0 otherwise)."""
    if isinstance(index, (ShardedFlatIndex, TorchFlatIndex, faiss.IndexFlat)):
        return {"kind": "flat", "exact": True, "nprobe": 0}
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "exact": bool(index.nprobe >= index.nlist), "nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "exact": False, "nprobe": 0}
    return {"kind": type(index).__name__, "exact": False, "nprobe": 0}


# -- rules -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Groups:
    """A grouping of the N database rows (tracks, scenarios): (N,) int64 ids >= 0 and each group's size."""

    ids: np.ndarray
    sizes: np.ndarray  # (G,) rows per group id

    @classmethod
    def of(cls, ids: np.ndarray) -> Groups:
        g = np.asarray(ids, dtype=np.int64)
        if g.ndim != 1 or (len(g) and g.min() < 0):
            raise DataError(f"group ids must be a 1-D array of non-negative integers, got shape {g.shape}")
        return cls(g, np.bincount(g))

    @property
    def largest(self) -> int:
        return int(self.sizes.max()) if len(self.sizes) else 0

    def size_of(self, group_ids: np.ndarray) -> np.ndarray:
        """(Q,) rows in each of the given groups (0 for an id no row has)."""
        g = np.asarray(group_ids, dtype=np.int64)
        inside = (g >= 0) & (g < len(self.sizes))
        return np.where(inside, self.sizes[np.where(inside, g, 0)], 0)


def first_of_group(groups: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(Q, K) bool: True at the first kept occurrence of each group in every row of (Q, K) ``groups``
    (rows sorted nearest first), vectorised over all rows."""
    q, k = groups.shape
    if not keep.any():
        return np.zeros_like(keep, dtype=bool)
    span = int(groups[keep].max()) + 2
    key = np.arange(q, dtype=np.int64)[:, None] * span + np.where(keep, groups + 1, 0)
    _, first = np.unique(key.ravel(), return_index=True)  # stable: the first occurrence of each key
    out = np.zeros(q * k, dtype=bool)
    out[first] = True
    return np.asarray(out.reshape(q, k) & keep, dtype=bool)


def _apply_rules(
    sq_dist: np.ndarray,
    ids: np.ndarray,
    k: int,
    query_rows: np.ndarray | None,
    exclude: Groups | None,
    query_groups: np.ndarray | None,
    distinct: Groups | None,
    collapse_eps: float | None = None,
    embeddings: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates -> (Q, k) squared distances and rows that survive the rules, and (Q,) how many did."""
    keep = ids >= 0
    safe = np.maximum(ids, 0)
    if query_rows is not None:
        keep &= ids != query_rows[:, None]
    if exclude is not None and query_groups is not None:
        keep &= exclude.ids[safe] != query_groups[:, None]
    if distinct is not None:
        keep &= first_of_group(distinct.ids[safe], keep)
    if collapse_eps is not None:
        keep = _collapse(ids, keep, embeddings, collapse_eps, k)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, in distance order
    dist = np.take_along_axis(np.where(keep, sq_dist, np.inf), order, axis=1)
    rows = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
    dist, rows = pad(dist, rows, k)
    return dist, rows, keep.sum(axis=1)


def _collapse(ids: np.ndarray, keep: np.ndarray, embeddings: Any, eps: float, k: int) -> np.ndarray:
    """``keep`` with near-duplicates left out: walking each row of (Q, K) candidates nearest first, a
    kept candidate strictly within ``eps`` of one kept before it is dropped, until k are kept (the
    rest are dropped too: a longer list is never asked for)."""
    out = np.zeros_like(keep)
    needed = np.unique(ids[keep])
    if not len(needed):
        return out
    vectors = vector_rows(embeddings, needed).astype(np.float64)
    eps2 = eps * eps
    for i in range(len(ids)):
        cols = np.flatnonzero(keep[i])
        vec = vectors[np.searchsorted(needed, ids[i, cols])]
        hidden = np.zeros(len(cols), dtype=bool)
        kept = 0
        for j in range(len(cols)):
            if hidden[j]:
                continue
            out[i, cols[j]] = True
            kept += 1
            if kept == k:
                break
            hidden[j + 1 :] |= ((vec[j + 1 :] - vec[j]) ** 2).sum(axis=1) < eps2
    return out


def _checked_arguments(
    index: SearchIndex,
    queries: np.ndarray,
    query_rows: np.ndarray | None,
    exclude: Groups | None,
    query_groups: np.ndarray | None,
    allowed: np.ndarray | None,
    distinct: Groups | None = None,
) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
    """The arguments of ``search`` and ``range_search`` checked against the index: (Q, D) float32
    queries, the index's N rows, the (Q,) int64 query rows and query groups (or None)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != index.d:
        raise DataError(f"queries have shape {q.shape}, the index expects (Q, {index.d})")
    if not np.isfinite(q).all():
        raise DataError(
            "query embeddings are NaN or infinite (a query with non-finite or absurd coordinates?)"
        )
    n = int(index.ntotal)
    for name, groups in (("exclude", exclude), ("distinct", distinct)):
        if groups is not None and len(groups.ids) != n:
            raise DataError(f"{name} groups have {len(groups.ids)} rows, the index {n}")
    if allowed is not None and len(allowed) != n:
        raise DataError(f"allowed mask has {len(allowed)} rows, the index {n}")
    if (exclude is None) != (query_groups is None):
        raise ConfigError("exclude groups and query_groups go together")
    rows_q = None if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    groups_q = None if query_groups is None else np.asarray(query_groups, dtype=np.int64)
    for name, arr in (("query_rows", rows_q), ("query_groups", groups_q)):
        if arr is not None and arr.shape != (len(q),):
            raise DataError(f"{name} has shape {arr.shape}, expected ({len(q)},)")
    return q, n, rows_q, groups_q


def search(
    index: SearchIndex,
    queries: np.ndarray,
    k: int,
    *,
    query_rows: np.ndarray | None = None,
    exclude: Groups | None = None,
    query_groups: np.ndarray | None = None,
    distinct: Groups | None = None,
    allowed: np.ndarray | None = None,
    embeddings: Any = None,
    collapse_eps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries -> (Q, k) Euclidean distances and (Q, k) rows, nearest first, under the rules.

    Args:
        index: a raw index over the N rows.
        query_rows: (Q,) each query's own row (or -1), never returned.
        exclude, query_groups: rows whose ``exclude`` group equals the query's (Q,) ``query_groups`` entry
            are never returned (the query's track, or its scenario).
        distinct: only the nearest row of each of these groups is returned (one window per track).
        allowed: (N,) bool, the rows that may be returned (shared by all queries); None = all.
        embeddings: (N, D) the indexed vectors (an array, or anything with ``rows(idx)``), read only for
            exact search over small allowed subsets, over allowed rows an approximate index missed, and
            for the candidates ``collapse_eps`` compares.
        collapse_eps: near-duplicates answer once: after the rules above, walking the rows nearest
            first, a row strictly within this distance of a row already returned is left out (no two
            results lie closer than it; each row left out lies within it of a nearer result).

    Excluded and missing results are (inf, -1) at the end of each row.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if collapse_eps is not None:
        check_float("collapse_eps", collapse_eps, 0.0, low_open=True)
        if embeddings is None:
            raise ConfigError("collapse_eps needs the embeddings (search(..., embeddings=...))")
    q, n, rows_q, groups_q = _checked_arguments(
        index, queries, query_rows, exclude, query_groups, allowed, distinct
    )
    dist_out = np.full((len(q), k), np.inf, np.float32)
    ids_out = np.full((len(q), k), -1, np.int64)
    if n == 0 or len(q) == 0:
        return dist_out, ids_out
    # Enough candidates for k survivors in the usual case: the rows the exclusions remove at most, and a
    # few windows per distinct group (windows of one track lie close together); more where that fell short.
    removed = (1 if rows_q is not None else 0) + (
        int(exclude.size_of(groups_q).max()) if exclude is not None and groups_q is not None else 0
    )
    per_group = min(distinct.largest, DISTINCT_FETCH) if distinct is not None else 1
    if collapse_eps is not None:
        per_group = DISTINCT_FETCH  # near-duplicates come in clumps, as windows of one track do
    fetch = min(n, k * max(per_group, 1) + removed)
    pending = np.arange(len(q))
    while len(pending):
        more = []
        # Queries in chunks whose candidate lists stay under a bounded number of elements.
        step = max(1, CANDIDATE_ELEMENTS // fetch)
        for part in np.array_split(pending, -(-len(pending) // step)):
            sq, cand = raw_search(index, q[part], fetch, allowed, embeddings)
            dist, rows, kept = _apply_rules(
                sq,
                cand,
                k,
                None if rows_q is None else rows_q[part],
                exclude,
                None if groups_q is None else groups_q[part],
                distinct,
                collapse_eps,
                embeddings,
            )
            # Final where k survived, or the index had no more to give (a -1 among the candidates, or
            # every row fetched); the others fetch more.
            done = (kept >= k) | (cand < 0).any(axis=1) | (fetch >= n)
            dist_out[part[done]], ids_out[part[done]] = dist[done], rows[done]
            more.append(part[~done])
        pending = np.concatenate(more)
        fetch = min(n, fetch * REFETCH_FACTOR)
    return np.sqrt(np.maximum(dist_out, 0.0)).astype(np.float32), ids_out


def raw_search(
    index: SearchIndex, q: np.ndarray, k: int, allowed: np.ndarray | None = None, embeddings: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """The index's own (squared distances, ids), restricted to ``allowed`` rows; few queries run FAISS
    on one OpenMP thread."""
    if isinstance(index, ShardedFlatIndex):
        return index.search(q, k, allowed)
    if len(q) <= FEW_QUERIES and isinstance(index, faiss.Index):
        with _one_openmp_thread():
            return _filtered_search(index, q, k, allowed, embeddings)
    return _filtered_search(index, q, k, allowed, embeddings)


def vector_rows(embeddings: Any, rows: np.ndarray | slice) -> np.ndarray:
    """(n, D) float32 rows of indexed vectors: an array, or an object reading (and verifying) rows on
    demand (``rows(idx)``, as a bundle's embeddings)."""
    reader = getattr(embeddings, "rows", None)
    out = reader(rows) if reader is not None else np.asarray(embeddings)[rows]
    return np.ascontiguousarray(out, dtype=np.float32)


def _subset_search(embeddings: Any, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sub = faiss.IndexFlatL2(q.shape[1])
    sub.add(vector_rows(embeddings, rows))
    dist, local = sub.search(q, min(k, len(rows)))
    return pad(dist, np.where(local >= 0, rows[np.maximum(local, 0)], -1), k)


def _filtered_search(
    index: SearchIndex, q: np.ndarray, k: int, allowed: np.ndarray | None, embeddings: Any
) -> tuple[np.ndarray, np.ndarray]:
    if allowed is None:
        return pad(*index.search(q, k), k)
    rows = np.flatnonzero(allowed)
    if len(rows) == 0:
        return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    if embeddings is not None and (len(rows) <= SMALL_SUBSET_ROWS or not isinstance(index, faiss.Index)):
        return _subset_search(embeddings, rows, q, k)
    if not isinstance(index, faiss.Index):
        raise ConfigError(
            "filtered search on this index needs the embeddings (NeighborIndex(embeddings=...))"
        )
    bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    dist, ids = index.search(q, k, params=_search_parameters(index, selector))
    missing = (ids < 0).any(axis=1) & (len(rows) > (ids >= 0).sum(axis=1))
    if missing.any() and embeddings is not None:
        # An approximate index can miss allowed rows outside the probed cells: search those exactly.
        dist[missing], ids[missing] = _subset_search(embeddings, rows, q[missing], k)
    return dist, ids


def _search_parameters(index: Any, selector: Any) -> Any:
    """FAISS search parameters carrying an id selector, keeping the index's own probe settings."""
    params: Any
    if isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = index.nprobe
    elif isinstance(index, faiss.IndexHNSW):
        params = getattr(faiss, "SearchParametersHNSW")()  # noqa: B009 - missing from faiss's type stubs
        params.efSearch = index.hnsw.efSearch
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


@contextlib.contextmanager
def _one_openmp_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread in this thread (OpenMP's thread count is per calling thread, so
    other threads, such as other explorer sessions, are not affected)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def exact_search(
    features: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    query_rows: np.ndarray | None = None,
    exclude: Groups | None = None,
    query_groups: np.ndarray | None = None,
    distinct: Groups | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """``search`` over an exact index of (N, D) ``features`` (built for this call)."""
    return search(
        exact_index(features, device),
        queries,
        k,
        query_rows=query_rows,
        exclude=exclude,
        query_groups=query_groups,
        distinct=distinct,
    )


# -- range search ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RangeResult:
    """Rows within a radius of each of Q queries, in FAISS's layout: query i's results are
    ``rows[lims[i]:lims[i + 1]]`` at Euclidean ``distance[lims[i]:lims[i + 1]]``, nearest first."""

    lims: np.ndarray  # (Q + 1,) int64
    distance: np.ndarray  # (R,) float32
    rows: np.ndarray  # (R,) int64

    def __len__(self) -> int:
        return len(self.lims) - 1

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Query i's (distances, rows)."""
        a, b = int(self.lims[i]), int(self.lims[i + 1])
        return self.distance[a:b], self.rows[a:b]

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(R,) query index, (R,) row and (R,) distance of every result."""
        return np.repeat(np.arange(len(self)), np.diff(self.lims)), self.rows, self.distance


def raw_range_search(
    index: SearchIndex, q: np.ndarray, sq_radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The index's own range search: (Q + 1,) lims, (R,) squared distances below ``sq_radius``, (R,) ids."""
    if isinstance(index, TorchFlatIndex):
        return index.range_search(q, sq_radius)
    if isinstance(index, ShardedFlatIndex):
        with _direct_distances():
            return index.range_search(q, sq_radius)
    if not isinstance(index, faiss.Index):
        raise ConfigError(f"{type(index).__name__} has no range search")
    with contextlib.ExitStack() as stack:
        if len(q) <= FEW_QUERIES:
            stack.enter_context(_one_openmp_thread())
        if isinstance(index, faiss.IndexFlat):
            stack.enter_context(_direct_distances())
        lims, dist, ids = index.range_search(q, sq_radius)
    return lims.astype(np.int64), dist, ids.astype(np.int64)


_blas_lock = threading.Lock()
_direct_users = 0
_saved_blas_threshold = 0


@contextlib.contextmanager
def _direct_distances() -> Iterator[None]:
    """FAISS's flat distances as sums of squared differences while inside (not through BLAS as
    |q|^2 + |x|^2 - 2 q.x, whose float32 rounding is about 1e-7 of the squared norms: raw windows with
    squared norms of thousands would lose every distance below a few centimetres). FAISS holds the
    switch in one global, so it is counted across threads and restored by the last one out."""
    global _direct_users, _saved_blas_threshold
    with _blas_lock:
        if _direct_users == 0:
            _saved_blas_threshold = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
        _direct_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _direct_users -= 1
            if _direct_users == 0:
                faiss.cvar.distance_compute_blas_threshold = _saved_blas_threshold


def range_search(
    index: SearchIndex,
    queries: np.ndarray,
    radius: float,
    *,
    query_rows: np.ndarray | None = None,
    exclude: Groups | None = None,
    query_groups: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    max_results: int = MAX_RANGE_RESULTS,
) -> RangeResult:
    """(Q, D) queries -> every row strictly closer than ``radius`` (Euclidean) under the rules of
    ``search`` (own row, exclusion groups, allowed rows), nearest first per query.

    Exact with an exact index; an IVF index searches the cells it probes (``nprobe``), HNSW its graph.
    Distances are computed from differences (``_direct_distances``), so rows identical to a query count
    as within any radius however far from the origin they lie.
    Queries go in chunks whose worst case (every row within the radius) stays bounded; more than
    ``max_results`` results in all is refused (a radius that joins most of the rows).
    """
    radius = check_float("radius", radius, 0.0, low_open=True)
    q, n, rows_q, groups_q = _checked_arguments(index, queries, query_rows, exclude, query_groups, allowed)
    # Chunks sized by the results seen so far: the first bounds the worst case (every row within the
    # radius), later ones grow where results are few, since each FAISS call is a parallel region and
    # tens of thousands of small ones stall on a busy machine (one run at 1M windows: 30 s, then 279 s).
    step = max(16, min(RANGE_FIRST_CHUNK, CANDIDATE_ELEMENTS // max(n, 1)))
    parts_q, parts_d, parts_r = [], [], []
    total = 0
    start = 0
    while start < len(q):
        stop = min(len(q), start + step)
        lims, d2, ids = raw_range_search(index, q[start:stop], radius * radius)
        per_query = len(ids) / (stop - start)
        step = int(min(RANGE_MAX_CHUNK, max(16, CANDIDATE_ELEMENTS // (4 * per_query + 1))))
        qi = np.repeat(np.arange(start, stop), np.diff(lims))
        start = stop
        keep = ids >= 0
        if rows_q is not None:
            keep &= ids != rows_q[qi]
        if exclude is not None and groups_q is not None:
            keep &= exclude.ids[np.maximum(ids, 0)] != groups_q[qi]
        if allowed is not None:
            keep &= np.asarray(allowed, dtype=bool)[np.maximum(ids, 0)]
        total += int(keep.sum())
        if total > max_results:
            raise DataError(
                f"more than {max_results:,} results within {radius:g}: the radius joins most rows; "
                "give a smaller one"
            )
        parts_q.append(qi[keep])
        parts_d.append(d2[keep])
        parts_r.append(ids[keep])
    qi = np.concatenate(parts_q) if parts_q else np.zeros(0, np.int64)
    d2 = np.concatenate(parts_d) if parts_d else np.zeros(0, np.float32)
    rows = np.concatenate(parts_r) if parts_r else np.zeros(0, np.int64)
    order = np.lexsort((rows, d2, qi))  # by query, then nearest first (ties by row)
    lims = np.zeros(len(q) + 1, np.int64)
    np.cumsum(np.bincount(qi, minlength=len(q)), out=lims[1:])
    dist = np.sqrt(np.maximum(d2[order], 0.0)).astype(np.float32)
    return RangeResult(lims, dist, rows[order].astype(np.int64))


def rerank(
    rows: np.ndarray, queries: np.ndarray, row_features: Callable[[np.ndarray], np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of each query's candidate rows nearest to it in another feature space: a shortlist found
    by one index (a compact embedding) re-ranked exactly in the space that matters (raw trajectories).

    FAISS's ``IndexRefine`` re-ranks in the space it indexed; here the two spaces differ in kind and
    dimension.

    Args:
        rows: (Q, C) candidate rows, -1 for none (``search``'s output, its rules already applied).
        queries: (Q, F) the queries in the re-ranking space.
        row_features: (n,) rows -> (n, F) their features in that space.
        k: results per query.

    Returns:
        (Q, k) Euclidean distances in the re-ranking space and (Q, k) rows, nearest first, (inf, -1)
        where a query has fewer than k candidates.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    rows = np.asarray(rows, dtype=np.int64)
    q = np.asarray(queries, dtype=np.float64)
    if rows.ndim != 2 or q.ndim != 2 or len(q) != len(rows):
        raise DataError(f"candidates {rows.shape} and queries {q.shape} do not match (Q, C) / (Q, F)")
    valid = rows >= 0
    dist = np.full(rows.shape, np.inf)
    if valid.any():
        uniq, inverse = np.unique(rows[valid], return_inverse=True)
        features = np.asarray(row_features(uniq), dtype=np.float64)
        if features.shape != (len(uniq), q.shape[1]):
            raise DataError(f"row features have shape {features.shape}, expected ({len(uniq)}, {q.shape[1]})")
        query_of = np.nonzero(valid)[0]
        dist[valid] = np.linalg.norm(features[inverse] - q[query_of], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(dist, order, axis=1)
    out = np.where(np.isfinite(dist), np.take_along_axis(rows, order, axis=1), -1)
    return pad(dist.astype(np.float32), out, k)


class NeighborIndex:
    """A raw index bound to its rows' tracks: search with the query's row and track left out, row
    filters and one result per track (``search``'s rules).

    Args:
        index: a raw index over the N rows.
        groups: (N,) int track of each row.
        embeddings: (N, D) the indexed vectors (an array, or anything with ``rows(idx)``, read only when
            needed), for exact search over small allowed subsets; None disables that path (filtered
            searches then go through the index's id selector).
    """

    def __init__(self, index: SearchIndex, groups: np.ndarray, embeddings: Any = None) -> None:
        if len(groups) != index.ntotal:
            raise DataError(f"index holds {index.ntotal} rows but {len(groups)} group ids were given")
        self.index = index
        self.tracks = Groups.of(groups)
        self.embeddings = embeddings

    @property
    def groups(self) -> np.ndarray:
        return self.tracks.ids

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_groups: np.ndarray | None = None,
        query_rows: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        one_per_group: bool = False,
        collapse_eps: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (Q, k) Euclidean distances and (Q, k) rows, nearest first.

        Args:
            query_groups: (Q,) track of each query: rows of that track are never returned.
            query_rows: (Q,) the query's own row, never returned.
            allowed: (N,) bool, rows that may be returned (shared by all queries); None = all.
            one_per_group: keep only the nearest row of each track.
            collapse_eps: near-duplicates within this distance answer once (``search``).
        """
        return search(
            self.index,
            queries,
            k,
            query_rows=query_rows,
            exclude=self.tracks if query_groups is not None else None,
            query_groups=query_groups,
            distinct=self.tracks if one_per_group else None,
            allowed=allowed,
            embeddings=self.embeddings,
            collapse_eps=collapse_eps,
        )


# -- against exact search ----------------------------------------------------------------------------
def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-k ids (-1 = none) that the approximate search also returned."""
    hits = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approx_ids, exact_ids, strict=True))
    total = int((exact_ids >= 0).sum())
    return hits / total if total else 1.0


def measure_recall(index: SearchIndex, x: np.ndarray, rng: np.random.Generator, k: int = 10) -> float:
    """recall@k of ``index`` over its (N, D) rows ``x`` against exact search, with sampled rows as
    queries (each query's own row left out of both lists, so it is not counted as a free find)."""
    rows = rng.choice(len(x), size=min(RECALL_QUERIES, len(x)), replace=False)
    exact = exact_index(x)
    _, ref = search(exact, x[rows], k, query_rows=rows)
    _, got = search(index, x[rows], k, query_rows=rows)
    return recall_at_k(got, ref)


def rank_of(
    features: np.ndarray,
    queries: np.ndarray,
    targets: np.ndarray,
    exclude: Groups,
    query_groups: np.ndarray,
    chunk: int = 256,
) -> np.ndarray:
    """(Q,) rank (1 = nearest) of row ``targets[i]`` among the rows that may answer query i: 1 + the
    number of rows outside the query's ``exclude`` group at a distance at most the target's. Ties count
    against the target (features that map everything to one point rank it last, not first).

    Args:
        features: (N, D) database rows; queries: (Q, D); targets: (Q,) rows.
        exclude, query_groups: rows of the query's (Q,) group do not count (the target may be in it).
    """
    import torch

    db = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    qf = np.ascontiguousarray(queries, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    groups = np.asarray(query_groups, dtype=np.int64)
    ranks = np.empty(len(qf), dtype=np.int64)
    for start in range(0, len(qf), chunk):
        stop = start + chunk
        d = torch.cdist(torch.from_numpy(qf[start:stop]), db)  # (q, N)
        twin = d[torch.arange(d.shape[0]), torch.from_numpy(targets[start:stop])]
        other = torch.from_numpy(exclude.ids[None, :] != groups[start:stop][:, None])
        ranks[start:stop] = 1 + ((d <= twin[:, None]) & other).sum(dim=1).numpy()
    return ranks
