"""``trajemb realism`` as a user meets it: generators side by side against the real fixtures, the files
it writes, and bad input refused in one line before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trajemb.analysis.realism import FEATURE_NAMES
from trajemb.analysis.realism_report import RealismConfig
from trajemb.cli import main
from trajemb.core.errors import ConfigError
from trajemb.data.prepare import PrepareConfig, prepare_table, prepare_windows
from trajemb.data.schema import WindowConfig
from trajemb.data.store import METADATA_KEY, write_table


@pytest.fixture(scope="module")
def real_table(av2_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "real.parquet"
    config = PrepareConfig(
        av2_dirs=(str(av2_fixtures / "motion_forecasting"),),
        sensor_log_dirs=(str(av2_fixtures / "sensor_logs"),),
        workers=1,
    )
    prepare_table(config, out, progress=False)
    return out


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trajemb", "-q", *args], capture_output=True, text=True)


def test_generators_side_by_side(
    real_table: Path,
    synth_table: Path,
    synth_v2_table: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "report"
    args = ["-q", "realism", "--synthetic", f"a={synth_table}", "--synthetic", f"b={synth_v2_table}"]
    args += ["--real", str(real_table), "--out", str(out), "--bootstrap", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| feature | real median (p10-p90) | W1/std a | W1/std b | KS a | KS b | floor |" in printed
    report = json.loads((out / "realism.json").read_text())
    assert report["kind"] == "trajemb realism report"
    assert set(report["features"]) == {"bus", "pedestrian", "vehicle"}  # what moves in the real fixtures
    vehicle = report["features"]["vehicle"]
    assert set(vehicle) == set(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        assert vehicle[name]["real"]["samples"] > 0
        assert vehicle[name]["a"]["samples"] > 0 and vehicle[name]["b"]["samples"] > 0
    # Generator 1 (a) had no tracker noise model: its step-to-step jitter is centimetres of white noise
    # where real tracks have millimetres; the calibrated generator (b) is far closer.
    assert vehicle["jitter_m"]["b"]["w1_over_std"] < vehicle["jitter_m"]["a"]["w1_over_std"] / 5
    assert report["tables"]["real"]["moving"]["vehicle"] == 659
    assert report["maps"]["real"]["maps"] == 5
    assert report["maps"]["a"]["mean"]["centerline_in_drivable"] < 0.95  # generator 1's corner cuts
    assert report["maps"]["b"]["worst"]["centerline_in_drivable"] == 1.0
    transfer = report["transfer"]
    assert list(transfer["banks"]) == ["real", "a", "b", "constant velocity"]
    assert transfer["banks"]["real"]["ratio"] == 1.0
    assert transfer["banks"]["b"]["windows"] == report["tables"]["b"]["windows"]
    assert transfer["queries"] == report["tables"]["real"]["windows"]
    assert "| bank | windows | minADE6 | minFDE6 | MR6 | ratio to real |" in printed
    assert (out / "realism.md").read_text().startswith("### bus")
    assert {p.name for p in out.glob("*.png")} == {
        "realism_bus.png",
        "realism_pedestrian.png",
        "realism_vehicle.png",
    }
    # An earlier report is replaced; a folder trajemb did not write is not.
    assert main([*args[:-2], "--no-transfer", "--no-maps", "--object-types", "vehicle"]) == 0
    assert not (out / "realism_bus.png").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    r = run("realism", "--synthetic", str(synth_table), "--real", str(real_table), "--out", str(foreign))
    assert r.returncode == 2 and "non-empty folder that trajemb did not write" in r.stderr
    assert (foreign / "notes.txt").read_text() == "keep"


def _table(tmp_path: Path, fixtures: Path, name: str, window: WindowConfig, extra: dict[str, object]) -> Path:
    windows, _, _ = prepare_windows(
        PrepareConfig(av2_dirs=(str(fixtures / "motion_forecasting"),), window=window, workers=1),
        progress=False,
    )
    path = tmp_path / name
    write_table(windows, path, {"window_config": {**asdict(window), **extra}})
    return path


def _emptied(table: Path, out: Path) -> Path:
    """``table`` with its rows dropped and a manifest that says so (trajemb never writes such a table)."""
    data = pq.read_table(table)
    manifest = json.loads(pq.read_metadata(table).metadata[METADATA_KEY])
    with pq.ParquetWriter(out, data.schema) as writer:
        writer.write_table(data.slice(0, 0))
        writer.add_key_value_metadata({METADATA_KEY: json.dumps({**manifest, "num_windows": 0}).encode()})
    return out


def test_bad_input_is_one_line(
    real_table: Path,
    synth_table: Path,
    av2_fixtures: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    short = _table(tmp_path, av2_fixtures, "short.parquet", WindowConfig(num_steps=30), {})
    fast = _table(tmp_path, av2_fixtures, "fast.parquet", WindowConfig(), {"step_hz": 20.0})
    empty = _emptied(real_table, tmp_path / "empty.parquet")
    cases = [
        (["--synthetic", str(synth_table), "--real", str(short)], "prepare both with the same --steps"),
        (["--synthetic", str(fast), "--real", str(real_table)], "prepare both at the same step rate"),
        (
            ["--synthetic", str(synth_table), "--real", str(empty)],
            "empty.parquet: the table holds no windows",
        ),
        (
            ["--synthetic", str(synth_table), "--real", str(real_table), "--object-types", "cyclist"],
            "has no moving windows of type 'cyclist'",
        ),
        (
            ["--synthetic", str(synth_table), "--real", str(tmp_path / "nope.parquet")],
            "trajectory table not found",
        ),
        (
            ["--synthetic", f"x={synth_table}", "--synthetic", f"x={synth_table}", "--real", str(real_table)],
            "distinct names",
        ),
    ]
    capsys.readouterr()
    for args, message in cases:  # in this process: the command line's own path, without a start-up each
        assert main(["-q", "realism", *args, "--out", str(tmp_path / "out")]) == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trajemb: error: ") and message in lines[0], err
        assert not (tmp_path / "out").exists()


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="at least one --synthetic"):
        RealismConfig(synthetic=(), real="r.parquet")
    with pytest.raises(ConfigError, match="unknown object type"):
        RealismConfig(synthetic=("s.parquet",), real="r.parquet", object_types=("tram",))
    with pytest.raises(ConfigError, match="--bootstrap"):
        RealismConfig(synthetic=("s.parquet",), real="r.parquet", bootstrap=-1)
    with pytest.raises(ConfigError, match="other than 'real'"):
        RealismConfig(synthetic=("real=s.parquet",), real="r.parquet")
    assert RealismConfig(synthetic=("dir/v2.parquet", "old=dir/v1.parquet"), real="r").synthetic_tables == [
        ("v2", "dir/v2.parquet"),
        ("old", "dir/v1.parquet"),
    ]
