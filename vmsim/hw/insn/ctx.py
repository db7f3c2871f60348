"""Compile context: operand accessors for instruction factories.

Accessors are closures specialised at decode time on the operand's shape (register,
memory with a given addressing form, immediate), so the executing handler does no
decoding. Memory accessors are the CPU's current ones (paging on or off); the CPU drops
all decoded handlers when it switches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import iced_x86
from iced_x86 import OpKind, Register

from vmsim.hw.insn.table import NotInSubset

if TYPE_CHECKING:
    from vmsim.hw.cpu import Cpu

Reader = Callable[[], int]
Writer = Callable[[int], None]

_IMM_KINDS = {OpKind.IMMEDIATE8, OpKind.IMMEDIATE16, OpKind.IMMEDIATE32,
              OpKind.IMMEDIATE8TO16, OpKind.IMMEDIATE8TO32, OpKind.IMMEDIATE8_2ND}
MEM_KINDS = {OpKind.MEMORY, OpKind.MEMORY_SEG_ESI, OpKind.MEMORY_SEG_EDI, OpKind.MEMORY_ESEDI,
             OpKind.MEMORY_SEG_SI, OpKind.MEMORY_SEG_DI, OpKind.MEMORY_ESDI}


def reg_info(reg: int) -> tuple[int, int, int]:
    """(GPR index in EAX ECX EDX EBX ESP EBP ESI EDI order, size in bytes, bit shift)."""
    if Register.AL <= reg <= Register.BL:
        return reg - Register.AL, 1, 0
    if Register.AH <= reg <= Register.BH:
        return reg - Register.AH, 1, 8
    if Register.AX <= reg <= Register.DI:
        return reg - Register.AX, 2, 0
    if Register.EAX <= reg <= Register.EDI:
        return reg - Register.EAX, 4, 0
    raise NotInSubset(f"register {reg}")


class Ctx:
    """What factories need: the CPU, its register file and flag record, memory access."""

    def __init__(self, cpu: Cpu):
        self.cpu = cpu
        self.r = cpu.r
        self.lf = cpu.lf
        m = cpu.memfns
        self.rd = {1: m.rd8, 2: m.rd16, 4: m.rd32, 8: m.rd64}
        self.wr = {1: m.wr8, 2: m.wr16, 4: m.wr32, 8: m.wr64}
        self.wprobe = m.wprobe
        # REP STOS / MOVS / INS, OUTS's loads and CMPS / SCAS's, a page at a time
        self.fill, self.copy, self.loads, self.peek = m.fill, m.copy, m.loads, m.peek

    # -- sizes -------------------------------------------------------------------------
    @staticmethod
    def opsize(ins: iced_x86.Instruction, i: int) -> int:
        k = ins.op_kind(i)
        if k == OpKind.REGISTER:
            return reg_info(ins.op_register(i))[1]
        if k in MEM_KINDS:
            s = iced_x86.MemorySizeExt.size(ins.memory_size)
            if s in (1, 2, 4):
                return s
            raise NotInSubset("memory operand size")
        if k in (OpKind.IMMEDIATE8, OpKind.IMMEDIATE8_2ND):
            return 1
        if k in (OpKind.IMMEDIATE16, OpKind.IMMEDIATE8TO16):
            return 2
        return 4

    # -- registers ---------------------------------------------------------------------
    def reg_reader(self, reg: int) -> Reader:
        idx, size, shift = reg_info(reg)
        r = self.r
        if size == 4:
            return lambda: r[idx]
        if size == 2:
            return lambda: r[idx] & 0xFFFF
        if shift:
            return lambda: (r[idx] >> 8) & 0xFF
        return lambda: r[idx] & 0xFF

    def reg_writer(self, reg: int) -> Writer:
        idx, size, shift = reg_info(reg)
        r = self.r
        if size == 4:
            def w32(v: int) -> None:
                r[idx] = v
            return w32
        if size == 2:
            def w16(v: int) -> None:
                r[idx] = (r[idx] & 0xFFFF0000) | v
            return w16
        if shift:
            def w8h(v: int) -> None:
                r[idx] = (r[idx] & 0xFFFF00FF) | (v << 8)
            return w8h

        def w8(v: int) -> None:
            r[idx] = (r[idx] & 0xFFFFFF00) | v
        return w8

    # -- memory ------------------------------------------------------------------------
    def ea(self, ins: iced_x86.Instruction) -> Reader:
        """Linear address of the memory operand (flat segments: base 0)."""
        base, index = ins.memory_base, ins.memory_index
        scale = ins.memory_index_scale
        disp = ins.memory_displacement & 0xFFFFFFFF
        r = self.r
        if (base and base < Register.EAX) or (index and index < Register.EAX):
            return self._ea16(ins)
        if base not in (Register.NONE,) and not Register.EAX <= base <= Register.EDI:
            raise NotInSubset("address register")
        b = base - Register.EAX if base else -1
        x = index - Register.EAX if index else -1
        if b >= 0 and x >= 0:
            if disp:
                return lambda: (r[b] + r[x] * scale + disp) & 0xFFFFFFFF
            return lambda: (r[b] + r[x] * scale) & 0xFFFFFFFF
        if b >= 0:
            if disp:
                return lambda: (r[b] + disp) & 0xFFFFFFFF
            return lambda: r[b]
        if x >= 0:
            return lambda: (r[x] * scale + disp) & 0xFFFFFFFF
        return lambda: disp

    def _ea16(self, ins: iced_x86.Instruction) -> Reader:
        # 0x67 prefix: 16-bit addressing, wrapped at 64 KiB.
        base, index = ins.memory_base, ins.memory_index
        disp = ins.memory_displacement & 0xFFFF
        r = self.r
        regs = [reg_info(x)[0] for x in (base, index) if x]
        if len(regs) == 2:
            b, x = regs
            return lambda: (r[b] + r[x] + disp) & 0xFFFF
        if len(regs) == 1:
            (b,) = regs
            return lambda: (r[b] + disp) & 0xFFFF
        return lambda: disp

    # -- generic operands ---------------------------------------------------------------
    def reader(self, ins: iced_x86.Instruction, i: int, size: int | None = None) -> Reader:
        k = ins.op_kind(i)
        if k == OpKind.REGISTER:
            return self.reg_reader(ins.op_register(i))
        if k == OpKind.MEMORY:
            ea = self.ea(ins)
            rd = self.rd[size or self.opsize(ins, i)]
            return lambda: rd(ea())
        if k in _IMM_KINDS:
            v = ins.immediate(i) & (0xFFFFFFFF if size is None else (1 << (8 * size)) - 1)
            return lambda: v
        raise NotInSubset(f"operand kind {k}")

    def is_reg(self, ins: iced_x86.Instruction, i: int) -> bool:
        return ins.op_kind(i) == OpKind.REGISTER

    def is_imm(self, ins: iced_x86.Instruction, i: int) -> bool:
        return ins.op_kind(i) in _IMM_KINDS

