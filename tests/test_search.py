"""The one search module against brute force: raw exact indices, every rule (own row, exclusion
groups, allowed rows, one row per group) alone and together, refetching, ranks and recall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError, DataError
from trajemb.retrieval.index import IndexSpec, build_faiss_index, build_index
from trajemb.retrieval.search import (
    FEW_QUERIES,
    Groups,
    NeighborIndex,
    ShardedFlatIndex,
    TorchFlatIndex,
    exact_search,
    first_of_group,
    measure_recall,
    parallel_exact,
    range_search,
    rank_of,
    recall_at_k,
    rerank,
    search,
)

from conftest import brute_force_knn as brute_force
from conftest import clustered_vectors as clustered
from conftest import unit_vectors as unit


def reference(
    db: np.ndarray,
    q: np.ndarray,
    k: int,
    query_row: int | None = None,
    exclude: np.ndarray | None = None,
    query_group: int | None = None,
    distinct: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One query by hand: every qualifying row ranked by float64 distance, the nearest of each
    distinct group kept, the first k, padded with (inf, -1)."""
    ok = np.ones(len(db), dtype=bool) if allowed is None else allowed.copy()
    if query_row is not None:
        ok[query_row] = False
    if exclude is not None:
        ok &= exclude != query_group
    rows = np.flatnonzero(ok)
    d = np.sqrt(((db[rows].astype(np.float64) - q.astype(np.float64)) ** 2).sum(1))
    order = np.argsort(d, kind="stable")
    rows, d = rows[order], d[order]
    if distinct is not None:
        _, first = np.unique(distinct[rows], return_index=True)
        first = np.sort(first)
        rows, d = rows[first], d[first]
    rows, d = rows[:k], d[:k]
    return (
        np.concatenate([d, np.full(k - len(d), np.inf)]),
        np.concatenate([rows, np.full(k - len(rows), -1)]),
    )


def assert_same_neighbors(
    ids: np.ndarray, dist: np.ndarray, ref_ids: np.ndarray, ref_dist: np.ndarray, case: str = ""
) -> None:
    """Equal rows, but for rows at equal distance (within float32 rounding) swapped in order; distances
    equal to float32 precision (about 1e-6 in squared distance, so 1e-3 near zero after the root)."""
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=2e-3, err_msg=case)
    differ = ids != ref_ids
    assert np.all(np.abs(ref_dist[differ] - dist[differ]) < 1e-4), case
    assert sorted(ids.tolist()) == sorted(ref_ids.tolist()) or differ[-1], case


def test_every_combination_of_rules_equals_brute_force() -> None:
    """Tracks of 1-40 windows lying close together (as overlapping windows do), scenarios of several
    tracks: each rule alone and all together, through FAISS flat, torch and the sharded index."""
    rng = np.random.default_rng(3)
    track_sizes = rng.integers(1, 41, size=120)
    tracks = np.repeat(np.arange(len(track_sizes)), track_sizes)
    centres = rng.normal(size=(len(track_sizes), 6))
    db = (centres[tracks] + 0.05 * rng.normal(size=(len(tracks), 6))).astype(np.float32)
    scenarios = tracks // 7
    allowed = rng.random(len(db)) < 0.7
    queries = rng.choice(len(db), size=25, replace=False)
    indices = [build_index(db), TorchFlatIndex(db, "cpu"), ShardedFlatIndex(db, 3)]
    for own, excl, dist_rule, allow in itertools.product((False, True), repeat=4):
        exclude = Groups.of(scenarios if excl else tracks) if (excl or own) else None
        for index in indices:
            d, ids = search(
                index,
                db[queries],
                9,
                query_rows=queries if own else None,
                exclude=exclude,
                query_groups=None if exclude is None else exclude.ids[queries],
                distinct=Groups.of(tracks) if dist_rule else None,
                allowed=allowed if allow else None,
                embeddings=db,
            )
            for i, r in enumerate(queries):
                ref_d, ref_i = reference(
                    db,
                    db[r],
                    9,
                    r if own else None,
                    None if exclude is None else exclude.ids,
                    None if exclude is None else int(exclude.ids[r]),
                    tracks if dist_rule else None,
                    allowed if allow else None,
                )
                case = (
                    f"own={own} scenario={excl} distinct={dist_rule} allowed={allow} {type(index).__name__}"
                )
                assert_same_neighbors(ids[i], d[i], ref_i, ref_d, case)


