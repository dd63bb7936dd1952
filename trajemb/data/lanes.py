"""The lane graph of an AV2 map and the lanes a track follows (map matching), for the direction labels.

An AV2 map (``log_map_archive_*.json``) holds lane segments with left and right boundaries, an
``is_intersection`` flag (the connectors through a junction) and a type. Centre lines are the file's own
where it stores them (motion-forecasting maps do), else av2's ``compute_midpoint_line`` of the two
boundaries, as ``ArgoverseStaticMap.get_lane_segment_centerline`` computes them (sensor-log maps; tests
pin this): averaging boundaries folds on the tight connectors of U-turns.

Matching is per step and vectorised over all tracks of a scenario: each moving step is matched to the
nearest centre-line piece whose direction agrees with the track's motion (within
``MAX_HEADING_DIFF_RAD``) and that lies within ``MAX_LATERAL_M``; steps with no such piece are
off-lane. ``trajemb.data.labels.map_direction_class`` turns what a track follows into manoeuvres.

Legend: A tracks, S steps, L lanes, M centre-line pieces, Q matched steps, K candidate pieces per step.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
from av2.geometry.interpolate import compute_midpoint_line
from scipy.spatial import cKDTree

from trajemb.core.errors import DataError
from trajemb.core.jsonio import read_json_object
from trajemb.data.labels import at_least, chord
from trajemb.data.schema import VEHICLE_TYPES, BoolArray, FloatArray, IntArray

log = logging.getLogger(__name__)

#: AV2 map JSON files are a few megabytes.
MAX_MAP_JSON_BYTES = 256 * 1024 * 1024
#: Points of each centre line computed from boundaries, as av2's ``get_lane_segment_centerline``.
CENTERLINE_POINTS = 10
#: A step further than this (m) from every centre line of its direction is off-lane (half a lane plus
#: tracking noise).
MAX_LATERAL_M = 2.5
#: A lane's direction must agree with the track's motion within this angle to match.
MAX_HEADING_DIFF_RAD = float(np.deg2rad(45.0))
#: Candidate pieces examined per step.
CANDIDATES = 16
#: Motion heading of a step: chord from 2 steps before to 2 after; shorter chords (m) mean standing.
HEADING_HALF_CHORD_STEPS = 2
MIN_CHORD_M = 0.4
#: Lane types a road user may follow: vehicles keep to vehicle and bus lanes, cyclists may use bike lanes.
VEHICLE_LANE_TYPES: tuple[str, ...] = ("VEHICLE", "BUS")
CYCLIST_LANE_TYPES: tuple[str, ...] = ("VEHICLE", "BUS", "BIKE")


@dataclass(frozen=True)
class LaneGraph:
    """Centre lines of a map's lane segments, cut into straight pieces (M) and indexed for search."""

    lane_ids: IntArray  # (L,) AV2 lane segment ids
    is_intersection: BoolArray  # (L,)
    lane_type: np.ndarray  # (L,) str
    length_m: FloatArray  # (L,) centre-line length
    turn_rad: FloatArray  # (L,) heading change along the centre line (positive = left)
    start_heading_rad: FloatArray  # (L,) direction of the first centre-line piece
    end_heading_rad: FloatArray  # (L,) direction of the last piece
    predecessors: list[list[int]]  # (L,) rows of the lanes leading into each lane
    successors: list[list[int]]  # (L,) rows of the lanes each lane leads into
    left_neighbor: IntArray  # (L,) row of the lane to the left (same direction), -1 if none
    right_neighbor: IntArray  # (L,) row of the lane to the right, -1 if none
    piece_start: FloatArray  # (M, 2) city frame, m
    piece_end: FloatArray  # (M, 2)
    piece_lane: IntArray  # (M,) row in the lane arrays
    piece_vector: FloatArray  # (M, 2) piece_end - piece_start
    piece_length_m: FloatArray  # (M,) length of each piece, at least 1e-9 (matching divides by it)
    piece_heading_rad: FloatArray  # (M,) direction of each piece
    tree: Any  # cKDTree over piece midpoints
    max_half_piece_m: float
    # Each lane with the lanes just before and after it (``lane_side``): rows
    # ``around_rows[around_offsets[l] : around_offsets[l + 1]]``.
    around_offsets: IntArray  # (L + 1,)
    around_rows: IntArray

    @property
    def num_lanes(self) -> int:
        return int(self.lane_ids.size)


