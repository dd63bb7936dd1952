"""Every cache of the explorer in one place: resources (bundle, models, indices) and derived data.

Nothing is recomputed per click: a bundle opens once per path, a model (encoder, embeddings, FAISS
index, UMAP) once per (path, name), map geometry once per key.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import streamlit as st

from trajemb.bundle import Bundle, BundleModel
from trajemb.data.maps import MapGeometry
from trajemb.pipeline import build_default_bundle

BUNDLE_ENV = "TRAJEMB_BUNDLE"
CACHE_ENV = "TRAJEMB_CACHE"
REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)


def requested_bundle_path() -> str | None:
    """A bundle named on the command line (``-- --bundle PATH``) or in ``$TRAJEMB_BUNDLE``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bundle", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.bundle or os.environ.get(BUNDLE_ENV) or None


class _StatusLines(logging.Handler):
    """Shows the library's progress messages (one per stage) inside the current ``st.status``."""

    def emit(self, record: logging.LogRecord) -> None:
        st.write(f"{time.strftime('%H:%M:%S')} {record.getMessage()}")


# Not ``st.cache_resource``: a cached function replays the elements it drew, so every later session
# would show the first build's progress panel, spinning. Built once per process and cache folder.
_default_lock = threading.Lock()
_default_ready: dict[Path, str] = {}


def default_bundle_path() -> str:
    """Build (first run) or find the built-in default bundle; progress is shown while it builds."""
    cache = Path(os.environ.get(CACHE_ENV, REPO / ".cache"))
    with _default_lock:
        if cache not in _default_ready:
            _default_ready[cache] = _build_default_bundle(cache)
    return _default_ready[cache]


def _build_default_bundle(cache: Path) -> str:
    with st.status("Preparing the built-in default data (first run only: synthetic AV2 scenarios, "
                   "embeddings, indices, UMAP)…", expanded=True) as status:  # fmt: skip
        st.write(f"Cache folder: `{cache}`")
        handler = _StatusLines()
        library_log = logging.getLogger("trajemb")
        library_log.addHandler(handler)
        level = library_log.level
        library_log.setLevel(logging.INFO)
        try:
            path = build_default_bundle(cache, progress=False)
        finally:
            library_log.removeHandler(handler)
            library_log.setLevel(level)
        status.update(label="Default data ready", state="complete", expanded=False)
    return str(path)


@st.cache_resource(show_spinner="Opening bundle…", max_entries=4)
def open_bundle(path: str) -> Bundle:
    return Bundle(Path(path))


@st.cache_resource(show_spinner="Loading model, embeddings and index…", max_entries=16)
def bundle_model(path: str, name: str) -> BundleModel:
    return open_bundle(path).model(name)


@st.cache_resource(show_spinner=False, max_entries=512)
def map_geometry(path: str, map_key: str) -> MapGeometry | None:
    return open_bundle(path).map_geometry(map_key)


@st.cache_data(show_spinner=False, max_entries=4)
def city_xy(path: str) -> np.ndarray:
    """(N, T, 2) every window in the city frame (for maps and background road users)."""
    from trajemb.frames import agent_to_city

    t = open_bundle(path).table
    origin = t.meta[["origin_x_city_m", "origin_y_city_m"]].to_numpy()
    return agent_to_city(t.xy_agent.astype(np.float64), origin, t.meta["theta_rad"].to_numpy()).astype(
        np.float32
    )


@st.cache_data(show_spinner=False, max_entries=4)
def scenario_rows(path: str) -> dict[tuple[str, str], np.ndarray]:
    """(source, scenario_id) -> table rows, for drawing a scenario's other road users."""
    meta = open_bundle(path).table.meta
    return {
        k: np.asarray(v, dtype=np.int64) for k, v in meta.groupby(["source", "scenario_id"]).indices.items()
    }


@st.cache_data(show_spinner="Clustering…", max_entries=16)
def kmeans_labels(path: str, model: str, clusters: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    emb = bundle_model(path, model).embeddings
    return KMeans(n_clusters=clusters, n_init=3, random_state=0).fit_predict(emb)
