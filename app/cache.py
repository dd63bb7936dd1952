"""Every cache of the explorer in one place, and where bundles come from.

The explorer serves only what it was given: the bundles named with ``--bundle`` (or
``$TRAJEMB_BUNDLE``), else the built-in default data; or, in the explicit serving mode
``--bundle-root DIR``, the bundles directly inside those folders (never through a symbolic link that
leads out of them). A link's ``?bundle=`` can choose among those by name, nothing else.

A bundle opens once per version on disk: when its folder or manifest is replaced or rewritten (the
default data gaining its 2-D layouts in the background, a rebuild), or a file it has read changes, the
next rerun opens it again, and an error found by the full check belongs to the version it was found
in. Derived data (filter masks, layout images, pickable points, clusters) is cached as resources
(shared, never copied per click). Geometry is read per row from the memory-mapped bundle, never copied
whole.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from trajemb.analysis.bundle import MANIFEST, Bundle
from trajemb.analysis.bundle import manifest_stamp as disk_stamp
from trajemb.core.errors import DataError
from trajemb.data.schema import DirectionClass
from trajemb.serving.completion import lock_holder, read_progress
from trajemb.serving.explore import (
    LABELS,
    Extent,
    city_xy,
    cluster_labels,
    cluster_medoids,
    id_columns,
    label_mask,
    layout_extent,
    path_sketches,
    pickable_rows,
    rows_in_view,
    snap_view,
    timed_scene_context,
)
from trajemb.serving.explore import sorted_rows as explore_sorted_rows
from trajemb.serving.viz import MapPanel, label_colors, map_grid_figure, projection_figure, projection_raster

from ast_lock import serialize_ast_parse

BUNDLE_ENV = "TRAJEMB_BUNDLE"
ROOTS_ENV = "TRAJEMB_BUNDLE_ROOTS"
CACHE_ENV = "TRAJEMB_CACHE"
REPO = Path(__file__).resolve().parents[1]
#: Up to this many windows in view the 2-D layout draws each as a pickable point; above, an image of
#: them all plus one pickable point per cell of an 80 x 80 grid over the view, so that a click sends
#: kilobytes whatever the corpus size. Zooming in redraws the view until every window is pickable.
LAYOUT_POINTS_MAX = 10_000
PICKER_CELLS = 80

log = logging.getLogger(__name__)
# before any thread of this module starts: its first imports (torch's) parse source beside the pages
serialize_ast_parse()


@dataclass(frozen=True)
class LaunchOptions:
    bundles: tuple[str, ...]
    roots: tuple[Path, ...]


def launch_options() -> LaunchOptions:
    """``-- --bundle PATH`` (repeatable) / ``$TRAJEMB_BUNDLE`` (``:``-separated), and ``-- --bundle-root
    DIR`` (repeatable) / ``$TRAJEMB_BUNDLE_ROOTS`` (``:``-separated): serve the bundles under these
    folders."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bundle", action="append", default=[])
    parser.add_argument("--bundle-root", action="append", default=[])
    args, _ = parser.parse_known_args(sys.argv[1:])
    bundles = args.bundle or [b for b in os.environ.get(BUNDLE_ENV, "").split(os.pathsep) if b]
    roots = [*args.bundle_root, *[r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]]
    return LaunchOptions(tuple(bundles), tuple(Path(r).resolve() for r in roots))


def served_bundles(roots: tuple[Path, ...]) -> dict[str, str]:
    """Name -> path of every bundle directly inside (or at) the allowed roots; hidden entries and
    symbolic links that lead out of their root are left out."""
    found: dict[str, str] = {}
    for root in roots:
        if not root.is_dir():
            continue
        candidates = [root] if (root / MANIFEST).is_file() else sorted(root.iterdir())
        for path in candidates:
            if path.name.startswith(".") and path != root:
                continue
            real = path.resolve()
            if not real.is_relative_to(root) or not real.is_dir():
                continue
            manifest = real / MANIFEST
            if manifest.is_file() and manifest.resolve().is_relative_to(real):
                name = path.name if path.name not in found else f"{root.name}/{path.name}"
                found[name] = str(real)
    return found


