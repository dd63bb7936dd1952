"""What the explorer shows, computed without Streamlit: scene context, clusters, selections, own queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.analysis.bundle import Bundle
from trajemb.core.errors import ConfigError, DataError
from trajemb.data.frames import agent_to_city
from trajemb.data.store import read_table
from trajemb.serving.explore import (
    NeighborOptions,
    bundle_scenario_rows,
    city_xy,
    cluster_labels,
    cluster_medoids,
    cluster_summaries,
    grid_representatives,
    id_columns,
    label_mask,
    layout_extent,
    nearest_point,
    neighbor_records,
    page_of,
    path_sketches,
    pickable_rows,
    present_labels,
    rows_in_box,
    rows_in_lasso,
    rows_in_view,
    scene_context,
    search_row,
    search_window,
    short_id,
    snap_view,
    sorted_rows,
    timed_scene_context,
)


def test_city_geometry_and_scene_context(small_bundle: Path, synth_table: Path) -> None:
    bundle = Bundle(small_bundle)
    table = read_table(synth_table)
    rows = [0, 11, 250]
    origin = table.meta[["origin_x_city_m", "origin_y_city_m"]].to_numpy()[rows]
    ref = agent_to_city(
        table.xy_agent[rows].astype(np.float64), origin, table.meta["theta_rad"].to_numpy()[rows]
    )
    np.testing.assert_allclose(city_xy(bundle, rows), ref, atol=1e-4)
    row = int(np.argmax(np.bincount(bundle.scenario_groups)[bundle.scenario_groups]))  # a busy scenario
    same = bundle_scenario_rows(bundle, row)
    assert (bundle.scenario_groups[same] == bundle.scenario_groups[row]).all()
    assert len(same) == int((bundle.scenario_groups == bundle.scenario_groups[row]).sum())
    others = scene_context(bundle, row)
    assert others, "a busy scenario has other road users"
    # Every polyline is a piece of a window of another track of the same scenario, in the city frame.
    all_city = city_xy(bundle, same)
    own_track = bundle.groups[row]
    for poly in others:
        assert 2 <= len(poly) <= bundle.num_steps
        hits = [
            r
            for r, c in zip(same, all_city, strict=True)
            if bundle.groups[r] != own_track
            and any(np.allclose(c[i : i + len(poly)], poly) for i in range(bundle.num_steps - len(poly) + 1))
        ]
        assert hits


def test_records_and_own_query(small_bundle: Path) -> None:
    bundle = Bundle(small_bundle)
    nb = search_row(bundle, "cosine-d8", 5, NeighborOptions(k=4))
    records = neighbor_records(bundle, nb)
    assert [r["rank"] for r in records] == [1, 2, 3, 4]
    assert {"window_id", "distance", "ade_m", "fde_m", "speed_mps", "direction", "object_type", "row"} <= set(
        records[0]
    )
    # A window of the bundle given as one's own query finds what the row search finds (minus exclusions).
    own = search_window(bundle, "cosine-d8", bundle.xy.rows(5), NeighborOptions(k=4, one_per_track=False))
    assert own.rows[0] == 5 and own.distance[0] < 1e-3  # itself, at distance ~0
    with pytest.raises(DataError, match="must have shape"):
        search_window(bundle, "cosine-d8", np.zeros((7, 2)), NeighborOptions())
    with pytest.raises(DataError, match="finite"):
        search_window(bundle, "cosine-d8", np.full((bundle.num_steps, 2), 1e308), NeighborOptions())


def test_distances_and_gaps_are_the_embeddings(small_bundle: Path) -> None:
    """Issue 22: the neighbour table shows each neighbour's embedding distance (what ranks it) and the
    gap to the rank before, pinned to a brute-force distance between the embeddings."""
    bundle = Bundle(small_bundle)
    nb = search_row(bundle, "cosine-d8", 11, NeighborOptions(k=6))
    records = neighbor_records(bundle, nb)
    emb = np.asarray(bundle.embeddings("cosine-d8").all(), dtype=np.float64)
    brute = np.linalg.norm(emb[nb.rows] - emb[11], axis=1)
    assert [r["distance"] for r in records] == pytest.approx(brute, abs=1e-5)
    assert records[0]["gap"] == pytest.approx(brute[0], abs=1e-5)  # from the query itself
    assert [r["gap"] for r in records[1:]] == pytest.approx(np.diff(brute), abs=1e-5)
    assert all(r["gap"] >= -1e-6 for r in records[1:])


def test_ids_sorting_and_pages(small_bundle: Path) -> None:
    """Lists show scenario, track and start beside the full id, and page and sort over every matching
    window (not the first 500)."""
    bundle = Bundle(small_bundle)
    meta = bundle.meta
    rows = [0, 7, 42]
    ids = id_columns(bundle, rows)
    assert ids["window id"] == meta["window_id"].iloc[rows].tolist()
    assert ids["start"] == meta["start_timestep"].iloc[rows].tolist()
    assert ids["track"] == [short_id(str(t)) for t in meta["track_id"].iloc[rows]]
    assert all(
        i.split("/")[1].startswith(s.rstrip("\u2026"))
        for i, s in zip(ids["window id"], ids["scenario"], strict=True)
    )
    assert short_id("0123456789abcdef") == "01234567\u2026" and short_id("123456789") == "123456789"
    assert present_labels(bundle) == [
        "direction",
        "true_manoeuvre",
        "object_type",
        "city",
        "speed_bin",
        "source",
    ]

    mask = label_mask(bundle, {"direction": ("straight",)})
    assert mask is not None
    by_speed = sorted_rows(bundle, mask, "mean_speed_mps", descending=True)
    speed = np.asarray(meta["mean_speed_mps"])
    expected = np.flatnonzero(mask)[np.argsort(-speed[mask], kind="stable")]
    np.testing.assert_array_equal(by_speed, expected)
    by_id = sorted_rows(bundle, None, "window_id")
    assert meta["window_id"].iloc[by_id].tolist() == sorted(meta["window_id"])
    by_type = sorted_rows(bundle, None, "object_type", descending=True)
    kinds = meta["object_type"].astype(str).iloc[by_type].tolist()
    assert kinds == sorted(kinds, reverse=True)
    pages = [page_of(by_speed, p, 100) for p in range(-(-len(by_speed) // 100))]
    np.testing.assert_array_equal(np.concatenate(pages), by_speed)
    np.testing.assert_array_equal(page_of(by_speed, 10_000, 100), pages[-1])  # clipped to the last


def test_clusters_and_medoids() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (50, 4)), rng.normal(5, 0.1, (50, 4))]).astype(np.float32)
    labels = cluster_labels(x, 2)
    assert len(set(labels[:50].tolist())) == 1 and labels[0] != labels[-1]
    medoids = cluster_medoids(x, labels)
    assert set(medoids) == {0, 1} and all(labels[r] == c for c, r in medoids.items())


def test_layout_selections() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(-10, 10, (20_000, 2)).astype(np.float32)
    box = rows_in_box(xy, (2.0, -1.0), (0.0, 3.0))
    np.testing.assert_array_equal(
        box, np.flatnonzero((xy[:, 0] >= -1) & (xy[:, 0] <= 2) & (xy[:, 1] >= 0) & (xy[:, 1] <= 3))
    )
    triangle = rows_in_lasso(xy, [0, 8, 0], [0, 0, 8])
    inside = (xy[:, 0] > 0) & (xy[:, 1] > 0) & (xy[:, 0] + xy[:, 1] < 8)
    assert abs(len(triangle) - int(inside.sum())) <= 5 and inside[triangle].mean() > 0.99
    assert len(rows_in_lasso(xy, [0, 1], [0, 1])) == 0
    reps = grid_representatives(xy, cells=20)
    assert len(reps) <= 400 and len(reps) >= 390  # uniform points fill almost every cell
    mask = xy[:, 0] < 0
    assert mask[grid_representatives(xy, cells=20, mask=mask)].all()
    assert nearest_point(xy, 3.0, 4.0) == int(np.argmin(((xy - [3, 4]) ** 2).sum(1)))


def test_cluster_summaries_name_size_and_mix() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    codes = np.array([2, 2, 1, 0, 0, 0, 0, 2])  # into ["straight", "left", "u_turn"]
    speed = np.array([5.0, 7.0, 9.0, 10.0, 12.0, 14.0, 16.0, 18.0])
    out = cluster_summaries(labels, {0: 1, 1: 5}, codes, ["straight", "left", "u_turn"], speed)
    assert [s.cluster for s in out] == [1, 0] and [s.size for s in out] == [5, 3]  # largest first
    assert out[0].mix == (("straight", 0.8), ("u_turn", 0.2)) and out[0].speed_mps == 14.0
    assert (
        out[0].name == "straight (80%) + u turn (20%), 14 m/s"
        and out[1].name == "u turn (67%) + left (33%), 7 m/s"
    )
    assert out[1].medoid == 1


def test_timed_context_places_others_in_the_window(small_bundle: Path) -> None:
    """Playback moves every road user through the same seconds: each other polyline starts at the step
    of the query's window that its first point shares with it."""
    bundle = Bundle(small_bundle)
    start = bundle.numbers("start_timestep")
    groups = bundle.groups
    row = next(r for r in range(bundle.num_windows) if len(timed_scene_context(bundle, r)) >= 3)
    xy_all = city_xy(bundle, np.arange(bundle.num_windows))
    for offset, poly in timed_scene_context(bundle, row):
        assert 0 <= offset <= bundle.num_steps - 2 and offset + len(poly) <= bundle.num_steps
        # the same positions as the other track's window that covers those steps
        same_scenario = bundle_scenario_rows(bundle, row)
        step = int(start[row]) + offset  # scenario step of the polyline's first point
        candidates = [
            r
            for r in same_scenario
            if groups[r] != groups[row] and start[r] <= step < start[r] + bundle.num_steps
        ]
        assert any(np.allclose(xy_all[r][step - int(start[r])], poly[0], atol=1e-6) for r in candidates)


