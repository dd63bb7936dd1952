"""Generator 1 (``trajemb synth --generator 1``, up to trajemb 0.1.x), kept as it was: lane-following
speed profiles, Gaussian position noise. One synthetic scenario: a road network populated with
vehicles, cyclists, pedestrians and parked objects, 110 steps at 10 Hz, AV2 track categories, placed at
a random pose in a city frame."""

from __future__ import annotations

import uuid

import numpy as np
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_TOTAL_TIMESTEPS

from trajemb.data.schema import STEP_S, FloatArray
from trajemb.data.synth.geometry import arc_length_m
from trajemb.data.synth.roads import ManoeuvreSpan, RoadNetwork, Route
from trajemb.data.synth.scenario import SynthScenario
from trajemb.data.synth.v1.agents import Driver, Motion, drive, standing
from trajemb.data.synth.v1.roads import road_network

CITIES: tuple[str, ...] = ("austin", "dearborn", "miami", "palo-alto", "pittsburgh", "washington-dc")
#: Relative frequency of each intended vehicle manoeuvre (renormalised over what a network offers).
MANOEUVRE_WEIGHTS: dict[str, float] = {
    "straight": 0.30,
    "left": 0.17,
    "right": 0.17,
    "u_turn": 0.10,
    "lane_change_left": 0.13,
    "lane_change_right": 0.13,
}
#: AV2 ``object_category`` codes.
FRAGMENT, UNSCORED, SCORED, FOCAL = 0, 1, 2, 3
AV_TRACK_ID = "AV"


