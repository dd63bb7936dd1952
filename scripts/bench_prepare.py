"""Benchmark: ``trajemb prepare`` against av2's ``load_argoverse_scenario_parquet`` on the same files.

Generates N synthetic scenarios (or uses --data), then times, in one run:
  * av2's object loader over every scenario (one process: it is what a user's loop calls),
  * our reader + windowing + labels with one worker (same single core: the like-for-like ratio),
  * our full ``prepare`` with all cores (what ``trajemb prepare`` does).
Prints scenarios/s and the ratios. Usage: python scripts/bench_prepare.py [--scenarios 2000] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet

from trajemb.data.av2_motion import find_scenario_files
from trajemb.prepare import PrepareConfig, prepare_windows
from trajemb.synth.generate import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=2000)
    parser.add_argument("--data", default=None, help="existing AV2 folder (default: generate synthetic)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "synth"
        if not args.data:
            secs = generate(SynthConfig(num_scenarios=args.scenarios, seed=0), data, progress=False)
            print(
                f"synth: {args.scenarios} scenarios in {secs:.1f} s "
                f"({args.scenarios / secs:.0f} scenarios/s, {os.cpu_count()} cores)"
            )
        files = find_scenario_files(data)
        n = len(files)

        t0 = time.perf_counter()
        for f in files:
            load_argoverse_scenario_parquet(f)
        av2_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        w1, _, _ = prepare_windows(PrepareConfig(av2_dirs=(str(data),), workers=1), progress=False)
        ours1_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        wn, _, _ = prepare_windows(PrepareConfig(av2_dirs=(str(data),), workers=0), progress=False)
        oursn_s = time.perf_counter() - t0
    assert len(w1) == len(wn)
    print(f"scenarios: {n}, windows: {len(wn)}")
    print(f"av2 load_argoverse_scenario_parquet, 1 process : {n / av2_s:8.1f} scenarios/s ({av2_s:.1f} s)")
    print(
        f"trajemb prepare, 1 worker (read+window+label)  : {n / ours1_s:8.1f} scenarios/s ({ours1_s:.1f} s)  "
        f"{av2_s / ours1_s:.1f}x"
    )
    print(
        f"trajemb prepare, {os.cpu_count()} workers                    : {n / oursn_s:8.1f} scenarios/s ({oursn_s:.1f} s)  "
        f"{av2_s / oursn_s:.1f}x"
    )


if __name__ == "__main__":
    main()
