"""Near-duplicate windows: windows of different tracks closer than ``eps``, grouped.

Two windows are near-duplicates when they belong to different tracks (a track's own windows overlap
in time by design) and lie strictly closer than ``eps``: in a model's embedding space (Euclidean, the
unit of ``trajemb.retrieval.search``), or, as a check, in raw trajectory space, where the distance is the RMS
distance between corresponding points in metres (``||a - b|| / sqrt(T)`` of the agent-frame windows).
Pairs come from one range search per window through ``trajemb.retrieval.search.range_search`` (the bundle's
index in model space: exact for a flat index, the probed cells for IVF; an exact or IVF index of the
raw windows in raw space). Groups are the connected components of the graph of those pairs
(``scipy.sparse.csgraph``): per window, or with ``by_track`` per track (two tracks join when any of
their windows are near-duplicates; every window of a grouped track is a member), which is how a
scenario copied under a new id comes back: one group per track, the track and its copy.

``duplication_report`` says how much of a bundle is near-duplicated at several thresholds and checks
the model's pairs against raw space both ways (how many of its pairs are close in raw space; how many
raw-space pairs of sampled windows it finds).

Legend: N windows, T steps, D embedding dim, E pairs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from trajemb.analysis.bundle import Bundle
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.validate import check_float, check_int
from trajemb.retrieval.search import Groups, SearchIndex, describe_index, range_search, vector_rows

log = logging.getLogger(__name__)

Space = Literal["model", "raw"]
SPACES: tuple[str, ...] = ("model", "raw")
#: Windows range-searched per batch (a progress-bar step).
QUERY_CHUNK = 65_536
#: Most pairs a search may find before it is refused (16 bytes each with their distances: 0.8 GB).
MAX_PAIRS = 50_000_000
#: Raw-space threshold of the check (RMS distance between corresponding points, metres).
DEFAULT_RAW_EPS_M = 0.1
#: Windows sampled for the raw-space recall check, and raw windows it searches at a time.
CHECK_SAMPLE = 1000
CHECK_CHUNK = 262_144


@dataclass(frozen=True)
class DuplicatesConfig:
    """``trajemb mine duplicates``: near-duplicate groups of a bundle's windows.

    ``eps``: the threshold (model space: embedding distance; raw space: RMS metres); ``space``: model
    or raw; ``by_track``: group tracks rather than windows; ``report_eps``: thresholds the report
    covers (empty: eps / 4, eps / 2, eps, 2 eps); ``raw_eps_m``: the raw-space threshold of the check;
    ``check_sample``: windows sampled for its recall.
    """

    bundle: str = ""
    eps: float = 0.01
    model: str | None = None
    out: str | None = None
    space: str = "model"
    by_track: bool = False
    report_eps: tuple[float, ...] = ()
    raw_eps_m: float = DEFAULT_RAW_EPS_M
    check_sample: int = CHECK_SAMPLE

    def __post_init__(self) -> None:
        if not self.bundle:
            raise ConfigError("give --bundle")
        check_float("--eps", self.eps, 0.0, low_open=True)
        if self.space not in SPACES:
            raise ConfigError(f"--space must be model or raw, got {self.space!r}")
        for eps in self.report_eps:
            check_float("--report-eps", eps, 0.0, low_open=True)
        check_float("--raw-eps-m", self.raw_eps_m, 0.0, low_open=True)
        check_int("--check-sample", self.check_sample, 0, 1_000_000)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The report's thresholds, ascending."""
        return tuple(sorted(set(self.report_eps or (self.eps / 4, self.eps / 2, self.eps, 2 * self.eps))))


@dataclass(frozen=True)
class DuplicatePairs:
    """Every pair of near-duplicate rows (``first < second``) found below ``eps``, with its distance."""

    first: np.ndarray  # (E,) int64
    second: np.ndarray  # (E,) int64
    distance: np.ndarray  # (E,) float32
    num_rows: int
    eps: float
    space: str
    exact: bool
    seconds: float

    def below(self, eps: float) -> DuplicatePairs:
        """The pairs strictly closer than a smaller ``eps``."""
        if eps > self.eps:
            raise ConfigError(f"pairs were searched below {self.eps:g}, not {eps:g}")
        keep = self.distance < eps
        return DuplicatePairs(
            self.first[keep],
            self.second[keep],
            self.distance[keep],
            self.num_rows,
            eps,
            self.space,
            self.exact,
            self.seconds,
        )


