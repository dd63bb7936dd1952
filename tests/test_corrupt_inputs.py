"""Property-based: whatever bytes or values a data file holds, a reader returns a well-formed result
or raises one ``DataError``/``ConfigError``, never another exception (and never a huge allocation).

Example counts are small (the suite runs on 2 cores); each property still sees dozens of corruptions.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajemb.core.errors import ConfigError, DataError
from trajemb.data.av2_motion import read_scenario_tracks
from trajemb.data.av2_sensor import read_sensor_log_tracks
from trajemb.data.maps import load_map_geometry, read_map_geometry, save_map_geometry
from trajemb.data.query import MAX_ABS_COORD_M, parse_points
from trajemb.data.schema import MAX_GRID_CELLS
from trajemb.data.store import read_manifest, read_table, write_table
from trajemb.training.model import MAX_PARAMETERS, EncoderConfig

from conftest import av2_fixtures_dir

T = TypeVar("T")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def motion_fixture() -> Path:
    """The real AV2 scenario folder (the properties that read it skip without the fixtures)."""
    folder = av2_fixtures_dir() / "motion_forecasting"
    if not folder.is_dir():
        pytest.skip(f"real AV2 fixtures not found at {folder.parent}")
    return next(p for p in folder.iterdir() if p.is_dir())


# Inputs are module-level bytes, not fixtures: hypothesis would print a fixture's bytes with every
# failing example.
@functools.cache
def table_bytes() -> bytes:
    from test_store import make_windows

    with tempfile.TemporaryDirectory() as tmp:
        write_table(make_windows(n=20, T=30), Path(tmp) / "t.parquet", {"note": "x"})
        return (Path(tmp) / "t.parquet").read_bytes()


def scenario_bytes() -> bytes:
    return next(motion_fixture().glob("scenario_*.parquet")).read_bytes()


def map_json() -> dict[str, Any]:
    return dict(json.loads(next(motion_fixture().glob("log_map_archive_*.json")).read_text()))


#: A corruption: byte flips at relative positions, then an optional truncation.
corruptions = st.tuples(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    st.none() | st.floats(0, 1),
)


def corrupt(data: bytes, corruption: tuple[list[tuple[float, int]], float | None]) -> bytes:
    flips, cut = corruption
    out = bytearray(data)
    for where, value in flips:
        out[int(where * len(out))] = value
    return bytes(out[: int(cut * len(out))] if cut is not None else out)


def outcome(read: Callable[[Path], T], data: bytes, name: str) -> T | None:
    """``read`` of ``data`` written to a fresh file; None where it raised DataError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            return read(path)
        except DataError as exc:
            assert "\n" not in str(exc)
            return None


# -- trajectory tables ---------------------------------------------------------------------------------


@SETTINGS
@given(corruption=corruptions)
def test_corrupted_table(corruption: Any) -> None:
    data = corrupt(table_bytes(), corruption)
    table = outcome(lambda p: read_table(p, verify=True), data, "t.parquet")
    if table is not None:  # what reads back verified is the original content
        assert len(table) == 20 and table.xy_agent.shape == (20, 30, 2)
    outcome(read_manifest, data, "t.parquet")


manifest_values = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)


@SETTINGS
@given(
    key=st.sampled_from(["format_version", "num_steps", "num_windows", "content_sha256"]),
    value=manifest_values,
)
def test_tampered_manifest(key: str, value: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.parquet"
        src.write_bytes(table_bytes())
        manifest = json.loads(pq.read_metadata(src).metadata[b"trajemb"])
        manifest[key] = value
        table = pq.read_table(src)
        path = Path(tmp) / "t.parquet"
        # The tampered manifest as file metadata, where the writer stores it.
        with pq.ParquetWriter(path, table.schema) as writer:
            writer.write_table(table)
            writer.add_key_value_metadata({b"trajemb": json.dumps(manifest).encode()})
        try:
            read_table(path, verify=True)
        except DataError:
            return
        assert manifest[key] == json.loads(pq.read_metadata(src).metadata[b"trajemb"])[key]


# -- AV2 scenarios -------------------------------------------------------------------------------------


@SETTINGS
@given(corruption=corruptions)
def test_corrupted_scenario_file(corruption: Any) -> None:
    tracks = outcome(read_scenario_tracks, corrupt(scenario_bytes(), corruption), "scenario_x.parquet")
    if tracks is not None:
        assert tracks.num_tracks * tracks.num_steps <= MAX_GRID_CELLS


def _array(values: list[object], type_: pa.DataType | None) -> pa.Array | None:
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowException, OverflowError):
        return None


cell_values = st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=6)


