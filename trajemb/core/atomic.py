"""Atomic file writes: write beside the target, then rename, so a crash never leaves half a file.

Temporary names are hidden (``.<name>.<pid>.<host>.<random>.tmp``): readers that walk folders skip
hidden entries, and a later write to the same target removes the temporaries of a process that died
without cleaning up (``kill -9``, power loss), recognised by the host and process id in the name.
Files and folders are created with modes 0666 / 0777 less the umask, like any other program's
(``tempfile.mkstemp`` / ``mkdtemp`` would leave them at 0600 / 0700).

Every folder write (``atomic_dir``) and guarded file write holds a lock on its target for as long as
it runs (``output_lock``: a hidden ``.<name>.trajemb-lock`` beside the target, locked with ``flock`` and
naming the holder's process, host, command and start time), so a second process writing the same
output stops at once with one line naming the first; a lock left by a dead process is taken over (the
kernel releases ``flock`` locks of a process that dies, ``kill -9`` included). A target that changed
between ``trajemb.core.outputs`` checking it and the lock being taken is not replaced either.

Nothing becomes visible after a signal (``trajemb.core.interrupts.raise_if_pending`` before every rename),
and a guarded write refuses to replace a target that changed while it was being written (another
process wrote the same output): the other process's result stays and this one's is dropped. A full
disk is reported against the output being written, never against an input.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trajemb.core.errors import DataError
from trajemb.core.interrupts import raise_if_pending

log = logging.getLogger(__name__)

#: Longest part (in UTF-8 bytes) of the target's name kept in a temporary name (names are limited to
#: 255 bytes; the rest of a temporary name takes at most 60).
_NAME_BYTES = 100
#: Errors that only writing can cause: they concern the output, whatever file name the error carries
#: (``shutil.copyfile`` names its *source* when the disk fills up).
WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_TEMP_RE = re.compile(r"\..+\.(?P<pid>\d+)\.(?P<host>[A-Za-z0-9_-]+)\.[0-9a-f]{8}\.(?:tmp|old)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32] or "host"


def short_name(name: str, max_bytes: int = _NAME_BYTES) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of UTF-8, at a character boundary."""
    return name.encode("utf-8", "surrogateescape")[:max_bytes].decode("utf-8", "ignore")


def _temp_name(target: Path, suffix: str) -> str:
    return f".{short_name(target.name)}.{os.getpid()}.{_host()}.{secrets.token_hex(4)}.{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one of our temporaries (``.<name>.<pid>.<host>.<random>.tmp`` or ``.old``)."""
    return _TEMP_RE.fullmatch(name) is not None


