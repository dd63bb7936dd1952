"""Batched inference: trajectories -> (N, D) float32 embeddings on CPU or GPU, with a progress bar.

On CPU the encoder runs an inference-only forward (``TrajectoryEncoder.forward_inference``) that
takes the same weights through ``scaled_dot_product_attention`` (PyTorch's fused flash-attention
kernel) instead of ``nn.MultiheadAttention``'s batched matrix products, with the input projection
folded into the first attention layer, in batches of 64 windows (larger ones fall out of cache),
one batch per core, under ``torch.inference_mode``: the same embeddings within float tolerance
(tested); ``scripts/bench_encode.py`` measures each of these choices.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from trajemb.core.errors import ConfigError
from trajemb.data.schema import Float32Array
from trajemb.training.model import TrajectoryEncoder

#: Windows per forward pass on CPU: activations of 64 windows stay in cache; larger batches get slower.
CPU_BATCH = 64
GPU_BATCH = 8192


class Embedder:
    """Embeds numpy windows with one model on one device; reuse it across calls. The model's weights
    must not change while it is in use (weight-derived tensors are computed once per window length).

    ``bf16``: bf16 autocast, off by default on every device. Float32 on the GPU gives the CPU's
    embeddings (within 1.2e-6 on an H200), so a bundle built on a GPU answers queries embedded on a
    laptop consistently; bf16 moved embeddings by 1.3e-2 and kept only 92 % of the ten nearest
    neighbours, for 18 to 27 % more windows/s (``scripts/bench_gpu.py``)."""

    def __init__(
        self,
        model: TrajectoryEncoder,
        device: torch.device | str = "cpu",
        batch_size: int = 0,
        bf16: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.bf16 = bf16
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size or (GPU_BATCH if self.device.type == "cuda" else CPU_BATCH)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def __call__(self, xy_agent: np.ndarray) -> Float32Array:
        """(N, T, 2) agent-frame windows -> contiguous (N, D) float32."""
        n = xy_agent.shape[0]
        out = np.empty((n, self.model.config.embedding_dim), dtype=np.float32)
        starts = list(range(0, n, self.batch_size))
        workers = min(len(starts), torch.get_num_threads(), os.cpu_count() or 1)
        if self.device.type != "cpu" or workers < 2:
            for start in starts:
                self._batch(xy_agent, out, start)
            return out
        # Small matrices parallelise poorly inside one operator: one batch per core, each on one thread
        # (PyTorch releases the GIL inside operators), is faster than every operator on all cores.
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda start: self._batch(xy_agent, out, start), starts))
        finally:
            torch.set_num_threads(previous)
        return out

    def _constants(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's weight-derived inference tensors for windows of ``num_steps``, computed once."""
        with self._lock:
            if num_steps not in self._cache:
                with torch.inference_mode():
                    self._cache[num_steps] = self.model.inference_constants(num_steps)
            return self._cache[num_steps]

    def _batch(self, xy_agent: np.ndarray, out: np.ndarray, start: int) -> None:
        batch = torch.from_numpy(np.array(xy_agent[start : start + self.batch_size], dtype=np.float32))
        constants = self._constants(batch.shape[1]) if self.device.type == "cpu" else None
        with torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                z = self.model.forward_inference(batch, constants=constants)
            out[start : start + batch.shape[0]] = z.float().cpu().numpy()


def embed_windows(
    model: TrajectoryEncoder,
    xy_agent: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 0,
    progress: bool = False,
) -> Float32Array:
    """Embed (N, T, 2) agent-frame windows; returns a contiguous (N, D) float32 array.

    The model is left in the mode it was in (training code calls this for validation).
    """
    was_training = model.training
    embedder = Embedder(model, device, batch_size)
    n = xy_agent.shape[0]
    out = np.empty((n, model.config.embedding_dim), dtype=np.float32)
    step = max(embedder.batch_size, 32_768)
    bar = tqdm(total=n, desc="embed", unit="win", unit_scale=True, disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, n, step):
            out[start : start + step] = embedder(xy_agent[start : start + step])
            bar.update(min(step, n - start))
    finally:
        bar.close()
        model.train(was_training)
    return out


def embed_one(model: TrajectoryEncoder, xy_agent: Any) -> Float32Array:
    """(T, 2) -> (D,) for a single window (a user's own query)."""
    out: Float32Array = embed_windows(model, np.asarray(xy_agent, dtype=np.float32)[None])[0]
    return out
