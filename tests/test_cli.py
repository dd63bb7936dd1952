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


@pytest.mark.slow
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
    from trajemb.data.store import read_table

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
            "--steps must be in [2, 10000], got 1",
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


@pytest.mark.slow
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


# -- issue 17: lists out, trajemb mine, drawn queries ------------------------------------------------
def bundle_state(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.slow
def test_search_writes_its_neighbours_and_collapses_duplicates(plain_bundle: Path, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from trajemb.analysis.bundle import Bundle
    from trajemb.serving.explore import NeighborOptions, search_row

    bundle = Bundle(plain_bundle)
    query = bundle.strings("window_id", [25])[0]
    before = bundle_state(plain_bundle)
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"n{suffix}"
        r = run("search", "--bundle", str(plain_bundle), "--query", query, "--k", "6", "--out", str(out))
        assert r.returncode == 0, r.stderr
        frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        nb = search_row(bundle, bundle.model_names[0], 25, NeighborOptions(k=6, object_types=("vehicle",)))
        assert frame["window_id"].tolist() == bundle.strings("window_id", nb.rows)
        assert set(frame["query_window_id"]) == {query}
    out = tmp_path / "collapsed.csv"
    r = run(
        "search",
        "--bundle",
        str(plain_bundle),
        "--query",
        query,
        "--k",
        "6",
        "--collapse-duplicates",
        "0.3",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    rows = [bundle.row(i) for i in pd.read_csv(out)["window_id"]]
    emb = np.asarray(bundle.embeddings(bundle.model_names[0]).all(), dtype=np.float64)[rows]
    assert (np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1)) + 1e9 * np.eye(len(rows))).min() >= 0.3
    r = run("search", "--bundle", str(plain_bundle), "--draw", "0,0 25,0 40,8", "--k", "4", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["neighbors"]) == 4, r.stderr
    assert bundle_state(plain_bundle) == before


@pytest.mark.slow
def test_mine_rare_and_duplicates_write_their_lists(plain_bundle: Path, tmp_path: Path) -> None:
    import pandas as pd

    from trajemb.analysis.bundle import Bundle

    bundle = Bundle(plain_bundle)
    before = bundle_state(plain_bundle)
    out = tmp_path / "rare.parquet"
    r = run("mine", "rare", "--bundle", str(plain_bundle), "--top", "7", "--out", str(out))
    assert r.returncode == 0 and "most unique windows" in r.stdout, r.stderr
    rare = pd.read_parquet(out)
    assert len(rare) == 7 and rare["uniqueness"].is_monotonic_decreasing and rare["track_id"].is_unique
    stored = bundle.uniqueness(bundle.model_names[0])
    assert rare["uniqueness"].iloc[0] == pytest.approx(float(stored.max()))
    r = run(
        "mine",
        "rare",
        "--bundle",
        str(plain_bundle),
        "--top",
        "50",
        "--object-types",
        "vehicle",
        "--label",
        "direction=straight,left",
    )
    assert r.returncode == 0, r.stderr
    listed = [line.split()[-1] for line in r.stdout.splitlines()[1:]]
    assert set(bundle.strings("object_type", [bundle.row(i) for i in listed])) == {"vehicle"}
    assert set(bundle.strings("direction", [bundle.row(i) for i in listed])) <= {"straight", "left"}
    groups = tmp_path / "dupes.csv"
    r = run("mine", "duplicates", "--bundle", str(plain_bundle), "--eps", "0.02", "--out", str(groups))
    assert r.returncode == 0 and "near-duplicates among" in r.stdout, r.stderr
    frame = pd.read_csv(groups)
    assert frame["group"].min() == 1 and frame.groupby("group")["representative"].sum().eq(1).all()
    r = run(
        "mine",
        "duplicates",
        "--bundle",
        str(plain_bundle),
        "--eps",
        "0.02",
        "--json",
        "--report-eps",
        "0.01,0.02",
    )
    report = json.loads(r.stdout)
    assert [lv["eps"] for lv in report["levels"]] == [0.01, 0.02]
    assert report["levels"][1]["windows"] == len(frame)
    assert bundle_state(plain_bundle) == before  # nothing written into the bundle


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mine", "duplicates", "--eps", "abc"], "--eps must be a number, got 'abc'"),
        (["mine", "duplicates", "--eps", "0"], "--eps must be in (0, inf), got 0"),
        (["mine", "duplicates", "--eps", "-0.5"], "--eps must be in (0, inf), got -0.5"),
        (["mine", "duplicates", "--eps", "nan"], "--eps must be a finite number"),
        (["mine", "duplicates", "--eps", "0.1", "--out", "{tmp}/d.txt"], "name a .csv or .parquet file"),
        (["mine", "duplicates", "--eps", "0.1", "--out", "{bundle}/d.csv"], "lies inside the input folder"),
        (
            ["mine", "rare", "--object-types", "spaceship", "--out", "{tmp}/r.csv"],
            "object_type spaceship: not in this bundle",
        ),
        (["mine", "rare", "--label", "colour=red"], "--label colour: not a label column"),
        (["mine", "rare", "--label", "direction"], "give COLUMN=VALUE"),
        (["mine", "rare", "--top", "0"], "--top must be in [1, 10000000], got 0"),
        (["mine", "rare", "--model", "nope"], "no model 'nope'"),
        (["search", "--query", "synthetic/x/1/0", "--out", "{tmp}/n.csv"], "is not in this bundle"),
        (["search", "--draw", "3,4 3,4", "--out", "{tmp}/n.csv"], "drawing: fewer than two distinct points"),
        (
            ["search", "--draw", "0,0 500,0", "--out", "{tmp}/n.csv"],
            "faster than any road user (limit 70 m/s",
        ),
        (["search", "--draw", "0,0 x,1"], "--draw: 'x,1' is not a point x,y in metres"),
        (
            ["search", "--draw", "0,0 30,0", "--object-types", "spaceship,vehicle", "--out", "{tmp}/n.csv"],
            "--object-types spaceship: not in this bundle; its types:",
        ),
        (
            ["search", "--draw", "0,0 30,0", "--collapse-duplicates", "big"],
            "--collapse-duplicates must be a number",
        ),
    ],
)
def test_mining_refuses_bad_input_in_one_line(
    plain_bundle: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    before = bundle_state(plain_bundle)
    command = args[:2] if args[0] == "mine" else args[:1]
    rest = [a.format(tmp=tmp_path, bundle=plain_bundle) for a in args[len(command) :]]
    r = run(*command, "--bundle", str(plain_bundle), *rest)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajemb: error: ") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == [] and bundle_state(plain_bundle) == before


def test_a_list_of_window_ids_not_in_the_bundle_is_refused(plain_bundle: Path, tmp_path: Path) -> None:
    from trajemb.analysis.bundle import Bundle
    from trajemb.core.errors import DataError
    from trajemb.serving.explore import rows_from_id_file

    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([*Bundle(plain_bundle).strings("window_id", [0, 1]), "synthetic/a/1/0", "b"]))
    with pytest.raises(
        DataError, match=r"2 of 4 window ids are not in the bundle .*first: 'synthetic/a/1/0', 'b'"
    ):
        rows_from_id_file(Bundle(plain_bundle), ids)
