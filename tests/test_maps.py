"""Map reduction through av2, the npz cache, and bad map files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from av2.geometry.interpolate import NUM_CENTERLINE_INTERP_PTS, compute_midpoint_line

from trajemb.core.errors import DataError
from trajemb.data.lanes import read_map_json
from trajemb.data.maps import (
    MapCache,
    MapGeometry,
    load_map_geometry,
    map_geometry_from_json,
    midpoint_lines,
    read_map_geometry,
    save_map_geometry,
)


def test_real_maps_reduce(av2_fixtures: Path) -> None:
    maps = sorted(av2_fixtures.rglob("log_map_archive_*.json"))
    assert len(maps) == 5
    mf = load_map_geometry(next(m for m in maps if "motion_forecasting" in str(m)))
    # Fixture README: 71 lanes, 6 crossings, 2 drivable areas.
    assert len(mf.lane_boundaries) == 2 * 71 and len(mf.lane_centerlines) == 71
    assert len(mf.crossings) == 6 and len(mf.drivable_areas) == 2
    for poly in mf.drivable_areas + mf.crossings:
        np.testing.assert_array_equal(poly[0], poly[-1])
    x0, y0, x1, y1 = mf.bounds_xy()
    assert x0 < -400 < x1 and y0 < 1400 < y1  # austin fixture coordinates


def test_cache_round_trip(av2_fixtures: Path, tmp_path: Path) -> None:
    src = next(av2_fixtures.rglob("log_map_archive_*.json"))
    cache = MapCache(tmp_path / "maps")
    first = cache.get(src)
    assert cache.path_for(src).exists()
    second = cache.get(src)
    for kind in ("lane_boundaries", "lane_centerlines", "drivable_areas", "crossings"):
        for a, b in zip(getattr(first, kind), getattr(second, kind), strict=True):
            np.testing.assert_array_equal(a, b)
    save_map_geometry(first, tmp_path / "x.npz")
    assert len(read_map_geometry(tmp_path / "x.npz").lane_boundaries) == len(first.lane_boundaries)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"lane_segments": {}}', "does not follow the AV2 map schema"),
        ('{"drivable_areas": {"1": {"id": 1}}, "lane_segments": {}}', "does not follow the AV2 map schema"),
    ],
)
def test_bad_map(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "log_map_archive_x.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_map_geometry(path)


def test_missing_map(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="map file not found"):
        MapCache(tmp_path).get(tmp_path / "log_map_archive_nope.json")


def _all_maps(av2_fixtures: Path, synth_dir: Path) -> list[Path]:
    return (
        sorted(av2_fixtures.rglob("log_map_archive_*.json"))
        + sorted(synth_dir.rglob("log_map_archive_*.json"))[:8]
    )


def _assert_same_geometry(ours: MapGeometry, theirs: MapGeometry, what: str) -> None:
    for kind in ("lane_boundaries", "lane_centerlines", "drivable_areas", "crossings"):
        a, b = getattr(ours, kind), getattr(theirs, kind)
        assert len(a) == len(b), (what, kind)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape, (what, kind)
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: {kind}")


def test_decoded_maps_reduce_as_av2_does(av2_fixtures: Path, synth_dir: Path) -> None:
    """The reduction from the decoded file (what prepare --maps-dir uses) is av2's, bit for bit."""
    maps = _all_maps(av2_fixtures, synth_dir)
    assert len(maps) >= 10
    for path in maps:
        _assert_same_geometry(
            map_geometry_from_json(read_map_json(path), path), load_map_geometry(path), path.name
        )


def test_midpoint_lines_are_av2s_on_odd_boundaries() -> None:
    """Boundaries of one point, repeated points, very uneven spacing and many points: av2's result."""
    rng = np.random.default_rng(0)
    lefts, rights = [], []
    for n_left, n_right in [(1, 5), (6, 1), (2, 2), (3, 40), (25, 4), (9, 9)]:
        lefts.append(np.cumsum(rng.exponential(3.0, (n_left, 3)), axis=0))
        rights.append(np.cumsum(rng.exponential(0.2, (n_right, 3)), axis=0) + [0.0, 3.5, 0.0])
    repeated = lefts[3].copy()
    repeated[2] = repeated[1]
    lefts.append(repeated)
    rights.append(rights[3])
    with np.errstate(invalid="ignore", divide="ignore"):  # av2 divides by the repeated point's 0 m
        lines = midpoint_lines(lefts, rights)
        for ours, left, right in zip(lines, lefts, rights, strict=True):
            theirs, _ = compute_midpoint_line(left, right, NUM_CENTERLINE_INTERP_PTS)
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    "damage", ["lane_type", "no_z", "string_x", "crossing_edge", "duplicate_id", "empty_area", "no_crossings"]
)
def test_maps_outside_the_plain_schema_go_through_av2(
    av2_fixtures: Path, tmp_path: Path, damage: str
) -> None:
    """A map av2 reads differently, or refuses, is parsed by av2: same geometry, or the same refusal."""
    source = sorted((av2_fixtures / "motion_forecasting").rglob("log_map_archive_*.json"))[0]
    data = json.loads(source.read_text())
    lane = next(iter(data["lane_segments"].values()))
    if damage == "lane_type":
        lane["lane_type"] = "HOVERCRAFT"
    elif damage == "no_z":
        del lane["left_lane_boundary"][0]["z"]
    elif damage == "string_x":
        lane["left_lane_boundary"][0]["x"] = str(lane["left_lane_boundary"][0]["x"])
    elif damage == "crossing_edge":
        next(iter(data["pedestrian_crossings"].values()))["edge1"].append({"x": 1.0, "y": 2.0, "z": 0.0})
    elif damage == "duplicate_id":
        first, second = list(data["lane_segments"].values())[:2]
        second["id"] = first["id"]
    elif damage == "empty_area":
        next(iter(data["drivable_areas"].values()))["area_boundary"] = []
    else:
        del data["pedestrian_crossings"]
    path = tmp_path / source.name
    path.write_text(json.dumps(data))
    try:
        theirs = load_map_geometry(path)
    except DataError as exc:
        with pytest.raises(DataError) as ours:
            map_geometry_from_json(json.loads(path.read_text()), path)
        assert str(ours.value) == str(exc)
        return
    _assert_same_geometry(map_geometry_from_json(json.loads(path.read_text()), path), theirs, damage)
