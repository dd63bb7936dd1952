"""Ground-truth manoeuvres: the window rule on analytic cases, the sidecar round trip, the prepared
column, and the heuristic labels measured against the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trajemb.analysis.label_quality import label_agreement
from trajemb.core.errors import DataError
from trajemb.data.av2_motion import find_scenario_files, read_scenario_tracks
from trajemb.data.schema import ManoeuvreTruth, Source
from trajemb.data.store import read_table
from trajemb.data.synth.geometry import arc_length_m
from trajemb.data.synth.scenario import generate_scenario
from trajemb.data.synth.writer import write_scenario_dir
from trajemb.data.truth import read_truth, truth_path_for, window_true_manoeuvre

T = 60


def _truth(spans: list[tuple[str, float, float]], speed_mps: float = 10.0) -> ManoeuvreTruth:
    """One track advancing at ``speed_mps`` for 110 steps, with the given manoeuvres."""
    return ManoeuvreTruth(
        route_kind=np.array(["left"]),
        route_s_m=(np.arange(110) * 0.1 * speed_mps)[None],
        span_kind=np.array([[k for k, _, _ in spans]]),
        span_start_m=np.array([[a for _, a, _ in spans]]),
        span_end_m=np.array([[b for _, _, b in spans]]),
    )


def _label(truth: ManoeuvreTruth | None, start: int) -> str:
    return str(window_true_manoeuvre(truth, np.array([0]), np.array([start]), T)[0])


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (0, "straight"),  # metres 0..59: none of the turn at 70..90
        (20, "straight"),  # 20..79: 9 of 20 m
        (21, "left"),  # 21..80: 10 of 20 m, exactly half
        (40, "left"),  # 40..99: all of it
        (50, "left"),  # 50..109: all of it
    ],
)
def test_coverage_threshold(start: int, expected: str) -> None:
    assert _label(_truth([("left", 70.0, 90.0)]), start) == expected


def test_priority_and_stationary_and_unknown() -> None:
    both = _truth([("lane_change_left", 10.0, 40.0), ("left", 45.0, 60.0)])
    assert _label(both, 0) == "left"  # a lane change, then a turn, in one window: the turn
    assert _label(_truth([("lane_change_left", 10.0, 40.0)]), 0) == "lane_change_left"
    assert _label(_truth([("left", 10.0, 20.0)], speed_mps=0.4), 0) == "stationary"
    assert _label(None, 0) == "unknown"


def test_sidecar_round_trip_and_spans_match_the_motion(tmp_path: Path) -> None:
    sc = generate_scenario(np.random.default_rng([7, 3]))
    folder = write_scenario_dir(sc, tmp_path)
    scenario = next(folder.glob("scenario_*.parquet"))
    tracks = read_scenario_tracks(scenario, Source.SYNTHETIC)  # sorted by id, unlike the generator
    truth = read_truth(truth_path_for(scenario), tracks.track_ids, tracks.num_steps)
    order = [list(sc.track_ids).index(t) for t in tracks.track_ids]
    np.testing.assert_array_equal(truth.route_kind, sc.route_kinds[order])
    np.testing.assert_array_equal(np.isnan(truth.route_s_m), ~tracks.valid)
    # Progress along the route matches the distance actually driven (noise-free, within the 2.5 cm noise).
    full = np.flatnonzero(tracks.valid.all(axis=1) & (tracks.object_types == "vehicle"))
    full = full[truth.route_kind[full] != "parked"]  # standing still, their jitter adds path length
    driven = np.array([arc_length_m(tracks.xy_city[a])[-1] for a in full])
    progress = truth.route_s_m[full, -1] - truth.route_s_m[full, 0]
    assert progress.max() > 50.0
    np.testing.assert_allclose(driven, progress, rtol=0.03, atol=1.0)


def test_sidecar_errors(tmp_path: Path) -> None:
    sc = generate_scenario(np.random.default_rng([7, 4]))
    scenario = next(write_scenario_dir(sc, tmp_path).glob("scenario_*.parquet"))
    tracks = read_scenario_tracks(scenario, Source.SYNTHETIC)
    path = truth_path_for(scenario)
    with pytest.raises(DataError, match="does not match its scenario"):
        read_truth(path, np.append(tracks.track_ids, "ghost"), tracks.num_steps)
    with pytest.raises(DataError, match="not 99 steps"):
        read_truth(path, tracks.track_ids, 99)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="not a trajemb truth sidecar"):
        read_truth(tmp_path / "plain.parquet", tracks.track_ids, tracks.num_steps)


def test_prepared_tables_carry_the_truth(synth_table: Path, synth_dir: Path) -> None:
    meta = read_table(synth_table).meta
    assert set(meta.true_manoeuvre) >= {"straight", "left", "right", "u_turn", "lane_change_left"}
    assert len(find_scenario_files(synth_dir)) == 24


def test_real_windows_have_no_truth(mf_dir: Path, tmp_path: Path) -> None:
    from trajemb.data.prepare import PrepareConfig, prepare_table

    prepare_table(PrepareConfig(av2_dirs=(str(mf_dir),), workers=1), tmp_path / "t.parquet", progress=False)
    assert set(read_table(tmp_path / "t.parquet").meta.true_manoeuvre) == {"unknown"}


def test_heuristic_labels_agree_with_the_truth(synth_table: Path) -> None:
    """The lane-graph rule on 24 held-out scenarios (never used to tune it): F1 >= 0.85 for every class
    with enough windows (``scripts/label_quality.py`` measures 0.9 and more on 300)."""
    meta = read_table(synth_table).meta
    agreement = label_agreement(meta.true_manoeuvre.to_numpy(), meta.direction.to_numpy())
    scored = {c: f for c, f in agreement.f1.items() if agreement.support[c] >= 40}
    assert {"straight", "left", "right", "u_turn"} <= set(scored)
    assert min(scored.values()) >= 0.85, scored
