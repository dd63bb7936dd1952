"""Per-block digests: a reader verifies exactly the bytes it reads, and any change is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajemb.core.errors import DataError
from trajemb.core.integrity import FileDigest, VerifiedArray, VerifiedFile, digest_file


def test_digest_blocks_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "f"
    for size in (0, 1, 1024, 4096, 4097):
        path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        digest = digest_file(path, block_bytes=1024)
        assert digest.size_bytes == size and len(digest.blocks) == max(1, -(-size // 1024))
        assert FileDigest.from_dict(digest.to_dict(), "t") == digest
        VerifiedFile(path, digest).verify_all()
    for bad in (
        {},
        {"size_bytes": 5, "block_bytes": 1024, "blocks": []},
        {"size_bytes": -1, "block_bytes": 1, "blocks": ["0" * 64]},
        {"size_bytes": 5, "block_bytes": 1024, "blocks": ["zz"]},
        [1],
    ):
        with pytest.raises(DataError, match="malformed file digest"):
            FileDigest.from_dict(bad, "t")


def test_rows_verify_only_their_blocks(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    x = np.arange(4000 * 10, dtype=np.float32).reshape(4000, 10)  # 40 bytes a row, 1000 blocks of 160 bytes
    np.save(path, x)
    digest = digest_file(path, block_bytes=160)
    arr = VerifiedArray(path, digest, (None, 10), "float32")
    np.testing.assert_array_equal(arr.rows([5, 3999]), x[[5, 3999]])
    assert 2 <= len(arr.file._verified) <= 4
    np.testing.assert_array_equal(arr.rows(slice(10, 20)), x[10:20])
    np.testing.assert_array_equal(arr.all(), x)
    assert arr.file.fully_verified
    with pytest.raises(DataError, match=r"expected \(None, 11\)"):
        VerifiedArray(path, digest, (None, 11), "float32")


def test_changed_bytes_are_refused_where_read(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    x = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
    np.save(path, x)
    digest = digest_file(path, block_bytes=256)
    y = x.copy()
    y[[900, 901]] = y[[901, 900]]  # two rows swapped: same size, same values
    np.save(path, y)
    arr = VerifiedArray(path, digest, (1000, 8), "float32")
    np.testing.assert_array_equal(arr.rows([0, 1, 2]), x[:3])  # untouched blocks still read
    with pytest.raises(DataError, match=r"block .* differs"):
        arr.rows([900])
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DataError, match="bytes, the bundle manifest says"):
        VerifiedFile(path, digest)


def test_bytes_changed_after_their_first_check_are_checked_again(tmp_path: Path) -> None:
    """Verified once is not trusted for ever: a file written in place after its blocks were verified has
    them verified again before use, and a file replaced by another one is refused (a memory map would
    go on showing the old file)."""
    import os

    path = tmp_path / "a.npy"
    x = np.random.default_rng(1).normal(size=(1000, 8)).astype(np.float32)
    np.save(path, x)
    digest = digest_file(path, block_bytes=1024)
    arr = VerifiedArray(path, digest, (1000, 8), "float32")
    np.testing.assert_array_equal(arr.all(), x)
    assert arr.file.fully_verified
    with open(path, "r+b") as fh:  # in place: same inode, same size, other bytes
        fh.seek(-16, os.SEEK_END)
        fh.write(b"\0" * 16)
    assert arr.file.changed() and not arr.file.fully_verified
    with pytest.raises(DataError, match="differs"):
        arr.rows([999])
    np.save(path.with_name("b.npy"), x)
    os.replace(path.with_name("b.npy"), path)  # the original bytes again, in a new file
    with pytest.raises(DataError, match="replaced by another file since the bundle was opened; reopen"):
        arr.rows([0])
    small = tmp_path / "card.json"
    small.write_text('{"a": 1}')
    vf = VerifiedFile(small, digest_file(small))
    vf.verify_all()
    small.write_text('{"a": 1}')  # rewritten, same content: still fine
    vf.verify_all()
    small.write_text('{"a": 2}')
    with pytest.raises(DataError, match="differs"):
        vf.verify_all()
