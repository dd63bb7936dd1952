"""Data-parallel training: torchrun with two gloo processes trains, writes from rank 0 only and resumes
to the very weights of an uninterrupted run; mining over the all-gathered global batch has the
gradient of one process mining the whole batch."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from trajemb.training import distributed
from trajemb.training.model import EncoderConfig
from trajemb.training.train import TrainConfig, Trainer

TINY = ["--embedding-dim", "8", "--hidden", "32", "--layers", "1", "--heads", "4"]
# Hard mining and no dropout leave the sampler as the only randomness, so a resumed run can be
# compared weight for weight with an uninterrupted one.
DETERMINISTIC = ["--mining", "hard", "--dropout", "0", "--input-dropout", "0"]

# Runs trajemb's CLI under torchrun; rank 0 dies right after its epoch-N metrics row, as a job killed
# between epochs (torchrun then stops the other rank).
INTERRUPTING_LAUNCHER = """
import sys
import trajemb.training.run_folder as run_folder
from trajemb.cli import main

stop_after, argv = int(sys.argv[1]), sys.argv[2:]
append_metrics = run_folder.append_metrics

def append_then_die(path, row):
    append_metrics(path, row)
    if row["epoch"] == stop_after:
        raise SystemExit(3)

run_folder.append_metrics = append_then_die
sys.exit(main(argv))
"""


def torchrun(target: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def train_args(table: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-q",
        "train",
        "--data",
        str(table),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--val-fraction",
        "0.2",
        "--device",
        "cpu",
        *TINY,
        *extra,
    ]


def metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_torchrun_trains_on_rank_zero_and_resumes(synth_table: Path, tmp_path: Path) -> None:
    whole = torchrun(["-m", "trajemb"], *train_args(synth_table, tmp_path / "whole", *DETERMINISTIC))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert whole.stdout.count("best epoch") == 1  # rank 0 reports, rank 1 stays quiet
    assert [r["epoch"] for r in metrics(tmp_path / "whole")] == ["1", "2"]  # one writer
    card = json.loads((tmp_path / "whole" / "last" / "card.json").read_text())
    assert card["world_size"] == 2 and card["epoch"] == 2
    assert float(metrics(tmp_path / "whole")[1]["train_loss"]) < float(
        metrics(tmp_path / "whole")[0]["train_loss"]
    )

    launcher = tmp_path / "launch.py"
    launcher.write_text(INTERRUPTING_LAUNCHER)
    cut = torchrun([str(launcher), "1"], *train_args(synth_table, tmp_path / "cut", *DETERMINISTIC))
    assert cut.returncode != 0 and [r["epoch"] for r in metrics(tmp_path / "cut")] == ["1"]
    resumed = torchrun(
        ["-m", "trajemb"], *train_args(synth_table, tmp_path / "cut", *DETERMINISTIC, "--resume")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in metrics(tmp_path / "cut")] == ["1", "2"]
    a = load_file(str(tmp_path / "whole" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    for name, weight in a.items():
        torch.testing.assert_close(b[name], weight, rtol=0, atol=1e-6, msg=name)

    # A different number of processes cannot take over the run: the sampler's shards would change.
    alone = subprocess.run(
        [
            sys.executable,
            "-m",
            "trajemb",
            *train_args(synth_table, tmp_path / "cut", *DETERMINISTIC, "--resume"),
        ],
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 2 and "trained by 2 process(es)" in alone.stderr


def _global_step_grads(rank: int, port: int, table: str, rows: torch.Tensor, out: str) -> None:
    """One gloo rank: the gradient of one training step mining over the global batch."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        trainer = Trainer(Path(table), _step_config("global"), Path(out), progress=False)
        half = len(rows) // 2
        loss, _ = trainer.batch_loss(rows[rank * half : (rank + 1) * half], _mining_gen(), across_ranks=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if rank == 0:
            torch.save({n: p.grad for n, p in trainer.model.named_parameters()}, Path(out) / "grads.pt")
        # Both ranks leave the group together: a rank tearing gloo down while its peer still holds
        # the pair open can abort ("terminate called without an active exception") on a busy machine.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _step_config(scope: str) -> TrainConfig:
    encoder = EncoderConfig(
        embedding_dim=8, d_model=32, num_layers=1, num_heads=4, dropout=0.0, input_dropout=0.0
    )
    return TrainConfig(
        encoder=encoder, batch_size=128, val_fraction=0.2, device="cpu", mining="hard", mining_scope=scope
    )  # type: ignore[arg-type]


def _mining_gen() -> torch.Generator:
    return torch.Generator().manual_seed(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_global_mining_gradient_equals_one_process(synth_table: Path, tmp_path: Path) -> None:
    one = Trainer(synth_table, _step_config("global"), tmp_path, progress=False)
    assert not one.dist.is_distributed
    rows = torch.from_numpy(one.split.train[:256])
    loss, _ = one.batch_loss(rows, _mining_gen(), across_ranks=True)  # one process: the whole batch
    loss.backward()  # type: ignore[no-untyped-call]
    mp.spawn(_global_step_grads, args=(_free_port(), str(synth_table), rows, str(tmp_path)), nprocs=2)
    grads = torch.load(tmp_path / "grads.pt", weights_only=True)
    for name, p in one.model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_single_process_is_rank_zero_of_one() -> None:
    env = distributed.current()
    assert env == distributed.DistEnv() and env.is_main and not env.is_distributed
    assert distributed.rank_device(torch.device("cuda"), env) == torch.device("cuda")
    assert distributed.rank_device(torch.device("cuda"), distributed.DistEnv(1, 2, 1)) == torch.device(
        "cuda", 1
    )


def test_a_rendezvous_that_is_not_a_store_ends_in_one_line_within_its_deadline() -> None:
    """The store client waits for ever at a port that accepts but never answers; the check gives up
    after its deadline, and a real store passes it."""
    import time
    from datetime import timedelta

    from trajemb.core.errors import ConfigError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepted by the kernel, never answered
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=r"does not answer as a torch\.distributed store within 1 s"):
            distributed.check_rendezvous("127.0.0.1", port, timeout_s=1.0)
        assert time.monotonic() - t0 < 10
    store = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False
    )
    distributed.check_rendezvous("127.0.0.1", store.port, timeout_s=10.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    with pytest.raises(ConfigError, match="nothing listens at"):
        distributed.wait_for_rendezvous("127.0.0.1", free, timeout_s=1.0)
