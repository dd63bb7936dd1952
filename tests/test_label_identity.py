"""The fast prepare path gives the same tables as before, bit for bit (issue 24).

Two references: column digests of the real AV2 fixtures' tables, pinned from the code before the
speed-up (trajemb at c627f53; the two columns computed through trigonometric functions by sums, to 1e-6,
since their last bit follows the CPU), and that code itself (``reference_labels``), run beside the current one
on synthetic scenarios, on the real fixtures and on tracks damaged on purpose (gaps, noise, tracks
that start and end inside junctions), window settings varied.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import reference_labels as ref

from trajemb.core.errors import DataError
from trajemb.data import lanes
from trajemb.data.av2_motion import find_scenario_files, map_path_for, read_scenario_tracks
from trajemb.data.av2_sensor import find_sensor_logs, read_sensor_log_tracks, sensor_log_map_path
from trajemb.data.frames import city_to_agent, motion_heading_rad
from trajemb.data.labels import map_direction_class, mean_speed_mps, speed_bin
from trajemb.data.lanes import (
    LaneGraph,
    LaneGraphs,
    lane_side,
    lane_types_for,
    match_tracks,
    match_tracks_many,
    read_lane_graph,
)
from trajemb.data.prepare import PrepareConfig, prepare_windows
from trajemb.data.schema import Source, TrackSet, WindowColumns, WindowConfig
from trajemb.data.synth.scenario import generate_scenario
from trajemb.data.synth.writer import write_scenario_dir
from trajemb.data.truth import read_truth, truth_path_for
from trajemb.data.windows import CityWindows, cut_windows, with_map_directions, with_map_directions_many

#: sha256 of every column of the fixtures' tables, computed by the code before issue 24.
PINNED: dict[str, dict[str, object]] = {
    "motion": {
        "rows": 20,
        "scenario_id": "54fda3e43a7920eb",
        "track_id": "f049339b96b8d473",
        "object_type": "ec4490279d966c71",
        "category": "75eb0bb11fee1a0e",
        "city": "9d121e597260b212",
        "map_key": "54fda3e43a7920eb",
        "source": "1b61c028073af50f",
        "start_timestep": "b6494c069f268c64",
        "origin_xy_city": "d4a44cde57ac8f78",
        "direction": "df0e28187e44d62e",
        "true_manoeuvre": "050eb15df4ff7af7",
        "speed_bin": "b1787e7e99a809e0",
        "mean_speed_mps": "8b73e0d25d2fdbcb",
        "heading_change_rad": "52a60cd4cc91acf4",
        "lateral_offset_m": "63ebb2463ff13125",
    },
    "motion_all_30": {
        "rows": 126,
        "scenario_id": "ece718faf543679f",
        "track_id": "50105aac3775a95d",
        "object_type": "a6fcb080b363a94e",
        "category": "652611f10e64f5db",
        "city": "99ae7aa6a10b3d6a",
        "map_key": "ece718faf543679f",
        "source": "723f52dd467e95ca",
        "start_timestep": "86c09eae5a85d859",
        "origin_xy_city": "c846dcde0353a82d",
        "direction": "4986d73d9a95ec95",
        "true_manoeuvre": "c6fed9e963aac192",
        "speed_bin": "9d398deda8e7e4a2",
        "mean_speed_mps": "cd9c2dd6e3383442",
        "heading_change_rad": "bde4e684dcaa1efb",
        "lateral_offset_m": "7815b5ba7b3e0e93",
    },
    "sensor_30": {
        "rows": 2397,
        "scenario_id": "e811d527427e0750",
        "track_id": "87b4ce1d25b18aff",
        "object_type": "fe2e88bc09831b6c",
        "category": "118e3b322f34f1f8",
        "city": "9d3e8aa0343bac51",
        "map_key": "4e9f186f0f7503c9",
        "source": "d0bd5f25632eb364",
        "start_timestep": "4278d3d6e06305ee",
        "origin_xy_city": "29bbd22625041b5f",
        "direction": "22a29a948356dab6",
        "true_manoeuvre": "a3e469484f2f05dc",
        "speed_bin": "e50fac6bf3179fdb",
        "mean_speed_mps": "e518d668e83f9702",
        "heading_change_rad": "c5d668be923aea2b",
        "lateral_offset_m": "78eed2b0c522a551",
    },
}


#: Columns computed through numpy's trigonometric functions (the heading's arctan2, the agent frame's
#: rotation), whose last bit follows the CPU: numpy's AVX-512 and AVX2 loops differ by an ULP (the pinned
#: digests were taken on a CPU with AVX-512; an AMD EPYC without it differs in these two columns only).
#: They are pinned by sums, to 1e-6 relative: (sum, sum of magnitudes, sum weighted by position), values
#: from the code at c627f53; any change of a label, window or frame moves them far more.
TRIG_COLUMNS = ("xy_agent", "theta_rad")
PINNED_TRIG: dict[str, dict[str, tuple[float, float, float]]] = {
    "motion": {
        "xy_agent": (17962.0456142, 18834.5422394, 8473.53631042),
        "theta_rad": (29.8443379403, 29.8443379403, 15.7681815056),
    },
    "motion_all_30": {
        "xy_agent": (25338.6467811, 25898.8405666, 12201.8752637),
        "theta_rad": (156.199593584, 190.417636476, 76.2485493032),
    },
    "sensor_30": {
        "xy_agent": (554041.297408, 572030.091214, 243933.392873),
        "theta_rad": (847.242095584, 3051.60350704, 499.022949439),
    },
}


def trig_fingerprint(values: np.ndarray) -> tuple[float, float, float]:
    """(sum, sum of magnitudes, sum weighted by position) of a column, in float64."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    weight = np.arange(1, flat.size + 1, dtype=np.float64) / flat.size
    return float(flat.sum()), float(np.abs(flat).sum()), float((flat * weight).sum())


def column_digests(windows: WindowColumns) -> dict[str, str]:
    """sha256 of each column: numbers by their bytes (dtype included), strings joined by NUL."""
    out = {}
    for f in fields(windows):
        values = np.asarray(getattr(windows, f.name))
        if values.dtype.kind == "U":
            data = "\0".join(values.tolist()).encode()
        else:
            data = values.dtype.str.encode() + np.ascontiguousarray(values).tobytes()
        out[f.name] = hashlib.sha256(data).hexdigest()[:16]
    return out


def _fixture_tables(av2_fixtures: Path) -> dict[str, WindowColumns]:
    motion = str(av2_fixtures / "motion_forecasting")
    sensor = str(av2_fixtures / "sensor_logs")
    configs = {
        "motion": PrepareConfig(av2_dirs=(motion,), workers=1),
        "motion_all_30": PrepareConfig(
            av2_dirs=(motion,), workers=1, window=WindowConfig(num_steps=30, stride_steps=3, tracks="all")
        ),
        "sensor_30": PrepareConfig(
            sensor_log_dirs=(sensor,), workers=1, window=WindowConfig(num_steps=30, stride_steps=5)
        ),
    }
    return {name: prepare_windows(config, progress=False)[0] for name, config in configs.items()}


def test_fixture_tables_are_pinned(av2_fixtures: Path) -> None:
    tables = _fixture_tables(av2_fixtures)
    got = {name: column_digests(w) for name, w in tables.items()}
    assert {name: len(w) for name, w in tables.items()} == {name: PINNED[name]["rows"] for name in tables}
    for name, digests in got.items():
        exact = {k: v for k, v in digests.items() if k not in TRIG_COLUMNS}
        assert exact == {k: v for k, v in PINNED[name].items() if k != "rows"}, name
        for column in TRIG_COLUMNS:
            fingerprint = trig_fingerprint(getattr(tables[name], column))
            assert fingerprint == pytest.approx(PINNED_TRIG[name][column], rel=1e-6), (name, column)


