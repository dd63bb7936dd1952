"""Result lists out of trajemb and back in: one table for every list of windows, window ids read back.

Every list the explorer and the CLI produce (the neighbours of a query, a selection of rows, a cluster,
the rarest windows, near-duplicate groups) becomes one pandas table (``results_frame``) with what a
person needs to find each window again in AV2 and to trust where it came from:

* ids: ``window_id``, ``source``, ``scenario_id``, ``track_id``, ``start_timestep`` and
  ``end_timestep`` (inclusive, 10 Hz steps of the scenario or log), ``source_file`` where the layout
  of the source says it: ``<scenario_id>/scenario_<scenario_id>.parquet`` inside an AV2 motion-
  forecasting split folder (and a ``trajemb synth`` folder, which has the same layout), the log id
  (its folder inside the split) for an AV2 sensor log;
* the query (``query_window_id``: its window id, ``drawn`` for a drawn path, empty where there is
  none or it was a window of the user's own) and the Euclidean ``distance`` to it in the model's
  space (NaN where there is no query), the ``rank`` in the list, and columns of the list's own kind
  (``uniqueness``, ``group``...);
* labels: ``object_type``, ``category``, ``city``, ``direction``, ``true_manoeuvre``, ``speed_bin``,
  ``mean_speed_mps``;
* provenance: the ``bundle`` folder, the content hash of its windows (``bundle_table_sha256``, the
  hash of the trajectory table it was built from), the ``model`` and the sha256 of its weights.

``write_results`` writes such a table as CSV or parquet (from the file name), atomically, only over a
file trajemb wrote before (``trajemb.core.outputs``); ``results_bytes`` gives the same bytes for a download.
``read_window_ids`` (a file) and ``window_ids_from_bytes`` (an upload) read ids back from any such
file, from a CSV or parquet file of the user's own with a ``window_id`` column, or from plain text with
one id per line; the size is capped and nothing is unpickled. ``rows_for_window_ids`` turns them into
bundle rows, refusing ids the bundle does not hold with one line saying how many and which.

Legend: N windows, n rows of a list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trajemb.analysis.bundle import CHECKPOINT_DIR, Bundle, model_file
from trajemb.core.atomic import atomic_path
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.outputs import RESULTS_METADATA_KEY, check_output_file
from trajemb.core.paths import regular_file_size
from trajemb.data.schema import Source

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Columns of every result table, in order; list-specific columns go after ``distance``.
ID_COLUMNS: tuple[str, ...] = (
    "rank",
    "window_id",
    "source",
    "scenario_id",
    "track_id",
    "start_timestep",
    "end_timestep",
    "source_file",
    "query_window_id",
    "distance",
)
LABEL_COLUMNS: tuple[str, ...] = (
    "object_type",
    "category",
    "city",
    "direction",
    "true_manoeuvre",
    "speed_bin",
    "mean_speed_mps",
)
PROVENANCE_COLUMNS: tuple[str, ...] = ("bundle", "bundle_table_sha256", "model", "model_weights_sha256")
#: File formats by suffix.
FORMATS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: Largest id list read back (a million ids of 80 characters is 80 MB).
MAX_ID_FILE_BYTES = 256 * 1024 * 1024
#: Parquet files start (and end) with these bytes.
PARQUET_MAGIC = b"PAR1"

_weights_sha256: weakref.WeakKeyDictionary[Bundle, dict[str, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def source_files(sources: np.ndarray, scenario_ids: np.ndarray) -> np.ndarray:
    """(n,) the file or folder each window was read from, relative to the folder given to
    ``trajemb prepare`` (module docstring); empty where the source has no known layout."""
    src = np.asarray(sources, dtype=str)
    sid = np.asarray(scenario_ids, dtype=str)
    scenario = np.char.add(np.char.add(np.char.add(sid, "/scenario_"), sid), ".parquet")
    out = np.where(np.isin(src, [Source.AV2_MOTION.value, Source.SYNTHETIC.value]), scenario, "")
    return np.asarray(np.where(src == Source.AV2_SENSOR.value, sid, out), dtype=object)


def model_weights_sha256(bundle: Bundle, model: str) -> str:
    """sha256 of the model's weights file in the bundle (verified against the manifest first)."""
    with _lock:
        cached = _weights_sha256.setdefault(bundle, {})
        if model not in cached:
            path = bundle.path(model_file(model, f"{CHECKPOINT_DIR}/model.safetensors"))
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            cached[model] = digest.hexdigest()
        return cached[model]


