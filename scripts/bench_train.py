"""Benchmark: training throughput (windows/s) of our single-pass vectorised step against a faithful
re-implementation of the original's approach (arXiv 2506.02571's public code: a Python loop over
anchors builds the triplets, then anchors, positives and negatives go through the encoder in three
separate passes), on the same data, model, similarity and random mining, in one run.

Usage: python scripts/bench_train.py [--table T] [--batch-size 1024] [--steps 10] [--device auto] [--hidden 64]
       [--layers 1] [--heads 4]   (the paper's base model: --hidden 1024 --layers 4 --heads 8 --batch-size 4096)
Without --table it generates 200 synthetic scenarios first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trajemb.core.devices import resolve_device
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.synth.generate import SynthConfig, generate
from trajemb.training.model import EncoderConfig
from trajemb.training.similarity import similarity_matrix
from trajemb.training.train import TrainConfig, Trainer


def original_step(trainer: Trainer, rows: torch.Tensor) -> int:
    """One step as the original does it: per-anchor mining loop, three encoder passes. Returns triplets."""
    c = trainer.config
    batch = trainer.xy[rows].to(trainer.device)
    sim = similarity_matrix(batch, c.similarity, c.shape_weight)
    assert trainer.threshold is not None  # the triplet loss calibrates one
    threshold = float(trainer.threshold)
    anchors, positives, negatives = [], [], []
    for i in range(batch.shape[0]):
        pos = torch.where(sim[i] >= threshold)[0]
        pos = pos[pos != i]
        neg = torch.where(sim[i] < threshold)[0]
        if len(pos) > 0 and len(neg) > 0:
            anchors.append(batch[i])
            positives.append(batch[pos[int(torch.randint(len(pos), (1,)).item())]])
            negatives.append(batch[neg[int(torch.randint(len(neg), (1,)).item())]])
    if not anchors:
        return 0
    use_bf16 = trainer.device.type == "cuda"
    with torch.autocast(device_type=trainer.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        za = trainer.model(torch.stack(anchors))
        zp = trainer.model(torch.stack(positives))
        zn = trainer.model(torch.stack(negatives))
    loss = F.relu(F.pairwise_distance(za, zp) - F.pairwise_distance(za, zn) + c.margin).mean()
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    trainer.optimizer.step()
    return len(anchors)


def our_step(trainer: Trainer, rows: torch.Tensor) -> int:
    loss, n = trainer.batch_loss(rows, trainer.mining_gen)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    trainer.optimizer.step()
    return n


def measure(trainer: Trainer, step: object, steps: int, batch_size: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    batches = [
        torch.from_numpy(
            trainer.split.train[torch.randperm(len(trainer.split.train), generator=gen)[:batch_size].numpy()]
        )
        for _ in range(steps + 2)
    ]
    for rows in batches[:2]:  # warm-up
        step(rows)  # type: ignore[operator]
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    triplets = 0
    for rows in batches[2:]:
        triplets += step(rows)  # type: ignore[operator]
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return steps * batch_size / seconds, triplets / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=None)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--similarity", default="cosine")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(args.table) if args.table else Path(tmp) / "t.parquet"
        if not args.table:
            generate(SynthConfig(num_scenarios=200, seed=5), Path(tmp) / "s", progress=False)
            prepare_table(PrepareConfig(av2_dirs=(str(Path(tmp) / "s"),)), table, progress=False)
        encoder = EncoderConfig(
            embedding_dim=16, d_model=args.hidden, num_layers=args.layers, num_heads=args.heads
        )
        config = TrainConfig(
            encoder=encoder, similarity=args.similarity, batch_size=args.batch_size, device=args.device
        )
        trainer = Trainer(table, config, Path(tmp) / "run", progress=False)
        device = resolve_device(args.device)
        ours, ours_t = measure(trainer, lambda r: our_step(trainer, r), args.steps, args.batch_size)
        orig, orig_t = measure(trainer, lambda r: original_step(trainer, r), args.steps, args.batch_size)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    params = sum(p.numel() for p in trainer.model.parameters())
    print(
        f"device: {name}; model: width {args.hidden}, {args.layers} layer(s), {args.heads} heads, "
        f"{params / 1e6:.2f}M parameters, D 16; batch {args.batch_size}; "
        f"{args.similarity} similarity, random mining"
    )
    print(f"original approach (anchor loop, 3 passes): {orig:9.0f} windows/s  ({orig_t:.0f} triplets/step)")
    print(f"trajemb (vectorised, single pass)        : {ours:9.0f} windows/s  ({ours_t:.0f} triplets/step)")
    print(f"speed-up: {ours / orig:.1f}x")


if __name__ == "__main__":
    main()
