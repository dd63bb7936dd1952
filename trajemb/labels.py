"""Window labels for colouring and cluster quality: direction class and speed bin.

Two rules decide the direction class, measured against the synthetic generator's ground truth
(``trajemb.truth``; ``scripts/label_quality.py`` prints the confusion matrices):

* **On the lane graph** (``map_direction_class``; every AV2 and synthetic scenario has a map): the
  track is matched to the lanes it follows (``trajemb.lanes``). A *passage* is a stretch on junction
  connectors (``is_intersection`` lanes) or briefly off every lane (a U-turn through a median opening);
  its manoeuvre comes from the track's heading change across it. A window that shows at least half of a
  passage takes its manoeuvre; a window in which the track moves to a neighbouring lane (its matched
  lane switches with a jump of about a lane width in the lateral offset) is a lane change. The same
  rule as the ground truth's, read from the map instead of the generator.
* **From the shape alone** (``direction_class``; user queries, road users that follow no lanes, and
  stretches off the map): heading change accumulated where the path is tight (curvature radius below
  ``1 / TURN_MIN_CURVATURE_PER_M``: junction turns are tight, bends of a road are not), the total
  heading change, and the lateral offset of the end point that an arc would not explain.

Thresholds are module constants so that they are named and tested.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trajemb.frames import wrap_angle_rad
from trajemb.schema import STEP_S, DirectionClass, FloatArray, IntArray, StrArray

if TYPE_CHECKING:
    from trajemb.lanes import LaneGraph
    from trajemb.schema import TrackSet

STATIONARY_MAX_SPEED_MPS: float = 0.5
HEADING_HALF_CHORD_STEPS: int = 2
HEADING_MIN_CHORD_M: float = 0.4
#: Curvature is the heading change over ``CURVATURE_HALF_STEPS`` either side of a step divided by the
#: path length there (at least ``CURVATURE_MIN_ARC_M``, so that crawling jitter is not curvature).
CURVATURE_HALF_STEPS: int = 3
CURVATURE_MIN_ARC_M: float = 2.0
#: Tighter than this (1/m: a 25 m radius) is a turn; bends of roads are wider.
TURN_MIN_CURVATURE_PER_M: float = 1.0 / 25.0
#: Shape rule: heading change through tight stretches that makes a turn, and a U-turn.
TURN_MIN_HEADING_CHANGE_RAD: float = float(np.deg2rad(30.0))
U_TURN_MIN_HEADING_CHANGE_RAD: float = float(np.deg2rad(135.0))
U_TURN_MIN_TIGHT_HEADING_CHANGE_RAD: float = float(np.deg2rad(100.0))
LANE_CHANGE_MAX_HEADING_CHANGE_RAD: float = float(np.deg2rad(10.0))
LANE_CHANGE_MIN_RESIDUAL_M: float = 2.5
#: Lane-graph rule: a passage's heading change that makes it a turn, and a U-turn (the generator's
#: junction connectors: under 35 degrees straight, over 150 a U-turn).
PASSAGE_TURN_MIN_RAD: float = float(np.deg2rad(35.0))
PASSAGE_U_TURN_MIN_RAD: float = float(np.deg2rad(135.0))
#: Share of a passage a window must show to take its manoeuvre (as ``trajemb.truth.MIN_SPAN_COVERAGE``).
PASSAGE_MIN_COVERAGE: float = 0.5
#: Off-lane stretches longer than this (m) are off the map (a car park, an unmapped street), not a
#: passage; windows mostly there fall back to the shape rule.
PASSAGE_MAX_OFF_LANE_M: float = 35.0
#: A truncated passage must itself turn by this much (rad) before its connector may extend it.
SHOWN_MIN_RAD: float = float(np.deg2rad(10.0))
#: A switch of matched lane is a lane change when the lateral offset jumps by at least this (m).
LANE_JUMP_MIN_M: float = 1.5
#: A step follows its lane plainly when the lane's direction agrees with the motion within this angle;
#: anything else (the entry and exit of a U-turn loop, junction connectors) can belong to a passage.
ORDINARY_MAX_HEADING_DIFF_RAD: float = float(np.deg2rad(20.0))
#: Plain lane following shorter than this (m) between two parts of a passage belongs to the passage
#: (a U-turn loop sweeping across the lanes of the other direction).
PASSAGE_MIN_GAP_M: float = 5.0

#: Upper edges (m/s) of the speed bins; the last bin is open.
SPEED_BIN_EDGES_MPS: tuple[float, ...] = (0.5, 2.5, 5.0, 10.0, 15.0)
SPEED_BIN_NAMES: tuple[str, ...] = ("0-0.5", "0.5-2.5", "2.5-5", "5-10", "10-15", "15+")


def path_length_m(xy: FloatArray) -> FloatArray:
    """(W, T, 2) -> (W,) summed step lengths."""
    steps = np.diff(xy, axis=1)
    return np.asarray(np.hypot(steps[..., 0], steps[..., 1]).sum(axis=1), dtype=np.float64)


def mean_speed_mps(xy: FloatArray) -> FloatArray:
    """Path length over duration, (W,)."""
    return np.asarray(path_length_m(xy) / ((xy.shape[1] - 1) * STEP_S), dtype=np.float64)


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


def arc_lateral_offset_m(length_m: FloatArray, heading_change_rad: FloatArray) -> FloatArray:
    """Lateral end offset of a constant-curvature arc of given length and heading change (+y left)."""
    small = np.abs(heading_change_rad) < 1e-6
    safe = np.where(small, 1.0, heading_change_rad)
    return np.where(small, length_m * heading_change_rad / 2.0, length_m * (1.0 - np.cos(safe)) / safe)


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


#: Priority of manoeuvres when a window shows several (as ``trajemb.truth.SPAN_PRIORITY``).
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
    from trajemb.lanes import connector_chain, lane_side, lane_types_for, match_tracks

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


def speed_bin(speed_mps: FloatArray) -> StrArray:
    """Bin mean speeds into ``SPEED_BIN_NAMES``."""
    idx = np.searchsorted(np.asarray(SPEED_BIN_EDGES_MPS), speed_mps, side="right")
    return np.asarray(SPEED_BIN_NAMES, dtype=np.str_)[idx]


def direction_rules() -> list[tuple[str, str]]:
    """How each direction class is decided, in words, from the thresholds above (first match wins).

    Each rule names the lane-graph reading first (every window of AV2 or synthetic data with a map)
    and then the shape-only reading (user queries, pedestrians, windows off the map).
    """
    turn = np.rad2deg(PASSAGE_TURN_MIN_RAD)
    u_turn = np.rad2deg(PASSAGE_U_TURN_MIN_RAD)
    radius = 1.0 / TURN_MIN_CURVATURE_PER_M
    shape_turn = np.rad2deg(TURN_MIN_HEADING_CHANGE_RAD)
    share = f"{PASSAGE_MIN_COVERAGE:.0%}"
    return [
        (DirectionClass.STATIONARY.value, f"mean speed below {STATIONARY_MAX_SPEED_MPS:g} m/s"),
        (
            DirectionClass.U_TURN.value,
            f"on the map: the window shows at least {share} of a passage (junction connectors, or a short stretch "
            f"off every lane) across which the heading turns by {u_turn:.0f}° or more; by shape: the heading turns by "
            f"{np.rad2deg(U_TURN_MIN_HEADING_CHANGE_RAD):.0f}° or more, or by "
            f"{np.rad2deg(U_TURN_MIN_TIGHT_HEADING_CHANGE_RAD):.0f}° within bends tighter than {radius:.0f} m radius",
        ),
        (
            DirectionClass.LEFT.value,
            f"on the map: the window shows at least {share} of a passage that turns left by {turn:.0f}° or more; "
            f"by shape: the heading turns left by {shape_turn:.0f}° or more within bends tighter than {radius:.0f} m "
            "radius (a wider bend of the road is not a turn)",
        ),
        (DirectionClass.RIGHT.value, "the same, to the right"),
        (
            DirectionClass.LANE_CHANGE_LEFT.value,
            "on the map: inside the window the road user moves to the lane on its left (its matched lane switches and "
            f"the offset from the lane centre jumps by {LANE_JUMP_MIN_M:g} m or more); by shape (unreliable on curved "
            f"roads): the heading changes by less than {np.rad2deg(LANE_CHANGE_MAX_HEADING_CHANGE_RAD):.0f}° but the "
            f"end point lies {LANE_CHANGE_MIN_RESIDUAL_M:g} m or more to the left of where an arc would end",
        ),
        (DirectionClass.LANE_CHANGE_RIGHT.value, "the same, to the right"),
        (
            DirectionClass.STRAIGHT.value,
            "everything else: lane following, including bends of the road however sharp, and windows that show "
            f"less than {share} of a turn",
        ),
    ]
