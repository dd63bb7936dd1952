"""Generate a folder of synthetic AV2 scenarios in parallel (``trajemb synth``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trajemb import __version__
from trajemb.core.atomic import atomic_dir
from trajemb.core.fields import check_fields, param
from trajemb.core.outputs import SYNTH_GENERATOR, SYNTH_MARKER, check_output_dir
from trajemb.core.validate import MAX_SEED
from trajemb.core.workers import MAX_WORKERS, imap_ordered, process_pool
from trajemb.data.synth.behaviour import GENERATOR_VERSION, GENERATORS
from trajemb.data.synth.scenario import SynthScenario, generate_scenario, generate_scenarios
from trajemb.data.synth.v1.scenario import generate_scenario as generate_scenario_v1
from trajemb.data.synth.writer import write_scenario_dir

#: Written at the root of every generated folder; ``prepare`` labels the windows below it ``synthetic``
#: and ``trajemb.core.outputs`` recognises the folder as one it may replace.
MARKER_FILE = SYNTH_MARKER
#: Most scenarios one run generates (about 200 GB of parquet); a typo must not start a week-long job.
MAX_SCENARIOS = 10_000_000


@dataclass(frozen=True)
class SynthConfig:
    """``trajemb synth``: a flag per field (``trajemb.cli_fields``)."""

    num_scenarios: int = param(2000, help="scenarios to generate", low=1, high=MAX_SCENARIOS)
    seed: int = param(0, help="seed (each scenario has its own stream from it)", low=0, high=MAX_SEED)
    workers: int = param(0, help="processes (0: one per core)", low=0, high=MAX_WORKERS)
    use_av2_serializer: bool = param(False, help="write parquet with av2's own (slow) serializer")
    # Which generator (``trajemb.data.synth.behaviour.GENERATORS``): 2 calibrated against real AV2 motion
    # (issue 19), 1 the generator up to trajemb 0.1.x, kept so that its data can be made again.
    generator: int = param(
        GENERATOR_VERSION,
        help="2: calibrated against real AV2 motion; 1: the generator up to trajemb 0.1.x",
        choices=GENERATORS,
    )

    def __post_init__(self) -> None:
        check_fields(self)


def scenario_of(generator: int, rng: np.random.Generator) -> SynthScenario:
    """One scenario of the given generator."""
    return generate_scenario(rng) if generator == 2 else generate_scenario_v1(rng)


#: Scenarios of generator 2 simulated together (``generate_scenarios``): the car-following loop's cost
#: per scenario falls with the batch up to a few dozen, and the batch's arrays stay in cache.
SIM_BATCH = 25


def scenarios_of(generator: int, rngs: list[np.random.Generator]) -> list[SynthScenario]:
    """``scenario_of`` of each stream (generator 2 simulates their road users together)."""
    if generator == 2:
        return generate_scenarios(rngs)
    return [generate_scenario_v1(rng) for rng in rngs]


def _write_range(args: tuple[SynthConfig, str, int, int]) -> int:
    config, root, start, stop = args
    # Batches of at most SIM_BATCH, as even as they can be (60 as 20, 20 and 20, not 25, 25 and 10).
    size = -(-(stop - start) // -(-(stop - start) // SIM_BATCH)) if stop > start else 1
    for first in range(start, stop, size):
        # One independent stream per scenario: the output does not depend on the worker count.
        rngs = [np.random.default_rng([config.seed, i]) for i in range(first, min(first + size, stop))]
        for sc in scenarios_of(config.generator, rngs):
            write_scenario_dir(sc, Path(root), config.use_av2_serializer)
    return stop - start


def generate(config: SynthConfig, out: Path, progress: bool = True) -> float:
    """Write ``config.num_scenarios`` scenarios under ``out`` (replaced atomically); returns seconds.

    Raises:
        DataError: ``out`` exists and is not an empty folder or an earlier ``trajemb synth`` output
            (``trajemb.core.outputs.check_output_dir``).
    """
    check_output_dir(out, "synth")
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
            with process_pool(workers) as pool:
                for n in imap_ordered(pool, _write_range, jobs, in_flight=4 * workers):
                    bar.update(n)
        bar.close()
        marker = {
            "generator": SYNTH_GENERATOR,
            "generator_version": config.generator,  # how road users behave (trajemb.data.synth.behaviour)
            "trajemb_version": __version__,
            "config": {k: v for k, v in asdict(config).items() if k != "workers"},
            "truth_sidecars": True,  # trajemb_truth_<id>.parquet beside each scenario (trajemb.data.truth)
            "command": f"trajemb synth --out {Path(out).name} --scenarios {config.num_scenarios} "
            f"--seed {config.seed} --generator {config.generator}",
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return time.perf_counter() - t0
