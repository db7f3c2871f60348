"""Every run is bounded by work, not by wall time: `--max-instructions` counts exception
deliveries and VM exits as well as retired instructions, and vmsim's no-progress watchdog
(vmsim.clock.NO_PROGRESS_LIMIT) stops a guest that loops without retiring an instruction,
on every backend, with one clear line and exit status 124 (as for the instruction limit).
The session's time-boxed batches (the GUI's run_for) come back too.
"""

from __future__ import annotations

import pytest

from vmsim.asm import assemble
from vmsim.cli import main
from vmsim.clock import NO_PROGRESS_LIMIT
from vmsim.session import Session

BACKENDS = [("sim", "ept"), ("sim", "shadow"), ("bare", "ept")]
IDS = ["sim-ept", "sim-shadow", "bare"]

# A #DE whose handler is the faulting instruction itself: each delivery faults again at
# once and nothing ever retires. The stack starts at the top of 16 MiB of RAM and stays
# in RAM for the whole budget (12 bytes a delivery).
FAULT_LOOP = """
bits 32
org 0x100000
        lgdt [gdtr]
        mov esp, 0x1000000
        mov eax, spin
        mov [idt], ax
        mov word [idt + 2], 0x08
        mov word [idt + 4], 0x8E00
        shr eax, 16
        mov [idt + 6], ax
        lidt [idtr]
        xor ecx, ecx
spin:   div ecx                 ; #DE, whose handler is this instruction
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
idtr:   dw 7
        dd idt
idt:    dq 0
"""


@pytest.fixture(scope="module")
def fault_loop(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("budget") / "fault_loop.bin"
    path.write_bytes(assemble(FAULT_LOOP, "fault_loop.asm").data)
    return str(path)


def _spin_eip() -> int:
    return assemble(FAULT_LOOP, "fault_loop.asm").symbols["spin"]


@pytest.mark.parametrize("backend,paging", BACKENDS, ids=IDS)
def test_a_guest_that_never_retires_is_stopped_by_the_watchdog(
        backend: str, paging: str, fault_loop: str, capsys) -> None:
    status = main(["run", "--backend", backend, "--paging", paging, fault_loop])
    err = capsys.readouterr().err
    assert status == 124, err
    assert "without retiring an instruction" in err, err
    assert f"at eip {_spin_eip():#010x}" in err, err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("backend,paging", BACKENDS, ids=IDS)
def test_max_instructions_counts_exception_deliveries(
        backend: str, paging: str, fault_loop: str, capsys) -> None:
    status = main(["run", "--backend", backend, "--paging", paging,
                   "--max-instructions", "5000", fault_loop])
    err = capsys.readouterr().err
    assert status == 124, err
    assert "stopped after 5000 instructions (--max-instructions)" in err, err


@pytest.mark.parametrize("backend,paging", BACKENDS, ids=IDS)
def test_run_for_comes_back_from_a_guest_that_never_retires(backend: str, paging: str) -> None:
    """The GUI runs the session in batches bounded by `instructions` (and wall time): a
    batch ends even when no instruction retires, and the watchdog finishes the run."""
    s = Session(assemble(FAULT_LOOP, "fault_loop.asm"), backend, paging=paging)
    out = s.run_for(seconds=None, instructions=1000)
    assert not out.finished
    for _ in range(2 * NO_PROGRESS_LIMIT // 1000 + 10):
        out = s.run_for(seconds=None, instructions=1000)
        if out.finished:
            break
    assert out.finished
    assert "without retiring an instruction" in out.stuck


# Minimized from random 4 KiB binaries (random.Random(n).randbytes(4096)) that ran for
# minutes under `--max-instructions 200000` on the sim backend: running through memory
# with EAX pointing where no RAM is, every `add [eax], al` is an MMIO read exit and a
# write exit to userspace around one emulated instruction.
MMIO_LOOP = bytes.fromhex("b8000000c0"  # mov eax, 0xC0000000 (above RAM)
                          "0000"        # l: add [eax], al
                          "ebfc")       # jmp l


@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_max_instructions_counts_exits_to_userspace(paging: str) -> None:
    """Each exit to userspace and each instruction the emulator completes is work: the
    MMIO loop's budget of 3000 allows far fewer than 3000 round trips to the VMM."""
    from vmsim.asm.image import GuestImage
    from vmsim.events import EventStream

    events = EventStream()
    exits = []
    events.subscribe(exits.append, ["kvm_userspace_exit"])
    s = Session(GuestImage(data=MMIO_LOOP, origin=0x100000), "sim", paging=paging,
                max_instructions=3000, events=events)
    out = s.run()
    assert out.limit_reached and out.reason == "instruction limit"
    mmio = [e for e in exits if e["reason"] == "KVM_EXIT_MMIO"]
    iterations = s.instructions // 2  # each: add (emulated) + jmp
    assert len(mmio) == pytest.approx(2 * iterations, abs=2)
    # retired + VM exits + exits to userspace stay within the budget
    assert s.instructions + len(exits) + s.vm.cpus[0].vcpu.stat["exits"] <= 3000 + 5


@pytest.mark.parametrize("seed", [33, 229, 263])
@pytest.mark.parametrize("backend,paging", BACKENDS, ids=IDS)
def test_random_binaries_end_within_their_budget(seed: int, backend: str, paging: str,
                                                 tmp_path, capsys) -> None:
    """Seeds that ran for minutes (or for ever) before: each ends with a documented
    status; what bounds it is work counted, never a clock."""
    import random

    guest = tmp_path / f"r{seed}.bin"
    guest.write_bytes(random.Random(seed).randbytes(4096))
    status = main(["run", "--backend", backend, "--paging", paging,
                   "--max-instructions", "20000", str(guest)])
    err = capsys.readouterr().err
    assert status in (0, 70, 124) or status & 1, err
    assert err.count("\n") <= 1 and "Traceback" not in err, err


def test_a_rep_string_instruction_moving_on_is_progress() -> None:
    """A `rep stosd` over a large buffer takes an exit for each page it touches first
    (more than NO_PROGRESS_LIMIT of them with a few hundred MiB) before it retires: ECX
    moving on counts as progress; the same exit with nothing changed does not."""
    from vmsim.kvm.x86 import kvm_watch_progress

    s = Session(assemble(FAULT_LOOP, "fault_loop.asm"), "sim")
    v = s.vm.cpus[0].vcpu
    for i in range(NO_PROGRESS_LIMIT + 10):
        v.cpu.r[1] = 0x1000000 - i * 1024  # each exit: ECX has moved on by a page
        assert not kvm_watch_progress(v, 1, 0)
    for _ in range(NO_PROGRESS_LIMIT - 2):  # the last exit above already counts one
        assert not kvm_watch_progress(v, 1, 0)
    assert kvm_watch_progress(v, 1, 0)
    assert v.stuck.startswith(f"the guest made {NO_PROGRESS_LIMIT} VM exits without")
