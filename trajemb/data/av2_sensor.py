"""Reader for AV2 sensor-dataset logs: cuboid tracks in the ego frame -> city-frame ``TrackSet``.

Each annotation's centre is moved to the city frame with the ego pose of the same ``timestamp_ns``
(``p_city = R_city_ego @ p_ego + t_city_ego``), yaw from the composed rotation. Sweeps (~10 Hz) become
steps of the 10 Hz grid by rounding their offset from the first sweep, so a dropped sweep is a gap, not
a silent time warp. Logs without an ``EGO_VEHICLE`` cuboid get an ``ego`` track from the poses.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
from av2.geometry.geometry import quat_to_mat

from trajemb.core.errors import DataError
from trajemb.core.paths import safe_component
from trajemb.data.av2_motion import is_hidden_or_temporary
from trajemb.data.schema import (
    MAX_GRID_CELLS,
    MAX_TRACK_STEPS,
    STEP_S,
    FloatArray,
    Source,
    TrackCategory,
    TrackSet,
    repeat_str,
)

POSES_FILE = "city_SE3_egovehicle.feather"
ANNOTATION_FILES = ("annotations.feather", "annotations_with_ego.feather")
EGO_CATEGORY = "EGO_VEHICLE"
EGO_TRACK_ID = "ego"

#: AV2 sensor-dataset annotation category -> AV2 motion-forecasting object type.
OBJECT_TYPE_FROM_CATEGORY: dict[str, str] = {
    **dict.fromkeys(
        [
            "REGULAR_VEHICLE",
            "LARGE_VEHICLE",
            "BOX_TRUCK",
            "TRUCK",
            "TRUCK_CAB",
            "VEHICULAR_TRAILER",
            "RAILED_VEHICLE",
            EGO_CATEGORY,
        ],
        "vehicle",
    ),
    **dict.fromkeys(["BUS", "ARTICULATED_BUS", "SCHOOL_BUS"], "bus"),
    **dict.fromkeys(["MOTORCYCLE", "MOTORCYCLIST"], "motorcyclist"),
    **dict.fromkeys(["BICYCLE", "BICYCLIST", "WHEELED_RIDER", "WHEELED_DEVICE"], "cyclist"),
    **dict.fromkeys(["PEDESTRIAN", "STROLLER", "WHEELCHAIR", "OFFICIAL_SIGNALER"], "pedestrian"),
    **dict.fromkeys(["DOG", "ANIMAL"], "unknown"),
}
#: Everything else in the 30-class taxonomy (bollards, cones, signs, ...) does not move.
STATIC_OBJECT_TYPE = "static"

#: City code in sensor-log map file names -> city name as written in motion-forecasting parquet.
CITY_FROM_CODE: dict[str, str] = {
    "ATX": "austin",
    "DTW": "dearborn",
    "MIA": "miami",
    "PAO": "palo-alto",
    "PIT": "pittsburgh",
    "WDC": "washington-dc",
}

_Check = Callable[[pa.DataType], bool]


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t))


_POSE_COLUMNS: dict[str, tuple[str, _Check]] = {
    "timestamp_ns": ("integer", pa.types.is_integer),
    **{c: ("number", _is_number) for c in ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")},
}
_ANNOTATION_COLUMNS: dict[str, tuple[str, _Check]] = {
    **_POSE_COLUMNS,
    "track_uuid": ("string", _is_string),
    "category": ("string", _is_string),
}
#: Entries that make a folder a sensor log; one without poses is still found, and reported as bad.
_LOG_ENTRIES = (POSES_FILE, *ANNOTATION_FILES, "map")


def _is_log(folder: Path) -> bool:
    return any((folder / name).exists() for name in _LOG_ENTRIES)


def find_sensor_logs(root: Path) -> list[Path]:
    """Log folders under ``root`` (``root`` itself if it is one): those holding ego poses,
    annotations or a map. A log that lacks its poses is returned too, so that reading it reports it
    instead of leaving it out unnoticed. Hidden and temporary folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if _is_log(root):
        return [root]
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden_or_temporary(p.name))
    except OSError as exc:
        raise DataError(f"{root}: cannot list the folder ({exc.strerror})") from exc
    logs = [p for p in children if _is_log(p)]
    if not logs:
        raise DataError(f"{root}: no AV2 sensor logs (expected <log_id>/{POSES_FILE} inside)")
    return logs


