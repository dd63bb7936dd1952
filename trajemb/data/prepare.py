"""AV2 folders -> trajectory table: read every scenario / sensor log in parallel and cut windows.

Work is distributed over worker processes in chunks; each worker returns columnar numpy batches, so
the parent never touches per-state Python objects. Input errors (``DataError``, and any unexpected
error a worker meets while reading one input) either stop the run with the file named or, with
``skip_bad``, are collected and reported. Every input and the output are checked before the first
scenario is read; workers die with the command (``trajemb.core.workers``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Generator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from trajemb import __version__
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.outputs import SYNTH_MARKER, check_cache_dir, check_output_file
from trajemb.core.validate import check_int
from trajemb.core.workers import MAX_WORKERS, imap_ordered, process_pool
from trajemb.data.av2_motion import find_scenario_files, map_path_for, read_scenario_tracks
from trajemb.data.av2_sensor import find_sensor_logs, read_sensor_log_tracks, sensor_log_map_path
from trajemb.data.lanes import LaneGraph, lane_graph_from_json, read_lane_graph, read_map_json
from trajemb.data.maps import MapCache
from trajemb.data.schema import Source, TrackSet, WindowColumns, WindowConfig
from trajemb.data.store import open_table_writer
from trajemb.data.truth import read_truth, truth_path_for
from trajemb.data.windows import (
    CityWindows,
    concat_city_windows,
    concat_windows,
    cut_windows,
    to_agent_frame,
    with_map_directions_many,
)

log = logging.getLogger(__name__)

JobKind = Literal["motion", "sensor"]
Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class PrepareConfig:
    """Inputs and options of ``trajemb prepare``."""

    av2_dirs: tuple[str, ...] = ()
    sensor_log_dirs: tuple[str, ...] = ()
    window: WindowConfig = field(default_factory=WindowConfig)
    workers: int = 0  # 0: one per CPU core
    skip_bad: bool = False
    maps_dir: str | None = None  # reduce and cache the maps the windows need here
    engine: Engine = "local"  # local: a process pool; ray: Ray Data tasks (trajemb.data.ray_prepare)
    ray_address: str | None = None  # engine ray: cluster to join (None: RAY_ADDRESS, else a local one)

    def __post_init__(self) -> None:
        if not self.av2_dirs and not self.sensor_log_dirs:
            raise ConfigError("give at least one --av2 or --sensor-logs folder")
        check_int("--workers", self.workers, 0, MAX_WORKERS)
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {self.engine!r}")
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError("--ray-address needs --engine ray")

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input folder or file (an output may not be, contain or lie inside one)."""
        return self.av2_dirs + self.sensor_log_dirs


@dataclass(frozen=True)
class Job:
    kind: JobKind
    path: Path
    source: Source


@dataclass
class PrepareReport:
    num_inputs: int
    num_windows: int
    skipped: list[tuple[str, str]]
    elapsed_s: float
    manifest: dict[str, object]


def _below_synth_marker(folder: Path, memo: dict[Path, bool]) -> bool:
    """Whether ``folder`` or a folder above it holds a ``trajemb synth`` marker (memoised per folder)."""
    if folder not in memo:
        parent = folder.parent
        memo[folder] = (folder / SYNTH_MARKER).is_file() or (
            parent != folder and _below_synth_marker(parent, memo)
        )
    return memo[folder]


def collect_jobs(config: PrepareConfig) -> list[Job]:
    """Every scenario file and sensor log named by ``config``, in a stable order.

    The source is decided per scenario: synthetic when a ``trajemb synth`` marker sits in its folder or
    any folder above it (so synthetic data copied below a root of real data is still labelled
    synthetic), and when the file's own metadata says so (checked by the reader).

    Raises:
        DataError: a root is missing or empty, or two roots overlap so that an input would be read twice.
    """
    jobs: list[Job] = []
    memo: dict[Path, bool] = {}
    for root in config.av2_dirs:
        for p in find_scenario_files(Path(root)):
            synthetic = _below_synth_marker(Path(os.path.abspath(p.parent)), memo)
            jobs.append(Job("motion", p, Source.SYNTHETIC if synthetic else Source.AV2_MOTION))
    for root in config.sensor_log_dirs:
        jobs += [Job("sensor", p, Source.AV2_SENSOR) for p in find_sensor_logs(Path(root))]
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.path.resolve()
        if key in seen:
            raise ConfigError(
                f"{job.path} is found twice (also as {seen[key]}): the input folders overlap; give each once"
            )
        seen[key] = job.path
    return jobs


