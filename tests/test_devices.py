"""--device strings are checked before any work."""

from __future__ import annotations

import pytest
import torch

from trajemb.core.devices import resolve_device
from trajemb.core.errors import ConfigError


def test_valid_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", "is not a device"),
        ("meta", "type 'meta' is not supported"),
        ("", "is not a device"),
        ("cuda:99", "CUDA"),
    ],
)
def test_bad_devices(device: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available on this machine; use --device cpu"):
        resolve_device("cuda")