def _polyline(value: object, where: str, with_z: bool = False) -> FloatArray:
    """(P, 2) points of a JSON polyline, or (P, 3) with ``z`` (0 where absent): av2 measures boundary
    arc lengths in 3-D."""
    if not isinstance(value, list) or len(value) < 1:
        raise DataError(f"{where}: expected a list of points")
    try:
        rows = [[float(p["x"]), float(p["y"])] + ([float(p.get("z", 0.0))] if with_z else []) for p in value]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: points must be objects with numeric x and y") from exc
    xy = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(xy).all():
        raise DataError(f"{where}: NaN or infinite coordinates")
    return xy


def _flat_points(value: object, where: str) -> list[float]:
    """``x0, y0, x1, y1, ...`` of a JSON polyline (what ``_polyline`` reads, as one flat list: the centre
    lines of a whole map become one array at once)."""
    if not isinstance(value, list) or len(value) < 1:
        raise DataError(f"{where}: expected a list of points")
    try:
        flat = [float(c) for p in value for c in (p["x"], p["y"])]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: points must be objects with numeric x and y") from exc
    if not all(map(math.isfinite, flat)):
        raise DataError(f"{where}: NaN or infinite coordinates")
    return flat


def read_map_json(map_json: Path) -> dict[str, Any]:
    """The decoded AV2 map file. orjson reads it (a quarter of the time of Python's json); whatever
    orjson refuses (NaN literals, invalid UTF-8, a top level that is not an object, ...) is read again
    by ``trajemb.core.jsonio.read_json_object``, so that what is accepted and every message stay the same.

    Raises:
        DataError: the file is missing, too large, not UTF-8, not JSON or not a JSON object.
    """
    try:
        st = os.stat(map_json)
        if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_MAP_JSON_BYTES:
            value = orjson.loads(Path(map_json).read_bytes())
            if isinstance(value, dict):
                return value
    except (OSError, orjson.JSONDecodeError):
        pass
    return read_json_object(map_json, "map", MAX_MAP_JSON_BYTES)


class _Point(msgspec.Struct):
    x: float
    y: float


class _LaneSegment(msgspec.Struct):
    """The fields of an AV2 lane segment the lane graph needs, as the plain schema writes them."""

    id: int
    centerline: list[_Point]
    is_intersection: bool = False
    lane_type: str = "VEHICLE"
    predecessors: list[int] | None = None
    successors: list[int] | None = None
    left_neighbor_id: int | None = None
    right_neighbor_id: int | None = None


class _LaneMap(msgspec.Struct):
    lane_segments: dict[str, _LaneSegment]


_LANE_MAP_DECODER = msgspec.json.Decoder(_LaneMap)


def read_lane_graph(map_json: Path) -> LaneGraph:
    """The lane graph of an AV2 map file (motion-forecasting or sensor-log layout).

    Maps in the plain motion-forecasting schema (integer ids and links, boolean flags, stored centre
    lines of numeric points) are decoded straight into the few fields the graph needs, skipping the
    boundaries and areas (a third of the time of decoding the whole file); any other file goes
    through ``read_map_json`` and ``lane_graph_from_json``, so what is accepted, every message and
    every graph stay the same.

    Raises:
        DataError: the file is missing, not JSON, or its lane segments do not follow the AV2 schema.
    """
    map_json = Path(map_json)
    try:
        st = os.stat(map_json)
        if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_MAP_JSON_BYTES:
            graph = _plain_lane_graph(_LANE_MAP_DECODER.decode(map_json.read_bytes()), map_json)
            if graph is not None:
                return graph
    except (OSError, msgspec.DecodeError):  # ValidationError included: not the plain schema
        pass
    return lane_graph_from_json(read_map_json(map_json), map_json)


_X, _Y = operator.attrgetter("x"), operator.attrgetter("y")