def allowed_bundles(launch: LaunchOptions) -> dict[str, str]:
    """Name -> path of what this explorer may open: the served bundles with ``--bundle-root``, else the
    ``--bundle`` ones; empty: only the built-in default data."""
    if launch.roots:
        return served_bundles(launch.roots)
    found: dict[str, str] = {}
    for given in launch.bundles:
        path = Path(given)
        name = path.name or str(path)
        found[name if name not in found else str(path)] = str(path)
    return found


# -- the built-in default data -----------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, REPO / ".cache"))


class _StatusLines(logging.Handler):
    """Shows the library's progress messages (one per stage) inside the current ``st.status``."""

    def emit(self, record: logging.LogRecord) -> None:
        st.text(f"{time.strftime('%H:%M:%S')} {record.getMessage()}")


# Not ``st.cache_resource``: a cached function replays the elements it drew, so every later session
# would show the first build's progress panel, spinning. Built once per process and cache folder.
_default_lock = threading.Lock()
_default_ready: dict[Path, str] = {}


def default_bundle_path() -> str:
    """Build (first run: windows, embeddings, indices) or find the built-in default bundle; its 2-D
    layouts and evaluation are then finished by a background process while the explorer is in use."""
    cache = cache_dir()
    with _default_lock:
        if cache not in _default_ready:
            _default_ready[cache] = _build_default_bundle(cache)
    path = _default_ready[cache]
    complete_in_background(path)
    return path


def build_default_bundle(cache: Path, progress: bool = False, complete: bool = False) -> Path:
    """``trajemb.serving.pipeline.build_default_bundle``, imported when needed (it brings torch and sklearn)."""
    from trajemb.serving.pipeline import build_default_bundle as build

    return build(cache, progress=progress, complete=complete)


def _build_default_bundle(cache: Path) -> str:
    from trajemb.serving.pipeline import default_bundle_dir

    target = default_bundle_dir(cache)
    if (target / MANIFEST).is_file():  # built before: check quietly (it is current unless inputs changed)
        try:
            return str(build_default_bundle(cache, progress=False, complete=False))
        except DataError:
            pass
    with st.status(
        "Preparing the built-in default data (first run only): synthetic AV2 scenarios, "
        "trajectory table, embeddings and indices of the shipped models…",
        expanded=True,
    ) as status:
        st.text(f"Cache folder: {cache}")
        handler = _StatusLines()
        library_log = logging.getLogger("trajemb")
        library_log.addHandler(handler)
        level = library_log.level
        library_log.setLevel(logging.INFO)
        try:
            path = build_default_bundle(cache, progress=False, complete=False)
        finally:
            library_log.removeHandler(handler)
            library_log.setLevel(level)
        status.update(
            label="Default data ready (2-D layouts and evaluation follow in the background)",
            state="complete",
            expanded=False,
        )
    return str(path)


@dataclass
class Completion:
    """A background ``trajemb complete`` run: its process id and exit code (None while it runs), its log."""

    log_path: Path
    started: float
    pid: int | None = None
    returncode: int | None = None


_completions: dict[str, Completion] = {}


def complete_in_background(path: str) -> None:
    """Start ``trajemb complete`` once per process for a bundle that lacks layouts or evaluation.

    The child is started and waited for by a thread of its own: the child ties its life to this
    process (parent-death signal, watchdog), and Linux delivers the parent-death signal when the
    *thread* that started the child ends, so it must not be a script run's thread.
    """
    with _default_lock:
        if path in _completions or bundle_is_complete(path, robustness=True):
            return
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        job = Completion(logs / f"complete-{abs(hash(path)) % 10**10}.log", time.time())
        _completions[path] = job
    threading.Thread(target=_run_completion, args=(path, job), name="trajemb-complete", daemon=True).start()