@SETTINGS
@given(
    column=st.sampled_from(
        [
            "track_id",
            "object_type",
            "object_category",
            "timestep",
            "position_x",
            "heading",
            "num_timestamps",
            "scenario_id",
            "city",
        ]
    ),
    rows=st.lists(st.integers(0, 10_000), min_size=1, max_size=5),
    value=cell_values,
    whole_column=st.booleans(),
)
def test_hostile_scenario_values(column: str, rows: list[int], value: object, whole_column: bool) -> None:
    """Any value of any type in any cell (or a whole column of it): a TrackSet or one DataError."""
    table = pq.read_table(pa.BufferReader(scenario_bytes()))
    values = table.column(column).to_pylist()
    for r in range(len(values)) if whole_column else rows:
        values[r % len(values)] = value
    array = _array(values, table.schema.field(column).type)
    if array is None:  # a value of another type: the whole column gets that type
        array = _array([value] * len(values), None) or pa.array([str(value)] * len(values))
    table = table.set_column(table.schema.get_field_index(column), column, array)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario_x.parquet"
        pq.write_table(table, path)
        try:
            tracks = read_scenario_tracks(path)
        except DataError:
            return
    assert tracks.num_tracks * tracks.num_steps <= MAX_GRID_CELLS
    assert np.isfinite(tracks.xy_city[tracks.valid]).all()


# -- sensor logs -----------------------------------------------------------------------------------------


@SETTINGS
@given(corruption=corruptions, victim=st.sampled_from(["city_SE3_egovehicle.feather", "annotations"]))
def test_corrupted_sensor_log(corruption: Any, victim: str) -> None:
    import shutil

    sensor_dir = av2_fixtures_dir() / "sensor_logs"
    if not sensor_dir.is_dir():
        pytest.skip(f"real AV2 fixtures not found at {sensor_dir.parent}")
    src = sorted(p for p in sensor_dir.iterdir() if p.is_dir())[0]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / src.name
        shutil.copytree(src, log)
        path = log / victim if victim != "annotations" else next(log.glob("annotations*.feather"))
        path.write_bytes(corrupt(path.read_bytes(), corruption))
        try:
            tracks = read_sensor_log_tracks(log)
        except DataError:
            return
    assert tracks.num_tracks * tracks.num_steps <= MAX_GRID_CELLS


# -- maps ----------------------------------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(path=st.lists(st.integers(0, 1000), min_size=1, max_size=5), value=json_values)
def test_hostile_map_json(path: list[int], value: object) -> None:
    """Replace whatever sits at a random place in a real AV2 map by a random JSON value."""
    m = map_json()
    node: Any = m
    for step in path[:-1]:
        keys = (
            list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        )
        if not keys or not isinstance(node[keys[step % len(keys)]], (dict, list)):
            break
        node = node[keys[step % len(keys)]]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if keys:
        node[keys[path[-1] % len(keys)]] = value
    geometry = outcome(load_map_geometry, json.dumps(m).encode(), "log_map_archive_x.json")
    if geometry is not None:
        for kind in ("lane_boundaries", "lane_centerlines", "drivable_areas", "crossings"):
            for polyline in getattr(geometry, kind):
                assert polyline.ndim == 2 and polyline.shape[1] == 2 and np.isfinite(polyline).all()


@SETTINGS
@given(corruption=corruptions)
def test_corrupted_map_cache(corruption: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "log_map_archive_x.json"
        src.write_text(json.dumps(map_json()))
        save_map_geometry(load_map_geometry(src), Path(tmp) / "x.npz")
        data = (Path(tmp) / "x.npz").read_bytes()
    outcome(read_map_geometry, corrupt(data, corruption), "x.npz")


# -- checkpoint configs and user queries ----------------------------------------------------------------------


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "embedding_dim",
                "d_model",
                "num_layers",
                "num_heads",
                "ff_mult",
                "dropout",
                "input_dropout",
                "input_scale_m",
                "max_steps",
                "unknown",
            ]
        ),
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=3),
    )
)
def test_encoder_config_from_any_json(data: dict[str, object]) -> None:
    try:
        config = EncoderConfig.from_dict(data)
    except ConfigError:
        return
    assert config.num_parameters() <= MAX_PARAMETERS


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789.,;-+eE \t\nxy#nai", max_size=60))
def test_any_query_text_is_points_or_a_data_error(text: str) -> None:
    try:
        xy = parse_points(text)
    except DataError:
        return
    assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 2
    assert np.isfinite(xy).all() and np.abs(xy).max() <= MAX_ABS_COORD_M


coords = st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(coords, coords), min_size=2, max_size=20), st.sampled_from([";", "\t", ",", " "]))
def test_points_round_trip_in_every_separator(points: list[tuple[float, float]], sep: str) -> None:
    """Written with any separator (a decimal comma where the separator allows it), read back exactly."""
    decimal = "," if sep in (";", "\t") else "."
    text = "\n".join(
        f"{x!r}{sep}{y!r}".replace(".", decimal) if decimal == "," else f"{x!r}{sep}{y!r}" for x, y in points
    )
    np.testing.assert_array_equal(parse_points(text), np.asarray(points))