def _plain_lane_graph(data: _LaneMap, map_json: Path) -> LaneGraph | None:
    """``lane_graph_from_json`` of a map decoded in the plain schema, or None where that function could
    refuse the map or read it otherwise (then it reads the map itself)."""
    ids: list[int] = []
    inter: list[bool] = []
    types: list[str] = []
    points: list[_Point] = []
    counts: list[int] = []
    links: list[tuple[object, object]] = []
    sides: list[tuple[object, object]] = []
    for seg in data.lane_segments.values():
        line = seg.centerline
        if not line:
            return None
        if len(line) < 2:
            continue  # a single point: nothing to follow
        ids.append(seg.id)
        inter.append(seg.is_intersection)
        types.append(seg.lane_type)
        links.append((seg.predecessors, seg.successors))
        sides.append((seg.left_neighbor_id, seg.right_neighbor_id))
        points += line
        counts.append(len(line))
    xy = np.empty((len(points), 2))
    xy[:, 0] = list(map(_X, points))
    xy[:, 1] = list(map(_Y, points))
    if not ids or len(set(ids)) != len(ids) or not np.isfinite(xy).all():
        return None
    return _graph(ids, inter, types, xy, counts, links, sides, map_json)


def lane_graph_from_json(data: dict[str, Any], map_json: Path) -> LaneGraph:
    """The lane graph of a decoded AV2 map (``read_map_json``); ``map_json`` names it in messages.

    Raises:
        DataError: its lane segments do not follow the AV2 schema.
    """
    segments = data.get("lane_segments")
    if not isinstance(segments, dict):
        raise DataError(f"{map_json}: map does not follow the AV2 map schema (no lane_segments object)")
    ids: list[int] = []
    seen_ids: set[int] = set()
    inter: list[bool] = []
    types: list[str] = []
    points: list[float] = []  # x0, y0, x1, y1, ... of every centre line, lane after lane
    counts: list[int] = []  # points of each centre line
    links: list[tuple[object, object]] = []  # (predecessors, successors) as written in the file
    sides: list[tuple[object, object]] = []  # (left, right) neighbour ids as written in the file
    for key, seg in segments.items():
        where = f"{map_json}: lane segment {key!s:.40}"
        if not isinstance(seg, dict):
            raise DataError(f"{where}: not an object")
        if seg.get("centerline") is not None:
            flat = _flat_points(seg["centerline"], where)
        else:
            left = _polyline(seg.get("left_lane_boundary"), where, with_z=True)
            right = _polyline(seg.get("right_lane_boundary"), where, with_z=True)
            if len(left) + len(right) < 3:
                continue  # a degenerate lane: nothing to follow
            try:
                center, _ = compute_midpoint_line(left, right, CENTERLINE_POINTS)
            except (ValueError, ZeroDivisionError, FloatingPointError, IndexError) as exc:
                raise DataError(f"{where}: boundaries av2 cannot average into a centre line ({exc})") from exc
            center = np.asarray(center, dtype=np.float64)[:, :2]
            if not np.isfinite(center).all():
                continue  # zero-length boundaries: av2's interpolation divides by zero
            flat = center.ravel().tolist()
        if len(flat) < 4:
            continue  # a single point: nothing to follow
        lane_id = seg.get("id", key)
        if isinstance(lane_id, bool) or not isinstance(lane_id, (int, str)):
            raise DataError(f"{where}: id {lane_id!r:.40} is not an integer")
        try:
            ids.append(int(lane_id))
        except ValueError as exc:
            raise DataError(f"{where}: id {lane_id!r:.40} is not an integer") from exc
        if ids[-1] in seen_ids:
            raise DataError(f"{where}: lane id {ids[-1]} appears twice")
        seen_ids.add(ids[-1])
        flag = seg.get("is_intersection", False)
        if not isinstance(flag, bool):  # bool("false") would be True
            raise DataError(f"{where}: is_intersection {flag!r:.40} is not true or false")
        inter.append(flag)
        types.append(str(seg.get("lane_type", "VEHICLE")))
        links.append((seg.get("predecessors", []), seg.get("successors", [])))
        sides.append((seg.get("left_neighbor_id"), seg.get("right_neighbor_id")))
        points += flat
        counts.append(len(flat) // 2)
    if not ids:
        raise DataError(f"{map_json}: map has no usable lane segments")
    return _graph(
        ids, inter, types, np.asarray(points, dtype=np.float64).reshape(-1, 2), counts, links, sides, map_json
    )


def _graph(
    ids: list[int],
    inter: list[bool],
    types: list[str],
    xy: FloatArray,
    counts: list[int],
    links: list[tuple[object, object]],
    sides: list[tuple[object, object]],
    map_json: Path,
) -> LaneGraph:
    """The graph of the usable lanes of a map, as ``lane_graph_from_json`` collects them: ids, flags,
    types, their centre lines' points ((P, 2), lane after lane) and point counts, links and neighbours as
    written."""
    row = {lane_id: i for i, lane_id in enumerate(ids)}

    def rows_of(value: object, what: str, lane: int) -> list[int]:
        if value is None:
            return []
        if type(value) is list and all(type(v) is int for v in value):  # plain ids, the usual case
            return [r for v in value if (r := row.get(v)) is not None]
        if not isinstance(value, list) or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) for v in value
        ):
            raise DataError(f"{map_json}: lane segment {ids[lane]} {what} is not a list of ids")
        out = []
        for v in value:
            try:
                r = row.get(int(v))
            except ValueError:
                raise DataError(
                    f"{map_json}: lane segment {ids[lane]} {what} {v!r:.40} is not an id"
                ) from None
            if r is not None:  # links to lanes outside the map's extent are dropped
                out.append(r)
        return out

    def neighbour(value: object, what: str, lane: int) -> int:
        if type(value) is int:  # a plain id, the usual case
            return row.get(value, -1)
        return (rows_of([value], what, lane) or [-1])[0] if value is not None else -1

    # Pieces: each centre line cut at its points. Per-lane sums stay per lane (numpy's pairwise sum).
    per_lane = np.asarray(counts, dtype=np.int64) - 1  # pieces of each lane
    bounds = np.concatenate([[0], np.cumsum(per_lane)])  # piece range of each lane
    last_points = np.cumsum(counts) - 1
    keep = np.ones(len(xy), dtype=bool)
    keep[last_points] = False
    start_point = np.flatnonzero(keep)
    a, b = xy[start_point], xy[start_point + 1]
    step_m = np.hypot(*(b - a).T)
    half = 0.5 * step_m
    direction = np.arctan2(*(b - a)[:, ::-1].T)
    kink = np.angle(np.exp(1j * np.diff(direction)))  # heading change between consecutive pieces
    predecessors = [rows_of(p, "predecessors", i) for i, (p, _) in enumerate(links)]
    successors = [rows_of(q, "successors", i) for i, (_, q) in enumerate(links)]
    around = [[i, *p, *q] for i, (p, q) in enumerate(zip(predecessors, successors, strict=True))]
    return LaneGraph(
        lane_ids=np.asarray(ids, dtype=np.int64),
        is_intersection=np.asarray(inter, dtype=bool),
        lane_type=np.asarray(types, dtype=np.str_),
        length_m=_sums(step_m, bounds[:-1], per_lane),
        turn_rad=_sums(kink, bounds[:-1], per_lane - 1),
        start_heading_rad=direction[bounds[:-1]],
        end_heading_rad=direction[bounds[1:] - 1],
        predecessors=predecessors,
        successors=successors,
        left_neighbor=np.asarray(
            [neighbour(v, "left_neighbor_id", i) for i, (v, _) in enumerate(sides)], dtype=np.int64
        ),
        right_neighbor=np.asarray(
            [neighbour(v, "right_neighbor_id", i) for i, (_, v) in enumerate(sides)], dtype=np.int64
        ),
        piece_start=a,
        piece_end=b,
        piece_lane=np.repeat(np.arange(len(ids)), per_lane),
        piece_vector=b - a,
        piece_length_m=np.maximum(step_m, 1e-9),
        piece_heading_rad=direction,
        tree=cKDTree(0.5 * (a + b)),
        max_half_piece_m=float(half.max()),
        around_offsets=np.concatenate([[0], np.cumsum([len(x) for x in around])]).astype(np.int64),
        around_rows=np.asarray([r for x in around for r in x], dtype=np.int64),
    )


