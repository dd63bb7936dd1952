"""Compare models: the same query under two models side by side, shared neighbours marked in both."""

from __future__ import annotations

import streamlit as st

from trajemb.serving.explore import search_row

import ui


def page() -> None:
    st.title("Compare models")
    bundle = ui.bundle_choice()
    if bundle is None:
        return
    names = bundle.model_names
    a = ui.model_choice(bundle, "Model A (left)", key="model-a", index=0)
    b = ui.model_choice(bundle, "Model B (right)", key="model-b", index=len(names) // 2)
    ui.neighbor_controls(bundle)
    row = ui.query_bar(bundle)
    if a == b:
        st.info(
            "Both sides show the same model; pick another one in the sidebar to compare."
            if len(names) > 1
            else "This bundle has a single model: there is nothing to compare it with."
        )
    options = ui.neighbor_options(bundle, row)
    na = ui.search_or_error(search_row, bundle, a, row, options)
    nb = ui.search_or_error(search_row, bundle, b, row, options)
    if na is None or nb is None:
        return
    shared = set(na.rows.tolist()) & set(nb.rows.tolist())
    st.caption(
        f"{len(shared)} of {options.k} neighbours are shared ('yes' in the tables, ★ in the plots). "
        "Select a row or click a trajectory to make it the query."
    )
    cols = st.columns(2)
    for col, name, result, side in ((cols[0], a, na, "a"), (cols[1], b, nb, "b")):
        with col:
            st.subheader(ui.md(name))
            m1, m2 = st.columns(2)
            m1.metric(f"minADE@{len(result)}", f"{result.min_ade_m:.2f} m")
            m2.metric(f"minFDE@{len(result)}", f"{result.min_fde_m:.2f} m")
            direction = bundle.strings("direction", result.rows.tolist())
            labels = [
                f"#{i + 1}{' ★' if r in shared else ''}" + (f" {d}" if len(result) <= 6 else "")
                for i, (r, d) in enumerate(zip(result.rows.tolist(), direction, strict=True))
            ]
            ui.overlay(bundle, result, f"cmp-{side}-overlay", labels, height=380)
            ui.neighbor_table(bundle, result, f"cmp-{side}-table", shared)
            ui.neighbor_downloads(bundle, name, result, f"cmp-{side}")


ui.run_page(page)
