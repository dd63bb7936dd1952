"""Writing bundles (layout in ``trajemb.analysis.bundle``): stage by stage, streaming, every file verified.

Stages, each with its own progress bar and rate:
1. windows: the trajectory table streamed row group by row group into ``windows/xy_agent.npy`` (its
   content hash recomputed on the way and compared with the table's own: a modified table is refused)
   and ``windows/meta.parquet`` (with track and scenario group ids);
2. per model: embeddings streamed from the geometry in batches, then the FAISS index (exact or IVF,
   with its measured recall@10 against exact), then every window's uniqueness through that index
   (``trajemb.analysis.uniqueness``);
3. per model: the 2-D layout (``trajemb.retrieval.projection``);
4. the evaluation of every model and of the baselines on the same queries (``trajemb.analysis.evaluate``).

``build_bundle`` runs them all in a temporary folder that replaces ``out`` in one rename.
``complete_bundle`` runs the uniqueness and stages 3 and 4 in place on a bundle built without them
(the explorer opens the built-in default data after stage 2 and finishes the rest while a person
already works); each file is written atomically before the manifest names it, and the manifest is replaced atomically
under a lock, so a reader sees either the old or the new bundle and an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from trajemb import __version__
from trajemb.analysis.bundle import (
    BASELINES_FILE,
    BUNDLE_FORMAT,
    CHECKPOINT_DIR,
    EMBEDDINGS,
    ID_COLUMNS,
    INDEX,
    LABEL_COLUMNS,
    MANIFEST,
    MAPS_DIR,
    META_FILE,
    PROJECTION,
    REPORT,
    UNIQUENESS,
    XY_FILE,
    Bundle,
    is_row_file,
    model_file,
    read_bundle_manifest,
    row_file_model,
    safe_name,
    weights_id,
)
from trajemb.analysis.evaluate import (
    EvalConfig,
    baseline_reports,
    baseline_robustness,
    encoder_reports,
    evaluate_features,
    evaluation_corpus,
    sample_queries,
)
from trajemb.analysis.uniqueness import UniquenessConfig, bundle_uniqueness
from trajemb.core.atomic import atomic_dir, atomic_path, output_lock
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.fields import check_fields, param
from trajemb.core.integrity import digest_file
from trajemb.core.jsonio import read_json_object
from trajemb.core.outputs import check_output_dir
from trajemb.core.validate import MAX_SEED
from trajemb.data.store import (
    META_COLUMNS,
    ColumnHasher,
    ContentHasher,
    TrajectoryTable,
    check_positions,
    check_unique_ids,
    read_manifest,
)
from trajemb.retrieval.index import IndexSpec, build_search_index, save_faiss_index
from trajemb.retrieval.projection import ProjectionConfig, project_2d
from trajemb.serving.completion import ProgressFile, Step, completion_lock

log = logging.getLogger(__name__)

#: Files of a checkpoint folder that go into a bundle (nothing else is copied, links never).
CHECKPOINT_FILES = ("model.safetensors", "config.json", "card.json")


@dataclass(frozen=True)
class BundleConfig:
    """``trajemb bundle``: a flag per field (the nested configs' under their prefixes,
    ``--evaluation-num-queries``)."""

    index: IndexSpec = param(default_factory=IndexSpec, help="the FAISS index (trajemb.retrieval.index)")
    evaluation: EvalConfig = param(
        default_factory=EvalConfig, help="the evaluation (trajemb.analysis.evaluate)"
    )
    projection: ProjectionConfig = param(
        default_factory=ProjectionConfig, help="the 2-D layouts (trajemb.retrieval.projection)"
    )
    evaluate: bool = param(True, help="evaluate now (off: the explorer can add it later)")
    device: str = param("auto", help="auto (cuda, then cpu), cpu, cuda, cuda:1, ...")
    seed: int = param(0, help="seed of the evaluation and the layouts", low=0, high=MAX_SEED)
    batch_size: int = param(0, help="embedding batch (0: the device's default)", low=0, high=1 << 20)
    engine: Literal["local", "ray"] = param(
        "local",
        help="embed here, or on a Ray cluster (needs the [ray] extra); index, layout and evaluation stay here",
    )
    ray_address: str | None = param(None, help="with engine ray: cluster to join")
    uniqueness: UniquenessConfig = param(
        default_factory=UniquenessConfig,
        help="uniqueness scores (trajemb.analysis.uniqueness; k 0 skips them)",
    )

    def __post_init__(self) -> None:
        check_fields(self)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=_json_default, allow_nan=True)


class BundleWriter:
    """Adds files to a bundle folder and keeps the manifest's digests in step with them."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.manifest.setdefault("files", {})
        self.manifest.setdefault("models", {})

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the seconds a stage takes under ``manifest["stage_s"]``."""
        t0 = time.perf_counter()
        yield
        self.manifest.setdefault("stage_s", {})[stage] = round(time.perf_counter() - t0, 2)

    def record(self, key: str) -> None:
        """Digest a file already written under ``root`` into the manifest; a per-row file is tied to the
        bundle's rows (and a model's to its weights) where the manifest has the window ids' digest."""
        entry: dict[str, Any] = digest_file(self.root / key).to_dict()
        ids = self.manifest.get("window_ids_sha256")
        if ids is not None and is_row_file(key):
            entry.update(rows=int(self.manifest["num_windows"]), ids_sha256=ids)
            model = row_file_model(key)
            if model is not None:
                entry["weights_sha256"] = weights_id(
                    self.manifest["files"][model_file(model, f"{CHECKPOINT_DIR}/{CHECKPOINT_FILES[0]}")]
                )
        self.manifest["files"][key] = entry

    def write_json(self, key: str, data: Any) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(_dumps(data), encoding="utf-8")
        self.record(key)

    def write_array(self, key: str, array: np.ndarray) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        self.record(key)

    def save_manifest(self) -> None:
        with atomic_path(self.root / MANIFEST) as tmp:
            tmp.write_text(_dumps(self.manifest), encoding="utf-8")