def _weighted_route(rng: np.random.Generator, routes: list[Route]) -> Route:
    kinds = sorted({r.manoeuvre for r in routes})
    w = np.array([MANOEUVRE_WEIGHTS.get(k, 0.1) for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    candidates = [r for r in routes if r.manoeuvre == kind]
    return candidates[int(rng.integers(len(candidates)))]


def _vehicle(rng: np.random.Generator, net: RoadNetwork, num_steps: int, full: bool) -> tuple[Motion, Route]:
    route = _weighted_route(rng, net.routes)
    length = float(arc_length_m(route.xy)[-1])
    v_des = rng.uniform(10.0, 20.0) if net.layout == "curved_road" else rng.uniform(7.0, 16.0)
    horizon_m = v_des * num_steps * STEP_S
    if route.stop_s_m is not None:
        s0 = max(0.0, route.stop_s_m - rng.uniform(5.0, 0.8 * horizon_m + 20.0))
    else:
        s0 = rng.uniform(0.0, max(0.0, length - 0.5 * horizon_m))
    if full:  # the focal candidate must stay on its route for the whole scenario
        s0 = min(s0, max(0.0, length - horizon_m - 10.0))
        v_des = min(v_des, max(4.0, (length - s0 - 10.0) / (num_steps * STEP_S)))
    stop, wait, v0 = None, 0.0, v_des * rng.uniform(0.6, 1.0)
    r = rng.random()
    if route.stop_s_m is not None and r < 0.3:
        stop, wait = route.stop_s_m - rng.uniform(1.0, 4.0), rng.uniform(0.5, 5.0)
    elif r < 0.4:
        v0, wait = 0.0, rng.uniform(0.0, 4.0)
    elif route.stop_s_m is not None and r < 0.45:
        stop, wait = route.stop_s_m - rng.uniform(1.0, 4.0), 30.0  # red light: stays stopped
    driver = Driver(
        v_des, rng.uniform(1.0, 2.8), rng.uniform(1.5, 3.5), rng.uniform(1.8, 3.2), v0, stop, wait
    )
    t0 = 0.0 if full or rng.random() < 0.75 else rng.uniform(0.5, 6.0)
    return drive(route.xy, s0, driver, t0, num_steps), route


def _slow_user(
    rng: np.random.Generator, routes: list[Route], num_steps: int, speed: tuple[float, float]
) -> tuple[Motion, Route]:
    route = routes[int(rng.integers(len(routes)))]
    length = float(arc_length_m(route.xy)[-1])
    v_des = rng.uniform(*speed)
    s0 = rng.uniform(0.0, max(0.0, length - 0.5 * v_des * num_steps * STEP_S))
    stop = None
    wait = 0.0
    if route.manoeuvre == "cross" or rng.random() < 0.2:  # wait at the kerb, or pause
        stop, wait = s0 + rng.uniform(0.5, 6.0), rng.uniform(0.5, 4.0)
    driver = Driver(
        v_des, rng.uniform(0.5, 1.5), rng.uniform(0.8, 2.0), 2.0, v_des * rng.uniform(0.5, 1.0), stop, wait
    )
    t0 = 0.0 if rng.random() < 0.8 else rng.uniform(0.5, 6.0)
    return drive(route.xy, s0, driver, t0, num_steps), route


def _place(net: RoadNetwork, rot: FloatArray, shift: FloatArray) -> RoadNetwork:
    def tf(xy: FloatArray) -> FloatArray:
        return np.asarray(xy @ rot.T + shift, dtype=np.float64)

    for lane in net.lanes:
        lane.xy = tf(lane.xy)
    net.drivable_areas = [tf(a) for a in net.drivable_areas]
    net.crossings = [(tf(a), tf(b)) for a, b in net.crossings]
    return net


def generate_scenario(
    rng: np.random.Generator, num_steps: int = AV2_SCENARIO_TOTAL_TIMESTEPS
) -> SynthScenario:
    """Sample one scenario (network, road users, categories, city placement)."""
    net = road_network(rng)
    motions: list[Motion] = []
    types: list[str] = []
    kinds: list[str] = []
    spans: list[tuple[ManoeuvreSpan, ...]] = []

    def add(motion_route: tuple[Motion, Route], object_type: str) -> None:
        motions.append(motion_route[0])
        kinds.append(motion_route[1].manoeuvre)
        spans.append(motion_route[1].spans)
        types.append(object_type)

    add(_vehicle(rng, net, num_steps, full=True), "vehicle")  # focal candidate
    add(_vehicle(rng, net, num_steps, full=True), "vehicle")  # the AV
    for _ in range(int(rng.integers(10, 26))):
        moved = _vehicle(rng, net, num_steps, full=False)
        add(moved, "bus" if rng.random() < 0.04 else ("motorcyclist" if rng.random() < 0.03 else "vehicle"))
    for _ in range(int(rng.integers(0, 5))):
        if net.bike_routes:
            add(_slow_user(rng, net.bike_routes, num_steps, (3.0, 7.0)), "cyclist")
    for _ in range(int(rng.integers(0, 9))):
        add(_slow_user(rng, net.walk_routes, num_steps, (0.9, 1.8)), "pedestrian")
    for spot, spot_heading in net.curb_spots:
        if rng.random() < 0.5:
            motions.append(standing(spot, spot_heading, num_steps, rng, 0.02))
            types.append("vehicle")
            kinds.append("parked")
            spans.append(())
    for _ in range(int(rng.integers(0, 3))):
        spot, spot_heading = net.curb_spots[int(rng.integers(len(net.curb_spots)))]
        motions.append(standing(spot + rng.normal(0, 1.5, 2), spot_heading, num_steps, rng, 0.03))
        types.append("static")
        kinds.append("static")
        spans.append(())

    xy = np.stack([m.xy for m in motions])
    heading = np.stack([m.heading_rad for m in motions])
    velocity = np.stack([m.velocity_mps for m in motions])
    valid = np.stack([m.valid for m in motions])
    # Occlusions: some tracks lose a stretch of steps (these become fragments).
    for a in np.flatnonzero(rng.random(len(motions)) < 0.12)[:]:
        if a < 2:
            continue
        start = int(rng.integers(0, num_steps - 5))
        valid[a, start : start + int(rng.integers(3, 16))] = False
    sigma = np.where(np.isin(types, ["pedestrian", "cyclist"]), 0.04, 0.025)
    xy = xy + rng.normal(0.0, 1.0, xy.shape) * sigma[:, None, None]
    xy[~valid] = np.nan
    route_s = np.stack([m.route_s_m for m in motions])
    route_s[~valid] = np.nan

    n = len(motions)
    ids = rng.choice(np.arange(10_000, 999_999), size=n, replace=False).astype(str)
    ids[1] = AV_TRACK_ID
    full = np.asarray(valid.all(axis=1), dtype=bool)
    categories = np.where(full, UNSCORED, FRAGMENT)
    net_disp = np.hypot(*(xy[0, -1] - xy[0, 0]))
    focal = 0 if full[0] and net_disp > 5.0 else 1
    categories[focal] = FOCAL
    scored = [a for a in range(2, n) if full[a] and types[a] != "static"][: int(rng.integers(0, 4))]
    categories[scored] = SCORED

    phi = rng.uniform(-np.pi, np.pi)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    shift = rng.uniform(-4000.0, 4000.0, 2).round(1)
    xy_city = xy @ rot.T + shift
    vel_city = velocity @ rot.T
    heading_city = (heading + phi + np.pi) % (2 * np.pi) - np.pi
    return SynthScenario(
        scenario_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        city=str(rng.choice(CITIES)),
        track_ids=ids.astype(np.str_),
        object_types=np.asarray(types, dtype=np.str_),
        categories=categories.astype(np.int64),
        xy_city=xy_city,
        heading_rad=heading_city,
        velocity_mps=vel_city,
        valid=valid,
        focal_track_id=str(ids[focal]),
        start_timestamp_ns=int(rng.integers(315_966_000, 315_999_000)) * 1_000_000_000,
        network=_place(net, rot, shift),
        layout=net.layout,
        route_kinds=np.asarray(kinds, dtype=np.str_),
        route_s_m=route_s,
        spans=spans,
        generator=1,
    )
