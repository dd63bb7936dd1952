"""Contrastive training of the trajectory encoder (arXiv 2506.02571), CPU or GPU: the loop, nothing else.

Each step encodes a batch once and hands the embeddings to the run's batch loss (``trajemb.training.batch_loss``:
triplets mined from the (B, B) trajectory similarity on the device, vectorised, or the soft-neighbour
loss). AdamW with a one-cycle schedule, gradient clipping, bf16 autocast on CUDA. Validation on
held-out scenarios (split by scenario, so no track leaks) reports the loss and retrieval
minADE/minFDE@k.

Beside the loop, each in its own module: the run folder (``trajemb.training.run_folder``: what may be written
where, the best and last checkpoints, ``metrics.csv``, TensorBoard), the resume state and the random
streams (``trajemb.training.train_state``), and the loss strategies (``trajemb.training.batch_loss``).

From a notebook::

    trainer = Trainer(read_table(path), TrainConfig(epochs=2, device="cpu"))  # no run folder
    best = trainer.fit()  # the best epoch's metrics; trainer.model holds the last epoch's weights

``Trainer(table, config, out)`` (and ``train``, what ``trajemb train`` runs) also writes the run folder
and can ``resume`` it. Under ``torchrun`` the same loop runs data-parallel (``trajemb.training.distributed``):
rows sharded per rank by a ``DistributedSampler``, gradients averaged by DDP, only rank 0 validates
and writes.

Legend: N rows, T steps, B batch, D embedding dim.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from trajemb import __version__
from trajemb.core.devices import resolve_device
from trajemb.core.errors import ConfigError
from trajemb.core.fields import K_BOUNDS, K_MAX, K_MODES_DEFAULT, Bounds, check_fields, param
from trajemb.core.validate import MAX_SEED, check_int
from trajemb.data.history import check_history_steps, history_input, to_history_frame, window_in_history_frame
from trajemb.data.perturb import to_own_frame
from trajemb.data.schema import MAX_WINDOW_STEPS
from trajemb.data.store import TrajectoryTable, check_positions, read_table
from trajemb.retrieval.metrics import retrieval_min_ade_fde
from trajemb.training import distributed
from trajemb.training.augment import AugmentConfig, augment
from trajemb.training.batch_loss import (
    BatchLoss,
    DistilledBatchLoss,
    SoftNeighborBatchLoss,
    TripletBatchLoss,
    calibrate_threshold,
)
from trajemb.training.batches import NeighborhoodBatches
from trajemb.training.checkpoint import card_history_steps, git_revision, load_checkpoint
from trajemb.training.distill_loss import CodeDistillationLoss
from trajemb.training.embed import embed_windows
from trajemb.training.linear_base import init_pca_base
from trajemb.training.losses import DEFAULT_MARGIN, TripletLoss
from trajemb.training.mining import MiningName
from trajemb.training.model import EncoderConfig, TrajectoryEncoder, count_parameters
from trajemb.training.run_folder import (
    METRICS_FILE,
    RUN_ARTEFACTS,
    RUN_PROGRESS,
    TRAIN_CONFIG_FILE,
    TRAIN_STATE_FILE,
    RunFolder,
    TrainingError,
    check_run_folder,
)
from trajemb.training.similarity import DEFAULT_SHAPE_WEIGHT, SimilarityName
from trajemb.training.soft_neighbor_loss import DEFAULT_NEIGHBORS, SoftNeighborLoss
from trajemb.training.train_state import RandomStreams, check_train_state, read_last

log = logging.getLogger(__name__)

#: Names that lived here before the run folder, the resume state and the loss strategies moved out.
__all__ = [
    "METRICS_FILE",
    "RUN_ARTEFACTS",
    "RUN_PROGRESS",
    "TRAIN_CONFIG_FILE",
    "TRAIN_STATE_FILE",
    "Split",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "check_run_folder",
    "history_table",
    "split_by_scenario",
    "train",
]

#: Bounds beyond any sensible run, so that a typo fails now rather than hours (or gigabytes) later.
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 1 << 24
#: Kept for callers of an earlier release; the bound of every k is ``trajemb.core.fields.K_MAX``.
MAX_VAL_K = K_MAX
#: Consecutive batches without a single triplet, from the start of an epoch, after which training stops.
EMPTY_BATCHES_LIMIT = 200


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``trajemb train`` takes; saved as ``train_config.json`` and in each card.

    Each field carries its help text and bounds (``trajemb.core.fields.param``): ``trajemb train`` makes a
    flag of every field (``--batch-size`` sets ``batch_size``; the encoder's fields are flags of their
    own, ``augment``'s are ``--augment-*``).
    """

    encoder: EncoderConfig = param(default_factory=EncoderConfig, help="the encoder (trajemb.training.model)")
    similarity: SimilarityName = param("cosine", help="trajectory similarity that mines the pairs")
    shape_weight: float = param(
        DEFAULT_SHAPE_WEIGHT,
        help="f of the Cosine similarity (shape distance against direction)",
        low=0.0,
        high=1e6,
    )
    # Both similarities are cosines, in [-1, 1]; outside it every pair is positive or none is.
    threshold: float | None = param(
        None,
        help="positive when similarity >= this (default: calibrated to positive_fraction)",
        low=-1.0,
        high=1.0,
    )
    positive_fraction: float = param(
        0.02,
        help="share of in-batch pairs made positive when threshold is not given",
        bounds=Bounds(0.0, 1.0, low_open=True, high_open=True),
    )
    mining: MiningName = param("random", help="which positive and negative of each anchor a triplet takes")
    # Unit vectors are at most 2 apart.
    margin: float = param(DEFAULT_MARGIN, help="triplet margin", bounds=Bounds(0.0, 4.0, low_open=True))
    epochs: int = param(10, help="passes over the training windows", low=1, high=MAX_EPOCHS)
    batch_size: int = param(
        1024, help="windows per batch (mining happens within a batch)", low=2, high=MAX_BATCH_SIZE
    )
    lr: float = param(
        1e-3, help="peak learning rate of the one-cycle schedule", bounds=Bounds(0.0, 10.0, low_open=True)
    )
    weight_decay: float = param(0.01, help="AdamW weight decay", low=0.0, high=10.0)
    warmup_fraction: float = param(
        0.1, help="warm-up share of the schedule", bounds=Bounds(0.0, 1.0, low_open=True, high_open=True)
    )
    grad_clip: float = param(0.5, help="gradient norm clip", bounds=Bounds(0.0, 1e6, low_open=True))
    val_fraction: float = param(
        0.1, help="share of scenarios held out", bounds=Bounds(0.0, 1.0, low_open=True, high_open=True)
    )
    val_every: int = param(1, help="validate every N epochs", low=1, high=MAX_EPOCHS)
    val_k: int = param(K_MODES_DEFAULT, help="k of validation minADE/minFDE@k", bounds=K_BOUNDS)
    max_val_windows: int = param(20_000, help="validate on at most this many windows", low=2)
    seed: int = param(0, help="seed of every random stream", low=0, high=MAX_SEED)
    device: str = param("auto", help="auto (cuda, then cpu), cpu, cuda, cuda:1, ...")
    mining_scope: Literal["rank", "global"] = param(
        "rank", help="under torchrun: mine in each process's batch, or in all processes' batches (all-gather)"
    )
    loss: Literal["triplet", "soft_neighbors"] = param(
        "triplet",
        help="the paper's triplet loss, or the soft-neighbour loss (trajemb.training.soft_neighbor_loss; "
        "see docs/workflow.md)",
    )
    soft_neighbors: int = param(
        DEFAULT_NEIGHBORS,
        help="soft-neighbour loss: bandwidth = distance to this many-th nearest window in the batch",
        low=1,
        high=MAX_BATCH_SIZE,
    )
    soft_temperature: float = param(
        1.0,
        help="soft-neighbour loss: temperature of the embedding's neighbour distribution",
        bounds=Bounds(0.0, 1e6, low_open=True),
    )
    augment: AugmentConfig = param(
        default_factory=AugmentConfig, help="perturbations of training windows (trajemb.training.augment)"
    )
    batches: Literal["random", "neighborhoods"] = param(
        "random",
        help="random batches, or neighbourhoods in raw trajectory space with the hard manoeuvres "
        "represented (trajemb.training.batches; see docs/workflow.md)",
    )
    neighbors_per_seed: int = param(
        4, help="batches neighborhoods: windows per neighbourhood (divides batch_size)", low=1
    )
    hard_share: float = param(
        0.0,
        help="batches neighborhoods: share of seeds from turns, U-turns and lane changes",
        bounds=Bounds(0.0, 1.0, high_open=True),
    )
    # A history model (issue 18): the encoder reads the first H steps of each window in the frame of
    # their last state (``trajemb.data.history``), and the loss compares those; 0 reads whole windows.
    history_steps: int = param(
        0,
        help="a history model: read each window's first N steps in the frame of their last state "
        f"(for trajemb forecast; 0: whole windows; else in [2, {MAX_WINDOW_STEPS - 1}])",
    )
    history_targets: Literal["history", "window"] = param(
        "history",
        help="with history_steps: the loss compares the histories, or the whole windows in the "
        "histories' last-state frame (histories whose futures agree are pulled together)",
    )
    # An encoder with a linear base (``EncoderConfig.linear_base``, issue 20): trained with the rest
    # (``fine_tune``) or kept at the PCA it starts from (``frozen``).
    linear_base_training: Literal["fine_tune", "frozen"] = param(
        "fine_tune", help="with linear_base pca: train the PCA base with the rest, or keep it (frozen)"
    )
    # Denoising distillation (issue 20, ``trajemb.training.distill_loss``): the code of each input,
    # perturbed or clean, regresses the initial (PCA) base's code of its clean window; the
    # soft-neighbour loss is then weighted by ``soft_weight``.
    distill_weight: float = param(
        0.0,
        help="with linear_base pca: weight of the distillation of each input's code to the initial PCA "
        "base's code of its clean window (squared distance over soft_temperature); 0: off",
        low=0.0,
        high=1e6,
    )
    distill_scale: Literal["temperature", "neighbors"] = param(
        "temperature",
        help="with distill_weight: squared code errors over soft_temperature, or over the squared distance "
        "from each clean code to its soft_neighbors-th nearest in the batch (errors relative to the local "
        "spacing that retrieval sees)",
    )
    soft_weight: float = param(
        1.0,
        help="with distill_weight: weight of the soft-neighbour loss beside the distillation (0: left out)",
        low=0.0,
        high=1e6,
    )

    # Fine-tuning: the run starts from a checkpoint's weights instead of a random initialisation.
    init_from: str | None = param(
        None,
        help="start from the weights of this checkpoint folder (fine-tuning, e.g. a shipped one on your own "
        "data); its encoder must be the one the flags describe",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise ConfigError(f"encoder must be an EncoderConfig, got {type(self.encoder).__name__}")
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        if not isinstance(self.device, str):
            raise ConfigError(f"device must be a string, got {self.device!r:.40}", fields=("device",))
        check_fields(self)
        if self.loss == "soft_neighbors" and self.mining_scope == "global":
            raise ConfigError(
                "mining_scope global mines triplets; the soft-neighbour loss works per process",
                fields=("mining_scope",),
            )
        check_int("neighbors_per_seed", self.neighbors_per_seed, 1, self.batch_size)
        if self.batch_size % self.neighbors_per_seed:
            raise ConfigError(
                f"neighbors_per_seed {self.neighbors_per_seed} must divide batch_size {self.batch_size}",
                fields=("neighbors_per_seed", "batch_size"),
            )
        if self.history_steps != 0:
            check_int("history_steps", self.history_steps, 2, MAX_WINDOW_STEPS - 1)
        if self.history_targets == "window" and not self.history_steps:
            raise ConfigError(
                "history_targets window needs history_steps (a history model)",
                fields=("history_targets", "history_steps"),
            )
        if self.encoder.linear_base != "none" and self.loss != "soft_neighbors":
            raise ConfigError(
                "linear_base pca is scaled to the soft-neighbour loss; set loss soft_neighbors",
                fields=("linear_base", "loss"),
            )
        if self.distill_weight > 0:
            if self.encoder.linear_base == "none":
                raise ConfigError(
                    "distill_weight distils to the code of a linear base; set linear_base pca",
                    fields=("distill_weight", "linear_base"),
                )
            if self.history_targets == "window" and self.history_steps:
                raise ConfigError(
                    "distill_weight compares codes of the encoder's own inputs; history_targets window "
                    "compares other windows",
                    fields=("distill_weight", "history_targets"),
                )
        elif self.soft_weight != 1.0:
            raise ConfigError(
                f"soft_weight {self.soft_weight:g} weighs the soft-neighbour loss beside the distillation; "
                "set distill_weight too",
                fields=("soft_weight", "distill_weight"),
            )
        elif self.distill_scale != "temperature":
            raise ConfigError(
                "distill_scale scales the distillation; set distill_weight too",
                fields=("distill_scale", "distill_weight"),
            )
        if self.init_from is not None and self.encoder.linear_base != "none":
            raise ConfigError(
                "init_from starts from a checkpoint's weights; linear_base pca starts from PCA of the data",
                fields=("init_from", "linear_base"),
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; without a linear base, distillation or completed inputs exactly
        what earlier releases wrote (cards and the resume check compare them)."""
        out = asdict(self)
        out["encoder"] = self.encoder.to_dict()
        if self.encoder.linear_base == "none":
            del out["linear_base_training"]
        if self.distill_weight == 0:  # the keys of earlier releases (no distillation)
            del out["distill_weight"], out["soft_weight"], out["distill_scale"]
        if self.init_from is None:  # the keys of earlier releases (no fine-tuning)
            del out["init_from"]
        out["augment"] = self.augment.to_dict()
        return out


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    val: np.ndarray


def split_by_scenario(table: TrajectoryTable, val_fraction: float) -> Split:
    """Deterministic split on a hash of the scenario id: all windows of a scenario go one way."""
    keys = (table.meta["source"] + "/" + table.meta["scenario_id"]).to_numpy(dtype=str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    bucket = np.array([zlib.crc32(k.encode()) % 10_000 for k in uniq]) / 10_000
    is_val = (bucket < val_fraction)[inverse]
    return Split(np.flatnonzero(~is_val), np.flatnonzero(is_val))


def history_table(table: TrajectoryTable, history_steps: int, path: Path | str) -> TrajectoryTable:
    """The table a history model trains on: each window's first H steps in their last-state frame
    (``trajemb.data.history.history_input``); ids, labels and manifest stay the window's."""
    try:
        check_history_steps(history_steps, table.num_steps, f"windows of {path}")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; prepare the table with longer --steps") from exc
    return replace(table, xy_agent=history_input(table.xy_agent, history_steps))


class Trainer:
    """Owns model, optimiser, random streams and data for one run; ``fit`` trains.

    Args:
        table: the trajectory table, or the path of its file (``trajemb prepare``).
        config: the run's ``TrainConfig``.
        out: the run folder (``trajemb.training.run_folder``): ``fit`` writes the best and last checkpoints and
            the metrics there. None trains in memory and writes nothing.
        resume: continue the run in ``out`` from its last checkpoint.
        progress: show a progress bar per epoch.
        overwrite: start the run in ``out`` afresh, replacing what an earlier run wrote there.

    Everything (flags, output folder, device, table, validation split, resume state) is checked here,
    before the first step. Rank 0 holds the run folder's lock while it checks and loads (here) and
    while it trains (``fit``), so a second run into the same folder stops at once, naming this one; a
    trainer built only to compute losses holds nothing, and ``fit`` refuses a folder that changed in
    between.
    """

    def __init__(
        self,
        table: TrajectoryTable | Path | str,
        config: TrainConfig,
        out: Path | str | None = None,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ):
        if isinstance(table, TrainConfig) or not isinstance(config, TrainConfig):
            raise TypeError(
                "Trainer(table, config, out=None, ...): the table comes first, then a TrainConfig"
            )
        self.config = config
        self.dist = distributed.current()
        self.progress = progress and self.dist.is_main
        self.resume = resume
        # Checked before the run folder and the table (a typo must not wait for a million windows to load);
        # a resumed run reads its own last weights instead.
        self.initial_weights = (
            initial_weights(Path(config.init_from), config)
            if config.init_from is not None and not resume
            else None
        )
        self.table_path = None if isinstance(table, TrajectoryTable) else Path(table)
        #: How messages name the table.
        self.source = str(self.table_path) if self.table_path is not None else "the table"
        if out is None and (resume or overwrite):
            raise ConfigError("--resume and --overwrite need a run folder (--out)")
        self.out = None if out is None else Path(out)
        self.folder = (
            None
            if self.out is None
            else RunFolder(self.out, self.table_path, resume, overwrite, writes=self.dist.is_main)
        )
        with self.folder.lock() if self.folder is not None else contextlib.nullcontext():
            if self.folder is not None:
                self.folder.recheck(overwrite)  # again, now that it is ours
            self._setup(table if isinstance(table, TrajectoryTable) else read_table(Path(table)))

    def _setup(self, table: TrajectoryTable) -> None:
        config = self.config
        self.device = distributed.rank_device(resolve_device(config.device), self.dist)
        self.table = table
        if self.table_path is None:  # a table read from its file was checked by ``read_table``
            check_positions(self.source, table.xy_agent, table.meta["window_id"].to_numpy())
        self.table_steps = self.table.num_steps
        # What the loss compares (and neighbourhood batches are drawn in): the inputs, or for a history
        # model with window targets, the whole windows in their histories' last-state frames.
        targets: np.ndarray | None = None
        if config.history_steps:
            if config.history_targets == "window":
                targets = window_in_history_frame(self.table.xy_agent, config.history_steps)
            self.table = history_table(self.table, config.history_steps, self.source)
        if config.encoder.linear_base != "none":
            config = self.config = _with_window_steps(config, self.table.num_steps, self.source)
        self.split = split_by_scenario(self.table, config.val_fraction)
        self.sampler = distributed.train_sampler(len(self.split.train), self.dist, config.seed)
        if len(self.sampler) < config.batch_size:
            raise ConfigError(
                f"{self.source}: {len(self.sampler)} training windows per process, fewer than one batch "
                f"of {config.batch_size}; lower batch_size or prepare more data",
                fields=("batch_size",),
            )
        if len(self.split.val) < 2:
            raise ConfigError(
                f"{self.source}: fewer than 2 validation windows; raise val_fraction",
                fields=("val_fraction",),
            )
        val_tracks = np.unique(self.table.track_groups()[self.split.val]).size
        if val_tracks <= config.val_k:
            raise ConfigError(
                f"{self.source}: validation holds {val_tracks} track(s), too few to retrieve "
                f"val_k {config.val_k} neighbours from other tracks; lower val_k or raise val_fraction",
                fields=("val_k", "val_fraction"),
            )
        self.xy = torch.from_numpy(np.array(self.table.xy_agent))  # (N, T, 2), CPU, writable copy
        self.target_xy = self.xy if targets is None else torch.from_numpy(targets)  # (N, T', 2)
        self.groups = torch.from_numpy(self.table.track_groups())
        torch.manual_seed(config.seed)
        self.model = TrajectoryEncoder(config.encoder).to(self.device)
        if self.initial_weights is not None:
            self.model.load_state_dict(self.initial_weights)
        self.train_model = distributed.wrap_model(self.model, self.dist)  # DDP under torchrun
        self.neighborhoods = (
            NeighborhoodBatches(
                self.target_xy.numpy()[self.split.train],
                self.table.meta["direction"].to_numpy(dtype=str)[self.split.train],
                config.batch_size,
                config.neighbors_per_seed,
                config.hard_share,
                config.seed,
            )
            if config.batches == "neighborhoods"
            else None
        )
        self.augment_rng = np.random.default_rng(config.seed)  # replaced every epoch (``fit``)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.steps_per_epoch = len(self.sampler) // config.batch_size
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * self.steps_per_epoch,
            pct_start=_one_cycle_warmup(config.warmup_fraction, config.epochs * self.steps_per_epoch),
        )
        self.streams = RandomStreams(config.seed, self.device)
        self.shuffle = self.streams.shuffle
        self.mining_gen = self.streams.mining
        self.start_epoch = 0
        self.best_min_ade = math.inf
        self.best_row: dict[str, float] = {}  # metrics of the best epoch so far (from out/best on resume)
        # The code this run trains with: taken once at the start, so that edits to the tree while it
        # trains do not mark its checkpoints dirty (nor clean ones trained from a dirty tree).
        self.git_revision = git_revision(Path(__file__).parent)
        self.threshold: float | None = None  # the soft-neighbour loss has no positive threshold
        self.loss: BatchLoss
        if config.loss == "triplet":
            self.threshold = config.threshold if config.threshold is not None else self.calibrate_threshold()
            self.loss = TripletBatchLoss(
                TripletLoss(config.margin),
                config.similarity,
                config.shape_weight,
                self.threshold,
                config.mining,
                config.margin,
                config.mining_scope,
                self.dist,
            )
        else:
            # The soft-neighbour loss alone also sets the linear base's scale (``_init_linear_base``).
            self.soft_loss = SoftNeighborBatchLoss(
                SoftNeighborLoss(config.soft_neighbors, config.soft_temperature), config.similarity
            )
            self.loss = self.soft_loss
            if config.distill_weight > 0:
                self.loss = DistilledBatchLoss(
                    self.soft_loss,
                    CodeDistillationLoss(
                        config.soft_temperature,
                        config.soft_neighbors if config.distill_scale == "neighbors" else None,
                    ),
                    self.clean_code,
                    config.distill_weight,
                    config.soft_weight,
                )
        #: The distillation's teacher: the linear base as initialised (PCA), kept fixed. Distilling to the
        #: base being trained would shrink it (a smaller map moves perturbed codes less), not denoise.
        self.teacher: torch.nn.Linear | None = None
        if config.encoder.linear_base != "none":
            # A resumed distillation run fits its teacher again (seeded, so the same PCA and scale).
            if not self.resume or config.distill_weight > 0:
                self._init_linear_base()
            if config.distill_weight > 0:
                assert self.model.linear_base is not None
                self.teacher = copy.deepcopy(self.model.linear_base).requires_grad_(False)
            if config.linear_base_training == "frozen":
                assert self.model.linear_base is not None
                self.model.linear_base.requires_grad_(False)
        if self.resume:
            self._resume()

    def _init_linear_base(self, num_batches: int = 8) -> None:
        """The linear base: PCA of the training windows at the scale that suits the loss
        (``trajemb.training.linear_base``), measured on ``num_batches`` training batches drawn as training draws
        them, from a stream of their own (the run's streams stay as they were)."""
        c = self.config
        rng = np.random.default_rng([c.seed, 20])
        if self.neighborhoods is not None:
            picks = self.split.train[self.neighborhoods.epoch(num_batches, rng)]
        else:
            picks = rng.choice(self.split.train, size=(num_batches, c.batch_size), replace=True)
        generator = torch.Generator(device=self.device).manual_seed(c.seed + 20)
        batches: list[tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = []
        for rows_np in picks:
            rows = torch.from_numpy(rows_np)
            tb = self.target_xy[rows].to(self.device)
            gb = self.groups[rows].to(self.device)

            def loss(z: torch.Tensor, tb: torch.Tensor = tb, gb: torch.Tensor = gb) -> torch.Tensor:
                return self.soft_loss(z.to(self.device), tb, gb, generator)[0]

            batches.append((self.xy[rows], loss))
        init_pca_base(self.model, self.table.xy_agent[self.split.train], batches, c.seed)

    @torch.no_grad()
    def clean_code(self, xy_clean: torch.Tensor) -> torch.Tensor:
        """(B, T, 2) clean windows -> (B, D) the teacher's (the initial PCA base's) code of them: what
        distillation (``config.distill_weight``) teaches the encoder to give for their perturbed inputs."""
        if self.teacher is None:
            raise ConfigError("clean codes need a distillation run (distill_weight > 0)")
        with torch.autocast(device_type=xy_clean.device.type, enabled=False):
            out: torch.Tensor = self.teacher(xy_clean.float().reshape(len(xy_clean), -1))
        return out

    def calibrate_threshold(self, num_batches: int = 8) -> float:
        """The similarity above which ``positive_fraction`` of in-batch training pairs lie
        (``trajemb.training.batch_loss.calibrate_threshold``)."""
        c = self.config
        return calibrate_threshold(
            self.xy,
            self.groups,
            self.split.train,
            c.similarity,
            c.shape_weight,
            c.positive_fraction,
            c.batch_size,
            c.seed,
            self.device,
            num_batches,
        )

    # -- bookkeeping -------------------------------------------------------------------------
    def _card(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        c = self.config
        m = self.table.manifest
        return {
            "trajemb_version": __version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_revision": self.git_revision,
            "similarity": c.similarity,
            "shape_weight": c.shape_weight,
            "mining": c.mining,
            "threshold": self.threshold,
            "threshold_calibrated": c.loss == "triplet" and c.threshold is None,
            "loss": c.loss,
            "margin": c.margin,
            "embedding_dim": c.encoder.embedding_dim,
            "history_steps": c.history_steps or None,
            "num_parameters": count_parameters(self.model),
            "epoch": epoch,
            "metrics": metrics,
            "train_config": c.to_dict(),
            "data": {
                "table": self._table_name(),
                "table_sha256": m["content_sha256"],
                "num_windows": len(self.table),
                "num_train": len(self.split.train),
                "num_val": len(self.split.val),
                "num_steps": self.table_steps,
                "window_config": m.get("window_config"),
                "inputs": m.get("inputs"),
            },
            "torch_version": torch.__version__,
            "device": str(self.device),
            "world_size": self.dist.world_size,
        }

    def _table_name(self) -> str:
        return self.table_path.name if self.table_path is not None else "(in memory)"

    def _resume(self) -> None:
        assert self.folder is not None  # resume needs a run folder (checked in __init__)
        last, state_file = self.folder.last, self.folder.state_file
        model, card, state = read_last(
            last,
            state_file,
            self.device,
            table_sha256=self.table.content_hash,
            train_config=self.config.to_dict(),
            encoder=self.config.encoder,
            world_size=self.dist.world_size,
        )
        point = check_train_state(
            state,
            state_file,
            checkpoint_epoch=card.get("epoch"),
            epochs=self.config.epochs,
            steps_per_epoch=self.steps_per_epoch,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generators=self.streams.generators(),
            device_type=self.device.type,
        )
        assert isinstance(state, dict)  # checked above
        # Every field checked: nothing below can fail half-way through restoring.
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.streams.restore(state, self.folder.path)
        self.start_epoch, self.best_min_ade = point.start_epoch, point.best_min_ade
        if self.start_epoch >= self.config.epochs:
            raise ConfigError(
                f"{self.folder.path}: the run already finished its {self.config.epochs} epoch(s); nothing to "
                "resume (its best checkpoint is in best/; --overwrite trains it afresh)"
            )
        # A resumed run whose later epochs never beat the earlier best still reports that best.
        self.best_row = self.folder.best_row()
        log.info("resuming after epoch %d (best val minADE %.3f)", self.start_epoch, self.best_min_ade)

    # -- one step ----------------------------------------------------------------------------
    def batch_loss(
        self, rows: torch.Tensor, generator: torch.Generator, across_ranks: bool = False
    ) -> tuple[torch.Tensor, int]:
        """Loss of one batch of table rows (single encoder pass) and how many anchors it used (mined
        triplets, or anchors with a neighbour for the soft-neighbour loss).

        ``across_ranks`` (training steps, which every rank runs together): encode through the DDP
        wrapper, augment the inputs (``config.augment``; the loss reads the clean windows) and, with
        ``mining_scope="global"``, mine within the all-gathered global batch.
        """
        xb = self.xy[rows].to(self.device, non_blocking=True)
        tb = xb if self.target_xy is self.xy else self.target_xy[rows].to(self.device, non_blocking=True)
        gb = self.groups[rows].to(self.device, non_blocking=True)
        x_in, valid = xb, None
        if across_ranks and self.config.augment.active:
            frame = to_history_frame if self.config.history_steps else to_own_frame
            x_np, valid_np = augment(self.xy[rows].numpy(), self.config.augment, self.augment_rng, frame)
            x_in = torch.from_numpy(x_np).to(self.device, non_blocking=True)
            valid = None if valid_np.all() else torch.from_numpy(valid_np).to(self.device, non_blocking=True)
        use_bf16 = self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            z = (self.train_model if across_ranks else self.model)(x_in, valid)
        return self.loss(z, tb, gb, generator, across_ranks)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        c = self.config
        val = self.split.val
        if len(val) > c.max_val_windows:
            val = np.random.default_rng(c.seed).choice(val, c.max_val_windows, replace=False)
            val.sort()
        gen = torch.Generator(device=self.device).manual_seed(c.seed + 2)
        losses = []
        for start in range(0, len(val) - 1, c.batch_size):
            rows = torch.from_numpy(val[start : start + c.batch_size])
            if len(rows) >= 2:
                losses.append(float(self.batch_loss(rows, gen)[0]))
        emb = embed_windows(self.model, self.table.xy_agent[val], self.device)
        min_ade, min_fde = retrieval_min_ade_fde(
            self.table.xy_agent[val], torch.from_numpy(emb).to(self.device), self.groups[val].numpy(), c.val_k
        )
        self.model.train()
        return {
            "val_loss": float(np.mean(losses)),
            f"val_minADE@{c.val_k}": min_ade,
            f"val_minFDE@{c.val_k}": min_fde,
        }

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch``; returns the best epoch's metrics. With a run folder, holds its
        lock throughout and writes the checkpoints and metrics there.

        Raises:
            DataError: the run folder changed since this trainer checked it (another run wrote it).
            TrainingError: a non-finite loss, an epoch in which no batch yielded a triplet (nothing was
                learned: the threshold or data admit no positive/negative pairs), or no epoch with a
                finite validation minADE. No "best" checkpoint is written from such an epoch.
        """
        if self.folder is None:
            return self._fit()
        with self.folder.lock():
            self.folder.check_unchanged()
            return self._fit()

    def _fit(self) -> dict[str, float]:
        c = self.config
        main = self.dist.is_main  # only rank 0 validates and writes
        folder = self.folder
        if folder is not None:
            folder.start(c.to_dict(), self._table_name(), self.start_epoch)
        writer = folder.tensorboard() if folder is not None else None
        best = dict(self.best_row)
        self.model.train()
        for epoch in range(self.start_epoch, c.epochs):
            row = self._epoch(epoch)
            if (epoch + 1) % c.val_every == 0 or epoch + 1 == c.epochs:
                row.update(distributed.broadcast_from_main(self.validate() if main else None, self.dist))
                key = f"val_minADE@{c.val_k}"
                if not math.isfinite(row[key]):
                    log.warning(
                        "epoch %d: validation %s is %s; not a best checkpoint", epoch + 1, key, row[key]
                    )
                elif row[key] < self.best_min_ade:
                    self.best_min_ade = row[key]
                    best = dict(row)
                    if folder is not None:
                        folder.save_best(self.model, self._card(epoch + 1, row))
            if not main:
                continue
            if folder is not None:
                folder.save_last(self.model, self._card(epoch + 1, row), self._train_state(epoch))
                folder.append_metrics(row)
            if writer is not None:
                for k, v in row.items():
                    writer.add_scalar(k, v, epoch + 1)
            log.info(
                "epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            )
        if writer is not None:
            writer.close()
        if not best and not (folder is not None and folder.has_best()):
            raise TrainingError(
                f"no epoch reached a finite validation minADE@{c.val_k}; no best checkpoint was written"
            )
        if best:
            return best
        assert folder is not None
        return folder.best_metrics()

    def _epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of optimiser steps; returns its metrics row (without validation)."""
        c = self.config
        if self.dist.is_distributed:
            perm = self.split.train[distributed.epoch_order(self.sampler, epoch)]
        else:  # the single-process order of earlier releases, kept so that runs reproduce
            perm = self.split.train[torch.randperm(len(self.split.train), generator=self.shuffle).numpy()]
        # Per epoch and rank, so that a resumed run draws the same batches and augmentations.
        epoch_rng = np.random.default_rng([c.seed, self.dist.rank, epoch])
        self.augment_rng = np.random.default_rng([c.seed, self.dist.rank, epoch, 1])
        if self.neighborhoods is not None:
            perm = self.split.train[self.neighborhoods.epoch(self.steps_per_epoch, epoch_rng).ravel()]
        t0 = time.perf_counter()
        total, n_triplets = 0.0, 0
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{c.epochs}",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        for step in bar:
            rows = torch.from_numpy(perm[step * c.batch_size : (step + 1) * c.batch_size])
            loss, m = self.batch_loss(rows, self.mining_gen, across_ranks=True)
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step}; lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total += float(loss.detach())
            n_triplets += m
            bar.set_postfix(loss=f"{total / (step + 1):.4f}")
            # Without a triplet nothing is learned; on a large table say so after a few hundred
            # batches rather than after the epoch.
            if n_triplets == 0 and step + 1 == min(self.steps_per_epoch, EMPTY_BATCHES_LIMIT):
                if self.threshold is None:
                    raise TrainingError(
                        f"epoch {epoch + 1}: in none of the first {step + 1} batches had a window a neighbour "
                        "on another track; nothing is learned, so no checkpoint is written"
                    )
                raise TrainingError(
                    f"epoch {epoch + 1}: none of the first {step + 1} batches yielded a triplet (similarity "
                    f"threshold {self.threshold:.4g}); nothing is learned, so no checkpoint is written. "
                    "Drop --threshold to calibrate it, or use a larger --batch-size"
                )
        seconds = time.perf_counter() - t0
        W = self.dist.world_size
        total, all_triplets = distributed.sum_over_ranks([total, float(n_triplets)], self.dist, self.device)
        return {
            "epoch": epoch + 1,
            "train_loss": total / (W * self.steps_per_epoch),
            # Triplets mined, or anchors with a neighbour for the soft-neighbour loss.
            ("triplets_per_batch" if c.loss == "triplet" else "anchors_per_batch"): all_triplets
            / (W * self.steps_per_epoch),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "train_windows_per_s": W * self.steps_per_epoch * c.batch_size / seconds,
        }

    def _train_state(self, epoch: int) -> dict[str, Any]:
        """What ``last/train_state.pt`` holds after ``epoch`` (0-based): optimiser, schedule, random
        streams and the best validation minADE so far (``trajemb.training.train_state`` checks it on resume)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.streams.state(),
            "epoch": epoch,
            "best_min_ade": self.best_min_ade,
        }


#: Encoder fields a fine-tuning run may set otherwise than its checkpoint: regularisation while training,
#: not what the weights compute.
TRAINING_ONLY_FIELDS = ("dropout", "input_dropout")


def initial_weights(checkpoint: Path, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a fine-tuning run of ``config`` starts from (``init_from``): those of ``checkpoint``,
    read and checked as every checkpoint is (``load_checkpoint``), whose encoder must be the run's (its
    dropout aside) and read what the run's does (whole windows, or histories of the same length).

    Raises:
        DataError: an unreadable or invalid checkpoint.
        ConfigError: its encoder or inputs differ from the run's, naming the flags that differ.
    """
    model, card = load_checkpoint(checkpoint)
    theirs, ours = model.config.to_dict(), config.encoder.to_dict()
    differ = [
        k
        for k in sorted(set(theirs) | set(ours))
        if theirs.get(k) != ours.get(k) and k not in TRAINING_ONLY_FIELDS
    ]
    if differ:
        detail = ", ".join(f"{k} {theirs.get(k)!r} (flags: {ours.get(k)!r})" for k in differ)
        raise ConfigError(
            f"{checkpoint}: its encoder is not the one to train: {detail}; pass the checkpoint's values",
            fields=("init_from", *differ),
        )
    history = card_history_steps(card, str(checkpoint)) or 0
    if history != config.history_steps:
        raise ConfigError(
            f"{checkpoint}: it was trained with history_steps {history} (0: whole windows), this run has "
            f"{config.history_steps}; pass the checkpoint's value",
            fields=("init_from", "history_steps"),
        )
    return model.state_dict()


def _with_window_steps(config: TrainConfig, num_steps: int, source: str) -> TrainConfig:
    """``config`` with its encoder's linear base reading windows of ``num_steps`` (the steps the
    encoder reads: the table's, or a history model's history); refused where it was set otherwise."""
    steps = config.encoder.window_steps
    if steps not in (0, num_steps):
        raise ConfigError(
            f"{source}: the encoder's linear base reads windows of {steps} steps, the table gives {num_steps}"
        )
    return replace(config, encoder=replace(config.encoder, window_steps=num_steps))


def _one_cycle_warmup(fraction: float, total_steps: int) -> float:
    """``OneCycleLR``'s ``pct_start``: it divides by (warm-up steps - 1), so a warm-up of exactly one
    step fails with ZeroDivisionError; a short run warms up over 2 steps (half a step for 1-2 steps)."""
    if total_steps >= 3:
        return max(fraction, 2.0 / total_steps) if fraction * total_steps < 2 else fraction
    return 0.5 / total_steps


def train(
    config: TrainConfig,
    table: Path,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, float]:
    """Train and write ``out/best``, ``out/last``, ``out/metrics.csv``; returns the best epoch's metrics.

    ``resume`` continues the run in ``out``; ``overwrite`` replaces it; without either, ``out`` must be
    new or empty (``trajemb.training.run_folder.check_run_folder``). Under ``torchrun`` this process joins the
    process group first and leaves it afterwards.
    """
    with distributed.process_group(resolve_device(config.device)):
        return Trainer(table, config, out, resume=resume, progress=progress, overwrite=overwrite).fit()
