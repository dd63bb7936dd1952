"""Recipe for the checkpoints shipped in ``checkpoints/``: compact encoders (1 layer, 4 heads, width 64)
at D = 4, 8, 16 with Cosine and FFT targets, trained on synthetic scenarios on CPU.

``--recipe soft`` (default): the soft-neighbour recipe (docs/workflow.md, "Training recipes": soft-neighbour loss
with targets in the similarity's space, neighbourhood batches with hard manoeuvres represented, 30 % of
the inputs with position noise of up to 1 m, unnormalised embeddings), shipping the last epoch
(``--select``): with augmentation the clean validation minADE is lowest after the first epoch while
the robustness the augmentation teaches keeps growing. ``--recipe paper``: the paper's triplet loss with
calibrated random mining and the best epoch (the checkpoints shipped before issue 12).

Runs the same commands a user would (``trajemb synth``, ``prepare``, ``train``) in a scratch folder
(``--work``, git-ignored) on ``--generator``'s scenarios (1: trajemb 0.1.x's generator; 2: the calibrated
generator of issue 19; ``1,2``: ``--scenarios`` of each in one table, docs/workflow.md), named in
the recipe, and only when every run has finished copies each checkpoint into
``checkpoints/compact-<similarity>-d<D>/`` with the exact commands in its card. Run it from a committed
tree: the cards record the git revision the weights were trained at, and it refuses to start on a
tracked tree with changes (``--allow-dirty`` overrides, and the cards then say ``-dirty``).
Usage: python scripts/train_shipped_checkpoints.py [--work .cache/shipped] [--epochs 6]

``--recipe pca_residual`` (issue 20) trains ``checkpoints/pca-residual-<similarity>-d<D>``: an encoder
that starts where PCA to D is (``trajemb train --linear-base pca``: PCA of the training windows plus a
Transformer correction whose output layer starts at zero, ``trajemb.training.linear_base``), trained with the
soft-neighbour recipe and every perturbation of the robustness curves (noise, dropped steps, short
windows); the last epoch is shipped:
  python scripts/train_shipped_checkpoints.py --recipe pca_residual --similarities cosine

``--recipe pca_distill`` (issue 20, denoising distillation) trains ``checkpoints/pca-distill-<similarity>-d<D>``
(``pca-distill-tuned-...`` with ``--linear-base-training fine_tune``): the same perturbations on a PCA base
kept at PCA, each input's code regressing the PCA code of its clean window (``trajemb train
--distill-weight``, ``trajemb.training.distill_loss``) beside a tenth of the soft-neighbour loss; the last
epoch is shipped:
  python scripts/train_shipped_checkpoints.py --recipe pca_distill --similarities cosine --dims 4

``--history-steps 30`` trains the history checkpoints ``checkpoints/history-<similarity>-d<D>`` instead
(issue 18, ``trajemb forecast``): the same recipe on the same 6 s windows, the encoder reading each
window's first 30 steps in the frame of their last state (``trajemb.data.history``):
  python scripts/train_shipped_checkpoints.py --history-steps 30 --similarities cosine --dims 8,16
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path

from recipes import PCA_DISTILL_RECIPE, PCA_RESIDUAL_RECIPE, SOFT_RECIPE

from trajemb.cli import main as trajemb
from trajemb.training.checkpoint import git_revision

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "paper": ["--mining", "random", "--batch-size", "1024"],
    "soft": [*SOFT_RECIPE, "--batch-size", "1024"],
    "pca_residual": [*PCA_RESIDUAL_RECIPE, "--batch-size", "1024"],
    "pca_distill": [*PCA_DISTILL_RECIPE, "--batch-size", "1024"],
}
#: Checkpoint names: <prefix>-<similarity>-d<D>.
PREFIX = {"paper": "compact", "soft": "compact", "pca_residual": "pca-residual", "pca_distill": "pca-distill"}
#: The recipes with a linear base (``--linear-base-training`` applies).
LINEAR_BASE = ("pca_residual", "pca_distill")


def generators(text: str) -> tuple[int, ...]:
    """``--generator``: "1", "2" or "1,2" -> the generators, in order, each once."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1, 2 or 1,2") from None
    if not values or any(v not in (1, 2) for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give 1, 2 or 1,2")
    return values


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
    parser.add_argument(
        "--generator",
        type=generators,
        default=(1,),
        help="synthetic generator, or several comma-separated, each giving --scenarios scenarios to one "
        "table (1: trajemb 0.1.x's; 2: calibrated, issue 19; 1,2: both, the shipped checkpoints')",
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--dims", default="4,8,16")
    parser.add_argument("--similarities", default="cosine,fft")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="soft")
    parser.add_argument(
        "--select",
        choices=["best", "last"],
        default=None,
        help="which epoch to ship (default: best for paper, last otherwise)",
    )
    parser.add_argument(
        "--linear-base-training",
        choices=["fine_tune", "frozen"],
        default=None,
        help="--recipe pca_residual, pca_distill: train the PCA base with the rest, or keep it (default: the "
        "recipe's, fine_tune for pca_residual and frozen for pca_distill; pca-frozen-<similarity>-d<D>, "
        "pca-distill-tuned-<similarity>-d<D>)",
    )
    parser.add_argument("--allow-dirty", action="store_true", help="train on a tracked tree with changes")
    parser.add_argument(
        "--history-steps",
        type=int,
        default=0,
        help="train history models (history-<similarity>-d<D>) reading the first N steps of each window",
    )
    parser.add_argument(
        "--history-targets", choices=["history", "window"], default="history", help="with --history-steps"
    )
    args = parser.parse_args()
    revision = git_revision(REPO)
    if revision.endswith("-dirty") and not args.allow_dirty:
        raise SystemExit(
            f"the tracked tree has changes ({revision}); commit them first so that the cards "
            "record a clean revision, or pass --allow-dirty"
        )
    work = Path(args.work)
    # One generator keeps the folder name of the recipes recorded before issue 19 (work/scenarios).
    scenario_dirs = {
        g: work / ("scenarios" if len(args.generator) == 1 else f"scenarios-g{g}") for g in args.generator
    }
    data_cmds = [
        run(
            [
                "synth",
                "--out",
                str(folder),
                "--scenarios",
                str(args.scenarios),
                "--seed",
                str(args.seed),
                "--generator",
                str(g),
            ]
        )
        for g, folder in scenario_dirs.items()
    ]
    av2_args = [arg for folder in scenario_dirs.values() for arg in ("--av2", str(folder))]
    data_cmds.append(run(["prepare", *av2_args, "--out", str(work / "train.parquet")]))
    trained: list[tuple[str, str]] = []
    for similarity in args.similarities.split(","):
        for dim in args.dims.split(","):
            prefix = PREFIX[args.recipe]
            if args.recipe == "pca_residual" and args.linear_base_training == "frozen":
                prefix = "pca-frozen"
            if args.recipe == "pca_distill" and args.linear_base_training == "fine_tune":
                prefix = "pca-distill-tuned"
            name = f"{'history' if args.history_steps else prefix}-{similarity}-d{dim}"
            history = (
                ["--history-steps", str(args.history_steps), "--history-targets", args.history_targets]
                if args.history_steps
                else []
            )
            if args.recipe in LINEAR_BASE and args.linear_base_training is not None:
                history += ["--linear-base-training", args.linear_base_training]
            trained.append(
                (
                    name,
                    run(
                        [
                            "train",
                            "--data",
                            str(work / "train.parquet"),
                            "--out",
                            str(work / "runs" / name),
                            "--similarity",
                            similarity,
                            "--embedding-dim",
                            dim,
                            "--layers",
                            "1",
                            "--heads",
                            "4",
                            "--hidden",
                            "64",
                            "--epochs",
                            str(args.epochs),
                            "--device",
                            "cpu",
                            "--seed",
                            "0",
                            "--overwrite",
                            *RECIPES[args.recipe],
                            *history,
                        ]
                    ),
                )
            )
    select = args.select or ("best" if args.recipe == "paper" else "last")
    # Only now, with every run finished, touch the tracked checkpoints/ folder.
    for name, train_cmd in trained:
        dest = REPO / "checkpoints" / name
        shutil.rmtree(dest, ignore_errors=True)
        # Weights, config and card only: last/ also holds the optimiser state for --resume.
        shutil.copytree(work / "runs" / name / select, dest, ignore=shutil.ignore_patterns("train_state.pt"))
        card = json.loads((dest / "card.json").read_text())
        card["name"] = name
        card["recipe"] = [*data_cmds, train_cmd]
        card["shipped_epoch"] = select
        card["metrics_csv"] = (work / "runs" / name / "metrics.csv").read_text().splitlines()
        (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"-> {dest}: git {card['git_revision']}, {card['metrics']}", flush=True)


if __name__ == "__main__":
    main()