def _sums(values: FloatArray, first: IntArray, count: IntArray) -> FloatArray:
    """(L,) ``values[first[l] : first[l] + count[l]].sum()`` of each l, bit for bit: the slices of one
    length are summed as the rows of one matrix, which numpy sums as it sums each slice alone (the same
    pairwise order); a map has a few distinct lengths and hundreds of lanes."""
    out = np.empty(len(count))
    for n in np.unique(count).tolist():
        rows = np.flatnonzero(count == n)
        out[rows] = values[first[rows, None] + np.arange(n)].sum(axis=1)
    return out


def connector_chain(graph: LaneGraph, lane: int) -> tuple[float, float]:
    """Heading change (rad, positive = left) and length (m) of the junction connector ``lane`` belongs
    to: the chain of intersection lanes through it, followed while each link is the only intersection
    lane before (or after) the current one (maps split long connectors into several segments)."""
    chain = [lane]
    for links, forward in ((graph.predecessors, False), (graph.successors, True)):
        current, seen = lane, {lane}
        while True:
            following = [n for n in links[current] if graph.is_intersection[n] and n not in seen]
            if len(following) != 1:
                break
            current = following[0]
            seen.add(current)
            if forward:
                chain.append(current)
            else:
                chain.insert(0, current)
    turn = float(graph.turn_rad[chain].sum())
    for prev, nxt in itertools.pairwise(chain):  # the kinks where one segment meets the next
        turn += float(np.angle(np.exp(1j * (graph.start_heading_rad[nxt] - graph.end_heading_rad[prev]))))
    return turn, float(graph.length_m[chain].sum())


