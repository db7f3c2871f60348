"""`insn_run` lines encoded by a child process while the run goes on.

At `--trace-level insn` about half of what the trace costs the run is turning the
recorded deltas into text (vmsim.trace.encode_lanes: folding loops, formatting numbers).
That work needs nothing but the deltas, so `vmsim run` hands long runs of them to a
process forked for it, and runs the guest on while the other core writes the text: the
lines come back in order, and the writer puts each where it belongs among the event
lines (the file is the same, byte for byte). One line is in flight at a time, so neither
side ever waits on a full pipe for the other, and a child that fails (or cannot be made)
leaves the writer to encode in its own process, as it does without one.
"""

from __future__ import annotations

import os
import signal
import struct
import threading

from vmsim.trace import encode_lanes

_JOB = struct.Struct("=IQII")  # source length, n, first EIP, lanes length
_REPLY = struct.Struct("=I")  # text length (ASCII)


def _read_exactly(fd: int, n: int) -> bytes | None:
    """n bytes from `fd`, or None at end of file."""
    parts = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _serve(jobs: int, replies: int) -> None:
    """The child: encode each job, reply with its text, until the parent closes `jobs`."""
    while True:
        head = _read_exactly(jobs, _JOB.size)
        if head is None:
            return
        k, n, first, size = _JOB.unpack(head)
        body = _read_exactly(jobs, k + size)
        if body is None:
            return
        text = encode_lanes(body[:k].decode(), n, first, body[k:]).encode("ascii")
        _write_all(replies, _REPLY.pack(len(text)) + text)


class Ticket:
    """A line given to the encoder: its arguments, kept until its text is back (so that
    it can still be encoded here if the child fails)."""

    __slots__ = ("args", "text")

    def __init__(self, args: tuple[str, int, int, bytes]):
        self.args = args
        self.text: str | None = None


class EncoderProcess:
    """A forked child that encodes `insn_run` lines (encode_lanes), one at a time."""

    def __init__(self, pid: int, jobs: int, replies: int):
        self.pid = pid
        self._jobs = jobs
        self._replies = replies
        self._out: Ticket | None = None  # the line in flight
        self.failed = False

    @classmethod
    def start(cls) -> EncoderProcess | None:
        """The encoder, or None where a child cannot be forked safely (no fork; other
        threads running, whose locks a forked child could find held)."""
        if not hasattr(os, "fork") or threading.active_count() != 1:
            return None
        jobs_r, jobs_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (jobs_r, jobs_w, replies_r, replies_w):
                os.close(fd)
            return None
        if pid == 0:  # the child: no Python cleanup of the parent's objects (os._exit)
            status = 0
            try:
                # Ctrl-C reaches the whole process group: the parent decides what ends.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.close(jobs_w)
                os.close(replies_r)
                _serve(jobs_r, replies_w)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(jobs_r)
        os.close(replies_w)
        os.set_inheritable(jobs_w, False)
        os.set_inheritable(replies_r, False)
        return cls(pid, jobs_w, replies_r)

    def submit(self, source: str, n: int, first: int, lanes: bytes) -> Ticket:
        """Hand a line to the child (after taking back the one in flight)."""
        if self._out is not None:
            self.resolve(self._out)
        t = Ticket((source, n, first, lanes))
        if not self.failed:
            src = source.encode()
            try:
                _write_all(self._jobs, _JOB.pack(len(src), n, first, len(lanes)) + src + lanes)
                self._out = t
            except OSError:
                self._fail()
        return t

    def resolve(self, t: Ticket) -> str:
        """The text of `t` (waiting for the child if it is not back yet)."""
        if t.text is None:
            if t is self._out:
                self._out = None
                head = None if self.failed else self._read(_REPLY.size)
                body = None if head is None else self._read(_REPLY.unpack(head)[0])
                if body is not None:
                    t.text = body.decode("ascii")
            if t.text is None:  # the child failed: encoded here, as without one
                t.text = encode_lanes(*t.args)
            t.args = None  # type: ignore[assignment]
        return t.text

    def _read(self, n: int) -> bytes | None:
        try:
            b = _read_exactly(self._replies, n)
        except OSError:
            b = None
        if b is None:
            self._fail()
        return b

    def _fail(self) -> None:
        self.failed = True

    def close(self) -> None:
        """Take back the line in flight, end the child and reap it. Safe to call twice."""
        if self._out is not None:
            self.resolve(self._out)
        if self._jobs >= 0:
            os.close(self._jobs)
            os.close(self._replies)
            self._jobs = self._replies = -1
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