def _reference_columns(
    tracks: TrackSet, windows: CityWindows, map_json: Path, truth_json: Path | None
) -> WindowColumns:
    """What the code before issue 24 made of ``windows`` (cut from ``tracks``)."""
    row = {t: i for i, t in enumerate(tracks.track_ids.tolist())}
    track_idx = np.asarray([row[t] for t in windows.track_id.tolist()], dtype=np.int64)
    T = windows.xy_city.shape[1]
    truth = None
    if truth_json is not None:
        truth = ref.read_truth(truth_json, tracks.track_ids, tracks.num_steps)
    true_manoeuvre = ref.window_true_manoeuvre(truth, track_idx, windows.start_timestep, T)
    map_direction = np.full(len(windows), "", dtype=np.str_)
    if len(windows):
        graph = ref.read_lane_graph(map_json)
        map_direction = ref.map_direction_class(tracks, graph, track_idx, windows.start_timestep, T)
    xy_city = windows.xy_city
    origin = xy_city[:, 0].copy()
    theta = motion_heading_rad(xy_city, windows.heading_start_rad)
    xy_agent = city_to_agent(xy_city, origin, theta)
    direction, dtheta, lateral = ref.direction_class(xy_agent)
    direction = np.where(map_direction != "", map_direction, direction).astype(np.str_)
    speed = mean_speed_mps(xy_agent)
    return WindowColumns(
        xy_agent=xy_agent.astype(np.float32),
        origin_xy_city=origin,
        theta_rad=theta,
        **windows.ids(),
        direction=direction,
        true_manoeuvre=true_manoeuvre.astype(np.str_),
        speed_bin=speed_bin(speed),
        mean_speed_mps=speed.astype(np.float32),
        heading_change_rad=dtheta.astype(np.float32),
        lateral_offset_m=lateral.astype(np.float32),
    )


def _assert_same(ours: WindowColumns, theirs: WindowColumns, what: str) -> None:
    assert len(ours) == len(theirs), what
    for f in fields(ours):
        a, b = getattr(ours, f.name), getattr(theirs, f.name)
        assert a.dtype == b.dtype, (what, f.name)
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: {f.name}")


WINDOW_CONFIGS = [WindowConfig(), WindowConfig(num_steps=30, stride_steps=3, tracks="all", min_speed_mps=0.0)]


@pytest.mark.parametrize("window", WINDOW_CONFIGS, ids=["default", "all-30"])
def test_synthetic_tables_match_the_reference(synth_dir: Path, window: WindowConfig) -> None:
    ours, _, _ = prepare_windows(
        PrepareConfig(av2_dirs=(str(synth_dir),), workers=1, window=window), progress=False
    )
    parts = []
    for path in find_scenario_files(synth_dir):
        tracks = read_scenario_tracks(path, Source.SYNTHETIC)
        truth_json = truth_path_for(path)
        truth = read_truth(truth_json, tracks.track_ids, tracks.num_steps)
        windows = cut_windows(replace(tracks, truth=truth), window)
        parts.append(_reference_columns(tracks, windows, map_path_for(path), truth_json))
    theirs = WindowColumns(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(parts[0])}
    )
    _assert_same(ours, theirs, f"synthetic {window}")


def test_real_tables_match_the_reference(av2_fixtures: Path) -> None:
    for window in WINDOW_CONFIGS:
        for path in find_scenario_files(av2_fixtures / "motion_forecasting"):
            ours, _, _ = prepare_windows(
                PrepareConfig(av2_dirs=(str(path),), workers=1, window=window), progress=False
            )
            tracks = read_scenario_tracks(path)
            theirs = _reference_columns(tracks, cut_windows(tracks, window), map_path_for(path), None)
            _assert_same(ours, theirs, f"{path.name} {window}")
        for log in find_sensor_logs(av2_fixtures / "sensor_logs"):
            ours, _, _ = prepare_windows(
                PrepareConfig(sensor_log_dirs=(str(log),), workers=1, window=window), progress=False
            )
            tracks = read_sensor_log_tracks(log)
            theirs = _reference_columns(tracks, cut_windows(tracks, window), sensor_log_map_path(log), None)
            _assert_same(ours, theirs, f"{log.name} {window}")


