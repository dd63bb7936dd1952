"""Whether an ``--out`` may be written: trajemb only ever replaces what trajemb itself wrote.

Rules, checked before any work starts:

* an absent path is fine if its parent folder can be created and written;
* an existing artefact of the same kind that trajemb wrote may be replaced: a synthetic-scenario folder
  (its ``trajemb_synth.json`` marker), a trajectory table (a parquet file carrying the trajemb
  manifest), a result list (``trajemb.analysis.export``: a parquet file carrying its marker, or a CSV file whose
  header starts ``rank,window_id,``), a forecast scores file (``trajemb forecast --out``: a JSON
  object of methods and their scores), a bundle (``bundle.json`` with a ``trajemb-bundle/`` format), a
  training run folder (its ``trajemb_run.json`` marker, or a run written before markers existed:
  ``train_config.json`` beside a checkpoint whose card has a ``trajemb-checkpoint/`` format), a realism
  report folder (``realism.json``);
* an empty folder is fine for folder outputs;
* anything else is refused with one line that says what to do: a non-empty folder trajemb did not
  write, a file where a folder is expected or the other way round, a device, FIFO or socket, a
  symbolic link, the current folder, the home folder or the file-system root (or a folder above
  them), a path that is one of the inputs, lies inside an input folder or contains an input, and a
  path with a name longer than the file system allows.

A check remembers what it saw (``trajemb.core.atomic.note_checked``): the atomic write that follows takes
the output's lock and replaces only what was checked. A training run folder is written in place, so
``trajemb.training.train`` holds its lock (``trajemb.core.atomic.output_lock``) from the check to the last epoch.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from trajemb.core.atomic import is_lock_name, is_temporary_name, note_checked
from trajemb.core.errors import ConfigError, DataError

OutputKind = Literal["table", "synth", "bundle", "run", "results", "forecast", "realism"]

#: Written at the root of every ``trajemb synth`` folder.
SYNTH_MARKER = "trajemb_synth.json"
SYNTH_GENERATOR = "trajemb synth"
#: Written at the root of every training run folder when training starts.
RUN_MARKER = "trajemb_run.json"
RUN_KIND = "trajemb training run"
#: Written at the root of every ``trajemb realism --out`` folder (the report itself).
REALISM_MARKER = "realism.json"
REALISM_KIND = "trajemb realism report"
#: A bundle's manifest and the prefix of its ``format`` (``trajemb.analysis.bundle`` owns both; repeated here so
#: that checking an output does not import FAISS and UMAP).
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT_PREFIX = "trajemb-bundle/"
CHECKPOINT_FORMAT_PREFIX = "trajemb-checkpoint/"
#: The key of the trajemb manifest in a table's parquet metadata (``trajemb.data.store.METADATA_KEY``).
TABLE_METADATA_KEY = b"trajemb"
#: The marker of a result list in its parquet metadata, and how a result list's CSV header begins.
RESULTS_METADATA_KEY = b"trajemb_results"
RESULTS_CSV_HEADER = b"rank,window_id,"

_DESCRIPTION: dict[str, str] = {
    "table": "trajectory table",
    "synth": "synthetic-scenario folder",
    "bundle": "bundle",
    "run": "training run folder",
    "results": "result list",
    "forecast": "forecast scores file",
    "realism": "realism report folder",
}


#: A file name each file output kind could take inside a folder given as ``--out`` by mistake.
_FILE_EXAMPLE: dict[str, str] = {"table": "table.parquet", "results": "list.csv", "forecast": "scores.json"}


def _json_field(path: Path, key: str) -> object:
    """``key`` of the JSON object in ``path``, or None where the file is missing or not such an object."""
    from trajemb.core.jsonio import read_json_object

    try:
        # The default cap: a bundle's manifest grows with its maps (about 200 bytes each).
        return read_json_object(path, "marker").get(key)
    except DataError:
        return None


def is_trajemb_table(path: Path) -> bool:
    """Whether ``path`` is a regular file in parquet format carrying the trajemb manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException):
        return False
    return TABLE_METADATA_KEY in metadata


