"""Road users on synthetic routes: car following, curves, signals and stops, sampled at 10 Hz.

Every road user moves along its route by the Intelligent Driver Model (IDM; Treiber, Hennecke and
Helbing 2000, "Congested traffic states in empirical observations and microscopic simulations", Phys.
Rev. E 62, 1805): it accelerates towards a desired speed and keeps a safe time gap to the road user
ahead of it on the same lane, or on the next lane of its route. The desired speed is lowered ahead of
curves to what a comfortable lateral acceleration allows (``v <= sqrt(a_lat / |kappa|)``), anticipated
with the driver's comfortable braking (the backward pass of the classic velocity planner, a closed form
over running minima). Red signals, stop signs and a wait at the start are standing obstacles at the
stop line (or just ahead), so queues form behind them and discharge with the model's own dynamics:
stop-and-go without a rule for it. A signal that turns red too close to stop (more than
``MAX_STOPPING_DECEL_MPS2`` needed) is run, as drivers do in the dilemma zone.

The model is integrated with the ballistic update (Treiber and Kanagaraj 2015, "Comparing numerical
integration schemes for time-continuous car-following models", Physica A 419) at ``SIM_STEP_S``, all
road users of a scenario at once (``simulate_many``: of K scenarios at once, the same numbers); inside
a step the acceleration is constant, so the 10 Hz samples are exact, not interpolated. Positions follow
from the progress along the route (arc length).

Legend: A road users, S steps at 10 Hz, M simulation steps, P route points, K scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajemb.data.schema import STEP_S, BoolArray, FloatArray, IntArray
from trajemb.data.synth.geometry import arc_length_m, clip, columns, gradient_rows

#: Integration step (s): two 10 Hz samples per step.
SIM_STEP_S = 2 * STEP_S
#: IDM's acceleration exponent (delta = 4, as in Treiber et al. 2000).
IDM_DELTA = 4
#: A leader slower than this (m/s) counts as standing: the follower stops behind it.
STANDING_SPEED_MPS = 0.2
#: Braking for a stop begins when the constant deceleration it needs reaches this share of the
#: driver's comfortable braking, and is all of it at twice the share.
STOP_BRAKE_ONSET = 0.4
#: Within this distance (m) of its stopping point a road user stands.
STOP_REACHED_M = 0.05
#: Strongest braking the model may ask for (m/s^2): an emergency stop.
MAX_DECEL_MPS2 = 8.0
#: A red signal is run when stopping before the line would need more than this (m/s^2).
MAX_STOPPING_DECEL_MPS2 = 4.0
#: A stop sign counts as obeyed once the road user stood (slower than this, m/s) ...
STOPPED_SPEED_MPS = 0.1
#: ... within this distance (m) of the line for its ``wait_s``.
STOP_LINE_REACH_M = 4.0


@dataclass(frozen=True)
class Driver:
    """How one road user moves (IDM parameters and its stops)."""

    desired_speed_mps: float
    accel_mps2: float  # IDM maximum acceleration a
    decel_mps2: float  # IDM comfortable braking b
    lateral_accel_mps2: float  # comfortable lateral acceleration in curves
    initial_speed_mps: float
    stop_at_m: float | None = None  # arc length of a stop line on the route
    wait_s: float = 0.0  # stand there this long (a stop sign), or at the start if initial speed is 0
    headway_s: float = 1.4  # IDM safe time gap T
    min_gap_m: float = 2.0  # IDM gap at standstill s0
    length_m: float = 4.6  # bumper to bumper, for the gap behind it


@dataclass(frozen=True)
class Motion:
    xy: FloatArray  # (S, 2) positions, NaN where the agent is not on its route
    heading_rad: FloatArray  # (S,)
    velocity_mps: FloatArray  # (S, 2)
    valid: BoolArray  # (S,)
    route_s_m: FloatArray  # (S,) noise-free arc length along the route (0 standing still), NaN where invalid


@dataclass(frozen=True)
class RouteGeometry:
    """A route's polyline with what motion along it needs: arc length, tangent heading, curvature."""

    xy: FloatArray  # (P, 2)
    s_m: FloatArray  # (P,) starting at 0
    heading_rad: FloatArray  # (P,) unwrapped
    kappa_per_m: FloatArray  # (P,)

    @classmethod
    def of(cls, route_xy: FloatArray) -> RouteGeometry:
        """Of a polyline with points (about) evenly spaced, as ``trajemb.data.synth.geometry.resample`` gives:
        curvature is the heading's gradient over the mean spacing."""
        xy = np.asarray(route_xy, dtype=np.float64)
        s = arc_length_m(xy)
        heading = heading_path_at(xy)
        even = len(xy) > 3 and s[-1] > 0
        kappa = gradient_rows(heading) / (s[-1] / (len(xy) - 1)) if even else np.zeros(len(xy))
        return cls(xy, s, heading, kappa)

    @property
    def length_m(self) -> float:
        return float(self.s_m[-1])


