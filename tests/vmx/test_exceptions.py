"""Exceptions in VMX non-root operation: the exception bitmap and the #PF error-code
filter, exit interruption information, triple fault, and event injection on VM entry
(SDM "Exceptions", "VM-Exit Information Fields", "Event Injection"; fact sheet 2.5, 2.6)."""

from __future__ import annotations

import pytest

from tests.vmx.harness import CODE, STACK, Bench, identity_paging, stub_address
from vmsim.hw import exceptions as X
from vmsim.hw.vmcs import ExitReason, F

UNMAPPED, READ_ONLY = 0x50000, 0x51000


def _bitmap(b: Bench, *vectors: int) -> None:
    b.vmcs.write(F.EXCEPTION_BITMAP, sum(1 << v for v in vectors))


def test_ud_exits_with_interruption_info() -> None:
    b = Bench("nop\nstart: ud2\nhlt")
    assert b.mem.read_bytes(b.sym("start"), 2) == bytes.fromhex("0f0b")
    _bitmap(b, X.UD)
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_REASON) == 0
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000306  # vector 6, hardware exception, valid
    assert b.read(F.EXIT_QUALIFICATION) == 0
    assert b.read(F.GUEST_RIP) == b.sym("start")  # a fault: RIP at the instruction
    assert b.read(F.GUEST_RSP) == STACK  # nothing pushed
    assert b.vector_log is None  # not delivered


def test_gp_exits_with_error_code() -> None:
    # Selector 0x28 is past the GDT limit: #GP(0x28).
    b = Bench("mov ax, 0x28\nstart: mov ds, ax\nhlt")
    _bitmap(b, X.GP)
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0D  # + deliver-error-code (bit 11)
    assert b.read(F.VM_EXIT_INTR_ERROR_CODE) == e.intr_error_code == 0x28
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_divide_error_exits() -> None:
    b = Bench("xor ecx, ecx\nstart: div ecx\nhlt")
    _bitmap(b, X.DE)
    b.run()
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000300
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_exception_not_in_bitmap_is_delivered_through_the_guest_idt() -> None:
    b = Bench("nop\nstart: ud2\nhlt")
    _bitmap(b, X.GP, X.PF, X.DE)
    e = b.run()
    # The guest's #UD handler ran (it records its vector and halts: the HLT exits).
    assert e.reason == ExitReason.HLT
    assert b.vector_log == X.UD
    assert b.read(F.GUEST_RIP) == stub_address(X.UD) + 10
    # The exception frame: EIP of the ud2, CS, EFLAGS (no error code for #UD).
    assert b.read(F.GUEST_RSP) == STACK - 12
    assert b.mem.read(STACK - 12, 4) == b.sym("start")
    assert b.mem.read(STACK - 8, 4) == 0x08
    assert b.mem.read(STACK - 4, 4) & 0x2


def test_gp_not_in_bitmap_pushes_its_error_code() -> None:
    b = Bench("mov ax, 0x28\nmov ds, ax\nhlt")
    _bitmap(b, X.UD)
    b.run()
    assert b.vector_log == X.GP
    assert b.mem.read(STACK - 16, 4) == 0x28


def _pf_bench(access: str) -> Bench:
    b = Bench(f"mov eax, {UNMAPPED + 0x123:#x}\nmov ebx, {READ_ONLY + 0x10:#x}\n"
              f"start: {access}\nhlt")
    identity_paging(b, not_present=(UNMAPPED,), read_only=(READ_ONLY,))
    b.cpu.cr2 = 0xCAFE000
    return b


# (access, its #PF error code, linear address)
PF_ACCESSES = {
    "read": ("mov ecx, [eax]", 0x0, UNMAPPED + 0x123),
    "write": ("mov [eax], ecx", 0x2, UNMAPPED + 0x123),
    "protection": ("mov [ebx], ecx", 0x3, READ_ONLY + 0x10),
}


