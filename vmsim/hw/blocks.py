"""Basic blocks translated into Python functions (the CPU's fast path).

A block is a run of instructions the CPU has already decoded and executed one at a time,
ending at a branch or before an instruction that must leave the loop (I/O, HLT, CPUID,
MOV CR, INT, string instructions ...). It is compiled once with `compile()` into one
function whose body is the instructions' effects written out in Python, the common forms
inline, every other form a call of the instruction's own handler. The function returns
the next EIP, as a handler does.

Exactness rests on four rules:
- Translation reads only the decode cache, never guest memory: it cannot fetch, walk,
  fault or emit, so a block exists only where the per-instruction path has been, and all
  fetch effects (walks, #PF, EPT violations on fetch) happen there as before.
- The arithmetic flags are kept in locals between inline instructions and stored in
  `lf` exactly as the handlers store them before anything that can raise or read them, so
  a fault at instruction k finds the state instruction k-1 left, and sets `pos[0] = k`
  so the loop knows where it stopped.
- After an instruction that may store, a store to decoded code (`smc[0]` set by the
  CPU's code-write hook) ends the block there: the next instruction is decoded anew, as
  the hardware executes modified code (SDM Vol. 3A 11.6).
- A block is dropped whenever any of its instructions' decoded handlers is (writes to its
  frames, CR3 loads, INVLPG, paging, segment-class and accessor changes).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import iced_x86
from iced_x86 import Mnemonic as Mn
from iced_x86 import OpKind, Register

from vmsim.hw.flags import (
    BITS,
    K_ADD,
    K_DEC,
    K_INC,
    K_LOGIC,
    K_RES,
    K_SBB,
    K_SUB,
    MASK,
    SIGN,
    SIZE_INDEX,
    condition,
    get_cf,
    get_zf,
)
from vmsim.hw.insn.ctx import reg_info
from vmsim.hw.insn.table import NotInSubset

if TYPE_CHECKING:
    from vmsim.hw.cpu import Cpu

MAX_INSNS = 64  # instructions per block at most
M32 = 0xFFFFFFFF


class _Eips(list):
    """A block's EIPs, and its recording variants (`rec`, see translate)."""


class SmcExit(Exception):
    """A store hit decoded code: the block stops after the storing instruction."""


# What a block raises: the class, so that each raise makes an instance of its own. One
# instance raised again and again keeps every traceback (each raise adds its frames to
# the instance's __traceback__), and with them every CPU that ever raised it.
SMC_EXIT = SmcExit

# A cache entry for an address no block starts at: the loop takes the one-instruction path.
NO_BLOCK: tuple = (None, 1 << 62, array("I"))

_BRANCHES = {Mn.JMP, Mn.CALL, Mn.RET, Mn.LOOP, Mn.LOOPE, Mn.LOOPNE, Mn.JECXZ, Mn.JCXZ}
_ALU = {Mn.ADD: (K_ADD, "a + b", True), Mn.ADC: (K_ADD, "a + b + {cf}", True),
        Mn.SUB: (K_SUB, "a - b", True), Mn.SBB: (K_SBB, "a - b - {cf}", True),
        Mn.CMP: (K_SUB, "a - b", False), Mn.AND: (K_LOGIC, "a & b", True),
        Mn.OR: (K_LOGIC, "a | b", True), Mn.XOR: (K_LOGIC, "a ^ b", True),
        Mn.TEST: (K_LOGIC, "a & b", False)}
# Forms that run in a block through their handler: they never leave the loop (no SlowPath),
# never change what decoded code means (paging, segments), never read icount or EIP.
_CALLABLE = {
    Mn.ADD, Mn.ADC, Mn.SUB, Mn.SBB, Mn.CMP, Mn.AND, Mn.OR, Mn.XOR, Mn.TEST, Mn.INC, Mn.DEC,
    Mn.NEG, Mn.NOT, Mn.XADD, Mn.CMPXCHG, Mn.CMPXCHG8B, Mn.MUL, Mn.IMUL, Mn.DIV, Mn.IDIV,
    Mn.SHL, Mn.SAL, Mn.SHR, Mn.SAR, Mn.ROL, Mn.ROR, Mn.RCL, Mn.RCR, Mn.SHLD, Mn.SHRD, Mn.BT,
    Mn.BTS, Mn.BTR, Mn.BTC, Mn.BSF, Mn.BSR, Mn.BSWAP, Mn.MOV, Mn.MOVZX, Mn.MOVSX, Mn.LEA, Mn.XCHG, Mn.XLATB,
    Mn.PUSH, Mn.POP, Mn.PUSHAD, Mn.POPAD, Mn.ENTER, Mn.LEAVE, Mn.CBW, Mn.CWDE, Mn.CWD, Mn.CDQ,
    Mn.NOP, Mn.PAUSE, Mn.CLC, Mn.STC, Mn.CMC, Mn.CLD, Mn.STD, Mn.SAHF, Mn.LAHF, Mn.JMP,
    Mn.CALL, Mn.RET, Mn.LOOP, Mn.LOOPE, Mn.LOOPNE, Mn.JECXZ, Mn.JCXZ, Mn.DAA, Mn.DAS,
    Mn.AAA, Mn.AAS, Mn.AAM, Mn.AAD, Mn.SALC, Mn.BOUND,
    *(getattr(Mn, n) for n in dir(Mn) if n.startswith(("CMOV", "SET")) and len(n) <= 6),
}
_NO_WRITE = {Mn.CMP, Mn.TEST, Mn.NOP, Mn.PAUSE, Mn.LEA, Mn.BT, Mn.CLC, Mn.STC, Mn.CMC,
             Mn.CLD, Mn.STD, Mn.SAHF, Mn.LAHF, Mn.CBW, Mn.CWDE, Mn.CWD, Mn.CDQ,
             Mn.MUL, Mn.IMUL, Mn.DIV, Mn.IDIV, Mn.BSF, Mn.BSR, Mn.BSWAP, Mn.XLATB,
             Mn.DAA, Mn.DAS, Mn.AAA, Mn.AAS, Mn.AAM, Mn.AAD, Mn.SALC, Mn.BOUND}


@dataclass(frozen=True)
class Block:
    """A translated block, as `Cpu.translate_block` shows it."""

    eip: int
    n: int  # guest instructions in it
    eips: tuple[int, ...]
    source: str  # the generated Python


def _is_special_reg(reg: int) -> bool:
    return (Register.ES <= reg <= Register.GS or Register.CR0 <= reg <= Register.CR15
            or Register.DR0 <= reg <= Register.DR15)


def _is_jcc(ins: iced_x86.Instruction) -> bool:
    return ins.is_jcc_short_or_near