def lane_side(graph: LaneGraph | LaneGraphs, old: IntArray, new: IntArray) -> IntArray:
    """Where lane ``new`` lies beside lane ``old`` (arrays of rows): +1 left neighbour, -1 right, 0 not
    a neighbour, 2 unknown (the map records no neighbour on either side of ``old`` or its links).
    Neighbours of the lanes just before and after ``old`` count too: the move may happen where one
    segment ends and the next begins. Vectorised over the pairs and the lanes around each ``old``."""
    first, count = graph.around_offsets[old], np.diff(graph.around_offsets)[old]
    pair = np.repeat(np.arange(len(old)), count)
    x = graph.around_rows[np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())]
    left, right = graph.left_neighbor[x], graph.right_neighbor[x]
    is_left = np.bincount(pair, left == new[pair], minlength=len(old)) > 0
    is_right = np.bincount(pair, right == new[pair], minlength=len(old)) > 0
    any_side = np.bincount(pair, (left >= 0) | (right >= 0), minlength=len(old)) > 0
    out: IntArray = np.select([is_left, is_right, any_side], [1, -1, 0], default=2).astype(np.int64)
    return out


def lane_types_for(object_type: str) -> tuple[str, ...]:
    """Lane types a road user of ``object_type`` follows (empty: it does not follow lanes)."""
    if object_type in VEHICLE_TYPES:
        return VEHICLE_LANE_TYPES
    if object_type == "cyclist":
        return CYCLIST_LANE_TYPES
    return ()


def motion_heading(xy: FloatArray) -> tuple[FloatArray, BoolArray]:
    """(A, S, 2) positions (NaN where missing) -> (A, S) heading of motion and (A, S) whether it is
    defined (the chord over ``HEADING_HALF_CHORD_STEPS`` either side is long enough)."""
    d = chord(xy, HEADING_HALF_CHORD_STEPS)
    dx, dy = d[..., 0], d[..., 1]
    # The length np.hypot(dx, dy) must be finite and at least MIN_CHORD_M; only chords of 1e300 m or more
    # (or infinite) can have an infinite length, and those are measured as before.
    moving = at_least(dx, dy, MIN_CHORD_M)
    huge = moving & ~(np.abs(dx) + np.abs(dy) < 1e300)
    if huge.any():
        moving[huge] = np.isfinite(np.hypot(dx[huge], dy[huge]))
    heading = np.arctan2(dy, dx)
    return np.where(moving, heading, np.nan), moving


