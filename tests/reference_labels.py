"""The label path as it stood before issue 24 (trajemb at c627f53), kept verbatim as the reference that
``test_label_identity.py`` compares the faster code against: lane-graph parsing, map matching, the
lane-graph and shape direction rules, and the truth sidecar reader. Thresholds come from trajemb itself,
so that a deliberate change of a rule's constant moves both; only the code paths are frozen here.
"""

from __future__ import annotations

import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from av2.geometry.interpolate import compute_midpoint_line
from scipy.spatial import cKDTree

from trajemb.core.errors import DataError
from trajemb.core.jsonio import read_json_object
from trajemb.data.frames import wrap_angle_rad
from trajemb.data.labels import (
    CURVATURE_HALF_STEPS,
    CURVATURE_MIN_ARC_M,
    HEADING_HALF_CHORD_STEPS,
    HEADING_MIN_CHORD_M,
    LANE_CHANGE_MAX_HEADING_CHANGE_RAD,
    LANE_CHANGE_MIN_RESIDUAL_M,
    LANE_JUMP_MIN_M,
    ORDINARY_MAX_HEADING_DIFF_RAD,
    PASSAGE_MAX_OFF_LANE_M,
    PASSAGE_MIN_COVERAGE,
    PASSAGE_MIN_GAP_M,
    PASSAGE_TURN_MIN_RAD,
    PASSAGE_U_TURN_MIN_RAD,
    SHOWN_MIN_RAD,
    STATIONARY_MAX_SPEED_MPS,
    TURN_MIN_CURVATURE_PER_M,
    TURN_MIN_HEADING_CHANGE_RAD,
    U_TURN_MIN_HEADING_CHANGE_RAD,
    U_TURN_MIN_TIGHT_HEADING_CHANGE_RAD,
    arc_lateral_offset_m,
    path_length_m,
)
from trajemb.data.lanes import (
    CANDIDATES,
    CENTERLINE_POINTS,
    CYCLIST_LANE_TYPES,
    MAX_HEADING_DIFF_RAD,
    MAX_LATERAL_M,
    MAX_MAP_JSON_BYTES,
    MIN_CHORD_M,
    VEHICLE_LANE_TYPES,
)
from trajemb.data.schema import (
    STEP_S,
    UNKNOWN_MANOEUVRE,
    VEHICLE_TYPES,
    DirectionClass,
    ManoeuvreTruth,
    TrackSet,
)
from trajemb.data.truth import (
    MAX_SPANS,
    MIN_SPAN_COVERAGE,
    ROUTE_KINDS,
    SPAN_PRIORITY,
    TRUTH_FORMAT,
    TRUTH_METADATA_KEY,
    TRUTH_SCHEMA,
)

BoolArray = FloatArray = IntArray = StrArray = np.ndarray


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
    piece_heading_rad: FloatArray  # (M,) direction of each piece
    tree: Any  # cKDTree over piece midpoints
    max_half_piece_m: float

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


