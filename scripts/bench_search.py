"""Benchmark: nearest-neighbour search on a bundle's own embeddings (default: the 1M-window bundle of
``scripts/bench_scale.py``), D = 16, k = 10.

Prints: exact search one query at a time (FAISS flat, and split over one shard per core as the
explorer does) and in batch; the bundle's own index (IVF with the nprobe tuned at build time) with its
recall@10 against exact search and queries/s; IVF at the old fixed nprobe 16 and HNSW for comparison;
``trajemb search`` as a whole process; exact PyTorch CUDA search where a GPU is present.

Usage: python scripts/bench_search.py [--bundle PATH] [--queries 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from trajemb.analysis.bundle import Bundle
from trajemb.retrieval.index import IndexSpec, build_search_index
from trajemb.retrieval.search import ShardedFlatIndex, recall_at_k

REPO = Path(__file__).resolve().parents[1]


def per_query_ms(search: object, q: np.ndarray, n: int = 300) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        search(q[i : i + 1], 11)  # type: ignore[operator]
        out.append(1000 * (time.perf_counter() - t0))
    return out


def qps(index: object, q: np.ndarray) -> tuple[float, np.ndarray]:
    index.search(q[:10], 11)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    _, ids = index.search(q, 11)  # type: ignore[attr-defined]
    return len(q) / (time.perf_counter() - t0), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(REPO / ".cache" / "bench_scale" / "n1000000" / "bundle"))
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    bundle = Bundle(Path(args.bundle))
    name = bundle.model_names[0]
    emb = np.ascontiguousarray(bundle.embeddings(name).all())
    n, d = emb.shape
    rng = np.random.default_rng(0)
    q = emb[rng.choice(n, size=args.queries, replace=False)]
    print(
        f"{n:,} embeddings of D = {d} ({name}), {args.queries} queries from the corpus, k = 10; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    flat = faiss.IndexFlatL2(d)
    flat.add(emb)
    sharded = ShardedFlatIndex(emb, os.cpu_count() or 1)
    one = per_query_ms(flat.search, q)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(
        1
    )  # what NeighborIndex does for a few queries (trajemb.retrieval.search.FEW_QUERIES)
    single = per_query_ms(flat.search, q)
    faiss.omp_set_num_threads(threads)
    split = per_query_ms(sharded.search, q)
    print(
        f"  exact, one query: FAISS flat median {statistics.median(one):.2f} ms (p95 {np.percentile(one, 95):.2f}) "
        f"on {threads} OpenMP threads, {statistics.median(single):.2f} ms (p95 {np.percentile(single, 95):.2f}) "
        f"on one (trajemb's search); sharded over the cores median {statistics.median(split):.2f} ms "
        f"(p95 {np.percentile(split, 95):.2f})"
    )
    rate, exact = qps(flat, q)
    print(f"  exact, batch: {rate:,.0f} queries/s")

    def report(label: str, index: object) -> None:
        rate, ids = qps(index, q)
        print(f"  {label:44s} {rate:9,.0f} queries/s  recall@10 {recall_at_k(ids[:, 1:], exact[:, 1:]):.3f}")

    info = bundle.model_entry(name)["index"]
    report(f"bundle index: {info['kind']}, nprobe {info.get('nprobe')} (tuned)", bundle.index(name).index)
    report("IVF, nprobe 16 (the old default)", build_search_index(emb, IndexSpec(kind="ivf", nprobe=16))[0])
    report("HNSW, M 32, efSearch 128", build_search_index(emb, IndexSpec(kind="hnsw"))[0])
    query = bundle.strings("window_id", [n // 3])[0]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "trajemb",
                "search",
                "--bundle",
                args.bundle,
                "--query",
                query,
                "--k",
                "10",
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t0)
    print(f"  trajemb search --k 10 as a whole process: median {statistics.median(times):.2f} s of 5")
    import torch

    if torch.cuda.is_available():
        from trajemb.retrieval.search import TorchFlatIndex

        report(f"torch CUDA exact ({torch.cuda.get_device_name()})", TorchFlatIndex(emb, "cuda"))


if __name__ == "__main__":
    main()
