"""Benchmark: ``trajemb prepare`` as a user runs it, against av2's ``load_argoverse_scenario_parquet``.

Generates N synthetic scenarios with ``trajemb synth`` (or uses --data), then, on the same files:
  * av2's object loader over every scenario, one process (what a user's own loop calls);
  * ``prepare_table`` with the default labels (lane graph, truth sidecars), one worker and all cores,
    without and with ``--maps-dir`` (a fresh map cache each time);
  * the ``trajemb prepare`` command as a whole process (interpreter start and imports included);
  * where one worker's time goes, by stage (read, window, labels, truth, maps, write), from a profile.
Timings are the median of --repeats runs, wall and CPU seconds (this process and its workers); each line
carries the load average (the machine is shared) and, from the CPU seconds, the ratio to av2 that idle
cores would give.

Usage: python scripts/bench_prepare.py [--scenarios 2000] [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet

from trajemb.data.av2_motion import find_scenario_files
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.synth.generate import SynthConfig, generate

#: Stage -> functions whose cumulative profile time is the stage's, minus the nested ones named in
#: ``NESTED`` (a function's time counts once, in the innermost stage that names it).
STAGES: dict[str, tuple[str, ...]] = {
    "read": ("read_scenario_tracks", "read_sensor_log_tracks"),
    "truth": ("read_truth", "window_true_manoeuvre"),
    "window": ("cut_windows", "to_agent_frame", "concat_city_windows"),
    "labels": (
        "read_map_json",
        "read_lane_graph",
        "lane_graph_from_json",
        "with_map_directions",
        "with_map_directions_many",
        "total_heading_change_rad",
        "direction_class",
    ),
    "maps": ("get",),  # MapCache.get: reduce and write a map for --maps-dir
    "write": ("write", "finish"),  # the table writer
}
NESTED: dict[str, tuple[str, ...]] = {
    "window": ("window_true_manoeuvre", "total_heading_change_rad", "direction_class")
}
STAGE_FILES: dict[str, str] = {"maps": "maps.py", "write": "store.py"}


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (worker pools, commands)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, tuple[float, float, float]]:
    """Median wall seconds and median CPU seconds of ``repeats`` calls, and the load average after the
    last (CPU seconds move less than wall times with what else runs on the machine)."""
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), cpu_s()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_s() - c0)
    return statistics.median(times), statistics.median(cpu), os.getloadavg()


def load(avg: tuple[float, float, float]) -> str:
    return f"load {avg[0]:.2f} {avg[1]:.2f} {avg[2]:.2f}"


def stage_split(data: Path, tmp: Path, num_scenarios: int, maps: bool) -> dict[str, float]:
    """Seconds per stage of one worker preparing ``num_scenarios`` of ``data`` (cProfile adds overhead
    to every call, so the shares matter, not the totals)."""
    tmp.mkdir(parents=True, exist_ok=True)
    files = tuple(str(p) for p in find_scenario_files(data)[:num_scenarios])
    config = PrepareConfig(av2_dirs=files, workers=1, maps_dir=str(tmp / "maps") if maps else None)
    out = tmp / "profile.parquet"
    profile = cProfile.Profile()
    profile.enable()
    prepare_table(config, out, progress=False)
    profile.disable()
    out.unlink()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    cumulative: dict[str, float] = {}
    total = 0.0
    for (filename, _, name), (_, _, _, ct, _) in stats.items():
        if name == "prepare_table":
            total = ct
        for stage, names in STAGES.items():
            where = STAGE_FILES.get(stage)
            if name in names and (where is None or filename.endswith(where)) and "trajemb" in filename:
                cumulative[name] = cumulative.get(name, 0.0) + ct
    split = {
        stage: sum(cumulative.get(n, 0.0) for n in names)
        - sum(cumulative.get(n, 0.0) for n in NESTED.get(stage, ()))
        for stage, names in STAGES.items()
    }
    split["other"] = total - sum(split.values())
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=2000)
    parser.add_argument("--data", default=None, help="existing AV2 folder (default: generate synthetic)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is printed)")
    parser.add_argument(
        "--profile-scenarios", type=int, default=200, help="scenarios in the stage profile (0: none)"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average at start {load(os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = Path(args.data) if args.data else tmp / "synth"
        if not args.data:
            secs = generate(SynthConfig(num_scenarios=args.scenarios, seed=0), data, progress=False)
            print(
                f"synth: {args.scenarios} scenarios in {secs:.1f} s ({args.scenarios / secs:.0f} scenarios/s, "
                f"{cores} workers, {load(os.getloadavg())})"
            )
        files = find_scenario_files(data)
        n = len(files)

        def av2_loader() -> None:
            for f in files:
                load_argoverse_scenario_parquet(f)

        def ours(workers: int, maps: bool) -> Callable[[], object]:
            def run() -> None:
                maps_dir = tempfile.mkdtemp(dir=tmp, prefix="maps-") if maps else None
                config = PrepareConfig(av2_dirs=(str(data),), workers=workers, maps_dir=maps_dir)
                report = prepare_table(config, tmp / "table.parquet", progress=False)
                run.windows = report.num_windows  # type: ignore[attr-defined]

            return run

        def command(maps: bool) -> Callable[[], object]:
            def run() -> None:
                cmd = [
                    sys.executable,
                    "-m",
                    "trajemb",
                    "-q",
                    "prepare",
                    "--av2",
                    str(data),
                    "--out",
                    str(tmp / "cli.parquet"),
                ]
                if maps:
                    cmd += ["--maps-dir", tempfile.mkdtemp(dir=tmp, prefix="cli-maps-")]
                subprocess.run(cmd, check=True, capture_output=True)

            return run

        av2_s, av2_cpu, av2_load = timed(av2_loader, max(1, args.repeats // 2))
        print(f"scenarios: {n}")
        print(
            f"{'av2 load_argoverse_scenario_parquet, 1 process':52s}: {n / av2_s:8.1f} scenarios/s "
            f"({av2_s:.1f} s, CPU {1e3 * av2_cpu / n:.1f} ms/scenario, {load(av2_load)})"
        )
        rows = [  # name, run, processes working at once
            ("trajemb prepare, 1 worker", ours(1, False), 1),
            (f"trajemb prepare, {cores} workers", ours(0, False), cores),
            ("trajemb prepare --maps-dir, 1 worker", ours(1, True), 1),
            (f"trajemb prepare --maps-dir, {cores} workers", ours(0, True), cores),
            ("`trajemb prepare` command (whole process)", command(False), cores),
            ("`trajemb prepare --maps-dir` command (whole process)", command(True), cores),
        ]
        for name, fn, busy in rows:
            secs, cpu, avg = timed(fn, args.repeats)
            windows = getattr(fn, "windows", None)
            extra = f", {windows / secs / 1e3:.1f}k windows/s" if windows else ""
            # On idle cores a run takes its CPU seconds spread over the processes working at once, and
            # av2's loader its CPU seconds: the ratio other agents' jobs do not move much.
            idle = av2_cpu / (cpu / busy)
            print(
                f"{name:52s}: {n / secs:8.1f} scenarios/s ({secs:.1f} s{extra}, CPU {1e3 * cpu / n:.1f} "
                f"ms/scenario)  {av2_s / secs:5.1f}x av2 (idle cores: {idle:.1f}x)  {load(avg)}"
            )

        for maps in (False, True) if args.profile_scenarios > 0 else ():
            m = min(args.profile_scenarios, n)
            split = stage_split(data, tmp / ("profile-maps" if maps else "profile"), m, maps)
            total = sum(split.values())
            shares = ", ".join(f"{stage} {secs / total:.0%}" for stage, secs in split.items())
            print(
                f"stages of one worker{' with --maps-dir' if maps else ''} ({m} scenarios, profiled): {shares}"
            )


if __name__ == "__main__":
    main()
