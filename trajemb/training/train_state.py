"""The training state a run resumes from (``last/train_state.pt``), checked field by field first.

``torch.load(weights_only=True)`` executes no code, but what it returns is still untrusted: a state of
another run, a hand-edited one or a damaged one can hold an epoch that is negative, fractional or
ahead of its checkpoint, optimiser moments of the wrong shape, scheduler counters past the schedule,
or random-generator states of the wrong size. Loaded as they are, such values fail with a traceback
after training has started, or silently skip epochs. ``check_train_state`` compares every field with
what this run's own model, optimiser, scheduler and generators hold before the first step, and
returns the values to resume from; anything else is one ``DataError`` naming the field.

``RandomStreams`` are a run's random generators that an epoch draws from without re-seeding them (the
shuffle, in-batch mining, dropout): saved with every last checkpoint and restored on resume, so that a
resumed run draws what the uninterrupted one would have drawn. ``read_last`` reads the last
checkpoint and its state and refuses one of another table, config or number of processes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trajemb.core.errors import ConfigError, DataError
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.model import EncoderConfig, TrajectoryEncoder

log = logging.getLogger(__name__)

#: Scheduler fields that change as it steps; every other field is fixed by the run's config.
_SCHEDULER_COUNTERS = ("last_epoch", "_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step")
#: Optimiser hyper-parameters the one-cycle schedule moves at every step (checked for range only).
_SCHEDULED = ("lr", "betas")
#: Per-parameter AdamW moments, shaped like the parameter.
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
RNG_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ResumePoint:
    """Where a checked state resumes: the next epoch (0-based) and the best validation minADE so far."""

    start_epoch: int
    best_min_ade: float


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """Equal plain values (numbers of either type compare by value; tuples and lists alike)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if _is_number(a) and _is_number(b):
        return bool(a == b) or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        )
    return type(a) is type(b) and bool(a == b)


def _generator_state(value: object, like: torch.Tensor, field: str, where: Path) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.shape != like.shape:
        got = (
            f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        )
        raise DataError(
            f"{where}: {field} is {got}, not a random-generator state ({like.dtype} {tuple(like.shape)}); "
            "start afresh with --overwrite"
        )
    return value


def _check_scheduler(state: object, fresh: Mapping[str, Any], steps_done: int, where: Path) -> None:
    if not isinstance(state, dict) or state.keys() != fresh.keys():
        raise DataError(
            f"{where}: the scheduler state is not this run's one-cycle schedule; start afresh with --overwrite"
        )
    for key, value in fresh.items():
        if key not in _SCHEDULER_COUNTERS and not _same(state[key], value):
            raise DataError(
                f"{where}: scheduler field {key} is {state[key]!r:.60}, this run's schedule has {value!r:.60} "
                "(another run's state?); start afresh with --overwrite"
            )
    last, count = state["last_epoch"], state["_step_count"]
    if not (_is_int(last) and _is_int(count)) or last != steps_done or count != steps_done + 1:
        raise DataError(
            f"{where}: scheduler counters last_epoch {last!r:.30}, _step_count {count!r:.30} do not match "
            f"the {steps_done} steps of the epochs done; start afresh with --overwrite"
        )
    lrs = state["_last_lr"]
    if (
        not isinstance(lrs, list)
        or len(lrs) != len(fresh["_last_lr"])
        or not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in lrs)
    ):
        raise DataError(
            f"{where}: scheduler _last_lr {lrs!r:.60} is not a list of learning rates; start afresh with --overwrite"
        )


