"""Data-parallel training under ``torchrun``: process group, ranks, sampler and the global batch.

``torchrun --nproc-per-node N -m trajemb train ...`` starts N processes with the rendezvous variables
set; ``process_group`` joins them (nccl on CUDA, each process on GPU ``LOCAL_RANK``; gloo on CPU) and
everything else here is a no-op in a plain single process, so the trainer has one code path.

Semantics (PyTorch DDP): every rank holds the whole table, a ``DistributedSampler`` gives each rank
a disjoint share of the training rows every epoch, ``--batch-size`` is per rank (the global batch is
``batch_size * world_size``), gradients are averaged by ``DistributedDataParallel``. Triplets are
mined within each rank's batch by default; ``mining_scope="global"`` all-gathers the batches first
(``gather_global_batch``) so that positives and negatives come from the global batch.

Joining has a deadline: a ``torch.distributed`` store client waits without end (and without a way to
interrupt it) at a port that accepts connections but is not a store. ``check_rendezvous`` tries the
store in a thread of its own and gives up after ``RENDEZVOUS_TIMEOUT_S`` with one line;
``process_group`` runs it where trajemb itself joins a store (``MASTER_ADDR:MASTER_PORT`` without
torchrun's agent store), and ``scripts/on_a_cluster.sh`` before starting torchrun on a worker node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from trajemb.core.errors import ConfigError
from trajemb.training.mining import Triplets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank ``rank`` of ``world_size`` (a single process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def current() -> DistEnv:
    """The process group this process has joined, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv()
    return DistEnv(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", "0")),
        str(dist.get_backend()),
    )


def launched_by_torchrun() -> bool:
    return dist.is_available() and dist.is_torchelastic_launched()


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (from its ``RANK`` variable, valid before and after the process
    group exists), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0 if launched_by_torchrun() else True


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistEnv]:
    """Join the torchrun process group for the block and leave it afterwards.

    Outside torchrun, or when the group is already joined (by the caller), nothing is set up or torn
    down. Ranks other than 0 log warnings only, so that a run logs once.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield current()
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True) and "MASTER_ADDR" in os.environ:
        # This process connects to the store itself (torchrun's own agent store is already joined).
        check_rendezvous(os.environ["MASTER_ADDR"], int(os.environ.get("MASTER_PORT", "29500")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    env = current()
    logger = logging.getLogger("trajemb")
    level = logger.level
    if not env.is_main:
        logger.setLevel(logging.WARNING)
    log.info("rank %d of %d (%s backend)", env.rank, env.world_size, env.backend)
    try:
        yield env
        # On success every rank leaves together, so none tears its connections down while a peer
        # still uses them (gloo can abort the late rank otherwise). After a failure the peers may be
        # gone, so a barrier could only hang: the group is destroyed at once.
        dist.barrier()
    finally:
        logger.setLevel(level)
        dist.destroy_process_group()


#: Seconds a rendezvous store gets to answer.
RENDEZVOUS_TIMEOUT_S = 60.0


def check_rendezvous(host: str, port: int, timeout_s: float | None = None) -> None:
    """Raise unless a ``torch.distributed`` TCP store at ``host:port`` answers within ``timeout_s``
    (None: ``RENDEZVOUS_TIMEOUT_S``).

    Raises:
        ConfigError: nothing listens there, or something that is not a store (one line).
    """
    timeout_s = RENDEZVOUS_TIMEOUT_S if timeout_s is None else timeout_s
    outcome: dict[str, object] = {}

    def connect() -> None:
        try:
            store = getattr(dist, "TCPStore")(  # noqa: B009 - missing from the exported names
                host, port, is_master=False, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
            )
            store.check(["trajemb-rendezvous-probe"])  # one round trip
            outcome["ok"] = True
        except Exception as exc:  # whatever the store client raises, joining is not possible
            outcome["error"] = exc

    # The client blocks in C++ and ignores its own timeout against a silent port: a daemon thread can be
    # given up on; the main thread (and its signal handlers) stays free.
    thread = threading.Thread(target=connect, daemon=True, name="rendezvous-probe")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ConfigError(
            f"{host}:{port} accepts connections but does not answer as a torch.distributed store within "
            f"{timeout_s:g} s (another service on that port?); check the rendezvous endpoint"
        )
    if "error" in outcome:
        first = str(outcome["error"]).strip().splitlines()[0] if str(outcome["error"]).strip() else ""
        raise ConfigError(f"cannot join the rendezvous at {host}:{port} ({first[:200]})")


def wait_for_rendezvous(host: str, port: int, timeout_s: float | None = None) -> None:
    """``check_rendezvous`` once something listens at ``host:port``: a head node that has not started
    its store yet is waited for (connection refused), up to ``timeout_s`` in all."""
    timeout_s = RENDEZVOUS_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=5.0).close()
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"nothing listens at {host}:{port} after {timeout_s:g} s ({exc}); start the head node first"
                ) from exc
            time.sleep(1.0)
    check_rendezvous(host, port, max(1.0, deadline - time.monotonic()))


def rank_device(device: torch.device, env: DistEnv) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed CUDA run."""
    if env.is_distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", env.local_rank)
    return device


