"""File integrity: sha256 per fixed-size block, so a reader verifies exactly the bytes it reads.

A bundle's manifest records, for every file it holds, its size and the sha256 of each block of
``BLOCK_BYTES``. Small files are verified whole when they are read; a large array (a million
windows of geometry is half a gigabyte) is verified block by block as rows are read from it, so a
search that touches ten rows hashes a few blocks instead of the whole file, and a file that was
truncated, reordered or swapped for another bundle's is still refused before its bytes are used.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajemb.core.errors import DataError

#: 8 MiB: one block hashes in about 10 ms, and a 1M-window geometry file has about 60 of them.
BLOCK_BYTES = 8 << 20
#: Block sizes a manifest may name: a block is read into memory whole, so a crafted "block_bytes" of
#: petabytes must be refused as a malformed manifest, not met as an out-of-memory error.
MIN_BLOCK_BYTES = 1 << 10
MAX_BLOCK_BYTES = 1 << 28
#: Largest file a manifest may name (1 PiB): beyond any bundle, and keeps the block count bounded.
MAX_FILE_BYTES = 1 << 50


@dataclass(frozen=True)
class FileDigest:
    """Size and per-block sha256 (hex) of one file."""

    size_bytes: int
    block_bytes: int
    blocks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"size_bytes": self.size_bytes, "block_bytes": self.block_bytes, "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: object, what: str) -> FileDigest:
        """Parse a manifest entry; a malformed entry is a ``DataError`` naming ``what``."""
        try:
            assert isinstance(data, dict)
            size, block, blocks = data["size_bytes"], data["block_bytes"], data["blocks"]
            assert isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_FILE_BYTES
            assert isinstance(block, int) and not isinstance(block, bool)
            assert MIN_BLOCK_BYTES <= block <= MAX_BLOCK_BYTES
            assert isinstance(blocks, list) and len(blocks) == max(1, -(-size // block))
            assert all(isinstance(b, str) and len(b) == 64 for b in blocks)
        except (AssertionError, KeyError, TypeError) as exc:
            raise DataError(
                f"{what}: malformed file digest in the manifest (size, block size in "
                f"[{MIN_BLOCK_BYTES}, {MAX_BLOCK_BYTES}] bytes and one sha256 per block expected); "
                "rebuild the bundle with `trajemb bundle`"
            ) from exc
        return cls(size, block, tuple(blocks))


def digest_file(path: Path, block_bytes: int = BLOCK_BYTES) -> FileDigest:
    """Hash ``path`` block by block."""
    blocks: list[str] = []
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block_bytes)
            if not chunk and blocks:
                break
            blocks.append(hashlib.sha256(chunk).hexdigest())
            size += len(chunk)
            if len(chunk) < block_bytes:
                break
    return FileDigest(size, block_bytes, tuple(blocks))


def file_stamp(path: Path) -> tuple[int, ...]:
    """What changes when a file is written or replaced: device, inode, size, modification and change
    times (the change time cannot be set back, so a write hidden by resetting the mtime shows too)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedFile:
    """One file of a bundle and its expected digest; verifies blocks once, on first use, and again
    after the file changes on disk.

    Raises ``DataError`` (naming the file) when the size differs or a block does not hash to the
    manifest's value: the file was modified, truncated or replaced after the bundle was written.
    Every verification first compares the file's stamp (``file_stamp``) with the one its blocks were
    verified under: a file written in place or replaced since then has every block verified again
    before use; with ``mapped`` (the file is memory-mapped, and a map keeps showing the old file) a
    replaced file is refused with "reopen the bundle" instead. Thread-safe: the explorer serves several
    sessions from one opened bundle.
    """

    def __init__(self, path: Path, digest: FileDigest, mapped: bool = False) -> None:
        self.path = Path(path)
        self.digest = digest
        self.mapped = mapped
        self._verified: set[int] = set()
        self._lock = threading.Lock()
        try:
            self.stamp = file_stamp(self.path)
        except OSError as exc:
            raise DataError(f"{self.path}: missing from the bundle ({exc.strerror})") from exc
        self._check_size(self.stamp[2])

    def _check_size(self, size: int) -> None:
        if size != self.digest.size_bytes:
            raise DataError(
                f"{self.path}: {size} bytes, the bundle manifest says {self.digest.size_bytes}: the file was "
                "modified or replaced after the bundle was written; rebuild it with `trajemb bundle`"
            )

    def changed(self) -> bool:
        """Whether the file on disk is no longer the one this object verified (or it is gone)."""
        try:
            return file_stamp(self.path) != self.stamp
        except OSError:
            return True

    def _refresh(self) -> None:
        """Called under the lock: forget what was verified if the file changed since."""
        try:
            now = file_stamp(self.path)
        except OSError as exc:
            raise DataError(f"{self.path}: gone from the bundle ({exc.strerror}); reopen the bundle") from exc
        if now == self.stamp:
            return
        if self.mapped and now[:2] != self.stamp[:2]:
            raise DataError(
                f"{self.path}: replaced by another file since the bundle was opened; reopen the bundle"
            )
        self._verified.clear()
        self.stamp = now
        self._check_size(now[2])

    @property
    def fully_verified(self) -> bool:
        """Every block verified, and the file unchanged since."""
        return len(self._verified) == len(self.digest.blocks) and not self.changed()

    def verify_all(self) -> None:
        self.verify_blocks(range(len(self.digest.blocks)))

    def verify_blocks(self, blocks: Iterable[int]) -> None:
        wanted = set(blocks)
        with self._lock:
            self._refresh()
            todo = sorted(wanted - self._verified)
            if not todo:
                return
            with open(self.path, "rb") as fh:
                for i in todo:
                    fh.seek(i * self.digest.block_bytes)
                    chunk = fh.read(self.digest.block_bytes)
                    if hashlib.sha256(chunk).hexdigest() != self.digest.blocks[i]:
                        raise DataError(
                            f"{self.path}: does not match the bundle manifest (block {i} differs: modified, "
                            "reordered or from another bundle); rebuild it with `trajemb bundle`"
                        )
                    self._verified.add(i)


