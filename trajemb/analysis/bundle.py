"""Bundles: the folder the explorer and ``trajemb search`` open, read lazily and verified as read.

```
bundle.json                     manifest: format, counts, build config, the digest (size + sha256 per
                                block, ``integrity``) of every file below, and per model its index and
                                projection settings
windows/meta.parquet            one row per window: ids, labels, city-frame origin and heading, track and
                                scenario group ids (no geometry)
windows/xy_agent.npy            (N, T, 2) float32 agent-frame geometry, memory-mapped
maps/<map_key>.npz              reduced maps of the scenarios the windows come from
models/<name>/checkpoint/       model.safetensors, config.json, card.json
models/<name>/embeddings.npy    (N, D) float32, memory-mapped (a history model's: of each window's first
                                H steps in their last-state frame, ``trajemb.data.history``)
models/<name>/index.faiss       FAISS index over the embeddings (rows = windows)
models/<name>/projection.npy    (N, 2) float32 2-D layout (UMAP), optional
models/<name>/report.json       retrieval evaluation, optional
models/<name>/uniqueness.npy    (N,) float32 distance to the k-th nearest other track (``trajemb.analysis.uniqueness``),
                                optional (bundles before issue 17 lack it)
baselines.json                  the baselines' evaluation on the same queries, optional
```
Rows of every array and of ``meta.parquet`` are the same windows in the same order. A bundle reads
only files named in its own manifest, at paths built from validated names inside its own folder, and
never uses a byte before it has been checked against the manifest: small files whole when read, large
arrays block by block as rows are read (``trajemb.core.integrity``), and again after a file changed on disk.
Opening is cheap (the manifest and the metadata columns asked for); models load on first use.
``trajemb.serving.bundle_build`` writes bundles.

The files are tied to each other, not only each to its digest (format 3): the manifest records a
digest of the window ids in row order, and every per-row file's entry (geometry, metadata,
embeddings, index, layout) carries the row count and that digest, a model's files the identity of
the weights they were computed with; so files moved between bundles or models with their digests are
refused on opening. ``verify_all`` also checks the content against itself: the table's content hash
recomputed from the bundle's geometry and metadata, every index against its embeddings, and every
model's embeddings against its checkpoint on a sample of rows (which catches rows reordered or
embeddings swapped even where every digest was rewritten to match). Bundles of format 2 (before the
ties) still open; ``verify_all`` checks their content the same way.

Legend: N windows, T steps, D embedding dim.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trajemb.core.errors import DataError
from trajemb.core.integrity import FileDigest, VerifiedArray, VerifiedFile, file_stamp
from trajemb.core.jsonio import read_json_object
from trajemb.core.paths import resolve_inside, safe_component
from trajemb.retrieval.index import load_faiss_index
from trajemb.retrieval.search import PARALLEL_EXACT_ROWS, NeighborIndex, parallel_exact, raw_search

if TYPE_CHECKING:
    import pandas as pd

    from trajemb.data.maps import MapGeometry
    from trajemb.training.model import TrajectoryEncoder

MANIFEST = "bundle.json"
BUNDLE_FORMAT = "trajemb-bundle/3"
#: Formats opened: 2 (no ties between files) and 3.
READABLE_FORMATS = ("trajemb-bundle/2", BUNDLE_FORMAT)
#: A manifest lists every map (about 200 bytes each): all of AV2 stays well under this.
MAX_MANIFEST_BYTES = 512 << 20
META_FILE = "windows/meta.parquet"
XY_FILE = "windows/xy_agent.npy"
BASELINES_FILE = "baselines.json"
EMBEDDINGS = "embeddings.npy"
INDEX = "index.faiss"
PROJECTION = "projection.npy"
REPORT = "report.json"
UNIQUENESS = "uniqueness.npy"
CHECKPOINT_DIR = "checkpoint"
MAPS_DIR = "maps"
#: Files of one row per window, in table row order (``windows/...``, and per model ``models/<name>/...``).
WINDOW_ROW_FILES = (XY_FILE, META_FILE)
MODEL_ROW_FILES = (EMBEDDINGS, INDEX, PROJECTION, UNIQUENESS)
#: Rows whose stored embedding is re-computed by ``verify_all`` (and searched for in the index).
CONTENT_SAMPLE_ROWS = 32

#: Label columns of ``meta.parquet`` (dictionary-encoded strings). ``true_manoeuvre`` (synthetic ground
#: truth, ``trajemb.data.truth``; ``unknown`` on real data) was added by the retrieval work (issue 12).
LABEL_COLUMNS: tuple[str, ...] = (
    "source",
    "object_type",
    "category",
    "city",
    "direction",
    "true_manoeuvre",
    "speed_bin",
)
#: Id columns with few distinct values per window (dictionary-encoded strings).
ID_COLUMNS: tuple[str, ...] = ("scenario_id", "track_id", "map_key")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name(name: object, what: str) -> str:
    """``name`` if it is one plain path component (``paths.safe_component``) made of letters, digits and
    ``._-``, not starting with a dot, at most 100 characters; anything else is refused, never rewritten."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DataError(
            f"{what} {name!r:.120} is not a plain name (letters, digits, '.', '_', '-'; no paths)"
        )
    return safe_component(name, what)