@dataclass(frozen=True)
class DuplicateGroups:
    """Groups of near-duplicates: ``labels`` (N,) the group of each row, 1 = the largest (most
    windows; ties by the smallest row), 0 = in no group; ``sizes`` (G + 1,) windows per group (index
    0: rows in none); ``tracks`` (G + 1,) distinct tracks per group."""

    labels: np.ndarray
    sizes: np.ndarray
    tracks: np.ndarray
    by_track: bool

    @property
    def num_groups(self) -> int:
        return len(self.sizes) - 1

    @property
    def duplicated(self) -> int:
        """Windows in a group."""
        return int((self.labels > 0).sum())

    def members(self) -> np.ndarray:
        """Rows in a group, by group (largest first) and row."""
        rows = np.flatnonzero(self.labels > 0)
        return rows[np.lexsort((rows, self.labels[rows]))]

    def as_distinct(self) -> Groups:
        """The grouping as ``trajemb.retrieval.search`` groups (rows in no group alone in theirs): pass it as
        ``search(..., distinct=...)`` for one result per duplicate group."""
        n = len(self.labels)
        alone = self.num_groups + 1 + np.arange(n)
        return Groups.of(np.where(self.labels > 0, self.labels, alone))


def raw_features(xy_agent: np.ndarray) -> np.ndarray:
    """(N, T, 2) agent-frame windows -> (N, 2 T) float32 whose Euclidean distance is the RMS distance
    between corresponding points (metres)."""
    xy = np.asarray(xy_agent, dtype=np.float32)
    return np.ascontiguousarray(xy.reshape(len(xy), -1) / np.float32(math.sqrt(xy.shape[1])))


def duplicate_pairs(
    index: SearchIndex,
    vectors: Any,
    tracks: np.ndarray,
    eps: float,
    space: str = "model",
    progress: bool = False,
    max_pairs: int = MAX_PAIRS,
) -> DuplicatePairs:
    """Every pair of rows of different tracks strictly closer than ``eps``: each row's range search
    through ``index`` over the (N, F) ``vectors`` (an array, or anything with ``rows(idx)``)."""
    check_float("eps", eps, 0.0, low_open=True)
    n = int(index.ntotal)
    groups = Groups.of(np.asarray(tracks, dtype=np.int64))
    if len(groups.ids) != n or len(vectors) != n:
        raise DataError(f"index holds {n} rows, tracks {len(groups.ids)} and vectors {len(vectors)}")
    t0 = time.perf_counter()
    firsts, seconds, dists = [], [], []
    total = 0
    bar = tqdm(
        total=n, desc="duplicates", unit="win", unit_scale=True, disable=not progress, dynamic_ncols=True
    )
    for start in range(0, n, QUERY_CHUNK):
        stop = min(n, start + QUERY_CHUNK)
        rows = np.arange(start, stop)
        too_many = DataError(
            f"eps {eps:g} joins more than {max_pairs:,} pairs of windows: most of the bundle lies "
            "within it of each other; give a smaller --eps"
        )
        try:
            found = range_search(
                index,
                vector_rows(vectors, slice(start, stop)),
                eps,
                query_rows=rows,
                exclude=groups,
                query_groups=groups.ids[rows],
                max_results=2 * max_pairs - total,  # each pair is found from both ends
            )
        except DataError as exc:
            raise too_many from exc
        q, r, d = found.pairs()
        q = q + start
        firsts.append(np.minimum(q, r))
        seconds.append(np.maximum(q, r))
        dists.append(d)
        total += len(q)
        bar.update(stop - start)
    bar.close()
    first = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    second = np.concatenate(seconds) if seconds else np.zeros(0, np.int64)
    dist = np.concatenate(dists) if dists else np.zeros(0, np.float32)
    # An exact search finds each pair from both ends; an approximate one may find it from one only.
    _, keep = np.unique(first * n + second, return_index=True)
    exact = bool(describe_index(index)["exact"])
    pairs = DuplicatePairs(
        first[keep], second[keep], dist[keep], n, float(eps), space, exact, time.perf_counter() - t0
    )
    log.info("%d near-duplicate pairs below %g among %d windows (%.1f s)", len(keep), eps, n, pairs.seconds)
    return pairs