# -- stage 1: windows --------------------------------------------------------------------------------
def write_windows(table_path: Path, writer: BundleWriter, progress: bool = True) -> dict[str, Any]:
    """Stream the table into the bundle's geometry and metadata files; returns the table manifest."""
    table_path = Path(table_path)
    table_manifest = read_manifest(table_path)
    n, T = int(table_manifest["num_windows"]), int(table_manifest["num_steps"])
    try:
        parquet = pq.ParquetFile(table_path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{table_path}: unreadable trajectory table ({exc})") from exc
    if parquet.metadata.num_rows != n:
        raise DataError(f"{table_path}: {parquet.metadata.num_rows} rows, its manifest says {n}")
    xy_path = writer.root / XY_FILE
    xy_path.parent.mkdir(parents=True, exist_ok=True)
    xy_out = np.lib.format.open_memmap(xy_path, mode="w+", dtype=np.float32, shape=(n, T, 2))
    hasher = ContentHasher(int(table_manifest["format_version"]))
    ids = ColumnHasher()
    bar = tqdm(total=n, desc="windows", unit="win", unit_scale=True, disable=not progress, dynamic_ncols=True)
    offset = 0
    meta_parts: list[pa.Table] = []  # the metadata written is what was hashed, not a second read
    try:
        for group in range(parquet.num_row_groups):
            # Every column: the hash covers them all, so a table whose labels were edited is refused.
            batch = parquet.read_row_group(group, columns=[*META_COLUMNS, "xy_agent"])
            meta_parts.append(batch.drop_columns(["xy_agent"]))
            xy = batch.column("xy_agent").combine_chunks().flatten().to_numpy().reshape(-1, T, 2)
            if offset + len(xy) > n:
                raise DataError(f"{table_path}: more rows than its manifest says ({n})")
            check_positions(table_path, xy, batch.column("window_id"))
            hasher.update(batch)
            ids.update(batch.column("window_id").combine_chunks())
            xy_out[offset : offset + len(xy)] = xy
            offset += len(xy)
            bar.update(len(xy))
    except (pa.ArrowInvalid, ValueError, OSError, KeyError) as exc:
        raise DataError(f"{table_path}: trajectory table is corrupt ({exc})") from exc
    finally:
        bar.close()
    xy_out.flush()
    del xy_out
    if offset != n or hasher.hexdigest() != table_manifest["content_sha256"]:
        raise DataError(
            f"{table_path}: content does not match the hash in its own manifest (modified after "
            "`trajemb prepare` wrote it?); re-run trajemb prepare"
        )
    writer.manifest.update(
        num_windows=n,
        window_ids_sha256=ids.hexdigest(),
        table_format_version=table_manifest["format_version"],
    )
    writer.record(XY_FILE)
    meta = pa.concat_tables(meta_parts, promote_options="permissive")
    check_unique_ids(table_path, meta.column("window_id"))
    meta = _meta_with_groups(meta)
    with atomic_path(writer.root / META_FILE) as tmp:
        pq.write_table(meta, tmp, compression="zstd", row_group_size=max(1, n))
    writer.record(META_FILE)
    return table_manifest


def _meta_with_groups(meta: pa.Table) -> pa.Table:
    """Metadata with dictionary-encoded labels and ids, plus int32 track and scenario group ids."""
    columns = {}
    for name in meta.column_names:
        col = meta.column(name)
        if name in LABEL_COLUMNS or name in ID_COLUMNS:
            col = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
            col = pc.dictionary_encode(col.combine_chunks())
        columns[name] = col
    strings = {name: meta.column(name).cast(pa.string()) for name in ("source", "scenario_id", "track_id")}
    scenario = pc.binary_join_element_wise(strings["source"], strings["scenario_id"], "/")
    track = pc.binary_join_element_wise(scenario, strings["track_id"], "/")
    for name, key in (("track_group", track), ("scenario_group", scenario)):
        columns[name] = pc.dictionary_encode(key.combine_chunks()).indices.cast(pa.int32())
    return pa.table(columns)


def copy_maps(map_keys: list[str], maps_dir: Path | None, writer: BundleWriter) -> dict[str, int]:
    """Copy the reduced maps the windows need; returns how many were found."""
    if maps_dir is None:
        log.warning("no maps folder given: the bundle will show trajectories without maps")
        return {"available": 0, "needed": len(map_keys)}
    found = 0
    for key in map_keys:
        try:
            name = safe_name(f"{key}.npz", "map key")
        except DataError:
            log.warning("map key %r is not a plain name; its map is left out", key)
            continue
        src = Path(maps_dir) / name
        if src.is_file() and not src.is_symlink():
            dest = writer.root / MAPS_DIR / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            writer.record(f"{MAPS_DIR}/{name}")
            found += 1
    if found < len(map_keys):
        log.warning("%d of %d maps missing in %s", len(map_keys) - found, len(map_keys), maps_dir)
    return {"available": found, "needed": len(map_keys)}


# -- stage 2: models ---------------------------------------------------------------------------------
def model_name_for(checkpoint: Path, card: dict[str, Any], taken: set[str]) -> str:
    """The card's ``name`` or the checkpoint's folder name (``run/best`` -> ``run``), made unique."""
    folder = checkpoint.parent.name if checkpoint.name in ("best", "last") else checkpoint.name
    raw = card.get("name") or folder
    name = safe_name(raw, f"model name (from {checkpoint / 'card.json'} or the folder name)")
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def embed_rows(
    model: Any,
    xy: np.ndarray,
    out: np.ndarray,
    device: Any,
    batch_size: int,
    progress: bool,
    desc: str,
    history_steps: int | None = None,
) -> None:
    """Embed (N, T, 2) geometry (memory-mapped) into ``out`` (N, D), batch by batch; a history model
    embeds each window's first ``history_steps`` steps in their last-state frame (``trajemb.data.history``)."""
    from trajemb.data.history import history_input
    from trajemb.training.embed import Embedder

    embedder = Embedder(model, device, batch_size)
    n = len(xy)
    bar = tqdm(total=n, desc=desc, unit="win", unit_scale=True, disable=not progress, dynamic_ncols=True)
    step = max(batch_size, 65_536)
    for start in range(0, n, step):
        stop = min(n, start + step)
        batch = np.asarray(xy[start:stop])
        out[start:stop] = embedder(batch if history_steps is None else history_input(batch, history_steps))
        bar.update(stop - start)
    bar.close()


def add_model(
    writer: BundleWriter,
    checkpoint: Path,
    config: BundleConfig,
    progress: bool = True,
    table_path: Path | None = None,
) -> str:
    """Copy a checkpoint into the bundle, embed every window with it (here, or on Ray from ``table_path``)
    and index the embeddings."""
    from trajemb.core.devices import resolve_device
    from trajemb.training.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint)
    device = resolve_device(config.device)
    model, card = load_checkpoint(checkpoint, device)
    n_steps = int(writer.manifest["num_steps"])
    history_steps = checked_history_steps(checkpoint, card, n_steps, config.engine)
    steps = n_steps if history_steps is None else history_steps
    if steps > model.config.max_steps:  # else the encoder refuses the first batch, naming no file
        raise DataError(
            f"{checkpoint}: its encoder takes at most {model.config.max_steps} steps (max_steps in "
            f"config.json), this table's windows have {steps}; use another checkpoint or shorter --steps"
        )
    name = model_name_for(checkpoint, card, set(writer.manifest["models"]))
    folder = writer.root / "models" / name
    (folder / CHECKPOINT_DIR).mkdir(parents=True)
    for file in CHECKPOINT_FILES:
        shutil.copyfile(checkpoint / file, folder / CHECKPOINT_DIR / file)
        writer.record(model_file(name, f"{CHECKPOINT_DIR}/{file}"))
    n = int(writer.manifest["num_windows"])
    dim = model.config.embedding_dim
    xy = np.load(writer.root / XY_FILE, mmap_mode="r")
    t0 = time.perf_counter()
    emb = np.lib.format.open_memmap(folder / EMBEDDINGS, mode="w+", dtype=np.float32, shape=(n, dim))
    if config.engine == "ray":
        from trajemb.training.ray_embed import embed_table_on_ray

        if table_path is None:
            raise ConfigError("embedding on Ray needs the table path")
        emb[:] = embed_table_on_ray(table_path, checkpoint, address=config.ray_address, progress=progress)
    else:
        embed_rows(model, xy, emb, device, config.batch_size, progress, f"embed {name}", history_steps)
    emb.flush()
    encode_s = time.perf_counter() - t0
    bad = int((~np.isfinite(emb).all(axis=1)).sum())
    if bad:
        raise DataError(f"{checkpoint}: {bad} of {n} embeddings are NaN or infinite (a broken checkpoint?)")
    writer.record(model_file(name, EMBEDDINGS))
    engine = "ray" if config.engine == "ray" else str(device)
    log.info(
        "model %s: %d windows embedded in %.1f s (%.0f windows/s on %s)",
        name,
        n,
        encode_s,
        n / encode_s,
        engine,
    )
    index, info = build_search_index(np.asarray(emb), config.index, config.seed)
    save_faiss_index(index, folder / INDEX)
    writer.record(model_file(name, INDEX))
    writer.manifest["models"][name] = {
        "embedding_dim": dim,
        "similarity": card.get("similarity"),
        "checkpoint": str(checkpoint),
        "encode_s": encode_s,
        "encode_windows_per_s": n / encode_s,
        "encode_device": "ray" if config.engine == "ray" else str(device),
        "index": info.to_dict(),
        "projection": None,
        "evaluated": False,
    }
    if history_steps is not None:  # absent: whole windows (every bundle before issue 18)
        writer.manifest["models"][name]["history_steps"] = history_steps
    return name


