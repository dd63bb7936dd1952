"""Names and paths that come from files (cards, manifests, configs, table columns, scenario ids).

A name read from a file is data, not a path: it may become one component of a path inside a folder
we own, never a way out of it. ``safe_component`` refuses (never rewrites) anything that a file
system of any OS would read as more than one plain name; ``resolve_inside`` joins a relative path
onto a root and checks that the result, symlinks followed, is still inside the root.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from trajemb.core.errors import DataError

#: File systems allow 255 bytes per name; leave room for the prefixes and suffixes of temporary
#: files (``atomic.py``) and extensions added to a name (``<map_key>.npz``).
MAX_COMPONENT_BYTES = 200

#: Names Windows maps to devices whatever their extension (``NUL.json`` is the null device there).
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{i}" for p in ("COM", "LPT") for i in (*"123456789", "¹", "²", "³")]
)
#: Line and paragraph separators: they break the one-line messages and listings a name appears in.
_BREAKS = ("Zl", "Zp")
#: Separators of POSIX (``/``) and Windows (``\\``, and ``:`` for drives and alternate data streams).
_SEPARATORS = ("/", "\\", ":")


def safe_component(name: object, what: str) -> str:
    """``name`` if it can be used as exactly one file or folder name inside another folder.

    Refused: anything but a non-empty ``str``; ``.`` and ``..``; path separators of any OS
    (``/``, ``\\``, ``:``); control, format, surrogate, private-use or unassigned characters and
    line/paragraph separators (NUL, newlines, bidi overrides, ...); leading or trailing white space
    and trailing dots (Windows drops them, so two names would meet in one file); Windows device names;
    more than ``MAX_COMPONENT_BYTES`` bytes of UTF-8.

    Args:
        name: the value read from a file.
        what: what it is, for the message (``"model name"``, ``"map key"``).

    Raises:
        DataError: naming the value and why it was refused.
    """
    if not isinstance(name, str):
        raise DataError(f"{what} must be a string, got {type(name).__name__} {name!r:.80}")
    reason = _unsafe_reason(name)
    if reason:
        raise DataError(f"{what} {name!r:.120} cannot be used as a file name: {reason}")
    return name


def _unsafe_reason(name: str) -> str | None:
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "it names a folder itself"
    sep = next((s for s in _SEPARATORS if s in name), None)
    if sep is not None:
        return f"it contains the path separator {sep!r}"
    # Plain ASCII names (almost every id) have no control or invisible characters: skip the per-character
    # Unicode lookups, which dominate opening a bundle of many maps.
    bad = (
        None
        if name.isascii() and name.isprintable()
        else next(
            (c for c in name if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in _BREAKS), None
        )
    )
    if bad is not None:
        return f"it contains the control or invisible character U+{ord(bad):04X}"
    if name != name.strip():
        return "it starts or ends with white space"
    if name.endswith("."):
        return "it ends with a dot"
    if name.split(".")[0].upper() in _WINDOWS_DEVICES:
        return "it is a device name on Windows"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        return f"it is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def is_safe_component(name: object) -> bool:
    """Whether ``safe_component`` would accept ``name``."""
    return isinstance(name, str) and _unsafe_reason(name) is None


def resolve_inside(root: Path | str, relative: Path | str) -> Path:
    """``root / relative`` resolved (symlinks followed), refused unless it lies inside ``root``.

    ``relative`` may have several components (``models/a/index.faiss``); each must pass
    ``safe_component`` (so no ``..``, no absolute path, no drive). The check runs on the resolved path,
    so a symlink inside ``root`` that points out of it is refused too. The path need not exist.

    Raises:
        DataError: naming the relative path and the root.
    """
    text = os.fspath(relative)
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise DataError(f"{text!r:.120} must be a path relative to {root}, not an absolute one")
    parts = text.split("/")
    for part in parts:
        safe_component(part, f"path {text!r:.120}: component")
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base):
        raise DataError(f"{text!r:.120} leads out of {root} (to {target}); refusing to follow it")
    return target


def regular_file_size(path: Path, what: str, max_bytes: int | None = None, expected: str = "") -> int:
    """The size in bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    A FIFO or device would block or never end, so only regular files are read.

    Args:
        path: the file.
        what: what the file should be, for messages (``"model card"``, ``"trajectory table"``).
        max_bytes: refuse larger files (``None``: any size).
        expected: what to give instead, appended to the message for a folder or special file.

    Raises:
        DataError: missing or unreadable, a folder or special file, or larger than ``max_bytes``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    hint = f"; {expected}" if expected else ""
    if stat.S_ISDIR(st.st_mode):
        article = "an" if what[:1] in tuple("aeiou") else "a"
        raise DataError(f"{path}: is a folder, not {article} {what}{hint}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: the {what} is not a regular file{hint}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DataError(f"{path}: the {what} is {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
    return int(st.st_size)
