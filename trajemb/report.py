"""Markdown tables and plots of evaluation reports (``trajemb.evaluate``): per class, robustness, mean
rank, and the goals of a compact model against PCA and the raw-space oracle.

Reports are the dictionaries a bundle stores (``models/<name>/report.json``, ``baselines.json``), keyed
by method name; the schema is in ``trajemb.evaluate``'s docstring and the README ("Evaluation report").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trajemb.label_quality import CLASSES
from trajemb.robustness import HARD_CLASSES

#: Baselines shown beside the models in per-class and robustness tables (the others are references
#: of the main table only).
TABLE_BASELINES = ("oracle_raw", "pca_4", "pca_8", "pca_16", "random")


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def _methods(reports: dict[str, dict[str, Any]], key: str) -> list[str]:
    """Models first (every report that is not a baseline), then the table baselines, that hold ``key``."""
    models = [n for n in reports if n not in TABLE_BASELINES and n not in ("fft_magnitudes",)
              and not n.startswith("untrained_encoder_") and not n.startswith("pca_")]  # fmt: skip
    baselines = [n for n in TABLE_BASELINES if n in reports]
    return [n for n in models + baselines if key in reports[n]]


def per_class_table(reports: dict[str, dict[str, Any]], k_ade: int = 5, k_precision: int = 10) -> str:
    """minADE@k_ade / precision@k_precision / recall@k_precision per class (columns) and method (rows)."""
    names = _methods(reports, "per_class")
    if not names:
        return "_no per-class scores_"
    classes = [c for c in CLASSES if any(c in reports[n]["per_class"] for n in names)]
    head = "| method | " + " | ".join(classes) + " | hard classes |"
    lines = [
        f"minADE@{k_ade} (m) / precision@{k_precision} / recall@{k_precision} by query class "
        f"({reports[names[0]].get('label', 'direction')} labels; queries per class in the last row):",
        "",
        head,
        "|---|" + "---|" * (len(classes) + 1),
    ]
    for n in names:
        cells = []
        for scores in [reports[n]["per_class"].get(c, {}) for c in classes] + [reports[n].get("hard", {})]:
            cells.append(
                f"{_fmt(scores.get(f'minADE@{k_ade}'))} / {_fmt(scores.get(f'precision@{k_precision}'), 2)} / "
                f"{_fmt(scores.get(f'recall@{k_precision}'), 2)}"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    first = reports[names[0]]
    counts = [_fmt(first["per_class"].get(c, {}).get("queries")) for c in classes] + [
        _fmt(first.get("hard", {}).get("queries"))
    ]
    lines.append("| queries | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def mean_rank_table(reports: dict[str, dict[str, Any]]) -> str:
    names = _methods(reports, "mean_rank")
    if not names:
        return "_no mean rank_"
    lines = ["| method | mean rank | ranked first | queries | database |", "|---|---|---|---|---|"]
    for n in names:
        r = reports[n]["mean_rank"]
        lines.append(f"| {n} | {_fmt(r['mean_rank'])} | {_fmt(r['top1'])} | {r['queries']} | {r['database']} |")
    return "\n".join(lines)


def robustness_table(reports: dict[str, dict[str, Any]], metric: str = "minADE@5") -> str:
    """One row per method, one column per perturbation level (clean first)."""
    names = _methods(reports, "robustness")
    if not names:
        return "_no robustness curves_"
    columns: list[tuple[str, str]] = []
    for n in names:
        for kind, levels in reports[n]["robustness"].items():
            if isinstance(levels, dict):
                columns += [(kind, level) for level in levels if (kind, level) not in columns]
    lines = [
        "| method | " + " | ".join(f"{k} {lv}" if k != "clean" else "clean" for k, lv in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for n in names:
        rob = reports[n]["robustness"]
        lines.append(f"| {n} | " + " | ".join(_fmt(rob.get(k, {}).get(lv, {}).get(metric)) for k, lv in columns) + " |")
    return "\n".join(lines)


def goals(reports: dict[str, dict[str, Any]], model: str, dim: int = 4) -> list[tuple[str, str, bool | None]]:
    """Issue 12's goals for a learned model against PCA-``dim`` and the oracle: (goal, numbers, reached)."""
    r, pca, oracle = reports.get(model, {}), reports.get(f"pca_{dim}", {}), reports.get("oracle_raw", {})
    out: list[tuple[str, str, bool | None]] = []
    if "minADE@5" in r and "minADE@5" in oracle:
        ratio = r["minADE@5"] / oracle["minADE@5"]
        out.append(("minADE@5 within 5 % of the oracle", f"{r['minADE@5']:.3f} vs {oracle['minADE@5']:.3f} "
                    f"({100 * (ratio - 1):+.1f} %)", ratio <= 1.05))  # fmt: skip
    if "hard" in r and "hard" in pca:
        a, b = r["hard"].get("precision@10", math.nan), pca["hard"].get("precision@10", math.nan)
        out.append((f"hard-class precision@10 at least PCA-{dim}'s", f"{a:.3f} vs {b:.3f}", a >= b))
    if "silhouette_label" in r and "silhouette_label" in pca:
        a, b = r["silhouette_label"], pca["silhouette_label"]
        out.append((f"silhouette ({r.get('label', 'direction')}) above PCA-{dim}'s", f"{a:.3f} vs {b:.3f}", a > b))
    for kind, level, what in (("noise_m", "0.5", "noise 0.5 m"), ("drop", "0.3", "30 % dropped steps"),
                              ("noise_m+drop", "0.5+0.3", "noise 0.5 m and 30 % dropped together")):  # fmt: skip
        try:
            a = r["robustness"][kind][level]["minADE@5"]
            b = pca["robustness"][kind][level]["minADE@5"]
        except KeyError:
            continue
        out.append((f"under {what}: minADE@5 below PCA-{dim}'s", f"{a:.3f} vs {b:.3f}", a < b))
    return out


def goals_table(reports: dict[str, dict[str, Any]], model: str, dim: int = 4) -> str:
    rows = goals(reports, model, dim)
    if not rows:
        return "_no goals measurable_"
    lines = ["| goal | measured | reached |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {'yes' if ok else 'no'} |" for g, m, ok in rows]
    return "\n".join(lines)


def plot_robustness(reports: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per perturbation kind (minADE@5 and hard-class precision@10 against its level), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _methods(reports, "robustness")
    kinds = [k for k in ("noise_m", "drop", "offset_s") if any(k in reports[n]["robustness"] for n in names)]
    fig, axes = plt.subplots(2, max(1, len(kinds)), figsize=(4.5 * max(1, len(kinds)), 7), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, metric in enumerate(("minADE@5", "hard_precision@10")):
            ax = axes[row, col]
            for n in names:
                rob = reports[n]["robustness"]
                points = [(0.0, rob["clean"]["0"][metric])] if kind != "offset_s" and "clean" in rob else []
                points += [(float(lv), v[metric]) for lv, v in rob.get(kind, {}).items()]
                if points:
                    xs, ys = zip(*sorted(points), strict=True)
                    ax.plot(xs, ys, marker="o", label=n, linestyle="--" if n in TABLE_BASELINES else "-")
            ax.set_xlabel({"noise_m": "position noise sigma (m)", "drop": "share of steps dropped",
                           "offset_s": "query offset (s)"}[kind])  # fmt: skip
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


HARD_NOTE = "Hard classes: " + ", ".join(HARD_CLASSES) + "."
