"""Files the command line reads and writes, guarded the way a user needs them guarded.

- `read_input_file`: only a regular file, only up to a size limit, checked before reading
  (a FIFO would block forever, `/dev/zero` never ends, a directory is not a guest).
- `refuse_overwrite`: an output path that is one of the inputs (same file, whatever path
  or symlink leads to it) is refused before anything is written, as nasm refuses
  ("will not overwrite input file").
- `OutputError`: a write that failed (disk full, broken pipe) while a run was going on,
  carried out of the simulation as one exception naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from typing import IO, BinaryIO

# `vmsim asm` and `.asm` guests: far beyond any hand-written source (vmsim's own samples
# are under 20 KiB); the image it makes is limited separately by guest RAM.
SOURCE_LIMIT = 16 << 20
# `--serial-in @FILE`: every byte the guest reads costs it an IN from the UART (a VM exit
# and a trip to userspace), so 1 MiB is already minutes of guest time.
SERIAL_IN_LIMIT = 1 << 20


class InputError(ValueError):
    """An input file that cannot be used; str() is one line naming the file."""


class OutputError(Exception):
    """Writing an output file failed; str() is one line naming the file and the error."""

    def __init__(self, path: str, error: OSError):
        self.path = path
        self.error = error
        reason = error.strerror or str(error)
        super().__init__(f"{path}: cannot write: {reason}")


class GuardedOutput:
    """An output written while a run goes on (a trace in any format), that a signal must
    not cut in the middle of a record.

    `busy` is true while a record is being written: a signal handler that wants to end
    the run sets `deferred` to its exception instead of raising in the middle of one, and
    `_guarded` raises it when the record is complete, so the file always ends with a whole
    record. A failed write raises OutputError naming `path`.
    """

    def __init__(self, out: IO[str], path: str):
        self.out = out
        self.path = path
        self.lines = 0
        self.busy = False
        self.deferred: BaseException | None = None

    def _guarded(self, fn: Callable[[], object]) -> None:
        self.busy = True
        try:
            fn()
        except OSError as e:
            raise OutputError(self.path, e) from None
        finally:
            self.busy = False
        if self.deferred is not None:
            self.raise_deferred()

    def raise_deferred(self) -> None:
        """Raise what a signal deferred while a record was being written."""
        exc, self.deferred = self.deferred, None
        raise exc


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_regular(name: str, flags: int = os.O_RDONLY) -> int:
    """A blocking descriptor of `name` (opened with `flags`: O_RDONLY, O_RDWR) if it is a
    regular file; InputError (one line naming the file) otherwise. Opened non-blocking
    first, so a FIFO is refused, not waited on."""
    try:
        fd = os.open(name, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{name}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{name}: {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except OSError as e:
        os.close(fd)
        raise InputError(f"{name}: {e.strerror or e}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


open_regular_fd = _open_regular  # for callers outside this module (a disk image: O_RDWR)


def open_input_file(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (a trace may be too
    large to read whole). Raises InputError (one line naming the file) otherwise."""
    return os.fdopen(_open_regular(os.fspath(path)), "rb")


def read_input_file(path: str | os.PathLike[str], limit: int, what: str = "the limit") -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes.

    Raises InputError (one line naming the file) for a missing or unreadable file, for
    anything but a regular file, and for a file larger than `limit` (`what` says where
    the limit comes from). A FIFO is refused rather than waited on, and the file is read
    to at most `limit` + 1 bytes, so a file that grows while it is read (or a /proc file
    that reports size 0) cannot make the read unbounded.
    """
    name = os.fspath(path)
    fd = _open_regular(name)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise InputError(f"{name}: {size} bytes, more than {what} ({limit} bytes)")
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise InputError(f"{name}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{name}: more than {what} ({limit} bytes)")
    return data


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths lead to one existing file (os.path.samefile without raising)."""
    ia = _identity(a)
    return ia is not None and ia == _identity(b)


def refuse_overwrite(outputs: Iterable[tuple[str, str | None]],
                     inputs: Iterable[tuple[str, str | None]]) -> str | None:
    """A one-line refusal when an output would overwrite an input or another output.

    `outputs` are (option, path) pairs, e.g. ("--trace", "g.asm"), `inputs` (what it
    is, path) pairs, e.g. ("guest file", "g.asm"); None paths are skipped. Returns None
    when every output is safe to open.
    """
    ins = [(what, p) for what, p in inputs if p]
    outs = [(opt, p) for opt, p in outputs if p]
    for i, (opt, p) in enumerate(outs):
        for what, q in ins:
            if same_file(p, q):
                return f"{opt} {p}: will not overwrite the {what}"
        for other_opt, q in outs[:i]:
            # Two outputs into one regular file would interleave; /dev/null is fine.
            if (same_file(p, q) and os.path.isfile(p)) or \
                    (not os.path.exists(p) and os.path.abspath(p) == os.path.abspath(q)):
                return f"{opt} {p}: the same file as {other_opt}"
    return None


def is_broken_pipe(e: OSError) -> bool:
    return isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE
