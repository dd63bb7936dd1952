"""Benchmark: prepare and embed on a local Ray (1 and 2 workers) against the local engine, same input.

Generates N synthetic scenarios (or uses --data), starts one local Ray of --ray-cpus CPUs, then
times, in one run and on the same files:
  * prepare (read + window + label + write the table): the local process pool with 1 and 2 workers,
    Ray Data tasks with 1 and 2 workers (``--workers``); every table must have the same content hash;
  * embed (every window of that table, --checkpoint): ``embed_windows`` in this process (torch's
    default threads), Ray Data actor pools of 1 and 2 actors (one CPU, one torch thread each);
    the Ray embeddings must equal the local ones.
Ray times include what a command pays per call (scheduling, starting the actor pool, moving the
data through the object store) but not starting Ray itself (printed apart); one untimed Ray prepare
first starts Ray's worker processes. Prints windows/s and the ratio to the local engine.
Usage: python scripts/bench_distributed.py [--scenarios 1000] [--data DIR] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from trajemb.core.ray_runtime import require_ray
from trajemb.data.prepare import Engine, PrepareConfig, prepare_table
from trajemb.data.synth.generate import SynthConfig, generate
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import embed_windows
from trajemb.training.ray_embed import embed_table_on_ray, read_xy_agent

REPO = Path(__file__).resolve().parents[1]


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--data", default=None, help="existing AV2 folder (default: generate synthetic)")
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "compact-cosine-d16"))
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    args = parser.parse_args()
    ray = require_ray()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "synth"
        if not args.data:
            generate(SynthConfig(num_scenarios=args.scenarios, seed=0), data, progress=False)
        init_s, _ = timed(
            lambda: ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING)
        )
        try:
            run(Path(tmp), data, Path(args.checkpoint), init_s)
        finally:
            ray.shutdown()


def run(tmp: Path, data: Path, checkpoint: Path, init_s: float) -> None:
    def prepare(engine: Engine, workers: int, name: str) -> tuple[float, int, str]:
        config = PrepareConfig(av2_dirs=(str(data),), workers=workers, engine=engine)
        seconds, report = timed(lambda: prepare_table(config, tmp / name, progress=False))
        return seconds, report.num_windows, str(report.manifest["content_sha256"])

    prepare("ray", 2, "warm.parquet")  # starts Ray's worker processes once, untimed
    runs = {
        (engine, w): prepare(engine, w, f"{engine}{w}.parquet") for w in (1, 2) for engine in ("local", "ray")
    }
    assert len({h for _, _, h in runs.values()}) == 1, f"tables differ: {runs}"
    n = runs["local", 1][1]
    print(
        f"input: {len(list(data.glob('*/scenario_*.parquet')))} scenarios, {n} windows; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"starting a local Ray took {init_s:.1f} s (not counted)"
    )
    print("prepare (read + window + label + write), windows/s; every table has the same content hash:")
    for w in (1, 2):
        local_s, ray_s = runs["local", w][0], runs["ray", w][0]
        print(
            f"  {w} worker{'s' if w > 1 else ' '}: local {n / local_s:7.0f}, Ray {n / ray_s:7.0f}  "
            f"(Ray / local {local_s / ray_s:4.2f}x)"
        )

    table = tmp / "local1.parquet"
    xy = read_xy_agent(table)
    model = load_checkpoint(checkpoint)[0]
    local_s, expected = timed(lambda: embed_windows(model, read_xy_agent(table)))
    results = {f"local ({torch.get_num_threads()} torch threads)": (local_s, expected)}
    for actors in (1, 2):
        results[f"Ray, {actors} actor{'s' if actors > 1 else ''}"] = timed(
            partial(embed_table_on_ray, table, checkpoint, num_actors=actors, progress=False)
        )
    print(f"embed ({checkpoint.name}, {len(xy)} windows), windows/s:")
    for name, (seconds, emb) in results.items():
        np.testing.assert_allclose(emb, expected, rtol=0, atol=1e-5)
        print(f"  {name:24s} {len(xy) / seconds:9.0f}  ({seconds:5.1f} s, {local_s / seconds:4.2f}x local)")


if __name__ == "__main__":
    main()
