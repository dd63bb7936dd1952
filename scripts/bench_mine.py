"""Benchmark: mining at scale. One synthetic set of about a million windows -> table -> bundle with one
shipped checkpoint (no layout, no evaluation: only what mining needs), then, each as a user runs it:

* the uniqueness stage of ``trajemb bundle`` (every window's distance to its 10th nearest other
  track, through the bundle's index), read from the bundle's per-stage seconds, and the same
  computation again in this process (median of the repeats);
* ``trajemb mine rare --top 1000 --out`` and ``trajemb mine duplicates --eps E --out`` as whole
  processes (median of the repeats), with the duplication report of the last run.

Every figure is printed with the load average of the minute before it (the machine is shared).

Usage: python scripts/bench_mine.py [--size 1000000] [--work .cache/bench_mine] [--eps 0.005] [--repeats 3]
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

WINDOWS_PER_SCENARIO = 109  # synthetic scenarios of the default generator, 6 s windows, stride 1 s


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def trajemb(args: list[str], label: str) -> tuple[float, str]:
    """Run ``python -m trajemb -q ARGS``; returns wall seconds and stdout."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trajemb", "-q", *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr}")
    print(f"  {label:44s} {seconds:8.1f} s   ({load()})", flush=True)
    return seconds, proc.stdout


