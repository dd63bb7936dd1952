"""Synthetic scenarios: exact AV2 formats, determinism, and a manoeuvre mix rich enough for retrieval."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet
from av2.map.map_api import ArgoverseStaticMap

from trajemb.core.errors import ConfigError
from trajemb.data.av2_motion import find_scenario_files, map_path_for, read_scenario_tracks
from trajemb.data.schema import DirectionClass, Source
from trajemb.data.store import read_table
from trajemb.data.synth.agents import Crowd, Driver, drive, simulate, simulate_many, speed_profile
from trajemb.data.synth.behaviour import BEHAVIOUR, GENERATOR_VERSION
from trajemb.data.synth.generate import MARKER_FILE, SynthConfig, generate, scenario_of, scenarios_of
from trajemb.data.synth.scenario import SynthScenario, _draft, generate_scenario, generate_scenarios
from trajemb.data.synth.writer import (
    _kept_rows,
    _points_of,
    kept_index,
    map_json,
    map_json_bytes,
    segment_cuts,
    write_scenario_parquet,
    write_scenario_parquet_av2,
)


def test_fast_writer_equals_av2_serializer(tmp_path: Path) -> None:
    for seed in range(3):
        sc = generate_scenario(np.random.default_rng(seed))
        write_scenario_parquet(sc, tmp_path / "ours.parquet")
        write_scenario_parquet_av2(sc, tmp_path / "av2.parquet")
        ours = load_argoverse_scenario_parquet(tmp_path / "ours.parquet")
        ref = load_argoverse_scenario_parquet(tmp_path / "av2.parquet")
        assert ours == ref  # av2's dataclass equality: every state of every track
        ours_t, ref_t = pq.read_table(tmp_path / "ours.parquet"), pq.read_table(tmp_path / "av2.parquet")
        assert ours_t.column_names == ref_t.column_names
        for name in ours_t.column_names:
            assert ours_t.column(name).to_pylist() == ref_t.column(name).to_pylist(), name


def test_synthetic_loads_through_real_readers(synth_dir: Path) -> None:
    files = find_scenario_files(synth_dir)
    assert len(files) == 24
    assert json.loads((synth_dir / MARKER_FILE).read_text())["config"]["seed"] == 7
    for path in files[:6]:
        scenario = load_argoverse_scenario_parquet(path)
        static_map = ArgoverseStaticMap.from_json(map_path_for(path))
        assert len(static_map.vector_lane_segments) > 4 and static_map.vector_drivable_areas
        tracks = read_scenario_tracks(path, Source.SYNTHETIC)
        assert tracks.num_steps == 110 and tracks.num_tracks == len(scenario.tracks)
        focal = tracks.categories == "focal"
        assert focal.sum() == 1 and tracks.valid[focal].all()
        assert tracks.track_ids[focal][0] == scenario.focal_track_id
        assert set(tracks.categories) <= {"focal", "scored", "unscored", "fragment"}
        # Fragments are exactly the partially observed tracks.
        np.testing.assert_array_equal(tracks.categories == "fragment", ~tracks.valid.all(axis=1))
        # Lane successors point at lanes that exist.
        for lane in static_map.vector_lane_segments.values():
            assert all(s in static_map.vector_lane_segments for s in lane.successors)


def test_deterministic_and_worker_independent(tmp_path: Path) -> None:
    """Every file of a run on two workers is byte for byte that of a run on one, and a run of more scenarios
    starts with the same ones (simulated in other batches); another seed differs."""
    generate(SynthConfig(num_scenarios=6, seed=3, workers=1), tmp_path / "a" / "out", progress=False)
    generate(SynthConfig(num_scenarios=14, seed=3, workers=1), tmp_path / "more" / "out", progress=False)
    generate(SynthConfig(num_scenarios=6, seed=3, workers=2), tmp_path / "b" / "out", progress=False)
    generate(SynthConfig(num_scenarios=6, seed=4, workers=1), tmp_path / "c" / "out", progress=False)

    def files(run: str) -> dict[str, bytes]:
        root = tmp_path / run / "out"
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    one, two = files("a"), files("b")
    assert len(one) == 6 * 3 + 1  # scenario, map and truth per scenario, and the marker
    assert one == two
    more = files("more")
    assert len(more) == 14 * 3 + 1 and all(
        more[name] == data for name, data in one.items() if name != MARKER_FILE
    )
    assert set(files("c")).isdisjoint(set(one) - {MARKER_FILE})


def test_manoeuvre_mix_is_rich(synth_table: Path) -> None:
    """Every manoeuvre is common enough to retrieve, by the generator's own truth."""
    meta = read_table(synth_table).meta
    share = meta.true_manoeuvre.value_counts(normalize=True).to_dict()
    for cls in ("left", "right", "u_turn", "lane_change_left", "lane_change_right"):
        assert share.get(cls, 0.0) >= 0.01, (cls, share)
    assert share["straight"] <= 0.9
    types = Counter(meta.object_type.tolist())
    assert types["vehicle"] > types["pedestrian"] > 0 and types["cyclist"] > 0
    speeds = meta.mean_speed_mps
    assert speeds.min() < 2.0 and speeds.max() > 12.0  # walkers to fast cars


