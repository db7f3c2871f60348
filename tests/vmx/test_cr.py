"""Control-register accesses (reason 28): when MOV CR exits, its qualification, and what
the guest reads (SDM "Exit Qualification for Control-Register Accesses", "Instructions That
Cause VM Exits Conditionally"; fact sheet 1.4)."""

from __future__ import annotations

import pytest

from tests.vmx.harness import Bench
from vmsim.hw.vmcs import (
    CPU_BASED_CR3_LOAD_EXITING,
    CPU_BASED_CR3_STORE_EXITING,
    ExitReason,
    F,
)


@pytest.mark.parametrize(("asm", "raw", "qual"), [
    ("mov cr3, eax", "0f22d8", 0x003),
    ("mov cr3, esi", "0f22de", 0x603),
    ("mov ebx, cr3", "0f20db", 0x313),
    ("mov edi, cr3", "0f20df", 0x713),
])
def test_cr3_qualification(asm: str, raw: str, qual: int) -> None:
    b = Bench(f"mov eax, 0x5000\nmov esi, 0x5000\nstart: {asm}\nhlt")
    b.controls(set_=CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING)
    e = b.run()
    assert b.mem.read_bytes(b.sym("start"), 3) == bytes.fromhex(raw)
    assert e.reason == ExitReason.CR_ACCESS
    assert b.read(F.EXIT_QUALIFICATION) == qual
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 3
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert b.cpu.cr3 == 0 and b.read(F.GUEST_CR3) == 0  # not loaded


def test_cr3_without_exiting_controls() -> None:
    b = Bench("mov eax, 0x5000\nmov cr3, eax\nmov ebx, cr3\nhlt")
    b.controls(clear=CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING)
    assert b.run().reason == ExitReason.HLT
    assert b.cpu.r[3] == 0x5000 and b.read(F.GUEST_CR3) == 0x5000


def test_cr3_store_exiting_only() -> None:
    b = Bench("mov eax, 0x5000\nmov cr3, eax\nstart: mov ebx, cr3\nhlt")
    b.controls(set_=CPU_BASED_CR3_STORE_EXITING, clear=CPU_BASED_CR3_LOAD_EXITING)
    e = b.run()
    assert e.reason == ExitReason.CR_ACCESS and e.qualification == 0x313
    assert b.read(F.GUEST_RIP) == b.sym("start")


@pytest.mark.parametrize(("count", "targets", "value", "exits"), [
    (0, [0x5000], 0x5000, True),  # count 0: every load exits
    (1, [0x5000], 0x5000, False),
    (1, [0x5000], 0x6000, True),
    (2, [0x7000, 0x6000], 0x6000, False),
    (1, [0x7000, 0x6000], 0x6000, True),  # only the first COUNT values count
    (4, [0x1000, 0x2000, 0x3000, 0x6000], 0x6000, False),
])
def test_cr3_target_values(count: int, targets: list[int], value: int, exits: bool) -> None:
    b = Bench(f"mov eax, {value:#x}\nmov cr3, eax\nhlt")
    b.controls(set_=CPU_BASED_CR3_LOAD_EXITING)
    b.vmcs.write(F.CR3_TARGET_COUNT, count)
    for i, t in enumerate(targets):
        b.vmcs.write(F.CR3_TARGET_VALUE0 + 2 * i, t)
    e = b.run()
    assert e.reason == (ExitReason.CR_ACCESS if exits else ExitReason.HLT)
    if not exits:
        assert b.read(F.GUEST_CR3) == value


def _cr0_bench(value: int, mask: int, shadow: int) -> Bench:
    b = Bench(f"mov ecx, {value:#x}\nstart: mov cr0, ecx\nhlt")
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, mask)
    b.vmcs.write(F.CR0_READ_SHADOW, shadow)
    return b


def test_mov_cr0_exits_when_a_masked_bit_differs_from_the_shadow() -> None:
    # The host owns NE (0x20) and shows the guest NE=0; the guest writes NE=1.
    b = _cr0_bench(0x31, 0x20, 0x11)
    e = b.run()
    assert e.reason == ExitReason.CR_ACCESS
    assert b.read(F.EXIT_QUALIFICATION) == 0x100
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 3


