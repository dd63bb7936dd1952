"""prepare on Ray Data: the same table as the local engine (rows and content hash), the same errors."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trajemb.cli import main
from trajemb.core.errors import ConfigError, DataError
from trajemb.core.ray_runtime import check_ray_address
from trajemb.data.prepare import PrepareConfig, prepare_table
from trajemb.data.store import read_table

pytestmark = pytest.mark.slow  # each starts a local Ray cluster: seconds, not milliseconds


def test_ray_table_equals_local(
    mf_dir: Path, sensor_dir: Path, synth_dir: Path, tmp_path: Path, ray_local: None
) -> None:
    dirs = ["--av2", str(mf_dir), "--av2", str(synth_dir), "--sensor-logs", str(sensor_dir)]
    assert (
        main(
            [
                "-q",
                "prepare",
                *dirs,
                "--out",
                str(tmp_path / "ray.parquet"),
                "--engine",
                "ray",
                "--maps-dir",
                str(tmp_path / "maps"),
            ]
        )
        == 0
    )
    local = PrepareConfig(
        av2_dirs=(str(mf_dir), str(synth_dir)), sensor_log_dirs=(str(sensor_dir),), workers=1
    )
    prepare_table(local, tmp_path / "local.parquet", progress=False)
    on_ray, here = read_table(tmp_path / "ray.parquet", verify=True), read_table(tmp_path / "local.parquet")
    assert on_ray.content_hash == here.content_hash
    np.testing.assert_array_equal(on_ray.xy_agent, here.xy_agent)
    assert on_ray.meta.equals(here.meta)
    assert set(on_ray.meta["source"]) == {"av2_motion", "av2_sensor", "synthetic"}
    # Ray tasks reduced every map the windows need, as local workers do.
    assert len(list((tmp_path / "maps").glob("*.npz"))) == on_ray.meta["map_key"].nunique()


def _with_bad_scenarios(synth_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of ``synth_dir`` with a truncated scenario and a missing map (as in test_prepare)."""
    root = tmp_path / "mixed"
    shutil.copytree(synth_dir, root)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    truncated = next(folders[0].glob("scenario_*.parquet"))
    truncated.write_bytes(truncated.read_bytes()[:500])
    next(folders[1].glob("log_map_archive_*.json")).unlink()
    return root, [folders[0].name, folders[1].name]


def test_ray_bad_inputs_as_local(synth_dir: Path, tmp_path: Path, ray_local: None) -> None:
    root, bad = _with_bad_scenarios(synth_dir, tmp_path)
    on_ray = PrepareConfig(av2_dirs=(str(root),), engine="ray", workers=2)
    with pytest.raises(DataError, match=rf"{bad[0]}.*not a readable parquet file.*--skip-bad"):
        prepare_table(on_ray, tmp_path / "t.parquet", progress=False)
    assert not (tmp_path / "t.parquet").exists()
    skip = PrepareConfig(av2_dirs=(str(root),), engine="ray", workers=2, skip_bad=True)
    report = prepare_table(skip, tmp_path / "ray.parquet", progress=False)
    local = PrepareConfig(av2_dirs=(str(root),), workers=1, skip_bad=True)
    expected = prepare_table(local, tmp_path / "local.parquet", progress=False)
    assert report.skipped == expected.skipped and len(report.skipped) == 2
    assert report.manifest["content_sha256"] == expected.manifest["content_sha256"]


def test_ray_address_needs_ray_engine() -> None:
    with pytest.raises(ConfigError, match="--ray-address needs --engine ray"):
        PrepareConfig(av2_dirs=("x",), ray_address="127.0.0.1:6379")


def test_unreachable_address_fails_at_once() -> None:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ConfigError, match=rf"cannot reach a Ray cluster at 127.0.0.1:{port}.*ray start --head"
    ):
        check_ray_address(f"127.0.0.1:{port}")
    check_ray_address("auto")  # forms Ray resolves itself are left to it


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (not Ray, not HTTP/2)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_an_address_that_is_not_ray_ends_in_one_line_within_its_deadline(
    silent_port: int, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connecting to a port that accepts but is not Ray has a deadline (``ray.init`` would wait for
    ever), and nothing is left behind: no table, no temporary file."""
    address = f"127.0.0.1:{silent_port}"
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="accepts connections but does not answer as a Ray cluster"):
        check_ray_address(address, timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ConfigError, match="does not answer as a Ray cluster"):
        check_ray_address(f"ray://{address}", timeout_s=1.0)
    out = tmp_path / "out" / "t.parquet"
    args = [
        "-q",
        "prepare",
        "--av2",
        str(synth_dir),
        "--out",
        str(out),
        "--engine",
        "ray",
        "--ray-address",
        address,
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("trajemb.core.ray_runtime.CONNECT_TIMEOUT_S", 1.0)
        assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and address in err[0] and "does not answer as a Ray cluster" in err[0]
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_real_head_passes_the_check(ray_local: None) -> None:
    import ray

    check_ray_address(ray.get_runtime_context().gcs_address, timeout_s=10.0)


def test_missing_ray_is_one_line(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` now fails as where it is not installed
    code = main(
        ["-q", "prepare", "--av2", str(synth_dir), "--out", str(tmp_path / "t.parquet"), "--engine", "ray"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'pip install -e ".[ray]"' in err


def test_ray_is_not_imported_with_trajemb() -> None:
    modules = "trajemb.cli, trajemb.data.prepare, trajemb.training.train, trajemb.data.ray_prepare, trajemb.training.ray_embed"
    code = f"import sys, {modules}; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ray_leaves_sigterm_handler_alone(ray_local: None) -> None:
    # ray.init installs its own SIGTERM handler; keep_sigterm_handler (used by ray_session and by
    # this session's fixture) puts the process's one back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