def read_lane_graph(map_json: Path) -> LaneGraph:
    """The lane graph of an AV2 map file (motion-forecasting or sensor-log layout).

    Raises:
        DataError: the file is missing, not JSON, or its lane segments do not follow the AV2 schema.
    """
    map_json = Path(map_json)
    data = read_json_object(map_json, "map", MAX_MAP_JSON_BYTES)
    segments = data.get("lane_segments")
    if not isinstance(segments, dict):
        raise DataError(f"{map_json}: map does not follow the AV2 map schema (no lane_segments object)")
    ids: list[int] = []
    seen_ids: set[int] = set()
    inter: list[bool] = []
    types: list[str] = []
    starts: list[FloatArray] = []
    ends: list[FloatArray] = []
    owner: list[IntArray] = []
    links: list[tuple[object, object]] = []  # (predecessors, successors) as written in the file
    sides: list[tuple[object, object]] = []  # (left, right) neighbour ids as written in the file
    for key, seg in segments.items():
        where = f"{map_json}: lane segment {key!s:.40}"
        if not isinstance(seg, dict):
            raise DataError(f"{where}: not an object")
        if seg.get("centerline") is not None:
            center = _polyline(seg["centerline"], where)
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
        if len(center) < 2 or not np.isfinite(center).all():
            continue  # zero-length boundaries: av2's interpolation divides by zero
        lane = len(ids)
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
        starts.append(center[:-1])
        ends.append(center[1:])
        owner.append(np.full(len(center) - 1, lane, dtype=np.int64))
    if not ids:
        raise DataError(f"{map_json}: map has no usable lane segments")
    a, b = np.concatenate(starts), np.concatenate(ends)
    half = 0.5 * np.hypot(*(b - a).T)
    row = {lane_id: i for i, lane_id in enumerate(ids)}

    def rows_of(value: object, what: str, lane: int) -> list[int]:
        if value is None:
            return []
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

    direction = [np.arctan2(*(e - s_)[:, ::-1].T) for s_, e in zip(starts, ends, strict=True)]
    return LaneGraph(
        lane_ids=np.asarray(ids, dtype=np.int64),
        is_intersection=np.asarray(inter, dtype=bool),
        lane_type=np.asarray(types, dtype=np.str_),
        length_m=np.asarray([np.hypot(*(e - s_).T).sum() for s_, e in zip(starts, ends, strict=True)]),
        turn_rad=np.asarray([np.angle(np.exp(1j * np.diff(d))).sum() for d in direction]),
        start_heading_rad=np.asarray([d[0] for d in direction]),
        end_heading_rad=np.asarray([d[-1] for d in direction]),
        predecessors=[rows_of(p, "predecessors", i) for i, (p, _) in enumerate(links)],
        successors=[rows_of(q, "successors", i) for i, (_, q) in enumerate(links)],
        left_neighbor=np.asarray(
            [
                (rows_of([v], "left_neighbor_id", i) or [-1])[0] if v is not None else -1
                for i, (v, _) in enumerate(sides)
            ],
            dtype=np.int64,
        ),
        right_neighbor=np.asarray(
            [
                (rows_of([v], "right_neighbor_id", i) or [-1])[0] if v is not None else -1
                for i, (_, v) in enumerate(sides)
            ],
            dtype=np.int64,
        ),
        piece_start=a,
        piece_end=b,
        piece_lane=np.concatenate(owner),
        piece_heading_rad=np.concatenate(direction),
        tree=cKDTree(0.5 * (a + b)),
        max_half_piece_m=float(half.max()),
    )


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


def lane_side(graph: LaneGraph, old: IntArray, new: IntArray) -> IntArray:
    """Where lane ``new`` lies beside lane ``old`` (arrays of rows): +1 left neighbour, -1 right, 0 not
    a neighbour, 2 unknown (the map records no neighbour on either side of ``old`` or its links).
    Neighbours of the lanes just before and after ``old`` count too: the move may happen where one
    segment ends and the next begins."""
    out = np.zeros(len(old), dtype=np.int64)
    for i, (o, n) in enumerate(zip(old.tolist(), new.tolist(), strict=True)):
        around = [o, *graph.predecessors[o], *graph.successors[o]]
        lefts = {int(graph.left_neighbor[x]) for x in around} - {-1}
        rights = {int(graph.right_neighbor[x]) for x in around} - {-1}
        out[i] = 1 if n in lefts else -1 if n in rights else 0 if lefts or rights else 2
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
    S = xy.shape[1]
    i = np.arange(S)
    chord = (
        xy[:, np.minimum(i + HEADING_HALF_CHORD_STEPS, S - 1)]
        - xy[:, np.maximum(i - HEADING_HALF_CHORD_STEPS, 0)]
    )
    length = np.hypot(chord[..., 0], chord[..., 1])
    moving = np.isfinite(length) & (length >= MIN_CHORD_M)
    heading = np.arctan2(chord[..., 1], chord[..., 0])
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