@dataclass(frozen=True)
class CutInput:
    """One input's windows in the city frame, before the lane graph labels them (``process_chunk``
    labels the inputs of a chunk together)."""

    windows: CityWindows
    tracks: TrackSet
    graph: LaneGraph | None  # its map's lanes; None where it has no windows to label


def cut_job(job: Job, window: WindowConfig, maps_dir: str | None) -> CutInput:
    """Read one input and cut its windows, still in the city frame, and read the lane graph of its map
    (``label_inputs`` gives the windows their directions from it); a synthetic scenario's truth sidecar
    (``trajemb.data.truth``), where present, gives them their ``true_manoeuvre``."""
    if job.kind == "motion":
        tracks = read_scenario_tracks(job.path, job.source)
        map_path = map_path_for(job.path)
        truth_path = truth_path_for(job.path)
        if tracks.source == Source.SYNTHETIC and truth_path.is_file():
            truth = read_truth(truth_path, tracks.track_ids, tracks.num_steps)
            tracks = replace(tracks, truth=truth)
    else:
        tracks = read_sensor_log_tracks(job.path)
        map_path = sensor_log_map_path(job.path)
    if not map_path.is_file():
        raise DataError(f"{map_path}: map file missing beside {job.path.name}")
    windows = cut_windows(tracks, window)
    graph = None
    if len(windows):
        if maps_dir is None:  # only the lane segments' centre lines and links are decoded
            graph = read_lane_graph(map_path)
        else:
            decoded = read_map_json(map_path)  # once, for the lane graph and the map cache alike
            graph = lane_graph_from_json(decoded, map_path)
            MapCache(Path(maps_dir)).get(map_path, decoded)
    return CutInput(windows, tracks, graph)


def label_inputs(cut: list[CutInput]) -> list[CityWindows]:
    """The windows of each input with the directions its map's lane graph gives them, all inputs in
    one pass (``with_map_directions_many``: the labels of one input at a time)."""
    labelled = with_map_directions_many([(c.windows, c.tracks, c.graph) for c in cut if c.graph is not None])
    out = [c.windows for c in cut]
    for i, windows in zip((i for i, c in enumerate(cut) if c.graph is not None), labelled, strict=True):
        out[i] = windows
    return out


@dataclass(frozen=True)
class ChunkResult:
    windows: WindowColumns
    errors: list[tuple[str, str]]  # (path, reason)
    num_jobs: int


def _input_error(job: Job, exc: Exception) -> tuple[str, str]:
    """(path, reason) of an input that failed with ``exc``."""
    if isinstance(exc, DataError):
        return str(job.path), str(exc)
    log.debug("unexpected error reading %s", job.path, exc_info=True)
    return str(job.path), f"{job.path}: unexpected {type(exc).__name__} while reading it: {exc}"


def process_chunk(args: tuple[list[Job], WindowConfig, str | None]) -> ChunkResult:
    """Cut the windows of a chunk of inputs one input at a time, then give them their map directions
    (``label_inputs``) and normalise them, each in one vectorised pass over the chunk.

    Runs in a worker process; input errors are returned, not raised, so that the parent decides
    whether to stop or skip. An unexpected error while reading one input is that input's error too:
    one malformed file must not end a ``--skip-bad`` run of a quarter of a million.
    """
    jobs, window, maps_dir = args
    cut: dict[int, CutInput] = {}
    errors: dict[int, tuple[str, str]] = {}
    for i, job in enumerate(jobs):
        try:
            cut[i] = cut_job(job, window, maps_dir)
        except Exception as exc:
            errors[i] = _input_error(job, exc)
    try:
        batches = label_inputs(list(cut.values()))
    except Exception:  # an error labelling one input is that input's alone: label them one at a time
        batches = []
        for i, c in list(cut.items()):
            try:
                batches += label_inputs([c])
            except Exception as exc:
                errors[i] = _input_error(jobs[i], exc)
    windows = to_agent_frame(concat_city_windows(batches, window.num_steps))
    return ChunkResult(windows, [errors[i] for i in sorted(errors)], len(jobs))


