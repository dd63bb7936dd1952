"""``trajemb forecast`` as a user meets it: the JSON it prints and writes, and bad input refused in one
line with exit status 2 and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trajemb.analysis.forecast_command import ForecastCommand
from trajemb.core.errors import ConfigError
from trajemb.data.store import METADATA_KEY

KEYS = ["minADE6", "minFDE6", "MR6", "brier_minFDE6", "queries"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trajemb", "-q", "forecast", *args], capture_output=True, text=True
    )


@pytest.mark.slow
def test_json_scores_printed_and_written(history_bundle: Path, synth_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    r = run("--bank", str(history_bundle), "--queries", str(synth_table), "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert json.loads(out.read_text()) == printed
    methods = list(printed)
    assert methods[1:] == ["knn_raw", "constant_velocity", "constant_acceleration"]
    assert methods[0].startswith("retrieval_")
    for scores in printed.values():
        assert list(scores) == KEYS and scores["queries"] > 100
    # A scores file trajemb wrote is replaced; the Markdown table goes to stdout without --json.
    r = run("--bank", str(history_bundle), "--queries", str(synth_table), "--k", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("| method | minADE3 | minFDE3 | MR3 | brier_minFDE3 | queries |")
    assert list(json.loads(out.read_text())["knn_raw"]) == [
        "minADE3",
        "minFDE3",
        "MR3",
        "brier_minFDE3",
        "queries",
    ]


def relabelled(table: Path, out: Path, **window_config: object) -> Path:
    """``table`` with its manifest's window config changed (the content hash does not cover it)."""
    data = pq.read_table(table)
    manifest = json.loads(pq.read_metadata(table).metadata[METADATA_KEY])
    manifest["window_config"] = {**(manifest.get("window_config") or {}), **window_config}
    pq.write_table(data.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), out)
    return out


@pytest.fixture(scope="module")
def short_tables(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from trajemb.data.prepare import PrepareConfig, prepare_table
    from trajemb.data.schema import WindowConfig

    root = tmp_path_factory.mktemp("short")
    tables = {}
    for steps in (20, 40):
        tables[steps] = root / f"t{steps}.parquet"
        config = PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(num_steps=steps), workers=1)
        prepare_table(config, tables[steps], progress=False)
    return tables


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("shorter", [], "windows of 20 steps are shorter than --history-steps 30 + 1 step of future"),
        ("length", [], "windows of 40 steps, but the bank"),
        ("rate", [], "windows at 20 Hz, but the bank"),
        ("bank_k", ["--k", "5"], "--k 5 is above the bank's 4 tracks (one future per track); lower --k"),
        ("k_range", ["--k", "0"], "--k must be in [1, 1000], got 0"),
        ("history", ["--history-steps", "60"], "--history-steps 60 does not fit 60-step bank windows"),
        ("history_low", ["--history-steps", "1"], "--history-steps must be in [2, 9999], got 1"),
        ("no_bank", [], "not a trajemb bundle"),
        ("bank_rate", [], "bank/bundle.json: the window config has an invalid step rate 0"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(
    case: str,
    extra: list[str],
    message: str,
    history_bundle: Path,
    analytic_bank_dir: Path,
    synth_table: Path,
    short_tables: dict[int, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process (the command line's own path, without a start-up per case; the first test runs
    ``trajemb forecast`` as a process)."""
    from trajemb.cli import main

    bank, queries = history_bundle, synth_table
    if case == "shorter":
        queries = short_tables[20]
    elif case == "length":
        queries = short_tables[40]
    elif case == "rate":
        queries = relabelled(synth_table, tmp_path / "rate.parquet", step_hz=20)
    elif case == "bank_k":
        bank = analytic_bank_dir
    elif case == "no_bank":
        bank = tmp_path
    elif case == "bank_rate":  # a bank whose manifest records a step rate no table has (it named no file)
        import json
        import shutil

        bank = tmp_path / "bank"
        shutil.copytree(history_bundle, bank)
        manifest = json.loads((bank / "bundle.json").read_text())
        manifest["table_window_config"] = {**manifest["table_window_config"], "step_hz": 0}
        (bank / "bundle.json").write_text(json.dumps(manifest))
    out = tmp_path / "scores.json"
    capsys.readouterr()
    status = main(
        ["-q", "forecast", "--bank", str(bank), "--queries", str(queries), "--out", str(out), *extra]
    )
    printed = capsys.readouterr()
    assert status == 2, printed.out + printed.err
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajemb: error: ") and message in lines[0], printed.err
    assert not out.exists() and printed.out == ""


def test_out_never_replaces_a_file_trajemb_did_not_write(
    history_bundle: Path, synth_table: Path, tmp_path: Path
) -> None:
    out = tmp_path / "notes.json"
    out.write_text('{"my": "notes"}')
    r = run("--bank", str(history_bundle), "--queries", str(synth_table), "--out", str(out))
    assert r.returncode == 2 and "is not a forecast scores file written by trajemb" in r.stderr
    assert out.read_text() == '{"my": "notes"}'


def test_command_config_is_validated() -> None:
    ForecastCommand(bank="b", queries="q")
    for bad in (
        {"bank": ""},
        {"queries": " "},
        {"k": 0},
        {"history_steps": 1},
        {"alignment": "x"},
        {"out": ""},
    ):
        with pytest.raises(ConfigError):
            ForecastCommand(**{"bank": "b", "queries": "q", **bad})  # type: ignore[arg-type]
