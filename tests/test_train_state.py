"""A crafted ``train_state.pt`` is refused field by field before the first step, never half-loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train import config, killed_in_epoch_2

from trajemb.core.errors import DataError
from trajemb.training.train import TRAIN_STATE_FILE, Trainer
from trajemb.training.train_state import check_train_state

Edit = Callable[[dict[str, Any]], None]


def _set(key: str, value: object) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        state[key] = value

    return edit


def _scheduler(key: str, value: object) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        state["scheduler"][key] = value

    return edit


def _moment(key: str, value: Callable[[torch.Tensor], object]) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        entry = state["optimizer"]["state"][0]
        entry[key] = value(entry[key])

    return edit


def _group(key: str, value: object) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        state["optimizer"]["param_groups"][0][key] = value

    return edit


CASES: list[tuple[str, Edit, str]] = [
    ("negative epoch", _set("epoch", -1), "epoch -1 is not an epoch index"),
    ("fractional epoch", _set("epoch", 0.5), "epoch 0.5 is not an epoch index"),
    ("epoch as a float", _set("epoch", 0.0), "epoch 0.0 is not an epoch index"),
    ("epoch as a bool", _set("epoch", False), "epoch False is not an epoch index"),
    (
        "epoch ahead of its checkpoint",
        _set("epoch", 1),
        "the state is after epoch 2 but last/card.json says epoch 1",
    ),
    ("best minADE NaN", _set("best_min_ade", float("nan")), "best_min_ade nan is not a distance"),
    ("best minADE negative", _set("best_min_ade", -3.0), "best_min_ade -3.0 is not a distance"),
    (
        "moments of the wrong shape",
        _moment("exp_avg", lambda t: torch.zeros(3)),
        "optimizer exp_avg of parameter 0",
    ),
    (
        "non-finite moments",
        _moment("exp_avg_sq", lambda t: t * float("inf")),
        "optimizer exp_avg_sq of parameter 0",
    ),
    (
        "absurd step count",
        _moment("step", lambda t: torch.tensor(2.0**40)),
        "optimizer step count 1099511627776.0",
    ),
    ("another weight decay", _group("weight_decay", 0.5), "optimizer field weight_decay is 0.5"),
    (
        "absurd scheduler counter",
        _scheduler("last_epoch", 10**12),
        "scheduler counters last_epoch 1000000000000",
    ),
    ("another schedule", _scheduler("total_steps", 7), "scheduler field total_steps is 7"),
    ("missing field", lambda s: s.pop("scheduler"), "training state lacks scheduler"),
    (
        "shuffle state of the wrong size",
        _set("shuffle_rng", torch.zeros(16, dtype=torch.uint8)),
        "shuffle_rng is torch.uint8 (16,)",
    ),
    (
        "mining state of the wrong type",
        _set("mining_rng", torch.zeros(3)),
        "mining_rng is torch.float32 (3,)",
    ),
    ("not a dict", lambda s: s.clear(), "training state lacks optimizer"),
]


@pytest.fixture(scope="module")
def stopped_run(small_synth_table: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("state") / "run"
    killed_in_epoch_2(config(epochs=3), small_synth_table, out)
    return out


def test_every_crafted_field_is_refused_with_its_name(stopped_run: Path, small_synth_table: Path) -> None:
    """Checked against a fresh trainer's own optimiser, scheduler and generators (the references)."""
    trainer = Trainer(small_synth_table, config(epochs=3), stopped_run / "elsewhere", progress=False)
    original = torch.load(stopped_run / "last" / TRAIN_STATE_FILE, weights_only=True)
    generators = {
        "shuffle_rng": trainer.shuffle.get_state(),
        "torch_rng": torch.get_rng_state(),
        "mining_rng": trainer.mining_gen.get_state(),
    }

    def check(state: object) -> object:
        return check_train_state(
            state,
            Path("train_state.pt"),
            checkpoint_epoch=1,
            epochs=3,
            steps_per_epoch=trainer.steps_per_epoch,
            optimizer=trainer.optimizer,
            scheduler=trainer.scheduler,
            generators=generators,
            device_type="cpu",
        )

    assert check(original).start_epoch == 1  # type: ignore[attr-defined]
    for name, edit, message in CASES:
        state = torch.load(stopped_run / "last" / TRAIN_STATE_FILE, weights_only=True)
        edit(state)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check(state)
        assert name


def test_cli_refuses_a_crafted_state_before_the_first_step(
    stopped_run: Path, small_synth_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from trajemb.cli import main

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    path = run / "last" / TRAIN_STATE_FILE
    state = torch.load(path, weights_only=True)
    state["epoch"] = 0.5
    torch.save(state, path)
    before = {f: f.read_bytes() for f in run.rglob("*") if f.is_file()}
    args = ["-q", "train", "--data", str(small_synth_table), "--out", str(run), "--resume", "--epochs", "3"]
    args += ["--batch-size", "256", "--lr", "0.003", "--val-fraction", "0.2", "--device", "cpu"]
    args += ["--embedding-dim", "8", "--hidden", "32", "--layers", "1", "--heads", "4", "--dropout", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"trajemb: error: {path}: epoch 0.5 is not an epoch index (an integer >= 0); start afresh with --overwrite"
    ]
    assert {f: f.read_bytes() for f in run.rglob("*") if f.is_file()} == before
