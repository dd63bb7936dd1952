"""scripts/target_agreement.py: how closely a model retrieves its training similarity's neighbours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "target_agreement.py"


def _rows(bundle: Path, *extra: str) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), "--k", "5", *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()[3:]]


def test_a_trained_model_follows_its_target_far_above_chance(plain_bundle: Path) -> None:
    """The shipped Cosine model's neighbours share many of the Cosine similarity's (chance: 5 of about
    2,600 windows), and its minADE@5 is that of the bundle's own evaluation rule (other tracks only)."""
    (row,) = _rows(plain_bundle)
    name, similarity, agreement, own_ade, target_ade = row
    assert name == "compact-cosine-d4" and similarity == "cosine"
    assert 0.05 < float(agreement) <= 1.0
    assert 0.0 < float(own_ade) < 5.0 and 0.0 < float(target_ade) < 5.0
    (sampled,) = _rows(plain_bundle, "--max-windows", "500")
    assert 0.0 <= float(sampled[2]) <= 1.0


def test_bad_arguments_are_one_line(plain_bundle: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(plain_bundle), "--k", "0"], capture_output=True, text=True
    )
    assert run.returncode != 0 and run.stderr.strip().count("\n") == 0


def test_the_sample_is_seeded(plain_bundle: Path) -> None:
    a = _rows(plain_bundle, "--max-windows", "300", "--seed", "1")
    b = _rows(plain_bundle, "--max-windows", "300", "--seed", "1")
    assert a == b
