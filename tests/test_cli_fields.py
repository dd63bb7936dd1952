"""Flags built from config fields (``trajemb.cli_fields``): one flag per field, old spellings as aliases."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from trajemb import cli
from trajemb.analysis.forecast_command import ForecastCommand
from trajemb.cli_fields import add_config_flags, flag_message, set_field_flags
from trajemb.core.errors import ConfigError
from trajemb.core.fields import Bounds, check_fields, param
from trajemb.data.schema import WindowConfig
from trajemb.data.synth.generate import SynthConfig
from trajemb.serving.bundle_build import BundleConfig
from trajemb.training.model import EncoderConfig
from trajemb.training.train import TrainConfig

#: A value other than the default for each renamed flag (None: a switch).
OLD_VALUES = {
    "--hidden": "64",
    "--layers": "2",
    "--heads": "2",
    "--warmup": "0.25",
    "--augment-noise": "0.5",
    "--augment-short": "0.2",
    "--steps": "30",
    "--stride": "5",
    "--min-speed": "2.5",
    "--scenarios": "7",
    "--av2-serializer": None,
    "--index": "flat",
    "--nprobe": "4",
    "--target-recall": "0.9",
    "--exact-max-rows": "1000",
    "--projection": "none",
    "--projection-sample": "100",
    "--queries": "50",
    "--eval-corpus": "1000",
    "--one-per-track": None,
    "--exclude-scenario-eval": None,
    "--mean-rank": "no",
    "--mean-rank-corpus": "500",
    "--robustness": None,
    "--robustness-queries": "20",
    "--robustness-corpus": "300",
    "--encoder-missing": "mask",
    "--eval": "no",
}
PREFIX = {
    "train": ["train", "--data", "t.parquet", "--out", "run"],
    "prepare": ["prepare", "--av2", "d", "--out", "t.parquet"],
    "synth": ["synth", "--out", "s"],
    "bundle": ["bundle", "--table", "t.parquet", "--checkpoint", "c", "--out", "b"],
}
RENAMED = [
    ("train", cli.TRAIN_RENAMED, cli.train_config),
    ("prepare", cli.WINDOW_RENAMED, cli.window_config),
    ("synth", cli.SYNTH_RENAMED, lambda a: a.config_flags.build(a)),
    ("bundle", cli.BUNDLE_RENAMED, cli.bundle_config),
]


def _flag_of(path: str, command: str) -> str:
    """The flag of a dotted field path: nested fields under their config's name (the encoder's without)."""
    parts = path.split(".")
    if parts[0] == "encoder":
        parts = parts[1:]
    return "--" + "-".join(parts).replace("_", "-")


@pytest.mark.parametrize(
    ("command", "old", "path"), [(c, old, path) for c, table, _ in RENAMED for old, path in table.items()]
)
def test_every_old_spelling_sets_the_same_config_as_the_new_flag(command: str, old: str, path: str) -> None:
    assert old in OLD_VALUES, f"give {old} a test value"
    build = {c: b for c, _, b in RENAMED}[command]
    value = OLD_VALUES[old]
    parser = cli.build_parser()
    new = _flag_of(path, command)
    tail = [] if value in (None, "no") else [value]
    if value == "no":  # a switch whose old spelling people used is its --no- form
        old, new = f"--no-{old[2:]}", f"--no-{new[2:]}"
    by_old = build(parser.parse_args([*PREFIX[command], old, *tail]))
    by_new = build(parser.parse_args([*PREFIX[command], new, *tail]))
    default = build(parser.parse_args(PREFIX[command]))
    assert by_old == by_new != default


def test_old_spellings_are_hidden_from_the_options_and_listed_as_renamed() -> None:
    sub = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, table, _ in RENAMED:
        text = sub[command].format_help()
        options, _, epilog = text.partition("renamed flags")
        for old, path in table.items():
            assert f"  {old} " not in options and old[2:] in epilog, (command, old)
            assert _flag_of(path, command) in options


@pytest.mark.parametrize(
    "cls", [TrainConfig, EncoderConfig, WindowConfig, SynthConfig, ForecastCommand, BundleConfig]
)
def test_every_field_is_a_flag_with_its_help(cls: type) -> None:
    parser = argparse.ArgumentParser()
    flags = add_config_flags(parser, cls, nested={"encoder": ""})
    leaves = _leaves(cls)
    assert set(flags.dests) == leaves
    for action in parser._actions[1:]:
        assert action.help, action.option_strings


def _leaves(cls: type, path: str = "") -> set[str]:
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):  # set from code only (EncoderConfig.window_steps)
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        if dataclasses.is_dataclass(default):
            out |= _leaves(type(default), f"{path}{f.name}.")
        else:
            out.add(f"{path}{f.name}")
    return out


@dataclass(frozen=True)
class _Inner:
    rate_hz: float = param(10.0, help="a rate", bounds=Bounds(0.0, 100.0, low_open=True))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class _Made:
    """A config made here: each kind of field becomes its flag without being named anywhere else."""

    name: str = param(help="required")
    count: int = param(3, help="how many", low=1, high=9)
    mode: Literal["a", "b"] = param("a", help="a mode")
    level: int = param(1, help="from a tuple", choices=(1, 2))
    limit: float | None = param(None, help="optional", low=0.0)
    tags: tuple[str, ...] = param((), help="tags")
    on: bool = param(True, help="a switch")
    inner: _Inner = param(default_factory=_Inner, help="nested")

    def __post_init__(self) -> None:
        check_fields(self)


def test_a_new_field_becomes_a_flag_by_itself() -> None:
    parser = argparse.ArgumentParser()
    flags = add_config_flags(parser, _Made)
    set_field_flags(parser, flags)
    args = parser.parse_args(
        ["--name", "x", "--count", "4", "--mode", "b", "--level", "2", "--limit", "1.5"]
        + ["--tags", "p, q", "--no-on", "--inner-rate-hz", "20"]
    )
    assert flags.build(args) == _Made("x", 4, "b", 2, 1.5, ("p", "q"), False, _Inner(20.0))
    assert flags.build(parser.parse_args(["--name", "x"])) == _Made("x")
    with pytest.raises(SystemExit):  # choices from the Literal and from the tuple
        parser.parse_args(["--name", "x", "--mode", "c"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "x", "--level", "3"])
    text = parser.format_help()
    assert "in [1, 9]" in text and "in (0, 100]" in text and "default 3" in text
    # Bounds are checked by the config, which names the field; the CLI names the flag.
    args = parser.parse_args(["--name", "x", "--inner-rate-hz", "0"])
    with pytest.raises(ConfigError, match=r"rate_hz must be in \(0, 100\], got 0") as caught:
        flags.build(args)
    assert flag_message(str(caught.value), caught.value.fields, args).startswith("--inner-rate-hz must be")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden", "2"], "--hidden must be in [4, 16384], got 2"),
        (["--d-model", "2"], "--d-model must be in [4, 16384], got 2"),
        (
            ["--batch-size", "1000", "--neighbors-per-seed", "3"],
            "--neighbors-per-seed 3 must divide --batch-size 1000",
        ),
        (["--augment-noise", "-1"], "--augment-noise must be in [0, 100], got -1"),
        (["--augment-noise-m", "-1"], "--augment-noise-m must be in [0, 100], got -1"),
        (["--history-targets", "window"], "--history-targets window needs --history-steps (a history model)"),
    ],
)
def test_errors_name_the_flag_as_typed(
    argv: list[str], message: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main([*PREFIX["train"], *argv])
    err = capsys.readouterr().err
    assert status == 2 and err == f"trajemb: error: {message}\n"


def test_k_has_one_bound_and_its_defaults() -> None:
    from trajemb.analysis.forecast import ForecastConfig
    from trajemb.analysis.uniqueness import UniquenessConfig
    from trajemb.core.fields import K_MAX, K_MODES_DEFAULT, K_NEIGHBORS_DEFAULT
    from trajemb.serving.explore import NeighborOptions

    assert NeighborOptions().k == UniquenessConfig().k == K_NEIGHBORS_DEFAULT
    assert TrainConfig().val_k == ForecastConfig().k == ForecastCommand("b", "q").k == K_MODES_DEFAULT
    for make in (
        lambda k: NeighborOptions(k=k),
        lambda k: TrainConfig(val_k=k),
        lambda k: ForecastConfig(k=k, rerank=0),
        lambda k: UniquenessConfig(k=k),
    ):
        make(K_MAX)
        with pytest.raises(ConfigError, match=f"must be in \\[[01], {K_MAX}\\]"):
            make(K_MAX + 1)