def results_frame(
    bundle: Bundle,
    rows: np.ndarray | list[int],
    model: str | None = None,
    *,
    distance: np.ndarray | None = None,
    query_window_id: str = "",
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The table of a list of bundle rows, in the given order (rank 1 first); module docstring.

    Args:
        rows: (n,) bundle rows.
        model: the model the list came from (None: a list that no model produced).
        distance: (n,) Euclidean distance to the query in the model's space; NaN without one.
        query_window_id: the query's window id, if it is a window of the bundle.
        extra: (n,) columns of the list's own kind, placed after ``distance``.
    """
    import pandas as pd

    idx = np.asarray(rows, dtype=np.int64)
    if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= bundle.num_windows)):
        raise DataError(f"rows must be a list of bundle rows in [0, {bundle.num_windows})")
    n = len(idx)
    if model is not None:
        bundle.model_entry(model)
    labels = bundle.frame(["window_id", "source", "scenario_id", "track_id", "mean_speed_mps"], idx)
    for name in LABEL_COLUMNS[:-1]:
        try:
            labels[name] = bundle.strings(name, idx)
        except DataError:  # bundles from before a label column existed (true_manoeuvre: issue 12)
            labels[name] = "unknown"
    start = bundle.numbers("start_timestep")[idx].astype(np.int64)
    columns: dict[str, np.ndarray] = {
        "rank": np.arange(1, n + 1, dtype=np.int64),
        "window_id": labels["window_id"].astype(str).to_numpy(),
        "source": labels["source"].astype(str).to_numpy(),
        "scenario_id": labels["scenario_id"].astype(str).to_numpy(),
        "track_id": labels["track_id"].astype(str).to_numpy(),
        "start_timestep": start,
        "end_timestep": start + bundle.num_steps - 1,
        "source_file": source_files(
            labels["source"].astype(str).to_numpy(), labels["scenario_id"].astype(str).to_numpy()
        ),
        "query_window_id": np.full(n, query_window_id, dtype=object),
        "distance": np.full(n, np.nan) if distance is None else np.asarray(distance, dtype=np.float64),
    }
    for name, values in (extra or {}).items():
        if name in columns or name in LABEL_COLUMNS or name in PROVENANCE_COLUMNS:
            raise ConfigError(f"extra column {name!r} would replace a standard column")
        columns[name] = np.asarray(values)
    for name in LABEL_COLUMNS:
        label = labels[name]
        columns[name] = (
            label.to_numpy(dtype=np.float64) if name == "mean_speed_mps" else label.astype(str).to_numpy()
        )
    table_sha = str(bundle.manifest.get("table_sha256", ""))
    columns.update(
        {
            "bundle": np.full(n, str(bundle.root.resolve()), dtype=object),
            "bundle_table_sha256": np.full(n, table_sha, dtype=object),
            "model": np.full(n, model or "", dtype=object),
            "model_weights_sha256": np.full(
                n, model_weights_sha256(bundle, model) if model else "", dtype=object
            ),
        }
    )
    for name, values in columns.items():
        if len(values) != n:
            raise DataError(f"column {name} has {len(values)} values for {n} rows")
    return pd.DataFrame(columns)


def results_format(path: Path | str) -> str:
    """``csv`` or ``parquet``, from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--out {path}: name a .csv or .parquet file (the format follows the suffix)")
    return FORMATS[suffix]


def check_results_output(path: Path | str, inputs: list[Path | str] | tuple[Path | str, ...] = ()) -> None:
    """Refuse, before any work, an ``--out`` that is not a .csv/.parquet path trajemb may write: an
    existing file trajemb did not write, a folder, or a path inside an input (the bundle)."""
    results_format(path)
    check_output_file(path, kind="results", inputs=inputs)


def write_results(
    frame: pd.DataFrame, path: Path | str, inputs: list[Path | str] | tuple[Path | str, ...] = ()
) -> Path:
    """Write a result table as CSV or parquet (by suffix), atomically; returns the path.

    ``inputs``: files and folders the list was made from (the bundle): the output may not lie inside
    them. The first columns must be ``rank`` and ``window_id`` (a ``results_frame``).
    """
    path = Path(path)
    fmt = results_format(path)
    if list(frame.columns[:2]) != ["rank", "window_id"]:
        raise ConfigError("a result table starts with the columns rank and window_id (results_frame)")
    check_output_file(path, kind="results", inputs=inputs)
    with atomic_path(path) as tmp:
        _write_frame(frame, tmp, fmt)
    return path


def results_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """A result table as the bytes of a ``csv`` or ``parquet`` file, as ``write_results`` writes it (for
    a download button)."""
    import io

    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"format must be csv or parquet, got {fmt!r}")
    buffer = io.BytesIO()
    _write_frame(frame, buffer, fmt)
    return buffer.getvalue()