class VerifiedArray:
    """A memory-mapped ``.npy`` array whose rows are verified against the manifest as they are read.

    ``rows(idx)`` hashes only the blocks that hold those rows (once per block), ``all()`` the whole
    file; the bytes are never used before their block has been verified.
    """

    def __init__(
        self, path: Path, digest: FileDigest, expected_shape: tuple[int | None, ...], dtype: str
    ) -> None:
        import numpy as np

        self.file = VerifiedFile(path, digest, mapped=True)
        try:
            self._array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from exc
        shape = self._array.shape
        if (
            self._array.dtype != np.dtype(dtype)
            or len(shape) != len(expected_shape)
            or any(e is not None and e != s for e, s in zip(expected_shape, shape, strict=True))
            or not self._array.flags.c_contiguous
        ):
            raise DataError(
                f"{path}: array of shape {shape} and dtype {self._array.dtype}, "
                f"expected {expected_shape} {dtype}"
            )
        self.shape: tuple[int, ...] = shape
        self._row_bytes = int(self._array[0:1].nbytes) if shape and shape[0] else 0
        self._offset = digest.size_bytes - int(self._array.nbytes)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx: Any) -> Any:
        """``array[idx]`` (a copy) for an int, a slice or an int array of rows, after verifying them."""
        import numpy as np

        sel = np.arange(self.shape[0])[idx]
        flat = np.atleast_1d(sel).astype(np.int64)
        if flat.size and not self.file.fully_verified:
            b = self.file.digest.block_bytes
            first = (self._offset + flat * self._row_bytes) // b
            last = (self._offset + (flat + 1) * self._row_bytes - 1) // b
            blocks = set(np.unique(np.concatenate([first, last])).tolist())
            if self._row_bytes > b:  # rows longer than a block also span the blocks in between
                blocks.update(
                    i for f, l_ in zip(first.tolist(), last.tolist(), strict=True) for i in range(f, l_)
                )
            self.file.verify_blocks(blocks)
        return np.array(self._array[idx])

    def all(self) -> Any:
        """The whole array (memory-mapped, read only), after verifying every block."""
        self.file.verify_all()
        return self._array
