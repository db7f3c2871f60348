"""Lazy arithmetic flags (SDM Vol. 1 3.4.3, Appendix A "EFLAGS Cross-Reference").

An instruction that writes CF PF AF ZF SF OF does not compute them: it records what it
did in a 4-slot list `lf = [op, res, a, b]` and the flags are derived only when read
(Jcc, SETcc, PUSHFD, the GUI). `op` packs the kind and the operand size: op = kind*3 + s
with s = 0, 1, 2 for 8, 16, 32 bits. The meaning of the slots depends on the kind:

    K_ADD  (ADD, ADC)            res = a + b + carry_in, unmasked; CF = bit `bits` of res
    K_SUB  (SUB, CMP, NEG)       res = a - b, unmasked (negative on borrow)
    K_SBB  (SBB)                 res = a - b - carry_in, unmasked
    K_LOGIC (AND OR XOR TEST)    res masked; CF = OF = 0; AF = 0 (undefined in the SDM)
    K_INC, K_DEC                 res = a +/- 1 unmasked; b holds the preserved CF
    K_RES  (shifts, MUL, IMUL)   res masked; a = CF, b = OF; AF = 0 (undefined in the SDM)
    K_EXPLICIT                   res holds the six flag bits themselves
"""

from __future__ import annotations

CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
ARITH_MASK = CF | PF | AF | ZF | SF | OF

K_ADD, K_SUB, K_SBB, K_LOGIC, K_INC, K_DEC, K_RES, K_EXPLICIT = range(8)
EXPLICIT = K_EXPLICIT * 3 + 2

BITS = (8, 16, 32) * 8
MASK = (0xFF, 0xFFFF, 0xFFFFFFFF) * 8
SIGN = (0x80, 0x8000, 0x80000000) * 8
SIZE_INDEX = {1: 0, 2: 1, 4: 2}

# PF is set when the low byte of the result has an even number of 1 bits.
PARITY = bytes(PF if bin(i).count("1") % 2 == 0 else 0 for i in range(256))


def op_for(kind: int, size: int) -> int:
    return kind * 3 + SIZE_INDEX[size]


def materialize(lf: list[int]) -> int:
    """The six arithmetic flags as EFLAGS bits."""
    op, res, a, b = lf
    kind = op // 3
    if kind == K_EXPLICIT:
        return res
    mask = MASK[op]
    r = res & mask
    f = PARITY[r & 0xFF]
    if r == 0:
        f |= ZF
    if r & SIGN[op]:
        f |= SF
    if kind == K_ADD:
        f |= (res >> BITS[op]) & 1
        f |= (a ^ b ^ r) & AF
        if (a ^ r) & (b ^ r) & SIGN[op]:
            f |= OF
    elif kind == K_SUB or kind == K_SBB:
        f |= (res >> BITS[op]) & 1
        f |= (a ^ b ^ r) & AF
        if (a ^ b) & (a ^ r) & SIGN[op]:
            f |= OF
    elif kind == K_INC:
        f |= b | ((a ^ r) & AF)
        if r == SIGN[op]:
            f |= OF
    elif kind == K_DEC:
        f |= b | ((a ^ r) & AF)
        if r == SIGN[op] - 1:
            f |= OF
    elif kind == K_RES:
        f |= a
        if b:
            f |= OF
    # K_LOGIC: CF = OF = AF = 0
    return f


def get_cf(lf: list[int]) -> int:
    op = lf[0]
    kind = op // 3
    if kind <= K_SBB:
        return (lf[1] >> BITS[op]) & 1
    if kind == K_LOGIC:
        return 0
    if kind == K_RES:
        return lf[2]
    if kind == K_EXPLICIT:
        return lf[1] & CF
    return lf[3]  # INC/DEC keep the CF they found


def get_zf(lf: list[int]) -> bool:
    op = lf[0]
    if op == EXPLICIT:
        return bool(lf[1] & ZF)
    return lf[1] & MASK[op] == 0


def set_explicit(lf: list[int], flags: int) -> None:
    lf[0] = EXPLICIT
    lf[1] = flags & ARITH_MASK


def _sub_like(lf: list[int]) -> bool:
    return lf[0] // 3 == K_SUB


# Conditions (the low nibble of Jcc/SETcc/CMOVcc opcodes, SDM Vol. 2 Table B-1). After a
# CMP/SUB the common conditions are read straight off the operands.
def cond_o(lf: list[int]) -> bool:
    return bool(materialize(lf) & OF)


def cond_b(lf: list[int]) -> bool:
    return bool(get_cf(lf))


def cond_z(lf: list[int]) -> bool:
    return get_zf(lf)


def cond_be(lf: list[int]) -> bool:
    if _sub_like(lf):
        return lf[2] <= lf[3]
    return bool(get_cf(lf)) or get_zf(lf)


def cond_s(lf: list[int]) -> bool:
    op = lf[0]
    if op == EXPLICIT:
        return bool(lf[1] & SF)
    return bool(lf[1] & SIGN[op])


def cond_p(lf: list[int]) -> bool:
    op = lf[0]
    if op == EXPLICIT:
        return bool(lf[1] & PF)
    return bool(PARITY[lf[1] & 0xFF])


def _signed_lt(lf: list[int]) -> bool:
    op = lf[0]
    s = SIGN[op]
    return ((lf[2] ^ s) - s) < ((lf[3] ^ s) - s)


def cond_l(lf: list[int]) -> bool:
    if _sub_like(lf):
        return _signed_lt(lf)
    f = materialize(lf)
    return bool(f & SF) != bool(f & OF)


def cond_le(lf: list[int]) -> bool:
    if _sub_like(lf):
        return _signed_lt(lf) or lf[2] == lf[3]
    f = materialize(lf)
    return bool(f & ZF) or bool(f & SF) != bool(f & OF)


# Indexed by the iced-x86 ConditionCode value: o no b ae e ne be a s ns p np l ge le g
# (ConditionCode.NONE is 0, so code c is at index c - 1).
_BASE = (cond_o, cond_b, cond_z, cond_be, cond_s, cond_p, cond_l, cond_le)


def condition(cc: int):
    """A function lf -> bool for iced-x86 ConditionCode `cc` (1..16)."""
    base = _BASE[(cc - 1) // 2]
    if (cc - 1) % 2 == 0:
        return base
    return lambda lf: not base(lf)
