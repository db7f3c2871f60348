"""The session facade: stepping at each granularity, on the simulated stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.session import Session

HELLO = str(Path(__file__).resolve().parents[1] / "sample_guests" / "hello.asm")


def test_step_instruction_executes_exactly_one() -> None:
    s = Session(HELLO)
    cpu = s.cpus[0]
    eips = []
    for _ in range(5):
        s.step_instruction()
        eips.append(cpu.eip)
    assert s.instructions == 5
    # hello.asm: jmp entry; mov esp, ...; lgdt [...]; jmp 0x08:...; mov ax, 0x10
    assert len(set(eips)) == 5


def test_step_to_next_vmexit_then_userspace_exit() -> None:
    s = Session(HELLO)
    out = s.step_vmexit()
    last = out.events[-1]
    assert last.kind == "vmexit"
    # The very first fetch finds no EPT mapping: an EPT violation for the entry point's
    # page, qualification fetch (bit 2) | guest-linear valid (7) | final translation (8).
    assert (last["reason"], last["qualification"]) == ("EPT_VIOLATION", 0x184)
    assert last["guest_physical_address"] == 0x100000
    while last["reason"] != "IO_INSTRUCTION":
        last = s.step_vmexit().events[-1]
    # putc's IN from LSR (0x3FD): qualification 0x03FD0008 (SDM: IN, port in DX).
    assert last["qualification"] == 0x03FD0008
    out = s.step_userspace_exit()
    last = out.events[-1]
    assert last.kind == "kvm_exit" and last["reason"] == "KVM_EXIT_IO"
    assert (last["direction"], last["port"], last["data"]) == ("in", 0x3FD, "60")


def test_step_event_returns_one_event_at_a_time() -> None:
    s = Session(HELLO)
    kinds = []
    for _ in range(6):
        out = s.step_event()
        kinds.append(out.events[-1].kind)
    assert "vmentry" in kinds


def test_run_to_the_end_and_views() -> None:
    s = Session(HELLO)
    outcome = s.run()
    assert outcome.finished and outcome.exit_status == 1
    assert bytes(s.serial) == b"Hello from a vmsim guest!\n"
    assert s.machine.vga.text().startswith("Hello from a vmsim guest!")
    assert s.virtual_time > s.instructions > 0


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Session(HELLO, backend="xen")
