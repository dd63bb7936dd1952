"""Embedding on Ray Data actors: equal to the local ``embed_windows``, in table row order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.data.store import read_table
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import embed_windows
from trajemb.training.ray_embed import embed_table_on_ray, read_xy_agent

pytestmark = pytest.mark.slow  # each starts a local Ray cluster: seconds, not milliseconds


def test_embed_on_ray_equals_local(synth_table: Path, tiny_checkpoints: list[Path], ray_local: None) -> None:
    xy = read_table(synth_table).xy_agent
    np.testing.assert_array_equal(read_xy_agent(synth_table), xy)
    expected = embed_windows(load_checkpoint(tiny_checkpoints[0])[0], xy)
    # Small batches: many blocks over two actors, so a row-order slip would show.
    got = embed_table_on_ray(synth_table, tiny_checkpoints[0], batch_size=300, num_actors=2, progress=False)
    assert got.dtype == np.float32 and got.shape == expected.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_gpu_refused_without_gpus(synth_table: Path, tiny_checkpoints: list[Path], ray_local: None) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0:
        pytest.skip("this cluster has GPUs")
    with pytest.raises(ConfigError, match="no GPUs"):
        embed_table_on_ray(synth_table, tiny_checkpoints[0], use_gpu=True, progress=False)


def test_embed_on_gpu_actor(synth_table: Path, tiny_checkpoints: list[Path], ray_local: None) -> None:
    import ray

    if not torch.cuda.is_available() or ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("needs a GPU in the Ray cluster")
    model = load_checkpoint(tiny_checkpoints[0])[0]
    # Float32 on every device: the GPU actor agrees with the CPU within float tolerance (bf16 would
    # move embeddings by about 1e-2).
    expected = embed_windows(model, read_table(synth_table).xy_agent)
    got = embed_table_on_ray(synth_table, tiny_checkpoints[0], num_actors=1, use_gpu=True, progress=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_bundle_on_ray_equals_local(
    synth_table: Path, tiny_checkpoints: list[Path], ray_local: None, tmp_path: Path
) -> None:
    from trajemb.analysis.bundle import Bundle
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    def build(engine: str) -> Bundle:
        config = BundleConfig(
            projection=ProjectionConfig(method="none"), evaluate=False, device="cpu", engine=engine
        )
        build_bundle(synth_table, tiny_checkpoints[:1], tmp_path / engine, config=config, progress=False)
        return Bundle(tmp_path / engine)

    local, on_ray = build("local"), build("ray")
    np.testing.assert_allclose(
        on_ray.embeddings("cosine-d8").all(), local.embeddings("cosine-d8").all(), atol=1e-5
    )
    assert on_ray.model_entry("cosine-d8")["encode_device"] == "ray"
