"""Checkpoints: a folder with ``model.safetensors``, ``config.json`` (enough to rebuild the encoder
alone) and ``card.json`` (training data hash, similarity, D, parameters, metrics, git revision).

Weights load without executing code (safetensors); the folder is written atomically.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from trajemb.core.atomic import atomic_dir
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.jsonio import read_json_object
from trajemb.core.paths import resolve_inside
from trajemb.training.model import EncoderConfig, TrajectoryEncoder

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "card.json"
CHECKPOINT_FORMAT = "trajemb-checkpoint/1"


def git_revision(cwd: Path | None = None) -> str:
    """The current git commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=cwd,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def save_checkpoint(
    model: TrajectoryEncoder, folder: Path, card: dict[str, Any], extra_files: dict[str, Any] | None = None
) -> None:
    """Write weights, config and card into ``folder`` (replacing it atomically).

    ``extra_files`` maps file names to objects saved with ``torch.save`` (plain tensors and
    containers only, so that ``torch.load(weights_only=True)`` reads them back).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(Path(folder)) as tmp:
        # Serialised here and written by Python: safetensors' own ``save_file`` creates the file 0600
        # whatever the umask, and checkpoints are meant to be shared.
        (tmp / WEIGHTS_FILE).write_bytes(save(state, metadata={"format": CHECKPOINT_FORMAT}))
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2), encoding="utf-8")
        (tmp / CARD_FILE).write_text(
            json.dumps({"format": CHECKPOINT_FORMAT, **card}, indent=2), encoding="utf-8"
        )
        for name, obj in (extra_files or {}).items():
            torch.save(obj, tmp / name)


def read_card(folder: Path) -> dict[str, Any]:
    """The model card of a checkpoint folder (a JSON object; its fields are not interpreted here).

    Raises:
        DataError: no card, or a card that is not a JSON object.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise DataError(f"{folder}: not a trajemb checkpoint (no {CARD_FILE})")
    return read_json_object(resolve_inside(folder, CARD_FILE), "model card")


def card_history_steps(card: dict[str, Any], what: str = "checkpoint") -> int | None:
    """H where the card's model reads histories (the first H steps of a window in their last-state
    frame, ``trajemb.data.history``: trained with ``--history-steps H``), None where it reads whole windows."""
    value = card.get("history_steps")
    if value is None:
        train_config = card.get("train_config")
        value = train_config.get("history_steps") if isinstance(train_config, dict) else None
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 100_000:
        raise DataError(f"{what}: card has an invalid history length {value!r:.40}")
    return value


def load_checkpoint(
    folder: Path, device: torch.device | str = "cpu"
) -> tuple[TrajectoryEncoder, dict[str, Any]]:
    """Rebuild the encoder from ``config.json`` and load its weights; returns (model in eval mode, card).

    Every file is read from inside ``folder`` (a symlink leading out of it is refused), the card and
    config must be JSON objects, the config's sizes are bounded before the model is built, and the
    weights must match the config's shapes and be finite.

    Raises:
        DataError: missing or unreadable files, malformed JSON, out-of-range config values, or weights
            that do not match the config.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: checkpoint folder not found")
    for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise DataError(f"{folder}: checkpoint is missing {name}")
    config_path = resolve_inside(folder, CONFIG_FILE)
    try:
        config = EncoderConfig.from_dict(read_json_object(config_path, "encoder config"))
    except (TypeError, ConfigError) as exc:
        raise DataError(f"{folder / CONFIG_FILE}: invalid encoder config ({exc})") from exc
    card = read_card(folder)
    try:
        state = load_file(str(resolve_inside(folder, WEIGHTS_FILE)), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{folder / WEIGHTS_FILE}: unreadable weights ({exc})") from exc
    model = TrajectoryEncoder(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in wrong[:3]]}"
                if wrong
                else "",
            )
            if part
        )
        raise DataError(f"{folder}: weights do not match config.json ({detail})")
    not_float = sorted(k for k, v in state.items() if not v.is_floating_point())
    if not_float:
        raise DataError(f"{folder / WEIGHTS_FILE}: non-float weights {not_float[:3]}")
    not_finite = sorted(k for k, v in state.items() if not bool(torch.isfinite(v).all()))
    if not_finite:
        raise DataError(f"{folder / WEIGHTS_FILE}: NaN or infinite weights in {not_finite[:3]}")
    model.load_state_dict(state)
    return model.to(device).eval(), card
