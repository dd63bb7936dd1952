"""Checkpoints rebuild the model alone, load without code execution, and refuse mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trajemb.core.errors import DataError
from trajemb.training.checkpoint import load_checkpoint, save_checkpoint
from trajemb.training.model import EncoderConfig, TrajectoryEncoder

REPO = Path(__file__).resolve().parents[1]


def make(tmp_path: Path) -> tuple[TrajectoryEncoder, Path]:
    torch.manual_seed(0)
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=8, d_model=32)).eval()
    folder = tmp_path / "ckpt"
    save_checkpoint(model, folder, {"note": "test"})
    return model, folder


def test_round_trip_gives_identical_embeddings(tmp_path: Path) -> None:
    model, folder = make(tmp_path)
    loaded, card = load_checkpoint(folder)
    xy = torch.randn(6, 60, 2) * 10
    with torch.no_grad():
        assert torch.equal(model(xy), loaded(xy))
    assert card["note"] == "test" and card["format"] == "trajemb-checkpoint/1"
    assert json.loads((folder / "config.json").read_text())["embedding_dim"] == 8


def test_config_not_matching_weights(tmp_path: Path) -> None:
    _, folder = make(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["embedding_dim"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"weights do not match config\.json \(shape mismatch"):
        load_checkpoint(folder)
    config["num_layers"] = 2
    config["embedding_dim"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="missing"):
        load_checkpoint(folder)


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "card.json"])
def test_missing_file(tmp_path: Path, victim: str) -> None:
    _, folder = make(tmp_path)
    (folder / victim).unlink()
    with pytest.raises(DataError, match=f"missing {victim}"):
        load_checkpoint(folder)


def test_corrupt_weights_and_bad_config(tmp_path: Path) -> None:
    _, folder = make(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(DataError, match="unreadable weights"):
        load_checkpoint(folder)
    (folder / "config.json").write_text('{"d_model": 30, "num_heads": 4}')
    with pytest.raises(DataError, match="invalid encoder config"):
        load_checkpoint(folder)
    with pytest.raises(DataError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nope")


def test_failed_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, folder = make(tmp_path)
    before = (folder / "model.safetensors").read_bytes()
    import trajemb.training.checkpoint as ckpt

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, folder, {})
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_files_get_the_modes_the_umask_gives(tmp_path: Path) -> None:
    """Checkpoints are shared: the weights too are 0644 under umask 022, not 0600."""
    import os

    old = os.umask(0o022)
    try:
        _, folder = make(tmp_path)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == dict.fromkeys(
        ("model.safetensors", "config.json", "card.json"), 0o644
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "checkpoints").iterdir() if p.is_dir()))
def test_shipped_checkpoints_load_bit_for_bit(name: str, tmp_path: Path) -> None:
    """Every shipped checkpoint loads with the weights its file holds, and saving it again writes the
    same config.json (an encoder without a linear base keeps the keys of earlier releases)."""
    from safetensors.torch import load_file

    folder = REPO / "checkpoints" / name
    model, _ = load_checkpoint(folder)
    stored = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    assert set(stored) == set(state)
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
    save_checkpoint(model, tmp_path / name, {})
    config_text = (folder / "config.json").read_text()
    assert json.loads((tmp_path / name / "config.json").read_text()) == json.loads(config_text)
    if model.config.linear_base == "none":
        assert (tmp_path / name / "config.json").read_text() == config_text
