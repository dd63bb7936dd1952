"""Signals: SIGTERM/SIGINT clean up, and no signal (kill -9 included) leaves workers running or
temporaries that the next run trips over. Real subprocesses, real signals (Linux: /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trajemb.cli import main
from trajemb.serving.completion import LOCK_FILE

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")


@pytest.fixture(autouse=True)
def _hangup_not_ignored() -> Iterator[None]:
    """SIGHUP at its default for each test and the processes it starts: under ``nohup`` it arrives
    ignored, which trajemb keeps on purpose (``signals_as_exceptions``), and these tests send it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


#: Runs the real CLI with each unit of worker work slowed down (patched before the workers fork, so
#: they inherit it): a hung worker when the delay is long, a half-written output when it is short.
HARNESS = """
import sys, time
import trajemb.data.prepare as prepare
import trajemb.data.synth.generate as generate
delay = float(sys.argv[1])
def slow(real):
    def wrapper(*args, **kwargs):
        time.sleep(delay)
        return real(*args, **kwargs)
    return wrapper
prepare.cut_job = slow(prepare.cut_job)
generate.write_scenario_dir = slow(generate.write_scenario_dir)
from trajemb.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def processes_with(token: str) -> list[int]:
    """Live (not zombie) processes whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = next(ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if token.encode() in cmdline and "Z" not in state.split()[1]:
            found.append(int(entry.name))
    return found


def wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def start(delay_s: float, *args: str, cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(delay_s), "-q", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The output path is in the command line of the command and of every worker it forks.
    if not wait_for(lambda: len(processes_with(args[args.index("--out") + 1])) >= 3, 60):
        proc.kill()
        pytest.fail(f"workers did not start: {proc.communicate()}")
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_prepare_signals_leave_no_workers(synth_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    out = str(tmp_path / "t.parquet")
    proc = start(30, "prepare", "--av2", str(synth_dir), "--out", out, "--workers", "2", cwd=tmp_path)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=20)
    # Workers that sleep for 30 s are "hung": the parent must stop them, or they must die with it.
    assert wait_for(lambda: not processes_with(out), 10), f"orphaned workers: {processes_with(out)}"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        # The next run neither trips over nor keeps the killed run's temporary file.
        assert main(["-q", "prepare", "--av2", str(synth_dir), "--out", out, "--workers", "1"]) == 0
        assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    else:
        assert (proc.returncode, stderr.strip()) == (143, "trajemb: terminated by SIGTERM")
        assert list(tmp_path.iterdir()) == []  # no table, no temporary


def test_killed_synth_is_ignored_then_cleaned(tmp_path: Path) -> None:
    out = str(tmp_path / "s")
    proc = start(0.2, "synth", "--out", out, "--scenarios", "200", "--workers", "2", cwd=tmp_path)
    assert wait_for(
        lambda: len(list(next(tmp_path.glob(".s.*.tmp"), tmp_path).glob("*/scenario_*"))) >= 2, 30
    )
    proc.kill()
    proc.communicate(timeout=20)
    assert wait_for(lambda: not processes_with(out), 10), f"orphaned workers: {processes_with(out)}"
    (leftover,) = list(tmp_path.glob(".s.*.tmp"))
    assert len(list(leftover.glob("*/scenario_*.parquet"))) >= 2
    # prepare does not read the partial scenarios of the hidden temporary folder ...
    assert main(["-q", "prepare", "--av2", str(tmp_path), "--out", str(tmp_path.parent / "x.parquet")]) == 2
    # ... and the next synth removes it.
    assert main(["-q", "synth", "--out", out, "--scenarios", "2", "--workers", "1"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


@pytest.mark.slow
def test_sigterm_during_synth_cleans_up(tmp_path: Path) -> None:
    out = str(tmp_path / "s")
    proc = start(30, "synth", "--out", out, "--scenarios", "50", "--workers", "2", cwd=tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 143 and stderr.strip() == "trajemb: terminated by SIGTERM"
    assert wait_for(lambda: not processes_with(out), 10)
    assert list(tmp_path.iterdir()) == []


class _SignalInFinaliser:
    """Receives a signal while Python runs its ``__del__``: the handler's exception is raised there,
    where Python can only print it and go on (as in llvmlite's callbacks while numba compiles)."""

    def __init__(self, sig: signal.Signals) -> None:
        self.sig = sig

    def __del__(self) -> None:
        os.kill(os.getpid(), self.sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # Python code runs here: the handler raises in __del__
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_swallowed_in_a_callback_is_raised_again_at_once(sig: signal.Signals) -> None:
    from trajemb.core.interrupts import Terminated, signals_as_exceptions

    t0 = time.monotonic()
    with pytest.raises(Terminated) as caught, signals_as_exceptions():
        obj = _SignalInFinaliser(sig)
        del obj  # the first raise dies inside __del__ ...
        while time.monotonic() - t0 < 30:  # ... and the signal is raised again in the next Python code
            pass
    assert caught.value.signum == sig
    assert time.monotonic() - t0 < 15  # the finaliser's 5 s, not the loop's 30


def test_a_signal_dropped_silently_still_stops_output(tmp_path: Path) -> None:
    """Third-party code that catches everything (``except BaseException: pass``) cannot make the stage
    write its result: the pending signal is raised where output would become visible."""
    from trajemb.core.atomic import atomic_path
    from trajemb.core.interrupts import Terminated, signals_as_exceptions

    with pytest.raises(Terminated), signals_as_exceptions(), atomic_path(tmp_path / "t.parquet") as tmp:
        tmp.write_text("half")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except BaseException:  # what careless third-party code does
            pass
    assert list(tmp_path.iterdir()) == []


def run_until(args: list[str], marker: str, cwd: Path) -> subprocess.Popen[str]:
    """Start the CLI and return once ``marker`` appears in its log (read line by line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajemb", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if marker in line:
            return proc
    proc.kill()
    pytest.fail(f"{marker!r} never appeared: {proc.communicate()}")


@pytest.mark.slow
def test_sigterm_during_the_layout_stops_the_bundle(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """The UMAP layout compiles with numba, whose callbacks swallowed the signal: the bundle was
    written and the command exited 0. Now it stops, writes nothing and exits 143."""
    out = tmp_path / "b"
    args = [
        "bundle",
        "--table",
        str(synth_table),
        "--checkpoint",
        str(tiny_checkpoints[0]),
        "--out",
        str(out),
    ]
    proc = run_until([*args, "--device", "cpu", "--queries", "50"], "2-D layout of model", tmp_path)
    time.sleep(2)  # inside numba's compilation of UMAP
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "trajemb: terminated by SIGTERM" in stderr.splitlines()
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary, no lock


@pytest.mark.slow
def test_sighup_during_completion_leaves_the_bundle_as_it_was(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    from trajemb.cli import main as cli

    bundle = tmp_path / "b"
    build = [
        "bundle",
        "--table",
        str(synth_table),
        "--checkpoint",
        str(tiny_checkpoints[0]),
        "--out",
        str(bundle),
    ]
    assert cli(["-q", *build, "--device", "cpu", "--no-umap", "--no-eval"]) == 0
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    proc = run_until(["complete", "--bundle", str(bundle)], "2-D layout of model", tmp_path)
    time.sleep(2)
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 129, stderr[-2000:]
    after = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    # The completion's lock file may stay (an empty file that flock locks; ``trajemb.serving.completion``).
    assert after.pop(bundle / LOCK_FILE, b"") == b""
    assert after == before
