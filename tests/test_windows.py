"""Window extraction: gaps, stride, span, filters, agent frame."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from trajemb.data import windows
from trajemb.data.schema import Source, TrackSet, WindowColumns, WindowConfig
from trajemb.data.windows import concat_windows, cut_windows, extract_windows, to_agent_frame


def make_tracks(valid: np.ndarray, speed_mps: float = 10.0) -> TrackSet:
    A, S = valid.shape
    t = np.arange(S) * 0.1
    xy = np.zeros((A, S, 2))
    xy[..., 0] = 100.0 + speed_mps * t
    xy[..., 1] = np.arange(A)[:, None] * 4.0
    xy[~valid] = np.nan
    return TrackSet(
        scenario_id="s",
        city="austin",
        map_key="s",
        source=Source.SYNTHETIC,
        track_ids=np.array([f"t{a}" for a in range(A)]),
        object_types=np.array(["vehicle", "pedestrian"] * (A // 2) + ["vehicle"] * (A % 2)),
        categories=np.array(["focal"] + ["fragment"] * (A - 1)),
        xy_city=xy,
        heading_rad=np.zeros((A, S)),
        valid=valid,
    )


def _starts(w: WindowColumns) -> dict[str, set[int]]:
    """Start steps of the windows of each track."""
    out: dict[str, set[int]] = {}
    for t, s in zip(w.track_id, w.start_timestep, strict=True):
        out.setdefault(str(t), set()).add(int(s))
    return out


def test_starts_and_gaps() -> None:
    valid = np.ones((3, 110), dtype=bool)
    valid[1, 35] = False  # one missing step: a new run begins at 36
    valid[2, :7] = False  # appears at step 7
    w = extract_windows(make_tracks(valid), WindowConfig(num_steps=30, stride_steps=10))
    starts = _starts(w)
    assert starts["t0"] == set(range(0, 81, 10))
    assert starts["t1"] == {0, 36, 46, 56, 66, 76}  # no window spans step 35; strides restart after it
    assert starts["t2"] == {7, 17, 27, 37, 47, 57, 67, 77}  # aligned to the track, not to a global grid
    assert w.xy_agent.shape == (len(w), 30, 2)
    assert w.xy_agent.dtype == np.float32


def test_future_span_starts_at_the_horizon_or_later() -> None:
    valid = np.ones((3, 110), dtype=bool)
    valid[1, :55] = False  # appears inside the future span
    valid[2, 60] = False  # gap inside the future span
    w = extract_windows(make_tracks(valid), WindowConfig(num_steps=30, stride_steps=10, span="future"))
    starts = _starts(w)
    assert starts["t0"] == {50, 60, 70, 80}
    assert starts["t1"] == {55, 65, 75}
    assert starts["t2"] == {61, 71}
    assert w.xy_agent.shape == (len(w), 30, 2)
    assert w.xy_agent.dtype == np.float32


def test_future_span_and_focal_only() -> None:
    tracks = make_tracks(np.ones((3, 110), dtype=bool))
    w = extract_windows(tracks, WindowConfig(num_steps=60, stride_steps=10, tracks="focal", span="future"))
    assert w.track_id.tolist() == ["t0"] and w.start_timestep.tolist() == [50]


def test_moving_filter_and_object_types() -> None:
    slow = make_tracks(np.ones((2, 110), dtype=bool), speed_mps=0.5)
    assert len(extract_windows(slow, WindowConfig(min_speed_mps=1.0))) == 0
    assert len(extract_windows(slow, WindowConfig(min_speed_mps=0.0))) > 0
    fast = make_tracks(np.ones((2, 110), dtype=bool))
    w = extract_windows(fast, WindowConfig(object_types=("pedestrian",)))
    assert set(w.object_type.tolist()) == {"pedestrian"}


def test_agent_frame_of_windows() -> None:
    w = extract_windows(
        make_tracks(np.ones((1, 110), dtype=bool)), WindowConfig(num_steps=60, stride_steps=25)
    )
    np.testing.assert_allclose(w.xy_agent[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(w.xy_agent[:, :, 1], 0.0, atol=1e-5)
    np.testing.assert_allclose(w.xy_agent[:, -1, 0], 59.0, atol=1e-4)
    np.testing.assert_allclose(w.origin_xy_city[:, 0], 100.0 + 10.0 * w.start_timestep * 0.1)
    assert w.direction.tolist() == ["straight"] * len(w)


def test_too_short_scenario_and_concat() -> None:
    tracks = make_tracks(np.ones((1, 20), dtype=bool))
    empty = extract_windows(tracks, WindowConfig(num_steps=30))
    assert len(empty) == 0 and empty.xy_agent.shape == (0, 30, 2)
    both = concat_windows([empty, extract_windows(tracks, WindowConfig(num_steps=10, stride_steps=5))], 10)
    assert len(both) == 3


def test_agent_frame_in_blocks_is_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """``to_agent_frame`` works through large batches in blocks (issue 24): the same columns, value for
    value, as one pass over all windows, labels by the map and by the shape mixed."""
    rng = np.random.default_rng(0)
    A, S = 9, 110
    tracks = make_tracks(np.ones((A, S), dtype=bool))
    turn = np.cumsum(rng.normal(0.0, 0.05, (A, S)), axis=1)  # curving, wandering paths
    step = np.stack([np.cos(turn), np.sin(turn)], axis=-1) * rng.uniform(0.0, 1.5, (A, 1, 1))
    tracks = replace(tracks, xy_city=100.0 + np.cumsum(step, axis=1), categories=np.array(["focal"] * A))
    city = cut_windows(tracks, WindowConfig(num_steps=30, stride_steps=3, min_speed_mps=0.0))
    assert len(city) > 40
    city = replace(city, map_direction=np.where(np.arange(len(city)) % 3 == 0, "left", ""))
    whole = to_agent_frame(city)
    monkeypatch.setattr(windows, "AGENT_FRAME_BLOCK", 7)
    blocks = to_agent_frame(city)
    for f in fields(WindowColumns):
        a, b = getattr(whole, f.name), getattr(blocks, f.name)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f.name
    assert set(whole.direction.tolist()) - {"left"}  # the shape rule decided some windows too
