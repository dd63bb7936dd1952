"""Range checks for numeric settings (CLI flags, config dataclasses, configs read from files).

Every number a run depends on is checked when its config is built, before any work starts: a NaN
passes every ``<`` test, so ``value < 0`` alone lets ``--lr nan`` through to fail (or silently train
garbage) an epoch later. Messages name the setting (a config field such as ``lr``, which the CLI turns
into its flag) and the value.
"""

from __future__ import annotations

import math
import numbers

from trajemb.core.errors import ConfigError


def _field(name: str) -> tuple[str, ...]:
    """``name`` as a config field the CLI can map to its flag, where it is one (``batch_size``)."""
    return (name,) if name.isidentifier() else ()


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; bools and floats are refused (``1.5`` layers, ``true``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r:.60}", fields=_field(name))
    v = int(value)
    if v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {bound}, got {v}", fields=_field(name))
    return v


def check_float(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within the bounds (open where ``*_open``); NaN and infinities refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r:.60}", fields=_field(name))
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}", fields=_field(name))
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = (
            f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        )
        raise ConfigError(f"{name} must be in {interval}, got {v:g}", fields=_field(name))
    return v


#: Seeds go to numpy (``default_rng`` wants >= 0) and torch (64-bit).
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: object) -> int:
    return check_int(name, value, 0, MAX_SEED)
