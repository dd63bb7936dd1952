"""A short CPU run lowers the loss, writes checkpoints and metrics, resumes; bad input is refused."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trajemb.core.errors import ConfigError, DataError
from trajemb.data.store import METADATA_KEY, read_table
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import embed_windows
from trajemb.training.model import EncoderConfig
from trajemb.training.train import TrainConfig, Trainer, split_by_scenario, train

TINY = EncoderConfig(embedding_dim=8, d_model=32, num_layers=1, num_heads=4, dropout=0.0)


def config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "encoder": TINY,
        "epochs": 4,
        "batch_size": 256,
        "lr": 3e-3,
        "val_fraction": 0.2,
        "device": "cpu",
    }
    return TrainConfig(**(base | kw))  # type: ignore[arg-type]


def killed_in_epoch_2(recipe: TrainConfig, table: Path, out: Path) -> None:
    """Train until the second validation, then die: last/ and metrics.csv hold epoch 1 only."""
    real_validate = Trainer.validate
    calls = {"n": 0}

    def validate_then_die(self: Trainer) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "validate", validate_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(recipe, table, out, progress=False)


def assert_same_weights(run_a: Path, run_b: Path, rtol: float = 0.0, atol: float = 0.0) -> None:
    """The last checkpoints of two runs hold the same weights (exactly, by default)."""
    a, b = load_checkpoint(run_a / "last")[0].state_dict(), load_checkpoint(run_b / "last")[0].state_dict()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=rtol, atol=atol)


def test_short_run_lowers_loss_and_writes_artefacts(small_synth_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    best = train(config(), small_synth_table, out, progress=False)
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert float(rows[0]["triplets_per_batch"]) > 50
    model, card = load_checkpoint(out / "best")
    assert card["epoch"] == best["epoch"]
    assert card["data"]["table_sha256"] == read_table(small_synth_table).content_hash
    assert card["similarity"] == "cosine" and card["embedding_dim"] == 8 and card["num_parameters"] > 0
    assert 0.0 < card["threshold"] < 1.0 and card["threshold_calibrated"] is True
    assert card["metrics"]["val_minADE@6"] == pytest.approx(best["val_minADE@6"])
    # A reloaded checkpoint gives identical embeddings.
    xy = read_table(small_synth_table).xy_agent[:50]
    again, _ = load_checkpoint(out / "best")
    np.testing.assert_array_equal(embed_windows(model, xy), embed_windows(again, xy))


@pytest.mark.slow
def test_resume_continues(synth_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    dropout = EncoderConfig(
        embedding_dim=8, d_model=32, num_layers=1, num_heads=4, dropout=0.2, input_dropout=0.1
    )
    killed_in_epoch_2(config(epochs=2, encoder=dropout, mining="random"), synth_table, out)
    with pytest.raises(ConfigError, match="training config differs"):
        Trainer(synth_table, config(epochs=2, encoder=dropout, mining="random", lr=1e-3), out, resume=True)
    trainer = Trainer(
        synth_table, config(epochs=2, encoder=dropout, mining="random"), out, resume=True, progress=False
    )
    assert trainer.start_epoch == 1
    trainer.fit()
    with open(out / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]
    # Random mining and dropout draw from streams that the last checkpoint carries: the resumed run
    # ends with the weights of an uninterrupted one.
    train(config(epochs=2, encoder=dropout, mining="random"), synth_table, tmp_path / "whole", progress=False)
    assert_same_weights(tmp_path / "whole", out)
    # Resuming a finished run is refused before any work, saying where its result is.
    with pytest.raises(ConfigError, match=r"already finished its 2 epoch\(s\); nothing to resume"):
        Trainer(
            synth_table, config(epochs=2, encoder=dropout, mining="random"), out, resume=True, progress=False
        )
    with pytest.raises(DataError, match="nothing to resume"):
        Trainer(synth_table, config(), tmp_path / "fresh", resume=True, progress=False)


@pytest.mark.slow
def test_resume_from_a_state_without_random_streams_says_so(
    synth_table: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file of an earlier release (or one saved on another device type) has no usable random
    streams: the run resumes, and the log says it is not draw for draw the uninterrupted one."""
    out = tmp_path / "run"
    killed_in_epoch_2(config(epochs=2), synth_table, out)
    path = out / "last" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    assert state["rng_device"] == "cpu" and {"torch_rng", "mining_rng"} <= set(state)
    torch.save({k: v for k, v in state.items() if k not in ("rng_device", "torch_rng", "mining_rng")}, path)
    with caplog.at_level("WARNING", logger="trajemb.training.train"):
        Trainer(synth_table, config(epochs=2), out, resume=True, progress=False).fit()
    assert "fresh dropout and mining random streams (saved by an earlier release)" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_resume_on_cuda_matches_an_uninterrupted_run(synth_table: Path, tmp_path: Path) -> None:
    """On CUDA (bf16 autocast, the device's dropout generator, mining on the device) a run killed in
    epoch 2 and resumed ends where an uninterrupted one does."""
    recipe = config(
        epochs=2,
        device="cuda",
        mining="random",
        encoder=EncoderConfig(
            embedding_dim=8, d_model=32, num_layers=1, num_heads=4, dropout=0.2, input_dropout=0.1
        ),
    )
    killed_in_epoch_2(recipe, synth_table, tmp_path / "b")
    Trainer(synth_table, recipe, tmp_path / "b", resume=True, progress=False).fit()
    train(recipe, synth_table, tmp_path / "a", progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b", rtol=1e-4, atol=1e-5)  # CUDA sums in any order


def test_fft_and_mining_strategies_run(small_synth_table: Path, tmp_path: Path) -> None:
    for similarity, mining in (("fft", "hard"), ("cosine", "semi-hard")):
        best = train(
            config(epochs=1, similarity=similarity, mining=mining),
            small_synth_table,
            tmp_path / mining,
            progress=False,
        )
        assert np.isfinite(best["val_minADE@6"])


def test_split_is_by_scenario(synth_table: Path) -> None:
    table = read_table(synth_table)
    split = split_by_scenario(table, 0.2)
    train_s = set(table.meta["scenario_id"].iloc[split.train])
    val_s = set(table.meta["scenario_id"].iloc[split.val])
    assert train_s.isdisjoint(val_s) and val_s
    assert len(split.train) + len(split.val) == len(table)


def test_table_smaller_than_a_batch(synth_table: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fewer than one batch of 100000"):
        Trainer(synth_table, config(batch_size=100_000), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_nan_in_table(synth_table: Path, tmp_path: Path) -> None:
    table = pq.read_table(synth_table)
    xy = table.column("xy_agent").combine_chunks()
    values = xy.flatten().to_numpy().copy()
    values[7] = np.nan
    bad = table.set_column(
        table.schema.get_field_index("xy_agent"),
        "xy_agent",
        pa.FixedSizeListArray.from_arrays(pa.array(values), xy.type.list_size),
    )
    metadata = {METADATA_KEY: pq.read_metadata(synth_table).metadata[METADATA_KEY]}
    pq.write_table(bad.replace_schema_metadata(metadata), tmp_path / "bad.parquet")
    with pytest.raises(
        DataError,
        match=r"1 window\(s\) contain NaN, infinite or absurd positions \(beyond 1e\+07 m; first: synthetic/",
    ):
        Trainer(tmp_path / "bad.parquet", config(), tmp_path / "run", progress=False)
    good = read_table(synth_table)  # a table in memory (a notebook's) is checked by the same rule
    xy = good.xy_agent.copy()
    xy[3, 5, 1] = np.inf
    with pytest.raises(
        DataError,
        match=r"the table: 1 window\(s\) contain NaN, infinite or absurd positions \(beyond 1e\+07 m",
    ):
        Trainer(replace(good, xy_agent=xy), config())


def test_bad_flags() -> None:
    with pytest.raises(ConfigError, match="similarity must be one of cosine, fft"):
        config(similarity="dtw")
    with pytest.raises(ConfigError, match="mining must be one of"):
        config(mining="hardest")


def test_history_model_card_and_refusals(history_checkpoint: Path, synth_table: Path, tmp_path: Path) -> None:
    """Issue 18: a history model's card says what it reads; a history that leaves no future is refused
    before the run folder is touched."""
    card = json.loads((history_checkpoint / "card.json").read_text())
    assert card["history_steps"] == 30 and card["train_config"]["history_steps"] == 30
    assert card["data"]["num_steps"] == 60  # the table's windows, of which the model reads 30 steps
    with pytest.raises(ConfigError, match="history_steps must be in"):
        config(history_steps=1)
    with pytest.raises(ConfigError, match="history_steps 60 does not fit 60-step windows"):
        Trainer(synth_table, config(history_steps=60), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="history_targets window needs history_steps"):
        config(history_targets="window")
    assert not (tmp_path / "run").exists()


def test_history_model_with_window_targets(synth_table: Path, tmp_path: Path) -> None:
    """The loss reads whole windows in the histories' last-state frame; the encoder reads histories."""
    from trajemb.data.history import history_input, window_in_history_frame

    c = config(
        loss="soft_neighbors", history_steps=30, history_targets="window", batches="neighborhoods", epochs=1
    )
    trainer = Trainer(synth_table, c, tmp_path / "run", progress=False)
    raw = read_table(synth_table).xy_agent
    np.testing.assert_allclose(trainer.xy.numpy(), history_input(raw, 30))
    np.testing.assert_allclose(trainer.target_xy.numpy(), window_in_history_frame(raw, 30))
    np.testing.assert_allclose(trainer.target_xy.numpy()[:, :30], trainer.xy.numpy(), atol=1e-5)
    best = trainer.fit()
    assert np.isfinite(best["val_minADE@6"])
    card = json.loads((tmp_path / "run" / "best" / "card.json").read_text())
    assert card["train_config"]["history_targets"] == "window" and card["history_steps"] == 30


def test_cli_train(small_synth_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trajemb.cli import main

    rc = main(
        [
            "-q",
            "train",
            "--data",
            str(small_synth_table),
            "--out",
            str(tmp_path / "cli"),
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--hidden",
            "32",
            "--embedding-dim",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "val minADE@6" in capsys.readouterr().out
    model, _ = load_checkpoint(tmp_path / "cli" / "best")
    assert model.config.embedding_dim == 4 and model.config.d_model == 32
    assert torch.isfinite(model(torch.zeros(1, 60, 2))).all()


def test_cli_train_pca_residual(synth_table: Path, tmp_path: Path) -> None:
    """``--linear-base pca --linear-base-training frozen`` reach the configs; without the soft-neighbour
    loss the flag is refused in one line (exit 2)."""
    from trajemb.cli import main

    common = ["-q", "train", "--data", str(synth_table), "--epochs", "1", "--batch-size", "256"]
    common += ["--hidden", "32", "--embedding-dim", "4", "--device", "cpu", "--linear-base", "pca"]
    assert main([*common, "--out", str(tmp_path / "triplet")]) == 2
    soft = ["--loss", "soft_neighbors", "--no-normalize", "--linear-base-training", "frozen"]
    assert main([*common, *soft, "--out", str(tmp_path / "cli")]) == 0
    model, card = load_checkpoint(tmp_path / "cli" / "last")
    assert model.config.linear_base == "pca" and model.config.window_steps == 60
    assert card["train_config"]["linear_base_training"] == "frozen"


def test_cli_resume_refuses_a_damaged_training_state(
    small_synth_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training state that is not a state, or whose random streams are not generator states: one
    line naming the file, exit status 2, and the run folder left as it was."""
    from trajemb.cli import main

    args = [
        "-q",
        "train",
        "--data",
        str(small_synth_table),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--hidden",
        "32",
        "--embedding-dim",
        "4",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    capsys.readouterr()
    path = tmp_path / "run" / "last" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    for damaged in (b"not a torch file", {**state, "mining_rng": torch.zeros(3)}):
        if isinstance(damaged, bytes):
            path.write_bytes(damaged)
        else:
            torch.save(damaged, path)
        before = {f: f.read_bytes() for f in (tmp_path / "run").rglob("*") if f.is_file()}
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{path}: " in err and "start afresh with --overwrite" in err
        assert {f: f.read_bytes() for f in (tmp_path / "run").rglob("*") if f.is_file()} == before


def test_zero_triplets_is_an_error_not_a_best_checkpoint(small_synth_table: Path, tmp_path: Path) -> None:
    """With threshold -1 every pair is positive: no negatives, no triplets, nothing learned."""
    from trajemb.training.train import TrainingError

    with pytest.raises(TrainingError, match=r"none of the first \d+ batches yielded a triplet"):
        train(config(epochs=1, threshold=-1.0), small_synth_table, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


def test_existing_run_needs_resume_or_overwrite(small_synth_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(epochs=1), small_synth_table, out, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"already holds a training run .*--resume .*--overwrite"):
        Trainer(small_synth_table, config(epochs=1), out, progress=False)
    with pytest.raises(ConfigError, match="give one of them"):
        Trainer(small_synth_table, config(epochs=1), out, resume=True, overwrite=True, progress=False)
    train(config(epochs=1, lr=1e-3), small_synth_table, out, progress=False, overwrite=True)
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1]  # the old run's row is gone
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-3
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files were replaced
    assert json.loads((out / "trajemb_run.json").read_text())["kind"] == "trajemb training run"


def test_refusals_come_before_any_work(synth_table: Path, tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="non-empty folder that trajemb did not write"):
        Trainer(synth_table, config(), tmp_path / "theirs", progress=False)
    with pytest.raises(ConfigError, match="--device 'bogus' is not a device"):
        Trainer(synth_table, config(device="bogus"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="too few to retrieve val_k 1000 neighbours"):
        Trainer(synth_table, config(val_k=1000), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["thesis.tex"]


@pytest.mark.slow
def test_soft_neighbour_recipe_trains_and_resumes_identically(synth_table: Path, tmp_path: Path) -> None:
    """The soft-neighbour loss with neighbourhood batches, augmentation, dropout and unnormalised
    embeddings: it learns, and a run killed in epoch 2 and resumed ends with the weights of an
    uninterrupted one (batches and augmentations are drawn per epoch; the dropout and mining streams
    are saved with the last checkpoint)."""
    from trajemb.training.augment import AugmentConfig

    encoder = EncoderConfig(
        embedding_dim=4,
        d_model=32,
        num_layers=1,
        num_heads=4,
        dropout=0.1,
        input_dropout=0.1,
        normalize=False,
    )
    recipe = config(
        encoder=encoder,
        epochs=2,
        loss="soft_neighbors",
        batches="neighborhoods",
        neighbors_per_seed=4,
        hard_share=0.3,
        augment=AugmentConfig(prob=0.5, noise_m=1.0, drop=0.4, short_prob=0.1),
    )
    best = train(recipe, synth_table, tmp_path / "a", progress=False)
    with open(tmp_path / "a" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"]) and best["val_minADE@6"] < 5.0
    model, card = load_checkpoint(tmp_path / "a" / "last")
    assert card["loss"] == "soft_neighbors" and card["threshold"] is None and not model.config.normalize
    killed_in_epoch_2(recipe, synth_table, tmp_path / "b")
    Trainer(synth_table, recipe, tmp_path / "b", resume=True, progress=False).fit()
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ConfigError, match="mining_scope global"):
        config(loss="soft_neighbors", mining_scope="global")


def test_card_records_the_revision_the_run_started_from(small_synth_table: Path, tmp_path: Path) -> None:
    """Edits to the tree while a run trains (the shipped-checkpoint recipe copying into checkpoints/)
    must not mark its cards dirty: the revision is taken once, when the run starts."""
    trainer = Trainer(small_synth_table, config(epochs=1), tmp_path / "run", progress=False)
    started = trainer.git_revision
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("trajemb.training.train.git_revision", lambda *_: "edited-dirty")
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "best")[1]["git_revision"] == started != "edited-dirty"


def test_one_cycle_warmup_never_divides_by_zero() -> None:
    """OneCycleLR divides by (warm-up steps - 1): 10 steps at warm-up 0.1 used to fail."""
    from trajemb.training.train import _one_cycle_warmup

    for total in (1, 2, 3, 5, 10, 20, 101):
        for fraction in (0.01, 0.1, 0.5, 0.9):
            opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
            pct = _one_cycle_warmup(fraction, total)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=pct)
            for _ in range(total):
                opt.step()
                sched.step()
            assert 0 < pct < 1
    assert _one_cycle_warmup(0.1, 1000) == 0.1  # long runs keep the asked-for warm-up


def test_a_trainer_from_a_notebook_trains_in_memory(small_synth_table: Path, tmp_path: Path) -> None:
    """``Trainer(table, config)``: a table already loaded, no run folder; it trains and writes nothing."""
    table = read_table(small_synth_table)
    trainer = Trainer(table, config(epochs=1))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    best = trainer.fit()
    assert best["epoch"] == 1 and np.isfinite(best["val_minADE@6"])
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert trainer.out is None and not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="need a run folder"):
        Trainer(table, config(), resume=True)
    with pytest.raises(TypeError, match="the table comes first"):
        Trainer(config(), small_synth_table, tmp_path / "run")  # type: ignore[arg-type]


def test_pca_residual_encoder_starts_at_pca_and_trains(small_synth_table: Path, tmp_path: Path) -> None:
    """``--linear-base pca``: before the first step the encoder's embeddings are PCA of the training
    windows (sklearn's, up to the scale fitted to the loss); a frozen base stays there while the
    correction trains; the card records the steps it reads; the triplet loss is refused."""
    from sklearn.decomposition import PCA

    from trajemb.training.augment import AugmentConfig

    encoder = EncoderConfig(
        embedding_dim=4,
        d_model=32,
        num_layers=1,
        num_heads=4,
        dropout=0.0,
        normalize=False,
        linear_base="pca",
    )
    recipe = config(
        encoder=encoder,
        epochs=2,
        loss="soft_neighbors",
        batches="neighborhoods",
        hard_share=0.3,
        augment=AugmentConfig(prob=0.5, noise_m=1.0, drop=0.4, short_prob=0.1),
        linear_base_training="frozen",
    )
    trainer = Trainer(small_synth_table, recipe, tmp_path / "run", progress=False)
    table = trainer.table
    flat = table.xy_agent.reshape(len(table), -1).astype(np.float64)
    pca = PCA(n_components=4).fit(flat[trainer.split.train])
    z = embed_windows(trainer.model, table.xy_agent)
    expected = pca.transform(flat)
    scale = np.linalg.norm(z) / np.linalg.norm(expected)
    # Components are unique up to sign.
    signs = np.sign((z * expected).sum(axis=0))
    np.testing.assert_allclose(z, scale * expected * signs, atol=1e-3 * np.abs(z).max())
    assert trainer.model.linear_base is not None
    base_before = trainer.model.linear_base.weight.detach().clone()
    trainer.fit()
    model, card = load_checkpoint(tmp_path / "run" / "last")
    assert model.config.window_steps == table.num_steps == card["train_config"]["encoder"]["window_steps"]
    assert card["train_config"]["linear_base_training"] == "frozen"
    assert model.linear_base is not None and torch.equal(model.linear_base.weight, base_before)
    assert not np.allclose(embed_windows(model, table.xy_agent), z, atol=1e-3)  # the correction learned
    with pytest.raises(ConfigError, match="soft_neighbors"):
        config(encoder=encoder)
    # Without a linear base the train config holds exactly the keys of earlier releases.
    assert (
        "linear_base_training" not in config().to_dict()
        and "linear_base" not in config().to_dict()["encoder"]
    )


def _distill_recipe(**kw: object) -> TrainConfig:
    from trajemb.training.augment import AugmentConfig

    encoder = EncoderConfig(
        embedding_dim=4,
        d_model=32,
        num_layers=1,
        num_heads=4,
        dropout=0.0,
        normalize=False,
        linear_base="pca",
    )
    recipe: dict[str, object] = {
        "encoder": encoder,
        "epochs": 1,
        "loss": "soft_neighbors",
        "augment": AugmentConfig(prob=0.5, noise_m=1.0, drop=0.4, short_prob=0.1, missing="complete"),
        "distill_weight": 1.0,
        "soft_weight": 0.0,
        "soft_temperature": 2.0,
        "linear_base_training": "frozen",
    }
    return config(**(recipe | kw))


def test_distillation_at_zero_correction_is_the_pca_codes_distance(small_synth_table: Path) -> None:
    """``--distill-weight``: before the first step a clean batch costs nothing, and a perturbed one costs
    the mean squared distance between sklearn's PCA codes of the perturbed and the clean windows (times
    the base's scale, over the temperature); ``soft_weight`` adds that share of the soft-neighbour loss."""
    from sklearn.decomposition import PCA

    trainer = Trainer(small_synth_table, _distill_recipe(), progress=False)
    rows = torch.from_numpy(trainer.split.train[:256])
    gen = torch.Generator().manual_seed(0)
    loss, anchors = trainer.batch_loss(rows, gen)  # clean inputs (no augmentation outside training steps)
    assert float(loss.detach()) == 0.0 and anchors == 256
    clean = trainer.xy[rows]
    noisy = clean + torch.from_numpy(np.random.default_rng(1).normal(0.0, 0.7, clean.shape)).float()
    groups = trainer.groups[rows]
    with torch.no_grad():
        z = trainer.model(noisy)
        got = float(trainer.loss(z, clean, groups, gen)[0])
    flat = trainer.table.xy_agent.reshape(len(trainer.table), -1).astype(np.float64)
    pca = PCA(n_components=4).fit(flat[trainer.split.train])
    assert trainer.model.linear_base is not None
    scale = float(trainer.model.linear_base.weight.double().norm(dim=1).mean())  # PCA's rows are unit vectors
    diff = pca.transform(noisy.reshape(256, -1).double().numpy()) - pca.transform(
        clean.reshape(256, -1).numpy()
    )
    expected = scale**2 * (diff**2).sum(axis=1).mean() / 2.0
    assert got == pytest.approx(expected, rel=1e-3)
    tuned = Trainer(
        small_synth_table, _distill_recipe(soft_weight=0.5, linear_base_training="fine_tune"), progress=False
    )
    with torch.no_grad():
        z = tuned.model(noisy)
        soft = float(tuned.soft_loss(z, clean, groups, gen)[0])
        assert float(tuned.loss(z, clean, groups, gen)[0]) == pytest.approx(got + 0.5 * soft, rel=1e-4)
    # A fine-tuned base moves; the teacher stays at PCA.
    assert tuned.model.linear_base is not None and tuned.teacher is not None
    teacher = tuned.teacher.weight.detach().clone()
    tuned.fit()
    assert torch.equal(tuned.teacher.weight, teacher)
    assert not torch.equal(tuned.model.linear_base.weight, teacher)


def test_cli_train_distillation_flags(small_synth_table: Path, tmp_path: Path) -> None:
    """``--distill-weight``, ``--soft-weight`` and ``--augment-missing`` reach the card; distillation without
    a linear base, or a soft weight without distillation, is refused in one line (exit 2); without them
    the train config holds the keys of earlier releases."""
    from trajemb.cli import main

    common = ["-q", "train", "--data", str(small_synth_table), "--epochs", "1", "--batch-size", "256"]
    common += ["--hidden", "32", "--embedding-dim", "4", "--device", "cpu", "--loss", "soft_neighbors"]
    common += ["--no-normalize", "--augment-prob", "0.5", "--augment-drop", "0.4"]
    distill = ["--distill-weight", "1.0", "--soft-weight", "0.1", "--augment-missing", "complete"]
    assert main([*common, *distill, "--out", str(tmp_path / "no-base")]) == 2
    assert main([*common, "--soft-weight", "0.1", "--out", str(tmp_path / "no-distill")]) == 2
    assert main([*common, *distill, "--linear-base", "pca", "--out", str(tmp_path / "cli")]) == 0
    _, card = load_checkpoint(tmp_path / "cli" / "last")
    train_config = card["train_config"]
    assert (train_config["distill_weight"], train_config["soft_weight"]) == (1.0, 0.1)
    assert train_config["augment"]["missing"] == "complete"
    assert not {"distill_weight", "soft_weight"} & set(config().to_dict())
    assert "missing" not in config().to_dict()["augment"]


def test_distillation_run_resumes_to_the_same_weights(small_synth_table: Path, tmp_path: Path) -> None:
    """A distillation run with a fine-tuned base, killed in epoch 2 and resumed, ends with the weights of
    an uninterrupted run: the resumed run fits its fixed PCA teacher again rather than distilling to
    the base it trained."""
    recipe = _distill_recipe(epochs=2, soft_weight=0.1, linear_base_training="fine_tune")
    train(recipe, small_synth_table, tmp_path / "a", progress=False)
    killed_in_epoch_2(recipe, small_synth_table, tmp_path / "b")
    Trainer(small_synth_table, recipe, tmp_path / "b", resume=True, progress=False).fit()
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_fine_tuning_starts_from_a_checkpoint(small_synth_table: Path, tmp_path: Path) -> None:
    """``--init-from``: the run's first weights are the checkpoint's, not a fresh initialisation, its card
    says where they came from; a checkpoint of another encoder, a linear base or a missing folder is
    refused before any work."""
    first = tmp_path / "first"
    train(config(epochs=1), small_synth_table, first, progress=False)
    start = load_checkpoint(first / "last")[0].state_dict()
    table = read_table(small_synth_table)
    tuned = Trainer(table, config(epochs=1, seed=5, init_from=str(first / "last")))
    for name, value in start.items():
        torch.testing.assert_close(tuned.model.state_dict()[name], value, rtol=0, atol=0)
    fresh = Trainer(table, config(epochs=1, seed=5))
    assert any(not torch.equal(fresh.model.state_dict()[n], v) for n, v in start.items())
    out = tmp_path / "tuned"
    train(config(epochs=1, init_from=str(first / "last")), small_synth_table, out, progress=False)
    assert load_checkpoint(out / "last")[1]["train_config"]["init_from"] == str(first / "last")
    assert "init_from" not in load_checkpoint(first / "last")[1]["train_config"]  # earlier releases' keys

    with pytest.raises(ConfigError, match=r"embedding_dim 8 \(flags: 4\)"):
        Trainer(table, config(encoder=replace(TINY, embedding_dim=4), init_from=str(first / "last")))
    Trainer(
        table, config(encoder=replace(TINY, dropout=0.3), init_from=str(first / "last"))
    )  # regularisation
    with pytest.raises(ConfigError, match="trained with history_steps 0"):
        Trainer(table, config(history_steps=30, init_from=str(first / "last")))
    with pytest.raises(ConfigError, match="linear_base pca starts from PCA"):
        config(
            encoder=replace(TINY, linear_base="pca", normalize=False),
            loss="soft_neighbors",
            init_from=str(first / "last"),
        )
    with pytest.raises(DataError, match="checkpoint folder not found"):  # before the table is read
        Trainer(tmp_path / "no-table.parquet", config(init_from=str(tmp_path / "none")), tmp_path / "never")
    assert not (tmp_path / "never").exists()
