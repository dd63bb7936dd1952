"""Procedural road networks: multi-lane junctions (3- and 4-way) and curved two-way roads.

Right-hand traffic. Every lane is a centre line in its travel direction; routes are lane sequences
(approach, junction connector, exit; or a lane followed along a road) with an intended manoeuvre
(straight, left, right, U-turn, lane change) that the road users then drive with a speed profile.
Geometry is built in a local frame around the origin; the writer places it in the city frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull

from trajemb.data.schema import FloatArray
from trajemb.data.synth.geometry import (
    arc_length_m,
    bezier,
    curve,
    left_normals,
    offset,
    resample,
    smoothstep,
)

LANE_SPACING_M = 1.0
ROUTE_SPACING_M = 0.5
#: A curved road turns at most this far (rad) from its start direction, so that it never crosses itself.
MAX_ROAD_TURN_RAD = float(np.deg2rad(150.0))
#: Lane key of a curved road's U-turn loop through its median opening (no lane of the map).
U_TURN_LOOP_LANE = -1


@dataclass
class Lane:
    xy: FloatArray  # (P, 2) centre line in the travel direction
    width_m: float
    is_intersection: bool = False
    lane_type: str = "VEHICLE"
    left_mark: str = "DASHED_WHITE"
    right_mark: str = "SOLID_WHITE"
    successors: list[int] = field(default_factory=list)
    predecessors: list[int] = field(default_factory=list)
    left_neighbor: int | None = None
    right_neighbor: int | None = None


@dataclass(frozen=True)
class ManoeuvreSpan:
    """Where along a route a manoeuvre happens: arc lengths (m) from the route's start.

    A turn or U-turn spans its junction connector (or median loop), a lane change the stretch over
    which the path blends from one lane into the next. Ground truth for the labels (``trajemb.data.truth``).
    """

    kind: str  # left, right, u_turn, lane_change_left, lane_change_right
    start_m: float
    end_m: float


@dataclass(frozen=True)
class LanePiece:
    """A stretch of a route on one lane: from ``start_m`` along the route, where the lane is at
    ``lane_s_m`` along itself. Road users on the same lane follow one another (``trajemb.data.synth.agents``)."""

    lane: int  # lane id in ``RoadNetwork.lanes``, or a negative key for a path that is no lane
    start_m: float
    lane_s_m: float = 0.0


@dataclass
class Route:
    """A drivable (or walkable) path with the manoeuvre it was built for."""

    xy: FloatArray  # (P, 2), ``ROUTE_SPACING_M`` apart
    manoeuvre: str  # straight, left, right, u_turn, lane_change_left, lane_change_right, walk, cross
    stop_s_m: float | None = None  # arc length of the stop line (junction entry), if any
    spans: tuple[ManoeuvreSpan, ...] = ()  # every manoeuvre along the route, in order
    pieces: tuple[LanePiece, ...] = ()  # the lanes it runs on, in order (vehicle routes)
    approach: int | None = None  # the junction arm it enters from (its signal), if any


@dataclass
class RoadNetwork:
    lanes: list[Lane]
    drivable_areas: list[FloatArray]
    crossings: list[tuple[FloatArray, FloatArray]]  # (edge1 (2, 2), edge2 (2, 2))
    routes: list[Route]
    walk_routes: list[Route]
    bike_routes: list[Route]
    curb_spots: list[tuple[FloatArray, float]]  # parking position (2,) and heading (rad)
    layout: str


@dataclass
class _Arm:
    center: FloatArray  # (P, 2) road centre line, outward from the junction
    out_lanes: list[int]  # lane ids, innermost first
    in_lanes: list[int]
    width_m: float
    median_m: float


def _add_lane(lanes: list[Lane], lane: Lane) -> int:
    lanes.append(lane)
    return len(lanes) - 1


def _link(lanes: list[Lane], a: int, b: int) -> None:
    lanes[a].successors.append(b)
    lanes[b].predecessors.append(a)


class _Shifted:
    """``offset(xy, left_m)`` of one polyline at any number of distances, its normals computed once
    (the same arithmetic: ``xy + left_normals(xy) * left_m``)."""

    def __init__(self, xy: FloatArray) -> None:
        self.xy = xy
        self.normals = left_normals(xy)

    def __call__(self, left_m: float) -> FloatArray:
        return np.asarray(self.xy + self.normals * left_m, dtype=np.float64)


def _parallel_lanes(
    lanes: list[Lane], center: _Shifted, n: int, width_m: float, median_m: float, side: int
) -> list[int]:
    """n lanes beside ``center``; side -1 = right of it (same direction), +1 = left (opposite)."""
    ids: list[int] = []
    for k in range(n):
        xy = center(side * (median_m / 2 + (k + 0.5) * width_m))
        if side > 0:
            xy = xy[::-1].copy()
        inner = "SOLID_YELLOW" if median_m > 0.5 else "DOUBLE_SOLID_YELLOW"
        left_mark = inner if k == 0 else "DASHED_WHITE"
        right_mark = "SOLID_WHITE" if k == n - 1 else "DASHED_WHITE"
        ids.append(_add_lane(lanes, Lane(xy, width_m, left_mark=left_mark, right_mark=right_mark)))
    for a, b in itertools.pairwise(ids):  # innermost is leftmost in travel direction
        lanes[a].right_neighbor, lanes[b].left_neighbor = b, a
    return ids


#: Drivable area reaches this far (m) past the outer lanes' boundaries (kerb to kerb, with a margin),
#: and this far past the ends of a road, so that it overlaps the junction's and no lane ends on its edge.
SHOULDER_M = 2.5
AREA_OVERLAP_M = 1.5
AREA_POINT_STRIDE = 4


def _road_polygon(center: FloatArray, left_m: float, right_m: float) -> FloatArray:
    """A road's drivable area: the strip from ``right_m`` right of its centre line to ``left_m`` left of
    it, extended along its end directions by ``AREA_OVERLAP_M`` at both ends."""
    start = center[0] - _heading(center, False) * AREA_OVERLAP_M
    end = center[-1] + _heading(center, True) * AREA_OVERLAP_M
    # Every AREA_POINT_STRIDE-th point of the centre line: AV2 map polygons are similarly sparse.
    keep = np.unique(np.append(np.arange(0, len(center), AREA_POINT_STRIDE), len(center) - 1))
    extended = np.concatenate([start[None], center[keep], end[None]])
    shifted = _Shifted(extended)
    left, right = shifted(left_m), shifted(-right_m)
    return np.concatenate([right, left[::-1], right[:1]])


def _hull(points: FloatArray) -> FloatArray:
    """Closed convex hull polygon of (P, 2) points (``scipy.spatial.ConvexHull``, counter-clockwise)."""
    vertices = ConvexHull(points).vertices
    return np.asarray(points[np.append(vertices, vertices[0])], dtype=np.float64)


def _joined(a: FloatArray, b: FloatArray) -> bool:
    """``np.allclose(a, b, atol=0.05)`` of two finite points, without its per-call overhead."""
    return all(abs(x - y) <= 0.05 + 1e-05 * abs(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))


def _concat(*parts: FloatArray) -> FloatArray:
    out = [parts[0]] + [p[1:] if _joined(p[0], prev[-1]) else p for prev, p in itertools.pairwise(parts)]
    return resample(np.concatenate(out), ROUTE_SPACING_M)


def _lane_change(
    a: FloatArray, b: FloatArray, start_m: float, length_m: float, s_a: FloatArray | None = None
) -> FloatArray:
    """Blend from lane polyline ``a`` to the parallel ``b`` (same point count) between start and end
    (``s_a``: ``arc_length_m(a)`` where the caller has it)."""
    s = arc_length_m(a) if s_a is None else s_a
    w = smoothstep((s - start_m) / length_m)[:, None]
    return np.asarray((1 - w) * a + w * b, dtype=np.float64)


def _blend_span_m(
    a: FloatArray, blended: FloatArray, start_m: float, length_m: float, s_a: FloatArray | None = None
) -> tuple[float, float]:
    """Arc lengths along ``blended`` (from ``_lane_change(a, ...)``) where the blend starts and ends."""
    s_a = arc_length_m(a) if s_a is None else s_a
    s_b = arc_length_m(blended)
    return float(np.interp(start_m, s_a, s_b)), float(np.interp(start_m + length_m, s_a, s_b))


def _length_m(xy: FloatArray) -> float:
    return float(arc_length_m(xy)[-1])


class _LaneArcs:
    """``arc_length_m`` of each lane of a network under construction, computed once per lane (a lane's
    polyline does not change once added; routes and lane changes ask for the same lanes many times)."""

    def __init__(self, lanes: list[Lane]) -> None:
        self._lanes = lanes
        self._s: dict[int, FloatArray] = {}

    def __call__(self, lane: int) -> FloatArray:
        if lane not in self._s:
            self._s[lane] = arc_length_m(self._lanes[lane].xy)
        return self._s[lane]


def _heading(xy: FloatArray, at_end: bool) -> FloatArray:
    d = xy[-1] - xy[-3] if at_end else xy[2] - xy[0]
    return np.asarray(d / np.linalg.norm(d), dtype=np.float64)


def _turn_kind(h_in: FloatArray, h_out: FloatArray) -> str:
    angle = np.degrees(np.arctan2(h_in[0] * h_out[1] - h_in[1] * h_out[0], h_in @ h_out))
    if abs(angle) < 35:
        return "straight"
    if abs(angle) > 150:
        return "u_turn"
    return "left" if angle > 0 else "right"


def _connector_spans(kind: str, start_m: float, length_m: float) -> tuple[ManoeuvreSpan, ...]:
    """The manoeuvre of a junction connector starting ``start_m`` along a route (none when straight)."""
    return () if kind == "straight" else (ManoeuvreSpan(kind, start_m, start_m + length_m),)


def _offset_spans(
    xy: FloatArray, shifted: FloatArray, spans: tuple[ManoeuvreSpan, ...]
) -> tuple[ManoeuvreSpan, ...]:
    """``spans`` of the route ``xy`` moved onto ``shifted = offset(xy, ...)`` (same point count):
    an offset path is shorter on the inside of a curve, so arc lengths map point by point."""
    s, s_new = arc_length_m(xy), arc_length_m(shifted)
    return tuple(
        ManoeuvreSpan(sp.kind, float(np.interp(sp.start_m, s, s_new)), float(np.interp(sp.end_m, s, s_new)))
        for sp in spans
    )


def _connector(lanes: list[Lane], a: int, b: int, kind: str) -> int:
    p0, p3 = lanes[a].xy[-1], lanes[b].xy[0]
    h0, h3 = _heading(lanes[a].xy, True), _heading(lanes[b].xy, False)
    dist = float(np.linalg.norm(p3 - p0))
    handle = max(7.0, 1.1 * dist) if kind == "u_turn" else (0.35 if kind == "straight" else 0.5) * dist
    xy = resample(bezier(p0, h0, p3, h3, handle), LANE_SPACING_M)
    c = _add_lane(
        lanes, Lane(xy, lanes[a].width_m, is_intersection=True, left_mark="NONE", right_mark="NONE")
    )
    _link(lanes, a, c)
    _link(lanes, c, b)
    return c


def _offset_at(xy: FloatArray, i: int, left_m: float) -> FloatArray:
    """``offset(xy, left_m)[i]`` of an inner point ``i``, from its two neighbours alone (the same central
    difference, so the same bits): a curb spot needs one point, not the whole shifted polyline."""
    return np.asarray(offset(xy[i - 1 : i + 2], left_m)[1], dtype=np.float64)


def junction(rng: np.random.Generator, num_arms: int) -> RoadNetwork:
    """A 3- or 4-way junction with multi-lane, possibly curved arms."""
    if num_arms == 4:
        angles = np.deg2rad(np.array([0.0, 90.0, 180.0, 270.0]) + rng.uniform(-12, 12, 4))
    elif rng.random() < 0.6:  # T junction
        angles = np.deg2rad(np.array([0.0, 90.0, 180.0]) + rng.uniform(-10, 10, 3))
    else:  # Y junction
        angles = np.deg2rad(np.array([0.0, 120.0, 240.0]) + rng.uniform(-20, 20, 3))
    width = rng.uniform(3.2, 3.8)
    lanes: list[Lane] = []
    arms: list[_Arm] = []
    n_out = rng.integers(1, 4, num_arms)
    n_in = np.maximum(1, n_out + rng.integers(-1, 2, num_arms))
    n_in = np.minimum(n_in, 3)
    medians = np.where(rng.random(num_arms) < 0.4, rng.uniform(1.0, 4.0, num_arms), 0.0)
    half = (np.maximum(n_in, n_out) * width + medians / 2).max()
    r0 = half + 4.0
    areas: list[FloatArray] = []
    crossings: list[tuple[FloatArray, FloatArray]] = []
    curb_spots: list[tuple[FloatArray, float]] = []
    walk_routes: list[Route] = []
    for i, angle in enumerate(angles):
        length = rng.uniform(140.0, 190.0)
        n_pts = int(length / LANE_SPACING_M) + 1
        kappa = np.zeros(n_pts)
        if rng.random() < 0.4:
            kappa[int(25 / LANE_SPACING_M) :] = rng.choice([-1, 1]) * rng.uniform(1 / 400, 1 / 120)
        start = r0 * np.array([np.cos(angle), np.sin(angle)])
        center = curve(start, float(angle), kappa, LANE_SPACING_M)
        beside = _Shifted(center)
        out_ids = _parallel_lanes(lanes, beside, int(n_out[i]), width, float(medians[i]), side=-1)
        in_ids = _parallel_lanes(lanes, beside, int(n_in[i]), width, float(medians[i]), side=+1)
        arms.append(_Arm(center, out_ids, in_ids, width, float(medians[i])))
        left_m = medians[i] / 2 + n_in[i] * width
        right_m = medians[i] / 2 + n_out[i] * width
        areas.append(_road_polygon(center, left_m + SHOULDER_M, right_m + SHOULDER_M))
        # Crosswalk across the whole road just outside the junction box.
        c0, c1 = center[1], center[5]
        n0, n1 = offset(center[[1, 2]], 1.0)[0] - c0, offset(center[[5, 6]], 1.0)[0] - c1
        edge1 = np.stack([c0 - n0 * (right_m + 1), c0 + n0 * (left_m + 1)])
        edge2 = np.stack([c1 - n1 * (right_m + 1), c1 + n1 * (left_m + 1)])
        crossings.append((edge1, edge2))
        cross = resample(
            np.stack([(edge1[0] + edge2[0]) / 2 - n0 * 4, (edge1[1] + edge2[1]) / 2 + n0 * 4]),
            ROUTE_SPACING_M,
        )
        walk_routes += [Route(cross, "cross"), Route(cross[::-1].copy(), "cross")]
        for side_m in (left_m + 4.0, -(right_m + 4.0)):
            walk = resample(beside(side_m), ROUTE_SPACING_M)
            walk_routes += [Route(walk, "walk"), Route(walk[::-1].copy(), "walk")]
        for s_idx in rng.choice(np.arange(30, n_pts - 10), size=3, replace=False):
            side = rng.choice([-1, 1])
            pos = _offset_at(center, int(s_idx), side * ((right_m if side < 0 else left_m) + 1.2))
            tangent = center[s_idx + 1] - center[s_idx]
            curb_spots.append((pos, float(np.arctan2(tangent[1], tangent[0]) + (0 if side < 0 else np.pi))))
    routes: list[Route] = []
    bike_routes: list[Route] = []
    arc = _LaneArcs(lanes)
    for i, arm_in in enumerate(arms):
        for j, arm_out in enumerate(arms):
            a_in = lanes[arm_in.in_lanes[0]].xy
            b_out = lanes[arm_out.out_lanes[0]].xy
            kind = "u_turn" if i == j else _turn_kind(_heading(a_in, True), _heading(b_out, False))
            if kind == "u_turn" and i != j:
                continue
            if kind == "straight":
                pairs = [
                    (arm_in.in_lanes[k], arm_out.out_lanes[min(k, len(arm_out.out_lanes) - 1)])
                    for k in range(len(arm_in.in_lanes))
                ]
            elif kind == "right":
                pairs = [(arm_in.in_lanes[-1], arm_out.out_lanes[-1])]
            else:  # left and U-turn from the innermost lane
                pairs = [(arm_in.in_lanes[0], arm_out.out_lanes[0])]
            for a, b in pairs:
                c = _connector(lanes, a, b, kind)
                xy = _concat(lanes[a].xy, lanes[c].xy, lanes[b].xy)
                stop = float(arc(a)[-1])
                connector_m = float(arc(c)[-1])
                turn = _connector_spans(kind, stop, connector_m)
                through = (LanePiece(c, stop), LanePiece(b, stop + connector_m))
                routes.append(Route(xy, kind, stop, turn, (LanePiece(a, 0.0), *through), i))
                if kind in ("straight", "right") and a == arm_in.in_lanes[-1]:
                    bike_xy = offset(xy, -(width / 2 - 0.7))
                    bike_spans = _offset_spans(xy, bike_xy, turn)
                    bike_routes.append(
                        Route(resample(bike_xy, ROUTE_SPACING_M), kind, stop, bike_spans, approach=i)
                    )
                # Lane changes on the approach, then through the same connector's manoeuvre.
                k_to = arm_in.in_lanes.index(a)
                for k_from in (k_to - 1, k_to + 1):
                    if not 0 <= k_from < len(arm_in.in_lanes):
                        continue
                    from_xy, from_s = lanes[arm_in.in_lanes[k_from]].xy, arc(arm_in.in_lanes[k_from])
                    start = rng.uniform(15.0, max(20.0, from_s[-1] - 60.0))
                    blend_m = rng.uniform(35.0, 60.0)
                    approach = _lane_change(from_xy, lanes[a].xy, start, blend_m, from_s)
                    # Lanes are numbered innermost (leftmost) first: a higher index is to the right.
                    lc_kind = "lane_change_right" if k_to > k_from else "lane_change_left"
                    change = ManoeuvreSpan(lc_kind, *_blend_span_m(from_xy, approach, start, blend_m, from_s))
                    spans = (change, *_connector_spans(kind, _length_m(approach), connector_m))
                    mid = (change.start_m + change.end_m) / 2
                    pieces = (LanePiece(arm_in.in_lanes[k_from], 0.0), LanePiece(a, mid, mid), *through)
                    lc_xy = _concat(approach, lanes[c].xy, lanes[b].xy)
                    routes.append(Route(lc_xy, lc_kind, stop, spans, pieces, i))
    # The junction's drivable area: every connector (turns, U-turns) with its lane width, and the mouths
    # of the arms kerb to kerb, inside one convex polygon.
    mouths = []
    for arm in arms:
        n = offset(arm.center[:2], 1.0)[0] - arm.center[0]
        mouths += [
            arm.center[0] + n * (arm.median_m / 2 + len(arm.in_lanes) * width + SHOULDER_M),
            arm.center[0] - n * (arm.median_m / 2 + len(arm.out_lanes) * width + SHOULDER_M),
        ]
    inside = [np.array(mouths)]
    for lane in lanes:
        if lane.is_intersection:
            # offset(lane.xy, +-w / 2), with the normals computed once for both sides.
            normals = left_normals(lane.xy)
            inside += [lane.xy + normals * (lane.width_m / 2), lane.xy + normals * (-lane.width_m / 2)]
    areas.append(_hull(np.concatenate(inside)))
    return RoadNetwork(
        lanes, areas, crossings, routes, walk_routes, bike_routes, curb_spots, layout=f"junction{num_arms}"
    )


def curved_road(rng: np.random.Generator) -> RoadNetwork:
    """A long two-way road of constant-curvature pieces with a median U-turn opening."""
    width = rng.uniform(3.2, 3.8)
    n_lanes = int(rng.integers(1, 4))
    median = rng.uniform(1.0, 5.0) if rng.random() < 0.6 else 0.0
    pieces, kappa_parts = rng.integers(3, 6), []
    heading = 0.0
    for _ in range(pieces):
        length = rng.uniform(60.0, 130.0)
        # City roads bend gently (radii of 150 m and more): tighter bends put lateral accelerations
        # into straight driving that the real fixtures do not show (issue 19).
        k = 0.0 if rng.random() < 0.4 else rng.choice([-1, 1]) * rng.uniform(1 / 600, 1 / 150)
        n = int(length / LANE_SPACING_M)
        if abs(heading + k * n * LANE_SPACING_M) > MAX_ROAD_TURN_RAD:
            k = -k  # bend back: a road that turned further would run into itself
        heading += k * n * LANE_SPACING_M
        kappa_parts.append(np.full(n, k))
    kappa = np.concatenate(kappa_parts)
    center = curve(np.zeros(2), 0.0, kappa, LANE_SPACING_M)
    center -= center[len(center) // 2]
    lanes: list[Lane] = []
    beside = _Shifted(center)
    fwd = _parallel_lanes(lanes, beside, n_lanes, width, median, side=-1)
    bwd = _parallel_lanes(lanes, beside, n_lanes, width, median, side=+1)
    half = median / 2 + n_lanes * width
    areas = [_road_polygon(center, half + SHOULDER_M, half + SHOULDER_M)]
    routes: list[Route] = []
    for group in (fwd, bwd):
        for lane in group:
            routes.append(
                Route(resample(lanes[lane].xy, ROUTE_SPACING_M), "straight", pieces=(LanePiece(lane, 0.0),))
            )
        for k in range(len(group) - 1):
            for a, b, kind in (
                (group[k], group[k + 1], "lane_change_right"),
                (group[k + 1], group[k], "lane_change_left"),
            ):
                total = arc_length_m(lanes[a].xy)[-1]
                for _ in range(2):
                    start = rng.uniform(30.0, max(31.0, total - 90.0))
                    blend_m = rng.uniform(35.0, 70.0)
                    xy = _lane_change(lanes[a].xy, lanes[b].xy, start, blend_m)
                    span = ManoeuvreSpan(kind, *_blend_span_m(lanes[a].xy, xy, start, blend_m))
                    mid = (span.start_m + span.end_m) / 2
                    on = (LanePiece(a, 0.0), LanePiece(b, mid, mid))
                    routes.append(Route(resample(xy, ROUTE_SPACING_M), kind, spans=(span,), pieces=on))
    # U-turn through a median opening: innermost forward lane -> innermost backward lane.
    n_pts = len(center)
    cut = int(rng.uniform(0.35, 0.65) * n_pts)
    a_xy, b_xy = lanes[fwd[0]].xy, lanes[bwd[0]].xy
    approach, exit_ = a_xy[: cut + 1], b_xy[n_pts - 1 - cut - 4 :]
    h0, h3 = _heading(approach, True), _heading(exit_, False)
    loop = bezier(
        approach[-1], h0, exit_[0], h3, max(7.0, 1.2 * float(np.linalg.norm(exit_[0] - approach[-1])))
    )
    stop = float(arc_length_m(approach)[-1])
    loop_span = ManoeuvreSpan("u_turn", stop, stop + _length_m(loop))
    exit_lane_s = float(arc_length_m(b_xy)[n_pts - 1 - cut - 4])
    loop_on: tuple[LanePiece, ...] = (
        LanePiece(fwd[0], 0.0),
        LanePiece(U_TURN_LOOP_LANE, stop),
        LanePiece(bwd[0], loop_span.end_m, exit_lane_s),
    )
    routes.append(Route(_concat(approach, loop, exit_), "u_turn", stop, (loop_span,), loop_on))
    walk_routes: list[Route] = []
    bike_routes: list[Route] = []
    for side in (1, -1):
        walk = resample(beside(side * (half + 4.0)), ROUTE_SPACING_M)
        walk_routes += [Route(walk, "walk"), Route(walk[::-1].copy(), "walk")]
    for group in (fwd, bwd):
        bike = resample(offset(lanes[group[-1]].xy, -(width / 2 - 0.7)), ROUTE_SPACING_M)
        bike_routes.append(Route(bike, "straight"))
    crossings: list[tuple[FloatArray, FloatArray]] = []
    mid = int(rng.uniform(0.2, 0.8) * n_pts)
    n0 = offset(center[[mid, mid + 1]], 1.0)[0] - center[mid]
    e1 = np.stack([center[mid] - n0 * (half + 1), center[mid] + n0 * (half + 1)])
    e2 = e1 + (center[mid + 4] - center[mid])
    crossings.append((e1, e2))
    cross = resample(np.stack([(e1[0] + e2[0]) / 2 - n0 * 4, (e1[1] + e2[1]) / 2 + n0 * 4]), ROUTE_SPACING_M)
    walk_routes += [Route(cross, "cross"), Route(cross[::-1].copy(), "cross")]
    curb_spots = []
    for idx in rng.choice(np.arange(10, n_pts - 10), size=5, replace=False):
        side = rng.choice([-1, 1])
        pos = _offset_at(center, int(idx), side * (half + 1.2))
        tangent = center[idx + 1] - center[idx]
        curb_spots.append((pos, float(np.arctan2(tangent[1], tangent[0]) + (0 if side < 0 else np.pi))))
    return RoadNetwork(
        lanes, areas, crossings, routes, walk_routes, bike_routes, curb_spots, layout="curved_road"
    )


LAYOUTS: tuple[str, ...] = ("junction4", "junction3", "curved_road")


def road_network(rng: np.random.Generator, layout: str | None = None) -> RoadNetwork:
    """A random network of the given (or a random) layout."""
    layout = layout or str(rng.choice(LAYOUTS, p=[0.45, 0.3, 0.25]))
    if layout == "junction4":
        return junction(rng, 4)
    if layout == "junction3":
        return junction(rng, 3)
    if layout == "curved_road":
        return curved_road(rng)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
