"""Building and persisting FAISS indices; searching them is ``trajemb.retrieval.search``.

Exact flat below ``IndexSpec.exact_max_rows``, IVF above it, HNSW on request; FAISS on GPU when it
reports GPUs, and an exact PyTorch CUDA search otherwise. An IVF index's ``nprobe`` is tuned at build
time until recall@10 against exact search reaches ``target_recall`` on sampled rows; the measured
recall is returned with the index so that a bundle can store and show it.

Legend: N database rows, D embedding dim.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trajemb.core.atomic import atomic_path
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.fields import Bounds, check_fields, param
from trajemb.retrieval.search import SearchIndex, TorchFlatIndex, check_embeddings, measure_recall

log = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")
#: ``auto`` is exact up to this many rows: one exact query against 250k 16-D rows takes about 1 ms.
EXACT_MAX_ROWS = 250_000


@dataclass(frozen=True)
class IndexSpec:
    """Which index to build.

    ``kind`` auto: flat (exact) up to ``exact_max_rows`` rows, IVF above. ``nlist`` 0 picks
    4 * sqrt(N) IVF cells; ``nprobe`` 0 tunes it to reach ``target_recall`` (recall@10 against exact).
    """

    kind: str = param(
        "auto",
        help="auto: exact up to exact_max_rows windows, IVF above; flat, ivf, hnsw",
        choices=INDEX_KINDS,
    )
    nlist: int = param(0, help="IVF cells (0: 4 sqrt(N))", low=0, high=1 << 24)
    nprobe: int = param(0, help="IVF cells probed (0: tuned to target_recall)", low=0, high=1 << 24)
    target_recall: float = param(
        0.95, help="IVF recall@10 against exact search", bounds=Bounds(0.0, 1.0, low_open=True)
    )
    hnsw_m: int = param(32, help="HNSW links per node", low=2, high=512)
    ef_search: int = param(128, help="HNSW search breadth", low=1, high=1 << 16)
    exact_max_rows: int = param(EXACT_MAX_ROWS, help="largest exact index of kind auto", low=0)

    def __post_init__(self) -> None:
        check_fields(self)

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


def build_search_index(
    embeddings: np.ndarray, spec: IndexSpec = IndexSpec(), seed: int = 0
) -> tuple[faiss.Index, IndexInfo]:
    """A CPU FAISS index over (N, D) float32 embeddings (L2; on unit vectors it ranks as cosine), and
    what was built. Approximate indices are measured against exact search on sampled rows."""
    t0 = time.perf_counter()
    x = check_embeddings(embeddings)
    n, d = x.shape
    kind = spec.resolved_kind(n)
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(x)
        return index, IndexInfo("flat", n, build_s=time.perf_counter() - t0)
    rng = np.random.default_rng(seed)
    if kind == "ivf":
        if spec.nlist > n:  # FAISS's k-means needs a training point per cell (it raised a RuntimeError)
            raise ConfigError(
                f"nlist {spec.nlist} is more IVF cells than the {n} rows to index; give at most {n}, "
                "or 0 for 4 sqrt(N)",
                fields=("nlist",),
            )
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
            )
        if kind != "flat":
            raise ConfigError(
                "FAISS reports no GPU: only the exact flat index runs on CUDA (through PyTorch)"
            )
        return TorchFlatIndex(check_embeddings(embeddings), device)
    return build_faiss_index(embeddings, spec)


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
