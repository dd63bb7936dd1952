"""Encoder shapes, normalisation, padding masks and the paper's model sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.training.model import EncoderConfig, TrajectoryEncoder, count_parameters


def test_output_is_unit_norm() -> None:
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=4, d_model=32)).eval()
    z = model(torch.randn(5, 60, 2) * 10)
    assert z.shape == (5, 4)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))


def test_padding_is_ignored() -> None:
    torch.manual_seed(0)
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=8, d_model=32, num_layers=2)).eval()
    xy = torch.randn(3, 40, 2) * 5
    padded = torch.cat([xy, torch.randn(3, 20, 2) * 1000], dim=1)
    valid = torch.zeros(3, 60, dtype=torch.bool)
    valid[:, :40] = True
    with torch.no_grad():
        torch.testing.assert_close(model(padded, valid), model(xy), atol=1e-5, rtol=1e-5)


def test_paper_sizes() -> None:
    base = EncoderConfig(
        embedding_dim=16, d_model=1024, num_layers=4, num_heads=8, dropout=0.3, input_dropout=0.2
    )
    assert 33e6 < count_parameters(TrajectoryEncoder(base)) < 35e6  # "about 34 M parameters"
    compact = EncoderConfig(embedding_dim=16, d_model=64, num_layers=1, num_heads=4)
    assert count_parameters(TrajectoryEncoder(compact)) < 50_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 30, "num_heads": 4}, "divisible by num_heads"),
        ({"embedding_dim": 1}, r"embedding_dim must be in \[2, 4096\], got 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EncoderConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown encoder config key"):
        EncoderConfig.from_dict({"hidden": 3})


@pytest.mark.parametrize("layers", [1, 2])
def test_inference_forward_equals_training_forward(layers: int) -> None:
    """The fast inference path (SDPA, folded input projection) gives the same embeddings."""
    from trajemb.training.embed import Embedder, embed_windows

    torch.manual_seed(layers)
    model = TrajectoryEncoder(
        EncoderConfig(embedding_dim=8, d_model=32, num_layers=layers, num_heads=4)
    ).eval()
    x = torch.randn(700, 30, 2).cumsum(1) * 2
    valid = torch.rand(700, 30) > 0.2
    valid[:, 0] = True
    with torch.no_grad():
        ref, ref_masked = model(x), model(x, valid)
        torch.testing.assert_close(model.forward_inference(x), ref, atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(model.forward_inference(x, valid), ref_masked, atol=2e-6, rtol=1e-5)
        constants = model.inference_constants(30)  # what an Embedder computes once
        torch.testing.assert_close(model.forward_inference(x, constants=constants), ref, atol=2e-6, rtol=1e-5)
    embedder = Embedder(model, "cpu", batch_size=64)
    threaded = embedder(x.numpy())  # several batches on a thread pool
    np.testing.assert_allclose(threaded, ref.numpy(), atol=2e-6)
    np.testing.assert_allclose(embedder(x[:, :20].numpy()), model(x[:, :20]).detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(embed_windows(model, x.numpy(), batch_size=700), ref.numpy(), atol=2e-6)
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        model.forward_inference(x[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_gpu_embeddings_equal_cpu_embeddings() -> None:
    """A bundle embedded on a GPU must answer queries embedded on a CPU: float32 by default (an H200
    gave 1.2e-6 at most), bf16 only on request (1.3e-2 there)."""
    from trajemb.serving.pipeline import shipped_checkpoints
    from trajemb.training.checkpoint import load_checkpoint
    from trajemb.training.embed import Embedder

    model, _ = load_checkpoint(shipped_checkpoints()[0])
    x = (torch.randn(5000, 60, 2).cumsum(1) * 0.5).numpy()
    cpu = Embedder(model, "cpu")(x)
    np.testing.assert_allclose(Embedder(model, "cuda")(x), cpu, atol=1e-5)
    assert Embedder(model, "cpu").bf16 is False
    assert np.abs(Embedder(model, "cuda", bf16=True)(x) - cpu).max() > 1e-4  # bf16 really is applied


def test_unnormalised_embeddings_keep_their_length_on_both_paths() -> None:
    torch.manual_seed(3)
    model = TrajectoryEncoder(EncoderConfig(embedding_dim=4, d_model=32, num_heads=4, normalize=False)).eval()
    x = torch.randn(50, 60, 2).cumsum(1)
    valid = torch.rand(50, 60) > 0.3
    valid[:, 0] = True
    with torch.no_grad():
        z = model(x, valid)
        torch.testing.assert_close(model.forward_inference(x, valid), z, atol=2e-6, rtol=1e-5)
    assert not torch.allclose(z.norm(dim=1), torch.ones(50))
    assert EncoderConfig.from_dict(
        {k: v for k, v in EncoderConfig().to_dict().items() if k != "normalize"}
    ).normalize


def test_complete_steps_is_perturbs_fill_missing() -> None:
    """The encoder completes missing steps for its linear base as the PCA baseline does (numpy)."""
    from trajemb.data.perturb import fill_missing
    from trajemb.training.model import complete_steps

    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(0, 1, (64, 30, 2)), axis=1)
    valid = rng.random((64, 30)) > 0.5
    valid[:8, :] = False
    valid[:8, [3, 17]] = True  # missing at both ends
    valid[8:16, 10:] = False  # a short window: constant velocity after the last two steps
    valid[8:16, :2] = True
    filled = complete_steps(torch.from_numpy(np.where(valid[..., None], xy, 0.0)), torch.from_numpy(valid))
    np.testing.assert_allclose(filled.numpy(), fill_missing(np.where(valid[..., None], xy, np.nan), valid))


def pca_residual_model(dim: int = 4, steps: int = 30) -> TrajectoryEncoder:
    config = EncoderConfig(
        embedding_dim=dim, d_model=32, normalize=False, linear_base="pca", window_steps=steps, dropout=0.0
    )
    return TrajectoryEncoder(config).eval()


def test_a_fresh_pca_residual_encoder_is_its_linear_base_on_both_paths() -> None:
    """The correction's output layer starts at zero: embeddings are exactly the linear map of the
    completed window, through ``forward`` and ``forward_inference``, with and without missing steps."""
    from trajemb.data.perturb import fill_missing
    from trajemb.training.linear_base import set_linear_base

    model = pca_residual_model()
    rng = np.random.default_rng(1)
    components, mean = rng.normal(size=(4, 60)), rng.normal(size=60)
    set_linear_base(model, components, mean, 0.5)
    xy = np.cumsum(rng.normal(0, 1, (10, 30, 2)), axis=1)
    valid = rng.random((10, 30)) > 0.3
    valid[:, :2] = True
    expected = 0.5 * (fill_missing(np.where(valid[..., None], xy, np.nan), valid).reshape(10, -1) - mean)
    expected = expected @ components.T
    x = torch.from_numpy(np.where(valid[..., None], xy, 0.0)).float()
    with torch.no_grad():
        for z in (model(x, torch.from_numpy(valid)), model.forward_inference(x, torch.from_numpy(valid))):
            np.testing.assert_allclose(z.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert count_parameters(model) == model.config.num_parameters()


def test_linear_base_config_refusals_and_old_configs() -> None:
    with pytest.raises(ConfigError, match="set normalize off"):
        EncoderConfig(linear_base="pca", window_steps=60)
    with pytest.raises(ConfigError, match="needs linear_base pca"):
        EncoderConfig(window_steps=60)
    with pytest.raises(ConfigError, match="one of none, pca"):
        EncoderConfig(linear_base="ica", normalize=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reads windows of 30 steps, got 60"):
        pca_residual_model()(torch.zeros(2, 60, 2))
    # Without a linear base, config.json holds exactly the keys earlier releases wrote and read.
    assert "linear_base" not in EncoderConfig().to_dict()
    config = pca_residual_model().config
    assert EncoderConfig.from_dict(config.to_dict()) == config


def test_an_encoder_without_linear_base_draws_the_weights_it_always_drew() -> None:
    """The linear base is built after every other layer: the same seed gives the same initial weights
    (and the same state-dict keys) as an encoder of a release before it, so ``--recipe paper`` runs
    reproduce."""
    torch.manual_seed(0)
    plain = TrajectoryEncoder(EncoderConfig(embedding_dim=4, d_model=32, normalize=False))
    torch.manual_seed(0)
    residual = pca_residual_model()
    for name, value in plain.state_dict().items():
        if not name.startswith("head.4."):  # the correction's zeroed output layer
            torch.testing.assert_close(residual.state_dict()[name], value, rtol=0, atol=0)
    assert set(residual.state_dict()) - set(plain.state_dict()) == {"linear_base.weight", "linear_base.bias"}
