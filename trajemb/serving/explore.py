"""What the explorer and ``trajemb search`` show, computed from an opened bundle, with no UI code.

* neighbour search with the options a person sets (k, one window per track, the query's own track and
  scenario excluded, object types, near-duplicates collapsed), for a window of the bundle, a user's
  own window or a drawn path (``sketch_query``);
* result records (rank, distances, ADE / FDE against the query, labels, ids), and every list as a
  pandas table to download or use in a notebook (``neighbors_frame``, ``rows_frame``,
  ``cluster_frame``, ``rare_frame``, ``duplicates_frame``: ``trajemb.analysis.export``), and id lists read back
  as rows (``rows_from_id_file``);
* mining: each window's uniqueness, the rarest windows, near-duplicate groups (issue 17);
* scene context: the other road users of a window's scenario during the window's time span, in the
  city frame; city-frame geometry of any rows;
* k-means clusters of a model's embeddings and their medoids;
* selections on a 2-D layout: nearest point, box, lasso; a coarse set of pickable points.

Legend: N windows, T steps, D embedding dim, K neighbours.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trajemb.analysis.bundle import Bundle
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.fields import K_MAX, K_NEIGHBORS_DEFAULT
from trajemb.core.validate import check_float, check_int
from trajemb.data.frames import agent_to_city
from trajemb.data.history import history_input
from trajemb.data.schema import STEP_S
from trajemb.retrieval.metrics import ade_fde

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from trajemb.analysis.duplicates import DuplicateGroups
    from trajemb.analysis.sketch import Sketch

#: Largest k a search accepts (the bound of every k, ``trajemb.core.fields``; the explorer offers up to 20).
MAX_K = K_MAX


@dataclass(frozen=True)
class NeighborOptions:
    """How neighbours are chosen.

    ``object_types`` empty: any type. ``one_per_track``: only the nearest window of each track (windows
    of one track overlap and look alike). The query's own window is never returned.
    """

    k: int = K_NEIGHBORS_DEFAULT
    exclude_same_track: bool = True
    one_per_track: bool = True
    exclude_same_scenario: bool = False
    object_types: tuple[str, ...] = ()
    #: Near-duplicates answer once: a window within this embedding distance of a nearer result is left
    #: out (``trajemb.retrieval.search.search``'s ``collapse_eps``); None: no collapsing.
    collapse_duplicates_eps: float | None = None

    def __post_init__(self) -> None:
        check_int("k", self.k, 1, K_MAX)
        if self.collapse_duplicates_eps is not None:
            check_float("--collapse-duplicates", self.collapse_duplicates_eps, 0.0, low_open=True)


@dataclass(frozen=True)
class Neighbors:
    """A query and its K neighbours, nearest first (fewer than K where filters leave fewer)."""

    query_row: int | None  # None for a user's own window
    query_xy: np.ndarray  # (T, 2) agent frame
    rows: np.ndarray  # (K,)
    distance: np.ndarray  # (K,) Euclidean distance between embeddings
    ade_m: np.ndarray  # (K,) ADE between query and neighbour, agent frames
    fde_m: np.ndarray  # (K,)
    options: NeighborOptions = field(default_factory=NeighborOptions)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def min_ade_m(self) -> float:
        return float(self.ade_m.min()) if len(self) else float("nan")

    @property
    def min_fde_m(self) -> float:
        return float(self.fde_m.min()) if len(self) else float("nan")


def label_mask(
    bundle: Bundle, filters: dict[str, tuple[str, ...]] | tuple[tuple[str, tuple[str, ...]], ...]
) -> np.ndarray | None:
    """(N,) bool rows whose labels are among the picked values of every filtered column (an empty pick,
    or a column the bundle lacks, does not filter); None when nothing is filtered."""
    mask: np.ndarray | None = None
    have = set(bundle.column_names)
    for name, picked in dict(filters).items():
        if not picked or name not in have:
            continue
        codes, names = bundle.codes(name)
        hit = np.isin(codes, [i for i, v in enumerate(names) if v in set(picked)])
        mask = hit if mask is None else mask & hit
    return mask


def check_label_filters(
    bundle: Bundle, filters: dict[str, tuple[str, ...]] | tuple[tuple[str, tuple[str, ...]], ...]
) -> None:
    """Refuse filter values the bundle's label columns do not hold, naming the values they do."""
    for name, picked in dict(filters).items():
        known = bundle.codes(name)[1]
        unknown = sorted(set(picked) - set(known))
        if unknown:
            raise DataError(
                f"{name} {', '.join(unknown)}: not in this bundle; its values: {', '.join(sorted(known))}"
            )


