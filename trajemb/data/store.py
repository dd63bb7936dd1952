"""The trajectory table: every window with ids, labels and geometry, in one parquet file.

``xy_agent`` is a fixed-size list column of T*2 float32; the manifest (format version, window config,
sources, content hash) travels in the parquet file's key-value metadata under ``trajemb``. The content
hash covers every column (geometry, frames, ids, labels, speeds), so a table edited after ``trajemb
prepare`` wrote it is refused by ``read_table(verify=True)`` and by ``trajemb bundle``, and an index or
embedding built from a table names exactly which one. ``open_table_writer`` streams windows in as row
groups, so preparing all of AV2 never holds more than one chunk of windows in memory; the hash is the
same however the windows are chunked.

Tables of format 3 (before this hash) stay readable; their hash covers geometry, frames and ids only,
so their labels cannot be verified (``verify`` says so: re-run ``trajemb prepare``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trajemb.core.atomic import atomic_path
from trajemb.core.errors import DataError
from trajemb.core.jsonio import parse_json_object
from trajemb.core.paths import regular_file_size
from trajemb.data.schema import MAX_ABS_COORD_M, MAX_WINDOW_STEPS, Float32Array, WindowColumns

#: 3: ``true_manoeuvre`` column (synthetic ground truth) and the direction rules of ``trajemb.data.labels``
#: measured against it; tables of format 2 are refused with "re-run trajemb prepare".
#: 4: the content hash covers every column (format 3's covered geometry, frames and ids only).
FORMAT_VERSION = 4
#: Formats read (and verified as far as their hash goes).
READABLE_FORMATS = (3, 4)
METADATA_KEY = b"trajemb"

#: Per-window metadata columns, in table order.
META_COLUMNS: tuple[str, ...] = (
    "window_id",
    "source",
    "scenario_id",
    "track_id",
    "object_type",
    "category",
    "city",
    "map_key",
    "start_timestep",
    "origin_x_city_m",
    "origin_y_city_m",
    "theta_rad",
    "direction",
    "true_manoeuvre",
    "speed_bin",
    "mean_speed_mps",
    "heading_change_rad",
    "lateral_offset_m",
)


def window_ids(windows: WindowColumns) -> np.ndarray:
    """Stable, human-readable id of each window: ``source/scenario/track/start``."""
    parts = [windows.source, windows.scenario_id, windows.track_id, windows.start_timestep.astype(np.str_)]
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "/"), p)
    return np.asarray(out, dtype=np.str_)


class ContentHasher:
    """sha256 of a table's rows, fed Arrow batches in order; how they are chunked does not matter.

    Format 4 hashes every column of ``META_COLUMNS`` and ``xy_agent``: strings as their UTF-8 bytes and
    lengths (dictionary-encoded columns decoded first), integers as int64 and floats as float64
    little-endian, geometry as float32. Format 3 hashes geometry, frames and ids, as it always did.
    """

    def __init__(self, version: int = FORMAT_VERSION) -> None:
        if version not in READABLE_FORMATS:
            raise ValueError(f"no content hash for table format {version}")
        self.version = version
        self._v3 = {name: hashlib.sha256() for name in ("xy_agent", "origin", "theta", "ids")}
        self._columns = {name: ColumnHasher() for name in (*META_COLUMNS, "xy_agent")}

    def update(self, batch: pa.Table) -> None:
        """Hash the next rows (an Arrow table with the table's columns; others are ignored)."""
        if self.version == 3:
            xy = batch.column("xy_agent").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            origin = np.stack(
                [batch.column("origin_x_city_m").to_numpy(), batch.column("origin_y_city_m").to_numpy()],
                axis=1,
            )
            ids = batch.column("window_id").to_numpy(zero_copy_only=False)
            theta = batch.column("theta_rad").to_numpy()
            self._v3["xy_agent"].update(np.ascontiguousarray(xy, dtype="<f4").tobytes())
            self._v3["origin"].update(np.ascontiguousarray(origin, dtype="<f8").tobytes())
            self._v3["theta"].update(np.ascontiguousarray(theta, dtype="<f8").tobytes())
            self._v3["ids"].update("".join(f"{i}\n" for i in ids.tolist()).encode())
            return
        for name, hasher in self._columns.items():
            hasher.update(batch.column(name).combine_chunks())

    def hexdigest(self) -> str:
        if self.version == 3:
            return hashlib.sha256(b"".join(h.digest() for h in self._v3.values())).hexdigest()
        return hashlib.sha256(b"".join(h.digest() for h in self._columns.values())).hexdigest()


class ColumnHasher:
    """sha256 of one column's values, fed in order, independent of Arrow layout and chunking: strings as
    their lengths and UTF-8 bytes (in two streams, so that chunks concatenate), dictionary-encoded
    columns decoded, integers as int64, floats as float64, fixed-size lists of floats as float32."""

    def __init__(self) -> None:
        self._values = hashlib.sha256()
        self._lengths = hashlib.sha256()

    def update(self, array: pa.Array) -> ColumnHasher:
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        kind = array.type
        if pa.types.is_fixed_size_list(kind):
            values = array.flatten().to_numpy(zero_copy_only=False)
            self._values.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            array = array.cast(pa.large_string())
            first, count = array.offset, len(array)
            offsets = np.frombuffer(array.buffers()[1], dtype="<i8")[first : first + count + 1]
            self._lengths.update(np.diff(offsets).astype("<i8").tobytes())
            data = array.buffers()[2]
            if data is not None and count:
                self._values.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
        elif pa.types.is_integer(kind):
            values = array.to_numpy(zero_copy_only=False)
            self._values.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
        elif pa.types.is_floating(kind):
            values = array.to_numpy(zero_copy_only=False)
            self._values.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
        else:
            raise DataError(f"cannot hash a column of type {kind}")
        return self

    def digest(self) -> bytes:
        return hashlib.sha256(self._lengths.digest() + self._values.digest()).digest()

    def hexdigest(self) -> str:
        return self.digest().hex()


def column_digest(array: pa.Array | pa.ChunkedArray) -> str:
    """``ColumnHasher``'s digest of a whole column (hex)."""
    hasher = ColumnHasher()
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        hasher.update(chunk)
    return hasher.hexdigest()


def content_hash(table: pa.Table, version: int = FORMAT_VERSION) -> str:
    """The content hash of a whole table (hex), as ``ContentHasher`` computes it."""
    hasher = ContentHasher(version)
    hasher.update(table)
    return hasher.hexdigest()


@dataclass(frozen=True)
class TrajectoryTable:
    """A loaded table: N windows of T steps."""

    xy_agent: Float32Array  # (N, T, 2)
    meta: pd.DataFrame  # N rows, META_COLUMNS
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return int(self.xy_agent.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.xy_agent.shape[1])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_sha256"])

    def track_groups(self) -> np.ndarray:
        """(N,) int id of each window's track: windows of one track are near-duplicates, so retrieval
        and mining treat them as one group."""
        m = self.meta
        keys = (m["source"] + "/" + m["scenario_id"] + "/" + m["track_id"]).to_numpy(dtype=str)
        return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def _arrow_batch(windows: WindowColumns, ids: np.ndarray) -> pa.Table:
    T = windows.xy_agent.shape[1]
    flat = pa.array(np.ascontiguousarray(windows.xy_agent, dtype=np.float32).reshape(-1))
    columns: dict[str, pa.Array] = {
        "window_id": pa.array(ids),
        "source": pa.array(windows.source).dictionary_encode(),
        "scenario_id": pa.array(windows.scenario_id),
        "track_id": pa.array(windows.track_id),
        "object_type": pa.array(windows.object_type).dictionary_encode(),
        "category": pa.array(windows.category).dictionary_encode(),
        "city": pa.array(windows.city).dictionary_encode(),
        "map_key": pa.array(windows.map_key),
        "start_timestep": pa.array(windows.start_timestep.astype(np.int32)),
        "origin_x_city_m": pa.array(windows.origin_xy_city[:, 0]),
        "origin_y_city_m": pa.array(windows.origin_xy_city[:, 1]),
        "theta_rad": pa.array(windows.theta_rad),
        "direction": pa.array(windows.direction).dictionary_encode(),
        "true_manoeuvre": pa.array(windows.true_manoeuvre).dictionary_encode(),
        "speed_bin": pa.array(windows.speed_bin).dictionary_encode(),
        "mean_speed_mps": pa.array(windows.mean_speed_mps),
        "heading_change_rad": pa.array(windows.heading_change_rad),
        "lateral_offset_m": pa.array(windows.lateral_offset_m),
        "xy_agent": pa.FixedSizeListArray.from_arrays(flat, T * 2),
    }
    return pa.table(columns)


class TableWriter:
    """Writes a trajectory table batch by batch into buffered parquet row groups.

    Open it with ``open_table_writer``, which makes the file appear atomically and only on success.
    """

    #: Batches are buffered into row groups of at least this many windows (about 30 MB at T = 60):
    #: small row groups compress worse.
    ROW_GROUP_WINDOWS = 65_536

    def __init__(self, tmp: Path, path: Path, num_steps: int, manifest_extra: dict[str, Any]) -> None:
        self.path = path  # named in errors; the rows go to ``tmp`` until the table is complete
        self.num_steps = num_steps
        self.manifest_extra = manifest_extra
        self.manifest: dict[str, Any] = {}
        self._tmp = tmp
        self._hasher = ContentHasher()
        self._id_hashes: list[np.ndarray] = []
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_windows = 0

    @property
    def num_windows(self) -> int:
        return sum(len(h) for h in self._id_hashes)

    def write(self, windows: WindowColumns) -> None:
        if len(windows) == 0:
            return
        if windows.xy_agent.shape[1] != self.num_steps:
            raise DataError(
                f"{self.path}: batch of {windows.xy_agent.shape[1]} steps in a {self.num_steps}-step table"
            )
        ids = window_ids(windows)
        batch = _arrow_batch(windows, ids)
        self._pending.append(batch)
        self._pending_windows += len(windows)
        if self._pending_windows >= self.ROW_GROUP_WINDOWS:
            self._flush()
        self._hasher.update(batch)
        # Python's own 64-bit string hash (SipHash; salted per process, and every id is hashed in this
        # one): a third of the time of pandas' hash_array, which converts the ids to a string array first.
        self._id_hashes.append(np.fromiter(map(hash, ids.tolist()), dtype=np.int64, count=len(ids)))

    def _flush(self) -> None:
        """Write the buffered batches as one row group."""
        if not self._pending:
            return
        batch = pa.concat_tables(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, batch.schema, compression="zstd")
        self._writer.write_table(batch, row_group_size=len(batch))
        self._pending, self._pending_windows = [], 0

    def finish(self) -> None:
        """Flush, check ids, and write the manifest into the file's metadata."""
        self._flush()
        if self._writer is None:
            raise DataError(f"{self.path}: no windows to write")
        id_hashes = np.concatenate(self._id_hashes)
        if np.unique(id_hashes).size != id_hashes.size:
            raise DataError(f"{self.path}: duplicate window ids (the same scenario was given twice?)")
        self.manifest = {
            "format_version": FORMAT_VERSION,
            "num_windows": int(id_hashes.size),
            "num_steps": self.num_steps,
            "content_sha256": self._hasher.hexdigest(),
            **self.manifest_extra,
        }
        self._writer.add_key_value_metadata({METADATA_KEY: json.dumps(self.manifest).encode()})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@contextlib.contextmanager
def open_table_writer(
    path: Path, num_steps: int, manifest_extra: dict[str, Any] | None = None
) -> Iterator[TableWriter]:
    """``with open_table_writer(path, T) as w: w.write(batch)``; ``w.manifest`` is set afterwards.

    Nothing appears at ``path`` unless the block ends without an exception and at least one window
    was written; window ids must be unique across all batches.
    """
    with atomic_path(Path(path), guard=True) as tmp:
        writer = TableWriter(tmp, Path(path), num_steps, manifest_extra or {})
        try:
            yield writer
            writer.finish()
        finally:
            writer.close()


def write_table(windows: WindowColumns, path: Path, manifest_extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``windows`` to ``path`` (parquet) atomically; returns the manifest that was embedded."""
    with open_table_writer(path, windows.xy_agent.shape[1], manifest_extra) as writer:
        writer.write(windows)
    return writer.manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a table without reading its rows, with its fields checked.

    Raises:
        DataError: not a parquet file, no or malformed trajemb manifest, another format version.
    """
    path = Path(path)
    regular_file_size(path, "trajectory table", expected="give a .parquet file from `trajemb prepare`")
    try:
        parquet_metadata = pq.read_metadata(path)
        metadata = parquet_metadata.metadata or {}
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: undecodable footer strings
        raise DataError(f"{path}: not a readable trajectory table ({exc})") from exc
    if METADATA_KEY not in metadata:
        raise DataError(f"{path}: parquet file has no trajemb manifest (not written by `trajemb prepare`)")
    try:
        manifest = parse_json_object(metadata[METADATA_KEY], "trajemb manifest")
    except DataError as exc:
        raise DataError(f"{path}: {exc}; re-run trajemb prepare") from exc
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMATS:
        raise DataError(
            f"{path}: table format {version!r:.40} is not one of {', '.join(map(str, READABLE_FORMATS))}; "
            "re-run trajemb prepare"
        )
    T, n = manifest.get("num_steps"), manifest.get("num_windows")
    if isinstance(T, bool) or not isinstance(T, int) or not 2 <= T <= MAX_WINDOW_STEPS:
        raise DataError(f"{path}: manifest num_steps {T!r:.40} is not an integer in [2, {MAX_WINDOW_STEPS}]")
    if isinstance(n, bool) or not isinstance(n, int) or n != parquet_metadata.num_rows:
        raise DataError(
            f"{path}: manifest says {n!r:.40} windows but the file holds {parquet_metadata.num_rows} rows; "
            "re-run trajemb prepare"
        )
    if n == 0:  # ``TableWriter.finish`` refuses to write one
        raise DataError(f"{path}: the table holds no windows; re-run trajemb prepare")
    window = manifest.get("window_config")
    if window is not None and not isinstance(window, dict):
        raise DataError(
            f"{path}: manifest window_config {window!r:.40} is not an object; re-run trajemb prepare"
        )
    rate = window.get("step_hz") if window else None
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf
    ):
        raise DataError(
            f"{path}: manifest step rate {rate!r:.40} is not a positive number of Hz; re-run trajemb prepare"
        )
    if not isinstance(manifest.get("skipped", []), list):  # ``trajemb info`` counts them
        raise DataError(
            f"{path}: manifest skipped {manifest['skipped']!r:.40} is not a list; re-run trajemb prepare"
        )
    digest = manifest.get("content_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise DataError(
            f"{path}: manifest content_sha256 {digest!r:.80} is not a sha256; re-run trajemb prepare"
        )
    return manifest


_META_TYPES = {
    "start_timestep": "integer",
    **dict.fromkeys(
        [
            "origin_x_city_m",
            "origin_y_city_m",
            "theta_rad",
            "mean_speed_mps",
            "heading_change_rad",
            "lateral_offset_m",
        ],
        "floating point",
    ),
}
_TYPE_CHECKS = {
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "integer": pa.types.is_integer,
    "floating point": pa.types.is_floating,
}


#: Rows of positions checked at a time (bounds the temporary arrays of ``check_positions``).
_CHECK_ROWS = 65_536


def check_positions(
    path: Path | str, xy: np.ndarray, window_ids: pa.Array | pa.ChunkedArray | np.ndarray
) -> None:
    """Refuse positions ``trajemb prepare`` never writes: NaN, infinite, or beyond ``MAX_ABS_COORD_M``
    metres (they would embed as NaN, or break the realism features, far from the file that holds them).

    ``xy``: (n, T, 2) positions of windows of the table at ``path`` (or a name for a table in memory);
    ``window_ids``: their (n,) ids.

    Raises:
        DataError: naming the file, how many of these windows are bad and the first one's id.
    """
    bad: list[np.ndarray] = []
    for start in range(0, len(xy), _CHECK_ROWS):
        part = np.asarray(xy[start : start + _CHECK_ROWS])
        good = (np.isfinite(part) & (np.abs(part) <= MAX_ABS_COORD_M)).reshape(len(part), -1).all(axis=1)
        bad.append(start + np.flatnonzero(~good))
    rows = np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)
    if rows.size:
        raise DataError(
            f"{path}: {rows.size} window(s) contain NaN, infinite or absurd positions (beyond "
            f"{MAX_ABS_COORD_M:.0e} m; first: {window_ids[int(rows[0])]}); the table was altered, re-run "
            "trajemb prepare"
        )