def model_file(name: str, file: str) -> str:
    """Manifest key (relative path) of a model's file."""
    return f"models/{safe_name(name, 'model name')}/{file}"


def _relative_key(key: object) -> str:
    """A manifest file key: a relative path of plain components, inside the bundle."""
    if not isinstance(key, str) or key.startswith("/") or "\\" in key:
        raise DataError(f"bundle manifest names a file outside the bundle: {key!r}")
    for part in key.split("/"):
        safe_name(part, "bundle file path component")
    return key


def read_bundle_manifest(root: Path) -> dict[str, Any]:
    """The validated manifest of the bundle at ``root``."""
    root = Path(root)
    path = root / MANIFEST
    if root.is_file() and root.name == MANIFEST:
        raise DataError(f"{root}: give the bundle's folder ({root.parent}), not its manifest file")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give a bundle folder written by `trajemb bundle`")
    if not path.is_file():
        raise DataError(f"{root}: not a trajemb bundle (no {MANIFEST})")
    manifest = read_json_object(path, "bundle manifest", max_bytes=MAX_MANIFEST_BYTES)
    fmt = manifest.get("format")
    if fmt not in READABLE_FORMATS:
        hint = (
            "; rebuild it with `trajemb bundle`"
            if isinstance(fmt, str) and fmt.startswith("trajemb-bundle/")
            else ""
        )
        raise DataError(f"{root}: bundle format {fmt!r}, expected {BUNDLE_FORMAT}{hint}")

    def field(name: str, kind: type, ok: Any = lambda v: True) -> Any:
        value = manifest.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or not ok(value):
            raise DataError(f"{path}: malformed bundle manifest (field {name!r} is {value!r:.60})")
        return value

    field("num_windows", int, lambda v: v >= 1)
    field("num_steps", int, lambda v: 2 <= v <= 100_000)
    files = field("files", dict)
    models = field("models", dict, bool)
    for name, entry in models.items():
        safe_name(name, "model name")
        dim = entry.get("embedding_dim") if isinstance(entry, dict) else None
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 4096:
            raise DataError(f"{path}: malformed bundle manifest (model {name!r} has no valid embedding_dim)")
    for key in files:
        _relative_key(key)
    if fmt != "trajemb-bundle/2":
        _check_ties(path, manifest)
    return manifest


def weights_id(entry: object) -> str:
    """Identity of a checkpoint's weights from their manifest entry (size and block digests)."""
    digest = FileDigest.from_dict(entry, "checkpoint weights")
    return hashlib.sha256(f"{digest.size_bytes}:{','.join(digest.blocks)}".encode()).hexdigest()


def row_file_model(key: str) -> str | None:
    """The model a per-row file belongs to (None for the windows' files); raises for other keys."""
    if key in WINDOW_ROW_FILES:
        return None
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "models" and parts[2] in MODEL_ROW_FILES:
        return parts[1]
    raise KeyError(key)


def is_row_file(key: str) -> bool:
    try:
        row_file_model(key)
    except KeyError:
        return False
    return True


