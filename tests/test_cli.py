"""The command line as a user meets it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trajemb.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trajemb", "-q", *args], capture_output=True, text=True, cwd=cwd
    )


def test_synth_prepare_info(tmp_path: Path) -> None:
    r = run("synth", "--out", str(tmp_path / "s"), "--scenarios", "5", "--seed", "2", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "wrote 5 scenarios" in r.stdout
    r = run("prepare", "--av2", str(tmp_path / "s"), "--out", str(tmp_path / "t.parquet"), "--steps", "30")
    assert r.returncode == 0, r.stderr
    assert "windows from 5 inputs" in r.stdout
    r = run("info", str(tmp_path / "t.parquet"), "--verify")
    assert r.returncode == 0 and "windows of 30 steps" in r.stdout and "source: synthetic" in r.stdout
    r = run("info", str(tmp_path / "t.parquet"), "--json")
    assert json.loads(r.stdout)["window_config"]["num_steps"] == 30


def test_paper_preset(mf_dir: Path, tmp_path: Path) -> None:
    assert (
        main(
            ["-q", "prepare", "--av2", str(mf_dir), "--out", str(tmp_path / "p.parquet"), "--preset", "paper"]
        )
        == 0
    )
    from trajemb.store import read_table

    table = read_table(tmp_path / "p.parquet")
    assert len(table) == 1 and table.meta["category"].tolist() == ["focal"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "--av2", "{tmp}/missing", "--out", "{tmp}/t.parquet"], "missing: no such folder"),
        (["prepare", "--av2", "{tmp}", "--out", "{tmp}/t.parquet"], "it lies inside the input folder"),
        (["prepare", "--out", "{tmp}/t.parquet"], "give at least one --av2 or --sensor-logs folder"),
        (
            ["prepare", "--av2", "{tmp}", "--out", "{tmp}/t.parquet", "--steps", "1"],
            "num_steps (--steps) must be in [2, 10000], got 1",
        ),
        (["info", "{tmp}/nope.parquet"], "trajectory table not found"),
        (["synth", "--out", "{tmp}/s", "--scenarios", "0"], "--scenarios must be in [1, 10000000], got 0"),
    ],
)
def test_expected_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = run(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajemb: error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_bad_scenario_then_skip_bad(synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_dir, root)
    bad = sorted(root.glob("*/scenario_*.parquet"))[3]
    bad.write_bytes(b"PAR1 not really")
    out = tmp_path / "t.parquet"
    r = run("prepare", "--av2", str(root), "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert bad.name in r.stderr and "--skip-bad" in r.stderr
    assert not out.exists()
    r = run("prepare", "--av2", str(root), "--out", str(out), "--skip-bad")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 bad input(s):" in r.stdout and bad.name in r.stdout
    assert out.exists()
