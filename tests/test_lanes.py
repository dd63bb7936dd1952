"""Lane graphs and map matching: centre lines as av2 computes them, and the lane-graph direction rule on
hand-made maps (a lane change, a junction turn, a connector cut into two segments)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from av2.map.map_api import ArgoverseStaticMap

from trajemb.core.errors import DataError
from trajemb.data.av2_sensor import sensor_log_map_path
from trajemb.data.labels import map_direction_class
from trajemb.data.lanes import (
    _LANE_MAP_DECODER,
    LaneGraph,
    _plain_lane_graph,
    _sums,
    connector_chain,
    lane_graph_from_json,
    match_tracks,
    read_lane_graph,
    read_map_json,
)
from trajemb.data.schema import Source, TrackSet
from trajemb.data.synth.scenario import generate_scenario
from trajemb.data.synth.writer import write_scenario_dir

WIDTH_M = 3.5


def _points(xy: np.ndarray) -> list[dict[str, float]]:
    return [{"x": float(x), "y": float(y), "z": 0.0} for x, y in xy]


def _lane(lane_id: int, center: np.ndarray, **links: object) -> dict[str, object]:
    """A lane segment with boundaries half a lane width either side of ``center`` (no stored centre line)."""
    d = np.gradient(center, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    return {
        "id": lane_id,
        "is_intersection": bool(links.pop("is_intersection", False)),
        "lane_type": "VEHICLE",
        "left_lane_boundary": _points(center + normal * WIDTH_M / 2),
        "right_lane_boundary": _points(center - normal * WIDTH_M / 2),
        "left_lane_mark_type": "DASHED_WHITE",
        "right_lane_mark_type": "SOLID_WHITE",
        "predecessors": links.pop("predecessors", []),
        "successors": links.pop("successors", []),
        "left_neighbor_id": links.pop("left", None),
        "right_neighbor_id": links.pop("right", None),
    }


def _write_map(path: Path, lanes: list[dict[str, object]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "lane_segments": {str(la["id"]): la for la in lanes},
                "drivable_areas": {},
                "pedestrian_crossings": {},
            }
        )
    )
    return path


def _tracks(*paths: np.ndarray) -> TrackSet:
    xy = np.stack(paths)
    A, S = xy.shape[:2]
    return TrackSet(
        "s",
        "austin",
        "s",
        Source.SYNTHETIC,
        np.array([f"t{a}" for a in range(A)]),
        np.array(["vehicle"] * A),
        np.array(["unscored"] * A),
        xy,
        np.zeros((A, S)),
        np.ones((A, S), dtype=bool),
    )


def _along(points: np.ndarray, speed_mps: float, steps: int = 110) -> np.ndarray:
    """Positions at 10 Hz moving along a polyline at constant speed."""
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    t = np.minimum(np.arange(steps) * 0.1 * speed_mps, s[-1])
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def test_centre_lines_are_av2s(av2_fixtures: Path) -> None:
    """Sensor-log maps store no centre line: ours are av2's average of the boundaries, lane for lane."""
    log = sorted((av2_fixtures / "sensor_logs").iterdir())[0]
    path = sensor_log_map_path(log)
    graph = read_lane_graph(path)
    static = ArgoverseStaticMap.from_json(path)
    assert graph.num_lanes == len(static.vector_lane_segments)
    for row, lane_id in enumerate(graph.lane_ids.tolist()):
        ours = np.concatenate(
            [graph.piece_start[graph.piece_lane == row], graph.piece_end[graph.piece_lane == row][-1:]]
        )
        np.testing.assert_allclose(ours, static.get_lane_segment_centerline(lane_id)[:, :2], atol=1e-9)
    assert graph.is_intersection.sum() == sum(
        la.is_intersection for la in static.vector_lane_segments.values()
    )


def test_lane_change_and_turn_on_a_hand_made_map(tmp_path: Path) -> None:
    x = np.linspace(0.0, 200.0, 21)
    right = np.stack([x, np.zeros_like(x)], axis=1)
    left = right + [0.0, WIDTH_M]
    arc = np.deg2rad(np.linspace(0.0, 90.0, 10))
    turn = np.stack([200.0 + 15.0 * np.sin(arc), 15.0 * (1 - np.cos(arc))], axis=1)  # a 90 degree left
    exit_ = np.stack([np.full(11, 215.0), np.linspace(15.0, 115.0, 11)], axis=1)
    graph = read_lane_graph(
        _write_map(
            tmp_path / "map.json",
            [
                _lane(1, right, left=2, successors=[3]),
                _lane(2, left, right=1),
                _lane(3, turn, is_intersection=True, predecessors=[1], successors=[4]),
                _lane(4, exit_, predecessors=[3]),
            ],
        )
    )
    u = np.clip((np.arange(110) * 0.1 * 10.0 - 5.0) / 30.0, 0, 1)
    change = np.stack(
        [np.arange(110) * 1.0, WIDTH_M * u**3 * (10 - 15 * u + 6 * u**2)], axis=1
    )  # right -> left
    turner = _along(np.concatenate([right[15:], turn[1:], exit_[1:]]), 8.0)  # in the turn from step 62 to 92
    tracks = _tracks(change, turner)
    match = match_tracks(graph, tracks.xy_city, [("VEHICLE",), ("VEHICLE",)])
    assert match.lane[0, 0] == 0 and match.lane[0, -1] == 1  # rows of lanes 1 and 2
    assert (np.abs(match.lateral_m[1]) < 0.6).mean() > 0.9
    labels = map_direction_class(tracks, graph, np.array([0, 0, 1, 1]), np.array([10, 40, 0, 40]), 60)
    # The change is under way from step 5 to 35: its middle lies in the first window only.
    assert labels.tolist() == ["lane_change_left", "straight", "straight", "left"]


