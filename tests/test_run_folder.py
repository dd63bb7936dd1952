"""The run folder: metrics rows keep one rectangle of columns and lose the epochs after a resume
point; a rank that does not write writes nothing; an existing run needs resume or overwrite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trajemb.core.errors import ConfigError, DataError
from trajemb.training.run_folder import (
    RunFolder,
    append_metrics,
    check_run_folder,
    read_metrics,
    truncate_metrics,
)


def test_metrics_rows_stay_rectangular_and_truncate_to_the_epochs_done(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    append_metrics(path, {"epoch": 1, "train_loss": 0.5})
    append_metrics(path, {"epoch": 2, "train_loss": 0.4, "val_minADE@6": 1.5})
    append_metrics(path, {"epoch": 3, "train_loss": 0.3})
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["epoch", "train_loss", "val_minADE@6"]
    truncate_metrics(path, 2)
    assert [(r["epoch"], r["val_minADE@6"]) for r in read_metrics(path)] == [("1", ""), ("2", "1.5")]
    assert read_metrics(tmp_path / "none.csv") == []
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="unreadable metrics"):
        read_metrics(path)


def test_a_folder_that_does_not_write_stays_empty(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", None, resume=False, overwrite=False, writes=False)
    folder.start({"epochs": 1}, "t.parquet", 0)
    folder.append_metrics({"epoch": 1})
    assert folder.tensorboard() is None and not (tmp_path / "run").exists()


def test_an_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", None, resume=False, overwrite=False)
    folder.start({"epochs": 1}, "t.parquet", 0)
    folder.append_metrics({"epoch": 1})
    with pytest.raises(
        DataError, match=r"already holds a training run \(metrics.csv\); it cannot be continued"
    ):
        check_run_folder(tmp_path / "run", None, resume=False, overwrite=False)
    with pytest.raises(DataError, match=r"nothing to resume .*start afresh with --overwrite"):
        check_run_folder(tmp_path / "run", None, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match="give one of them"):
        check_run_folder(tmp_path / "run", None, resume=True, overwrite=True)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    again = RunFolder(tmp_path / "run", None, resume=False, overwrite=True)
    again.start({"epochs": 2}, "t.parquet", 0)  # the old run's files go, the person's stay
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "notes.txt",
        "train_config.json",
        "trajemb_run.json",
    ]