def _check_optimizer(
    state: object, fresh: Mapping[str, Any], params: list[torch.Tensor], steps_done: int, where: Path
) -> None:
    if not isinstance(state, dict) or state.keys() != {"state", "param_groups"}:
        raise DataError(f"{where}: the optimizer state is not an AdamW state; start afresh with --overwrite")
    groups, fresh_groups = state["param_groups"], fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        raise DataError(
            f"{where}: the optimizer has other parameter groups than this model; start afresh with --overwrite"
        )
    for group, want in zip(groups, fresh_groups, strict=True):
        if not isinstance(group, dict) or group.keys() != want.keys():
            raise DataError(
                f"{where}: an optimizer parameter group has other fields than AdamW's; start afresh with --overwrite"
            )
        for key, value in want.items():
            if key == "lr":
                ok = _is_number(group[key]) and math.isfinite(group[key]) and group[key] >= 0
            elif key == "betas":
                b = group[key]
                ok = (
                    isinstance(b, (list, tuple))
                    and len(b) == 2
                    and all(_is_number(x) and 0 <= x < 1 for x in b)
                )
            else:
                ok = _same(group[key], value)
            if not ok:
                raise DataError(
                    f"{where}: optimizer field {key} is {group[key]!r:.60}, this run has {value!r:.60}; "
                    "start afresh with --overwrite"
                )
    per_param = state["state"]
    if not isinstance(per_param, dict):
        raise DataError(
            f"{where}: the optimizer's per-parameter state is not a mapping; start afresh with --overwrite"
        )
    for index, entry in per_param.items():
        if not _is_int(index) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise DataError(
                f"{where}: optimizer state for parameter {index!r:.30}, which this model does not have"
            )
        param = params[index]
        step = entry.get("step")
        step_value = float(step) if isinstance(step, torch.Tensor) and step.numel() == 1 else step
        if not _is_number(step_value) or step_value != steps_done:
            raise DataError(
                f"{where}: optimizer step count {step_value!r:.30} for parameter {index}, the epochs done make "
                f"{steps_done} steps; start afresh with --overwrite"
            )
        for key, value in entry.items():
            if key == "step":
                continue
            if key not in _MOMENTS:
                raise DataError(
                    f"{where}: unknown optimizer state field {key!r:.40}; start afresh with --overwrite"
                )
            if (
                not isinstance(value, torch.Tensor)
                or value.shape != param.shape
                or not value.is_floating_point()
                or not bool(torch.isfinite(value).all())
                or (key != "exp_avg" and bool((value < 0).any()))
            ):
                got = (
                    f"{value.dtype} {tuple(value.shape)}"
                    if isinstance(value, torch.Tensor)
                    else type(value).__name__
                )
                raise DataError(
                    f"{where}: optimizer {key} of parameter {index} is {got} (finite values of shape "
                    f"{tuple(param.shape)} expected); start afresh with --overwrite"
                )


def check_train_state(
    state: object,
    where: Path,
    *,
    checkpoint_epoch: object,
    epochs: int,
    steps_per_epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generators: Mapping[str, torch.Tensor],
    device_type: str,
) -> ResumePoint:
    """Check a loaded training state against this run; returns where to resume.

    Args:
        state: what ``torch.load(weights_only=True)`` returned.
        where: the state file, for messages.
        checkpoint_epoch: the ``epoch`` of ``last/card.json`` (epochs done, 1-based).
        epochs: the run's ``--epochs``.
        steps_per_epoch: optimiser steps per epoch of this run.
        optimizer, scheduler: this run's, freshly built (their states are the reference).
        generators: the run's current generator states by field name (``shuffle_rng``, ``torch_rng``,
            ``mining_rng``, ``device_rng``); the state's must have the same size. The training device's
            streams (``mining_rng``, ``device_rng``) are checked only when the state was saved on
            ``device_type`` (they are not restored otherwise).

    Raises:
        DataError: a missing field, a field of the wrong type, shape or range, or one that contradicts
            the checkpoint or the run's config; the message names the field.
    """
    if not isinstance(state, dict):
        raise DataError(
            f"{where}: not a training state (a {type(state).__name__}); start afresh with --overwrite"
        )
    missing = [
        k for k in ("optimizer", "scheduler", "shuffle_rng", "epoch", "best_min_ade") if k not in state
    ]
    if missing:
        raise DataError(f"{where}: training state lacks {', '.join(missing)}; start afresh with --overwrite")
    epoch = state["epoch"]
    if not _is_int(epoch) or epoch < 0:
        raise DataError(
            f"{where}: epoch {epoch!r:.30} is not an epoch index (an integer >= 0); start afresh with --overwrite"
        )
    if not _is_int(checkpoint_epoch) or checkpoint_epoch != epoch + 1:
        raise DataError(
            f"{where}: the state is after epoch {epoch + 1} but last/card.json says epoch "
            f"{checkpoint_epoch!r:.30} (files of two runs?); start afresh with --overwrite"
        )
    if epoch + 1 > epochs:
        raise DataError(
            f"{where}: the state is after epoch {epoch + 1}, beyond this run's --epochs {epochs}; start afresh "
            "with --overwrite"
        )
    best = state["best_min_ade"]
    if not _is_number(best) or math.isnan(best) or best < 0:
        raise DataError(
            f"{where}: best_min_ade {best!r:.30} is not a distance (a number >= 0, or inf before the first "
            "validation); start afresh with --overwrite"
        )
    steps_done = (epoch + 1) * steps_per_epoch
    params = [p for group in optimizer.param_groups for p in group["params"]]
    _check_scheduler(state["scheduler"], scheduler.state_dict(), steps_done, where)
    _check_optimizer(state["optimizer"], optimizer.state_dict(), params, steps_done, where)
    rng_device = state.get("rng_device")
    if rng_device is not None and rng_device not in RNG_DEVICES:
        raise DataError(f"{where}: rng_device {rng_device!r:.30} is not one of {', '.join(RNG_DEVICES)}")
    for field, like in generators.items():
        on_device = field in ("mining_rng", "device_rng")
        if on_device and rng_device != device_type:
            continue  # saved on another device (or by an earlier release): not restored, not checked
        if field not in state:
            if field == "torch_rng" and rng_device is None:
                continue  # states of earlier releases had no global generator state
            raise DataError(f"{where}: training state lacks {field}; start afresh with --overwrite")
        _generator_state(state[field], like, field, where)
    return ResumePoint(epoch + 1, float(best))


