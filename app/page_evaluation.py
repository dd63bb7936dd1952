"""Evaluation: every model's retrieval report beside the baselines, readable at a glance."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from trajemb.analysis.report import (
    FORECAST_METHODS,
    HARD_NOTE,
    RARE_ENRICHMENT_METRICS,
    TABLE_BASELINES,
    best_rows,
    class_query_counts,
    definitions_markdown,
    forecast_definitions,
    forecast_frame,
    mean_rank_frame,
    per_class_frame,
    rare_enrichment_frame,
    rare_enrichment_note,
    report_count,
    report_number,
    robustness_curves,
    robustness_frame,
    robustness_kinds,
)
from trajemb.serving.viz import curves_figure, grouped_bar_figure, metric_vs_dim_figure

import cache
import ui

#: Column -> (better when, one-sentence definition).
METRICS: dict[str, tuple[str, str]] = {
    "minADE@1": (
        "lower",
        "Average distance (m) between the query and its nearest neighbour over the whole window, both in "
        "their own agent frames, averaged over queries.",
    ),
    "minADE@5": (
        "lower",
        "The smallest such average distance among the 5 nearest neighbours, averaged over queries.",
    ),
    "minADE@10": ("lower", "The same among the 10 nearest neighbours."),
    "minFDE@1": ("lower", "Distance (m) between the end points of the query and its nearest neighbour."),
    "minFDE@5": ("lower", "The smallest end-point distance among the 5 nearest neighbours."),
    "minFDE@10": ("lower", "The same among the 10 nearest neighbours."),
    "precision@10": ("higher", "Share of the 10 nearest neighbours with the query's direction class."),
    "mirror_confusion@10": (
        "lower",
        "For left / right / lane-change queries: share of neighbours doing the mirror-image manoeuvre "
        "(FFT magnitudes cannot tell them apart).",
    ),
    "silhouette_direction": (
        "higher",
        "Silhouette of the direction classes in the embedding (-1 to 1): how well the classes form separate groups.",
    ),
    "recall@10 vs exact": (
        "higher",
        "Share of the exact 10 nearest neighbours that the bundle's search index returns (1 for an exact index).",
    ),
    "encode_ms_per_window": ("lower", "Milliseconds to embed one window when the bundle was built."),
    "search_ms_per_query": ("lower", "Milliseconds per query of the evaluation's exact search."),
}
SPEED = ("recall@10 vs exact", "encode_ms_per_window", "search_ms_per_query")
MAIN = ("minADE@1", "minADE@5", "minADE@10", "minFDE@5")
DISTANCES = ("minADE@1", "minADE@5", "minADE@10", "minFDE@1", "minFDE@5", "minFDE@10")
LABEL_SCORES = ("precision@10", "mirror_confusion@10", "silhouette_direction")


#: Per-class and robustness scores: key -> (better when, one-sentence definition).
CLASS_METRICS: dict[str, tuple[str, str]] = {
    "minADE@5": ("lower", "minADE@5 (m) over the queries of each class."),
    "minFDE@5": ("lower", "minFDE@5 (m) over the queries of each class."),
    "precision@10": ("higher", "Share of the 10 nearest neighbours of the query's own class."),
    "recall@10": (
        "higher",
        "Share of queries with at least one neighbour of their own class among the 10 nearest (Recall@K of "
        "metric learning).",
    ),
}
ROBUSTNESS_METRICS: dict[str, tuple[str, str]] = {
    "minADE@5": (
        "lower",
        "minADE@5 (m) of the neighbours found from perturbed windows, scored on clean geometry.",
    ),
    "hard_precision@10": ("higher", "precision@10 over the queries of the hard classes."),
    "precision@10": ("higher", "precision@10 over all queries."),
}
CURVE_HIDDEN = ("pca_8", "pca_16")
PERTURBATIONS: dict[str, str] = {
    "noise_m": "position noise sigma (m)",
    "drop": "share of steps dropped",
    "offset_s": "query offset (s)",
}
#: Every perturbation of the robustness table, as the page names it.
PERTURBATION_NAMES: dict[str, str] = {
    **PERTURBATIONS,
    "noise_m+drop": "noise sigma (m) + share dropped",
    "short_query_s": "query length (s)",
}


BEST = "font-weight: bold; background-color: #cde7f7"


def _best_style(frame: pd.DataFrame, better: dict[str, str], digits: int) -> pd.DataFrame:
    """Bold, tinted cells at the best value of each column among models and baselines (not the
    references), every tie at the digits shown included. ``better``: column -> "lower"/"higher"."""
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for col in frame.columns:
        if col in better:
            styles.loc[best_rows(frame[col], better[col], digits), col] = BEST
    return styles


def _table(
    frame: pd.DataFrame,
    key: str,
    better: dict[str, str],
    digits: int = 3,
    formats: dict[str, str] | None = None,
    help_text: dict[str, str] | None = None,
) -> None:
    """A score table with every row visible, the best value per column marked (``better``: column ->
    "lower"/"higher"; ties all marked) and missing values as a dash."""
    formats = {c: (formats or {}).get(c, f"{{:.{digits}f}}") for c in frame.columns}
    styled = frame.style.format(formats, na_rep="\u2013").apply(
        _best_style, axis=None, better=better, digits=digits
    )
    config = {c: st.column_config.Column(str(c), help=(help_text or {}).get(str(c))) for c in frame.columns}
    st.dataframe(
        styled,
        width="stretch",
        key=key,
        column_config=config,
        height=36 * (len(frame) + 1) + 3,
        placeholder="\u2013",
    )


def _per_class_section(reports: dict[str, dict[str, Any]]) -> None:
    frame_all = per_class_frame(reports)
    if frame_all.empty:
        return
    st.subheader("Per query class")
    label = next((str(r.get("label")) for r in reports.values() if "per_class" in r), "direction")
    source = (
        "the generator's true manoeuvres"
        if label == "true_manoeuvre"
        else "the heuristic direction labels (no ground truth for these windows)"
    )
    counts = class_query_counts(reports)
    st.caption(
        ui.md(
            f"Classes are {source}. Averages over all queries are dominated by easy straight windows; these "
            f"scores are over the queries of one class. {HARD_NOTE} Queries per class: "
            + ", ".join(f"{c} {n:,}" for c, n in counts.items())
            + "."
        )
    )
    metric = st.radio("Score", list(CLASS_METRICS), horizontal=True, key="eval-class-metric")
    frame = per_class_frame(reports, metric)
    frame = frame.loc[:, frame.notna().any(axis=0)]
    st.caption(ui.md(f"{CLASS_METRICS[metric][1]} {CLASS_METRICS[metric][0].capitalize()} is better."))
    _table(frame, "eval-class-table", dict.fromkeys(frame.columns, CLASS_METRICS[metric][0]))


def _mean_rank_section(reports: dict[str, dict[str, Any]]) -> None:
    frame = mean_rank_frame(reports)
    if frame.empty:
        return
    st.subheader("Mean rank of twin halves")
    largest = frame["database"].max()
    database = f"{int(largest):,}" if pd.notna(largest) else "the"
    st.caption(
        ui.md(
            f"The trajectory-similarity literature's measure (TrajCL): each window is split into its even and odd "
            f"steps; the even half of each query searches the odd halves of {database} windows, and the rank of "
            "its own odd half is averaged (1 is perfect). Ranked first: share of queries whose twin comes first. "
            "TrajCL reports 1.004 on 100,000 Porto taxi trajectories."
        )
    )
    _table(
        frame[["mean rank", "ranked first"]],
        "eval-rank-table",
        {"mean rank": "lower", "ranked first": "higher"},
    )


def _robustness_section(reports: dict[str, dict[str, Any]], encoder_missing: str, pending: bool) -> None:
    st.subheader("Robustness")
    frame_all = robustness_frame(reports)
    if frame_all.empty and pending:
        st.caption("The robustness curves are being computed in the background (progress below).")
        return
    if frame_all.empty:
        st.caption(
            "This bundle has no robustness curves. Build it with `trajemb bundle --robustness` (minutes on a "
            "CPU) to see how retrieval holds up under position noise, dropped steps, a shorter query and a "
            "time offset."
        )
        return
    st.caption(
        "Query and corpus perturbed as real tracks are (Gaussian position noise per coordinate; steps "
        "dropped at random; both; a 3 s query against 6 s windows; the query taken 0.5 to 2 s later on the "
        "same track). Neighbours are found from the perturbed windows and scored on the clean ones. "
        + (
            "Encoders and PCA read windows with missing steps completed by linear interpolation. "
            if encoder_missing != "mask"
            else "Encoders read windows with missing steps masked; PCA and the oracle read them completed by "
            "linear interpolation. "
        )
        + "Dashed lines are baselines."
    )
    metric = st.radio("Score", list(ROBUSTNESS_METRICS), horizontal=True, key="eval-robust-metric")
    better, text = ROBUSTNESS_METRICS[metric]
    st.caption(ui.md(f"{text} {better.capitalize()} is better."))
    frame = robustness_frame(reports, metric)
    present = robustness_kinds(reports)
    kind_names = {PERTURBATION_NAMES.get(k, k): k for k in present}
    shown = st.segmented_control(
        "Perturbation", list(kind_names), default=next(iter(kind_names)), key="eval-robust-kind"
    )
    chosen = kind_names.get(str(shown), present[0])
    # One perturbation at a time: all of them side by side needed scrolling to the last column.
    levels = [c for c in frame.columns if c.split(" ", 1)[0] == chosen]
    table = frame[(["clean"] if "clean" in frame.columns and chosen != "offset_s" else []) + levels]
    table = table.rename(columns={c: c.split(" ", 1)[1] for c in levels})
    st.caption(ui.md(f"Columns: {PERTURBATION_NAMES.get(chosen, chosen)}, clean windows first."))
    _table(table, "eval-robust-table", dict.fromkeys(table.columns, better))
    kinds = [k for k in PERTURBATIONS if robustness_curves(reports, k, metric)]
    for column, kind in zip(st.columns(max(1, len(kinds))), kinds, strict=False):
        with column:
            # PCA at larger D is the oracle to within a few millimetres: one PCA line keeps the plot readable.
            curves = {
                n: c for n, c in robustness_curves(reports, kind, metric).items() if n not in CURVE_HIDDEN
            }
            title = f"{metric} against {PERTURBATIONS[kind]}"
            figure = curves_figure(curves, title, PERTURBATIONS[kind], metric, dashed=TABLE_BASELINES)
            st.plotly_chart(figure, key=f"eval-robust-{kind}")


def _forecast_section(reports: dict[str, dict[str, Any]]) -> None:
    """Issue 18: the forecast scores of the history models' reports, beside the physical models and
    raw kNN (definitions: ``trajemb.analysis.report``)."""
    st.subheader("Forecasting by retrieval")
    frame = forecast_frame(reports)
    if frame.empty:
        st.caption(
            "This bundle has no history model, so no forecast scores: build it with one "
            "(`trajemb bundle ... --checkpoint checkpoints/history-cosine-d8`)."
        )
        return
    k = report_count(frame["k"].iloc[0], 6)
    lengths = sorted({report_count(h) for h in frame["history_steps"]})
    first = next(r["forecast"] for r in reports.values() if isinstance(r.get("forecast"), dict))
    st.caption(
        f"{report_count(first.get('queries'))} of the bundle's own windows as queries, each forecast from its "
        f"first {' or '.join(str(h) for h in lengths)} steps ({', '.join(f'{h / 10:g}' for h in lengths)} s) "
        "with its own scenario left out of the bank, and scored on the rest of the window with av2's metric "
        f"functions; {k} futures per query. Best value per column in bold. The Forecast page shows one query."
    )
    definitions = forecast_definitions(k)
    table = frame.rename(columns={name: f"{name}{k}" for name in ("minADE", "minFDE", "MR", "brier_minFDE")})
    table = table[[*([] if len(lengths) == 1 else ["history_steps"]), *definitions, "queries"]]
    _table(
        table,
        "eval-forecast-table",
        {c: better for c, (better, _) in definitions.items()},
        formats={"history_steps": "{:.0f}", "queries": "{:.0f}"},
        help_text={c: text for c, (_, text) in definitions.items()},
    )
    st.markdown(
        definitions_markdown(definitions)
        + "\n"
        + "\n".join(f"* **{m}**: {text}." for m, text in FORECAST_METHODS.items())
    )


def _rare_section(reports: dict[str, dict[str, Any]]) -> None:
    """Issue 17: how well uniqueness finds the rare classes, per model and baseline."""
    frame = rare_enrichment_frame(reports)
    if frame.empty:
        return  # it needs true manoeuvres (synthetic data)
    st.subheader("Rare behaviours among the most unique windows")
    # The base rate is the same for every method: said once, so the table keeps to the page's width.
    base = frame.pop("base rate").dropna()
    share = f" Base rate of the rare classes: {base.iloc[0]:.3f}." if len(base) else ""
    st.caption(ui.md(rare_enrichment_note(reports) + "." + share + " Best value per column in bold."))
    definitions = {
        c: RARE_ENRICHMENT_METRICS.get(c, RARE_ENRICHMENT_METRICS["each class"]) for c in frame.columns
    }
    _table(
        frame,
        "eval-rare-table",
        {c: better for c, (better, _) in definitions.items() if better},
        digits=2,
        help_text={c: text for c, (_, text) in definitions.items()},
    )
    st.markdown(definitions_markdown(RARE_ENRICHMENT_METRICS))


def page() -> None:
    st.title("Evaluation")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    # Reports are data read from the bundle: entries that are not objects are left out, and numbers
    # that are not numbers become empty cells (``_number``), never an exception.
    reports: dict[str, dict[str, Any]] = {}
    for name in bundle.model_names:
        report = bundle.report(name)
        if isinstance(report, dict):
            reports[name] = report
    baselines = {str(k): v for k, v in bundle.baselines().items() if isinstance(v, dict)}
    if not reports:
        ui.completion_notice(bundle)
        return
    scope = next(iter(reports.values()))
    corpus = report_count(scope.get("corpus_windows"), bundle.num_windows)
    sampled = (
        f" (a seeded sample of the {bundle.num_windows:,} in the bundle)"
        if corpus < bundle.num_windows
        else ""
    )
    st.caption(
        f"{report_count(scope.get('num_queries'), 0):,} queries sampled among {corpus:,} windows{sampled}; "
        "each query's own track is excluded from its neighbours, which are found by exact search over the embedding. "
        "Best value per column (among models and baselines, not the oracle or random references) in bold."
    )
    quality = [m for m in METRICS if m not in SPEED]
    rows, speed_rows = {}, {}
    for name, r in {**reports, **baselines}.items():
        rows[name] = {"D": r.get("dim"), **{m: r.get(m) for m in quality}}
        index = r.get("index") if isinstance(r.get("index"), dict) else None
        if index is not None:
            kind = index.get("kind")
            nprobe = (
                f", nprobe {index.get('nprobe')}" if kind == "ivf" and index.get("nprobe") is not None else ""
            )
            speed_rows[name] = {
                "index": f"{kind}{nprobe}" if isinstance(kind, str) else "\u2013",
                "recall@10 vs exact": index.get("recall_at_10"),
                **{m: r.get(m) for m in ("encode_ms_per_window", "search_ms_per_query")},
            }
    frame = pd.DataFrame(rows).T.apply(pd.to_numeric, errors="coerce")
    definitions = {
        name: f"{text} {better.capitalize()} is better." for name, (better, text) in METRICS.items()
    }
    definitions["D"] = "Embedding dimension (for the oracle: the raw window's 2 T numbers; random: none)"
    for title, columns in (
        ("Distances to the query (m)", DISTANCES),
        ("Labels of the neighbours", LABEL_SCORES),
    ):
        st.markdown(f"**{title}**")
        _table(
            frame[["D", *columns]],
            f"eval-table-{columns[0]}",
            {c: METRICS[c][0] for c in columns},
            formats={"D": "{:.0f}"},
            help_text=definitions,
        )
    if speed_rows:
        st.caption(
            "Search index and speed of each model (recall of the index the explorer searches, against exact)."
        )
        speed = pd.DataFrame(speed_rows).T
        numbers = speed.drop(columns=["index"]).apply(pd.to_numeric, errors="coerce")
        _table(
            pd.concat([speed[["index"]], numbers], axis=1),
            "speed-table",
            {c: METRICS[c][0] for c in numbers.columns},
            formats={"index": "{}"},
            help_text=definitions,
        )
    chart_methods = {name: {m: report_number(r.get(m)) for m in MAIN} for name, r in reports.items()}
    for ref in ("oracle_raw", "random"):
        if ref in baselines:
            chart_methods[ref] = {m: report_number(baselines[ref].get(m)) for m in MAIN}
    for name in baselines:
        if name.startswith("pca_"):
            chart_methods[name] = {m: report_number(baselines[name].get(m)) for m in MAIN}
    st.plotly_chart(
        grouped_bar_figure(
            chart_methods,
            MAIN,
            "Main retrieval errors: models beside the oracle, PCA and random",
            "metres (lower is better)",
        ),
        key="eval-bars",
    )
    dims_by_similarity: dict[str, set[int]] = {}
    for name, r in reports.items():
        dims_by_similarity.setdefault(str(bundle.model_entry(name).get("similarity")), set()).add(
            report_count(r.get("dim"), 0)
        )
    if any(len(d) > 1 for d in dims_by_similarity.values()):
        groups: dict[str, list[tuple[int, float]]] = {}
        for name, r in reports.items():
            similarity = bundle.model_entry(name).get("similarity") or "model"
            groups.setdefault(str(similarity), []).append(
                (report_count(r.get("dim"), 0), report_number(r.get("minADE@5")))
            )
        oracle = report_number(baselines.get("oracle_raw", {}).get("minADE@5"))
        refs = {"oracle": oracle} if math.isfinite(oracle) else {}
        st.plotly_chart(metric_vs_dim_figure(groups, refs, "minADE@5"), key="eval-dim")
    else:
        st.caption(
            "No mining similarity has models of several embedding dimensions D here, so there is no plot against D."
        )
    ranked = {**reports, **baselines}
    _per_class_section(ranked)
    _mean_rank_section(ranked)
    evaluation = bundle.manifest.get("evaluation")
    encoder_missing = evaluation.get("encoder_missing") if isinstance(evaluation, dict) else None
    pending = cache.completion_status(str(bundle.root)) is not None
    _robustness_section(ranked, str(encoder_missing), pending)
    _forecast_section(reports)
    _rare_section(ranked)
    st.subheader("What the columns mean")
    st.markdown(
        "\n".join(f"* **{name}** ({better} is better): {text}" for name, (better, text) in METRICS.items())
    )
    ui.completion_notice(bundle, only_running=True)


ui.run_page(page)