@pytest.mark.parametrize("kind", PF_ACCESSES)
def test_pf_exit_qualification_is_the_linear_address_and_cr2_is_untouched(kind: str) -> None:
    asm, code, la = PF_ACCESSES[kind]
    b = _pf_bench(asm)
    _bitmap(b, X.PF)  # mask 0, match 0: every #PF exits
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0E
    assert b.read(F.VM_EXIT_INTR_ERROR_CODE) == code
    assert b.read(F.EXIT_QUALIFICATION) == la
    assert b.cpu.cr2 == 0xCAFE000  # a #PF that exits does not write CR2 (SDM 27.1)
    assert b.read(F.GUEST_RIP) == b.sym("start")


# bit 14 of the bitmap, PFEC_MASK, PFEC_MATCH, and which accesses exit.
PFEC_CASES = [
    (1, 0, 0, {"read", "write", "protection"}),
    (1, 0x2, 0x2, {"write", "protection"}),  # write faults only
    (1, 0x1, 0x1, {"protection"}),  # present (protection) faults only
    (1, 0x1, 0x0, {"read", "write"}),  # not-present faults only
    (1, 0x0, 0x1, set()),  # match can never equal (code & 0): none
    (0, 0, 0, set()),  # bit clear: exits iff (code & mask) != match, never with 0/0
    (0, 0x2, 0x2, {"read"}),  # bit clear inverts: non-write faults exit
    (0, 0x0, 0x1, {"read", "write", "protection"}),  # the usual "all #PF exit" idiom
]


@pytest.mark.parametrize(("bit", "mask", "match", "exiting"), PFEC_CASES)
@pytest.mark.parametrize("kind", PF_ACCESSES)
def test_pf_error_code_mask_and_match(bit: int, mask: int, match: int, exiting: set[str],
                                      kind: str) -> None:
    asm, code, la = PF_ACCESSES[kind]
    b = _pf_bench(asm)
    b.vmcs.write(F.EXCEPTION_BITMAP, bit << X.PF)
    b.vmcs.write(F.PAGE_FAULT_ERROR_CODE_MASK, mask)
    b.vmcs.write(F.PAGE_FAULT_ERROR_CODE_MATCH, match)
    e = b.run()
    if kind in exiting:
        assert e.reason == ExitReason.EXCEPTION_NMI
        assert b.read(F.EXIT_QUALIFICATION) == la
        assert b.cpu.cr2 == 0xCAFE000
    else:
        assert e.reason == ExitReason.HLT
        assert b.vector_log == X.PF  # delivered to the guest, with CR2 written
        assert b.cpu.cr2 == la
        assert b.mem.read(STACK - 16, 4) == code


def test_int3_in_bitmap_exits_as_a_software_exception() -> None:
    b = Bench("nop\nstart: int3\nhlt")
    _bitmap(b, X.BP)
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000603  # vector 3, software exception
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 1
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_fault_during_delivery_exits_for_the_second_exception() -> None:
    # The IDT ends before vector 6: delivering #UD raises #GP(6*8+2+EXT=1 -> 0x33).
    b = Bench("nop\nstart: ud2\nhlt")
    _bitmap(b, X.GP)
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 6 * 8 - 1)
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0D
    assert b.read(F.VM_EXIT_INTR_ERROR_CODE) == 6 * 8 + 2 + 1
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_fault_during_delivery_records_idt_vectoring_info() -> None:
    b = Bench("nop\nud2\nhlt")
    _bitmap(b, X.GP)
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 6 * 8 - 1)
    b.run()
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == 0x80000306  # the #UD, to re-inject


def test_idt_vectoring_info_is_invalid_for_an_ordinary_exit() -> None:
    b = Bench("hlt")
    b.vmcs.write(F.IDT_VECTORING_INFO_FIELD, 0x80000306)  # stale
    b.run()
    assert not b.read(F.IDT_VECTORING_INFO_FIELD) & 0x80000000


def test_triple_fault_always_exits() -> None:
    # No IDT: #UD cannot be delivered (#GP), nor can that (#DF), nor that: shutdown.
    b = Bench("nop\nstart: ud2")
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 0)
    _bitmap(b)
    e = b.run()
    assert e.reason == ExitReason.TRIPLE_FAULT
    assert b.read(F.VM_EXIT_REASON) == 2
    assert b.read(F.EXIT_QUALIFICATION) == 0
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert not b.cpu.shut_down  # the exit happened instead of the shutdown


