"""Uniqueness (distance to the k-th nearest other track) against brute force, the rare ranking and
enrichment on hand cases, and its place in bundles: built, verified, added to older bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trajemb.analysis.bundle import MANIFEST, UNIQUENESS, Bundle, model_file
from trajemb.analysis.uniqueness import (
    UniquenessConfig,
    rare_classes,
    rare_enrichment,
    rare_order,
    uniqueness_scores,
)
from trajemb.core.errors import DataError
from trajemb.retrieval.index import IndexSpec, build_faiss_index
from trajemb.retrieval.projection import ProjectionConfig
from trajemb.retrieval.search import ShardedFlatIndex
from trajemb.serving.bundle_build import BundleConfig, build_bundle, complete_bundle

from conftest import REPO_ROOT
from conftest import clustered_vectors as clustered


def brute_force_uniqueness(
    x: np.ndarray, tracks: np.ndarray, k: int, one_per_track: bool, rows: np.ndarray | None = None
) -> np.ndarray:
    """(R,) k-th smallest float64 distance from each of ``rows`` to the rows of other tracks (with
    ``one_per_track``, to the nearest row of each other track); inf where there are fewer."""
    from scipy.spatial.distance import cdist

    rows = np.arange(len(x)) if rows is None else rows
    d = cdist(x[rows].astype(np.float64), x.astype(np.float64))
    d[tracks[None, :] == tracks[rows][:, None]] = np.inf
    if one_per_track:
        order = np.argsort(tracks, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(tracks[order]) != 0])
        d = np.minimum.reduceat(d[:, order], starts, axis=1)
    d = np.sort(d, axis=1)
    return d[:, k - 1] if d.shape[1] >= k else np.full(len(rows), np.inf)


def test_scores_equal_brute_force_through_exact_indices() -> None:
    x = clustered(1500, 6)
    tracks = np.repeat(np.arange(300), 5)  # windows of a track lie close together, as overlapping ones do
    x = (x[tracks * 5] + 0.02 * np.random.default_rng(1).normal(size=x.shape)).astype(np.float32)
    for one_per_track in (True, False):
        ref = brute_force_uniqueness(x, tracks, 7, one_per_track)
        for index in (
            build_faiss_index(x, IndexSpec(kind="flat")),
            ShardedFlatIndex(x, 2),
            build_faiss_index(x, IndexSpec(kind="ivf", nlist=10, nprobe=10)),
        ):
            scores, info = uniqueness_scores(index, x, tracks, UniquenessConfig(7, one_per_track))
            np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-4, err_msg=type(index).__name__)
            assert info.exact and info.k == 7 and info.one_per_track == one_per_track


def test_an_approximate_index_says_so_and_never_underestimates() -> None:
    """An IVF index that probes one cell finds a subset of the neighbours: the k-th it finds is never
    nearer than the true k-th, and the info says the search was approximate."""
    x = clustered(3000, 8)
    tracks = np.arange(3000) // 3
    poor = build_faiss_index(x, IndexSpec(kind="ivf", nlist=30, nprobe=1))
    scores, info = uniqueness_scores(poor, x, tracks, UniquenessConfig(5))
    exact, _ = uniqueness_scores(build_faiss_index(x, IndexSpec(kind="flat")), x, tracks, UniquenessConfig(5))
    assert not info.exact and info.index == "ivf" and info.nprobe == 1
    assert np.all(scores >= exact - 1e-5) and np.any(scores > exact + 1e-3)


def test_ivf_searches_probe_at_least_the_minimum_on_a_copy() -> None:
    from trajemb.analysis.uniqueness import with_min_nprobe

    x = clustered(2000, 8)
    ivf = build_faiss_index(x, IndexSpec(kind="ivf", nlist=40, nprobe=2))
    wider = with_min_nprobe(ivf, 16)
    assert wider is not ivf and wider.nprobe == 16 and ivf.nprobe == 2  # the bundle's index untouched
    assert with_min_nprobe(wider, 8) is wider and with_min_nprobe(ivf, 100).nprobe == 40
    flat = build_faiss_index(x, IndexSpec(kind="flat"))
    assert with_min_nprobe(flat, 16) is flat


def test_too_few_other_tracks_score_infinite() -> None:
    x = np.array([[0.0], [1.0], [3.0]], np.float32)
    scores, _ = uniqueness_scores(build_faiss_index(x), x, np.array([0, 0, 1]), UniquenessConfig(1))
    assert scores.tolist() == [3.0, 2.0, 2.0]
    scores, _ = uniqueness_scores(build_faiss_index(x), x, np.array([0, 0, 1]), UniquenessConfig(2))
    assert np.isinf(scores).all()


def test_rare_order_ranks_filters_and_keeps_one_window_per_track() -> None:
    scores = np.array([0.5, 2.0, 1.0, 2.0, 3.0, 0.1])
    assert rare_order(scores).tolist() == [4, 1, 3, 2, 0, 5]  # ties by row
    tracks = np.array([0, 1, 1, 2, 0, 3])
    assert rare_order(scores, tracks).tolist() == [4, 1, 3, 5]
    allowed = np.array([True, True, False, True, False, True])
    assert rare_order(scores, tracks, allowed).tolist() == [1, 3, 0, 5]


def test_rare_classes_are_the_least_frequent_up_to_a_share() -> None:
    labels = np.array(["a"] * 80 + ["b"] * 10 + ["c"] * 6 + ["d"] * 4)
    rare, share = rare_classes(labels, 0.10)
    assert rare == ["d", "c"] and share == {"a": 0.8, "b": 0.1, "c": 0.06, "d": 0.04}
    assert rare_classes(np.array(["a"] * 5 + ["b"] * 5), 0.1)[0] == ["a"]  # at least one class


def test_enrichment_of_isolated_rare_windows_is_one_over_their_base_rate() -> None:
    rng = np.random.default_rng(0)
    common = 0.01 * rng.normal(size=(180, 3))
    rare = 10.0 * rng.normal(size=(20, 3))  # far from everything and from each other
    x = np.concatenate([common, rare]).astype(np.float32)
    labels = np.array(["straight"] * 180 + ["u_turn"] * 20)
    result = rare_enrichment(x, labels, np.arange(200), k=3, top_share=0.1)
    assert result["rare_classes"] == ["u_turn"] and result["top_windows"] == 20
    assert result["base_rate"] == pytest.approx(0.1) and result["top_rate"] == 1.0
    assert result["enrichment"] == pytest.approx(10.0)
    assert result["per_class"]["straight"]["enrichment"] == 0.0
    mixed = rare_enrichment(rng.normal(size=(200, 3)), labels, np.arange(200), k=3, top_share=0.1)
    assert mixed["enrichment"] < 5  # no structure: no better than chance by much


def test_bundles_hold_verified_uniqueness_and_older_ones_get_it_in_place(
    plain_bundle: Path, tmp_path: Path
) -> None:
    bundle = Bundle(plain_bundle)
    name = bundle.model_names[0]
    scores = bundle.uniqueness(name)
    info = bundle.uniqueness_info(name)
    assert scores is not None and info is not None and info["exact"] and info["k"] == 10
    emb = np.asarray(bundle.embeddings(name).all())
    rows = np.arange(0, bundle.num_windows, 97)
    ref = brute_force_uniqueness(emb, bundle.groups, 10, True, rows)
    np.testing.assert_allclose(scores[rows], ref, rtol=1e-4, atol=1e-5)

    old = tmp_path / "old"  # a bundle as written before issue 17: no uniqueness file or entry
    shutil.copytree(plain_bundle, old)
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest["files"][model_file(name, UNIQUENESS)]
    del manifest["models"][name]["uniqueness"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    (old / model_file(name, UNIQUENESS)).unlink()
    opened = Bundle(old)
    assert opened.uniqueness(name) is None and opened.uniqueness_info(name) is None
    opened.verify_all()
    only_uniqueness = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    assert complete_bundle(old, only_uniqueness, progress=False)
    again = Bundle(old)
    np.testing.assert_array_equal(again.uniqueness(name), scores)
    again.verify_all()

    (old / model_file(name, UNIQUENESS)).write_bytes(b"\x93NUMPY" + b"\0" * 100)
    with pytest.raises(DataError, match=r"uniqueness\.npy"):
        Bundle(old).uniqueness(name)


def test_large_exact_bundles_search_an_ivf_index_built_for_it(plain_bundle: Path) -> None:
    """Above exact_max_rows a flat bundle index is not scanned once per window: an IVF index built for
    the scores, recall@10 >= 0.99, says so; its scores are the exact ones almost everywhere."""
    from trajemb.analysis.uniqueness import TARGET_RECALL, bundle_uniqueness

    bundle = Bundle(plain_bundle)
    name = bundle.model_names[0]
    exact, info = bundle_uniqueness(bundle, name)
    assert info.exact and not info.own_index and info.recall_at_10 == 1.0
    approx, info = bundle_uniqueness(bundle, name, UniquenessConfig(exact_max_rows=100))
    assert info.own_index and info.index == "ivf" and info.recall_at_10 >= TARGET_RECALL
    assert np.mean(np.isclose(approx, exact, rtol=1e-5)) >= 0.95 and np.all(approx >= exact - 1e-5)


def test_a_bundle_ivf_index_is_searched_at_the_minimum_nprobe(synth_table: Path, tmp_path: Path) -> None:
    from trajemb.analysis.uniqueness import MIN_NPROBE
    from trajemb.retrieval.index import IndexSpec

    config = BundleConfig(
        index=IndexSpec(kind="ivf", nlist=40, nprobe=1),
        projection=ProjectionConfig(method="none"),
        evaluate=False,
        device="cpu",
    )
    out = tmp_path / "ivf"
    build_bundle(
        synth_table, [REPO_ROOT / "checkpoints" / "compact-cosine-d4"], out, None, config, progress=False
    )
    bundle = Bundle(out)
    name = bundle.model_names[0]
    info = bundle.uniqueness_info(name)
    assert (
        info is not None and info["index"] == "ivf" and info["nprobe"] == MIN_NPROBE and not info["own_index"]
    )
    assert bundle.index(name).index.nprobe == 1  # the bundle's own index is left as it was
    assert info["recall_at_10"] > bundle.model_entry(name)["index"]["recall_at_10"]
    emb = np.asarray(bundle.embeddings(name).all())
    rows = np.arange(0, bundle.num_windows, 13)
    ref = brute_force_uniqueness(emb, bundle.groups, 10, True, rows)
    assert np.mean(np.isclose(bundle.uniqueness(name)[rows], ref, rtol=1e-4)) >= 0.95


def test_a_build_without_uniqueness(synth_table: Path, tmp_path: Path) -> None:
    config = BundleConfig(
        projection=ProjectionConfig(method="none"),
        evaluate=False,
        device="cpu",
        uniqueness=UniquenessConfig(k=0),
    )
    out = tmp_path / "b"
    build_bundle(
        synth_table, [REPO_ROOT / "checkpoints" / "compact-fft-d4"], out, None, config, progress=False
    )
    bundle = Bundle(out)
    assert bundle.uniqueness(bundle.model_names[0]) is None