@dataclass(frozen=True)
class LaneMatch:
    """What A tracks follow, per step (A, S).

    ``lane`` is -1 where a step is off-lane (moving, but no lane of its direction nearby); standing
    steps keep the lane of the last moving step (of the first, before it); invalid steps are -1 with
    ``valid`` False.
    """

    lane: IntArray  # (A, S) row in the graph's lane arrays, or -1
    lateral_m: FloatArray  # (A, S) signed offset from that lane's centre line (+ left), NaN off-lane
    heading_diff_rad: FloatArray  # (A, S) lane direction minus motion heading, NaN off-lane
    moving: BoolArray  # (A, S) the motion heading is defined (``motion_heading``)
    valid: BoolArray  # (A, S)

    @property
    def off_lane(self) -> BoolArray:
        """(A, S) moving steps that follow no lane."""
        return np.asarray(self.valid & self.moving & (self.lane < 0))


@dataclass(frozen=True)
class LaneGraphs:
    """The lane graphs of G maps as one, for matching the tracks of many scenarios in one pass: lanes
    (L, all maps) and pieces (M) concatenated map after map, links and neighbours as rows of the
    concatenation; each map keeps its own KD-tree (a track is matched on its own map only).

    Every array holds the values of the maps' own graphs, so whatever is computed from it element by
    element or lane by lane is what each graph alone gives.
    """

    graphs: tuple[LaneGraph, ...]  # (G,)
    lane_offsets: IntArray  # (G + 1,) lanes of map g: rows lane_offsets[g] : lane_offsets[g + 1]
    piece_offsets: IntArray  # (G + 1,)
    is_intersection: BoolArray  # (L,)
    lane_type: np.ndarray  # (L,) str
    left_neighbor: IntArray  # (L,) row, -1 if none
    right_neighbor: IntArray  # (L,)
    around_offsets: IntArray  # (L + 1,) as ``LaneGraph.around_offsets``
    around_rows: IntArray
    piece_start: FloatArray  # (M, 2)
    piece_lane: IntArray  # (M,) row in the lane arrays
    piece_vector: FloatArray  # (M, 2)
    piece_length_m: FloatArray  # (M,)
    piece_heading_rad: FloatArray  # (M,)

    @classmethod
    def of(cls, graphs: list[LaneGraph]) -> LaneGraphs:
        """The graphs of ``graphs`` (at least one) as one."""
        lane_offsets = np.cumsum([0] + [g.num_lanes for g in graphs]).astype(np.int64)
        piece_offsets = np.cumsum([0] + [len(g.piece_lane) for g in graphs]).astype(np.int64)
        around_offsets = np.cumsum([0] + [len(g.around_rows) for g in graphs]).astype(np.int64)
        lanes = lane_offsets[:-1].tolist()

        def rows(name: str) -> IntArray:  # lane rows, -1 (none) kept
            parts = [getattr(g, name) for g in graphs]
            return np.concatenate([np.where(p >= 0, p + o, p) for p, o in zip(parts, lanes, strict=True)])

        return cls(
            graphs=tuple(graphs),
            lane_offsets=lane_offsets,
            piece_offsets=piece_offsets,
            is_intersection=np.concatenate([g.is_intersection for g in graphs]),
            lane_type=np.concatenate([g.lane_type for g in graphs]),
            left_neighbor=rows("left_neighbor"),
            right_neighbor=rows("right_neighbor"),
            around_offsets=np.concatenate(
                [g.around_offsets[:-1] + o for g, o in zip(graphs, around_offsets.tolist(), strict=False)]
                + [around_offsets[-1:]]
            ),
            around_rows=np.concatenate([g.around_rows + o for g, o in zip(graphs, lanes, strict=True)]),
            piece_start=np.concatenate([g.piece_start for g in graphs]),
            piece_lane=np.concatenate([g.piece_lane + o for g, o in zip(graphs, lanes, strict=True)]),
            piece_vector=np.concatenate([g.piece_vector for g in graphs]),
            piece_length_m=np.concatenate([g.piece_length_m for g in graphs]),
            piece_heading_rad=np.concatenate([g.piece_heading_rad for g in graphs]),
        )

    @property
    def num_lanes(self) -> int:
        return int(self.lane_offsets[-1])

    def connector_chain(self, lane: int) -> tuple[float, float]:
        """``connector_chain`` of lane row ``lane`` on its own map."""
        g = int(np.searchsorted(self.lane_offsets, lane, side="right")) - 1
        return connector_chain(self.graphs[g], lane - int(self.lane_offsets[g]))


