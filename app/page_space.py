"""Embedding space: UMAP coloured by any label or k-means cluster; selections become a gallery."""

from __future__ import annotations

import numpy as np
import streamlit as st

from trajemb.viz import agent_frame_figure, embedding_scatter

import cache
import ui

COLOR_BY = ("direction", "object_type", "speed_bin", "source", "city", "category", "k-means cluster")


def page() -> None:
    st.title("Embedding space")
    path = ui.bundle_path()
    if path is None:
        return
    model = ui.model_select(path)
    bundle = cache.open_bundle(path)
    m = cache.bundle_model(path, model)
    if m.umap_xy is None:
        st.info("This bundle has no UMAP projection (built with --no-umap).")
        return
    ui.init_state(bundle.table)
    c1, c2 = st.columns([2, 1])
    color_by = c1.selectbox("Colour by", COLOR_BY, key="color-by")
    clusters = c2.slider("k-means clusters", 2, 20, 8, key="clusters")
    if color_by == "k-means cluster":
        labels = np.char.add("cluster ", cache.kmeans_labels(path, model, clusters).astype(str))
    else:
        labels = bundle.table.meta[color_by].to_numpy(dtype=str)
    st.caption(f"{len(labels)} windows, {m.embeddings.shape[1]}-D embeddings of `{model}` projected with UMAP. "
               "Draw a box or lasso to see the selected trajectories.")  # fmt: skip
    fig = embedding_scatter(m.umap_xy, labels, color_by, query=st.session_state[ui.QUERY])
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key="space-scatter")
    rows = ui.selected_rows(event)
    xy = bundle.table.xy_agent
    if rows:
        st.subheader(f"Selection: {len(rows)} windows")
        shown = np.random.default_rng(0).choice(rows, size=min(60, len(rows)), replace=False)
        fig = agent_frame_figure(None, [xy[r] for r in shown], [str(labels[r]) for r in shown],
                                 title=f"{len(shown)} of the selected trajectories (agent frame)")  # fmt: skip
        fig.update_layout(showlegend=False)
        st.plotly_chart(fig, key="gallery")
        st.dataframe(bundle.table.meta.iloc[rows][["window_id", "direction", "object_type", "speed_bin"]].head(500),
                     hide_index=True)  # fmt: skip
    st.subheader("Cluster prototypes")
    cluster = cache.kmeans_labels(path, model, clusters)
    protos, names = [], []
    for c in range(clusters):
        members = np.flatnonzero(cluster == c)
        centre = m.embeddings[members].mean(axis=0)
        medoid = members[np.argmin(((m.embeddings[members] - centre) ** 2).sum(axis=1))]
        protos.append(xy[medoid])
        names.append(f"cluster {c} ({len(members)}): {bundle.table.meta['direction'].iloc[medoid]}")
    st.plotly_chart(agent_frame_figure(None, protos, names, title="Medoid trajectory of each k-means cluster"),
                    key="prototypes")  # fmt: skip


page()
