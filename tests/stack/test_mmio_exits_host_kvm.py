"""The exits to userspace of read-modify-write instructions on MMIO, against the host's KVM
(its instruction emulator decides them): a read exit, then a write exit, for the ALU ops,
XADD and XCHG, and for CMPXCHG and CMPXCHG8B whether or not they store their source; a
failed CMPXCHG writes back what it read (the processor's locked write cycle; em_cmpxchg),
and so does a failed CMPXCHG8B, its m64 read and written in one 8-byte access each. Each access's
address, size and data must be those the host's KVM gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import first_difference, host_kvm_problem, run_kvm, run_sim

GUEST = """bits 32
org 0x100000
VGA equ 0xB8000
        mov dword [VGA], 0x11223344
        mov eax, 0x44
        mov bl, 0x99
        cmpxchg byte [VGA], bl          ; equal: stores BL
        mov eax, 0x1234
        mov cx, 0x5678
        cmpxchg word [VGA + 2], cx      ; differs: EAX = 0x1122, the word written back
        mov edx, 7
        cmpxchg dword [VGA + 4], edx    ; EAX (0x1122) against 0: differs
        xadd dword [VGA], edx
        xchg word [VGA + 8], cx
        add byte [VGA + 9], 3
        xor eax, eax
        xor edx, edx
        mov ebx, 0xAABBCCDD
        mov ecx, 0x55667788
        cmpxchg8b [VGA + 0x10]          ; equal (0): stores ECX:EBX
        lock cmpxchg8b [VGA + 0x10]     ; differs: EDX:EAX loaded, the m64 written back
        mov dx, 0x501
        mov al, 0
        out dx, al
"""


@pytest.fixture(scope="module")
def host_kvm() -> None:
    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("coalesced", [False, True], ids=["every-access", "coalesced"])
def test_read_modify_write_on_mmio_exits_as_on_the_host_kvm(host_kvm: None, tmp_path: Path,
                                                           coalesced: bool) -> None:
    guest = tmp_path / "rmw.asm"
    guest.write_text(GUEST)
    sim, kvm = run_sim(guest, coalesced=coalesced), run_kvm(guest, tmp_path, coalesced)
    assert kvm.status == sim.status == 1
    mmio = [e for e in sim.exits if e["reason"] == "KVM_EXIT_MMIO"]
    if coalesced:
        # The VGA window is a coalesced zone: the writes queue in kvm.ko's ring, and only
        # the eight reads (QEMU must answer them) leave KVM_RUN, each as wide as its
        # instruction's operand.
        assert [(e["is_write"], e["len"]) for e in mmio] == [
            (False, n) for n in (1, 2, 4, 4, 2, 1, 8, 8)]
    else:
        # 1 store, then a read and a write for each of the eight read-modify-write
        # instructions
        assert [e["is_write"] for e in mmio] == [True] + [False, True] * 8
        # CMPXCHG8B's m64: one 8-byte access each way (em_cmpxchg8b's DstMem64)
        assert [e["len"] for e in mmio[-4:]] == [8] * 4
    assert first_difference(sim.exits, kvm.exits) == ""


@pytest.mark.parametrize(("body", "emulated"), [
    ("mov esp, 0xB8100\n        enter 8, 1", False),  # em_enter: a nesting level
    ("mov esp, 0xB8100\n        enter 8, 0", True),
    ("mov eax, 5\n        bound eax, [0xB8000]", False),  # not in emulate.c's table
])
def test_what_linux_s_emulator_refuses_fails_as_there(body: str, emulated: bool,
                                                      tmp_path: Path) -> None:
    """vmsim's kvm.ko replays an instruction on its CPU, which runs more than Linux's
    emulator: what Linux refuses must end in KVM_EXIT_INTERNAL_ERROR (emulation failure)
    here too, at the same instruction; the host's KVM, where there is one, agrees."""
    guest = tmp_path / "refused.asm"
    guest.write_text(f"bits 32\norg 0x100000\n        {body}\n        mov dx, 0x501\n"
                     "        mov al, 0\n        out dx, al\n")
    runs = [run_sim(guest, paging) for paging in ("ept", "shadow")]
    if host_kvm_problem() is None:
        runs.append(run_kvm(guest, tmp_path))
    for run in runs:
        last = run.exits[-1]
        if emulated:
            assert run.status == 1 and last["reason"] == "KVM_EXIT_IO", run
        else:
            assert run.status is None and last["reason"] == "KVM_EXIT_INTERNAL_ERROR", run
            assert last["suberror"] == 1, last