def match_tracks(graph: LaneGraph, xy: FloatArray, allowed_types: list[tuple[str, ...]]) -> LaneMatch:
    """Match the steps of A tracks to lanes, all in one vectorised pass.

    Args:
        graph: the map's lanes.
        xy: (A, S, 2) city-frame positions, NaN where a track is invalid.
        allowed_types: (A,) lane types each road user follows (``lane_types_for``).
    """
    return match_tracks_many(LaneGraphs.of([graph]), xy, allowed_types, np.zeros(xy.shape[0], np.int64))


def match_tracks_many(
    graphs: LaneGraphs, xy: FloatArray, allowed_types: list[tuple[str, ...]], map_of_track: IntArray
) -> LaneMatch:
    """``match_tracks`` of A tracks of several scenarios, each on its own map, in one pass: the same
    match for each track as its map alone gives (lane rows are rows of ``graphs``).

    Args:
        graphs: the maps' lanes.
        xy: (A, S, 2) city-frame positions, NaN where a track is invalid.
        allowed_types: (A,) lane types each road user follows (``lane_types_for``).
        map_of_track: (A,) map of each track (an index into ``graphs.graphs``), non-decreasing.
    """
    A, S = xy.shape[:2]
    valid: BoolArray = np.asarray(np.isfinite(xy).all(axis=-1))
    heading, moving = motion_heading(xy)
    lane = np.full((A, S), -1, dtype=np.int64)
    lateral = np.full((A, S), np.nan)
    angle = np.full((A, S), np.nan)
    # Lane types each road user follows: one row per distinct tuple of types, not per track.
    kinds = sorted(set(allowed_types))
    kind_ok = np.asarray([np.isin(graphs.lane_type, t) for t in kinds]).reshape(len(kinds), graphs.num_lanes)
    kind_of = np.asarray([kinds.index(t) for t in allowed_types], dtype=np.int64).reshape(A)
    on_map = np.logical_or.reduceat(kind_ok, graphs.lane_offsets[:-1], axis=1)  # (kinds, G)
    follows: BoolArray = np.asarray(on_map[kind_of, map_of_track])
    qa, qs = np.nonzero(moving & valid & follows[:, None])
    if qa.size:
        points, heading_q, kind_q = xy[qa, qs], heading[qa, qs], kind_of[qa]  # (Q, 2), (Q,), (Q,)
        G = len(graphs.graphs)
        bounds = np.searchsorted(map_of_track[qa], np.arange(G + 1)).tolist()  # queries of each map
        map_first = 0
        while map_first < G:  # blocks of whole maps, at most MATCH_BLOCK_STEPS steps unless one map has more
            end = map_first + 1
            while end < G and bounds[end + 1] - bounds[map_first] <= MATCH_BLOCK_STEPS:
                end += 1
            lo, hi = bounds[map_first], bounds[end]
            if hi > lo:
                block = slice(lo, hi)
                found, lane_q, lateral_q, angle_q = _match_block(
                    graphs,
                    range(map_first, end),
                    bounds,
                    points[block],
                    heading_q[block],
                    kind_q[block],
                    kind_ok,
                )
                fa, fs = qa[block][found], qs[block][found]
                lane[fa, fs], lateral[fa, fs], angle[fa, fs] = lane_q, lateral_q, angle_q
            map_first = end
    # Standing steps keep the lane (and offset) of the last moving step, or of the first one where the
    # track starts standing (queued at a stop line): jitter says nothing.
    steps = np.broadcast_to(np.arange(S), (A, S))
    last = np.maximum.accumulate(np.where(moving & valid, steps, -1), axis=1)
    first = np.minimum.accumulate(np.where(moving & valid, steps, S)[:, ::-1], axis=1)[:, ::-1]
    source = np.where(last >= 0, last, np.where(first < S, first, -1))
    carry = valid & ~moving & (source >= 0)
    if carry.any():
        ca, cs = np.nonzero(carry)
        src = source[ca, cs]
        lane[ca, cs] = lane[ca, src]
        lateral[ca, cs] = lateral[ca, src]
        angle[ca, cs] = angle[ca, src]
    return LaneMatch(lane, lateral, angle, moving & valid, valid)


