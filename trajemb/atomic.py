"""Atomic file writes: write beside the target, then rename, so a crash never leaves half a file.

Temporary names are hidden (``.<name>.<pid>.<host>.<random>.tmp``): readers that walk folders skip
hidden entries, and a later write to the same target removes the temporaries of a process that died
without cleaning up (``kill -9``, power loss), recognised by the host and process id in the name.
Files and folders are created with modes 0666 / 0777 less the umask, like any other program's
(``tempfile.mkstemp`` / ``mkdtemp`` would leave them at 0600 / 0700).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from trajemb.errors import DataError

log = logging.getLogger(__name__)

#: Longest part of the target's name kept in a temporary name (names are limited to 255 bytes).
_NAME_CHARS = 100
_TEMP_RE = re.compile(r"\..+\.(?P<pid>\d+)\.(?P<host>[A-Za-z0-9_-]+)\.[0-9a-f]{8}\.(?:tmp|old)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32] or "host"


def _temp_name(target: Path, suffix: str) -> str:
    return f".{target.name[:_NAME_CHARS]}.{os.getpid()}.{_host()}.{secrets.token_hex(4)}.{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by dead processes of this host; returns what went.

    Only names of our own pattern are considered, and only those whose process is gone: a concurrent
    writer on this or another host is never disturbed.
    """
    host = _host()
    removed: list[Path] = []
    try:
        entries = [
            e for e in os.scandir(folder) if e.name.startswith(".") and e.name[-4:] in (".tmp", ".old")
        ]
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.fullmatch(entry.name)
        if not match or match["host"] != host or _pid_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        log.info("removed %s, left behind by an interrupted run", path)
    return removed


#: Folders already swept by this process: one scan per folder, not one per file written (a map cache
#: holds one file per scenario).
_swept: set[str] = set()


def write_error(path: Path, exc: OSError) -> DataError:
    """A one-line error for an ``OSError`` met while writing ``path``."""
    return DataError(
        f"{path}: cannot write here ({exc.strerror or exc}); choose another --out or fix permissions"
    )


def _prepare_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target.parent, exc) from exc
    key = os.path.abspath(target.parent)
    if key not in _swept:
        remove_stale_temporaries(target.parent)
        _swept.add(key)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success rename it onto ``target``.

    On any exception (signals included) the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    _prepare_parent(target)
    tmp = target.with_name(_temp_name(target, "tmp"))
    try:
        # O_EXCL: never write through a name someone else created; 0o666 lets the umask decide.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    An existing ``target`` is moved aside first and deleted only after the new one is in place. Whether
    ``target`` may be replaced at all is the caller's decision (``trajemb.outputs``).
    """
    target = Path(target)
    _prepare_parent(target)
    tmp = target.with_name(_temp_name(target, "tmp"))
    try:
        os.mkdir(tmp, 0o777)
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        yield tmp
        old: Path | None = None
        if target.exists() or target.is_symlink():
            old = target.with_name(_temp_name(target, "old"))
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
