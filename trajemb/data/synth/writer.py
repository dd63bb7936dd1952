"""Write synthetic scenarios in the AV2 motion-forecasting formats.

``write_scenario_parquet`` builds the same table as av2's ``serialize_argoverse_scenario_parquet``
(same columns, order and row order; string ids, float64 timestamps as in the released data) straight
from arrays: av2's serializer builds one Python object per state and one DataFrame per track, about
100 ms per scenario. ``write_scenario_parquet_av2`` goes through av2's own serializer; tests check that
both load to the same ``ArgoverseScenario``. Maps follow ``log_map_archive_<id>.json``. Beside them,
``trajemb_truth_<id>.parquet`` holds what each road user was built to do (``trajemb.data.truth``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_OBS_TIMESTEPS
from av2.datasets.motion_forecasting.data_schema import (
    ArgoverseScenario,
    ObjectState,
    ObjectType,
    Track,
    TrackCategory,
)
from av2.datasets.motion_forecasting.scenario_serialization import serialize_argoverse_scenario_parquet

from trajemb.data.av2_motion import SYNTH_PARQUET_KEY
from trajemb.data.schema import STEP_S, FloatArray, IntArray
from trajemb.data.synth.geometry import arc_length_m, left_normals
from trajemb.data.synth.scenario import SynthScenario
from trajemb.data.truth import TRUTH_FORMAT, TRUTH_METADATA_KEY, TRUTH_SCHEMA, truth_path_for

MAX_LANE_SEGMENT_M = 50.0
_STEP_NS = round(STEP_S * 1e9)

SCENARIO_SCHEMA = pa.schema(
    [
        ("observed", pa.bool_()),
        ("track_id", pa.string()),
        ("object_type", pa.string()),
        ("object_category", pa.int64()),
        ("timestep", pa.int64()),
        ("position_x", pa.float64()),
        ("position_y", pa.float64()),
        ("heading", pa.float64()),
        ("velocity_x", pa.float64()),
        ("velocity_y", pa.float64()),
        ("scenario_id", pa.string()),
        ("start_timestamp", pa.float64()),
        ("end_timestamp", pa.float64()),
        ("num_timestamps", pa.int64()),
        ("focal_track_id", pa.string()),
        ("city", pa.string()),
    ]
)


def scenario_table(sc: SynthScenario) -> pa.Table:
    """The AV2 parquet table of a scenario: one row per (track, valid step), tracks in order."""
    track_idx, step = np.nonzero(sc.valid)
    n = track_idx.size
    num_steps = sc.valid.shape[1]
    rows = pa.array(track_idx)
    # Strings go to arrow once per track (or scenario) and are repeated there: the same column.
    per_track = {
        name: pa.array(values.tolist(), pa.string()).take(rows)
        for name, values in (("track_id", sc.track_ids), ("object_type", sc.object_types))
    }
    once = pa.array(np.zeros(n, dtype=np.int64))
    per_scenario = {
        name: pa.array([value], pa.string()).take(once)
        for name, value in (
            ("scenario_id", sc.scenario_id),
            ("focal_track_id", sc.focal_track_id),
            ("city", sc.city),
        )
    }
    columns = {
        "observed": step < AV2_SCENARIO_OBS_TIMESTEPS,
        "track_id": per_track["track_id"],
        "object_type": per_track["object_type"],
        "object_category": sc.categories[track_idx],
        "timestep": step.astype(np.int64),
        "position_x": sc.xy_city[track_idx, step, 0],
        "position_y": sc.xy_city[track_idx, step, 1],
        "heading": sc.heading_rad[track_idx, step],
        "velocity_x": sc.velocity_mps[track_idx, step, 0],
        "velocity_y": sc.velocity_mps[track_idx, step, 1],
        "scenario_id": per_scenario["scenario_id"],
        "start_timestamp": np.full(n, float(sc.start_timestamp_ns)),
        "end_timestamp": np.full(n, float(sc.start_timestamp_ns + (num_steps - 1) * _STEP_NS)),
        "num_timestamps": np.full(n, num_steps, dtype=np.int64),
        "focal_track_id": per_scenario["focal_track_id"],
        "city": per_scenario["city"],
    }
    return pa.table(
        {
            k: v if isinstance(v, pa.Array) else pa.array(v, type=SCENARIO_SCHEMA.field(k).type)
            for k, v in columns.items()
        }
    )


def write_scenario_parquet(sc: SynthScenario, path: Path) -> None:
    """Write ``scenario_<id>.parquet`` from arrays (fast path), marked synthetic in its metadata so that
    ``prepare`` labels it synthetic wherever it is copied."""
    table = scenario_table(sc)
    _write_parquet(table.replace_schema_metadata({SYNTH_PARQUET_KEY: b"1"}), path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """``pq.write_table(table, path)``, the same bytes, built in memory and written in one call (opening
    the file through arrow cost a sixth of the write for files this small)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    Path(path).write_bytes(sink.getvalue().to_pybytes())


