"""Map reduction through av2, the npz cache, and bad map files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.data.maps import MapCache, load_map_geometry, read_map_geometry, save_map_geometry
from trajemb.errors import DataError


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
