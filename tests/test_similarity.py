"""Cosine and FFT similarities on analytic cases and against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajemb.core.errors import ConfigError
from trajemb.training.similarity import cosine_similarity_matrix, fft_similarity_matrix, similarity_matrix

T = 60


def left_turn() -> np.ndarray:
    s = np.linspace(0, 30, T)
    k = (np.pi / 2) / 30
    return np.stack([np.sin(k * s) / k, (1 - np.cos(k * s)) / k], axis=-1)


def reference_cosine(a: np.ndarray, b: np.ndarray, f: float) -> float:
    da, db = a[-1] - a[0], b[-1] - b[0]
    cos = da @ db / (np.linalg.norm(da) * np.linalg.norm(db))
    return float(cos / (1 + f * np.linalg.norm((a - b).ravel())))


def reference_fft(a: np.ndarray, b: np.ndarray) -> float:
    fa = np.abs(np.fft.rfft(a, axis=0)).ravel()
    fb = np.abs(np.fft.rfft(b, axis=0)).ravel()
    return float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)))


def as_batch(*trajs: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.stack(trajs), dtype=torch.float32)


def test_matches_reference_on_random_trajectories() -> None:
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(size=(7, T, 2)), axis=1)
    cos = cosine_similarity_matrix(as_batch(*xy), 0.5).numpy()
    fft = fft_similarity_matrix(as_batch(*xy)).numpy()
    for i in range(7):
        for j in range(7):
            assert cos[i, j] == pytest.approx(reference_cosine(xy[i], xy[j], 0.5), rel=1e-4, abs=1e-6)
            assert fft[i, j] == pytest.approx(reference_fft(xy[i], xy[j]), rel=1e-4)


def test_identical_reversed_mirrored_rotated() -> None:
    a = left_turn()
    mirrored = a * np.array([1.0, -1.0])  # the right turn
    reversed_ = a[::-1] - a[-1]  # driven backwards, re-anchored at its start
    theta = np.deg2rad(40)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rotated = a @ rot.T
    cos = cosine_similarity_matrix(as_batch(a, a, mirrored, reversed_, rotated), 0.5).numpy()
    fft = fft_similarity_matrix(as_batch(a, a, mirrored, reversed_, rotated)).numpy()
    assert cos[0, 1] == pytest.approx(1.0) and fft[0, 1] == pytest.approx(1.0)
    # Cosine tells a left from a right turn and a reversal; FFT magnitudes cannot (DESIGN's caveat).
    assert cos[0, 2] < 0.2 and cos[0, 3] < 0.0
    assert fft[0, 2] == pytest.approx(1.0, abs=1e-6)
    # Pure time reversal leaves every FFT magnitude unchanged; re-anchoring only moves the DC term.
    assert fft_similarity_matrix(as_batch(a, a[::-1].copy()))[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    # A rotation changes both (the agent frame removes it before similarity is taken).
    assert cos[0, 4] < 0.5 and fft[0, 4] < 1.0 - 1e-4


def test_shape_weight_and_dispatch() -> None:
    a = left_turn()
    b = a + np.array([0.0, 1.0]) * np.linspace(0, 1, T)[:, None]
    loose = cosine_similarity_matrix(as_batch(a, b), 0.05)[0, 1]
    tight = cosine_similarity_matrix(as_batch(a, b), 2.0)[0, 1]
    assert loose > tight > 0
    assert torch.equal(similarity_matrix(as_batch(a, b), "fft"), fft_similarity_matrix(as_batch(a, b)))
    with pytest.raises(ConfigError, match="unknown similarity 'dtw'"):
        similarity_matrix(as_batch(a, b), "dtw")
    with pytest.raises(ConfigError, match="shape_weight"):
        cosine_similarity_matrix(as_batch(a, b), -1.0)
