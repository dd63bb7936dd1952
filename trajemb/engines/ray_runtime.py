"""Connecting to Ray: the lazy import, one session per command, and the Ray Data settings we rely on.

Ray is optional (``pip install -e ".[ray]"``), so it is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from trajemb.errors import ConfigError

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'pip install -e ".[ray]"'


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or a one-line ``ConfigError`` saying how to install it."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs Ray ({exc}); install it with {RAY_INSTALL_HINT}") from exc
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Yield ``ray`` connected to a cluster; shut down on exit only what this call started.

    ``address`` None lets Ray decide: ``RAY_ADDRESS``, else a cluster started on this machine with
    ``ray start``, else a new local one (``num_cpus`` caps that one). When the caller already called
    ``ray.init`` (a notebook, the tests), that connection is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        if address is not None:
            log.warning("Ray is already initialised in this process; ignoring address %s", address)
        with _quiet_ray_data():
            yield ray
        return
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    kwargs: dict[str, Any] = {"num_cpus": num_cpus} if num_cpus is not None else {}
    with keep_sigterm_handler():
        try:
            # The dashboard needs extra packages and a port; the CLI never uses it.
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or "RAY_ADDRESS / a local cluster"
            raise ConfigError(f"cannot connect to Ray at {where}: {exc}".splitlines()[0]) from exc
    try:
        with _quiet_ray_data():
            yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A HOST:PORT address that nothing listens on is a one-line error at once: ``ray.init`` would
    retry for minutes. Other forms (``auto``, ``ray://...``, none) are left to Ray."""
    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({exc}); start one there with `ray start --head`"
        ) from exc


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data logs each dataset's start, statistics and that its bars are off; our own progress bar
    says what a person needs. Debug logging (``trajemb -v``) keeps Ray Data's messages."""
    logger = logging.getLogger("ray.data")
    before = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Put back the process's SIGTERM handler after the block: ``ray.init`` replaces it with its own
    (and leaves that after ``ray.shutdown``), which would override how trajemb handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; Ray installs none from other threads
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)


def cluster_resources() -> dict[str, float]:
    """Total resources of the connected cluster (``CPU``, ``GPU``, ...)."""
    ray = require_ray()
    resources: dict[str, float] = ray.cluster_resources()
    return resources


def data_context() -> Any:
    """A copy of the current Ray Data context with the settings every trajemb dataset needs.

    Use it as ``with DataContext.current(data_context()):`` around building a dataset: the dataset
    keeps the copy, so the process-wide context is left alone.
    """
    ray = require_ray()
    with warnings.catch_warnings():
        # Copying reads every field, deprecated ones included, and Ray warns about each of those.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current().copy()
    # Output rows in input order: the table and the embeddings must match the local engine row by row.
    ctx.execution_options.preserve_order = True
    # Our own tqdm bar counts scenarios / windows as on the local engine; Ray's bars would double it.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    # Chunk results are Python objects on purpose (windows + per-input errors); say so, so that Ray
    # stores them pickled without warning about the fallback.
    ctx.enable_fallback_to_arrow_object_ext_type = True
    return ctx