def _check_ties(path: Path, manifest: dict[str, Any]) -> None:
    """Every per-row file is declared for this bundle's rows (and its model's weights)."""
    ids = manifest.get("window_ids_sha256")
    if not isinstance(ids, str) or len(ids) != 64:
        raise DataError(
            f"{path}: malformed bundle manifest (no window_ids_sha256); rebuild it with `trajemb bundle`"
        )
    files = manifest["files"]
    for key, entry in files.items():
        if not is_row_file(key):
            continue
        model = row_file_model(key)
        if (
            not isinstance(entry, dict)
            or entry.get("rows") != manifest["num_windows"]
            or entry.get("ids_sha256") != ids
        ):
            raise DataError(
                f"{path}: {key} is not tied to this bundle's {manifest['num_windows']} windows (written for "
                "other rows, or moved here from another bundle); rebuild it with `trajemb bundle`"
            )
        if model is not None:
            weights = files.get(model_file(model, f"{CHECKPOINT_DIR}/model.safetensors"))
            if weights is None or entry.get("weights_sha256") != weights_id(weights):
                raise DataError(
                    f"{path}: {key} was computed with other weights than model {model}'s checkpoint "
                    "(files of two models mixed up); rebuild it with `trajemb bundle`"
                )


def manifest_stamp(root: Path) -> tuple[int, ...]:
    """Changes whenever the bundle folder is replaced or its manifest rewritten (a rebuild, a completed
    stage); zeros where there is none."""
    try:
        folder = os.stat(root)
        return (folder.st_dev, folder.st_ino, *file_stamp(Path(root) / MANIFEST))
    except OSError:
        return (0,)


#: Report fields that hold numbers (or null): every ``metric@k``, and these.
_NUMBER_FIELDS = ("search_ms_per_query", "silhouette_direction", "silhouette_label", "encode_ms_per_window")
_COUNT_FIELDS = ("dim", "num_windows", "corpus_windows", "num_queries")
_OBJECT_FIELDS = ("per_class", "hard", "neighbors", "index", "mean_rank", "robustness")


def check_report(report: object, where: str) -> dict[str, Any]:
    """``report`` if it has the shape of an evaluation report: an object whose metrics are numbers or
    null, counts whole numbers, ``ks`` a list of them, and nested sections objects.

    Raises:
        DataError: naming the file and the field.
    """

    def bad(field: str, value: object) -> DataError:
        return DataError(
            f"{where}: malformed evaluation report (field {field!r:.60} is {value!r:.60}); "
            "evaluate again with `trajemb complete` or rebuild the bundle"
        )

    if not isinstance(report, dict):
        raise bad("(report)", report)
    for key, value in report.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ("@" in key or key in _NUMBER_FIELDS) and not (number or value is None):
            raise bad(key, value)
        if key in _COUNT_FIELDS and not (number and float(value).is_integer() and value >= 0):
            raise bad(key, value)
        if key in _OBJECT_FIELDS and not isinstance(value, dict):
            raise bad(key, value)
        if key == "ks" and not (
            isinstance(value, list)
            and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in value)
        ):
            raise bad(key, value)
        if key == "per_class" and not all(isinstance(v, dict) for v in value.values()):
            raise bad(key, value)
    return report


