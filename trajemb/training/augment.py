"""Training augmentations: the encoder sees windows as real tracks deliver them, the loss their clean
geometry (``trajemb.training.soft_neighbor_loss`` targets, triplet mining similarities).

A share ``prob`` of each batch is perturbed with ``trajemb.data.perturb``'s pipeline (re-expressed in the
agent frame the perturbed track gives): Gaussian position noise with a per-window sigma drawn from
[0, ``noise_m``], each step missing with a per-window probability drawn from [0, ``drop``] (the encoder
masks missing steps, or with ``missing="complete"`` reads them completed as PCA does), and with probability
``short_prob`` only the first half of the window observed.
The encoder thus learns to place a noisy, gappy or short window where its clean one belongs.

Legend: B batch, T steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from trajemb.core.fields import check_fields, param
from trajemb.data.perturb import Observed, to_own_frame
from trajemb.data.schema import BoolArray, FloatArray


@dataclass(frozen=True)
class AugmentConfig:
    prob: float = param(
        0.0,
        help="share of training windows perturbed (noise, dropped steps, short) before encoding; 0: off",
        low=0.0,
        high=1.0,
    )
    noise_m: float = param(0.0, help="largest position noise (m)", low=0.0, high=100.0)
    drop: float = param(0.0, help="largest share of dropped steps", low=0.0, high=0.9)
    short_prob: float = param(
        0.0, help="share of windows of which only the first half is observed", low=0.0, high=1.0
    )
    missing: Literal["mask", "complete"] = param(
        "mask",
        help="how the encoder reads a perturbed window's missing steps: masked, or completed as PCA and "
        "the robustness curves read them (trajemb.data.perturb.fill_missing)",
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; with masked missing steps the keys of earlier releases."""
        out = asdict(self)
        if self.missing == "mask":
            del out["missing"]
        return out

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.noise_m > 0 or self.drop > 0 or self.short_prob > 0)


def augment(
    xy_agent: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    frame: Callable[[FloatArray, BoolArray], Observed] = to_own_frame,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, T, 2) clean windows -> (B, T, 2) inputs (0 where missing; completed, and all valid, with
    ``config.missing`` complete) and (B, T) ``valid``; perturbed
    windows are re-expressed by ``frame`` (the agent frame; a history model's last-state frame,
    ``trajemb.data.history.to_history_frame``)."""
    xy = np.asarray(xy_agent, dtype=np.float64)
    B, T = xy.shape[:2]
    valid = np.ones((B, T), dtype=bool)
    if not config.active:
        return xy.astype(np.float32), valid
    out = xy.copy()
    chosen = np.flatnonzero(rng.random(B) < config.prob)
    if chosen.size == 0:
        return xy.astype(np.float32), valid
    sub = xy[chosen] + rng.normal(0.0, 1.0, (chosen.size, T, 2)) * rng.uniform(
        0.0, config.noise_m, (chosen.size, 1, 1)
    )
    keep = rng.random((chosen.size, T)) >= rng.uniform(0.0, config.drop, (chosen.size, 1))
    short = rng.random(chosen.size) < config.short_prob / max(config.prob, 1e-9)
    keep[short, (T + 1) // 2 :] = False
    few = keep.sum(axis=1) < 2
    keep[few, :2] = True
    observed = frame(np.where(keep[..., None], sub, np.nan), keep)
    if config.missing == "complete":
        out[chosen] = observed.filled()
        return out.astype(np.float32), valid
    out[chosen] = observed.zeroed()
    valid[chosen] = keep
    return out.astype(np.float32), valid
