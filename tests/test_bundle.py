"""Bundles: contents, search through them, evaluation, and refusal of mismatched files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trajemb.bundle import Bundle
from trajemb.cli import main
from trajemb.errors import DataError


def test_contents_and_search(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    assert bundle.model_names == ["cosine-d8", "fft-d4"]
    n = len(bundle.table)
    for name, dim in (("cosine-d8", 8), ("fft-d4", 4)):
        m = bundle.model(name)
        assert m.embeddings.shape == (n, dim) and m.embeddings.dtype == np.float32
        assert m.umap_xy is not None and m.umap_xy.shape == (n, 2) and np.isfinite(m.umap_xy).all()
        assert m.card["similarity"] == name.split("-")[0]
    # Neighbours equal brute force over rows of other tracks.
    m = bundle.model("cosine-d8")
    row = 17
    _, rows = bundle.neighbors("cosine-d8", row, 5)
    other = np.flatnonzero(bundle.groups != bundle.groups[row])
    d2 = ((m.embeddings[other] - m.embeddings[row]) ** 2).sum(1)
    np.testing.assert_array_equal(rows, other[np.argsort(d2, kind="stable")[:5]])
    assert len(list((small_bundle / "maps").glob("*.npz"))) == bundle.table.meta["map_key"].nunique()
    assert bundle.map_geometry(bundle.table.meta["map_key"].iloc[row]) is not None


def test_reports_and_baselines(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    report = bundle.model("cosine-d8").report
    for key in ("minADE@1", "minADE@5", "minADE@10", "minFDE@10", "precision@10", "silhouette_direction",
                "encode_ms_per_window", "search_ms_per_query"):  # fmt: skip
        assert key in report and np.isfinite(report[key]), key
    assert report["minADE@10"] <= report["minADE@5"] <= report["minADE@1"]
    base = bundle.baselines()
    assert {"oracle_raw", "random", "pca_8", "pca_4", "fft_magnitudes", "untrained_encoder_8"} <= set(base)
    assert (
        base["oracle_raw"]["minADE@1"] < base["untrained_encoder_8"]["minADE@1"] < base["random"]["minADE@1"]
    )
    assert base["oracle_raw"]["minADE@1"] <= report["minADE@1"]


def test_bad_queries(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    with pytest.raises(DataError, match="window id 'nope' is not in this bundle"):
        bundle.row("nope")
    with pytest.raises(DataError, match=r"k = .* is larger than the database"):
        bundle.neighbors("cosine-d8", 0, len(bundle.table))
    with pytest.raises(DataError, match="no model 'x'"):
        bundle.model("x")


def test_mismatched_index_is_refused(small_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    # An index from the other model (another checkpoint, other dimension) swapped in.
    shutil.copyfile(copy / "models" / "fft-d4" / "index.faiss", copy / "models" / "cosine-d8" / "index.faiss")
    with pytest.raises(DataError, match=r"index\.faiss: does not match the bundle manifest"):
        Bundle(copy).model("cosine-d8")
    Bundle(copy).model("fft-d4")  # the untouched model still opens
    (copy / "models" / "fft-d4" / "embeddings.npy").unlink()
    with pytest.raises(DataError, match=r"embeddings\.npy: missing from the bundle"):
        Bundle(copy).model("fft-d4")


def test_other_table_is_refused(small_bundle: Path, synth_dir: Path, tmp_path: Path) -> None:
    from trajemb.prepare import PrepareConfig, prepare_table
    from trajemb.schema import WindowConfig

    copy = tmp_path / "b"
    shutil.copytree(small_bundle, copy)
    prepare_table(PrepareConfig(av2_dirs=(str(synth_dir),), window=WindowConfig(stride_steps=20), workers=1),
                  copy / "table.parquet", progress=False)  # fmt: skip
    with pytest.raises(DataError, match="is not the table this bundle was built from"):
        Bundle(copy)


def test_cli_search_and_evaluate(small_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = Bundle(small_bundle)
    query = bundle.table.meta["window_id"].iloc[3]
    assert (
        main(
            [
                "search",
                "--bundle",
                str(small_bundle),
                "--model",
                "fft-d4",
                "--query",
                query,
                "--k",
                "4",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == query and len(out["neighbors"]) == 4
    assert all(n["window_id"].rsplit("/", 1)[0] != query.rsplit("/", 1)[0] for n in out["neighbors"])
    assert out["neighbors"][0]["ade_m"] >= 0
    assert main(["evaluate", "--bundle", str(small_bundle)]) == 0
    table = capsys.readouterr().out
    assert "| cosine-d8 | 8 |" in table and "| oracle_raw | 120 |" in table
    assert main(["search", "--bundle", str(small_bundle), "--query", "nope"]) == 2
    assert "window id 'nope' is not in this bundle" in capsys.readouterr().err