def _run_completion(path: str, job: Completion) -> None:
    cmd = [sys.executable, "-m", "trajemb", "complete", "--bundle", path, "--parent-pid", str(os.getpid())]
    with open(job.log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        job.pid = proc.pid
        job.returncode = proc.wait()


@functools.lru_cache(maxsize=8)
def _manifest(path: str, stamp: tuple[int, ...]) -> dict[str, Any]:
    """The manifest of the bundle at ``path`` as it is on disk (``stamp``): read once per version, not
    on every run (two megabytes of JSON at a million windows). Read only, never changed."""
    return Bundle(Path(path)).manifest


def bundle_is_complete(path: str, robustness: bool = False) -> bool:
    """Whether every model has its 2-D layout and evaluation (and, with ``robustness``, whether nothing
    is left to add at all: the robustness curves the bundle's config asks for included)."""
    try:
        manifest = _manifest(path, disk_stamp(Path(path)))
    except DataError:
        return False
    if not all(m.get("projection") and m.get("evaluated") for m in manifest["models"].values()):
        return False
    if not robustness:
        return True
    from trajemb.serving.bundle_build import missing_robustness

    try:
        return not missing_robustness(Path(path))
    except DataError:
        return True


@dataclass(frozen=True)
class CompletionStatus:
    """What a person is told about the completion of a bundle: ``state`` is "running" (this
    explorer's own), "waiting" (for another process, whose progress ``text`` shows) or "failed"."""

    state: str
    text: str


def completion_status(path: str) -> CompletionStatus | None:
    """None when nothing completes the bundle; else what is happening, with the time left."""
    job = _completions.get(path)
    now = time.time()
    if job is not None and job.returncode not in (None, 0):
        lines = [ln for ln in job.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {job.returncode}"
        return CompletionStatus("failed", f"failed ({last}); log: {job.log_path}")
    ours = job is not None and job.returncode is None
    progress = read_progress(Path(path))
    if progress is not None:
        if ours and job is not None and progress.pid == job.pid:
            return CompletionStatus("running", progress.summary(now))
        return CompletionStatus(
            "waiting",
            f"waiting for another process (pid {progress.pid}) that is completing this bundle: "
            + progress.summary(now),
        )
    if ours and job is not None:
        holder = lock_holder(Path(path))
        if holder is not None and holder != job.pid:  # ours checks the bundle before writing progress
            pid = f" (pid {holder})" if holder else ""
            return CompletionStatus(
                "waiting",
                f"waiting for another process{pid} that holds this bundle's lock ({now - job.started:.0f} s)",
            )
        return CompletionStatus("running", f"starting ({now - job.started:.0f} s)")
    return None


# -- opened bundles ----------------------------------------------------------------------------------
#: Path -> how many times an opened bundle was found changed on disk (part of its cache key).
_generations: dict[str, int] = {}


def bundle_stamp(path: str) -> tuple[int, ...]:
    """The version of the bundle at ``path``: its folder and manifest on disk, and the generation."""
    return (*disk_stamp(Path(path)), _generations.get(path, 0))


@st.cache_resource(show_spinner="Opening the bundle…", max_entries=4)
def _open(path: str, stamp: tuple[int, ...]) -> Bundle:
    bundle = Bundle(Path(path))
    threading.Thread(target=_verify, args=(bundle, path, stamp), name="trajemb-verify", daemon=True).start()
    return bundle


#: (path, version) -> the error the full verification of that version found. Every row the explorer
#: reads is verified before use anyway; the full check runs beside the first page so that a corrupt
#: file is reported early, without making the person wait for half a gigabyte to be hashed.
_verify_errors: dict[tuple[str, tuple[int, ...]], str] = {}


def _verify(bundle: Bundle, path: str, stamp: tuple[int, ...]) -> None:
    _yield_cpu()
    try:
        bundle.verify_all()
    except Exception as exc:
        _verify_errors[(path, stamp)] = str(exc)


def _yield_cpu() -> None:
    """Let the calling thread run only when the CPU is free of the page's own work: hashing a million
    windows' bundle (4 GB, 8 s of CPU) beside the first clicks made each click wait for it on a
    two-core machine. Linux gives each thread its own nice value; elsewhere this changes nothing."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priority: the normal one
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


#: Bundle versions whose rarity order has been prepared in the background (``_warm_rare``).
_warmed: set[tuple[str, tuple[int, ...]]] = set()


def _warm_rare(path: str, stamp: tuple[int, ...], model: str) -> None:
    """Sort the windows by their stored uniqueness beside the first page, so that the Rare page opens
    without it (a quarter of a second at a million windows); never for a bundle without stored scores
    (computing them is a minute at a million windows: only when someone opens the page)."""
    try:
        if _open(path, stamp).uniqueness(model) is not None:
            rare_order(path, stamp, model, tuple((name, ()) for name in LABELS), True)
    except Exception as exc:  # the page computes it again, and says what is wrong
        log.info("rarity order of %s not prepared: %s", path, exc)


#: Seconds between two checks of every file an opened bundle has read: at a million windows, once the
#: full check has run, that is about 9,200 ``stat`` calls (40 ms, a sixth of a page switch on the
#: server). The folder, the manifest (a rebuild, a completed stage) and the memory-mapped arrays are
#: checked on every rerun; any other file is verified against the manifest again when it is read
#: after a change, checked or not (``Bundle.changed``).
FILE_CHECK_S = 3.0
#: (path, version) -> ``time.monotonic()`` of the last check of every file read from it.
_files_checked: dict[tuple[str, tuple[int, ...]], float] = {}


def _files_due(path: str, stamp: tuple[int, ...]) -> bool:
    """Whether the files read from this version are due for a check (and if so, note it as done)."""
    now = time.monotonic()
    with _default_lock:
        last = _files_checked.get((path, stamp))
        if last is not None and now - last < FILE_CHECK_S:
            return False
        _files_checked[(path, stamp)] = now
        return True


def open_bundle(path: str) -> Bundle:
    """The bundle at ``path``, opened again whenever it changed on disk since it was opened (every file
    it has read checked at most every ``FILE_CHECK_S`` seconds, see there)."""
    stamp = bundle_stamp(path)
    bundle = _open(path, stamp)  # a replaced folder or rewritten manifest is a new stamp: a new opening
    if bundle.changed(every_file=_files_due(path, stamp)):  # a file read so far was written or replaced
        _generations[path] = _generations.get(path, 0) + 1
        bundle = _open(path, bundle_stamp(path))
        _files_due(path, bundle_stamp(path))  # opened now: nothing read yet, the interval starts here
    version = (path, bundle_stamp(path))
    with _default_lock:
        fresh = version not in _warmed
        _warmed.add(version)
    if fresh and bundle.model_names:
        threading.Thread(
            target=_warm_rare, args=(*version, bundle.model_names[0]), name="trajemb-rare", daemon=True
        ).start()
        threading.Thread(
            target=_warm_layout, args=(*version, bundle.model_names[0]), name="trajemb-layout", daemon=True
        ).start()
    error = _verify_errors.get((path, bundle_stamp(path)))
    if error is not None:
        raise DataError(error)
    return bundle


def bundle_version(path: str, stamp: tuple[int, ...]) -> Bundle:
    """The bundle at ``path`` as opened under ``stamp`` (``stamp_of`` of a bundle this rerun opened with
    ``open_bundle``, which has checked it against the disk), without checking again."""
    return _open(path, stamp)


def stamp_of(bundle: Bundle) -> tuple[str, tuple[int, ...]]:
    return str(bundle.root), bundle_stamp(str(bundle.root))


@st.cache_resource(show_spinner=False, max_entries=2048)
def map_geometry(path: str, stamp: tuple[int, ...], map_key: str) -> Any:
    """The reduced map ``map_key`` of the bundle version ``stamp`` (None where it has none)."""
    # The version this rerun opened (``stamp``), not ``open_bundle``: that checks the files the bundle
    # has read for changes (all ~9,000 maps at a million windows once the full check has run), which
    # per map made a third of a second of every rerun.
    return bundle_version(path, stamp).map_geometry(map_key)


def map_panels(
    path: str,
    stamp: tuple[int, ...],
    rows: list[int],
    titles: list[str],
    colors: list[str],
    pickable: list[bool],
) -> list[MapPanel]:
    """Each of ``rows`` on its own map with the other road users of its scenario during the same
    seconds (placed in time, for playback)."""
    bundle = bundle_version(path, stamp)
    keys = bundle.strings("map_key", rows)
    ids = bundle.strings("window_id", rows)
    xy = city_xy(bundle, rows)
    panels = []
    for i, row in enumerate(rows):
        context = timed_scene_context(bundle, row)
        panels.append(
            MapPanel(
                titles[i],
                xy[i],
                colors[i],
                map_geometry(path, stamp, keys[i]),
                [poly for _, poly in context],
                row if pickable[i] else None,
                [offset for offset, _ in context],
                hover=(titles[i], ids[i]),
            )
        )
    return panels


@st.cache_resource(show_spinner=False, max_entries=32)
def map_figure(
    path: str,
    stamp: tuple[int, ...],
    rows: tuple[int, ...],
    titles: tuple[str, ...],
    colors: tuple[str, ...],
    pickable: tuple[bool, ...],
    columns: int,
    panel_height: int,
    at_step: int | None,
) -> go.Figure:
    """``viz.map_grid_figure`` of ``map_panels``, built once per bundle version and arguments: a page
    switch back to Explore shows the same maps (40 ms to build again at a million windows). Shared
    between sessions: read only (Streamlit copies a figure before it sends it)."""
    panels = map_panels(path, stamp, list(rows), list(titles), list(colors), list(pickable))
    return map_grid_figure(panels, columns=columns, panel_height=panel_height, at_step=at_step)


@st.cache_resource(show_spinner=False, max_entries=16)
def default_query(path: str, stamp: tuple[int, ...]) -> int:
    """A seeded turn (a more telling first query than a straight line), else any window."""
    bundle = _open(path, stamp)
    codes, names = bundle.codes("direction")
    wanted = [i for i, n in enumerate(names) if n in (DirectionClass.LEFT.value, DirectionClass.RIGHT.value)]
    turns = np.flatnonzero(np.isin(codes, wanted))
    rows = turns if turns.size else np.arange(bundle.num_windows)
    return int(np.random.default_rng(0).choice(rows))


#: The name of the filter by a loaded list of window ids among the table filters; its value is the
#: list's key in ``_id_lists``.
ID_FILTER = "window ids"
#: Key (content hash) -> bundle rows of the id lists loaded in this process (a few hundred kB each).
_id_lists: dict[str, np.ndarray] = {}


def register_id_list(rows: np.ndarray) -> str:
    """Keep a loaded list's rows for the filter; returns its key (the hash of its rows)."""
    import hashlib

    rows = np.unique(np.asarray(rows, dtype=np.int64))
    key = hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    with _default_lock:
        if key not in _id_lists and len(_id_lists) >= 64:
            _id_lists.pop(next(iter(_id_lists)))
        _id_lists[key] = rows
    return key


def id_list_rows(key: str) -> np.ndarray | None:
    return _id_lists.get(key)


@st.cache_resource(show_spinner=False, max_entries=64)
def filter_mask(
    path: str, stamp: tuple[int, ...], filters: tuple[tuple[str, tuple[str, ...]], ...]
) -> np.ndarray | None:
    """(N,) bool rows passing the table filters (the label filters and a loaded id list); None when
    no filter is set."""
    bundle = _open(path, stamp)
    mask = label_mask(bundle, tuple(f for f in filters if f[0] != ID_FILTER))
    for name, keys in filters:
        if name != ID_FILTER or not keys:
            continue
        rows = _id_lists.get(keys[0])
        if rows is None:  # forgotten by this process: no filter rather than an empty list
            continue
        listed = np.zeros(bundle.num_windows, dtype=bool)
        listed[rows[rows < bundle.num_windows]] = True
        mask = listed if mask is None else mask & listed
    return mask


@st.cache_resource(show_spinner=False, max_entries=16)
def rare_order(
    path: str, stamp: tuple[int, ...], model: str, filters: tuple[tuple[str, tuple[str, ...]], ...], one: bool
) -> np.ndarray:
    """Rows passing the filters by decreasing uniqueness under ``model`` (``one``: each track's most
    unique window only): ``trajemb.analysis.uniqueness.rare_order`` of the stored (or computed) scores."""
    from trajemb.analysis.uniqueness import rare_order as order_of

    bundle = _open(path, stamp)
    return order_of(
        uniqueness(path, stamp, model), bundle.groups if one else None, filter_mask(path, stamp, filters)
    )


def uniqueness(path: str, stamp: tuple[int, ...], model: str) -> np.ndarray:
    """(N,) uniqueness of every window (``trajemb.serving.explore.uniqueness``: stored, else computed once)."""
    from trajemb.serving.explore import uniqueness as scores

    return scores(_open(path, stamp), model)


@st.cache_resource(show_spinner=False, max_entries=8)
def duplicates(path: str, stamp: tuple[int, ...], model: str, eps: float) -> tuple[dict[str, Any], Any]:
    """The duplication report at eps / 4, eps / 2 and eps and the near-duplicate groups at ``eps``
    (``trajemb.analysis.duplicates``; one range search at eps serves both: a larger threshold than the one
    asked for can find many times the pairs)."""
    from trajemb.analysis.duplicates import duplicate_groups, duplication_report, find_duplicates

    bundle = _open(path, stamp)
    pairs = find_duplicates(bundle, model, eps)
    report = duplication_report(bundle, model, (eps / 4, eps / 2, eps), check_sample=0, pairs=pairs)
    return report, duplicate_groups(pairs, bundle.groups)


@st.cache_resource(show_spinner=False, max_entries=16)
def sorted_rows(
    path: str,
    stamp: tuple[int, ...],
    filters: tuple[tuple[str, tuple[str, ...]], ...],
    column: str,
    descending: bool,
) -> np.ndarray:
    """Rows passing the table filters, sorted by ``column``."""
    return explore_sorted_rows(_open(path, stamp), filter_mask(path, stamp, filters), column, descending)


@st.cache_resource(show_spinner=False, max_entries=16)
def label_values(path: str, stamp: tuple[int, ...], name: str) -> tuple[np.ndarray, list[str]]:
    """Codes and sorted category names of a label column (codes follow the sorted order; speed bins in
    the order of their speeds, not alphabetically)."""
    return _sorted_labels(_open(path, stamp), name)


def _sorted_labels(bundle: Bundle, name: str) -> tuple[np.ndarray, list[str]]:
    from trajemb.data.labels import SPEED_BIN_NAMES

    codes, names = bundle.codes(name)
    rank = {b: i for i, b in enumerate(SPEED_BIN_NAMES)} if name == "speed_bin" else {}
    order = np.array(
        sorted(range(len(names)), key=lambda i: (rank.get(names[i], len(rank)), names[i])), dtype=np.int64
    )
    remap = np.empty(len(names), dtype=np.int32)
    remap[order] = np.arange(len(names))
    return remap[codes], [names[i] for i in order]


@st.cache_resource(show_spinner="Clustering the embeddings…", max_entries=16)
def clusters(path: str, stamp: tuple[int, ...], model: str, k: int) -> tuple[np.ndarray, dict[int, int]]:
    emb = np.asarray(_open(path, stamp).embeddings(model).all())
    labels = cluster_labels(emb, k)
    return labels, cluster_medoids(emb, labels)


@dataclass(frozen=True)
class LayoutView:
    """What the 2-D layout plot needs at one zoom: the rows drawn as pickable points (every window in
    view when few enough are, else one per grid cell), images of every window where not all are
    drawn (the whole layout's, and the view's drawn finer on top), and the hover cards of the drawn
    points (``companion.layout_companion``)."""

    rows: np.ndarray
    images: tuple[tuple[bytes, Extent], ...]
    full: Extent
    view: Extent | None
    in_view: int
    cards: dict[str, Any]
    #: ``cards`` as JSON, made once per view: the companion receives this string, which Streamlit
    #: serialises in microseconds, instead of the dict (half a megabyte of JSON at the whole layout of a
    #: large bundle, which it encoded twice on every rerun, about 25 ms).
    cards_json: str


@st.cache_resource(show_spinner="Drawing the 2-D layout…", max_entries=48)
def layout_view(
    path: str,
    stamp: tuple[int, ...],
    model: str,
    color_by: str,
    filters: tuple[tuple[str, tuple[str, ...]], ...],
    cluster_k: int,
    view: Extent | None = None,
) -> LayoutView:
    with _default_lock:
        prepared = _prepared.pop((path, stamp, model, color_by, filters, cluster_k, view), None)
    if prepared is not None:  # drawn beside the first page (``_warm_layout``)
        return prepared
    bundle = _open(path, stamp)
    xy = bundle.projection(model)
    if xy is None:
        raise DataError(f"model {model} has no 2-D layout yet")
    codes, cats = layout_labels(path, stamp, model, color_by, cluster_k)
    return _draw_layout(
        bundle,
        xy,
        view,
        filter_mask(path, stamp, filters),
        codes,
        cats,
        label_colors(color_by, cats),
        lambda: overview_image(path, stamp, model, color_by, filters, cluster_k),
    )


@st.cache_resource(show_spinner=False, max_entries=48)
def layout_figure(
    path: str,
    stamp: tuple[int, ...],
    model: str,
    color_by: str,
    filters: tuple[tuple[str, tuple[str, ...]], ...],
    cluster_k: int,
    view: Extent | None,
    images: tuple[tuple[str, Extent], ...],
    height: int,
    dragmode: str,
    clickmode: str = "event+select",
) -> go.Figure:
    """The figure of ``layout_view`` with its images at ``images``' URLs (``viz.projection_figure``; the
    query and its neighbours are drawn by the companion, not in it), built once per bundle version and
    view: not again on every visit and click; Plotly's autoscale bounded by the whole layout. Shared
    between sessions: read only."""
    drawn = layout_view(path, stamp, model, color_by, filters, cluster_k, view)
    xy = _open(path, stamp).projection(model)
    assert xy is not None
    codes, cats = layout_labels(path, stamp, model, color_by, cluster_k)
    return projection_figure(
        xy,
        codes,
        cats,
        color_by,
        drawn.rows,
        list(images),
        height=height,
        dragmode=dragmode,
        view=drawn.view or drawn.full,
        hover_cards=True,
        marks=False,
        full=drawn.full,
        clickmode=clickmode,
    )


def _draw_layout(
    bundle: Bundle,
    xy: np.ndarray,
    view: Extent | None,
    mask: np.ndarray | None,
    codes: np.ndarray,
    cats: list[str],
    colors: list[str],
    overview: Any,
) -> LayoutView:
    """``layout_view``'s work, outside Streamlit's cache (``overview``: returns the whole layout's image)."""
    full = layout_extent(xy)
    view = snap_view(view, full)
    inside = rows_in_view(xy, view or full, mask)
    images: tuple[tuple[bytes, Extent], ...] = ()
    if len(inside) <= LAYOUT_POINTS_MAX:
        rows = inside
    else:
        rows = pickable_rows(xy, view or full, mask, LAYOUT_POINTS_MAX, PICKER_CELLS)
        images = (overview(),)
        if view is not None:
            images += ((projection_raster(xy[inside], codes[inside], colors, view), view),)
    cards = hover_cards(bundle, rows, codes, cats, colors)
    return LayoutView(rows, images, full, view, len(inside), cards, json.dumps(cards))


@st.cache_resource(show_spinner=False, max_entries=24)
def overview_image(
    path: str,
    stamp: tuple[int, ...],
    model: str,
    color_by: str,
    filters: tuple[tuple[str, tuple[str, ...]], ...],
    cluster_k: int,
) -> tuple[bytes, Extent]:
    """The whole layout as an image (every window passing the filters) and its extent."""
    xy = _open(path, stamp).projection(model)
    assert xy is not None
    codes, cats = layout_labels(path, stamp, model, color_by, cluster_k)
    return _overview(xy, filter_mask(path, stamp, filters), codes, label_colors(color_by, cats))


def _overview(
    xy: np.ndarray, mask: np.ndarray | None, codes: np.ndarray, colors: list[str]
) -> tuple[bytes, Extent]:
    full = layout_extent(xy)
    shown = np.flatnonzero(mask) if mask is not None else np.arange(len(xy))
    return projection_raster(xy[shown], codes[shown], colors, full), full


#: Layout views drawn beside the first page (``_warm_layout``), keyed by ``layout_view``'s arguments;
#: ``layout_view`` takes one out on its first call with those arguments.
_prepared: dict[tuple[Any, ...], LayoutView] = {}
#: The Embedding space page's first view of a bundle: the first model coloured by direction, no filter,
#: the default number of clusters, the whole layout (``state.SETTINGS``' defaults).
FIRST_VIEW = ("direction", 8)


def _warm_layout(path: str, stamp: tuple[int, ...], model: str) -> None:
    """Draw the whole 2-D layout of ``model`` as the Embedding space page (and Explore's "On the 2-D
    layout") first show it, beside the first page at the lowest priority: at a million windows its
    image, pickable points and hover cards made the first visit wait about 2 s. Drawn outside
    Streamlit's cache, whose lock would make a page that asks meanwhile wait for this low-priority
    thread: such a page draws it itself, as before."""
    _yield_cpu()
    color_by, cluster_k = FIRST_VIEW
    try:
        bundle = _open(path, stamp)
        xy = bundle.projection(model)
        if xy is None or color_by not in bundle.column_names:
            return
        codes, cats = _sorted_labels(bundle, color_by)
        colors = label_colors(color_by, cats)
        filters = tuple((name, ()) for name in LABELS)
        with _default_lock:  # an earlier version's, never asked for: not kept beside this one
            for old in [k for k in _prepared if k[0] == path]:
                del _prepared[old]
        drawn = _draw_layout(
            bundle, xy, None, None, codes, cats, colors, lambda: _overview(xy, None, codes, colors)
        )
        with _default_lock:
            _prepared[(path, stamp, model, color_by, filters, cluster_k, None)] = drawn
    except Exception as exc:  # the page draws it itself, and says what is wrong
        log.info("2-D layout of %s not prepared: %s", path, exc)


def hover_cards(
    bundle: Bundle, rows: np.ndarray, codes: np.ndarray, cats: list[str], colors: list[str]
) -> dict[str, Any]:
    """Per drawn point: a short id (scenario, track, start), its label, and a small drawing of its
    trajectory (``explore.path_sketches``), for the hover card."""
    ids = id_columns(bundle, rows)
    paths, sides = path_sketches(bundle.xy.rows(rows)) if len(rows) else ([], [])
    return {
        "rows": rows.tolist(),
        "ids": [
            f"{s}/{t}/{st_}" for s, t, st_ in zip(ids["scenario"], ids["track"], ids["start"], strict=True)
        ],
        "labels": [cats[c] for c in codes[rows]],
        "colors": [colors[c] for c in codes[rows]],
        "paths": paths,
        "sides": sides,
    }


def layout_labels(
    path: str, stamp: tuple[int, ...], model: str, color_by: str, cluster_k: int
) -> tuple[np.ndarray, list[str]]:
    if color_by == "k-means cluster":
        labels, _ = clusters(path, stamp, model, cluster_k)
        return labels, [f"cluster {i}" for i in range(int(labels.max()) + 1)]
    return label_values(path, stamp, color_by)


def image_url(png: bytes, name: str) -> str:
    """A URL the browser fetches (and caches) the image from, instead of receiving it with every rerun."""
    try:
        from streamlit import runtime

        if runtime.exists():
            return str(runtime.get_instance().media_file_mgr.add(png, "image/png", f"trajemb.layout.{name}"))
    except Exception:
        pass
    return "data:image/png;base64," + base64.b64encode(png).decode()
