"""Result tables out (ids to find each window again in AV2, labels, distance, provenance) and window
ids back in (any CSV, parquet or text file), against the bundle's own columns and the real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trajemb.analysis.bundle import Bundle
from trajemb.analysis.export import (
    ID_COLUMNS,
    LABEL_COLUMNS,
    PROVENANCE_COLUMNS,
    load_window_ids,
    read_window_ids,
    results_bytes,
    results_frame,
    rows_for_window_ids,
    source_files,
    write_results,
)
from trajemb.core.errors import ConfigError, DataError
from trajemb.data.schema import Source


def test_source_files_name_real_av2_files(mf_dir: Path, sensor_dir: Path) -> None:
    """The relative paths point at the files the windows were read from, in AV2's own layouts."""
    scenario = next(p.name for p in mf_dir.iterdir() if p.is_dir())
    log_id = next(p.name for p in sensor_dir.iterdir() if p.is_dir())
    files = source_files(
        np.array([Source.AV2_MOTION.value, Source.AV2_SENSOR.value, "elsewhere"]),
        np.array([scenario, log_id, "x"]),
    )
    assert (mf_dir / files[0]).is_file() and files[0].endswith(".parquet")
    assert (sensor_dir / files[1]).is_dir() and files[1] == log_id
    assert files[2] == ""


def test_results_frame_holds_ids_labels_distance_and_provenance(plain_bundle: Path, synth_dir: Path) -> None:
    bundle = Bundle(plain_bundle)
    model = bundle.model_names[0]
    rows = np.array([5, 0, bundle.num_windows - 1])
    frame = results_frame(bundle, rows, model, distance=np.array([0.1, 0.2, 0.3]), query_window_id="q")
    assert list(frame.columns) == [*ID_COLUMNS, *LABEL_COLUMNS, *PROVENANCE_COLUMNS]
    assert frame["rank"].tolist() == [1, 2, 3]
    assert frame["window_id"].tolist() == bundle.strings("window_id", rows)
    start = bundle.numbers("start_timestep")[rows]
    assert frame["start_timestep"].tolist() == start.tolist()
    assert (frame["end_timestep"] - frame["start_timestep"]).tolist() == [bundle.num_steps - 1] * 3
    for name in ("scenario_id", "track_id", "source", "object_type", "city", "direction", "true_manoeuvre"):
        assert frame[name].tolist() == bundle.strings(name, rows), name
    np.testing.assert_allclose(frame["mean_speed_mps"], bundle.numbers("mean_speed_mps")[rows])
    # each window's id parts agree with its own columns, and its source file exists
    for _, r in frame.iterrows():
        assert r.window_id == f"{r.source}/{r.scenario_id}/{r.track_id}/{r.start_timestep}"
        assert (synth_dir / r.source_file).is_file()
    assert frame["distance"].tolist() == [0.1, 0.2, 0.3] and set(frame["query_window_id"]) == {"q"}
    weights = plain_bundle / "models" / model / "checkpoint" / "model.safetensors"
    assert set(frame["model_weights_sha256"]) == {hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert set(frame["bundle_table_sha256"]) == {bundle.manifest["table_sha256"]}
    assert set(frame["bundle"]) == {str(plain_bundle.resolve())} and set(frame["model"]) == {model}
    plain = results_frame(bundle, [1, 2], extra={"cluster": np.array([4, 4])})
    assert (
        plain["distance"].isna().all() and set(plain["model"]) == {""} and plain["cluster"].tolist() == [4, 4]
    )
    assert list(plain.columns).index("cluster") == list(plain.columns).index("distance") + 1
    with pytest.raises(DataError, match="rows must be"):
        results_frame(bundle, [bundle.num_windows])
    with pytest.raises(ConfigError, match="would replace a standard column"):
        results_frame(bundle, [1], extra={"city": np.array(["x"])})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_results_round_trip(plain_bundle: Path, tmp_path: Path, suffix: str) -> None:
    bundle = Bundle(plain_bundle)
    rows = np.array([7, 3, 11, 2])
    frame = results_frame(bundle, rows, bundle.model_names[0], distance=np.array([0.5, 0.6, 0.7, 0.8]))
    out = write_results(frame, tmp_path / f"list{suffix}")
    back = pd.read_csv(out, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(out)
    assert back["window_id"].tolist() == frame["window_id"].tolist()
    np.testing.assert_allclose(back["distance"].astype(float), frame["distance"])
    assert back["start_timestep"].tolist() == frame["start_timestep"].tolist()
    np.testing.assert_array_equal(load_window_ids(bundle, out), rows)
    assert out.read_bytes() == results_bytes(frame, suffix[1:]) or suffix == ".parquet"
    from trajemb.analysis.export import window_ids_from_bytes

    assert window_ids_from_bytes(results_bytes(frame, suffix[1:])) == frame["window_id"].tolist()
    write_results(frame.iloc[:2], out)  # its own earlier list is replaced
    np.testing.assert_array_equal(load_window_ids(bundle, out), rows[:2])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


def test_ids_come_back_from_files_written_by_other_code(plain_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle(plain_bundle)
    rows = np.array([9, 4, 4, 1])
    ids = bundle.strings("window_id", rows)
    text = tmp_path / "ids.txt"
    text.write_text("# my pick\n" + "\n".join(ids[:2]) + "\n\n  " + ids[3] + "  \n", encoding="utf-8")
    np.testing.assert_array_equal(load_window_ids(bundle, text), [9, 4, 1])
    own_csv = tmp_path / "mine.csv"
    pd.DataFrame({"score": [1.0, 2.0, 3.0, 4.0], "window_id": ids}).to_csv(own_csv, index=False)
    np.testing.assert_array_equal(load_window_ids(bundle, own_csv), [9, 4, 1])  # repeats once
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfwindow_id\n" + "\n".join(ids).encode())
    np.testing.assert_array_equal(load_window_ids(bundle, bom), [9, 4, 1])
    own_parquet = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"window_id": pa.array(ids).dictionary_encode(), "x": [1, 2, 3, 4]}), own_parquet)
    np.testing.assert_array_equal(load_window_ids(bundle, own_parquet), [9, 4, 1])
    assert read_window_ids(text) == [ids[0], ids[1], ids[3]]


