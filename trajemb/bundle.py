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
                                H steps in their last-state frame, ``trajemb.history``)
models/<name>/index.faiss       FAISS index over the embeddings (rows = windows)
models/<name>/projection.npy    (N, 2) float32 2-D layout (UMAP), optional
models/<name>/report.json       retrieval evaluation, optional
baselines.json                  the baselines' evaluation on the same queries, optional
```
Rows of every array and of ``meta.parquet`` are the same windows in the same order. A bundle reads
only files named in its own manifest, at paths built from validated names inside its own folder, and
never uses a byte before it has been checked against the manifest: small files whole when read, large
arrays block by block as rows are read (``trajemb.integrity``). Opening is cheap (the manifest and the
metadata columns asked for); models load on first use. ``trajemb.bundle_build`` writes bundles.

Legend: N windows, T steps, D embedding dim.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trajemb.errors import DataError
from trajemb.index import load_faiss_index
from trajemb.integrity import FileDigest, VerifiedArray, VerifiedFile
from trajemb.jsonio import read_json_object
from trajemb.paths import resolve_inside, safe_component
from trajemb.search import PARALLEL_EXACT_ROWS, NeighborIndex, parallel_exact

if TYPE_CHECKING:
    import pandas as pd

    from trajemb.data.maps import MapGeometry
    from trajemb.model import TrajectoryEncoder

MANIFEST = "bundle.json"
BUNDLE_FORMAT = "trajemb-bundle/2"
META_FILE = "windows/meta.parquet"
XY_FILE = "windows/xy_agent.npy"
BASELINES_FILE = "baselines.json"
EMBEDDINGS = "embeddings.npy"
INDEX = "index.faiss"
PROJECTION = "projection.npy"
REPORT = "report.json"
CHECKPOINT_DIR = "checkpoint"
MAPS_DIR = "maps"

#: Label columns of ``meta.parquet`` (dictionary-encoded strings). ``true_manoeuvre`` (synthetic ground
#: truth, ``trajemb.truth``; ``unknown`` on real data) was added by the retrieval work (issue 12).
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
    manifest = read_json_object(path, "bundle manifest")
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
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
    return manifest


class Bundle:
    """An opened bundle. Cheap to open; columns, models, indices and maps load on first use.

    Thread-safe for reading: the explorer shares one opened bundle between browser sessions.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
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
        self.xy = self._array(XY_FILE, (self.num_windows, self.num_steps, 2), "float32")

    # -- files ------------------------------------------------------------------------------------
    def has_file(self, key: str) -> bool:
        return key in self.manifest["files"]

    def _verified(self, key: str) -> VerifiedFile:
        """A file named in the manifest, checked against its digest (whole file)."""
        with self._lock:
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
                if self._parquet is None:
                    try:
                        self._parquet = pq.ParquetFile(self.path(META_FILE))
                    except (pa.ArrowInvalid, OSError) as exc:
                        raise DataError(f"{self.root / META_FILE}: unreadable ({exc})") from exc
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
                self._columns[name] = array
            return self._columns[name]

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
        model, ``trajemb.history``); None where it embeds whole windows (every bundle before issue 18)."""
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
                if isinstance(raw, faiss.IndexFlat) and raw.ntotal >= PARALLEL_EXACT_ROWS:
                    raw = parallel_exact(raw, embeddings.all(), PARALLEL_EXACT_ROWS)
                self._indices[name] = NeighborIndex(raw, self.groups, embeddings)
            return self._indices[name]

    def projection(self, name: str) -> np.ndarray | None:
        """(N, 2) 2-D layout of the model's embeddings, or None where the bundle has none (yet)."""
        key = model_file(name, PROJECTION)
        if not self.has_file(key):
            return None
        xy = self._array(key, (self.num_windows, 2), "float32").all()
        return np.asarray(xy)

    def report(self, name: str) -> dict[str, Any] | None:
        """The model's evaluation report, or None where it has not been evaluated (yet)."""
        key = model_file(name, REPORT)
        return self.json_file(key, "evaluation report") if self.has_file(key) else None

    def baselines(self) -> dict[str, Any]:
        return self.json_file(BASELINES_FILE, "baselines report") if self.has_file(BASELINES_FILE) else {}

    def encoder(self, name: str, device: str = "cpu") -> tuple[TrajectoryEncoder, dict[str, Any]]:
        """The model's encoder and card, from the bundle's verified copy of its checkpoint."""
        from trajemb.checkpoint import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_checkpoint

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

    def verify_all(self) -> None:
        """Check every file of the bundle against the manifest (the explorer does this on open)."""
        for key in self.manifest["files"]:
            if key.endswith(".npy"):
                with self._lock:
                    array = self._arrays.get(key)
                if array is not None:
                    array.file.verify_all()
                    continue
            self._verified(key)
