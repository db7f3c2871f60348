"""Guest state saved on VM exit equals the CPU's state, and a load/save round trip through
the VMCS is exact (SDM "Saving Guest State", "Loading Guest State")."""

from __future__ import annotations

import pytest

from tests.vmx.harness import AR_UNUSABLE, CODE, STACK, Bench, identity_paging
from vmsim.hw.cpu import SEG_NAMES
from vmsim.hw.vmcs import CPU_BASED_HLT_EXITING, ExitReason, F
from vmsim.hw.vmx import SEGMENTS, ar_from_segment

# Fields VM exits save (the guest-state area less what vmsim's CPU does not hold:
# LDTR, TR, DR7, DEBUGCTL, PAT, EFER, pending debug exceptions).
SAVED = [F.GUEST_CR0, F.GUEST_CR3, F.GUEST_CR4, F.GUEST_RSP, F.GUEST_RIP, F.GUEST_RFLAGS,
         F.GUEST_GDTR_BASE, F.GUEST_GDTR_LIMIT, F.GUEST_IDTR_BASE, F.GUEST_IDTR_LIMIT,
         F.GUEST_ACTIVITY_STATE, F.GUEST_INTERRUPTIBILITY_INFO, F.GUEST_SYSENTER_CS,
         F.GUEST_SYSENTER_ESP, F.GUEST_SYSENTER_EIP,
         *(f for name in SEG_NAMES for f in SEGMENTS[name])]


def test_saved_state_equals_the_cpu() -> None:
    b = Bench("""
        mov esp, 0xE000
        push 0x11223344
        mov eax, 0x12345678
        mov ebx, 0x10
        mov es, bx
        xor ecx, ecx
        mov fs, cx                  ; a null selector: FS becomes unusable
        mov ecx, 0x174
        mov eax, 0x08
        xor edx, edx
        wrmsr                       ; SYSENTER_CS (no MSR bitmap exits below)
        stc
        std
        start: cpuid
    """)
    b.vmcs.write(F.MSR_BITMAP, 0)
    b.vmcs.msr_bitmap = set()
    b.controls(set_=1 << 28)
    e = b.run()
    cpu = b.cpu
    assert e.reason == ExitReason.CPUID
    assert b.read(F.GUEST_RIP) == b.sym("start") == cpu.eip
    assert b.read(F.GUEST_RSP) == 0xE000 - 4 == cpu.r[4]
    assert b.read(F.GUEST_RFLAGS) == cpu.eflags
    assert b.read(F.GUEST_RFLAGS) & 0x401 == 0x401  # DF and CF as the guest left them
    assert b.read(F.GUEST_CR0) == cpu.get_raw_control(0) == 0x31
    assert b.read(F.GUEST_CR3) == cpu.get_raw_control(3)
    assert b.read(F.GUEST_CR4) == cpu.get_raw_control(4) == 0x2000
    for name, seg in zip(SEG_NAMES, cpu.seg, strict=True):
        sel_f, base_f, limit_f, ar_f = SEGMENTS[name]
        assert b.read(sel_f) == seg.selector, name
        assert b.read(base_f) == seg.base, name
        assert b.read(limit_f) == seg.limit, name
        assert b.read(ar_f) == ar_from_segment(seg), name
    assert b.read(F.GUEST_FS_SELECTOR) == 0 and b.read(F.GUEST_FS_AR_BYTES) & AR_UNUSABLE
    assert b.read(F.GUEST_ES_AR_BYTES) == 0xC093
    assert b.read(F.GUEST_SYSENTER_CS) == 0x08
    assert b.mem.read(0xE000 - 4, 4) == 0x11223344
    # The general registers are not in the VMCS: they stay in the CPU (kvm.ko saves them).
    assert cpu.r[0] == 0x08


def test_saved_cr_values_are_the_hardware_ones_not_the_shadows() -> None:
    b = Bench("mov eax, cr0\nhlt")
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, 0xFFFFFFFF)
    b.vmcs.write(F.CR0_READ_SHADOW, 0x11)
    b.vmcs.write(F.CR4_GUEST_HOST_MASK, 0xFFFFFFFF)
    b.vmcs.write(F.CR4_READ_SHADOW, 0)
    b.run()
    assert b.cpu.r[0] == 0x11
    assert b.read(F.GUEST_CR0) == 0x31 and b.read(F.GUEST_CR4) == 0x2000
    assert b.cpu.cr_shadow == {}  # root operation: no shadows in effect