def translatable(ins: iced_x86.Instruction, handler: Callable[[], int]) -> bool:
    m = ins.mnemonic
    if ins.is_invalid or getattr(handler, "not_in_subset", False):
        return False  # its handler raises #UD (and says why): left to the loop
    if _is_jcc(ins):
        return True
    if m not in _CALLABLE:
        return False
    if ins.is_jmp_far or ins.is_jmp_far_indirect or ins.is_call_far or ins.is_call_far_indirect:
        return False
    for i in range(ins.op_count):
        if ins.op_kind(i) == OpKind.REGISTER and _is_special_reg(ins.op_register(i)):
            return False
    return True


def _ends_block(ins: iced_x86.Instruction) -> bool:
    return ins.mnemonic in _BRANCHES or _is_jcc(ins)


# -- operands as Python expressions --------------------------------------------------------

def _gpr(reg: int) -> tuple[int, int, int] | None:
    """(index, size, shift) of a general register (as the handlers' reg_info), None for
    anything else."""
    try:
        return reg_info(reg)
    except NotInSubset:
        return None


def _reg_read(reg: int) -> str | None:
    g = _gpr(reg)
    if g is None:
        return None
    idx, size, shift = g
    if size == 4:
        return f"r[{idx}]"
    if size == 2:
        return f"(r[{idx}] & 0xFFFF)"
    if shift:
        return f"((r[{idx}] >> 8) & 0xFF)"
    return f"(r[{idx}] & 0xFF)"


def _reg_write(reg: int, v: str) -> str:
    idx, size, shift = _gpr(reg)  # type: ignore[misc]
    if size == 4:
        return f"r[{idx}] = {v}"
    if size == 2:
        return f"r[{idx}] = (r[{idx}] & 0xFFFF0000) | {v}"
    if shift:
        return f"r[{idx}] = (r[{idx}] & 0xFFFF00FF) | ({v} << 8)"
    return f"r[{idx}] = (r[{idx}] & 0xFFFFFF00) | {v}"


def _ea(ins: iced_x86.Instruction) -> str | None:
    """The memory operand's linear address (flat segments), None for forms left to the
    handler (16-bit addressing, unusual base registers)."""
    base, index = ins.memory_base, ins.memory_index
    disp = ins.memory_displacement & M32
    parts = []
    for reg in (base, index):
        if reg == Register.NONE:
            continue
        if not Register.EAX <= reg <= Register.EDI:
            return None
    if base != Register.NONE:
        parts.append(f"r[{base - Register.EAX}]")
    if index != Register.NONE:
        scale = ins.memory_index_scale
        parts.append(f"r[{index - Register.EAX}]" + (f" * {scale}" if scale != 1 else ""))
    if not parts:
        return str(disp)
    if disp:
        parts.append(hex(disp))
    if len(parts) == 1 and "*" not in parts[0]:
        return parts[0]  # a register alone: already 32 bits
    return f"({' + '.join(parts)}) & 0xFFFFFFFF"


_IMM = {OpKind.IMMEDIATE8, OpKind.IMMEDIATE16, OpKind.IMMEDIATE32, OpKind.IMMEDIATE8TO16,
        OpKind.IMMEDIATE8TO32}


def _opsize(ins: iced_x86.Instruction, i: int) -> int | None:
    k = ins.op_kind(i)
    if k == OpKind.REGISTER:
        g = _gpr(ins.op_register(i))
        return None if g is None else g[1]
    if k == OpKind.MEMORY:
        s = iced_x86.MemorySizeExt.size(ins.memory_size)
        return s if s in (1, 2, 4) else None
    return None


class _Pending:
    """Flags an inline instruction produced and has not stored in `lf` yet."""

    __slots__ = ("a", "b", "kind", "op", "res")

    def __init__(self, op: int, res: str, a: str, b: str):
        self.op, self.kind = op, op // 3
        self.res, self.a, self.b = res, a, b

    def store(self) -> str:
        if self.kind == K_LOGIC:  # CF OF AF are 0 whatever a and b were: not read
            return f"lf[0] = {self.op}; lf[1] = {self.res}"
        return f"lf[0] = {self.op}; lf[1] = {self.res}; lf[2] = {self.a}; lf[3] = {self.b}"

    def cf(self) -> str:
        k = self.kind
        if k in (K_ADD, K_SUB, K_SBB):
            return f"(({self.res} >> {BITS[self.op]}) & 1)"
        if k == K_LOGIC:
            return "0"
        if k == K_RES:
            return self.a
        return self.b  # INC/DEC keep the CF they found

    def cond(self, cc: int) -> str | None:
        """Condition `cc` (iced-x86 ConditionCode) read straight off the locals, or None."""
        base, negate = (cc - 1) // 2, (cc - 1) % 2
        mask, sign = MASK[self.op], SIGN[self.op]
        k = self.kind
        if base == 2:  # E
            e = f"not ({self.res} & {mask:#x})"
        elif base == 1:  # B
            e = self.cf()
        elif base == 4:  # S
            e = f"{self.res} & {sign:#x}"
        elif base == 3 and k == K_SUB:  # BE after CMP/SUB
            e = f"{self.a} <= {self.b}"
        elif base in (6, 7) and k == K_SUB:  # L, LE after CMP/SUB: signed compare
            lt = f"(({self.a} ^ {sign:#x}) - {sign:#x}) < (({self.b} ^ {sign:#x}) - {sign:#x})"
            e = lt if base == 6 else f"{lt} or {self.a} == {self.b}"
        else:
            return None
        return f"not ({e})" if negate else f"({e})"