def train_sampler(num_rows: int, env: DistEnv, seed: int) -> DistributedSampler[Any]:
    """Each rank's share of ``num_rows`` training rows, reshuffled every epoch (``set_epoch``).

    The order depends on ``seed`` and the epoch only, so a resumed run sees the same batches.
    """
    return DistributedSampler(
        TensorDataset(torch.arange(num_rows)),
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """``DistributedDataParallel(model)`` in a distributed run (it averages the gradients), else
    the model itself. Parameters stay shared with ``model``, which keeps being the one saved."""
    if not env.is_distributed:
        return model
    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    # The only buffer (the positional encoding) is a constant: syncing it before every step is waste.
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def broadcast_from_main(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects, e.g. a metrics dict)."""
    if not env.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not env.is_distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def gather_global_batch(
    xy: torch.Tensor, groups: torch.Tensor, z: torch.Tensor, env: DistEnv
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, slice]:
    """Every rank's batch, concatenated in rank order: (W*B, T, 2) positions, (W*B,) groups and
    (W*B, D) embeddings, and the slice of this rank's own rows.

    The embeddings are gathered with autograd (functional collectives, which replace the deprecated
    ``torch.distributed.nn.functional.all_gather``; the backward is a sum reduce-scatter): the gradient
    of a loss on other ranks' rows flows back to the rank that encoded them. All ranks pass equal B.
    """
    B = xy.shape[0]
    own = slice(env.rank * B, (env.rank + 1) * B)
    if not env.is_distributed:
        return xy, groups, z, own
    xy_all = [torch.empty_like(xy) for _ in range(env.world_size)]
    groups_all = [torch.empty_like(groups) for _ in range(env.world_size)]
    dist.all_gather(xy_all, xy.contiguous())
    dist.all_gather(groups_all, groups.contiguous())
    world = dist.group.WORLD
    assert world is not None  # joined above (is_distributed)
    z_all = funcol.wait_tensor(funcol.all_gather_single(z.contiguous(), 0, world))  # type: ignore[no-untyped-call]
    return torch.cat(xy_all), torch.cat(groups_all), z_all, own


def own_anchors(triplets: Triplets, own: slice) -> Triplets:
    """The triplets whose anchor is one of this rank's rows (each global triplet on exactly one rank)."""
    keep = (triplets.anchor >= own.start) & (triplets.anchor < own.stop)
    return Triplets(triplets.anchor[keep], triplets.positive[keep], triplets.negative[keep])


def epoch_order(sampler: DistributedSampler[Any], epoch: int) -> np.ndarray:
    """This rank's training-row positions for ``epoch`` (indices into the training split)."""
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64)
