"""Forecasting by retrieval: the bank's rules against brute force, alignments on analytic motion, scores
against av2's own functions, one query for the explorer, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from av2.datasets.motion_forecasting.eval.metrics import compute_ade, compute_fde

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.forecast import (
    CONSTANT_ACCELERATION,
    CONSTANT_VELOCITY,
    KNN_RAW,
    ForecastBank,
    ForecastConfig,
    forecast_report,
    forecast_row,
    forecast_table,
    forecast_window,
    scenario_keys,
)
from trajemb.analysis.motion_models import constant_velocity
from trajemb.core.errors import ConfigError, DataError
from trajemb.data.frames import agent_to_city
from trajemb.data.history import history_input, rotate
from trajemb.data.schema import STEP_S
from trajemb.data.store import TrajectoryTable, read_table

from conftest import BANK_SPEEDS_MPS, LATERAL_MPS2, analytic_windows

H = 30


def retrieval_name(bundle: Bundle) -> str:
    (model,) = [m for m in bundle.model_names if bundle.history_steps(m) == H]
    return f"retrieval_{model}"


# -- a bank of analytic windows (conftest) -----------------------------------------------------------------
@pytest.fixture(scope="module")
def analytic_bank(analytic_bank_dir: Path) -> Bundle:
    return Bundle(analytic_bank_dir)


def straight_query(speed_mps: float, heading_rad: float, start: tuple[float, float]) -> np.ndarray:
    """(60, 2) a straight window at ``speed_mps`` along ``heading_rad`` from ``start``, in some frame."""
    t = np.arange(60) * STEP_S
    return np.asarray(start) + speed_mps * t[:, None] * np.array([np.cos(heading_rad), np.sin(heading_rad)])


@pytest.mark.parametrize("alignment", ["last_state", "last_pose", "agent_frame"])
def test_alignments_on_analytic_motion(analytic_bank: Bundle, alignment: str) -> None:
    bank = ForecastBank(analytic_bank, ForecastConfig(k=4, alignment=alignment))  # type: ignore[arg-type]
    v_q, theta, start = 10.0, 0.5, (2.0, 3.0)
    query = straight_query(v_q, theta, start)[None]
    rows = np.arange(4)[None]
    futures = bank.futures(rows, query[:, :H])[0]  # (4, F, 2)
    t = np.arange(1, 31) * STEP_S
    last = query[0, H - 1]
    for row, v_b in enumerate(BANK_SPEEDS_MPS[:4]):
        if alignment == "last_state":  # the query's own speed, the bank window's drift to the left
            local = np.column_stack([v_q * t, LATERAL_MPS2 * t**2])
        elif alignment == "last_pose":  # the bank window's speed and drift from the query's last pose
            local = np.column_stack([v_b * t, LATERAL_MPS2 * t**2])
        else:  # the bank future as it is in the shared step-0 frame
            np.testing.assert_allclose(futures[row], analytic_bank.xy.rows(row)[H:], atol=1e-4)
            continue
        np.testing.assert_allclose(futures[row], last + rotate(local, np.array(theta)), atol=1e-3)


def test_the_querys_scenario_is_never_in_the_bank(analytic_bank: Bundle) -> None:
    bank = ForecastBank(analytic_bank, ForecastConfig(k=3))
    query = straight_query(8.0, 0.0, (0.0, 0.0))[None, :H]
    keys = scenario_keys(["synthetic"], ["s1"])  # the 8 m/s window's scenario: its exact twin
    groups = bank.scenario_group_of(keys)
    assert groups.tolist() == [int(analytic_bank.scenario_groups[1])]
    assert bank.scenario_group_of(scenario_keys(["av2_motion"], ["s1"])).tolist() == [-1]  # other source
    _, rows = bank.search(KNN_RAW, query, groups)
    assert 1 not in rows[0].tolist() and sorted(rows[0].tolist()) == [0, 2, 3]
    _, rows = bank.search(KNN_RAW, query, np.array([-1]))
    assert rows[0, 0] == 1  # without the rule the twin is the nearest history


def test_k_and_history_are_checked_against_the_bank(analytic_bank: Bundle) -> None:
    with pytest.raises(ConfigError, match="above the bank's 4 tracks"):
        ForecastBank(analytic_bank, ForecastConfig(k=5))
    with pytest.raises(ConfigError, match="above the bank's 5 windows"):
        ForecastBank(analytic_bank, ForecastConfig(k=6, one_per_track=False))
    ForecastBank(analytic_bank, ForecastConfig(k=5, one_per_track=False))
    with pytest.raises(ConfigError, match="does not fit 60-step bank windows"):
        ForecastBank(analytic_bank, ForecastConfig(history_steps=60))
    for bad in ({"history_steps": 1}, {"k": 0}, {"k": 101}, {"alignment": "city"}, {"miss_threshold_m": 0.0}):
        with pytest.raises(ConfigError):
            ForecastConfig(**bad)  # type: ignore[arg-type]


def test_query_tables_that_do_not_fit_the_bank_are_refused(analytic_bank: Bundle) -> None:
    windows = analytic_windows((5.0, 9.0), 0.0, "q")
    table = TrajectoryTable(
        windows.xy_agent, pd.DataFrame({"source": ["synthetic"] * 2}), {"window_config": None}
    )
    config = ForecastConfig(k=3)
    with pytest.raises(DataError, match="built from 60-step windows"):
        forecast_table(analytic_bank, replace(table, xy_agent=windows.xy_agent[:, :40]), config)
    with pytest.raises(DataError, match="shorter than --history-steps 30 \\+ 1 step"):
        forecast_table(analytic_bank, replace(table, xy_agent=windows.xy_agent[:, :30]), config)
    with pytest.raises(DataError, match=r"windows at 20 Hz, but the bank .* at 10 Hz"):
        forecast_table(analytic_bank, replace(table, manifest={"window_config": {"step_hz": 20}}), config)


# -- a bank of synthetic scenarios with a history model -------------------------------------------------
def test_knn_raw_is_brute_force_under_the_rules(history_bundle: Path) -> None:
    bundle = Bundle(history_bundle)
    bank = ForecastBank(bundle, ForecastConfig())
    xy = bundle.xy.all()
    features = history_input(np.asarray(xy), H).reshape(len(xy), -1).astype(np.float64)
    queries = np.random.default_rng(0).choice(len(xy), 25, replace=False)
    scenario, track = bundle.scenario_groups, bundle.groups
    dist, rows = bank.search(KNN_RAW, np.asarray(xy[queries, :H]), scenario[queries], queries)
    for q, d_row, r_row in zip(queries, dist, rows, strict=True):
        d = np.linalg.norm(features - features[q], axis=1)
        d[scenario == scenario[q]] = np.inf
        seen: set[int] = set()
        expected = []
        for r in np.argsort(d, kind="stable"):
            if track[r] not in seen and np.isfinite(d[r]):
                seen.add(int(track[r]))
                expected.append(int(r))
            if len(expected) == 6:
                break
        assert r_row.tolist() == expected
        np.testing.assert_allclose(d_row, d[expected], rtol=1e-4, atol=1e-3)


def test_learned_retrieval_reranks_its_shortlist_by_raw_distance(history_bundle: Path) -> None:
    bundle = Bundle(history_bundle)
    name = retrieval_name(bundle)
    queries = np.arange(0, bundle.num_windows, 53)
    history = bundle.xy.rows(queries)[:, :H]
    groups = bundle.scenario_groups[queries]
    pure = ForecastBank(bundle, ForecastConfig(rerank=0))
    shortlist = ForecastBank(bundle, ForecastConfig(k=48, rerank=0)).search(name, history, groups)[1]
    dist, rows = ForecastBank(bundle, ForecastConfig(rerank=48)).search(name, history, groups)
    raw = history_input(np.asarray(bundle.xy.all()), H).reshape(bundle.num_windows, -1).astype(np.float64)
    q = history_input(history, H).reshape(len(queries), -1)
    for i in range(len(queries)):
        cand = shortlist[i][shortlist[i] >= 0]
        d = np.linalg.norm(raw[cand] - q[i], axis=1)
        assert rows[i].tolist() == cand[np.argsort(d, kind="stable")[:6]].tolist()
        np.testing.assert_allclose(dist[i], np.sort(d)[:6], rtol=1e-4, atol=1e-4)
    assert pure.search(name, history, groups)[1].tolist() == shortlist[:, :6].tolist()
    with pytest.raises(ConfigError, match="rerank 3 must be 0 \\(off\\) or at least k 6"):
        ForecastConfig(rerank=3)


def test_history_models_embed_histories_in_the_bundle(history_bundle: Path, history_checkpoint: Path) -> None:
    from trajemb.training.checkpoint import card_history_steps, load_checkpoint, read_card
    from trajemb.training.embed import embed_windows

    bundle = Bundle(history_bundle)
    histories = [m for m in bundle.model_names if bundle.history_steps(m) is not None]
    wholes = [m for m in bundle.model_names if bundle.history_steps(m) is None]
    assert len(histories) == 1 and len(wholes) == 1  # older models (and bundles) read whole windows
    assert card_history_steps(read_card(history_checkpoint)) == H
    model, _ = load_checkpoint(history_checkpoint)
    rows = np.arange(0, bundle.num_windows, 97)
    expected = embed_windows(model, history_input(bundle.xy.rows(rows), H))
    np.testing.assert_allclose(bundle.embeddings(histories[0]).rows(rows), expected, atol=1e-5)
    bank = ForecastBank(bundle, ForecastConfig())
    name = retrieval_name(bundle)
    assert bank.methods == [name, KNN_RAW, CONSTANT_VELOCITY, CONSTANT_ACCELERATION]
    np.testing.assert_allclose(bank.features(name, bundle.xy.rows(rows)[:, :H]), expected, atol=1e-5)
    # Another history length: the model is not offered.
    assert ForecastBank(bundle, ForecastConfig(history_steps=20)).models == []


def test_forecast_table_scores_equal_av2(history_bundle: Path, synth_table: Path) -> None:
    bundle = Bundle(history_bundle)
    table = read_table(synth_table)
    sub = TrajectoryTable(table.xy_agent[::7], table.meta.iloc[::7].reset_index(drop=True), table.manifest)
    result = forecast_table(bundle, sub, ForecastConfig())
    name = retrieval_name(bundle)
    assert list(result.scores) == [name, KNN_RAW, CONSTANT_VELOCITY, CONSTANT_ACCELERATION]
    for scores in result.scores.values():
        assert list(scores) == ["minADE6", "minFDE6", "MR6", "brier_minFDE6", "queries"]
        assert scores["queries"] == len(sub)  # every query scenario is in the bank, and left out of it
    cv = constant_velocity(sub.xy_agent[:, :H], 30)
    truth = sub.xy_agent[:, H:].astype(np.float64)
    fde = [compute_fde(cv[i : i + 1], truth[i])[0] for i in range(len(sub))]
    ade = [compute_ade(cv[i : i + 1], truth[i])[0] for i in range(len(sub))]
    assert result.scores[CONSTANT_VELOCITY]["minFDE6"] == pytest.approx(np.mean(fde))
    assert result.scores[CONSTANT_VELOCITY]["minADE6"] == pytest.approx(np.mean(ade))
    assert result.scores[CONSTANT_VELOCITY]["brier_minFDE6"] == pytest.approx(np.mean(fde))
    assert result.scores[CONSTANT_VELOCITY]["MR6"] == pytest.approx(np.mean(np.asarray(fde) > 2.0))
    # Six retrieved futures beat one extrapolation; Brier adds (1 - p)^2 <= 1 to each query.
    for method in (name, KNN_RAW):
        s = result.scores[method]
        assert s["minFDE6"] < result.scores[CONSTANT_VELOCITY]["minFDE6"]
        assert s["minFDE6"] < s["brier_minFDE6"] <= s["minFDE6"] + 1.0
        assert set(result.temperature[method]) and all(t > 0 for t in result.temperature[method])


def test_bundle_reports_forecast_scores(history_bundle: Path) -> None:
    bundle = Bundle(history_bundle)
    (model,) = [m for m in bundle.model_names if bundle.history_steps(m) == H]
    report = bundle.report(model)
    assert report is not None and report["history_steps"] == H
    forecast = report["forecast"]
    assert forecast["config"] == {
        "history_steps": H,
        "k": 6,
        "alignment": "last_state",
        "one_per_track": True,
        "rerank": 48,
    }
    assert forecast["queries"] == 200 and forecast["bank_windows"] == bundle.num_windows
    assert list(forecast["methods"]) == [
        f"retrieval_{model}",
        KNN_RAW,
        CONSTANT_VELOCITY,
        CONSTANT_ACCELERATION,
    ]
    assert "mean_rank" not in report and "minADE@5" in report  # retrieval scores over the histories
    again = forecast_report(bundle, ForecastConfig(), 200)
    assert again["methods"] == forecast["methods"]  # seeded: the same queries and scores
    other = next(m for m in bundle.model_names if m != model)
    assert "forecast" not in (bundle.report(other) or {})
    # A single query's probabilities use the stored temperature.
    bank = ForecastBank(bundle, ForecastConfig())
    assert bank.temperature(KNN_RAW) == pytest.approx(forecast["temperature"][KNN_RAW])


def test_forecast_row_for_the_explorer(history_bundle: Path) -> None:
    bundle = Bundle(history_bundle)
    row = 123
    f = forecast_row(bundle, row)
    xy = bundle.xy.rows(row).astype(np.float64)
    np.testing.assert_allclose(f.history_xy_agent, xy[:H])
    assert f.truth_xy_agent is not None and f.truth_xy_city is not None
    np.testing.assert_allclose(f.truth_xy_agent, xy[H:])
    from trajemb.serving.explore import city_xy

    city = city_xy(bundle, [row])[0]
    np.testing.assert_allclose(f.history_xy_city, city[:H], atol=1e-6)
    np.testing.assert_allclose(f.truth_xy_city, city[H:], atol=1e-6)
    name = retrieval_name(bundle)
    own = bundle.scenario_groups[row]
    for method in (name, KNN_RAW):
        modes = f.methods[method]
        assert modes.xy_agent.shape == (6, 30, 2) and modes.probability.sum() == pytest.approx(1.0)
        assert np.all(np.diff(modes.probability) <= 1e-12)  # most probable first
        assert (bundle.scenario_groups[modes.rows] != own).all()
        assert len(set(bundle.groups[modes.rows].tolist())) == 6  # one future per track
        origin = np.array([[bundle.numbers("origin_x_city_m")[row], bundle.numbers("origin_y_city_m")[row]]])
        theta = np.array([bundle.numbers("theta_rad")[row]])
        expected = agent_to_city(modes.xy_agent.reshape(1, -1, 2), origin, theta).reshape(modes.xy_city.shape)
        np.testing.assert_allclose(modes.xy_city, expected)
    cv = f.methods[CONSTANT_VELOCITY]
    assert cv.rows.tolist() == [-1] and cv.probability.tolist() == [1.0]
    np.testing.assert_allclose(cv.xy_agent[0], constant_velocity(xy[None, :H], 30)[0])
    assert f.scores[CONSTANT_VELOCITY]["minFDE6"] == pytest.approx(compute_fde(cv.xy_agent, xy[H:])[0])
    assert f.scores[KNN_RAW]["queries"] == 1


def test_forecast_window_of_ones_own(history_bundle: Path) -> None:
    bundle = Bundle(history_bundle)
    row = 321
    by_row = forecast_row(bundle, row)
    key = scenario_keys(bundle.strings("source", [row]), bundle.strings("scenario_id", [row]))[0]
    origin = (bundle.numbers("origin_x_city_m")[row], bundle.numbers("origin_y_city_m")[row])
    theta = float(bundle.numbers("theta_rad")[row])
    window = forecast_window(bundle, bundle.xy.rows(row), origin, theta, scenario_key=str(key))
    for method, modes in by_row.methods.items():
        np.testing.assert_array_equal(window.methods[method].rows, modes.rows)
        np.testing.assert_allclose(window.methods[method].xy_city, modes.xy_city, atol=1e-6)
    sketch = forecast_window(bundle, bundle.xy.rows(row)[:H])  # a history alone: nothing to score
    assert sketch.truth_xy_agent is None and sketch.scores == {} and sketch.query_row is None
    assert sketch.methods[KNN_RAW].xy_agent.shape == (6, 30, 2)
    with pytest.raises(DataError, match="a query must have shape"):
        forecast_window(bundle, np.zeros((12, 2)))
    with pytest.raises(DataError, match="finite"):
        forecast_window(bundle, np.full((H, 2), np.nan))


def test_explorer_search_embeds_a_history_for_a_history_model(history_bundle: Path) -> None:
    from trajemb.serving.explore import NeighborOptions, search_row, search_window

    bundle = Bundle(history_bundle)
    model = retrieval_name(bundle).removeprefix("retrieval_")
    row = 50
    own = search_window(bundle, model, bundle.xy.rows(row), NeighborOptions(k=5, one_per_track=False))
    assert own.distance[0] == pytest.approx(0.0, abs=1e-4) and own.rows[0] == row  # itself, embedded afresh
    others = search_row(
        bundle, model, row, NeighborOptions(k=4, exclude_same_track=False, one_per_track=False)
    )
    assert own.rows[1:].tolist() == others.rows.tolist()