# -- stage 2b: uniqueness ------------------------------------------------------------------------------
def add_uniqueness(
    writer: BundleWriter, bundle: Bundle, name: str, config: UniquenessConfig, progress: bool = True
) -> None:
    """Every window's uniqueness under model ``name`` (``trajemb.analysis.uniqueness.bundle_uniqueness``)."""
    scores, info = bundle_uniqueness(bundle, name, config, progress)
    writer.write_array(model_file(name, UNIQUENESS), scores)
    writer.manifest["models"][name]["uniqueness"] = info.to_dict()


def checked_history_steps(checkpoint: Path, card: dict[str, Any], num_steps: int, engine: str) -> int | None:
    """Issue 18: the history length of a history model (``trajemb.training.checkpoint.card_history_steps``),
    checked against the bundle's windows; None for a model of whole windows."""
    from trajemb.training.checkpoint import card_history_steps

    history_steps = card_history_steps(card, str(checkpoint))
    if history_steps is None:
        return None
    if history_steps >= num_steps:
        raise DataError(
            f"{checkpoint}: a history model of {history_steps} steps needs windows longer than that; "
            f"this table's have {num_steps} (prepare it with longer --steps)"
        )
    if engine == "ray":
        raise ConfigError(f"{checkpoint}: history models are embedded here, not on Ray; drop --engine ray")
    return history_steps