def match_tracks(graph: LaneGraph, xy: FloatArray, allowed_types: list[tuple[str, ...]]) -> LaneMatch:
    """Match the steps of A tracks to lanes, all in one vectorised pass.

    Args:
        graph: the map's lanes.
        xy: (A, S, 2) city-frame positions, NaN where a track is invalid.
        allowed_types: (A,) lane types each road user follows (``lane_types_for``).
    """
    A, S = xy.shape[:2]
    valid: BoolArray = np.asarray(np.isfinite(xy).all(axis=-1))
    heading, moving = motion_heading(xy)
    lane = np.full((A, S), -1, dtype=np.int64)
    lateral = np.full((A, S), np.nan)
    angle = np.full((A, S), np.nan)
    type_ok = np.asarray([np.isin(graph.lane_type, t) for t in allowed_types]).reshape(A, graph.num_lanes)
    follows: BoolArray = np.asarray(type_ok.any(axis=1))
    qa, qs = np.nonzero(moving & valid & follows[:, None])
    if qa.size:
        points = xy[qa, qs]  # (Q, 2)
        radius = graph.max_half_piece_m + MAX_LATERAL_M
        k = min(CANDIDATES, len(graph.piece_lane))
        _, cand = graph.tree.query(points, k=k, distance_upper_bound=radius)
        cand = np.asarray(cand).reshape(len(qa), k)  # (Q, K)
        ok = cand < len(graph.piece_lane)
        cand = np.where(ok, cand, 0)
        a, b = graph.piece_start[cand], graph.piece_end[cand]  # (Q, K, 2)
        ab = b - a
        length = np.maximum(np.hypot(ab[..., 0], ab[..., 1]), 1e-9)
        p = points[:, None, :] - a
        t = np.clip((p[..., 0] * ab[..., 0] + p[..., 1] * ab[..., 1]) / length**2, 0.0, 1.0)
        dist = np.hypot(p[..., 0] - ab[..., 0] * t, p[..., 1] - ab[..., 1] * t)
        side = (ab[..., 0] * p[..., 1] - ab[..., 1] * p[..., 0]) / length  # cross product: + left
        diff = (graph.piece_heading_rad[cand] - heading[qa, qs][:, None] + np.pi) % (2 * np.pi) - np.pi
        piece_lane = graph.piece_lane[cand]
        usable = ok & (dist <= MAX_LATERAL_M) & (np.abs(diff) <= MAX_HEADING_DIFF_RAD)
        usable &= type_ok[qa[:, None], piece_lane]
        best = np.where(usable, dist, np.inf).argmin(axis=1)
        q = np.arange(len(qa))
        found = usable[q, best]
        lane[qa, qs] = np.where(found, piece_lane[q, best], -1)
        lateral[qa, qs] = np.where(found, side[q, best], np.nan)
        angle[qa, qs] = np.where(found, diff[q, best], np.nan)
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


# ---- trajemb/data/labels.py ----


def heading_increments_rad(xy: FloatArray) -> FloatArray:
    """(W, T, 2) -> (W, T) signed heading change at each step (positive = left), 0 where standing.

    The heading at step i is the direction of the chord from step i-2 to i+2 (clipped at the ends), so
    jitter is averaged over 0.4 s while the whole window is covered; chords shorter than
    ``HEADING_MIN_CHORD_M`` (standing still) contribute no change, and a moving step is compared with
    the previous moving step.
    """
    T = xy.shape[1]
    i = np.arange(T)
    chord = (
        xy[:, np.minimum(i + HEADING_HALF_CHORD_STEPS, T - 1)]
        - xy[:, np.maximum(i - HEADING_HALF_CHORD_STEPS, 0)]
    )
    moving = np.hypot(chord[..., 0], chord[..., 1]) >= HEADING_MIN_CHORD_M
    heading = np.arctan2(chord[..., 1], chord[..., 0])
    # Compare each moving step with the previous moving step (carry the last moving heading forward).
    idx = np.where(moving, i[None, :], -1)
    last_moving = np.maximum.accumulate(idx, axis=1)
    prev_moving = np.concatenate([np.full((xy.shape[0], 1), -1), last_moving[:, :-1]], axis=1)
    has_prev = moving & (prev_moving >= 0)
    prev_heading = np.take_along_axis(heading, np.maximum(prev_moving, 0), axis=1)
    return np.asarray(np.where(has_prev, wrap_angle_rad(heading - prev_heading), 0.0), dtype=np.float64)