def test_speed_profile_limits() -> None:
    s = np.arange(0.0, 200.0, 0.5)
    kappa = np.where((s > 80) & (s < 110), 1 / 15, 0.0)  # a tight turn
    driver = Driver(15.0, 2.0, 3.0, 3.0, 15.0, stop_at_m=150.0, wait_s=2.0)
    v = speed_profile(s, kappa, driver)
    assert v.max() <= 15.0 + 1e-9
    assert np.all(v[(s > 80) & (s < 110)] <= np.sqrt(3.0 * 15) + 1e-9)
    assert v[np.searchsorted(s, 150.0)] == 0.0
    dv2 = np.diff(v**2) / np.diff(s)
    assert dv2.max() <= 2 * 2.0 + 1e-6 and dv2.min() >= -2 * 3.0 - 1e-6


def test_drive_waits_at_stop() -> None:
    route = np.stack([np.arange(0.0, 300.0, 0.5), np.zeros(600)], axis=-1)
    m = drive(route, 0.0, Driver(10.0, 2.0, 3.0, 3.0, 10.0, stop_at_m=40.0, wait_s=3.0), 0.0, 110)
    speed = np.hypot(*np.diff(m.xy, axis=0).T) / 0.1
    stopped = np.flatnonzero(speed < 0.05)
    assert stopped.size >= 25  # ~3 s standing at the stop line
    np.testing.assert_allclose(m.xy[stopped, 0], 40.0, atol=0.1)
    assert m.valid.all()


@pytest.mark.parametrize("layout", ["junction4", "junction3", "curved_road"])
def test_layouts_offer_their_manoeuvres(layout: str) -> None:
    from trajemb.data.synth.roads import road_network

    kinds = set()
    for seed in range(5):
        kinds |= {r.manoeuvre for r in road_network(np.random.default_rng(seed), layout).routes}
    expected = {"straight", "u_turn"} | ({"left", "right"} if layout.startswith("junction") else set())
    assert expected <= kinds
    assert DirectionClass.LANE_CHANGE_LEFT.value in kinds


@pytest.mark.parametrize("layout", ["junction4", "junction3", "curved_road"])
def test_many_networks_build(layout: str) -> None:
    """Fuzz the generator's geometry over seeds (a short road once broke lane-change placement)."""
    from trajemb.data.synth.roads import road_network

    for seed in range(150):
        net = road_network(np.random.default_rng([seed, 99]), layout)
        assert net.routes and net.walk_routes and net.curb_spots
        assert all(np.isfinite(r.xy).all() and len(r.xy) > 10 for r in net.routes)