# -- stage 3: projection -----------------------------------------------------------------------------
def add_projection(
    writer: BundleWriter, bundle: Bundle, name: str, config: ProjectionConfig, progress: bool = True
) -> None:
    xy, info = project_2d(bundle.embeddings(name), config, progress)
    writer.write_array(model_file(name, PROJECTION), xy)
    writer.manifest["models"][name]["projection"] = info
    log.info("model %s: %s projection of %d rows in %.1f s", name, info["method"], len(xy), info["seconds"])


# -- stage 4: evaluation -----------------------------------------------------------------------------
def _evaluation_table(bundle: Bundle, ev: EvalConfig) -> tuple[TrajectoryTable, np.ndarray]:
    """The evaluation corpus (a seeded sample of at most ``ev.corpus`` windows) as a table, and its
    track groups."""
    import pandas as pd

    corpus = evaluation_corpus(bundle.num_windows, ev)
    codes, names = bundle.codes("direction")
    direction = np.asarray(names, dtype=object)[codes[corpus]].astype(str)
    columns: dict[str, np.ndarray] = {"direction": direction, **_evaluation_columns(bundle, corpus)}
    table = TrajectoryTable(bundle.xy.rows(corpus), pd.DataFrame(columns), {})
    return table, bundle.groups[corpus].astype(np.int64)


