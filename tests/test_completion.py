"""The completion lock, its progress file and the time-left estimate (``trajemb.serving.completion``), and the
order of a bundle's completion steps (``trajemb.serving.bundle_build.completion_steps``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trajemb.serving.completion import (
    LOCK_FILE,
    PROGRESS_FILE,
    Progress,
    ProgressFile,
    Step,
    completion_lock,
    lock_holder,
    lock_is_held,
    read_progress,
)


def test_remaining_time_follows_the_measured_speed() -> None:
    steps = (Step("a", 10.0), Step("b", 20.0), Step("c", 30.0))
    fresh = Progress(1, 100.0, steps, 0, 100.0, ())
    assert fresh.remaining_s(105.0) is None  # nothing finished: no speed measured yet
    assert "about 60 s in all on a 2-core machine" in fresh.summary(105.0)
    # Step a (cost 10) took 30 s: this machine runs at a third of the reference speed.
    after_a = Progress(1, 100.0, steps, 1, 130.0, (130.0,))
    assert after_a.remaining_s(130.0) == pytest.approx(150.0)  # (20 + 30) * 3
    assert after_a.remaining_s(160.0) == pytest.approx(120.0)  # 30 s into step b
    assert after_a.remaining_s(10_000.0) == pytest.approx(6.0)  # b overran: a tenth of its share left
    assert "b (step 2 of 3; 30 s so far; about 150 s left" in after_a.summary(130.0).replace("2 min", "150 s")
    done = Progress(1, 100.0, steps, 3, 200.0, (130.0, 160.0, 200.0))
    assert done.current is None and "finishing" in done.summary(210.0)


def _hold(
    root: str, started: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with completion_lock(Path(root)):
        ProgressFile(Path(root), [Step("2-D layout of model m", 5.0)])
        started.set()
        release.wait(30)


@contextlib.contextmanager
def _held_elsewhere(root: Path, target: Callable[..., None]) -> Iterator[multiprocessing.process.BaseProcess]:
    """Another process runs ``target(root, started, release)`` (holding the lock) for the block."""
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=target, args=(str(root), started, release))
    holder.start()
    try:
        assert started.wait(60)
        yield holder
    finally:
        release.set()
        holder.join(30)


def _hold_silent(
    root: str, started: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with completion_lock(Path(root)):  # no progress file yet: a completion checking the bundle first
        started.set()
        release.wait(30)


def test_the_lock_names_its_holder_before_any_progress(tmp_path: Path) -> None:
    """While a completion checks the bundle, before it writes progress, the lock already says whose it
    is, so an explorer can tell its own completion from another process's (it said "waiting for another
    process" about its own)."""
    assert lock_holder(tmp_path) is None  # no lock file
    with _held_elsewhere(tmp_path, _hold_silent) as holder:
        assert lock_holder(tmp_path) == holder.pid and read_progress(tmp_path) is None
    assert lock_holder(tmp_path) is None and not lock_is_held(tmp_path)
    with completion_lock(tmp_path):  # this process's own
        assert lock_holder(tmp_path) == os.getpid()


BAD_PIDS = ["", "{", "[1]", '{"pid": "12"}', '{"pid": 1e999}', '{"pid": -5}', '{"pid": true}', "[" * 256]


@pytest.mark.parametrize("content", BAD_PIDS)
def test_a_lock_file_without_a_valid_pid_names_no_holder(tmp_path: Path, content: str) -> None:
    """A held lock whose file holds no positive integer pid (an older trajemb's empty file, a holder that
    has not written yet, or anything else) is held by an unknown process (0), never an error; a
    progress file with such a pid, or a count past any float, is no progress."""
    (tmp_path / LOCK_FILE).write_text(content)
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file of it: held as if by another process
        assert lock_holder(tmp_path) == 0 and lock_is_held(tmp_path)
        progress = {
            "pid": 7,
            "started_s": 1.0,
            "steps": [],
            "done": 0,
            "step_started_s": 1.0,
            "finished_s": [],
        }
        (tmp_path / PROGRESS_FILE).write_text(json.dumps(progress))
        assert read_progress(tmp_path) is not None  # the same file, well formed, is read
        for key, bad in (("pid", content), ("done", "1e999")):
            (tmp_path / PROGRESS_FILE).write_text(json.dumps(progress)[:-1] + f', "{key}": {bad or 0}}}')
            assert read_progress(tmp_path) is None, (key, bad)
    finally:
        os.close(fd)
    assert lock_holder(tmp_path) is None


def test_progress_is_read_only_while_the_lock_is_held(tmp_path: Path) -> None:
    """Another process's progress is seen while it holds the lock; a file left by a killed process is
    ignored; a malformed file is no progress, not an error."""
    with _held_elsewhere(tmp_path, _hold) as holder:
        assert lock_is_held(tmp_path)
        progress = read_progress(tmp_path)
        assert progress is not None and progress.pid == holder.pid
        assert progress.current == "2-D layout of model m"
    assert (tmp_path / PROGRESS_FILE).exists()  # left behind (the holder never closed it) ...
    assert not lock_is_held(tmp_path) and read_progress(tmp_path) is None  # ... and ignored
    with completion_lock(tmp_path):
        (tmp_path / PROGRESS_FILE).write_text(json.dumps({"pid": "x"}))
        assert read_progress(tmp_path) is None


def test_progress_file_follows_the_steps(tmp_path: Path) -> None:
    with completion_lock(tmp_path):
        tracker = ProgressFile(tmp_path, [Step("a", 1.0), Step("b", 1.0)])
        first = read_progress(tmp_path)
        assert first is not None and first.current == "a" and first.done == 0
        tracker.step_done()
        second = read_progress(tmp_path)
        assert second is not None and second.current == "b" and len(second.finished_s) == 1
        tracker.close()
        assert read_progress(tmp_path) is None


