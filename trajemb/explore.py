"""What the explorer and ``trajemb search`` show, computed from an opened bundle, with no UI code.

* neighbour search with the options a person sets (k, one window per track, the query's own track and
  scenario excluded, object types), for a window of the bundle or a user's own window;
* result records (rank, distances, ADE / FDE against the query, labels, ids);
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
from typing import Any

import numpy as np

from trajemb.bundle import Bundle
from trajemb.errors import ConfigError, DataError
from trajemb.frames import agent_to_city
from trajemb.history import history_input
from trajemb.metrics import ade_fde

#: Largest k a search accepts (the explorer offers up to 20).
MAX_K = 1000


@dataclass(frozen=True)
class NeighborOptions:
    """How neighbours are chosen.

    ``object_types`` empty: any type. ``one_per_track``: only the nearest window of each track (windows
    of one track overlap and look alike). The query's own window is never returned.
    """

    k: int = 10
    exclude_same_track: bool = True
    one_per_track: bool = True
    exclude_same_scenario: bool = False
    object_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}, got {self.k}")


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
    """(N,) bool rows whose labels are among the picked values of every filtered column (an empty pick
    does not filter); None when nothing is filtered."""
    mask: np.ndarray | None = None
    for name, picked in dict(filters).items():
        if not picked:
            continue
        codes, names = bundle.codes(name)
        hit = np.isin(codes, [i for i, v in enumerate(names) if v in set(picked)])
        mask = hit if mask is None else mask & hit
    return mask


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
        query, options.k, groups, np.array([row]), allowed_rows(bundle, options, row), options.one_per_track
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
    )
    return _finish(bundle, None, np.asarray(query_xy, dtype=np.float32), dist[0], rows[0], options)


def search_window(
    bundle: Bundle, model: str, xy_agent: np.ndarray, options: NeighborOptions = NeighborOptions()
) -> Neighbors:
    """Embed a (T, 2) agent-frame window with the model's encoder, then search."""
    from trajemb.embed import embed_one

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
    """One dict per neighbour: rank, window id, distances, ADE / FDE (m), speed (m/s), labels, row."""
    rows = nb.rows.tolist()
    ids = bundle.strings("window_id", rows)
    direction = bundle.strings("direction", rows)
    kind = bundle.strings("object_type", rows)
    speed = bundle.numbers("mean_speed_mps")[nb.rows] if rows else np.zeros(0)
    return [
        {
            "rank": i + 1,
            "window_id": ids[i],
            "distance": float(nb.distance[i]),
            "ade_m": float(nb.ade_m[i]),
            "fde_m": float(nb.fde_m[i]),
            "speed_mps": float(speed[i]),
            "direction": direction[i],
            "object_type": kind[i],
            "row": int(rows[i]),
        }
        for i in range(len(rows))
    ]


# -- geometry in the city frame -----------------------------------------------------------------------
def city_xy(bundle: Bundle, rows: np.ndarray | list[int]) -> np.ndarray:
    """(n, T, 2) float64 city-frame positions of ``rows``."""
    idx = np.asarray(rows, dtype=np.int64)
    origin = np.stack(
        [bundle.numbers("origin_x_city_m")[idx], bundle.numbers("origin_y_city_m")[idx]], axis=1
    )
    return agent_to_city(bundle.xy.rows(idx).astype(np.float64), origin, bundle.numbers("theta_rad")[idx])


def scene_context(bundle: Bundle, row: int, max_tracks: int = 80) -> list[np.ndarray]:
    """City-frame polylines of the other road users of ``row``'s scenario while ``row`` is driven.

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
        out.append(poly[a:b])
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
