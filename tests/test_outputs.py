"""--out decisions: replace only trajemb's own artefacts of the same kind; refuse everything else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trajemb.core.errors import ConfigError, DataError
from trajemb.core.outputs import (
    RUN_KIND,
    RUN_MARKER,
    SYNTH_GENERATOR,
    SYNTH_MARKER,
    artefact_kind,
    check_cache_dir,
    check_output_dir,
    check_output_file,
)


def make_synth(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / SYNTH_MARKER).write_text(json.dumps({"generator": SYNTH_GENERATOR}))
    return path


def make_bundle(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "bundle.json").write_text(json.dumps({"format": "trajemb-bundle/1"}))
    return path


def make_run(path: Path, marker: bool = True) -> Path:
    (path / "last").mkdir(parents=True)
    (path / "metrics.csv").write_text("epoch\n1\n")
    (path / "train_config.json").write_text("{}")
    (path / "last" / "card.json").write_text(json.dumps({"format": "trajemb-checkpoint/1"}))
    if marker:
        (path / RUN_MARKER).write_text(json.dumps({"kind": RUN_KIND}))
    return path


def test_recognises_its_own_artefacts(tmp_path: Path, synth_table: Path) -> None:
    assert artefact_kind(make_synth(tmp_path / "s")) == "synth"
    assert artefact_kind(make_bundle(tmp_path / "b")) == "bundle"
    assert artefact_kind(make_run(tmp_path / "r")) == "run"
    assert artefact_kind(make_run(tmp_path / "legacy", marker=False)) == "run"
    assert artefact_kind(synth_table) == "table"
    (tmp_path / "plain.parquet").write_bytes(b"PAR1xxxxPAR1")
    assert artefact_kind(tmp_path / "plain.parquet") is None
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / SYNTH_MARKER).write_text('{"generator": "someone else"}')
    assert artefact_kind(tmp_path / "fake") is None


def test_recognises_forecast_scores(tmp_path: Path) -> None:
    scores = {"minADE6": 1.0, "minFDE6": 2.0, "MR6": 0.3, "brier_minFDE6": 2.5, "queries": 10}
    cases = {
        "ours.json": {"knn_raw": scores, "constant_velocity": scores},
        "k3.json": {"knn_raw": {k.replace("6", "3"): v for k, v in scores.items()}},
        "extra.json": {"knn_raw": {**scores, "note": 1}},
        "missing.json": {"knn_raw": {k: v for k, v in scores.items() if k != "MR6"}},
        "empty.json": {},
        "flat.json": scores,
    }
    for name, data in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
    kinds = {name: artefact_kind(tmp_path / name) for name in cases}
    assert kinds == {
        "ours.json": "forecast",
        "k3.json": "forecast",
        "extra.json": None,
        "missing.json": None,
        "empty.json": None,
        "flat.json": None,
    }
    check_output_file(tmp_path / "ours.json", "forecast")
    with pytest.raises(DataError, match="is not a forecast scores file written by trajemb"):
        check_output_file(tmp_path / "extra.json", "forecast")


def test_allowed(tmp_path: Path, synth_table: Path) -> None:
    check_output_dir(tmp_path / "new" / "deeper", "bundle")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "synth")
    check_output_dir(make_synth(tmp_path / "s"), "synth")
    check_output_dir(make_bundle(tmp_path / "b"), "bundle")
    check_output_dir(make_run(tmp_path / "r"), "run")
    check_output_file(tmp_path / "t.parquet", "table", inputs=[tmp_path / "s"])
    check_output_file(synth_table, "table")


@pytest.mark.parametrize(
    ("setup", "kind", "message"),
    [
        ("foreign_dir", "synth", "non-empty folder that trajemb did not write"),
        ("foreign_dir", "bundle", "non-empty folder that trajemb did not write"),
        ("bundle", "synth", "holds a bundle, not a synthetic-scenario folder"),
        ("run", "bundle", "holds a training run folder, not a bundle"),
        ("file", "synth", "it is a file, not a folder"),
        ("fifo", "synth", "device, FIFO or socket"),
        ("link", "bundle", "symbolic link"),
        ("under_file", "bundle", "is not a folder"),
    ],
)
def test_refused_dirs(tmp_path: Path, setup: str, kind: str, message: str) -> None:
    out = tmp_path / "out"
    if setup == "foreign_dir":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    elif setup == "bundle":
        make_bundle(out)
    elif setup == "run":
        make_run(out)
    elif setup == "file":
        out.write_text("x")
    elif setup == "fifo":
        os.mkfifo(out)
    elif setup == "link":
        make_bundle(tmp_path / "real")
        out.symlink_to(tmp_path / "real")
    elif setup == "under_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match=f"refusing to write .* to {out}: .*{message}.*; "):
        check_output_dir(out, kind)  # type: ignore[arg-type]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("dir", "it is a folder; give a file path"),
        ("foreign", "not a trajectory table written by trajemb"),
        ("fifo", "device, FIFO or socket"),
        ("input", "it is the input"),
        ("inside_input", "inside the input folder"),
    ],
)
def test_refused_files(tmp_path: Path, setup: str, message: str) -> None:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    scenario = data / "a" / "scenario_a.parquet"
    scenario.write_bytes(b"PAR1")
    out, inputs = tmp_path / "t.parquet", [data]
    if setup == "dir":
        out.mkdir()
    elif setup == "foreign":
        out.write_text("precious")
    elif setup == "fifo":
        os.mkfifo(out)
    elif setup == "input":
        out, inputs = scenario, [scenario]
    elif setup == "inside_input":
        out = data / "t.parquet"
    with pytest.raises(DataError, match=message):
        check_output_file(out, "table", inputs)


def test_refuses_protected_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out, message in (
        (".", "the current folder"),
        ("", "must name a path"),
        (str(home), "your home folder"),
        ("..", "a folder above the current folder"),
        ("/", "a folder above"),
    ):
        with pytest.raises((DataError, ConfigError), match=message):
            check_output_dir(out, "synth")
    check_output_dir("new", "synth")


def test_output_containing_an_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="it contains the input"):
        check_output_dir(tmp_path, "bundle", inputs=[tmp_path / "sub" / "table.parquet"])


def test_cache_dir(tmp_path: Path) -> None:
    check_cache_dir(tmp_path / "maps", "--maps-dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"--maps-dir .* is not a folder"):
        check_cache_dir(tmp_path / "file", "--maps-dir")
    with pytest.raises(DataError, match="overlaps the input"):
        check_cache_dir(tmp_path / "data" / "maps", "--maps-dir", inputs=[tmp_path / "data"])


def test_unwritable_parent_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only place (root ignores permission bits, so the check is simulated)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(DataError, match=f"the folder {tmp_path} is not writable"):
        check_output_file(tmp_path / "t.parquet", "table")
    with pytest.raises(DataError, match="cannot be created under"):
        check_cache_dir(tmp_path / "maps", "--maps-dir")


def test_a_large_bundle_is_still_recognised_as_one(tmp_path: Path) -> None:
    """A bundle's manifest lists every map (about 200 bytes each): one of 20,000 scenarios is 3.5 MB, and
    it may be replaced like any other bundle."""
    big = tmp_path / "big"
    big.mkdir()
    maps = {
        f"maps/{i:06d}.npz": {"size_bytes": 1, "block_bytes": 8 << 20, "blocks": ["0" * 64]}
        for i in range(20_000)
    }
    (big / "bundle.json").write_text(json.dumps({"format": "trajemb-bundle/3", "files": maps}, indent=2))
    assert (big / "bundle.json").stat().st_size > 3 << 20
    assert artefact_kind(big) == "bundle"
    check_output_dir(big, "bundle")


def test_leftovers_of_killed_runs_do_not_make_a_folder_foreign(tmp_path: Path) -> None:
    """An empty folder holding only a killed run's hidden temporary and lock file is still empty."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".b.12345.host.0123abcd.tmp").mkdir()
    (out / ".b.trajemb-lock").write_text("{}")
    check_output_dir(out, "synth")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="non-empty folder"):
        check_output_dir(out, "synth")


def test_names_too_long_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is 300 bytes, too long for a file name"):
        check_output_dir(tmp_path / ("é" * 150) / "b", "bundle")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "example"), [("table", "table.parquet"), ("results", "list.csv"), ("forecast", "scores.json")]
)
def test_a_folder_given_for_a_file_is_refused_with_a_name_of_its_kind(
    tmp_path: Path, kind: str, example: str
) -> None:
    """``trajemb forecast --out FOLDER`` suggested ``FOLDER/table.parquet`` for its JSON scores."""
    with pytest.raises(DataError, match=f"it is a folder; give a file path, e.g. {tmp_path}/{example}$"):
        check_output_file(tmp_path, kind, [])  # type: ignore[arg-type]
