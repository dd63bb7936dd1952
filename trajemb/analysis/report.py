"""Markdown tables and plots of evaluation reports (``trajemb.analysis.evaluate``): per class, robustness, mean
rank, and the goals of a compact model against PCA and the raw-space oracle.

Reports are the dictionaries a bundle stores (``models/<name>/report.json``, ``baselines.json``), keyed
by method name; the schema is in ``trajemb.analysis.evaluate``'s docstring and docs/bundles.md ("Evaluation report").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from trajemb.analysis.label_quality import CLASSES
from trajemb.retrieval.robustness import HARD_CLASSES

#: Baselines shown beside the models in per-class and robustness tables (the others are references
#: of the main table only).
TABLE_BASELINES = ("oracle_raw", "pca_4", "pca_8", "pca_16", "random")
#: The column of per-class frames that pools the hard classes (``trajemb.retrieval.robustness.HARD_CLASSES``).
HARD_COLUMN = "hard classes"


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
    models = [
        n
        for n in reports
        if n not in TABLE_BASELINES
        and n not in ("fft_magnitudes",)
        and not n.startswith("untrained_encoder_")
        and not n.startswith("pca_")
    ]
    baselines = [n for n in TABLE_BASELINES if n in reports]
    return [n for n in models + baselines if isinstance(reports[n].get(key), dict)]


def report_number(value: Any) -> float:
    """A number read from a report, or NaN where it is not one (reports are data read from a bundle)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _at(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or ``{}`` where a level is missing or not an object: a report read from a
    bundle is data, and a malformed one gives empty cells, not an exception."""
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value


def report_count(value: Any, default: int = 0) -> int:
    """A count read from a report, or ``default`` where it is not a finite number."""
    number = report_number(value)
    return int(number) if math.isfinite(number) else default


def report_classes(reports: dict[str, dict[str, Any]]) -> list[str]:
    """The query classes that hold per-class scores in any report, in ``CLASSES`` order."""
    names = _methods(reports, "per_class")
    present = {str(c) for n in names for c in reports[n]["per_class"]}
    return [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))


def per_class_frame(reports: dict[str, dict[str, Any]], metric: str = "minADE@5") -> pd.DataFrame:
    """``metric`` (a per-class key such as ``minADE@5``, ``precision@10``, ``recall@10``) per method
    (rows, models first) and query class (columns, then ``hard classes``); NaN where a report lacks it."""
    names = _methods(reports, "per_class")
    columns = [*report_classes(reports), HARD_COLUMN]
    rows = {
        n: [report_number(_at(reports[n], "per_class", c, metric)) for c in columns[:-1]]
        + [report_number(_at(reports[n], "hard", metric))]
        for n in names
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)


def class_query_counts(reports: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Queries per class (and ``hard classes``) of the first report with per-class scores."""
    names = _methods(reports, "per_class")
    if not names:
        return {}
    first = reports[names[0]]
    counts = {c: report_count(_at(first, "per_class", c, "queries")) for c in report_classes(reports)}
    counts[HARD_COLUMN] = report_count(_at(first, "hard", "queries"))
    return counts


def mean_rank_frame(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """TrajCL's mean rank per method: ``mean rank``, ``ranked first`` (share), ``queries``, ``database``."""
    rows = {
        n: [
            report_number(reports[n]["mean_rank"].get(key))
            for key in ("mean_rank", "top1", "queries", "database")
        ]
        for n in _methods(reports, "mean_rank")
    }
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["mean rank", "ranked first", "queries", "database"], dtype=float
    )


def robustness_levels(reports: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(perturbation, level) pairs of every robustness curve, clean first, in report order."""
    columns: list[tuple[str, str]] = []
    for n in _methods(reports, "robustness"):
        for kind, levels in reports[n]["robustness"].items():
            if isinstance(levels, dict):
                columns += [(str(kind), str(lv)) for lv in levels if (str(kind), str(lv)) not in columns]
    return sorted(columns, key=lambda c: c[0] != "clean")


def robustness_column(kind: str, level: str) -> str:
    return "clean" if kind == "clean" else f"{kind} {level}"


def robustness_frame(reports: dict[str, dict[str, Any]], metric: str = "minADE@5") -> pd.DataFrame:
    """``metric`` per method (rows) and perturbation level (columns, clean first)."""
    levels = robustness_levels(reports)
    rows = {
        n: [report_number(_at(reports[n], "robustness", k, lv, metric)) for k, lv in levels]
        for n in _methods(reports, "robustness")
    }
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=[robustness_column(k, lv) for k, lv in levels], dtype=float
    )


def robustness_kinds(reports: dict[str, dict[str, Any]]) -> list[str]:
    """The perturbations of the robustness curves (``clean`` left out), in report order."""
    return list(dict.fromkeys(kind for kind, _ in robustness_levels(reports) if kind != "clean"))


#: The methods scored for comparison only, never marked best: exact search in raw trajectory space and
#: random neighbours.
REFERENCE_METHODS = ("oracle_raw", "random")


def best_rows(
    values: pd.Series, better: str, digits: int = 3, exclude: Sequence[str] = REFERENCE_METHODS
) -> list[str]:
    """The rows (methods) holding the best of ``values`` ("lower" or "higher" is better), references
    left out: every row that ties with it at the ``digits`` shown, not only the first."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    candidates = pd.to_numeric(values.drop(labels=[i for i in exclude if i in values.index]), errors="coerce")
    shown = candidates.dropna().round(digits)
    if shown.empty:
        return []
    best = shown.min() if better == "lower" else shown.max()
    return [str(i) for i in shown.index[shown == best]]


def robustness_curves(
    reports: dict[str, dict[str, Any]], kind: str, metric: str = "minADE@5"
) -> dict[str, list[tuple[float, float]]]:
    """Per method, (level, ``metric``) points of one perturbation kind, from the clean level (0) up
    (a time offset has no clean point: the same window is not an offset)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for n in _methods(reports, "robustness"):
        rob = reports[n]["robustness"]
        clean = report_number(_at(rob, "clean", "0", metric))
        points = [(0.0, clean)] if kind != "offset_s" and math.isfinite(clean) else []
        levels = _at(rob, kind)
        for level, scores in levels.items() if isinstance(levels, dict) else []:
            try:
                points.append((float(level), report_number(_at(scores, metric))))
            except ValueError:
                continue  # a combined level ("0.5+0.3") is a table column, not a point of a curve
        if len(points) > 1 or (points and kind == "offset_s"):
            curves[n] = sorted(points)
    return curves


def _markdown(frame: pd.DataFrame, digits: int, first: str = "method") -> list[str]:
    lines = [
        f"| {first} | " + " | ".join(str(c) for c in frame.columns) + " |",
        "|---|" + "---|" * len(frame.columns),
    ]
    for name, row in frame.iterrows():
        lines.append(f"| {name} | " + " | ".join(_fmt(float(v), digits) for v in row) + " |")
    return lines


def per_class_table(reports: dict[str, dict[str, Any]], k_ade: int = 5, k_precision: int = 10) -> str:
    """minADE@k_ade / precision@k_precision / recall@k_precision per class (columns) and method (rows)."""
    names = _methods(reports, "per_class")
    if not names:
        return "_no per-class scores_"
    ade = per_class_frame(reports, f"minADE@{k_ade}")
    precision = per_class_frame(reports, f"precision@{k_precision}")
    recall = per_class_frame(reports, f"recall@{k_precision}")
    lines = [
        f"minADE@{k_ade} (m) / precision@{k_precision} / recall@{k_precision} by query class "
        f"({reports[names[0]].get('label', 'direction')} labels; queries per class in the last row):",
        "",
        "| method | " + " | ".join(ade.columns) + " |",
        "|---|" + "---|" * len(ade.columns),
    ]
    for n in ade.index:
        cells = [
            f"{_fmt(float(ade.at[n, c]))} / {_fmt(float(precision.at[n, c]), 2)} / {_fmt(float(recall.at[n, c]), 2)}"
            for c in ade.columns
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    counts = class_query_counts(reports)
    lines.append("| queries | " + " | ".join(str(counts.get(c, 0)) for c in ade.columns) + " |")
    return "\n".join(lines)


def mean_rank_table(reports: dict[str, dict[str, Any]]) -> str:
    frame = mean_rank_frame(reports)
    if frame.empty:
        return "_no mean rank_"
    lines = ["| method | mean rank | ranked first | queries | database |", "|---|---|---|---|---|"]
    for n, r in frame.iterrows():
        lines.append(
            f"| {n} | {_fmt(float(r['mean rank']))} | {_fmt(float(r['ranked first']))} | "
            f"{report_count(r['queries'])} | {report_count(r['database'])} |"
        )
    return "\n".join(lines)


def robustness_table(reports: dict[str, dict[str, Any]], metric: str = "minADE@5") -> str:
    """One row per method, one column per perturbation level (clean first)."""
    frame = robustness_frame(reports, metric)
    if frame.empty:
        return "_no robustness curves_"
    return "\n".join(_markdown(frame, 3))


def goals(reports: dict[str, dict[str, Any]], model: str, dim: int = 4) -> list[tuple[str, str, bool | None]]:
    """Issue 12's goals for a learned model against PCA-``dim`` and the oracle: (goal, numbers, reached)."""
    r, pca, oracle = reports.get(model, {}), reports.get(f"pca_{dim}", {}), reports.get("oracle_raw", {})
    out: list[tuple[str, str, bool | None]] = []
    if "minADE@5" in r and "minADE@5" in oracle:
        ratio = r["minADE@5"] / oracle["minADE@5"]
        out.append(
            (
                "minADE@5 within 5 % of the oracle",
                f"{r['minADE@5']:.3f} vs {oracle['minADE@5']:.3f} ({100 * (ratio - 1):+.1f} %)",
                ratio <= 1.05,
            )
        )
    if "hard" in r and "hard" in pca:
        a, b = r["hard"].get("precision@10", math.nan), pca["hard"].get("precision@10", math.nan)
        out.append((f"hard-class precision@10 at least PCA-{dim}'s", f"{a:.3f} vs {b:.3f}", a >= b))
    if "silhouette_label" in r and "silhouette_label" in pca:
        a, b = r["silhouette_label"], pca["silhouette_label"]
        out.append(
            (f"silhouette ({r.get('label', 'direction')}) above PCA-{dim}'s", f"{a:.3f} vs {b:.3f}", a > b)
        )
    for kind, level, what in (
        ("noise_m", "0.5", "noise 0.5 m"),
        ("drop", "0.3", "30 % dropped steps"),
        ("noise_m+drop", "0.5+0.3", "noise 0.5 m and 30 % dropped together"),
    ):
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


#: Issue 18: the forecast scores, score key -> (better when, definition); the one place the CLI, the
#: Markdown tables and the explorer take them from (``forecast_definitions`` names them at a K).
FORECAST_METRICS: dict[str, tuple[str, str]] = {
    "minADE": (
        "lower",
        "Average distance (m) over the future between the true future and the best of the K forecasts "
        "(the one ending nearest the true final position; av2's compute_ade).",
    ),
    "minFDE": (
        "lower",
        "Distance (m) between the true final position and the nearest final position among the K forecasts "
        "(av2's compute_fde).",
    ),
    "MR": (
        "lower",
        "Miss rate: share of queries whose best forecast ends more than 2 m from the true final position "
        "(av2's compute_is_missed_prediction); for one query, 1 if it is missed.",
    ),
    "brier_minFDE": (
        "lower",
        "minFDE plus (1 - p)^2, p the probability given to the best forecast (av2's compute_brier_fde): it "
        "also scores how much probability lands on the right future.",
    ),
}
#: Issue 18: what each forecasting method is (``trajemb.analysis.forecast``).
FORECAST_METHODS: dict[str, str] = {
    "retrieval_{model}": "the futures of the K bank windows whose histories are nearest in the learned "
    "history embedding (its shortlist re-ranked by raw history distance), probabilities from the distances",
    "knn_raw": "the same with exact search over the raw histories (metres, last-state frame): the reference "
    "a learned history embedding is measured against",
    "constant_velocity": "the last step's velocity held for the whole future (one forecast)",
    "constant_acceleration": "the acceleration of the last second held until the road user would stop "
    "(one forecast)",
}
#: Issue 17: the rare-class enrichment table's columns, key -> (better when, definition).
RARE_ENRICHMENT_METRICS: dict[str, tuple[str, str]] = {
    "enrichment": (
        "higher",
        "Top rate over base rate: how many times more often the rare classes are among the most unique "
        "windows than among all (1 = no better than a random pick).",
    ),
    "top rate": ("higher", "Share of rare-class windows among the most unique windows."),
    "base rate": ("", "Share of rare-class windows among all windows (the same for every method)."),
    "each class": (
        "higher",
        "That class's own enrichment (its share among the most unique over its share in all).",
    ),
}


def forecast_definitions(k: int) -> dict[str, tuple[str, str]]:
    """``FORECAST_METRICS`` named as the summaries at K forecasts name them (``minADE6`` ...)."""
    return {f"{name}{k}": value for name, value in FORECAST_METRICS.items()}


def definitions_markdown(definitions: dict[str, tuple[str, str]]) -> str:
    """Definitions as a Markdown list: ``* **name** (lower is better): text``."""
    return "\n".join(
        f"* **{name}**" + (f" ({better} is better)" if better else "") + f": {text}"
        for name, (better, text) in definitions.items()
    )


def forecast_frame(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Issue 18: the forecast scores of a bundle's history models (``report["forecast"]``), one row per
    method (``retrieval_<model>``, ``knn_raw``, ``constant_velocity``, ...; suffixed ``(H = h)`` where
    history lengths differ), columns ``history_steps``, ``k``, ``minADE``, ``minFDE``, ``MR``,
    ``brier_minFDE``, ``queries``; empty when no report holds any. History models of one length share
    one table (the same queries): it is taken once."""
    tables: dict[int, tuple[int, dict[str, Any]]] = {}
    for report in reports.values():
        forecast = _at(report, "forecast")
        h = report_count(_at(forecast, "config", "history_steps") or None)
        k = report_count(_at(forecast, "config", "k") or None)
        methods = _at(forecast, "methods")
        if h and k and methods and h not in tables:
            tables[h] = (k, methods)
    rows: dict[str, list[float]] = {}
    for h, (k, methods) in tables.items():
        for method, scores in methods.items():
            name = f"{method} (H = {h})" if len(tables) > 1 else str(method)
            values = [
                report_number(_at(scores, f"{key}{k}")) for key in ("minADE", "minFDE", "MR", "brier_minFDE")
            ]
            rows[name] = [float(h), float(k), *values, report_number(_at(scores, "queries"))]
    columns = ["history_steps", "k", "minADE", "minFDE", "MR", "brier_minFDE", "queries"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)


def forecast_scores_table(reports: dict[str, dict[str, Any]]) -> str:
    """``forecast_frame`` as Markdown (minFDE also as a multiple of constant velocity's)."""
    frame = forecast_frame(reports)
    if frame.empty:
        return "_no forecast scores (no history model)_"
    k = report_count(frame["k"].iloc[0], 6)
    lines = [
        f"| method | minADE{k} | minFDE{k} | MR{k} | brier-minFDE{k} | minFDE / constant velocity | queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in frame.iterrows():
        h = r["history_steps"]
        cv = frame[(frame["history_steps"] == h) & frame.index.str.startswith("constant_velocity")]["minFDE"]
        ratio = float(r["minFDE"]) / float(cv.iloc[0]) if len(cv) and float(cv.iloc[0]) > 0 else math.nan
        lines.append(
            f"| {name} | {_fmt(float(r['minADE']))} | {_fmt(float(r['minFDE']))} | {_fmt(float(r['MR']))} | "
            f"{_fmt(float(r['brier_minFDE']))} | {_fmt(ratio, 2)} | {report_count(r['queries'])} |"
        )
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
            for n, points in robustness_curves(reports, kind, metric).items():
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=n, linestyle="--" if n in TABLE_BASELINES else "-")
            ax.set_xlabel(
                {
                    "noise_m": "position noise sigma (m)",
                    "drop": "share of steps dropped",
                    "offset_s": "query offset (s)",
                }[kind]
            )
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


HARD_NOTE = "Hard classes: " + ", ".join(HARD_CLASSES) + "."


def report_table(reports: dict[str, dict[str, Any]], ks: tuple[int, ...] = (1, 5, 10)) -> str:
    """Markdown table of reports (one row each)."""
    cols = (
        [f"minADE@{k}" for k in ks]
        + [f"minFDE@{k}" for k in ks]
        + [f"precision@{ks[-1]}", f"mirror_confusion@{ks[-1]}", "silhouette_direction"]
    )
    lines = ["| model | D | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, r in reports.items():
        values = [_fmt(report_number(r.get(c))) for c in cols]
        lines.append(f"| {name} | {r.get('dim', '-')} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def rare_enrichment_frame(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per method (rows): how well uniqueness finds the rare classes (``trajemb.analysis.uniqueness``):
    ``enrichment``, their share among the most unique windows (``top rate``) and in all (``base
    rate``), then each class's enrichment; empty where no report holds ``rare_enrichment``."""
    names = _methods(reports, "rare_enrichment")
    rows: dict[str, dict[str, float]] = {}
    for n in names:
        r = reports[n]["rare_enrichment"]
        row = {
            "enrichment": report_number(r.get("enrichment")),
            "top rate": report_number(r.get("top_rate")),
            "base rate": report_number(r.get("base_rate")),
        }
        for c in CLASSES:
            if isinstance(_at(r, "per_class", c), dict) and _at(r, "per_class", c):
                row[c] = report_number(_at(r, "per_class", c, "enrichment"))
        rows[n] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def rare_enrichment_note(reports: dict[str, dict[str, Any]]) -> str:
    """One sentence saying what the rare-class enrichment table measures (its classes, share and k, read
    from the first report holding it); empty where none does."""
    names = _methods(reports, "rare_enrichment")
    if not names:
        return ""
    first = reports[names[0]]["rare_enrichment"]
    share = report_number(first.get("top_share"))
    classes = first.get("rare_classes")
    return (
        f"Rare classes {', '.join(map(str, classes if isinstance(classes, list) else []))} (the least "
        f"frequent, together at most 10 % of the windows); their share among the {100 * share:g} % most "
        f"unique of {report_count(first.get('windows'))} windows (uniqueness: distance to the "
        f"{report_count(first.get('k'))}th nearest other track) over their share in all; then each "
        "class's enrichment (1 = no better than a random pick)"
    )


def rare_enrichment_table(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: the rare classes' enrichment among the most unique windows, per method."""
    frame = rare_enrichment_frame(reports)
    if frame.empty:
        return "_no rare-class enrichment (it needs true manoeuvres: synthetic data)_"
    return "\n".join([rare_enrichment_note(reports) + ":", "", *_markdown(frame, 2)])
