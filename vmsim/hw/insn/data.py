"""Data transfer (SDM Vol. 1 7.3.1; Vol. 2 MOV, MOVZX, MOVSX, LEA, XCHG, BSWAP, PUSH, POP,
...)."""

from __future__ import annotations

from collections.abc import Callable

import iced_x86
from iced_x86 import Register

from vmsim.hw.cpu import SEG_NAMES, SHADOW_MOV_SS, SS, Intercept, SlowPath, StopReason
from vmsim.hw.flags import ARITH_MASK, TF, ZF, condition, get_cf, materialize, set_explicit
from vmsim.hw.insn.ctx import Ctx, reg_info
from vmsim.hw.insn.table import INTERCEPTABLE, NotInSubset, handles

M32 = 0xFFFFFFFF


def _sreg(reg: int) -> int:
    if Register.ES <= reg <= Register.GS:
        return reg - Register.ES
    raise NotInSubset("segment register")


def _is_sreg(reg: int) -> bool:
    return Register.ES <= reg <= Register.GS


def _is_cr(reg: int) -> bool:
    return Register.CR0 <= reg <= Register.CR15


def _is_dr(reg: int) -> bool:
    return Register.DR0 <= reg <= Register.DR15


@handles("mov")
def mov(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    r, nxt = c.r, ins.next_ip32
    k0, k1 = c.is_reg(ins, 0), c.is_reg(ins, 1)
    if (k0 and _is_cr(ins.op0_register)) or (k1 and _is_cr(ins.op1_register)):
        return _mov_cr(ins, c)
    if (k0 and _is_dr(ins.op0_register)) or (k1 and _is_dr(ins.op1_register)):
        return _mov_dr(ins, c)
    if k0 and _is_sreg(ins.op0_register):
        return _mov_to_sreg(ins, c)
    if k1 and _is_sreg(ins.op1_register):
        sreg = _sreg(ins.op1_register)
        cpu = c.cpu
        if k0:
            size = reg_info(ins.op0_register)[1]
            put = c.reg_writer(ins.op0_register)
            # A 32-bit register destination gets the selector zero-extended.
            return lambda: (put(cpu.seg[sreg].selector & (0xFFFF if size == 2 else M32)), nxt)[1]
        ea, wr16 = c.ea(ins), c.wr[2]
        return lambda: (wr16(ea(), cpu.seg[sreg].selector), nxt)[1]
    size = c.opsize(ins, 0)
    if k0:
        d, _, _ = reg_info(ins.op0_register)
        if size == 4:
            if k1:
                s = reg_info(ins.op1_register)[0]

                def mov_r32_r32() -> int:
                    r[d] = r[s]
                    return nxt
                return mov_r32_r32
            if c.is_imm(ins, 1):
                v = ins.immediate(1) & M32

                def mov_r32_imm() -> int:
                    r[d] = v
                    return nxt
                return mov_r32_imm
            ea, rd = c.ea(ins), c.rd[4]

            def mov_r32_m32() -> int:
                r[d] = rd(ea())
                return nxt
            return mov_r32_m32
        put, src = c.reg_writer(ins.op0_register), c.reader(ins, 1, size)

        def mov_r_x() -> int:
            put(src())
            return nxt
        return mov_r_x
    ea, wr, src = c.ea(ins), c.wr[size], c.reader(ins, 1, size)
    if size == 4 and k1:
        s = reg_info(ins.op1_register)[0]

        def mov_m32_r32() -> int:
            wr(ea(), r[s])
            return nxt
        return mov_m32_r32

    def mov_m_x() -> int:
        wr(ea(), src())
        return nxt
    return mov_m_x


def _mov_cr(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """MOV to/from CR0 CR2 CR3 CR4 (SDM Vol. 2B MOV-Move to/from Control Registers)."""
    cpu, nxt, eip, length = c.cpu, ins.next_ip32, ins.ip32, ins.len
    to_cr = _is_cr(ins.op0_register)
    cr_reg, gpr_reg = (ins.op0_register, ins.op1_register) if to_cr else (ins.op1_register,
                                                                          ins.op0_register)
    n = cr_reg - Register.CR0
    if n not in (0, 2, 3, 4):
        raise NotInSubset(f"CR{n}")
    g = reg_info(gpr_reg)[0]

    def run():
        info = Intercept("cr_write" if to_cr else "cr_read", eip, length, cr=n, gpr=g)
        if cpu.intercepted(info):
            return StopReason.INTERCEPT
        if to_cr:
            cpu.set_control(n, cpu.r[g])
        else:
            cpu.r[g] = cpu.get_control(n)
        cpu.retire(nxt)
        return None

    def mov_cr() -> int:
        raise SlowPath(run)
    return mov_cr


INTERCEPTABLE.update({"mov cr"})


def _mov_dr(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """MOV to/from DR0-DR7 (SDM Vol. 2B MOV-Move to/from Debug Registers: 0F 21 /r, 0F 23
    /r). DR6 and DR7 keep their fixed bits; DR0-DR3 are stored but no breakpoint fires.
    Simplified: no MOV-DR exiting under VMX (kvm.ko's lazy DR switching is not modelled)."""
    cpu, nxt = c.cpu, ins.next_ip32
    to_dr = _is_dr(ins.op0_register)
    dr_reg, gpr_reg = (ins.op0_register, ins.op1_register) if to_dr else (ins.op1_register,
                                                                          ins.op0_register)
    n = dr_reg - Register.DR0
    if n > 7:
        raise NotInSubset(f"DR{n}")  # #UD on hardware too
    g = reg_info(gpr_reg)[0]

    def run():
        if to_dr:
            cpu.set_debug(n, cpu.r[g])
        else:
            cpu.r[g] = cpu.get_debug(n)
        cpu.retire(nxt)
        return None

    def mov_dr() -> int:
        raise SlowPath(run)
    return mov_dr


def _mov_to_sreg(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    sreg = _sreg(ins.op0_register)
    if SEG_NAMES[sreg] == "cs":
        raise NotInSubset("mov cs")  # #UD on hardware too
    cpu, nxt = c.cpu, ins.next_ip32
    src = c.reader(ins, 1, 2)

    def run():
        cpu.load_segment(sreg, src() & 0xFFFF)
        cpu.retire(nxt)
        if sreg == SS:  # the next instruction runs in its shadow (SDM Vol. 3A 6.8.3)
            cpu.inhibit_interrupts(SHADOW_MOV_SS)
        return None

    def mov_sreg() -> int:
        raise SlowPath(run)
    return mov_sreg


_FAR_LOADS = {"lds": "ds", "les": "es", "lfs": "fs", "lgs": "gs", "lss": "ss"}
_FAR_LOAD_SREGS = {getattr(iced_x86.Mnemonic, m.upper()): SEG_NAMES.index(s)
                   for m, s in _FAR_LOADS.items()}


@handles(*_FAR_LOADS)
def load_far_pointer(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """LDS/LES/LFS/LGS/LSS r, m16:32 (or m16:16): the offset into the register, the
    selector into the segment register (SDM Vol. 2A LDS/LES/LFS/LGS/LSS). Both halves are
    read and the segment loaded, with its checks, before the register changes: a fault
    leaves the register as it was. Unlike MOV SS, LSS opens no interrupt shadow: it loads
    SS and ESP together."""
    if not c.is_reg(ins, 0) or ins.op_kind(1) != iced_x86.OpKind.MEMORY:
        raise NotInSubset("far pointer load from a register")  # C4/C5 /r with mod 3: #UD
    cpu, nxt = c.cpu, ins.next_ip32
    sreg = _FAR_LOAD_SREGS[ins.mnemonic]
    size = reg_info(ins.op0_register)[1]
    ea, rd_off, rd16 = c.ea(ins), c.rd[size], c.rd[2]
    put = c.reg_writer(ins.op0_register)

    def run():
        a = ea()
        offset = rd_off(a)
        selector = rd16((a + size) & M32)
        cpu.load_segment(sreg, selector)
        put(offset)
        cpu.retire(nxt)
        return None

    def far_load() -> int:
        raise SlowPath(run)
    return far_load


@handles("movzx", "movsx")
def movx(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    ssize = c.opsize(ins, 1)
    src = c.reader(ins, 1, ssize)
    put, nxt = c.reg_writer(ins.op0_register), ins.next_ip32
    dmask = (1 << (8 * reg_info(ins.op0_register)[1])) - 1
    if ins.mnemonic == iced_x86.Mnemonic.MOVZX:
        if dmask == M32 and ssize == 1 and not c.is_reg(ins, 1):
            ea, rd8, r = c.ea(ins), c.rd[1], c.r
            d = reg_info(ins.op0_register)[0]

            def movzx_r32_m8() -> int:
                r[d] = rd8(ea())
                return nxt
            return movzx_r32_m8
        return lambda: (put(src()), nxt)[1]
    sign = 1 << (8 * ssize - 1)

    def movsx() -> int:
        put((((src() ^ sign) - sign)) & dmask)
        return nxt
    return movsx


@handles("lea")
def lea(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    ea, nxt = c.ea(ins), ins.next_ip32
    d, size, _ = reg_info(ins.op0_register)
    r = c.r
    if size == 4:
        def lea_r32() -> int:
            r[d] = ea()
            return nxt
        return lea_r32
    put = c.reg_writer(ins.op0_register)
    return lambda: (put(ea() & 0xFFFF), nxt)[1]


@handles("xchg")
def xchg(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size, nxt = c.opsize(ins, 0), ins.next_ip32
    if c.is_reg(ins, 0) and c.is_reg(ins, 1):
        g0, p0 = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)
        g1, p1 = c.reg_reader(ins.op1_register), c.reg_writer(ins.op1_register)

        def xchg_rr() -> int:
            a, b = g0(), g1()
            p0(b)
            p1(a)
            return nxt
        return xchg_rr
    reg_i = 1 if not c.is_reg(ins, 0) else 0
    reg = ins.op_register(reg_i)
    g, p = c.reg_reader(reg), c.reg_writer(reg)
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def xchg_mr() -> int:
        addr = ea()
        m = rd(addr)
        wr(addr, g())
        p(m)
        return nxt
    return xchg_mr


@handles("bswap")
def bswap(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A BSWAP r32: the register's bytes in reverse order; no flags. With a
    16-bit operand the SDM leaves the result undefined: this CPU clears the low word and
    keeps the high one, as an AMD EPYC does (run through KVM), and QEMU and Bochs."""
    d, size, _ = reg_info(ins.op0_register)
    r, nxt = c.r, ins.next_ip32
    if size == 2:
        def bswap_r16() -> int:
            r[d] &= 0xFFFF0000
            return nxt
        return bswap_r16

    def bswap_r32() -> int:
        v = r[d]
        r[d] = ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)
        return nxt
    return bswap_r32


# -- the stack (SDM Vol. 1 6.2-6.3; 32-bit SS, so ESP is the stack pointer) ------------------

def pusher(c: Ctx, size: int) -> Callable[[int], None]:
    r, wr = c.r, c.wr[size]

    def push(v: int) -> None:
        esp = (r[4] - size) & M32
        wr(esp, v)  # store first: a faulting push leaves ESP as it was
        r[4] = esp
    return push


def popper(c: Ctx, size: int) -> Callable[[], int]:
    r, rd = c.r, c.rd[size]

    def pop() -> int:
        v = rd(r[4])
        r[4] = (r[4] + size) & M32
        return v
    return pop


def _stack_size(ins: iced_x86.Instruction) -> int:
    return iced_x86.MemorySizeExt.size(ins.memory_size) if ins.memory_size else 4


@handles("push")
def push(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    nxt = ins.next_ip32
    size = -ins.stack_pointer_increment
    if c.is_reg(ins, 0) and _is_sreg(ins.op0_register):
        cpu, sreg, p = c.cpu, _sreg(ins.op0_register), pusher(c, size)
        return lambda: (p(cpu.seg[sreg].selector), nxt)[1]
    r, wr = c.r, c.wr[size]
    if size == 4 and c.is_reg(ins, 0):
        s = reg_info(ins.op0_register)[0]

        def push_r32() -> int:
            esp = (r[4] - 4) & M32
            wr(esp, r[s])  # PUSH ESP pushes the value before the decrement
            r[4] = esp
            return nxt
        return push_r32
    src = c.reader(ins, 0, size)
    p = pusher(c, size)

    def push_x() -> int:
        p(src())
        return nxt
    return push_x


@handles("pop")
def pop(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    nxt, r = ins.next_ip32, c.r
    size = ins.stack_pointer_increment
    if c.is_reg(ins, 0) and _is_sreg(ins.op0_register):
        cpu, sreg, rd = c.cpu, _sreg(ins.op0_register), c.rd[size]

        def run():
            cpu.load_segment(sreg, rd(r[4]) & 0xFFFF)
            r[4] = (r[4] + size) & M32
            cpu.retire(nxt)
            if sreg == SS:  # POP SS: as MOV SS
                cpu.inhibit_interrupts(SHADOW_MOV_SS)
            return None

        def pop_sreg() -> int:
            raise SlowPath(run)
        return pop_sreg
    if c.is_reg(ins, 0):
        rd = c.rd[size]
        if size == 4:
            d = reg_info(ins.op0_register)[0]

            def pop_r32() -> int:
                v = rd(r[4])
                r[4] = (r[4] + 4) & M32
                r[d] = v  # POP ESP: the popped value wins
                return nxt
            return pop_r32
        put = c.reg_writer(ins.op0_register)

        def pop_r() -> int:
            v = rd(r[4])
            r[4] = (r[4] + size) & M32
            put(v)
            return nxt
        return pop_r
    # POP to memory: the address is computed with ESP already incremented (SDM POP).
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def pop_m() -> int:
        old = r[4]
        v = rd(old)
        r[4] = (old + size) & M32
        try:
            wr(ea(), v)
        except BaseException:
            r[4] = old
            raise
        return nxt
    return pop_m


@handles("pushad", "pusha")
def pushad(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = 4 if ins.mnemonic == iced_x86.Mnemonic.PUSHAD else 2
    r, wr, nxt = c.r, c.wr[size], ins.next_ip32
    mask = (1 << (8 * size)) - 1

    def pushad_() -> int:
        esp = r[4]
        vals = [r[i] & mask for i in range(8)]  # EAX ECX EDX EBX (old ESP) EBP ESI EDI
        for i, v in enumerate(vals):
            wr((esp - size * (i + 1)) & M32, v)
        r[4] = (esp - 8 * size) & M32
        return nxt
    return pushad_


@handles("popad", "popa")
def popad(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = 4 if ins.mnemonic == iced_x86.Mnemonic.POPAD else 2
    r, rd, nxt = c.r, c.rd[size], ins.next_ip32

    def popad_() -> int:
        esp = r[4]
        vals = [rd((esp + size * i) & M32) for i in range(8)]
        for i, v in zip((7, 6, 5, 4, 3, 2, 1, 0), vals, strict=True):
            if i == 4:
                continue  # the stored ESP is skipped
            r[i] = v if size == 4 else (r[i] & 0xFFFF0000) | v
        r[4] = (esp + 8 * size) & M32
        return nxt
    return popad_


@handles("pushfd", "pushf")
def pushfd(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = 4 if ins.mnemonic == iced_x86.Mnemonic.PUSHFD else 2
    cpu, p, nxt = c.cpu, pusher(c, size), ins.next_ip32
    mask = (1 << (8 * size)) - 1
    # The pushed image has VM and RF clear (SDM PUSHF).
    return lambda: (p(cpu.eflags & 0xFCFFFF & mask), nxt)[1]


_VIF_VIP = 0x180000


IF_FLAG = 0x200  # EFLAGS.IF


@handles("popfd", "popf")
def popfd(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    from vmsim.hw.cpu import EFLAGS_WRITABLE

    size = 4 if ins.mnemonic == iced_x86.Mnemonic.POPFD else 2
    cpu, pop_, nxt = c.cpu, popper(c, size), ins.next_ip32
    # SDM POPF at CPL 0: "All non-reserved flags except RF, VIP, VIF, and VM can be
    # modified; VIP, VIF, VM, and all reserved bits are unaffected" (IRET, unlike POPF,
    # does load VIF and VIP, hence they are in EFLAGS_WRITABLE).
    keep = ~EFLAGS_WRITABLE | _VIF_VIP | (0 if size == 4 else 0xFFFF0000)

    def retire() -> None:
        cpu.retire(nxt)
        if cpu.window_watch and cpu.sysflags & IF_FLAG:
            cpu.stop_requested = True  # an interrupt window may have opened

    def popfd_() -> int:
        v = pop_()
        new = (v & EFLAGS_WRITABLE & ~keep) | (cpu.eflags & keep)
        cpu.eflags = new
        if new & TF or (new & IF_FLAG and cpu.window_watch):
            # POPF done; the run loop must leave its fast lane for the single-step one
            # (the first trap comes after the NEXT instruction, SDM Vol. 3A 17.3.1.4), or
            # stop for an interrupt window that may have opened.
            raise SlowPath(retire)
        return nxt
    return popfd_


@handles("cbw", "cwde", "cwd", "cdq")
def convert(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    r, nxt, m = c.r, ins.next_ip32, ins.mnemonic
    if m == iced_x86.Mnemonic.CBW:
        def cbw() -> int:
            r[0] = (r[0] & 0xFFFF0000) | ((((r[0] & 0xFF) ^ 0x80) - 0x80) & 0xFFFF)
            return nxt
        return cbw
    if m == iced_x86.Mnemonic.CWDE:
        def cwde() -> int:
            r[0] = (((r[0] & 0xFFFF) ^ 0x8000) - 0x8000) & M32
            return nxt
        return cwde
    if m == iced_x86.Mnemonic.CWD:
        def cwd() -> int:
            r[2] = (r[2] & 0xFFFF0000) | (0xFFFF if r[0] & 0x8000 else 0)
            return nxt
        return cwd

    def cdq() -> int:
        r[2] = M32 if r[0] & 0x80000000 else 0
        return nxt
    return cdq


@handles("leave")
def leave(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    r, nxt = c.r, ins.next_ip32
    size = 4 if ins.code == iced_x86.Code.LEAVED else 2
    rd = c.rd[size]

    def leave_() -> int:
        # SDM LEAVE: the stack-address size (32 here) says ESP <- EBP, whole; the operand
        # size only says how much is popped into (E)BP.
        ebp = r[5]
        v = rd(ebp)
        r[4] = (ebp + size) & M32
        r[5] = v if size == 4 else (r[5] & 0xFFFF0000) | v
        return nxt
    return leave_


@handles("enter")
def enter(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A ENTER imm16, imm8 with a 32-bit stack (SS.B: ESP, whatever the operand
    size): Push(EBP); FrameTemp = ESP; for i = 1 .. level - 1, Push([EBP - i * size]) (the
    outer frames' pointers, read through the old EBP); with a level, Push(FrameTemp); then
    EBP = FrameTemp (BP only with a 16-bit operand size: "BP := FrameTemp(15:0)") and
    ESP -= imm16. The level is imm8 MOD 32. Every store is made, and may fault, before EBP
    and ESP change, so a #PF restarts the instruction as PUSHAD's does."""
    size = 2 if ins.code == iced_x86.Code.ENTERW_IMM16_IMM8 else 4
    alloc, level = ins.immediate(0) & 0xFFFF, ins.immediate(1) & 0x1F
    r, rd, wr, wprobe, nxt = c.r, c.rd[size], c.wr[size], c.wprobe, ins.next_ip32
    mask = (1 << (8 * size)) - 1

    def enter_() -> int:
        ebp = r[5]
        frame = (r[4] - size) & M32
        wr(frame, ebp & mask)
        sp = frame
        if level:
            for i in range(1, level):
                v = rd((ebp - size * i) & M32)
                sp = (sp - size) & M32
                wr(sp, v)
            sp = (sp - size) & M32
            wr(sp, frame & mask)
        esp = (sp - alloc) & M32
        if alloc:
            # Protected Mode Exceptions: "#PF(fault-code) If a page fault occurs or if a
            # write using the final value of the stack pointer (within the current stack
            # segment) would cause a page fault" (checked as a write, nothing stored; with
            # no allocation that is the last slot, written just now).
            wprobe(esp, size)
        r[5] = frame if size == 4 else (ebp & 0xFFFF0000) | frame & 0xFFFF
        r[4] = esp
        return nxt
    return enter_


@handles("xlatb")
def xlatb(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2B XLAT/XLATB: AL = [DS:EBX + ZeroExtend(AL)], [BX + AL] wrapped at 64 KiB
    with a 0x67 prefix. A segment override picks the segment, checked at decode as for any
    memory operand (decode._segment_checked); segments are flat, so the address is linear."""
    r, rd8, nxt = c.r, c.rd[1], ins.next_ip32
    if ins.memory_base == Register.BX:
        def xlat16() -> int:
            r[0] = (r[0] & 0xFFFFFF00) | rd8(((r[3] & 0xFFFF) + (r[0] & 0xFF)) & 0xFFFF)
            return nxt
        return xlat16

    def xlat() -> int:
        r[0] = (r[0] & 0xFFFFFF00) | rd8((r[3] + (r[0] & 0xFF)) & M32)
        return nxt
    return xlat


def _cmovcc_names() -> list[str]:
    return [n for n in dir(iced_x86.Mnemonic) if n.startswith("CMOV")]


@handles(*_cmovcc_names())
def cmovcc(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cond = condition(ins.condition_code)
    size = c.opsize(ins, 0)
    src, put, lf, nxt = c.reader(ins, 1, size), c.reg_writer(ins.op0_register), c.lf, ins.next_ip32

    def cmov() -> int:
        v = src()  # the source is read (and may fault) whatever the condition
        if cond(lf):
            put(v)
        return nxt
    return cmov


@handles(*[n for n in dir(iced_x86.Mnemonic) if n.startswith("SET") and len(n) <= 6
           and n not in ("SETSSBSY",)])
def setcc(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    if not ins.condition_code:
        raise NotInSubset("setcc")
    cond, lf, nxt = condition(ins.condition_code), c.lf, ins.next_ip32
    if c.is_reg(ins, 0):
        put = c.reg_writer(ins.op0_register)
        return lambda: (put(1 if cond(lf) else 0), nxt)[1]
    ea, wr8 = c.ea(ins), c.wr[1]
    return lambda: (wr8(ea(), 1 if cond(lf) else 0), nxt)[1]


@handles("salc")
def salc(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SALC (D6): AL := FFh if CF is set, else 00h; no flag changes. Not in the SDM's
    instruction reference, but Intel and AMD processors run it outside 64-bit mode, and so
    do QEMU, Bochs and KVM's instruction emulator (em_salc): a guest met it as #UD on
    vmsim only (docs/fuzzing.md)."""
    r, lf, nxt = c.r, c.lf, ins.next_ip32

    def salc_() -> int:
        r[0] = (r[0] & 0xFFFFFF00) | (0xFF if get_cf(lf) else 0)
        return nxt
    return salc_


@handles("sahf", "lahf")
def sahf(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    r, lf, nxt = c.r, c.lf, ins.next_ip32
    if ins.mnemonic == iced_x86.Mnemonic.SAHF:
        def sahf_() -> int:
            f = materialize(lf)
            set_explicit(lf, (f & ~0xD5) | ((r[0] >> 8) & 0xD5))
            return nxt
        return sahf_

    def lahf() -> int:
        ah = (materialize(lf) & ARITH_MASK & 0xFF) | 2
        r[0] = (r[0] & 0xFFFF00FF) | (ah << 8)
        return nxt
    return lahf


# -- ARPL (SDM Vol. 2A ARPL) -------------------------------------------------------------------

@handles("arpl")
def arpl(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """Where the destination selector's RPL (bits 1:0) is below the source's, it is raised
    to it and ZF = 1; else ZF = 0 and nothing is written (the SDM's pseudo-code; QEMU writes
    the destination back either way: docs/qemu-departures.md). The other flags are kept.
    Only bits 1:0 can change, so a register destination is the same read as r16 or r32."""
    lf, nxt, r = c.lf, ins.next_ip32, c.r
    s_idx = reg_info(ins.op1_register)[0]
    if c.is_reg(ins, 0):
        d_idx = reg_info(ins.op0_register)[0]

        def arpl_r() -> int:
            d, rpl = r[d_idx], r[s_idx] & 3
            f = materialize(lf) & ~ZF
            if d & 3 < rpl:
                r[d_idx] = (d & ~3) | rpl
                f |= ZF
            set_explicit(lf, f)
            return nxt
        return arpl_r
    ea, rd, wr = c.ea(ins), c.rd[2], c.wr[2]

    def arpl_m() -> int:
        a = ea()
        d, rpl = rd(a), r[s_idx] & 3
        f = materialize(lf) & ~ZF
        if d & 3 < rpl:
            wr(a, (d & ~3) | rpl)
            f |= ZF
        set_explicit(lf, f)
        return nxt
    return arpl_m
