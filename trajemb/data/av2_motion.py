"""Reader for Argoverse 2 motion-forecasting scenarios (``<id>/scenario_<id>.parquet``).

Columns are read with pyarrow and scattered onto a dense (tracks, steps) grid with numpy: no Python
object per state, which is what makes this many times faster than av2's
``load_argoverse_scenario_parquet`` while reading the same files.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trajemb.core.errors import DataError
from trajemb.core.paths import MAX_COMPONENT_BYTES, safe_component
from trajemb.data.schema import CATEGORY_FROM_AV2, MAX_GRID_CELLS, MAX_TRACK_STEPS, Source, TrackSet

SCENARIO_GLOB = "scenario_*.parquet"
MAP_PREFIX = "log_map_archive_"
#: Key in the parquet metadata of every scenario ``trajemb synth`` writes: the file itself says it is
#: synthetic, wherever it is copied.
SYNTH_PARQUET_KEY = b"trajemb_synth"

#: Column -> predicate on its arrow type. ``map_id`` / ``slice_id`` / velocities are optional.
REQUIRED_COLUMNS: dict[str, tuple[str, object]] = {
    "track_id": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "object_type": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "object_category": ("integer", pa.types.is_integer),
    "timestep": ("integer", pa.types.is_integer),
    "position_x": ("floating point", pa.types.is_floating),
    "position_y": ("floating point", pa.types.is_floating),
    "heading": ("floating point", pa.types.is_floating),
    "scenario_id": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "num_timestamps": ("integer", pa.types.is_integer),
    "city": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
}


def is_hidden_or_temporary(name: str) -> bool:
    """Names discovery skips: hidden entries (``.git``, the temporaries of an interrupted write, which
    ``trajemb.core.atomic`` names ``.<name>.<pid>...tmp``) and ``*.tmp`` / ``*.partial`` leftovers."""
    return name.startswith(".") or name.endswith((".tmp", ".partial"))


def find_scenario_files(root: Path) -> list[Path]:
    """Every ``scenario_*.parquet`` under ``root`` (a split folder, the dataset root or one scenario).

    Hidden and temporary folders and files below ``root`` are skipped (see ``is_hidden_or_temporary``):
    an interrupted ``trajemb synth`` leaves a hidden folder of partial scenarios beside its output.
    Symbolic links to folders are not followed.

    Raises:
        DataError: ``root`` does not exist or holds no scenario file.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        if root.is_file() and root.match(SCENARIO_GLOB):
            return [root]
        raise DataError(f"{root}: expected a folder of AV2 scenarios or a scenario_<id>.parquet file")
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=_raise_walk_error):
        dirs[:] = [d for d in dirs if not is_hidden_or_temporary(d)]
        files += [
            Path(folder) / n
            for n in names
            if fnmatch.fnmatchcase(n, SCENARIO_GLOB) and not is_hidden_or_temporary(n)
        ]
    files.sort()
    if not files:
        raise DataError(
            f"{root}: no AV2 scenario files (expected <scenario_id>/scenario_<scenario_id>.parquet inside)"
        )
    return files


def _raise_walk_error(exc: OSError) -> None:
    raise DataError(f"{exc.filename}: cannot list the folder ({exc.strerror})") from exc


def map_path_for(scenario_path: Path) -> Path:
    """The ``log_map_archive_<id>.json`` that sits beside a scenario parquet."""
    scenario_id = scenario_path.stem.removeprefix("scenario_")
    return scenario_path.with_name(f"{MAP_PREFIX}{scenario_id}.json")


_FLOAT_COLUMNS = ("position_x", "position_y", "heading")
#: String columns read as dictionaries: a few distinct values repeated on every row.
_DICTIONARY_COLUMNS = ["track_id", "object_type", "scenario_id", "city"]


