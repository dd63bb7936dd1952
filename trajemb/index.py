"""Nearest-neighbour search over embeddings: the one search module of trajemb.

FAISS indices (exact flat below ``IndexSpec.exact_max_rows``, IVF above it, HNSW on request), FAISS on
GPU when it reports GPUs, and an exact PyTorch CUDA search otherwise. An IVF index's ``nprobe`` is tuned
at build time until recall@10 against exact search reaches ``target_recall`` on sampled rows; the
measured recall is returned with the index so that a bundle can store and show it.

Raw indices keep FAISS's ``(D, I)`` contract: (Q, k) squared L2 distances, ascending, and (Q, k) row
ids with -1 for "no result". ``NeighborIndex`` is what retrieval uses on top: it returns Euclidean
distances (not squared: one distance unit everywhere above this module), excludes the query's own row
and every row of the same track exactly (by over-fetching the largest group size), restricts results
to an ``allowed`` row mask (FAISS ``IDSelectorBitmap``, or exact search over the allowed rows when
they are few) and can keep only the nearest window of each track.

Legend: N database rows, Q queries, D embedding dim, k neighbours.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from trajemb.atomic import atomic_path
from trajemb.errors import ConfigError, DataError
from trajemb.validate import check_float, check_int

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")
#: ``auto`` is exact up to this many rows: one exact query against 250k 16-D rows takes about 1 ms.
EXACT_MAX_ROWS = 250_000
#: Rows sampled as queries to measure recall@10 of an approximate index against exact search.
RECALL_QUERIES = 1000
#: Allowed-row masks with at most this many rows are searched exactly over those rows.
SMALL_SUBSET_ROWS = 20_000


class SearchIndex(Protocol):
    d: int
    ntotal: int

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class IndexSpec:
    """Which index to build.

    ``kind`` auto: flat (exact) up to ``exact_max_rows`` rows, IVF above. ``nlist`` 0 picks
    4 * sqrt(N) IVF cells; ``nprobe`` 0 tunes it to reach ``target_recall`` (recall@10 against exact).
    """

    kind: str = "auto"
    nlist: int = 0
    nprobe: int = 0
    target_recall: float = 0.95
    hnsw_m: int = 32
    ef_search: int = 128
    exact_max_rows: int = EXACT_MAX_ROWS

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}")
        check_float("--target-recall", self.target_recall, 0.0, 1.0, low_open=True)
        check_int("nlist", self.nlist, 0, 1 << 24)
        check_int("--nprobe", self.nprobe, 0, 1 << 24)
        check_int("--exact-max-rows", self.exact_max_rows, 0)
        check_int("hnsw_m", self.hnsw_m, 2, 512)
        check_int("ef_search", self.ef_search, 1, 1 << 16)

    def resolved_kind(self, num_rows: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if num_rows <= self.exact_max_rows else "ivf"


@dataclass(frozen=True)
class IndexInfo:
    """What was built: kind and parameters, recall@10 against exact search, build seconds."""

    kind: str
    num_rows: int
    nlist: int = 0
    nprobe: int = 0
    ef_search: int = 0
    recall_at_10: float = 1.0
    build_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Elements of the (queries x rows) distance matrix that ``TorchFlatIndex`` holds at once (float32: 1 GiB).
TORCH_DISTANCE_ELEMENTS = 1 << 28


class TorchFlatIndex:
    """Exact L2 search with PyTorch on a CUDA device (for GPUs FAISS cannot use).

    Queries go in chunks whose distance matrix holds at most ``max_elements`` values (at least one
    query per chunk), so memory stays bounded for N up to ``max_elements`` rows (8,192 queries at a
    time against 10M rows would need 328 GB)."""

    def __init__(
        self,
        embeddings: np.ndarray,
        device: torch.device | str,
        chunk: int = 8192,
        max_elements: int = TORCH_DISTANCE_ELEMENTS,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.db = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32, device=self.device)
        self.db_sq = (self.db * self.db).sum(dim=1)
        self.d = int(embeddings.shape[1])
        self.ntotal = int(embeddings.shape[0])
        self.chunk = max(1, min(chunk, max_elements // max(self.ntotal, 1)))

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        k_eff = min(k, self.ntotal)
        if x.shape[0] == 0:
            return _pad(np.empty((0, k_eff), np.float32), np.empty((0, k_eff), np.int64), k)
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
        return _pad(np.concatenate(dists), np.concatenate(ids), k)


def _pad(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if dist.shape[1] < k:
        extra = k - dist.shape[1]
        dist = np.concatenate([dist, np.full((dist.shape[0], extra), np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((ids.shape[0], extra), -1, np.int64)], axis=1)
    return dist.astype(np.float32), ids.astype(np.int64)


def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"embeddings have shape {x.shape}, expected (N, D) with N, D >= 1")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise DataError(f"{bad} of {len(x)} embeddings are NaN or infinite: the model or its input is broken")
    return x


def build_search_index(
    embeddings: np.ndarray, spec: IndexSpec = IndexSpec(), seed: int = 0
) -> tuple[faiss.Index, IndexInfo]:
    """A CPU FAISS index over (N, D) float32 embeddings (L2; on unit vectors it ranks as cosine), and
    what was built. Approximate indices are measured against exact search on sampled rows."""
    t0 = time.perf_counter()
    x = _check_embeddings(embeddings)
    n, d = x.shape
    kind = spec.resolved_kind(n)
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(x)
        return index, IndexInfo("flat", n, build_s=time.perf_counter() - t0)
    rng = np.random.default_rng(seed)
    if kind == "ivf":
        nlist = spec.nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        # 64 training points per cell: k-means quality is flat beyond that, and time is linear in it.
        train_rows = rng.choice(n, size=min(n, 64 * nlist), replace=False) if n > 64 * nlist else slice(None)
        ivf.train(x[train_rows])
        ivf.add(x)
        index = ivf
        if spec.nprobe:
            ivf.nprobe = min(spec.nprobe, nlist)
            recall = measure_recall(index, x, rng)
        else:
            ivf.nprobe, recall = _tune_nprobe(ivf, x, spec.target_recall, rng)
        info = IndexInfo("ivf", n, nlist=nlist, nprobe=int(ivf.nprobe), recall_at_10=recall)
    else:
        hnsw = faiss.IndexHNSWFlat(d, spec.hnsw_m)
        hnsw.hnsw.efSearch = spec.ef_search
        hnsw.add(x)
        index = hnsw
        info = IndexInfo("hnsw", n, ef_search=spec.ef_search, recall_at_10=measure_recall(index, x, rng))
    info = IndexInfo(**{**info.to_dict(), "build_s": time.perf_counter() - t0})
    log.info(
        "index %s over %d rows: recall@10 %.3f against exact (%.1f s)",
        kind,
        n,
        info.recall_at_10,
        info.build_s,
    )
    return index, info


def build_faiss_index(embeddings: np.ndarray, spec: IndexSpec = IndexSpec()) -> faiss.Index:
    """``build_search_index`` without the build report."""
    return build_search_index(embeddings, spec)[0]


def measure_recall(index: faiss.Index, x: np.ndarray, rng: np.random.Generator, k: int = 10) -> float:
    """recall@k of ``index`` against exact search, with sampled database rows as queries (each row's
    own hit removed from both lists, so it is not counted as a free find)."""
    rows = rng.choice(len(x), size=min(RECALL_QUERIES, len(x)), replace=False)
    exact = faiss.IndexFlatL2(x.shape[1])
    exact.add(x)
    _, ref = exact.search(x[rows], k + 1)
    _, got = index.search(x[rows], k + 1)
    return recall_at_k(_drop_self(got, rows, k), _drop_self(ref, rows, k))


def _drop_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    keep = ids != rows[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(np.where(keep, ids, -1), order, axis=1)


def _tune_nprobe(
    ivf: faiss.IndexIVF, x: np.ndarray, target: float, rng: np.random.Generator
) -> tuple[int, float]:
    """The smallest power-of-two ``nprobe`` whose recall@10 reaches ``target``."""
    rows_rng_state = rng.bit_generator.state
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = nprobe
        rng.bit_generator.state = rows_rng_state  # the same query rows at every nprobe
        recall = measure_recall(ivf, x, rng)
        if recall >= target or nprobe >= ivf.nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, ivf.nlist)


def build_index(embeddings: np.ndarray, spec: IndexSpec = IndexSpec(), device: str = "cpu") -> SearchIndex:
    """FAISS on GPU if asked and available, exact torch search on CUDA otherwise, FAISS CPU by default."""
    if device.startswith("cuda"):
        kind = spec.resolved_kind(len(embeddings))
        if faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources"):
            return faiss.index_cpu_to_gpu(
                faiss.StandardGpuResources(), 0, build_faiss_index(embeddings, spec)
            )  # type: ignore[no-any-return]
        if kind != "flat":
            raise ConfigError(
                "FAISS reports no GPU: only the exact flat index runs on CUDA (through PyTorch)"
            )
        return TorchFlatIndex(_check_embeddings(embeddings), device)
    return build_faiss_index(embeddings, spec)  # type: ignore[no-any-return]


def save_faiss_index(index: faiss.Index, path: Path) -> None:
    """Write a CPU FAISS index atomically."""
    with atomic_path(Path(path)) as tmp:
        faiss.write_index(index, str(tmp))


def load_faiss_index(
    path: Path, expected_dim: int | None = None, expected_rows: int | None = None
) -> faiss.Index:
    """Read a FAISS index file (binary, no pickle); check its dimension and size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: index file not found")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: corrupt or unreadable FAISS index ({str(exc).splitlines()[0]})") from exc
    if expected_dim is not None and index.d != expected_dim:
        raise DataError(f"{path}: index has dimension {index.d}, the model embeds into {expected_dim}")
    if expected_rows is not None and index.ntotal != expected_rows:
        raise DataError(f"{path}: index holds {index.ntotal} rows, the bundle has {expected_rows} windows")
    return index


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


