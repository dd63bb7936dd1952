"""The folder of a training run: what may be written into it, and everything written there.

A run folder holds ``best/`` (the checkpoint of the lowest validation minADE@k), ``last/`` (the
latest epoch's checkpoint with ``train_state.pt``, for resuming), ``metrics.csv`` (one row per epoch),
``train_config.json``, ``tensorboard/`` where TensorBoard is installed, and the ``trajemb_run.json``
marker that says trajemb wrote it (``trajemb.core.outputs``).

An existing run is continued only with ``resume`` and started afresh only with ``overwrite`` (its old
artefacts removed first, so rows of two runs never mix; nothing else in the folder is touched);
anything else in the way is refused before the table is read (``check_run_folder``). Under
``torchrun`` only rank 0 writes. The trainer (``trajemb.training.train``) decides what to write and when; this
module owns where and how.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

from trajemb import __version__
from trajemb.core.atomic import output_lock, path_identity, write_text_atomic
from trajemb.core.errors import ConfigError, DataError, TrajembError
from trajemb.core.outputs import RUN_KIND, RUN_MARKER, check_output_dir
from trajemb.training.checkpoint import load_checkpoint, read_card, save_checkpoint
from trajemb.training.model import TrajectoryEncoder

TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.csv"
TRAIN_CONFIG_FILE = "train_config.json"
#: What a run writes into its folder; ``overwrite`` removes exactly these, nothing the user put there.
RUN_ARTEFACTS = ("best", "last", METRICS_FILE, TRAIN_CONFIG_FILE, "tensorboard", RUN_MARKER)
#: Entries whose presence means a run has made progress (continue it or overwrite it, not both).
RUN_PROGRESS = ("best", "last", METRICS_FILE)


class TrainingError(TrajembError):
    """Training cannot go on (non-finite loss, ...)."""


def check_run_folder(out: Path, table: Path | None, resume: bool, overwrite: bool) -> None:
    """Raise unless ``out`` may hold this run: see the module docstring.

    Args:
        out: the run folder.
        table: the table file the run reads (``out`` must not replace or contain it), or None for a
            table held in memory.
        resume, overwrite: continue the run in ``out``, or start it afresh.

    Raises:
        ConfigError: ``resume`` and ``overwrite`` together.
        DataError: ``out`` is not ours to write (``trajemb.core.outputs``), holds a run with progress and
            neither ``resume`` nor ``overwrite`` was given, or ``resume`` without a last checkpoint.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts it afresh; give one of them")
    check_output_dir(out, "run", inputs=[] if table is None else [table])
    progress = [name for name in RUN_PROGRESS if (Path(out) / name).exists()]
    resumable = (Path(out) / "last" / TRAIN_STATE_FILE).is_file()
    if resume and not resumable:
        # Never send a person round in a circle: with progress in the folder, dropping --resume would be
        # refused too.
        todo = "start afresh with --overwrite" if progress else "drop --resume to start afresh"
        raise DataError(f"{Path(out) / 'last'}: nothing to resume (no {TRAIN_STATE_FILE}); {todo}")
    if progress and not resume and not overwrite:
        todo = (
            "pass --resume to continue it, --overwrite to start it afresh"
            if resumable
            else f"it cannot be continued (no last/{TRAIN_STATE_FILE}): pass --overwrite to start it afresh"
        )
        raise DataError(
            f"{out} already holds a training run ({', '.join(progress)}); {todo}, or give a new --out"
        )