def test_layout_views_zoom_to_every_window() -> None:
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(20_000, 2))
    full = layout_extent(xy)
    assert full[0] < xy[:, 0].min() and full[3] > xy[:, 1].max()
    assert snap_view(None, full) is None and snap_view(full, full) is None  # the whole layout
    assert snap_view((5.0, 4.0, 0.0, 1.0), full) is not None  # reversed bounds are sorted
    view = snap_view((-0.2, 0.21, -0.1, 0.33), full)
    assert view is not None and view[0] <= -0.2 and view[1] >= 0.21 and view[3] >= 0.33  # rounded outwards
    assert snap_view((-0.2, 0.21, -0.1, 0.33), full) == view  # nearby zooms share one drawing
    inside = rows_in_view(xy, view)
    expected = np.flatnonzero(
        (xy[:, 0] >= view[0]) & (xy[:, 0] <= view[1]) & (xy[:, 1] >= view[2]) & (xy[:, 1] <= view[3])
    )
    np.testing.assert_array_equal(inside, expected)
    np.testing.assert_array_equal(pickable_rows(xy, view, None, 10_000, 80), inside)  # few: all of them
    coarse = pickable_rows(xy, full, None, 1_000, 20)
    assert len(coarse) <= 400 and set(coarse) <= set(range(len(xy)))  # many: one per cell
    mask = xy[:, 0] > 0
    assert mask[pickable_rows(xy, view, mask, 10_000, 80)].all()