class ShardedFlatIndex:
    """Exact L2 search over row ranges searched in parallel threads.

    FAISS parallelises a flat search over queries, so a single query (the explorer's case) runs on
    one core; splitting the rows over one shard per core lets every core scan a part. Each shard's
    thread runs FAISS on one OpenMP thread (otherwise every shard would start a team of its own and
    the cores are oversubscribed). Results are identical to ``IndexFlatL2``. ``allowed`` filters rows
    exactly (an id selector per shard, in local row numbers).
    """

    def __init__(self, embeddings: np.ndarray, shards: int) -> None:
        x = _check_embeddings(embeddings)
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
        return _pad(np.take_along_axis(dist, order, axis=1), np.take_along_axis(ids, order, axis=1), k)


#: Exact indices of at least this many rows are split over the cores for single queries.
PARALLEL_EXACT_ROWS = 100_000


def parallel_exact(index: Any, embeddings: np.ndarray, min_rows: int = PARALLEL_EXACT_ROWS) -> Any:
    """A flat index over ``min_rows`` rows or more becomes a ``ShardedFlatIndex`` with a shard per core."""
    cores = os.cpu_count() or 1
    if isinstance(index, faiss.IndexFlat) and index.ntotal >= min_rows and cores > 1:
        return ShardedFlatIndex(embeddings, cores)
    return index


