"""Worker processes that never outlive the command that started them.

``process_pool`` wraps ``ProcessPoolExecutor`` for ``prepare`` and ``synth``, and ``imap_ordered``
feeds it (instead of ``Executor.map``, whose clean-up cancels futures that Python 3.11's broken-pool
handler then fails on, printing a traceback from its thread when the workers are terminated):

* when the block exits with an exception (a bad input, Ctrl-C, SIGTERM turned into an exception by
  the CLI) no further chunk starts, and workers that do not finish their current one within a few
  seconds (hung) are terminated;
* each worker ignores SIGINT (the parent decides; a terminal's Ctrl-C reaches the whole process group)
  and drops SIGTERM handlers inherited through ``fork``;
* if the parent dies without cleaning up (``kill -9``), each worker dies too: on Linux the kernel
  sends it SIGKILL (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread exits the worker
  once its parent process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.connection import wait as mp_wait
from multiprocessing.process import BaseProcess
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Most worker processes (``--workers``) a command starts.
MAX_WORKERS = 512
#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1
#: How often a worker's watchdog looks for its parent (seconds).
WATCHDOG_INTERVAL_S = 0.5
#: How long workers get to finish their current chunk when the command stops early (seconds).
GRACE_S = 2.0


def _parent_gone(parent_pid: int, ppid_at_start: int) -> bool:
    # Re-parenting (to init or a subreaper) is the portable sign of a dead parent; the pid check
    # covers start methods where the worker's parent is a fork server, not the command itself.
    if os.getppid() != ppid_at_start:
        return True
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _watchdog(parent_pid: int, ppid_at_start: int) -> None:
    while True:
        if _parent_gone(parent_pid, ppid_at_start):
            os._exit(1)  # no cleanup to do: the parent owns every output
        time.sleep(WATCHDOG_INTERVAL_S)


def init_worker(parent_pid: int) -> None:
    """``ProcessPoolExecutor`` initializer: tie the worker's life to ``parent_pid``'s."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    tie_to_parent(parent_pid)


def tie_to_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` dies (Linux parent-death signal, and a watchdog thread
    everywhere); signal handlers are left as they are."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog alone covers it
            pass
    ppid = os.getppid()
    # The parent may have died before prctl took effect; the first check catches that.
    if _parent_gone(parent_pid, ppid):
        os._exit(1)
    threading.Thread(target=_watchdog, args=(parent_pid, ppid), daemon=True, name="parent-watchdog").start()


def _processes(pool: ProcessPoolExecutor) -> list[BaseProcess]:
    # ``ProcessPoolExecutor`` gains terminate_workers() only in Python 3.14; until then its process
    # table is the one way to reach the workers.
    table = getattr(pool, "_processes", None) or {}
    return list(table.values())


def _wait_exited(processes: list[BaseProcess], timeout_s: float) -> list[BaseProcess]:
    """Wait up to ``timeout_s`` for ``processes`` to exit; returns those still running. Waits on their
    sentinels rather than joining them: the pool's own thread reaps them, and a process reaped by two
    threads can look alive to one of them."""
    deadline = time.monotonic() + timeout_s
    running = list(processes)
    while running:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = set(mp_wait([p.sentinel for p in running], timeout=left))
        running = [p for p in running if p.sentinel not in ready]
    return running


def stop_pool(pool: ProcessPoolExecutor, grace_s: float = GRACE_S, timeout_s: float = 5.0) -> None:
    """Stop ``pool`` after a failure or a signal: no new chunk starts, running ones get ``grace_s`` to
    finish, then workers still running (hung) are terminated, and killed after ``timeout_s``.

    Workers are not terminated at once because one killed while sending its result leaves half a
    message in the result pipe, and the pool's reader thread would wait forever for the rest; as a
    last resort the parent's copy of that pipe's writing end is closed so the reader meets EOF and
    the pool shuts down as broken.
    """
    processes = _processes(pool)
    # Private until Python 3.14's terminate_workers(): the pool's thread and its result pipe.
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)
    results = getattr(pool, "_result_queue", None)
    pool.shutdown(wait=False, cancel_futures=True)
    hung = _wait_exited(processes, grace_s)
    for process in hung:
        process.terminate()
    for process in _wait_exited(hung, timeout_s):
        process.kill()
    if manager is not None and manager.is_alive():
        manager.join(timeout_s)
        if manager.is_alive() and results is not None:
            with contextlib.suppress(Exception):
                results._writer.close()
            manager.join(timeout_s)
        if manager.is_alive():
            log.warning("the worker pool did not shut down within %.0f s", 2 * timeout_s)


@contextlib.contextmanager
def process_pool(max_workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` whose workers die with the block's failure or the parent's death.

    A normal exit waits for the workers; an exception (``GeneratorExit`` of an abandoned generator
    included) stops them (``stop_pool``) before it propagates.
    """
    pool = ProcessPoolExecutor(max_workers=max_workers, initializer=init_worker, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def imap_ordered(
    pool: ProcessPoolExecutor, fn: Callable[[T], R], items: Iterable[T], in_flight: int
) -> Iterator[R]:
    """``fn(item)`` for every item, computed in ``pool``, yielded in order with at most ``in_flight``
    items submitted ahead (memory stays bounded however many items there are).

    Abandoning the iterator cancels nothing itself (``Executor.map`` does, and Python 3.11's pool then
    fails on the cancelled futures when a worker is terminated): ``process_pool``'s exit stops the pool.
    """
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
