"""Contrastive training of the trajectory encoder (arXiv 2506.02571), CPU or GPU.

Each step encodes a batch once, computes the (B, B) trajectory similarity on the device, mines index
triplets from it (vectorised) and applies the triplet loss to embeddings of that single pass. AdamW
with a one-cycle schedule, gradient clipping, bf16 autocast on CUDA. Validation on held-out scenarios
(split by scenario, so no track leaks) reports triplet loss and retrieval minADE/minFDE@k. The best
checkpoint (lowest validation minADE@k) and the last one (with optimizer state, for ``--resume``) are
kept; a metrics CSV (and TensorBoard, if installed) logs every epoch.

Under ``torchrun`` the same loop runs data-parallel (``trajemb.distributed``): rows sharded per rank
by a ``DistributedSampler``, gradients averaged by DDP, only rank 0 validates and writes.

A run folder carries a ``trajemb_run.json`` marker. An existing run is continued only with ``resume``
and started afresh only with ``overwrite`` (its old checkpoints and metrics removed first, so rows of
two runs never mix); anything else in the way is refused before the table is read.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from trajemb import __version__, distributed
from trajemb.atomic import output_lock, path_identity, write_text_atomic
from trajemb.augment import AugmentConfig, augment
from trajemb.batches import NeighborhoodBatches
from trajemb.checkpoint import git_revision, load_checkpoint, read_card, save_checkpoint
from trajemb.devices import resolve_device
from trajemb.embed import embed_windows
from trajemb.errors import ConfigError, DataError, TrajembError
from trajemb.history import check_history_steps, history_input, to_history_frame, window_in_history_frame
from trajemb.losses import DEFAULT_MARGIN, TripletLoss
from trajemb.metrics import retrieval_min_ade_fde
from trajemb.mining import MINING_STRATEGIES, mine_triplets
from trajemb.model import EncoderConfig, TrajectoryEncoder, count_parameters
from trajemb.outputs import RUN_KIND, RUN_MARKER, check_output_dir
from trajemb.perturb import to_own_frame
from trajemb.schema import MAX_WINDOW_STEPS
from trajemb.similarity import DEFAULT_SHAPE_WEIGHT, SIMILARITIES, fft_features, similarity_matrix
from trajemb.soft_neighbor_loss import DEFAULT_NEIGHBORS, SoftNeighborLoss
from trajemb.store import TrajectoryTable, read_table
from trajemb.train_state import check_train_state
from trajemb.validate import check_float, check_int, check_seed

log = logging.getLogger(__name__)

TRAIN_STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.csv"
TRAIN_CONFIG_FILE = "train_config.json"
#: What a run writes into its folder; ``overwrite`` removes exactly these, nothing the user put there.
RUN_ARTEFACTS = ("best", "last", METRICS_FILE, TRAIN_CONFIG_FILE, "tensorboard", RUN_MARKER)
#: Entries whose presence means a run has made progress (continue it or overwrite it, not both).
RUN_PROGRESS = ("best", "last", METRICS_FILE)
#: Bounds beyond any sensible run, so that a typo fails now rather than hours (or gigabytes) later.
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 1 << 24
MAX_VAL_K = 1000
#: Consecutive batches without a single triplet, from the start of an epoch, after which training stops.
EMPTY_BATCHES_LIMIT = 200


class TrainingError(TrajembError):
    """Training cannot go on (non-finite loss, ...)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``trajemb train`` takes; saved as ``train_config.json`` and in each card."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    similarity: str = "cosine"
    shape_weight: float = DEFAULT_SHAPE_WEIGHT
    threshold: float | None = None  # None: calibrate to ``positive_fraction`` of in-batch pairs
    positive_fraction: float = 0.02
    mining: str = "random"
    margin: float = DEFAULT_MARGIN
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    grad_clip: float = 0.5
    val_fraction: float = 0.1
    val_every: int = 1
    val_k: int = 6
    max_val_windows: int = 20_000
    seed: int = 0
    device: str = "auto"
    # Under torchrun: mine within each rank's batch, or within the batches of all ranks (all-gathered).
    mining_scope: Literal["rank", "global"] = "rank"
    # The paper's triplet loss, or the soft-neighbour loss (``trajemb.soft_neighbor_loss``).
    loss: Literal["triplet", "soft_neighbors"] = "triplet"
    soft_neighbors: int = DEFAULT_NEIGHBORS
    soft_temperature: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # ``trajemb.augment``
    # Random batches, or neighbourhoods with the hard manoeuvres represented (``trajemb.batches``).
    batches: Literal["random", "neighborhoods"] = "random"
    neighbors_per_seed: int = 4
    hard_share: float = 0.0
    # A history model (issue 18): the encoder reads the first H steps of each window in the frame of
    # their last state (``trajemb.history``), and the loss compares those; 0 reads whole windows.
    history_steps: int = 0
    # What a history model's loss compares: the histories it reads, or the whole windows (history and
    # future) in the histories' last-state frame, so that histories whose futures agree are pulled together.
    history_targets: Literal["history", "window"] = "history"

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise ConfigError(f"encoder must be an EncoderConfig, got {type(self.encoder).__name__}")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(
                f"--similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}"
            )
        if self.mining not in MINING_STRATEGIES:
            raise ConfigError(f"--mining must be one of {', '.join(MINING_STRATEGIES)}, got {self.mining!r}")
        check_float("--shape-weight", self.shape_weight, 0.0, 1e6)
        if self.threshold is not None:
            # Both similarities are cosines, in [-1, 1]; outside it every pair is positive or none is.
            check_float("--threshold", self.threshold, -1.0, 1.0)
        check_float("--positive-fraction", self.positive_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_float("--margin", self.margin, 0.0, 4.0, low_open=True)  # unit vectors are at most 2 apart
        check_int("--epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("--batch-size", self.batch_size, 2, MAX_BATCH_SIZE)
        check_float("--lr", self.lr, 0.0, 10.0, low_open=True)
        check_float("--weight-decay", self.weight_decay, 0.0, 10.0)
        check_float("--warmup", self.warmup_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_float("--grad-clip", self.grad_clip, 0.0, 1e6, low_open=True)
        check_float("--val-fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_int("--val-every", self.val_every, 1, MAX_EPOCHS)
        check_int("--val-k", self.val_k, 1, MAX_VAL_K)
        check_int("max_val_windows", self.max_val_windows, 2)
        check_seed("--seed", self.seed)
        if not isinstance(self.device, str):
            raise ConfigError(f"--device must be a string, got {self.device!r:.40}")
        if self.mining_scope not in ("rank", "global"):
            raise ConfigError(f"--mining-scope must be rank or global, got {self.mining_scope!r}")
        if self.loss not in ("triplet", "soft_neighbors"):
            raise ConfigError(f"--loss must be triplet or soft_neighbors, got {self.loss!r}")
        if self.loss == "soft_neighbors" and self.mining_scope == "global":
            raise ConfigError(
                "--mining-scope global mines triplets; the soft-neighbour loss works per process"
            )
        check_int("--soft-neighbors", self.soft_neighbors, 1, MAX_BATCH_SIZE)
        check_float("--soft-temperature", self.soft_temperature, 0.0, 1e6, low_open=True)
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        if self.batches not in ("random", "neighborhoods"):
            raise ConfigError(f"--batches must be random or neighborhoods, got {self.batches!r}")
        check_int("--neighbors-per-seed", self.neighbors_per_seed, 1, self.batch_size)
        if self.batch_size % self.neighbors_per_seed:
            raise ConfigError(
                f"--neighbors-per-seed {self.neighbors_per_seed} must divide --batch-size {self.batch_size}"
            )
        check_float("--hard-share", self.hard_share, 0.0, 1.0, high_open=True)
        if self.history_steps != 0:
            check_int("--history-steps", self.history_steps, 2, MAX_WINDOW_STEPS - 1)
        if self.history_targets not in ("history", "window"):
            raise ConfigError(
                f"--history-targets must be history or window, got {self.history_targets!r:.40}"
            )
        if self.history_targets == "window" and not self.history_steps:
            raise ConfigError("--history-targets window needs --history-steps (a history model)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def history_table(table: TrajectoryTable, history_steps: int, path: Path) -> TrajectoryTable:
    """The table a history model trains on: each window's first H steps in their last-state frame
    (``trajemb.history.history_input``); ids, labels and manifest stay the window's."""
    try:
        check_history_steps(history_steps, table.num_steps, f"windows of {path}")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; prepare the table with longer --steps") from exc
    return replace(table, xy_agent=history_input(table.xy_agent, history_steps))


def _check_finite(table: TrajectoryTable) -> None:
    bad = ~np.isfinite(table.xy_agent).all(axis=(1, 2))
    if bad.any():
        first = table.meta["window_id"].iloc[int(np.flatnonzero(bad)[0])]
        raise DataError(f"{int(bad.sum())} window(s) contain NaN or infinite positions (first: {first})")


def check_run_folder(out: Path, table: Path, resume: bool, overwrite: bool) -> None:
    """Raise unless ``out`` may hold this run: see the module docstring.

    Raises:
        ConfigError: ``resume`` and ``overwrite`` together.
        DataError: ``out`` is not ours to write (``trajemb.outputs``), holds a run with progress and
            neither ``resume`` nor ``overwrite`` was given, or ``resume`` without a last checkpoint.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts it afresh; give one of them")
    check_output_dir(out, "run", inputs=[table])
    progress = [name for name in RUN_PROGRESS if (Path(out) / name).exists()]
    resumable = (Path(out) / "last" / TRAIN_STATE_FILE).is_file()
    if resume and not resumable:
        # Never send a person round in a circle: with progress in the folder, dropping --resume would be
        # refused too.
        todo = "start afresh with --overwrite" if progress else "drop --resume to start afresh"
        raise DataError(f"{Path(out) / 'last'}: nothing to resume (no {TRAIN_STATE_FILE}); {todo}")
    if progress and not resume and not overwrite:
        todo = (
            "pass --resume to continue it, --overwrite to start it afresh"
            if resumable
            else f"it cannot be continued (no last/{TRAIN_STATE_FILE}): pass --overwrite to start it afresh"
        )
        raise DataError(
            f"{out} already holds a training run ({', '.join(progress)}); {todo}, or give a new --out"
        )


class Trainer:
    """Owns model, optimiser and data for one run; ``fit`` trains and writes the checkpoints.

    Everything (flags, output folder, device, table, validation split, resume state) is checked here,
    before the first step.
    """

    def __init__(
        self,
        config: TrainConfig,
        table_path: Path,
        out: Path,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ):
        self.config = config
        self.out = Path(out)
        self.dist = distributed.current()
        self.progress = progress and self.dist.is_main
        self.resume = resume
        self.overwrite = overwrite
        self.table_path = Path(table_path)
        check_run_folder(self.out, self.table_path, resume, overwrite)  # before even a lock file is made
        # Rank 0 writes the run folder. It holds the folder's lock while it checks and loads (here) and
        # while it trains (``fit``), so a second run into the same folder stops at once, naming this one;
        # a trainer built only to compute losses holds nothing, and ``fit`` refuses a folder that
        # changed in between.
        with self._folder_lock():
            self._setup(resume, overwrite)
            self._folder_seen = path_identity(self.out)

    def _folder_lock(self) -> contextlib.AbstractContextManager[None]:
        return output_lock(self.out) if self.dist.is_main else contextlib.nullcontext()

    def _setup(self, resume: bool, overwrite: bool) -> None:
        config = self.config
        check_run_folder(self.out, self.table_path, resume, overwrite)  # again, now that it is ours
        self.device = distributed.rank_device(resolve_device(config.device), self.dist)
        self.table = read_table(self.table_path)
        _check_finite(self.table)
        self.table_steps = self.table.num_steps
        # What the loss compares (and neighbourhood batches are drawn in): the inputs, or for a history
        # model with window targets, the whole windows in their histories' last-state frames.
        targets: np.ndarray | None = None
        if config.history_steps:
            if config.history_targets == "window":
                targets = window_in_history_frame(self.table.xy_agent, config.history_steps)
            self.table = history_table(self.table, config.history_steps, self.table_path)
        self.split = split_by_scenario(self.table, config.val_fraction)
        self.sampler = distributed.train_sampler(len(self.split.train), self.dist, config.seed)
        if len(self.sampler) < config.batch_size:
            raise ConfigError(
                f"{self.table_path}: {len(self.sampler)} training windows per process, fewer than one batch "
                f"of {config.batch_size}; lower --batch-size or prepare more data"
            )
        if len(self.split.val) < 2:
            raise ConfigError(f"{self.table_path}: fewer than 2 validation windows; raise --val-fraction")
        val_tracks = np.unique(self.table.track_groups()[self.split.val]).size
        if val_tracks <= config.val_k:
            raise ConfigError(
                f"{self.table_path}: validation holds {val_tracks} track(s), too few to retrieve "
                f"--val-k {config.val_k} neighbours from other tracks; lower --val-k or raise --val-fraction"
            )
        self.xy = torch.from_numpy(np.array(self.table.xy_agent))  # (N, T, 2), CPU, writable copy
        self.target_xy = self.xy if targets is None else torch.from_numpy(targets)  # (N, T', 2)
        self.groups = torch.from_numpy(self.table.track_groups())
        torch.manual_seed(config.seed)
        self.model = TrajectoryEncoder(config.encoder).to(self.device)
        self.train_model = distributed.wrap_model(self.model, self.dist)  # DDP under torchrun
        self.loss_fn: TripletLoss | SoftNeighborLoss = (
            TripletLoss(config.margin)
            if config.loss == "triplet"
            else SoftNeighborLoss(config.soft_neighbors, config.soft_temperature)
        )
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
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.mining_gen = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.start_epoch = 0
        self.best_min_ade = math.inf
        self.best_row: dict[str, float] = {}  # metrics of the best epoch so far (from out/best on resume)
        # The code this run trains with: taken once at the start, so that edits to the tree while it
        # trains do not mark its checkpoints dirty (nor clean ones trained from a dirty tree).
        self.git_revision = git_revision(Path(__file__).parent)
        self.threshold: float | None = None  # the soft-neighbour loss has no positive threshold
        if config.loss == "triplet":
            self.threshold = config.threshold if config.threshold is not None else self.calibrate_threshold()
        if resume:
            self._resume()

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
                "table": self.table_path.name,
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

    def _resume(self) -> None:
        last = self.out / "last"
        if not (last / TRAIN_STATE_FILE).is_file():
            raise DataError(
                f"{last}: nothing to resume (no {TRAIN_STATE_FILE}); drop --resume to start afresh"
            )
        model, card = load_checkpoint(last, self.device)
        data = card.get("data")
        trained_on = data.get("table_sha256") if isinstance(data, dict) else None
        if not isinstance(trained_on, str):
            raise DataError(f"{last}: the card does not name the table it was trained on; cannot resume")
        if trained_on != self.table.content_hash:
            raise DataError(f"{last}: was trained on table {trained_on[:12]}, not this one")
        if card.get("train_config") != json.loads(json.dumps(self.config.to_dict())):
            raise ConfigError(f"{last}: training config differs from this run's; resume with the same flags")
        if card.get("world_size", 1) != self.dist.world_size:
            raise ConfigError(
                f"{last}: was trained by {card.get('world_size', 1)} process(es), this run has "
                f"{self.dist.world_size}; resume with the same --nproc-per-node x nodes"
            )
        if model.config != self.config.encoder:
            raise DataError(f"{last}: config.json does not match the card's training config; cannot resume")
        try:
            state = torch.load(last / TRAIN_STATE_FILE, weights_only=True, map_location="cpu")
        except Exception as exc:
            # torch.load(weights_only=True) executes no code; whatever a damaged or foreign state file
            # raises (unpickling errors of any kind), the state cannot be resumed from.
            raise DataError(
                f"{last / TRAIN_STATE_FILE}: unreadable training state ({type(exc).__name__}: {exc}); "
                "start afresh with --overwrite"
            ) from exc
        point = check_train_state(
            state,
            last / TRAIN_STATE_FILE,
            checkpoint_epoch=card.get("epoch"),
            epochs=self.config.epochs,
            steps_per_epoch=self.steps_per_epoch,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generators={
                "shuffle_rng": self.shuffle.get_state(),
                **{k: v for k, v in self._rng_state().items() if isinstance(v, torch.Tensor)},
            },
            device_type=self.device.type,
        )
        # Every field checked: nothing below can fail half-way through restoring.
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle_rng"])
        self._restore_rng(state)
        self.start_epoch, self.best_min_ade = point.start_epoch, point.best_min_ade
        if self.start_epoch >= self.config.epochs:
            raise ConfigError(
                f"{self.out}: the run already finished its {self.config.epochs} epoch(s); nothing to resume "
                "(its best checkpoint is in best/; --overwrite trains it afresh)"
            )
        if (self.out / "best").is_dir():
            # A resumed run whose later epochs never beat the earlier best still reports that best.
            self.best_row = read_card(self.out / "best")["metrics"]
        log.info("resuming after epoch %d (best val minADE %.3f)", self.start_epoch, self.best_min_ade)

    def _rng_state(self) -> dict[str, Any]:
        """Every random stream an epoch draws from that is not re-seeded per epoch: the global torch
        generator of the CPU and of the training device (dropout) and in-batch mining's generator,
        with the device type they belong to."""
        state: dict[str, Any] = {
            "rng_device": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "mining_rng": self.mining_gen.get_state(),
        }
        if self.device.type == "cuda":
            state["device_rng"] = torch.cuda.get_rng_state(self.device)
        elif self.device.type == "mps":
            state["device_rng"] = torch.mps.get_rng_state()
        return state

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Restores ``_rng_state`` so that a resumed run draws what the uninterrupted one would have
        drawn: the same weights on a CPU, the same to float tolerance on a GPU (kernels may sum in
        another order). The device's streams are restored only on the device type they were saved
        on; a state of an earlier release, or one saved on another device type, resumes with fresh
        streams, and the log says so."""
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if state.get("rng_device") != self.device.type:
            log.warning(
                "%s: resuming with fresh dropout and mining random streams (%s); the run continues, "
                "but not draw for draw as an uninterrupted one",
                self.out,
                "saved by an earlier release"
                if "rng_device" not in state
                else f"saved on {state['rng_device']}, resumed on {self.device.type}",
            )
            return
        self.mining_gen.set_state(state["mining_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["device_rng"], self.device)
        elif self.device.type == "mps":
            torch.mps.set_rng_state(state["device_rng"])

    @torch.no_grad()
    def calibrate_threshold(self, num_batches: int = 8) -> float:
        """The similarity above which ``positive_fraction`` of in-batch pairs lie (other tracks only).

        The paper's fixed threshold (0.8) is scale-dependent: with the Cosine similarity's flattened
        distance in metres, 6 s windows of all road users almost never reach it, while FFT similarities
        of nearly all pairs exceed it. A quantile gives every similarity the same positive rate.
        """
        c = self.config
        gen = torch.Generator().manual_seed(c.seed + 3)
        values = []
        for _ in range(num_batches):
            rows = torch.from_numpy(
                self.split.train[torch.randperm(len(self.split.train), generator=gen)[: c.batch_size].numpy()]
            )
            xb, gb = self.xy[rows].to(self.device), self.groups[rows].to(self.device)
            sim = similarity_matrix(xb, c.similarity, c.shape_weight)
            off = ~(gb[:, None] == gb[None, :])
            values.append(torch.quantile(sim[off].float()[:1_000_000].cpu(), 1.0 - c.positive_fraction))
        threshold = float(torch.stack(values).mean())
        log.info(
            "calibrated %s similarity threshold %.4f (%.1f%% positive pairs)",
            c.similarity,
            threshold,
            100 * c.positive_fraction,
        )
        return threshold

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
        same_track = gb[:, None] == gb[None, :]
        if isinstance(self.loss_fn, SoftNeighborLoss):
            # Targets in the similarity's own space: the Cosine similarity's shape distance (flattened
            # metres) or the FFT similarity's magnitude features (blind to mirror images, as the paper's).
            targets = tb.reshape(len(tb), -1) if self.config.similarity == "cosine" else fft_features(tb)
            allowed = ~same_track
            return self.loss_fn(z, targets, allowed), int(allowed.any(dim=1).sum())
        assert self.threshold is not None  # calibrated in __init__ for the triplet loss
        if across_ranks and self.config.mining_scope == "global" and self.dist.is_distributed:
            return self._global_batch_loss(tb, gb, z, generator)
        with torch.no_grad():
            sim = similarity_matrix(tb, self.config.similarity, self.config.shape_weight)
        triplets = mine_triplets(
            sim,
            self.threshold,
            self.config.mining,
            embeddings=z.detach(),
            margin=self.config.margin,
            exclude=same_track,
            generator=generator,
        )
        return self.loss_fn(z, triplets), len(triplets)

    def _global_batch_loss(
        self, xb: torch.Tensor, gb: torch.Tensor, z: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Mining within the batches of all ranks. Every rank mines the same global triplets (same
        gathered data, same generator state) and keeps those anchored in its own rows; scaling by the
        rank's share makes DDP's gradient average the gradient of the mean over all global triplets."""
        xg, gg, zg, own = distributed.gather_global_batch(xb, gb, z, self.dist)
        assert self.threshold is not None and isinstance(self.loss_fn, TripletLoss)
        with torch.no_grad():
            sim = similarity_matrix(xg, self.config.similarity, self.config.shape_weight)
        every = mine_triplets(
            sim,
            self.threshold,
            self.config.mining,
            embeddings=zg.detach(),
            margin=self.config.margin,
            exclude=gg[:, None] == gg[None, :],
            generator=generator,
        )
        mine = distributed.own_anchors(every, own)
        share = len(mine) * self.dist.world_size / max(1, len(every))
        return self.loss_fn(zg, mine) * share, len(mine)

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
    def _start_folder(self) -> None:
        """Mark the run folder as ours; a fresh start first removes the previous run's artefacts, a
        resumed one drops metrics rows of epochs after its last checkpoint."""
        if not self.resume:
            for name in RUN_ARTEFACTS:
                path = self.out / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        marker = {"kind": RUN_KIND, "trajemb_version": __version__, "table": self.table_path.name}
        write_text_atomic(self.out / RUN_MARKER, json.dumps(marker, indent=2))
        write_text_atomic(self.out / TRAIN_CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2))
        if self.resume:
            _truncate_csv(self.out / METRICS_FILE, self.start_epoch)

    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch``; returns the best epoch's metrics. Holds the run folder's lock
        throughout.

        Raises:
            DataError: the run folder changed since this trainer checked it (another run wrote it).
            TrainingError: a non-finite loss, an epoch in which no batch yielded a triplet (nothing was
                learned: the threshold or data admit no positive/negative pairs), or no epoch with a
                finite validation minADE. No "best" checkpoint is written from such an epoch.
        """
        with self._folder_lock():
            if self.dist.is_main and path_identity(self.out) != self._folder_seen:
                raise DataError(
                    f"{self.out}: changed since this run checked it (another run wrote it meanwhile?); "
                    "nothing was written; start it again"
                )
            return self._fit()

    def _fit(self) -> dict[str, float]:
        c = self.config
        main = self.dist.is_main  # only rank 0 validates and writes
        if main:
            self._start_folder()
        writer = _tensorboard(self.out) if main else None
        metrics_path = self.out / METRICS_FILE
        best = dict(self.best_row)
        self.model.train()
        for epoch in range(self.start_epoch, c.epochs):
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
            total, all_triplets = distributed.sum_over_ranks(
                [total, float(n_triplets)], self.dist, self.device
            )
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "train_loss": total / (W * self.steps_per_epoch),
                # Triplets mined, or anchors with a neighbour for the soft-neighbour loss.
                ("triplets_per_batch" if c.loss == "triplet" else "anchors_per_batch"): all_triplets
                / (W * self.steps_per_epoch),
                "lr": float(self.scheduler.get_last_lr()[0]),
                "train_windows_per_s": W * self.steps_per_epoch * c.batch_size / seconds,
            }
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
                    if main:
                        save_checkpoint(self.model, self.out / "best", self._card(epoch + 1, row))
            if not main:
                continue
            self._save_last(epoch, row)
            _append_csv(metrics_path, row)
            if writer is not None:
                for k, v in row.items():
                    writer.add_scalar(k, v, epoch + 1)
            log.info(
                "epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            )
        if writer is not None:
            writer.close()
        if not best and not (self.out / "best").is_dir():
            raise TrainingError(
                f"no epoch reached a finite validation minADE@{c.val_k}; no best checkpoint was written"
            )
        return best or self._best_so_far()

    def _best_so_far(self) -> dict[str, float]:
        """The best epoch's metrics of a resumed run whose best epoch came before the resume."""
        try:
            metrics = load_checkpoint(self.out / "best")[1].get("metrics")
        except DataError:
            metrics = None
        if not isinstance(metrics, dict):
            raise TrainingError(f"{self.out / 'best'}: no readable best checkpoint after training")
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def _save_last(self, epoch: int, row: dict[str, float]) -> None:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle_rng": self.shuffle.get_state(),
            **self._rng_state(),
            "epoch": epoch,
            "best_min_ade": self.best_min_ade,
        }
        save_checkpoint(self.model, self.out / "last", self._card(epoch + 1, row), {TRAIN_STATE_FILE: state})


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable metrics ({exc}); start afresh with --overwrite") from exc


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    # Rows may gain validation columns; write the union of columns so the CSV stays rectangular.
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    w = csv.DictWriter(buffer, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _one_cycle_warmup(fraction: float, total_steps: int) -> float:
    """``OneCycleLR``'s ``pct_start``: it divides by (warm-up steps - 1), so a warm-up of exactly one
    step fails with ZeroDivisionError; a short run warms up over 2 steps (half a step for 1-2 steps)."""
    if total_steps >= 3:
        return max(fraction, 2.0 / total_steps) if fraction * total_steps < 2 else fraction
    return 0.5 / total_steps


def _append_csv(path: Path, row: dict[str, float]) -> None:
    _write_csv(path, [*_read_csv(path), row])


def _truncate_csv(path: Path, epochs_done: int) -> None:
    """Keep the rows of epochs 1..``epochs_done`` (a run killed between writing its metrics and its
    last checkpoint repeats that epoch on resume; its row must not appear twice)."""
    rows = _read_csv(path)
    kept = [r for r in rows if _epoch_of(r) <= epochs_done]
    if len(kept) != len(rows):
        _write_csv(path, kept)


def _epoch_of(row: dict[str, Any]) -> float:
    try:
        return float(row.get("epoch", "inf"))
    except ValueError:
        return math.inf


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


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
    new or empty (``check_run_folder``). Under ``torchrun`` this process joins the process group first
    and leaves it afterwards.
    """
    with distributed.process_group(resolve_device(config.device)):
        return Trainer(config, table, out, resume=resume, progress=progress, overwrite=overwrite).fit()