class NeighborIndex:
    """Search with exclusion of the query's row and track, row filters and one result per track.

    Args:
        index: a FAISS index (or ``TorchFlatIndex``) over the N rows.
        groups: (N,) int track group of each row.
        embeddings: (N, D) the indexed vectors (an array, or anything with ``rows(idx)``, read only when
            needed), for exact search over small allowed subsets; None disables that path (filtered
            searches then go through the index's id selector).
    """

    def __init__(self, index: SearchIndex, groups: np.ndarray, embeddings: Any = None) -> None:
        if len(groups) != index.ntotal:
            raise DataError(f"index holds {index.ntotal} rows but {len(groups)} group ids were given")
        self.index = index
        self.groups = np.asarray(groups, dtype=np.int64)
        self.embeddings = embeddings
        self.max_group = int(np.bincount(self.groups).max()) if len(self.groups) else 0

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def _embedding_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the embeddings: an array, or an object reading (and verifying) rows on demand."""
        reader = getattr(self.embeddings, "rows", None)
        return np.asarray(reader(rows) if reader is not None else np.asarray(self.embeddings)[rows])

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
            query_groups: (Q,) track group of each query: rows of that group are never returned.
            query_rows: (Q,) the query's own row, never returned.
            allowed: (N,) bool, rows that may be returned (shared by all queries); None = all.
            one_per_group: keep only the nearest row of each track.

        Excluded and missing results are (inf, -1) at the end of each row.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"queries have shape {q.shape}, the index expects (Q, {self.dim})")
        if not np.isfinite(q).all():
            raise DataError(
                "query embeddings are NaN or infinite (a query with non-finite or absurd coordinates?)"
            )
        if allowed is not None and len(allowed) != len(self.groups):
            raise DataError(f"allowed mask has {len(allowed)} rows, the index {len(self.groups)}")
        per_group = self.max_group if one_per_group else 1
        extra = (self.max_group if query_groups is not None else 0) + (1 if query_rows is not None else 0)
        k_fetch = min(k * per_group + extra, self.index.ntotal)
        dist, ids = self._raw_search(q, k_fetch, allowed)
        keep = ids >= 0
        if query_rows is not None:
            keep &= ids != np.asarray(query_rows)[:, None]
        if query_groups is not None:
            keep &= self.groups[np.maximum(ids, 0)] != np.asarray(query_groups)[:, None]
        if one_per_group:
            keep &= _first_of_group(self.groups[np.maximum(ids, 0)], keep)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, in distance order
        dist = np.take_along_axis(np.where(keep, dist, np.inf), order, axis=1)
        ids = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
        dist, ids = _pad(dist, ids, k)
        return np.sqrt(np.maximum(dist, 0.0)).astype(np.float32), ids

    def _raw_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.index, ShardedFlatIndex):
            return self.index.search(q, k, allowed)
        if len(q) <= FEW_QUERIES and isinstance(self.index, faiss.Index):
            with _one_openmp_thread():
                return self._index_search(q, k, allowed)
        return self._index_search(q, k, allowed)

    def _index_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            return self.index.search(q, k)
        rows = np.flatnonzero(allowed)
        if len(rows) == 0:
            return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if self.embeddings is not None and (
            len(rows) <= SMALL_SUBSET_ROWS or not isinstance(self.index, faiss.Index)
        ):
            sub = faiss.IndexFlatL2(self.dim)
            sub.add(np.ascontiguousarray(self._embedding_rows(rows), dtype=np.float32))
            dist, local = sub.search(q, min(k, len(rows)))
            return _pad(dist, np.where(local >= 0, rows[np.maximum(local, 0)], -1), k)
        if not isinstance(self.index, faiss.Index):
            raise ConfigError(
                "filtered search on this index needs the embeddings (NeighborIndex(embeddings=...))"
            )
        bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        dist, ids = self.index.search(q, k, params=_search_parameters(self.index, selector))
        missing = (ids < 0).any(axis=1) & (len(rows) > (ids >= 0).sum(axis=1))
        if missing.any() and self.embeddings is not None:
            # An approximate index can miss allowed rows outside the probed cells: search those exactly.
            sub = faiss.IndexFlatL2(self.dim)
            sub.add(np.ascontiguousarray(self._embedding_rows(rows), dtype=np.float32))
            d2, local = sub.search(q[missing], min(k, len(rows)))
            d2, local = _pad(d2, local, k)
            dist[missing], ids[missing] = d2, np.where(local >= 0, rows[np.maximum(local, 0)], -1)
        return dist, ids


#: Searches of at most this many queries run FAISS on one OpenMP thread: it parallelises over queries,
#: so a team of threads only adds start-up and, on a busy machine, waits for a core (one query against
#: 1M rows on 2 cores, the other core busy: 24 ms with two threads, 3.8 ms with one).
FEW_QUERIES = 4


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


def _first_of_group(groups: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(Q, K) bool: True at the first kept occurrence of each group in every row (results are sorted)."""
    out = np.zeros_like(keep)
    for i in range(groups.shape[0]):
        g = np.where(keep[i], groups[i], -1)
        _, first = np.unique(g, return_index=True)
        out[i, first] = True
    return np.asarray(out & keep, dtype=bool)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-k ids that the approximate search also returned."""
    hits = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approx_ids, exact_ids, strict=True))
    total = int((exact_ids >= 0).sum())
    return hits / total if total else 1.0
