"""SIGTERM and SIGHUP as exceptions, so that a terminated command cleans up like an interrupted one.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack: ``finally`` blocks remove
temporary files (``trajemb.atomic``) and stop worker processes (``trajemb.workers``). SIGTERM (``kill``,
a container or job scheduler stopping the command) and SIGHUP (the terminal closed) kill the process
outright by default and skip all of that; ``signals_as_exceptions`` makes them unwind the same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: Signals turned into ``Terminated`` (SIGHUP does not exist on Windows).
SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None
)


class Terminated(BaseException):
    """The process received SIGTERM or SIGHUP. A ``BaseException``, like ``KeyboardInterrupt``, so that
    ``except Exception`` handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread (once: a second
    signal during the cleanup is ignored, so it cannot cut the cleanup short). Outside the main thread
    (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
