"""Control transfer (SDM Vol. 1 6.3-6.5, 7.3.8; Vol. 2 JMP, Jcc, CALL, RET, LOOP, INT, IRET)."""

from __future__ import annotations

from collections.abc import Callable

import iced_x86
from iced_x86 import OpKind

from vmsim.hw import exceptions as X
from vmsim.hw.cpu import CS, SlowPath
from vmsim.hw.flags import OF, condition, get_zf, materialize
from vmsim.hw.insn.ctx import Ctx, reg_info
from vmsim.hw.insn.data import popper, pusher
from vmsim.hw.insn.table import NotInSubset, handles

M32 = 0xFFFFFFFF
_NEAR = (OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH16)


def _far_size(ins: iced_x86.Instruction) -> int:
    """The operand size of a far JMP or CALL: 2 for ptr16:16 and m16:16, else 4."""
    if ins.op0_kind in (OpKind.FAR_BRANCH32, OpKind.FAR_BRANCH16):
        return 4 if ins.op0_kind == OpKind.FAR_BRANCH32 else 2
    return 2 if iced_x86.MemorySizeExt.size(ins.memory_size) == 4 else 4


def _return_ip(nxt: int, size: int) -> int:
    """What a CALL of operand size `size` pushes: EIP, or with 16 bits IP (SDM CALL)."""
    return nxt if size == 4 else nxt & 0xFFFF


def _far_pointer(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], tuple[int, int]]:
    """(selector, offset) of a far operand: ptr16:32 / ptr16:16 immediate or m16:32 /
    m16:16 in memory."""
    osize = _far_size(ins)
    if ins.op0_kind in (OpKind.FAR_BRANCH32, OpKind.FAR_BRANCH16):
        sel, off = ins.far_branch_selector, ins.far_branch32 if osize == 4 else ins.far_branch16
        return lambda: (sel, off)
    ea, rd = c.ea(ins), c.rd

    def read() -> tuple[int, int]:
        a = ea()
        return rd[2]((a + osize) & M32), rd[osize](a)
    return read


