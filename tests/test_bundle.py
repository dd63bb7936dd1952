"""Bundles: contents, search through them, evaluation, completion in place, and refusal of every file
that does not match the manifest or would leave the bundle."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trajemb.analysis.bundle import BUNDLE_FORMAT, MANIFEST, XY_FILE, Bundle, model_file
from trajemb.analysis.evaluate import EvalConfig
from trajemb.cli import main
from trajemb.core.errors import DataError
from trajemb.data.store import read_table
from trajemb.retrieval.projection import ProjectionConfig
from trajemb.serving.bundle_build import BundleConfig, build_bundle, check_bundle_output, complete_bundle
from trajemb.serving.explore import NeighborOptions, search_row


def test_contents_match_the_table(small_bundle: Path, synth_table: Path) -> None:
    bundle = Bundle(small_bundle)
    table = read_table(synth_table)
    assert bundle.model_names == ["cosine-d8", "fft-d4"]
    assert bundle.num_windows == len(table) and bundle.num_steps == table.num_steps
    np.testing.assert_array_equal(bundle.xy.all(), table.xy_agent)
    assert bundle.strings("window_id", [0, 5]) == table.meta["window_id"].iloc[[0, 5]].tolist()
    pairs = np.unique(np.stack([bundle.groups, table.track_groups()]), axis=1)
    assert (
        pairs.shape[1] == len(np.unique(bundle.groups)) == len(np.unique(table.track_groups()))
    )  # same partition
    for name, dim in (("cosine-d8", 8), ("fft-d4", 4)):
        emb = bundle.embeddings(name).all()
        assert emb.shape == (len(table), dim) and emb.dtype == np.float32
        xy = bundle.projection(name)
        assert xy is not None and xy.shape == (len(table), 2) and np.isfinite(xy).all()
        assert bundle.encoder(name)[1]["similarity"] == name.split("-")[0]
        assert bundle.model_entry(name)["index"]["kind"] == "flat"
    keys = set(table.meta["map_key"])
    assert len(list((small_bundle / "maps").glob("*.npz"))) == len(keys)
    assert bundle.map_geometry(sorted(keys)[0]) is not None
    assert bundle.map_geometry("../../etc/passwd") is None


def brute_force(emb: np.ndarray, row: int, allowed: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    d2 = ((emb[rows] - emb[row]) ** 2).sum(1)
    return rows[np.argsort(d2, kind="stable")[:k]]


def test_search_with_options_equals_brute_force(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    emb = np.asarray(bundle.embeddings("cosine-d8").all())
    groups, scen = bundle.groups, bundle.scenario_groups
    types = np.asarray(bundle.meta["object_type"].astype(str))
    row = 17
    nb = search_row(bundle, "cosine-d8", row, NeighborOptions(k=5, one_per_track=False))
    np.testing.assert_array_equal(nb.rows, brute_force(emb, row, groups != groups[row], 5))
    allowed = (groups != groups[row]) & (scen != scen[row]) & (types == types[row])
    opts = NeighborOptions(k=5, one_per_track=False, exclude_same_scenario=True, object_types=(types[row],))
    np.testing.assert_array_equal(
        search_row(bundle, "cosine-d8", row, opts).rows, brute_force(emb, row, allowed, 5)
    )
    nb = search_row(bundle, "cosine-d8", row, NeighborOptions(k=8, one_per_track=True))
    assert len(set(groups[nb.rows].tolist())) == len(nb) == 8  # one window per track
    # The nearest window of each track, in order: the first 8 distinct tracks of the exact ranking.
    order = brute_force(emb, row, groups != groups[row], len(emb))
    first_of_track = [r for i, r in enumerate(order) if groups[r] not in set(groups[order[:i]])][:8]
    np.testing.assert_array_equal(nb.rows, first_of_track)
    assert np.all(np.diff(nb.distance) >= 0) and (nb.ade_m >= 0).all()


def test_reports_and_baselines(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    report = bundle.report("cosine-d8")
    assert report is not None
    for key in (
        "minADE@1",
        "minADE@5",
        "minADE@10",
        "minFDE@10",
        "precision@10",
        "silhouette_direction",
        "encode_ms_per_window",
        "search_ms_per_query",
    ):
        assert key in report and np.isfinite(report[key]), key
    assert report["minADE@10"] <= report["minADE@5"] <= report["minADE@1"]
    assert report["num_windows"] == report["corpus_windows"] == bundle.num_windows
    assert report["index"]["recall_at_10"] == 1.0
    base = bundle.baselines()
    assert {"oracle_raw", "random", "pca_8", "pca_4", "fft_magnitudes", "untrained_encoder_8"} <= set(base)
    assert (
        base["oracle_raw"]["minADE@1"] < base["untrained_encoder_8"]["minADE@1"] < base["random"]["minADE@1"]
    )
    assert base["oracle_raw"]["minADE@1"] <= report["minADE@1"]


def test_bad_queries(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    with pytest.raises(DataError, match="window id 'nope' is not in this bundle"):
        bundle.find_row("nope")
    with pytest.raises(DataError, match="no model 'x'"):
        bundle.embeddings("x")
    wid = bundle.strings("window_id", [42])[0]
    source, scenario, track, _ = wid.split("/")
    assert bundle.find_row(wid) == 42
    first = bundle.find_row(f"{scenario}/{track}")
    assert bundle.strings("window_id", [first])[0].startswith(f"{source}/{scenario}/{track}/")


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    return copy


def test_swapped_or_modified_files_are_refused(small_bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(small_bundle, tmp_path)
    # An index from the other model (another checkpoint, other dimension) swapped in.
    shutil.copyfile(copy / "models" / "fft-d4" / "index.faiss", copy / "models" / "cosine-d8" / "index.faiss")
    with pytest.raises(DataError, match=r"index\.faiss: .*manifest"):
        Bundle(copy).index("cosine-d8")
    Bundle(copy).index("fft-d4")  # the untouched model still opens
    (copy / "models" / "fft-d4" / "embeddings.npy").unlink()
    with pytest.raises(DataError, match=r"embeddings\.npy: missing from the bundle"):
        Bundle(copy).embeddings("fft-d4")


def test_reordered_geometry_is_refused_when_read(small_bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(small_bundle, tmp_path)
    xy = np.load(copy / XY_FILE)
    np.save(copy / XY_FILE, xy[::-1].copy())  # same size, same values, other order
    bundle = Bundle(copy)
    with pytest.raises(DataError, match="does not match the bundle manifest"):
        bundle.xy.rows([0])
    with pytest.raises(DataError, match="does not match the bundle manifest"):
        bundle.verify_all()


def test_manifest_cannot_point_outside(small_bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(small_bundle, tmp_path)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["models"]["../../x"] = manifest["models"].pop("fft-d4")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="not a plain name"):
        Bundle(copy)
    manifest = json.loads((small_bundle / MANIFEST).read_text())
    manifest["files"]["/etc/passwd"] = manifest["files"][XY_FILE]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="outside the bundle"):
        Bundle(copy)
    for bad in (
        "[1, 2]",
        "{",
        json.dumps({**manifest, "format": "trajemb-bundle/1"}),
        json.dumps({**manifest, "num_windows": -3}),
    ):
        (copy / MANIFEST).write_text(bad)
        with pytest.raises(DataError):
            Bundle(copy)


def test_output_folder_safety(small_bundle: Path, synth_table: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="non-empty folder that trajemb did not write as a bundle"):
        check_bundle_output(foreign, [synth_table])
    with pytest.raises(DataError, match="contains the input"):
        check_bundle_output(synth_table.parent, [synth_table])
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="it is a file, not a folder"):
        check_bundle_output(tmp_path / "file", [synth_table])
    check_bundle_output(small_bundle, [synth_table])  # an earlier bundle may be replaced
    (tmp_path / "empty").mkdir()
    check_bundle_output(tmp_path / "empty", [synth_table])
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_unsafe_card_name_is_refused(synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints[1], ckpt)
    card = json.loads((ckpt / "card.json").read_text())
    for name in ("../../../escape", "/abs", "a/b", ".hidden"):
        (ckpt / "card.json").write_text(json.dumps({**card, "name": name}))
        with pytest.raises(DataError, match="not a plain name"):
            build_bundle(
                synth_table,
                [ckpt],
                tmp_path / "out",
                config=BundleConfig(device="cpu", evaluate=False, projection=ProjectionConfig(method="none")),
                progress=False,
            )
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()


def test_history_model_needs_longer_windows(history_checkpoint: Path, tmp_path: Path) -> None:
    """Issue 18: a history model of 30 steps on 30-step windows is refused before any work."""
    from trajemb.data.schema import WindowColumns
    from trajemb.data.store import write_table

    from conftest import analytic_windows

    w = analytic_windows((5.0, 6.0), 0.0, "h")
    short = WindowColumns(**{**vars(w), "xy_agent": w.xy_agent[:, :30]})
    write_table(short, tmp_path / "t30.parquet", {"window_config": None})
    with pytest.raises(DataError, match="needs windows longer than that; this table's have 30"):
        build_bundle(tmp_path / "t30.parquet", [history_checkpoint], tmp_path / "b", None, BundleConfig())
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_staged_build_then_complete(synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    staged = BundleConfig(
        evaluation=EvalConfig(num_queries=50),
        projection=ProjectionConfig(method="none"),
        evaluate=False,
        device="cpu",
    )
    manifest = build_bundle(synth_table, tiny_checkpoints[:1], out, config=staged, progress=False)
    assert manifest["format"] == BUNDLE_FORMAT
    bundle = Bundle(out)
    assert (
        bundle.projection("cosine-d8") is None
        and bundle.report("cosine-d8") is None
        and not bundle.baselines()
    )
    nb = search_row(bundle, "cosine-d8", 3, NeighborOptions(k=4))
    assert len(nb) == 4  # searchable before completion
    full = BundleConfig(evaluation=EvalConfig(num_queries=50), device="cpu")
    assert complete_bundle(out, full, progress=False)
    assert not complete_bundle(out, full, progress=False)  # nothing left to add
    done = Bundle(out)
    assert done.projection("cosine-d8") is not None and done.report("cosine-d8") is not None
    assert "oracle_raw" in done.baselines()
    done.verify_all()
    assert model_file("cosine-d8", "projection.npy") in done.manifest["files"]


def test_evaluation_corpus_is_capped(synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path) -> None:
    config = BundleConfig(
        evaluation=EvalConfig(num_queries=40, max_corpus=300, silhouette_sample=100),
        projection=ProjectionConfig(method="none"),
        device="cpu",
    )
    build_bundle(synth_table, tiny_checkpoints[:1], tmp_path / "b", config=config, progress=False)
    report = Bundle(tmp_path / "b").report("cosine-d8")
    assert report is not None and report["corpus_windows"] == 300 and report["num_queries"] == 40
    assert report["num_windows"] > 300


def test_cli_search_evaluate_complete(small_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = Bundle(small_bundle)
    query = bundle.strings("window_id", [3])[0]
    code = main(
        ["search", "--bundle", str(small_bundle), "--model", "fft-d4", "--query", query, "--k", "4", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == query and len(out["neighbors"]) == 4
    tracks = {n["window_id"].rsplit("/", 1)[0] for n in out["neighbors"]}
    assert len(tracks) == 4 and query.rsplit("/", 1)[0] not in tracks  # one per track, not the query's
    assert all(n["object_type"] == bundle.strings("object_type", [3])[0] for n in out["neighbors"])
    assert out["neighbors"][0]["ade_m"] >= 0
    assert (
        main(
            [
                "search",
                "--bundle",
                str(small_bundle),
                "--query",
                query,
                "--k",
                "3",
                "--object-types",
                "any",
                "--all-windows-of-track",
                "--exclude-scenario",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "types any" in text and query.split("/")[1] not in text.split("\n", 1)[1]
    assert main(["evaluate", "--bundle", str(small_bundle)]) == 0
    table = capsys.readouterr().out
    assert "| cosine-d8 | 8 |" in table and "| oracle_raw | 120 |" in table
    assert main(["search", "--bundle", str(small_bundle), "--query", "nope"]) == 2
    assert "window id 'nope' is not in this bundle" in capsys.readouterr().err
    assert main(["complete", "--bundle", str(small_bundle)]) == 0
    assert "already complete" in capsys.readouterr().out


# -- files tied to each other (issue 23) -----------------------------------------------------------------
def redigest(bundle: Path, keys: list[str], keep_ties: bool = True) -> None:
    """Rewrite the manifest's digests of ``keys`` to match the files, as a tool "repairing" a bundle
    would: with ``keep_ties`` it keeps the entries' other fields, else it writes plain digests."""
    from trajemb.core.integrity import digest_file

    manifest = json.loads((bundle / MANIFEST).read_text())
    for key in keys:
        fresh = digest_file(bundle / key).to_dict()
        manifest["files"][key] = {**manifest["files"][key], **fresh} if keep_ties else fresh
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def twin_bundle(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two models of the same dimension (the second one's weights perturbed), no layout or evaluation."""
    import torch

    from trajemb.training.checkpoint import load_checkpoint, read_card, save_checkpoint

    root = tmp_path_factory.mktemp("twins")
    model, _ = load_checkpoint(tiny_checkpoints[0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(model, root / "other", {**read_card(tiny_checkpoints[0]), "name": "other"})
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(synth_table, [tiny_checkpoints[0], root / "other"], root / "b", None, config, progress=False)
    return root / "b"


def test_rows_reordered_with_their_digests_rewritten_are_refused(small_bundle: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    copy = copy_of(small_bundle, tmp_path)
    np.save(copy / XY_FILE, np.load(copy / XY_FILE)[::-1].copy())
    meta = pq.read_table(copy / "windows" / "meta.parquet")
    pq.write_table(meta.take(np.arange(len(meta))[::-1].copy()), copy / "windows" / "meta.parquet")
    redigest(copy, [XY_FILE, "windows/meta.parquet"])
    bundle = Bundle(copy)  # every digest matches its file ...
    with pytest.raises(DataError, match="window ids are not the ones the bundle's files were written for"):
        search_row(bundle, "cosine-d8", 0)  # ... but the rows are not those the index was built on
    with pytest.raises(DataError, match="rebuild it with `trajemb bundle`"):
        Bundle(copy).verify_all()


def test_embeddings_of_two_models_swapped_are_refused(twin_bundle: Path, tmp_path: Path) -> None:
    a, b = (f"models/{name}" for name in Bundle(twin_bundle).model_names)
    keys = [f"{m}/{f}" for m in (a, b) for f in ("embeddings.npy", "index.faiss")]

    def swapped() -> Path:
        copy = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        shutil.copytree(twin_bundle, copy)
        for f in ("embeddings.npy", "index.faiss"):
            (copy / a / f).rename(copy / "tmp")
            (copy / b / f).rename(copy / a / f)
            (copy / "tmp").rename(copy / b / f)
        return copy

    plain = swapped()  # digests rewritten from scratch
    redigest(plain, keys, keep_ties=False)
    with pytest.raises(DataError, match="is not tied to this bundle's"):
        Bundle(plain)
    moved = swapped()  # whole manifest entries swapped with the files
    manifest = json.loads((moved / MANIFEST).read_text())
    for f in ("embeddings.npy", "index.faiss"):
        files = manifest["files"]
        files[f"{a}/{f}"], files[f"{b}/{f}"] = files[f"{b}/{f}"], files[f"{a}/{f}"]
    (moved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="computed with other weights than model"):
        Bundle(moved)
    forged = swapped()  # every tie forged too: the content itself gives it away
    redigest(forged, keys)
    with pytest.raises(DataError, match="are not what its checkpoint computes"):
        Bundle(forged).verify_all()
    Bundle(twin_bundle).verify_all()  # the original passes every check


def test_an_index_of_other_embeddings_is_refused_when_loaded(twin_bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(twin_bundle, tmp_path)
    a, b = Bundle(copy).model_names
    shutil.copyfile(copy / "models" / b / "index.faiss", copy / "models" / a / "index.faiss")
    redigest(copy, [f"models/{a}/index.faiss"])
    with pytest.raises(DataError, match=f"the index of model {a} does not hold its embeddings"):
        Bundle(copy).index(a)


def test_bundles_before_the_ties_still_open(
    synth_table: Path, tiny_checkpoints: list[Path], tmp_path: Path
) -> None:
    """A format-2 bundle (no ties, built from a format-3 table) opens, searches and verifies."""
    import pyarrow.parquet as pq

    from trajemb.data.store import METADATA_KEY, content_hash

    table = pq.read_table(synth_table)
    manifest = json.loads(pq.read_metadata(synth_table).metadata[METADATA_KEY])
    manifest.update(format_version=3, content_sha256=content_hash(table, 3))
    old_table = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), old_table)
    config = BundleConfig(projection=ProjectionConfig(method="none"), evaluate=False, device="cpu")
    build_bundle(old_table, tiny_checkpoints[:1], tmp_path / "b", None, config, progress=False)
    bundle_manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    for key in ("window_ids_sha256", "table_format_version"):
        del bundle_manifest[key]
    for entry in bundle_manifest["files"].values():
        for key in ("rows", "ids_sha256", "weights_sha256"):
            entry.pop(key, None)
    bundle_manifest["format"] = "trajemb-bundle/2"
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(bundle_manifest))
    bundle = Bundle(tmp_path / "b")
    assert len(search_row(bundle, bundle.model_names[0], 3, NeighborOptions(k=5))) == 5
    bundle.verify_all()


def test_a_reader_notices_a_rebuilt_or_changed_bundle(small_bundle: Path, tmp_path: Path) -> None:
    copy = copy_of(small_bundle, tmp_path)
    bundle = Bundle(copy)
    bundle.xy.rows([0])
    assert not bundle.changed()
    (copy / MANIFEST).write_text((copy / MANIFEST).read_text())  # rewritten (a completed stage)
    assert bundle.changed()
    bundle = Bundle(copy)
    bundle.xy.rows([0])
    (copy / XY_FILE).write_bytes((copy / XY_FILE).read_bytes())  # written in place
    assert bundle.changed()
    shutil.rmtree(copy)
    shutil.copytree(small_bundle, copy)  # rebuilt: another folder at the same path
    assert bundle.changed() and not Bundle(copy).changed()


def test_a_quick_change_check_looks_at_the_manifest_and_mapped_arrays_only(
    small_bundle: Path, tmp_path: Path
) -> None:
    """``changed(every_file=False)`` (the explorer's check on every rerun): a rewritten manifest and a
    memory-mapped array written or replaced are seen; a file read whole (a map) is left to the full
    check, and verified again when it is next read."""
    copy = copy_of(small_bundle, tmp_path)
    bundle = Bundle(copy)
    bundle.xy.rows([0])
    key = next(k for k in bundle.manifest["files"] if k.startswith("maps/"))
    bundle.map_geometry(Path(key).stem)
    assert key in bundle._files and not bundle.changed(every_file=False)
    (copy / key).write_bytes((copy / key).read_bytes())  # a map written in place
    assert bundle.changed() and not bundle.changed(every_file=False)
    bundle.map_geometry(Path(key).stem)  # verified again on reading: the same bytes pass
    assert not bundle.changed()
    (copy / XY_FILE).write_bytes((copy / XY_FILE).read_bytes())  # a mapped array written in place
    assert bundle.changed(every_file=False)
    bundle = Bundle(copy)
    bundle.xy.rows([0])
    (copy / MANIFEST).write_text((copy / MANIFEST).read_text())  # rewritten (a completed stage)
    assert bundle.changed(every_file=False)


def test_a_full_disk_is_blamed_on_the_output(
    synth_table: Path,
    tiny_checkpoints: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``shutil.copyfile`` names its source when the disk fills up; the message names the bundle."""
    import errno

    import trajemb.serving.bundle_build as bundle_build

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(bundle_build.shutil, "copyfile", full)
    out = tmp_path / "b"
    args = [
        "-q",
        "bundle",
        "--table",
        str(synth_table),
        "--checkpoint",
        str(tiny_checkpoints[0]),
        "--out",
        str(out),
    ]
    assert main([*args, "--device", "cpu", "--no-umap", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"trajemb: error: {out}: the device ran out of space while writing it (No space left on device); "
        "nothing was replaced; free some space or choose another --out"
    )
    assert str(tiny_checkpoints[0]) not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: [1], "invalid build config (config is list [1], not an object)"),
        (
            lambda c: {**c, "evaluation": "x"},
            "invalid build config (config.evaluation is str 'x', not an object)",
        ),
        (
            lambda c: {**c, "projection": {**c["projection"], "n_neighbors": -1}},
            "invalid build config (n_neighbors must be in [2, 1000], got -1)",
        ),
    ],
)
def test_complete_refuses_a_malformed_build_config_naming_the_manifest(
    plain_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], object],
    message: str,
) -> None:
    """``trajemb complete`` rebuilds with the config the manifest records. Before: a config that was not
    an object ended in an AttributeError traceback, and an out-of-range field came out as
    'n_neighbors must be in [2, 1000], got -1', naming neither the bundle nor its manifest."""
    out = tmp_path / "b"
    shutil.copytree(plain_bundle, out)
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["config"] = edit(manifest["config"])
    (out / "bundle.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["-q", "complete", "--bundle", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"trajemb: error: {out / 'bundle.json'}: {message}; rebuild it with `trajemb bundle`"]
    assert sorted(p.name for p in out.rglob("*")) == before
