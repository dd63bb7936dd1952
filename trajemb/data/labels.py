"""Window labels for colouring and cluster quality: direction class and speed bin.

Two rules decide the direction class, measured against the synthetic generator's ground truth
(``trajemb.data.truth``; ``scripts/label_quality.py`` prints the confusion matrices):

* **On the lane graph** (``map_direction_class``; every AV2 and synthetic scenario has a map): the
  track is matched to the lanes it follows (``trajemb.data.lanes``). A *passage* is a stretch on junction
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

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trajemb.data.frames import wrap_angle_rad
from trajemb.data.schema import STEP_S, BoolArray, DirectionClass, FloatArray, IntArray, StrArray

if TYPE_CHECKING:
    from trajemb.data.lanes import LaneGraph, LaneGraphs
    from trajemb.data.schema import TrackSet

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
#: Share of a passage a window must show to take its manoeuvre (as ``trajemb.data.truth.MIN_SPAN_COVERAGE``).
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


def chord(xy: FloatArray, half_steps: int) -> FloatArray:
    """(A, T, 2) -> (A, T, 2) ``xy[:, min(i + h, T - 1)] - xy[:, max(i - h, 0)]`` for every step i:
    the same differences as that indexing, taken over slices (no gathered copies of ``xy``)."""
    T, h = xy.shape[1], half_steps
    out = np.empty(xy.shape, dtype=xy.dtype)
    for i in range(min(h, T)):  # the first steps: the chord starts at step 0
        out[:, i] = xy[:, min(i + h, T - 1)] - xy[:, 0]
    if T > 2 * h:
        out[:, h : T - h] = xy[:, 2 * h :] - xy[:, : T - 2 * h]
    for i in range(max(T - h, h), T):  # the last steps: the chord ends at step T - 1
        out[:, i] = xy[:, T - 1] - xy[:, max(i - h, 0)]
    return out


def at_least(dx: FloatArray, dy: FloatArray, length: float) -> BoolArray:
    """``np.hypot(dx, dy) >= length``, element for element, at half its cost: squared lengths decide
    wherever they lie clearly apart from ``length**2`` (their rounding is a few units in the last place;
    the margin is 10,000), and ``np.hypot`` decides the rest (near the threshold, NaN, overflow)."""
    threshold = length * length
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN go to np.hypot below
        squared = dx * dx + dy * dy
        out: BoolArray = squared >= threshold
        margin = 1e4 * float(np.finfo(np.result_type(squared.dtype, np.float16)).eps) * threshold
        unsure = ~(np.abs(squared - threshold) > margin)
    if unsure.any():
        out[unsure] = np.hypot(dx[unsure], dy[unsure]) >= length
    return out


def heading_increments_rad(xy: FloatArray) -> FloatArray:
    """(W, T, 2) -> (W, T) signed heading change at each step (positive = left), 0 where standing.

    The heading at step i is the direction of the chord from step i-2 to i+2 (clipped at the ends), so
    jitter is averaged over 0.4 s while the whole window is covered; chords shorter than
    ``HEADING_MIN_CHORD_M`` (standing still) contribute no change, and a moving step is compared with
    the previous moving step.
    """
    T = xy.shape[1]
    i = np.arange(T)
    chord_xy = chord(xy, HEADING_HALF_CHORD_STEPS)
    moving = at_least(chord_xy[..., 0], chord_xy[..., 1], HEADING_MIN_CHORD_M)
    heading = np.arctan2(chord_xy[..., 1], chord_xy[..., 0])
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


def _passage_kind(angle_rad: FloatArray) -> StrArray:
    """(P,) DirectionClass of passages turning by ``angle_rad`` (straight under the turn threshold)."""
    return np.select(
        [
            np.abs(angle_rad) >= PASSAGE_U_TURN_MIN_RAD,
            angle_rad >= PASSAGE_TURN_MIN_RAD,
            angle_rad <= -PASSAGE_TURN_MIN_RAD,
        ],
        [DirectionClass.U_TURN.value, DirectionClass.LEFT.value, DirectionClass.RIGHT.value],
        default=DirectionClass.STRAIGHT.value,
    )


def _runs(mask: BoolArray) -> tuple[IntArray, IntArray, IntArray]:
    """Runs of True along each row of an (A, S) mask: (R,) row, first step and last step of each, in
    row-major order."""
    A = mask.shape[0]
    edge = np.diff(
        np.concatenate([np.zeros((A, 1), np.int8), mask.astype(np.int8), np.zeros((A, 1), np.int8)], axis=1)
    )
    row, first = np.nonzero(edge == 1)
    _, after = np.nonzero(edge == -1)
    return row, first, after - 1


def _prefix(values: np.ndarray) -> np.ndarray:
    """(A, S) -> (A, S + 1) running sums along each row, starting at 0: ``out[:, e + 1] - out[:, b]`` is
    the sum over steps b..e. Row by row as ``np.cumsum`` of each row alone (same rounding)."""
    out = np.zeros((values.shape[0], values.shape[1] + 1), dtype=np.result_type(values.dtype, np.int64))
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


#: Rank of the turn manoeuvres a window may show (higher wins), as ``trajemb.data.truth.SPAN_PRIORITY``.
_TURN_RANK: dict[str, int] = {
    DirectionClass.RIGHT.value: 1,
    DirectionClass.LEFT.value: 2,
    DirectionClass.U_TURN.value: 3,
}


def map_direction_class(
    tracks: TrackSet, graph: LaneGraph, track_idx: IntArray, start_step: IntArray, num_steps: int
) -> StrArray:
    """Direction class of W windows from the lanes their tracks follow (rule in the module docstring).

    Vectorised over the A' tracks that follow lanes, their S steps, their R runs of steps and the W
    windows; only the connector chains of passages the track enters or leaves mid-junction are
    followed one by one (a few per scenario).

    Args:
        tracks: the scenario's tracks (city frame).
        graph: its map's lanes.
        track_idx: (W,) track of each window; start_step: (W,) its first step; num_steps: T.

    Returns:
        (W,) DirectionClass values, or ``""`` where the map cannot decide (the road user follows no
        lanes, or the window lies mostly off the map): ``direction_class`` decides there.
    """
    from trajemb.data.lanes import LaneGraphs

    return map_direction_class_many(
        tracks.xy_city,
        tracks.object_types,
        LaneGraphs.of([graph]),
        np.zeros(tracks.num_tracks, dtype=np.int64),
        track_idx,
        start_step,
        num_steps,
    )


def map_direction_class_many(
    xy_city: FloatArray,
    object_types: StrArray,
    graphs: LaneGraphs,
    map_of_track: IntArray,
    track_idx: IntArray,
    start_step: IntArray,
    num_steps: int,
) -> StrArray:
    """``map_direction_class`` of the windows of several scenarios at once, each track on its own map:
    their tracks stacked (A, S), every step of the rule taken track by track, so each window gets the
    label its scenario alone gives it (one pass instead of one per scenario: a scenario's arrays are
    small, and numpy's cost per call dominates them).

    Args:
        xy_city: (A, S, 2) the tracks of the scenarios one after the other; object_types: (A,).
        graphs: their maps' lanes; map_of_track: (A,) map of each track, non-decreasing.
        track_idx: (W,) track of each window; start_step: (W,) its first step; num_steps: T.
    """
    from trajemb.data.lanes import lane_side, lane_types_for, match_tracks_many

    W, T, S = len(track_idx), num_steps, xy_city.shape[1]
    out = np.full(W, "", dtype="<U32")
    used_types = {a: lane_types_for(str(object_types[a])) for a in np.unique(track_idx).tolist()}
    tracks_used = [a for a, types in used_types.items() if types]
    if not tracks_used:
        return out.astype(np.str_)
    xy = xy_city[tracks_used]  # (A', S, 2)
    m = match_tracks_many(graphs, xy, [used_types[a] for a in tracks_used], map_of_track[tracks_used])
    lane, valid = m.lane, m.valid
    # Chords reaching into missing steps are NaN and count as standing: no heading change.
    theta = np.cumsum(heading_increments_rad(xy), axis=1)
    xy0 = np.nan_to_num(xy)
    step_m = np.hypot(*np.diff(xy0, axis=1).transpose(2, 0, 1)) * (valid[:, 1:] & valid[:, :-1])
    cum = np.concatenate([np.zeros((len(tracks_used), 1)), np.cumsum(step_m, axis=1)], axis=1)  # (A', S)
    on_junction = (lane >= 0) & graphs.is_intersection[np.maximum(lane, 0)]
    ordinary = (
        (lane >= 0)
        & ~on_junction
        & (np.abs(np.nan_to_num(m.heading_diff_rad)) <= ORDINARY_MAX_HEADING_DIFF_RAD)
    )
    in_passage = valid & ~ordinary & ((lane >= 0) | m.moving)
    # Short plain stretches inside a passage join it.
    ra, rb, re = _runs(valid & ordinary)
    inner = (rb > 0) & (re < S - 1)
    ra, rb, re = ra[inner], rb[inner], re[inner]
    join = in_passage[ra, rb - 1] & in_passage[ra, re + 1] & (cum[ra, re] - cum[ra, rb] < PASSAGE_MIN_GAP_M)
    fill = np.zeros((len(tracks_used), S + 1), dtype=np.int64)
    np.add.at(fill, (ra[join], rb[join]), 1)
    np.add.at(fill, (ra[join], re[join] + 1), -1)
    in_passage |= np.cumsum(fill, axis=1)[:, :S] > 0

    # Passages: runs of in_passage, unless mostly off-lane and long (then off the map).
    pa_, pb, pe = _runs(in_passage)
    observed = cum[pa_, pe] - cum[pa_, pb]
    off_count = _prefix(m.off_lane)
    off_run = (2 * (off_count[pa_, pe + 1] - off_count[pa_, pb]) > pe - pb + 1) & (
        observed > PASSAGE_MAX_OFF_LANE_M
    )
    off_marks = np.zeros((len(tracks_used), S + 1), dtype=np.int64)
    np.add.at(off_marks, (pa_[off_run], pb[off_run]), 1)
    np.add.at(off_marks, (pa_[off_run], pe[off_run] + 1), -1)
    off_map = np.cumsum(off_marks, axis=1)[:, :S] > 0
    pa_, pb, pe, observed = pa_[~off_run], pb[~off_run], pe[~off_run], observed[~off_run]
    before, after = np.maximum(pb - 1, 0), np.minimum(pe + 1, S - 1)
    bounded = (
        (pb > 0)
        & (pe < S - 1)
        & valid[pa_, before]
        & valid[pa_, after]
        & ordinary[pa_, before]
        & ordinary[pa_, after]
    )
    angle = theta[pa_, after] - theta[pa_, before]
    length = observed.copy()
    last_junction = np.maximum.accumulate(np.where(on_junction, np.arange(S), -1), axis=1)[pa_, pe]
    chains: dict[int, tuple[float, float]] = {}
    for p in np.flatnonzero(~bounded & (last_junction >= pb)).tolist():
        # The track starts or ends inside a connector: the map knows the rest of it. Where connectors
        # overlap the matched one may be another's, so the map may extend a turn the track already
        # shows, never start or reverse one.
        connector = int(lane[pa_[p], last_junction[p]])
        if connector not in chains:
            chains[connector] = graphs.connector_chain(connector)
        chain_rad, chain_m = chains[connector]
        shown = float(angle[p])
        if abs(shown) >= SHOWN_MIN_RAD and np.sign(chain_rad) == np.sign(shown):
            angle[p] = chain_rad if abs(chain_rad) > abs(shown) else shown
            length[p] = max(float(observed[p]), chain_m)
    kind = _passage_kind(angle)
    turns = (kind != DirectionClass.STRAIGHT.value) & (length > 0)
    pa_, pb, pe, length, rank = pa_[turns], pb[turns], pe[turns], length[turns], kind[turns]

    # Lane changes: the matched lane switches between plainly followed lanes to a neighbour (as the map
    # records neighbours; by the sign of the jump of the offset where it records none).
    sa, ss = np.nonzero(ordinary[:, 1:] & ordinary[:, :-1] & (lane[:, 1:] != lane[:, :-1]))
    ss = ss + 1
    jump = np.nan_to_num(m.lateral_m[sa, ss] - m.lateral_m[sa, ss - 1])
    side = lane_side(graphs, lane[sa, ss - 1], lane[sa, ss])
    side = np.where(side == 2, -np.sign(jump), side)  # + = left
    event = np.zeros((len(tracks_used), S))
    event[sa, ss] = np.where(np.abs(jump) >= LANE_JUMP_MIN_M, side, 0.0)
    events = _prefix(event)  # events[:, i] = sum of event[:, :i]

    # Windows of the tracks that follow lanes.
    local = np.full(len(xy_city), -1, dtype=np.int64)
    local[tracks_used] = np.arange(len(tracks_used))
    rows = np.flatnonzero(local[track_idx] >= 0)
    j = local[track_idx[rows]]
    first, last = start_step[rows], start_step[rows] + T - 1
    labels = np.full(len(rows), DirectionClass.STRAIGHT.value, dtype="<U32")
    net = events[j, last + 1] - events[j, first + 1]  # lane changes strictly inside the window
    labels[net > 0] = DirectionClass.LANE_CHANGE_LEFT.value
    labels[net < 0] = DirectionClass.LANE_CHANGE_RIGHT.value
    # Each window against each turn passage of its own track: the highest-ranked one it shows enough of.
    order = np.argsort(j, kind="stable")
    window_start = np.searchsorted(j[order], np.arange(len(tracks_used) + 1))
    count = window_start[pa_ + 1] - window_start[pa_]
    p_of = np.repeat(np.arange(len(pa_)), count)
    w_of = order[np.repeat(window_start[pa_] - np.cumsum(count) + count, count) + np.arange(count.sum())]
    overlap = (
        cum[pa_[p_of], np.minimum(last[w_of], pe[p_of])] - cum[pa_[p_of], np.maximum(first[w_of], pb[p_of])]
    )
    covered = overlap >= PASSAGE_MIN_COVERAGE * length[p_of]
    best = np.zeros(len(rows), dtype=np.int64)
    ranks = np.asarray([_TURN_RANK[k] for k in rank.tolist()], dtype=np.int64)
    np.maximum.at(best, w_of[covered], ranks[p_of[covered]])
    for name, r in _TURN_RANK.items():
        labels[best == r] = name
    moved = cum[j, last] - cum[j, first]
    labels[moved < STATIONARY_MAX_SPEED_MPS * (num_steps - 1) * STEP_S] = DirectionClass.STATIONARY.value
    off_steps = _prefix(off_map)
    labels[2 * (off_steps[j, first + T] - off_steps[j, first]) >= T] = ""
    out[rows] = labels
    return out.astype(np.str_)


def speed_bin(speed_mps: FloatArray) -> StrArray:
    """Bin mean speeds into ``SPEED_BIN_NAMES``."""
    idx = np.searchsorted(np.asarray(SPEED_BIN_EDGES_MPS), speed_mps, side="right")
    return np.asarray(SPEED_BIN_NAMES, dtype=np.str_)[idx]


@dataclass(frozen=True)
class DirectionRule:
    """How one direction class is decided: from the lane graph, and from the shape alone."""

    name: str
    on_map: str
    by_shape: str


def direction_rules() -> list[DirectionRule]:
    """How each direction class is decided, in words, from the thresholds above (first match wins).

    Each rule has the lane-graph reading (every window of AV2 or synthetic data with a map) and the
    shape-only reading (user queries, pedestrians, windows off the map).
    """
    turn = np.rad2deg(PASSAGE_TURN_MIN_RAD)
    u_turn = np.rad2deg(PASSAGE_U_TURN_MIN_RAD)
    radius = 1.0 / TURN_MIN_CURVATURE_PER_M
    shape_turn = np.rad2deg(TURN_MIN_HEADING_CHANGE_RAD)
    share = f"{PASSAGE_MIN_COVERAGE:.0%}"
    still = f"mean speed below {STATIONARY_MAX_SPEED_MPS:g} m/s"
    return [
        DirectionRule(DirectionClass.STATIONARY.value, still, still),
        DirectionRule(
            DirectionClass.U_TURN.value,
            f"the window shows at least {share} of a passage (junction connectors, or a short stretch off "
            f"every lane) across which the heading turns by {u_turn:.0f}° or more",
            f"the heading turns by {np.rad2deg(U_TURN_MIN_HEADING_CHANGE_RAD):.0f}° or more, or by "
            f"{np.rad2deg(U_TURN_MIN_TIGHT_HEADING_CHANGE_RAD):.0f}° within bends tighter than {radius:.0f} m radius",
        ),
        DirectionRule(
            DirectionClass.LEFT.value,
            f"the window shows at least {share} of a passage that turns left by {turn:.0f}° or more",
            f"the heading turns left by {shape_turn:.0f}° or more within bends tighter than {radius:.0f} m "
            "radius (a wider bend of the road is not a turn)",
        ),
        DirectionRule(DirectionClass.RIGHT.value, "the same, to the right", "the same, to the right"),
        DirectionRule(
            DirectionClass.LANE_CHANGE_LEFT.value,
            "inside the window the road user moves to the lane on its left (its matched lane switches and "
            f"the offset from the lane centre jumps by {LANE_JUMP_MIN_M:g} m or more)",
            f"(unreliable on curved roads) the heading changes by less than "
            f"{np.rad2deg(LANE_CHANGE_MAX_HEADING_CHANGE_RAD):.0f}° but the end point lies "
            f"{LANE_CHANGE_MIN_RESIDUAL_M:g} m or more to the left of where an arc would end",
        ),
        DirectionRule(
            DirectionClass.LANE_CHANGE_RIGHT.value, "the same, to the right", "the same, to the right"
        ),
        DirectionRule(
            DirectionClass.STRAIGHT.value,
            f"everything else: lane following, including bends of the road however sharp, and windows that "
            f"show less than {share} of a turn",
            "everything else",
        ),
    ]
