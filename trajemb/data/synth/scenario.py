"""One synthetic scenario: a road network populated with vehicles, cyclists, pedestrians and parked
objects, 110 steps at 10 Hz, AV2 track categories, placed at a random pose in a city frame."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_TOTAL_TIMESTEPS

from trajemb.data.schema import STEP_S, BoolArray, FloatArray, StrArray
from trajemb.data.synth.agents import (
    Crowd,
    Driver,
    Plan,
    Progress,
    RouteGeometry,
    Signals,
    positions,
    simulate_many,
)
from trajemb.data.synth.behaviour import BEHAVIOUR, GENERATOR_VERSION, Behaviour, Range
from trajemb.data.synth.noise import smooth_noise, track
from trajemb.data.synth.roads import ManoeuvreSpan, RoadNetwork, Route, road_network

CITIES: tuple[str, ...] = ("austin", "dearborn", "miami", "palo-alto", "pittsburgh", "washington-dc")
#: Relative frequency of each intended vehicle manoeuvre (``Behaviour.manoeuvre_weights``).
MANOEUVRE_WEIGHTS: dict[str, float] = BEHAVIOUR.manoeuvre_weights
#: AV2 ``object_category`` codes.
FRAGMENT, UNSCORED, SCORED, FOCAL = 0, 1, 2, 3
AV_TRACK_ID = "AV"
#: Vehicle lengths (m) for the gaps behind them: cars, buses.
CAR_LENGTH_M, BUS_LENGTH_M = 4.6, 12.0
#: Keys of walking and cycling paths in the car-following model (no map lane; users of one path follow
#: one another).
_WALK_KEY, _BIKE_KEY = -100_000, -200_000


@dataclass
class SynthScenario:
    """Arrays of one scenario in the city frame. A = tracks, S = steps."""

    scenario_id: str
    city: str
    track_ids: StrArray  # (A,)
    object_types: StrArray  # (A,)
    categories: np.ndarray  # (A,) int AV2 object_category
    xy_city: FloatArray  # (A, S, 2)
    heading_rad: FloatArray  # (A, S)
    velocity_mps: FloatArray  # (A, S, 2)
    valid: BoolArray  # (A, S)
    focal_track_id: str
    start_timestamp_ns: int
    network: RoadNetwork  # already in the city frame
    layout: str
    # Ground truth beside the AV2 data (``trajemb.data.truth``): what each road user was built to do.
    route_kinds: StrArray  # (A,) the route's manoeuvre, or parked / static for standing objects
    route_s_m: FloatArray  # (A, S) noise-free arc length along the route, NaN where invalid
    spans: list[tuple[ManoeuvreSpan, ...]]  # (A,) manoeuvres along each route
    generator: int = (
        GENERATOR_VERSION  # which generator made it (``trajemb.data.synth.behaviour.GENERATORS``)
    )


#: The manoeuvres among a list of routes (sorted), the chance of each and the routes of each.
_Choice = tuple[list[str], FloatArray, dict[str, list[Route]]]


def _weighted_route(rng: np.random.Generator, choice: _Choice) -> Route:
    """A route of a manoeuvre drawn by its weight (``_route_choice``), then one of that manoeuvre."""
    kinds, p, candidates = choice
    kind = kinds[int(rng.choice(len(kinds), p=p))]
    return candidates[kind][int(rng.integers(len(candidates[kind])))]


def _route_choice(routes: list[Route], weights: dict[str, float]) -> _Choice:
    """The manoeuvres of ``routes`` (sorted), the chance of each by ``weights`` and the routes of each."""
    kinds = sorted({r.manoeuvre for r in routes})
    w = np.array([weights.get(k, 0.1) for k in kinds])
    return kinds, w / w.sum(), {k: [r for r in routes if r.manoeuvre == k] for k in kinds}


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r.low, r.high))


@dataclass
class _User:
    """A moving road user before simulation: its plan and what the scenario needs to know of it."""

    plan: Plan
    route: Route
    object_type: str
    seen_from_s: float  # the tracker picks it up from this time
    full: bool  # must be seen for the whole scenario (focal candidate, the AV)


class _Routes:
    """Route geometry, computed once per route of a scenario, and the manoeuvre weights of its routes."""

    def __init__(self) -> None:
        self._cache: dict[int, RouteGeometry] = {}
        self._choices: dict[int, tuple[list[Route], _Choice]] = {}

    def choice(self, routes: list[Route], weights: dict[str, float]) -> _Choice:
        """``_route_choice(routes, weights)``, once per list of routes (the weights are the scenario's)."""
        key = id(routes)
        if key not in self._choices:  # the list is kept beside its choice, so its id stays its own
            self._choices[key] = (routes, _route_choice(routes, weights))
        return self._choices[key][1]

    def __call__(self, route: Route) -> RouteGeometry:
        key = id(route)
        if key not in self._cache:
            self._cache[key] = RouteGeometry.of(route.xy)
        return self._cache[key]


def _signals(rng: np.random.Generator, net: RoadNetwork, control: str, b: Behaviour) -> Signals:
    """One signal per junction arm (index = ``Route.approach``): red from / until (s)."""
    n = 1 + max([r.approach for r in net.routes if r.approach is not None] + [-1])
    if control != "signal" or n == 0:
        return Signals.none()
    red_start = rng.random(n) < b.red_at_start
    turns_red = rng.random(n) < b.turns_red
    red_from = np.where(
        red_start, 0.0, np.where(turns_red, rng.uniform(b.red_from_s.low, b.red_from_s.high, n), np.inf)
    )
    red_until = np.where(red_start, rng.uniform(b.red_until_s.low, b.red_until_s.high, n), np.inf)
    return Signals(red_from, red_until)


def _vehicle(
    rng: np.random.Generator,
    net: RoadNetwork,
    routes: _Routes,
    num_steps: int,
    full: bool,
    control: str,
    b: Behaviour,
    object_type: str = "vehicle",
) -> _User:
    route = _weighted_route(rng, routes.choice(net.routes, b.manoeuvre_weights))
    geometry = routes(route)
    length = geometry.length_m
    median = b.desired_speed_road_mps if net.layout == "curved_road" else b.desired_speed_junction_mps
    # np.clip of one positive number, by Python's min and max (the same value, a tenth of the time).
    v_des = min(
        max(float(median * np.exp(b.desired_speed_log_sd * rng.standard_normal())), b.desired_speed_mps.low),
        b.desired_speed_mps.high,
    )
    horizon_m = v_des * num_steps * STEP_S
    if route.stop_s_m is not None:
        s0 = route.stop_s_m - rng.uniform(5.0, b.approach_share * horizon_m + 10.0)
    else:
        s0 = rng.uniform(0.0, max(0.0, length - 0.5 * horizon_m))
    s0 = max(0.0, s0)
    if full:  # the focal candidate must stay on its route for the whole scenario
        s0 = min(s0, max(0.0, length - horizon_m - 10.0))
        v_des = min(v_des, max(4.0, (length - s0 - 10.0) / (num_steps * STEP_S)))
    elif rng.random() < b.entering:
        s0 = -rng.uniform(5.0, 60.0)  # still outside the map: it drives in from the far end
    stop, wait, signal = None, 0.0, -1
    if route.stop_s_m is not None and control != "none":
        stop = route.stop_s_m - rng.uniform(0.5, 2.0)
        if control == "signal" and route.approach is not None:
            signal = route.approach
        else:
            wait = _uniform(rng, b.stop_sign_wait_s)
    v0 = v_des * rng.uniform(0.6, 1.0)
    if not full and s0 >= 0 and rng.random() < b.start_standing:
        v0 = 0.0
        if stop is None or signal >= 0:
            wait = _uniform(rng, b.start_wait_s)
    bus = object_type == "bus"
    driver = Driver(
        desired_speed_mps=v_des,
        accel_mps2=_uniform(rng, b.accel_mps2) * (0.6 if bus else 1.0),
        decel_mps2=_uniform(rng, b.decel_mps2),
        lateral_accel_mps2=_uniform(rng, b.lateral_accel_mps2),
        initial_speed_mps=v0,
        stop_at_m=stop,
        wait_s=wait,
        headway_s=_uniform(rng, b.headway_s),
        min_gap_m=_uniform(rng, b.min_gap_m),
        length_m=BUS_LENGTH_M if bus else CAR_LENGTH_M,
    )
    lanes = tuple((p.lane, p.start_m, p.lane_s_m) for p in route.pieces)
    seen = 0.0 if full or rng.random() < 0.75 else rng.uniform(0.5, 6.0)
    return _User(Plan(geometry, driver, s0, lanes, signal), route, object_type, seen, full)


def _bounds(r: Range) -> tuple[float, float]:
    return r.low, r.high


def _slow_user(
    rng: np.random.Generator,
    routes: list[Route],
    geometry: _Routes,
    num_steps: int,
    object_type: str,
    key: int,
    control: str,
    b: Behaviour,
) -> _User:
    index = int(rng.integers(len(routes)))
    route = routes[index]
    g = geometry(route)
    length = g.length_m
    if object_type == "pedestrian":
        mean, sd, bounds = b.pedestrian_speed_mps, b.pedestrian_speed_sd_mps, b.pedestrian_speed_mps_range
    else:
        mean, sd, bounds = b.cyclist_speed_mps, b.cyclist_speed_sd_mps, b.cyclist_speed_mps_range
    v_des = float(np.clip(mean + sd * rng.standard_normal(), *_bounds(bounds)))
    s0 = rng.uniform(0.0, max(0.0, length - 0.5 * v_des * num_steps * STEP_S))
    stop, wait, signal = None, 0.0, -1
    if route.manoeuvre == "cross" or rng.random() < 0.2:  # wait at the kerb, or pause
        stop, wait = s0 + rng.uniform(0.5, 6.0), rng.uniform(0.5, 4.0)
    elif route.stop_s_m is not None and route.approach is not None and control == "signal":
        stop, signal = route.stop_s_m - rng.uniform(0.5, 2.0), route.approach
    walker = object_type == "pedestrian"
    driver = Driver(
        desired_speed_mps=v_des,
        accel_mps2=rng.uniform(0.5, 1.0) if walker else rng.uniform(0.8, 1.5),
        decel_mps2=rng.uniform(0.8, 1.5) if walker else rng.uniform(1.0, 2.0),
        lateral_accel_mps2=2.0,
        initial_speed_mps=v_des * rng.uniform(0.5, 1.0),
        stop_at_m=stop,
        wait_s=wait,
        headway_s=1.0,
        min_gap_m=0.5 if walker else 1.0,
        length_m=0.5 if walker else 1.8,
    )
    seen = 0.0 if rng.random() < 0.8 else rng.uniform(0.5, 6.0)
    lanes = ((key - index, 0.0, 0.0),)
    return _User(Plan(g, driver, s0, lanes, signal), route, object_type, seen, False)


def _queue(users: list[_User]) -> list[_User]:
    """Space road users that start on the same lane by their safe gaps: from the front, each one too
    close behind another moves back (past the map's start, it drives in later)."""
    placed: dict[int, list[tuple[float, _User]]] = {}
    for u in users:
        p = u.plan
        key, along = p.lanes[0][0], p.s0_m
        for lane, start, lane_s in p.lanes[1:]:
            if p.s0_m >= start:
                key, along = lane, p.s0_m - start + lane_s
        placed.setdefault(key, []).append((along, u))
    out: dict[int, _User] = {}
    for group in placed.values():
        group.sort(key=lambda x: -x[0])
        front = np.inf
        for along, u in group:
            d = u.plan.driver
            need = d.min_gap_m + d.headway_s * d.initial_speed_mps
            back = min(along, front - need) if np.isfinite(front) else along
            shift = along - back
            plan = u.plan
            if shift > 0:
                plan = Plan(plan.route, d, plan.s0_m - shift, plan.lanes, plan.signal)
            out[id(u)] = _User(plan, u.route, u.object_type, u.seen_from_s, u.full)
            front = back - d.length_m
    return [out[id(u)] for u in users]


def _stand(
    xy: list[FloatArray],
    heading: list[FloatArray],
    valid: list[BoolArray],
    route_s: list[FloatArray],
    spot: FloatArray,
    heading_rad: float,
    num_steps: int,
) -> None:
    """A parked or standing object (its tracking noise comes with everyone's)."""
    xy.append(np.repeat(np.asarray(spot, dtype=np.float64)[None, :], num_steps, axis=0))
    heading.append(np.full(num_steps, heading_rad))
    valid.append(np.ones(num_steps, dtype=bool))
    route_s.append(np.zeros(num_steps))


def _place(net: RoadNetwork, rot: FloatArray, shift: FloatArray) -> RoadNetwork:
    def tf(xy: FloatArray) -> FloatArray:
        return np.asarray(xy @ rot.T + shift, dtype=np.float64)

    for lane in net.lanes:
        lane.xy = tf(lane.xy)
    net.drivable_areas = [tf(a) for a in net.drivable_areas]
    net.crossings = [(tf(a), tf(b)) for a, b in net.crossings]
    return net


#: Numbers track ids are drawn from (made once: building it took a tenth of a scenario's time).
_TRACK_ID_POOL = np.arange(10_000, 999_999)
_TRACK_ID_POOL.flags.writeable = False


def generate_scenario(
    rng: np.random.Generator, num_steps: int = AV2_SCENARIO_TOTAL_TIMESTEPS, behaviour: Behaviour = BEHAVIOUR
) -> SynthScenario:
    """Sample one scenario (network, road users, categories, city placement)."""
    return generate_scenarios([rng], num_steps, behaviour)[0]


def generate_scenarios(
    rngs: list[np.random.Generator],
    num_steps: int = AV2_SCENARIO_TOTAL_TIMESTEPS,
    behaviour: Behaviour = BEHAVIOUR,
) -> list[SynthScenario]:
    """``generate_scenario`` of each stream, the same scenarios, with their road users simulated together
    (``trajemb.data.synth.agents.simulate_many``: a tenth of the car-following loop's cost per scenario
    in batches of a few dozen). Each scenario draws from its own stream alone."""
    drafts = [_draft(rng, num_steps, behaviour) for rng in rngs]
    crowds = [Crowd([u.plan for u in d.users], d.signals, d.factor) for d in drafts]
    progress = simulate_many(crowds, num_steps)
    return [
        _finish(rng, d, p, num_steps, behaviour) for rng, d, p in zip(rngs, drafts, progress, strict=True)
    ]


@dataclass
class _Draft:
    """A scenario up to its simulation: the network, road users and their speed factors."""

    net: RoadNetwork
    signals: Signals
    users: list[_User]
    factor: FloatArray  # (A, S) factors on each road user's desired speed


def _draft(rng: np.random.Generator, num_steps: int, b: Behaviour) -> _Draft:
    """Everything of a scenario its simulation needs, drawn in the order ``generate_scenario`` draws it."""
    net = road_network(rng)
    geometry = _Routes()
    control = "none"
    if net.layout != "curved_road":
        names = list(b.junction_control)
        w = np.array([b.junction_control[k] for k in names])
        control = names[int(rng.choice(len(names), p=w / w.sum()))]
    signals = _signals(rng, net, control, b)
    users = [
        _vehicle(rng, net, geometry, num_steps, True, control, b),  # focal candidate
        _vehicle(rng, net, geometry, num_steps, True, control, b),  # the AV
    ]
    for _ in range(int(rng.integers(10, 26))):
        kind = "bus" if rng.random() < 0.04 else ("motorcyclist" if rng.random() < 0.03 else "vehicle")
        users.append(_vehicle(rng, net, geometry, num_steps, False, control, b, kind))
    users = _queue(users)
    for _ in range(int(rng.integers(0, 5))):
        if net.bike_routes:
            users.append(
                _slow_user(rng, net.bike_routes, geometry, num_steps, "cyclist", _BIKE_KEY, control, b)
            )
    for _ in range(int(rng.integers(0, 9))):
        users.append(
            _slow_user(rng, net.walk_routes, geometry, num_steps, "pedestrian", _WALK_KEY, control, b)
        )

    M = len(users)
    walker = np.asarray([u.object_type for u in users]) == "pedestrian"
    factor = np.empty((M, num_steps))
    for rows, sd, correlation_s in (
        (np.flatnonzero(~walker), b.speed_variation, b.speed_correlation_s),
        (np.flatnonzero(walker), b.pedestrian_speed_variation, b.pedestrian_speed_correlation_s),
    ):
        factor[rows] = 1.0 + sd * smooth_noise(rng, (len(rows), num_steps), correlation_s)
    return _Draft(net, signals, users, factor)


def _finish(
    rng: np.random.Generator, draft: _Draft, progress: Progress, num_steps: int, b: Behaviour
) -> SynthScenario:
    """The scenario of a draft whose road users moved as ``progress`` says: positions, noise, tracks."""
    net, users = draft.net, draft.users
    M = len(users)
    types = [u.object_type for u in users]
    vru = np.isin(types, ["pedestrian", "cyclist"])
    walker = np.asarray(types) == "pedestrian"
    wander_m = np.where(walker, b.pedestrian_wander_m, np.where(vru, b.cyclist_wander_m, b.lane_wander_m))
    correlation = np.where(walker, b.pedestrian_correlation_s, b.lane_correlation_s)
    sideways = np.empty((M, num_steps))
    for value in np.unique(correlation):
        rows = np.flatnonzero(correlation == value)
        sideways[rows] = smooth_noise(rng, (len(rows), num_steps), float(value))
    sideways *= wander_m[:, None]
    times = np.arange(num_steps) * STEP_S
    # Each road user on its own route; then the wander sideways, all of them at once.
    along = [positions(u.plan.route, s_i) for u, s_i in zip(users, progress.s_m, strict=True)]
    heading_moving = np.stack([h for _, h in along])
    normal = np.stack([-np.sin(heading_moving), np.cos(heading_moving)], axis=-1)
    seen_from = np.array([u.seen_from_s for u in users])[:, None]
    route_len = np.array([u.plan.route.length_m for u in users])[:, None]
    s_moving = progress.s_m
    on_route = (times >= seen_from) & (s_moving >= 0.0) & (s_moving <= route_len)
    xy_parts = list(np.stack([xy for xy, _ in along]) + normal * sideways[:, :, None])
    heading_parts = list(heading_moving)
    valid_parts = list(on_route)
    s_parts = list(np.where(on_route, s_moving, np.nan))
    kinds = [u.route.manoeuvre for u in users]
    spans = [u.route.spans for u in users]
    for spot, spot_heading in net.curb_spots:
        if rng.random() < 0.5:
            _stand(xy_parts, heading_parts, valid_parts, s_parts, spot, spot_heading, num_steps)
            types.append("vehicle")
            kinds.append("parked")
            spans.append(())
    for _ in range(int(rng.integers(0, 3))):
        spot, spot_heading = net.curb_spots[int(rng.integers(len(net.curb_spots)))]
        _stand(
            xy_parts,
            heading_parts,
            valid_parts,
            s_parts,
            spot + rng.normal(0, 1.5, 2),
            spot_heading,
            num_steps,
        )
        types.append("static")
        kinds.append("static")
        spans.append(())

    xy = np.stack(xy_parts)
    heading = np.stack(heading_parts)
    valid = np.stack(valid_parts)
    route_s = np.stack(s_parts)
    n = len(xy)
    moving = np.arange(n) < M
    # Occlusions: some tracks lose a stretch of steps (these become fragments).
    for a in np.flatnonzero(rng.random(n) < b.occluded):
        if a < 2:
            continue
        start = int(rng.integers(0, num_steps - 5))
        valid[
            a, start : start + int(rng.integers(int(b.occlusion_steps.low), int(b.occlusion_steps.high)))
        ] = False
    noise = [
        b.vehicle_noise if moving[a] and not vru[a] else b.vru_noise if moving[a] else b.standing_noise
        for a in range(n)
    ]
    # The tracker sees the true motion (smooth, wander included); the truth keeps the progress.
    tracked = track(rng, xy, heading, noise)
    xy, velocity = tracked.xy, tracked.velocity_mps
    xy[~valid] = np.nan
    route_s[~valid] = np.nan

    ids = rng.choice(_TRACK_ID_POOL, size=n, replace=False).astype(str)
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
    heading_city = (tracked.heading_rad + phi + np.pi) % (2 * np.pi) - np.pi
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
    )
