"""Windows perturbed the way real tracks are, for the robustness curves (``trajemb.retrieval.robustness``).

A perturbed window is what a tracker would have delivered for the same motion: positions with noise,
steps missing, or only the first seconds. It is expressed in the agent frame a real pipeline would
compute from it (``trajemb.data.frames``: first point at the origin, motion heading along +x), with a
``valid`` mask (True = observed). Methods that need every step (PCA, the raw-space oracle) get
``fill_missing``'s complete window: gaps linearly interpolated in time, missing ends extrapolated at
constant velocity from the two nearest observed steps. The encoder masks missing steps instead.

Legend: N windows, T steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from trajemb.core.errors import ConfigError
from trajemb.data.frames import city_to_agent, motion_heading_rad
from trajemb.data.schema import STEP_S, BoolArray, FloatArray

PerturbationKind = Literal["clean", "noise", "drop", "noise_drop", "short"]
PERTURBATION_KINDS: tuple[str, ...] = ("clean", "noise", "drop", "noise_drop", "short")


@dataclass(frozen=True)
class Perturbation:
    """``noise``: Gaussian position noise of ``noise_m`` per coordinate and step; ``drop``: each step
    missing with probability ``drop_fraction`` (at least two steps stay); ``noise_drop``: both;
    ``short``: only the first ``keep_s`` seconds observed; ``clean``: nothing."""

    kind: PerturbationKind = "clean"
    noise_m: float = 0.0
    drop_fraction: float = 0.0
    keep_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise ConfigError(
                f"perturbation must be one of {', '.join(PERTURBATION_KINDS)}, got {self.kind!r}"
            )
        if not 0.0 <= self.noise_m <= 100.0 or not 0.0 <= self.drop_fraction < 1.0 or self.keep_s < 0.0:
            raise ConfigError(f"perturbation levels out of range: {self}")


@dataclass(frozen=True)
class Observed:
    """Perturbed windows in their own agent frames."""

    xy: FloatArray  # (N, T, 2), NaN where not observed
    valid: BoolArray  # (N, T)

    def filled(self) -> FloatArray:
        """(N, T, 2) complete windows for methods that cannot mask (``fill_missing``)."""
        return fill_missing(self.xy, self.valid)

    def zeroed(self) -> FloatArray:
        """(N, T, 2) with missing steps at 0 (the encoder ignores them through ``valid``)."""
        return np.where(self.valid[..., None], self.xy, 0.0)


def fill_missing(xy: FloatArray, valid: BoolArray) -> FloatArray:
    """Complete (N, T, 2) windows: linear interpolation in time between observed steps, constant-velocity
    extrapolation from the two nearest observed steps before the first and after the last one.

    Every window needs at least two observed steps.
    """
    N, T = valid.shape
    if (valid.sum(axis=1) < 2).any():
        raise ConfigError("every window needs at least two observed steps to be completed")
    steps = np.broadcast_to(np.arange(T), (N, T))
    prev = np.maximum.accumulate(np.where(valid, steps, -1), axis=1)  # last observed at or before
    nxt = np.minimum.accumulate(np.where(valid, steps, T)[:, ::-1], axis=1)[:, ::-1]  # first at or after
    first = nxt[:, :1]
    last = prev[:, -1:]
    second = np.take_along_axis(nxt, np.minimum(first + 1, T - 1), axis=1)  # next observed after first
    before_last = np.take_along_axis(prev, np.maximum(last - 1, 0), axis=1)
    # Anchors: inside, the observed steps around; before the first (after the last), the first two
    # (last two) observed steps, extrapolated along their line.
    lo = np.where(prev < 0, first, np.where(nxt >= T, before_last, prev))
    hi = np.where(prev < 0, second, np.where(nxt >= T, last, nxt))
    rows = np.arange(N)[:, None]
    a, b = xy[rows, lo], xy[rows, hi]  # (N, T, 2)
    span = np.where(hi == lo, 1, hi - lo)
    w = ((steps - lo) / span)[..., None]
    out = a + (b - a) * w
    return np.where(valid[..., None], xy, out)


def to_own_frame(xy: FloatArray, valid: BoolArray) -> Observed:
    """Re-express observed positions in the agent frame of the completed window (origin at its first
    step, heading of its motion), as a pipeline fed these observations would."""
    filled = fill_missing(xy, valid)
    origin = filled[:, 0].copy()
    theta = motion_heading_rad(filled, np.zeros(len(filled)))
    return Observed(np.where(valid[..., None], city_to_agent(xy, origin, theta), np.nan), valid.copy())


def perturb(xy_agent: np.ndarray, perturbation: Perturbation, rng: np.random.Generator) -> Observed:
    """Apply ``perturbation`` to clean (N, T, 2) agent-frame windows."""
    xy = np.asarray(xy_agent, dtype=np.float64).copy()
    N, T = xy.shape[:2]
    valid = np.ones((N, T), dtype=bool)
    kind = perturbation.kind
    if kind in ("noise", "noise_drop"):
        xy += rng.normal(0.0, perturbation.noise_m, xy.shape)
    if kind in ("drop", "noise_drop"):
        valid = rng.random((N, T)) >= perturbation.drop_fraction
        # At least two observed steps per window: restore two random ones where fewer survived.
        few = np.flatnonzero(valid.sum(axis=1) < 2)
        for i in few.tolist():
            valid[i, rng.choice(T, size=2, replace=False)] = True
    if kind == "short":
        keep = max(2, min(T, round(perturbation.keep_s / STEP_S) + 1))
        valid[:, keep:] = False
    if kind == "clean" or (kind == "short"):
        # The frame of a clean window (or of its first seconds, which define the same frame) is unchanged.
        return Observed(np.where(valid[..., None], xy, np.nan), valid)
    return to_own_frame(np.where(valid[..., None], xy, np.nan), valid)