def test_one_per_group_refetches_until_k_groups_are_found() -> None:
    """One track of 500 near-identical windows nearest to the query: the first candidates hold one
    track only, and the search must fetch further to find k distinct tracks."""
    rng = np.random.default_rng(0)
    near = np.zeros((500, 4)) + 0.001 * rng.normal(size=(500, 4))
    far = 1.0 + rng.normal(size=(300, 4))
    db = np.concatenate([near, far]).astype(np.float32)
    tracks = np.concatenate([np.zeros(500, np.int64), 1 + np.arange(300)])
    q = np.zeros((1, 4), np.float32)
    _, ids = search(build_index(db), q, 10, distinct=Groups.of(tracks))
    _, ref_i = reference(db, q[0], 10, distinct=tracks)
    np.testing.assert_array_equal(ids[0], ref_i)
    assert len(set(tracks[ids[0]].tolist())) == 10


def test_evaluation_rule_scenario_out_and_one_per_track_is_exact() -> None:
    """The evaluation's strictest rule (no neighbour from the query's scenario, one window per track)
    used to fetch 4 k candidates and hope; it now equals brute force whatever the group sizes."""
    rng = np.random.default_rng(1)
    tracks = np.repeat(np.arange(60), 30)  # 30 windows a track
    db = (rng.normal(size=(60, 3))[tracks] + 0.01 * rng.normal(size=(1800, 3))).astype(np.float32)
    scenarios = tracks // 10
    exclude = Groups.of(scenarios)
    rows = np.arange(0, 1800, 97)
    d, ids = exact_search(
        db,
        db[rows],
        10,
        query_rows=rows,
        exclude=exclude,
        query_groups=scenarios[rows],
        distinct=Groups.of(tracks),
    )
    for i, r in enumerate(rows):
        ref_d, ref_i = reference(db, db[r], 10, r, scenarios, int(scenarios[r]), tracks)
        assert_same_neighbors(ids[i], d[i], ref_i, ref_d)


def test_identical_rows_never_return_the_query_itself() -> None:
    """Parked cars give identical windows: the query's own row must not come back as a neighbour."""
    db = np.zeros((20, 4), np.float32)
    rows = np.arange(20)
    _, ids = exact_search(db, db, 5, query_rows=rows)
    assert not (ids == rows[:, None]).any() and (ids >= 0).all()


def test_first_of_group_marks_the_first_kept_of_each_group() -> None:
    groups = np.array([[3, 3, 1, 3, 1, 2], [0, 0, 0, 0, 0, 0]])
    keep = np.array([[False, True, True, True, True, True], [True] * 6])
    assert first_of_group(groups, keep).tolist() == [
        [False, True, True, False, False, True],
        [True, False, False, False, False, False],
    ]


def test_rank_of_counts_ties_against_the_target() -> None:
    db = np.array([[0.0], [1.0], [1.0], [2.0], [5.0]], np.float32)
    groups = Groups.of(np.array([0, 1, 2, 3, 4]))
    q = np.array([[0.0], [0.0]], np.float32)
    # target row 1 at distance 1: row 2 ties with it (counts against), row 0 is the query's own group
    assert rank_of(db, q, np.array([1, 3]), groups, np.array([0, 0])).tolist() == [3, 4]


def test_recall_of_an_exact_index_is_one_and_of_a_poor_one_is_not() -> None:
    db = clustered(5000, 8)
    rng = np.random.default_rng(0)
    assert measure_recall(build_index(db), db, rng) == 1.0
    poor = build_faiss_index(db, IndexSpec(kind="ivf", nlist=100, nprobe=1))
    assert 0.0 < measure_recall(poor, db, np.random.default_rng(0)) < 0.95
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 4]])) == pytest.approx(1 / 3)