def evaluate_models(
    writer: BundleWriter, bundle: Bundle, config: BundleConfig, progress: bool = True, robustness: bool = True
) -> None:
    """Evaluate every model and the baselines on one corpus and one set of queries; with ``robustness``
    False the robustness curves are left to ``add_robustness`` (they take most of the time)."""
    ev = config.evaluation
    scored = ev if robustness else replace(ev, robustness=False)
    n = bundle.num_windows
    table, groups = _evaluation_table(bundle, ev)
    queries = sample_queries(len(table), ev)
    scope = {"num_windows": n, "corpus_windows": len(table), "num_queries": len(queries), "ks": list(ev.ks)}
    dims: set[int] = set()
    forecasts: dict[int, dict[str, Any]] = {}  # forecast reports by history length, shared by models
    names_ = bundle.model_names
    for i, name in enumerate(names_, start=1):
        log.info(
            "evaluating model %d/%d %s on %d queries among %d windows",
            i,
            len(names_),
            name,
            len(queries),
            len(table),
        )
        corpus = evaluation_corpus(n, ev)
        features = bundle.embeddings(name).rows(corpus)
        history_steps = bundle.history_steps(name)
        model_table = table if history_steps is None else history_view(table, history_steps)
        report: dict[str, Any] = evaluate_features(model_table, features, queries, groups, scored)
        entry = writer.manifest["models"][name]
        report.update(
            scope,
            encode_ms_per_window=1000.0 / entry["encode_windows_per_s"],
            encode_device=entry["encode_device"],
            index=entry["index"],
        )
        if history_steps is not None:
            report.update(history_reports(bundle, history_steps, ev, forecasts, progress))
        elif scored.mean_rank or scored.robustness:  # issue 12: mean rank and robustness need the encoder
            report.update(encoder_reports(table, bundle.encoder(name)[0], groups, scored))
        writer.write_json(model_file(name, REPORT), report)
        entry["evaluated"] = True
        dims.add(bundle.embedding_dim(name))
    log.info(
        "evaluating the baselines: oracle, random and FFT features once, PCA and an untrained encoder at D = %s",
        ", ".join(map(str, sorted(dims))),
    )
    merged = {
        key: {**report, **scope}
        for key, report in baseline_reports(table, dims, scored, config.seed, groups).items()
    }
    writer.write_json(BASELINES_FILE, merged)
    writer.manifest["evaluation"] = {**asdict(ev), **scope}


def needs_robustness(root: Path, manifest: dict[str, Any], config: BundleConfig) -> bool:
    """Whether ``config`` asks for robustness curves that some model's report lacks (history models
    have none: the curves perturb whole windows)."""
    if not (config.evaluate and config.evaluation.robustness):
        return False
    for name, entry in manifest["models"].items():
        if entry.get("history_steps") is not None:
            continue
        path = Path(root) / model_file(name, REPORT)
        if model_file(name, REPORT) not in manifest["files"] or not path.is_file():
            return True
        if "robustness" not in read_json_object(path, "evaluation report"):
            return True
    return False


def missing_robustness(root: Path) -> bool:
    """Whether the bundle at ``root`` was built to have robustness curves that some report lacks (its
    completion adds them last)."""
    manifest = read_bundle_manifest(Path(root))
    return needs_robustness(Path(root), manifest, _config_from_manifest(manifest, Path(root)))


