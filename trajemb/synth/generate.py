"""Generate a folder of synthetic AV2 scenarios in parallel (``trajemb synth``)."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trajemb import __version__
from trajemb.atomic import atomic_dir
from trajemb.errors import ConfigError
from trajemb.synth.scenario import generate_scenario
from trajemb.synth.writer import write_scenario_dir

#: Written at the root of every generated folder; ``prepare`` labels its windows ``synthetic``.
MARKER_FILE = "trajemb_synth.json"


@dataclass(frozen=True)
class SynthConfig:
    num_scenarios: int = 2000
    seed: int = 0
    workers: int = 0  # 0: one per CPU core
    use_av2_serializer: bool = False  # write parquet through av2's own (slow) serializer

    def __post_init__(self) -> None:
        if self.num_scenarios < 1:
            raise ConfigError(f"--scenarios must be >= 1, got {self.num_scenarios}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")


def _write_range(args: tuple[SynthConfig, str, int, int]) -> int:
    config, root, start, stop = args
    for i in range(start, stop):
        # One independent stream per scenario: the output does not depend on the worker count.
        rng = np.random.default_rng([config.seed, i])
        write_scenario_dir(generate_scenario(rng), Path(root), config.use_av2_serializer)
    return stop - start


def generate(config: SynthConfig, out: Path, progress: bool = True) -> float:
    """Write ``config.num_scenarios`` scenarios under ``out`` (replaced atomically); returns seconds."""
    t0 = time.perf_counter()
    workers = config.workers or (os.cpu_count() or 1)
    chunk = max(1, min(50, config.num_scenarios // (workers * 4) or 1))
    ranges = [(s, min(s + chunk, config.num_scenarios)) for s in range(0, config.num_scenarios, chunk)]
    with atomic_dir(Path(out)) as tmp:
        bar = tqdm(
            total=config.num_scenarios,
            desc="synth",
            unit="scenario",
            disable=not progress,
            dynamic_ncols=True,
        )
        jobs = [(config, str(tmp), a, b) for a, b in ranges]
        if workers == 1:
            for job in jobs:
                bar.update(_write_range(job))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for n in pool.map(_write_range, jobs):
                    bar.update(n)
        bar.close()
        marker = {
            "generator": "trajemb synth",
            "trajemb_version": __version__,
            "config": {k: v for k, v in asdict(config).items() if k != "workers"},
            "command": f"trajemb synth --out {Path(out).name} --scenarios {config.num_scenarios} --seed {config.seed}",
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return time.perf_counter() - t0
