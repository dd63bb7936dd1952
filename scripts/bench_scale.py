"""Benchmark: one machine at AV2 scale. For each size (windows), synthetic scenarios -> table -> bundle with
one shipped checkpoint, each stage as the user runs it (``trajemb`` commands), with wall time and peak
memory of every command, the bundle's per-stage seconds, ``trajemb search`` as a whole process, and the
search figures on the bundle's own embeddings (exact single query, IVF at the tuned nprobe).

``--trust`` also compares the sampled UMAP layout with a full UMAP at the smallest size
(trustworthiness on a 5,000-row sample, scikit-learn), with the time of each.

Usage: python scripts/bench_scale.py [--sizes 100000,1000000] [--work .cache/bench_scale] [--trust] [--device cpu]
Outputs are reused when present (delete the work folder to start afresh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Synthetic scenarios of generator 2 (the default), 6 s windows, stride 1 s: 98,553 from 1,000 (generator 1: 109).
WINDOWS_PER_SCENARIO = 99


def run(args: list[str], label: str) -> tuple[float, float]:
    """Run ``python -m trajemb ARGS``; returns wall seconds and the peak resident memory (GB) of that process."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "trajemb", "-q", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed:\n{out}")
    peak_gb = usage.ru_maxrss / 1e6  # kB on Linux
    print(f"  {label:34s} {seconds:8.1f} s   peak {peak_gb:5.2f} GB")
    return seconds, peak_gb


def search_figures(bundle: Path, queries: int = 1000) -> None:
    import faiss

    from trajemb.analysis.bundle import Bundle
    from trajemb.retrieval.search import ShardedFlatIndex, recall_at_k

    b = Bundle(bundle)
    name = b.model_names[0]
    emb = np.ascontiguousarray(b.embeddings(name).all())
    index = b.index(name).index
    rng = np.random.default_rng(0)
    q = emb[rng.choice(len(emb), size=queries, replace=False)]
    flat = faiss.IndexFlatL2(emb.shape[1])
    flat.add(emb)
    sharded = ShardedFlatIndex(emb, os.cpu_count() or 1)
    single, single_sharded = [], []
    for i in range(200):
        t0 = time.perf_counter()
        flat.search(q[i : i + 1], 10)
        single.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        sharded.search(q[i : i + 1], 10)
        single_sharded.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    _, exact = flat.search(q, 11)
    flat_qps = queries / (time.perf_counter() - t0)
    index.search(q[:10], 11)
    t0 = time.perf_counter()
    _, approx = index.search(q, 11)
    qps = queries / (time.perf_counter() - t0)
    info = b.model_entry(name)["index"]
    print(
        f"  exact search, one query at a time   median {statistics.median(single):.2f} ms, "
        f"p95 {np.percentile(single, 95):.2f} ms (FAISS flat, one core); sharded over the cores "
        f"median {statistics.median(single_sharded):.2f} ms, p95 {np.percentile(single_sharded, 95):.2f} ms; "
        f"batch {flat_qps:,.0f} q/s"
    )
    print(
        f"  bundle index ({info['kind']}, nprobe {info.get('nprobe')})  {qps:,.0f} q/s, "
        f"recall@10 {recall_at_k(approx[:, 1:], exact[:, 1:]):.3f} here, {info['recall_at_10']:.3f} at build"
    )


def trustworthiness(bundle: Path, sample_size: int) -> None:
    from trajemb.analysis.bundle import Bundle
    from trajemb.retrieval.projection import ProjectionConfig, project_2d, trustworthiness_on_sample

    b = Bundle(bundle)
    emb = np.asarray(b.embeddings(b.model_names[0]).all())
    for method in ("full", "sample"):
        xy, info = project_2d(emb, ProjectionConfig(method=method, sample_size=sample_size, full_max_rows=10))
        trust = trustworthiness_on_sample(emb, xy, sample=5000)
        print(
            f"  UMAP {method:6s} over {len(emb):,} rows{'' if method == 'full' else f' (fit on {sample_size:,})'}: "
            f"{info['seconds']:6.1f} s, trustworthiness@10 {trust:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="windows per trial")
    parser.add_argument("--work", default=".cache/bench_scale")
    parser.add_argument("--checkpoint", default="checkpoints/compact-cosine-d16")
    parser.add_argument("--trust", action="store_true", help="full vs sampled UMAP at the smallest size")
    parser.add_argument(
        "--device", default="cpu", help="where the bundle embeds: cpu (the default), cuda, auto"
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; bundles embed on {args.device}"
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        scenarios = math.ceil(size / WINDOWS_PER_SCENARIO)
        root = work / f"n{size}"
        root.mkdir(exist_ok=True)
        print(f"{size:,} windows ({scenarios:,} synthetic scenarios)")
        if not (root / "scenarios").is_dir():
            run(
                ["synth", "--out", str(root / "scenarios"), "--scenarios", str(scenarios), "--seed", "0"],
                "trajemb synth",
            )
        if not (root / "table.parquet").is_file():
            run(
                [
                    "prepare",
                    "--av2",
                    str(root / "scenarios"),
                    "--out",
                    str(root / "table.parquet"),
                    "--maps-dir",
                    str(root / "maps"),
                ],
                "trajemb prepare",
            )
        # A bundle per device, so that figures of a CPU run are never reported for a GPU one.
        bundle = root / ("bundle" if args.device == "cpu" else f"bundle-{args.device.replace(':', '')}")
        if not (bundle / "bundle.json").is_file():
            run(
                [
                    "bundle",
                    "--table",
                    str(root / "table.parquet"),
                    "--checkpoint",
                    args.checkpoint,
                    "--maps",
                    str(root / "maps"),
                    "--out",
                    str(bundle),
                    "--device",
                    args.device,
                ],
                "trajemb bundle (all stages)",
            )
        manifest = json.loads((bundle / "bundle.json").read_text())
        model = next(iter(manifest["models"].values()))
        print(
            f"  {manifest['num_windows']:,} windows; bundle stages (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in manifest.get("stage_s", {}).items())
            + f"; total {manifest.get('build_s', float('nan')):.0f}"
        )
        print(
            f"  encode {model['encode_windows_per_s']:,.0f} windows/s; index {model['index']['kind']} built in "
            f"{model['index']['build_s']:.1f} s; projection {model['projection']['method']}"
            + (
                f" (fit {model['projection'].get('fit_s', 0):.0f} s, place {model['projection'].get('place_s', 0):.0f} s)"
                if model["projection"]["method"] == "sample"
                else ""
            )
        )
        from trajemb.analysis.bundle import Bundle

        query = Bundle(bundle).strings("window_id", [manifest["num_windows"] // 3])[0]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "trajemb",
                    "search",
                    "--bundle",
                    str(bundle),
                    "--query",
                    query,
                    "--k",
                    "10",
                ],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - t0)
        print(f"  trajemb search --k 10 (whole process)  median {statistics.median(times):.2f} s of 3")
        search_figures(bundle)
    if args.trust:
        trustworthiness(work / f"n{sizes[0]}" / "bundle", 50_000)


if __name__ == "__main__":
    main()
