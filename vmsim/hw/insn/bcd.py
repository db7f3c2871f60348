"""Decimal arithmetic (SDM Vol. 1 7.3.3 "Decimal Arithmetic Instructions", 4.7 "BCD and
Packed BCD Integers"; Vol. 2A DAA, DAS, AAA, AAS, AAM, AAD).

Each handler is the Operation section of its SDM page, on AL, AH and the flags; the rest of
EAX is left alone. All six are legal in 32-bit mode only (#UD in 64-bit mode, which vmsim
has not). Flags the SDM leaves undefined take QEMU's values (said per handler), so that
unicorn and vmsim agree on them too; the tests compare only the defined ones.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86

from vmsim.hw import exceptions as X
from vmsim.hw.flags import AF, CF, K_LOGIC, PARITY, SF, ZF, materialize, set_explicit
from vmsim.hw.insn.ctx import Ctx
from vmsim.hw.insn.table import handles

_LOGIC8 = K_LOGIC * 3  # 8-bit: SF ZF PF from the byte, CF = OF = AF = 0


def _szp(al: int) -> int:
    return PARITY[al] | (al & SF) | (0 if al else ZF)


@handles("daa")
def daa(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """DAA: the sum of two packed BCD bytes in AL made packed BCD again. The SDM's
    pseudo-code, with the AL and CF it started from (old_AL, old_CF): +6 when the low digit
    is past 9 or AF is set (CF = old_CF or that addition's carry, AF = 1), +60h when old_AL
    was past 99h or old_CF set (CF = 1, else CF = 0). SF ZF PF from AL; OF undefined:
    0 here (QEMU builds DAA's flags from nothing)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32

    def daa_() -> int:
        f = materialize(lf)
        old_al = al = r[0] & 0xFF
        old_cf = f & CF
        af = 0
        if (al & 0x0F) > 9 or f & AF:
            # (the CF this step gives, old_CF or its carry, the next one always replaces)
            al = (al + 6) & 0xFF
            af = AF
        if old_al > 0x99 or old_cf:
            al = (al + 0x60) & 0xFF
            cf = CF
        else:
            cf = 0
        r[0] = (r[0] & 0xFFFFFF00) | al
        set_explicit(lf, cf | af | _szp(al))
        return nxt
    return daa_


@handles("das")
def das(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """DAS: the difference of two packed BCD bytes in AL made packed BCD again. The SDM's
    pseudo-code: -6 when the low digit is past 9 or AF is set (CF = old_CF or that
    subtraction's borrow, AF = 1), -60h when old_AL was past 99h or old_CF set (CF = 1).
    Unlike DAA there is no "ELSE CF := 0": AL = 03h with AF set and CF clear borrows,
    AL = FDh and CF = 1. SF ZF PF from AL; OF undefined: 0 here (QEMU)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32

    def das_() -> int:
        f = materialize(lf)
        old_al = al = r[0] & 0xFF
        old_cf = f & CF
        cf = af = 0
        if (al & 0x0F) > 9 or f & AF:
            cf = old_cf | (1 if al < 6 else 0)
            al = (al - 6) & 0xFF
            af = AF
        if old_al > 0x99 or old_cf:
            al = (al - 0x60) & 0xFF
            cf = CF
        r[0] = (r[0] & 0xFFFFFF00) | al
        set_explicit(lf, cf | af | _szp(al))
        return nxt
    return das_


@handles("aaa", "aas")
def aaa_aas(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """AAA/AAS: the sum (difference) of two unpacked BCD digits in AL made one digit, with
    the decimal carry (borrow) into AH. When the low digit is past 9 or AF is set, the
    SDM's current pseudo-code adjusts all of AX: AAA "AX := AX + 106H", AAS "AX := AX - 6;
    AH := AH - 1", so AL's own carry (borrow) reaches AH as well (the 80386 manual
    adjusted AL alone; QEMU, and this host's AMD processor running the same loops as a
    32-bit process, tests/stack/test_decimal_adjust.py, do as the SDM says). AF = CF = 1,
    else 0; then AL := AL AND 0FH. OF SF ZF PF are undefined: kept as they were (QEMU)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32
    add = ins.mnemonic == iced_x86.Mnemonic.AAA

    def aaa_aas_() -> int:
        f = materialize(lf)
        ax = r[0] & 0xFFFF
        if (ax & 0x0F) > 9 or f & AF:
            ax = (ax + 0x106 if add else ax - 6 - 0x100) & 0xFFFF
            f |= AF | CF
        else:
            f &= ~(AF | CF)
        r[0] = (r[0] & 0xFFFF0000) | (ax & 0xFF0F)
        set_explicit(lf, f)
        return nxt
    return aaa_aas_


@handles("aam")
def aam(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """AAM imm8 (D4 0A is plain AAM): AH := AL / imm8, AL := AL MOD imm8. An imm8 of 0 is
    #DE, a fault: nothing changes. SF ZF PF from AL; OF AF CF undefined: 0 here (QEMU
    records AAM's flags as a logical result in AL)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32
    base = ins.immediate8
    if base == 0:
        def aam_zero() -> int:
            raise X.CpuException(X.DE)
        return aam_zero

    def aam_() -> int:
        ah, al = divmod(r[0] & 0xFF, base)
        r[0] = (r[0] & 0xFFFF0000) | (ah << 8) | al
        lf[0] = _LOGIC8; lf[1] = al; lf[2] = al; lf[3] = al  # noqa: E702
        return nxt
    return aam_


@handles("aad")
def aad(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """AAD imm8 (D5 0A is plain AAD): AL := (AL + AH * imm8) AND FFH, AH := 0; any imm8,
    0 included. SF ZF PF from AL; OF AF CF undefined: 0 here (QEMU, as AAM)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32
    base = ins.immediate8

    def aad_() -> int:
        ax = r[0]
        al = ((ax & 0xFF) + ((ax >> 8) & 0xFF) * base) & 0xFF
        r[0] = (ax & 0xFFFF0000) | al
        lf[0] = _LOGIC8; lf[1] = al; lf[2] = al; lf[3] = al  # noqa: E702
        return nxt
    return aad_