class RandomStreams:
    """The random streams of a run that are not re-seeded per epoch: the shuffle of the single-process
    epoch order (CPU), in-batch mining's generator (on the training device) and the global torch
    generators of the CPU and the device (dropout). Batches of neighbourhoods and augmentations are
    drawn from per-epoch seeds instead (``trajemb.training.train``), so a resumed run draws them again."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.shuffle = torch.Generator().manual_seed(seed)
        self.mining = torch.Generator(device=device).manual_seed(seed + 1)

    def state(self) -> dict[str, Any]:
        """The streams' states, for the training state file (the shuffle under ``shuffle_rng``; the
        others with the device type they belong to)."""
        state: dict[str, Any] = {
            "shuffle_rng": self.shuffle.get_state(),
            "rng_device": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "mining_rng": self.mining.get_state(),
        }
        if self.device.type == "cuda":
            state["device_rng"] = torch.cuda.get_rng_state(self.device)
        elif self.device.type == "mps":
            state["device_rng"] = torch.mps.get_rng_state()
        return state

    def generators(self) -> dict[str, torch.Tensor]:
        """The current generator states by field name, what ``check_train_state`` compares sizes with."""
        return {k: v for k, v in self.state().items() if isinstance(v, torch.Tensor)}

    def restore(self, state: Mapping[str, Any], where: Path) -> None:
        """Restore a checked state (``check_train_state``): the same weights on a CPU, the same to float
        tolerance on a GPU (kernels may sum in another order). The device's streams are restored only
        on the device type they were saved on; a state of an earlier release, or one saved on another
        device type, resumes with fresh streams, and the log says so."""
        self.shuffle.set_state(state["shuffle_rng"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if state.get("rng_device") != self.device.type:
            log.warning(
                "%s: resuming with fresh dropout and mining random streams (%s); the run continues, "
                "but not draw for draw as an uninterrupted one",
                where,
                "saved by an earlier release"
                if "rng_device" not in state
                else f"saved on {state['rng_device']}, resumed on {self.device.type}",
            )
            return
        self.mining.set_state(state["mining_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["device_rng"], self.device)
        elif self.device.type == "mps":
            torch.mps.set_rng_state(state["device_rng"])


def read_last(
    last: Path,
    state_file: Path,
    device: torch.device,
    *,
    table_sha256: str,
    train_config: dict[str, Any],
    encoder: EncoderConfig,
    world_size: int,
) -> tuple[TrajectoryEncoder, dict[str, Any], object]:
    """The last checkpoint of a run (model, card) and its training state as loaded (still unchecked:
    ``check_train_state``), refused unless it belongs to this run.

    Raises:
        DataError: no state file, a card that names no table or another one, an unreadable state.
        ConfigError: another training config or number of processes than this run's.
    """
    if not state_file.is_file():
        raise DataError(f"{last}: nothing to resume (no {state_file.name}); drop --resume to start afresh")
    model, card = load_checkpoint(last, device)
    data = card.get("data")
    trained_on = data.get("table_sha256") if isinstance(data, dict) else None
    if not isinstance(trained_on, str):
        raise DataError(f"{last}: the card does not name the table it was trained on; cannot resume")
    if trained_on != table_sha256:
        raise DataError(f"{last}: was trained on table {trained_on[:12]}, not this one")
    if card.get("train_config") != json.loads(json.dumps(train_config)):
        raise ConfigError(f"{last}: training config differs from this run's; resume with the same flags")
    if card.get("world_size", 1) != world_size:
        raise ConfigError(
            f"{last}: was trained by {card.get('world_size', 1)} process(es), this run has "
            f"{world_size}; resume with the same --nproc-per-node x nodes"
        )
    if model.config != encoder:
        raise DataError(f"{last}: config.json does not match the card's training config; cannot resume")
    try:
        state = torch.load(state_file, weights_only=True, map_location="cpu")
    except Exception as exc:
        # torch.load(weights_only=True) executes no code; whatever a damaged or foreign state file
        # raises (unpickling errors of any kind), the state cannot be resumed from.
        raise DataError(
            f"{state_file}: unreadable training state ({type(exc).__name__}: {exc}); "
            "start afresh with --overwrite"
        ) from exc
    return model, card, state