def _injection_bench(info: int, error_code: int = 0, length: int = 0) -> Bench:
    b = Bench("start: nop\nhlt")
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info)
    b.vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, error_code)
    b.vmcs.write(F.VM_ENTRY_INSTRUCTION_LEN, length)
    return b


def test_inject_gp_with_error_code() -> None:
    b = _injection_bench(0x80000B0D, 0x1234)
    _bitmap(b, X.GP)  # injected events are delivered, never intercepted
    assert b.enter(), b.vmx.entry_failure
    assert not b.read(F.VM_ENTRY_INTR_INFO_FIELD) & 0x80000000  # valid bit cleared
    assert b.cpu.eip == stub_address(X.GP)
    e = b.vmx.run(100)
    assert e.reason == ExitReason.HLT
    assert b.vector_log == X.GP
    # Frame: error code, EIP (the guest RIP: a fault returns to it), CS, EFLAGS.
    assert b.read(F.GUEST_RSP) == STACK - 16
    assert b.mem.read(STACK - 16, 4) == 0x1234
    assert b.mem.read(STACK - 12, 4) == CODE
    assert b.mem.read(STACK - 8, 4) == 0x08
    # Re-entering does not inject again.
    b.vmcs.write(F.GUEST_RIP, CODE)
    b.vmcs.write(F.GUEST_RSP, STACK)
    assert b.enter(launch=False)
    assert b.cpu.eip == CODE


def test_inject_ud_without_error_code() -> None:
    b = _injection_bench(0x80000306)
    assert b.enter()
    b.vmx.run(100)
    assert b.vector_log == X.UD
    assert b.mem.read(STACK - 12, 4) == CODE
    assert b.read(F.GUEST_RSP) == STACK - 12


def test_inject_external_interrupt() -> None:
    b = _injection_bench(0x80000020)
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    assert b.enter(), b.vmx.entry_failure
    b.vmx.run(100)
    assert b.vector_log == 0x20
    assert b.mem.read(STACK - 12, 4) == CODE
    assert b.mem.read(STACK - 4, 4) & 0x200  # IF as it was; the gate then clears it


def test_inject_software_interrupt_returns_past_the_instruction() -> None:
    b = _injection_bench(0x80000480, length=2)  # INT 0x80, type 4, as if `int 0x80` ran
    assert b.enter(), b.vmx.entry_failure
    b.vmx.run(100)
    assert b.vector_log == 0x80
    assert b.mem.read(STACK - 12, 4) == CODE + 2


def test_inject_pf_writes_no_cr2() -> None:
    """The VMM writes CR2 itself before injecting a #PF (fact sheet 2.6)."""
    b = _injection_bench(0x80000B0E, 0x2)
    b.cpu.cr2 = 0x4444
    assert b.enter()
    assert b.cpu.cr2 == 0x4444
    b.vmx.run(100)
    assert b.vector_log == X.PF
    assert b.mem.read(STACK - 16, 4) == 0x2


def test_fault_while_delivering_an_injected_event_exits() -> None:
    # Inject #UD; the IDT ends before vector 6, so delivery raises #GP, which the bitmap
    # intercepts: the entry succeeds and the first thing that happens is the #GP exit,
    # with IDT-vectoring info naming the injected #UD for the VMM to re-inject.
    b = _injection_bench(0x80000306)
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 6 * 8 - 1)
    _bitmap(b, X.GP)
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0D
    assert b.read(F.VM_EXIT_INTR_ERROR_CODE) == 6 * 8 + 2 + 1
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == 0x80000306
    assert b.read(F.GUEST_RIP) == CODE
    assert b.read(F.GUEST_RSP) == STACK
    assert b.cpu.icount == 0  # no guest instruction ran


def test_triple_fault_while_delivering_an_injected_event() -> None:
    b = _injection_bench(0x80000B0D, 0)
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 0)
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert e.reason == ExitReason.TRIPLE_FAULT
    assert b.read(F.GUEST_RIP) == CODE
    assert not b.cpu.shut_down
