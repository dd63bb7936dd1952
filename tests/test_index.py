"""Indices against numpy brute force; exclusion; approximate recall; save/load; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trajemb.errors import ConfigError, DataError
from trajemb.index import (
    IndexSpec,
    NeighborIndex,
    TorchFlatIndex,
    build_faiss_index,
    build_index,
    build_search_index,
    load_faiss_index,
    recall_at_k,
    save_faiss_index,
)


def unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    ids = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, ids, axis=1), ids


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


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: embeddings of trajectories are clustered, not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_approximate_recall_is_tuned_and_reported() -> None:
    db = clustered(20_000, 8)
    q = clustered(300, 8, seed=2)
    _, exact = build_faiss_index(db, IndexSpec(kind="flat")).search(q, 10)
    for kind in ("ivf", "hnsw"):
        index, info = build_search_index(db, IndexSpec(kind=kind, target_recall=0.95))
        _, approx = index.search(q, 10)
        assert info.kind == kind and 0.0 < info.recall_at_10 <= 1.0
        assert recall_at_k(approx, exact) > 0.9, kind
        if kind == "ivf":
            assert info.recall_at_10 >= 0.95 and 1 <= info.nprobe <= info.nlist
    _, fixed = build_search_index(db, IndexSpec(kind="ivf", nprobe=1))
    assert fixed.nprobe == 1 and fixed.recall_at_10 < 0.95  # one cell of ~560 is not enough


def test_auto_kind_switches_at_the_threshold() -> None:
    db = unit(3000, 8)
    assert build_search_index(db, IndexSpec(exact_max_rows=3000))[1].kind == "flat"
    index, info = build_search_index(db, IndexSpec(exact_max_rows=2999))
    assert info.kind == "ivf" and index.ntotal == 3000


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


def test_save_load_keeps_results(tmp_path: Path) -> None:
    db, q = unit(500, 8), unit(5, 8, seed=3)
    index = build_faiss_index(db, IndexSpec(kind="hnsw"))
    save_faiss_index(index, tmp_path / "i.faiss")
    with pytest.raises(DataError, match="index holds 500 rows, the bundle has 501"):
        load_faiss_index(tmp_path / "i.faiss", expected_rows=501)
    loaded = load_faiss_index(tmp_path / "i.faiss", expected_dim=8)
    for a, b in zip(index.search(q, 5), loaded.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="index has dimension 8, the model embeds into 16"):
        load_faiss_index(tmp_path / "i.faiss", expected_dim=16)
    (tmp_path / "bad.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt or unreadable FAISS index"):
        load_faiss_index(tmp_path / "bad.faiss")
    with pytest.raises(DataError, match="index file not found"):
        load_faiss_index(tmp_path / "none.faiss")


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
    from trajemb.index import ShardedFlatIndex, parallel_exact

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

    from trajemb.index import FEW_QUERIES

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
