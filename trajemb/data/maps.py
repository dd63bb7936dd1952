"""AV2 vector maps reduced to what a plot needs, with an on-disk cache (npz, never pickle).

Maps are parsed by av2 itself (``ArgoverseStaticMap.from_json``) and reduced to 2-D polylines in the
city frame: lane boundaries, lane centre lines, drivable-area polygons and pedestrian crossings.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from av2.map.map_api import ArgoverseStaticMap

from trajemb.atomic import atomic_path
from trajemb.errors import DataError
from trajemb.schema import FloatArray

_KINDS = ("lane_boundaries", "lane_centerlines", "drivable_areas", "crossings")


@dataclass(frozen=True)
class MapGeometry:
    """Polylines (each (P, 2), metres, city frame) grouped by kind."""

    lane_boundaries: list[FloatArray]
    lane_centerlines: list[FloatArray]
    drivable_areas: list[FloatArray]  # closed polygons (first point repeated at the end)
    crossings: list[FloatArray]  # closed polygons

    def bounds_xy(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) over every polyline."""
        pts = np.concatenate([p for kind in _KINDS for p in getattr(self, kind)] or [np.zeros((1, 2))])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def load_map_geometry(map_json: Path) -> MapGeometry:
    """Parse an AV2 ``log_map_archive_*.json`` with av2 and reduce it to plot geometry.

    Raises:
        DataError: missing file, invalid JSON, or a map av2 cannot parse.
    """
    map_json = Path(map_json)
    if not map_json.is_file():
        raise DataError(f"{map_json}: map file not found")
    try:
        static_map = ArgoverseStaticMap.from_json(map_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{map_json}: map is not valid JSON ({exc})") from exc
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"{map_json}: map does not follow the AV2 map schema ({type(exc).__name__}: {exc})"
        ) from exc
    boundaries: list[FloatArray] = []
    centerlines: list[FloatArray] = []
    for lane in static_map.vector_lane_segments.values():
        boundaries.append(lane.left_lane_boundary.xyz[:, :2].astype(np.float64))
        boundaries.append(lane.right_lane_boundary.xyz[:, :2].astype(np.float64))
        centerlines.append(static_map.get_lane_segment_centerline(lane.id)[:, :2].astype(np.float64))
    areas = [da.xyz[:, :2].astype(np.float64) for da in static_map.vector_drivable_areas.values()]
    crossings = [
        pc.polygon[:, :2].astype(np.float64) for pc in static_map.vector_pedestrian_crossings.values()
    ]
    return MapGeometry(boundaries, centerlines, areas, crossings)


def save_map_geometry(geometry: MapGeometry, path: Path) -> None:
    """Write ``geometry`` as one npz (points + offsets per kind), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for kind in _KINDS:
        polylines: list[FloatArray] = getattr(geometry, kind)
        lengths = np.asarray([len(p) for p in polylines], dtype=np.int64)
        arrays[f"{kind}_points"] = (
            np.concatenate(polylines).astype(np.float64) if polylines else np.zeros((0, 2))
        )
        arrays[f"{kind}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]


def read_map_geometry(path: Path) -> MapGeometry:
    """Read an npz written by ``save_map_geometry`` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            kinds: dict[str, list[FloatArray]] = {}
            for kind in _KINDS:
                points, offsets = data[f"{kind}_points"], data[f"{kind}_offsets"]
                kinds[kind] = [points[a:b] for a, b in itertools.pairwise(offsets)]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a trajemb map geometry file ({exc})") from exc
    return MapGeometry(**kinds)


MAP_PREFIX = "log_map_archive_"


def map_key_of(map_json: Path) -> str:
    """``log_map_archive_<key>.json`` -> ``<key>`` (the ``map_key`` column of the trajectory table)."""
    return Path(map_json).stem.removeprefix(MAP_PREFIX)


class MapCache:
    """Reduced maps on disk as ``<map_key>.npz``: AV2 map keys (scenario or log ids) are unique."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path_for(self, map_json: Path) -> Path:
        return self.cache_dir / f"{map_key_of(map_json)}.npz"

    def read(self, map_key: str) -> MapGeometry:
        """A map already in the cache, by key."""
        path = self.cache_dir / f"{map_key}.npz"
        if not path.is_file():
            raise DataError(f"{path}: map {map_key} is not in the map cache")
        return read_map_geometry(path)

    def get(self, map_json: Path) -> MapGeometry:
        """Reduced geometry of ``map_json``, parsed once and then read from the cache."""
        if not Path(map_json).is_file():
            raise DataError(f"{map_json}: map file not found")
        cached = self.path_for(map_json)
        if cached.exists():
            return read_map_geometry(cached)
        geometry = load_map_geometry(map_json)
        save_map_geometry(geometry, cached)
        return geometry
