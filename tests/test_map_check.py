"""The map check through av2's map API: real fixtures' maps as measured, synthetic maps on their drivable
area, damaged maps caught, distances against brute force."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from trajemb.core.errors import DataError
from trajemb.data.av2_motion import find_scenario_files, map_path_for
from trajemb.data.map_check import _segment_distances, check_map, summarize
from trajemb.data.synth.generate import scenario_of
from trajemb.data.synth.scenario import SynthScenario, generate_scenario
from trajemb.data.synth.writer import write_scenario_dir


def test_real_fixture_maps(av2_fixtures: Path) -> None:
    """97-99.5 % of real lane centre-line points lie on a drivable area (the rest: lanes that leave the
    mapped area); lane polygons, neighbours and successors all fit."""
    maps = sorted(av2_fixtures.glob("motion_forecasting/*/log_map_archive_*.json"))
    maps += sorted(av2_fixtures.glob("sensor_logs/*/map/log_map_archive_*.json"))
    checks = [check_map(p) for p in maps]
    assert len(checks) == 5
    centre = [c.centerline_in_drivable for c in checks]
    assert min(centre) == pytest.approx(0.9725, abs=1e-3) and max(centre) == pytest.approx(0.9950, abs=1e-3)
    for c in checks:
        assert (
            c.polygon_in_drivable == 1.0 and c.neighbors_consistent == 1.0 and c.successors_connected == 1.0
        )
        assert c.dangling_links > 0  # lanes at the edge of a map cut out of a city point outside it
    summary = summarize(checks)
    assert summary.maps == 5 and summary.worst["centerline_in_drivable"] == min(centre)


def test_synthetic_maps_lie_on_their_drivable_area(synth_v2_dir: Path) -> None:
    """Junction interiors, U-turn loops and lane ends are all drivable area (issue 19: 87 % before)."""
    for scenario in find_scenario_files(synth_v2_dir):
        c = check_map(map_path_for(scenario))
        assert c.centerline_in_drivable == 1.0, c
        assert c.polygon_in_drivable == 1.0, c
        # Single-lane roads have no neighbours to check (NaN).
        assert not c.neighbors_consistent < 1.0 and c.successors_connected == 1.0, c
        assert c.dangling_links == 0, c


def test_generator_1_maps_are_kept_as_they_were(tmp_path: Path) -> None:
    """Generator 1's maps (``--generator 1``) are written as before: every 4th point of a drivable area,
    which cut the corners off its junctions (the 87 % of issue 19); generator 2's, from the same seeds,
    are fully on their drivable area."""
    old, new = [], []
    for i in range(8):
        old.append(check_map(_map_of(scenario_of(1, np.random.default_rng([0, i])), tmp_path / "v1")))
        new.append(check_map(_map_of(scenario_of(2, np.random.default_rng([0, i])), tmp_path / "v2")))
    assert summarize(old).mean["centerline_in_drivable"] < 0.92
    assert summarize(old).worst["centerline_in_drivable"] < 0.85
    assert summarize(new).worst["centerline_in_drivable"] == 1.0


def _map_of(scenario: SynthScenario, root: Path) -> Path:
    return next(write_scenario_dir(scenario, root).glob("log_map_archive_*.json"))


def test_damaged_maps_are_caught(tmp_path: Path) -> None:
    folder = write_scenario_dir(generate_scenario(np.random.default_rng([7, 3])), tmp_path)
    path = next(folder.glob("log_map_archive_*.json"))
    data = json.loads(path.read_text())
    assert check_map(path).centerline_in_drivable == 1.0
    # Without the junction's area (the last one of a junction map), its connectors are off the road.
    areas = sorted(data["drivable_areas"], key=int)
    del data["drivable_areas"][areas[-1]]
    lanes = data["lane_segments"]
    first = next(iter(lanes.values()))
    first["successors"] = [*first["successors"], 1]  # a lane that is not in the map
    neighbor = next(v for v in lanes.values() if v["left_neighbor_id"] is not None)
    neighbor["left_lane_boundary"] = [{**p, "y": p["y"] + 3.0} for p in neighbor["left_lane_boundary"]]
    path.write_text(json.dumps(data))
    c = check_map(path)
    assert c.centerline_in_drivable < 0.99
    assert c.dangling_links == 1
    assert c.neighbors_consistent < 1.0


def test_segment_distances_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    line = np.cumsum(rng.normal(0, 1, (7, 2)), axis=0)
    points = rng.normal(0, 3, (50, 2))
    dense = np.concatenate(
        [a + np.linspace(0, 1, 2001)[:, None] * (b - a) for a, b in itertools.pairwise(line)]
    )
    brute = np.linalg.norm(points[:, None] - dense[None], axis=2).min(axis=1)
    np.testing.assert_allclose(_segment_distances(points, line), brute, atol=5e-3)


def test_missing_or_broken_map(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        check_map(tmp_path / "log_map_archive_x.json")
    (tmp_path / "log_map_archive_y.json").write_text("{}")
    with pytest.raises(DataError, match="not an AV2 map"):
        check_map(tmp_path / "log_map_archive_y.json")