def _scenario_digest(scenarios: list[SynthScenario]) -> str:
    """sha256 of scenarios' arrays rounded to 0.1 mm (so that the last bits of a platform's maths do
    not count), ids, city, layout and drivable areas."""
    h = hashlib.sha256()
    for sc in scenarios:
        for a in (sc.xy_city, sc.heading_rad, sc.velocity_mps, sc.valid, sc.route_s_m, sc.categories):
            values = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=-1.0)
            h.update(np.ascontiguousarray(np.round(values, 4)).tobytes())
        h.update(("|".join(sc.track_ids) + sc.scenario_id + sc.city + sc.layout).encode())
        for area in sc.network.drivable_areas:
            h.update(np.ascontiguousarray(np.round(area, 4)).tobytes())
    return h.hexdigest()


def test_generator_1_is_kept() -> None:
    """``--generator 1`` makes the scenarios of the generator up to trajemb 0.1.x (main at 5b95a74,
    before issue 19) from the same seeds: this digest was computed with that code."""
    scenarios = [scenario_of(1, np.random.default_rng([7, i])) for i in range(3)]
    assert _scenario_digest(scenarios) == "5b69089711c7f262a05e9e2fab22a22fa74cfcd3007e434c451c92dbfe570a5e"
    calibrated = [scenario_of(2, np.random.default_rng([7, i])) for i in range(3)]
    assert _scenario_digest(calibrated) != _scenario_digest(scenarios)


def test_generator_2_is_pinned() -> None:
    """Speed-ups of the generator and the writer (issue 24) keep generator 2's scenarios and maps: these
    digests were computed with main at 7a3d4d6, before them (maps as written: rounded to the centimetre
    already)."""
    scenarios = [scenario_of(2, np.random.default_rng([7, i])) for i in range(3)]
    assert _scenario_digest(scenarios) == "2e8e03853fe466c05f7d175de68a1e5a13c82cd480f9bd37027624011bd91cf1"
    maps = hashlib.sha256(b"".join(orjson.dumps(map_json(sc)) for sc in scenarios)).hexdigest()
    assert maps == "9f0906b05846dd8653dfbc27b1512bc506e91c54e36e4599ec025ea4956be443"


def test_generator_2_batches_are_pinned() -> None:
    """Scenarios simulated together (``generate_scenarios``, as ``trajemb synth`` makes them) are those
    of ``generate_scenario`` one at a time, array for array and bit for bit, and this digest of eight of
    them was computed with main at 7437a2e, before batches existed."""
    rngs = [np.random.default_rng([8, i]) for i in range(8)]
    batch = generate_scenarios(rngs)
    assert _scenario_digest(batch) == "e07e7de1216e51529b3380f37850d7c3b44610eaa224c503f5756b9da61ab5cb"
    assert len({len(sc.track_ids) for sc in batch}) > 2  # crowds of different sizes: padding is used
    for i, sc in enumerate(batch):
        alone = generate_scenario(np.random.default_rng([8, i]))
        for name in ("xy_city", "heading_rad", "velocity_mps", "valid", "route_s_m", "track_ids"):
            assert getattr(sc, name).tobytes() == getattr(alone, name).tobytes(), (i, name)
        assert map_json_bytes(sc) == map_json_bytes(alone)
    assert [sc.scenario_id for sc in scenarios_of(2, [np.random.default_rng([8, i]) for i in (2, 5)])] == [
        batch[2].scenario_id,
        batch[5].scenario_id,
    ]