#: Moving steps matched at a time: the (steps, candidates) grids of a block stay in the CPU's caches
#: (about 4,000 steps: a few scenarios; a chunk of 64 scenarios in one pass took longer than one
#: scenario at a time). Every step is matched on its own, so blocks change nothing.
MATCH_BLOCK_STEPS = 4096


def _match_block(
    graphs: LaneGraphs,
    maps: range,
    bounds: list[int],
    points: FloatArray,
    heading: FloatArray,
    kind: IntArray,
    kind_ok: BoolArray,
) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Match Q moving steps of the tracks on ``maps`` (the steps of map g: ``bounds[g] : bounds[g + 1]``,
    less ``bounds[maps[0]]``) to the nearest usable centre-line piece of their map.

    Args:
        points: (Q, 2) positions; heading: (Q,) motion headings; kind: (Q,) row of ``kind_ok`` (lane
            types each road user follows, by lane) of each step.

    Returns:
        (F,) the steps that found a piece, and for each its lane row, lateral offset and heading diff.
    """
    Q, M = len(points), len(graphs.piece_lane)
    # Each map's tree gives its own steps' candidates, as rows of the (Q, K) grid; K is the widest
    # map's, narrower ones padded with M (not in reach), which no choice below can take.
    sizes = [len(graphs.graphs[g].piece_lane) for g in maps]
    k = min(CANDIDATES, max(sizes))
    cand = np.full((Q, k), M, dtype=np.int64)
    for g, size in zip(maps, sizes, strict=True):
        lo, hi = bounds[g] - bounds[maps[0]], bounds[g + 1] - bounds[maps[0]]
        if lo == hi:
            continue
        graph, k_g = graphs.graphs[g], min(CANDIDATES, size)
        radius = graph.max_half_piece_m + MAX_LATERAL_M
        _, local = graph.tree.query(points[lo:hi], k=k_g, distance_upper_bound=radius)
        local = np.asarray(local).reshape(hi - lo, k_g)  # size where fewer than k_g pieces are in reach
        cand[lo:hi, :k_g] = np.where(local < size, local + graphs.piece_offsets[g], M)
    # Only the (step, piece) pairs in reach are measured; the choice is made on the (Q, K) grid as
    # before, so ties keep going to the nearer midpoint.
    pair_cell = np.flatnonzero(cand.ravel() < M)  # (P,) pairs, as cells of the grid
    pq_ = pair_cell // k
    c = cand.ravel()[pair_cell]
    # x and y as separate columns: the same arithmetic as on (P, 2) rows, element for element.
    ab_x, ab_y = graphs.piece_vector[:, 0][c], graphs.piece_vector[:, 1][c]
    length = graphs.piece_length_m[c]
    p_x = points[:, 0][pq_] - graphs.piece_start[:, 0][c]
    p_y = points[:, 1][pq_] - graphs.piece_start[:, 1][c]
    t = np.clip((p_x * ab_x + p_y * ab_y) / length**2, 0.0, 1.0)
    dist = np.hypot(p_x - ab_x * t, p_y - ab_y * t)
    near = np.flatnonzero(dist <= MAX_LATERAL_M)
    q_near, c_near = pq_[near], c[near]
    diff = (graphs.piece_heading_rad[c_near] - heading[q_near] + np.pi) % (2 * np.pi) - np.pi
    usable = near[(np.abs(diff) <= MAX_HEADING_DIFF_RAD) & kind_ok[kind[q_near], graphs.piece_lane[c_near]]]
    grid = np.full((Q, k), np.inf)
    grid.ravel()[pair_cell[usable]] = dist[usable]
    pair = np.full((Q, k), -1, dtype=np.int64)
    pair.ravel()[pair_cell[near]] = np.arange(len(near))
    best = grid.argmin(axis=1)
    found = np.flatnonzero(np.isfinite(grid[np.arange(Q), best]))
    chosen = pair[found, best[found]]  # into near
    e = near[chosen]  # into the pairs
    lateral = (ab_x[e] * p_y[e] - ab_y[e] * p_x[e]) / length[e]  # cross product: + left
    return found, graphs.piece_lane[c[e]], lateral, diff[chosen]