class _Gen:
    """Writes one block's function."""

    def __init__(self, cpu: Cpu, tag: str = "", entry_op: int = -1):
        self.cpu = cpu
        self.tag = tag
        self.exit_op = -1
        self.lines: list[str] = []
        self.ns: dict[str, object] = {}
        self.pending: _Pending | None = None
        self.plain = cpu.seg_classes is None
        self.final = False
        self.final_store = False
        # What `lf` holds: `known` once an inline instruction has stored its own record;
        # at block entry the record of whatever ran before, most likely of the same op as
        # now (`guess`: checked at run time, the general function otherwise).
        self.known: _Pending | None = None
        op = entry_op
        self.guess = (_Pending(op, "lf[1]", "lf[2]", "lf[3]")
                      if op // 3 in (K_ADD, K_SUB, K_SBB, K_LOGIC, K_INC, K_DEC, K_RES) else None)

    def emit(self, line: str) -> None:
        if line.startswith("return"):
            self.lines.append("        #SYNC_RET")
        self.lines.append("        " + line)

    def bind(self, name: str, value: object) -> str:
        self.ns[name] = value
        return name

    def flush(self) -> None:
        if self.pending is not None:
            self.emit(self.pending.store())
            self.known = self.pending
            self.pending = None

    def lf_changed(self) -> None:
        """A handler ran: it may have written `lf`."""
        self.known = self.guess = None

    def cf_expr(self) -> str:
        p = self.pending or self.known
        if p is not None:
            return p.cf()
        g = self.guess
        if g is not None:
            return f"({g.cf()} if lf[0] == {g.op} else get_cf(lf))"
        return "get_cf(lf)"

    def cond_expr(self, k: int, cc: int) -> str:
        p = self.pending or self.known
        e = p.cond(cc) if p is not None else None
        if e is not None:
            return e
        if cc in (5, 6):  # E, NE
            fallback = "get_zf(lf)" if cc == 5 else "not get_zf(lf)"
        else:
            fallback = f"{self.bind(f'c{self.tag}{k}', condition(cc))}(lf)"
        if p is None and self.guess is not None:
            e = self.guess.cond(cc)
            if e is not None:
                return f"({e} if lf[0] == {self.guess.op} else {fallback})"
        return fallback

    def may_raise(self, k: int) -> None:
        self.flush()
        self.emit("#SYNC")
        self.emit(f"i = {k}")

    def smc_check(self, k: int) -> None:
        """After a store that is not the block's last instruction."""
        if self.final:
            self.final_store = True  # a region checks after the block (see _region)
            return
        p = self.pending
        self.emit("if smc[0]:")
        if p is not None:
            self.emit("    " + p.store())
        self.emit("    #SYNC_IN")
        self.emit(f"    i = {k + 1}")
        self.emit("    raise SMC_EXIT")

    # -- instructions ------------------------------------------------------------------
    def insn(self, k: int, ins: iced_x86.Instruction, handler: Callable[[], int],
             last: bool, final: bool) -> None:
        """`last`: a branch ending the block (its value is the next EIP); `final`: the
        block's last instruction, branch or not (no SMC check after it)."""
        self.final = final
        self.lines.append(f"        #INSN {ins.ip32:#x}")
        if not (self.plain and ins.segment_prefix in (Register.NONE, Register.DS, Register.SS,
                                                      Register.ES)
                and self._inline(k, ins, last)):
            self._call(k, ins, handler, last)

    def _call(self, k: int, ins: iced_x86.Instruction, handler: Callable[[], int],
              last: bool) -> None:
        h = self.bind(f"h{self.tag}{k}", handler)
        self.may_raise(k)
        self.lf_changed()
        if last:
            if ins.mnemonic not in _NO_WRITE:
                self.final_store = True  # CALL r/m pushes, say
            self.emit(f"return {h}()")
            self.emit("#FORGET")  # in a region the next block reads what the handler left
            return
        self.emit(f"{h}()")
        self.emit("#FORGET")
        if ins.mnemonic not in _NO_WRITE:
            self.smc_check(k)

    def _inline(self, k: int, ins: iced_x86.Instruction, last: bool) -> bool:
        m = ins.mnemonic
        nxt = ins.next_ip32
        if ins.memory_base != Register.NONE or ins.memory_index != Register.NONE \
                or any(ins.op_kind(i) == OpKind.MEMORY for i in range(ins.op_count)):
            if _ea(ins) is None:
                return False
        if _is_jcc(ins):
            cc = ins.condition_code
            target = ins.near_branch_target
            e = self.cond_expr(k, cc)
            self.flush()
            self.emit(f"return {target:#x} if {e} else {nxt:#x}")
            return True
        if m == Mn.JMP and ins.op0_kind in (OpKind.NEAR_BRANCH32,):
            self.flush()
            self.emit(f"return {ins.near_branch_target:#x}")
            return True
        if m == Mn.LOOP and ins.code == iced_x86.Code.LOOP_REL8_32_ECX:
            self.emit("ecx = (r[1] - 1) & 0xFFFFFFFF")
            self.emit("r[1] = ecx")
            self.flush()
            self.emit(f"return {ins.near_branch_target:#x} if ecx else {nxt:#x}")
            return True
        if m == Mn.CALL and ins.op0_kind == OpKind.NEAR_BRANCH32:
            self.may_raise(k)
            self.emit("esp = (r[4] - 4) & 0xFFFFFFFF")
            self.emit(f"wr32(esp, {nxt:#x})")
            self.emit("r[4] = esp")
            self.final_store = True  # the push may have rewritten a block of the region
            self.emit(f"return {ins.near_branch_target:#x}")
            return True
        if m == Mn.RET and ins.code == iced_x86.Code.RETND:
            self.may_raise(k)
            self.emit("esp = r[4]")
            self.emit("t = rd32(esp)")
            self.emit("r[4] = (esp + 4) & 0xFFFFFFFF")
            self.flush()
            self.emit("return t")
            return True
        if last:
            return False  # anything else ending a block goes through its handler
        if m in (Mn.NOP, Mn.PAUSE):
            return True
        if m == Mn.MOV:
            return self._mov(k, ins)
        if m == Mn.LEA:
            g = _gpr(ins.op0_register)
            if g is None or g[1] != 4:
                return False
            self.emit(f"r[{g[0]}] = {_ea(ins)}")
            return True
        if m == Mn.MOVZX:
            g, ss = _gpr(ins.op0_register), _opsize(ins, 1)
            if g is None or g[1] != 4 or ss is None:
                return False
            if ins.op1_kind == OpKind.MEMORY:
                self.may_raise(k)
                self.emit(f"r[{g[0]}] = rd{8 * ss}({_ea(ins)})")
            else:
                self.emit(f"r[{g[0]}] = {_reg_read(ins.op1_register)}")
            return True
        if m in _ALU:
            return self._alu(k, ins)
        if m in (Mn.INC, Mn.DEC) and ins.op0_kind == OpKind.REGISTER:
            g = _gpr(ins.op0_register)
            if g is None:
                return False
            size = g[1]
            op = (K_INC if m == Mn.INC else K_DEC) * 3 + SIZE_INDEX[size]
            self.emit(f"a{k} = {_reg_read(ins.op0_register)}")
            self.emit(f"f{k} = {self.cf_expr()}")
            self.emit(f"s{k} = a{k} {'+' if m == Mn.INC else '-'} 1")
            self.emit(_reg_write(ins.op0_register, f"(s{k} & {MASK[op]:#x})"))
            self.pending = _Pending(op, f"s{k}", f"a{k}", f"f{k}")
            return True
        if m in (Mn.SHR, Mn.SHL, Mn.SAL, Mn.SAR):
            return self._shift(k, ins)
        if m == Mn.PUSH and ins.op0_kind == OpKind.REGISTER:
            g = _gpr(ins.op0_register)
            if g is None or g[1] != 4:
                return False
            self.may_raise(k)
            self.emit("esp = (r[4] - 4) & 0xFFFFFFFF")
            self.emit(f"wr32(esp, r[{g[0]}])")
            self.emit("r[4] = esp")
            self.smc_check(k)
            return True
        if m == Mn.PUSH and ins.op0_kind in (OpKind.IMMEDIATE32, OpKind.IMMEDIATE8TO32):
            self.may_raise(k)
            self.emit("esp = (r[4] - 4) & 0xFFFFFFFF")
            self.emit(f"wr32(esp, {ins.immediate(0) & M32:#x})")
            self.emit("r[4] = esp")
            self.smc_check(k)
            return True
        if m == Mn.POP and ins.op0_kind == OpKind.REGISTER:
            g = _gpr(ins.op0_register)
            if g is None or g[1] != 4:
                return False
            self.may_raise(k)
            self.emit("v = rd32(r[4])")
            self.emit("r[4] = (r[4] + 4) & 0xFFFFFFFF")
            self.emit(f"r[{g[0]}] = v")
            return True
        return False

    def _mov(self, k: int, ins: iced_x86.Instruction) -> bool:
        size = _opsize(ins, 0)
        if size is None or size == 2:
            return False
        k0, k1 = ins.op0_kind, ins.op1_kind
        if k0 == OpKind.REGISTER:
            if k1 == OpKind.REGISTER:
                src = _reg_read(ins.op1_register)
            elif k1 in _IMM:
                src = hex(ins.immediate(1) & MASK[SIZE_INDEX[size]])
            elif k1 == OpKind.MEMORY:
                self.may_raise(k)
                src = f"rd{8 * size}({_ea(ins)})"
            else:
                return False
            if src is None:
                return False
            self.emit(_reg_write(ins.op0_register, src))
            return True
        if k0 != OpKind.MEMORY:
            return False
        if k1 == OpKind.REGISTER:
            src = _reg_read(ins.op1_register)
        elif k1 in _IMM:
            src = hex(ins.immediate(1) & MASK[SIZE_INDEX[size]])
        else:
            return False
        if src is None:
            return False
        self.may_raise(k)
        self.emit(f"wr{8 * size}({_ea(ins)}, {src})")
        self.smc_check(k)
        return True

    def _alu(self, k: int, ins: iced_x86.Instruction) -> bool:
        kind, expr, store = _ALU[ins.mnemonic]
        size = _opsize(ins, 0)
        if size is None:
            return False
        op = kind * 3 + SIZE_INDEX[size]
        mask = MASK[op]
        k0, k1 = ins.op0_kind, ins.op1_kind
        if k1 == OpKind.REGISTER:
            b = _reg_read(ins.op1_register)
        elif k1 in _IMM:
            b = hex(ins.immediate(1) & mask)
        elif k1 == OpKind.MEMORY:
            b = f"rd{8 * size}({_ea(ins)})"
        else:
            return False
        if b is None:
            return False
        expr = expr.replace("a", f"a{k}").replace("b", f"b{k}")
        if "{cf}" in expr:
            expr = expr.format(cf=self.cf_expr())
        if k0 == OpKind.REGISTER:
            a = _reg_read(ins.op0_register)
            if a is None:
                return False
            if k1 == OpKind.MEMORY:
                self.may_raise(k)
            self.emit(f"b{k} = {b}")
            self.emit(f"a{k} = {a}")
            self.emit(f"s{k} = {expr}")
            if store:
                self.emit(_reg_write(ins.op0_register, f"(s{k} & {mask:#x})" if kind != K_LOGIC
                                     else f"s{k}"))
            self.pending = _Pending(op, f"s{k}", f"a{k}", f"b{k}")
            return True
        if k0 != OpKind.MEMORY or k1 == OpKind.MEMORY:
            return False
        # Read, compute, store, then the flags: a faulting store leaves them as they were.
        self.may_raise(k)
        self.emit(f"m{k} = {_ea(ins)}")
        self.emit(f"a{k} = rd{8 * size}(m{k})")
        self.emit(f"b{k} = {b}")
        self.emit(f"s{k} = {expr}")
        if store:
            self.emit(f"wr{8 * size}(m{k}, s{k} & {mask:#x})")
        self.pending = _Pending(op, f"s{k}", f"a{k}", f"b{k}")
        if store:
            self.smc_check(k)
        return True

    def _shift(self, k: int, ins: iced_x86.Instruction) -> bool:
        if ins.op0_kind != OpKind.REGISTER:
            return False
        g = _gpr(ins.op0_register)
        if g is None or g[1] != 4:
            return False
        if ins.op_count == 2 and ins.op1_kind == OpKind.IMMEDIATE8:
            n = ins.immediate(1) & 0x1F
        else:
            return False
        if n == 0:
            return True  # count 0: no flags, no write
        d = g[0]
        op = K_RES * 3 + 2
        m = ins.mnemonic
        self.emit(f"a{k} = r[{d}]")
        if m == Mn.SHR:
            self.emit(f"s{k} = a{k} >> {n}")
            self.emit(f"r[{d}] = s{k}")
            self.pending = _Pending(op, f"s{k}", f"((a{k} >> {n - 1}) & 1)" if n > 1
                                    else f"(a{k} & 1)", f"(a{k} >> 31)")
        elif m in (Mn.SHL, Mn.SAL):
            self.emit(f"u{k} = a{k} << {n}")
            self.emit(f"s{k} = u{k} & 0xFFFFFFFF")
            self.emit(f"c{k} = (u{k} >> 32) & 1")
            self.emit(f"r[{d}] = s{k}")
            self.pending = _Pending(op, f"s{k}", f"c{k}", f"(((s{k} & 0x80000000) != 0) ^ c{k})")
        else:
            self.emit(f"v{k} = (a{k} ^ 0x80000000) - 0x80000000")
            self.emit(f"s{k} = (v{k} >> {n}) & 0xFFFFFFFF")
            self.emit(f"r[{d}] = s{k}")
            self.pending = _Pending(op, f"s{k}", f"((v{k} >> {n - 1}) & 1)" if n > 1
                                    else f"(v{k} & 1)", "0")
        return True


_REG = re.compile(r"\br\[(\d)\]")
_ASSIGN = re.compile(r"r\[(\d)\] = (.*)$")


def _to_x(m: re.Match) -> str:
    """_REG's replacement. (A function, not the template "x\\1": with a template, each sub
    imports re and looks the template up again, 3.4 us against 1.3 us, and translating
    CRC-32's blocks makes ~900 of them.)"""
    return "x" + m[1]


_LANE = (1 << 31) - 1  # a lane is _LANE + the delta into its instruction (vmsim.trace)


class RecordedGroup(str):
    """A group of instructions as a recording variant records it (see _record_groups).

    Its value is the lanes of its instructions: (2**31 - 1) + the delta from the EIP
    recorded before it, for the first instruction from `prev` (the last EIP of the group
    the code records just before it; 2**31 - 1 when that is not known, and Cpu.run marks
    such a group as open), then between its own instructions. They are 4 bytes each as
    array("I") holds them, each byte a character (latin-1): "".join of str items is
    half the work of b"".join of a bytes subclass, which asks each item for a buffer. A
    trace joins the groups' values into a line's lanes in one C call (vmsim.trace).
    `eips` is the bytes of its EIPs; `ok` says every delta fits a lane.
    """

    first: int
    last: int
    eips: bytes
    ok: bool

    @classmethod
    def make(cls, eips: list[int], prev: int | None) -> RecordedGroup:
        pairs = zip([eips[0] if prev is None else prev, *eips], eips, strict=False)
        lanes = [_LANE + b - a for a, b in pairs]
        ok = all(0 <= x <= M32 for x in lanes)
        g = cls(array("I", lanes if ok else [_LANE] * len(eips)).tobytes().decode("latin-1"))
        g.first, g.last, g.ok = eips[0], eips[-1], ok
        g.eips = array("I", eips).tobytes()
        return g


def _record_groups(ns: dict, heads: list[int | None] | None = None, prev0: int | None = None
                   ) -> tuple[list[int], Callable[[str], list[str]]]:
    """The recording variants append EIPs in groups, each just before an instruction that
    may raise or emit an event (a memory access, a handler) and before the block ends:
    an event or a fault then finds exactly the instructions begun before it recorded, as
    the one-instruction loop records them, for one call per group.

    A group after the first of its block is recorded with the lanes from the group
    before it. The first group of a region's block is picked by `lg`, the block that ran
    before it (index + 1 into `heads`, their last EIPs; 0: none, the region's entry,
    which Cpu.run marks as open); the first of a lone block is open (marked likewise).
    Without `heads`, `prev0` is the last EIP of what runs before the first group where
    that is known (a region's block whose predecessors all end at one EIP).
    A group whose deltas do not fit lanes is marked open where it is recorded."""
    pend: list[int] = []
    last: list[int] = []

    def flush(indent: str) -> list[str]:
        if not pend:
            return []
        eips = pend[:]
        pend.clear()
        name = f"G{len(ns)}"
        prev = last[-1] if last else prev0
        last.append(eips[-1])
        if prev is None and heads is not None:
            options = tuple(RecordedGroup.make(eips, h) for h in heads)
            if all(g.ok for g in options):
                ns[name] = options
                return [f"{indent}rext.append({name}[lg])"]
        g = ns[name] = RecordedGroup.make(eips, prev)
        if not g.ok or (prev is None and heads is not None):
            return [f"{indent}rext.opens.append(len(rext))", f"{indent}rext.append({name})"]
        return [f"{indent}rext.append({name})"]
    return pend, flush


class ExtendInto:
    """What a recording variant records into when the recorder is an array: `append`
    adds a group's EIPs (the variant calls `rext.append(group)`; for a list,
    InstructionColumn.tokens, that is the list's own append: one item per group, the
    cheapest call there is). The array's variant is compiled in a namespace where each
    group is the bytes of its EIPs (_for_arrays). `opens` is where the variant marks open
    groups (unused here)."""

    __slots__ = ("append", "opens")

    def __init__(self, column: array):
        self.append = column.frombytes
        self.opens: list[int] = []

    def __len__(self) -> int:
        return 0


def _for_arrays(ns: dict) -> dict:
    """The namespace of a recording variant that records into an array (ExtendInto):
    the same, with each group as the bytes of its EIPs."""
    out = dict(ns)
    for name, v in ns.items():
        if isinstance(v, RecordedGroup):
            out[name] = v.eips
        elif isinstance(v, tuple) and v and isinstance(v[0], RecordedGroup):
            out[name] = tuple(g.eips for g in v)
    return out


def _registers_in_locals(lines: list[str], rec: dict | None = None) -> list[str]:
    """Rewrite `r[N]` to a local `xN`: loaded at first use, stored back at every #SYNC
    (before anything that can raise, and before returning), dropped at #FORGET (a
    handler ran and may have changed any register). #SYNC_IN stores inside a branch and
    keeps them dirty for the path that goes on."""
    out: list[str] = []
    cached: set[str] = set()
    dirty: set[str] = set()
    pend, flush = _record_groups(rec if rec is not None else {})

    def loads(text: str, indent: str) -> str:
        for n in _REG.findall(text):
            if n not in cached:
                out.append(f"{indent}x{n} = r[{n}]")
                cached.add(n)
        return _REG.sub(_to_x, text)

    for line in lines:
        body = line.lstrip()
        indent = line[:len(line) - len(body)]
        if body in ("#SYNC", "#SYNC_IN", "#SYNC_RET"):
            out.extend(f"{indent}r[{n}] = x{n}" for n in sorted(dirty))
            if body != "#SYNC_IN":
                dirty.clear()
                if rec is not None:
                    out.extend(flush(indent))
            continue
        if body == "#FORGET":
            cached.clear()
            dirty.clear()
            continue
        if body.startswith("#INSN"):
            pend.append(int(body[6:], 16))
            continue
        if body == "#FINAL_SMC":
            continue
        m = _ASSIGN.match(body)
        if m is not None:
            n = m.group(1)
            rhs = loads(m.group(2), indent)
            out.append(f"{indent}x{n} = {rhs}")
            cached.add(n)
            dirty.add(n)
            continue
        out.append(indent + loads(body, indent))
    return out


def _walk_block(eip: int, entry: Callable[[int], tuple | None]) -> tuple[list, list[int], set[int]]:
    """The instructions of a block at `eip`, their EIPs and frames: `entry(at)` gives the
    one at `at` (instruction, handler, frames), or None where the block must stop."""
    eips: list[int] = []
    items = []
    frames: set[int] = set()
    at = eip
    while len(items) < MAX_INSNS:
        e = entry(at)
        if e is None:
            break
        ins, h, fr = e
        if not translatable(ins, h):
            break
        items.append((ins, h))
        eips.append(at)
        frames.update(fr)
        if _ends_block(ins):
            break
        at = ins.next_ip32
        if at in eips:
            break
    return items, eips, frames


def _collect(cpu: Cpu, eip: int) -> tuple[list, list[int], set[int]]:
    """The decoded instructions a block at `eip` holds, their EIPs and frames."""
    icache, decoded = cpu.icache, cpu.decoded

    def entry(at: int) -> tuple | None:
        h, d = icache.get(at), decoded.get(at)
        return None if h is None or d is None else (d[0], h, d[1])
    return _walk_block(eip, entry)


def _collect_refetched(cpu: Cpu, eip: int) -> tuple[list, list[int], set[int]]:
    """_collect for a block whose first instruction alone has been fetched again since a
    CR3 load: the decoded instructions that follow it in its page and frame (each would
    be fetched through the same TLB entry), ending as _collect's do."""
    icache, decoded = cpu.icache, cpu.decoded
    head = decoded.get(eip)
    if head is None or icache.get(eip) is not head[2] or len(head[1]) != 1:
        return [], [], set()
    frames, page = head[1], eip >> 12

    def entry(at: int) -> tuple | None:
        d = decoded.get(at)
        if d is None or d[1] != frames or at >> 12 != page or (at + 15) >> 12 != page:
            return None
        return d[0], d[2], frames
    return _walk_block(eip, entry)


def _successors(ins: iced_x86.Instruction) -> list[int]:
    """Where the block ending with `ins` may go next, when that is known before it runs."""
    m = ins.mnemonic
    if _is_jcc(ins) or m in (Mn.LOOP, Mn.LOOPE, Mn.LOOPNE, Mn.JECXZ, Mn.JCXZ):
        return [ins.near_branch_target, ins.next_ip32]
    if m in (Mn.JMP, Mn.CALL):
        return [ins.near_branch_target] if ins.op0_kind == OpKind.NEAR_BRANCH32 else []
    if m == Mn.RET:
        return []
    return [ins.next_ip32]


def _body(cpu: Cpu, items: list, tag: str, entry_op: int,
          raw: bool = False) -> tuple[list[str], _Gen]:
    gen = _Gen(cpu, tag, entry_op)
    last = len(items) - 1
    for k, (ins, h) in enumerate(items):
        gen.insn(k, ins, h, k == last and _ends_block(ins), k == last)
    final = gen.pending or gen.known
    gen.flush()
    if not _ends_block(items[-1][0]):
        gen.emit(f"return {items[-1][0].next_ip32:#x}")
    gen.exit_op = final.op if final is not None else -1
    if gen.final_store:
        gen.lines.append("        #FINAL_SMC")
    return (gen.lines if raw else _registers_in_locals(gen.lines)), gen


def _namespace(cpu: Cpu) -> dict[str, object]:
    m = cpu.memfns
    return {"r": cpu.r, "lf": cpu.lf, "rd8": m.rd8, "rd16": m.rd16, "rd32": m.rd32,
            "wr8": m.wr8, "wr16": m.wr16, "wr32": m.wr32, "pos": cpu.block_pos,
            "cnt": cpu.block_count, "smc": cpu.smc_flag, "SMC_EXIT": SMC_EXIT,
            "get_cf": get_cf, "get_zf": get_zf}


MAX_REGION_BLOCKS = 16
# Blocks a region's recording variant runs after one dispatch at most, less one (see
# _region's run_lines): the copies grow as 2**INLINE_DEPTH at most.
INLINE_DEPTH = 2


CODE_MEMO_LIMIT = 512


def _compile(cpu: Cpu, src: str, eip: int, ns: dict) -> Callable:
    name = src[4:src.index("(")]
    filename = f"<{name} {eip:#x}>"
    # The same source compiles to the same code (a block translated again after a store
    # into its frame dropped it, say): compile() is the costly part, so it is kept.
    memo = cpu.code_memo
    code = memo.get((src, filename))
    if code is None:
        if len(memo) >= CODE_MEMO_LIMIT:
            memo.clear()
        code = memo[(src, filename)] = compile(src, filename, "exec")
    exec(code, ns)  # generated from decoded code
    return ns[name]


def _is_region(t: tuple | None) -> bool:
    return t is not None and t[0] is not None and not t[1]


def _shared(cpu: Cpu, eip: int, region: tuple) -> tuple:
    """The entry at `eip`, where one of a region's blocks starts: the region's function
    started there (its loop dispatches on `pc`), noted as the region is (the same
    instructions, frames and pages), so that it is dropped whenever the region would be."""
    fn, _, info = region
    frames, lpns, eips_all = info[3]

    def rec_tokens(left: int, rext: list, pc: int = eip) -> int:
        return info[1](left, rext, pc)

    def rec_array(left: int, rext: ExtendInto, pc: int = eip) -> int:
        return info[2](left, rext, pc)

    entry = (partial(fn, pc=eip), 0, [info[0], rec_tokens, rec_array, info[3]])
    cpu.note_block(eip, entry, frames, lpns, eips_all)
    return entry


def _region(cpu: Cpu, eip: int, first: tuple) -> tuple | None:
    """Blocks reachable from `eip` through known branches, compiled into one function
    that loops among them while its budget lasts: a loop runs without going back to the
    dispatcher between blocks. None when the blocks do not loop back. Where a block of a
    region already made starts at `eip`, that region started there (_shared); where `eip`
    is inside one of its blocks and the block from `eip` leads only to regions already
    made or out of that one, None: a batch whose budget ended inside the block resumes
    here, and a plain block leads back into them. A second region of nearly the same
    blocks would only cost its compiling."""
    succs0 = _successors(first[0][-1][0])
    for x in cpu._insn_blocks.get(eip, ()):
        t = cpu.blocks.get(x)
        if not _is_region(t):
            continue
        if eip in t[2][0]:
            return _shared(cpu, eip, t)
        if any(s in t[2][0] for s in succs0) \
                and all(s not in t[2][0] or _is_region(cpu.blocks.get(s)) for s in succs0):
            return None
    members: dict[int, tuple] = {eip: first}
    parent: dict[int, int] = {}
    exit_ops: dict[int, int] = {}
    order = [eip]
    queue = [eip]
    loops = False
    while queue:
        h = queue.pop(0)
        items = members[h][0]
        for succ in _successors(items[-1][0]):
            if succ in members:
                loops = True
                continue
            if len(members) >= MAX_REGION_BLOCKS:
                continue
            got = _collect(cpu, succ)
            if not got[0]:
                continue
            members[succ] = got
            order.append(succ)
            queue.append(succ)
            parent[succ] = h
    if not loops or len(order) < 2:
        return None
    ns = _namespace(cpu)
    raw: dict[int, list[str]] = {}
    for j, h in enumerate(order):
        items = members[h][0]
        # Flags at a block's entry: most likely those its first predecessor left.
        entry_op = cpu.lf[0] if j == 0 else exit_ops[parent[h]]
        raw[h], gen = _body(cpu, items, f"{j}_", entry_op, raw=True)
        exit_ops[h] = gen.exit_op
        ns.update(gen.ns)
    used = sorted({n for lines in raw.values() for line in lines for n in _REG.findall(line)})
    # Which locals may be unstored where each block starts: a fixpoint over the blocks'
    # edges (a block whose next EIP is computed, RET say, may go to any of them).
    succs = {}
    for h in order:
        last = members[h][0][-1][0]
        known = _successors(last)
        unknown = not known and (_ends_block(last))
        succs[h] = order if unknown else [x for x in known if x in members]
    dirty_in = {h: frozenset() for h in order}
    done: dict[int, tuple[list[str], frozenset]] = {}
    changed = True
    while changed:
        changed = False
        for h in order:
            done[h] = _region_locals(raw[h], dirty_in[h], used)
            for x in succs[h]:
                merged = dirty_in[x] | done[h][1]
                if merged != dirty_in[x]:
                    dirty_in[x] = merged
                    changed = True
    written = sorted({x for h in order for x in done[h][1]} | {
        x for h in order for x in dirty_in[h]})
    heads = {}
    frames: set[int] = set()
    eips_all: list[int] = []
    for h in order:
        items, eips, fr = members[h]
        heads[h] = array("I", eips)
        frames |= fr
        eips_all += eips

    # Recording: the last EIP of each block, by lg - 1 (lg: the block that ran last).
    lasts: list[int | None] = [None, *(members[h][1][-1] for h in order)]
    # Where every block's predecessors in the region end at one EIP (blocks that end
    # with the same branch, as a loop's do), each block's first group has one delta
    # into it and no `lg` is kept: the region's first group, entered from outside, is
    # marked open by Cpu.run (as it is for lg = 0).
    ends_before: dict[int, set[int]] = {h: set() for h in order}
    for h in order:
        for x in succs[h]:
            ends_before[x].add(members[h][1][-1])
    use_lg = any(len(v) > 1 for v in ends_before.values())
    prev0 = {h: next(iter(v)) if len(v) == 1 else None for h, v in ends_before.items()}

    def block_lines(h: int, rec: bool, more: int = 0,
                    seed: tuple[list[int], int | None] | None = None) -> list[str]:
        """Block h's lines in the loop, `more` columns further in; `seed`: the EIPs of a
        block that ran just before it and left them to its first group (see below)."""
        k = len(members[h][0])
        out: list[str] = []
        lines = _region_locals(raw[h], dirty_in[h], used, ns if rec else None,
                               lasts if use_lg else None,
                               prev0[h] if seed is None else seed[1],
                               seed[0] if seed is not None else None)[0]
        for line in lines:
            stripped = line.lstrip()
            indent = " " * (8 + more) + line[:len(line) - len(stripped)]
            if stripped.startswith("return "):
                stripped = "pc = " + stripped[len("return "):]
            if stripped == "#FINAL_SMC":
                # The block's last instruction stored into decoded code: the next
                # block is looked up again (it may be one of these, now stale).
                out += [f"{indent}if smc[0]:", f"{indent}    left -= {k}",
                        f"{indent}    break"]
                continue
            out.append(indent + stripped)
        return out

    def run_lines(h: int, rec: bool, more: int = 0,
                  seed: tuple[list[int], int | None] | None = None,
                  depth: int = INLINE_DEPTH) -> list[str]:
        """Block h's lines and its count, then (recording) copies of its successors."""
        k = len(members[h][0])
        pad = " " * (16 + more)
        lines = block_lines(h, rec, more, seed)
        prev = prev0[h] if seed is None else seed[1]
        final = (_final_group(lines, ns) if rec and depth and not use_lg
                 and prev is not None and 0 < len(succs[h]) <= 2 else None)
        if final is None:
            return [*lines, f"{pad}left -= {k}"]
        # Recording: a block whose one group is recorded as it ends (nothing in it can
        # raise or emit) is followed here by a copy of each successor in the region,
        # whose first group takes this block's instructions too: one group for both
        # blocks (each group is a call to record it and an item to join). Where the
        # successor is another, or the budget ends, the block's own group is recorded.
        out = [*lines[:final], *lines[final + 1:], f"{pad}left -= {k}"]
        flush = lines[final].strip()
        eips = [*(seed[0] if seed is not None else ()), *members[h][1]]
        for m, y in enumerate(dict.fromkeys(succs[h])):
            out += [f"{pad}{'if' if m == 0 else 'elif'} pc == {y:#x}:",
                    f"{pad}    if left < {len(members[y][0])}:",
                    f"{pad}        {flush}",
                    f"{pad}        break",
                    *run_lines(y, rec, more + 4, (eips, prev), depth - 1)]
        return [*out, f"{pad}else:", f"{pad}    {flush}"]

    def member_lines(rec: bool) -> list[str]:
        out: list[str] = []
        for j, h in enumerate(order):
            out += [f"            {'if' if j == 0 else 'elif'} pc == {h:#x}:",
                    f"                if left < {len(members[h][0])}:",
                    "                    break"]
            lines = run_lines(h, rec)
            if rec and use_lg:
                lines.insert(-1, f"                lg = {j + 1}")
            out += lines
        return out

    prologue = "".join(f"    x{n} = r[{n}]\n" for n in used) + "    F0, F1, F2, F3 = lf\n"
    epilogue = "".join(f"    r[{n}] = x{n}\n" for n in written if n != "F")
    if "F" in written:
        epilogue += "    lf[0] = F0; lf[1] = F1; lf[2] = F2; lf[3] = F3\n"
    tail = ["            else:", "                break"]

    def source(name: str, args: str, lines: list[str]) -> str:
        return (f"def {name}({args}, pc={eip:#x}):\n    start = left\n    i = 0\n"
                + ("    lg = 0\n" if name == "region_rec" and use_lg else "")
                + prologue + "    try:\n        while True:\n" + "\n".join(lines + tail)
                + "\n    except BaseException:\n        pos[0] = i\n        pos[1] = pc\n"
                "        cnt[0] = start - left\n        raise\n" + epilogue
                + "    cnt[0] = start - left\n    return pc\n")
    src = source("region", "left", member_lines(False))
    fn = _compile(cpu, src, eip, ns)
    fn.source = src  # type: ignore[attr-defined]

    def region_rec(left: int, rext: ExtendInto | list, pc: int = eip) -> int:
        # The recording variants are compiled when first needed (a trace at level insn):
        # info[1] records into InstructionColumn.tokens, info[2] into an array.
        src = source("region_rec", "left, rext", member_lines(True))
        info[1] = _compile(cpu, src, eip, ns)
        info[2] = _compile(cpu, src, eip, _for_arrays(ns))
        return info[1 if isinstance(rext, list) else 2](left, rext, pc)

    lpns = {e >> 12 for e in eips_all} | {(e + 15) >> 12 for e in eips_all}
    # info[3]: what a block of it that becomes an entry of its own is noted with (_shared).
    info = [heads, region_rec, region_rec, (frames, lpns, eips_all)]
    entry = (fn, 0, info)
    cpu.note_block(eip, entry, frames, lpns, eips_all)
    return entry


def _final_group(lines: list[str], ns: dict) -> int | None:
    """Where a block's recording lines (in a region) record its one group, when that is
    all they record, as the block ends (after it only the next EIP is worked out), with a
    known delta into it; else None."""
    at = [i for i, line in enumerate(lines) if "rext." in line]
    if len(at) != 1:
        return None
    line = lines[at[0]].strip()
    if not line.startswith("rext.append(G") or not isinstance(
            ns.get(line[len("rext.append("):-1]), RecordedGroup):
        return None
    if any(not x.strip().startswith("pc = ") for x in lines[at[0] + 1:]):
        return None
    if any(x.strip().startswith("#") or "break" in x for x in lines):
        return None
    return at[0]


_LF_STORE = re.compile(r"lf\[(\d)\] =")
_LF_READ = re.compile(r"lf\[(\d)\]")


def _to_f_store(m: re.Match) -> str:
    return f"F{m[1]} ="


def _to_f(m: re.Match) -> str:
    return "F" + m[1]


_FLAGS = "(F0, F1, F2, F3)"


def _region_locals(lines: list[str], dirty_in: frozenset, used: list[str],
                   rec: dict | None = None, heads: list[int | None] | None = None,
                   prev0: int | None = None, seed: list[int] | None = None
                   ) -> tuple[list[str], frozenset]:
    """A block's lines inside a region, where registers live in locals `xN` and the flag
    record in `F0`..`F3` for the whole region (loaded at its start). They are stored to
    `r` and `lf` only at #SYNC (before anything that can raise) and where the region
    ends; `dirty_in` is what may be unstored at the block's start (see _region)."""
    out: list[str] = []
    dirty = set(dirty_in)
    pend, flush = _record_groups(rec if rec is not None else {}, heads, prev0)
    if seed is not None:
        pend += seed  # a block's EIPs that ran just before, not recorded (see _region)

    def stores(indent: str) -> None:
        for n in sorted(x for x in dirty if x != "F"):
            out.append(f"{indent}r[{n}] = x{n}")
        if "F" in dirty:
            out.append(f"{indent}lf[0] = F0; lf[1] = F1; lf[2] = F2; lf[3] = F3")

    for line in lines:
        body = line.lstrip()
        indent = line[:len(line) - len(body)]
        if body == "#SYNC_RET":  # the values stay in locals for the next block
            if rec is not None:
                out.extend(flush(indent))
            continue
        if body in ("#SYNC", "#SYNC_IN"):
            stores(indent)
            if body == "#SYNC":
                dirty.clear()
                if rec is not None:
                    out.extend(flush(indent))
            continue
        if body.startswith("#INSN"):
            pend.append(int(body[6:], 16))
            continue
        if body == "#FINAL_SMC":
            out.append(indent + body)  # _region fills in the block's length
            continue
        if body == "#FORGET":  # a handler ran: it may have changed any register or flag
            out.extend(f"{indent}x{n} = r[{n}]" for n in used)
            out.append(f"{indent}F0, F1, F2, F3 = lf")
            continue
        if body.startswith("lf[0] ="):
            dirty.add("F")
            body = _LF_STORE.sub(_to_f_store, body)
        body = body.replace("(lf)", f"({_FLAGS})")
        body = _LF_READ.sub(_to_f, body)
        m = _ASSIGN.match(body)
        if m is not None:
            dirty.add(m.group(1))
        out.append(indent + _REG.sub(_to_x, body))
    return out, frozenset(dirty)


def _fetched(cpu: Cpu, entry: tuple) -> bool:
    """Is every instruction of a kept cache entry (block, region or NO_BLOCK) in the
    icache? Only then may it run as it is: the one-instruction path fetches each
    instruction that is not (after a CR3 load or INVLPG), and its first one may be there
    without the others (it faulted, and the guest resumed elsewhere), so it would fetch
    them: walk for their page after a TLB flush that kept the icache (kvm.ko's), and
    put them back in the icache."""
    icache = cpu.icache
    if entry[1]:
        return all(e in icache for e in entry[2])
    return all(e in icache for a in entry[2][0].values() for e in a)


def translate(cpu: Cpu, eip: int, regions: bool = True, refetched: bool = False) -> tuple:
    """The cache entry for a block (or a region of blocks) at `eip`, built from decoded
    instructions only, and installed in `cpu.blocks` (NO_BLOCK when none starts there).
    `refetched`: only the first instruction has been fetched again since a CR3 load (a
    plain block of those that follow in its page and frame; see Cpu.run)."""
    kept = cpu._block_store.get(eip)
    if kept is not None and kept[1] and (regions or kept[0][1]) and _fetched(cpu, kept[0]):
        # Translated before a CR3 load, all in one page, and every instruction of it has
        # been fetched again since (the icache holds it) and found in the same frame.
        cpu.blocks[eip] = kept[0]
        return kept[0]
    items, eips, frames = (_collect_refetched if refetched else _collect)(cpu, eip)
    if not items and refetched:
        d = cpu.decoded.get(eip)
        if d is None or translatable(d[0], d[2]):
            return NO_BLOCK  # (not noted: the one-instruction path may find a block here)
    if not items:
        d = cpu.decoded.get(eip)
        cpu.note_block(eip, NO_BLOCK, d[1] if d is not None else [], [eip >> 12])
        return NO_BLOCK
    if regions:
        entry = _region(cpu, eip, (items, eips, frames))
        if entry is not None:
            return entry
    raw, gen = _body(cpu, items, "", cpu.lf[0], raw=True)
    ns = {**_namespace(cpu), **gen.ns}

    def source(name: str, args: str, rec: bool) -> str:
        return (f"def {name}({args}):\n    i = 0\n    try:\n"
                + "\n".join(_registers_in_locals(raw, ns if rec else None))
                + "\n    except BaseException:\n        pos[0] = i\n        raise\n")
    src = source("block", "", False)
    fn = _compile(cpu, src, eip, ns)
    fn.source = src  # type: ignore[attr-defined]
    listed = _Eips(eips)

    def block_rec(rext: ExtendInto | list) -> int:
        # The recording variants are compiled when first needed (a trace at level insn):
        # rec[1] records into InstructionColumn.tokens, rec[2] into an array.
        src = source("block_rec", "rext", True)
        listed.rec = [None, _compile(cpu, src, eip, ns), _compile(cpu, src, eip, _for_arrays(ns))]
        return listed.rec[1 if isinstance(rext, list) else 2](rext)

    listed.rec = [None, block_rec, block_rec]
    lpns = {e >> 12 for e in eips} | {(e + 15) >> 12 for e in eips}
    entry = (fn, len(items), listed)
    cpu.note_block(eip, entry, frames, lpns, eips)
    return entry
