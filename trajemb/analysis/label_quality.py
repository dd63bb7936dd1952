"""How well the heuristic direction labels (``trajemb.data.labels``) agree with true manoeuvres.

On synthetic data the truth is the generator's (``true_manoeuvre``, ``trajemb.data.truth``); on real data it
is a small sample a person labelled by eye (a CSV of ``window_id, label, sure, note``). Both are scored
with scikit-learn: the confusion matrix and per-class precision, recall and F1.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from trajemb.core.errors import DataError
from trajemb.data.schema import UNKNOWN_MANOEUVRE, DirectionClass

#: Classes in table order (stationary first, then by how hard they are to retrieve).
CLASSES: tuple[str, ...] = (
    DirectionClass.STATIONARY.value,
    DirectionClass.STRAIGHT.value,
    DirectionClass.LEFT.value,
    DirectionClass.RIGHT.value,
    DirectionClass.U_TURN.value,
    DirectionClass.LANE_CHANGE_LEFT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value,
)


@dataclass(frozen=True)
class LabelAgreement:
    """Heuristic labels against true ones: C classes (those present in either)."""

    classes: tuple[str, ...]
    confusion: np.ndarray  # (C, C) rows = true, columns = heuristic
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]  # true windows of each class

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.confusion.sum()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "accuracy": self.accuracy,
        }

    def markdown(self) -> str:
        """Confusion matrix and per-class scores as two Markdown tables."""
        head = "| true \\ heuristic | " + " | ".join(self.classes) + " |"
        lines = [head, "|---|" + "---|" * len(self.classes)]
        for c, row in zip(self.classes, self.confusion.tolist(), strict=True):
            lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
        lines += ["", "| class | precision | recall | F1 | true windows |", "|---|---|---|---|---|"]
        for c in self.classes:
            lines.append(
                f"| {c} | {self.precision[c]:.3f} | {self.recall[c]:.3f} | {self.f1[c]:.3f} | {self.support[c]} |"
            )
        return "\n".join(lines)


def label_agreement(true: np.ndarray, predicted: np.ndarray) -> LabelAgreement:
    """Score ``predicted`` labels against ``true`` ones; windows whose truth is unknown are left out.

    Raises:
        DataError: no window with a known true label, or arrays of different lengths.
    """
    true, predicted = np.asarray(true, dtype=str), np.asarray(predicted, dtype=str)
    if true.shape != predicted.shape:
        raise DataError(f"{true.size} true labels but {predicted.size} heuristic ones")
    known = true != UNKNOWN_MANOEUVRE
    if not known.any():
        raise DataError("no window has a known true manoeuvre (real data has none; use a labelled sample)")
    true, predicted = true[known], predicted[known]
    present = set(true.tolist()) | set(predicted.tolist())
    classes = tuple(c for c in CLASSES if c in present) + tuple(sorted(present - set(CLASSES)))
    matrix = confusion_matrix(true, predicted, labels=list(classes))
    p, r, f, s = precision_recall_fscore_support(true, predicted, labels=list(classes), zero_division=0)
    return LabelAgreement(
        classes=classes,
        confusion=matrix,
        precision=dict(zip(classes, map(float, p), strict=True)),
        recall=dict(zip(classes, map(float, r), strict=True)),
        f1=dict(zip(classes, map(float, f), strict=True)),
        support=dict(zip(classes, map(int, s), strict=True)),
    )


@dataclass(frozen=True)
class LabelledSample:
    """Windows a person labelled by eye."""

    window_id: np.ndarray  # (W,) str
    label: np.ndarray  # (W,) DirectionClass values
    sure: np.ndarray  # (W,) bool: False where a second reader might disagree


def read_labelled_sample(path: Path) -> LabelledSample:
    """Read a by-eye sample (CSV with ``window_id, label, sure, note``; ``#`` lines are comments).

    Raises:
        DataError: missing file, missing columns, or a label that is not a direction class.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # a spreadsheet's byte-order mark is fine
            rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable labelled sample ({exc})") from exc
    if not rows or not {"window_id", "label", "sure"} <= set(rows[0]):
        raise DataError(f"{path}: expected columns window_id, label, sure")
    for number, r in enumerate(rows, start=2):
        if any(r.get(c) is None for c in ("window_id", "label", "sure")):
            raise DataError(f"{path}: row {number} has fewer than the 3 columns window_id, label, sure")
    ids = [r["window_id"] for r in rows]
    if len(set(ids)) < len(ids):
        twice = sorted({w for w in ids if ids.count(w) > 1})[:3]
        raise DataError(f"{path}: window id(s) labelled twice: {', '.join(twice)}")
    bad = sorted({r["label"] for r in rows} - set(CLASSES))
    if bad:
        raise DataError(f"{path}: unknown label(s) {bad[:3]}; expected one of {', '.join(CLASSES)}")
    return LabelledSample(
        window_id=np.asarray([r["window_id"] for r in rows], dtype=str),
        label=np.asarray([r["label"] for r in rows], dtype=str),
        sure=np.asarray([r["sure"].strip().lower() in ("yes", "true", "1") for r in rows], dtype=bool),
    )


def sample_agreement(sample: LabelledSample, window_ids: np.ndarray, direction: np.ndarray) -> LabelAgreement:
    """Agreement of a table's ``direction`` labels with a by-eye sample of its windows.

    Raises:
        DataError: a sampled window is not in the table (prepared with other window settings?).
    """
    row = {w: i for i, w in enumerate(np.asarray(window_ids, dtype=str).tolist())}
    missing = [w for w in sample.window_id.tolist() if w not in row]
    if missing:
        raise DataError(
            f"{len(missing)} labelled window(s) are not in the table (first {missing[0]!r}); prepare the "
            "fixtures with the sample's window settings (6 s windows, --stride 5)"
        )
    rows = np.asarray([row[w] for w in sample.window_id.tolist()])
    return label_agreement(sample.label, np.asarray(direction, dtype=str)[rows])
