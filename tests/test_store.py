"""Trajectory table round trip, content hash and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trajemb.core.errors import DataError
from trajemb.data.schema import WindowColumns
from trajemb.data.store import (
    METADATA_KEY,
    TableWriter,
    open_table_writer,
    read_manifest,
    read_table,
    write_table,
)


def make_windows(n: int = 5, T: int = 30) -> WindowColumns:
    rng = np.random.default_rng(0)
    s = lambda v: np.array([v] * n)  # noqa: E731
    return WindowColumns(
        xy_agent=rng.normal(size=(n, T, 2)).astype(np.float32),
        origin_xy_city=rng.normal(size=(n, 2)) * 1000,
        theta_rad=rng.uniform(-3, 3, n),
        scenario_id=s("scn"),
        track_id=np.array([f"t{i}" for i in range(n)]),
        object_type=s("vehicle"),
        category=s("focal"),
        city=s("miami"),
        map_key=s("scn"),
        source=s("synthetic"),
        start_timestep=np.zeros(n, dtype=np.int64),
        direction=s("left"),
        true_manoeuvre=s("unknown"),
        speed_bin=s("5-10"),
        mean_speed_mps=np.ones(n, dtype=np.float32),
        heading_change_rad=np.ones(n, dtype=np.float32),
        lateral_offset_m=np.ones(n, dtype=np.float32),
    )


def manifest_metadata(path: Path) -> dict[bytes, bytes]:
    """The trajemb key of a table's file metadata, to carry over when a test rewrites the file."""
    return {METADATA_KEY: pq.read_metadata(path).metadata[METADATA_KEY]}


def test_round_trip(tmp_path: Path) -> None:
    w = make_windows()
    manifest = write_table(w, tmp_path / "t.parquet", {"note": "x"})
    table = read_table(tmp_path / "t.parquet", verify=True)
    np.testing.assert_array_equal(table.xy_agent, w.xy_agent)
    np.testing.assert_array_equal(table.meta["theta_rad"], w.theta_rad)
    assert table.meta["window_id"].tolist()[0] == "synthetic/scn/t0/0"
    assert table.manifest == manifest == read_manifest(tmp_path / "t.parquet")
    assert table.content_hash == manifest["content_sha256"] and len(table.content_hash) == 64
    assert manifest["note"] == "x" and manifest["num_windows"] == 5 and manifest["num_steps"] == 30


