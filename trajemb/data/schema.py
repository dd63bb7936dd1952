"""Data schema shared by every reader: enums, the dense per-scenario track set, window config.

Units and frames are in the names: ``xy_city`` is metres in the AV2 city frame, ``xy_agent`` metres in
the window's own agent frame (first point at the origin, initial heading along +x, +y to the left).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_OBS_TIMESTEPS, AV2_SCENARIO_STEP_HZ
from av2.datasets.motion_forecasting.data_schema import ObjectType

from trajemb.core.errors import ConfigError
from trajemb.core.fields import check_fields, param

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]

STEP_S: float = 1.0 / AV2_SCENARIO_STEP_HZ
#: Faster than this no road user drives (252 km/h): a drawn or typed query above it is refused.
MAX_ROAD_USER_SPEED_MPS = 70.0


class Source(str, Enum):
    """Where a window came from."""

    AV2_MOTION = "av2_motion"
    AV2_SENSOR = "av2_sensor"
    SYNTHETIC = "synthetic"


class TrackCategory(str, Enum):
    """AV2 motion-forecasting track categories by name (``object_category`` 0..3 in the parquet)."""

    FRAGMENT = "fragment"
    UNSCORED = "unscored"
    SCORED = "scored"
    FOCAL = "focal"


#: ``object_category`` integer in AV2 parquet -> our category name.
CATEGORY_FROM_AV2: dict[int, TrackCategory] = {
    0: TrackCategory.FRAGMENT,
    1: TrackCategory.UNSCORED,
    2: TrackCategory.SCORED,
    3: TrackCategory.FOCAL,
}


class DirectionClass(str, Enum):
    """Manoeuvre of a window, from its total heading change and lateral offset (see ``labels``)."""

    STATIONARY = "stationary"
    STRAIGHT = "straight"
    LEFT = "left"
    RIGHT = "right"
    U_TURN = "u_turn"
    LANE_CHANGE_LEFT = "lane_change_left"
    LANE_CHANGE_RIGHT = "lane_change_right"


#: Object types a window can carry: AV2 motion forecasting's, which sensor-log categories map onto too.
OBJECT_TYPES: tuple[str, ...] = tuple(t.value for t in ObjectType)
#: Longest window (steps) and widest step: far beyond AV2 (110-step scenarios, ~160-step sensor logs),
#: small enough that a typo cannot ask for gigabytes.
MAX_WINDOW_STEPS = 10_000
#: Larger coordinates (metres) are not on Earth's surface in any city frame (AV2's are within a few
#: tens of kilometres of their origin); near 1e308 the arc length overflows to infinity.
MAX_ABS_COORD_M = 1e7
#: Longest scenario or sensor log (steps at 10 Hz) a reader accepts: AV2 scenarios have 110 steps and
#: sensor logs about 160; a crafted ``num_timestamps`` or timestamp must not size an allocation.
MAX_TRACK_STEPS = 100_000
#: Bound on the dense (tracks x steps) grid of one scenario or log: real ones hold under a million cells.
MAX_GRID_CELLS = 20_000_000
#: Faster than this (m/s) nothing on a road moves.
MAX_SPEED_MPS = 1_000.0

#: AV2 motion-forecasting object types that count as vehicles for the "vehicles" filter.
VEHICLE_TYPES: tuple[str, ...] = ("vehicle", "bus", "motorcyclist")
#: Vulnerable road users.
VRU_TYPES: tuple[str, ...] = ("pedestrian", "cyclist")


#: ``true_manoeuvre`` of a window without ground truth (every real AV2 window).
UNKNOWN_MANOEUVRE = "unknown"


@dataclass(frozen=True)
class ManoeuvreTruth:
    """What each of A synthetic road users was built to do (``trajemb.data.truth``), aligned with a
    ``TrackSet``'s tracks. E = most manoeuvres on one route; unused slots have kind ``""``.
    """

    route_kind: StrArray  # (A,) the route's manoeuvre (straight, left, ..., walk, cross, parked, static)
    route_s_m: FloatArray  # (A, S) noise-free arc length along the route, NaN where the track is invalid
    span_kind: StrArray  # (A, E) DirectionClass values of the manoeuvres along the route
    span_start_m: FloatArray  # (A, E) where each manoeuvre starts, arc length along the route
    span_end_m: FloatArray  # (A, E)


@dataclass(frozen=True)
class TrackSet:
    """All tracks of one scenario (or sensor log) on a dense time grid of S steps at 10 Hz.

    A = tracks, S = steps. Invalid (missing) states are NaN in ``xy_city`` / ``heading_rad`` and
    False in ``valid``.
    """

    scenario_id: str
    city: str
    map_key: str  # the ``<key>`` of ``log_map_archive_<key>.json`` beside the data
    source: Source
    track_ids: StrArray  # (A,)
    object_types: StrArray  # (A,)
    categories: StrArray  # (A,) TrackCategory values
    xy_city: FloatArray  # (A, S, 2)
    heading_rad: FloatArray  # (A, S) recorded heading in the city frame, NaN where unknown
    valid: BoolArray  # (A, S)
    truth: ManoeuvreTruth | None = None  # synthetic scenarios with their truth sidecar only

    @property
    def num_tracks(self) -> int:
        return int(self.xy_city.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.xy_city.shape[1])


TrackSelection = Literal["focal", "scored", "all"]
Span = Literal["all", "future"]


@dataclass(frozen=True)
class WindowConfig:
    """Which windows to cut from each track.

    ``tracks``: ``focal`` keeps the focal track only, ``scored`` focal + scored, ``all`` every category.
    ``span``: ``all`` slides over the whole scenario, ``future`` only over the AV2 prediction horizon
    (timesteps >= 50). ``min_speed_mps`` is the net displacement over the window divided by its duration
    (the "moving" filter); 0 keeps parked objects. ``object_types`` empty keeps every type.
    """

    num_steps: int = param(60, help="window length T at 10 Hz (60 = 6 s)", low=2, high=MAX_WINDOW_STEPS)
    stride_steps: int = param(10, help="steps between window starts", low=1, high=MAX_WINDOW_STEPS)
    tracks: TrackSelection = param("all", help="AV2 track categories")
    object_types: tuple[str, ...] = param((), help="comma-separated AV2 object types (default: all)")
    min_speed_mps: float = param(
        1.0,
        help="moving filter: net displacement / duration in m/s (0 keeps parked)",
        low=0.0,
        high=MAX_SPEED_MPS,
    )
    span: Span = param(
        "all", help="slide over the whole scenario or only the AV2 prediction horizon (steps >= 50)"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [t for t in self.object_types if t not in OBJECT_TYPES]
        if unknown:
            raise ConfigError(
                f"unknown object type(s) {', '.join(map(repr, unknown))} in object_types; "
                f"known: {', '.join(OBJECT_TYPES)}",
                fields=("object_types",),
            )

    @property
    def duration_s(self) -> float:
        return (self.num_steps - 1) * STEP_S

    @property
    def first_start_step(self) -> int:
        return AV2_SCENARIO_OBS_TIMESTEPS if self.span == "future" else 0

    def allowed_categories(self) -> tuple[str, ...]:
        if self.tracks == "focal":
            return (TrackCategory.FOCAL.value,)
        if self.tracks == "scored":
            return (TrackCategory.FOCAL.value, TrackCategory.SCORED.value)
        return tuple(c.value for c in TrackCategory)


#: The paper's data: the focal track's 60-step future, one window per scenario.
PAPER_FOCAL_FUTURE = WindowConfig(
    num_steps=60, stride_steps=60, tracks="focal", min_speed_mps=0.0, span="future"
)


@dataclass(frozen=True)
class WindowIds:
    """Where each of W windows comes from: the columns every window batch carries."""

    scenario_id: StrArray  # (W,)
    track_id: StrArray
    object_type: StrArray
    category: StrArray
    city: StrArray
    map_key: StrArray
    source: StrArray
    start_timestep: IntArray  # (W,)

    def ids(self) -> dict[str, np.ndarray]:
        """The id columns by name (to carry them from one batch type to another)."""
        return {name: getattr(self, name) for name in WindowIds.__dataclass_fields__}


@dataclass(frozen=True)
class WindowColumns(WindowIds):
    """Columnar batch of W windows of T steps, as written to the trajectory table."""

    xy_agent: Float32Array  # (W, T, 2)
    origin_xy_city: FloatArray  # (W, 2)
    theta_rad: FloatArray  # (W,) agent-frame heading in the city frame
    direction: StrArray  # DirectionClass values (heuristic, ``trajemb.data.labels``)
    true_manoeuvre: StrArray  # DirectionClass values from the generator, or UNKNOWN_MANOEUVRE
    speed_bin: StrArray
    mean_speed_mps: Float32Array
    heading_change_rad: Float32Array
    lateral_offset_m: Float32Array

    def __len__(self) -> int:
        return int(self.xy_agent.shape[0])


def repeat_str(value: str, n: int) -> StrArray:
    """(n,) array of ``value`` (``np.full(n, s, dtype=np.str_)`` would truncate ``s`` to one char)."""
    return np.repeat(np.asarray([value], dtype=np.str_), n)