def test_rule_arguments_are_checked() -> None:
    db = unit(10, 4)
    index = build_index(db)
    with pytest.raises(ConfigError, match="exclude groups and query_groups go together"):
        search(index, db[:1], 3, exclude=Groups.of(np.arange(10)))
    with pytest.raises(DataError, match="exclude groups have 9 rows, the index 10"):
        search(index, db[:1], 3, exclude=Groups.of(np.arange(9)), query_groups=np.array([0]))
    with pytest.raises(DataError, match=r"query_rows has shape \(2,\), expected \(1,\)"):
        search(index, db[:1], 3, query_rows=np.array([0, 1]))
    with pytest.raises(DataError, match="non-negative"):
        Groups.of(np.array([0, -1]))


def test_flat_equals_brute_force() -> None:
    db, q = unit(2000, 16), unit(50, 16, seed=1)
    # max_elements=5000: two queries per chunk, so the chunked path with a last partial chunk is covered
    for index in (
        build_faiss_index(db),
        TorchFlatIndex(db, "cpu"),
        TorchFlatIndex(db, "cpu", max_elements=5000),
    ):
        dist, ids = index.search(q, 10)
        ref_d, ref_i = brute_force(db, q, 10)
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-5)


def test_torch_search_bounds_its_distance_matrix() -> None:
    """8,192 queries at a time against 10M rows would be a 328 GB matrix: chunks shrink with N."""
    assert TorchFlatIndex(unit(1000, 4), "cpu", max_elements=10_000).chunk == 10
    assert TorchFlatIndex(unit(1000, 4), "cpu", max_elements=10).chunk == 1
    assert TorchFlatIndex(unit(10, 4), "cpu").chunk == 8192
    dist, ids = TorchFlatIndex(unit(10, 4), "cpu").search(np.empty((0, 4), np.float32), 3)  # as FAISS
    assert dist.shape == ids.shape == (0, 3)


def test_allowed_rows_and_one_per_group() -> None:
    db = clustered(3000, 8)
    groups = np.arange(3000) // 4
    allowed = np.random.default_rng(0).random(3000) < 0.5
    for spec in (IndexSpec(kind="flat"), IndexSpec(kind="ivf", nprobe=4), IndexSpec(kind="hnsw")):
        index = NeighborIndex(build_faiss_index(db, spec), groups, db)
        for r in (0, 7, 2999):
            _, ids = index.search(db[[r]], 6, groups[[r]], np.array([r]), allowed, one_per_group=True)
            got = ids[0][ids[0] >= 0]
            assert allowed[got].all() and r not in got and (groups[got] != groups[r]).all()
            assert len(set(groups[got].tolist())) == len(got) == 6
            if spec.kind == "flat":
                ok = np.flatnonzero(allowed & (groups != groups[r]))
                d2 = ((db[ok] - db[r]) ** 2).sum(1)
                ranked = ok[np.argsort(d2, kind="stable")]
                firsts = [x for i, x in enumerate(ranked) if groups[x] not in set(groups[ranked[:i]])][:6]
                np.testing.assert_array_equal(got, firsts)
    few = np.zeros(3000, dtype=bool)
    few[[10, 20, 30]] = True  # fewer allowed rows than k: exact search over them, then -1
    index = NeighborIndex(build_faiss_index(db, IndexSpec(kind="ivf", nprobe=1)), groups, db)
    dist, ids = index.search(db[[500]], 5, allowed=few)
    assert sorted(ids[0][:3].tolist()) == [10, 20, 30] and ids[0][3:].tolist() == [-1, -1]
    assert np.isinf(dist[0][3:]).all()


def test_non_finite_embeddings_are_refused() -> None:
    db = unit(50, 4)
    db[3, 1] = np.nan
    with pytest.raises(DataError, match="1 of 50 embeddings are NaN or infinite"):
        build_faiss_index(db)
    index = NeighborIndex(build_faiss_index(unit(50, 4)), np.arange(50))
    with pytest.raises(DataError, match="NaN or infinite"):
        index.search(np.full((1, 4), np.inf, np.float32), 3)


