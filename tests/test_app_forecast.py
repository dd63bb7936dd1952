"""The explorer's Forecast page and the forecast and rare-behaviour tables of the Evaluation page (issues 18
and 17), headless with Streamlit's AppTest: what is drawn and scored is the library's forecast of the
query, scores are av2's. (A click on a future or a source window is driven in Chromium by
``test_app_browser.py``.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from av2.datasets.motion_forecasting.eval.metrics import compute_ade, compute_brier_fde, compute_fde
from streamlit.testing.v1 import AppTest

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.forecast import (
    CONSTANT_ACCELERATION,
    CONSTANT_VELOCITY,
    KNN_RAW,
    ForecastConfig,
    forecast_row,
    forecast_window,
)
from trajemb.analysis.report import forecast_frame, rare_enrichment_frame
from trajemb.data.query import parse_track, query_window

from conftest import REPO_ROOT

APP = str(REPO_ROOT / "app" / "streamlit_app.py")
PAGE = "page_forecast.py"


def start(bundle: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, str] | None = None) -> AppTest:
    monkeypatch.setenv("TRAJEMB_BUNDLE", str(bundle))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params or {})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def on_forecast_page(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    at = start(bundle, monkeypatch)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def query_row(at: AppTest, bundle: Bundle) -> int:
    line = next(t.value for t in at.text if t.value.startswith("Query: "))
    return bundle.find_row(line.removeprefix("Query: ").split("  ·  ")[0])


def array(value: Any) -> np.ndarray:
    """A plotly JSON array (plain, or base64 ``bdata``)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=np.float64)


def chart(at: AppTest) -> list[dict[str, Any]]:
    """Traces of the forecast figure."""
    (spec,) = [c.proto.spec for c in at.get("plotly_chart")]
    traces: list[dict[str, Any]] = json.loads(spec)["data"]
    return traces


def drawn_lines(at: AppTest) -> dict[str, np.ndarray]:
    """Name -> (P, 2) points of every named line of the forecast figure."""
    return {
        t["name"]: np.column_stack([array(t["x"]), array(t["y"])])
        for t in chart(at)
        if t.get("mode") == "lines" and t.get("name")
    }


def scores_frame(at: AppTest) -> pd.DataFrame:
    (frame,) = [d.value for d in at.dataframe if "minFDE6" in d.value.columns]
    return frame


METHODS = (KNN_RAW, CONSTANT_VELOCITY, CONSTANT_ACCELERATION)


