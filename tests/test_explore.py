"""What the explorer shows, computed without Streamlit: scene context, clusters, selections, own queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.bundle import Bundle
from trajemb.errors import DataError
from trajemb.explore import (
    NeighborOptions,
    bundle_scenario_rows,
    city_xy,
    cluster_labels,
    cluster_medoids,
    grid_representatives,
    id_columns,
    label_mask,
    nearest_point,
    neighbor_records,
    page_of,
    present_labels,
    rows_in_box,
    rows_in_lasso,
    scene_context,
    search_row,
    search_window,
    short_id,
    sorted_rows,
)
from trajemb.frames import agent_to_city
from trajemb.store import read_table


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