def _remove_unlocked(path: Path) -> bool:
    """Remove the lock file ``path`` if no process holds it (left by a process that was killed)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by dead processes of this host, and the lock files
    nobody holds; returns what went.

    Only names of our own pattern are considered, and only those whose process is gone: a concurrent
    writer on this or another host is never disturbed.
    """
    host = _host()
    removed: list[Path] = []
    try:
        entries = [
            e
            for e in os.scandir(folder)
            if e.name.startswith(".") and (e.name[-4:] in (".tmp", ".old") or is_lock_name(e.name))
        ]
    except OSError:
        return removed
    for entry in entries:
        if is_lock_name(entry.name):
            if entry.is_file(follow_symlinks=False) and _remove_unlocked(Path(entry.path)):
                removed.append(Path(entry.path))
            continue
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
    if exc.errno in WRITE_ONLY_ERRNOS:
        return DataError(
            f"{path}: the device ran out of space while writing it ({exc.strerror or exc}); nothing was "
            "replaced; free some space or choose another --out"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return DataError(
            f"{str(path)[:80]!r}...: has a name too long for the file system (at most 255 bytes); choose a "
            "shorter one"
        )
    return DataError(
        f"{path}: cannot write here ({exc.strerror or exc}); choose another --out or fix permissions"
    )


def path_identity(path: Path) -> tuple[int, ...] | None:
    """What tells whether ``path`` changed: device, inode, type, size, modification and change times
    (None where it does not exist)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise write_error(path, exc) from exc
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_unchanged(target: Path, before: tuple[int, ...] | None) -> None:
    if path_identity(target) != before:
        raise DataError(
            f"{target}: {'appeared' if before is None else 'changed'} while this run was writing it "
            "(another process writing the same output?); left it as it is and dropped this run's result"
        )


# -- locks -------------------------------------------------------------------------------------------
LOCK_SUFFIX = ".trajemb-lock"
#: Errors of file systems that do not support ``flock`` (the write goes on unlocked, with a warning).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: hidden, beside it (a folder replaced by a rename keeps its lock)."""
    target = Path(os.path.abspath(target))
    name = short_name(target.name)
    if name != target.name:  # cut: keep names that share a long prefix apart
        name = f"{short_name(name, 80)}-{hashlib.sha256(target.name.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"
    return target.with_name(f".{name}{LOCK_SUFFIX}")


def is_lock_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(LOCK_SUFFIX)


@dataclass
class _Held:
    fd: int | None
    thread: int
    count: int


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


def _holder_text(fd: int) -> str:
    """Who holds a lock, from what its holder wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host, command, since = info["pid"], info["host"], info["command"], info["since"]
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    return f"process {pid} on {host} (`{' '.join(str(command).split())[:160]}`, since {since})"


def _busy(target: Path, holder: str) -> DataError:
    return DataError(
        f"{target}: another trajemb run is writing it: {holder}; wait for it to finish, stop it, or "
        "choose another --out"
    )


def _acquire(target: Path) -> str:
    path = lock_path(target)
    key = str(path)
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(key)
        if held is not None:
            if held.thread != me:
                raise _busy(target, f"this process ({os.getpid()}), in another thread")
            held.count += 1
            return key
    _prepare_parent(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise write_error(target, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise _busy(target, holder) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LOCKS:
                raise write_error(target, exc) from exc
            log.warning("%s: the file system does not support locks; concurrent runs are not detected", path)
            with _held_lock:
                _held[key] = _Held(None, me, 1)
            return key
        # The holder we waited for may have removed the file as it released it: lock the current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv)[:400],
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    with _held_lock:
        _held[key] = _Held(fd, me, 1)
    return key


def _release(key: str) -> None:
    with _held_lock:
        held = _held[key]
        held.count -= 1
        if held.count:
            return
        del _held[key]
    if held.fd is not None:
        # Remove the file while still holding the lock, then unlock by closing: a waiting process that
        # locks the removed file notices it is gone (``_acquire``) and tries again.
        with contextlib.suppress(OSError):
            os.unlink(key)
        os.close(held.fd)
    else:
        with contextlib.suppress(OSError):
            os.unlink(key)


class OutputLock:
    """A held lock on an output (``output_lock``); ``release`` it once (later calls do nothing)."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self._key: str | None = _acquire(self.target)

    def release(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            _release(key)


@contextlib.contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock on ``target`` for the block (re-entrant within a thread).

    Raises:
        DataError: another process (or another thread of this one) holds it: one line naming it.
    """
    lock = OutputLock(target)
    try:
        yield
    finally:
        lock.release()


#: Identity of each output when ``trajemb.core.outputs`` last checked it (absolute path -> identity).
_checked: dict[str, tuple[int, ...] | None] = {}


def note_checked(target: Path) -> None:
    """Remember ``target`` as ``trajemb.core.outputs`` saw it: the write that follows replaces only that."""
    _checked[os.path.abspath(target)] = path_identity(Path(target))


def _check_still_as_checked(target: Path) -> None:
    key = os.path.abspath(target)
    if key in _checked:
        before = _checked.pop(key)
        if path_identity(target) != before:
            raise DataError(
                f"{target}: {'appeared' if before is None else 'changed'} after it was checked (another "
                "process wrote it meanwhile?); left it as it is; run again to replace it"
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
def atomic_path(target: Path, guard: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success rename it onto ``target``.

    On any exception (signals included) the temporary file is removed and ``target`` is left untouched.
    With ``guard``, a ``target`` that appeared or changed meanwhile is not replaced (``DataError``).
    """
    target = Path(target)
    _prepare_parent(target)
    with output_lock(target) if guard else contextlib.nullcontext():
        if guard:
            _check_still_as_checked(target)
        before = path_identity(target) if guard else None
        tmp = target.with_name(_temp_name(target, "tmp"))
        try:
            # O_EXCL: never write through a name someone else created; 0o666 lets the umask decide.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise write_error(target, exc) from exc
        try:
            try:
                yield tmp
                raise_if_pending()
                if guard:
                    _check_unchanged(target, before)
                os.replace(tmp, target)
            except OSError as exc:
                if exc.errno in WRITE_ONLY_ERRNOS:
                    raise write_error(target, exc) from exc
                raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    An existing ``target`` is moved aside first and deleted only after the new one is in place. Whether
    ``target`` may be replaced at all is the caller's decision (``trajemb.core.outputs``); the block holds
    the lock on ``target`` (``output_lock``), and a ``target`` that changed since it was checked or while
    the block ran is never replaced (``DataError``).
    """
    target = Path(target)
    _prepare_parent(target)
    with output_lock(target):
        _check_still_as_checked(target)
        before = path_identity(target)
        tmp = target.with_name(_temp_name(target, "tmp"))
        try:
            os.mkdir(tmp, 0o777)
        except OSError as exc:
            raise write_error(target, exc) from exc
        try:
            try:
                yield tmp
            except OSError as exc:
                if exc.errno in WRITE_ONLY_ERRNOS:
                    raise write_error(target, exc) from exc
                raise
            raise_if_pending()
            _check_unchanged(target, before)
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
