"""Trajectory table round trip, content hash and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trajemb.errors import DataError
from trajemb.schema import WindowColumns
from trajemb.store import read_manifest, read_table, write_table


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
        speed_bin=s("5-10"),
        mean_speed_mps=np.ones(n, dtype=np.float32),
        heading_change_rad=np.ones(n, dtype=np.float32),
        lateral_offset_m=np.ones(n, dtype=np.float32),
    )


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

    tampered = table.set_column(table.schema.get_field_index("xy_agent"), "xy_agent",
                                pa.array(xy, type=table.schema.field("xy_agent").type))  # fmt: skip
    pq.write_table(tampered.replace_schema_metadata(table.schema.metadata), path)
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

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_table(make_windows(n=3), path, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left


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