@dataclass(frozen=True)
class Plan:
    """One road user to simulate: its route, driver, where it is at time 0 (negative: still outside the
    map, entering later), the lanes it runs on (``(lane key, route arc length where it starts, arc length
    along the lane there)``; road users on one lane follow one another) and its signal (-1: none)."""

    route: RouteGeometry
    driver: Driver
    s0_m: float
    lanes: tuple[tuple[int, float, float], ...] = ()
    signal: int = -1


@dataclass(frozen=True)
class Signals:
    """Traffic signals of a scenario: signal i is red from ``red_from_s[i]`` until ``red_until_s[i]``."""

    red_from_s: FloatArray
    red_until_s: FloatArray

    @classmethod
    def none(cls) -> Signals:
        return cls(np.zeros(0), np.zeros(0))


def speed_profile(s_m: FloatArray, kappa_per_m: FloatArray, driver: Driver) -> FloatArray:
    """Feasible speed (m/s) at each arc-length sample ``s_m`` (uniformly spaced, starting at 0): the
    desired speed, the curve limit, acceleration and braking limits and the driver's stop (a closed-form
    velocity planner; the car-following model uses its backward pass, ``curve_speed_limit``)."""
    v_max = np.minimum(
        driver.desired_speed_mps, np.sqrt(driver.lateral_accel_mps2 / np.maximum(np.abs(kappa_per_m), 1e-6))
    )
    v2 = v_max**2
    v2[0] = min(v2[0], driver.initial_speed_mps**2)
    if driver.stop_at_m is not None:
        v2[int(np.searchsorted(s_m, driver.stop_at_m))] = 0.0
    # Forward pass: v_i^2 = min_j<=i (v_j^2 + 2 a (s_i - s_j)); backward with the braking limit.
    a, d = driver.accel_mps2, driver.decel_mps2
    fwd = 2 * a * s_m + np.minimum.accumulate(v2 - 2 * a * s_m)
    bwd = -2 * d * s_m + np.minimum.accumulate((fwd + 2 * d * s_m)[::-1])[::-1]
    return np.sqrt(np.maximum(bwd, 0.0))


def curve_speed_limit(route: RouteGeometry, driver: Driver) -> FloatArray:
    """(P,) the speed a driver wants at each route point: its desired speed, below the curve limit and
    braking comfortably ahead of each curve."""
    s = route.s_m
    v_max = np.minimum(
        driver.desired_speed_mps,
        np.sqrt(driver.lateral_accel_mps2 / np.maximum(np.abs(route.kappa_per_m), 1e-6)),
    )
    d = driver.decel_mps2
    bwd = -2 * d * s + np.minimum.accumulate((v_max**2 + 2 * d * s)[::-1])[::-1]
    return np.asarray(np.sqrt(np.maximum(bwd, 0.0)), dtype=np.float64)


def heading_path_at(xy_path: FloatArray) -> FloatArray:
    """Unwrapped tangent heading at each point of a path (repeated points take their neighbours')."""
    tangent = gradient_rows(xy_path)
    heading = np.arctan2(tangent[:, 1], tangent[:, 0])
    # np.unwrap's arithmetic without its per-call overhead.
    turn = heading[1:] - heading[:-1]
    turn = (turn + np.pi) % (2 * np.pi) - np.pi
    return np.concatenate([heading[:1], heading[0] + np.cumsum(turn)])


@dataclass(frozen=True)
class Progress:
    """Simulated progress of A road users: (A, S) arc length along each route and speed, at 10 Hz."""

    s_m: FloatArray
    speed_mps: FloatArray