def _damaged(tracks: TrackSet, rng: np.random.Generator) -> TrackSet:
    """Tracks with gaps, extra noise, shifted sideways by up to a lane, and some cut short (starting or
    ending mid-manoeuvre), to reach the rule's rarer branches."""
    xy = tracks.xy_city + rng.normal(0.0, rng.choice([0.02, 0.3]), tracks.xy_city.shape)
    xy = xy + rng.uniform(-3.0, 3.0, (xy.shape[0], 1, 2)) * (rng.random((xy.shape[0], 1, 1)) < 0.3)
    valid = tracks.valid.copy()
    A, S = valid.shape
    for a in range(A):
        r = rng.random()
        if r < 0.3:
            start = int(rng.integers(0, S - 5))
            valid[a, start : start + int(rng.integers(1, 20))] = False
        elif r < 0.5:
            valid[a, : int(rng.integers(1, S // 2))] = False
        elif r < 0.7:
            valid[a, int(rng.integers(S // 2, S)) :] = False
    xy[~valid] = np.nan
    types = tracks.object_types.copy()
    types[rng.random(A) < 0.15] = "cyclist"
    return replace(tracks, xy_city=xy, valid=valid, object_types=types, truth=None)


def test_damaged_tracks_match_the_reference(synth_dir: Path) -> None:
    rng = np.random.default_rng(0)
    window = WindowConfig(num_steps=30, stride_steps=2, tracks="all", min_speed_mps=0.0)
    total = 0
    for path in find_scenario_files(synth_dir)[:12]:
        tracks = _damaged(read_scenario_tracks(path, Source.SYNTHETIC), rng)
        windows = cut_windows(tracks, window)
        row = {t: i for i, t in enumerate(tracks.track_ids.tolist())}
        track_idx = np.asarray([row[t] for t in windows.track_id.tolist()], dtype=np.int64)
        graph, graph_ref = read_lane_graph(map_path_for(path)), ref.read_lane_graph(map_path_for(path))
        used = [a for a in range(tracks.num_tracks) if lane_types_for(str(tracks.object_types[a]))]
        types = [lane_types_for(str(tracks.object_types[a])) for a in used]
        ours_match = match_tracks(graph, tracks.xy_city[used], types)
        ref_match = ref.match_tracks(graph_ref, tracks.xy_city[used], types)
        for name in ("lane", "lateral_m", "heading_diff_rad", "moving", "valid"):
            np.testing.assert_array_equal(getattr(ours_match, name), getattr(ref_match, name), err_msg=name)
        ours = map_direction_class(tracks, graph, track_idx, windows.start_timestep, window.num_steps)
        theirs = ref.map_direction_class(
            tracks, graph_ref, track_idx, windows.start_timestep, window.num_steps
        )
        np.testing.assert_array_equal(ours, theirs, err_msg=path.name)
        total += len(ours)
    assert total > 1000


def test_lane_graphs_match_the_reference(synth_dir: Path, av2_fixtures: Path) -> None:
    maps = [map_path_for(p) for p in find_scenario_files(synth_dir)[:6]]
    maps += [map_path_for(p) for p in find_scenario_files(av2_fixtures / "motion_forecasting")]
    maps += [sensor_log_map_path(log) for log in find_sensor_logs(av2_fixtures / "sensor_logs")]
    for path in maps:
        ours, theirs = read_lane_graph(path), ref.read_lane_graph(path)
        for f in fields(theirs):
            if f.name == "tree":
                np.testing.assert_array_equal(ours.tree.data, theirs.tree.data)
                continue
            a, b = getattr(ours, f.name), getattr(theirs, f.name)
            if isinstance(b, np.ndarray):
                assert np.asarray(a).dtype == b.dtype, f.name
                np.testing.assert_array_equal(a, b, err_msg=f"{path.name}: {f.name}")
            else:
                assert a == b, f"{path.name}: {f.name}"


def _truth_variants(table: pa.Table) -> list[pa.Table]:
    """The sidecar as written, and damaged copies: null lists and items, unequal lists, unknown kinds,
    empty and reversed extents, infinite progress, too many manoeuvres."""
    rows = table.to_pylist()

    def edit(i: int, **changes: object) -> pa.Table:
        new = [dict(r) for r in rows]
        new[i].update(changes)
        return pa.Table.from_pylist(new, schema=table.schema)

    s = list(rows[1]["route_s_m"])
    return [
        table,
        edit(1, route_s_m=None),
        edit(1, route_s_m=s[:-1]),
        edit(1, route_s_m=[None, *s[1:]]),
        edit(1, route_s_m=[float("inf"), *s[1:]]),
        edit(1, route_kind="flying"),
        edit(1, route_kind=None),
        edit(2, span_kind=["left"], span_start_m=[1.0], span_end_m=[5.0]),
        edit(2, span_kind=["left"], span_start_m=[1.0, 2.0], span_end_m=[5.0]),
        edit(2, span_kind=None, span_start_m=None, span_end_m=None),
        edit(2, span_kind=["left"], span_start_m=None, span_end_m=[5.0]),
        edit(2, span_kind=[None], span_start_m=[1.0], span_end_m=[5.0]),
        edit(2, span_kind=["wobble"], span_start_m=[1.0], span_end_m=[5.0]),
        edit(2, span_kind=["u_turn"], span_start_m=[5.0], span_end_m=[5.0]),
        edit(2, span_kind=["right"], span_start_m=[None], span_end_m=[5.0]),
        edit(2, span_kind=["left", "right"], span_start_m=[1.0, 9.0], span_end_m=[5.0, 12.0]),
        edit(2, span_kind=["left"] * 9, span_start_m=[1.0] * 9, span_end_m=[5.0] * 9),
    ]


def test_truth_reader_matches_the_reference(tmp_path: Path) -> None:
    """Column-wise reading gives the same truth, or the same refusal, as the row-wise reader."""
    sc = generate_scenario(np.random.default_rng([7, 4]))
    scenario = next(write_scenario_dir(sc, tmp_path).glob("scenario_*.parquet"))
    tracks = read_scenario_tracks(scenario, Source.SYNTHETIC)
    table = pq.read_table(truth_path_for(scenario))
    for i, variant in enumerate(_truth_variants(table)):
        path = tmp_path / f"trajemb_truth_{i}.parquet"
        pq.write_table(variant.replace_schema_metadata(table.schema.metadata), path)
        try:
            theirs = ref.read_truth(path, tracks.track_ids, tracks.num_steps)
        except DataError as exc:
            with pytest.raises(DataError) as ours_exc:
                read_truth(path, tracks.track_ids, tracks.num_steps)
            assert str(ours_exc.value) == str(exc), i
            continue
        ours = read_truth(path, tracks.track_ids, tracks.num_steps)
        for f in fields(theirs):
            a, b = getattr(ours, f.name), getattr(theirs, f.name)
            assert a.dtype == b.dtype and a.shape == b.shape, (i, f.name)
            np.testing.assert_array_equal(a, b, err_msg=f"variant {i}: {f.name}")


def _inputs_for_batches(
    synth_dir: Path, av2_fixtures: Path, window: WindowConfig
) -> list[tuple[CityWindows, TrackSet, LaneGraph]]:
    """Windows, tracks and lane graph of damaged synthetic scenarios, the real scenarios and the real
    sensor logs (tracks of other lengths), and one input without windows."""
    rng = np.random.default_rng(3)
    loaded = [
        (_damaged(read_scenario_tracks(p, Source.SYNTHETIC), rng), map_path_for(p))
        for p in find_scenario_files(synth_dir)[:10]
    ]
    loaded += [
        (read_scenario_tracks(p), map_path_for(p))
        for p in find_scenario_files(av2_fixtures / "motion_forecasting")
    ]
    loaded += [
        (read_sensor_log_tracks(p), sensor_log_map_path(p))
        for p in find_sensor_logs(av2_fixtures / "sensor_logs")
    ]
    inputs = [(cut_windows(tracks, window), tracks, read_lane_graph(path)) for tracks, path in loaded]
    empty = replace(loaded[0][0], valid=np.zeros_like(loaded[0][0].valid))
    inputs.insert(3, (cut_windows(empty, window), empty, inputs[0][2]))
    return inputs


@pytest.mark.parametrize("window", WINDOW_CONFIGS, ids=["default", "all-30"])
def test_batched_labels_are_one_input_at_a_time(
    synth_dir: Path, av2_fixtures: Path, window: WindowConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``with_map_directions_many`` labels each input as ``with_map_directions`` of it alone, and the
    lanes ``match_tracks_many`` finds are each map's own (matched in blocks of any size)."""
    inputs = _inputs_for_batches(synth_dir, av2_fixtures, window)
    alone = [with_map_directions(w, tracks, graph).map_direction for w, tracks, graph in inputs]
    assert sum(len(a) for a in alone) > 1000 and len({t.num_steps for _, t, _ in inputs}) > 1
    assert len(inputs[3][0]) == 0
    for block in (1, 500, lanes.MATCH_BLOCK_STEPS):
        monkeypatch.setattr(lanes, "MATCH_BLOCK_STEPS", block)
        batched = with_map_directions_many(inputs)
        for i, (ours, theirs) in enumerate(zip(batched, alone, strict=True)):
            assert ours.map_direction.dtype == theirs.dtype, i
            np.testing.assert_array_equal(ours.map_direction, theirs, err_msg=f"input {i}, block {block}")
        same_length = [(t, g) for _, t, g in inputs if t.num_steps == 110]
        used = [
            [a for a in range(t.num_tracks) if lane_types_for(str(t.object_types[a]))] for t, _ in same_length
        ]
        types = [
            lane_types_for(str(t.object_types[a]))
            for (t, _), u in zip(same_length, used, strict=True)
            for a in u
        ]
        many = match_tracks_many(
            LaneGraphs.of([g for _, g in same_length]),
            np.concatenate([t.xy_city[u] for (t, _), u in zip(same_length, used, strict=True)]),
            types,
            np.repeat(np.arange(len(used)), [len(u) for u in used]),
        )
        first = 0
        for g, ((tracks, graph), u) in enumerate(zip(same_length, used, strict=True)):
            one = match_tracks(
                graph, tracks.xy_city[u], [lane_types_for(str(tracks.object_types[a])) for a in u]
            )
            rows = slice(first, first + len(u))
            offset = int(LaneGraphs.of([g_ for _, g_ in same_length]).lane_offsets[g])
            np.testing.assert_array_equal(many.lane[rows], np.where(one.lane >= 0, one.lane + offset, -1))
            for name in ("lateral_m", "heading_diff_rad", "moving", "valid"):
                np.testing.assert_array_equal(getattr(many, name)[rows], getattr(one, name), err_msg=name)
            first += len(u)


def test_merged_lane_graphs_keep_each_map(synth_dir: Path, av2_fixtures: Path) -> None:
    """Connector chains and lane sides read from ``LaneGraphs`` are each map's own."""
    paths = [map_path_for(p) for p in find_scenario_files(synth_dir)[:5]]
    paths += [map_path_for(p) for p in find_scenario_files(av2_fixtures / "motion_forecasting")]
    graphs = [read_lane_graph(p) for p in paths]
    merged = LaneGraphs.of(graphs)
    rng = np.random.default_rng(0)
    for g, graph in enumerate(graphs):
        offset = int(merged.lane_offsets[g])
        for lane in np.flatnonzero(graph.is_intersection).tolist():
            assert merged.connector_chain(lane + offset) == lanes.connector_chain(graph, lane)
        old = rng.integers(0, graph.num_lanes, 300)
        new = np.concatenate(
            [
                rng.integers(0, graph.num_lanes, 200),
                graph.left_neighbor[old[:50]],
                graph.right_neighbor[old[50:100]],
            ]
        )
        new = np.where(new >= 0, new, 0)
        np.testing.assert_array_equal(
            lane_side(merged, old + offset, new + offset), lane_side(graph, old, new)
        )