def add_robustness(writer: BundleWriter, bundle: Bundle, config: BundleConfig, progress: bool = True) -> None:
    """The robustness curves of every model and of the oracle and PCA, added to the reports that
    ``evaluate_models(..., robustness=False)`` wrote (the same numbers as evaluating them together)."""
    ev = replace(config.evaluation, mean_rank=False, robustness=True)
    table, groups = _evaluation_table(bundle, ev)
    dims: set[int] = set()
    reports: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(bundle.model_names, start=1):
        if bundle.history_steps(name) is not None:
            continue  # a history model's report has its forecast scores instead (``history_reports``)
        log.info("robustness curves of model %d/%d %s", i, len(bundle.model_names), name)
        key = model_file(name, REPORT)
        report = read_json_object(writer.root / key, "evaluation report")
        report.update(encoder_reports(table, bundle.encoder(name)[0], groups, ev))
        reports[key] = report
        dims.add(bundle.embedding_dim(name))
    baselines = read_json_object(writer.root / BASELINES_FILE, "baselines")
    log.info("robustness curves of the oracle and of PCA at D = %s", ", ".join(map(str, sorted(dims))))
    for key, extra in baseline_robustness(table, dims, ev, config.seed, groups).items():
        if isinstance(baselines.get(key), dict):
            baselines[key].update(extra)
    # These files are already in the manifest, which readers check every file against: rewritten one
    # by one as their curves were ready, an explorer reading the bundle was refused it for the minutes
    # the curves take. So they are replaced together, and the caller saves the manifest right after them
    # (``_complete``, after every step).
    for key, report in reports.items():
        writer.write_json(key, report)
    writer.write_json(BASELINES_FILE, baselines)


def history_view(table: TrajectoryTable, history_steps: int) -> TrajectoryTable:
    """Issue 18: the evaluation table as a history model reads it (first H steps, last-state frame), so
    that its retrieval scores compare histories with histories."""
    from dataclasses import replace

    from trajemb.data.history import history_input

    return replace(table, xy_agent=history_input(table.xy_agent, history_steps))


def history_reports(
    bundle: Bundle, history_steps: int, ev: EvalConfig, cache: dict[int, dict[str, Any]], progress: bool
) -> dict[str, Any]:
    """Issue 18: a history model's report entries: ``history_steps`` and ``forecast``, the bank's own
    windows forecast leave-one-scenario-out (``trajemb.analysis.forecast.forecast_report``), once per history
    length. Mean rank and robustness curves perturb whole windows in their start frame: left out."""
    from trajemb.analysis.forecast import ForecastConfig, forecast_report

    if history_steps not in cache:
        log.info("forecasting %d of the bank's windows from %d-step histories", ev.num_queries, history_steps)
        config = ForecastConfig(history_steps=history_steps, seed=ev.seed)
        cache[history_steps] = forecast_report(bundle, config, ev.num_queries, progress)
    return {"history_steps": history_steps, "forecast": cache[history_steps]}


def _evaluation_columns(bundle: Bundle, corpus: np.ndarray) -> dict[str, np.ndarray]:
    """Issue 12 (retrieval work): the columns per-class scores, scenario exclusion and the time-offset
    robustness curve read (``trajemb.analysis.evaluate``); bundles built before ``true_manoeuvre`` lack it."""
    columns: dict[str, np.ndarray] = {
        "scenario_group": bundle.scenario_groups[corpus].astype(np.int64),
        "start_timestep": bundle.numbers("start_timestep")[corpus].astype(np.int64),
    }
    try:
        codes, names = bundle.codes("true_manoeuvre")
    except DataError:
        return columns
    columns["true_manoeuvre"] = np.asarray(names, dtype=object)[codes[corpus]].astype(str)
    return columns


# -- whole bundles -----------------------------------------------------------------------------------
def check_bundle_output(out: Path, inputs: list[Path]) -> None:
    """Refuse to replace anything but an earlier trajemb bundle (or an empty folder), or an input."""
    check_output_dir(Path(out), kind="bundle", inputs=inputs)


