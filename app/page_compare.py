"""Compare models: the same query under two models, side by side, with the overlap of their neighbours."""

from __future__ import annotations

import streamlit as st

from trajemb.errors import TrajembError

import cache
import ui


def page() -> None:
    st.title("Compare models")
    path = ui.bundle_path()
    if path is None:
        return
    names = cache.open_bundle(path).model_names
    a = ui.model_select(path, "Model A", key="model-a", index=0)
    b = ui.model_select(path, "Model B", key="model-b", index=len(names) // 2)
    k = ui.k_slider()
    ui.init_state(cache.open_bundle(path).table)
    row = int(st.session_state[ui.QUERY])
    st.markdown(f"**Query** {ui.describe(path, row)} (change it on the Explore page)")
    try:
        ta, tb = ui.neighbor_frame(path, a, row, k), ui.neighbor_frame(path, b, row, k)
    except TrajembError as exc:
        st.error(str(exc))
        return
    if a == b:
        st.info("Both sides show the same model; pick another one in the sidebar to compare."
                if len(names) > 1 else "This bundle has a single model: there is nothing to compare it with.")  # fmt: skip
    overlap = len(set(ta["row"]) & set(tb["row"]))
    st.metric("Neighbours in common", f"{overlap} of {k}")
    for side, name, table in (("a", a, ta), ("b", b, tb)):
        report = cache.bundle_model(path, name).report
        st.subheader(f"{name}: minADE@{k} {table['ADE (m)'].min():.2f} m, minFDE@{k} {table['FDE (m)'].min():.2f} m "
                     f"(bundle-wide minADE@10 {report['minADE@10']:.2f} m)")  # fmt: skip
        ui.show_neighbors(path, row, table, maps=3, key=f"cmp-{side}")


page()
