"""Direction classes and speed bins on analytic trajectories (agent frame, 10 Hz, 6 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.analysis.label_quality import label_agreement, read_labelled_sample, sample_agreement
from trajemb.core.errors import DataError
from trajemb.data.labels import (
    arc_lateral_offset_m,
    at_least,
    chord,
    direction_class,
    direction_rules,
    mean_speed_mps,
    speed_bin,
    total_heading_change_rad,
)

T = 60
S_M = np.linspace(0.0, 60.0, T)  # 10 m/s


def arc(turn_deg: float, length_m: float = 60.0) -> np.ndarray:
    s = np.linspace(0.0, length_m, T)
    k = np.deg2rad(turn_deg) / length_m
    if k == 0:
        return np.stack([s, np.zeros_like(s)], axis=-1)
    return np.stack([np.sin(k * s) / k, (1 - np.cos(k * s)) / k], axis=-1)


def lane_change(offset_m: float) -> np.ndarray:
    u = np.clip((S_M - 15.0) / 30.0, 0, 1)
    return np.stack([S_M, offset_m * u**3 * (10 - 15 * u + 6 * u**2)], axis=-1)


@pytest.mark.parametrize(
    ("xy", "expected"),
    [
        (arc(0.0), "straight"),
        (arc(20.0), "straight"),  # a gentle bend is not a lane change
        (arc(60.0, 60.0), "straight"),  # a 57 m radius bend of the road is not a turn
        (arc(-60.0, 25.0), "right"),  # a 24 m radius one is
        (arc(-20.0), "straight"),
        (arc(90.0, 30.0), "left"),
        (arc(-90.0, 30.0), "right"),
        (arc(180.0, 30.0), "u_turn"),
        (arc(-175.0, 30.0), "u_turn"),
        (lane_change(3.5), "lane_change_left"),
        (lane_change(-3.5), "lane_change_right"),
        (np.zeros((T, 2)) + np.random.default_rng(0).normal(0, 0.02, (T, 2)), "stationary"),
    ],
)
def test_direction_class(xy: np.ndarray, expected: str) -> None:
    labels, _, _ = direction_class(xy[None])
    assert labels.tolist() == [expected]


def test_heading_change_is_signed_and_unwrapped() -> None:
    xy = np.stack([arc(90.0, 30.0), arc(-90.0, 30.0), arc(270.0, 40.0)])
    # Chords clip at the window ends, so a turn that fills the whole window reads a few % low.
    np.testing.assert_allclose(total_heading_change_rad(xy), np.deg2rad([90.0, -90.0, 270.0]), rtol=0.04)


def test_heading_change_ignores_standstill() -> None:
    """A car that stops mid-window adds no spurious heading change from jitter while stopped."""
    rng = np.random.default_rng(1)
    xy = np.concatenate(
        [
            arc(0.0, 20.0)[:20],
            np.full((20, 2), [20.0 * 19 / 59, 0.0]),
            arc(0.0, 20.0)[:20] + np.array([7.0, 0.0]),
        ]
    )
    xy = xy + rng.normal(0, 0.02, xy.shape)
    assert abs(total_heading_change_rad(xy[None])[0]) < np.deg2rad(10)


def test_arc_offset_matches_geometry() -> None:
    for turn in (10.0, 45.0, -60.0):
        xy = arc(turn)
        np.testing.assert_allclose(
            arc_lateral_offset_m(np.array([60.0]), np.deg2rad([turn])), [xy[-1, 1]], rtol=1e-6
        )


def test_speed_and_bins() -> None:
    np.testing.assert_allclose(mean_speed_mps(arc(0.0)[None]), [60.0 / 5.9])
    assert speed_bin(np.array([0.0, 0.49, 0.5, 3.0, 7.5, 12.0, 30.0])).tolist() == [
        "0-0.5",
        "0-0.5",
        "0.5-2.5",
        "2.5-5",
        "5-10",
        "10-15",
        "15+",
    ]


BY_EYE = Path(__file__).parent / "data" / "av2_fixture_windows_by_eye.csv"


def test_rules_are_spelled_out() -> None:
    rules = {r.name: r for r in direction_rules()}
    assert set(rules) == {
        "stationary",
        "straight",
        "left",
        "right",
        "u_turn",
        "lane_change_left",
        "lane_change_right",
    }
    assert "passage that turns left" in rules["left"].on_map and "bends tighter" in rules["left"].by_shape
    assert [r.name for r in direction_rules()][-1] == "straight"  # everything else, last


def test_label_agreement_on_a_known_case() -> None:
    true = np.array(["left", "left", "right", "straight", "unknown"])
    agreement = label_agreement(true, np.array(["left", "right", "right", "straight", "left"]))
    assert agreement.classes == ("straight", "left", "right")
    np.testing.assert_array_equal(agreement.confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    assert agreement.precision["right"] == 0.5 and agreement.recall["left"] == 0.5
    with pytest.raises(DataError, match="no window has a known"):
        label_agreement(np.array(["unknown"]), np.array(["left"]))


def test_real_windows_labelled_by_eye(av2_fixtures: Path, tmp_path: Path) -> None:
    """The rules against a person's labels of 54 real fixture windows (54 of 1,688; see the file's header).
    On real maps the lane graph is busier than ours: 72 % agree today; this guards against regressions."""
    from trajemb.data.prepare import PrepareConfig, prepare_table
    from trajemb.data.schema import WindowConfig
    from trajemb.data.store import read_table

    config = PrepareConfig(
        av2_dirs=(str(av2_fixtures / "motion_forecasting"),),
        sensor_log_dirs=(str(av2_fixtures / "sensor_logs"),),
        window=WindowConfig(stride_steps=5),
        workers=1,
    )
    prepare_table(config, tmp_path / "real.parquet", progress=False)
    meta = read_table(tmp_path / "real.parquet").meta
    sample = read_labelled_sample(BY_EYE)
    assert len(sample.window_id) == 54 and sample.sure.sum() == 43
    agreement = sample_agreement(sample, meta.window_id.to_numpy(), meta.direction.to_numpy())
    assert agreement.accuracy >= 0.65, agreement.markdown()
    assert agreement.recall["left"] >= 0.8 and agreement.recall["right"] >= 0.5


def test_labelled_sample_rows_are_checked(tmp_path: Path) -> None:
    """A short row, a window labelled twice and a byte-order mark: one-line errors or read as meant."""
    from trajemb.analysis.label_quality import read_labelled_sample
    from trajemb.core.errors import DataError

    short = tmp_path / "short.csv"
    short.write_text("window_id,label,sure,note\nabc,left\n")
    with pytest.raises(DataError, match="row 2 has fewer"):
        read_labelled_sample(short)
    twice = tmp_path / "twice.csv"
    twice.write_text("window_id,label,sure\na,left,yes\na,right,no\n")
    with pytest.raises(DataError, match="labelled twice: a"):
        read_labelled_sample(twice)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfwindow_id,label,sure\na,left,yes\n")
    assert read_labelled_sample(bom).label.tolist() == ["left"]


def test_chords_and_lengths_are_the_indexed_and_hypot_ones() -> None:
    """``chord`` takes the differences that indexing with clipped steps takes, ``at_least`` decides as
    ``np.hypot(...) >= length`` does, element for element: near the threshold, NaN, infinite, huge, in
    float32 too (issue 24)."""
    rng = np.random.default_rng(1)
    for T in range(1, 13):
        for h in (1, 2, 3, 5):
            for dtype in (np.float64, np.float32):
                xy = rng.normal(size=(3, T, 2)).astype(dtype)
                i = np.arange(T)
                expected = xy[:, np.minimum(i + h, T - 1)] - xy[:, np.maximum(i - h, 0)]
                got = chord(xy, h)
                assert got.dtype == expected.dtype and np.array_equal(got, expected)
    angle = rng.uniform(0.0, 2 * np.pi, 20_000)
    radius = 0.4 * (1.0 + rng.normal(size=20_000) * 1e-15)  # lengths within rounding of the threshold
    for dtype in (np.float64, np.float32):
        dx, dy = (radius * np.cos(angle)).astype(dtype), (radius * np.sin(angle)).astype(dtype)
        dx[:10], dy[5:10] = np.nan, 0.0
        dx[10:20], dy[15:20] = np.inf, np.nan
        dx[20:30] = np.finfo(dtype).max / 2
        dx[30:40], dy[30:40] = 0.4, 0.0
        with np.errstate(over="ignore"):
            assert np.array_equal(at_least(dx, dy, 0.4), np.hypot(dx, dy) >= 0.4)
