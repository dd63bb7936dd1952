"""Benchmark: server-side latency from a new query to redrawn neighbours in the explorer, at ~100k windows.

Builds (or reuses, --work) a synthetic bundle of about 100k windows with one shipped checkpoint, then
times, on the Explore page, full Streamlit reruns after the query changes (AppTest: the script run
including the neighbour search, the table, the agent-frame figure and six map figures; no browser).
Prints median and 95th percentile milliseconds. Usage: python scripts/bench_app.py [--scenarios 950]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from trajemb.bundle_build import BundleConfig, build_bundle
from trajemb.evaluate import EvalConfig
from trajemb.pipeline import build_default_table, shipped_checkpoints

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".cache/bench_app")
    parser.add_argument("--scenarios", type=int, default=950)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    work = Path(args.work)
    table = build_default_table(work, args.scenarios, seed=11, progress=False)
    bundle = work / "bundle"
    if not (bundle / "bundle.json").exists():
        ckpt = next(c for c in shipped_checkpoints() if c.name == "compact-cosine-d16")
        config = BundleConfig(evaluation=EvalConfig(num_queries=200), umap=False, device="cpu")
        build_bundle(work / f"default-s11-n{args.scenarios}" / "table.parquet", [ckpt], bundle,
                     work / f"default-s11-n{args.scenarios}" / "maps", config, progress=False)  # fmt: skip
    from streamlit.testing.v1 import AppTest

    os.environ["TRAJEMB_BUNDLE"] = str(bundle)
    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=300)
    at.run()
    rows = np.random.default_rng(0).choice(len(table), args.queries, replace=False)
    times = []
    for row in rows:
        at.session_state["query_row"] = int(row)
        t0 = time.perf_counter()
        at.run()
        times.append(1000 * (time.perf_counter() - t0))
        assert not at.exception, at.exception
    ms = np.array(times)
    print(f"{len(table)} windows; Explore page rerun after a query change, k=6, 6 maps: "
          f"median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms "
          f"over {len(ms)} queries")  # fmt: skip
    print("per query (ms):", " ".join(f"{t:.0f}" for t in ms))


if __name__ == "__main__":
    main()