def test_unknown_ids_are_refused_with_how_many_and_which(plain_bundle: Path) -> None:
    bundle = Bundle(plain_bundle)
    ids = [*bundle.strings("window_id", [0, 1, 2]), "synthetic/nope/1/0", "also-not-there"]
    with pytest.raises(
        DataError,
        match=r"2 of 5 window ids are not in the bundle .* \(first: 'synthetic/nope/1/0', 'also-not-there'\)",
    ):
        rows_for_window_ids(bundle, ids)


def test_bad_id_files_are_refused_in_one_line(plain_bundle: Path, tmp_path: Path) -> None:
    import pickle

    cases: dict[str, tuple[bytes, str]] = {
        "pickled.pkl": (pickle.dumps({"window_id": ["a"]}), "neither parquet nor UTF-8 text"),
        "empty.txt": (b"\n# nothing\n\n", "no window ids"),
        "other.csv": (b"a,b\n1,2\n", "CSV file without a window_id column"),
        "broken.parquet": (b"PAR1not really", "not a readable parquet file"),
        "holes.csv": (b"window_id,x\n,1\nsynthetic/a/b/0,2\n", "empty values"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match=message):
            read_window_ids(path)
    no_column = tmp_path / "no_column.parquet"
    pq.write_table(pa.table({"id": ["a"]}), no_column)
    with pytest.raises(DataError, match="parquet file without a window_id column"):
        read_window_ids(no_column)
    with pytest.raises(DataError, match="the id list is 8 bytes, more than the 4 allowed"):
        read_window_ids(tmp_path / "other.csv", max_bytes=4)
    with pytest.raises(DataError, match="is a folder, not an id list; give a CSV, parquet or text"):
        read_window_ids(tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_window_ids(tmp_path / "absent.txt")


def test_results_are_written_only_where_trajemb_may(plain_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle(plain_bundle)
    frame = results_frame(bundle, [0, 1])
    with pytest.raises(ConfigError, match=r"name a \.csv or \.parquet file"):
        write_results(frame, tmp_path / "list.xlsx")
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own\n1,2\n")
    with pytest.raises(DataError, match="not a result list written by trajemb"):
        write_results(frame, mine)
    assert mine.read_text() == "my,own\n1,2\n"
    with pytest.raises(DataError, match="lies inside the input folder"):
        write_results(frame, plain_bundle / "list.csv", inputs=[plain_bundle])
    assert not (plain_bundle / "list.csv").exists()
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="it is a folder"):
        write_results(frame, folder, inputs=[plain_bundle])
