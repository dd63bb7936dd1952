"""The training state a run resumes from (``last/train_state.pt``), checked field by field first.

``torch.load(weights_only=True)`` executes no code, but what it returns is still untrusted: a state of
another run, a hand-edited one or a damaged one can hold an epoch that is negative, fractional or
ahead of its checkpoint, optimiser moments of the wrong shape, scheduler counters past the schedule,
or random-generator states of the wrong size. Loaded as they are, such values fail with a traceback
after training has started, or silently skip epochs. ``check_train_state`` compares every field with
what this run's own model, optimiser, scheduler and generators hold before the first step, and
returns the values to resume from; anything else is one ``DataError`` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trajemb.errors import DataError

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
