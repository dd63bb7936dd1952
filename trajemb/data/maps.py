"""AV2 vector maps reduced to what a plot needs, with an on-disk cache (npz, never pickle).

Maps are reduced to 2-D polylines in the city frame: lane boundaries, lane centre lines (av2's
``get_lane_segment_centerline``), drivable-area polygons and pedestrian crossings. ``load_map_geometry``
parses a file with av2 itself (``ArgoverseStaticMap.from_json``); ``prepare --maps-dir`` reduces the file
it has already decoded for the lane graph (``map_geometry_from_json``: the same arrays, bit for bit,
at a tenth of the cost; maps outside av2's plain schema still go through av2).
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
from typing import TYPE_CHECKING, Any

import numpy as np

from trajemb.core.atomic import atomic_path
from trajemb.core.errors import DataError
from trajemb.core.paths import resolve_inside, safe_component
from trajemb.data.schema import FloatArray

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


def map_geometry_from_json(data: dict[str, Any], map_json: Path) -> MapGeometry:
    """``load_map_geometry`` of a map already decoded (``trajemb.data.lanes.read_map_json``, which ``prepare``
    reads once for the lane graph and the map cache alike): the same arrays, without av2's object model.

    Only maps in av2's schema exactly as its parser reads them take this path (every key av2 reads
    present, numeric points, known lane and marking types, unique ids); any other map is parsed by av2
    itself, so av2 still decides what a map may be and what the message says.

    Raises:
        DataError: as ``load_map_geometry``.
    """
    geometry = _reduce_json(data, Path(map_json))
    if geometry is None:
        return load_map_geometry(map_json)
    _check_geometry(geometry, Path(map_json))
    return geometry


_LANE_KEYS = (
    "id",
    "lane_type",
    "right_lane_boundary",
    "left_lane_boundary",
    "right_lane_mark_type",
    "left_lane_mark_type",
    "right_neighbor_id",
    "left_neighbor_id",
    "predecessors",
    "successors",
    "is_intersection",
)
_LANE_TYPES = frozenset(("VEHICLE", "BIKE", "BUS"))
_MARK_TYPES = frozenset(
    (
        "DASH_SOLID_YELLOW",
        "DASH_SOLID_WHITE",
        "DASHED_WHITE",
        "DASHED_YELLOW",
        "DOUBLE_SOLID_YELLOW",
        "DOUBLE_SOLID_WHITE",
        "DOUBLE_DASH_YELLOW",
        "DOUBLE_DASH_WHITE",
        "SOLID_YELLOW",
        "SOLID_WHITE",
        "SOLID_DASH_WHITE",
        "SOLID_DASH_YELLOW",
        "SOLID_BLUE",
        "NONE",
        "UNKNOWN",
    )
)


def _xyz(points: object) -> FloatArray | None:
    """(P, 3) of a non-empty list of ``{"x", "y", "z"}`` numbers, as av2's ``Polyline.xyz``; None if
    it is anything else."""
    if not isinstance(points, list) or not points:
        return None
    flat: list[float] = []
    for p in points:
        if not isinstance(p, dict):
            return None
        try:
            x, y, z = p["x"], p["y"], p["z"]
        except KeyError:
            return None
        if not (type(x) in (int, float) and type(y) in (int, float) and type(z) in (int, float)):
            return None
        flat += (x, y, z)
    try:
        return np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    except OverflowError:  # an integer beyond float range: av2 decides
        return None


def _unique_ids(items: list[dict[str, Any]]) -> bool:
    ids = [item["id"] for item in items]
    return all(type(i) in (int, str) for i in ids) and len(set(ids)) == len(ids)


def _reduce_json(data: dict[str, Any], map_json: Path) -> MapGeometry | None:
    """What ``_reduce(ArgoverseStaticMap.from_json(map_json))`` gives, from the decoded file; None where
    the map is not plainly in av2's schema."""
    if MAP_PREFIX not in map_json.stem:
        return None
    sections = [data.get(k) for k in ("drivable_areas", "lane_segments", "pedestrian_crossings")]
    if not all(isinstance(v, dict) for v in sections):
        return None
    areas_json, lanes_json, crossings_json = (list(v.values()) for v in sections)  # type: ignore[union-attr]
    for items, keys in (
        (areas_json, ("id", "area_boundary")),
        (lanes_json, _LANE_KEYS),
        (crossings_json, ("id", "edge1", "edge2")),
    ):
        if not all(isinstance(item, dict) and all(k in item for k in keys) for item in items):
            return None
        if not _unique_ids(items):
            return None
    boundaries: list[FloatArray] = []
    lefts: list[FloatArray] = []
    rights: list[FloatArray] = []
    for lane in lanes_json:
        if not isinstance(lane["lane_type"], str) or lane["lane_type"] not in _LANE_TYPES:
            return None
        marks = (lane["left_lane_mark_type"], lane["right_lane_mark_type"])
        if not all(isinstance(m, str) and m in _MARK_TYPES for m in marks):
            return None
        left, right = _xyz(lane["left_lane_boundary"]), _xyz(lane["right_lane_boundary"])
        if left is None or right is None:
            return None
        boundaries += [left[:, :2], right[:, :2]]
        lefts.append(left)
        rights.append(right)
    areas = []
    for area in areas_json:
        xyz = _xyz(area["area_boundary"])
        if xyz is None:
            return None
        areas.append(np.concatenate([xyz, xyz[:1]])[:, :2])
    crossings = []
    for crossing in crossings_json:
        edge1, edge2 = _xyz(crossing["edge1"]), _xyz(crossing["edge2"])
        if edge1 is None or edge2 is None or len(edge1) != 2 or len(edge2) != 2:
            return None
        crossings.append(np.stack([edge1[0], edge1[1], edge2[1], edge2[0], edge1[0]])[:, :2])
    centerlines = [np.ascontiguousarray(c[:, :2]) for c in midpoint_lines(lefts, rights)]
    return MapGeometry(
        [np.ascontiguousarray(b) for b in boundaries],
        centerlines,
        [np.ascontiguousarray(a) for a in areas],
        [np.ascontiguousarray(c) for c in crossings],
    )


