"""Memory kvm.ko's emulator reads and writes as ordinary RAM, outside the memory slots.

Linux's emulator moves LGDT's and LIDT's operand with segmented_read_std
(em_lgdt_lidt -> read_descriptor), SGDT's and SIDT's with segmented_write_std, and reads a
segment's descriptor with read_std (load_segment_descriptor). Those address guest memory
through the memory slots only: at an address no slot backs (here the VGA window, MMIO to
kvm.ko) they give X86EMUL_IO_NEEDED without mmio_needed. The instruction does not retire,
no exit reaches userspace, RIP stays, and the guest runs the instruction again, exiting
again, for ever. vmsim's no-progress watchdog then stops the run. On bare metal (and in
QEMU's TCG) the same instructions read and write the device, and the guest goes on.

Before, vmsim's kvm.ko sent these accesses to userspace as KVM_EXIT_MMIO and completed the
instruction; and the host's timer tick, an EXTERNAL_INTERRUPT exit, counted as progress
for the watchdog, so a guest looping on exits ran until killed.
"""

from __future__ import annotations

import pytest

from vmsim.asm import assemble
from vmsim.cli import main
from vmsim.events import EventStream
from vmsim.session import Session

VGA = 0xB8000

HEAD = """
bits 32
org 0x100000
        mov dx, 0x3f8
        mov al, 'a'
        out dx, al
"""
TAIL = """
        mov dx, 0x3f8
        mov al, 'b'
        out dx, al
        hlt
"""
# A GDT copied into the VGA window (MMIO to kvm.ko), then loaded from RAM: LGDT itself
# reads RAM, while the segment load that follows reads its descriptor from the window.
GDT_IN_VGA = """
        mov esi, gdt
        mov edi, 0xB8000
        mov ecx, 6
        cld
        rep movsd
        lgdt [gdtr]
        mov ax, 0x10
"""
GDT_DATA = """
        align 8
gdt:    dq 0
        dq 0x00CF9B000000FFFF   ; code, accessed (the load writes nothing back)
        dq 0x00CF93000000FFFF   ; data, accessed
gdtr:   dw 23
        dd 0xB8000
"""

CASES = {  # (what sets it up, the instruction, data after the code)
    "lidt": ("", "lidt [0xB8000]", ""),
    "lgdt": ("", "lgdt [0xB8000]", ""),
    "sgdt": ("", "sgdt [0xB8010]", ""),
    "sidt": ("", "sidt [0xB8010]", ""),
    "mov_ds": (GDT_IN_VGA, "mov ds, ax", GDT_DATA),
    "far_jmp": (GDT_IN_VGA, "jmp 0x08:after", GDT_DATA),
}


def _guest(case: str):
    setup, insn, data = CASES[case]
    return assemble(f"{HEAD}{setup}insn:   {insn}\nafter:\n{TAIL}{data}", f"{case}.asm")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bare_metal_goes_on(case: str) -> None:
    """The architecture's answer: the accesses reach the device and the guest goes on."""
    s = Session(_guest(case), "bare")
    out = s.run()
    assert bytes(s.serial) == b"ab", out.reason
    assert out.halted


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kvm_emulator_makes_no_progress(case: str, paging: str) -> None:
    """Every exit at the instruction is emulated to X86EMUL_IO_NEEDED: nothing reaches
    userspace for it, and RIP never passes it."""
    image = _guest(case)
    insn = image.symbols["insn"]
    events = EventStream()
    seen = []
    events.subscribe(seen.append, ["kvm_exit", "kvm_emulate_insn", "kvm_userspace_exit",
                                   "kvm_entry"])
    s = Session(image, "sim", paging=paging, max_instructions=400, events=events)
    out = s.run()
    assert out.limit_reached, out.reason
    assert bytes(s.serial) == b"a"
    first = next(i for i, e in enumerate(seen)
                 if e.kind == "kvm_exit" and e["guest_rip"] == insn)
    after = seen[first:]
    emulated = [e for e in after if e.kind == "kvm_emulate_insn"]
    assert len(emulated) >= 20
    assert {e["rip"] for e in emulated} == {insn}
    assert {e["outcome"] for e in emulated} == {"io-needed"}
    assert not any(e["failed"] for e in emulated)
    assert not [e for e in after if e.kind == "kvm_userspace_exit"]
    assert {e["rip"] for e in after if e.kind == "kvm_entry"} == {insn}
    assert s.vm.cpus[0].vcpu.cpu.eip == insn


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("case", ["lidt", "mov_ds"])
def test_the_watchdog_stops_the_loop(case: str, paging: str, tmp_path, capsys) -> None:
    """The loop of exits is stopped by the no-progress watchdog with its one line, though
    the host's timer tick interrupts it many times (the limit bounds the test if not)."""
    image = _guest(case)
    path = tmp_path / f"{case}.bin"
    path.write_bytes(image.data)
    status = main(["run", "--paging", paging, "--max-instructions", "400000", str(path)])
    captured = capsys.readouterr()
    assert status == 124, captured.err
    assert captured.err == ("vmsim: stopped: the guest made 100000 VM exits without retiring "
                            f"an instruction at eip {image.symbols['insn']:#010x}\n")
    assert captured.out == "a"
