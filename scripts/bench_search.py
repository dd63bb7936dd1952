"""Benchmark: nearest-neighbour search queries/s at N = 100k and 1M (CPU: FAISS flat vs IVF vs HNSW, with
recall@10 against flat), exact PyTorch CUDA search where a GPU is present (N up to 10M), and encode
windows/s of a shipped checkpoint on CPU (and GPU).

Usage: python scripts/bench_search.py [--sizes 100000,1000000] [--dim 16] [--queries 1000] [--gpu-sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trajemb.checkpoint import load_checkpoint
from trajemb.embed import embed_windows
from trajemb.index import IndexSpec, TorchFlatIndex, build_faiss_index, recall_at_k
from trajemb.pipeline import shipped_checkpoints


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_search(index: object, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    index.search(q[:10], k)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    _, ids = index.search(q, k)  # type: ignore[attr-defined]
    return len(q) / (time.perf_counter() - t0), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--gpu-sizes", default="1000000,10000000")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    q = unit(args.queries, args.dim, 1)
    print(
        f"search, D={args.dim}, k={args.k}, {args.queries} queries per run; CPU threads {torch.get_num_threads()}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        db = unit(n, args.dim, 0)
        t0 = time.perf_counter()
        flat = build_faiss_index(db)
        build_flat = time.perf_counter() - t0
        qps_flat, exact = timed_search(flat, q, args.k)
        print(f"N={n:>9,}  faiss flat : {qps_flat:10.0f} q/s  (build {build_flat:.1f} s)")
        for kind in ("ivf", "hnsw"):
            t0 = time.perf_counter()
            index = build_faiss_index(db, IndexSpec(kind=kind))
            build_s = time.perf_counter() - t0
            qps, ids = timed_search(index, q, args.k)
            print(f"N={n:>9,}  faiss {kind:5s}: {qps:10.0f} q/s  recall@{args.k} {recall_at_k(ids, exact):.3f}  "
                  f"(build {build_s:.1f} s)")  # fmt: skip
    if torch.cuda.is_available():
        for n in (int(s) for s in args.gpu_sizes.split(",")):
            db = unit(n, args.dim, 0)
            index = TorchFlatIndex(db, "cuda")
            qps, _ = timed_search(index, q, args.k)
            torch.cuda.synchronize()
            print(f"N={n:>9,}  torch CUDA exact ({torch.cuda.get_device_name()}): {qps:10.0f} q/s")
    ckpt = next(c for c in shipped_checkpoints() if c.name.endswith("d16"))
    model, _ = load_checkpoint(ckpt)
    xy = np.cumsum(np.random.default_rng(2).normal(size=(20_000, 60, 2)).astype(np.float32), axis=1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        embed_windows(model, xy[:1000], device)
        t0 = time.perf_counter()
        embed_windows(model, xy, device)
        print(f"encode {ckpt.name} on {device}: {len(xy) / (time.perf_counter() - t0):10.0f} windows/s")


if __name__ == "__main__":
    main()
