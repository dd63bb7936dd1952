"""Evaluation: every model's retrieval report beside the baselines, as tables and plots."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from trajemb.viz import PALETTE, metric_vs_k_figure

import cache
import ui


def page() -> None:
    st.title("Evaluation")
    path = ui.bundle_path()
    if path is None:
        return
    bundle = cache.open_bundle(path)
    reports = {name: cache.bundle_model(path, name).report for name in bundle.model_names}
    baselines = bundle.baselines()
    st.caption(
        "Query-vs-neighbour minADE@k / minFDE@k (k nearest by embedding distance, the query's own track "
        f"excluded), on {bundle.manifest['config']['evaluation']['num_queries']} sampled queries among "
        f"{len(bundle.table)} windows. Oracle: exact kNN on raw trajectories (flattened Euclidean). "
        "mirror_confusion@10: share of a left (lane-change-left) query's neighbours that turn right "
        "(change right), and vice versa; FFT magnitudes cannot tell mirror images apart."
    )
    frame = pd.DataFrame({**reports, **baselines}).T
    wanted = ("dim", "minADE@1", "minADE@5", "minADE@10", "minFDE@1", "minFDE@5", "minFDE@10", "precision@10",
              "mirror_confusion@10", "silhouette_direction", "encode_ms_per_window", "search_ms_per_query")  # fmt: skip
    cols = [c for c in wanted if c in frame]
    st.dataframe(frame[cols].astype(float).round(3), key="eval-table")
    c1, c2 = st.columns(2)
    c1.plotly_chart(metric_vs_k_figure({**reports, **baselines}, "minADE"), key="ade-k")
    c2.plotly_chart(metric_vs_k_figure({**reports, **baselines}, "minFDE"), key="fde-k")
    fig = go.Figure()
    for i, sim in enumerate(sorted({bundle.manifest["models"][n].get("similarity") or "?" for n in reports})):
        names = [n for n in reports if (bundle.manifest["models"][n].get("similarity") or "?") == sim]
        names.sort(key=lambda n: reports[n]["dim"])
        fig.add_trace(go.Scatter(x=[reports[n]["dim"] for n in names], y=[reports[n]["minADE@10"] for n in names],
                                 mode="lines+markers", name=sim, line={"color": PALETTE[i]}))  # fmt: skip
    if "oracle_raw" in baselines:
        fig.add_hline(y=baselines["oracle_raw"]["minADE@10"], line_dash="dot", annotation_text="oracle")
    fig.update_layout(title="minADE@10 against embedding dimension D, by mining similarity", height=380,
                      plot_bgcolor="white", showlegend=True)  # fmt: skip
    fig.update_xaxes(title_text="D", type="log", tickvals=[4, 8, 16, 32, 64])
    fig.update_yaxes(title_text="minADE@10 (m)")
    st.plotly_chart(fig, key="ade-d")


page()
