"""The built-in default data: synthetic scenarios -> trajectory table (+ reduced maps), cached.

Each stage is skipped when its output exists and was built from the same inputs, so later runs are
quick; every stage writes atomically, so an interrupted run leaves no half-built cache behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from trajemb.prepare import PrepareConfig, prepare_table
from trajemb.schema import WindowConfig
from trajemb.store import TrajectoryTable, read_manifest, read_table
from trajemb.synth.generate import MARKER_FILE, SynthConfig, generate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultDataPaths:
    root: Path

    @property
    def scenarios(self) -> Path:
        return self.root / "scenarios"

    @property
    def table(self) -> Path:
        return self.root / "table.parquet"

    @property
    def maps(self) -> Path:
        return self.root / "maps"


def build_default_table(
    cache: Path, num_scenarios: int, seed: int, window: WindowConfig | None = None, progress: bool = True
) -> TrajectoryTable:
    """Synthetic scenarios and their trajectory table under ``cache``, built once and reused."""
    window = window or WindowConfig()
    paths = DefaultDataPaths(Path(cache) / f"default-s{seed}-n{num_scenarios}")
    synth = SynthConfig(num_scenarios=num_scenarios, seed=seed)
    marker = paths.scenarios / MARKER_FILE
    if not marker.exists() or json.loads(marker.read_text())["config"]["seed"] != seed:
        log.info("generating %d synthetic scenarios into %s", num_scenarios, paths.scenarios)
        generate(synth, paths.scenarios, progress=progress)
    prepare = PrepareConfig(av2_dirs=(str(paths.scenarios),), window=window, maps_dir=str(paths.maps))
    if not paths.table.exists() or read_manifest(paths.table)["window_config"] != _asdict(window):
        log.info("preparing the trajectory table %s", paths.table)
        prepare_table(prepare, paths.table, progress=progress)
    return read_table(paths.table)


def _asdict(window: WindowConfig) -> dict[str, object]:
    from dataclasses import asdict

    d = asdict(window)
    d["object_types"] = list(d["object_types"])  # JSON round trip turns tuples into lists
    return d


def run_demo(cache: Path, num_scenarios: int, seed: int, progress: bool = True) -> TrajectoryTable:
    """Build (or reuse) the default data and print what it holds."""
    table = build_default_table(cache, num_scenarios, seed, progress=progress)
    meta = table.meta
    print(
        f"default data: {len(table)} windows of {table.num_steps} steps from {meta.scenario_id.nunique()} scenarios"
    )
    for col in ("direction", "object_type", "speed_bin"):
        counts = meta[col].value_counts()
        print(f"  {col:12s} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return table
