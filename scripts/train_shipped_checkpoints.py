"""Recipe for the checkpoints shipped in ``checkpoints/``: compact encoders (1 layer, 4 heads, width 64)
trained with Cosine and FFT mining at D = 4, 8, 16 on synthetic scenarios, on CPU.

Runs the same commands a user would (``trajemb synth``, ``prepare``, ``train``), then copies each run's
best checkpoint into ``checkpoints/compact-<similarity>-d<D>/`` and records the exact commands in its
card. Usage: python scripts/train_shipped_checkpoints.py [--work .cache/shipped] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path

from trajemb.cli import main as trajemb

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> str:
    command = "trajemb " + shlex.join(args)
    print(f"$ {command}", flush=True)
    if trajemb(args) != 0:
        raise SystemExit(f"failed: {command}")
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".cache/shipped")
    parser.add_argument("--scenarios", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1, help="synthetic data seed (the demo bundle uses 0)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--dims", default="4,8,16")
    parser.add_argument("--similarities", default="cosine,fft")
    args = parser.parse_args()
    work = Path(args.work)
    data_cmds = [
        run(
            [
                "synth",
                "--out",
                str(work / "scenarios"),
                "--scenarios",
                str(args.scenarios),
                "--seed",
                str(args.seed),
            ]
        ),
        run(["prepare", "--av2", str(work / "scenarios"), "--out", str(work / "train.parquet")]),
    ]
    for similarity in args.similarities.split(","):
        for dim in args.dims.split(","):
            name = f"compact-{similarity}-d{dim}"
            train_cmd = run([
                "train", "--data", str(work / "train.parquet"), "--out", str(work / "runs" / name),
                "--similarity", similarity, "--embedding-dim", dim, "--layers", "1", "--heads", "4",
                "--hidden", "64", "--epochs", str(args.epochs), "--batch-size", "1024", "--mining", "random",
                "--device", "cpu", "--seed", "0",
            ])  # fmt: skip
            dest = REPO / "checkpoints" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(work / "runs" / name / "best", dest)
            card = json.loads((dest / "card.json").read_text())
            card["name"] = name
            card["recipe"] = [*data_cmds, train_cmd]
            card["metrics_csv"] = (work / "runs" / name / "metrics.csv").read_text().splitlines()
            (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
            print(f"-> {dest}: {card['metrics']}", flush=True)


if __name__ == "__main__":
    main()
