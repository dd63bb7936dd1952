"""Reproduce the paper's comparison: Cosine vs FFT mining x D in {4, 8, 16, 32} x compact vs base model.

For every setting it trains with ``trajemb train`` on one table, then evaluates all checkpoints on a
held-out table in one bundle (``trajemb bundle``: same queries, same baselines), and writes
``paper_table.md`` (Markdown) and ``paper_minade_vs_d.html`` (minADE@k against D) into --out.
Compact = 1 layer, 4 heads, width 64 (lr 1e-3); base = the original's 4 layers, 8 heads, width 1024,
dropout 0.3, input dropout 0.2, lr 1e-4 (~34M parameters: a GPU job). Usage:
  python scripts/reproduce_paper_table.py --out paper --models compact --epochs 6           # CPU-sized
  python scripts/reproduce_paper_table.py --out paper --models compact,base --epochs 50 --device cuda
On AV2 in the paper's setting (focal 6 s futures; batch 4096, 100 epochs) see scripts/paper_setting_av2.sh.
The positive threshold defaults to a calibrated one (2 % of in-batch pairs positive); ``--threshold 0.8``
is the original's value, under which Cosine mining finds almost no positives on metric trajectories.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import plotly.graph_objects as go

from trajemb.cli import main as trajemb
from trajemb.evaluate import report_table

ARCH = {
    "compact": ["--layers", "1", "--heads", "4", "--hidden", "64", "--dropout", "0.1"],
    "base": [
        "--layers",
        "4",
        "--heads",
        "8",
        "--hidden",
        "1024",
        "--dropout",
        "0.3",
        "--input-dropout",
        "0.2",
        "--lr",
        "1e-4",
    ],
}


def run(args: list[str]) -> None:
    print("$ trajemb " + " ".join(args), flush=True)
    if trajemb(args) != 0:
        raise SystemExit("failed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="paper")
    p.add_argument(
        "--scenarios", type=int, default=400, help="training scenarios (synthetic) if --train is not given"
    )
    p.add_argument("--train", default=None, help="training table (default: synthetic, seed 21)")
    p.add_argument("--test", default=None, help="held-out table (default: synthetic, seed 22)")
    p.add_argument("--maps", default=None, help="reduced maps of the held-out table (prepare --maps-dir)")
    p.add_argument("--threshold", default=None, help="positive threshold (default: calibrated)")
    p.add_argument("--models", default="compact")
    p.add_argument("--dims", default="4,8,16,32")
    p.add_argument("--similarities", default="cosine,fft")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train_table, test_table, maps = a.train, a.test, a.maps
    threshold = ["--threshold", a.threshold] if a.threshold is not None else []
    if train_table is None:
        run(
            [
                "-q",
                "synth",
                "--out",
                str(out / "train-scenarios"),
                "--scenarios",
                str(a.scenarios),
                "--seed",
                "21",
            ]
        )
        run(["-q", "prepare", "--av2", str(out / "train-scenarios"), "--out", str(out / "train.parquet")])
        train_table = str(out / "train.parquet")
    if test_table is None:
        run(
            [
                "-q",
                "synth",
                "--out",
                str(out / "test-scenarios"),
                "--scenarios",
                str(max(50, a.scenarios // 4)),
                "--seed",
                "22",
            ]
        )
        run(["-q", "prepare", "--av2", str(out / "test-scenarios"), "--out", str(out / "test.parquet"),
             "--maps-dir", str(out / "test-maps")])  # fmt: skip
        test_table, maps = str(out / "test.parquet"), str(out / "test-maps")
    checkpoints = []
    for arch in a.models.split(","):
        for sim in a.similarities.split(","):
            for dim in a.dims.split(","):
                name = f"{arch}-{sim}-d{dim}"
                run(["-q", "train", "--data", train_table, "--out", str(out / "runs" / name), "--similarity", sim,
                     "--embedding-dim", dim, *ARCH[arch], "--epochs", str(a.epochs), "--batch-size",
                     str(a.batch_size), "--device", a.device, *threshold])  # fmt: skip
                card_path = out / "runs" / name / "best" / "card.json"
                card = json.loads(card_path.read_text())
                card["name"] = name
                card_path.write_text(json.dumps(card, indent=2))
                checkpoints += ["--checkpoint", str(out / "runs" / name / "best")]
    bundle_args = [
        "-q",
        "bundle",
        "--table",
        test_table,
        *checkpoints,
        "--out",
        str(out / "bundle"),
        "--no-umap",
    ]
    run(bundle_args + (["--maps", maps] if maps else []) + ["--device", a.device])
    from trajemb.bundle import Bundle

    bundle = Bundle(out / "bundle")
    reports = {n: bundle.report(n) or {} for n in bundle.model_names}
    reports.update(bundle.baselines())
    (out / "paper_table.md").write_text(report_table(reports) + "\n")
    print(report_table(reports))
    fig = go.Figure()
    for arch in a.models.split(","):
        for sim in a.similarities.split(","):
            names = [n for n in reports if n.startswith(f"{arch}-{sim}-")]
            names.sort(key=lambda n: reports[n]["dim"])
            for k in (1, 10):
                fig.add_trace(go.Scatter(x=[reports[n]["dim"] for n in names], y=[reports[n][f"minADE@{k}"] for n in names],
                                         mode="lines+markers", name=f"{arch} {sim} minADE@{k}"))  # fmt: skip
    for base in ("oracle_raw",):
        for k in (1, 10):
            fig.add_hline(y=reports[base][f"minADE@{k}"], line_dash="dot", annotation_text=f"oracle @{k}")
    fig.update_layout(
        title="minADE@k against embedding dimension D", xaxis_title="D", yaxis_title="minADE (m)"
    )
    fig.update_xaxes(type="log", tickvals=[int(d) for d in a.dims.split(",")])
    fig.write_html(out / "paper_minade_vs_d.html")


if __name__ == "__main__":
    main()