def build_bundle(
    table_path: Path,
    checkpoints: list[Path],
    out: Path,
    maps_dir: Path | None = None,
    config: BundleConfig = BundleConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Embed, index, project and evaluate ``table_path`` under every checkpoint; write ``out`` atomically."""
    if not checkpoints:
        raise DataError("give at least one --checkpoint")
    from trajemb.core.devices import resolve_device
    from trajemb.training.checkpoint import read_card

    names: set[str] = set()
    num_steps = int(read_manifest(Path(table_path))["num_steps"])
    for ckpt in checkpoints:  # every input checked before any work starts
        card = read_card(Path(ckpt))
        for file in CHECKPOINT_FILES:
            if not (Path(ckpt) / file).is_file():
                raise DataError(f"{ckpt}: checkpoint is missing {file}")
        checked_history_steps(Path(ckpt), card, num_steps, config.engine)
        names.add(model_name_for(Path(ckpt), card, names))
    if maps_dir is not None and not Path(maps_dir).is_dir():
        raise DataError(
            f"--maps {maps_dir}: not a folder (give the --maps-dir of `trajemb prepare`, or leave it out)"
        )
    if config.engine == "local":
        resolve_device(config.device)
    else:  # a cluster that is not there is refused before any work starts
        from trajemb.core.ray_runtime import check_ray_address

        check_ray_address(config.ray_address)
    check_bundle_output(
        Path(out), [Path(table_path), *map(Path, checkpoints), *([Path(maps_dir)] if maps_dir else [])]
    )
    t0 = time.perf_counter()
    with atomic_dir(Path(out)) as tmp:
        writer = BundleWriter(tmp, {"format": BUNDLE_FORMAT})
        log.info("stage 1: windows of %s", table_path)
        with writer.timed("windows"):
            table_manifest = write_windows(Path(table_path), writer, progress)
        n = int(table_manifest["num_windows"])
        writer.manifest.update(
            {
                "trajemb_version": __version__,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "table_sha256": table_manifest["content_sha256"],
                "table_window_config": table_manifest.get("window_config"),
                "num_windows": n,
                "num_steps": int(table_manifest["num_steps"]),
                "config": asdict(config),
            }
        )
        map_keys = sorted(
            set(pq.read_table(tmp / META_FILE, columns=["map_key"]).column(0).cast(pa.string()).to_pylist())
        )
        writer.manifest["maps"] = copy_maps(map_keys, maps_dir, writer)
        for i, ckpt in enumerate(checkpoints, start=1):
            log.info(
                "stage 2: model %d/%d %s: embedding and indexing %d windows", i, len(checkpoints), ckpt, n
            )
            with writer.timed(f"model {i}"):
                add_model(writer, Path(ckpt), config, progress, Path(table_path))
        writer.save_manifest()
        _complete(writer, config, progress)
        writer.manifest["build_s"] = time.perf_counter() - t0
        writer.save_manifest()
    return writer.manifest


#: Estimated cost of each completion step, seconds per model and per 10,000 windows laid out or scored,
#: measured on this project's 2-core machine (the built-in default data, 6 models, 21,533 windows:
#: layouts 150 s, of which 45 s compiling UMAP's kernels (numba) in the first, evaluation 30 s,
#: robustness curves 189 s; ``scripts/bench_app.py --first-start --follow``). Only their ratios matter
#: to the time left, which scales them by the pace this machine shows on the steps already done.
LAYOUT_S_PER_10K = 8.0
LAYOUT_WARMUP_S = 45.0
EVALUATION_S_PER_10K = 2.3
ROBUSTNESS_S_PER_10K = 15.7
#: Uniqueness of every window: 15.7 s at 1M windows inside ``trajemb bundle`` (docs/performance.md).
UNIQUENESS_S_PER_10K = 0.2


def completion_steps(
    root: Path, manifest: dict[str, Any], config: BundleConfig
) -> list[tuple[Step, str, str | None]]:
    """What ``complete_bundle`` still has to do, in order: (step, kind, model) with kind "uniqueness",
    "layout", "evaluation" or "robustness". Uniqueness first (seconds; the rare list needs it), then the
    layouts (the explorer's 2-D views appear one by one), then the evaluation, then the robustness
    curves (most of the time; the other pages are complete by then)."""
    n = int(manifest["num_windows"])
    ev = config.evaluation
    layout_rows = n if n <= config.projection.full_max_rows else config.projection.sample_size
    scored = min(n, ev.max_corpus) / 1e4
    steps: list[tuple[Step, str, str | None]] = []
    if config.uniqueness.k:
        for name, entry in manifest["models"].items():
            if not entry.get("uniqueness"):
                cost = UNIQUENESS_S_PER_10K * n / 1e4
                steps.append(
                    (Step(f"uniqueness of every window under model {name}", cost), "uniqueness", name)
                )
    if config.projection.method != "none":
        first_layout = True
        for name, entry in manifest["models"].items():
            if entry.get("projection") is None:
                cost = LAYOUT_S_PER_10K * layout_rows / 1e4 + 0.5 * n / 1e6
                cost += LAYOUT_WARMUP_S if first_layout else 0.0
                first_layout = False
                steps.append((Step(f"2-D layout of model {name}", cost), "layout", name))
    evaluated = all(m.get("evaluated") for m in manifest["models"].values()) and (
        BASELINES_FILE in manifest["files"]
    )
    if config.evaluate and not evaluated:
        cost = EVALUATION_S_PER_10K * scored * len(manifest["models"])
        steps.append((Step("evaluation of every model and the baselines", cost), "evaluation", None))
    if config.evaluate and ev.robustness and (not evaluated or needs_robustness(root, manifest, config)):
        cost = ROBUSTNESS_S_PER_10K * min(n, ev.robustness_corpus) / 1e4 * len(manifest["models"])
        steps.append((Step("robustness curves", cost), "robustness", None))
    return steps


#: The stage (module docstring) each kind of completion step belongs to, for the log.
_STAGE_OF_STEP = {"uniqueness": "2b", "layout": "3", "evaluation": "4", "robustness": "4"}


def _complete(writer: BundleWriter, config: BundleConfig, progress: bool) -> bool:
    """Stages 3 and 4 where they are missing, each step saved as it ends, with a progress file that
    other processes read (``trajemb.serving.completion``); returns whether anything was added."""
    bundle = Bundle(writer.root)
    steps = completion_steps(writer.root, writer.manifest, config)
    if not steps:
        return False
    tracker = ProgressFile(writer.root, [step for step, _, _ in steps])
    try:
        for step, kind, name in steps:
            log.info("stage %s: %s", _STAGE_OF_STEP[kind], step.name)
            if kind == "uniqueness":
                assert name is not None
                with writer.timed(f"uniqueness {name}"):
                    add_uniqueness(writer, bundle, name, config.uniqueness, progress)
            elif kind == "layout":
                assert name is not None
                with writer.timed(f"projection {name}"):
                    add_projection(writer, bundle, name, config.projection, progress)
            elif kind == "evaluation":
                with writer.timed("evaluation"):
                    evaluate_models(writer, bundle, config, progress, robustness=False)
            else:
                with writer.timed("robustness"):
                    add_robustness(writer, bundle, config, progress)
            writer.save_manifest()
            tracker.step_done()
    finally:
        tracker.close()
    return True


def complete_bundle(root: Path, config: BundleConfig | None = None, progress: bool = True) -> bool:
    """Add the projections and evaluation a bundle lacks, in place; returns whether anything was added.

    ``config`` defaults to the one the bundle was built with (with projection and evaluation on).
    Another process completing the same bundle is waited for (``trajemb.serving.completion``); a ``trajemb
    bundle`` writing the same folder stops this one at once, naming it (``trajemb.core.atomic.output_lock``).
    A step that does not finish (an error, a signal) leaves no file behind that the manifest does not
    name.
    """
    root = Path(root)
    read_bundle_manifest(root)  # a bundle at all, before anything (even a lock file) is written there
    with completion_lock(root), output_lock(root):
        manifest = read_bundle_manifest(root)
        Bundle(root).verify_all()  # never build on a file that was changed after the bundle was written
        if config is None:
            config = _config_from_manifest(manifest, root)
        before = _files_under(root)
        try:
            return _complete(BundleWriter(root, manifest), config, progress)
        except BaseException:
            _remove_unnamed(root, before)
            raise


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _remove_unnamed(root: Path, before: set[str]) -> None:
    """Remove the files an unfinished completion added that the manifest on disk does not name."""
    try:
        named = set(read_bundle_manifest(root)["files"])
    except DataError:
        named = set()
    for rel in sorted(_files_under(root) - before - named):
        (root / rel).unlink(missing_ok=True)
        log.info("removed %s, written by the interrupted completion", root / rel)


def _config_from_manifest(manifest: dict[str, Any], root: Path) -> BundleConfig:
    """The build config a bundle's manifest records (what ``trajemb complete`` rebuilds with); any
    malformed or out-of-range part is one error naming the manifest (the config's own checks name a
    field, such as ``n_neighbors``, that no flag of ``trajemb complete`` sets)."""
    where = Path(root) / MANIFEST

    def section(value: object, name: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TypeError(f"{name} is {type(value).__name__} {value!r:.40}, not an object")
        return value

    try:
        raw = section(manifest.get("config"), "config")
        ev = section(raw.get("evaluation"), "config.evaluation")
        proj = section(raw.get("projection"), "config.projection")
        return BundleConfig(
            index=IndexSpec(**section(raw.get("index"), "config.index")),
            evaluation=EvalConfig(**{**ev, "ks": tuple(ev.get("ks", (1, 5, 10)))}),
            projection=ProjectionConfig(
                **{
                    **proj,
                    "method": proj.get("method") if proj.get("method") not in (None, "none") else "auto",
                }
            ),
            device=str(raw.get("device", "auto")),
            seed=int(raw.get("seed", 0)),
            uniqueness=UniquenessConfig(**section(raw.get("uniqueness"), "config.uniqueness")),
        )
    except (TypeError, ValueError, ConfigError) as exc:
        raise DataError(f"{where}: invalid build config ({exc}); rebuild it with `trajemb bundle`") from exc