@handles("jmp")
def jmp(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    if ins.op0_kind in _NEAR:
        target = ins.near_branch_target
        return lambda: target
    if ins.is_jmp_far or ins.is_jmp_far_indirect:
        cpu, ptr = c.cpu, _far_pointer(ins, c)

        def run():
            sel, off = ptr()
            cpu.set_cs(cpu.load_code_descriptor(sel, far=True))
            cpu.retire(off)
            return None

        def jmp_far() -> int:
            raise SlowPath(run)
        return jmp_far
    size = c.opsize(ins, 0)
    src = c.reader(ins, 0, size)
    return src  # JMP r/m: the operand is the next EIP


@handles(*[n for n in dir(iced_x86.Mnemonic) if n.startswith("J") and n not in (
    "JMP", "JMPE", "JRCXZ", "JCXZ", "JECXZ", "JKNZD", "JKZD") and not n.startswith("JK")])
def jcc(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    if not ins.condition_code:
        raise NotInSubset("jcc")
    target, nxt, lf = ins.near_branch_target, ins.next_ip32, c.lf
    cc = ins.condition_code
    if cc in (iced_x86.ConditionCode.E, iced_x86.ConditionCode.NE):
        if cc == iced_x86.ConditionCode.E:
            return lambda: target if get_zf(lf) else nxt
        return lambda: nxt if get_zf(lf) else target
    cond = condition(cc)

    def jcc_() -> int:
        return target if cond(lf) else nxt
    return jcc_


@handles("jcxz", "jecxz")
def jecxz(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    target, nxt, r = ins.near_branch_target, ins.next_ip32, c.r
    mask = 0xFFFF if ins.mnemonic == iced_x86.Mnemonic.JCXZ else M32
    return lambda: nxt if r[1] & mask else target


# LOOP, LOOPE and LOOPNE count in CX where the address size is 16 (a 0x67 prefix here),
# the upper half of ECX kept (SDM LOOPcc: "the address-size attribute determines whether
# the count register is CX or ECX"); the operand size only cuts the target to 16 bits.
_LOOP_CX = frozenset(getattr(iced_x86.Code, f"{m}_REL8_{s}_CX")
                     for m in ("LOOP", "LOOPE", "LOOPNE") for s in (16, 32))


@handles("loop", "loope", "loopne")
def loop(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    target, nxt, r, lf = ins.near_branch_target, ins.next_ip32, c.r, c.lf
    m = ins.mnemonic
    if ins.code in _LOOP_CX:
        keep = 0xFFFF0000
        if m == iced_x86.Mnemonic.LOOP:
            def loop_cx() -> int:
                ecx = r[1]
                cx = (ecx - 1) & 0xFFFF
                r[1] = (ecx & keep) | cx
                return target if cx else nxt
            return loop_cx
        want_cx = m == iced_x86.Mnemonic.LOOPE

        def loopcc_cx() -> int:
            ecx = r[1]
            cx = (ecx - 1) & 0xFFFF
            r[1] = (ecx & keep) | cx
            return target if cx and get_zf(lf) == want_cx else nxt
        return loopcc_cx
    if m == iced_x86.Mnemonic.LOOP:
        def loop_() -> int:
            ecx = (r[1] - 1) & M32
            r[1] = ecx
            return target if ecx else nxt
        return loop_
    want = m == iced_x86.Mnemonic.LOOPE

    def loopcc() -> int:
        ecx = (r[1] - 1) & M32
        r[1] = ecx
        return target if ecx and get_zf(lf) == want else nxt
    return loopcc


@handles("call")
def call(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    nxt, r = ins.next_ip32, c.r
    if ins.op0_kind in _NEAR:
        target = ins.near_branch_target
        size = 4 if ins.op0_kind == OpKind.NEAR_BRANCH32 else 2
        wr, ip = c.wr[size], _return_ip(nxt, size)

        def call_rel() -> int:
            esp = (r[4] - size) & M32
            wr(esp, ip)
            r[4] = esp
            return target
        return call_rel
    if ins.is_call_far or ins.is_call_far_indirect:
        size = _far_size(ins)  # with 16 bits, CS and IP pushed as words
        cpu, ptr, push = c.cpu, _far_pointer(ins, c), pusher(c, size)
        ip = _return_ip(nxt, size)

        def run():
            sel, off = ptr()
            cs = cpu.load_code_descriptor(sel, far=True)
            esp = r[4]
            try:
                push(cpu.seg[CS].selector)
                push(ip)
            except BaseException:  # a fault, or a VM exit (EPT violation) to be restarted
                r[4] = esp
                raise
            cpu.set_cs(cs)
            cpu.retire(off)
            return None

        def call_far() -> int:
            raise SlowPath(run)
        return call_far
    size = c.opsize(ins, 0)
    src, wr = c.reader(ins, 0, size), c.wr[size]
    ip = _return_ip(nxt, size)

    def call_rm() -> int:
        target = src()  # read before the push: CALL [ESP] uses the old ESP
        esp = (r[4] - size) & M32
        wr(esp, ip)
        r[4] = esp
        return target
    return call_rm


@handles("ret")
def ret(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    r = c.r
    size = 2 if ins.code in (iced_x86.Code.RETNW, iced_x86.Code.RETNW_IMM16) else 4
    rd = c.rd[size]
    extra = ins.immediate16 if ins.op_count else 0

    def ret_() -> int:
        esp = r[4]
        target = rd(esp)
        r[4] = (esp + size + extra) & M32
        return target
    return ret_


@handles("retf")
def retf(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, r = c.cpu, c.r
    extra = ins.immediate16 if ins.op_count else 0
    # A 16-bit operand size (66 CB, 66 CA) pops IP and CS as words.
    pop = popper(c, 2 if ins.code in (iced_x86.Code.RETFW, iced_x86.Code.RETFW_IMM16) else 4)

    def run():
        esp = r[4]
        try:
            off = pop()
            sel = pop() & 0xFFFF
            if sel & 3:
                raise X.Unsupported("RETF to another privilege level")
            cs = cpu.load_code_descriptor(sel)
        except BaseException:  # a fault, or a VM exit (EPT violation) to be restarted
            r[4] = esp
            raise
        r[4] = (r[4] + extra) & M32
        cpu.set_cs(cs)
        cpu.retire(off)
        return None

    def retf_() -> int:
        raise SlowPath(run)
    return retf_


@handles("int", "int3", "into", "int1")
def int_n(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, nxt, lf = c.cpu, ins.next_ip32, c.lf
    m = ins.mnemonic
    if m == iced_x86.Mnemonic.INT:
        vector = ins.immediate8
    elif m == iced_x86.Mnemonic.INT3:
        vector = X.BP
    elif m == iced_x86.Mnemonic.INT1:
        vector = X.DB
    else:
        vector = X.OF

    def run():
        if m == iced_x86.Mnemonic.INTO and not materialize(lf) & OF:
            cpu.retire(nxt)
            return None
        cpu.icount += 1  # INT n retires; the handler starts at the gate's offset
        return cpu.software_interrupt(vector, nxt)

    def int_() -> int:
        raise SlowPath(run)
    return int_


@handles("bound")
def bound(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """BOUND r16, m16&16 / r32, m32&32 (SDM Vol. 2A BOUND; Vol. 1 7.3.8.4 lists it with
    INT n and INTO): the signed array index in the register against the signed bounds in
    memory, the lower at m and the upper at m + 2 (m + 4); an index below the lower or above
    the upper is #BR, a fault (EIP at the BOUND; it writes nothing, so nothing else
    changes). Both bounds are read first, so a #PF on either comes before #BR. In
    32-bit mode 62 with a memory operand is always BOUND; with mod 3 iced-x86 decodes an
    EVEX prefix or an invalid instruction, #UD either way here, as on a processor ("#UD If
    second operand is not a memory location"; EVEX without AVX-512 state enabled)."""
    if ins.op_kind(1) != OpKind.MEMORY:
        raise NotInSubset("bound with a register operand")
    size = reg_info(ins.op0_register)[1]
    sign = 1 << (8 * size - 1)
    index, ea, rd, nxt = c.reg_reader(ins.op0_register), c.ea(ins), c.rd[size], ins.next_ip32

    def bound_() -> int:
        at = ea()
        lower = rd(at)
        upper = rd((at + size) & M32)
        i = (index() ^ sign) - sign
        if i < (lower ^ sign) - sign or i > (upper ^ sign) - sign:
            raise X.CpuException(X.BR)
        return nxt
    return bound_


@handles("iret", "iretd")
def iretd(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, size = c.cpu, 2 if ins.mnemonic == iced_x86.Mnemonic.IRET else 4  # IRET: IRETW

    def run():
        cpu.iret(size)
        cpu.icount += 1
        if cpu.window_watch and cpu.sysflags & 0x200:  # IF: an interrupt window may be open
            cpu.stop_requested = True
        return None

    def iret_() -> int:
        raise SlowPath(run)
    return iret_
