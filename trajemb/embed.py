"""Batched inference: trajectories -> (N, D) float32 embeddings on CPU or GPU, with a progress bar."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from trajemb.model import TrajectoryEncoder
from trajemb.schema import Float32Array


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def embed_windows(
    model: TrajectoryEncoder,
    xy_agent: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 8192,
    progress: bool = False,
) -> Float32Array:
    """Embed (N, T, 2) agent-frame windows; returns a contiguous (N, D) float32 array."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    out = np.empty((xy_agent.shape[0], model.config.embedding_dim), dtype=np.float32)
    starts = range(0, xy_agent.shape[0], batch_size)
    use_bf16 = device.type == "cuda"
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress, dynamic_ncols=True):
        batch = torch.tensor(xy_agent[start : start + batch_size], dtype=torch.float32, device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            z = model(batch)
        out[start : start + batch.shape[0]] = z.float().cpu().numpy()
    model.train(was_training)
    return np.ascontiguousarray(out)
