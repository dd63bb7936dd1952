"""AV2 vector maps reduced to what a plot needs, with an on-disk cache (npz, never pickle).

Maps are parsed by av2 itself (``ArgoverseStaticMap.from_json``) and reduced to 2-D polylines in the
city frame: lane boundaries, lane centre lines, drivable-area polygons and pedestrian crossings.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trajemb.atomic import atomic_path
from trajemb.errors import DataError
from trajemb.paths import resolve_inside, safe_component
from trajemb.schema import FloatArray

if TYPE_CHECKING:
    from av2.map.map_api import ArgoverseStaticMap

log = logging.getLogger(__name__)

#: A reduced map is a few hundred kilobytes; refuse cache files that unpack to more than this, so a
#: crafted npz (a zip) cannot ask for gigabytes.
MAX_MAP_NPZ_BYTES = 512 * 1024 * 1024
#: AV2 map JSON files are a few megabytes; av2 parses them whole into Python objects.
MAX_MAP_JSON_BYTES = 256 * 1024 * 1024

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
    from av2.map.map_api import ArgoverseStaticMap  # lazily: av2's map API takes seconds to import

    map_json = Path(map_json)
    try:
        st = os.stat(map_json)
    except OSError:
        raise DataError(f"{map_json}: map file not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{map_json}: map file is not a regular file")
    if st.st_size > MAX_MAP_JSON_BYTES:
        raise DataError(f"{map_json}: map file of {st.st_size} bytes is larger than any AV2 map")
    try:
        static_map = ArgoverseStaticMap.from_json(map_json)
        geometry = _reduce(static_map)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{map_json}: map is not valid JSON ({exc})") from exc
    except RecursionError:
        raise DataError(f"{map_json}: map JSON is nested too deeply") from None
    except Exception as exc:
        # av2's parser and geometry code assume well-formed maps and fail on a malformed one with
        # whatever error the first bad value causes (KeyError, TypeError, AttributeError,
        # ZeroDivisionError, ...): any of them means "not an AV2 map", which is the input's fault.
        log.debug("map %s failed to parse", map_json, exc_info=True)
        raise DataError(
            f"{map_json}: map does not follow the AV2 map schema ({type(exc).__name__}: {exc})"
        ) from exc
    _check_geometry(geometry, map_json)
    return geometry


def _reduce(static_map: ArgoverseStaticMap) -> MapGeometry:
    boundaries: list[FloatArray] = []
    centerlines: list[FloatArray] = []
    for lane in static_map.vector_lane_segments.values():
        boundaries.append(_xy(lane.left_lane_boundary.xyz))
        boundaries.append(_xy(lane.right_lane_boundary.xyz))
        centerlines.append(_xy(static_map.get_lane_segment_centerline(lane.id)))
    areas = [_xy(da.xyz) for da in static_map.vector_drivable_areas.values()]
    crossings = [_xy(pc.polygon) for pc in static_map.vector_pedestrian_crossings.values()]
    return MapGeometry(boundaries, centerlines, areas, crossings)


def _xy(points: object) -> FloatArray:
    xyz = np.asarray(points, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 2:
        raise ValueError(f"polyline of shape {xyz.shape}, expected (P, 2 or 3)")
    return np.ascontiguousarray(xyz[:, :2])


def _check_geometry(geometry: MapGeometry, source: Path) -> None:
    for kind in _KINDS:
        for polyline in getattr(geometry, kind):
            if polyline.ndim != 2 or polyline.shape[1] != 2:
                raise DataError(f"{source}: {kind} polyline of shape {polyline.shape}, expected (P, 2)")
            if not np.isfinite(polyline).all():
                raise DataError(f"{source}: {kind} polyline with NaN or infinite coordinates")


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


#: What numpy and zipfile raise on a damaged npz: bad headers, bad zip structure, corrupt deflate
#: streams (zlib.error), unsupported or encrypted members (NotImplementedError, RuntimeError).
_NPZ_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)


def read_map_geometry(path: Path) -> MapGeometry:
    """Read an npz written by ``save_map_geometry`` (no pickle), checking every array it holds.

    Raises:
        DataError: not a regular file, not an npz, too large unpacked, missing arrays, wrong dtypes or
            shapes, offsets that do not cut the points into polylines, non-finite coordinates.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: not a regular file")
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_MAP_NPZ_BYTES:
            raise DataError(
                f"{path}: map geometry unpacks to {unpacked} bytes, more than {MAX_MAP_NPZ_BYTES}"
            )
        with np.load(path, allow_pickle=False) as data:
            kinds: dict[str, list[FloatArray]] = {}
            for kind in _KINDS:
                points, offsets = data[f"{kind}_points"], data[f"{kind}_offsets"]
                kinds[kind] = _split_polylines(path, kind, points, offsets)
    except _NPZ_ERRORS as exc:
        raise DataError(f"{path}: not a trajemb map geometry file ({type(exc).__name__}: {exc})") from exc
    return MapGeometry(**kinds)


def _split_polylines(path: Path, kind: str, points: np.ndarray, offsets: np.ndarray) -> list[FloatArray]:
    if points.dtype != np.float64 or points.ndim != 2 or points.shape[1] != 2:
        raise DataError(f"{path}: {kind}_points of {points.dtype} {points.shape}, expected float64 (P, 2)")
    if not np.isfinite(points).all():
        raise DataError(f"{path}: {kind}_points has NaN or infinite coordinates")
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or offsets.size < 1:
        raise DataError(f"{path}: {kind}_offsets of {offsets.dtype} {offsets.shape}, expected int (K+1,)")
    if offsets[0] != 0 or offsets[-1] != len(points) or (np.diff(offsets) < 0).any():
        raise DataError(f"{path}: {kind}_offsets do not cut {len(points)} points into polylines")
    return [points[a:b] for a, b in itertools.pairwise(offsets.tolist())]


MAP_PREFIX = "log_map_archive_"


def map_key_of(map_json: Path) -> str:
    """``log_map_archive_<key>.json`` -> ``<key>`` (the ``map_key`` column of the trajectory table)."""
    return Path(map_json).stem.removeprefix(MAP_PREFIX)


class MapCache:
    """Reduced maps on disk as ``<map_key>.npz``: AV2 map keys (scenario or log ids) are unique.

    Map keys come from files (a table's ``map_key`` column, map file names): each must be a plain file
    name, and the cache file must resolve inside the cache folder (``trajemb.paths``).
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path_of_key(self, map_key: str) -> Path:
        """The cache file of ``map_key``; refuses keys that are not plain names or lead out of the cache."""
        safe_component(map_key, "map key")
        return resolve_inside(self.cache_dir, f"{map_key}.npz")

    def path_for(self, map_json: Path) -> Path:
        return self.path_of_key(map_key_of(map_json))

    def read(self, map_key: str) -> MapGeometry:
        """A map already in the cache, by key."""
        path = self.path_of_key(map_key)
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
