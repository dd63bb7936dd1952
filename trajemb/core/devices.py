"""``--device`` strings -> ``torch.device``, checked before any work starts.

``torch.device("bogus")`` fails with a RuntimeError, and ``cuda`` on a machine without CUDA only fails
at the first tensor moved there, after the data is read; both become one ``ConfigError`` here.
"""

from __future__ import annotations

import torch

from trajemb.core.errors import ConfigError

#: Device types trajemb runs on (``meta`` or ``xpu`` would accept the string and fail, or compute nothing).
SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` checked to exist.

    Raises:
        ConfigError: unknown device string, or a device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"--device {device!r:.60} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type not in SUPPORTED:
        raise ConfigError(
            f"--device {device!r:.60}: type {dev.type!r} is not supported; use auto, cpu or cuda"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device}: CUDA is not available on this machine; use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (0-based)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"--device {device}: MPS is not available on this machine; use --device cpu or auto"
        )
    return dev
