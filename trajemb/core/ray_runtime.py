"""Connecting to Ray: the lazy import, one session per command, and the Ray Data settings we rely on.

Ray is optional (``pip install -e ".[ray]"``), so it is imported inside functions only.

Connecting has a deadline: ``ray.init`` waits without end for an address that accepts connections but
is not a Ray cluster (another service's port, a typo). ``check_ray_address`` first opens the HTTP/2
connection that Ray's gRPC speaks, with a deadline, and turns silence or any other protocol into one
line before anything else happens.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from trajemb.core.errors import ConfigError

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
    check_ray_address(address)
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


#: Seconds an address gets to answer as a Ray cluster.
CONNECT_TIMEOUT_S = 10.0


def check_ray_address(address: str | None, timeout_s: float | None = None) -> None:
    """Raise unless ``address`` (None: ``RAY_ADDRESS``) answers like a Ray cluster within ``timeout_s``
    (None: ``CONNECT_TIMEOUT_S``): it accepts a connection and answers the HTTP/2 connection preface
    of gRPC, which Ray's head (``HOST:PORT``) and Ray Client (``ray://HOST:PORT``) both speak, with a
    SETTINGS frame. No address, ``auto`` and ``local`` are left to Ray (a cluster on this machine, or a
    new one), and so are TLS clusters (``RAY_USE_TLS``), which need Ray's certificates to answer.

    Raises:
        ConfigError: one line naming the address and what went wrong.
    """
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local") or os.environ.get("RAY_USE_TLS", "0") not in ("", "0"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray-address {address!r:.80} is not HOST:PORT or ray://HOST:PORT")
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout_s, 5.0))
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({exc}); start one there with `ray start --head`"
        ) from exc
    with sock:
        try:
            sock.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            header = b""
            while len(header) < 9:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    break
                header += chunk
        except OSError:  # timed out, or reset by a service that does not speak HTTP/2
            header = b""
    # A frame header: 3 bytes length, 1 byte type (4 = SETTINGS), 1 byte flags (1 = ACK), stream 0.
    if len(header) < 9 or header[3] != 4 or header[4] & 1 or int.from_bytes(header[:3], "big") % 6:
        raise ConfigError(
            f"{address} accepts connections but does not answer as a Ray cluster within {timeout_s:g} s "
            "(another service on that port?); give the head's address (`ray start --head` prints it)"
        )


#: What a gRPC client sends first: the HTTP/2 connection preface and an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


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