def test_path_sketches_keep_the_shape() -> None:
    t = np.linspace(0, 1, 60)
    left = np.stack([30 * t, 10 * t**2], axis=1)  # 30 m forward, 10 m to the left
    paths, sides = path_sketches(np.stack([left, left * 0.1]), points=10)
    assert sides == [30.0, 3.0] and len(paths[0]) == 20
    xs, ys = paths[0][0::2], paths[0][1::2]
    assert xs == sorted(xs) and xs[0] == 0 and xs[-1] == 99 and ys[-1] > ys[0]  # forward, then left (y up)
    assert paths[1] == paths[0]  # drawn in its own box: the same shape at any size
    assert path_sketches(np.zeros((0, 60, 2))) == ([], [])


# -- issue 17: tables of every list, mining, sketches, collapsing ------------------------------------
def test_neighbor_tables_hold_the_search_and_collapse_near_duplicates(plain_bundle: Path) -> None:
    from trajemb.serving.explore import neighbors_frame

    bundle = Bundle(plain_bundle)
    model = bundle.model_names[0]
    nb = search_row(bundle, model, 40, NeighborOptions(k=8))
    frame = neighbors_frame(bundle, model, nb)
    assert frame["rank"].tolist() == list(range(1, 9))
    assert frame["window_id"].tolist() == bundle.strings("window_id", nb.rows)
    np.testing.assert_allclose(frame["distance"], nb.distance)
    np.testing.assert_allclose(frame["ade_m"], nb.ade_m)
    assert set(frame["query_window_id"]) == {bundle.strings("window_id", [40])[0]}
    # collapsing: what search() gives with collapse_eps, and no two results within eps of each other
    emb = np.asarray(bundle.embeddings(model).all(), dtype=np.float64)
    eps = float(np.median(nb.distance))
    collapsed = search_row(bundle, model, 40, NeighborOptions(k=8, collapse_duplicates_eps=eps))
    _, ref = bundle.index(model).search(
        emb[[40]].astype(np.float32), 8, bundle.groups[[40]], np.array([40]), None, True, eps
    )
    np.testing.assert_array_equal(collapsed.rows, ref[0][ref[0] >= 0])
    got = emb[collapsed.rows]
    pair = np.sqrt(((got[:, None] - got[None]) ** 2).sum(-1)) + np.eye(len(got)) * 1e9
    assert pair.min() >= eps and len(collapsed) == 8
    with pytest.raises(ConfigError, match="--collapse-duplicates must be"):
        NeighborOptions(collapse_duplicates_eps=0.0)