def test_mov_cr0_no_exit_when_only_guest_owned_bits_change() -> None:
    # The host owns NE and PG and shows the guest NE=0; the guest writes NE as shown and
    # sets TS, which it owns: no exit, and TS reaches the hardware CR0.
    b = _cr0_bench(0x19, 0x80000020, 0x11)
    assert b.run().reason == ExitReason.HLT
    assert b.vector_log is None  # no fault either
    assert b.read(F.GUEST_CR0) & 0x8
    assert b.read(F.CR0_READ_SHADOW) == 0x11  # the shadow is the VMM's, never the CPU's


def test_mov_cr0_leaves_host_owned_bits_unmodified() -> None:
    # kvm.ko's situation: the guest believes NE=0 (shadow 0x11), the hardware keeps NE=1.
    # If the guest's write loaded NE=0, the next VM entry would fail its CR0 check.
    b = _cr0_bench(0x19, 0x80000020, 0x11)
    b.run()
    assert b.read(F.GUEST_CR0) == 0x39  # NE kept, TS from the guest
    assert b.enter(launch=False), b.vmx.entry_failure


def test_mov_from_cr0_reads_the_shadow_for_masked_bits() -> None:
    b = Bench("mov eax, cr0\nmov ebx, cr4\nhlt")
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, 0x20)  # host owns NE
    b.vmcs.write(F.CR0_READ_SHADOW, 0x11)  # the guest believes NE=0
    b.vmcs.write(F.CR4_GUEST_HOST_MASK, 0x2000)  # host owns VMXE
    b.vmcs.write(F.CR4_READ_SHADOW, 0)
    b.vmcs.write(F.GUEST_CR4, 0x2010)  # PSE (guest-owned) and VMXE
    e = b.run()
    assert e.reason == ExitReason.HLT  # MOV from CR0/CR4 never exits
    assert b.cpu.r[0] == 0x11  # NE from the shadow, the rest from CR0 (0x31)
    assert b.cpu.r[3] == 0x10  # VMXE hidden, PSE real
    assert b.read(F.GUEST_CR0) == 0x31 and b.read(F.GUEST_CR4) == 0x2010


def test_mov_cr4_exits_on_a_masked_bit() -> None:
    b = Bench("mov eax, 0x2090\nstart: mov cr4, eax\nhlt")
    b.vmcs.write(F.CR4_GUEST_HOST_MASK, 0x2000 | 0x10)  # host owns VMXE and PSE
    b.vmcs.write(F.CR4_READ_SHADOW, 0)
    e = b.run()
    assert e.reason == ExitReason.CR_ACCESS
    assert e.qualification == 0x004
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_mov_cr4_guest_owned_bits_only() -> None:
    b = Bench("mov eax, 0x2080\nmov cr4, eax\nhlt")  # PGE (guest-owned), VMXE as it is
    b.vmcs.write(F.CR4_GUEST_HOST_MASK, 0x10)
    b.vmcs.write(F.CR4_READ_SHADOW, 0)
    assert b.run().reason == ExitReason.HLT
    assert b.vector_log is None
    assert b.read(F.GUEST_CR4) == 0x2080


# CLTS and LMSW (SDM "Instructions That Cause VM Exits Conditionally"; qualification access
# types 2 and 3, fact sheet 1.4). The guest's CR0 is 0x31 (PE ET NE) unless a test sets it.

@pytest.mark.parametrize(("mask", "shadow", "exits", "cr0_after"), [
    (0x8, 0x39, True, 0x39),  # the host owns TS and shows it set: exit, CR0 as it was
    (0x8, 0x31, False, 0x39),  # owns TS, shows it clear: no exit and TS stays (host's)
    (0x0, 0x39, False, 0x31),  # the guest owns TS: it is cleared
    (0x20, 0x19, False, 0x31),  # the host owns NE only: TS is the guest's
])
def test_clts(mask: int, shadow: int, exits: bool, cr0_after: int) -> None:
    b = Bench("start: clts\nhlt")
    b.vmcs.write(F.GUEST_CR0, 0x39)
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, mask)
    b.vmcs.write(F.CR0_READ_SHADOW, shadow)
    e = b.run()
    assert b.mem.read_bytes(b.sym("start"), 2) == bytes.fromhex("0f06")
    if exits:
        assert e.reason == ExitReason.CR_ACCESS
        assert b.read(F.EXIT_QUALIFICATION) == 0x20  # CR 0, access type 2
        assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 2
        assert b.read(F.GUEST_RIP) == b.sym("start")
    else:
        assert e.reason == ExitReason.HLT and b.vector_log is None
    assert b.read(F.GUEST_CR0) == cr0_after