def total_heading_change_rad(xy: FloatArray) -> FloatArray:
    """Signed, unwrapped heading change along each path (positive = left / counter-clockwise).

    Args:
        xy: (W, T, 2) positions in any frame.
    """
    return np.asarray(heading_increments_rad(xy).sum(axis=1), dtype=np.float64)


def tight_heading_change_rad(xy: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Heading change accumulated where the path is tighter than ``TURN_MIN_CURVATURE_PER_M``, and the
    largest curvature, of (W, T, 2) paths: (W,) radians (positive = left) and (W,) 1/m."""
    T = xy.shape[1]
    dtheta = heading_increments_rad(xy)
    theta = np.cumsum(dtheta, axis=1)
    step = np.hypot(*np.diff(xy, axis=1).transpose(2, 0, 1))
    s = np.concatenate([np.zeros((xy.shape[0], 1)), np.cumsum(step, axis=1)], axis=1)
    i = np.arange(T)
    hi, lo = np.minimum(i + CURVATURE_HALF_STEPS, T - 1), np.maximum(i - CURVATURE_HALF_STEPS, 0)
    arc = s[:, hi] - s[:, lo]
    curvature = np.where(
        arc >= CURVATURE_MIN_ARC_M, (theta[:, hi] - theta[:, lo]) / np.maximum(arc, 1e-9), 0.0
    )
    tight = np.abs(curvature) >= TURN_MIN_CURVATURE_PER_M
    return (
        np.asarray((dtheta * tight).sum(axis=1), dtype=np.float64),
        np.asarray(np.abs(curvature).max(axis=1), dtype=np.float64),
    )


def direction_class(xy_agent: FloatArray) -> tuple[StrArray, FloatArray, FloatArray]:
    """Classify each window's manoeuvre from its shape alone (the rules of ``direction_rules``).

    Args:
        xy_agent: (W, T, 2) windows in their agent frame.

    Returns:
        (W,) DirectionClass values, (W,) total heading change (rad), (W,) lateral offset of the end
        point (m, +y left).
    """
    dtheta = total_heading_change_rad(xy_agent)
    tight, _ = tight_heading_change_rad(xy_agent)
    lateral = xy_agent[:, -1, 1].astype(np.float64)
    length = path_length_m(xy_agent)
    residual = lateral - arc_lateral_offset_m(length, dtheta)
    speed = length / ((xy_agent.shape[1] - 1) * STEP_S)
    lane_change = (np.abs(dtheta) < LANE_CHANGE_MAX_HEADING_CHANGE_RAD) & (
        np.abs(residual) >= LANE_CHANGE_MIN_RESIDUAL_M
    )
    u_turn = (np.abs(dtheta) >= U_TURN_MIN_HEADING_CHANGE_RAD) | (
        np.abs(tight) >= U_TURN_MIN_TIGHT_HEADING_CHANGE_RAD
    )
    labels = np.select(
        [
            speed < STATIONARY_MAX_SPEED_MPS,
            u_turn,
            tight >= TURN_MIN_HEADING_CHANGE_RAD,
            tight <= -TURN_MIN_HEADING_CHANGE_RAD,
            lane_change & (residual > 0),
            lane_change & (residual < 0),
        ],
        [
            DirectionClass.STATIONARY.value,
            DirectionClass.U_TURN.value,
            DirectionClass.LEFT.value,
            DirectionClass.RIGHT.value,
            DirectionClass.LANE_CHANGE_LEFT.value,
            DirectionClass.LANE_CHANGE_RIGHT.value,
        ],
        default=DirectionClass.STRAIGHT.value,
    )
    return labels.astype(np.str_), dtheta, lateral


def _passage_kind(angle_rad: float) -> str:
    if abs(angle_rad) >= PASSAGE_U_TURN_MIN_RAD:
        return DirectionClass.U_TURN.value
    if angle_rad >= PASSAGE_TURN_MIN_RAD:
        return DirectionClass.LEFT.value
    if angle_rad <= -PASSAGE_TURN_MIN_RAD:
        return DirectionClass.RIGHT.value
    return DirectionClass.STRAIGHT.value


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) step of each run of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True)
    )


#: Priority of manoeuvres when a window shows several (as ``trajemb.data.truth.SPAN_PRIORITY``).
_PRIORITY: tuple[str, ...] = (
    DirectionClass.U_TURN.value,
    DirectionClass.LEFT.value,
    DirectionClass.RIGHT.value,
    DirectionClass.LANE_CHANGE_LEFT.value,
    DirectionClass.LANE_CHANGE_RIGHT.value,
)


def map_direction_class(
    tracks: TrackSet, graph: LaneGraph, track_idx: IntArray, start_step: IntArray, num_steps: int
) -> StrArray:
    """Direction class of W windows from the lanes their tracks follow (rule in the module docstring).

    Args:
        tracks: the scenario's tracks (city frame).
        graph: its map's lanes.
        track_idx: (W,) track of each window; start_step: (W,) its first step; num_steps: T.

    Returns:
        (W,) DirectionClass values, or ``""`` where the map cannot decide (the road user follows no
        lanes, or the window lies mostly off the map): ``direction_class`` decides there.
    """
    out = np.full(len(track_idx), "", dtype="<U32")
    tracks_used = [a for a in np.unique(track_idx).tolist() if lane_types_for(str(tracks.object_types[a]))]
    if not tracks_used:
        return out.astype(np.str_)
    matches = match_tracks(
        graph, tracks.xy_city[tracks_used], [lane_types_for(str(tracks.object_types[a])) for a in tracks_used]
    )
    # Chords reaching into missing steps are NaN and count as standing: no heading change.
    theta_all = np.cumsum(heading_increments_rad(tracks.xy_city[tracks_used]), axis=1)
    xy_all = np.nan_to_num(tracks.xy_city[tracks_used])
    S = tracks.num_steps
    for j, a in enumerate(tracks_used):
        rows = np.flatnonzero(track_idx == a)
        lane, lat, valid = matches.lane[j], matches.lateral_m[j], matches.valid[j]
        off_lane = matches.off_lane[j]
        step = np.hypot(*np.diff(xy_all[j], axis=0).T) * (valid[1:] & valid[:-1])
        cum = np.concatenate([[0.0], np.cumsum(step)])  # (S,) path length
        theta = theta_all[j]
        on_junction = (lane >= 0) & graph.is_intersection[np.maximum(lane, 0)]
        ordinary = (
            (lane >= 0)
            & ~on_junction
            & (np.abs(np.nan_to_num(matches.heading_diff_rad[j])) <= ORDINARY_MAX_HEADING_DIFF_RAD)
        )
        in_passage = valid & ~ordinary & ((lane >= 0) | matches.moving[j])
        for b, e in _runs(valid & ordinary):  # short plain stretches inside a passage join it
            if (
                0 < b
                and e < S - 1
                and in_passage[b - 1]
                and in_passage[e + 1]
                and cum[e] - cum[b] < PASSAGE_MIN_GAP_M
            ):
                in_passage[b : e + 1] = True
        off_map = np.zeros(S, dtype=bool)
        passages: list[tuple[int, int, float, str]] = []  # first, last step, reference length, kind
        for b, e in _runs(in_passage):
            observed = cum[e] - cum[b]
            if off_lane[b : e + 1].mean() > 0.5 and observed > PASSAGE_MAX_OFF_LANE_M:
                off_map[b : e + 1] = True
                continue
            bounded = (
                b > 0 and e < S - 1 and valid[b - 1] and valid[e + 1] and ordinary[b - 1] and ordinary[e + 1]
            )
            junction_steps = np.flatnonzero(on_junction[b : e + 1])
            angle, length = float(theta[min(e + 1, S - 1)] - theta[max(b - 1, 0)]), observed
            if not bounded and junction_steps.size:
                # The track starts or ends inside a connector: the map knows the rest of it. Where
                # connectors overlap the matched one may be another's, so the map may extend a turn
                # the track already shows, never start or reverse one.
                chain_rad, chain_m = connector_chain(graph, int(lane[b + junction_steps[-1]]))
                if abs(angle) >= SHOWN_MIN_RAD and np.sign(chain_rad) == np.sign(angle):
                    angle = chain_rad if abs(chain_rad) > abs(angle) else angle
                    length = max(observed, chain_m)
            kind = _passage_kind(angle)
            if kind != DirectionClass.STRAIGHT.value and length > 0:
                passages.append((b, e, length, kind))
        # Lane changes: the matched lane switches between plainly followed lanes to a neighbour (as the
        # map records neighbours; by the sign of the jump of the offset where it records none).
        switch = np.flatnonzero(ordinary[1:] & ordinary[:-1] & (lane[1:] != lane[:-1])) + 1
        jump = np.nan_to_num(lat[switch] - lat[switch - 1])
        side = lane_side(graph, lane[switch - 1], lane[switch])
        side = np.where(side == 2, -np.sign(jump), side)  # + = left
        event = np.zeros(S)
        event[switch] = np.where(np.abs(jump) >= LANE_JUMP_MIN_M, side, 0.0)
        events = np.concatenate([[0.0], np.cumsum(event)])  # events[i] = sum of event[:i]
        first, last = start_step[rows], start_step[rows] + num_steps - 1
        labels = np.full(len(rows), DirectionClass.STRAIGHT.value, dtype="<U32")
        net = events[last + 1] - events[first + 1]  # lane changes strictly inside the window
        labels[net > 0] = DirectionClass.LANE_CHANGE_LEFT.value
        labels[net < 0] = DirectionClass.LANE_CHANGE_RIGHT.value
        shown: dict[str, np.ndarray] = {}
        for b, e, length, kind in passages:
            overlap = cum[np.minimum(last, e)] - cum[np.maximum(first, b)]
            covered = overlap >= PASSAGE_MIN_COVERAGE * length
            shown[kind] = shown.get(kind, np.zeros(len(rows), dtype=bool)) | covered
        for kind in reversed(_PRIORITY[:3]):
            if kind in shown:
                labels[shown[kind]] = kind
        off_share = np.asarray([off_map[f : f + num_steps].mean() for f in first.tolist()])
        moved = cum[last] - cum[first]
        labels[moved < STATIONARY_MAX_SPEED_MPS * (num_steps - 1) * STEP_S] = DirectionClass.STATIONARY.value
        labels[off_share >= 0.5] = ""
        out[rows] = labels
    return out.astype(np.str_)


# ---- trajemb/data/truth.py ----


def read_truth(path: Path, track_ids: StrArray, num_steps: int) -> ManoeuvreTruth:
    """Read a sidecar and align it with ``track_ids`` (the ``TrackSet``'s order).

    Raises:
        DataError: unreadable file, other columns or format, a track of the scenario missing from it,
            route progress of another length than the scenario or not finite where given, unknown kinds.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: not a regular file")
        parquet = pq.ParquetFile(path)
        if (parquet.schema_arrow.metadata or {}).get(TRUTH_METADATA_KEY) != TRUTH_FORMAT:
            raise DataError(f"{path}: not a trajemb truth sidecar of format {TRUTH_FORMAT.decode()}")
        if not parquet.schema_arrow.remove_metadata().equals(TRUTH_SCHEMA):
            raise DataError(f"{path}: truth sidecar columns {parquet.schema_arrow.names} are not ours")
        table = parquet.read()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable truth sidecar ({exc})") from exc
    rows = {tid: i for i, tid in enumerate(table.column("track_id").to_pylist())}
    missing = [t for t in track_ids.tolist() if t not in rows]
    if missing or len(rows) != table.num_rows:
        detail = f"track {missing[0]!r} is missing" if missing else "a track id appears twice"
        raise DataError(f"{path}: truth sidecar does not match its scenario ({detail})")
    order = np.asarray([rows[t] for t in track_ids.tolist()], dtype=np.int64)
    table = table.take(pa.array(order))
    kinds = np.asarray(table.column("route_kind").to_pylist(), dtype=np.str_)
    unknown = sorted(set(kinds.tolist()) - set(ROUTE_KINDS))
    if unknown:
        raise DataError(f"{path}: unknown route kind(s) {unknown[:3]}; expected {', '.join(ROUTE_KINDS)}")
    s_lists = table.column("route_s_m").to_pylist()
    if any(s is None or len(s) != num_steps for s in s_lists):
        raise DataError(f"{path}: route progress is not {num_steps} steps long for every track")
    route_s = np.asarray(s_lists, dtype=np.float64).reshape(len(order), num_steps)
    spans = [table.column(c).to_pylist() for c in ("span_kind", "span_start_m", "span_end_m")]
    E = max([len(k or ()) for k in spans[0]], default=0)
    if E > MAX_SPANS:
        raise DataError(f"{path}: a route with {E} manoeuvres (at most {MAX_SPANS})")
    span_kind = np.full((len(order), E), "", dtype="<U32")
    span_start = np.full((len(order), E), np.nan)
    span_end = np.full((len(order), E), np.nan)
    for a, (k, lo, hi) in enumerate(zip(*spans, strict=True)):
        if k is None or lo is None or hi is None or not len(k) == len(lo) == len(hi):
            raise DataError(f"{path}: manoeuvre lists of unequal length for track {track_ids[a]!r}")
        span_kind[a, : len(k)] = k
        span_start[a, : len(k)] = lo
        span_end[a, : len(k)] = hi
    bad_kind = sorted(set(span_kind[span_kind != ""].tolist()) - set(SPAN_PRIORITY))
    if bad_kind:
        raise DataError(f"{path}: unknown manoeuvre kind(s) {bad_kind[:3]}")
    used = span_kind != ""
    finite = np.isfinite(span_start) & np.isfinite(span_end)
    if (used & ~(finite & (span_end > span_start))).any():
        raise DataError(f"{path}: a manoeuvre with a non-finite or empty extent")
    if not np.isfinite(route_s[~np.isnan(route_s)]).all():
        raise DataError(f"{path}: infinite route progress")
    return ManoeuvreTruth(kinds, route_s, span_kind.astype(np.str_), span_start, span_end)


def window_true_manoeuvre(
    truth: ManoeuvreTruth | None, track_idx: IntArray, start_step: IntArray, num_steps: int
) -> StrArray:
    """The true label of each window (rule in the module docstring).

    Args:
        truth: the scenario's ground truth, or None (every window ``unknown``).
        track_idx: (W,) row of each window's track in ``truth``.
        start_step: (W,) first step of each window.
        num_steps: T.

    Returns:
        (W,) DirectionClass values, or ``unknown``.
    """
    W = len(track_idx)
    if truth is None:
        return np.repeat(np.asarray([UNKNOWN_MANOEUVRE], dtype=np.str_), W)
    s_first = truth.route_s_m[track_idx, start_step]
    s_last = truth.route_s_m[track_idx, start_step + num_steps - 1]
    labels = np.full(W, DirectionClass.STRAIGHT.value, dtype="<U32")
    if truth.span_kind.shape[1]:
        kind = truth.span_kind[track_idx]  # (W, E)
        lo, hi = truth.span_start_m[track_idx], truth.span_end_m[track_idx]
        overlap = np.minimum(s_last[:, None], hi) - np.maximum(s_first[:, None], lo)
        covered = (kind != "") & (overlap >= MIN_SPAN_COVERAGE * (hi - lo))
        for name in reversed(SPAN_PRIORITY):  # later assignments win: highest priority last
            labels[(covered & (kind == name)).any(axis=1)] = name
    duration_s = (num_steps - 1) * STEP_S
    stationary = (s_last - s_first) < STATIONARY_MAX_SPEED_MPS * duration_s
    labels[stationary] = DirectionClass.STATIONARY.value
    return labels.astype(np.str_)
