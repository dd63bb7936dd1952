"""Uniqueness of windows: how far each lies from what other road users did, in a model's space.

The score of a window is the Euclidean distance, in the model's embedding space, to its k-th nearest
window on *other* tracks (by default one window per track, so k other road users: a track's own
overlapping windows, and several windows of one other track, do not make a window common). This is
the k-nearest-neighbour distance outlier score of Ramaswamy, Rastogi and Shim ("Efficient algorithms
for mining outliers from large data sets", SIGMOD 2000). It is searched through ``trajemb.retrieval.search``:
with the bundle's own index where that is approximate (IVF above 250,000 windows by default), probing
at least ``MIN_NPROBE`` cells (the bundle's index is tuned for single queries, to recall@10 0.95 at
as few as 2 cells; at a million windows 2 cells give the exact score to 80 % of the windows and 16
cells to all of 4,000 sampled, for 6 s more), exactly where the index is exact and the bundle holds at most
``UniquenessConfig.exact_max_rows`` windows, and above that through an IVF index built for it, tuned to
recall@10 >= ``TARGET_RECALL`` against exact search (scanning every window once per window grows as
N^2: about a minute at 100,000 windows on two busy cores, against seconds); ``UniquenessInfo`` says
which, with the recall.

``rare_order`` ranks windows by it (most unique first, optionally one window per track and within a
filter), ``rare_enrichment`` measures on labelled data how well it finds what is truly rare: the
share of the rare classes in the top 1 % against their base rate.

Legend: N windows, D embedding dim.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from trajemb.core.errors import ConfigError, DataError
from trajemb.core.fields import K_MAX, K_NEIGHBORS_DEFAULT, check_fields, param
from trajemb.core.validate import check_float, check_int
from trajemb.retrieval.search import Groups, SearchIndex, describe_index, exact_index, search, vector_rows

if TYPE_CHECKING:
    from trajemb.analysis.bundle import Bundle

log = logging.getLogger(__name__)

#: Default k: the 10th nearest other road user (``trajemb.core.fields``: one default for every k-nearest).
DEFAULT_K = K_NEIGHBORS_DEFAULT
#: Windows searched per batch (a progress-bar step).
QUERY_CHUNK = 65_536
#: Rare classes: the least frequent classes that together hold at most this share of the windows.
RARE_CLASSES_SHARE = 0.10
#: The most unique share of windows whose classes are compared with the base rates.
TOP_SHARE = 0.01
#: Recall@10 against exact search of the IVF index built for uniqueness where the bundle's is exact.
TARGET_RECALL = 0.99
#: Fewest IVF cells a uniqueness search probes (the bundle's own index may probe fewer).
MIN_NPROBE = 16


@dataclass(frozen=True)
class UniquenessConfig:
    """``k``: the score is the distance to the k-th nearest window on another track (0: no score is
    computed); ``one_per_track``: count each other track once (its nearest window)."""

    k: int = param(
        DEFAULT_K,
        help="each window's uniqueness: distance to its k-th nearest other track (0: none)",
        low=0,
        high=K_MAX,
    )
    one_per_track: bool = param(True, help="count each other track once (its nearest window)")
    exact_max_rows: int = param(
        50_000,
        help="above this many windows an exact bundle index gives way to an IVF built for uniqueness",
        low=0,
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RareConfig:
    """``trajemb mine rare``: the ``top`` most unique windows of a bundle under a model, among those
    whose labels pass the filters (``object_types``, ``cities``, and ``labels``: (column, values)
    pairs over the bundle's label columns), each track once unless ``all_windows_of_track``; written
    to ``out`` (.csv or .parquet) when given."""

    bundle: str = ""
    model: str | None = None
    top: int = 100
    out: str | None = None
    object_types: tuple[str, ...] = ()
    cities: tuple[str, ...] = ()
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    all_windows_of_track: bool = False

    def __post_init__(self) -> None:
        from trajemb.analysis.bundle import LABEL_COLUMNS

        if not self.bundle:
            raise ConfigError("give --bundle")
        check_int("--top", self.top, 1, 10_000_000)
        for column, values in self.labels:
            if column not in LABEL_COLUMNS:
                raise ConfigError(f"--label {column}: not a label column; one of {', '.join(LABEL_COLUMNS)}")
            if not values:
                raise ConfigError(f"--label {column}: give values, as {column}=A,B")

    @property
    def filters(self) -> dict[str, tuple[str, ...]]:
        """Label column -> wanted values (``trajemb.serving.explore.label_mask``)."""
        out = dict(self.labels)
        for column, values in (("object_type", self.object_types), ("city", self.cities)):
            if values:
                out[column] = tuple(sorted(set(out.get(column, ())) | set(values)))
        return out


@dataclass(frozen=True)
class UniquenessInfo:
    """How a bundle's scores were computed: k, the rule, the index searched, whether that search was
    exact, its recall@10 against exact search, whether it was built for the scores (not the
    bundle's), and the seconds it took (building included)."""

    k: int
    one_per_track: bool
    index: str
    exact: bool
    nprobe: int
    seconds: float
    recall_at_10: float = 1.0
    own_index: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uniqueness_scores(
    index: SearchIndex,
    embeddings: Any,
    tracks: np.ndarray,
    config: UniquenessConfig = UniquenessConfig(),
    progress: bool = False,
) -> tuple[np.ndarray, UniquenessInfo]:
    """(N,) float32 uniqueness of every row of ``index`` and how it was computed.

    Args:
        index: a raw index over the (N, D) ``embeddings`` (an array, or anything with ``rows(idx)``).
        tracks: (N,) track of each row.

    Rows with fewer than k other tracks score ``inf`` (nothing like them at all).
    """
    if config.k < 1:
        raise ConfigError("uniqueness needs k >= 1")
    n = int(index.ntotal)
    groups = Groups.of(np.asarray(tracks, dtype=np.int64))
    if len(groups.ids) != n or len(embeddings) != n:
        raise DataError(f"index holds {n} rows, tracks {len(groups.ids)} and embeddings {len(embeddings)}")
    t0 = time.perf_counter()
    out = np.empty(n, dtype=np.float32)
    bar = tqdm(
        total=n, desc="uniqueness", unit="win", unit_scale=True, disable=not progress, dynamic_ncols=True
    )
    for start in range(0, n, QUERY_CHUNK):
        stop = min(n, start + QUERY_CHUNK)
        rows = np.arange(start, stop)
        dist, _ = search(
            index,
            vector_rows(embeddings, slice(start, stop)),
            config.k,
            query_rows=rows,
            exclude=groups,
            query_groups=groups.ids[rows],
            distinct=groups if config.one_per_track else None,
        )
        out[start:stop] = dist[:, -1]
        bar.update(stop - start)
    bar.close()
    kind = describe_index(index)
    info = UniquenessInfo(
        config.k, config.one_per_track, kind["kind"], kind["exact"], kind["nprobe"], time.perf_counter() - t0
    )
    log.info(
        "uniqueness of %d windows (k = %d, %s index%s) in %.1f s",
        n,
        config.k,
        info.index,
        "" if info.exact else f", nprobe {info.nprobe}",
        info.seconds,
    )
    return out, info


def with_min_nprobe(index: SearchIndex, nprobe: int) -> SearchIndex:
    """An IVF index probing at least ``nprobe`` cells (a copy where it probed fewer: the bundle's own
    index serves other searches); any other index as it is."""
    import faiss

    if isinstance(index, faiss.IndexIVF) and index.nprobe < min(nprobe, index.nlist):
        wider: Any = faiss.clone_index(index)
        wider.nprobe = min(nprobe, index.nlist)
        return wider  # type: ignore[no-any-return]
    return index


def bundle_uniqueness(
    bundle: Bundle, model: str, config: UniquenessConfig = UniquenessConfig(), progress: bool = False
) -> tuple[np.ndarray, UniquenessInfo]:
    """(N,) uniqueness of a bundle's windows under ``model`` and how it was computed (module docstring:
    which index)."""
    t0 = time.perf_counter()
    index: SearchIndex = bundle.index(model).index
    embeddings = bundle.embeddings(model)
    recall = float(bundle.model_entry(model).get("index", {}).get("recall_at_10", 1.0))
    own = bool(describe_index(index)["exact"]) and bundle.num_windows > config.exact_max_rows
    if own:
        from trajemb.retrieval.index import IndexSpec, build_search_index

        index, built = build_search_index(
            embeddings.all(), IndexSpec(kind="ivf", target_recall=TARGET_RECALL)
        )
        recall = built.recall_at_10
    wider = with_min_nprobe(index, MIN_NPROBE)
    if wider is not index:  # the bundle's recall was measured at fewer cells: measure it here
        from trajemb.retrieval.search import measure_recall

        index, recall = wider, measure_recall(wider, np.asarray(embeddings.all()), np.random.default_rng(0))
    scores, info = uniqueness_scores(index, embeddings, bundle.groups, config, progress)
    return scores, replace(info, seconds=time.perf_counter() - t0, recall_at_10=recall, own_index=own)


def rare_order(
    scores: np.ndarray, tracks: np.ndarray | None = None, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Rows by decreasing uniqueness (ties by row), among ``allowed`` rows, with ``tracks`` given only
    the most unique window of each track."""
    s = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(s)) if allowed is None else np.flatnonzero(allowed)
    order = rows[np.lexsort((rows, -s[rows]))]
    if tracks is not None:
        _, first = np.unique(np.asarray(tracks)[order], return_index=True)
        order = order[np.sort(first)]
    return order


def rare_classes(labels: np.ndarray, share: float = RARE_CLASSES_SHARE) -> tuple[list[str], dict[str, float]]:
    """The least frequent classes that together hold at most ``share`` of the windows (at least the
    least frequent one), and every class's share."""
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    shares = counts / counts.sum()
    order = np.lexsort((names, shares))
    picked = [str(names[order[0]])]
    total = float(shares[order[0]])
    for i in order[1:]:
        if total + shares[i] > share:
            break
        picked.append(str(names[i]))
        total += float(shares[i])
    return picked, {str(n): float(s) for n, s in zip(names, shares, strict=True)}


def rare_enrichment(
    features: np.ndarray,
    labels: np.ndarray,
    tracks: np.ndarray,
    k: int = DEFAULT_K,
    top_share: float = TOP_SHARE,
    classes_share: float = RARE_CLASSES_SHARE,
) -> dict[str, Any]:
    """How well uniqueness in a space finds the rare classes: among the ``top_share`` most unique of
    (N, F) ``features`` (exact search), the share of rare-class windows over their share in all N.

    Returns ``rare_classes``, ``class_share`` (every class's base rate), ``windows``, ``top_windows``,
    ``k``, ``base_rate`` and ``top_rate`` of the rare classes together, ``enrichment`` (their ratio:
    1 = no better than a random pick) and ``per_class[class]`` with the same three for each class.
    """
    check_float("top share", top_share, 0.0, 1.0, low_open=True)
    x = np.ascontiguousarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=str)
    scores, _ = uniqueness_scores(exact_index(x), x, tracks, UniquenessConfig(k=k))
    top = rare_order(scores)[: max(1, math.ceil(top_share * len(x)))]
    rare, class_share = rare_classes(labels, classes_share)
    per_class = {}
    for name, base in class_share.items():
        rate = float((labels[top] == name).mean())
        per_class[name] = {"base_rate": base, "top_rate": rate, "enrichment": rate / base}
    base_rate = float(np.isin(labels, rare).mean())
    top_rate = float(np.isin(labels[top], rare).mean())
    return {
        "rare_classes": rare,
        "class_share": class_share,
        "windows": len(x),
        "top_share": top_share,
        "top_windows": len(top),
        "k": k,
        "base_rate": base_rate,
        "top_rate": top_rate,
        "enrichment": top_rate / base_rate,
        "per_class": per_class,
    }