def allowed_rows(bundle: Bundle, options: NeighborOptions, query_row: int | None) -> np.ndarray | None:
    """(N,) bool mask of rows the options allow (the query's scenario, object types), None = all."""
    mask: np.ndarray | None = None
    if options.object_types:
        codes, names = bundle.codes("object_type")
        wanted = [i for i, name in enumerate(names) if name in set(options.object_types)]
        mask = np.isin(codes, wanted)
    if options.exclude_same_scenario and query_row is not None:
        rows = bundle_scenario_rows(bundle, query_row)
        mask = np.ones(bundle.num_windows, dtype=bool) if mask is None else mask.copy()
        mask[rows] = False
    return mask


def _finish(
    bundle: Bundle,
    query_row: int | None,
    query_xy: np.ndarray,
    dist: np.ndarray,
    rows: np.ndarray,
    options: NeighborOptions,
) -> Neighbors:
    keep = rows >= 0
    rows, dist = rows[keep], dist[keep]
    neighbor_xy = bundle.xy.rows(rows)
    ade, fde = ade_fde(query_xy[None], neighbor_xy[None])
    return Neighbors(query_row, query_xy, rows, dist, ade[0], fde[0], options)


def search_row(
    bundle: Bundle, model: str, row: int, options: NeighborOptions = NeighborOptions()
) -> Neighbors:
    """Neighbours of window ``row`` of the bundle under ``model``."""
    if not 0 <= row < bundle.num_windows:
        raise DataError(f"row {row} outside [0, {bundle.num_windows})")
    index = bundle.index(model)
    query = bundle.embeddings(model).rows([row])
    groups = bundle.groups[[row]] if options.exclude_same_track else None
    dist, rows = index.search(
        query,
        options.k,
        groups,
        np.array([row]),
        allowed_rows(bundle, options, row),
        options.one_per_track,
        options.collapse_duplicates_eps,
    )
    return _finish(bundle, row, bundle.xy.rows(row), dist[0], rows[0], options)


def search_embedding(
    bundle: Bundle,
    model: str,
    embedding: np.ndarray,
    query_xy: np.ndarray,
    options: NeighborOptions = NeighborOptions(),
) -> Neighbors:
    """Neighbours of an embedded window that is not in the bundle (a user's own query)."""
    index = bundle.index(model)
    dist, rows = index.search(
        np.asarray(embedding, np.float32)[None],
        options.k,
        None,
        None,
        allowed_rows(bundle, options, None),
        options.one_per_track,
        options.collapse_duplicates_eps,
    )
    return _finish(bundle, None, np.asarray(query_xy, dtype=np.float32), dist[0], rows[0], options)


def search_window(
    bundle: Bundle, model: str, xy_agent: np.ndarray, options: NeighborOptions = NeighborOptions()
) -> Neighbors:
    """Embed a (T, 2) agent-frame window with the model's encoder, then search."""
    from trajemb.training.embed import embed_one

    raw = np.asarray(xy_agent, dtype=np.float64)
    if raw.shape != (bundle.num_steps, 2):
        raise DataError(f"a query must have shape ({bundle.num_steps}, 2), got {raw.shape}")
    if not np.isfinite(raw).all() or np.abs(raw).max() > 1e5:
        raise DataError("query coordinates must be finite and within 100 km of the first point")
    xy = raw.astype(np.float32)
    encoder = model_encoder(bundle, model)
    history_steps = bundle.history_steps(model)  # a history model reads the first H steps (issue 18)
    model_input = xy if history_steps is None else history_input(xy[None], history_steps)[0]
    return search_embedding(bundle, model, embed_one(encoder, model_input), xy, options)


def sketch_query(
    bundle: Bundle,
    points: Any,
    frame: str = "agent",
    speed_mps: float | None = None,
    duration_s: float | None = None,
) -> Sketch:
    """A drawn path (P, 2) in metres, in the agent frame or in city coordinates (``frame``), made into a
    window of the bundle's T steps (``trajemb.analysis.sketch``); ``search_sketch`` finds its neighbours."""
    from trajemb.analysis.sketch import SketchConfig, sketch_window

    return sketch_window(points, SketchConfig(bundle.num_steps, speed_mps, duration_s, frame))