def test_saved_state_with_paging() -> None:
    b = Bench("nop\nstart: hlt")
    identity_paging(b)
    b.run()
    assert b.read(F.GUEST_CR0) == 0x80010031
    assert b.read(F.GUEST_CR3) == b.cpu.cr3 == 0x20000


def _variant_state(b: Bench) -> None:
    """A guest state unlike the bench's default in every field vmsim loads."""
    w = b.vmcs.write
    w(F.GUEST_RIP, CODE + 0x10)
    w(F.GUEST_RSP, STACK - 0x124)
    w(F.GUEST_RFLAGS, 0x2 | 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x200)
    w(F.GUEST_CR3, 0x5000)
    w(F.GUEST_CR4, 0x2000 | 0x10 | 0x80)
    w(F.GUEST_GDTR_BASE, 0x1234)
    w(F.GUEST_GDTR_LIMIT, 0x57)
    w(F.GUEST_IDTR_BASE, 0x4321)
    w(F.GUEST_IDTR_LIMIT, 0x7FF)
    w(F.GUEST_SYSENTER_CS, 0x08)
    w(F.GUEST_SYSENTER_ESP, 0xDEAD0000)
    w(F.GUEST_SYSENTER_EIP, 0xBEEF0000)
    w(F.GUEST_ES_SELECTOR, 0x2B)  # RPL 3 (unrestricted guest: DPL/RPL checks relaxed)
    w(F.GUEST_ES_AR_BYTES, 0xC0F3)
    w(F.GUEST_DS_BASE, 0x10000)  # a 16-bit, byte-granular, based segment
    w(F.GUEST_DS_LIMIT, 0xFFFF)
    w(F.GUEST_DS_AR_BYTES, 0x0093)
    w(F.GUEST_FS_SELECTOR, 0)
    w(F.GUEST_FS_BASE, 0)
    w(F.GUEST_FS_LIMIT, 0)
    w(F.GUEST_FS_AR_BYTES, AR_UNUSABLE)
    w(F.GUEST_GS_AR_BYTES, 0xD093)  # AVL set
    w(F.GUEST_SS_AR_BYTES, 0xC097)  # expand-down
    w(F.GUEST_CS_AR_BYTES, 0xC09F)  # conforming


@pytest.mark.parametrize("variant", [False, True], ids=["bench", "variant"])
def test_load_save_round_trip_is_exact(variant: bool) -> None:
    b = Bench("hlt")
    if variant:
        _variant_state(b)
    before = {f: b.read(f) for f in SAVED}
    assert b.enter(), b.vmx.entry_failure
    b.vmx.vm_exit(None)  # an exit before any instruction: nothing changed
    after = {f: b.read(f) for f in SAVED}
    diff = {f.name: (hex(before[f]), hex(after[f])) for f in SAVED if before[f] != after[f]}
    assert diff == {}
    # And again through the CPU: enter (VMRESUME) from the saved state, exit, compare.
    assert b.enter(launch=False), b.vmx.entry_failure
    b.vmx.vm_exit(None)
    assert {f: b.read(f) for f in SAVED} == before


def test_activity_state_hlt_round_trip() -> None:
    b = Bench("hlt\nnop")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    b.vmcs.write(F.GUEST_ACTIVITY_STATE, 1)
    assert b.enter()
    assert b.cpu.halted
    b.vmx.vm_exit(None)
    assert b.read(F.GUEST_ACTIVITY_STATE) == 1
    assert b.read(F.GUEST_RIP) == CODE


def test_ldtr_and_tr_fields_are_left_alone() -> None:
    """An exit stores LDTR and TR as the entry loaded them where no LLDT or LTR ran: the
    fields as the VMM wrote them (tests/stack/test_ldt_tr.py: after LTR, the new TR)."""
    b = Bench("hlt")
    before = {f: b.read(f) for name in ("ldtr", "tr") for f in SEGMENTS[name]}
    b.run()
    assert {f: b.read(f) for f in before} == before


def test_a_based_segment_stops_the_run_with_a_reason() -> None:
    # Legal for VM entry, but vmsim's CPU has flat segments only: never run it wrongly.
    from vmsim.hw.exceptions import Unsupported

    b = Bench("hlt")
    b.vmcs.write(F.GUEST_DS_BASE, 0x10000)
    assert b.enter()
    with pytest.raises(Unsupported, match="DS base 0x10000"):
        b.vmx.run(100)