def test_connector_chain_joins_segments(tmp_path: Path) -> None:
    arc = np.deg2rad(np.linspace(0.0, 180.0, 19))
    loop = np.stack([8.0 * np.sin(arc), 8.0 * (1 - np.cos(arc))], axis=1)  # a U-turn in two segments
    graph = read_lane_graph(
        _write_map(
            tmp_path / "map.json",
            [
                _lane(1, loop[:10], is_intersection=True, successors=[2]),
                _lane(2, loop[9:], is_intersection=True, predecessors=[1]),
            ],
        )
    )
    turn_rad, length_m = connector_chain(graph, 1)
    assert turn_rad == pytest.approx(np.pi, abs=0.2)  # piece directions are chords: a few degrees short
    assert length_m == pytest.approx(8.0 * np.pi, rel=0.02)
    assert connector_chain(graph, 0) == pytest.approx((turn_rad, length_m))


def test_malformed_maps_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"lane_segments": {"1": {"id": 1, "left_lane_boundary": [{"x": "a"}]}}}))
    with pytest.raises(DataError, match="numeric x and y"):
        read_lane_graph(path)
    path.write_text(json.dumps({"drivable_areas": {}}))
    with pytest.raises(DataError, match="no lane_segments"):
        read_lane_graph(path)


def test_lane_ids_and_flags_are_checked(tmp_path: Path) -> None:
    """A lane id used twice, a string intersection flag and a boolean neighbour id are refused
    (they used to resolve a link to either lane, read "false" as true, and true as lane 1)."""
    line = np.stack([np.linspace(0, 50, 20), np.zeros(20)], axis=1)
    first, second = _lane(7, line), _lane(8, line + [0, 4])
    path = tmp_path / "map.json"
    for lanes, message in (
        ([first, {**second, "id": 7}], "appears twice"),
        ([first, {**second, "is_intersection": "false"}], "is not true or false"),
        ([first, {**second, "left_neighbor_id": True}], "not a list of ids"),
    ):
        path.write_text(json.dumps({"lane_segments": {str(i): la for i, la in enumerate(lanes)}}))
        with pytest.raises(DataError, match=message):
            read_lane_graph(path)


def _graph_or_error(read: Callable[[], LaneGraph]) -> object:
    try:
        graph = read()
    except DataError as exc:
        return str(exc)
    return {f.name: getattr(graph, f.name) for f in fields(graph) if f.name != "tree"} | {
        "tree": graph.tree.data
    }


def test_lane_segments_only_decode_is_the_full_decode(tmp_path: Path, av2_fixtures: Path) -> None:
    """``read_lane_graph`` decodes plain maps into the lane fields alone; the graph (or the refusal) is
    the one of the whole decoded file, for generator 2's maps, real ones, and maps it hands back."""
    for i in range(2):
        write_scenario_dir(generate_scenario(np.random.default_rng([3, i])), tmp_path / "synth")
    maps = sorted((tmp_path / "synth").glob("*/log_map_archive_*.json"))
    maps += sorted((av2_fixtures / "motion_forecasting").glob("*/log_map_archive_*.json"))
    for path in maps:  # the plain schema: decoded by the fast path
        assert _plain_lane_graph(_LANE_MAP_DECODER.decode(path.read_bytes()), path) is not None
    base = json.loads(maps[0].read_text())
    first = next(iter(base["lane_segments"]))
    edits: list[dict[str, object]] = [
        {},
        {"centerline": [{"x": "1.5", "y": 2}, {"x": 3, "y": 4}]},  # numeric strings: float() reads them
        {"centerline": [{"x": True, "y": 2}, {"x": 3, "y": 4}]},
        {"centerline": [{"x": 1, "y": 2}]},  # one point: skipped
        {"centerline": []},
        {"centerline": None},  # boundaries averaged by av2
        {"id": "12"},
        {"id": 1.0},
        {"is_intersection": None},
        {"lane_type": 3},
        {"predecessors": None, "successors": ["1"]},
        {"left_neighbor_id": True},
    ]
    second = list(base["lane_segments"].values())[1]
    edits.append({"id": second["id"]})  # an id used twice
    path = tmp_path / "edited.json"
    for edit in edits:
        data = json.loads(json.dumps(base))
        data["lane_segments"][first].update(edit)
        path.write_text(json.dumps(data))
        full = _graph_or_error(lambda: lane_graph_from_json(read_map_json(path), path))
        ours = _graph_or_error(lambda: read_lane_graph(path))
        assert type(ours) is type(full), edit
        if isinstance(full, str):
            assert ours == full, edit
            continue
        assert isinstance(ours, dict) and isinstance(full, dict)
        for name, value in full.items():
            if isinstance(value, np.ndarray):
                assert ours[name].dtype == value.dtype, (edit, name)
                np.testing.assert_array_equal(ours[name], value, err_msg=f"{edit}: {name}")
            else:
                assert ours[name] == value, (edit, name)


def test_lane_sums_are_the_per_slice_sums() -> None:
    """``_sums`` gives each slice's own ``.sum()`` bit for bit (numpy's pairwise order), for slices of 0
    to 300 items (issue 24)."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        count = rng.integers(0, 300 if trial % 3 == 0 else 20, size=rng.integers(1, 40))
        values = (
            rng.random(int(count.sum()))
            * rng.choice([1e-3, 1.0, 1e8])
            * rng.choice([-1, 1], int(count.sum()))
        )
        first = np.concatenate([[0], np.cumsum(count)[:-1]])
        expected = np.asarray([values[f : f + n].sum() for f, n in zip(first, count, strict=True)])
        assert np.array_equal(_sums(values, first, count), expected)
