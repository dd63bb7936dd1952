"""The transfer test of ``trajemb realism``: the same forecasts as ``trajemb forecast``'s raw kNN (its
bank rules: own scenario out, one window per track), scored with av2's functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.forecast import KNN_RAW, ForecastConfig, forecast_table
from trajemb.analysis.motion_models import constant_velocity
from trajemb.analysis.realism_transfer import (
    CONSTANT_VELOCITY,
    REAL_BANK,
    TransferConfig,
    bank_scores,
    transfer_test,
)
from trajemb.core.errors import DataError
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.store import TrajectoryTable, read_table

from conftest import analytic_windows


@pytest.fixture(scope="module")
def real(av2_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> TrajectoryTable:
    out = tmp_path_factory.mktemp("real") / "real.parquet"
    config = PrepareConfig(
        av2_dirs=(str(av2_fixtures / "motion_forecasting"),),
        sensor_log_dirs=(str(av2_fixtures / "sensor_logs"),),
        workers=1,
    )
    prepare_table(config, out, progress=False)
    return read_table(out)


def _keys(table: TrajectoryTable) -> np.ndarray:
    return (table.meta["source"] + "/" + table.meta["scenario_id"]).to_numpy(dtype=str)


def test_same_forecasts_as_trajemb_forecast_on_an_analytic_bank(analytic_bank_dir: Path) -> None:
    bank = read_table(analytic_bank_dir.parent / "bank.parquet")
    windows = analytic_windows((5.0, 9.0, 15.0), 0.0, "s")  # scenarios s0..s2 are bank scenarios too
    queries = TrajectoryTable(
        windows.xy_agent,
        pd.DataFrame({"source": windows.source, "scenario_id": windows.scenario_id}),
        {"window_config": None},
    )
    ours = bank_scores(bank, queries.xy_agent, _keys(queries), TransferConfig(k=3))
    theirs = forecast_table(Bundle(analytic_bank_dir), queries, ForecastConfig(k=3), methods=[KNN_RAW])
    np.testing.assert_allclose(ours.min_fde_m, theirs.query_scores[KNN_RAW].min_fde_m, rtol=1e-9)
    np.testing.assert_allclose(ours.min_ade_m, theirs.query_scores[KNN_RAW].min_ade_m, rtol=1e-9)
    # Straight histories, futures that drift left by 0.5 t^2 (last_state: the query's own speed): the
    # best of 3 lands 0.5 * 3^2 = 4.5 m left of constant velocity, whichever bank windows come back.
    np.testing.assert_allclose(ours.min_fde_m, 4.5, atol=1e-3)


def test_same_forecasts_as_trajemb_forecast_on_real_queries(
    real: TrajectoryTable, synth_table: Path, history_bundle: Path
) -> None:
    bank = read_table(synth_table)
    ours = bank_scores(bank, real.xy_agent, _keys(real), TransferConfig())
    theirs = forecast_table(Bundle(history_bundle), real, ForecastConfig(), methods=[KNN_RAW])
    np.testing.assert_allclose(ours.min_fde_m, theirs.query_scores[KNN_RAW].min_fde_m, rtol=1e-6)
    # The bank's own windows as queries: their scenarios are left out, as ``trajemb forecast`` does.
    rows = np.arange(0, len(bank), 37)
    own = bank_scores(bank, bank.xy_agent[rows], _keys(bank)[rows], TransferConfig())
    assert (own.min_fde_m > 1e-3).all()  # a window never retrieves its own future
    assert own.scored.all()


def test_report_of_banks(real: TrajectoryTable, synth_table: Path) -> None:
    synth = read_table(synth_table)
    out = transfer_test(real, real, {"synthetic": synth, "same": real})
    banks = out["banks"]
    assert list(banks) == [REAL_BANK, "synthetic", "same", CONSTANT_VELOCITY]
    assert out["queries"] == len(real) and out["k"] == 6 and out["history_steps"] == 30
    assert banks[REAL_BANK]["ratio"] == 1.0 and banks["same"] == banks[REAL_BANK]
    assert banks["synthetic"]["windows"] == len(synth)
    assert set(banks["synthetic"]["by_type"]) == set(real.meta["object_type"])
    # Constant velocity, by hand: one forecast, its FDE is its minFDE.
    xy = real.xy_agent.astype(np.float64)
    cv = constant_velocity(xy[:, :30], 30)
    fde = np.hypot(*(cv[:, -1] - xy[:, -1]).T)
    assert banks[CONSTANT_VELOCITY]["minFDE"] == pytest.approx(fde.mean())
    assert banks[CONSTANT_VELOCITY]["ratio"] == pytest.approx(fde.mean() / banks[REAL_BANK]["minFDE"])
    vehicles = real.meta["object_type"].to_numpy() == "vehicle"
    assert banks[CONSTANT_VELOCITY]["by_type"]["vehicle"]["minFDE"] == pytest.approx(fde[vehicles].mean())
    assert banks[CONSTANT_VELOCITY]["by_type"]["vehicle"]["queries"] == int(vehicles.sum())


def test_refusals(real: TrajectoryTable) -> None:
    one_track = TrajectoryTable(real.xy_agent[:3], real.meta.iloc[:3].reset_index(drop=True), real.manifest)
    assert len(set(one_track.track_groups())) < 6
    with pytest.raises(DataError, match="cannot give 6 futures of distinct tracks"):
        transfer_test(real, real, {"tiny": one_track})
    empty = TrajectoryTable(real.xy_agent[:0], real.meta.iloc[:0], real.manifest)
    with pytest.raises(DataError, match="no real query windows"):
        transfer_test(empty, real, {})


def test_a_bank_too_small_is_named_by_its_file(real: TrajectoryTable) -> None:
    """``trajemb realism --real-bank SMALL.parquet`` (or a small --synthetic table) said only 'a bank of
    2 tracks cannot give 6 futures of distinct tracks', naming no table; now the bank's file."""
    one_track = TrajectoryTable(real.xy_agent[:3], real.meta.iloc[:3].reset_index(drop=True), real.manifest)
    with pytest.raises(DataError, match=r"^small\.parquet: a bank of \d+ tracks cannot give 6 futures"):
        transfer_test(real, real, {"tiny": one_track}, where={"tiny": "small.parquet"})
    with pytest.raises(DataError, match=r"^bank tiny: a bank of"):
        transfer_test(real, real, {"tiny": one_track})
