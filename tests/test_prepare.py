"""prepare: real + synthetic inputs into one table, parallel == serial, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trajemb.core.errors import ConfigError, DataError
from trajemb.data.prepare import PrepareConfig, prepare_table, prepare_windows
from trajemb.data.schema import WindowConfig
from trajemb.data.store import read_table


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
    with pytest.raises(ConfigError, match=r"num_steps must be in \[2, 10000\], got 1"):
        WindowConfig(num_steps=1)


def test_no_window_passes_filters(synth_dir: Path, tmp_path: Path) -> None:
    config = PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(min_speed_mps=999.0), workers=1)
    with pytest.raises(DataError, match="no windows of 60 steps passed the filters in 24 input"):
        prepare_table(config, tmp_path / "t.parquet", progress=False)
    assert not (tmp_path / "t.parquet").exists()


def test_source_is_decided_per_scenario(mf_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Synthetic scenarios below a root of real data are labelled synthetic: by the synth marker above
    them, and by their own metadata when copied out alone."""
    root = tmp_path / "mixed"
    shutil.copytree(mf_dir, root)
    shutil.copytree(synth_dir, root / "synth")  # with its trajemb_synth.json marker
    lone = sorted(p for p in synth_dir.iterdir() if p.is_dir())[0]
    shutil.copytree(lone, root / "copied" / lone.name)  # no marker anywhere above it
    windows, jobs, _ = prepare_windows(PrepareConfig(av2_dirs=(str(root),), workers=1), progress=False)
    by_scenario = dict(zip(windows.scenario_id.tolist(), windows.source.tolist(), strict=True))
    real = next(p.name for p in mf_dir.iterdir() if p.is_dir())
    assert by_scenario.pop(real) == "av2_motion"
    assert set(by_scenario.values()) == {"synthetic"} and lone.name in by_scenario
    assert len(jobs) == 1 + 24 + 1


def test_hidden_and_temporary_folders_are_skipped(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folders = sorted(p for p in synth_dir.iterdir() if p.is_dir())
    shutil.copytree(folders[0], root / folders[0].name)
    # What an interrupted `trajemb synth` leaves beside its output, and other half-made folders.
    for hidden in (".s.1234.host.0123abcd.tmp", ".git", "partial.tmp"):
        shutil.copytree(folders[1], root / hidden / folders[1].name)
    _, jobs, _ = prepare_windows(PrepareConfig(av2_dirs=(str(root),), workers=1), progress=False)
    assert [j.path.parent.name for j in jobs] == [folders[0].name]


def test_unexpected_worker_error_is_a_bad_input(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trajemb.data.prepare as prepare_module

    real_cut = prepare_module.cut_job
    victim = sorted(synth_dir.glob("*/scenario_*.parquet"))[2]

    def cut_or_crash(job: prepare_module.Job, *args: object) -> object:
        if job.path == victim:
            raise ZeroDivisionError("a bug met on one input")
        return real_cut(job, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module, "cut_job", cut_or_crash)
    with pytest.raises(DataError, match=r"unexpected ZeroDivisionError while reading it.*--skip-bad"):
        prepare_table(
            PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), tmp_path / "t.parquet", progress=False
        )
    config = PrepareConfig(av2_dirs=(str(synth_dir),), workers=1, skip_bad=True)
    report = prepare_table(config, tmp_path / "t.parquet", progress=False)
    assert [p for p, _ in report.skipped] == [str(victim)]


def test_output_checks_come_first(synth_dir: Path, tmp_path: Path) -> None:
    """A refused --out is reported before a single scenario is read (and nothing is written)."""
    (tmp_path / "t.parquet").write_text("someone's notes")
    with pytest.raises(DataError, match="not a trajectory table written by trajemb"):
        prepare_table(
            PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), tmp_path / "t.parquet", progress=False
        )
    assert (tmp_path / "t.parquet").read_text() == "someone's notes"
    # An earlier table of ours is replaced.
    prepare_table(
        PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), tmp_path / "u.parquet", progress=False
    )
    prepare_table(
        PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), tmp_path / "u.parquet", progress=False
    )


def test_labelling_error_is_that_inputs_alone(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs of a chunk are labelled together; an error there is still the one input's error, and
    the other inputs' windows are those of a run without it."""
    import trajemb.data.prepare as prepare_module

    real_label = prepare_module.with_map_directions_many
    victim = sorted(synth_dir.glob("*/scenario_*.parquet"))[2]
    victim_id = victim.stem.removeprefix("scenario_")

    def label_or_crash(inputs: list[tuple[Any, Any, Any]]) -> object:
        if any(tracks.scenario_id == victim_id for _, tracks, _ in inputs):
            raise ZeroDivisionError("a bug met labelling one input")
        return real_label(inputs)

    monkeypatch.setattr(prepare_module, "with_map_directions_many", label_or_crash)
    config = PrepareConfig(av2_dirs=(str(synth_dir),), workers=1, skip_bad=True)
    windows, _, skipped = prepare_windows(config, progress=False)
    assert skipped == [
        (
            str(victim),
            f"{victim}: unexpected ZeroDivisionError while reading it: a bug met labelling one input",
        )
    ]
    monkeypatch.undo()
    others = tuple(str(p) for p in sorted(synth_dir.glob("*/scenario_*.parquet")) if p != victim)
    expected, _, _ = prepare_windows(PrepareConfig(av2_dirs=others, workers=1), progress=False)
    assert len(windows) == len(expected) > 0
    for name in type(windows).__dataclass_fields__:
        np.testing.assert_array_equal(getattr(windows, name), getattr(expected, name), err_msg=name)
