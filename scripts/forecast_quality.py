"""Forecasting by retrieval on synthetic held-out and real AV2 windows: the tables of
docs/retrieval-quality.md ("Forecasting by retrieval").

Runs what a user runs (``trajemb synth``, ``prepare``, ``bundle``, ``forecast --json``) in ``--out``:

* bank **synthetic**: the default synthetic data (200 scenarios, seed 0: the explorer's built-in data),
  6 s windows at a 1 s stride, with the history checkpoints;
* queries **synthetic held-out**: 50 scenarios of another seed (22);
* queries **real**: the real AV2 fixtures (motion forecasting + sensor logs, 6 s windows at a 0.5 s
  stride), against the synthetic bank and against a bank of the real fixtures themselves (each query's
  own scenario left out: leave one scenario out);

3 s history, 3 s future, K = 6, every alignment (``--alignment``). Writes ``forecast.md`` (tables and the
goals of issue 18) and the JSON of every run into ``--out``; outputs present are reused.
Usage: python scripts/forecast_quality.py [--out .cache/forecast_quality] [--checkpoint checkpoints/history-cosine-d16 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
from pathlib import Path
from typing import Any

from trajemb.analysis.forecast import ALIGNMENTS
from trajemb.cli import main as trajemb

REPO = Path(__file__).resolve().parents[1]
METHOD_NOTE = {
    "knn_raw": "raw-space kNN on histories",
    "constant_velocity": "constant velocity",
    "constant_acceleration": "constant acceleration",
}


def run(args: list[str]) -> str:
    """``trajemb ARGS`` in this process; returns what it printed."""
    print("$ trajemb " + shlex.join(args), flush=True)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = trajemb(args)
    if status != 0:
        raise SystemExit(f"failed ({status}): trajemb {shlex.join(args)}")
    return buffer.getvalue()


def table_rows(scores: dict[str, dict[str, Any]], cv_fde: float) -> list[str]:
    rows = []
    for method, s in scores.items():
        note = METHOD_NOTE.get(method, "learned history embedding")
        rows.append(
            f"| {method} ({note}) | {s['minADE6']:.3f} | {s['minFDE6']:.3f} | {s['MR6']:.3f} | "
            f"{s['brier_minFDE6']:.3f} | {s['minFDE6'] / cv_fde:.2f} | {s['queries']} |"
        )
    return rows


def search_frame_ablation(bank_path: str, queries_path: str) -> tuple[float, float]:
    """minFDE6 of raw kNN searching histories in their last-state frame (what ``knn_raw`` does) and in
    the window's agent frame (origin at the first step), futures aligned alike (``last_state``)."""
    import numpy as np

    from trajemb.analysis.bundle import Bundle
    from trajemb.analysis.forecast import ForecastConfig, forecast_bank, scenario_keys
    from trajemb.analysis.forecast_metrics import score_forecasts
    from trajemb.data.history import history_input
    from trajemb.data.store import read_table
    from trajemb.retrieval.search import exact_search

    bundle, table = Bundle(Path(bank_path)), read_table(Path(queries_path))
    bank = forecast_bank(bundle, ForecastConfig())
    h = bank.history_steps
    keys = scenario_keys(table.meta["source"].to_numpy(str), table.meta["scenario_id"].to_numpy(str))
    groups = bank.scenario_group_of(keys)
    bank_xy = np.asarray(bundle.xy.all())
    out = []

    def history_last_frame(xy: np.ndarray) -> np.ndarray:
        return history_input(xy, h)

    def history_agent_frame(xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy[:, :h], dtype=np.float32)

    for features in (history_last_frame, history_agent_frame):
        db = np.ascontiguousarray(features(bank_xy).reshape(len(bank_xy), -1))
        q = np.ascontiguousarray(features(table.xy_agent).reshape(len(table), -1))
        rows = exact_search(db, q, 6, exclude=bank.scenarios, query_groups=groups, distinct=bank.tracks)[1]
        futures = bank.futures(rows, table.xy_agent[:, :h])
        out.append(
            float(score_forecasts(futures, table.xy_agent[:, h:], valid=rows >= 0).summary(6)["minFDE6"])
        )
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".cache/forecast_quality")
    fixtures = os.environ.get("TRAJEMB_AV2_FIXTURES", str(REPO.parent / "shared" / "data" / "av2_fixtures"))
    p.add_argument(
        "--fixtures", default=fixtures, help="real AV2 fixtures (motion_forecasting/, sensor_logs/)"
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="history checkpoint (repeatable; default: every checkpoints/history-*)",
    )
    p.add_argument("--bank-scenarios", type=int, default=200)
    p.add_argument("--query-scenarios", type=int, default=50)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = a.checkpoint or [
        str(c.relative_to(Path.cwd()) if c.is_relative_to(Path.cwd()) else c)
        for c in sorted((REPO / "checkpoints").glob("history-*"))
    ]
    if not checkpoints:
        raise SystemExit(
            "no history checkpoints (train them: scripts/train_shipped_checkpoints.py --history-steps 30)"
        )
    fx = Path(a.fixtures)

    def once(path: Path, args: list[str]) -> str:
        if not path.exists():
            run(args)
        return str(path)

    synth_bank_table = out / "bank.parquet"
    once(
        out / "bank-scenarios",
        [
            "-q",
            "synth",
            "--out",
            str(out / "bank-scenarios"),
            "--scenarios",
            str(a.bank_scenarios),
            "--seed",
            "0",
        ],
    )
    once(
        synth_bank_table,
        ["-q", "prepare", "--av2", str(out / "bank-scenarios"), "--out", str(synth_bank_table)],
    )
    once(
        out / "held-scenarios",
        [
            "-q",
            "synth",
            "--out",
            str(out / "held-scenarios"),
            "--scenarios",
            str(a.query_scenarios),
            "--seed",
            "22",
        ],
    )
    held = once(
        out / "held.parquet",
        ["-q", "prepare", "--av2", str(out / "held-scenarios"), "--out", str(out / "held.parquet")],
    )
    real = once(
        out / "real.parquet",
        [
            "-q",
            "prepare",
            "--av2",
            str(fx / "motion_forecasting"),
            "--sensor-logs",
            str(fx / "sensor_logs"),
            "--out",
            str(out / "real.parquet"),
            "--stride",
            "5",
        ],
    )
    ckpt_args = [x for c in checkpoints for x in ("--checkpoint", c)]
    bundle_args = ["--projection", "none", "--no-mean-rank", "--device", "cpu"]
    synth_bank = once(
        out / "bank-synthetic",
        [
            "-q",
            "bundle",
            "--table",
            str(synth_bank_table),
            *ckpt_args,
            "--out",
            str(out / "bank-synthetic"),
            *bundle_args,
        ],
    )
    real_bank = once(
        out / "bank-real",
        ["-q", "bundle", "--table", real, *ckpt_args, "--out", str(out / "bank-real"), *bundle_args],
    )
    settings = {
        "synthetic held-out, bank synthetic": (synth_bank, held),
        "real AV2 fixtures, bank synthetic": (synth_bank, real),
        "real AV2 fixtures, bank real (leave one scenario out)": (real_bank, real),
    }
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, (bank, queries) in settings.items():
        for alignment in ALIGNMENTS:
            key = f"{name} | {alignment}"
            path = out / (
                key.replace(" ", "_").replace("|", "").replace(",", "").replace("(", "").replace(")", "")
                + ".json"
            )
            if not path.exists():
                path.write_text(
                    run(
                        [
                            "-q",
                            "forecast",
                            "--bank",
                            bank,
                            "--queries",
                            queries,
                            "--alignment",
                            alignment,
                            "--json",
                        ]
                    )
                )
            results[key] = json.loads(path.read_text())
    lines = ["# Forecasting by retrieval", "", f"History checkpoints: {', '.join(checkpoints)}.", ""]
    header = [
        "| method | minADE6 | minFDE6 | MR6 | brier-minFDE6 | minFDE6 / CV | queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in settings:
        scores = results[f"{name} | last_state"]
        lines += [f"### {name}", "", *header, *table_rows(scores, scores["constant_velocity"]["minFDE6"]), ""]
    lines += ["### minFDE6 by alignment of the retrieved futures", ""]
    retrieval = [
        m
        for m in results[f"{next(iter(settings))} | last_state"]
        if m.startswith("retrieval_") or m == "knn_raw"
    ]
    lines += ["| setting | method | " + " | ".join(ALIGNMENTS) + " |", "|---|---|" + "---|" * len(ALIGNMENTS)]
    for name in settings:
        for method in retrieval:
            cells = [f"{results[f'{name} | {al}'][method]['minFDE6']:.3f}" for al in ALIGNMENTS]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Learned retrieval: shortlist of 48 re-ranked by raw history distance (default) or the embedding alone",
        "",
    ]
    lines += ["| setting | method | --rerank 48 | --rerank 0 | knn_raw |", "|---|---|---|---|---|"]
    for name, (bank, queries) in settings.items():
        path = out / (
            name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "") + "_rerank0.json"
        )
        if not path.exists():
            path.write_text(
                run(["-q", "forecast", "--bank", bank, "--queries", queries, "--rerank", "0", "--json"])
            )
        alone, default = json.loads(path.read_text()), results[f"{name} | last_state"]
        for method in retrieval:
            if method != "knn_raw":
                lines.append(
                    f"| {name} | {method} | {default[method]['minFDE6']:.3f} | {alone[method]['minFDE6']:.3f} | "
                    f"{default['knn_raw']['minFDE6']:.3f} |"
                )
    lines += ["", "### knn_raw: minFDE6 by the frame histories are compared in (alignment last_state)", ""]
    lines += ["| setting | last-state frame | window's agent frame (first step) |", "|---|---|---|"]
    for name, (bank, queries) in settings.items():
        end, start = search_frame_ablation(bank, queries)
        lines.append(f"| {name} | {end:.3f} | {start:.3f} |")
    lines += [
        "",
        "### Goals of issue 18 (alignment last_state)",
        "",
        "| goal | measured | reached |",
        "|---|---|---|",
    ]
    for name, limit in (
        ("real AV2 fixtures, bank synthetic", 0.7),
        ("real AV2 fixtures, bank real (leave one scenario out)", 0.6),
    ):
        s = results[f"{name} | last_state"]
        cv = s["constant_velocity"]["minFDE6"]
        for method in retrieval:
            ratio = s[method]["minFDE6"] / cv
            lines.append(
                f"| {name}: {method} minFDE6 <= {limit} x constant velocity | {s[method]['minFDE6']:.3f} / {cv:.3f} = "
                f"{ratio:.2f} | {'yes' if ratio <= limit else 'no'} |"
            )
    for name in settings:
        s = results[f"{name} | last_state"]
        for method in retrieval:
            if method == "knn_raw":
                continue
            gap = s[method]["minFDE6"] / s["knn_raw"]["minFDE6"] - 1
            lines.append(
                f"| {name}: {method} within 5 % of knn_raw | {s[method]['minFDE6']:.3f} vs "
                f"{s['knn_raw']['minFDE6']:.3f} ({100 * gap:+.1f} %) | {'yes' if gap <= 0.05 else 'no'} |"
            )
    (out / "forecast.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
