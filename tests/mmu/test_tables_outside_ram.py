"""Guest paging structures where no RAM is (the VGA hole, above RAM), under both of the
simulated kvm.ko's MMUs: the guest gets what KVM gives it, never a Python exception.

kvm.ko walks the guest's tables in software (shadow paging's page-fault path, and the
emulator's address translation under EPT too: the guest's own walk through MMIO is an EPT
violation that kvm_mmu_page_fault sends to x86_emulate_instruction). A table in a gfn no
memory slot backs cannot be read: LNX arch/x86/kvm/mmu/paging_tmpl.h
FNAME(walk_addr_generic) finds kvm_is_error_hva(host_addr) and `goto error`, which fills
walker->fault as a #PF whose error code has only the access bits (W, U, I/D): a
not-present fault, with CR2 the linear address, injected into the guest
(kvm_inject_emulated_page_fault / inject_emulated_exception).

Bare metal would read the MMIO (or all ones) as a table, so `--backend bare` is not
compared here.
"""

from __future__ import annotations

import pytest

from tests.mmu.guests import EPILOGUE, PROLOGUE
from vmsim.asm import assemble
from vmsim.session import Session

IDT = """
        mov eax, pf_handler
        mov [idt + 14 * 8], ax
        mov word [idt + 14 * 8 + 2], 0x08
        mov word [idt + 14 * 8 + 4], 0x8E00
        shr eax, 16
        mov [idt + 14 * 8 + 6], ax
        lidt [idt_descriptor]
"""
HANDLER = """
        jmp done
pf_handler:
        pop eax                 ; the error code
        call puthex
        mov eax, cr2
        call puthex
done:
"""
TAIL = """
        align 8
idt:    times 256 * 8 db 0
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
"""


def _assemble(body: str):
    return assemble(PROLOGUE + body + EPILOGUE + TAIL, "<tables outside RAM>")


def _run(body: str, paging: str):
    s = Session(_assemble(IDT + body + HANDLER), "sim", paging=paging, max_instructions=200_000)
    return s, s.run()


# A page table for 4-8 MiB in a gfn with no memory slot: the access is a not-present #PF.
PT_OUTSIDE = {
    "pt_in_vga_hole_read": ("mov dword [PD + 4], 0xA1000 | 3\n invlpg [0x400000]\n"
                            " mov eax, [0x400000]", 0x0),
    "pt_on_vga_text_write": ("mov dword [PD + 4], 0xB8000 | 3\n invlpg [0x400000]\n"
                             " mov dword [0x400010], 1", 0x2),
    "pt_above_ram_read": ("mov dword [PD + 4], 0x4000000 | 3\n invlpg [0x400000]\n"
                          " mov eax, [0x400ffc]", 0x0),
}


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("name", PT_OUTSIDE)
def test_page_table_outside_ram_is_a_not_present_page_fault(name: str, paging: str) -> None:
    body, code = PT_OUTSIDE[name]
    addr = {"pt_in_vga_hole_read": 0x400000, "pt_on_vga_text_write": 0x400010,
            "pt_above_ram_read": 0x400FFC}[name]
    s, out = _run(body, paging)
    assert out.exit_status == 1, out
    assert s.serial.decode() == f"{code:08x}\n{addr:08x}\n"


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("cr3", [0xA0000, 0xB8000, 0x4000000])
def test_cr3_outside_ram_shuts_the_guest_down(cr3: int, paging: str) -> None:
    """Every walk fails: the next fetch is a #PF whose delivery faults again (#DF), and
    that one too: a triple fault, KVM_EXIT_SHUTDOWN."""
    s, out = _run(f"mov eax, {cr3:#x}\n mov cr3, eax\n nop", paging)
    assert out.exit_status is None
    assert out.reason == "triple fault", out
    assert s.serial == b""
