"""Cut fixed-length windows from dense tracks and express them in their agent frame.

Every window is T consecutive valid steps (no gaps) of one track; windows start at
``first_start_step + k * stride_steps``. All work is vectorised over tracks and start steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trajemb.frames import city_to_agent, motion_heading_rad
from trajemb.labels import direction_class, mean_speed_mps, speed_bin
from trajemb.schema import (
    STEP_S,
    FloatArray,
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
        scenario_id=e, track_id=e, object_type=e, category=e, city=e, map_key=e, source=e,
        start_timestep=np.empty(0, dtype=np.int64),
        direction=e, speed_bin=e,
        mean_speed_mps=f32, heading_change_rad=f32, lateral_offset_m=f32,
    )  # fmt: skip


@dataclass(frozen=True)
class CityWindows(WindowIds):
    """Windows cut from tracks but not yet normalised: positions still in the city frame."""

    xy_city: FloatArray  # (W, T, 2)
    heading_start_rad: FloatArray  # (W,) recorded heading at the first step (NaN if unknown)

    def __len__(self) -> int:
        return int(self.xy_city.shape[0])


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
        starts = np.arange(start0, S - T + 1, config.stride_steps)
        # (A', num_starts, T) validity of every candidate window, without copying.
        valid_win = sliding_window_view(tracks.valid[track_idx], T, axis=1)[:, starts]
        a_local, s_local = np.nonzero(valid_win.all(axis=2))
        a, s = track_idx[a_local], starts[s_local]
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
    )


def to_agent_frame(windows: CityWindows) -> WindowColumns:
    """Normalise city-frame windows into their agent frames and label them (vectorised over W)."""
    xy_city = windows.xy_city
    origin = xy_city[:, 0].copy()
    theta = motion_heading_rad(xy_city, windows.heading_start_rad)
    xy_agent = city_to_agent(xy_city, origin, theta)
    direction, dtheta, lateral = direction_class(xy_agent)
    speed = mean_speed_mps(xy_agent)
    return WindowColumns(
        xy_agent=xy_agent.astype(np.float32),
        origin_xy_city=origin,
        theta_rad=theta,
        **windows.ids(),
        direction=direction,
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
        return CityWindows(**ids, xy_city=np.empty((0, num_steps, 2)), heading_start_rad=np.empty(0))
    fields = CityWindows.__dataclass_fields__
    return CityWindows(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in fields})


def concat_windows(batches: list[WindowColumns], num_steps: int) -> WindowColumns:
    """Concatenate batches field by field (an empty list gives an empty batch)."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return empty_windows(num_steps)
    fields = WindowColumns.__dataclass_fields__
    return WindowColumns(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in fields})
