"""Embedding a trajectory table on Ray: Ray Data ``map_batches`` over a pool of encoder actors.

A thin wrapper around ``trajemb.training.embed.embed_windows``: each actor rebuilds the encoder once from the
checkpoint's config and weights (shipped from the driver through the object store, so workers need
no access to the checkpoint folder) and runs ``embed_windows`` on its batches. Actors take one GPU
each where the cluster has GPUs (float32, as the local path, so GPU and CPU actors agree), one CPU
each otherwise. The driver reads the table's positions and collects the (N, D) embeddings in table
row order; index, projection and evaluation stay on the driver.

Legend: N windows, T steps, D embedding dim.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from trajemb.core.errors import ConfigError, DataError
from trajemb.core.ray_runtime import cluster_resources, data_context, ray_session
from trajemb.data.schema import Float32Array
from trajemb.data.store import read_manifest
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import embed_windows
from trajemb.training.model import EncoderConfig, TrajectoryEncoder

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8192


class EncoderActor:
    """Ray actor: one encoder, ``embed_windows`` on each batch ``{"xy_agent": (B, T, 2)}``."""

    def __init__(self, config: EncoderConfig, state: dict[str, torch.Tensor], use_gpu: bool, batch_size: int):
        # Ray sets CUDA_VISIBLE_DEVICES to the actor's own GPU, so plain "cuda" is that GPU.
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.model = TrajectoryEncoder(config)
        self.model.load_state_dict(state)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = embed_windows(self.model, batch["xy_agent"], self.device)  # the device's own inner batch size
        return {"embedding": z}


def read_xy_agent(table_path: Path) -> Float32Array:
    """(N, T, 2) positions of a trajectory table, without its metadata columns."""
    manifest = read_manifest(table_path)
    try:
        column = pq.read_table(table_path, columns=["xy_agent"]).column("xy_agent")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{table_path}: trajectory table is corrupt ({exc})") from exc
    flat = column.combine_chunks().flatten().to_numpy()
    return np.ascontiguousarray(flat.reshape(-1, int(manifest["num_steps"]), 2), dtype=np.float32)


def embed_table_on_ray(
    table_path: Path,
    checkpoint: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_actors: int | None = None,
    use_gpu: bool | None = None,
    address: str | None = None,
    progress: bool = True,
) -> Float32Array:
    """(N, D) float32 embeddings of every window of ``table_path``, in table row order, on Ray.

    On CPU actors equal within float tolerance to ``embed_windows(load_checkpoint(checkpoint)[0],
    read_table(table_path).xy_agent)`` (bit-equal in practice). GPU actors run ``embed_windows`` on
    CUDA in float32, like the local path given a CUDA device (within 1.2e-6 of the CPU on an H200).

    Args:
        table_path: trajectory table (``trajemb prepare``), read by the driver.
        checkpoint: checkpoint folder, loaded by the driver and shipped to the actors.
        batch_size: windows per actor call (and per ``embed_windows`` batch).
        num_actors: actors in the pool; None: one per GPU with GPUs, else one per cluster CPU.
        use_gpu: one GPU per actor; None: when the cluster has GPUs. True without GPUs is an error.
        address: Ray cluster to join (None: ``RAY_ADDRESS``, a running local cluster, or a new local
            one); an existing ``ray.init`` connection of this process is used as it is.
        progress: a progress bar over windows.

    Raises:
        DataError: unreadable table or checkpoint. ConfigError: Ray missing, bad sizes, no GPUs.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_actors is not None and num_actors < 1:
        raise ConfigError(f"num_actors must be >= 1, got {num_actors}")
    model, _ = load_checkpoint(Path(checkpoint))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    xy_agent = read_xy_agent(Path(table_path))
    N = xy_agent.shape[0]
    with ray_session(address) as ray:
        resources = cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if use_gpu is None:
            use_gpu = gpus > 0
        if use_gpu and gpus == 0:
            raise ConfigError("use_gpu=True but the Ray cluster has no GPUs")
        actors = num_actors or (gpus if use_gpu else max(1, int(resources.get("CPU", 1))))
        # Blocks of at most one batch, and at least a few per actor so that every actor gets work.
        rows_per_block = max(1, min(batch_size, math.ceil(N / (4 * actors))))
        blocks = [xy_agent[i : i + rows_per_block] for i in range(0, N, rows_per_block)]
        log.info("embedding %d windows on %d %s actor(s)", N, actors, "GPU" if use_gpu else "CPU")
        with ray.data.DataContext.current(data_context()):
            ds = ray.data.from_numpy(blocks).rename_columns({"data": "xy_agent"})
            ds = ds.map_batches(
                EncoderActor,
                fn_constructor_args=(model.config, state, use_gpu, batch_size),
                batch_size=rows_per_block,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=1 if use_gpu else 0,
                num_cpus=1,
            )
        out: list[np.ndarray] = []
        with tqdm(total=N, desc="embed", unit="window", disable=not progress, dynamic_ncols=True) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                out.append(batch["embedding"])
                bar.update(len(batch["embedding"]))
    emb = np.concatenate(out) if out else np.empty((0, model.config.embedding_dim), dtype=np.float32)
    if emb.shape[0] != N:
        raise DataError(f"{table_path}: Ray returned {emb.shape[0]} embeddings for {N} windows")
    return np.ascontiguousarray(emb, dtype=np.float32)
