"""The built-in default data: synthetic scenarios -> trajectory table (+ reduced maps) -> bundle with the
shipped checkpoints, cached.

Each stage is skipped when its output exists and was built from the same inputs, so later runs are
quick; every stage writes atomically, so an interrupted run leaves no half-built cache behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trajemb.analysis.bundle import CHECKPOINT_DIR, MANIFEST, META_FILE, model_file, read_bundle_manifest
from trajemb.analysis.evaluate import EvalConfig
from trajemb.core.errors import DataError
from trajemb.core.integrity import digest_file
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.schema import WindowConfig
from trajemb.data.store import TrajectoryTable, read_manifest, read_table
from trajemb.data.synth.generate import MARKER_FILE, SynthConfig, generate
from trajemb.retrieval.projection import ProjectionConfig
from trajemb.serving.bundle_build import BundleConfig, build_bundle, complete_bundle
from trajemb.training.checkpoint import WEIGHTS_FILE

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


#: The generator of the default data: the calibrated generator 2 (issue 19); a cached folder of another
#: generator is made again. The shipped checkpoints stay generator 1's: retrained on generator 2 they
#: retrieve worse on the real AV2 fixtures (docs/workflow.md, "Shipped checkpoints").
DEFAULT_DATA_GENERATOR = 2


def build_default_table(
    cache: Path, num_scenarios: int, seed: int, window: WindowConfig | None = None, progress: bool = True
) -> TrajectoryTable:
    """Synthetic scenarios and their trajectory table under ``cache``, built once and reused."""
    window = window or WindowConfig()
    paths = DefaultDataPaths(Path(cache) / f"default-s{seed}-n{num_scenarios}")
    synth = SynthConfig(num_scenarios=num_scenarios, seed=seed, generator=DEFAULT_DATA_GENERATOR)
    marker = paths.scenarios / MARKER_FILE
    written = json.loads(marker.read_text()) if marker.exists() else {}
    stale = (
        written.get("config", {}).get("seed") != seed
        or not written.get("truth_sidecars")
        # Folders written before generators had versions are generator 1's.
        or written.get("generator_version", 1) != DEFAULT_DATA_GENERATOR
    )
    if stale:
        # Folders from before the truth sidecars (``trajemb.data.truth``) or of another generator are
        # generated again, and their table rebuilt.
        log.info("generating %d synthetic scenarios into %s", num_scenarios, paths.scenarios)
        generate(synth, paths.scenarios, progress=progress)
    prepare = PrepareConfig(av2_dirs=(str(paths.scenarios),), window=window, maps_dir=str(paths.maps))
    if stale or not _table_is_current(paths.table, window):
        log.info("preparing the trajectory table %s", paths.table)
        prepare_table(prepare, paths.table, progress=progress)
    return read_table(paths.table)


#: Shipped checkpoints live beside the package in a source checkout.
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
DEFAULT_SCENARIOS = 200
DEFAULT_SEED = 0


def shipped_checkpoints(root: Path = SHIPPED_CHECKPOINTS) -> list[Path]:
    """Folders under ``checkpoints/`` that hold a model card, sorted by name."""
    found = sorted(p.parent for p in Path(root).glob("*/card.json"))
    if not found:
        raise DataError(f"{root}: no shipped checkpoints (expected <name>/card.json inside)")
    return found


#: The explorer's default model: the built-in bundle's first model (the explorer opens a bundle on its
#: first model).
DEFAULT_MODEL = "compact-cosine-d16"
#: Checkpoints the built-in bundle leaves out even where they are in ``checkpoints/``: the PCA-residual
#: encoders of issue 20 until they are measured against its goals (docs/retrieval-quality.md);
#: ``trajemb bundle --checkpoint`` opens them.
OUTSIDE_DEFAULT_BUNDLE = frozenset(
    f"pca-{route}-cosine-d{d}" for route in ("residual", "frozen") for d in (4, 8, 16)
)


def default_bundle_checkpoints(root: Path = SHIPPED_CHECKPOINTS) -> list[Path]:
    """The shipped checkpoints of the built-in bundle: ``DEFAULT_MODEL`` first, then the others by name,
    without those of ``OUTSIDE_DEFAULT_BUNDLE``."""
    found = [c for c in shipped_checkpoints(root) if c.name not in OUTSIDE_DEFAULT_BUNDLE]
    return sorted(found, key=lambda c: (c.name != DEFAULT_MODEL, c.name))


def default_bundle_dir(cache: Path, num_scenarios: int = DEFAULT_SCENARIOS, seed: int = DEFAULT_SEED) -> Path:
    return DefaultDataPaths(Path(cache) / f"default-s{seed}-n{num_scenarios}").root / "bundle"


#: The default data's bundle: robustness curves too (the explorer adds them in the background), so the
#: Evaluation page shows every table on the built-in data.
DEFAULT_BUNDLE_CONFIG = BundleConfig(evaluation=EvalConfig(robustness=True))


def build_default_bundle(
    cache: Path,
    num_scenarios: int = DEFAULT_SCENARIOS,
    seed: int = DEFAULT_SEED,
    checkpoints: list[Path] | None = None,
    config: BundleConfig = DEFAULT_BUNDLE_CONFIG,
    progress: bool = True,
    complete: bool = True,
) -> Path:
    """The bundle the explorer opens by default; built once under ``cache`` and reused.

    With ``complete`` False only the windows, embeddings and indices are built (enough to search):
    ``complete_bundle`` adds the 2-D layouts and the evaluation later.
    """
    checkpoints = checkpoints or default_bundle_checkpoints()
    table = build_default_table(cache, num_scenarios, seed, progress=progress)
    paths = DefaultDataPaths(Path(cache) / f"default-s{seed}-n{num_scenarios}")
    bundle = default_bundle_dir(cache, num_scenarios, seed)
    if not _bundle_is_current(bundle, table.content_hash, checkpoints, paths.table):
        log.info("building the default bundle %s (%d models)", bundle, len(checkpoints))
        staged = BundleConfig(
            config.index,
            config.evaluation,
            ProjectionConfig(method="none"),
            False,
            config.device,
            config.seed,
            config.batch_size,
        )
        build_bundle(paths.table, checkpoints, bundle, paths.maps, staged, progress=progress)
    if complete:
        complete_bundle(bundle, config, progress=progress)
    return bundle


def _bundle_is_current(bundle: Path, table_sha256: str, checkpoints: list[Path], table: Path) -> bool:
    """Whether ``bundle`` was built (by this version's format) from this table, its labels and these
    weights."""
    if not (bundle / MANIFEST).is_file():
        return False
    try:
        manifest = read_bundle_manifest(bundle)
    except DataError as exc:
        log.info("rebuilding the default bundle: %s", exc)
        return False
    have = [
        manifest["files"].get(model_file(name, f"{CHECKPOINT_DIR}/{WEIGHTS_FILE}"), {}).get("blocks")
        for name in manifest["models"]
    ]
    wanted = [list(digest_file(c / WEIGHTS_FILE).blocks) for c in checkpoints]
    if manifest.get("table_sha256") != table_sha256 or sorted(map(str, have)) != sorted(map(str, wanted)):
        return False
    return _labels_match(bundle, table)


def _labels_match(bundle: Path, table: Path) -> bool:
    """Whether the bundle's label columns are the table's: the content hash covers geometry and ids
    only, so a table re-prepared with new label rules (or a new label column) has the same hash."""
    columns = ("direction", "true_manoeuvre")
    try:
        ours = pq.read_table(bundle / META_FILE, columns=list(columns))
        theirs = pq.read_table(table, columns=list(columns))
    except (pa.ArrowException, OSError, KeyError) as exc:
        log.info("rebuilding the default bundle: its labels are not this table's (%s)", exc)
        return False
    same = all(
        ours.column(c).cast(pa.string()).to_pylist() == theirs.column(c).cast(pa.string()).to_pylist()
        for c in columns
    )
    if not same:
        log.info("rebuilding the default bundle: the table's labels changed")
    return same


def _table_is_current(path: Path, window: WindowConfig) -> bool:
    """Whether a cached table exists in this version's format with this window config."""
    if not path.exists():
        return False
    try:
        return bool(read_manifest(path).get("window_config") == _asdict(window))
    except DataError as exc:  # an older table format: rebuild it
        log.info("rebuilding the cached table: %s", exc)
        return False


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
