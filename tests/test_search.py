"""The one search module against brute force: raw exact indices, every rule (own row, exclusion
groups, allowed rows, one row per group) alone and together, refetching, ranks and recall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from trajemb.errors import ConfigError, DataError
from trajemb.index import IndexSpec, build_faiss_index, build_index
from trajemb.search import (
    FEW_QUERIES,
    Groups,
    NeighborIndex,
    ShardedFlatIndex,
    TorchFlatIndex,
    exact_search,
    first_of_group,
    measure_recall,
    parallel_exact,
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
    with pytest.raises(ConfigError, match="index kind must be one of"):
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
