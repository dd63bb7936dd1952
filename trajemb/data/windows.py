"""Cut fixed-length windows from dense tracks and express them in their agent frame.

Every window is T consecutive valid steps (no gaps) of one track. Windows start at the first valid
step of each unbroken run of a track (or at ``first_start_step`` if the run began earlier) and then
every ``stride_steps``: a track that appears at step 7 gives windows at 7, 17, 27, ..., not at 10, 20,
..., so no track loses up to a stride of its data to a global grid. All work is vectorised over tracks
and start steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from trajemb.data.frames import city_to_agent, motion_heading_rad
from trajemb.data.labels import (
    direction_class,
    map_direction_class_many,
    mean_speed_mps,
    speed_bin,
    total_heading_change_rad,
)
from trajemb.data.truth import window_true_manoeuvre

if TYPE_CHECKING:
    from trajemb.data.lanes import LaneGraph
from trajemb.data.schema import (
    STEP_S,
    FloatArray,
    IntArray,
    StrArray,
    TrackSet,
    WindowColumns,
    WindowConfig,
    WindowIds,
    repeat_str,
)


def empty_windows(num_steps: int) -> WindowColumns:
    """A batch with no windows (keeps dtypes so that batches concatenate)."""
    e = np.empty(0, dtype=np.str_)
    f32 = np.empty(0, dtype=np.float32)
    return WindowColumns(
        xy_agent=np.empty((0, num_steps, 2), dtype=np.float32),
        origin_xy_city=np.empty((0, 2)),
        theta_rad=np.empty(0),
        scenario_id=e,
        track_id=e,
        object_type=e,
        category=e,
        city=e,
        map_key=e,
        source=e,
        start_timestep=np.empty(0, dtype=np.int64),
        direction=e,
        true_manoeuvre=e,
        speed_bin=e,
        mean_speed_mps=f32,
        heading_change_rad=f32,
        lateral_offset_m=f32,
    )


@dataclass(frozen=True)
class CityWindows(WindowIds):
    """Windows cut from tracks but not yet normalised: positions still in the city frame."""

    xy_city: FloatArray  # (W, T, 2)
    heading_start_rad: FloatArray  # (W,) recorded heading at the first step (NaN if unknown)
    true_manoeuvre: StrArray  # (W,) from the generator's truth (``trajemb.data.truth``), else unknown
    map_direction: StrArray  # (W,) direction from the lane graph (``with_map_directions``), "" if none

    def __len__(self) -> int:
        return int(self.xy_city.shape[0])


def _aligned_starts(valid: np.ndarray, start0: int, stride: int, T: int) -> np.ndarray:
    """(A, S) bool: step s starts a window when s >= start0, steps s..s+T-1 are all valid and s is a
    whole number of strides after the start of its valid run (clipped to start0)."""
    A, S = valid.shape
    steps = np.arange(S)
    run_begins = valid & ~np.concatenate([np.zeros((A, 1), dtype=bool), valid[:, :-1]], axis=1)
    run_start = np.maximum.accumulate(np.where(run_begins, steps, 0), axis=1)
    run_start = np.maximum(run_start, start0)
    valid_before = np.zeros((A, S + 1), dtype=np.int32)  # valid steps before each step
    np.cumsum(valid, axis=1, out=valid_before[:, 1:])
    full = np.zeros((A, S), dtype=bool)
    full[:, : S - T + 1] = valid_before[:, T:] - valid_before[:, : S - T + 1] == T
    starts: np.ndarray = full & (steps >= start0) & ((steps - run_start) % stride == 0)
    return starts


def cut_windows(tracks: TrackSet, config: WindowConfig) -> CityWindows:
    """Every window of ``tracks`` that passes ``config``'s filters, still in the city frame."""
    T = config.num_steps
    S = tracks.num_steps
    start0 = config.first_start_step
    keep_track = np.isin(tracks.categories, config.allowed_categories())
    if config.object_types:
        keep_track &= np.isin(tracks.object_types, config.object_types)
    track_idx = np.flatnonzero(keep_track)
    if S - start0 < T or track_idx.size == 0:
        a = s = np.empty(0, dtype=np.int64)
        xy_city = np.empty((0, T, 2))
    else:
        valid = tracks.valid[track_idx]  # (A', S)
        a_local, s = np.nonzero(_aligned_starts(valid, start0, config.stride_steps, T))
        a = track_idx[a_local]
        xy_city = tracks.xy_city[a[:, None], s[:, None] + np.arange(T)[None, :]]  # (W, T, 2)
        net_m = np.hypot(*(xy_city[:, -1] - xy_city[:, 0]).T)
        moving = net_m / ((T - 1) * STEP_S) >= config.min_speed_mps
        a, s, xy_city = a[moving], s[moving], xy_city[moving]
    W = a.size
    return CityWindows(
        xy_city=xy_city,
        heading_start_rad=tracks.heading_rad[a, s],
        scenario_id=repeat_str(tracks.scenario_id, W),
        track_id=tracks.track_ids[a],
        object_type=tracks.object_types[a],
        category=tracks.categories[a],
        city=repeat_str(tracks.city, W),
        map_key=repeat_str(tracks.map_key, W),
        source=repeat_str(tracks.source.value, W),
        start_timestep=s.astype(np.int64),
        true_manoeuvre=window_true_manoeuvre(tracks.truth, a, s, T),
        map_direction=repeat_str("", W),
    )


def with_map_directions(windows: CityWindows, tracks: TrackSet, graph: LaneGraph) -> CityWindows:
    """``windows`` (cut from ``tracks``) with the direction the lane graph gives them
    (``trajemb.data.labels.map_direction_class``); ``to_agent_frame`` prefers it to the shape rule."""
    return with_map_directions_many([(windows, tracks, graph)])[0]