def _write_frame(frame: pd.DataFrame, target: Any, fmt: str) -> None:
    if list(frame.columns[:2]) != ["rank", "window_id"]:
        raise ConfigError("a result table starts with the columns rank and window_id (results_frame)")
    if fmt == "csv":
        frame.to_csv(target, index=False)
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    marker = json.dumps({"columns": list(frame.columns), "rows": len(frame)}).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), RESULTS_METADATA_KEY: marker})
    pq.write_table(table, target, compression="zstd")


# -- window ids back in ----------------------------------------------------------------------------
def _ids_from_parquet(data: bytes, what: str) -> list[str]:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        names = parquet.schema_arrow.names
        if "window_id" not in names:
            raise DataError(
                f"{what}: parquet file without a window_id column (columns: {', '.join(names[:12])})"
            )
        column = parquet.read(columns=["window_id"]).column(0)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{what}: not a readable parquet file ({exc})") from exc
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(f"{what}: column window_id holds {column.type}, not text")
    if column.null_count:
        raise DataError(f"{what}: column window_id has {column.null_count} empty values")
    return [str(v) for v in column.to_pylist()]


def _ids_from_csv(data: bytes, what: str, columns: list[str]) -> list[str]:
    import pyarrow.csv as pacsv

    if "window_id" not in columns:
        raise DataError(f"{what}: a CSV file without a window_id column (columns: {', '.join(columns[:12])})")
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            convert_options=pacsv.ConvertOptions(
                include_columns=["window_id"], column_types={"window_id": pa.string()}
            ),
        )
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{what}: not a readable CSV file ({exc})") from exc
    column = table.column(0)
    if column.null_count:
        raise DataError(f"{what}: column window_id has {column.null_count} empty values")
    return [str(v) for v in column.to_pylist()]


def window_ids_from_bytes(
    data: bytes, what: str = "id list", max_bytes: int = MAX_ID_FILE_BYTES
) -> list[str]:
    """Window ids from a file's bytes (an upload): parquet or CSV with a ``window_id`` column (any
    other columns are left alone), or UTF-8 text with one id per line (blank lines and lines starting
    with ``#`` skipped). ``what`` names the file in messages.

    Raises:
        DataError: over ``max_bytes``, not parquet nor UTF-8 text, a table without ``window_id``,
            empty values, or no id at all.
    """
    if len(data) > max_bytes:
        raise DataError(f"{what}: {len(data):,} bytes, more than an id list may have ({max_bytes:,})")
    if data.startswith(PARQUET_MAGIC):
        ids = _ids_from_parquet(data, what)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{what}: neither parquet nor UTF-8 text (byte {exc.start}); give a CSV, parquet or "
                "text file of window ids"
            ) from None
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        first = lines[0] if lines else ""
        header = [c.strip().strip('"') for c in first.split(",")]
        is_csv = "," in first or header == ["window_id"]
        ids = _ids_from_csv(data, what, header) if is_csv else lines
    if not ids:
        raise DataError(f"{what}: no window ids in it")
    blank = sum(1 for i in ids if not i.strip())
    if blank:
        raise DataError(f"{what}: {blank} empty values among its window ids")
    return ids


def read_window_ids(path: Path | str, max_bytes: int = MAX_ID_FILE_BYTES) -> list[str]:
    """Window ids from a file (``window_ids_from_bytes``), which must be a regular file of at most
    ``max_bytes``."""
    path = Path(path)
    regular_file_size(path, "id list", max_bytes, expected="give a CSV, parquet or text file of window ids")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the id list ({exc.strerror})") from exc
    return window_ids_from_bytes(data, str(path), max_bytes)


def rows_for_window_ids(bundle: Bundle, ids: list[str]) -> np.ndarray:
    """(n,) bundle rows of window ids, in the order given (an id given twice counts once).

    Raises:
        DataError: ids the bundle does not hold: how many, and the first few.
    """
    if not ids:
        raise DataError("no window ids given")
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        log.info("%d repeated window ids counted once", len(ids) - len(unique))
    known = bundle.column("window_id")
    if not pa.types.is_string(known.type):
        known = known.cast(pa.string())
    found = pc.index_in(pa.array(unique, pa.string()), value_set=known)
    missing = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
    if len(missing):
        first = ", ".join(repr(unique[i][:120]) for i in missing[:3])
        raise DataError(
            f"{len(missing)} of {len(unique)} window ids are not in the bundle {bundle.root} "
            f"(first: {first}); ids there look like {known[0].as_py()!r}"
        )
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


def load_window_ids(bundle: Bundle, path: Path | str) -> np.ndarray:
    """(n,) bundle rows of the window ids in a file (``read_window_ids``, ``rows_for_window_ids``)."""
    return rows_for_window_ids(bundle, read_window_ids(path))
