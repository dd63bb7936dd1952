"""Benchmark: where the encoder's CPU time goes, choice by choice, on a shipped compact checkpoint.

Each line embeds the same random-walk windows and prints windows/s (best of --repeats) and the largest
difference to the training forward, so a faster path that changes the embeddings shows. Choices:
the training forward under ``no_grad`` at several batch sizes and thread counts, ``inference_mode``,
the inference forward (``scaled_dot_product_attention``, input projection folded into the first
layer), one batch per core on a thread pool (``trajemb.training.embed.Embedder``, the default), and, where
installed, ``torch.compile`` and ONNX Runtime.

``--processes N`` measures only the default (``Embedder``, batch 64) in N fresh processes and prints
the median and range: on a shared 2-core VM one process's figure moves by about 10 % from run to run.

Usage: python scripts/bench_encode.py [--windows 32768] [--repeats 3] [--compile] [--onnx] [--processes N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from trajemb.serving.pipeline import shipped_checkpoints
from trajemb.training.checkpoint import load_checkpoint
from trajemb.training.embed import CPU_BATCH, Embedder


def best_rate(fn: Callable[[], np.ndarray], n: int, repeats: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up (allocator, kernels, compilation)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best, out


def batched(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> np.ndarray:
    return torch.cat([forward(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=32_768)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default="compact-cosine-d16")
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile (tens of seconds to compile)"
    )
    parser.add_argument(
        "--onnx", action="store_true", help="also ONNX Runtime (needs onnx, onnxscript, onnxruntime)"
    )
    parser.add_argument(
        "--processes", type=int, default=0, help="only the default Embedder, in N fresh processes"
    )
    parser.add_argument(
        "--default-only", action="store_true", help=argparse.SUPPRESS
    )  # one of --processes' runs
    args = parser.parse_args()
    if args.processes:
        runs = [
            float(
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--default-only",
                        "--windows",
                        str(args.windows),
                        "--steps",
                        str(args.steps),
                        "--repeats",
                        str(args.repeats),
                        "--checkpoint",
                        args.checkpoint,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(args.processes)
        ]
        print(
            f"Embedder (default, batch {CPU_BATCH}), {args.windows} windows of {args.steps} steps, "
            f"{torch.get_num_threads()} CPU threads; best of {args.repeats} passes per process, over "
            f"{args.processes} processes: median {statistics.median(runs):,.0f} windows/s, "
            f"range {min(runs):,.0f} to {max(runs):,.0f}"
        )
        return
    ckpt = next(c for c in shipped_checkpoints() if c.name == args.checkpoint)
    model, _ = load_checkpoint(ckpt)
    model.eval()
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(0, 0.5, (args.windows, args.steps, 2)), axis=1).astype(np.float32)
    x = torch.from_numpy(xy)
    n = len(xy)
    cores = torch.get_num_threads()
    if args.default_only:
        default = Embedder(model, "cpu")
        print(best_rate(lambda: default(xy), n, args.repeats)[0])
        return
    with torch.no_grad():
        reference = batched(model, x, 1024)
    print(
        f"{n} windows of {args.steps} steps, {ckpt.name}, {cores} CPU threads; windows/s (best of {args.repeats}), "
        "max |difference| to the training forward"
    )

    def report(name: str, rate: float, out: np.ndarray) -> None:
        print(f"  {name:58s} {rate:9.0f}   {np.abs(out - reference).max():.1e}")

    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for batch in (8192, 1024, 256, 64):
            with torch.no_grad():
                rate, out = best_rate(partial(batched, model, x, batch), n, args.repeats)
            report(f"training forward, no_grad, batch {batch}, {threads} thread(s)", rate, out)
    torch.set_num_threads(cores)
    with torch.inference_mode():
        rate, out = best_rate(lambda: batched(model, x, 256), n, args.repeats)
        report("training forward, inference_mode, batch 256", rate, out)
        rate, out = best_rate(lambda: batched(model.forward_inference, x, 256), n, args.repeats)
        report("inference forward (SDPA, folded input), batch 256", rate, out)
    for batch in (64, 256, 1024):
        embedder = Embedder(model, "cpu", batch)
        rate, out = best_rate(partial(embedder, xy), n, args.repeats)
        report(f"Embedder: inference forward, one batch per core, batch {batch}", rate, out)
    if args.compile:
        t0 = time.perf_counter()
        compiled = torch.compile(model.forward_inference, dynamic=False)
        with torch.inference_mode():
            compiled(x[:256])
            compile_s = time.perf_counter() - t0
            rate, out = best_rate(lambda: batched(compiled, x, 256), n, args.repeats)
        report(f"torch.compile(inference forward), batch 256 (compile {compile_s:.0f} s)", rate, out)
    if args.onnx:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "encoder.onnx"
            t0 = time.perf_counter()
            torch.onnx.export(
                model, (x[:256],), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},)
            )
            export_s = time.perf_counter() - t0
            options = ort.SessionOptions()
            options.intra_op_num_threads = cores
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            for batch in (256, 1024):

                def run_onnx(b: int = batch) -> np.ndarray:
                    return np.concatenate(
                        [session.run(None, {name: xy[i : i + b]})[0] for i in range(0, n, b)]
                    )

                rate, out = best_rate(run_onnx, n, args.repeats)
                report(f"ONNX Runtime {ort.__version__}, batch {batch} (export {export_s:.0f} s)", rate, out)


if __name__ == "__main__":
    main()
