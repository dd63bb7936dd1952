"""Near-duplicates: pairs and groups against brute force, and a scenario copied under a new id, which
must come back as one group per track (recall >= 0.95) in the model's space and in raw space."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial.distance import cdist

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.duplicates import (
    DuplicatesConfig,
    duplicate_groups,
    duplicate_pairs,
    duplication_report,
    find_duplicates,
    raw_check,
    raw_features,
)
from trajemb.core.errors import ConfigError, DataError
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.retrieval.index import IndexSpec, build_faiss_index
from trajemb.retrieval.projection import ProjectionConfig
from trajemb.retrieval.search import Groups, ShardedFlatIndex, search
from trajemb.serving.bundle_build import BundleConfig, build_bundle

from conftest import REPO_ROOT
from conftest import clustered_vectors as clustered

COPY_ID = "00000000-0000-4000-8000-00000000c0de"


def brute_force_pairs(x: np.ndarray, tracks: np.ndarray, eps: float) -> set[tuple[int, int]]:
    d = cdist(x.astype(np.float64), x.astype(np.float64))
    i, j = np.nonzero((d < eps) & (tracks[:, None] != tracks[None, :]))
    return {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a < b}


def union_find_partition(n: int, pairs: set[tuple[int, int]], node: np.ndarray) -> set[frozenset[int]]:
    """Groups of rows (of at least two nodes) joined by the pairs, by hand."""
    parent = list(range(int(node.max()) + 1))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        parent[root(int(node[a]))] = root(int(node[b]))
    members: dict[int, set[int]] = {}
    for r in range(n):
        members.setdefault(root(int(node[r])), set()).add(r)
    return {frozenset(m) for m in members.values() if len({int(node[r]) for r in m}) >= 2}


def partition_of(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == g).tolist()) for g in np.unique(labels[labels > 0])}


def test_pairs_and_groups_equal_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = clustered(400, 5)
    x = np.concatenate([base, base[:60] + 1e-3 * rng.normal(size=(60, 5))]).astype(np.float32)
    tracks = np.concatenate([np.arange(400) // 4, 1000 + np.arange(60) // 4])
    for eps in (0.01, 0.15):
        ref = brute_force_pairs(x, tracks, eps)
        for index in (
            build_faiss_index(x, IndexSpec(kind="flat")),
            ShardedFlatIndex(x, 2),
            build_faiss_index(x, IndexSpec(kind="ivf", nlist=6, nprobe=6)),
        ):
            pairs = duplicate_pairs(index, x, tracks, eps)
            got = set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))
            assert got == ref and pairs.exact, (eps, type(index).__name__)
            d = np.sqrt(((x[pairs.first].astype(np.float64) - x[pairs.second]) ** 2).sum(1))
            np.testing.assert_allclose(pairs.distance, d, atol=2e-3)
        windows = duplicate_groups(pairs, tracks)
        assert partition_of(windows.labels) == union_find_partition(len(x), ref, np.arange(len(x)))
        by_track = duplicate_groups(pairs, tracks, by_track=True)
        assert partition_of(by_track.labels) == union_find_partition(len(x), ref, tracks)
        # numbered by size, largest first; sizes and track counts add up
        assert np.all(np.diff(windows.sizes[1:]) <= 0) and windows.sizes.sum() == len(x)
        for g in range(1, by_track.num_groups + 1):
            assert by_track.tracks[g] == len(np.unique(tracks[by_track.labels == g])) >= 2
    assert len(duplicate_pairs(build_faiss_index(x), x, tracks, 1e-6).first) == 0


def test_pairs_below_a_smaller_eps_and_the_pair_cap() -> None:
    x = clustered(300, 4)
    tracks = np.arange(300)
    pairs = duplicate_pairs(build_faiss_index(x), x, tracks, 0.2)
    small = pairs.below(0.1)
    assert set(zip(small.first.tolist(), small.second.tolist(), strict=True)) == brute_force_pairs(
        x, tracks, 0.1
    )
    with pytest.raises(ConfigError, match="searched below"):
        pairs.below(0.3)
    with pytest.raises(DataError, match="give a smaller --eps"):
        duplicate_pairs(build_faiss_index(x), x, tracks, 5.0, max_pairs=100)


def test_config_refuses_an_eps_that_is_not_a_positive_number() -> None:
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--eps must be"):
            DuplicatesConfig(bundle="b", eps=bad)
    with pytest.raises(ConfigError, match="--space must be model or raw"):
        DuplicatesConfig(bundle="b", eps=0.1, space="pixels")
    assert DuplicatesConfig(bundle="b", eps=0.4).thresholds == (0.1, 0.2, 0.4, 0.8)


@pytest.fixture(scope="module")
def copied_bundle(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The synthetic scenarios with one of them copied under a new scenario id, as a bundle."""
    root = tmp_path_factory.mktemp("copied")
    scenarios = root / "scenarios"
    shutil.copytree(synth_dir, scenarios)
    original = sorted(p for p in scenarios.iterdir() if p.is_dir())[3]
    sid = original.name
    copy = scenarios / COPY_ID
    copy.mkdir()
    table = pq.read_table(original / f"scenario_{sid}.parquet")
    column = table.schema.get_field_index("scenario_id")
    table = table.set_column(column, "scenario_id", pa.array([COPY_ID] * len(table)))
    pq.write_table(table, copy / f"scenario_{COPY_ID}.parquet")
    shutil.copyfile(original / f"log_map_archive_{sid}.json", copy / f"log_map_archive_{COPY_ID}.json")
    shutil.copyfile(original / f"trajemb_truth_{sid}.parquet", copy / f"trajemb_truth_{COPY_ID}.parquet")
    prepare_table(
        PrepareConfig(av2_dirs=(str(scenarios),), workers=1), root / "table.parquet", progress=False
    )
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(
        root / "table.parquet",
        [REPO_ROOT / "checkpoints" / "compact-cosine-d4"],
        root / "b",
        None,
        config,
        progress=False,
    )
    return root / "b", sid


