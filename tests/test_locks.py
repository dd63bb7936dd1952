"""Two runs into one output: every writing command takes the output's lock and names the holder; a lock
of a dead process is taken over; a folder that changed under a run is never replaced by it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trajemb.cli import main
from trajemb.core.atomic import atomic_dir, lock_path, output_lock
from trajemb.core.errors import DataError
from trajemb.core.outputs import check_output_dir

#: Holds the lock of argv[1] until killed, like a long run of any command would.
HOLDER = """
import sys, time
from pathlib import Path
from trajemb.core.atomic import output_lock
from trajemb.core.interrupts import Terminated, signals_as_exceptions
try:
    with signals_as_exceptions(), output_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
except Terminated:
    pass
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hold(target: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.communicate()
    return proc


@pytest.fixture
def held() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.communicate()


def test_every_writing_command_stops_at_once_naming_the_holder(
    tmp_path: Path,
    synth_dir: Path,
    synth_table: Path,
    tiny_checkpoints: list[Path],
    small_bundle: Path,
    held: list[subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the command, a second writer of the same output exits 2 with one line naming the first
    (process, host, command, start) and writes nothing."""
    ckpt = str(tiny_checkpoints[0])
    out = tmp_path / "out"
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(small_bundle, bundle)
    cases: list[tuple[Path, list[str]]] = [
        (out / "s", ["synth", "--out", str(out / "s"), "--scenarios", "2", "--workers", "1"]),
        (
            out / "t.parquet",
            ["prepare", "--av2", str(synth_dir), "--out", str(out / "t.parquet"), "--workers", "1"],
        ),
        (out / "run", ["train", "--data", str(synth_table), "--out", str(out / "run"), "--epochs", "1"]),
        (out / "b", ["bundle", "--table", str(synth_table), "--checkpoint", ckpt, "--out", str(out / "b")]),
        (bundle, ["complete", "--bundle", str(bundle)]),
    ]
    out.mkdir()
    before = snapshot(bundle)
    for target, args in cases:
        proc = hold(target)
        held.append(proc)
        assert main(["-q", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"process {proc.pid} on " in err[0], (args, err)
        assert "another trajemb run is writing it" in err[0] and "since " in err[0]
        assert not target.exists() or target == bundle, args
        proc.terminate()
        proc.communicate()
    assert [p.name for p in out.iterdir()] == []  # nothing written, and the lock files went too
    assert snapshot(bundle) == before


@pytest.mark.slow
def test_two_trainings_into_one_new_folder(
    synth_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The case that mixed two runs' files: now the second stops while the first trains, and the folder
    holds the first run alone."""
    out = tmp_path / "run"
    args = [
        "-q",
        "train",
        "--data",
        str(synth_table),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "256",
    ]
    args += ["--hidden", "32", "--layers", "1", "--heads", "4", "--embedding-dim", "8", "--device", "cpu"]
    first = subprocess.Popen(
        [sys.executable, "-m", "trajemb", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "trajemb_run.json").exists():  # training: the folder is the first run's now
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    assert main(args) == 2
    assert f"process {first.pid} on " in capsys.readouterr().err
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header and the first run's two epochs, nothing of the second
    assert not lock_path(out).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "b"
    proc = hold(target)
    assert json.loads(lock_path(target).read_text())["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert lock_path(target).exists()  # kill -9 left the file; the kernel released the lock
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("mine")
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_the_lock_is_reentrant_in_a_thread_and_names_its_holder(tmp_path: Path) -> None:
    target = tmp_path / "b"
    with output_lock(target):
        with output_lock(target):
            info = json.loads(lock_path(target).read_text())
        assert info["pid"] == os.getpid() and {"host", "command", "since"} <= set(info)
        assert lock_path(target).exists()
    assert not lock_path(target).exists()


def test_a_folder_that_changed_after_its_check_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "s"
    check_output_dir(target, "synth")
    target.mkdir()  # another process wrote it meanwhile
    (target / "theirs").write_text("x")
    with pytest.raises(DataError, match="appeared after it was checked"), atomic_dir(target) as tmp:
        (tmp / "mine").write_text("y")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    with pytest.raises(DataError, match="changed while this run was writing it"), atomic_dir(target) as tmp:
        (tmp / "mine").write_text("y")
        (target / "more").write_text("z")  # written under it by something that takes no lock
    assert sorted(p.name for p in target.iterdir()) == ["more", "theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
