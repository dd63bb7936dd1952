"""Benchmark: forecasting by retrieval at scale, a bank of about a million windows and 10,000 queries.

Builds once (under ``--work``, reused when present; run it under ``flock /work/heavy.lock``): synthetic
scenarios (seed 0) -> 6 s windows at a 1 s stride -> a bank bundle with the history checkpoints
(``trajemb bundle --projection none --no-eval``: an IVF index above 250k windows, ``nprobe`` tuned to
recall@10 0.95), and held-out query windows (seed 22). Then measures, with the load average beside
every figure:

* one query at a time on one core (PyTorch and FAISS on one thread): embedding the history and
  searching the bank (the query's scenario left out, one window per track), median and p95 over
  ``--single`` queries, for each learned history model (with its shortlist of 48 re-ranked by raw
  history distance, the default, and alone) and for raw kNN (exact, flat);
* all queries (``trajemb.analysis.forecast.forecast_table``, every core): seconds per method and the scores;
* recall@6 of each learned model's index against exact search of the same embeddings.

Usage: flock /work/heavy.lock python scripts/bench_forecast.py [--windows 1000000] [--queries 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import time
from pathlib import Path

import numpy as np

from trajemb.cli import main as trajemb

WINDOWS_PER_SCENARIO = 109  # synthetic scenarios of the default generator, 6 s windows, stride 1 s
REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    print(f"$ trajemb {shlex.join(args)}", flush=True)
    t0 = time.perf_counter()
    if trajemb(args) != 0:
        raise SystemExit(f"failed: trajemb {shlex.join(args)}")
    seconds = time.perf_counter() - t0
    print(f"  {seconds:.0f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
    return seconds


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".cache/bench_forecast")
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=300, help="queries timed one at a time")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="history checkpoint (default: checkpoints/history-*)",
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = args.checkpoint or [str(c) for c in sorted((REPO / "checkpoints").glob("history-*"))]
    print(f"{os.cpu_count()} CPUs, {load()} at start")
    scenarios = math.ceil(args.windows / WINDOWS_PER_SCENARIO)
    if not (work / "scenarios").is_dir():
        run(["-q", "synth", "--out", str(work / "scenarios"), "--scenarios", str(scenarios), "--seed", "0"])
    if not (work / "bank.parquet").is_file():
        run(["-q", "prepare", "--av2", str(work / "scenarios"), "--out", str(work / "bank.parquet")])
    if not (work / "bank" / "bundle.json").is_file():
        ckpts = [x for c in checkpoints for x in ("--checkpoint", c)]
        bundle_args = ["--projection", "none", "--no-eval", "--device", "cpu"]
        run(
            [
                "-q",
                "bundle",
                "--table",
                str(work / "bank.parquet"),
                *ckpts,
                "--out",
                str(work / "bank"),
                *bundle_args,
            ]
        )
    query_scenarios = math.ceil(1.2 * args.queries / WINDOWS_PER_SCENARIO)
    if not (work / "queries-scenarios").is_dir():
        synth = [
            "--out",
            str(work / "queries-scenarios"),
            "--scenarios",
            str(query_scenarios),
            "--seed",
            "22",
        ]
        run(["-q", "synth", *synth])
    if not (work / "queries.parquet").is_file():
        run(
            [
                "-q",
                "prepare",
                "--av2",
                str(work / "queries-scenarios"),
                "--out",
                str(work / "queries.parquet"),
            ]
        )

    import faiss
    import torch

    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.forecast import (
        KNN_RAW,
        ForecastConfig,
        forecast_bank,
        forecast_table,
        scenario_keys,
    )
    from trajemb.data.store import TrajectoryTable, read_table
    from trajemb.retrieval.search import exact_search, recall_at_k, search

    bundle = Bundle(work / "bank")
    manifest = bundle.manifest
    print(f"bank: {bundle.num_windows:,} windows; bundle stages (s): {manifest.get('stage_s')}")
    for name, entry in manifest["models"].items():
        index = entry["index"]
        print(
            f"  {name}: D = {entry['embedding_dim']}, history {entry.get('history_steps')} steps, "
            f"encode {entry['encode_windows_per_s']:,.0f} windows/s, index {index['kind']} "
            f"(nprobe {index.get('nprobe')}, recall@10 {index.get('recall_at_10')}) built in {index['build_s']:.1f} s"
        )
    table = read_table(work / "queries.parquet")
    rows = np.sort(
        np.random.default_rng(0).choice(len(table), size=min(args.queries, len(table)), replace=False)
    )
    queries = TrajectoryTable(
        table.xy_agent[rows], table.meta.iloc[rows].reset_index(drop=True), table.manifest
    )
    config = ForecastConfig()
    bank = forecast_bank(bundle, config)
    pure = forecast_bank(bundle, ForecastConfig(rerank=0))
    learned = [m for m in bank.methods if m.startswith("retrieval_")]
    # (label, bank, method): learned retrieval with its default shortlist re-ranked, and alone.
    variants = [(m, bank, m) for m in [*learned, KNN_RAW]]
    variants += [(f"{m} (embedding alone, --rerank 0)", pure, m) for m in learned]
    keys = scenario_keys(queries.meta["source"].to_numpy(str), queries.meta["scenario_id"].to_numpy(str))
    groups = bank.scenario_group_of(keys)
    history = queries.xy_agent[:, : config.history_steps]

    # One query at a time, on one core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    single = {}
    # The explorer splits an exact index over the cores; one core here: a plain flat index.
    features = bank.raw_features()
    flat = faiss.IndexFlatL2(features.shape[1])
    flat.add(features)
    for label, variant, method in variants:
        variant.search(method, history[:1], groups[:1])  # loads the encoder and the index: not timed
        times = []
        for i in range(min(args.single, len(history))):
            t0 = time.perf_counter()
            if method == KNN_RAW:
                search(
                    flat,
                    bank.features(method, history[i : i + 1]),
                    config.k,
                    exclude=bank.scenarios,
                    query_groups=groups[i : i + 1],
                    distinct=bank.tracks,
                )
            else:
                variant.search(method, history[i : i + 1], groups[i : i + 1])
            times.append(1000 * (time.perf_counter() - t0))
        single[label] = times
        print(
            f"one query, one core, {label}: median {statistics.median(times):.2f} ms, "
            f"p95 {np.percentile(times, 95):.2f} ms (embed + search, own scenario out, one per track), {load()}"
        )
    del features, flat
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(os.cpu_count() or 1)

    # Recall of each learned model's index against exact search on its embeddings.
    for model in bank.models:
        emb = np.ascontiguousarray(bundle.embeddings(model).all())
        feats = bank.features(f"retrieval_{model}", history[:1000])
        approx = pure.search(f"retrieval_{model}", history[:1000], groups[:1000])[1]
        exact = exact_search(
            emb, feats, config.k, exclude=bank.scenarios, query_groups=groups[:1000], distinct=bank.tracks
        )[1]
        print(
            f"recall@{config.k} of the {model} index against exact search (1,000 queries): {recall_at_k(approx, exact):.3f}"
        )

    # Every query, every core, method by method.
    result: dict[str, dict[str, float | int]] = {}
    variants += [(m, bank, m) for m in bank.methods[-2:]]
    for label, variant, method in variants:
        t0 = time.perf_counter()
        r = forecast_table(bundle, queries, variant.config, methods=[method])
        seconds = time.perf_counter() - t0
        s = r.scores[method]
        result[label] = s
        print(
            f"{len(queries):,} queries, {label}: {seconds:.1f} s ({1000 * seconds / len(queries):.2f} ms per query, "
            f"scoring included), minADE6 {s['minADE6']:.3f}, minFDE6 {s['minFDE6']:.3f}, MR6 {s['MR6']:.3f}, "
            f"brier-minFDE6 {s['brier_minFDE6']:.3f}, {load()}"
        )
    (work / "scores.json").write_text(json.dumps(result, indent=2))
    single_ms = {
        m: {"median": statistics.median(t), "p95": float(np.percentile(t, 95))} for m, t in single.items()
    }
    (work / "single_query_ms.json").write_text(json.dumps(single_ms, indent=2))


if __name__ == "__main__":
    main()
