"""Hostile inputs over the command line, table-driven: each case exits with status 2 and exactly one
line on stderr (no traceback), and leaves every file under its folder as it was (nothing written,
nothing replaced, no output created)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from trajemb.cli import main
from trajemb.data.store import METADATA_KEY


@dataclass
class Inputs:
    """Session fixtures the cases copy from (never modified in place)."""

    synth_dir: Path
    synth_table: Path
    sensor_dir: Path
    run: Path  # a finished 1-epoch training run (cosine, D=8, width 32)
    bundle: Path  # a complete bundle (both tiny models, evaluated)


@pytest.fixture(scope="module")
def inputs(
    synth_dir: Path, synth_table: Path, sensor_dir: Path, tiny_checkpoints: list[Path], small_bundle: Path
) -> Inputs:
    return Inputs(synth_dir, synth_table, sensor_dir, tiny_checkpoints[0].parent, small_bundle)


# -- building hostile inputs under tmp --------------------------------------------------------------


def scenarios(fx: Inputs, tmp: Path, n: int = 2) -> Path:
    root = tmp / "data"
    for folder in sorted(p for p in fx.synth_dir.iterdir() if p.is_dir())[:n]:
        shutil.copytree(folder, root / folder.name)
    return root


def rewrite_scenario(root: Path, change: Callable[[pa.Table], pa.Table]) -> Path:
    path = sorted(root.glob("*/scenario_*.parquet"))[0]
    pq.write_table(change(pq.read_table(path)), path)
    return path


def set_column(
    table: pa.Table, name: str, values: list[object], type_: pa.DataType | None = None
) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(
        table.schema.get_field_index(name), name, pa.array(values, type=type_ or field.type)
    )


def with_value(table: pa.Table, name: str, row: int, value: object) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    return set_column(table, name, values)


def sensor_log(fx: Inputs, tmp: Path) -> Path:
    src = sorted(p for p in fx.sensor_dir.iterdir() if p.is_dir())[0]
    shutil.copytree(src, tmp / "logs" / src.name)
    return tmp / "logs" / src.name


def run_copy(fx: Inputs, tmp: Path) -> Path:
    shutil.copytree(fx.run, tmp / "run")
    return tmp / "run"


def table_copy(
    fx: Inputs, tmp: Path, manifest_change: Callable[[dict[str, object]], None] | None = None
) -> Path:
    path = tmp / "table.parquet"
    if manifest_change is None:
        shutil.copyfile(fx.synth_table, path)
        return path
    table = pq.read_table(fx.synth_table)
    manifest = json.loads(pq.read_metadata(fx.synth_table).metadata[METADATA_KEY])
    manifest_change(manifest)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), path)
    return path


TRAIN_FLAGS = [
    "--similarity",
    "cosine",
    "--embedding-dim",
    "8",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "256",
    "--device",
    "cpu",
    "--val-fraction",
    "0.2",
]


def train_args(fx: Inputs, tmp: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(fx.synth_table), "--out", str(tmp / "run_out"), *TRAIN_FLAGS, *extra]


# -- the cases -----------------------------------------------------------------------------------------

Case = Callable[[Inputs, Path], list[str]]


def prepare(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["prepare", "--av2", str(root), "--out", str(tmp / "t.parquet"), *extra]


def case_null_track_id(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp)
    rewrite_scenario(root, lambda t: with_value(t, "track_id", 3, None))
    return prepare(root, tmp)


def case_huge_num_timestamps(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp)
    rewrite_scenario(root, lambda t: set_column(t, "num_timestamps", [10**12] * t.num_rows))
    return prepare(root, tmp)


def case_track_id_with_path(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp)
    rewrite_scenario(root, lambda t: with_value(t, "track_id", 0, "../../evil"))
    return prepare(root, tmp)


def case_scenario_not_parquet_type(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp)
    rewrite_scenario(
        root,
        lambda t: set_column(t, "timestep", [str(v) for v in t.column("timestep").to_pylist()], pa.string()),
    )
    return prepare(root, tmp)


def case_scenario_fifo(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp, 1)
    path = sorted(root.glob("*/scenario_*.parquet"))[0]
    path.unlink()
    os.mkfifo(path)
    return prepare(root, tmp)


def case_malformed_map_geometry(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp, 1)
    map_path = sorted(root.glob("*/log_map_archive_*.json"))[0]
    m = json.loads(map_path.read_text())
    first = next(iter(m["lane_segments"].values()))
    first["left_lane_boundary"] = [{"x": "a", "y": 1, "z": 0}]
    map_path.write_text(json.dumps(m))
    return prepare(root, tmp, "--maps-dir", str(tmp / "maps"))


def case_maps_dir_is_file(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "maps").write_text("not a folder")
    return prepare(scenarios(fx, tmp, 1), tmp, "--maps-dir", str(tmp / "maps"))


def case_out_is_directory(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "t.parquet").mkdir()
    return prepare(scenarios(fx, tmp, 1), tmp)


def case_out_under_a_file(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "file").write_text("x")
    return ["prepare", "--av2", str(scenarios(fx, tmp, 1)), "--out", str(tmp / "file" / "t.parquet")]


def case_out_is_fifo(fx: Inputs, tmp: Path) -> list[str]:
    os.mkfifo(tmp / "t.parquet")
    return prepare(scenarios(fx, tmp, 1), tmp)


def case_out_is_foreign_file(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "t.parquet").write_text("my notes")
    return prepare(scenarios(fx, tmp, 1), tmp)


def case_out_is_input_file(fx: Inputs, tmp: Path) -> list[str]:
    path = sorted(scenarios(fx, tmp, 1).glob("*/scenario_*.parquet"))[0]
    return ["prepare", "--av2", str(path), "--out", str(path)]


def case_overlapping_inputs(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp)
    return [
        "prepare",
        "--av2",
        str(root),
        "--av2",
        str(next(root.iterdir())),
        "--out",
        str(tmp / "t.parquet"),
    ]


def case_empty_input_folder(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return prepare(tmp / "empty", tmp)


def case_only_hidden_scenarios(fx: Inputs, tmp: Path) -> list[str]:
    root = scenarios(fx, tmp, 1)
    (root / ".partial.123.host.0123abcd.tmp").mkdir()
    for p in list(root.iterdir()):
        if not p.name.startswith("."):
            p.rename(root / ".partial.123.host.0123abcd.tmp" / p.name)
    return prepare(root, tmp)


def case_bad_numbers(flag: str, value: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        return prepare(scenarios(fx, tmp, 1), tmp, flag, value)

    case.__name__ = f"case_prepare_{flag}_{value}"
    return case


def case_sensor_pose_file(content: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        log = sensor_log(fx, tmp)
        poses = log / "city_SE3_egovehicle.feather"
        if content == "empty file":
            poses.write_bytes(b"")
        elif content == "no rows":
            feather.write_feather(feather.read_table(poses).slice(0, 0), poses)
        elif content == "string column":
            t = feather.read_table(poses)
            feather.write_feather(set_column(t, "tx_m", ["1"] * t.num_rows, pa.string()), poses)
        elif content == "missing":
            poses.unlink()
        elif content == "huge timestamps":
            ann = next(log.glob("annotations*.feather"))
            t = feather.read_table(ann)
            feather.write_feather(with_value(t, "timestamp_ns", 0, 2**62), ann)
        return ["prepare", "--sensor-logs", str(tmp / "logs"), "--out", str(tmp / "t.parquet")]

    case.__name__ = f"case_sensor_{content.replace(' ', '_')}"
    return case


def case_synth_out(kind: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        out = tmp / "s"
        if kind == "cwd":
            out = Path(".")
        elif kind == "foreign folder":
            out.mkdir()
            (out / "thesis.tex").write_text("years of work")
        elif kind == "fifo":
            os.mkfifo(out)
        elif kind == "bundle":
            out.mkdir()
            (out / "bundle.json").write_text('{"format": "trajemb-bundle/1"}')
        elif kind == "home":
            out = tmp / "home"
        return ["synth", "--out", str(out), "--scenarios", "2", "--workers", "1"]

    case.__name__ = f"case_synth_out_{kind.replace(' ', '_')}"
    return case


def case_train_flag(*flags: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        return train_args(fx, tmp, *flags)

    case.__name__ = f"case_train_{'_'.join(flags)}"
    return case


def case_train_resume_finished(fx: Inputs, tmp: Path) -> list[str]:
    run = run_copy(fx, tmp)
    return ["train", "--data", str(fx.synth_table), "--out", str(run), *TRAIN_FLAGS, "--resume"]


def case_train_into_existing_run(fx: Inputs, tmp: Path) -> list[str]:
    run = run_copy(fx, tmp)
    return ["train", "--data", str(fx.synth_table), "--out", str(run), *TRAIN_FLAGS]


def case_train_into_foreign_folder(fx: Inputs, tmp: Path) -> list[str]:
    (tmp / "run_out").mkdir()
    (tmp / "run_out" / "notes.txt").write_text("mine")
    return train_args(fx, tmp)


def case_train_resume_malformed_card(fx: Inputs, tmp: Path) -> list[str]:
    run = run_copy(fx, tmp)
    (run / "last" / "card.json").write_text('{"format": "trajemb-checkpoint/1", ')
    return ["train", "--data", str(fx.synth_table), "--out", str(run), *TRAIN_FLAGS, "--resume"]


def case_train_resume_absurd_config(fx: Inputs, tmp: Path) -> list[str]:
    run = run_copy(fx, tmp)
    config = json.loads((run / "last" / "config.json").read_text())
    config.update(d_model=1_000_000, num_heads=4)
    (run / "last" / "config.json").write_text(json.dumps(config))
    return ["train", "--data", str(fx.synth_table), "--out", str(run), *TRAIN_FLAGS, "--resume"]


def case_train_num_steps_disagrees(fx: Inputs, tmp: Path) -> list[str]:
    table = table_copy(fx, tmp, lambda m: m.__setitem__("num_steps", 30))
    return ["train", "--data", str(table), "--out", str(tmp / "run_out"), *TRAIN_FLAGS]


def case_info(kind: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        path = tmp / "table.parquet"
        if kind == "malformed manifest":
            table = pq.read_table(fx.synth_table)
            pq.write_table(table.replace_schema_metadata({METADATA_KEY: b'{"format_version": 2,'}), path)
        elif kind == "manifest list":
            table_copy(fx, tmp)
            table = pq.read_table(path)
            pq.write_table(table.replace_schema_metadata({METADATA_KEY: b"[2]"}), path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "row count":
            table_copy(fx, tmp, lambda m: m.__setitem__("num_windows", 5))
        return ["info", str(path)]

    case.__name__ = f"case_info_{kind.replace(' ', '_')}"
    return case


def case_bundle_checkpoint(kind: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        ckpt = tmp / "ckpt"
        shutil.copytree(fx.run / "best", ckpt)
        if kind == "absurd config":
            config = json.loads((ckpt / "config.json").read_text())
            config.update(d_model=262_144, num_layers=256, num_heads=4)
            (ckpt / "config.json").write_text(json.dumps(config))
        elif kind == "malformed card":
            (ckpt / "card.json").write_text("[1, 2")
        elif kind == "config list":
            (ckpt / "config.json").write_text("[]")
        elif kind == "short max_steps":
            config = json.loads((ckpt / "config.json").read_text())
            config.update(max_steps=10)
            (ckpt / "config.json").write_text(json.dumps(config))
        return ["bundle", "--table", str(fx.synth_table), "--checkpoint", str(ckpt), "--out", str(tmp / "b")]

    case.__name__ = f"case_bundle_{kind.replace(' ', '_')}"
    return case


CASES: list[tuple[Case, str]] = [
    (case_null_track_id, "null values in column(s) track_id"),
    (case_huge_num_timestamps, "num_timestamps 1000000000000 is outside [1, 100000]"),
    (case_track_id_with_path, "track_id '../../evil' cannot be used as a file name"),
    (case_scenario_not_parquet_type, "column timestep has type string, expected integer"),
    (case_scenario_fifo, "not a regular file"),
    (case_malformed_map_geometry, "map does not follow the AV2 map schema"),
    (case_maps_dir_is_file, "exists and is not a folder"),
    (case_out_is_directory, "it is a folder; give a file path"),
    (case_out_under_a_file, "is not a folder"),
    (case_out_is_fifo, "it is a device, FIFO or socket"),
    (case_out_is_foreign_file, "is not a trajectory table written by trajemb"),
    (case_out_is_input_file, "it is the input"),
    (case_overlapping_inputs, "the input folders overlap"),
    (case_empty_input_folder, "no AV2 scenario files"),
    (case_only_hidden_scenarios, "no AV2 scenario files"),
    (case_bad_numbers("--steps", "1000000"), "--steps must be in [2, 10000]"),
    (case_bad_numbers("--stride", "0"), "--stride must be in [1, 10000]"),
    (case_bad_numbers("--min-speed", "nan"), "--min-speed must be a finite number"),
    (case_bad_numbers("--workers", "-1"), "--workers must be in [0, 512]"),
    (case_bad_numbers("--object-types", "car"), "unknown object type(s) 'car'"),
    (case_sensor_pose_file("empty file"), "not a readable feather file"),
    (case_sensor_pose_file("no rows"), "the ego pose file has no rows"),
    (case_sensor_pose_file("string column"), "column tx_m has type string, expected number"),
    (case_sensor_pose_file("missing"), "no city_SE3_egovehicle.feather (ego poses)"),
    (case_sensor_pose_file("huge timestamps"), "more than 100000; timestamps are not in nanoseconds"),
    (case_synth_out("cwd"), "it is the current folder"),
    (case_synth_out("home"), "it is your home folder"),
    (case_synth_out("foreign folder"), "non-empty folder that trajemb did not write"),
    (case_synth_out("fifo"), "device, FIFO or socket"),
    (case_synth_out("bundle"), "it holds a bundle, not a synthetic-scenario folder"),
    (case_train_flag("--val-k", "0"), "--val-k must be in [1, 1000], got 0"),
    (case_train_flag("--val-every", "0"), "--val-every must be in [1, 1000000], got 0"),
    (case_train_flag("--device", "bogus"), "--device 'bogus' is not a device"),
    (case_train_flag("--device", "meta"), "type 'meta' is not supported"),
    (case_train_flag("--lr", "nan"), "--lr must be a finite number, got nan"),
    (case_train_flag("--lr", "inf"), "--lr must be a finite number, got inf"),
    (case_train_flag("--lr", "-1"), "--lr must be in (0, 10], got -1"),
    (case_train_flag("--epochs", "0"), "--epochs must be in [1, 1000000], got 0"),
    (case_train_flag("--batch-size", "1"), "--batch-size must be in [2, 16777216], got 1"),
    (case_train_flag("--warmup", "1.5"), "--warmup must be in (0, 1), got 1.5"),
    (case_train_flag("--margin", "0"), "--margin must be in (0, 4], got 0"),
    (case_train_flag("--threshold", "2"), "--threshold must be in [-1, 1], got 2"),
    (case_train_flag("--dropout", "1"), "dropout must be in [0, 1), got 1"),
    (case_train_flag("--hidden", "1000000"), "--hidden must be in [4, 16384]"),
    (case_train_flag("--hidden", "16384", "--layers", "200"), "parameters, more than"),
    (case_train_flag("--seed", "-1"), "--seed must be in [0, "),
    (case_train_flag("--resume", "--overwrite"), "give one of them"),
    (case_train_flag("--resume"), "nothing to resume"),
    (case_train_resume_finished, "the run already finished its 1 epoch(s); nothing to resume"),
    (case_train_into_existing_run, "already holds a training run (best, last, metrics.csv); pass --resume"),
    (case_train_into_foreign_folder, "non-empty folder that trajemb did not write as a training run folder"),
    (case_train_resume_malformed_card, "the model card is not valid JSON"),
    (case_train_resume_absurd_config, "invalid encoder config"),
    (case_train_num_steps_disagrees, "xy_agent holds 60 steps per window but the manifest says 30"),
    (case_info("malformed manifest"), "the trajemb manifest is not valid JSON"),
    (case_info("manifest list"), "the trajemb manifest must be a JSON object, got list"),
    (case_info("fifo"), "not a regular file"),
    (case_info("folder"), "is a folder, not a trajectory table"),
    (case_info("row count"), "manifest says 5 windows but the file holds"),
    (case_bundle_checkpoint("absurd config"), "invalid encoder config"),
    (case_bundle_checkpoint("malformed card"), "the model card is not valid JSON"),
    (case_bundle_checkpoint("config list"), "the encoder config must be a JSON object, got list"),
    (case_bundle_checkpoint("short max_steps"), "ckpt: its encoder takes at most 10 steps"),
]


# -- round two (issue 23) ------------------------------------------------------------------------------
LONG = "n" * 300  # more than the 255 bytes a file name may have


def case_long_name(command: str, where: str) -> Case:
    """A name over 255 bytes, as the output or as an input, in every command that takes paths."""

    def case(fx: Inputs, tmp: Path) -> list[str]:
        long = str(tmp / LONG)
        table, ckpt = str(fx.synth_table), str(fx.run / "best")
        if command == "synth":
            return ["synth", "--out", long, "--scenarios", "2"]
        if command == "prepare":
            return [
                "prepare",
                "--av2",
                long if where == "in" else str(fx.synth_dir),
                "--out",
                long if where == "out" else str(tmp / "t.parquet"),
            ]
        if command == "train":
            return [
                "train",
                "--data",
                long if where == "in" else table,
                "--out",
                long if where == "out" else str(tmp / "r"),
                *TRAIN_FLAGS,
            ]
        if command == "bundle":
            out = long if where == "out" else str(tmp / "b")
            return ["bundle", "--table", long if where == "in" else table, "--checkpoint", ckpt, "--out", out]
        if command == "info":
            return ["info", "--verify", long]
        if command in ("complete", "evaluate"):
            return [command, "--bundle", long]
        if command == "search":
            return ["search", "--bundle", long, "--query", "x"]
        return ["demo", "--cache", long]

    case.__name__ = f"case_long_name_{command}_{where}"
    return case


def bundle_copy(fx: Inputs, tmp: Path) -> Path:
    shutil.copytree(fx.bundle, tmp / "b")
    return tmp / "b"


def rewrite_with_digest(bundle: Path, key: str, data: bytes) -> None:
    """Replace a bundle file and its digest in the manifest, as a tool that "repairs" bundles would."""
    from trajemb.core.integrity import digest_file

    (bundle / key).write_bytes(data)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"][key] = {**manifest["files"][key], **digest_file(bundle / key).to_dict()}
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def case_evaluate_baselines(kind: str) -> Case:
    def case(fx: Inputs, tmp: Path) -> list[str]:
        bundle = bundle_copy(fx, tmp)
        baselines = json.loads((bundle / "baselines.json").read_text())
        if kind == "list":
            baselines = [1, 2]
        elif kind == "report is a number":
            baselines["random"] = 5
        elif kind == "metric is text":
            baselines["random"]["minADE@1"] = "0.5 m"
        elif kind == "ks not numbers":
            baselines["random"]["ks"] = ["one"]
        rewrite_with_digest(bundle, "baselines.json", json.dumps(baselines).encode())
        return ["evaluate", "--bundle", str(bundle)]

    case.__name__ = f"case_evaluate_baselines_{kind.replace(' ', '_')}"
    return case


def case_absurd_block_size(fx: Inputs, tmp: Path) -> list[str]:
    bundle = bundle_copy(fx, tmp)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["files"]["windows/xy_agent.npy"].update(block_bytes=1 << 50, blocks=["0" * 64])
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return ["search", "--bundle", str(bundle), "--query", "x"]


def case_labels_edited(command: str) -> Case:
    """The direction labels of a table edited after prepare wrote it (its manifest and hash kept)."""

    def case(fx: Inputs, tmp: Path) -> list[str]:
        table = pq.read_table(fx.synth_table)
        direction = table.column("direction").cast(pa.string()).to_pylist()
        edited = ["right" if d == "left" else "left" if d == "right" else d for d in direction]
        i = table.schema.get_field_index("direction")
        table = table.set_column(i, "direction", pa.array(edited).dictionary_encode())
        table = table.replace_schema_metadata(pq.read_metadata(fx.synth_table).metadata)
        path = tmp / "table.parquet"
        pq.write_table(table, path)
        if command == "info":
            return ["info", "--verify", str(path)]
        return ["bundle", "--table", str(path), "--checkpoint", str(fx.run / "best"), "--out", str(tmp / "b")]

    case.__name__ = f"case_labels_edited_{command}"
    return case


def case_train_after_failed_first_epoch(flag: str) -> Case:
    """A first epoch that wrote best/ and then failed (before last/): no hint sends one round in a circle."""

    def case(fx: Inputs, tmp: Path) -> list[str]:
        run = run_copy(fx, tmp)
        shutil.rmtree(run / "last")
        (run / "metrics.csv").unlink()
        return [
            "train",
            "--data",
            str(fx.synth_table),
            "--out",
            str(run),
            *TRAIN_FLAGS,
            *([flag] if flag else []),
        ]

    case.__name__ = f"case_train_after_failed_first_epoch{flag.replace('-', '_')}"
    return case


CASES += [
    *[
        (case_long_name(command, where), "too long")
        for command, where in [
            ("synth", "out"),
            ("prepare", "out"),
            ("prepare", "in"),
            ("train", "out"),
            ("train", "in"),
            ("bundle", "out"),
            ("bundle", "in"),
            ("info", "in"),
            ("complete", "in"),
            ("evaluate", "in"),
            ("search", "in"),
            ("demo", "out"),
        ]
    ],
    (case_evaluate_baselines("list"), "must be a JSON object, got list"),
    (case_evaluate_baselines("report is a number"), "malformed evaluation report"),
    (case_evaluate_baselines("metric is text"), "malformed evaluation report (field 'minADE@1' is '0.5 m')"),
    (case_evaluate_baselines("ks not numbers"), "malformed evaluation report (field 'ks'"),
    (case_absurd_block_size, "malformed file digest in the manifest"),
    (case_labels_edited("info"), "content hash mismatch"),
    (case_labels_edited("bundle"), "content does not match the hash in its own manifest"),
    (
        case_train_after_failed_first_epoch(""),
        "it cannot be continued (no last/train_state.pt): pass --overwrite",
    ),
    (
        case_train_after_failed_first_epoch("--resume"),
        "nothing to resume (no train_state.pt); start afresh with --overwrite",
    ),
]


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``root``: (mode, size, content hash of regular files); links not followed."""
    state: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            state[str(path.relative_to(root))] = (st.st_mode, st.st_size if digest else 0, digest)
    return state


