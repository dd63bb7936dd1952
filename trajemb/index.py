"""Nearest-neighbour indices over embeddings: FAISS (exact flat by default; IVF / HNSW for large N),
FAISS on GPU when it reports GPUs, and an exact PyTorch CUDA search otherwise.

Every index keeps FAISS's ``(D, I)`` contract: (Q, k) squared L2 distances, ascending, and (Q, k) row
ids with -1 for "no result". ``NeighborIndex`` adds the one thing retrieval needs on top: excluding the
query's own row and every row of the same track, exactly, by over-fetching the largest group size.

Legend: N database rows, Q queries, D embedding dim, k neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import torch

from trajemb.atomic import atomic_path
from trajemb.errors import ConfigError, DataError

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


class SearchIndex(Protocol):
    d: int
    ntotal: int

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class IndexSpec:
    """Which index to build. ``nlist`` 0 picks 4 * sqrt(N) IVF cells."""

    kind: str = "flat"
    nlist: int = 0
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}")


class TorchFlatIndex:
    """Exact L2 search with PyTorch on a CUDA device (for GPUs FAISS cannot use)."""

    def __init__(self, embeddings: np.ndarray, device: torch.device | str, chunk: int = 8192) -> None:
        self.device = torch.device(device)
        self.db = torch.as_tensor(embeddings, dtype=torch.float32, device=self.device)
        self.db_sq = (self.db * self.db).sum(dim=1)
        self.d = int(embeddings.shape[1])
        self.ntotal = int(embeddings.shape[0])
        self.chunk = chunk

    @torch.no_grad()
    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k_eff = min(k, self.ntotal)
        dists, ids = [], []
        for start in range(0, x.shape[0], self.chunk):
            q = torch.as_tensor(x[start : start + self.chunk], dtype=torch.float32, device=self.device)
            d2 = ((q * q).sum(dim=1, keepdim=True) - 2.0 * q @ self.db.T + self.db_sq[None]).clamp_min(0.0)
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


def build_faiss_index(embeddings: np.ndarray, spec: IndexSpec = IndexSpec()) -> faiss.Index:
    """A CPU FAISS index over (N, D) float32 embeddings (L2 metric; on unit vectors it ranks as cosine)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    index: faiss.Index
    if spec.kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif spec.kind == "ivf":
        nlist = spec.nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        ivf.train(x)
        ivf.nprobe = min(spec.nprobe, nlist)
        index = ivf
    else:
        hnsw = faiss.IndexHNSWFlat(d, spec.hnsw_m)
        hnsw.hnsw.efSearch = spec.ef_search
        index = hnsw
    index.add(x)
    return index


def build_index(embeddings: np.ndarray, spec: IndexSpec = IndexSpec(), device: str = "cpu") -> SearchIndex:
    """FAISS on GPU if asked and available, exact torch search on CUDA otherwise, FAISS CPU by default."""
    index = build_faiss_index(embeddings, spec)
    if device.startswith("cuda"):
        if faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources"):
            return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)  # type: ignore[no-any-return]
        if spec.kind != "flat":
            raise ConfigError(
                "FAISS reports no GPU: only the exact flat index runs on CUDA (through PyTorch)"
            )
        return TorchFlatIndex(embeddings, device)
    return index  # type: ignore[no-any-return]


def save_faiss_index(index: faiss.Index, path: Path) -> None:
    """Write a CPU FAISS index atomically."""
    with atomic_path(Path(path)) as tmp:
        faiss.write_index(index, str(tmp))


def load_faiss_index(path: Path, expected_dim: int | None = None) -> faiss.Index:
    """Read a FAISS index file (binary, no pickle); check its dimension."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: index file not found")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: corrupt or unreadable FAISS index ({str(exc).splitlines()[0]})") from exc
    if expected_dim is not None and index.d != expected_dim:
        raise DataError(f"{path}: index has dimension {index.d}, the model embeds into {expected_dim}")
    return index


class NeighborIndex:
    """Search with exclusion of the query's own row and of rows in the query's group (track)."""

    def __init__(self, index: SearchIndex, groups: np.ndarray) -> None:
        if len(groups) != index.ntotal:
            raise DataError(f"index holds {index.ntotal} rows but {len(groups)} group ids were given")
        self.index = index
        self.groups = np.asarray(groups, dtype=np.int64)
        self.max_group = int(np.bincount(self.groups).max()) if len(self.groups) else 0

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_groups: np.ndarray | None = None,
        query_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (D, I), each (Q, k); excluded and missing results are (inf, -1)."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"queries have shape {q.shape}, the index expects (Q, {self.dim})")
        extra = (self.max_group if query_groups is not None else 0) + (1 if query_rows is not None else 0)
        k_fetch = min(k + extra, self.index.ntotal)
        dist, ids = self.index.search(q, k_fetch)
        keep = ids >= 0
        if query_rows is not None:
            keep &= ids != np.asarray(query_rows)[:, None]
        if query_groups is not None:
            keep &= self.groups[np.maximum(ids, 0)] != np.asarray(query_groups)[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, in distance order
        dist = np.take_along_axis(np.where(keep, dist, np.inf), order, axis=1)
        ids = np.take_along_axis(np.where(keep, ids, -1), order, axis=1)
        return _pad(dist, ids, k)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-k ids that the approximate search also returned."""
    hits = sum(len(set(a[a >= 0]) & set(e[e >= 0])) for a, e in zip(approx_ids, exact_ids, strict=True))
    total = int((exact_ids >= 0).sum())
    return hits / total if total else 1.0
