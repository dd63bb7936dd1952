"""Report tables and curves (``trajemb.analysis.report``) from hand-written reports: values land in the right
cells, missing scores stay missing, baselines follow models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trajemb.analysis import report
from trajemb.analysis.report import (
    best_rows,
    goals,
    mean_rank_frame,
    mean_rank_table,
    per_class_frame,
    per_class_table,
    rare_enrichment_frame,
    rare_enrichment_table,
    robustness_curves,
    robustness_frame,
    robustness_kinds,
    robustness_table,
)


def _scores(ade: float, precision: float, queries: int = 10) -> dict[str, float | int]:
    return {"queries": queries, "minADE@5": ade, "precision@10": precision, "recall@10": 1.0}


def _robustness(clean: float, noise: float, drop: float) -> dict[str, Any]:
    return {
        "clean": {"0": {"minADE@5": clean}},
        "noise_m": {"0.1": {"minADE@5": clean + 0.01}, "0.5": {"minADE@5": noise}},
        "drop": {"0.3": {"minADE@5": drop}},
        "noise_m+drop": {"0.5+0.3": {"minADE@5": noise + drop}},
        "label": "true_manoeuvre",
        "corpus": 100,
    }


REPORTS: dict[str, dict[str, Any]] = {
    "pca_4": {
        "minADE@5": 0.52,
        "per_class": {"straight": _scores(0.4, 0.9, 50), "left": _scores(0.8, 0.5, 7)},
        "hard": _scores(0.8, 0.5, 7),
        "silhouette_label": -0.2,
        "mean_rank": {"mean_rank": 1.5, "top1": 0.7, "queries": 100, "database": 1000},
        "robustness": _robustness(0.52, 1.3, 0.9),
    },
    "model-a": {
        "minADE@5": 0.53,
        "per_class": {"straight": _scores(0.41, 0.92), "left": _scores(0.7, 0.6)},
        "hard": _scores(0.7, 0.6),
        "silhouette_label": -0.1,
        "mean_rank": {"mean_rank": 1.2, "top1": 0.8, "queries": 100, "database": 1000},
        "robustness": _robustness(0.53, 0.9, 0.8),
    },
    "oracle_raw": {"minADE@5": 0.51, "per_class": {"u_turn": _scores(2.0, 0.3)}, "hard": _scores(2.0, 0.3)},
    "random": {"minADE@5": 9.0},
}


def test_per_class_frame_puts_models_first_and_keeps_gaps() -> None:
    frame = per_class_frame(REPORTS)
    assert list(frame.index) == ["model-a", "oracle_raw", "pca_4"]  # random holds no per-class scores
    assert frame.columns[-1] == "hard classes"
    assert frame.at["model-a", "left"] == 0.7 and frame.at["pca_4", "hard classes"] == 0.8
    assert math.isnan(frame.at["model-a", "u_turn"])  # a class only the oracle's queries had
    assert per_class_frame(REPORTS, "precision@10").at["model-a", "straight"] == 0.92
    table = per_class_table(REPORTS)
    assert "| model-a | 0.410 / 0.92 / 1.00 |" in table and "| queries | 10 |" in table


def test_mean_rank_and_robustness_frames() -> None:
    rank = mean_rank_frame(REPORTS)
    assert list(rank.index) == ["model-a", "pca_4"] and rank.at["model-a", "mean rank"] == 1.2
    robust = robustness_frame(REPORTS)
    assert list(robust.columns) == ["clean", "noise_m 0.1", "noise_m 0.5", "drop 0.3", "noise_m+drop 0.5+0.3"]
    assert robust.at["pca_4", "noise_m+drop 0.5+0.3"] == 1.3 + 0.9
    assert "| model-a | 0.530 | 0.540 | 0.900 | 0.800 | 1.700 |" in robustness_table(REPORTS)


def test_robustness_curves_start_clean_and_skip_combined_levels() -> None:
    curves = robustness_curves(REPORTS, "noise_m")
    assert curves["model-a"] == [(0.0, 0.53), (0.1, 0.54), (0.5, 0.9)]
    assert robustness_curves(REPORTS, "noise_m+drop") == {}  # a table column, not a curve
    assert robustness_curves(REPORTS, "offset_s") == {}


def test_goals_compare_with_pca_and_the_oracle() -> None:
    reached = {goal: ok for goal, _, ok in goals(REPORTS, "model-a")}
    assert reached["minADE@5 within 5 % of the oracle"] is True  # 0.53 / 0.51 = +3.9 %
    assert reached["hard-class precision@10 at least PCA-4's"] is True
    assert reached["under noise 0.5 m: minADE@5 below PCA-4's"] is True


def test_malformed_reports_give_empty_cells_not_errors() -> None:
    """Reports are read from bundles: wrong types at any level leave cells empty."""
    bad: dict[str, dict[str, Any]] = {
        "m": {
            "per_class": {"left": [1, 2], "straight": {"minADE@5": "x", "queries": None}},
            "hard": 3,
            "mean_rank": {"mean_rank": None, "top1": True, "queries": "many", "database": {}},
            "robustness": {"clean": 5, "noise_m": {"0.5": 7, "1": {"minADE@5": 1.0}}, "label": "x"},
        },
        "pca_4": {"per_class": {}, "robustness": {"noise_m": []}},
    }
    frame = per_class_frame(bad)
    assert list(frame.index) == ["m", "pca_4"] and frame.isna().all().all()
    assert mean_rank_frame(bad).isna().all().all()
    assert math.isnan(robustness_frame(bad).at["m", "noise_m 0.5"])
    assert robustness_frame(bad).at["m", "noise_m 1"] == 1.0
    (half, missing), (one, value) = robustness_curves(bad, "noise_m")["m"]
    assert (half, one, value) == (0.5, 1.0, 1.0) and math.isnan(missing)
    assert "method" in per_class_table(bad) and "method" in robustness_table(bad)
    assert "| m | - | - | 0 | 0 |" in mean_rank_table(bad)


def test_best_rows_marks_every_tie_and_never_a_reference() -> None:
    """Issue 22, bug 7: a tie for the best value marked only the first row."""
    values = pd.Series(
        {"oracle_raw": 0.400, "model-a": 0.4151, "pca_8": 0.4149, "pca_16": 0.415, "random": 9.0}
    )
    assert best_rows(values, "lower") == ["model-a", "pca_8", "pca_16"]  # 0.415 at the 3 digits shown
    assert best_rows(values, "lower", digits=4) == ["pca_8"]
    assert best_rows(values, "higher") == ["model-a", "pca_8", "pca_16"]  # random is a reference
    assert best_rows(pd.Series({"m": float("nan"), "random": 1.0}), "lower") == []
    assert best_rows(pd.Series({"m": "x", "n": 2.0}), "higher") == ["n"]
    with pytest.raises(ValueError, match="lower"):
        best_rows(values, "smaller")


def test_robustness_kinds_in_report_order() -> None:
    assert robustness_kinds(REPORTS)[0] == "noise_m" and "clean" not in robustness_kinds(REPORTS)


def test_rare_enrichment_table_puts_each_method_and_class_in_its_cell() -> None:
    def rare(enrichment: float, u_turn: float) -> dict[str, Any]:
        return {
            "rare_enrichment": {
                "rare_classes": ["lane_change_left", "u_turn"],
                "top_share": 0.01,
                "windows": 5000,
                "k": 10,
                "enrichment": enrichment,
                "top_rate": 0.08 * enrichment,
                "base_rate": 0.08,
                "per_class": {"u_turn": {"enrichment": u_turn}, "straight": {"enrichment": 0.5}},
            }
        }

    reports = {"oracle_raw": rare(1.5, 2.0), "model-a": rare(3.0, 6.0), "random": {"minADE@5": 1.0}}
    frame = rare_enrichment_frame(reports)
    assert list(frame.index) == ["model-a", "oracle_raw"]  # models first; reports without it left out
    assert frame.at["model-a", "enrichment"] == 3.0 and frame.at["oracle_raw", "u_turn"] == 2.0
    assert frame.at["model-a", "top rate"] == 0.24 and frame.at["model-a", "straight"] == 0.5
    table = rare_enrichment_table(reports)
    assert "Rare classes lane_change_left, u_turn" in table and "1 % most unique of 5000 windows" in table
    assert "| model-a | 3.00 | 0.24 | 0.08 |" in table
    assert rare_enrichment_table({"random": {}}).startswith("_no rare-class enrichment")


def test_forecast_scores_of_history_models() -> None:
    """Issue 18: the forecast table reads ``report["forecast"]``; malformed reports give empty cells."""
    scores = {"minADE6": 0.5, "minFDE6": 1.2, "MR6": 0.2, "brier_minFDE6": 1.9, "queries": 100}
    cv = {**scores, "minFDE6": 2.4, "brier_minFDE6": 2.4}
    forecast = {
        "config": {"history_steps": 30, "k": 6},
        "methods": {"retrieval_h": scores, "knn_raw": scores, "constant_velocity": cv},
    }
    reports: dict[str, dict[str, Any]] = {
        "h": {"forecast": forecast},
        "h2": {"forecast": forecast},  # a second history model: one table
        "whole": {"minADE@5": 1.0},
        "broken": {"forecast": {"config": "nope", "methods": [1, 2]}},
    }
    frame = report.forecast_frame(reports)
    assert list(frame.index) == ["retrieval_h", "knn_raw", "constant_velocity"]
    assert frame.loc["knn_raw", "minFDE"] == 1.2 and frame.loc["knn_raw", "queries"] == 100
    table = report.forecast_scores_table(reports)
    assert "| knn_raw | 0.500 | 1.200 | 0.200 | 1.900 | 0.50 | 100 |" in table
    reports["odd"] = {
        "forecast": {"config": {"history_steps": 20, "k": 6}, "methods": {"knn_raw": {"minFDE6": "x"}}}
    }
    frame = report.forecast_frame(reports)
    assert "knn_raw (H = 20)" in frame.index and np.isnan(frame.loc["knn_raw (H = 20)", "minFDE"])
    assert report.forecast_frame({"whole": {}}).empty
    assert report.forecast_scores_table({}) == "_no forecast scores (no history model)_"


def test_cli_evaluate_prints_forecast_scores(
    history_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trajemb.cli import main

    assert main(["-q", "evaluate", "--bundle", str(history_bundle)]) == 0
    out = capsys.readouterr().out
    assert "Forecasting by retrieval" in out and "| knn_raw |" in out and "| constant_velocity |" in out
    # The definitions come from ``trajemb.analysis.report`` (the explorer shows the same).
    assert "* **minFDE6** (lower is better): " + report.FORECAST_METRICS["minFDE"][1] in out


def test_definitions_markdown_names_scores_at_k() -> None:
    text = report.definitions_markdown(report.forecast_definitions(6))
    assert text.splitlines()[0] == "* **minADE6** (lower is better): " + report.FORECAST_METRICS["minADE"][1]
    assert len(text.splitlines()) == len(report.FORECAST_METRICS)
    rare = report.definitions_markdown({"base rate": report.RARE_ENRICHMENT_METRICS["base rate"]})
    assert rare.startswith("* **base rate**: Share")  # no "better" for a column that is not a score