@pytest.mark.parametrize(
    ("make_case", "message"), CASES, ids=[c.__name__.removeprefix("case_") for c, _ in CASES]
)
def test_hostile_input_is_one_line_and_touches_nothing(
    inputs: Inputs,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_case: Case,
    message: str,
) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("# the user's")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # av2's map API imports matplotlib, whose own font cache would land in this fake home: not ours.
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("mpl")))
    monkeypatch.chdir(tmp_path)
    args = make_case(inputs, tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajemb: error: "), err
    assert message in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_skip_bad_goes_past_what_used_to_abort_it(inputs: Inputs, tmp_path: Path) -> None:
    """A null track_id, an unparsable map and a FIFO are reported as bad inputs under --skip-bad."""
    root = scenarios(inputs, tmp_path, 4)
    rewrite_scenario(root, lambda t: with_value(t, "track_id", 3, None))
    folders = sorted(p for p in root.iterdir())
    map_path = next(folders[1].glob("log_map_archive_*.json"))
    map_path.write_text('{"lane_segments": [1]}')
    fifo = next(folders[2].glob("scenario_*.parquet"))
    fifo.unlink()
    os.mkfifo(fifo)
    out = tmp_path / "t.parquet"
    args = [
        "-q",
        "prepare",
        "--av2",
        str(root),
        "--out",
        str(out),
        "--skip-bad",
        "--maps-dir",
        str(tmp_path / "m"),
    ]
    assert main(args) == 0
    from trajemb.data.store import read_table

    skipped = [s["reason"] for s in read_table(out).manifest["skipped"]]
    assert len(skipped) == 3
    assert (
        "null values" in skipped[0] and "AV2 map schema" in skipped[1] and "not a regular file" in skipped[2]
    )


def test_real_process_prints_one_line(inputs: Inputs, tmp_path: Path) -> None:
    """The same through a real interpreter: logging, warnings and exit handling included."""
    root = scenarios(inputs, tmp_path, 1)
    rewrite_scenario(root, lambda t: set_column(t, "num_timestamps", [10**12] * t.num_rows))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trajemb",
            "-q",
            "prepare",
            "--av2",
            str(root),
            "--out",
            str(tmp_path / "t.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "num_timestamps" in r.stderr, r.stderr


def test_closed_output_pipe_is_quiet(inputs: Inputs) -> None:
    """``trajemb info t | head -2``: the reader went away; no traceback, status 141 (as SIGPIPE)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajemb", "info", str(inputs.synth_table)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the command prints anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == ""