def sensor_log_map_path(log_dir: Path) -> Path:
    """The vector map JSON of a sensor log (``map/log_map_archive_*.json``)."""
    maps = sorted((Path(log_dir) / "map").glob("log_map_archive_*.json"))
    if len(maps) != 1:
        raise DataError(f"{log_dir}: expected one map/log_map_archive_*.json, found {len(maps)}")
    return maps[0]


def _read_feather(path: Path, columns: dict[str, tuple[str, _Check]], what: str) -> pa.Table:
    """The named columns of a feather file, each checked for type and nulls."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} missing") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: the {what} is not a regular file")
    try:
        table = feather.read_table(path, memory_map=False)
        table.validate(full=True)  # feather is not checked on read; corrupt strings would fail later
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable feather file ({exc})") from exc
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    table = table.select(list(columns))
    for name, (kind, is_ok) in columns.items():
        field_type = table.schema.field(name).type
        if pa.types.is_dictionary(field_type):
            field_type = field_type.value_type
        if not is_ok(field_type):
            raise DataError(f"{path}: column {name} has type {field_type}, expected {kind}")
        if table.column(name).null_count:
            raise DataError(f"{path}: {table.column(name).null_count} null value(s) in column {name}")
    if table.num_rows == 0:
        raise DataError(f"{path}: the {what} has no rows")
    return table


def _rotation_and_translation(table: pa.Table) -> tuple[FloatArray, FloatArray]:
    quat_wxyz = np.stack([_floats(table, c) for c in ("qw", "qx", "qy", "qz")], axis=-1)
    t_xyz = np.stack([_floats(table, c) for c in ("tx_m", "ty_m", "tz_m")], axis=-1)
    return quat_to_mat(quat_wxyz), t_xyz


def _floats(table: pa.Table, column: str) -> FloatArray:
    return np.asarray(table.column(column).to_numpy(), dtype=np.float64)


def read_sensor_log_tracks(log_dir: Path) -> TrackSet:
    """Read one AV2 sensor log into a dense city-frame ``TrackSet`` (all categories ``unscored``).

    Raises:
        DataError: missing or unreadable files, annotation timestamps without an ego pose,
            non-finite values.
    """
    log_dir = Path(log_dir)
    log_id = safe_component(log_dir.name, "sensor log id")
    ann_path = next((log_dir / n for n in ANNOTATION_FILES if (log_dir / n).exists()), None)
    if ann_path is None:
        raise DataError(f"{log_dir}: no {' or '.join(ANNOTATION_FILES)}")
    if not (log_dir / POSES_FILE).exists():
        raise DataError(f"{log_dir}: no {POSES_FILE} (ego poses); the log cannot be placed in the city frame")
    poses = _read_feather(log_dir / POSES_FILE, _POSE_COLUMNS, "ego pose file")
    ann = _read_feather(ann_path, _ANNOTATION_COLUMNS, "annotation file")
    map_path = sensor_log_map_path(log_dir)
    map_key = map_path.stem.removeprefix("log_map_archive_")
    city_code = map_key.split("____")[-1].split("_")[0]
    city = CITY_FROM_CODE.get(city_code, city_code.lower())

    pose_ts = poses.column("timestamp_ns").to_numpy().astype(np.int64)
    order = np.argsort(pose_ts, kind="stable")
    pose_ts = pose_ts[order]
    R_city_ego, t_city_ego = _rotation_and_translation(poses.take(pa.array(order)))
    if not (np.isfinite(R_city_ego).all() and np.isfinite(t_city_ego).all()):
        raise DataError(f"{log_dir / POSES_FILE}: ego poses with NaN or infinite values")

    ann_ts = ann.column("timestamp_ns").to_numpy().astype(np.int64)
    span_steps = (int(ann_ts.max()) - int(ann_ts.min())) / (STEP_S * 1e9)
    if span_steps >= MAX_TRACK_STEPS:
        raise DataError(
            f"{ann_path}: annotations span {span_steps:.3g} steps of {STEP_S} s, more than {MAX_TRACK_STEPS}; "
            "timestamps are not in nanoseconds or the log is broken"
        )
    pose_idx = np.clip(np.searchsorted(pose_ts, ann_ts), 0, pose_ts.size - 1)
    if not np.array_equal(pose_ts[pose_idx], ann_ts):
        missing = int((pose_ts[pose_idx] != ann_ts).sum())
        raise DataError(f"{log_dir}: {missing} annotation(s) have no ego pose with the same timestamp_ns")

    R_ego_obj, t_ego_obj = _rotation_and_translation(ann)
    xyz_city = np.einsum("nij,nj->ni", R_city_ego[pose_idx], t_ego_obj) + t_city_ego[pose_idx]
    R_city_obj = R_city_ego[pose_idx] @ R_ego_obj
    yaw_city = np.arctan2(R_city_obj[:, 1, 0], R_city_obj[:, 0, 0])
    if not np.isfinite(xyz_city).all():
        raise DataError(f"{log_dir}: non-finite cuboid positions after the city transform")

    track_uuid = np.asarray(ann.column("track_uuid").to_numpy(zero_copy_only=False), dtype=np.str_)
    for track_id in np.unique(track_uuid).tolist():
        safe_component(track_id, f"{ann_path}: track_uuid")
    category = np.asarray(ann.column("category").to_numpy(zero_copy_only=False), dtype=np.str_)
    sweep_ts = np.unique(ann_ts)
    has_ego = bool((category == EGO_CATEGORY).any())
    if not has_ego:
        ego_idx = np.searchsorted(pose_ts, sweep_ts)
        track_uuid = np.concatenate([track_uuid, repeat_str(EGO_TRACK_ID, sweep_ts.size)])
        category = np.concatenate([category, repeat_str(EGO_CATEGORY, sweep_ts.size)])
        xyz_city = np.concatenate([xyz_city, t_city_ego[ego_idx]])
        ego_R = R_city_ego[ego_idx]
        yaw_city = np.concatenate([yaw_city, np.arctan2(ego_R[:, 1, 0], ego_R[:, 0, 0])])
        ann_ts = np.concatenate([ann_ts, sweep_ts])

    step = np.rint((ann_ts - sweep_ts[0]) / (STEP_S * 1e9)).astype(np.int64)
    num_steps = int(step.max()) + 1
    track_ids, first_row, track_of_row = np.unique(track_uuid, return_index=True, return_inverse=True)
    if track_ids.size * num_steps > MAX_GRID_CELLS:
        raise DataError(
            f"{ann_path}: {track_ids.size} tracks x {num_steps} steps is more than {MAX_GRID_CELLS} states"
        )
    flat = track_of_row * num_steps + step
    # Two annotations of one track rounding to one step would be a broken log; keep the last.
    xy = np.full((track_ids.size * num_steps, 2), np.nan)
    xy[flat] = xyz_city[:, :2]
    heading = np.full(track_ids.size * num_steps, np.nan)
    heading[flat] = yaw_city
    valid = np.zeros(track_ids.size * num_steps, dtype=bool)
    valid[flat] = True
    object_types = np.asarray(
        [OBJECT_TYPE_FROM_CATEGORY.get(c, STATIC_OBJECT_TYPE) for c in category[first_row]], dtype=np.str_
    )
    return TrackSet(
        scenario_id=log_id,
        city=city,
        map_key=map_key,
        source=Source.AV2_SENSOR,
        track_ids=track_ids.astype(np.str_),
        object_types=object_types,
        categories=repeat_str(TrackCategory.UNSCORED.value, track_ids.size),
        xy_city=xy.reshape(track_ids.size, num_steps, 2),
        heading_rad=heading.reshape(track_ids.size, num_steps),
        valid=valid.reshape(track_ids.size, num_steps),
    )