def to_argoverse_scenario(sc: SynthScenario) -> ArgoverseScenario:
    """The same scenario as av2's object model (one ``ObjectState`` per state)."""
    num_steps = sc.valid.shape[1]
    tracks = []
    for a, track_id in enumerate(sc.track_ids):
        states = [
            ObjectState(
                observed=bool(t < AV2_SCENARIO_OBS_TIMESTEPS),
                timestep=int(t),
                position=(float(sc.xy_city[a, t, 0]), float(sc.xy_city[a, t, 1])),
                heading=float(sc.heading_rad[a, t]),
                velocity=(float(sc.velocity_mps[a, t, 0]), float(sc.velocity_mps[a, t, 1])),
            )
            for t in np.flatnonzero(sc.valid[a])
        ]
        tracks.append(
            Track(
                str(track_id),
                states,
                ObjectType(str(sc.object_types[a])),
                TrackCategory(int(sc.categories[a])),
            )
        )
    timestamps_ns = sc.start_timestamp_ns + np.arange(num_steps, dtype=np.float64) * _STEP_NS
    return ArgoverseScenario(sc.scenario_id, timestamps_ns, tracks, sc.focal_track_id, sc.city, None, None)


def write_scenario_parquet_av2(sc: SynthScenario, path: Path) -> None:
    """Write ``scenario_<id>.parquet`` through av2's own serializer (slow, reference path)."""
    serialize_argoverse_scenario_parquet(path, to_argoverse_scenario(sc))


#: Map polylines keep every k-th point of the 1 m generator grid (AV2 maps are similarly sparse).
MAP_POINT_STRIDE = 4


def _kept_rows(n: int, stride: int) -> list[int]:
    """Rows of an ``n``-point polyline a map keeps: every ``stride``-th and the last."""
    if stride <= 1 or n <= 2:
        return list(range(n))
    keep = list(range(0, n, stride))
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return keep


def kept_index(sizes: list[int], stride: int) -> tuple[IntArray, IntArray]:
    """``_kept_rows`` of polylines of ``sizes`` points stacked one after another: the rows of the stack
    they keep, in order, and how many each keeps (one fancy index instead of one per polyline)."""
    n = np.asarray(sizes, dtype=np.int64)
    if stride <= 1:
        return np.arange(n.sum()), n
    # Every stride-th row, and the last where that is not one of them (a polyline of 2 keeps both).
    counts = (n + stride - 1) // stride + ((n >= 2) & ((n - 1) % stride != 0))
    line = np.repeat(np.arange(len(n)), counts)
    j = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    start = np.cumsum(n) - n
    return start[line] + np.minimum(j * stride, n[line] - 1), counts


def _points_of(
    lines: list[FloatArray], stride: int = MAP_POINT_STRIDE, as_json: bool = False
) -> list[list[dict[str, float]]] | list[orjson.Fragment]:
    """The map points of each polyline (``_kept_rows``, rounded to the centimetre), all in one pass: a
    map has a few hundred polylines. ``as_json``: each polyline as the JSON text orjson writes for
    its list of points (``_points_json``), ten times faster than building the dicts."""
    if not lines:
        return []
    index, kept = kept_index([len(xy) for xy in lines], stride)
    counts = kept.tolist()
    xy = np.round(np.concatenate(lines)[index], 2)
    if as_json:
        fragments = _points_json(xy, counts)
        if fragments is not None:
            return fragments
    coords = iter(xy.ravel().tolist())
    flat = [{"x": x, "y": y, "z": 0.0} for x, y in zip(coords, coords, strict=True)]
    ends = list(itertools.accumulate(counts))
    return [flat[end - n : end] for n, end in zip(counts, ends, strict=True)]


