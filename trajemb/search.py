"""Nearest-neighbour search: the one module every search of trajemb goes through.

Two layers:

* **Raw indices** (``SearchIndex``) keep FAISS's ``(D, I)`` contract: (Q, k) *squared* L2 distances,
  ascending, and (Q, k) row ids with -1 for "no result". They are FAISS indices (exact flat, IVF,
  HNSW: built by ``trajemb.index``), ``TorchFlatIndex`` (exact, PyTorch, for CUDA devices FAISS cannot
  use) and ``ShardedFlatIndex`` (exact, rows split over the cores for single queries).
* **Rules** (``search``, and ``NeighborIndex`` which binds an index to its rows' tracks): which rows may
  answer a query. The query's own row; every row of the query's *exclusion group* (its track, or its
  scenario); rows outside an ``allowed`` mask; and all but the nearest row of each *distinct group*
  (one window per track). Results are **Euclidean** distances (not squared: the one distance unit of
  trajemb above this module), nearest first, (inf, -1) where fewer than k rows qualify.

With an exact index the rules cost no results: ``search`` returns what brute force over the
qualifying rows returns (tests pin it). It fetches enough candidates for the usual case (k, or 4 k
with one row per distinct group, plus the rows the query's exclusion group holds, plus one) and, for
the queries whose candidates ran out before k survived the rules, fetches four times as many until
k survive or every row was seen. With an approximate index the candidates are what the index finds; allowed rows missed
by an IVF index's probes are searched exactly (``embeddings`` given).

``rerank`` re-ranks a shortlist exactly in another feature space. ``measure_recall`` and
``recall_at_k`` compare an approximate index with exact search, ``rank_of`` gives the rank of a given
row among a query's neighbours (the mean-rank measure of ``trajemb.robustness``).

Legend: N database rows, Q queries, D feature dim, k neighbours.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from trajemb.errors import ConfigError, DataError

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


def exact_index(features: np.ndarray, device: str = "cpu") -> SearchIndex:
    """An exact index over (N, D) features: FAISS flat on the CPU, ``TorchFlatIndex`` on other devices."""
    x = check_embeddings(features)
    if device != "cpu":
        return TorchFlatIndex(x, device)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    return flat  # type: ignore[no-any-return]


def parallel_exact(index: Any, embeddings: np.ndarray, min_rows: int = PARALLEL_EXACT_ROWS) -> Any:
    """A flat index over ``min_rows`` rows or more becomes a ``ShardedFlatIndex`` with a shard per core."""
    cores = os.cpu_count() or 1
    if isinstance(index, faiss.IndexFlat) and index.ntotal >= min_rows and cores > 1:
        return ShardedFlatIndex(embeddings, cores)
    return index


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
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, in distance order
    dist = np.take_along_axis(np.where(keep, sq_dist, np.inf), order, axis=1)
    rows = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
    dist, rows = pad(dist, rows, k)
    return dist, rows, keep.sum(axis=1)


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
            exact search over small allowed subsets and over allowed rows an approximate index missed.

    Excluded and missing results are (inf, -1) at the end of each row.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
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


def _embedding_rows(embeddings: Any, rows: np.ndarray) -> np.ndarray:
    """Rows of the embeddings: an array, or an object reading (and verifying) rows on demand."""
    reader = getattr(embeddings, "rows", None)
    out = reader(rows) if reader is not None else np.asarray(embeddings)[rows]
    return np.ascontiguousarray(out, dtype=np.float32)


def _subset_search(embeddings: Any, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sub = faiss.IndexFlatL2(q.shape[1])
    sub.add(_embedding_rows(embeddings, rows))
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
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (Q, k) Euclidean distances and (Q, k) rows, nearest first.

        Args:
            query_groups: (Q,) track of each query: rows of that track are never returned.
            query_rows: (Q,) the query's own row, never returned.
            allowed: (N,) bool, rows that may be returned (shared by all queries); None = all.
            one_per_group: keep only the nearest row of each track.
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