@dataclass(frozen=True)
class Crowd:
    """The road users of one scenario to simulate together (``simulate_many``): their plans, the
    scenario's signals and (A, S) factors on each one's desired speed (None: 1)."""

    plans: list[Plan]
    signals: Signals | None = None
    desired_factor: FloatArray | None = None


def simulate(
    plans: list[Plan],
    num_steps: int,
    signals: Signals | None = None,
    desired_factor: FloatArray | None = None,
) -> Progress:
    """Move every road user of ``plans`` along its route at once (module docstring).

    Args:
        desired_factor: (A, S) multiplies each one's desired speed over time (drivers do not hold a
            speed exactly); None: 1.
    """
    return simulate_many([Crowd(plans, signals, desired_factor)], num_steps)[0]


#: Lane keys of the padding ``simulate_many`` adds (beyond every key a scenario uses, and its ``dead``).
_PAD_KEY = -2_000_000_000


@dataclass
class _Table:
    """Per road user inputs of one scenario's simulation: (A,) vectors, (A, M) rows, (A, W) lane tables."""

    vectors: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    keys: IntArray
    starts: FloatArray
    lane_s: FloatArray
    limits: list[FloatArray]


def _table(crowd: Crowd, r: int, M: int) -> _Table:
    """One scenario's inputs, computed as ``simulate`` always did."""
    plans = crowd.plans
    signals = crowd.signals or Signals.none()
    A = len(plans)
    drivers = [p.driver for p in plans]
    stop_at = np.array([np.nan if d.stop_at_m is None else d.stop_at_m for d in drivers])
    signal = np.array([p.signal for p in plans], dtype=np.int64)
    has_signal = signal >= 0
    times = np.arange(M) * SIM_STEP_S
    red_at = np.zeros((A, M), dtype=bool)
    if has_signal.any():
        red_from = signals.red_from_s[np.maximum(signal, 0)][:, None]
        red_until = signals.red_until_s[np.maximum(signal, 0)][:, None]
        red_at = has_signal[:, None] & (times >= red_from) & (times < red_until)
    wait = np.array([d.wait_s for d in drivers])
    gap0 = np.array([d.min_gap_m for d in drivers])
    sign = ~np.isnan(stop_at) & ~has_signal & (wait > 0)
    v_init = np.array([d.initial_speed_mps for d in drivers], dtype=np.float64)
    hold = (v_init == 0.0) & (wait > 0) & ~sign  # waits at its start
    factor = crowd.desired_factor
    keys, starts, lane_s = _lane_tables(plans)
    vectors = {
        "a": np.array([d.accel_mps2 for d in drivers]),
        "b": np.array([d.decel_mps2 for d in drivers]),
        "headway": np.array([d.headway_s for d in drivers]),
        "gap0": gap0,
        "length": np.array([d.length_m for d in drivers]),
        "route_len": np.array([p.route.length_m for p in plans]),
        "stop_at": stop_at,
        "wait": wait,
        "sign": sign,
        "v_init": v_init,
        "s0": np.array([p.s0_m for p in plans], dtype=np.float64),
    }
    rows = {
        "factor": np.ones((A, M)) if factor is None else np.asarray(factor)[:, ::r][:, :M],
        "red_at": red_at,
        # A wait at the start: a standstill gap ahead of s0 until ``wait`` (inf: none).
        "hold_gap": np.where(hold[:, None] & (times < wait[:, None]), gap0[:, None], np.inf),
    }
    limits = [curve_speed_limit(p.route, p.driver) for p in plans]
    return _Table(vectors, rows, keys, starts, lane_s, limits)


#: What a padding row holds (``simulate_many``): a road user past the end of a 1 m route of its own,
#: standing, far from everyone (its numbers never reach a real road user's).
_PAD_VECTOR = {
    "a": 1.0,
    "b": 1.0,
    "headway": 1.0,
    "gap0": 1.0,
    "length": 0.0,
    "route_len": 1.0,
    "stop_at": np.nan,
    "wait": 0.0,
    "sign": False,
    "v_init": 0.0,
    "s0": 2.0,
}
_PAD_ROW = {"factor": 1.0, "red_at": False, "hold_gap": np.inf}
_PAD_LIMIT = np.ones(2)