def test_forecast_page_draws_and_scores_the_librarys_forecast(
    forecast_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = on_forecast_page(forecast_bundle, monkeypatch)
    bundle = Bundle(forecast_bundle)
    (model,) = bundle.model_names
    row = query_row(at, bundle)
    methods = [f"retrieval_{model}", *METHODS]
    expected = forecast_row(bundle, row, ForecastConfig(), methods)
    modes = expected.methods[f"retrieval_{model}"]
    assert len(modes.rows) == 6
    lines = drawn_lines(at)
    last = np.round(expected.history_xy_city[-1:], 2)
    # The futures drawn are the library's, in the city frame, from the history's last point.
    for i, (xy, p) in enumerate(zip(modes.xy_city, modes.probability, strict=True)):
        np.testing.assert_allclose(
            lines[f"#{i + 1} p {p:.2f}"], np.concatenate([last, np.round(xy, 2)]), atol=0.011
        )
    assert expected.truth_xy_city is not None
    np.testing.assert_allclose(lines["true future"][1:], expected.truth_xy_city, atol=0.011)
    np.testing.assert_allclose(lines["history"], expected.history_xy_city, atol=0.011)
    np.testing.assert_allclose(
        lines["constant velocity"][1:], expected.methods[CONSTANT_VELOCITY].xy_city[0], atol=0.011
    )
    assert "constant acceleration" in lines
    # A click on a future picks the bank window it came from: its points carry that row.
    clickable = {int(v) for t in chart(at) if "customdata" in t for v in array(t["customdata"])}
    assert clickable == set(modes.rows.tolist())
    assert any(t.get("fill") == "toself" for t in chart(at))  # drawn on the query's map
    # The scores are av2's, of the futures drawn.
    truth = expected.truth_xy_agent
    assert truth is not None
    fde = compute_fde(modes.xy_agent, truth)
    best = int(np.argmin(fde))
    frame = scores_frame(at)
    retrieval = frame.loc[f"retrieval_{model}"]
    assert retrieval["minFDE6"] == pytest.approx(fde[best])
    assert retrieval["minADE6"] == pytest.approx(compute_ade(modes.xy_agent[best : best + 1], truth)[0])
    assert retrieval["MR6"] == float(fde[best] > 2.0)
    brier = compute_brier_fde(modes.xy_agent[best : best + 1], truth, modes.probability[best : best + 1])[0]
    assert retrieval["brier_minFDE6"] == pytest.approx(brier)
    cv = expected.methods[CONSTANT_VELOCITY].xy_agent
    assert frame.loc[CONSTANT_VELOCITY, "minFDE6"] == pytest.approx(compute_fde(cv, truth)[0])
    assert set(frame.index) == set(methods)
    # The source table: the bank windows of the futures, most probable first, none of the query's scenario.
    (sources,) = [d.value for d in at.dataframe if "probability" in d.value.columns]
    assert sources["window id"].tolist() == bundle.strings("window_id", modes.rows.tolist())
    assert sources["probability"].tolist() == pytest.approx(np.round(modes.probability, 3).tolist())
    assert (bundle.scenario_groups[modes.rows] != bundle.scenario_groups[row]).all()
    # ... and downloads as the library's table of those windows, with their probabilities.
    name, make = at.session_state["_downloads"]["forecast-download-parquet"]
    assert name == f"trajemb-forecast-sources-{model}-k6.parquet"
    table = pq.read_table(pa.BufferReader(make())).to_pandas()
    assert table["window_id"].tolist() == bundle.strings("window_id", modes.rows.tolist())
    np.testing.assert_allclose(table["probability"], modes.probability, rtol=1e-6)


def test_forecast_controls_live_in_the_url_and_keep_the_query(
    forecast_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = on_forecast_page(forecast_bundle, monkeypatch)
    bundle = Bundle(forecast_bundle)
    row = query_row(at, bundle)
    at.sidebar.slider(key="forecast-k").set_value(3).run()
    at.sidebar.selectbox(key="alignment").set_value("last_pose").run()
    at.sidebar.selectbox(key="rerank").set_value("0").run()
    assert not at.exception and query_row(at, bundle) == row
    assert at.query_params["fk"] == "3" and at.query_params["align"] == "last_pose"
    assert at.query_params["rerank"] == "0"
    (model,) = bundle.model_names
    config = ForecastConfig(k=3, alignment="last_pose", rerank=0)
    modes = forecast_row(bundle, row, config, [f"retrieval_{model}"]).methods[f"retrieval_{model}"]
    lines = drawn_lines(at)
    futures = [name for name in lines if name.startswith("#")]
    assert futures == [f"#{i + 1} p {p:.2f}" for i, p in enumerate(modes.probability)]
    np.testing.assert_allclose(lines[futures[0]][1:], modes.xy_city[0], atol=0.011)
    # A link with these settings opens the page with them.
    again = start(forecast_bundle, monkeypatch, {"fk": "3", "align": "last_pose", "rerank": "0"})
    again.switch_page(PAGE).run()
    assert again.sidebar.slider(key="forecast-k").value == 3
    assert again.sidebar.selectbox(key="alignment").value == "last_pose"


def test_forecast_of_a_typed_history(forecast_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = on_forecast_page(forecast_bundle, monkeypatch)
    at.segmented_control(key="forecast-query").set_value("Your own history").run()
    assert not at.exception and not at.error
    text = "x, y\n0, 0\n10, 0\n20, 1\n28, 4"
    at.text_area(key="points").set_value(text).run()
    bundle = Bundle(forecast_bundle)
    (model,) = bundle.model_names
    points, times = parse_track(text)
    history = query_window(points, 30, times, None).xy_agent
    expected = forecast_window(bundle, history, methods=[f"retrieval_{model}", *METHODS])
    modes = expected.methods[f"retrieval_{model}"]
    lines = drawn_lines(at)
    np.testing.assert_allclose(lines["history"], history, atol=0.011)  # the agent frame: no map
    np.testing.assert_allclose(lines[f"#1 p {modes.probability[0]:.2f}"][1:], modes.xy_agent[0], atol=0.011)
    assert "true future" not in lines
    assert any("nothing to score" in c.value for c in at.caption)
    at.text_area(key="points").set_value("x, y\n1, 1").run()  # too few points: one line, no traceback
    assert not at.exception and "Cannot use these points" in at.error[0].value


def test_forecast_page_without_a_history_model(small_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = on_forecast_page(small_bundle, monkeypatch)
    (info,) = at.info
    assert info.value.startswith("This bundle has no history model, so it cannot forecast")
    assert "checkpoints/history-cosine-d8" in info.value
    assert not at.get("plotly_chart")


def test_evaluation_shows_forecast_and_rare_enrichment_tables(
    history_bundle: Path, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = start(history_bundle, monkeypatch)
    at.switch_page("page_evaluation.py").run()
    assert not at.exception and not at.error
    bundle = Bundle(history_bundle)
    reports = {n: r for n in bundle.model_names if isinstance(r := bundle.report(n), dict)}
    expected = forecast_frame(reports)
    (table,) = [d.value for d in at.dataframe if "brier_minFDE6" in d.value.columns]
    assert list(table.index) == list(expected.index)
    np.testing.assert_allclose(table["minFDE6"].to_numpy(float), expected["minFDE"].to_numpy(float))
    np.testing.assert_allclose(table["MR6"].to_numpy(float), expected["MR"].to_numpy(float))
    assert any("**minFDE6** (lower is better)" in m.value for m in at.markdown)

    at = start(small_bundle, monkeypatch)
    at.switch_page("page_evaluation.py").run()
    assert not at.exception and not at.error
    bundle = Bundle(small_bundle)
    ranked = {n: r for n in bundle.model_names if isinstance(r := bundle.report(n), dict)}
    ranked.update(bundle.baselines())
    expected = rare_enrichment_frame(ranked)
    assert not expected.empty
    (table,) = [d.value for d in at.dataframe if "enrichment" in d.value.columns]
    assert list(table.index) == list(expected.index)
    np.testing.assert_allclose(table["enrichment"].to_numpy(float), expected["enrichment"].to_numpy(float))
    assert any("Rare classes" in c.value for c in at.caption)
    # No history model here: the forecast section says so in one line.
    assert any("no history model, so no forecast scores" in c.value for c in at.caption)


def test_forecast_of_the_sketched_path(forecast_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: a sketched history works as well: the path drawn on Sketch (here from a link) is made
    into the history by ``trajemb.analysis.sketch`` and forecast from the bank."""
    from trajemb.analysis.sketch import SketchConfig, sketch_window

    drawn = "0,0;20,0;35,3;45,12"
    at = start(forecast_bundle, monkeypatch, {"sketch": drawn, "speed": "6"})
    at.switch_page(PAGE).run()
    at.segmented_control(key="forecast-query").set_value("The path drawn on Sketch").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    bundle = Bundle(forecast_bundle)
    (model,) = bundle.model_names
    points = np.array([[float(v) for v in p.split(",")] for p in drawn.split(";")])
    history = sketch_window(points, SketchConfig(30, 6.0)).xy_agent
    expected = forecast_window(bundle, history, methods=[f"retrieval_{model}", *METHODS])
    modes = expected.methods[f"retrieval_{model}"]
    lines = drawn_lines(at)
    np.testing.assert_allclose(lines["history"], history, atol=0.011)
    np.testing.assert_allclose(lines[f"#1 p {modes.probability[0]:.2f}"][1:], modes.xy_agent[0], atol=0.011)
    # Nothing drawn: one line that says where to draw.
    empty = start(forecast_bundle, monkeypatch)
    empty.switch_page(PAGE).run()
    empty.segmented_control(key="forecast-query").set_value("The path drawn on Sketch").run()
    assert not empty.exception and any("draw a path on the Sketch page" in i.value for i in empty.info)