def check_unique_ids(path: Path, window_ids: pa.Array | pa.ChunkedArray) -> None:
    """Refuse a table whose window ids repeat (``TableWriter.finish`` never writes one: a search by id,
    the explorer's query and a forecast's exclusion of its own window would pick one of them silently)."""
    distinct = pc.count_distinct(window_ids).as_py()
    if distinct != len(window_ids):
        raise DataError(
            f"{path}: {len(window_ids) - distinct} window id(s) repeat; the table was altered, "
            "re-run trajemb prepare"
        )


def _check_columns(path: Path, schema: pa.Schema, num_steps: int) -> None:
    """The table's columns are ours: every metadata column, and ``xy_agent`` of 2 * num_steps floats."""
    missing = [c for c in (*META_COLUMNS, "xy_agent") if c not in schema.names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; re-run trajemb prepare")
    for name in META_COLUMNS:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        wanted = _META_TYPES.get(name, "string")
        if not _TYPE_CHECKS[wanted](kind):
            raise DataError(
                f"{path}: column {name} has type {kind}, expected {wanted}; re-run trajemb prepare"
            )
    xy = schema.field("xy_agent").type
    if not pa.types.is_fixed_size_list(xy) or not pa.types.is_float32(xy.value_type):
        raise DataError(f"{path}: column xy_agent has type {xy}, expected fixed-size lists of float32")
    if xy.list_size != 2 * num_steps:
        raise DataError(
            f"{path}: xy_agent holds {xy.list_size // 2} steps per window but the manifest says "
            f"{num_steps}; the table was altered, re-run trajemb prepare"
        )


def read_table(path: Path, verify: bool = False, require_full_hash: bool = False) -> TrajectoryTable:
    """Load a table written by ``write_table``; ``verify`` recomputes the content hash.

    Args:
        path: the parquet file.
        verify: recompute the content hash and compare it with the manifest's.
        require_full_hash: with ``verify``, refuse a table whose hash does not cover every column
            (format 3: labels unverifiable) instead of verifying what its hash covers.

    Raises:
        DataError: missing, unreadable or corrupt file; a manifest, column set or null value that
            ``trajemb prepare`` would not have written; with ``verify``, a content hash mismatch.
    """
    path = Path(path)
    manifest = read_manifest(path)
    T = int(manifest["num_steps"])
    try:
        table = pq.read_table(path)
        table.validate(full=True)  # e.g. invalid UTF-8 in a string column: caught here, not in pandas
        _check_columns(path, table.schema, T)
        nulls = [c for c in table.column_names if table.column(c).null_count]
        if nulls:
            raise DataError(f"{path}: null values in column(s) {', '.join(nulls)}; re-run trajemb prepare")
        flat = table.column("xy_agent").combine_chunks().flatten()
        if flat.null_count:
            raise DataError(f"{path}: null positions in xy_agent; re-run trajemb prepare")
        xy = flat.to_numpy().reshape(-1, T, 2)
        check_positions(path, xy, table.column("window_id"))
        check_unique_ids(path, table.column("window_id"))
        meta = table.drop_columns(["xy_agent"]).select(list(META_COLUMNS)).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: trajectory table is corrupt ({exc})") from exc
    if len(xy) != manifest["num_windows"]:
        raise DataError(f"{path}: {len(xy)} windows, the manifest says {manifest['num_windows']}")
    for col in ("source", "object_type", "category", "city", "direction", "true_manoeuvre", "speed_bin"):
        meta[col] = meta[col].astype(str)
    if verify:
        version = int(manifest["format_version"])
        if content_hash(table, version) != manifest["content_sha256"]:
            raise DataError(
                f"{path}: content hash mismatch (the file was modified after `trajemb prepare` wrote it); "
                "re-run trajemb prepare"
            )
        if version < FORMAT_VERSION and require_full_hash:
            raise DataError(
                f"{path}: geometry, frames and ids match the hash, but a format-{version} table's hash does "
                "not cover its labels, so they cannot be verified; re-run trajemb prepare"
            )
    return TrajectoryTable(xy_agent=np.ascontiguousarray(xy, dtype=np.float32), meta=meta, manifest=manifest)
