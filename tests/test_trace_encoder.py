"""The encoder process (vmsim/trace_encoder.py): `vmsim run --trace-level insn` writes the
same file with it and without it, its lines come back in order among the events, and a
child that dies or cannot be made leaves the writer to encode the lines itself."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from array import array
from itertools import pairwise
from pathlib import Path

import pytest

from vmsim import trace_encoder
from vmsim.trace import encode_lanes
from vmsim.trace_encoder import EncoderProcess

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this system")

ROOT = Path(__file__).resolve().parents[1]


def _lanes(eips: list[int]) -> bytes:
    bias = (1 << 31) - 1
    return array("I", [bias] + [bias + b - a for a, b in pairwise(eips)]).tobytes()


def _eips(n: int, seed: int) -> list[int]:
    """A loop whose body varies with the data, as crc32's does."""
    out, e, x = [], 0x100000, seed
    for _ in range(n):
        out.append(e)
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        e = 0x100000 if x % 5 == 0 else e + 1 + x % 4
    return out


def _run(tmp_path: Path, capsysbinary, guest: str, name: str, *extra: str) -> bytes:
    from vmsim.cli import main

    out = tmp_path / name
    main(["run", "--max-instructions", "3000000", "--trace", str(out), "--trace-level", "insn",
          *extra, str(ROOT / guest)])
    return out.read_bytes()


@pytest.mark.parametrize(("guest", "extra"), [
    ("benchmarks/guests/crc32.asm", ()),           # long lines, no events between them
    ("sample_guests/smp.asm", ("--smp", "2")),     # two vCPUs' lines among events
    ("sample_guests/timer.asm", ()),               # interrupts now and then
    ("benchmarks/guests/pages.asm", ("--paging", "shadow")),
], ids=["crc32", "smp", "timer", "pages-shadow"])
def test_the_trace_is_the_same_with_the_encoder_process_and_without(
        tmp_path: Path, capsysbinary, monkeypatch, guest: str, extra: tuple[str, ...]) -> None:
    started: list[EncoderProcess] = []
    real = EncoderProcess.start.__func__

    def start(cls):
        e = real(cls)
        started.append(e)
        return e

    monkeypatch.setattr(EncoderProcess, "start", classmethod(start))
    with_it = _run(tmp_path, capsysbinary, guest, "with.jsonl", *extra)
    assert started and started[0] is not None, "vmsim run did not start the encoder"
    with pytest.raises(ChildProcessError):  # reaped by close()
        os.waitpid(started[0].pid, os.WNOHANG)
    monkeypatch.setattr(EncoderProcess, "start", classmethod(lambda cls: None))
    without = _run(tmp_path, capsysbinary, guest, "without.jsonl", *extra)
    assert hashlib.sha256(with_it).digest() == hashlib.sha256(without).digest()
    assert b'"kind":"insn_run"' in with_it


def test_lines_come_back_as_encode_lanes_writes_them() -> None:
    enc = EncoderProcess.start()
    assert enc is not None
    try:
        jobs = [("vcpu0", 1 + 20000 * i, e[0], _lanes(e))
                for i, e in enumerate(_eips(20000, s) for s in range(5))]
        tickets = [enc.submit(*j) for j in jobs]
        assert [enc.resolve(t) for t in tickets] == [encode_lanes(*j) for j in jobs]
        assert not enc.failed
    finally:
        enc.close()


def test_a_child_that_dies_leaves_the_lines_to_the_writer() -> None:
    enc = EncoderProcess.start()
    assert enc is not None
    jobs = [("vcpu1", 7 + 5000 * i, e[0], _lanes(e))
            for i, e in enumerate(_eips(5000, s) for s in range(4))]
    try:
        first = enc.submit(*jobs[0])
        os.kill(enc.pid, signal.SIGKILL)
        rest = [enc.submit(*j) for j in jobs[1:]]
        texts = [enc.resolve(t) for t in (first, *rest)]
    finally:
        enc.close()
    assert enc.failed
    assert texts == [encode_lanes(*j) for j in jobs]


def test_no_child_is_forked_while_other_threads_run(monkeypatch) -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert EncoderProcess.start() is None
    finally:
        stop.set()
        t.join()


def test_without_fork_the_writer_encodes_alone(monkeypatch) -> None:
    monkeypatch.delattr(trace_encoder.os, "fork")
    assert EncoderProcess.start() is None