def midpoint_lines(lefts: list[FloatArray], rights: list[FloatArray]) -> list[FloatArray]:
    """av2's ``compute_midpoint_line(left, right, 10)`` of many lanes at once, to the last bit (tests pin
    it): both boundaries resampled at 10 equal arc-length steps (``interp_arc``) and averaged.

    Batched over lanes: the per-boundary sums stay per boundary (numpy's pairwise sum), cumulative
    sums and bin searches run row by row on padded arrays. Lanes av2 treats specially (a boundary of
    one point: the pivot arc) or whose boundaries repeat a point go through av2's function itself.
    """
    from av2.geometry.interpolate import NUM_CENTERLINE_INTERP_PTS, compute_midpoint_line

    out: list[FloatArray | None] = [None] * len(lefts)
    bounds = [b for pair in zip(lefts, rights, strict=True) for b in pair]  # left, right of each lane
    counts = np.asarray([len(b) for b in bounds], dtype=np.int64)
    if len(bounds) and (counts >= 2).all():
        points = np.concatenate(bounds)  # (P, 3)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        chord_start = np.flatnonzero(np.isin(np.arange(len(points)), first + counts - 1, invert=True))
        chord = np.linalg.norm(points[chord_start + 1] - points[chord_start], axis=1)  # as np.diff
        chord_first = first - np.arange(len(bounds))  # chords of boundary b: [chord_first[b], + counts - 1)
        total = np.asarray(
            [chord[c : c + n - 1].sum() for c, n in zip(chord_first.tolist(), counts.tolist(), strict=True)]
        )
        per_chord_total = np.repeat(total, counts - 1)
        usable = np.isfinite(per_chord_total) & (per_chord_total > 0) & (chord > 0) & np.isfinite(chord)
        good_bound = (
            np.bincount(np.repeat(np.arange(len(bounds)), counts - 1), ~usable, minlength=len(bounds)) == 0
        )
        chordlen = chord / per_chord_total
        width = int(counts.max())
        grid = np.zeros((len(bounds), width - 1))
        col = np.arange(len(chord)) - np.repeat(chord_first, counts - 1)
        grid[np.repeat(np.arange(len(bounds)), counts - 1), col] = chordlen
        cumarc = np.zeros((len(bounds), width))
        np.cumsum(grid, axis=1, out=cumarc[:, 1:])
        cumarc[np.arange(width)[None, :] >= counts[:, None]] = np.inf  # past each boundary's end
        t = NUM_CENTERLINE_INTERP_PTS
        eq = np.linspace(0, 1, t)
        tbins = (cumarc[:, None, :] <= eq[None, :, None]).sum(axis=2)  # np.digitize: (B, t)
        tbins[(tbins <= 0) | (eq <= 0)[None, :]] = 1
        last = np.broadcast_to((counts - 1)[:, None], tbins.shape)
        too_far = (tbins >= counts[:, None]) | (eq >= 1)[None, :]
        tbins[too_far] = last[too_far]
        rows = np.arange(len(bounds))[:, None]
        s = np.divide(eq[None, :] - cumarc[rows, tbins - 1], grid[rows, tbins - 1])
        anchor_idx = first[:, None] + tbins - 1
        anchors = points[anchor_idx]
        offsets = (points[anchor_idx + 1] - anchors) * s[..., None]
        interp = anchors + offsets  # (B, t, 3)
        for lane in range(len(lefts)):
            if good_bound[2 * lane] and good_bound[2 * lane + 1]:
                out[lane] = (interp[2 * lane] + interp[2 * lane + 1]) / 2.0
    for lane, line in enumerate(out):
        if line is None:
            out[lane] = compute_midpoint_line(lefts[lane], rights[lane], NUM_CENTERLINE_INTERP_PTS)[0]
    return [line for line in out if line is not None]


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
    name, and the cache file must resolve inside the cache folder (``trajemb.core.paths``).
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

    def get(self, map_json: Path, decoded: dict[str, Any] | None = None) -> MapGeometry:
        """Reduced geometry of ``map_json``, parsed once and then read from the cache; ``decoded`` is
        the file already decoded (``map_geometry_from_json``), if the caller has it."""
        if not Path(map_json).is_file():
            raise DataError(f"{map_json}: map file not found")
        cached = self.path_for(map_json)
        if cached.exists():
            return read_map_geometry(cached)
        geometry = (
            load_map_geometry(map_json) if decoded is None else map_geometry_from_json(decoded, map_json)
        )
        save_map_geometry(geometry, cached)
        return geometry