def test_completion_order_and_robustness_last(
    synth_table: Path, tiny_checkpoints: list[Path], small_bundle: Path, tmp_path: Path
) -> None:
    """Layouts come first, then the evaluation, then the robustness curves; robustness added as a last
    step gives exactly the numbers of one evaluation pass with it."""
    from trajemb.analysis.bundle import BASELINES_FILE, Bundle, read_bundle_manifest
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import (
        BundleConfig,
        BundleWriter,
        build_bundle,
        completion_steps,
        evaluate_models,
        missing_robustness,
    )

    evaluation = EvalConfig(num_queries=60, robustness=True, robustness_queries=40, robustness_corpus=400)
    staged = BundleConfig(evaluation=evaluation, projection=ProjectionConfig(method="none"), evaluate=False)
    out = tmp_path / "b"
    build_bundle(synth_table, tiny_checkpoints[:1], out, config=staged, progress=False)
    full = BundleConfig(evaluation=evaluation, projection=ProjectionConfig(method="full"), device="cpu")
    steps = completion_steps(out, read_bundle_manifest(out), full)
    assert [kind for _, kind, _ in steps] == ["layout", "evaluation", "robustness"]

    split = tmp_path / "split"
    build_bundle(synth_table, tiny_checkpoints[:1], split, config=full, progress=False)  # robustness last
    assert not missing_robustness(split) and completion_steps(split, read_bundle_manifest(split), full) == []
    one_pass = tmp_path / "one"
    shutil.copytree(split, one_pass)
    writer = BundleWriter(one_pass, read_bundle_manifest(one_pass))
    evaluate_models(writer, Bundle(one_pass), full, progress=False, robustness=True)
    writer.save_manifest()
    name = Bundle(split).model_names[0]
    a, b = Bundle(split), Bundle(one_pass)

    def scores(report: dict[str, object] | None) -> dict[str, object]:  # timings differ run to run
        return {k: v for k, v in (report or {}).items() if not k.endswith("_ms_per_query")}

    assert scores(a.report(name)) == scores(b.report(name)) and "robustness" in scores(a.report(name))
    base_a, base_b = (x.json_file(BASELINES_FILE, "baselines") for x in (a, b))
    assert {k: scores(v) for k, v in base_a.items()} == {k: scores(v) for k, v in base_b.items()}
    assert not missing_robustness(small_bundle)


def test_robustness_curves_never_leave_a_file_unlike_the_manifest(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curves rewrite reports the manifest already lists; while they are computed (minutes at the
    default data's size) every listed file on disk must still be the one the manifest on disk describes,
    or an explorer reading the bundle meanwhile is refused it (seen for 4.5 minutes in Chromium)."""
    from trajemb.analysis.bundle import BASELINES_FILE, Bundle, read_bundle_manifest
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.core.integrity import digest_file
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving import bundle_build
    from trajemb.serving.bundle_build import BundleConfig, BundleWriter, add_robustness, build_bundle

    curves = EvalConfig(num_queries=60, robustness=True, robustness_queries=40, robustness_corpus=400)
    without = BundleConfig(
        evaluation=EvalConfig(num_queries=60, robustness=False), projection=ProjectionConfig(method="none")
    )
    out = tmp_path / "b"
    build_bundle(synth_table, tiny_checkpoints[:2], out, config=without, progress=False)
    checked: list[str] = []

    def consistent(stage: str) -> None:
        manifest = read_bundle_manifest(out)
        for key in [k for k in manifest["files"] if k.endswith("report.json") or k == BASELINES_FILE]:
            assert digest_file(out / key).to_dict() == manifest["files"][key], f"{key} during {stage}"
        checked.append(stage)

    def wrap(name: str) -> None:
        original = getattr(bundle_build, name)

        def checked_call(*args: object, **kwargs: object) -> object:
            consistent(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(bundle_build, name, checked_call)

    wrap("encoder_reports")
    wrap("baseline_robustness")
    writer = BundleWriter(out, read_bundle_manifest(out))
    add_robustness(writer, Bundle(out), BundleConfig(evaluation=curves), progress=False)
    writer.save_manifest()  # as the completion does after every step
    consistent("the end")
    assert checked == ["encoder_reports", "encoder_reports", "baseline_robustness", "the end"]
    bundle = Bundle(out)
    bundle.verify_all()
    assert all("robustness" in (bundle.report(name) or {}) for name in bundle.model_names)


def test_the_explorer_tells_its_own_completion_from_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explorer's status line (``app/cache.completion_status``) while the lock's holder has written
    no progress yet: "starting" when the holder is the explorer's own completion, "waiting for another
    process (pid N)" when it is another (the first start said the latter about its own)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "app"))
    import cache

    with _held_elsewhere(tmp_path, _hold_silent) as holder:
        own = cache.Completion(tmp_path / "log", 0.0, pid=holder.pid)
        monkeypatch.setitem(cache._completions, str(tmp_path), own)
        status = cache.completion_status(str(tmp_path))
        assert status is not None and status.state == "running" and status.text.startswith("starting")
        other = cache.Completion(tmp_path / "log", 0.0, pid=holder.pid + 1)
        monkeypatch.setitem(cache._completions, str(tmp_path), other)
        status = cache.completion_status(str(tmp_path))
        assert (
            status is not None
            and status.state == "waiting"
            and status.text.startswith(f"waiting for another process (pid {holder.pid}) that holds")
        )