def test_rare_windows_by_uniqueness_with_filters(plain_bundle: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from trajemb.analysis.bundle import MANIFEST, UNIQUENESS, model_file
    from trajemb.serving.explore import rare_frame, rare_rows, uniqueness

    bundle = Bundle(plain_bundle)
    model = bundle.model_names[0]
    scores = uniqueness(bundle, model)
    rows = rare_rows(bundle, model, top=15)
    assert len(rows) == 15 and np.all(np.diff(scores[rows]) <= 0)
    assert len(set(bundle.groups[rows].tolist())) == 15  # one window per track
    best_per_track = {g: scores[bundle.groups == g].max() for g in np.unique(bundle.groups)}
    assert scores[rows[-1]] >= sorted(best_per_track.values())[-15]
    codes, names = bundle.codes("object_type")
    kind = names[int(np.bincount(codes).argmin())]
    only = rare_rows(bundle, model, top=1000, filters={"object_type": (kind,)}, one_per_track=False)
    assert set(bundle.strings("object_type", only)) == {kind} and len(only) == int(
        (np.asarray(names)[codes] == kind).sum()
    )
    frame = rare_frame(bundle, model, top=5)
    np.testing.assert_allclose(frame["uniqueness"], scores[rows[:5]])
    assert frame["window_id"].tolist() == bundle.strings("window_id", rows[:5])
    # a bundle from before uniqueness was stored: computed in memory, the same, the bundle untouched
    old = tmp_path / "old"
    shutil.copytree(plain_bundle, old)
    manifest = json.loads((old / MANIFEST).read_text())
    del manifest["files"][model_file(model, UNIQUENESS)], manifest["models"][model]["uniqueness"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    (old / model_file(model, UNIQUENESS)).unlink()
    before = sorted(p.name for p in old.rglob("*"))
    np.testing.assert_allclose(uniqueness(Bundle(old), model), scores)
    assert sorted(p.name for p in old.rglob("*")) == before


def test_duplicate_and_cluster_tables(plain_bundle: Path) -> None:
    from trajemb.serving.explore import cluster_frame, duplicate_groups, duplicates_frame, rows_frame

    bundle = Bundle(plain_bundle)
    model = bundle.model_names[0]
    emb = np.asarray(bundle.embeddings(model).all())
    eps = 0.02
    frame = duplicates_frame(bundle, model, eps)
    groups = duplicate_groups(bundle, model, eps)
    assert len(frame) == groups.duplicated > 0
    assert frame["group"].tolist() == sorted(frame["group"].tolist())
    for g, members in frame.groupby("group"):
        assert len(members) == groups.sizes[g] == members["group_windows"].iloc[0]
        assert members["representative"].tolist() == [True] + [False] * (len(members) - 1)
    rows = np.array([bundle.row(i) for i in frame["window_id"]])
    rep = np.array([bundle.row(frame[frame["group"] == g]["window_id"].iloc[0]) for g in frame["group"]])
    np.testing.assert_allclose(frame["distance"], np.linalg.norm(emb[rows] - emb[rep], axis=1), atol=1e-5)
    labels = cluster_labels(emb, 4)
    clusters = cluster_frame(bundle, model, labels, 2)
    assert set(clusters["cluster"]) == {2} and len(clusters) == int((labels == 2).sum())
    assert np.all(np.diff(clusters["distance"].to_numpy()) >= 0)
    selection = rows_frame(bundle, [3, 1, 2])
    assert selection["window_id"].tolist() == bundle.strings("window_id", [3, 1, 2])


def test_a_drawn_path_is_searched_like_any_window(plain_bundle: Path, tmp_path: Path) -> None:
    from trajemb.serving.explore import rows_from_id_file, search_sketch, sketch_query

    bundle = Bundle(plain_bundle)
    model = bundle.model_names[0]
    sketch = sketch_query(bundle, [[0, 0], [30, 0], [45, 12]], speed_mps=6.0)
    nb = search_sketch(bundle, model, sketch, NeighborOptions(k=5))
    assert nb.query_row is None and len(nb) == 5
    np.testing.assert_array_equal(nb.query_xy, sketch.xy_agent)
    direct = search_window(bundle, model, sketch.xy_agent, NeighborOptions(k=5))
    np.testing.assert_array_equal(nb.rows, direct.rows)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(bundle.strings("window_id", nb.rows)))
    np.testing.assert_array_equal(rows_from_id_file(bundle, ids), nb.rows)