def test_simulate_many_is_simulate_of_each() -> None:
    """Crowds of 0 to 40 road users stepped together give each crowd's ``simulate`` bit for bit (the
    padding rows lead no one), signals, stop signs and waits at the start included."""
    drafts = [_draft(np.random.default_rng([9, i]), 110, BEHAVIOUR) for i in range(12)]
    crowds = [Crowd([u.plan for u in d.users], d.signals, d.factor) for d in drafts]
    crowds.insert(3, Crowd([]))
    crowds.append(Crowd(crowds[0].plans[:1]))  # a crowd of one, without signals or factors
    stops = [p.driver.stop_at_m is not None for c in crowds for p in c.plans]
    assert any(stops) and any(c.signals is not None and c.signals.red_from_s.size for c in crowds)
    together = simulate_many(crowds, 110)
    assert len(together) == len(crowds)
    for crowd, progress in zip(crowds, together, strict=True):
        alone = simulate(crowd.plans, 110, crowd.signals, crowd.desired_factor)
        assert progress.s_m.shape == (len(crowd.plans), 110)
        assert progress.s_m.tobytes() == alone.s_m.tobytes()
        assert progress.speed_mps.tobytes() == alone.speed_mps.tobytes()
    assert simulate_many([], 110) == []


def test_kept_index_is_kept_rows_of_each() -> None:
    """One index over stacked polylines keeps, in order, the rows ``_kept_rows`` keeps of each."""
    for stride in (1, 2, 3, 4, 7):
        for sizes in ([0], [1], [2], [3], [5], [4, 0, 1, 2, 9, 13, 100], list(range(30))):
            index, counts = kept_index(sizes, stride)
            starts = np.cumsum([0, *sizes])
            expected = [int(starts[i]) + r for i, n in enumerate(sizes) for r in _kept_rows(n, stride)]
            assert index.tolist() == expected, (stride, sizes)
            assert counts.tolist() == [len(_kept_rows(n, stride)) for n in sizes]


def test_segment_cuts_are_linspaces() -> None:
    """Lane cuts are ``np.linspace(0, last, k + 1).round().astype(int)``, halves rounded to even."""
    for last in range(0, 1200):
        for k in range(1, 9):
            assert segment_cuts(last, k) == np.linspace(0, last, k + 1).round().astype(int).tolist(), (
                last,
                k,
            )
    assert segment_cuts(10, 4) == [0, 2, 5, 8, 10]  # 2.5 -> 2 and 7.5 -> 8


def test_map_bytes_are_orjsons_of_the_map_dict() -> None:
    """The map file's text built from the points' array (``map_json_bytes``) is orjson's text of the
    map dict, byte for byte, for both generators; polylines it cannot write that way (a NaN, an empty
    one) fall back to the dicts."""
    for generator, seed in ((2, 0), (2, 5), (1, 0)):
        for i in range(4):
            sc = scenario_of(generator, np.random.default_rng([seed, i]))
            assert map_json_bytes(sc) == orjson.dumps(map_json(sc))
    rng = np.random.default_rng(0)
    lines = [np.round(rng.normal(size=(n, 2)) * 10.0**e, 3) for n, e in ((1, 0), (9, 3), (5, -3), (13, 7))]
    lines[1][2] = [-0.001, 0.0]  # rounds to -0.0
    assert orjson.dumps(_points_of(lines, as_json=True)) == orjson.dumps(_points_of(lines))
    for odd in ([*lines, np.zeros((0, 2))], [*lines, np.array([[np.nan, np.nan], [1.0, 2.0]])]):
        assert orjson.dumps(_points_of(odd, as_json=True)) == orjson.dumps(_points_of(odd))


def test_generator_choice(tmp_path: Path) -> None:
    generate(SynthConfig(num_scenarios=2, seed=3, workers=1, generator=1), tmp_path / "v1", progress=False)
    marker = json.loads((tmp_path / "v1" / MARKER_FILE).read_text())
    assert marker["generator_version"] == 1 and marker["config"]["generator"] == 1
    assert marker["command"].endswith("--generator 1")
    assert SynthConfig().generator == GENERATOR_VERSION == 2
    for bad in (0, 3, True):
        with pytest.raises(ConfigError, match="generator must be one of 1, 2"):
            SynthConfig(generator=bad)