def search_sketch(
    bundle: Bundle, model: str, sketch: Sketch, options: NeighborOptions = NeighborOptions()
) -> Neighbors:
    """Neighbours of a drawn path made into a window (``sketch_query``)."""
    return search_window(bundle, model, sketch.xy_agent, options)


def sketch_notes(bundle: Bundle, model: str, sketch: Sketch) -> tuple[str, ...]:
    """What was done to a drawn path (``Sketch.notes``), and, for a history model, that it searches by
    the path's first H steps only (the window's history; the rest is what its neighbours are scored on)."""
    history_steps = bundle.history_steps(model)
    if history_steps is None:
        return sketch.notes
    return (
        *sketch.notes,
        f"model {model} reads histories: it searches by the first {history_steps} of the window's "
        f"{bundle.num_steps} steps ({history_steps * STEP_S:.1f} of {bundle.num_steps * STEP_S:.1f} s); "
        "a model of whole windows searches by all of it",
    )


_encoders: weakref.WeakKeyDictionary[Bundle, dict[str, Any]] = weakref.WeakKeyDictionary()
_scenarios: weakref.WeakKeyDictionary[Bundle, tuple[np.ndarray, np.ndarray]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def model_encoder(bundle: Bundle, model: str) -> Any:
    """The model's encoder, loaded once per opened bundle."""
    with _cache_lock:
        encoders = _encoders.setdefault(bundle, {})
        if model not in encoders:
            encoders[model] = bundle.encoder(model)[0]
        return encoders[model]


def bundle_scenario_rows(bundle: Bundle, row: int) -> np.ndarray:
    """Rows of every window of ``row``'s scenario (ascending)."""
    with _cache_lock:
        if bundle not in _scenarios:
            sg = bundle.scenario_groups
            order = np.argsort(sg, kind="stable")
            bounds = np.searchsorted(sg[order], np.arange(int(sg.max()) + 2))
            _scenarios[bundle] = (order, bounds)
        order, bounds = _scenarios[bundle]
    g = int(bundle.scenario_groups[row])
    return np.sort(order[bounds[g] : bounds[g + 1]])


def neighbor_records(bundle: Bundle, nb: Neighbors) -> list[dict[str, Any]]:
    """One dict per neighbour: rank, window id, embedding distance and its gap to the rank before (for
    rank 1, to the query itself: its distance), ADE / FDE (m), speed (m/s), labels, row."""
    rows = nb.rows.tolist()
    ids = bundle.strings("window_id", rows)
    direction = bundle.strings("direction", rows)
    kind = bundle.strings("object_type", rows)
    speed = bundle.numbers("mean_speed_mps")[nb.rows] if rows else np.zeros(0)
    gap = np.diff(nb.distance, prepend=0.0)
    return [
        {
            "rank": i + 1,
            "window_id": ids[i],
            "distance": float(nb.distance[i]),
            "gap": float(gap[i]),
            "ade_m": float(nb.ade_m[i]),
            "fde_m": float(nb.fde_m[i]),
            "speed_mps": float(speed[i]),
            "direction": direction[i],
            "object_type": kind[i],
            "row": int(rows[i]),
        }
        for i in range(len(rows))
    ]


# -- lists of windows ----------------------------------------------------------------------------------
#: Label columns a person filters and colours by, where a bundle has them (``true_manoeuvre``: the
#: synthetic generator's ground truth; bundles built before it, and real data, lack it or say unknown).
LABELS = ("direction", "true_manoeuvre", "object_type", "city", "speed_bin", "source")
#: Characters of a scenario or track id shown in tables (AV2 scenario ids and sensor-log track ids are
#: 36-character UUIDs; 8 hexadecimal characters tell thousands apart).
SHORT_ID_CHARS = 8


def present_labels(bundle: Bundle, names: tuple[str, ...] = LABELS) -> list[str]:
    """Those of ``names`` that the bundle has as columns, in order."""
    have = set(bundle.column_names)
    return [name for name in names if name in have]


def short_id(text: str, chars: int = SHORT_ID_CHARS) -> str:
    """``text`` cut to ``chars`` characters and an ellipsis where it is longer than ``chars + 1``."""
    return text if len(text) <= chars + 1 else text[:chars] + "\u2026"


def id_columns(bundle: Bundle, rows: np.ndarray | list[int]) -> dict[str, list[Any]]:
    """The ids of ``rows`` in the columns tables show: ``scenario`` and ``track`` (short, see
    ``short_id``), ``start`` (timestep of the first point) and the full ``window id`` (for exports and
    for pasting into "By id")."""
    take = np.asarray(rows, dtype=np.int64)
    return {
        "scenario": [short_id(v) for v in bundle.strings("scenario_id", take)],
        "track": [short_id(v) for v in bundle.strings("track_id", take)],
        "start": bundle.numbers("start_timestep")[take].astype(np.int64).tolist() if len(take) else [],
        "window id": bundle.strings("window_id", take),
    }


#: What a list of windows can be sorted by: label -> bundle column.
SORT_COLUMNS: dict[str, str] = {
    "window id": "window_id",
    "mean speed": "mean_speed_mps",
    "direction": "direction",
    "true manoeuvre": "true_manoeuvre",
    "object type": "object_type",
    "speed bin": "speed_bin",
    "city": "city",
    "heading change": "heading_change_rad",
    "lateral offset": "lateral_offset_m",
}


def sort_key(bundle: Bundle, column: str) -> np.ndarray:
    """(N,) values whose ascending order sorts the windows by ``column``: numbers as they are, strings
    by their text (dictionary codes remapped to the alphabetical rank of their value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = bundle.column(column)
    if pa.types.is_dictionary(array.type):
        codes, names = bundle.codes(column)
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
        return np.asarray(rank[codes], dtype=np.int64)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(pc.rank(array, sort_keys="ascending", tiebreaker="first").to_numpy()) - 1
    return np.asarray(bundle.numbers(column))


def sorted_rows(bundle: Bundle, mask: np.ndarray | None, column: str, descending: bool = False) -> np.ndarray:
    """Rows passing ``mask`` (all when None) ordered by ``column`` (ties in row order)."""
    rows = np.arange(bundle.num_windows) if mask is None else np.flatnonzero(mask)
    key = sort_key(bundle, column)[rows]
    order = np.argsort(-key if descending else key, kind="stable")
    return np.asarray(rows[order], dtype=np.int64)


def page_of(rows: np.ndarray, page: int, page_size: int) -> np.ndarray:
    """Page ``page`` (0-based; clipped to the last) of ``page_size`` rows."""
    if page_size < 1:
        raise ConfigError(f"page_size must be at least 1, got {page_size}")
    last = max(0, (len(rows) - 1) // page_size)
    start = min(max(0, page), last) * page_size
    return rows[start : start + page_size]


# -- tables of every list (``trajemb.analysis.export``) --------------------------------------------------------
def neighbors_frame(bundle: Bundle, model: str, nb: Neighbors, query_window_id: str = "") -> pd.DataFrame:
    """The neighbours of a query as a table: AV2 ids, labels, distance to the query, ADE / FDE (m),
    bundle and model; ``query_window_id`` defaults to the query's id where it is a bundle window."""
    from trajemb.analysis.export import results_frame

    if nb.query_row is not None and not query_window_id:
        query_window_id = bundle.strings("window_id", [nb.query_row])[0]
    return results_frame(
        bundle,
        nb.rows,
        model,
        distance=nb.distance,
        query_window_id=query_window_id,
        extra={"ade_m": np.asarray(nb.ade_m, np.float64), "fde_m": np.asarray(nb.fde_m, np.float64)},
    )


def rows_frame(
    bundle: Bundle,
    rows: np.ndarray | list[int],
    model: str | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Any selection of rows (a box or lasso on a layout, a gallery) as a table, in the given order."""
    from trajemb.analysis.export import results_frame

    return results_frame(bundle, rows, model, extra=extra)


def cluster_frame(bundle: Bundle, model: str, labels: np.ndarray, cluster: int) -> pd.DataFrame:
    """The windows of one k-means cluster (``cluster_labels``) as a table, nearest to the cluster's
    mean embedding first (``distance``: to that mean)."""
    from trajemb.analysis.export import results_frame

    rows = np.flatnonzero(np.asarray(labels) == cluster)
    emb = bundle.embeddings(model).rows(rows).astype(np.float64)
    dist = np.sqrt(((emb - emb.mean(axis=0)) ** 2).sum(axis=1)) if len(rows) else np.zeros(0)
    order = np.argsort(dist, kind="stable")
    return results_frame(
        bundle,
        rows[order],
        model,
        distance=dist[order],
        extra={"cluster": np.full(len(rows), cluster, dtype=np.int64)},
    )


def rows_from_id_file(bundle: Bundle, path: Path | str) -> np.ndarray:
    """Bundle rows of the window ids in a file (any CSV or parquet with a ``window_id`` column, or text
    with one id per line); ids not in the bundle are refused with how many and which."""
    from trajemb.analysis.export import load_window_ids

    return load_window_ids(bundle, path)


def rows_from_id_bytes(bundle: Bundle, data: bytes, name: str = "uploaded file") -> np.ndarray:
    """Bundle rows of the window ids in an uploaded file's bytes (as ``rows_from_id_file``)."""
    from trajemb.analysis.export import rows_for_window_ids, window_ids_from_bytes

    return rows_for_window_ids(bundle, window_ids_from_bytes(data, name))


def rows_from_ids(bundle: Bundle, ids: list[str]) -> np.ndarray:
    """Bundle rows of window ids (as ``rows_from_id_file``)."""
    from trajemb.analysis.export import rows_for_window_ids

    return rows_for_window_ids(bundle, ids)


# -- mining: the rare and the repeated --------------------------------------------------------------
_mined: weakref.WeakKeyDictionary[Bundle, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def uniqueness(bundle: Bundle, model: str) -> np.ndarray:
    """(N,) each window's uniqueness under the model (``trajemb.analysis.uniqueness``): the bundle's stored
    scores, or, for a bundle built before they existed, computed here once (nothing is written into
    the bundle; ``trajemb complete`` stores them)."""
    stored = bundle.uniqueness(model)
    if stored is not None:
        return stored
    with _cache_lock:
        cache = _mined.setdefault(bundle, {})
    key = ("uniqueness", model)
    if key not in cache:
        import logging

        from trajemb.analysis.uniqueness import bundle_uniqueness

        logging.getLogger(__name__).info(
            "%s has no stored uniqueness for %s: computing it (`trajemb complete` stores it)",
            bundle.root,
            model,
        )
        cache[key] = bundle_uniqueness(bundle, model)[0]
    scores: np.ndarray = cache[key]
    return scores


def rare_rows(
    bundle: Bundle,
    model: str,
    top: int = 100,
    filters: dict[str, tuple[str, ...]] | tuple[tuple[str, tuple[str, ...]], ...] = (),
    one_per_track: bool = True,
) -> np.ndarray:
    """The ``top`` most unique windows (most unique first), among the rows whose labels pass
    ``filters`` (``label_mask``: e.g. ``{"object_type": ("bus",), "city": ("PIT",)}``), with
    ``one_per_track`` only each track's most unique window."""
    from trajemb.analysis.uniqueness import rare_order

    if not 1 <= top <= bundle.num_windows:
        top = max(1, min(top, bundle.num_windows))
    order = rare_order(
        uniqueness(bundle, model), bundle.groups if one_per_track else None, label_mask(bundle, filters)
    )
    return order[:top]


def rare_frame(
    bundle: Bundle,
    model: str,
    top: int = 100,
    filters: dict[str, tuple[str, ...]] | tuple[tuple[str, tuple[str, ...]], ...] = (),
    one_per_track: bool = True,
) -> pd.DataFrame:
    """``rare_rows`` as a table, with each window's ``uniqueness``."""
    from trajemb.analysis.export import results_frame

    rows = rare_rows(bundle, model, top, filters, one_per_track)
    return results_frame(
        bundle, rows, model, extra={"uniqueness": uniqueness(bundle, model)[rows].astype(np.float64)}
    )


def duplicate_groups(
    bundle: Bundle, model: str, eps: float, space: str = "model", by_track: bool = False
) -> DuplicateGroups:
    """Near-duplicate groups of the bundle's windows below ``eps`` (``trajemb.analysis.duplicates``), computed
    once per bundle, model, eps and space (seconds at 100k windows, about a minute at 1M)."""
    from trajemb.analysis.duplicates import duplicate_groups as groups_of
    from trajemb.analysis.duplicates import find_duplicates

    check_float("eps", eps, 0.0, low_open=True)
    with _cache_lock:
        cache = _mined.setdefault(bundle, {})
    key = ("duplicates", model, float(eps), space, by_track)
    if key not in cache:
        cache[key] = groups_of(find_duplicates(bundle, model, eps, space), bundle.groups, by_track)
    groups: DuplicateGroups = cache[key]
    return groups


def duplicates_frame(
    bundle: Bundle,
    model: str,
    eps: float,
    space: str = "model",
    by_track: bool = False,
    groups: DuplicateGroups | None = None,
) -> pd.DataFrame:
    """Every window in a near-duplicate group as a table, by group (1 = the largest) and row, with
    ``group``, ``group_windows``, ``group_tracks``, ``representative`` (the group's first row: the one
    to keep when thinning a training set) and ``distance`` to it (in the space the groups were found).
    ``groups``: found before with these settings (else ``duplicate_groups``)."""
    from trajemb.analysis.duplicates import raw_features
    from trajemb.analysis.export import results_frame

    if groups is None:
        groups = duplicate_groups(bundle, model, eps, space, by_track)
    rows = groups.members()
    label = groups.labels[rows]
    first = np.r_[True, label[1:] != label[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    representative = rows[first][np.cumsum(first) - 1] if len(rows) else rows
    if space == "model":
        emb = bundle.embeddings(model)
        a, b = emb.rows(rows).astype(np.float64), emb.rows(representative).astype(np.float64)
    else:
        a = raw_features(bundle.xy.rows(rows)).astype(np.float64)
        b = raw_features(bundle.xy.rows(representative)).astype(np.float64)
    dist = np.sqrt(((a - b) ** 2).sum(axis=1)) if len(rows) else np.zeros(0)
    return results_frame(
        bundle,
        rows,
        model,
        distance=dist,
        extra={
            "group": label,
            "group_windows": groups.sizes[label],
            "group_tracks": groups.tracks[label],
            "representative": first,
        },
    )


# -- geometry in the city frame -----------------------------------------------------------------------
def city_xy(bundle: Bundle, rows: np.ndarray | list[int]) -> np.ndarray:
    """(n, T, 2) float64 city-frame positions of ``rows``."""
    idx = np.asarray(rows, dtype=np.int64)
    origin = np.stack(
        [bundle.numbers("origin_x_city_m")[idx], bundle.numbers("origin_y_city_m")[idx]], axis=1
    )
    return agent_to_city(bundle.xy.rows(idx).astype(np.float64), origin, bundle.numbers("theta_rad")[idx])


def scene_context(bundle: Bundle, row: int, max_tracks: int = 80) -> list[np.ndarray]:
    """City-frame polylines of the other road users of ``row``'s scenario while ``row`` is driven
    (``timed_scene_context`` without the times)."""
    return [poly for _, poly in timed_scene_context(bundle, row, max_tracks)]


def timed_scene_context(bundle: Bundle, row: int, max_tracks: int = 80) -> list[tuple[int, np.ndarray]]:
    """(offset, polyline) of the other road users of ``row``'s scenario while ``row`` is driven: a
    city-frame polyline whose first point is at step ``offset`` of ``row``'s window (0 .. T - 2).

    Windows start at each track's own first step, so other tracks rarely have a window starting at the
    same step: each other track contributes the window that overlaps the query's time span most, cut
    to the overlapping steps (at least two).
    """
    T = bundle.num_steps
    rows = bundle_scenario_rows(bundle, row)
    start = bundle.numbers("start_timestep")
    groups = bundle.groups
    s0 = int(start[row])
    others = rows[groups[rows] != groups[row]]
    overlap = np.minimum(start[others] + T, s0 + T) - np.maximum(start[others], s0)
    others, overlap = others[overlap >= 2], overlap[overlap >= 2]
    if not len(others):
        return []
    order = np.lexsort((-overlap, groups[others]))  # per track, the largest overlap first
    others, overlap = others[order], overlap[order]
    first = np.unique(groups[others], return_index=True)[1]
    best = others[first][np.argsort(-overlap[first], kind="stable")][:max_tracks]
    xy = city_xy(bundle, best)
    out = []
    for r, poly in zip(best.tolist(), xy, strict=True):
        a = max(0, s0 - int(start[r]))
        b = min(T, s0 + T - int(start[r]))
        out.append((int(start[r]) + a - s0, poly[a:b]))
    return out


# -- clusters ----------------------------------------------------------------------------------------
def cluster_labels(
    embeddings: np.ndarray, clusters: int, seed: int = 0, fit_rows: int = 20_000
) -> np.ndarray:
    """(N,) k-means cluster of each row: centres fitted on at most ``fit_rows`` seeded rows (what a
    person waits for stays under a second at any N), every row then assigned to its nearest centre."""
    from sklearn.cluster import KMeans

    if not 2 <= clusters <= 100:
        raise ConfigError(f"clusters must be between 2 and 100, got {clusters}")
    x = np.asarray(embeddings, dtype=np.float32)
    clusters = min(clusters, len(x))
    sample = np.random.default_rng(seed).choice(len(x), size=min(fit_rows, len(x)), replace=False)
    km = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit(x[sample])
    return np.asarray(km.predict(x), dtype=np.int32)


def cluster_medoids(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """Cluster -> the row nearest to the cluster's mean embedding."""
    x = np.asarray(embeddings, dtype=np.float32)
    out = {}
    for c in np.unique(labels).tolist():
        members = np.flatnonzero(labels == c)
        centre = x[members].mean(axis=0)
        out[int(c)] = int(members[np.argmin(((x[members] - centre) ** 2).sum(axis=1))])
    return out


@dataclass(frozen=True)
class ClusterSummary:
    """What one k-means cluster holds: its size, its class mix, its typical speed, and a name."""

    cluster: int
    size: int
    medoid: int  # the row nearest to the cluster's mean embedding
    mix: tuple[tuple[str, float], ...]  # (class, share of the cluster), largest first
    speed_mps: float  # median of the windows' mean speeds
    name: str  # the dominant class (and the next, from 10 %), shares and speed: "straight (75%) + left (10%), 7 m/s"


def cluster_summaries(
    labels: np.ndarray,
    medoids: dict[int, int],
    class_codes: np.ndarray,
    class_names: list[str],
    speed_mps: np.ndarray,
) -> list[ClusterSummary]:
    """One summary per cluster of ``labels`` (N,), largest first: the share of each class
    (``class_codes`` (N,) into ``class_names``) and the median of ``speed_mps`` (N,)."""
    out = []
    for c, medoid in medoids.items():
        members = np.flatnonzero(labels == c)
        counts = np.bincount(class_codes[members], minlength=len(class_names))
        order = np.argsort(-counts, kind="stable")
        mix = tuple((class_names[i], float(counts[i] / len(members))) for i in order if counts[i])
        speed = float(np.median(speed_mps[members]))
        named = [mix[0], *[m for m in mix[1:2] if m[1] >= 0.1]]
        name = " + ".join(f"{c.replace('_', ' ')} ({share:.0%})" for c, share in named) + f", {speed:.0f} m/s"
        out.append(ClusterSummary(int(c), len(members), int(medoid), mix, speed, name))
    return sorted(out, key=lambda s: (-s.size, s.cluster))


# -- selections on a 2-D layout ----------------------------------------------------------------------
def nearest_point(xy: np.ndarray, x: float, y: float, candidates: np.ndarray | None = None) -> int:
    """Row of the point of ``xy`` (N, 2) nearest to (x, y), among ``candidates`` rows if given."""
    rows = np.arange(len(xy)) if candidates is None else np.asarray(candidates)
    if not len(rows):
        raise DataError("no points to pick from")
    d = (xy[rows, 0] - x) ** 2 + (xy[rows, 1] - y) ** 2
    return int(rows[int(np.argmin(d))])


def rows_in_box(xy: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
    x0, x1 = sorted(x_range)
    y0, y1 = sorted(y_range)
    return np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))


def rows_in_lasso(xy: np.ndarray, lasso_x: list[float], lasso_y: list[float]) -> np.ndarray:
    """Rows of ``xy`` inside the closed polygon (``matplotlib.path``, bounding box first)."""
    from matplotlib.path import Path as PolyPath

    if len(lasso_x) < 3 or len(lasso_x) != len(lasso_y):
        return np.zeros(0, dtype=np.int64)
    poly = np.column_stack([lasso_x, lasso_y]).astype(np.float64)
    inside_box = rows_in_box(xy, (poly[:, 0].min(), poly[:, 0].max()), (poly[:, 1].min(), poly[:, 1].max()))
    hit = np.asarray(PolyPath(poly).contains_points(xy[inside_box].astype(np.float64)), dtype=bool)
    return np.asarray(inside_box[hit], dtype=np.int64)


def grid_representatives(
    xy: np.ndarray, cells: int = 160, seed: int = 0, mask: np.ndarray | None = None
) -> np.ndarray:
    """Rows of one random point per occupied cell of a ``cells`` x ``cells`` grid over ``xy``: a
    pickable stand-in of bounded size for a cloud of any size (optionally among ``mask`` rows)."""
    rows = np.arange(len(xy)) if mask is None else np.flatnonzero(mask)
    if not len(rows):
        return rows
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    shuffled = np.random.default_rng(seed).permutation(rows)
    ij = np.minimum(((xy[shuffled] - lo) / span * cells).astype(np.int64), cells - 1)
    _, first = np.unique(ij[:, 0] * cells + ij[:, 1], return_index=True)
    return np.sort(shuffled[first])


# -- the 2-D layout at any zoom ------------------------------------------------------------------------
Extent = tuple[float, float, float, float]  # x0, x1, y0, y1


def layout_extent(xy: np.ndarray, pad: float = 0.02) -> Extent:
    """The extent of a whole (N, 2) layout, with ``pad`` of its span on each side."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    margin = pad * np.maximum(hi - lo, 1e-6)
    return (
        float(lo[0] - margin[0]),
        float(hi[0] + margin[0]),
        float(lo[1] - margin[1]),
        float(hi[1] + margin[1]),
    )


def snap_view(view: Extent | None, full: Extent, steps: int = 200) -> Extent | None:
    """``view`` clipped to ``full`` and rounded outwards to 1/``steps`` of its span (so that nearby
    zooms share one cached drawing); None (the whole layout) when it covers it or is degenerate."""
    if view is None:
        return None
    x0, x1 = sorted(view[:2])
    y0, y1 = sorted(view[2:])
    fx0, fx1, fy0, fy1 = full
    dx, dy = (fx1 - fx0) / steps, (fy1 - fy0) / steps
    sx0 = fx0 + np.floor((max(x0, fx0) - fx0) / dx) * dx
    sx1 = fx0 + np.ceil((min(x1, fx1) - fx0) / dx) * dx
    sy0 = fy0 + np.floor((max(y0, fy0) - fy0) / dy) * dy
    sy1 = fy0 + np.ceil((min(y1, fy1) - fy0) / dy) * dy
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    snapped = (float(sx0), float(sx1), float(sy0), float(sy1))
    whole = snapped[0] <= fx0 + 1e-6 * dx and snapped[1] >= fx1 - 1e-6 * dx
    whole = whole and snapped[2] <= fy0 + 1e-6 * dy and snapped[3] >= fy1 - 1e-6 * dy
    return None if whole else snapped


def rows_in_view(xy: np.ndarray, view: Extent, mask: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``xy`` (N, 2) inside ``view`` (and passing ``mask``), ascending."""
    inside = rows_in_box(xy, view[:2], view[2:])
    return inside[mask[inside]] if mask is not None else inside


def pickable_rows(
    xy: np.ndarray, view: Extent, mask: np.ndarray | None, max_points: int, cells: int, seed: int = 0
) -> np.ndarray:
    """The rows drawn as pickable points for ``view``: every window in it when at most ``max_points``
    are, else one per occupied cell of a ``cells`` x ``cells`` grid over the view (finer as one
    zooms in)."""
    inside = rows_in_view(xy, view, mask)
    if len(inside) <= max_points:
        return inside
    grid = grid_representatives(np.asarray(xy[inside]), cells, seed)
    return np.asarray(inside[grid], dtype=np.int64)


def path_sketches(
    xy_agent: np.ndarray, points: int = 10, resolution: int = 99
) -> tuple[list[list[int]], list[float]]:
    """Small drawings of (n, T, 2) agent-frame windows for hover cards: ``points`` evenly spaced steps
    of each, as integers 0..``resolution`` in a square box around the path (x then y, y up), and the
    box's side in metres."""
    n, T = xy_agent.shape[:2]
    if n == 0:
        return [], []
    take = np.linspace(0, T - 1, points).round().astype(int)
    sub = np.asarray(xy_agent[:, take], dtype=np.float64)  # (n, points, 2)
    lo = sub.min(axis=1)
    side = np.maximum((sub.max(axis=1) - lo).max(axis=1), 1.0)  # (n,) metres, at least 1 m
    centre = (sub.max(axis=1) + lo) / 2
    scaled = ((sub - centre[:, None]) / side[:, None, None] + 0.5) * resolution
    ints = np.clip(np.rint(scaled), 0, resolution).astype(int)
    return [row.reshape(-1).tolist() for row in ints], [round(float(v), 1) for v in side]
