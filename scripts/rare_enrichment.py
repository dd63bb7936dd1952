"""How well uniqueness finds what is truly rare, for every shipped model, PCA at the same D and the
raw-space oracle, on synthetic held-out scenarios with the generator's true manoeuvres.

Builds (or reuses) a bundle of held-out synthetic scenarios (seed 22, never trained on: the shipped
checkpoints saw seed 1) under every shipped checkpoint, evaluated as ``trajemb bundle`` does (the
report's ``rare_enrichment``, ``trajemb.analysis.evaluate``), and prints the class frequencies and the table
of docs/retrieval-quality.md ("Rare behaviours").

Usage: python scripts/rare_enrichment.py [--scenarios 400] [--work .cache/rare_enrichment]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.evaluate import EvalConfig
from trajemb.analysis.report import rare_enrichment_table
from trajemb.retrieval.projection import ProjectionConfig
from trajemb.serving.bundle_build import BundleConfig, build_bundle
from trajemb.serving.pipeline import build_default_table, shipped_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=400)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--work", default=".cache/rare_enrichment")
    args = parser.parse_args()
    work = Path(args.work)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    t0 = time.perf_counter()
    build_default_table(work, args.scenarios, args.seed)
    table = work / f"default-s{args.seed}-n{args.scenarios}" / "table.parquet"
    bundle_dir = work / f"bundle-s{args.seed}-n{args.scenarios}"
    if not (bundle_dir / "bundle.json").is_file():
        evaluation = EvalConfig(mean_rank=False, robustness=False)
        config = BundleConfig(evaluation=evaluation, projection=ProjectionConfig(method="none"), device="cpu")
        build_bundle(table, shipped_checkpoints(), bundle_dir, None, config)
    bundle = Bundle(bundle_dir)
    reports = {name: bundle.report(name) or {} for name in bundle.model_names}
    reports.update(bundle.baselines())
    first = reports[bundle.model_names[0]]["rare_enrichment"]
    shares = ", ".join(
        f"{c} {100 * s:.1f} %" for c, s in sorted(first["class_share"].items(), key=lambda x: -x[1])
    )
    print(f"{bundle.num_windows} windows of {args.scenarios} scenarios (seed {args.seed}); classes: {shares}")
    print(rare_enrichment_table(reports))
    print(f"({time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.2f})")
    (work / "rare_enrichment.json").write_text(
        json.dumps(
            {n: r.get("rare_enrichment") for n, r in reports.items() if "rare_enrichment" in r}, indent=2
        )
    )


if __name__ == "__main__":
    main()
