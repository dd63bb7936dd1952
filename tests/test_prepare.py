"""prepare: real + synthetic inputs into one table, parallel == serial, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trajemb.errors import ConfigError, DataError
from trajemb.prepare import PrepareConfig, prepare_table, prepare_windows
from trajemb.schema import WindowConfig
from trajemb.store import read_table


def test_real_and_synthetic_in_one_table(
    mf_dir: Path, sensor_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    config = PrepareConfig(
        av2_dirs=(str(mf_dir), str(synth_dir)),
        sensor_log_dirs=(str(sensor_dir),),
        workers=1,
        maps_dir=str(tmp_path / "maps"),
    )
    report = prepare_table(config, tmp_path / "t.parquet", progress=False)
    table = read_table(tmp_path / "t.parquet", verify=True)
    assert len(table) == report.num_windows
    assert report.num_inputs == 1 + 4 + 24
    counts = table.meta["source"].value_counts()
    assert counts["av2_motion"] == 20 and counts["av2_sensor"] == 845 and counts["synthetic"] > 1000
    # Every map a window needs was reduced into the cache.
    assert len(list((tmp_path / "maps").glob("*.npz"))) == table.meta["map_key"].nunique()
    assert table.manifest["window_config"]["num_steps"] == 60


def test_parallel_equals_serial(synth_dir: Path) -> None:
    serial, _, _ = prepare_windows(PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), progress=False)
    parallel, _, _ = prepare_windows(PrepareConfig(av2_dirs=(str(synth_dir),), workers=2), progress=False)
    np.testing.assert_array_equal(serial.xy_agent, parallel.xy_agent)
    np.testing.assert_array_equal(serial.track_id, parallel.track_id)


def test_three_second_windows(synth_dir: Path) -> None:
    w30, _, _ = prepare_windows(
        PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(30, 10), workers=1), progress=False
    )
    w60, _, _ = prepare_windows(
        PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(60, 10), workers=1), progress=False
    )
    assert w30.xy_agent.shape[1] == 30 and len(w30) > len(w60)


def _with_bad_scenarios(synth_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "mixed"
    shutil.copytree(synth_dir, root)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    truncated = next(folders[0].glob("scenario_*.parquet"))
    truncated.write_bytes(truncated.read_bytes()[:500])
    bad_map = next(folders[1].glob("log_map_archive_*.json"))
    bad_map.unlink()
    return root, [folders[0].name, folders[1].name]


def test_bad_input_stops_with_file_named(synth_dir: Path, tmp_path: Path) -> None:
    root, bad = _with_bad_scenarios(synth_dir, tmp_path)
    out = tmp_path / "t.parquet"
    with pytest.raises(DataError, match=rf"{bad[0]}.*not a readable parquet file.*--skip-bad"):
        prepare_table(PrepareConfig(av2_dirs=(str(root),), workers=1), out, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob(".t.parquet*"))


def test_skip_bad_reports_which(synth_dir: Path, tmp_path: Path) -> None:
    root, bad = _with_bad_scenarios(synth_dir, tmp_path)
    report = prepare_table(
        PrepareConfig(av2_dirs=(str(root),), workers=2, skip_bad=True), tmp_path / "t.parquet", progress=False
    )
    assert len(report.skipped) == 2
    assert bad[0] in report.skipped[0][0] and "not a readable parquet" in report.skipped[0][1]
    assert bad[1] in report.skipped[1][0] and "map file missing" in report.skipped[1][1]
    assert read_table(tmp_path / "t.parquet").manifest["skipped"][1]["reason"] == report.skipped[1][1]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        PrepareConfig()
    with pytest.raises(ConfigError, match=r"num_steps \(--steps\) must be in \[2, 10000\], got 1"):
        WindowConfig(num_steps=1)


def test_no_window_passes_filters(synth_dir: Path, tmp_path: Path) -> None:
    config = PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(min_speed_mps=999.0), workers=1)
    with pytest.raises(DataError, match="no windows of 60 steps passed the filters in 24 input"):
        prepare_table(config, tmp_path / "t.parquet", progress=False)
    assert not (tmp_path / "t.parquet").exists()
