"""The AV2 motion-forecasting reader against av2's own loader, on the real fixture, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet

from trajemb.core.errors import DataError
from trajemb.data.av2_motion import find_scenario_files, map_path_for, read_scenario_tracks
from trajemb.data.schema import VEHICLE_TYPES, VRU_TYPES, Source, WindowConfig
from trajemb.data.windows import extract_windows


def test_real_scenario_matches_av2_loader(mf_dir: Path) -> None:
    (path,) = find_scenario_files(mf_dir)
    tracks = read_scenario_tracks(path)
    scenario = load_argoverse_scenario_parquet(path)
    assert tracks.scenario_id == scenario.scenario_id
    assert tracks.city == scenario.city_name == "austin"
    assert tracks.num_steps == 110
    assert tracks.num_tracks == len(scenario.tracks) == 58
    assert map_path_for(path).is_file()
    by_id = {t.track_id: t for t in scenario.tracks}
    for a, track_id in enumerate(tracks.track_ids):
        ref = by_id[str(track_id)]
        steps = np.array([s.timestep for s in ref.object_states])
        np.testing.assert_array_equal(np.flatnonzero(tracks.valid[a]), steps)
        np.testing.assert_array_equal(
            tracks.xy_city[a, steps], np.array([s.position for s in ref.object_states])
        )
        np.testing.assert_array_equal(
            tracks.heading_rad[a, steps], np.array([s.heading for s in ref.object_states])
        )
        assert tracks.object_types[a] == ref.object_type.value
    focal = tracks.track_ids[tracks.categories == "focal"]
    assert focal.tolist() == [scenario.focal_track_id]


def test_real_scenario_window_counts(mf_dir: Path) -> None:
    """Moving vehicle windows at a 1 s stride: exactly the fixture README's 20 six-second, 34 three-second."""
    tracks = read_scenario_tracks(find_scenario_files(mf_dir)[0])
    six = extract_windows(tracks, WindowConfig(num_steps=60, stride_steps=10, object_types=VEHICLE_TYPES))
    three = extract_windows(tracks, WindowConfig(num_steps=30, stride_steps=10, object_types=VEHICLE_TYPES))
    assert len(six) == 20
    assert len(three) == 34
    with_vru = WindowConfig(num_steps=30, stride_steps=10, object_types=VEHICLE_TYPES + VRU_TYPES)
    assert len(extract_windows(tracks, with_vru)) == 38
    assert set(six.source) == {Source.AV2_MOTION.value}
    # Windows never span a gap and are in the agent frame.
    np.testing.assert_allclose(six.xy_agent[:, 0], 0.0, atol=1e-5)
    assert np.isfinite(six.xy_agent).all()


def test_paper_preset_gives_one_focal_future_window(mf_dir: Path) -> None:
    from trajemb.data.schema import PAPER_FOCAL_FUTURE

    tracks = read_scenario_tracks(find_scenario_files(mf_dir)[0])
    w = extract_windows(tracks, PAPER_FOCAL_FUTURE)
    assert len(w) == 1
    assert w.category.tolist() == ["focal"] and w.start_timestep.tolist() == [50]


def _copy_fixture(mf_dir: Path, tmp_path: Path) -> Path:
    src = find_scenario_files(mf_dir)[0].parent
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return next(dst.glob("scenario_*.parquet"))


def _rewrite(path: Path, df: pd.DataFrame) -> None:
    path.chmod(0o644)
    df.to_parquet(path)


def test_truncated_parquet(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"scenario_.*\.parquet: not a readable parquet file"):
        read_scenario_tracks(path)


def test_not_parquet(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    path.chmod(0o644)
    path.write_text("track_id,timestep\n1,2\n")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_scenario_tracks(path)


def test_missing_column(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    _rewrite(path, pd.read_parquet(path).drop(columns=["position_y", "heading"]))
    with pytest.raises(DataError, match=r"missing AV2 scenario column.*position_y, heading"):
        read_scenario_tracks(path)


def test_mistyped_column(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    df = pd.read_parquet(path)
    df["position_x"] = df["position_x"].astype(str)
    _rewrite(path, df)
    with pytest.raises(DataError, match=r"column position_x has type .*expected floating point"):
        read_scenario_tracks(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_position(mf_dir: Path, tmp_path: Path, bad: float) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    df = pd.read_parquet(path)
    df.loc[17, "position_y"] = bad
    _rewrite(path, df)
    with pytest.raises(
        DataError, match=r"1 position\(s\) are NaN or infinite \(first: track \S+, timestep \d+\)"
    ):
        read_scenario_tracks(path)


def test_duplicate_state(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    df = pd.read_parquet(path)
    _rewrite(path, pd.concat([df, df.iloc[[3]]], ignore_index=True))
    with pytest.raises(DataError, match="appear more than once"):
        read_scenario_tracks(path)


def test_timestep_out_of_range(mf_dir: Path, tmp_path: Path) -> None:
    path = _copy_fixture(mf_dir, tmp_path)
    df = pd.read_parquet(path)
    df.loc[0, "timestep"] = 110
    _rewrite(path, df)
    with pytest.raises(DataError, match=r"timestep range \[0, 110\] outside \[0, 110\)"):
        read_scenario_tracks(path)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no AV2 scenario files"):
        find_scenario_files(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        find_scenario_files(tmp_path / "nope")