class RunFolder:
    """One run's folder, checked on creation (``check_run_folder``); ``writes`` is False on the ranks
    of a data-parallel run other than 0, which read it (to resume) but never write it."""

    def __init__(self, out: Path, table: Path | None, resume: bool, overwrite: bool, writes: bool = True):
        self.path = Path(out)
        self.table = table
        self.resume = resume
        self.writes = writes
        check_run_folder(self.path, table, resume, overwrite)  # before even a lock file is made
        self._seen: object = None

    @property
    def last(self) -> Path:
        return self.path / "last"

    @property
    def state_file(self) -> Path:
        return self.last / TRAIN_STATE_FILE

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The folder's lock (rank 0 only): a second run into the same folder stops at once, naming
        the holder (``trajemb.core.atomic.output_lock``)."""
        return output_lock(self.path) if self.writes else contextlib.nullcontext()

    def recheck(self, overwrite: bool) -> None:
        """Check again under the lock, and remember the folder as it is now (``check_unchanged``)."""
        check_run_folder(self.path, self.table, self.resume, overwrite)
        self._seen = path_identity(self.path)

    def check_unchanged(self) -> None:
        """Raises DataError if the folder changed since ``recheck`` (another run wrote it meanwhile)."""
        if self.writes and path_identity(self.path) != self._seen:
            raise DataError(
                f"{self.path}: changed since this run checked it (another run wrote it meanwhile?); "
                "nothing was written; start it again"
            )

    def start(self, config: dict[str, Any], table_name: str, epochs_done: int) -> None:
        """Mark the folder as ours and save the config; a fresh start first removes the previous run's
        artefacts, a resumed one drops metrics rows of epochs after its last checkpoint."""
        if not self.writes:
            return
        if not self.resume:
            for name in RUN_ARTEFACTS:
                path = self.path / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        marker = {"kind": RUN_KIND, "trajemb_version": __version__, "table": table_name}
        write_text_atomic(self.path / RUN_MARKER, json.dumps(marker, indent=2))
        write_text_atomic(self.path / TRAIN_CONFIG_FILE, json.dumps(config, indent=2))
        if self.resume:
            truncate_metrics(self.path / METRICS_FILE, epochs_done)

    def save_best(self, model: TrajectoryEncoder, card: dict[str, Any]) -> None:
        if self.writes:
            save_checkpoint(model, self.path / "best", card)

    def save_last(self, model: TrajectoryEncoder, card: dict[str, Any], state: dict[str, Any]) -> None:
        """The latest epoch's checkpoint with the training state to resume from."""
        if self.writes:
            save_checkpoint(model, self.last, card, {TRAIN_STATE_FILE: state})

    def append_metrics(self, row: dict[str, float]) -> None:
        if self.writes:
            append_metrics(self.path / METRICS_FILE, row)

    def has_best(self) -> bool:
        return (self.path / "best").is_dir()

    def best_row(self) -> dict[str, float]:
        """Metrics of the best checkpoint written so far ({} where there is none)."""
        return dict(read_card(self.path / "best")["metrics"]) if self.has_best() else {}

    def best_metrics(self) -> dict[str, float]:
        """The best epoch's metrics of a resumed run whose best epoch came before the resume."""
        try:
            metrics = load_checkpoint(self.path / "best")[1].get("metrics")
        except DataError:
            metrics = None
        if not isinstance(metrics, dict):
            raise TrainingError(f"{self.path / 'best'}: no readable best checkpoint after training")
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def tensorboard(self) -> Any:
        """A TensorBoard ``SummaryWriter`` into ``tensorboard/``, or None (not installed, or not rank 0)."""
        if not self.writes:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.path / "tensorboard"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.csv`` ([] where there is none)."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable metrics ({exc}); start afresh with --overwrite") from exc


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    # Rows may gain validation columns; write the union of columns so the CSV stays rectangular.
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    w = csv.DictWriter(buffer, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def append_metrics(path: Path, row: dict[str, float]) -> None:
    """Add one epoch's row to ``metrics.csv`` (rewritten atomically)."""
    _write_metrics(path, [*read_metrics(path), row])


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep the rows of epochs 1..``epochs_done`` (a run killed between writing its metrics and its
    last checkpoint repeats that epoch on resume; its row must not appear twice)."""
    rows = read_metrics(path)
    kept = [r for r in rows if _epoch_of(r) <= epochs_done]
    if len(kept) != len(rows):
        _write_metrics(path, kept)


def _epoch_of(row: dict[str, Any]) -> float:
    try:
        return float(row.get("epoch", "inf"))
    except ValueError:
        return math.inf
