"""The block layer's view of a raw disk image (QEMU's BlockBackend over block/file-posix.c).

`--disk FILE[,readonly]` opens FILE here when the machine is built, before the guest
starts: a missing, unreadable or special file (a FIFO, a device, a directory) is a
one-line `BlockOpenError` naming it (vmsim/files.py's conventions). Reads and writes are
real file I/O at the request's byte offset (`os.pread`/`os.pwrite` on the descriptor, no
buffering in vmsim): a write has reached the host kernel when `pwrite` returns, which is
before the device completes the request, so a run that ends any way at all (Ctrl-C, a
guest crash, `--max-instructions`) loses no write the guest saw completed. FLUSH is
`fsync`, as QEMU's `raw_co_flush_to_disk` (fdatasync there; fsync here also covers the
file's size). Each call returns what it costs in virtual cycles (vmsim/costs.py), for the
caller to charge to the thread that does the I/O.

Capacity: QEMU counts whole 512-byte sectors rounded up (`bdrv_refresh_total_sectors`:
DIV_ROUND_UP(length, BDRV_SECTOR_SIZE)); a read past the end of the file gives zeros, as
a raw file's does, and a write past it extends the file.
"""

from __future__ import annotations

import os
import weakref

from vmsim.costs import COSTS

BDRV_SECTOR_SIZE = 512


class BlockOpenError(ValueError):
    """The image cannot be used; str() is one line naming the file."""


class BlockIOError(Exception):
    """A pread/pwrite/fsync failed on the host (-EIO and friends): the request gets IOERR."""


def parse_disk_option(text: str) -> tuple[str, bool]:
    """`FILE` or `FILE,readonly` (the `--disk` syntax) -> (path, readonly)."""
    path, sep, opts = text.rpartition(",")
    if sep and opts in ("readonly", "readonly=on", "ro"):
        return path, True
    if sep and opts in ("readonly=off",):
        return path, False
    return text, False


class BlockBackend:
    """A raw image file opened for the guest's disk."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False):
        self.path = os.fspath(path)
        self.readonly = readonly
        from vmsim.files import InputError, open_regular_fd

        try:
            fd = open_regular_fd(self.path, os.O_RDONLY if readonly else os.O_RDWR)
        except InputError as e:
            raise BlockOpenError(str(e)) from None
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise BlockOpenError(f"{self.path}: {e.strerror or e}") from None
        self.fd: int | None = fd
        self._finalizer = weakref.finalize(self, os.close, fd)  # closed with the machine
        self.length = st.st_size
        self.sectors_read = 0
        self.sectors_written = 0
        # Which 512-byte sectors requests have touched: sector -> "r", "w" or "rw" (a view).
        self.touched: dict[int, str] = {}

    def total_sectors(self) -> int:
        """blk_get_geometry: whole sectors, the last partial one counted."""
        return (self.length + BDRV_SECTOR_SIZE - 1) // BDRV_SECTOR_SIZE

    def _touch(self, offset: int, length: int, how: str) -> None:
        first, end = offset // BDRV_SECTOR_SIZE, (offset + length + BDRV_SECTOR_SIZE - 1) // BDRV_SECTOR_SIZE
        for s in range(first, end):
            old = self.touched.get(s, "")
            if how not in old:
                self.touched[s] = "".join(sorted(old + how))  # "r", "w" or "rw"

    def pread(self, offset: int, length: int) -> tuple[bytes, int]:
        """`length` bytes at byte `offset` (zeros past the end of the file) and the cost."""
        data = b""
        if self.fd is not None and length:
            try:
                data = os.pread(self.fd, length, offset)
            except OSError as e:
                raise BlockIOError(f"{self.path}: {e.strerror or e}") from None
        data += bytes(length - len(data))
        self.sectors_read += length // BDRV_SECTOR_SIZE
        self._touch(offset, length, "r")
        return data, COSTS["blk_pread"]

    def pwrite(self, offset: int, data: bytes) -> int:
        """Write `data` at byte `offset`, all of it, before returning; the cost."""
        if self.readonly:
            # QEMU's block layer refuses a write to a read-only BlockBackend (-EACCES/-EPERM)
            # and virtio-blk reports it as VIRTIO_BLK_S_IOERR (werror=report for it).
            raise BlockIOError(f"{self.path}: the disk is read-only")
        if self.fd is None:
            raise BlockIOError(f"{self.path}: closed")
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                n = os.pwrite(self.fd, view[done:], offset + done)
                if n <= 0:
                    raise OSError(5, "short write")
                done += n
        except OSError as e:
            raise BlockIOError(f"{self.path}: {e.strerror or e}") from None
        self.length = max(self.length, offset + len(data))
        self.sectors_written += len(data) // BDRV_SECTOR_SIZE
        self._touch(offset, len(data), "w")
        return COSTS["blk_pwrite"]

    def flush(self) -> int:
        """fsync: what the guest wrote is on the host's disk; the cost."""
        if self.fd is not None and not self.readonly:
            try:
                os.fsync(self.fd)
            except OSError as e:
                raise BlockIOError(f"{self.path}: {e.strerror or e}") from None
        return COSTS["blk_flush"]

    def close(self) -> None:
        if self.fd is not None:
            self._finalizer()
            self.fd = None
