"""trajemb explorer: pick a query trajectory, see its nearest neighbours on the map, explore the embedding space.

Run: ``streamlit run app/streamlit_app.py`` (built-in default data), ``... -- --bundle PATH`` (or
``TRAJEMB_BUNDLE=PATH``) for a bundle of yours, ``... -- --bundle-root DIR`` (repeatable, or
``TRAJEMB_BUNDLE_ROOTS``) to serve only the bundles inside those folders, without a free path box.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:  # the pages import the shared modules beside this file
    sys.path.insert(0, str(APP_DIR))

from ast_lock import serialize_ast_parse  # noqa: E402 (needs the path above)

serialize_ast_parse()  # before any page starts a thread that imports torch beside the page parses

st.set_page_config(
    page_title="trajemb explorer", page_icon="🛣️", layout="wide"
)  # an emoji: no icon font fetched

pages = [
    st.Page(APP_DIR / "page_explore.py", title="Explore", icon=":material/travel_explore:", default=True),
    st.Page(
        APP_DIR / "page_space.py", title="Embedding space", icon=":material/scatter_plot:", url_path="space"
    ),
    st.Page(APP_DIR / "page_rare.py", title="Rare", icon=":material/diamond:", url_path="rare"),
    st.Page(
        APP_DIR / "page_duplicates.py",
        title="Duplicates",
        icon=":material/content_copy:",
        url_path="duplicates",
    ),
    st.Page(
        APP_DIR / "page_compare.py", title="Compare models", icon=":material/compare:", url_path="compare"
    ),
    st.Page(
        APP_DIR / "page_evaluation.py",
        title="Evaluation",
        icon=":material/monitoring:",
        url_path="evaluation",
    ),
    st.Page(APP_DIR / "page_query.py", title="Your own query", icon=":material/edit:", url_path="query"),
    st.Page(APP_DIR / "page_forecast.py", title="Forecast", icon=":material/timeline:", url_path="forecast"),
    st.Page(APP_DIR / "page_sketch.py", title="Sketch a query", icon=":material/draw:", url_path="sketch"),
]
# Our own page links: each carries the current settings and query, so that a page switch is one entry
# in the browser's history with the address complete (Streamlit's own menu drops the parameters, and
# writing them back would add a second entry).
current = st.navigation(pages, position="hidden")
menu = st.sidebar.container()


def draw_menu() -> None:
    with menu:
        for page in pages:
            st.page_link(page, query_params=st.session_state.get("_url_params") or {}, width="stretch")
        st.divider()


try:
    current.run()
except Exception:  # a bug (expected errors are shown by ui.run_page): the menu still leads elsewhere
    draw_menu()
    raise
draw_menu()