def _read_columns(path: Path) -> tuple[pa.Table, bool]:
    """The required columns, and whether the file says it was written by ``trajemb synth``."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader forever
            raise DataError(f"{path}: not a regular file")
        # No pre_buffer: for files this small it doubles the cost of opening them.
        parquet = pq.ParquetFile(path, read_dictionary=_DICTIONARY_COLUMNS)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: undecodable footer strings
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise DataError(f"{path}: missing AV2 scenario column(s) {', '.join(missing)}")
    for name, (kind, is_ok) in REQUIRED_COLUMNS.items():
        field_type = schema.field(name).type
        if pa.types.is_dictionary(field_type):
            field_type = field_type.value_type
        if not is_ok(field_type):  # type: ignore[operator]
            raise DataError(f"{path}: column {name} has type {field_type}, expected {kind}")
    try:
        table = parquet.read(columns=list(REQUIRED_COLUMNS), use_threads=False)
        table.validate(full=True)  # invalid UTF-8 or offsets would surface later as odd errors
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: parquet file is corrupt or truncated ({exc})") from exc
    # Null positions read as NaN and are reported as such below; null headings are "unknown".
    nulls = [
        f"{name} ({table.column(name).null_count})"
        for name in REQUIRED_COLUMNS
        if name not in _FLOAT_COLUMNS and table.column(name).null_count
    ]
    if nulls:
        raise DataError(f"{path}: null values in column(s) {', '.join(nulls)}")
    synthetic = SYNTH_PARQUET_KEY in (schema.metadata or {})
    return table, synthetic


def _dictionary(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row, distinct values as str) of a dictionary-encoded string column."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    codes = array.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    values = np.asarray(array.dictionary.to_numpy(zero_copy_only=False), dtype=np.str_)
    return codes, values


def _first_value(column: pa.ChunkedArray) -> str:
    codes, values = _dictionary(column.slice(0, 1))
    return str(values[codes[0]])


def read_scenario_tracks(path: Path, source: Source = Source.AV2_MOTION) -> TrackSet:
    """Read one AV2 scenario parquet into a dense ``TrackSet`` in the city frame.

    ``source`` is the caller's label; a file whose metadata says it was written by ``trajemb synth`` is
    labelled synthetic whatever the caller said.

    Raises:
        DataError: unreadable file, missing, mistyped or null columns, empty scenario, NaN or infinite
            positions, timesteps outside ``[0, num_timestamps)``, an implausible ``num_timestamps``,
            a (track, timestep) given twice, or ids that cannot be used as names.
    """
    path = Path(path)
    table, synthetic = _read_columns(path)
    if synthetic:
        source = Source.SYNTHETIC
    n_rows = table.num_rows
    if n_rows == 0:
        raise DataError(f"{path}: scenario has no rows")

    x = table.column("position_x").to_numpy()
    y = table.column("position_y").to_numpy()
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{path}: {int((~finite).sum())} position(s) are NaN or infinite "
            f"(first: track {table.column('track_id')[bad]}, timestep {table.column('timestep')[bad]})"
        )
    # Integer columns without nulls (checked above): numpy's min and max are arrow's.
    num_timestamps = table.column("num_timestamps").to_numpy()
    declared, fewest = int(num_timestamps.max()), int(num_timestamps.min())
    if fewest != declared:
        raise DataError(f"{path}: num_timestamps differs between rows ({fewest} to {declared})")
    if not 1 <= declared <= MAX_TRACK_STEPS:
        raise DataError(
            f"{path}: num_timestamps {declared} is outside [1, {MAX_TRACK_STEPS}] (AV2 scenarios have 110)"
        )
    timestep = table.column("timestep").to_numpy()
    first_step, last_step = int(timestep.min()), int(timestep.max())
    if first_step < 0 or last_step >= declared:
        raise DataError(f"{path}: timestep range [{first_step}, {last_step}] outside [0, {declared})")
    timestep = timestep.astype(np.int64)
    num_steps = declared

    track_codes, track_values = _dictionary(table.column("track_id"))
    # Sorted ids give a stable track order whatever the row order of the file.
    codes_used, first_row, track_of_row = np.unique(track_codes, return_index=True, return_inverse=True)
    track_ids = track_values[codes_used]
    for track_id in track_ids.tolist():
        # Plain numbers (AV2's ids but "AV", every id trajemb writes) are safe names: no full check.
        if not (track_id.isdecimal() and track_id.isascii() and len(track_id) <= MAX_COMPONENT_BYTES):
            safe_component(track_id, f"{path}: track_id")
    if track_ids.size * num_steps > MAX_GRID_CELLS:
        raise DataError(
            f"{path}: {track_ids.size} tracks x {num_steps} steps is more than {MAX_GRID_CELLS} states; "
            "not an AV2 scenario"
        )
    order = np.argsort(track_ids, kind="stable")
    track_ids, first_row = track_ids[order], first_row[order]
    track_of_row = np.argsort(order)[track_of_row]
    num_tracks = track_ids.size
    flat = track_of_row * num_steps + timestep
    valid = np.zeros(num_tracks * num_steps, dtype=bool)
    valid[flat] = True
    if int(valid.sum()) != n_rows:
        raise DataError(f"{path}: some (track_id, timestep) pairs appear more than once")

    xy = np.full((num_tracks * num_steps, 2), np.nan)
    xy[flat, 0] = x
    xy[flat, 1] = y
    heading = np.full(num_tracks * num_steps, np.nan)
    heading[flat] = table.column("heading").to_numpy()

    category_codes = table.column("object_category").to_numpy()[first_row]
    unknown = set(np.unique(category_codes).tolist()) - set(CATEGORY_FROM_AV2)
    if unknown:
        raise DataError(f"{path}: unknown object_category value(s) {sorted(unknown)}; expected 0..3")
    categories = np.asarray([CATEGORY_FROM_AV2[int(c)].value for c in category_codes], dtype=np.str_)
    type_codes, type_values = _dictionary(table.column("object_type"))
    object_types = type_values[type_codes[first_row]]

    scenario_id = safe_component(_first_value(table.column("scenario_id")), f"{path}: scenario_id")
    return TrackSet(
        scenario_id=scenario_id,
        city=_first_value(table.column("city")),
        map_key=path.stem.removeprefix("scenario_"),
        source=source,
        track_ids=track_ids.astype(np.str_),
        object_types=object_types,
        categories=categories,
        xy_city=xy.reshape(num_tracks, num_steps, 2),
        heading_rad=heading.reshape(num_tracks, num_steps),
        valid=valid.reshape(num_tracks, num_steps),
    )