def _track_rows(windows: CityWindows, tracks: TrackSet) -> IntArray:
    """(W,) row in ``tracks`` of each window's track."""
    row = {tid: i for i, tid in enumerate(tracks.track_ids.tolist())}
    return np.asarray([row[t] for t in windows.track_id.tolist()], dtype=np.int64)


def with_map_directions_many(inputs: list[tuple[CityWindows, TrackSet, LaneGraph]]) -> list[CityWindows]:
    """``with_map_directions`` of the windows of several inputs (each with its tracks and its map's lane
    graph), labelled in one pass per track length (``map_direction_class_many``): the same labels as
    one input at a time."""
    from trajemb.data.lanes import LaneGraphs

    out = [windows for windows, _, _ in inputs]
    groups: dict[int, list[int]] = {}
    for i, (windows, tracks, _) in enumerate(inputs):
        if len(windows):
            groups.setdefault(tracks.num_steps, []).append(i)
    for members in groups.values():
        tracks_of = [inputs[i][1] for i in members]
        counts = [t.num_tracks for t in tracks_of]
        first_track = np.cumsum([0, *counts[:-1]]).tolist()
        track_idx = np.concatenate(
            [
                _track_rows(inputs[i][0], t) + o
                for i, t, o in zip(members, tracks_of, first_track, strict=True)
            ]
        )
        direction = map_direction_class_many(
            np.concatenate([t.xy_city for t in tracks_of]),
            np.concatenate([t.object_types for t in tracks_of]),
            LaneGraphs.of([inputs[i][2] for i in members]),
            np.repeat(np.arange(len(members)), counts),
            track_idx,
            np.concatenate([inputs[i][0].start_timestep for i in members]),
            inputs[members[0]][0].xy_city.shape[1],
        )
        ends = np.cumsum([len(inputs[i][0]) for i in members]).tolist()
        for i, lo, hi in zip(members, [0, *ends[:-1]], ends, strict=True):
            out[i] = replace(inputs[i][0], map_direction=direction[lo:hi])
    return out


#: Windows normalised and labelled at a time: a block's arrays stay in the CPU's caches (a chunk of
#: 6,000 windows in one pass took 1.6 times as long). Every step is row by row, so blocks change nothing.
AGENT_FRAME_BLOCK = 1024


def to_agent_frame(windows: CityWindows) -> WindowColumns:
    """Normalise city-frame windows into their agent frames and label them (vectorised over W, in
    blocks of ``AGENT_FRAME_BLOCK``)."""
    W, B = len(windows), AGENT_FRAME_BLOCK
    if W <= B:
        return _to_agent_frame(windows)
    fields = CityWindows.__dataclass_fields__
    blocks = [
        _to_agent_frame(CityWindows(**{name: getattr(windows, name)[i : i + B] for name in fields}))
        for i in range(0, W, B)
    ]
    return concat_windows(blocks, windows.xy_city.shape[1])


def _to_agent_frame(windows: CityWindows) -> WindowColumns:
    xy_city = windows.xy_city
    origin = xy_city[:, 0].copy()
    theta = motion_heading_rad(xy_city, windows.heading_start_rad)
    xy_agent = city_to_agent(xy_city, origin, theta)
    dtheta = total_heading_change_rad(xy_agent)
    lateral = xy_agent[:, -1, 1].astype(np.float64)
    # The shape rule decides only where the lane graph did not (row by row, so the same labels).
    by_shape = windows.map_direction == ""
    shape_direction, _, _ = direction_class(xy_agent[by_shape])
    direction = np.empty(
        len(windows), dtype=np.result_type(windows.map_direction.dtype, shape_direction.dtype)
    )
    direction[~by_shape] = windows.map_direction[~by_shape]
    direction[by_shape] = shape_direction
    speed = mean_speed_mps(xy_agent)
    return WindowColumns(
        xy_agent=xy_agent.astype(np.float32),
        origin_xy_city=origin,
        theta_rad=theta,
        **windows.ids(),
        direction=direction,
        true_manoeuvre=windows.true_manoeuvre,
        speed_bin=speed_bin(speed),
        mean_speed_mps=speed.astype(np.float32),
        heading_change_rad=dtheta.astype(np.float32),
        lateral_offset_m=lateral.astype(np.float32),
    )


def extract_windows(tracks: TrackSet, config: WindowConfig) -> WindowColumns:
    """All windows of ``tracks`` that pass ``config``'s filters, in their agent frames, labelled."""
    return to_agent_frame(cut_windows(tracks, config))


def concat_city_windows(batches: list[CityWindows], num_steps: int) -> CityWindows:
    """Concatenate city-frame batches field by field."""
    batches = [b for b in batches if len(b)] or batches[:1]
    if not batches:
        e = np.empty(0, dtype=np.str_)
        ids: dict[str, np.ndarray] = dict.fromkeys(WindowIds.__dataclass_fields__, e)
        ids["start_timestep"] = np.empty(0, dtype=np.int64)
        return CityWindows(
            **ids,
            xy_city=np.empty((0, num_steps, 2)),
            heading_start_rad=np.empty(0),
            true_manoeuvre=e,
            map_direction=e,
        )
    fields = CityWindows.__dataclass_fields__
    return CityWindows(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in fields})


def concat_windows(batches: list[WindowColumns], num_steps: int) -> WindowColumns:
    """Concatenate batches field by field (an empty list gives an empty batch)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return empty_windows(num_steps)
    fields = WindowColumns.__dataclass_fields__
    return WindowColumns(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in fields})
