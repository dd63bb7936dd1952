"""Atomic writes: modes follow the umask, failures and dead processes leave nothing a later run trips on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trajemb.core.atomic import atomic_dir, atomic_path, remove_stale_temporaries, write_text_atomic
from trajemb.core.errors import DataError


@pytest.fixture
def umask_027() -> object:
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_modes_follow_the_umask(tmp_path: Path, umask_027: object) -> None:
    write_text_atomic(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    with atomic_dir(tmp_path / "bundle") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o750


def test_temporaries_are_hidden_and_removed_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "t.parquet") as tmp:
        assert tmp.name.startswith(".t.parquet.") and tmp.name.endswith(".tmp") and tmp.exists()
        raise RuntimeError
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "b") as tmp:
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_folder_leaves_no_old_copy(tmp_path: Path) -> None:
    for text in ("one", "two"):
        with atomic_dir(tmp_path / "b") as tmp:
            (tmp / "f").write_text(text)
    assert (tmp_path / "b" / "f").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import trajemb.core.atomic as atomic

    host = atomic._host()
    dead, alive = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".t.parquet.{dead}.{host}.0123abcd.tmp"
    stale_dir = tmp_path / f".scenarios.{dead}.{host}.89abcdef.tmp"
    old_copy = tmp_path / f".bundle.{dead}.{host}.89abcdef.old"
    live = tmp_path / f".t.parquet.{alive}.{host}.0123abcd.tmp"
    other_host = tmp_path / f".t.parquet.{dead}.elsewhere.0123abcd.tmp"
    user_file = tmp_path / ".t.parquet.notes.tmp"
    for p in (stale_file, live, other_host, user_file):
        p.write_text("x")
    for d in (stale_dir, old_copy):
        d.mkdir()
        (d / "scenario").write_text("partial")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir, old_copy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_host, user_file))


def test_unwritable_target_is_one_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write here"), atomic_path(tmp_path / "file" / "t.parquet"):
        pass
