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
    nearest_point,
    neighbor_records,
    rows_in_box,
    rows_in_lasso,
    scene_context,
    search_row,
    search_window,
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