def simulate_many(crowds: list[Crowd], num_steps: int) -> list[Progress]:
    """``simulate`` of each crowd, the same numbers bit for bit, with K scenarios in one pass.

    A step costs about 80 NumPy calls, whatever the number of road users: stepping K scenarios
    together as (K, A) arrays (A the largest crowd; shorter ones padded with road users who stand past
    the end of routes of their own and lead no one) takes K times fewer calls. Every operation is
    element by element or within one scenario's rows (the leader search runs over (K, A, A) blocks), so
    each road user's numbers are those of ``simulate`` on its scenario alone.
    """
    K = len(crowds)
    A = max([len(c.plans) for c in crowds] + [0])
    r = round(SIM_STEP_S / STEP_S)
    M = (num_steps - 1 + r - 1) // r + 1
    dt = SIM_STEP_S
    if A == 0:  # nobody to move
        return [Progress(np.zeros((0, num_steps)), np.zeros((0, num_steps))) for _ in crowds]
    N = K * A
    tables = [_table(c, r, M) for c in crowds]
    sizes = [len(c.plans) for c in crowds]

    def vector(name: str) -> np.ndarray:
        out = np.full((K, A), _PAD_VECTOR[name], dtype=tables[0].vectors[name].dtype)
        for k, t in enumerate(tables):
            out[k, : sizes[k]] = t.vectors[name]
        return out.ravel()

    def rows_of(name: str) -> np.ndarray:
        # The loop reads columns 0 to M - 2 (a factor sampled every r steps may stop there).
        out = np.full((K, A, M), _PAD_ROW[name], dtype=tables[0].rows[name].dtype)
        for k, t in enumerate(tables):
            row = t.rows[name]
            out[k, : sizes[k], : row.shape[1]] = row
        return out.reshape(N, M)

    a, b, headway, gap0 = vector("a"), vector("b"), vector("headway"), vector("gap0")
    length, route_len, stop_at, wait = (
        vector("length"),
        vector("route_len"),
        vector("stop_at"),
        vector("wait"),
    )
    sign, v_init, s = vector("sign"), vector("v_init"), vector("s0")
    factor, red_at, hold_gap = rows_of("factor"), rows_of("red_at"), rows_of("hold_gap")
    # Curve speed limits of every route, flat, with each road user's offset, count and spacing.
    limits = [t.limits[i] if i < sizes[k] else _PAD_LIMIT for k, t in enumerate(tables) for i in range(A)]
    counts = np.array([len(v) for v in limits], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat_limit = np.concatenate(limits)
    spacing = route_len / np.maximum(counts - 1, 1)
    # Lane tables of every scenario, as wide as the widest; the columns added never start, and padding
    # rows run on lanes of their own.
    width = max(t.keys.shape[1] for t in tables)
    keys = (_PAD_KEY - np.arange(N * width, dtype=np.int64)).reshape(N, width)
    starts = np.full((N, width), np.inf)
    starts[:, 0] = 0.0  # a padding row is on its first lane from the start
    lane_s = np.zeros((N, width))
    for k, t in enumerate(tables):
        w = t.keys.shape[1]
        keys[k * A : k * A + sizes[k], :w] = t.keys
        starts[k * A : k * A + sizes[k], :w] = t.starts
        lane_s[k * A : k * A + sizes[k], :w] = t.lane_s
    rows = np.arange(N)
    # Each road user's scenario starts at this row: leaders are looked up as base + column.
    base = rows - rows % A
    # Lane lookups: the lane a road user is on is the number of later lanes whose start it passed.
    later_starts = starts[:, 1:]
    # Per step, the lane each road user is on is looked up as flat rows of these tables (np.take of
    # rows * width + piece: a tenth of the cost of indexing with two arrays, the same values).
    row_base = rows * width
    keys_flat = keys.ravel()
    later_base = rows * (width - 1)
    later_starts_flat = np.ascontiguousarray(later_starts).ravel()
    later_keys_flat = np.ascontiguousarray(keys[:, 1:]).ravel()
    along = lane_s - np.maximum(starts, 0.0)  # position on the lane = s + along[lane]
    along_flat = np.ascontiguousarray(along).ravel()
    dead = np.tile(-(np.arange(A) + 1) * 7_919 - 10_000_000, K)  # the lane of one who left its route
    hold_at = s.copy()
    # Stops: the stop line (NaN: none), a signal, a stop sign to stand at for ``wait_s``. Where a
    # scenario has none, the stop terms below leave every number as it is.
    any_stop = bool(red_at.any() or sign.any())
    stood = np.zeros(N)
    running_red = np.zeros(N, dtype=bool)
    inv_spacing = 1.0 / spacing
    last = counts - 1
    sqrt_ab = 2 * np.sqrt(a * b)
    # Nobody starts faster than the curve ahead allows.
    idx = np.clip(np.rint(s * inv_spacing), 0, last).astype(np.int64) + offsets
    v = np.minimum(v_init, flat_limit[idx])
    s_hist, v_hist, acc_hist = np.empty((N, M)), np.empty((N, M)), np.zeros((N, M))
    for m in range(M - 1):
        s_hist[:, m] = s
        v_hist[:, m] = v
        active = s < route_len
        idx = clip((s * inv_spacing + 0.5).astype(np.int64), 0, last) + offsets
        v0 = np.maximum(flat_limit[idx] * factor[:, m], 0.1)
        # The leader: nearest road user ahead on my lane or on the next lane of my route.
        piece = np.count_nonzero(later_starts <= s[:, None], axis=1)
        at = row_base + piece
        lane = np.where(active, keys_flat.take(at), dead).reshape(K, 1, A)
        pos = (s + along_flat.take(at)).reshape(K, 1, A)
        dpos = pos - pos.reshape(K, A, 1)  # [k, i, j]: j's position minus i's
        gaps = np.where((lane == lane.reshape(K, A, 1)) & (dpos > 0), dpos, np.inf)
        later = later_base + piece
        to_next = (later_starts_flat.take(later) - s).reshape(K, A, 1)
        np.minimum(
            gaps,
            np.where(later_keys_flat.take(later).reshape(K, A, 1) == lane, to_next + pos, np.inf),
            out=gaps,
        )
        lead = gaps.argmin(axis=2).ravel()
        gap = gaps.reshape(N, A)[rows, lead] - length[base + lead]
        v_lead = v[base + lead]
        # Standing obstacles: a red signal or a stop sign at the line, a wait at the start.
        obstacle = hold_at + hold_gap[:, m] - s
        if any_stop:
            to_line = stop_at - s
            ahead = to_line > -0.5
            red = red_at[:, m] & ahead
            running_red = red & (
                running_red | (v * v > 2 * MAX_STOPPING_DECEL_MPS2 * np.maximum(to_line, 0.01))
            )
            stood += dt * (sign & ahead & (to_line < STOP_LINE_REACH_M) & (v < STOPPED_SPEED_MPS))
            blocked = (red & ~running_red) | (sign & ahead & (stood < wait))
            obstacle = np.minimum(obstacle, np.where(blocked, to_line + gap0, np.inf))
        # Moving leaders: IDM. Standing ones and obstacles: a stop at the standstill gap, braking at the
        # constant deceleration the distance needs once that reaches STOP_BRAKE_ONSET of the comfortable
        # braking (IDM alone creeps up to a standing obstacle for seconds).
        lead_standing = v_lead < STANDING_SPEED_MPS
        s_star = gap0 + np.maximum(0.0, v * (headway + (v - v_lead) / sqrt_ab))
        moving = np.where(lead_standing, 0.0, s_star / np.maximum(gap, 0.1))
        acc = a * (1.0 - (v / v0) ** IDM_DELTA - moving * moving)
        to_stop = np.minimum(np.where(lead_standing, gap, np.inf), obstacle) - gap0
        needed = v * v / (2.0 * np.maximum(to_stop, 0.01))
        w = clip(needed / (b * STOP_BRAKE_ONSET) - 1.0, 0.0, 1.0)
        acc = np.minimum(acc, acc - w * (acc + needed))
        acc = np.where(to_stop <= STOP_REACHED_M, -v / dt, clip(acc, -MAX_DECEL_MPS2, a)) * active
        # Ballistic update; a road user that would reverse stops inside the step.
        v_next = v + acc * dt
        acc = np.where(v_next < 0, -v / dt, acc)
        acc_hist[:, m] = acc
        s = s + (v + 0.5 * acc * dt) * dt
        v = np.maximum(v_next, 0.0)
    s_hist[:, M - 1] = s
    v_hist[:, M - 1] = v
    # Exact samples at 10 Hz: constant acceleration inside each step.
    step = np.arange(num_steps)
    m_of, tau = step // r, (step % r) * STEP_S
    s_out = (s_hist[:, m_of] + v_hist[:, m_of] * tau + 0.5 * acc_hist[:, m_of] * tau * tau).reshape(K, A, -1)
    v_out = np.maximum(v_hist[:, m_of] + acc_hist[:, m_of] * tau, 0.0).reshape(K, A, -1)
    return [Progress(s_out[k, :n], v_out[k, :n]) for k, n in enumerate(sizes)]


def _lane_tables(plans: list[Plan]) -> tuple[IntArray, FloatArray, FloatArray]:
    """(A, L + 1) lane keys, route arc length where each lane starts, lane arc length there; the last
    column (and unused ones) never starts. A road user without lanes gets a lane of its own; before its
    route starts (still outside the map) it is on its first lane."""
    width = max([len(p.lanes) for p in plans] + [1]) + 1
    A = len(plans)
    keys = np.empty((A, width), dtype=np.int64)
    starts = np.full((A, width), np.inf)
    lane_s = np.zeros((A, width))
    for i, p in enumerate(plans):
        keys[i] = -(1_000_000 + i * width + np.arange(width))  # never anyone else's
        lanes = p.lanes or ((keys[i, 0], 0.0, 0.0),)
        for j, (key, start, along) in enumerate(lanes):
            keys[i, j] = key
            starts[i, j] = start
            lane_s[i, j] = along
    return keys, starts, lane_s


def positions(route: RouteGeometry, s_m: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(S, 2) positions and (S,) tangent heading at arc lengths ``s_m``; before the route's start and
    past its end, straight on along its first and last direction."""
    s = clip(s_m, 0.0, route.length_m)
    xy = columns(np.interp(s, route.s_m, route.xy[:, 0]), np.interp(s, route.s_m, route.xy[:, 1]))
    heading = np.interp(s, route.s_m, route.heading_rad)
    beyond = s_m - s  # negative before the start, positive past the end
    xy += columns(np.cos(heading), np.sin(heading)) * beyond[:, None]
    return xy, heading


def drive(route_xy: FloatArray, s0_m: float, driver: Driver, t0_s: float, num_steps: int) -> Motion:
    """One road user alone on ``route_xy`` from arc length ``s0_m``, seen from time ``t0_s``.

    Returns positions at 10 Hz for ``num_steps`` steps; the agent is invalid before ``t0_s`` and after
    it reaches the end of its route.
    """
    route = RouteGeometry.of(route_xy)
    progress = simulate([Plan(route, driver, s0_m)], num_steps)
    seen = np.arange(num_steps) * STEP_S >= t0_s
    return motion_along(route, progress.s_m[0], progress.speed_mps[0], seen)


def motion_along(route: RouteGeometry, s_m: FloatArray, speed_mps: FloatArray, seen: BoolArray) -> Motion:
    """The motion of progress ``s_m`` (S,) at ``speed_mps`` along ``route``; valid where ``seen`` and on
    the route."""
    valid = seen & (s_m >= 0.0) & (s_m <= route.length_m)
    xy, heading = positions(route, s_m)
    velocity = columns(np.cos(heading), np.sin(heading)) * speed_mps[:, None]
    xy[~valid] = np.nan
    return Motion(xy, (heading + np.pi) % (2 * np.pi) - np.pi, velocity, valid, np.where(valid, s_m, np.nan))


def standing(
    xy: FloatArray, heading_rad: float, num_steps: int, rng: np.random.Generator, jitter_m: float
) -> Motion:
    """A parked or standing object with detection jitter."""
    pos = xy[None, :] + rng.normal(0.0, jitter_m, (num_steps, 2))
    heading = heading_rad + rng.normal(0.0, 0.01, num_steps)
    return Motion(
        pos,
        (heading + np.pi) % (2 * np.pi) - np.pi,
        np.zeros((num_steps, 2)),
        np.ones(num_steps, dtype=bool),
        np.zeros(num_steps),
    )