def duplicate_groups(pairs: DuplicatePairs, tracks: np.ndarray, by_track: bool = False) -> DuplicateGroups:
    """Connected components of the pairs' graph over windows, or with ``by_track`` over the (N,)
    ``tracks`` (a group is then at least two tracks, with every window of theirs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = pairs.num_rows
    track_ids = np.unique(np.asarray(tracks, dtype=np.int64), return_inverse=True)[1].astype(np.int64)
    if len(track_ids) != n:
        raise DataError(f"{len(track_ids)} tracks given for {n} rows")
    if n == 0:
        return DuplicateGroups(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), by_track)
    node = track_ids if by_track else np.arange(n, dtype=np.int64)
    m = int(node.max()) + 1
    graph = coo_matrix(
        (np.ones(len(pairs.first), dtype=np.int8), (node[pairs.first], node[pairs.second])), shape=(m, m)
    )
    _, component = connected_components(graph, directed=False)
    row_component = component[node]
    grouped = np.bincount(component)[row_component] >= 2  # a component of at least two nodes
    rows = np.flatnonzero(grouped)
    comp = row_component[rows]
    # Number the groups 1.. by windows, largest first (ties by smallest row); 0 = in no group.
    ids, first, size = np.unique(comp, return_index=True, return_counts=True)
    number = np.zeros(int(component.max()) + 1, dtype=np.int64)
    number[ids[np.lexsort((rows[first], -size))]] = np.arange(1, len(ids) + 1)
    labels = np.zeros(n, dtype=np.int64)
    labels[rows] = number[comp]
    sizes = np.bincount(labels, minlength=len(ids) + 1)
    span = int(track_ids.max()) + 1
    group_tracks = np.bincount(
        np.unique(labels[rows] * span + track_ids[rows]) // span, minlength=len(ids) + 1
    )
    group_tracks[0] = 0
    return DuplicateGroups(labels, sizes, group_tracks, by_track)


# -- on a bundle -----------------------------------------------------------------------------------
def bundle_vectors(bundle: Bundle, model: str, space: str) -> tuple[SearchIndex, Any]:
    """The index and vectors duplicates are searched in: the model's own index and embeddings, or an
    index of the raw windows (exact up to ``trajemb.retrieval.index.EXACT_MAX_ROWS`` windows, IVF above)."""
    if space == "model":
        return bundle.index(model).index, bundle.embeddings(model)
    from trajemb.retrieval.index import IndexSpec, build_search_index

    raw = raw_features(bundle.xy.all())
    index, _ = build_search_index(raw, IndexSpec())
    return index, raw


def find_duplicates(
    bundle: Bundle, model: str, eps: float, space: str = "model", progress: bool = False
) -> DuplicatePairs:
    """Near-duplicate pairs of a bundle's windows below ``eps`` in the model's (or raw) space."""
    bundle.model_entry(model)
    index, vectors = bundle_vectors(bundle, model, space)
    return duplicate_pairs(index, vectors, bundle.groups, eps, space, progress)


@dataclass(frozen=True)
class RawSample:
    """Raw-space near-duplicates of sampled windows: ``rows`` (S,) the sampled rows, and each pair
    found, (P,) ``query`` index into ``rows`` and (P,) ``row`` of the other window."""

    rows: np.ndarray
    query: np.ndarray
    row: np.ndarray
    raw_eps_m: float


def raw_sample(bundle: Bundle, raw_eps_m: float, sample: int, seed: int = 0) -> RawSample:
    """The raw-space near-duplicates (other tracks, strictly within ``raw_eps_m`` RMS metres, exact
    range search) of ``sample`` seeded windows, the raw windows searched a block at a time."""
    from trajemb.retrieval.search import exact_index

    n = bundle.num_windows
    rows = np.sort(np.random.default_rng(seed + 1).choice(n, min(sample, n), replace=False))
    queries = raw_features(bundle.xy.rows(rows))
    tracks = np.asarray(bundle.groups, dtype=np.int64)
    found_q, found_r = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, n, CHECK_CHUNK):  # bounded memory at any N
        stop = min(n, start + CHECK_CHUNK)
        block = exact_index(raw_features(bundle.xy.rows(slice(start, stop))))
        local = Groups.of(tracks[start:stop])
        found = range_search(
            block, queries, raw_eps_m, query_rows=rows - start, exclude=local, query_groups=tracks[rows]
        )
        q, r, _ = found.pairs()
        found_q.append(q)
        found_r.append(r + start)
    return RawSample(rows, np.concatenate(found_q), np.concatenate(found_r), raw_eps_m)


def raw_check(
    bundle: Bundle,
    model: str,
    pairs: DuplicatePairs,
    raw_eps_m: float,
    sample: int | RawSample,
    seed: int = 0,
) -> dict[str, Any]:
    """Model-space pairs against raw space, both ways, exactly: the share of the pairs whose windows
    lie within ``raw_eps_m`` (RMS metres; up to 100,000 sampled pairs), and the share of the raw-space
    near-duplicates of sampled windows (``raw_sample``: ``sample`` windows, or one found before) that
    are model-space pairs too (their embeddings strictly within ``pairs.eps``)."""
    out: dict[str, Any] = {"raw_eps_m": raw_eps_m, "eps": pairs.eps, "pairs": len(pairs.first)}
    checked = np.sort(np.random.default_rng(seed).permutation(len(pairs.first))[:100_000])
    if len(checked):
        a = raw_features(bundle.xy.rows(pairs.first[checked]))
        b = raw_features(bundle.xy.rows(pairs.second[checked]))
        out["pairs_checked"] = len(checked)
        out["confirmed_share"] = float((np.sqrt(((a - b) ** 2).sum(axis=1)) < raw_eps_m).mean())
    if isinstance(sample, int):
        if not sample:
            return out
        sample = raw_sample(bundle, raw_eps_m, sample, seed)
    if sample.raw_eps_m != raw_eps_m:
        raise ConfigError(f"the raw sample was searched within {sample.raw_eps_m:g} m, not {raw_eps_m:g} m")
    q, r = sample.query, sample.row
    emb = bundle.embeddings(model)
    d_model = np.sqrt(((emb.rows(sample.rows[q]) - emb.rows(r)) ** 2).sum(axis=1)) if len(q) else np.zeros(0)
    out.update(
        {
            "sample_windows": len(sample.rows),
            "raw_pairs": len(q),
            "sample_duplicated_share": float(len(np.unique(q)) / len(sample.rows)),
            "found_share": float((d_model < pairs.eps).mean()) if len(q) else float("nan"),
        }
    )
    return out


def duplication_report(
    bundle: Bundle,
    model: str,
    thresholds: tuple[float, ...],
    space: str = "model",
    raw_eps_m: float = DEFAULT_RAW_EPS_M,
    check_sample: int = CHECK_SAMPLE,
    by_track: bool = False,
    pairs: DuplicatePairs | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """How much of a bundle is near-duplicated at each threshold (windows and tracks in a group, their
    share, groups, the largest), with the search's exactness, and in model space the raw check
    (``raw_check``) at each threshold. ``pairs``: found before at the largest threshold or above."""
    top = max(thresholds)
    if pairs is None or pairs.eps < top:
        pairs = find_duplicates(bundle, model, top, space, progress)
    n = bundle.num_windows
    tracks = bundle.groups
    sample = raw_sample(bundle, raw_eps_m, check_sample) if space == "model" and check_sample else None
    levels = []
    for eps in sorted(thresholds):
        below = pairs.below(eps)
        groups = duplicate_groups(below, tracks, by_track)
        in_group = groups.labels > 0
        level: dict[str, Any] = {
            "eps": eps,
            "pairs": len(below.first),
            "windows": groups.duplicated,
            "share": groups.duplicated / n,
            "tracks": len(np.unique(tracks[in_group])),
            "groups": groups.num_groups,
            "largest_group": int(groups.sizes[1:].max()) if groups.num_groups else 0,
        }
        if space == "model":
            level["raw_check"] = raw_check(bundle, model, below, raw_eps_m, sample or 0)
        levels.append(level)
    return {
        "model": model,
        "space": space,
        "by_track": by_track,
        "windows": n,
        "exact": pairs.exact,
        "search_s": pairs.seconds,
        "levels": levels,
    }