def test_exclusion_of_self_and_track() -> None:
    db = unit(300, 4)
    groups = np.arange(300) // 3
    index = NeighborIndex(build_index(db), groups)
    rows = np.arange(0, 300, 7)
    dist, ids = index.search(db[rows], 10, groups[rows], rows)
    assert (ids >= 0).all()
    assert not (ids == rows[:, None]).any()
    assert not (groups[ids] == groups[rows][:, None]).any()
    # Equal to brute force over the allowed rows.
    for r, got, d in zip(rows, ids, dist, strict=True):
        allowed = np.flatnonzero(groups != groups[r])
        ref_d2, ref = brute_force(db[allowed], db[[r]], 10)
        np.testing.assert_array_equal(got, allowed[ref[0]])
        np.testing.assert_allclose(d, np.sqrt(ref_d2[0]), rtol=1e-4, atol=1e-5)  # Euclidean, not squared
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_k_larger_than_database_pads_with_minus_one() -> None:
    db = unit(5, 4)
    dist, ids = NeighborIndex(build_index(db), np.arange(5)).search(db[:1], 8, np.array([0]), np.array([0]))
    assert ids[0, :4].tolist() != [-1] * 4 and ids[0, 4:].tolist() == [-1] * 4
    assert np.isinf(dist[0, 4:]).all()


def test_bad_queries() -> None:
    index = NeighborIndex(build_index(unit(10, 4)), np.arange(10))
    with pytest.raises(DataError, match=r"queries have shape \(1, 3\), the index expects \(Q, 4\)"):
        index.search(unit(1, 3), 2)
    with pytest.raises(ConfigError, match="k must be >= 1"):
        index.search(unit(1, 4), 0)
    with pytest.raises(ConfigError, match="kind must be one of auto, flat, ivf, hnsw"):
        IndexSpec(kind="lsh")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_torch_cuda_search_equals_faiss_flat() -> None:
    db, q = unit(100_000, 16), unit(200, 16, seed=4)
    d_ref, i_ref = build_faiss_index(db).search(q, 10)
    d_gpu, i_gpu = TorchFlatIndex(db, "cuda").search(q, 10)
    np.testing.assert_array_equal(i_gpu, i_ref)
    np.testing.assert_allclose(d_gpu, d_ref, rtol=1e-3, atol=1e-5)


def test_sharded_exact_search_equals_flat() -> None:
    db, q = clustered(5000, 8), clustered(40, 8, seed=3)
    ref_d, ref_i = build_faiss_index(db, IndexSpec(kind="flat")).search(q, 12)
    for shards in (1, 2, 3):
        index = ShardedFlatIndex(db, shards)
        d, i = index.search(q, 12)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-6)
    allowed = np.random.default_rng(1).random(5000) < 0.3
    groups = np.arange(5000) // 5
    plain = NeighborIndex(build_faiss_index(db, IndexSpec(kind="flat")), groups, db)
    sharded = NeighborIndex(ShardedFlatIndex(db, 3), groups, db)
    for kw in ({}, {"allowed": allowed}, {"allowed": allowed, "one_per_group": True}):
        a = plain.search(q, 7, groups[:40], np.arange(40), **kw)
        b = sharded.search(q, 7, groups[:40], np.arange(40), **kw)
        np.testing.assert_array_equal(a[1], b[1])
    flat = build_faiss_index(db, IndexSpec(kind="flat"))
    assert parallel_exact(flat, db, min_rows=10**9) is flat  # small indices stay as they are