#: How orjson writes a list of points ``[{"x":1.5,"y":2.25,"z":0.0},...]`` and a (P, 2) float array
#: ``[[1.5,2.25],...]``: the same numbers, written by the same float writer, between other brackets.
_POINT_GAP = b',"z":0.0},{"x":'
#: A row of NaN (written ``null``) between two polylines: where the text of all of them is cut.
_LINE_GAP = _POINT_GAP + b'null,"y":null' + _POINT_GAP


def _points_json(xy: FloatArray, counts: list[int]) -> list[orjson.Fragment] | None:
    """The JSON text of each polyline's points (``counts[i]`` rows of ``xy`` each), as orjson writes a
    list of ``{"x", "y", "z": 0.0}`` dicts of the same numbers, byte for byte: the whole (P, 2) array is
    written at once, with a row of NaN between polylines, and its brackets turned into the dicts'.
    None where that could be ambiguous (a non-finite coordinate, an empty polyline)."""
    if min(counts) < 1 or not np.isfinite(xy).all():
        return None
    starts = np.cumsum(counts) - np.asarray(counts)
    rows = np.insert(xy, starts[1:], np.nan, axis=0)  # a NaN row before every polyline but the first
    text = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2]  # x,y],[x,y],...,[x,y
    text = text.replace(b"],[", b"|").replace(b",", b',"y":').replace(b"|", _POINT_GAP)
    parts = text.split(_LINE_GAP)
    if len(parts) != len(counts):
        return None
    return [orjson.Fragment(b'[{"x":' + part + b',"z":0.0}]') for part in parts]


def segment_cuts(last_row: int, k: int) -> list[int]:
    """Rows where a lane of ``last_row + 1`` points is cut into ``k`` segments:
    ``np.linspace(0, last_row, k + 1).round().astype(int)`` by the same float arithmetic (row times
    step, rounded half to even), without its per-call overhead (a map cuts a few hundred lanes)."""
    step = last_row / k
    return [round(i * step + 0.0) for i in range(k)] + [last_row]