def planted(bundle: Bundle, sid: str) -> tuple[np.ndarray, np.ndarray]:
    """(W,) rows of the original scenario's windows and (W,) the rows of their copies."""
    ids = np.asarray(bundle.strings("window_id", np.arange(bundle.num_windows)))
    sids = np.asarray(bundle.strings("scenario_id", np.arange(bundle.num_windows)))
    copies = np.flatnonzero(sids == COPY_ID)
    originals = np.array([bundle.row(i.replace(COPY_ID, sid)) for i in ids[copies]])
    assert len(copies) >= 10
    return originals, copies


@pytest.mark.parametrize(("space", "eps"), [("model", 1e-3), ("raw", 0.01)])
def test_a_copied_scenario_comes_back_as_one_group_per_track(
    copied_bundle: tuple[Path, str], space: str, eps: float
) -> None:
    bundle = Bundle(copied_bundle[0])
    originals, copies = planted(bundle, copied_bundle[1])
    pairs = find_duplicates(bundle, bundle.model_names[0], eps, space)
    windows = duplicate_groups(pairs, bundle.groups)
    same = windows.labels[originals] == windows.labels[copies]
    assert (same & (windows.labels[copies] > 0)).mean() >= 0.95  # recall of the planted pairs
    tracks = duplicate_groups(pairs, bundle.groups, by_track=True)
    copied_tracks = np.unique(bundle.groups[copies])
    together, alone = [], []
    for t in copied_tracks:
        copy_rows = np.flatnonzero(bundle.groups == t)
        original_track = bundle.groups[originals[np.isin(copies, copy_rows)][0]]
        g = tracks.labels[copy_rows[0]]
        together.append(g > 0 and tracks.labels[np.flatnonzero(bundle.groups == original_track)[0]] == g)
        alone.append(g > 0 and tracks.tracks[g] == 2)  # the track and its copy, nothing else
    assert np.mean(together) >= 0.95 and np.mean(alone) >= 0.95
    assert len({tracks.labels[bundle.groups == t][0] for t in copied_tracks}) == len(copied_tracks)


def test_collapsing_by_duplicate_groups_answers_once_per_copy(copied_bundle: tuple[Path, str]) -> None:
    """A window of one's own lying exactly on a copied window: plainly both the original and its copy
    answer; one result per duplicate group (or collapsing within eps) keeps one of them."""
    bundle = Bundle(copied_bundle[0])
    model = bundle.model_names[0]
    originals, copies = planted(bundle, copied_bundle[1])
    index = bundle.index(model)
    query = bundle.embeddings(model).rows(originals[:1])
    pair = {int(originals[0]), int(copies[0])}
    _, plain = index.search(query, 10)
    assert pair <= set(plain[0].tolist())
    groups = duplicate_groups(find_duplicates(bundle, model, 1e-3), bundle.groups)
    _, collapsed = search(index.index, query, 10, distinct=groups.as_distinct())
    _, near = index.search(query, 10, collapse_eps=1e-3)
    for rows in (collapsed[0], near[0]):
        assert len(pair & set(rows.tolist())) == 1 and (rows >= 0).all()
        labels = groups.labels[rows]
        assert len(set(labels[labels > 0].tolist())) == int((labels > 0).sum())  # one per group


def test_report_and_raw_check_against_brute_force(copied_bundle: tuple[Path, str]) -> None:
    bundle = Bundle(copied_bundle[0])
    model = bundle.model_names[0]
    _, copies = planted(bundle, copied_bundle[1])
    report = duplication_report(bundle, model, (1e-3, 0.01, 0.05), raw_eps_m=0.5, check_sample=300)
    levels = report["levels"]
    assert [lv["eps"] for lv in levels] == [1e-3, 0.01, 0.05] and report["exact"]
    assert all(a["windows"] <= b["windows"] for a, b in itertools.pairwise(levels))
    assert levels[0]["windows"] >= 2 * len(copies) * 0.95
    assert levels[0]["share"] == levels[0]["windows"] / bundle.num_windows
    # the raw check by hand at eps = 0.01
    pairs = find_duplicates(bundle, model, 0.01)
    check = raw_check(bundle, model, pairs, 0.5, 300)
    assert check == levels[1]["raw_check"]
    raw = raw_features(bundle.xy.all()).astype(np.float64)
    d_raw = np.sqrt(((raw[pairs.first] - raw[pairs.second]) ** 2).sum(1))
    assert check["confirmed_share"] == pytest.approx((d_raw < 0.5).mean())
    rows = np.sort(np.random.default_rng(1).choice(bundle.num_windows, 300, replace=False))
    tracks = bundle.groups
    d = cdist(raw[rows], raw)
    hit = (d < 0.5) & (tracks[None, :] != tracks[rows][:, None])
    q, r = np.nonzero(hit)
    emb = np.asarray(bundle.embeddings(model).all(), dtype=np.float64)
    found = np.sqrt(((emb[rows[q]] - emb[r]) ** 2).sum(1)) < 0.01
    assert check["raw_pairs"] == len(q) and check["found_share"] == pytest.approx(found.mean())
    assert check["sample_duplicated_share"] == pytest.approx(hit.any(axis=1).mean())
    assert Groups.of(bundle.groups).largest >= 1
