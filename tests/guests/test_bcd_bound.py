"""The faults of the decimal-arithmetic instructions, SALC and BOUND (SDM Vol. 2A AAM,
BOUND and each page's "Protected Mode Exceptions"), delivered through the IDT on a bare
CPU: BOUND's #BR and AAM 0's #DE are faults (EIP at the instruction, nothing changed),
BOUND reads both bounds before it compares (a #PF on either comes first), a register
second operand of BOUND is #UD, and so is a LOCK prefix on any of them. The values they
compute are compared with unicorn (tests/diff/test_forms.py) and with the host's
processor (tests/stack/test_decimal_adjust.py)."""

from __future__ import annotations

import struct

import pytest

from tests.guests.cpubench import CODE, STACK, Bench
from vmsim.asm import assemble
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import StopReason

RF = 0x10000
BOUNDS = 0x5FF8  # a pair of dword bounds; the next page starts at 0x6000


def _bench(body: str, lower: int = 0, upper: int = 0, at: int = BOUNDS) -> Bench:
    image = assemble(f"bits 32\norg {CODE:#x}\n{body}\n", "<bound>")
    b = Bench(image.data)
    b.all_gates()
    b.mem.load(at, struct.pack("<ii", lower, upper))
    return b


def _delivered(b: Bench, vector: int) -> bool:
    return b.cpu.eip == b.handler(vector) + 1 and b.cpu.halted


@pytest.mark.parametrize(("index", "outside"), [(-8, True), (-7, False), (100, False),
                                                (101, True), (-0x80000000, True)])
def test_bound_is_a_fault_at_the_instruction(index: int, outside: bool) -> None:
    b = _bench(f"mov eax, {index & 0xFFFFFFFF:#x}\nmov esi, {BOUNDS:#x}\n"
               "bound eax, [esi]\nhlt", lower=-7, upper=100)
    assert b.run() is StopReason.HLT
    if not outside:
        assert b.cpu.eip == CODE + 13 and b.cpu.r[4] == STACK  # past the HLT
        return
    assert _delivered(b, X.BR)
    assert b.cpu.r[4] == STACK - 12  # EIP, CS, EFLAGS: no error code
    eip, cs, eflags = b.stack(3)
    assert (eip, cs) == (CODE + 10, 0x08) and eflags & RF  # a fault: RF pushed set
    assert b.cpu.r[0] == index & 0xFFFFFFFF and b.cpu.r[6] == BOUNDS


def test_bound_16_bit_compares_the_low_word_signed() -> None:
    b = _bench(f"mov eax, 0x1234FFFF\nmov esi, {BOUNDS:#x}\nbound ax, [esi]\nhlt")
    b.mem.load(BOUNDS, struct.pack("<hh", -1, 5))  # -1 is inside [-1, 5]
    assert b.run() is StopReason.HLT and b.cpu.eip == CODE + 14 and b.cpu.r[4] == STACK
    b = _bench(f"mov eax, 0xFFFF0006\nmov esi, {BOUNDS:#x}\nbound ax, [esi]\nhlt")
    b.mem.load(BOUNDS, struct.pack("<hh", -1, 5))  # 6 is above
    assert b.run() is StopReason.HLT and _delivered(b, X.BR)


@pytest.mark.parametrize("missing", [0x5000, 0x6000])
def test_bound_reads_both_bounds_before_it_compares(missing: int) -> None:
    """The bounds straddle a page boundary (lower at 5FFCh, upper at 6000h); either page
    not present is #PF with CR2 at that bound, although the index is below the lower bound
    either way: #BR only once both are read."""
    b = _bench(f"mov eax, {-500 & 0xFFFFFFFF:#x}\nmov esi, {BOUNDS + 4:#x}\nbound eax, [esi]\nhlt")
    b.mem.load(BOUNDS + 4, struct.pack("<ii", 1, 2))
    b.paging()
    b.map(missing, 0)
    assert b.run() is StopReason.HLT and _delivered(b, X.PF)
    assert b.cpu.cr2 == max(missing, BOUNDS + 4)
    assert b.stack(2) == [0, CODE + 10]  # a read of a not-present page; EIP of the BOUND


def test_bound_with_a_register_operand_is_ud() -> None:
    b = _bench("")
    b.mem.load(CODE, bytes.fromhex("62c3"))  # bound eax, ebx: mod 3
    assert b.run() is StopReason.HLT and _delivered(b, X.UD)
    assert b.stack(1) == [CODE]


def test_aam_0_is_de_and_changes_nothing() -> None:
    b = _bench("mov eax, 0x1234ABCD\npush 0x8D7\npopfd\naam 0\nhlt")
    assert b.run() is StopReason.HLT and _delivered(b, X.DE)
    eip, _, eflags = b.stack(3)
    assert eip == CODE + 11 and eflags & 0x8D7 == 0x8D7  # the flags as they were
    assert b.cpu.r[0] == 0x1234ABCD


@pytest.mark.parametrize("code", ["f027", "f02f", "f037", "f03f", "f0d40a", "f0d50a", "f0d6",
                                  "f06206"])
def test_a_lock_prefix_is_ud(code: str) -> None:
    """SDM Vol. 2A, each one's exceptions: "#UD If the LOCK prefix is used" (unicorn runs
    LOCK DAA and LOCK SALC: tests/diff/README.md)."""
    b = _bench("")
    b.mem.load(CODE, bytes.fromhex(code))
    assert b.run() is StopReason.HLT and _delivered(b, X.UD)
    assert b.stack(1) == [CODE]