def test_hash_detects_changes(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    table = pq.read_table(path)
    xy = table.column("xy_agent").to_pylist()
    xy[0][0] += 1.0
    import pyarrow as pa

    tampered = table.set_column(
        table.schema.get_field_index("xy_agent"),
        "xy_agent",
        pa.array(xy, type=table.schema.field("xy_agent").type),
    )
    pq.write_table(tampered.replace_schema_metadata(manifest_metadata(path)), path)
    read_table(path)  # reading alone does not hash
    with pytest.raises(DataError, match="content hash mismatch"):
        read_table(path, verify=True)


def test_same_content_same_hash(tmp_path: Path) -> None:
    a = write_table(make_windows(), tmp_path / "a.parquet", {})
    b = write_table(make_windows(), tmp_path / "b.parquet", {"other": 1})
    c = write_table(make_windows(n=4), tmp_path / "c.parquet", {})
    assert a["content_sha256"] == b["content_sha256"] != c["content_sha256"]


def test_failed_write_leaves_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_table(make_windows(n=3), path, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left


def test_streamed_batches_equal_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking changes neither the rows nor the content hash; full buffers become row groups."""
    monkeypatch.setattr(TableWriter, "ROW_GROUP_WINDOWS", 3)
    w = make_windows(n=7)
    whole = write_table(w, tmp_path / "whole.parquet", {})
    with open_table_writer(tmp_path / "parts.parquet", 30) as writer:
        for rows in (slice(0, 3), slice(3, 3), slice(3, 7)):
            writer.write(WindowColumns(**{k: v[rows] for k, v in vars(w).items()}))
    assert writer.manifest["content_sha256"] == whole["content_sha256"]
    assert writer.manifest["num_windows"] == 7
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == 2
    a, b = read_table(tmp_path / "whole.parquet"), read_table(tmp_path / "parts.parquet", verify=True)
    np.testing.assert_array_equal(a.xy_agent, b.xy_agent)
    assert a.meta.equals(b.meta)


def test_failure_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError, match="worker died"), open_table_writer(path, 30) as writer:
        writer.write(make_windows())
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_ids_across_batches_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(DataError, match="duplicate window ids"),
        open_table_writer(tmp_path / "t.parquet", 30) as writer,
    ):
        writer.write(make_windows(n=3))
        writer.write(make_windows(n=2))  # t0, t1 again
    assert list(tmp_path.iterdir()) == []


def test_empty_table_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no windows to write"), open_table_writer(tmp_path / "t.parquet", 30):
        pass
    assert list(tmp_path.iterdir()) == []


def test_duplicate_ids_refused(tmp_path: Path) -> None:
    w = make_windows()
    w.track_id[:] = "same"
    with pytest.raises(DataError, match="duplicate window ids"):
        write_table(w, tmp_path / "t.parquet", {})
    assert not (tmp_path / "t.parquet").exists()


def test_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="trajectory table not found"):
        read_table(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("nope")
    with pytest.raises(DataError, match="not a readable trajectory table"):
        read_table(junk)
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="no trajemb manifest"):
        read_table(tmp_path / "plain.parquet")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("direction", "right"),
        ("true_manoeuvre", "left"),
        ("speed_bin", "0-1"),
        ("object_type", "pedestrian"),
        ("city", "austin"),
        ("track_id", "t9"),
        ("start_timestep", 7),
        ("mean_speed_mps", 2.5),
        ("lateral_offset_m", -1.0),
    ],
)
def test_every_column_is_covered_by_the_hash(tmp_path: Path, column: str, value: object) -> None:
    """A table edited after it was written (labels, ids, speeds) is refused by verification, not only
    one whose geometry changed."""
    import pyarrow as pa

    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[1] = value
    i = table.schema.get_field_index(column)
    kind = table.schema.field(column).type
    array = (
        pa.array(values, type=kind.value_type).dictionary_encode()
        if pa.types.is_dictionary(kind)
        else pa.array(values, type=kind)
    )
    pq.write_table(table.set_column(i, column, array).replace_schema_metadata(manifest_metadata(path)), path)
    with pytest.raises(DataError, match="content hash mismatch"):
        read_table(path, verify=True)


def test_format_3_tables_open_and_say_what_their_hash_cannot_cover(tmp_path: Path) -> None:
    """Tables written before the hash covered every column still open and verify their geometry, frames
    and ids; asked to vouch for their labels, verification says to prepare them again."""
    import json

    from trajemb.data.store import content_hash

    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    table = pq.read_table(path)
    manifest = json.loads(pq.read_metadata(path).metadata[METADATA_KEY])
    manifest.update(format_version=3, content_sha256=content_hash(table, 3))
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), path)
    assert read_table(path, verify=True).manifest["format_version"] == 3
    with pytest.raises(DataError, match="labels, so they cannot be verified; re-run trajemb prepare"):
        read_table(path, verify=True, require_full_hash=True)


def _rewritten(path: Path, edit: str) -> None:
    """``path`` edited as ``edit`` says, its manifest's row count and content hash made to match (so
    only what ``trajemb prepare`` never writes can give it away)."""
    import json

    import pyarrow as pa

    from trajemb.data.store import content_hash

    table = pq.read_table(path)
    if edit == "no rows":
        table = table.slice(0, 0)
    elif edit == "repeated id":
        ids = table.column("window_id").to_pylist()
        ids[3] = ids[1]
        table = table.set_column(table.schema.get_field_index("window_id"), "window_id", pa.array(ids))
    else:
        xy = table.column("xy_agent").combine_chunks()
        flat = xy.flatten().to_numpy().copy()
        flat[2 * 30 * 2 + 5] = {"nan": np.nan, "inf": -np.inf, "absurd": 3e38}[edit]
        column = pa.FixedSizeListArray.from_arrays(pa.array(flat), xy.type.list_size)
        table = table.set_column(table.schema.get_field_index("xy_agent"), "xy_agent", column)
    manifest = json.loads(pq.read_metadata(path).metadata[METADATA_KEY])
    manifest.update(
        num_windows=table.num_rows, content_sha256=content_hash(table, manifest["format_version"])
    )
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("nan", r"1 window\(s\) contain NaN, infinite or absurd positions \(beyond 1e\+07 m; first: "),
        ("inf", r"1 window\(s\) contain NaN, infinite or absurd positions \(beyond 1e\+07 m; first: "),
        ("absurd", r"1 window\(s\) contain NaN, infinite or absurd positions \(beyond 1e\+07 m; first: "),
        ("no rows", "the table holds no windows"),
        ("repeated id", "1 window id\\(s\\) repeat"),
    ],
)
def test_tables_prepare_never_writes_are_refused_by_every_reader(
    tmp_path: Path, edit: str, message: str
) -> None:
    """A table with NaN, infinite or absurd positions, no rows or a repeated window id (its hash
    rewritten to match) is refused naming the file, by ``read_table`` (info, realism, forecast) and by
    the bundle's streaming read. Before: info passed them all even with --verify, realism died with
    a traceback on NaN, a bundle blamed the checkpoint for NaN embeddings, said ``embeddings have shape
    (0, 4)`` without a file name, and built a bundle whose search by id picks one window silently."""
    from trajemb.serving.bundle_build import BundleWriter, write_windows

    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    _rewritten(path, edit)
    with pytest.raises(DataError, match=f"{path}: {message}"):
        read_table(path, verify=True)
    (tmp_path / "bundle").mkdir()
    with pytest.raises(DataError, match=f"{path}: {message}"):
        write_windows(path, BundleWriter(tmp_path / "bundle", {}), progress=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"skipped": 5}, "manifest skipped 5 is not a list"),
        ({"skipped": "abc"}, "manifest skipped 'abc' is not a list"),
        ({"window_config": [1, 2]}, r"manifest window_config \[1, 2\] is not an object"),
        ({"window_config": {"step_hz": 0}}, "manifest step rate 0 is not a positive number of Hz"),
        ({"window_config": {"step_hz": "nan"}}, "manifest step rate 'nan' is not a positive number of Hz"),
        ({"window_config": {"step_hz": float("inf")}}, "manifest step rate inf is not a positive number"),
    ],
)
def test_manifest_fields_readers_use_are_checked(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    """Manifest fields outside the content hash that readers use are checked where the manifest is read,
    naming the file. Before: ``trajemb info`` died with a TypeError traceback on ``"skipped": 5`` and
    counted the letters of ``"skipped": "abc"`` as 3 skipped inputs; realism and forecast refused a bad
    step rate without naming the table."""
    import json

    path = tmp_path / "t.parquet"
    write_table(make_windows(), path, {})
    table = pq.read_table(path)
    manifest = {**json.loads(pq.read_metadata(path).metadata[METADATA_KEY]), **extra}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(manifest).encode()}), path)
    with pytest.raises(DataError, match=f"{path}: {message}"):
        read_table(path)
