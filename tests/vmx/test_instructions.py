"""Instructions that exit unconditionally (CPUID, VMCALL, INVD) or per a control (HLT, RDTSC,
RDMSR/WRMSR, INVLPG, WBINVD) (SDM "Instructions That Cause VM Exits Unconditionally/Conditionally")."""

from __future__ import annotations

import pytest

from tests.vmx.harness import Bench
from vmsim.hw.vmcs import (
    CPU_BASED_HLT_EXITING,
    CPU_BASED_INVLPG_EXITING,
    CPU_BASED_RDTSC_EXITING,
    CPU_BASED_USE_MSR_BITMAPS,
    CPU_BASED_USE_TSC_OFFSETTING,
    GUEST_ACTIVITY_ACTIVE,
    GUEST_ACTIVITY_HLT,
    SECONDARY_EXEC_ENABLE_EPT,
    SECONDARY_EXEC_UNRESTRICTED_GUEST,
    SECONDARY_EXEC_WBINVD_EXITING,
    ExitReason,
    F,
)


def test_hlt_exiting() -> None:
    b = Bench("nop\nstart: hlt\nnop")
    e = b.run()
    assert e.reason == ExitReason.HLT
    assert b.read(F.VM_EXIT_REASON) == 12
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 1
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_ACTIVE
    assert not b.cpu.halted


def test_hlt_without_exiting_halts_in_the_guest() -> None:
    b = Bench("nop\nhlt\nafter: nop")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    assert b.run() is None  # the CPU halts in non-root operation: no exit
    assert b.cpu.halted
    assert b.vmx.run(100) is None  # still halted
    # A later exit (the VMM's kick: an external interrupt) saves activity state HLT and
    # RIP after the HLT.
    e = b.vmx.vm_exit(None)
    assert e.reason == ExitReason.EXTERNAL_INTERRUPT
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_HLT
    assert b.read(F.GUEST_RIP) == b.sym("after")
    # Re-entering with activity state HLT leaves the guest halted.
    assert b.enter(launch=False), b.vmx.entry_failure
    assert b.cpu.halted and b.vmx.run(100) is None


