"""Shared fixtures: the real AV2 fixtures from ../shared and a small synthetic dataset."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trajemb.data.schema import STEP_S, WindowColumns
from trajemb.data.synth.generate import SynthConfig, generate

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ENV = "TRAJEMB_AV2_FIXTURES"
REQUIRE_RAY_ENV = "TRAJEMB_REQUIRE_RAY"


#: Session fixtures that take tens of seconds on a 2-core machine: bundles with a 2-D layout (UMAP, with
#: numba's compilation) and the evaluation. Every test that uses one is marked slow here, so that
#: ``pytest -m "not slow"`` stays an inner loop of about a minute; the full suite (CI) runs them all.
SLOW_FIXTURES = frozenset({"small_bundle", "hostile_bundle", "real_bundle", "incomplete_bundle"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def av2_fixtures_dir() -> Path:
    return Path(os.environ.get(FIXTURES_ENV, REPO_ROOT.parent / "shared" / "data" / "av2_fixtures"))


@pytest.fixture(scope="session")
def av2_fixtures() -> Path:
    root = av2_fixtures_dir()
    if not (root / "motion_forecasting").is_dir() or not (root / "sensor_logs").is_dir():
        pytest.skip(f"real AV2 fixtures not found at {root} (set {FIXTURES_ENV} to their folder)")
    return root


@pytest.fixture(scope="session")
def mf_dir(av2_fixtures: Path) -> Path:
    return av2_fixtures / "motion_forecasting"


@pytest.fixture(scope="session")
def sensor_dir(av2_fixtures: Path) -> Path:
    return av2_fixtures / "sensor_logs"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic scenarios of generator 1 (the tests' pinned figures were measured on it; the default
    data is generator 2's, ``synth_v2_dir``), generated once per test session."""
    out = tmp_path_factory.mktemp("synth") / "scenarios"
    generate(SynthConfig(num_scenarios=24, seed=7, workers=1, generator=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic scenarios of the calibrated generator (issue 19), generated once per test session."""
    out = tmp_path_factory.mktemp("synth_v2") / "scenarios"
    generate(SynthConfig(num_scenarios=12, seed=7, workers=1, generator=2), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_v2_table(synth_v2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trajectory table of ``synth_v2_dir`` (6 s windows, 1 s stride)."""
    from trajemb.data.prepare import PrepareConfig, prepare_table

    out = tmp_path_factory.mktemp("table_v2") / "synth_v2.parquet"
    prepare_table(PrepareConfig(av2_dirs=(str(synth_v2_dir),), workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_table(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trajectory table of ``synth_dir`` (6 s windows, 1 s stride)."""
    from trajemb.data.prepare import PrepareConfig, prepare_table

    out = tmp_path_factory.mktemp("table") / "synth.parquet"
    prepare_table(PrepareConfig(av2_dirs=(str(synth_dir),), workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def small_synth_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table of 10 scenarios (about 1,100 windows, both sides of a 0.2 split by scenario) for tests of
    what a run does around training (run folder, cards, resume refusals, the CLI), not of what it learns:
    an epoch costs under half of ``synth_table``'s."""
    from trajemb.data.prepare import PrepareConfig, prepare_table

    root = tmp_path_factory.mktemp("small")
    generate(
        SynthConfig(num_scenarios=10, seed=7, workers=1, generator=1), root / "scenarios", progress=False
    )
    out = root / "small.parquet"
    prepare_table(PrepareConfig(av2_dirs=(str(root / "scenarios"),), workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoints(synth_table: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny encoders (Cosine D=8, FFT D=4), one epoch each on ``synth_table``."""
    from trajemb.training.model import EncoderConfig
    from trajemb.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ckpts")
    out = []
    for similarity, dim in (("cosine", 8), ("fft", 4)):
        encoder = EncoderConfig(embedding_dim=dim, d_model=32, num_layers=1, num_heads=4)
        config = TrainConfig(
            encoder=encoder, similarity=similarity, epochs=1, batch_size=256, device="cpu", val_fraction=0.2
        )
        train(config, synth_table, root / f"{similarity}-d{dim}", progress=False)
        out.append(root / f"{similarity}-d{dim}" / "best")
    return out


@pytest.fixture(scope="session")
def synth_maps(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trajemb.data.prepare import PrepareConfig, prepare_windows

    maps = tmp_path_factory.mktemp("maps")
    prepare_windows(PrepareConfig(av2_dirs=(str(synth_dir),), workers=1, maps_dir=str(maps)), progress=False)
    return maps


@pytest.fixture(scope="session")
def small_bundle(
    synth_table: Path,
    tiny_checkpoints: list[Path],
    synth_maps: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    out = tmp_path_factory.mktemp("bundle") / "b"
    # Small robustness curves, so that every report key the explorer shows is exercised.
    evaluation = EvalConfig(num_queries=300, robustness=True, robustness_queries=150, robustness_corpus=1500)
    config = BundleConfig(evaluation=evaluation, device="cpu")
    build_bundle(synth_table, tiny_checkpoints, out, synth_maps, config, progress=False)
    return out


@pytest.fixture(scope="session")
def plain_bundle(synth_table: Path, synth_maps: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synth_table`` under one shipped checkpoint (compact-cosine-d4), without 2-D layout or
    evaluation: seconds to build, for tests of what is computed from a bundle (issue 17's mining)."""
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    out = tmp_path_factory.mktemp("plain_bundle") / "b"
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(
        synth_table,
        [REPO_ROOT / "checkpoints" / "compact-cosine-d4"],
        out,
        synth_maps,
        config,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def history_checkpoint(synth_table: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny history model (issue 18): Cosine D=8 reading the first 30 steps, one epoch on ``synth_table``."""
    from trajemb.training.augment import AugmentConfig
    from trajemb.training.model import EncoderConfig
    from trajemb.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("history") / "history-d8"
    encoder = EncoderConfig(embedding_dim=8, d_model=32, num_layers=1, num_heads=4, normalize=False)
    config = TrainConfig(
        encoder=encoder,
        loss="soft_neighbors",
        epochs=1,
        batch_size=256,
        device="cpu",
        val_fraction=0.2,
        history_steps=30,
        augment=AugmentConfig(prob=0.3, noise_m=1.0, drop=0.3),  # perturbed in the last-state frame
    )
    train(config, synth_table, out, progress=False)
    return out / "best"


@pytest.fixture(scope="session")
def history_bundle(
    synth_table: Path,
    history_checkpoint: Path,
    tiny_checkpoints: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A bank (issue 18): ``synth_table`` with the history model and a whole-window model, evaluated."""
    from trajemb.analysis.evaluate import EvalConfig
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    out = tmp_path_factory.mktemp("bank") / "bank"
    config = BundleConfig(
        evaluation=EvalConfig(num_queries=200, mean_rank=False),
        projection=ProjectionConfig(method="none"),
        device="cpu",
    )
    build_bundle(synth_table, [history_checkpoint, tiny_checkpoints[0]], out, None, config, progress=False)
    return out


# -- a bank of analytic windows (issue 18) ------------------------------------------------------------
BANK_SPEEDS_MPS = (4.0, 8.0, 12.0, 16.0, 20.0)  # the last two: windows of one track
LATERAL_MPS2 = 0.5  # each bank window drifts left as c t^2 in its future


def analytic_windows(speeds: tuple[float, ...], lateral: float, prefix: str) -> WindowColumns:
    """60-step windows: straight 30-step histories along +x at each speed, then a future that drifts
    left by ``lateral`` t^2 (t from the last history step); windows 3 and 4 are one track's."""
    n = len(speeds)
    i = np.arange(60)
    xy = np.zeros((n, 60, 2))
    for row, v in enumerate(speeds):
        xy[row, :, 0] = v * i * STEP_S
        xy[row, :, 1] = lateral * (np.clip(i - 29, 0, None) * STEP_S) ** 2
    s = lambda value: np.array([value] * n)  # noqa: E731
    scenario = np.array([f"{prefix}{min(r, 3)}" for r in range(n)])
    return WindowColumns(
        xy_agent=xy.astype(np.float32),
        origin_xy_city=np.column_stack([np.arange(n) * 100.0, np.zeros(n)]),
        theta_rad=np.zeros(n),
        scenario_id=scenario,
        track_id=s("t"),
        object_type=s("vehicle"),
        category=s("focal"),
        city=s("austin"),
        map_key=scenario,
        source=s("synthetic"),
        start_timestep=10 * np.maximum(np.arange(n) - 3, 0),
        direction=s("straight"),
        true_manoeuvre=s("unknown"),
        speed_bin=s("5-10"),
        mean_speed_mps=np.asarray(speeds, dtype=np.float32),
        heading_change_rad=np.zeros(n, dtype=np.float32),
        lateral_offset_m=np.zeros(n, dtype=np.float32),
    )


@pytest.fixture(scope="session")
def analytic_bank_dir(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: list[Path]) -> Path:
    """A bank bundle of ``analytic_windows`` (5 windows, 4 tracks, 4 scenarios)."""
    from trajemb.data.store import write_table
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    root = tmp_path_factory.mktemp("analytic")
    windows = analytic_windows(BANK_SPEEDS_MPS, LATERAL_MPS2, "s")
    write_table(windows, root / "bank.parquet", {"window_config": None})
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(root / "bank.parquet", [tiny_checkpoints[0]], root / "bank", None, config, progress=False)
    return root / "bank"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray of 2 CPUs shared by every Ray test of the session (starting one takes seconds),
    shut down at the end. Skips where the ``[ray]`` extra is missing, except in CI."""
    try:
        import ray
    except ImportError:
        if os.environ.get(REQUIRE_RAY_ENV):
            pytest.fail(f"Ray is not installed but {REQUIRE_RAY_ENV} is set (pip install -e '.[ray]')")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    from trajemb.core.ray_runtime import keep_sigterm_handler

    with keep_sigterm_handler():  # later tests see pytest's own signal handling
        # A small object store: these tests move a few MB, and the machine is shared.
        ray.init(
            num_cpus=2,
            object_store_memory=256 * 1024**2,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    yield
    ray.shutdown()


# -- vectors for the search and index tests -------------------------------------------------------
def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_knn(db: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    ids = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, ids, axis=1), ids


def clustered_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: embeddings of trajectories are clustered, not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def forecast_bundle(
    synth_table: Path, history_checkpoint: Path, synth_maps: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A bank with maps for the explorer's Forecast page (issue 18): ``synth_table`` under the tiny
    history model, without 2-D layout or evaluation (seconds to build)."""
    from trajemb.retrieval.projection import ProjectionConfig
    from trajemb.serving.bundle_build import BundleConfig, build_bundle

    out = tmp_path_factory.mktemp("forecast_bundle") / "bank"
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(synth_table, [history_checkpoint], out, synth_maps, config, progress=False)
    return out
