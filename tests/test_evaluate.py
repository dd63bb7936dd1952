"""Retrieval scoring on analytic cases: mirror confusion exposes what FFT magnitudes cannot see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trajemb.analysis.evaluate import EvalConfig, evaluate_features, score_neighbors
from trajemb.data.store import TrajectoryTable
from trajemb.training.similarity import fft_features

STEPS = 60
DT_S = 0.1


def _left_arc(radius_m: float, speed_mps: float = 8.0) -> np.ndarray:
    """(T, 2) constant-speed left turn on a circle of ``radius_m``, agent frame (starts at origin, +x)."""
    angle_rad = speed_mps * DT_S * np.arange(STEPS) / radius_m
    return np.stack([radius_m * np.sin(angle_rad), radius_m * (1.0 - np.cos(angle_rad))], axis=1)


def _table(xy_agent: np.ndarray, directions: list[str]) -> TrajectoryTable:
    n = len(directions)
    meta = pd.DataFrame(
        {
            "source": ["synthetic"] * n,
            "scenario_id": [f"s{i}" for i in range(n)],
            "track_id": [f"t{i}" for i in range(n)],
            "direction": directions,
        }
    )
    return TrajectoryTable(xy_agent=xy_agent.astype(np.float32), meta=meta, manifest={})


@pytest.fixture()
def turns() -> TrajectoryTable:
    """Left turns of six radii and each one's exact mirror image (a right turn)."""
    lefts = [_left_arc(r) for r in (10.0, 12.0, 14.0, 16.0, 18.0, 20.0)]
    rights = [xy * np.array([1.0, -1.0]) for xy in lefts]
    return _table(np.stack(lefts + rights), ["left"] * 6 + ["right"] * 6)


def test_score_neighbors_counts_mirrored_labels(turns: TrajectoryTable) -> None:
    queries = np.array([0, 6])
    mirror_ids = np.array([[6, 7], [0, -1]])  # left query -> two right turns; right query -> one left, no 2nd
    report = score_neighbors(turns, queries, mirror_ids, ks=(1, 2))
    assert report["mirror_confusion@1"] == 1.0
    assert report["mirror_confusion@2"] == 1.0  # the missing neighbour (-1) is not counted
    assert report["precision@2"] == 0.0
    same_ids = np.array([[1, 2], [7, 8]])
    report = score_neighbors(turns, queries, same_ids, ks=(2,))
    assert report["mirror_confusion@2"] == 0.0
    assert report["precision@2"] == 1.0


def test_mirror_confusion_is_nan_without_sided_queries(turns: TrajectoryTable) -> None:
    table = _table(turns.xy_agent, ["straight"] * len(turns))
    report = score_neighbors(table, np.array([0]), np.array([[1]]), ks=(1,))
    assert np.isnan(report["mirror_confusion@1"])


def test_fft_features_retrieve_the_mirror_image_raw_space_does_not(turns: TrajectoryTable) -> None:
    config = EvalConfig(num_queries=len(turns), ks=(1,), silhouette_sample=len(turns))
    queries = np.arange(len(turns))
    groups = turns.track_groups()
    raw = evaluate_features(turns, turns.xy_agent.reshape(len(turns), -1), queries, groups, config)
    fft = fft_features(torch.from_numpy(turns.xy_agent)).numpy()
    by_fft = evaluate_features(turns, fft, queries, groups, config)
    assert raw["mirror_confusion@1"] == 0.0
    assert by_fft["mirror_confusion@1"] == 1.0
    assert by_fft["minADE@1"] > 5.0 * raw["minADE@1"]


def test_per_class_scores_and_neighbour_rules(turns: TrajectoryTable) -> None:
    """Per-class precision and recall on the mirrored turns; one window per track and no neighbour from the
    query's scenario."""
    meta = turns.meta.copy()
    meta["true_manoeuvre"] = meta["direction"]
    meta["scenario_id"] = ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3  # lefts a, b; rights c, d
    table = TrajectoryTable(turns.xy_agent, meta, {})
    config = EvalConfig(num_queries=len(table), ks=(1, 2), silhouette_sample=len(table), mean_rank=False)
    queries = np.arange(len(table))
    groups = table.track_groups()
    raw = evaluate_features(table, table.xy_agent.reshape(len(table), -1), queries, groups, config)
    assert raw["label"] == "true_manoeuvre"
    assert raw["per_class"]["left"]["queries"] == 6 and raw["per_class"]["left"]["precision@2"] == 1.0
    assert raw["hard"]["recall@1"] == 1.0 and raw["hard"]["queries"] == 12
    by_fft = evaluate_features(
        table, fft_features(torch.from_numpy(table.xy_agent)).numpy(), queries, groups, config
    )
    assert by_fft["hard"]["precision@1"] == 0.0  # every turn retrieves its mirror image first
    apart = EvalConfig(**{**config.__dict__, "exclude_scenario": True, "one_per_track": True})
    report = evaluate_features(table, table.xy_agent.reshape(len(table), -1), queries, groups, apart)
    assert report["neighbors"] == {"one_per_track": True, "exclude_scenario": True}
    from trajemb.analysis.evaluate import neighbors_for_scoring

    ids = neighbors_for_scoring(table, table.xy_agent.reshape(len(table), -1), queries, groups, apart)
    scenario = meta["scenario_id"].to_numpy()
    assert (scenario[ids] != scenario[queries][:, None]).all()