def test_few_queries_run_on_one_openmp_thread_and_restore_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A single query runs FAISS on one OpenMP thread (a team only adds overhead there), batches keep
    every thread, the caller's setting is restored, and results do not change."""
    import faiss

    db, q = clustered(3000, 8), clustered(30, 8, seed=5)
    groups = np.arange(3000) // 3
    index = NeighborIndex(build_faiss_index(db, IndexSpec(kind="flat")), groups, db)
    batch = index.search(q, 5, groups[:30])
    seen: list[int] = []
    search = index.index.search

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(faiss.omp_get_max_threads())
        return search(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(index.index, "search", spy)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        for i in range(3):
            _, ids = index.search(q[i : i + 1], 5, groups[i : i + 1])
            np.testing.assert_array_equal(ids[0], batch[1][i])
            assert faiss.omp_get_max_threads() == 2
        index.search(q[: FEW_QUERIES + 1], 5)
    finally:
        faiss.omp_set_num_threads(before)
    assert seen == [1, 1, 1, 2]


# -- range search and collapsing near-duplicates (issue 17) -------------------------------------------
def range_reference(
    db: np.ndarray,
    q: np.ndarray,
    radius: float,
    query_row: int | None = None,
    exclude: np.ndarray | None = None,
    query_group: int | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One query by hand: every qualifying row strictly closer than ``radius`` (float64), nearest first."""
    ok = np.ones(len(db), dtype=bool) if allowed is None else allowed.copy()
    if query_row is not None:
        ok[query_row] = False
    if exclude is not None:
        ok &= exclude != query_group
    d = np.sqrt(((db.astype(np.float64) - q.astype(np.float64)) ** 2).sum(1))
    rows = np.flatnonzero(ok & (d < radius))
    order = np.argsort(d[rows], kind="stable")
    return d[rows][order], rows[order]


def planted_clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows in tight clumps (spread 1e-3) whose centres lie at least 0.05 apart, and their tracks (3
    rows each): no distance falls near the radii the tests use (0.01 and 0.02)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((0, 4))
    while len(centres) < 150:
        c = rng.uniform(-1, 1, size=4)
        if not len(centres) or np.sqrt(((centres - c) ** 2).sum(1)).min() > 0.05:
            centres = np.vstack([centres, c])
    clump = rng.integers(0, 150, size=900)
    db = (centres[clump] + 1e-3 * rng.normal(size=(900, 4))).astype(np.float32)
    return db, np.arange(900) // 3


def test_range_search_equals_brute_force_for_every_index_and_rule() -> None:
    db, tracks = planted_clusters()
    scenarios = tracks // 5
    allowed = np.random.default_rng(1).random(len(db)) < 0.6
    queries = np.arange(0, len(db), 11)
    indices = [
        build_faiss_index(db, IndexSpec(kind="flat")),
        TorchFlatIndex(db, "cpu", max_elements=5000),
        ShardedFlatIndex(db, 3),
        build_faiss_index(db, IndexSpec(kind="ivf", nlist=8, nprobe=8)),  # every cell probed: exact
    ]
    for index, own, excl, allow in itertools.product(
        indices, (False, True), (None, "track", "scenario"), (False, True)
    ):
        exclude = None if excl is None else Groups.of(tracks if excl == "track" else scenarios)
        result = range_search(
            index,
            db[queries],
            0.02,
            query_rows=queries if own else None,
            exclude=exclude,
            query_groups=None if exclude is None else exclude.ids[queries],
            allowed=allowed if allow else None,
        )
        case = f"{type(index).__name__} own={own} exclude={excl} allowed={allow}"
        assert result.lims.shape == (len(queries) + 1,) and result.lims[0] == 0, case
        for i, r in enumerate(queries):
            ref_d, ref_rows = range_reference(
                db,
                db[r],
                0.02,
                r if own else None,
                None if exclude is None else exclude.ids,
                None if exclude is None else int(exclude.ids[r]),
                allowed if allow else None,
            )
            d, rows = result.of(i)
            assert sorted(rows.tolist()) == sorted(ref_rows.tolist()), case
            np.testing.assert_allclose(d, ref_d, rtol=1e-4, atol=2e-3, err_msg=case)
            assert np.all(np.diff(d) >= 0), case  # nearest first


def test_range_search_is_strict_and_pairs_list_each_result() -> None:
    db = np.array([[0.0], [1.0], [2.0], [0.5]], np.float32)
    result = range_search(build_index(db), db[:1], 1.0, query_rows=np.array([0]))
    assert result.of(0)[1].tolist() == [3]  # row 1 lies exactly at the radius: not within it
    queries, rows, dist = result.pairs()
    assert queries.tolist() == [0] and rows.tolist() == [3] and dist.tolist() == [0.5]
    empty = range_search(build_index(db), np.empty((0, 1), np.float32), 1.0)
    assert empty.lims.tolist() == [0] and len(empty.rows) == 0


def test_range_search_arguments_and_result_cap() -> None:
    db = unit(50, 4)
    index = build_index(db)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="radius must be"):
            range_search(index, db[:1], bad)
    with pytest.raises(DataError, match="more than 10 results within 10"):
        range_search(index, db, 10.0, max_results=10)


def test_range_search_of_an_approximate_index_finds_a_subset() -> None:
    db, _ = planted_clusters(2)
    hnsw = build_faiss_index(db, IndexSpec(kind="hnsw"))
    poor = build_faiss_index(db, IndexSpec(kind="ivf", nlist=16, nprobe=1))
    for index in (hnsw, poor):
        result = range_search(index, db, 0.02, query_rows=np.arange(len(db)))
        for i in range(0, len(db), 37):
            ref = set(range_reference(db, db[i], 0.02, i)[1].tolist())
            assert set(result.of(i)[1].tolist()) <= ref


def collapse_reference(
    db: np.ndarray,
    q: np.ndarray,
    k: int,
    eps: float,
    query_row: int | None = None,
    distinct: np.ndarray | None = None,
) -> np.ndarray:
    """Rows nearest first (the query's own left out, one per distinct group); walking them in order, a
    row is dropped when it lies strictly within ``eps`` of a row already kept; the first k kept."""
    _, ranked = reference(db, q, len(db), query_row, distinct=distinct)
    kept: list[int] = []
    for r in ranked[ranked >= 0]:
        if all(np.sqrt(((db[r].astype(np.float64) - db[s]) ** 2).sum()) >= eps for s in kept):
            kept.append(int(r))
        if len(kept) == k:
            break
    return np.array(kept + [-1] * (k - len(kept)))


def test_collapse_keeps_the_nearest_of_near_duplicates_as_brute_force() -> None:
    """Clumps of near-identical rows: with collapsing, each clump answers once (its nearest row), the
    candidates fetched grow until k survive, for exact indices and with one row per track too."""
    db, tracks = planted_clusters(3)
    queries = np.arange(0, len(db), 29)
    for index, distinct in itertools.product(
        (build_faiss_index(db, IndexSpec(kind="flat")), ShardedFlatIndex(db, 2), TorchFlatIndex(db, "cpu")),
        (None, tracks),
    ):
        d, ids = search(
            index,
            db[queries],
            12,
            query_rows=queries,
            distinct=None if distinct is None else Groups.of(distinct),
            collapse_eps=0.01,
            embeddings=db,
        )
        for i, r in enumerate(queries):
            ref = collapse_reference(db, db[r], 12, 0.01, int(r), distinct)
            np.testing.assert_array_equal(
                ids[i], ref, err_msg=f"{type(index).__name__} distinct={distinct is not None}"
            )
        kept = ids[ids >= 0]
        assert np.all(np.diff(d, axis=1)[np.isfinite(np.diff(d, axis=1))] >= 0)
        assert len(kept)
    # every result is at least eps from every other of its list
    for row in ids:
        got = db[row[row >= 0]].astype(np.float64)
        pair = np.sqrt(((got[:, None] - got[None]) ** 2).sum(-1)) + np.eye(len(got))
        assert pair.min() >= 0.01


def test_collapse_needs_the_embeddings_and_a_positive_eps() -> None:
    db = unit(30, 4)
    with pytest.raises(ConfigError, match="collapse_eps needs the embeddings"):
        search(build_index(db), db[:1], 3, collapse_eps=0.1)
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match="collapse_eps must be"):
            search(build_index(db), db[:1], 3, collapse_eps=bad, embeddings=db)
    index = NeighborIndex(build_index(db), np.arange(30), db)
    _, plain = index.search(db[:1], 5, query_rows=np.array([0]))
    _, tiny = index.search(db[:1], 5, query_rows=np.array([0]), collapse_eps=1e-9)
    np.testing.assert_array_equal(plain, tiny)  # nothing within a tiny eps: the same list


def test_range_search_finds_copies_far_from_the_origin() -> None:
    """Raw windows have squared norms of thousands: through |q|^2 + |x|^2 - 2 q.x in float32 (FAISS's
    BLAS path, taken for many queries) a copy can come out centimetres away. Every exact index must
    find each copy within a millimetre."""
    import faiss

    rng = np.random.default_rng(5)
    base = (50 * rng.normal(size=(1500, 120))).astype(np.float32)
    db = np.concatenate([base, base])
    before = faiss.cvar.distance_compute_blas_threshold
    for index in (build_index(db), ShardedFlatIndex(db, 2), TorchFlatIndex(db, "cpu")):
        result = range_search(index, db, 1e-3, query_rows=np.arange(len(db)))
        _, rows, dist = result.pairs()
        assert np.diff(result.lims).tolist() == [1] * len(db), type(index).__name__
        assert (rows == np.r_[np.arange(1500, 3000), np.arange(1500)]).all() and (dist == 0).all()
    assert faiss.cvar.distance_compute_blas_threshold == before  # FAISS's global is restored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_torch_cuda_range_search_equals_faiss_flat() -> None:
    db, _ = planted_clusters(7)
    rows = np.arange(len(db))
    ref = range_search(build_index(db), db, 0.02, query_rows=rows)
    got = range_search(TorchFlatIndex(db, "cuda"), db, 0.02, query_rows=rows)
    np.testing.assert_array_equal(got.lims, ref.lims)
    for i in range(0, len(db), 50):
        assert sorted(got.of(i)[1].tolist()) == sorted(ref.of(i)[1].tolist())


def test_range_search_grows_its_chunks_where_results_are_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call bounds the worst case; later calls take more queries where each finds few rows
    (every FAISS call is a parallel region); results are the same as in one call."""
    import trajemb.retrieval.search as search_module

    db, tracks = planted_clusters(9)
    rules = {"query_rows": np.arange(len(db)), "exclude": Groups.of(tracks), "query_groups": tracks}
    whole = range_search(build_index(db), db, 0.02, **rules)  # type: ignore[arg-type]
    calls: list[int] = []
    raw = search_module.raw_range_search

    def spy(index: object, q: np.ndarray, sq: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(len(q))
        return raw(index, q, sq)  # type: ignore[arg-type]

    monkeypatch.setattr(search_module, "raw_range_search", spy)
    monkeypatch.setattr(search_module, "RANGE_FIRST_CHUNK", 16)
    monkeypatch.setattr(search_module, "CANDIDATE_ELEMENTS", 4000)
    chunked = range_search(build_index(db), db, 0.02, **rules)  # type: ignore[arg-type]
    assert calls[0] == 16 and max(calls) > 16 and sum(calls) == len(db)
    np.testing.assert_array_equal(chunked.lims, whole.lims)
    np.testing.assert_array_equal(chunked.rows, whole.rows)


def test_rerank_equals_brute_force_over_the_candidates() -> None:
    rng = np.random.default_rng(5)
    db = rng.normal(size=(300, 7))
    queries = rng.normal(size=(40, 7))
    candidates = np.stack([rng.choice(300, size=25, replace=False) for _ in range(40)])
    candidates[:5, 20:] = -1  # fewer candidates for some queries
    candidates[5] = -1
    candidates[6, 3:] = -1  # only 3 candidates: padded with (inf, -1)
    calls: list[int] = []

    def features(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return db[rows]

    dist, rows = rerank(candidates, queries, features, 6)
    assert calls == [len(np.unique(candidates[candidates >= 0]))]  # each row's features read once
    for i in range(40):
        cand = candidates[i][candidates[i] >= 0]
        d = np.linalg.norm(db[cand] - queries[i], axis=1)
        order = np.argsort(d, kind="stable")[:6]
        expected = cand[order].tolist() + [-1] * (6 - len(order))
        assert rows[i].tolist() == expected
        np.testing.assert_allclose(dist[i][: len(order)], d[order], rtol=1e-6)
        assert np.isinf(dist[i][len(order) :]).all()
    with pytest.raises(ConfigError):
        rerank(candidates, queries, features, 0)
    with pytest.raises(DataError):
        rerank(candidates, queries[:3], features, 6)
