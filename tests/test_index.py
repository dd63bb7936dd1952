"""Building indices: approximate recall tuned and reported, the auto kind, save/load, bad specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.core.errors import ConfigError, DataError
from trajemb.retrieval.index import (
    IndexSpec,
    build_faiss_index,
    build_search_index,
    load_faiss_index,
    save_faiss_index,
)
from trajemb.retrieval.search import recall_at_k

from conftest import clustered_vectors as clustered
from conftest import unit_vectors as unit


def test_approximate_recall_is_tuned_and_reported() -> None:
    db = clustered(20_000, 8)
    q = clustered(300, 8, seed=2)
    _, exact = build_faiss_index(db, IndexSpec(kind="flat")).search(q, 10)
    for kind in ("ivf", "hnsw"):
        index, info = build_search_index(db, IndexSpec(kind=kind, target_recall=0.95))
        _, approx = index.search(q, 10)
        assert info.kind == kind and 0.0 < info.recall_at_10 <= 1.0
        assert recall_at_k(approx, exact) > 0.9, kind
        if kind == "ivf":
            assert info.recall_at_10 >= 0.95 and 1 <= info.nprobe <= info.nlist
    _, fixed = build_search_index(db, IndexSpec(kind="ivf", nprobe=1))
    assert fixed.nprobe == 1 and fixed.recall_at_10 < 0.95  # one cell of ~560 is not enough


def test_auto_kind_switches_at_the_threshold() -> None:
    db = unit(3000, 8)
    assert build_search_index(db, IndexSpec(exact_max_rows=3000))[1].kind == "flat"
    index, info = build_search_index(db, IndexSpec(exact_max_rows=2999))
    assert info.kind == "ivf" and index.ntotal == 3000


def test_more_ivf_cells_than_rows_is_a_config_error() -> None:
    """``trajemb bundle --index-kind ivf --index-nlist 100000`` on a 351-window table ended in FAISS's
    RuntimeError traceback (k-means needs a training point per cell); now one line naming nlist (the
    CLI turns it into --index-nlist). As many cells as rows still builds."""
    db = unit(300, 8)
    with pytest.raises(ConfigError, match=r"nlist 301 is more IVF cells than the 300 rows") as caught:
        build_search_index(db, IndexSpec(kind="ivf", nlist=301))
    assert caught.value.fields == ("nlist",)
    index, info = build_search_index(db, IndexSpec(kind="ivf", nlist=300, nprobe=4))
    assert info.nlist == 300 and index.ntotal == 300


def test_save_load_keeps_results(tmp_path: Path) -> None:
    db, q = unit(500, 8), unit(5, 8, seed=3)
    index = build_faiss_index(db, IndexSpec(kind="hnsw"))
    save_faiss_index(index, tmp_path / "i.faiss")
    with pytest.raises(DataError, match="index holds 500 rows, the bundle has 501"):
        load_faiss_index(tmp_path / "i.faiss", expected_rows=501)
    loaded = load_faiss_index(tmp_path / "i.faiss", expected_dim=8)
    for a, b in zip(index.search(q, 5), loaded.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="index has dimension 8, the model embeds into 16"):
        load_faiss_index(tmp_path / "i.faiss", expected_dim=16)
    (tmp_path / "bad.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt or unreadable FAISS index"):
        load_faiss_index(tmp_path / "bad.faiss")
    with pytest.raises(DataError, match="index file not found"):
        load_faiss_index(tmp_path / "none.faiss")