def test_bundle_reports_hold_the_new_keys(small_bundle: Path) -> None:
    from trajemb.analysis.bundle import Bundle

    bundle = Bundle(small_bundle)
    report = bundle.report(bundle.model_names[0])
    assert report is not None and report["label"] == "true_manoeuvre"
    assert {"straight", "left"} <= set(report["per_class"]) and report["hard"]["queries"] > 0
    assert report["mean_rank"]["mean_rank"] >= 1.0 and report["mean_rank"]["queries"] > 0
    baselines = bundle.baselines()
    assert baselines["oracle_raw"]["mean_rank"]["mean_rank"] >= 1.0 and "per_class" in baselines["random"]
    # issue 17: how well uniqueness finds the rare true manoeuvres, for the model, PCA and the oracle
    from trajemb.analysis.uniqueness import rare_enrichment

    codes, names = bundle.codes("true_manoeuvre")
    labels = np.asarray(names)[codes]
    expected = rare_enrichment(
        np.asarray(bundle.embeddings(bundle.model_names[0]).all()), labels, bundle.groups
    )
    got = report["rare_enrichment"]
    assert (
        got["enrichment"] == pytest.approx(expected["enrichment"])
        and got["rare_classes"] == expected["rare_classes"]
    )
    assert got["windows"] == bundle.num_windows and got["top_windows"] == -(-bundle.num_windows // 100)
    for name in ("oracle_raw", f"pca_{report['dim']}"):
        assert baselines[name]["rare_enrichment"]["base_rate"] == pytest.approx(got["base_rate"])
    assert "rare_enrichment" not in baselines["random"]


def test_no_rare_enrichment_without_true_manoeuvres(turns: TrajectoryTable) -> None:
    """Heuristic direction labels are not ground truth: no enrichment is claimed from them."""
    flat = turns.xy_agent.reshape(len(turns), -1)
    report = evaluate_features(
        turns, flat, np.arange(4), np.arange(len(turns)), EvalConfig(num_queries=4, ks=(1,))
    )
    assert "rare_enrichment" not in report and report["label"] == "direction"


def test_random_neighbours_and_pca_on_tiny_tables() -> None:
    """Fewer rows outside the query's track than k: -1 pads (no endless draw); PCA on fewer windows
    than D keeps as many components as it can."""
    from trajemb.analysis.evaluate import baseline_reports, random_neighbors

    ids = random_neighbors(np.array([0, 3]), np.array([0, 0, 0, 1, 2]), k=4, seed=0)
    assert (ids[0, :2] >= 3).all() and (ids[0, 2:] == -1).all()
    assert sorted(ids[1, :4].tolist()) == [0, 1, 2, 4]
    assert (random_neighbors(np.array([0]), np.zeros(5, dtype=np.int64), 3, 0) == -1).all()
    xy = np.cumsum(np.random.default_rng(0).normal(size=(3, 20, 2)), axis=1).astype(np.float32)
    meta = pd.DataFrame({"direction": ["left", "right", "straight"], "track_id": ["a", "b", "c"]})
    reports = baseline_reports(
        TrajectoryTable(xy, meta, {}), dims=4, config=EvalConfig(num_queries=3), groups=np.arange(3)
    )
    assert reports["pca_4"]["dim"] == 3 and "random" in reports


def test_scored_corpora_have_a_floor() -> None:
    from trajemb.core.errors import ConfigError

    for field in ("mean_rank_corpus", "robustness_corpus", "rare_corpus"):
        with pytest.raises(ConfigError, match="corpus"):
            EvalConfig(**{field: 2})


def test_baselines_that_do_not_depend_on_d_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several D: the oracle, random and FFT features once, PCA and the untrained encoder at each D,
    each equal to what a single-D call gives."""
    import trajemb.analysis.evaluate as evaluate

    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(size=(60, 20, 2)), axis=1).astype(np.float32)
    meta = pd.DataFrame(
        {"direction": rng.choice(["left", "straight"], 60), "track_id": [str(i) for i in range(60)]}
    )
    table = TrajectoryTable(xy, meta, {})
    config = EvalConfig(num_queries=20, mean_rank=False)
    calls: list[int] = []
    original = evaluate.evaluate_features
    monkeypatch.setattr(
        evaluate,
        "evaluate_features",
        lambda t, f, *a, **kw: calls.append(f.shape[1]) or original(t, f, *a, **kw),
    )
    both = evaluate.baseline_reports(table, (8, 4), config, groups=np.arange(60))
    assert set(both) == {
        "oracle_raw",
        "random",
        "fft_magnitudes",
        "pca_4",
        "pca_8",
        "untrained_encoder_4",
        "untrained_encoder_8",
    }
    assert calls.count(40) == 1  # the raw-space oracle (T * 2 = 40 features) once, not once per D
    for dim in (4, 8):
        single = evaluate.baseline_reports(table, dim, config, groups=np.arange(60))
        for name in ("oracle_raw", f"pca_{dim}", f"untrained_encoder_{dim}"):
            assert single[name]["minADE@5"] == both[name]["minADE@5"]