@pytest.mark.parametrize(("mask", "shadow", "source", "exits"), [
    (0xFFFFFFF7, 0x31, 0x0001, False),  # PE as shown; MP EM TS (shown clear) stay clear
    (0xFFFFFFF7, 0x31, 0x0009, False),  # TS is the guest's
    (0xFFFFFFF7, 0x31, 0x0003, True),  # MP, owned, would differ
    (0xFFFFFFF7, 0x31, 0x0005, True),  # EM
    (0xFFFFFFF7, 0x31, 0x0000, False),  # PE cannot be cleared: no difference to exit for
    (0xFFFFFFF7, 0x30, 0x0000, False),  # PE shown clear, left clear
    (0xFFFFFFF7, 0x30, 0x0001, True),  # PE shown clear, set
    (0xFFFFFFF7, 0x33, 0x0001, True),  # MP shown set, cleared
    (0x00000001, 0x30, 0x0001, True),  # only PE owned
    (0x0000000E, 0x3F, 0xFFFE, False),  # MP EM TS owned and shown as the source has them
    (0x00000000, 0x31, 0xFFFF, False),  # nothing owned
])
def test_lmsw_register(mask: int, shadow: int, source: int, exits: bool) -> None:
    b = Bench(f"mov eax, {0xABCD0000 | source:#x}\nstart: lmsw ax\nhlt")
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, mask)
    b.vmcs.write(F.CR0_READ_SHADOW, shadow)
    e = b.run()
    assert b.mem.read_bytes(b.sym("start"), 3) == bytes.fromhex("0f01f0")
    if exits:
        assert e.reason == ExitReason.CR_ACCESS
        # CR 0, access type 3, a register operand, the source data in 31:16.
        assert b.read(F.EXIT_QUALIFICATION) == 0x30 | source << 16
        assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 3
        assert b.read(F.GUEST_RIP) == b.sym("start")
        assert b.read(F.GUEST_CR0) == 0x31
    else:
        assert e.reason == ExitReason.HLT and b.vector_log is None
        # Bits 3:1 from the source where the guest owns them, PE set if it was or the
        # source sets it where the guest owns it; the rest of CR0 unchanged.
        want = (0x31 & ~(0xE & ~mask)) | (source & 0xE & ~mask) | (source & 1 & ~mask)
        assert b.read(F.GUEST_CR0) == want


def test_lmsw_memory_operand() -> None:
    b = Bench("mov word [0x3000], 0x8003\nmov ebx, 0x2ff0\nstart: lmsw [ebx + 0x10]\nhlt")
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, 0x2)  # the host owns MP
    b.vmcs.write(F.CR0_READ_SHADOW, 0x31)
    e = b.run()
    assert e.reason == ExitReason.CR_ACCESS
    # Bit 6: a memory operand; its linear address in the guest-linear address field.
    assert b.read(F.EXIT_QUALIFICATION) == 0x30 | 0x40 | 0x8003 << 16
    assert b.read(F.GUEST_LINEAR_ADDRESS) == 0x3000
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 4


def test_smsw_reads_the_shadow_for_owned_bits_and_never_exits() -> None:
    b = Bench("mov eax, 0xFFFFFFFF\nmov ebx, 0xFFFFFFFF\nsmsw eax\nsmsw bx\nsmsw [0x3000]\n"
              "clts\nhlt")
    b.vmcs.write(F.GUEST_CR0, 0x39)
    b.vmcs.write(F.CR0_GUEST_HOST_MASK, 0xFFFFFFF7)  # kvm.ko's: the guest owns TS
    b.vmcs.write(F.CR0_READ_SHADOW, 0x11)  # the guest believes NE is clear
    assert b.run().reason == ExitReason.HLT
    assert b.cpu.r[0] == 0x19  # all of CR0 in a 32-bit register: NE from the shadow, TS real
    assert b.cpu.r[3] == 0xFFFF0019  # a 16-bit register keeps its high half
    assert b.mem.read(0x3000, 2) == 0x19
    assert b.read(F.GUEST_CR0) == 0x31  # CLTS cleared TS, which the guest owns