def is_results_file(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a result list trajemb wrote (``trajemb.analysis.export``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            head = fh.read(len(RESULTS_CSV_HEADER))
        if head == RESULTS_CSV_HEADER:
            return True
        if head[:4] != b"PAR1":
            return False
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException):
        return False
    return RESULTS_METADATA_KEY in metadata


#: The score keys every method of a ``trajemb forecast --out`` file holds (``trajemb.analysis.forecast_metrics``).
FORECAST_SCORE_PREFIXES = ("minADE", "minFDE", "MR", "brier_minFDE")


def is_forecast_scores(path: Path) -> bool:
    """Whether ``path`` is a JSON file as ``trajemb forecast --out`` writes: an object of methods, each an
    object of ``queries`` and the four scores (``minADE6``, ``minFDE6``, ``MR6``, ``brier_minFDE6`` at K = 6)."""
    from trajemb.core.jsonio import read_json_object

    try:
        data = read_json_object(path, "forecast scores", max_bytes=1 << 20)
    except DataError:
        return False

    def scores(value: object) -> bool:
        if not isinstance(value, dict) or "queries" not in value:
            return False
        others = sorted(set(value) - {"queries"})
        return len(others) == len(FORECAST_SCORE_PREFIXES) and all(
            any(k.startswith(p) and k[len(p) :].isdigit() for k in others) for p in FORECAST_SCORE_PREFIXES
        )

    return bool(data) and all(scores(v) for v in data.values())


def artefact_kind(path: Path) -> OutputKind | None:
    """Which trajemb artefact ``path`` is (see the module docstring), or None."""
    path = Path(path)
    if path.is_symlink():
        return None
    if path.is_file():
        if is_trajemb_table(path):
            return "table"
        if is_results_file(path):
            return "results"
        return "forecast" if is_forecast_scores(path) else None
    if not path.is_dir():
        return None
    if _json_field(path / SYNTH_MARKER, "generator") == SYNTH_GENERATOR:
        return "synth"
    fmt = _json_field(path / BUNDLE_MANIFEST, "format")
    if isinstance(fmt, str) and fmt.startswith(BUNDLE_FORMAT_PREFIX):
        return "bundle"
    if _json_field(path / RUN_MARKER, "kind") == RUN_KIND:
        return "run"
    if _json_field(path / REALISM_MARKER, "kind") == REALISM_KIND:
        return "realism"
    if (path / "train_config.json").is_file():
        for checkpoint in ("last", "best"):
            fmt = _json_field(path / checkpoint / "card.json", "format")
            if isinstance(fmt, str) and fmt.startswith(CHECKPOINT_FORMAT_PREFIX):
                return "run"
    return None


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _refuse(out: Path, kind: OutputKind, why: str, todo: str) -> DataError:
    return DataError(f"refusing to write the {_DESCRIPTION[kind]} to {out}: {why}; {todo}")


def _check_protected(out: Path, kind: OutputKind) -> None:
    target = _resolved(out)
    protected: list[tuple[Path, str]] = []
    with contextlib.suppress(OSError):  # the current folder was deleted: nothing to protect there
        protected.append((Path.cwd().resolve(), "the current folder"))
    with contextlib.suppress(RuntimeError):  # no home folder known: nothing to protect
        protected.append((Path.home().resolve(), "your home folder"))
    for place, name in protected:
        if target == place or place.is_relative_to(target):
            what = name if target == place else f"a folder above {name}"
            raise _refuse(out, kind, f"it is {what}", "give a new folder, e.g. --out <folder>/out")
    if target == Path(target.anchor):
        raise _refuse(out, kind, "it is the file-system root", "give a new folder")


def _check_inputs(out: Path, kind: OutputKind, inputs: Iterable[Path | str]) -> None:
    target = _resolved(out)
    for given in inputs:
        source = _resolved(Path(given))
        same = target == source
        if not same and target.exists() and source.exists():
            try:
                same = os.path.samefile(target, source)
            except OSError:
                same = False
        if same:
            raise _refuse(out, kind, f"it is the input {given}", "give a new path for the output")
        if target.is_relative_to(source):
            raise _refuse(
                out, kind, f"it lies inside the input folder {given}", "write it outside the inputs"
            )
        if source.is_relative_to(target):
            raise _refuse(out, kind, f"it contains the input {given}", "give a path that holds no input")


def _check_parent_writable(out: Path, kind: OutputKind) -> None:
    """The nearest existing folder above ``out`` must be a folder we may create entries in."""
    parent = Path(os.path.abspath(out)).parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: creating the folder would fail later
            break
        parent = parent.parent
    if not parent.is_dir():
        raise _refuse(out, kind, f"{parent} is not a folder", "give a path under a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _refuse(out, kind, f"the folder {parent} is not writable", "choose a folder you can write to")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a file where a parent folder should be
        return None
    except OSError as exc:
        raise DataError(f"{path}: cannot inspect the output path ({exc.strerror})") from exc


def _check_existing_kind(out: Path, kind: OutputKind, st: os.stat_result, want_dir: bool) -> None:
    what = _DESCRIPTION[kind]
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(out, kind, "it is a symbolic link", "give the real path it points to, or a new path")
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise _refuse(out, kind, "it is a device, FIFO or socket, not a file or folder", "give a new path")
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise _refuse(out, kind, "it is a file, not a folder", "give a new folder path")
    if not want_dir and stat.S_ISDIR(st.st_mode):
        example = _FILE_EXAMPLE.get(kind, "out")
        raise _refuse(out, kind, "it is a folder", f"give a file path, e.g. {out}/{example}")
    if want_dir:
        try:
            # Temporaries and locks of trajemb runs do not count (``kill -9`` can leave them behind).
            empty = not any(
                not is_temporary_name(e.name) and not is_lock_name(e.name) for e in os.scandir(out)
            )
        except OSError as exc:
            raise _refuse(
                out, kind, f"it cannot be listed ({exc.strerror})", "give a new folder path"
            ) from exc
        if empty:
            return
    found = artefact_kind(out)
    if found == kind:
        return
    if found is not None:
        raise _refuse(out, kind, f"it holds a {_DESCRIPTION[found]}, not a {what}", "give a new path")
    if want_dir:
        raise _refuse(
            out,
            kind,
            f"it is a non-empty folder that trajemb did not write as a {what}",
            "give a new or empty folder, or move its contents away yourself",
        )
    raise _refuse(
        out,
        kind,
        f"the file exists and is not a {what} written by trajemb",
        "give a new path, or move the file away yourself",
    )


def _check(out: Path | str, kind: OutputKind, inputs: Iterable[Path | str], want_dir: bool) -> None:
    if not str(out).strip():
        raise ConfigError(f"--out must name a path for the {_DESCRIPTION[kind]}, got {str(out)!r}")
    out = Path(out)
    if "\0" in str(out):
        raise ConfigError(f"--out {str(out)!r} contains a NUL character")
    check_name_lengths(out, "--out")
    _check_protected(out, kind)
    _check_inputs(out, kind, inputs)
    st = _lstat(out)
    if st is not None:
        _check_existing_kind(out, kind, st, want_dir)
    _check_parent_writable(out, kind)
    note_checked(out)


#: Longest file name (bytes) on the common file systems (ext4, XFS, APFS, NTFS in UTF-16 units).
MAX_NAME_BYTES = 255


def check_name_lengths(path: Path | str, what: str) -> None:
    """Refuse a path with a name the file system cannot hold, before anything is written.

    Raises:
        ConfigError: naming the over-long component and its length.
    """
    for part in Path(path).parts:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > MAX_NAME_BYTES:
            raise ConfigError(
                f"{what} {str(path)[:80]!r}...: the name {part[:40]!r}... is {size} bytes, too long for a "
                f"file name (at most {MAX_NAME_BYTES}); choose a shorter one"
            )


def check_output_dir(out: Path | str, kind: OutputKind, inputs: Iterable[Path | str] = ()) -> None:
    """Raise unless the folder ``out`` may be (re)written as a ``kind`` artefact (see module docstring).

    ``inputs``: every file or folder the command reads (``out`` may not be, contain or lie inside one).

    Raises:
        DataError: one line naming ``out``, why it is refused, and what to do.
    """
    _check(out, kind, inputs, want_dir=True)


def check_output_file(out: Path | str, kind: OutputKind = "table", inputs: Iterable[Path | str] = ()) -> None:
    """Raise unless the file ``out`` may be (re)written as a ``kind`` artefact; as ``check_output_dir``."""
    _check(out, kind, inputs, want_dir=False)


def check_cache_dir(path: Path | str, what: str, inputs: Iterable[Path | str] = ()) -> None:
    """Raise unless ``path`` can hold a cache trajemb adds files to (``--maps-dir``): absent with a
    writable parent, or a writable folder; never an input or inside one. Existing files are never
    replaced by a cache, so a non-empty folder is fine."""
    path = Path(path)
    target = _resolved(path)
    for given in inputs:
        source = _resolved(Path(given))
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise DataError(f"{what} {path} overlaps the input {given}; keep it outside the inputs")
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{what} {path} exists and is not a folder; give a folder path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DataError(f"{what} {path} is not writable; choose a folder you can write to")
        return
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path} cannot be created under {parent}; choose a folder you can write to")