def accuracy(bundle: object, name: str, scores: object, sample: int = 2000) -> None:
    """The bundle index's uniqueness against exact search on sampled windows, and how much of the 1 %
    most unique (by the index) the exact scores put there too."""
    import numpy as np

    from trajemb.analysis.bundle import Bundle
    from trajemb.retrieval.search import Groups, exact_index, search

    assert isinstance(bundle, Bundle)
    got = np.asarray(scores)
    emb = np.ascontiguousarray(bundle.embeddings(name).all())
    tracks = Groups.of(bundle.groups)
    rng = np.random.default_rng(0)
    top = np.argsort(-got, kind="stable")[: len(got) // 100]
    rows = np.sort(
        np.concatenate([rng.choice(len(got), sample, replace=False), rng.choice(top, sample, replace=False)])
    )
    dist, _ = search(
        exact_index(emb),
        emb[rows],
        10,
        query_rows=rows,
        exclude=tracks,
        query_groups=tracks.ids[rows],
        distinct=tracks,
    )
    exact = dist[:, -1]
    ratio = got[rows] / exact
    in_top = np.isin(rows, top)
    threshold = np.sort(got)[-len(top)]  # the index's 1 % cut
    print(
        f"  against exact search ({len(rows)} windows, half from the index's top 1 %): equal on "
        f"{100 * np.mean(np.abs(ratio - 1) < 1e-5):.1f} %, median ratio {np.median(ratio):.4f}, "
        f"95th percentile {np.percentile(ratio, 95):.3f}; infinite scores: {int(np.isinf(got).sum())}; "
        f"of the sampled top-1 % windows, {100 * np.mean(exact[in_top] >= threshold):.1f} % are above "
        "the cut by their exact score too"
    )


def range_recall(bundle: object, name: str, eps: float, sample: int = 2000) -> None:
    """Recall of the bundle index's range search (what ``mine duplicates`` runs per window) against
    exact search, on sampled windows."""
    import numpy as np

    from trajemb.analysis.bundle import Bundle
    from trajemb.retrieval.search import Groups, exact_index, range_search

    assert isinstance(bundle, Bundle)
    emb = np.ascontiguousarray(bundle.embeddings(name).all())
    tracks = Groups.of(bundle.groups)
    rows = np.sort(np.random.default_rng(1).choice(len(emb), sample, replace=False))
    rules = {"query_rows": rows, "exclude": tracks, "query_groups": tracks.ids[rows]}
    exact = range_search(exact_index(emb), emb[rows], eps, **rules)  # type: ignore[arg-type]
    approx = range_search(bundle.index(name).index, emb[rows], eps, **rules)  # type: ignore[arg-type]
    truth = {(int(q), int(r)) for q, r, _ in zip(*exact.pairs(), strict=True)}
    found = {(int(q), int(r)) for q, r, _ in zip(*approx.pairs(), strict=True)}
    print(
        f"  range search at eps {eps:g} through the bundle's index, {sample} sampled windows: "
        f"{len(truth)} pairs by exact search, recall {len(found & truth) / max(len(truth), 1):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="windows (about)")
    parser.add_argument("--work", default=".cache/bench_mine")
    parser.add_argument("--checkpoint", default="checkpoints/compact-cosine-d16")
    parser.add_argument("--eps", default="0.005", help="trajemb mine duplicates --eps")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.work) / f"n{args.size}"
    root.mkdir(parents=True, exist_ok=True)
    scenarios = math.ceil(args.size / WINDOWS_PER_SCENARIO)
    print(f"{os.cpu_count()} CPUs, {load()} at start; {args.size:,} windows ({scenarios:,} scenarios)")
    if not (root / "scenarios").is_dir():
        trajemb(["synth", "--out", str(root / "scenarios"), "--scenarios", str(scenarios)], "trajemb synth")
    table = root / "table.parquet"
    if not table.is_file():
        prepare = ["prepare", "--av2", str(root / "scenarios"), "--out", str(table)]
        trajemb([*prepare, "--maps-dir", str(root / "maps")], "trajemb prepare")
    bundle = root / "bundle"
    if not (bundle / "bundle.json").is_file():
        trajemb(
            [
                "bundle",
                "--table",
                str(table),
                "--checkpoint",
                args.checkpoint,
                "--maps",
                str(root / "maps"),
                "--out",
                str(bundle),
                "--no-eval",
                "--projection",
                "none",
                "--device",
                "cpu",
            ],
            "trajemb bundle (windows, embed, index, uniqueness)",
        )
    manifest = json.loads((bundle / "bundle.json").read_text())
    name, entry = next(iter(manifest["models"].items()))
    stages = manifest.get("stage_s", {})
    print(
        f"  {manifest['num_windows']:,} windows; bundle stages (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        + f"; total {manifest.get('build_s', float('nan')):.0f}"
    )
    info = entry.get("uniqueness", {})
    print(
        f"  uniqueness in the build: {stages.get(f'uniqueness {name}', float('nan')):.1f} s "
        f"(k = {info.get('k')}, {info.get('index')} index, exact {info.get('exact')}, nprobe {info.get('nprobe')})"
    )

    import numpy as np

    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.uniqueness import bundle_uniqueness

    opened = Bundle(bundle)
    opened.index(name)  # loaded before the timing, as a build has it
    stored = opened.uniqueness(name)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores, _ = bundle_uniqueness(opened, name)
        times.append(time.perf_counter() - t0)
        print(f"  bundle_uniqueness in process {times[-1]:8.1f} s   ({load()})", flush=True)
    same = stored is not None and bool(np.array_equal(scores, stored))
    print(
        f"  uniqueness: median {statistics.median(times):.1f} s of {len(times)}; equal to the stored scores: {same}"
    )
    accuracy(opened, name, scores)

    out = root / "out"
    out.mkdir(exist_ok=True)
    rare = [
        trajemb(
            ["mine", "rare", "--bundle", str(bundle), "--top", "1000", "--out", str(out / "rare.parquet")],
            "trajemb mine rare --top 1000",
        )[0]
        for _ in range(args.repeats)
    ]
    print(f"  mine rare: median {statistics.median(rare):.1f} s of {len(rare)}")
    dupes, report = [], ""
    for _ in range(args.repeats):
        seconds, report = trajemb(
            [
                "mine",
                "duplicates",
                "--bundle",
                str(bundle),
                "--eps",
                args.eps,
                "--out",
                str(out / "duplicates.parquet"),
            ],
            f"trajemb mine duplicates --eps {args.eps}",
        )
        dupes.append(seconds)
    print(f"  mine duplicates: median {statistics.median(dupes):.1f} s of {len(dupes)}")
    range_recall(opened, name, float(args.eps))
    print(report)


if __name__ == "__main__":
    main()
