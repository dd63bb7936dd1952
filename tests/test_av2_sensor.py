"""Sensor-log reader on the four real logs: the city transform agrees with av2, tracks land on roads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest
from av2.utils.io import read_city_SE3_ego
from matplotlib.path import Path as MplPath

from trajemb.core.errors import DataError
from trajemb.data.av2_sensor import (
    EGO_TRACK_ID,
    find_sensor_logs,
    read_sensor_log_tracks,
    sensor_log_map_path,
)
from trajemb.data.maps import load_map_geometry
from trajemb.data.schema import VEHICLE_TYPES, VRU_TYPES, WindowConfig
from trajemb.data.windows import extract_windows

LOG_CITIES = {
    "3b3570b4": "miami",
    "3bffdcff": "pittsburgh",
    "7fab2350": "pittsburgh",
    "adcf7d18": "pittsburgh",
}


def test_finds_the_four_logs(sensor_dir: Path) -> None:
    logs = find_sensor_logs(sensor_dir)
    assert [p.name[:8] for p in logs] == sorted(LOG_CITIES)


@pytest.mark.parametrize("prefix", sorted(LOG_CITIES))
def test_city_transform_matches_av2(sensor_dir: Path, prefix: str) -> None:
    log_dir = next(p for p in find_sensor_logs(sensor_dir) if p.name.startswith(prefix))
    tracks = read_sensor_log_tracks(log_dir)
    assert tracks.city == LOG_CITIES[prefix]
    assert 150 <= tracks.num_steps <= 160  # ~15.6 s at 10 Hz
    ann_file = next(log_dir.glob("annotations*.feather"))
    ann = feather.read_table(ann_file).to_pandas()
    poses = read_city_SE3_ego(log_dir)
    sweeps = np.unique(ann.timestamp_ns)
    rng = np.random.default_rng(0)
    for row in ann.iloc[rng.choice(len(ann), 25, replace=False)].itertuples():
        expected = poses[row.timestamp_ns].transform_point_cloud(np.array([[row.tx_m, row.ty_m, row.tz_m]]))[
            0, :2
        ]
        a = int(np.flatnonzero(tracks.track_ids == row.track_uuid)[0])
        step = int(np.rint((row.timestamp_ns - sweeps[0]) / 1e8))
        np.testing.assert_allclose(tracks.xy_city[a, step], expected, atol=1e-6)
    # Logs without an EGO_VEHICLE cuboid get the ego track from the poses.
    has_ego_cuboid = (ann.category == "EGO_VEHICLE").any()
    assert (EGO_TRACK_ID in tracks.track_ids) != has_ego_cuboid


def test_vehicles_are_on_the_road(sensor_dir: Path) -> None:
    """Fixture README: 79-88 % of vehicle centres lie inside drivable areas (the rest are parked in lots)."""
    for log_dir in find_sensor_logs(sensor_dir):
        tracks = read_sensor_log_tracks(log_dir)
        geometry = load_map_geometry(sensor_log_map_path(log_dir))
        pts = tracks.xy_city[(tracks.object_types == "vehicle")][..., :2].reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(axis=1)]
        inside = np.zeros(len(pts), dtype=bool)
        for area in geometry.drivable_areas:
            inside |= MplPath(area).contains_points(pts)
        assert 0.7 <= inside.mean() <= 0.95, (log_dir.name, inside.mean())


def test_sensor_window_counts(sensor_dir: Path) -> None:
    """Moving windows at a 1 s stride, exactly as the fixture README counts them: all sources together
    668 six-second / 957 three-second vehicle windows, 865 / 1,260 with pedestrians and cyclists, of
    which the motion-forecasting scenario holds 20 / 34 and 20 / 38."""
    sets = [read_sensor_log_tracks(p) for p in find_sensor_logs(sensor_dir)]

    def count(num_steps: int, object_types: tuple[str, ...]) -> int:
        config = WindowConfig(num_steps, 10, object_types=object_types)
        return sum(len(extract_windows(s, config)) for s in sets)

    assert count(60, VEHICLE_TYPES) == 668 - 20
    assert count(30, VEHICLE_TYPES) == 957 - 34
    assert count(60, VEHICLE_TYPES + VRU_TYPES) == 865 - 20
    assert count(30, VEHICLE_TYPES + VRU_TYPES) == 1260 - 38
    directions = np.concatenate([extract_windows(s, WindowConfig(60, 10)).direction for s in sets])
    assert {"straight", "left", "right"} <= set(directions.tolist())


def test_missing_poses(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no AV2 sensor logs"):
        find_sensor_logs(tmp_path)


def test_log_without_annotations(sensor_dir: Path, tmp_path: Path) -> None:
    src = find_sensor_logs(sensor_dir)[0]
    dst = tmp_path / src.name
    dst.mkdir()
    (dst / "city_SE3_egovehicle.feather").write_bytes((src / "city_SE3_egovehicle.feather").read_bytes())
    with pytest.raises(DataError, match=r"no annotations\.feather or annotations_with_ego\.feather"):
        read_sensor_log_tracks(dst)


def test_log_without_poses_is_reported_not_dropped(sensor_dir: Path, tmp_path: Path) -> None:
    from trajemb.data.prepare import PrepareConfig, prepare_table

    logs = find_sensor_logs(sensor_dir)
    root = tmp_path / "logs"
    for src in logs[:2]:
        (root / src.name).mkdir(parents=True)
        for f in src.glob("*.feather"):
            (root / src.name / f.name).write_bytes(f.read_bytes())
        (root / src.name / "map").mkdir()
        for f in (src / "map").iterdir():
            (root / src.name / "map" / f.name).write_bytes(f.read_bytes())
    (root / logs[1].name / "city_SE3_egovehicle.feather").unlink()
    assert [p.name for p in find_sensor_logs(root)] == [logs[0].name, logs[1].name]
    report = prepare_table(
        PrepareConfig(sensor_log_dirs=(str(root),), workers=1, skip_bad=True),
        tmp_path / "t.parquet",
        progress=False,
    )
    assert len(report.skipped) == 1 and "no city_SE3_egovehicle.feather (ego poses)" in report.skipped[0][1]
