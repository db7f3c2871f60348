"""The harness itself: it must see each kind of failure it exists to catch (a hang, an
escaping exception, a runaway allocation, a traceback, a multi-line error, an
undocumented status), and the minimizer must shrink to a 1-minimal input."""

from __future__ import annotations

import json
import signal

import pytest

from tests.fuzz import asm_fuzz, harness
from tests.fuzz.formats import valid_traces
from tests.fuzz.harness import ASM_STATUSES, RUN_STATUSES, Cli, Config, check_cli, run_guest
from tests.fuzz.minimize import ddmin, minimize_bytes, minimize_lines


def test_a_guest_that_never_ends_is_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmsim.session import Session

    def spin(self):
        while True:
            pass

    monkeypatch.setattr(Session, "run", spin)
    r = run_guest(b"\xf4", Config("sim"), 100, seconds=0.3)
    assert r.finding is not None and r.finding.symptom == "hang"


def test_an_escaping_exception_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmsim.session import Session

    def boom(self):
        raise KeyError("oops")

    monkeypatch.setattr(Session, "run", boom)
    r = run_guest(b"\xf4", Config("bare"), 100)
    assert r.finding is not None and r.finding.symptom == "exception KeyError"
    assert "oops" in r.finding.detail


def test_documented_endings_are_not_findings() -> None:
    assert run_guest(b"\xf4", Config("sim")).status == 0  # hlt
    assert run_guest(b"\xeb\xfe", Config("sim", "shadow"), 1000).status == 124  # jmp $
    # mov al, 5; mov dx, 0x501; out dx, al: isa-debug-exit, (5 << 1) | 1
    assert run_guest(b"\xb0\x05\x66\xba\x01\x05\xee", Config("bare")).status == 11


def test_a_runaway_allocation_is_a_memory_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import vmsim.asm

    monkeypatch.setattr(vmsim.asm, "assemble", lambda *a: bytearray(8 << 30))
    f = asm_fuzz.check_source("nop\n")
    assert f is not None and f.symptom == "MemoryError"


def test_an_error_on_a_blank_line_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    import vmsim.asm

    def wrong_line(source, name):
        raise vmsim.asm.AsmError("expression nested too deeply", name, 1, 1)

    monkeypatch.setattr(vmsim.asm, "assemble", wrong_line)
    f = asm_fuzz.check_source("\nmov eax, ((1))\n")
    assert f is not None and f.symptom == "AsmError names an empty line"


@pytest.mark.parametrize(("cli", "statuses", "symptom"), [
    (Cli(None, b"", ""), RUN_STATUSES, "hang"),
    (Cli(-signal.SIGXCPU, b"", ""), RUN_STATUSES, "hang"),  # RLIMIT_CPU
    (Cli(1, b"", "Traceback (most recent call last):\n  ...\nOSError: [Errno 28]\n"),
     RUN_STATUSES, "traceback OSError"),
    (Cli(2, b"", "vmsim: one\nvmsim: two\n"), RUN_STATUSES, "stderr not one line"),
    (Cli(3, b"", ""), ASM_STATUSES, "status 3"),
    (Cli(42, b"", ""), RUN_STATUSES, "status 42"),
    (Cli(-9, b"", ""), RUN_STATUSES, "signal 9"),
    (Cli(3, b"", ""), RUN_STATUSES, None),  # isa-debug-exit (1 << 1) | 1
    (Cli(124, b"", "vmsim: stopped after 5 instructions (--max-instructions)\n"), RUN_STATUSES,
     None),
    (Cli(2, b"", "usage: vmsim run [-h] GUEST\nvmsim run: error: argument --memory: invalid\n"),
     RUN_STATUSES, None),
])
def test_command_endings(cli: Cli, statuses: frozenset[int], symptom: str | None) -> None:
    f = check_cli(cli, statuses, 1.0)
    assert (f.symptom if f else None) == symptom


def test_ddmin_finds_a_one_minimal_input() -> None:
    calls = []

    def fails(c: list[int]) -> bool:
        calls.append(c)
        return 3 in c and 7 in c

    assert ddmin(list(range(50)), fails) == [3, 7]
    assert minimize_bytes(bytes(range(100)), lambda b: b"\x10" in b and b"\x40" in b) == b"\x10\x40"
    small = minimize_lines("a\nb\nbad line\nc\n", lambda t: "bad" in t)
    assert small == "bad\n"


def test_trace_seeds_are_valid_json_lines() -> None:
    """The seeds for the trace reader to come (formats.py): `vmsim run --trace` output."""
    for blob in valid_traces():
        events = [json.loads(line) for line in blob.decode().splitlines()]
        assert events and all("kind" in e for e in events)
    assert harness.sample_images()  # the guest seeds assemble
