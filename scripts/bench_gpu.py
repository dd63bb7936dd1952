"""Benchmark: the encoder and exact search on a CUDA GPU, with how far bf16 moves the results.

``encode``: windows/s of ``trajemb.training.embed.Embedder`` on the GPU for a shipped checkpoint, in float32
(the default on every device) and in bf16 autocast, at several batch sizes, on random-walk windows;
then, on the first 50,000 of them, the largest embedding difference to the CPU float32 embeddings
and recall@10 of the neighbours found with GPU embeddings against those found with CPU embeddings
(2,000 queries).

``search``: ``trajemb.retrieval.search.TorchFlatIndex`` (exact, PyTorch on CUDA) at each --sizes rows of unit
D-dimensional vectors: one query at a time (median and p95 ms), batches (queries/s), and agreement
with FAISS flat on the CPU at the first size.

Usage: python scripts/bench_gpu.py [encode] [search] [--windows 1000000] [--sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np
import torch

from trajemb.retrieval.index import IndexSpec, build_faiss_index
from trajemb.retrieval.search import TorchFlatIndex, recall_at_k
from trajemb.serving.pipeline import shipped_checkpoints
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import Embedder

FLAT = IndexSpec(kind="flat")  # exact at every size (the default switches to IVF above 250k rows)


def random_walks(n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 0.5, (n, steps, 2)), axis=1, dtype=np.float32)


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def timed(fn: object) -> float:
    """Seconds of one call; every call here returns host arrays, so the device is done when it returns."""
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{device} (dry run)"


def bench_encode(checkpoint: str, windows: int, steps: int, device: str) -> None:
    ckpt = next(c for c in shipped_checkpoints() if c.name == checkpoint)
    model, _ = load_checkpoint(ckpt)
    xy = random_walks(windows, steps)
    print(f"encode: {checkpoint}, {windows:,} random-walk windows of {steps} steps, {device_name(device)}")
    for bf16 in (True, False):
        for batch in (8192, 32768, 131072):
            embedder = Embedder(model, device, batch_size=batch, bf16=bf16)
            embedder(xy[:batch])  # warm-up: kernels, allocator
            seconds = min(timed(lambda e=embedder: e(xy)) for _ in range(2))
            print(
                f"  {'bf16' if bf16 else 'fp32'} batch {batch:7,d}: {windows / seconds:12,.0f} windows/s "
                f"(host arrays in, host arrays out)"
            )
    sample = xy[:50_000]
    cpu = Embedder(model, "cpu")(sample)
    for bf16 in (True, False):
        gpu = Embedder(model, device, bf16=bf16)(sample)
        _, ids_cpu = build_faiss_index(cpu, FLAT).search(cpu[:2000], 11)
        _, ids_gpu = build_faiss_index(gpu, FLAT).search(gpu[:2000], 11)
        recall = recall_at_k(ids_gpu[:, 1:], ids_cpu[:, 1:])
        print(
            f"  {'bf16' if bf16 else 'fp32'} on GPU vs fp32 on CPU, 50,000 windows: largest |difference| "
            f"{np.abs(gpu - cpu).max():.2e}, neighbour recall@10 {recall:.3f}"
        )


def bench_search(sizes: list[int], dim: int, queries: int, device: str) -> None:
    print(f"search: exact, D = {dim}, k = 10, {device_name(device)}")
    q_all = unit_rows(queries, dim, seed=1)
    for i, n in enumerate(sizes):
        db = unit_rows(n, dim, seed=0)
        index = TorchFlatIndex(db, device)
        index.search(q_all[:100], 10)  # warm-up
        single = []
        for j in range(300):
            t0 = time.perf_counter()
            index.search(q_all[j : j + 1], 10)
            single.append(1000 * (time.perf_counter() - t0))
        seconds = timed(lambda idx=index: idx.search(q_all, 10))
        print(
            f"  {n:12,d} rows: one query median {statistics.median(single):.2f} ms (p95 "
            f"{np.percentile(single, 95):.2f}); batch of {queries:,}: {queries / seconds:,.0f} queries/s "
            f"({index.chunk:,} queries per chunk)"
        )
        if i == 0:
            flat = build_faiss_index(db, FLAT)
            t0 = time.perf_counter()
            _, ref = flat.search(q_all[:2000], 10)
            cpu_qps = 2000 / (time.perf_counter() - t0)
            _, got = index.search(q_all[:2000], 10)
            threads = faiss.omp_get_max_threads()
            print(
                f"  {n:12,d} rows: FAISS flat (exact) on {threads} OpenMP threads {cpu_qps:,.0f} queries/s; "
                f"ids equal to FAISS for {np.mean((got == ref).all(axis=1)):.4f} of 2,000 queries, "
                f"recall@10 {recall_at_k(got, ref):.4f}"
            )
        del index, db
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help="encode, search (default: both)")
    parser.add_argument("--checkpoint", default="compact-cosine-d16")
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument(
        "--device", default="cuda", help="cuda, or cpu for a dry run of the script at small sizes"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (--device cpu runs it as a dry run)")
    parts = args.parts or ["encode", "search"]
    if set(parts) - {"encode", "search"}:
        parser.error(f"parts are encode and search, got {' '.join(parts)}")
    if "encode" in parts:
        bench_encode(args.checkpoint, args.windows, args.steps, args.device)
    if "search" in parts:
        bench_search([int(s) for s in args.sizes.split(",")], args.dim, args.queries, args.device)


if __name__ == "__main__":
    main()