def map_json(sc: SynthScenario, points_as_json: bool = False) -> dict[str, Any]:
    """The AV2 map archive dict of a scenario's road network (lanes split into <= 50 m segments).
    ``points_as_json``: each list of points as its JSON text (``orjson.Fragment``), for ``map_json_bytes``."""
    net = sc.network
    base = (
        100_000_000
        + int(np.frombuffer(bytes.fromhex(sc.scenario_id.replace("-", ""))[:3], ">u1") @ [65536, 256, 1])
        * 1000
    )
    pieces: list[list[tuple[int, int]]] = []  # per lane: (start, end) point index of each segment
    ids: list[list[int]] = []
    next_id = base
    for lane in net.lanes:
        k = max(1, int(np.ceil(arc_length_m(lane.xy)[-1] / MAX_LANE_SEGMENT_M)))
        cuts = segment_cuts(len(lane.xy) - 1, k)
        pieces.append(list(itertools.pairwise(cuts)))
        ids.append(list(range(next_id, next_id + k)))
        next_id += k
    lines: list[FloatArray] = []  # centre line, left and right boundary of every segment, in order
    for li, lane in enumerate(net.lanes):
        normals = left_normals(lane.xy)  # as offset(), computed once for both boundaries
        left = np.asarray(lane.xy + normals * (lane.width_m / 2), dtype=np.float64)
        right = np.asarray(lane.xy + normals * (-lane.width_m / 2), dtype=np.float64)
        for a, b in pieces[li]:
            lines += [lane.xy[a : b + 1], left[a : b + 1], right[a : b + 1]]
    points = iter(_points_of(lines, as_json=points_as_json))
    segments: dict[str, Any] = {}
    for li, lane in enumerate(net.lanes):
        for pi, _ in enumerate(pieces[li]):
            seg_id = ids[li][pi]
            last = pi == len(pieces[li]) - 1
            first = pi == 0

            def neighbor(nb: int | None, pi: int = pi, li: int = li) -> int | None:
                # Parallel lanes are split alike, so piece i borders the neighbour's piece i.
                return ids[nb][pi] if nb is not None and len(ids[nb]) == len(ids[li]) else None

            center, left_points, right_points = next(points), next(points), next(points)
            segments[str(seg_id)] = {
                "centerline": center,
                "id": seg_id,
                "is_intersection": lane.is_intersection,
                "lane_type": lane.lane_type,
                "left_lane_boundary": left_points,
                "left_lane_mark_type": lane.left_mark,
                "left_neighbor_id": neighbor(lane.left_neighbor),
                "predecessors": [ids[p][-1] for p in lane.predecessors] if first else [ids[li][pi - 1]],
                "right_lane_boundary": right_points,
                "right_lane_mark_type": lane.right_mark,
                "right_neighbor_id": neighbor(lane.right_neighbor),
                "successors": [ids[s][0] for s in lane.successors] if last else [ids[li][pi + 1]],
            }
    # Every point of a drivable area is a corner of it (roads build theirs sparse already). Generator 1
    # wrote every MAP_POINT_STRIDE-th, cutting the corners off its junctions (kept: its maps as they were).
    area_stride = MAP_POINT_STRIDE if sc.generator == 1 else 1
    area_points = _points_of(
        [poly[:-1] for poly in net.drivable_areas], stride=area_stride, as_json=points_as_json
    )
    areas = {
        str(next_id + i): {"area_boundary": boundary, "id": next_id + i}
        for i, boundary in enumerate(area_points)
    }
    next_id += len(net.drivable_areas)
    edges = iter(_points_of([e for pair in net.crossings for e in pair], as_json=points_as_json))
    crossings = {
        str(next_id + i): {"edge1": next(edges), "edge2": next(edges), "id": next_id + i}
        for i in range(len(net.crossings))
    }
    return {"drivable_areas": areas, "lane_segments": segments, "pedestrian_crossings": crossings}


def map_json_bytes(sc: SynthScenario) -> bytes:
    """The map file of a scenario: ``orjson.dumps(map_json(sc))``, byte for byte, in a fifth of the time."""
    return orjson.dumps(map_json(sc, points_as_json=True))


def truth_table(sc: SynthScenario) -> pa.Table:
    """The truth sidecar of a scenario: one row per track, in the scenario's track order."""
    columns = {
        "track_id": sc.track_ids.tolist(),
        "route_kind": sc.route_kinds.tolist(),
        "route_s_m": sc.route_s_m.tolist(),  # NaN (not null) where the track is invalid
        "span_kind": [[sp.kind for sp in spans] for spans in sc.spans],
        "span_start_m": [[sp.start_m for sp in spans] for spans in sc.spans],
        "span_end_m": [[sp.end_m for sp in spans] for spans in sc.spans],
    }
    table = pa.table({k: pa.array(v, type=TRUTH_SCHEMA.field(k).type) for k, v in columns.items()})
    return table.replace_schema_metadata({TRUTH_METADATA_KEY: TRUTH_FORMAT})


def write_scenario_dir(sc: SynthScenario, root: Path, use_av2_serializer: bool = False) -> Path:
    """Write ``root/<id>/scenario_<id>.parquet``, ``log_map_archive_<id>.json`` and the truth sidecar
    ``trajemb_truth_<id>.parquet``; returns the folder."""
    folder = Path(root) / sc.scenario_id
    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / f"scenario_{sc.scenario_id}.parquet"
    (write_scenario_parquet_av2 if use_av2_serializer else write_scenario_parquet)(sc, parquet)
    # orjson: the same JSON document as Python's json, several times faster (no spaces between tokens).
    (folder / f"log_map_archive_{sc.scenario_id}.json").write_bytes(map_json_bytes(sc))
    _write_parquet(truth_table(sc), truth_path_for(parquet))
    return folder
