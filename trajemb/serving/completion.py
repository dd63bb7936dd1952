"""Completing a bundle in place, as seen from outside: one process at a time, and how far it has got.

A bundle is completed (2-D layouts, evaluation, robustness curves added; ``trajemb complete``, or the
explorer in the background) under an exclusive lock on a file beside its manifest, so two explorers on
one checkout never write the same files. The process holding the lock keeps a small progress file
there: its pid, the step it is on, and the planned steps with their estimated costs, so that any
other process (a second explorer, whose own completion waits for the lock) can say what is happening
and how long it will take. The time left is the remaining cost at the speed measured so far on this
machine (a busy machine gives a longer estimate), never a fixed figure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trajemb.core.atomic import write_text_atomic

LOCK_FILE = ".bundle.json.lock"
PROGRESS_FILE = ".bundle.json.progress"


@dataclass(frozen=True)
class Step:
    """One planned step and its estimated cost (seconds on the 2-core reference machine)."""

    name: str
    cost_s: float


@dataclass(frozen=True)
class Progress:
    """What the process completing a bundle has done (times are ``time.time()`` seconds)."""

    pid: int
    started_s: float
    steps: tuple[Step, ...]
    done: int = 0  # steps finished
    step_started_s: float = 0.0  # when the current step (``steps[done]``) began
    finished_s: tuple[float, ...] = field(default=())  # when each finished step ended

    @property
    def current(self) -> str | None:
        return self.steps[self.done].name if self.done < len(self.steps) else None

    def remaining_s(self, now_s: float) -> float | None:
        """Seconds left: the cost still to go at the speed of the finished steps, less the time the
        current step has run (at least a tenth of its own share). None before a step has finished."""
        if not self.done or not self.finished_s:
            return None
        done_cost = sum(s.cost_s for s in self.steps[: self.done])
        spent = self.finished_s[-1] - self.started_s
        if done_cost <= 0 or spent <= 0:
            return None
        slowdown = spent / done_cost  # 1: as fast as the reference machine
        left = sum(s.cost_s for s in self.steps[self.done :]) * slowdown
        current = self.steps[self.done].cost_s * slowdown if self.done < len(self.steps) else 0.0
        return max(left - max(0.0, now_s - self.step_started_s), 0.1 * current)

    def summary(self, now_s: float) -> str:
        """One line: the step, how many are done, the time so far and the time left."""
        if self.current is None:
            return f"finishing ({len(self.steps)} of {len(self.steps)} steps done)"
        line = (
            f"{self.current} (step {self.done + 1} of {len(self.steps)}; "
            f"{_duration(now_s - self.started_s)} so far"
        )
        left = self.remaining_s(now_s)
        if left is None:
            expected = sum(s.cost_s for s in self.steps)
            return line + f"; about {_duration(expected)} in all on a 2-core machine)"
        return line + f"; about {_duration(left)} left at this machine's pace)"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class ProgressFile:
    """Kept by the process that holds the bundle's lock (``completion_lock``); removed when it ends."""

    def __init__(self, root: Path, steps: Sequence[Step]) -> None:
        self.path = Path(root) / PROGRESS_FILE
        now = time.time()
        self.progress = Progress(os.getpid(), now, tuple(steps), 0, now, ())
        self._write()

    def _write(self) -> None:
        write_text_atomic(self.path, json.dumps(asdict(self.progress)))

    def step_done(self) -> None:
        """The current step has finished; the next begins."""
        p = self.progress
        now = time.time()
        self.progress = Progress(p.pid, p.started_s, p.steps, p.done + 1, now, (*p.finished_s, now))
        self._write()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_progress(root: Path) -> Progress | None:
    """The progress of the process completing the bundle at ``root``; None when no process holds its
    lock (a file left by a process that was killed is ignored) or the file is unreadable."""
    path = Path(root) / PROGRESS_FILE
    if not lock_is_held(root):
        return None
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        steps = tuple(Step(str(s["name"]), float(s["cost_s"])) for s in raw["steps"])
        return Progress(
            _pid(raw["pid"]),
            float(raw["started_s"]),
            steps,
            int(raw["done"]),
            float(raw["step_started_s"]),
            tuple(float(t) for t in raw["finished_s"]),
        )
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None


def _pid(value: object) -> int:
    """A process id read from a file: a positive JSON integer, anything else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"not a process id: {value!r}")
    return value


def lock_holder(root: Path) -> int | None:
    """Who holds the completion lock of the bundle at ``root`` (this process included): None when
    nobody does, else the pid its holder wrote into the lock file (0 before it has written it, or for a
    lock taken by an older trajemb, which wrote none)."""
    try:
        fd = os.open(Path(root) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # no lock file: nobody holds it (never created here, so none is left behind)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return _pid(json.loads(os.pread(fd, 256, 0).decode("utf-8"))["pid"])
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                return 0
        except OSError:
            return None
        return None
    finally:
        os.close(fd)  # closing releases a lock taken here


def lock_is_held(root: Path) -> bool:
    """Whether some process holds the completion lock of the bundle at ``root`` (this one included)."""
    return lock_holder(root) is not None


@contextlib.contextmanager
def completion_lock(root: Path) -> Iterator[None]:
    """Hold the bundle's completion lock (waits while another process holds it).

    The lock file is removed on release, while still locked, so a completion leaves the bundle's folder
    as it found it; a process that was waiting on the removed file notices and locks the new one.
    """
    path = Path(root) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        # Who holds it, for the processes that wait (``lock_holder``): written before any work starts.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid()}).encode("utf-8"), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
