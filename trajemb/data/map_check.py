"""Are a map's lanes on its drivable area, and do its lanes fit together? Read through av2's map API.

Forecasting models rasterise the drivable area and read lane boundaries and neighbours; a map whose
junction interiors lie off the drivable area shows every turning road user leaving the road. Measured
per map (``check_map``), through ``av2.map.map_api.ArgoverseStaticMap`` (centre lines by its
``get_lane_segment_centerline``, lane polygons by ``get_lane_segment_polygon``, drivable areas by
``get_scenario_vector_drivable_areas``); points in polygons by matplotlib's ``Path.contains_points``:

* ``centerline_in_drivable``: share of lane centre-line points inside a drivable-area polygon;
* ``polygon_in_drivable``: share of lane polygon (boundary) points inside a drivable area or within
  ``EDGE_TOLERANCE_M`` of its edge (boundaries of outer lanes lie on the edge itself);
* ``neighbors_consistent``: share of neighbour links (left and right) to a lane of the map whose
  shared boundary coincides: the lane's boundary on that side lies within ``BOUNDARY_TOLERANCE_M`` of one
  of the neighbour's boundaries (mean distance of its points);
* ``successors_connected``: share of successor links to a lane of the map where the successor's centre
  line starts within ``JOIN_TOLERANCE_M`` of where the lane's ends;
* ``dangling_links``: neighbour and successor ids that are no lane of the map (AV2 maps are cut out of a
  city map, so lanes at their edge point outside: real maps have them too).

Legend: P points.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.path import Path as PolygonPath

from trajemb.core.errors import DataError
from trajemb.data.schema import FloatArray

if TYPE_CHECKING:
    from av2.map.map_api import ArgoverseStaticMap

#: A lane polygon point this close (m) to a drivable area's edge counts as on it.
EDGE_TOLERANCE_M = 0.5
#: Neighbours share a boundary when the mean distance between the two is below this (m).
BOUNDARY_TOLERANCE_M = 0.3
#: A successor continues a lane when its centre line starts this close (m) to where the lane's ends.
JOIN_TOLERANCE_M = 1.0


@dataclass(frozen=True)
class MapCheck:
    """The measures of one map (module docstring); NaN where the map has nothing to measure."""

    map_file: str
    lanes: int
    drivable_areas: int
    centerline_in_drivable: float
    polygon_in_drivable: float
    neighbors_consistent: float
    successors_connected: float
    dangling_links: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _segment_distances(points: FloatArray, polyline: FloatArray) -> FloatArray:
    """(P,) distance of each point to a polyline (Q, 2), Q >= 2."""
    a, b = polyline[:-1], polyline[1:]  # (Q-1, 2)
    ab = b - a
    length2 = np.maximum((ab * ab).sum(axis=1), 1e-12)
    t = np.clip(((points[:, None, :] - a[None]) * ab[None]).sum(axis=2) / length2, 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.asarray(np.linalg.norm(points[:, None, :] - nearest, axis=2).min(axis=1), dtype=np.float64)


def _inside_any(points: FloatArray, polygons: list[PolygonPath]) -> np.ndarray:
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        inside |= polygon.contains_points(points)
    return inside


def check_static_map(static_map: ArgoverseStaticMap, map_file: str) -> MapCheck:
    """``MapCheck`` of a map av2 has parsed."""
    areas = [
        np.asarray(a.xyz[:, :2], dtype=np.float64) for a in static_map.get_scenario_vector_drivable_areas()
    ]
    polygons = [PolygonPath(a) for a in areas]
    lanes = static_map.vector_lane_segments
    centre_inside, centre_total = 0, 0
    poly_ok, poly_total = 0, 0
    neighbor_ok, neighbor_total = 0, 0
    join_ok, join_total = 0, 0
    dangling = 0
    centerlines = {lane_id: static_map.get_lane_segment_centerline(lane_id)[:, :2] for lane_id in lanes}
    for lane_id, lane in lanes.items():
        centre = centerlines[lane_id]
        centre_inside += int(_inside_any(centre, polygons).sum())
        centre_total += len(centre)
        outline = np.asarray(static_map.get_lane_segment_polygon(lane_id)[:, :2], dtype=np.float64)
        on_area = _inside_any(outline, polygons)
        for area in areas:
            if on_area.all():
                break
            rest = ~on_area
            on_area[rest] = _segment_distances(outline[rest], area) <= EDGE_TOLERANCE_M
        poly_ok += int(on_area.sum())
        poly_total += len(outline)
        left = lane.left_lane_boundary.xyz[:, :2]
        right = lane.right_lane_boundary.xyz[:, :2]
        for neighbor_id, side in ((lane.left_neighbor_id, left), (lane.right_neighbor_id, right)):
            if neighbor_id is None:
                continue
            other = lanes.get(neighbor_id)
            if other is None:
                dangling += 1
                continue
            neighbor_total += 1
            shared = min(
                float(_segment_distances(side, other.left_lane_boundary.xyz[:, :2]).mean()),
                float(_segment_distances(side, other.right_lane_boundary.xyz[:, :2]).mean()),
            )
            neighbor_ok += int(shared <= BOUNDARY_TOLERANCE_M)
        for successor in lane.successors:
            if successor not in lanes:
                dangling += 1
                continue
            join_total += 1
            gap = float(np.linalg.norm(centerlines[successor][0] - centre[-1]))
            join_ok += int(gap <= JOIN_TOLERANCE_M)

    def share(ok: int, total: int) -> float:
        return ok / total if total else float("nan")

    return MapCheck(
        map_file=map_file,
        lanes=len(lanes),
        drivable_areas=len(areas),
        centerline_in_drivable=share(centre_inside, centre_total),
        polygon_in_drivable=share(poly_ok, poly_total),
        neighbors_consistent=share(neighbor_ok, neighbor_total),
        successors_connected=share(join_ok, join_total),
        dangling_links=dangling,
    )


def check_map(map_json: Path) -> MapCheck:
    """``MapCheck`` of an AV2 ``log_map_archive_*.json``.

    Raises:
        DataError: a missing file or one av2 cannot parse.
    """
    from av2.map.map_api import ArgoverseStaticMap  # lazily: av2's map API takes seconds to import

    map_json = Path(map_json)
    if not map_json.is_file():
        raise DataError(f"{map_json}: map file not found")
    try:
        static_map = ArgoverseStaticMap.from_json(map_json)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{map_json}: not an AV2 map ({type(exc).__name__}: {exc})") from exc
    return check_static_map(static_map, map_json.name)


@dataclass(frozen=True)
class MapSummary:
    """Measures over a set of maps: the mean of each (over maps) and the worst map's."""

    maps: int
    mean: dict[str, float]
    worst: dict[str, float]


MEASURES: tuple[str, ...] = (
    "centerline_in_drivable",
    "polygon_in_drivable",
    "neighbors_consistent",
    "successors_connected",
)


def summarize(checks: list[MapCheck]) -> MapSummary:
    values = {m: np.array([getattr(c, m) for c in checks], dtype=np.float64) for m in MEASURES}
    return MapSummary(
        len(checks),
        {m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for m, v in values.items()},
        {m: float(np.nanmin(v)) if np.isfinite(v).any() else float("nan") for m, v in values.items()},
    )