@pytest.mark.parametrize(("asm", "raw", "reason"), [
    ("cpuid", "0fa2", ExitReason.CPUID),
    ("vmcall", "0f01c1", ExitReason.VMCALL),
    ("invd", "0f08", ExitReason.INVD),
])
def test_unconditional_exits(asm: str, raw: str, reason: int) -> None:
    # No control turns these off: even with every optional exiting control clear.
    b = Bench(f"mov eax, 1\nstart: {asm}\nhlt", cpu_based=0x0401E172 | (1 << 31))
    e = b.run()
    assert b.mem.read_bytes(b.sym("start"), len(raw) // 2) == bytes.fromhex(raw)
    assert e.reason == reason
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == len(raw) // 2
    assert b.read(F.EXIT_QUALIFICATION) == 0
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert b.cpu.r[0] == 1  # CPUID did not run


def test_rdtsc_exiting() -> None:
    b = Bench("start: rdtsc\nhlt")
    b.controls(set_=CPU_BASED_RDTSC_EXITING)
    e = b.run()
    assert e.reason == ExitReason.RDTSC
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 2
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_rdtsc_with_tsc_offsetting() -> None:
    prog = "rdtsc\nmov esi, eax\nmov edi, edx\nhlt"
    plain = Bench(prog)
    plain.controls(clear=CPU_BASED_RDTSC_EXITING | CPU_BASED_USE_TSC_OFFSETTING)
    assert plain.run().reason == ExitReason.HLT
    base = plain.cpu.r[7] << 32 | plain.cpu.r[6]

    offset = 0x1_0000_0000_0000
    b = Bench(prog)
    b.controls(set_=CPU_BASED_USE_TSC_OFFSETTING, clear=CPU_BASED_RDTSC_EXITING)
    b.vmcs.write(F.TSC_OFFSET, offset)
    assert b.run().reason == ExitReason.HLT
    assert (b.cpu.r[7] << 32 | b.cpu.r[6]) == base + offset

    # The offset is a control: without "use TSC offsetting" it is ignored.
    c = Bench(prog)
    c.controls(clear=CPU_BASED_USE_TSC_OFFSETTING | CPU_BASED_RDTSC_EXITING)
    c.vmcs.write(F.TSC_OFFSET, offset)
    assert c.run().reason == ExitReason.HLT
    assert (c.cpu.r[7] << 32 | c.cpu.r[6]) == base


def test_tsc_offset_wraps_modulo_2_64() -> None:
    """A negative offset is its two's complement (SDM: the sum is modulo 2^64)."""
    b = Bench("times 10 nop\nrdtsc\nhlt")
    b.controls(set_=CPU_BASED_USE_TSC_OFFSETTING, clear=CPU_BASED_RDTSC_EXITING)
    b.vmcs.write(F.TSC_OFFSET, (-4) & 0xFFFFFFFFFFFFFFFF)
    b.run()
    assert b.cpu.r[2] << 32 | b.cpu.r[0] == 10 - 4  # vmsim's TSC: one tick per instruction


def test_tsc_offset_is_not_kept_when_offsetting_is_turned_off() -> None:
    b = Bench("start: rdtsc\nhlt")
    b.controls(set_=CPU_BASED_USE_TSC_OFFSETTING, clear=CPU_BASED_RDTSC_EXITING)
    b.vmcs.write(F.TSC_OFFSET, 1 << 40)
    b.run()
    assert b.cpu.r[2] == 1 << 8
    b.vmcs.write(F.GUEST_RIP, b.sym("start"))
    b.controls(clear=CPU_BASED_USE_TSC_OFFSETTING)
    b.run()
    assert b.cpu.r[2] == 0  # the physical TSC again


def _msr_bench(op: str, msr: int, bitmap: set[tuple[int, bool]] | None) -> Bench:
    b = Bench(f"mov ecx, {msr:#x}\nxor eax, eax\nxor edx, edx\nstart: {op}\nhlt")
    if bitmap is None:
        b.controls(clear=CPU_BASED_USE_MSR_BITMAPS)
    else:
        b.controls(set_=CPU_BASED_USE_MSR_BITMAPS)
        b.vmcs.msr_bitmap = bitmap
    return b


@pytest.mark.parametrize(("op", "reason"), [("rdmsr", ExitReason.MSR_READ),
                                            ("wrmsr", ExitReason.MSR_WRITE)])
def test_msr_without_bitmaps_always_exits(op: str, reason: int) -> None:
    b = _msr_bench(op, 0x174, None)
    e = b.run()
    assert e.reason == reason
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 2
    assert b.read(F.GUEST_RIP) == b.sym("start")


@pytest.mark.parametrize(("op", "msr", "bitmap", "exits"), [
    ("rdmsr", 0x174, set(), False),
    ("rdmsr", 0x174, {(0x174, False)}, True),
    ("rdmsr", 0x174, {(0x174, True)}, False),  # only the write bit is set
    ("wrmsr", 0x174, {(0x174, True)}, True),
    ("wrmsr", 0x174, {(0x174, False)}, False),
    ("rdmsr", 0x1FFF, {(0x1FFF, False)}, True),
    ("rdmsr", 0xC0000080, {(0xC0000080, False)}, True),  # high range
    ("wrmsr", 0xC0001FFF, set(), False),
    ("rdmsr", 0x2000, set(), True),  # outside both ranges: always exits
    ("wrmsr", 0x40000000, set(), True),
    ("rdmsr", 0xC0002000, set(), True),
])
def test_msr_bitmaps(op: str, msr: int, bitmap: set, exits: bool) -> None:
    b = _msr_bench(op, msr, bitmap)
    e = b.run()
    if exits:
        assert e.reason == (ExitReason.MSR_READ if op == "rdmsr" else ExitReason.MSR_WRITE)
        assert b.read(F.GUEST_RIP) == b.sym("start")
    else:
        # No exit: the instruction runs in the guest (and may #GP for an MSR the CPU
        # lacks; the stub then halts).
        assert e.reason == ExitReason.HLT


def test_msr_passthrough_reads_the_guest_value() -> None:
    b2 = Bench("mov ecx, 0x175\nmov eax, 0xabcd\nxor edx, edx\nwrmsr\nxor eax, eax\nrdmsr\nhlt")
    b2.controls(set_=CPU_BASED_USE_MSR_BITMAPS)
    b2.vmcs.msr_bitmap = set()
    assert b2.run().reason == ExitReason.HLT
    assert b2.cpu.r[0] == 0xABCD
    assert b2.read(F.GUEST_SYSENTER_ESP) == 0xABCD  # saved on exit


def test_invlpg_exiting() -> None:
    b = Bench("mov eax, 0x12345\nstart: invlpg [eax+0x10]\nhlt")
    b.controls(set_=CPU_BASED_INVLPG_EXITING)
    e = b.run()
    assert e.reason == ExitReason.INVLPG
    assert b.read(F.EXIT_QUALIFICATION) == 0x12355  # the linear address
    assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 4
    assert b.read(F.GUEST_RIP) == b.sym("start")


def test_invlpg_without_exiting() -> None:
    b = Bench("mov eax, 0x12345\ninvlpg [eax]\nhlt")
    b.controls(clear=CPU_BASED_INVLPG_EXITING)
    assert b.run().reason == ExitReason.HLT


@pytest.mark.parametrize(("secondary", "exits"), [
    (SECONDARY_EXEC_WBINVD_EXITING, True),
    (0, False),
])
def test_wbinvd_exiting(secondary: int, exits: bool) -> None:
    # Bit 6 of the secondary controls (fact sheet 2.4); exit reason 54, no qualification.
    b = Bench("start: wbinvd\nhlt")
    b.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, secondary | SECONDARY_EXEC_ENABLE_EPT
                 | SECONDARY_EXEC_UNRESTRICTED_GUEST)
    e = b.run()
    assert b.mem.read_bytes(b.sym("start"), 2) == bytes.fromhex("0f09")
    if exits:
        assert e.reason == ExitReason.WBINVD and b.read(F.VM_EXIT_REASON) == 54
        assert b.read(F.VM_EXIT_INSTRUCTION_LEN) == 2
        assert b.read(F.EXIT_QUALIFICATION) == 0
        assert b.read(F.GUEST_RIP) == b.sym("start")
    else:
        assert e.reason == ExitReason.HLT and b.read(F.GUEST_RIP) == b.sym("start") + 2