def chunk_size(num_jobs: int, workers: int) -> int:
    """Inputs per chunk: about four chunks per worker (load balance), at most 64 (memory)."""
    return max(1, min(64, num_jobs // (workers * 4) or 1))


def _run(jobs: list[Job], config: PrepareConfig) -> Generator[ChunkResult, None, None]:
    if config.engine == "ray":
        from trajemb.data.ray_prepare import run_chunks_on_ray

        yield from run_chunks_on_ray(jobs, config)
        return
    workers = config.workers or (os.cpu_count() or 1)
    chunk = chunk_size(len(jobs), workers)
    args = [(jobs[i : i + chunk], config.window, config.maps_dir) for i in range(0, len(jobs), chunk)]
    if workers == 1 or len(args) == 1:
        yield from map(process_chunk, args)
        return
    try:
        with process_pool(workers) as pool:
            yield from imap_ordered(pool, process_chunk, args, in_flight=4 * workers)
    except BrokenProcessPool as exc:
        raise DataError(
            "a worker process died while reading the inputs (killed, or out of memory?); "
            "rerun with --workers 1 to find the input"
        ) from exc


def _prepared_batches(
    config: PrepareConfig, jobs: list[Job], skipped: list[tuple[str, str]], progress: bool
) -> Generator[WindowColumns, None, None]:
    """Windows of every input, one chunk at a time; bad inputs stop the run or go to ``skipped``."""
    bar = tqdm(total=len(jobs), desc="prepare", unit="scenario", disable=not progress, dynamic_ncols=True)
    try:
        # closing(): the worker pool stops as soon as this loop ends, even on an error, not when the
        # abandoned generator happens to be collected.
        with contextlib.closing(_run(jobs, config)) as results:
            for result in results:
                bar.update(result.num_jobs)
                if result.errors and not config.skip_bad:
                    raise DataError(f"{result.errors[0][1]} (use --skip-bad to go on past bad inputs)")
                for path, reason in result.errors:
                    skipped.append((path, reason))
                    log.warning("skipped %s", reason)
                yield result.windows
    finally:
        bar.close()
    if len(skipped) == len(jobs):
        raise DataError(f"all {len(jobs)} inputs were bad; first: {skipped[0][1]}")


def prepare_windows(
    config: PrepareConfig, progress: bool = True
) -> tuple[WindowColumns, list[Job], list[tuple[str, str]]]:
    """Read and window every input of ``config`` in memory; returns windows, jobs and skipped
    (path, reason). ``prepare_table`` streams the same windows to disk instead."""
    if config.maps_dir is not None:
        check_cache_dir(config.maps_dir, "--maps-dir", config.inputs)
    jobs = collect_jobs(config)
    skipped: list[tuple[str, str]] = []
    batches = list(_prepared_batches(config, jobs, skipped, progress))
    return concat_windows(batches, config.window.num_steps), jobs, skipped


def prepare_table(config: PrepareConfig, out: Path, progress: bool = True) -> PrepareReport:
    """Read and window every input of ``config`` and stream the windows into the table ``out``,
    written atomically: memory holds one chunk of windows at a time, whatever the dataset size.

    Raises:
        DataError: ``out`` may not be written (``trajemb.core.outputs.check_output_file``: it is an input
            or inside one, a folder, or a file trajemb did not write), ``--maps-dir`` is unusable, or
            an input is bad (without ``skip_bad``).
    """
    check_output_file(out, "table", config.inputs)
    if config.maps_dir is not None:
        check_cache_dir(config.maps_dir, "--maps-dir", config.inputs)
    if config.engine == "ray":  # a cluster that is not there is refused before any work starts
        from trajemb.core.ray_runtime import check_ray_address

        check_ray_address(config.ray_address)
    t0 = time.perf_counter()
    jobs = collect_jobs(config)
    skipped: list[tuple[str, str]] = []
    extra = {
        "window_config": asdict(config.window),
        "inputs": {"av2": list(config.av2_dirs), "sensor_logs": list(config.sensor_log_dirs)},
        "num_inputs": len(jobs),
        "trajemb_version": __version__,
    }
    with open_table_writer(out, config.window.num_steps, extra) as writer:
        with contextlib.closing(_prepared_batches(config, jobs, skipped, progress)) as batches:
            for batch in batches:
                writer.write(batch)
        if writer.num_windows == 0:
            raise DataError(
                f"no windows of {config.window.num_steps} steps passed the filters in {len(jobs)} input(s); "
                "try a shorter --steps, --min-speed 0, or --tracks all"
            )
        writer.manifest_extra["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    return PrepareReport(len(jobs), writer.num_windows, skipped, time.perf_counter() - t0, writer.manifest)
