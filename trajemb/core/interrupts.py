"""Signals as exceptions that cannot be lost, so that a stopped command cleans up and writes nothing.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack: ``finally`` blocks remove
temporary files (``trajemb.core.atomic``) and stop worker processes (``trajemb.core.workers``). SIGTERM (``kill``,
a container or job scheduler stopping the command) and SIGHUP (the terminal closed) kill the process
outright by default and skip all of that; ``signals_as_exceptions`` makes them unwind the same way.

An exception raised by a signal handler lands wherever the main thread happens to be, and some places
swallow it: a callback from compiled code (llvmlite's object-cache callback while numba compiles
UMAP's functions), a ``__del__`` method, a weakref callback. Python reports those through
``sys.unraisablehook`` and goes on, so the stage would finish, write its result and exit 0. Within
``signals_as_exceptions`` the signal therefore stays *pending* until the command ends:

* a swallowed signal exception is raised again at once: a short-lived thread re-delivers the signal
  to the main thread (``_thread.interrupt_main``), whose handler raises it at the next line of Python
  that runs there (again and again, should that be another callback, until it lands in ordinary
  code);
* ``raise_if_pending`` raises it at every point where output becomes visible (the rename of an atomic
  write) and where the command reports success, so an exception dropped silently by third-party code
  (``except BaseException: pass``) still ends the command with 128 + signal and no output.

A second signal while the first one's exception unwinds the stack is ignored, so it cannot cut the
cleanup short. Signals that were ignored when the block started (``nohup`` ignores SIGHUP) stay
ignored.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

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


class _State:
    """The signal received inside the current ``signals_as_exceptions`` block (main thread only)."""

    def __init__(self) -> None:
        self.active = False
        self.pending: int | None = None  # the first signal received
        self.unwinding = False  # its exception is propagating (a second signal is then ignored)
        self.in_hook = False  # ``sys.unraisablehook`` is running (raising there would be lost too)
        self.scheduled = False  # a re-delivery is on its way


_state = _State()


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def pending_signal() -> int | None:
    """The signal that stopped the current command, or None (also None outside the block)."""
    return _state.pending if _state.active else None


def raise_if_pending() -> None:
    """Raise the pending signal's exception (``Terminated`` or ``KeyboardInterrupt``), if there is one.

    Called before output becomes visible (``trajemb.core.atomic``) and before a command reports success
    (``trajemb.cli``): a signal whose exception was swallowed on the way still stops the command there.
    """
    if _state.active and _state.pending is not None:
        _state.unwinding = True
        raise _exception_for(_state.pending)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.in_hook:  # raised here it would be lost as well: come back right after the hook
        _redeliver()
        return
    if _state.unwinding:  # the first signal's exception is on its way up: let the cleanup finish
        return
    if _state.pending is None:
        _state.pending = signum
    _state.unwinding = True
    raise _exception_for(_state.pending)


#: How long the re-delivering thread waits, so that the callback or hook that swallowed the signal's
#: exception has returned before the handler runs again.
REDELIVER_DELAY_S = 0.005


def _redeliver() -> None:
    """Deliver the pending signal to the main thread again, from a thread of its own, a moment later."""
    if _state.pending is None or _state.scheduled:
        return
    _state.scheduled = True
    sig = signal.Signals(_state.pending)

    def deliver() -> None:
        time.sleep(REDELIVER_DELAY_S)
        _state.scheduled = False
        _thread.interrupt_main(sig)

    threading.Thread(target=deliver, daemon=True, name="trajemb-redeliver-signal").start()


def _unraisable_hook(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if _state.pending is not None and isinstance(exc, (Terminated, KeyboardInterrupt)):
            # Our signal's exception died in a callback or finaliser: raise it again in the next line of
            # Python the main thread runs.
            _state.in_hook = True
            try:
                _state.unwinding = False
                _redeliver()
            finally:
                _state.in_hook = False
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` and SIGINT ``KeyboardInterrupt`` in the
    main thread, and cannot be lost (module docstring). Outside the main thread (where Python cannot
    install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [*SIGNALS]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        wanted.append(signal.SIGINT)
    previous: dict[signal.Signals, Any] = {}
    for sig in wanted:
        if signal.getsignal(sig) is signal.SIG_IGN:  # ignored on purpose (nohup): keep it so
            continue
        previous[sig] = signal.signal(sig, _handler)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    outer = (_state.active, _state.pending, _state.unwinding)
    _state.active, _state.pending, _state.unwinding = True, None, False
    _state.in_hook = _state.scheduled = False
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = previous_hook
        _state.active, _state.pending, _state.unwinding = outer