class Bundle:
    """An opened bundle. Cheap to open; columns, models, indices and maps load on first use.

    Thread-safe for reading: the explorer shares one opened bundle between browser sessions.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stamp = manifest_stamp(self.root)
        self.manifest = read_bundle_manifest(self.root)
        self.num_windows: int = self.manifest["num_windows"]
        self.num_steps: int = self.manifest["num_steps"]
        self._lock = threading.RLock()
        self._files: dict[str, VerifiedFile] = {}
        self._arrays: dict[str, VerifiedArray] = {}
        self._columns: dict[str, pa.Array] = {}
        self._indices: dict[str, NeighborIndex] = {}
        self._meta_pd: pd.DataFrame | None = None
        self._parquet: pq.ParquetFile | None = None
        self._column_names: list[str] | None = None
        self.xy = self._array(XY_FILE, (self.num_windows, self.num_steps, 2), "float32")

    # -- files ------------------------------------------------------------------------------------
    def changed(self, every_file: bool = True) -> bool:
        """Whether the bundle on disk is no longer the one opened: its folder or manifest was replaced
        or rewritten, or a file read so far changed. A long-lived reader (the explorer) opens it again.

        ``every_file=False``: only the folder, the manifest and the memory-mapped arrays (a handful of
        ``stat`` calls instead of one per file read, 9,200 at a million windows once the full check has
        run). A mapped array replaced on disk can no longer be read through this object; any other file
        is verified again against the manifest when it is next read after a change."""
        if manifest_stamp(self.root) != self.stamp:
            return True
        with self._lock:
            opened = [*(self._files.values() if every_file else ()), *(a.file for a in self._arrays.values())]
        return any(f.changed() for f in opened)

    def has_file(self, key: str) -> bool:
        return key in self.manifest["files"]

    def _verified(self, key: str) -> VerifiedFile:
        """A file named in the manifest, checked against its digest (whole file; again whenever the file
        changed on disk since)."""
        with self._lock:
            if key in self._files and self._files[key].changed():
                self._files[key].verify_all()  # every block again: a changed file must still match
            if key not in self._files:
                if key not in self.manifest["files"]:
                    raise DataError(
                        f"{self.root}: {key} is not part of this bundle; rebuild it with `trajemb bundle`"
                    )
                digest = FileDigest.from_dict(self.manifest["files"][key], f"{self.root / MANIFEST} ({key})")
                vf = VerifiedFile(resolve_inside(self.root, _relative_key(key)), digest)
                vf.verify_all()
                self._files[key] = vf
            return self._files[key]

    def path(self, key: str) -> Path:
        """Path of a verified file of this bundle."""
        return self._verified(key).path

    def _array(self, key: str, shape: tuple[int | None, ...], dtype: str) -> VerifiedArray:
        with self._lock:
            if key not in self._arrays:
                if key not in self.manifest["files"]:
                    raise DataError(
                        f"{self.root}: {key} is not part of this bundle; rebuild it with `trajemb bundle`"
                    )
                digest = FileDigest.from_dict(self.manifest["files"][key], f"{self.root / MANIFEST} ({key})")
                self._arrays[key] = VerifiedArray(
                    resolve_inside(self.root, _relative_key(key)), digest, shape, dtype
                )
            return self._arrays[key]

    def json_file(self, key: str, what: str) -> dict[str, Any]:
        return read_json_object(self.path(key), what)

    # -- per-window columns -----------------------------------------------------------------------
    def column(self, name: str) -> pa.Array:
        """One column of ``meta.parquet`` as a single Arrow array (dictionary arrays unified)."""
        with self._lock:
            if name not in self._columns:
                meta_path = self.path(META_FILE)  # verified (again, if it changed since it was opened)
                if self._parquet is None:
                    try:
                        self._parquet = pq.ParquetFile(meta_path)
                    except (pa.ArrowInvalid, OSError) as exc:
                        raise DataError(f"{self.root / META_FILE}: unreadable ({exc})") from exc
                    if name != "window_id" and "window_ids_sha256" in self.manifest:
                        self.column("window_id")  # the rows are the ones every other file was written for
                try:
                    chunked = self._parquet.read(columns=[name]).column(0)
                except (pa.ArrowInvalid, KeyError, OSError) as exc:
                    raise DataError(f"{self.root / META_FILE}: no readable column {name!r} ({exc})") from exc
                if pa.types.is_dictionary(chunked.type):
                    chunked = chunked.unify_dictionaries()
                array = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
                if len(array) != self.num_windows:
                    raise DataError(
                        f"{self.root / META_FILE}: column {name} has {len(array)} rows, expected {self.num_windows}"
                    )
                if name == "window_id" and "window_ids_sha256" in self.manifest:
                    from trajemb.data.store import column_digest

                    if column_digest(array) != self.manifest["window_ids_sha256"]:
                        raise DataError(
                            f"{self.root / META_FILE}: its window ids are not the ones the bundle's files were "
                            "written for (rows reordered or replaced); rebuild it with `trajemb bundle`"
                        )
                self._columns[name] = array
            return self._columns[name]

    @property
    def column_names(self) -> list[str]:
        """The per-window columns of ``meta.parquet``."""
        with self._lock:
            if self._column_names is None:
                self._column_names = list(pq.read_schema(self.path(META_FILE)).names)
            return list(self._column_names)

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column as a read-only numpy array (zero copy)."""
        array = self.column(name)
        if array.null_count:
            raise DataError(f"{self.root / META_FILE}: column {name} has missing values")
        values: np.ndarray = array.to_numpy(zero_copy_only=False)
        return values

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """A string column as (N,) int codes and the list of its distinct values."""
        array = self.column(name)
        if not pa.types.is_dictionary(array.type):
            array = pc.dictionary_encode(array)
        return array.indices.to_numpy(zero_copy_only=False), array.dictionary.to_pylist()

    def strings(self, name: str, rows: np.ndarray | list[int]) -> list[str]:
        """Values of a string column at ``rows``."""
        return [
            str(v) for v in self.column(name).take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()
        ]

    @property
    def groups(self) -> np.ndarray:
        """(N,) int track group of each window (windows of one track are near-duplicates)."""
        return self.numbers("track_group")

    @property
    def scenario_groups(self) -> np.ndarray:
        """(N,) int scenario of each window."""
        return self.numbers("scenario_group")

    @property
    def meta(self) -> pd.DataFrame:
        """Every metadata column as a pandas DataFrame (labels as categoricals), built once."""
        import pandas as pd

        with self._lock:
            if self._meta_pd is None:
                names = pq.read_schema(self.path(META_FILE)).names
                self._meta_pd = pd.DataFrame({name: self.column(name).to_pandas() for name in names})
            return self._meta_pd

    def frame(self, columns: list[str], rows: np.ndarray | list[int]) -> pd.DataFrame:
        """Some columns at some rows as a pandas DataFrame (without building ``meta`` for every row)."""
        import pandas as pd

        take = pa.array(np.asarray(rows, dtype=np.int64))
        return pd.DataFrame({name: self.column(name).take(take).to_pandas() for name in columns})

    def row(self, window_id: str) -> int:
        """Table row of a window id (``source/scenario/track/start``)."""
        row = pc.index(self.column("window_id"), pa.scalar(window_id, pa.string())).as_py()
        if row < 0:
            example = self.column("window_id")[0].as_py()
            raise DataError(f"window id {window_id!r} is not in this bundle (ids look like {example!r})")
        return int(row)

    def find_row(self, text: str) -> int:
        """A window id, or ``scenario/track`` or ``source/scenario/track`` (that track's first window)."""
        text = text.strip()
        ids = self.column("window_id")
        row = pc.index(ids, pa.scalar(text, pa.string())).as_py()
        if row >= 0:
            return int(row)
        parts = text.split("/")
        if 2 <= len(parts) <= 3 and all(parts):
            mask = pc.equal(self.column("scenario_id").cast(pa.string()), parts[-2])
            mask = pc.and_(mask, pc.equal(self.column("track_id").cast(pa.string()), parts[-1]))
            if len(parts) == 3:
                mask = pc.and_(mask, pc.equal(self.column("source").cast(pa.string()), parts[0]))
            hits = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
            if len(hits):
                return int(hits[0])
        return self.row(text)  # raises with an example of a valid id

    # -- models -----------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.manifest["models"])

    def model_entry(self, name: str) -> dict[str, Any]:
        if name not in self.manifest["models"]:
            raise DataError(f"no model {name!r} in {self.root}; models: {', '.join(self.model_names)}")
        entry: dict[str, Any] = self.manifest["models"][name]
        return entry

    def embedding_dim(self, name: str) -> int:
        return int(self.model_entry(name)["embedding_dim"])

    def history_steps(self, name: str) -> int | None:
        """H where the model embeds the first H steps of each window in their last-state frame (a history
        model, ``trajemb.data.history``); None where it embeds whole windows (every bundle before issue 18)."""
        value = self.model_entry(name).get("history_steps")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value < self.num_steps:
            raise DataError(
                f"{self.root}: model {name} has an invalid history length {value!r:.40} "
                f"for {self.num_steps}-step windows; rebuild the bundle"
            )
        return value

    def embeddings(self, name: str) -> VerifiedArray:
        return self._array(
            model_file(name, EMBEDDINGS), (self.num_windows, self.embedding_dim(name)), "float32"
        )

    def index(self, name: str) -> NeighborIndex:
        """The model's search index (rows = windows), with track groups and embeddings for filters."""
        with self._lock:
            if name not in self._indices:
                dim = self.embedding_dim(name)
                raw = load_faiss_index(self.path(model_file(name, INDEX)), dim, self.num_windows)
                embeddings = self.embeddings(name)  # rows read (and verified) only where a search needs them
                self._check_index(name, raw, embeddings)
                if isinstance(raw, faiss.IndexFlat) and raw.ntotal >= PARALLEL_EXACT_ROWS:
                    raw = parallel_exact(raw, embeddings.all(), PARALLEL_EXACT_ROWS)
                self._indices[name] = NeighborIndex(raw, self.groups, embeddings)
            return self._indices[name]

    def _sample_rows(self) -> np.ndarray:
        """Rows spread over the whole bundle, the same every time (content checks)."""
        count = min(CONTENT_SAMPLE_ROWS, self.num_windows)
        return np.unique(np.linspace(0, self.num_windows - 1, count).round().astype(np.int64))

    def _check_index(self, name: str, raw: faiss.Index, embeddings: VerifiedArray) -> None:
        """The index holds the model's embeddings: each sampled row's own vector is found at distance 0
        (an index of another model, or of reordered rows, finds almost none)."""
        rows = self._sample_rows()
        vectors = np.ascontiguousarray(embeddings.rows(rows), dtype=np.float32)
        dist, _ = raw_search(raw, vectors, 1)  # squared distances, as FAISS gives them
        scale = max(1.0, float(np.square(vectors).sum(axis=1).max()))
        found = float(np.mean(dist[:, 0] <= 1e-6 * scale))
        if found < 0.9:  # HNSW may miss a row now and then; a mismatched index misses nearly all
            raise DataError(
                f"{self.root}: the index of model {name} does not hold its embeddings ({found:.0%} of sampled "
                "rows found); rebuild it with `trajemb bundle`"
            )

    def projection(self, name: str) -> np.ndarray | None:
        """(N, 2) 2-D layout of the model's embeddings, or None where the bundle has none (yet)."""
        key = model_file(name, PROJECTION)
        if not self.has_file(key):
            return None
        xy = self._array(key, (self.num_windows, 2), "float32").all()
        return np.asarray(xy)

    def uniqueness(self, name: str) -> np.ndarray | None:
        """(N,) uniqueness of every window under the model (``trajemb.analysis.uniqueness``), or None where the
        bundle has none (built before it existed: ``trajemb complete`` adds it)."""
        key = model_file(name, UNIQUENESS)
        if not self.has_file(key):
            return None
        return np.asarray(self._array(key, (self.num_windows,), "float32").all())

    def uniqueness_info(self, name: str) -> dict[str, Any] | None:
        """How the model's uniqueness was computed (``UniquenessInfo.to_dict``), or None."""
        info = self.model_entry(name).get("uniqueness")
        return info if isinstance(info, dict) and self.has_file(model_file(name, UNIQUENESS)) else None

    def report(self, name: str) -> dict[str, Any] | None:
        """The model's evaluation report, or None where it has not been evaluated (yet). Its fields are
        not interpreted here: ``check_report`` checks them for a reader that needs them all."""
        key = model_file(name, REPORT)
        return self.json_file(key, "evaluation report") if self.has_file(key) else None

    def baselines(self) -> dict[str, Any]:
        return self.json_file(BASELINES_FILE, "baselines report") if self.has_file(BASELINES_FILE) else {}

    def checked_reports(self) -> dict[str, dict[str, Any]]:
        """Every model's report and every baseline's, each checked with ``check_report``.

        Raises:
            DataError: a model not evaluated yet, or a malformed report (naming the file and field).
        """
        reports: dict[str, dict[str, Any]] = {}
        for name in self.model_names:
            report = self.report(name)
            if report is None:
                raise DataError(
                    f"{self.root}: model {name} has not been evaluated yet (open the bundle in the explorer, "
                    "run `trajemb complete`, or rebuild it without --no-eval)"
                )
            reports[name] = check_report(report, str(self.root / model_file(name, REPORT)))
        where = self.root / BASELINES_FILE
        for name, report in self.baselines().items():
            if not name or len(name) > 100 or not name.isprintable() or name in reports:
                raise DataError(f"{where}: baseline name {name!r:.60} is not a plain name of its own")
            reports[name] = check_report(report, f"{where} ({name})")
        return reports

    def encoder(self, name: str, device: str = "cpu") -> tuple[TrajectoryEncoder, dict[str, Any]]:
        """The model's encoder and card, from the bundle's verified copy of its checkpoint."""
        from trajemb.training.checkpoint import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_checkpoint

        for file in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            self.path(model_file(name, f"{CHECKPOINT_DIR}/{file}"))
        model, card = load_checkpoint(
            self.root / "models" / safe_name(name, "model name") / CHECKPOINT_DIR, device
        )
        if model.config.embedding_dim != self.embedding_dim(name):
            raise DataError(
                f"{self.root}: model {name} embeds into {model.config.embedding_dim}, "
                f"its embeddings have {self.embedding_dim(name)} dimensions"
            )
        return model, card

    # -- maps -------------------------------------------------------------------------------------
    def map_geometry(self, map_key: str) -> MapGeometry | None:
        """Reduced map of a scenario, or None where the bundle has no map for it."""
        from trajemb.data.maps import read_map_geometry

        try:
            key = f"{MAPS_DIR}/{safe_name(f'{map_key}.npz', 'map key')}"
        except DataError:
            return None
        if not self.has_file(key):
            return None
        return read_map_geometry(self.path(key))

    def verify_all(self, content: bool = True) -> None:
        """Check every file of the bundle against the manifest (the explorer does this on open) and,
        with ``content``, the content against itself (module docstring)."""
        for key in self.manifest["files"]:
            if key.endswith(".npy"):
                with self._lock:
                    array = self._arrays.get(key)
                if array is not None:
                    array.file.verify_all()
                    continue
            self._verified(key)
        if content:
            self.check_content()

    def check_content(self) -> None:
        """The content ties (module docstring): table hash, track groups, indices and embeddings.

        Raises:
            DataError: naming what does not belong together, and to rebuild the bundle.
        """
        from trajemb.data.store import META_COLUMNS, ContentHasher

        version = self.manifest.get("table_format_version", 3)
        try:
            hasher = ContentHasher(int(version))
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{self.root / MANIFEST}: malformed table_format_version {version!r:.30}"
            ) from exc
        T = self.num_steps
        columns = {name: self.column(name) for name in META_COLUMNS}
        step = max(1, (64 << 20) // (T * 8))
        for start in range(0, self.num_windows, step):
            stop = min(self.num_windows, start + step)
            xy = np.ascontiguousarray(self.xy.rows(slice(start, stop)), dtype=np.float32).reshape(-1)
            batch = {name: col.slice(start, stop - start) for name, col in columns.items()}
            batch["xy_agent"] = pa.FixedSizeListArray.from_arrays(pa.array(xy), T * 2)
            hasher.update(pa.table(batch))
        if hasher.hexdigest() != self.manifest.get("table_sha256"):
            raise DataError(
                f"{self.root}: its windows are not those of the table it was built from (rows reordered, "
                "removed or edited, geometry or labels changed); rebuild it with `trajemb bundle`"
            )
        self._check_groups()
        for name in self.model_names:
            self.index(name)  # checks the index against the embeddings
            self._check_embeddings(name)

    def _check_groups(self) -> None:
        keys = {
            n: self.column(n).cast(pa.string())
            if pa.types.is_dictionary(self.column(n).type)
            else self.column(n)
            for n in ("source", "scenario_id", "track_id")
        }
        scenario = pc.binary_join_element_wise(keys["source"], keys["scenario_id"], "/")
        track = pc.binary_join_element_wise(scenario, keys["track_id"], "/")
        for name, key in (("track_group", track), ("scenario_group", scenario)):
            # Groups are ids of distinct keys: equal keys, equal group (in both directions).
            pairs = (
                pa.table({"key": key, "group": self.column(name)}).group_by(["key", "group"]).aggregate([])
            )
            if len(pairs) != len(pc.unique(key)) or len(pairs) != len(pc.unique(self.column(name))):
                raise DataError(
                    f"{self.root / META_FILE}: column {name} does not follow the windows' ids; rebuild it "
                    "with `trajemb bundle`"
                )

    def _check_embeddings(self, name: str) -> None:
        """The stored embeddings are the model's own, on a sample of rows (recomputed on the CPU)."""
        from trajemb.training.embed import embed_windows

        rows = self._sample_rows()
        stored = np.asarray(self.embeddings(name).rows(rows), dtype=np.float32)
        model, _ = self.encoder(name)
        xy = self.xy.rows(rows)
        history_steps = self.history_steps(name)
        if history_steps is not None:  # a history model embeds the first H steps in their last-state frame
            from trajemb.data.history import history_input

            xy = history_input(xy, history_steps)
        again = embed_windows(model, xy, "cpu")
        scale = max(1.0, float(np.abs(stored).max()))
        if not np.allclose(again, stored, rtol=0.0, atol=1e-3 * scale):
            raise DataError(
                f"{self.root}: the embeddings of model {name} are not what its checkpoint computes from "
                "the bundle's windows (another model's, or rows reordered); rebuild it with `trajemb bundle`"
            )
