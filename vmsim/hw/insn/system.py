"""Flag control and system instructions (SDM Vol. 1 7.3.13; Vol. 2 CLC ... WRMSR; Vol. 3A 2.8).

Everything a hypervisor may intercept (HLT, IN/OUT, CPUID, RDMSR/WRMSR, RDTSC, INVLPG,
VMCALL) runs on the slow path and asks `cpu.intercepted(...)` first.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86

from vmsim.hw import exceptions as X
from vmsim.hw.cpu import (
    AR_UNUSABLE,
    CR0_EM,
    CR0_MP,
    CR0_TS,
    SHADOW_STI,
    Intercept,
    SlowPath,
    StopReason,
)
from vmsim.hw.exceptions import CpuException
from vmsim.hw.flags import CF, DF, IF, ZF, materialize, set_explicit
from vmsim.hw.insn.ctx import Ctx
from vmsim.hw.insn.table import INTERCEPTABLE, NotInSubset, handles, opcode_byte

M32 = 0xFFFFFFFF
Mn = iced_x86.Mnemonic


@handles("clc", "stc", "cmc")
def carry(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    lf, nxt, m = c.lf, ins.next_ip32, ins.mnemonic

    def carry_() -> int:
        f = materialize(lf)
        if m == Mn.CLC:
            f &= ~CF
        elif m == Mn.STC:
            f |= CF
        else:
            f ^= CF
        set_explicit(lf, f)
        return nxt
    return carry_


@handles("cld", "std", "cli", "sti")
def sysflag(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, nxt, m = c.cpu, ins.next_ip32, ins.mnemonic
    bit = DF if m in (Mn.CLD, Mn.STD) else IF
    setting = m in (Mn.STD, Mn.STI)
    if m == Mn.STI:
        def set_if() -> None:
            cpu.sysflags |= IF
            cpu.retire(nxt)
            cpu.inhibit_interrupts(SHADOW_STI)
            if cpu.window_watch:
                cpu.stop_requested = True

        def sti() -> int:
            # SDM STI: with IF already 1 nothing changes; an STI that sets IF blocks
            # interrupts until the next instruction has run (the shadow, kept at an
            # exact icount: hence the slow path, taken only when IF was 0).
            if cpu.sysflags & IF:
                return nxt
            raise SlowPath(set_if)
        return sti

    def flag() -> int:
        if setting:
            cpu.sysflags |= bit
        else:
            cpu.sysflags &= ~bit
        return nxt
    return flag


@handles("nop", "pause")
def nop(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    nxt = ins.next_ip32
    return lambda: nxt


# 0F 18-0F 1F with a ModRM byte is the hint-NOP space (SDM Vol. 2B NOP, Vol. 2 Appendix A
# "Reserved-NOP"): what a later processor gave meaning there (PREFETCHh, CLDEMOTE, CET's
# ENDBR32 and RDSSPD) runs as a NOP on one without it, and touches no memory. This CPU
# (family 6, no SSE, no CET: default_cpuid) has none of them. Compilers put ENDBR32 at the
# top of every function under -fcf-protection.
@handles("reservednop", "prefetchnta", "prefetcht0", "prefetcht1", "prefetcht2", "prefetchit0",
         "prefetchit1", "cldemote", "endbr32", "endbr64", "rdsspd")
def hint_nop(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    if opcode_byte(ins) not in range(0x18, 0x20) or \
            ins.op_code().table != iced_x86.OpCodeTableKind.T0F:
        raise NotInSubset("outside the hint-NOP space")
    nxt = ins.next_ip32
    return lambda: nxt


@handles("wait")
def wait(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2B WAIT/FWAIT: #NM where CR0.MP and CR0.TS are both set (the CR0 the
    processor runs with, not a guest's read shadow); else it checks for pending unmasked
    x87 exceptions, of which this CPU, without an FPU, has none: a NOP."""
    mmu, nxt = c.cpu.mmu, ins.next_ip32
    both = CR0_MP | CR0_TS

    def wait_() -> int:
        if mmu.cr0 & both == both:
            raise X.CpuException(X.NM)
        return nxt
    return wait_


@handles("ud2", "ud0", "ud1")
def ud2(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    def ud() -> int:
        raise X.ud()
    return ud


def _slow(run: Callable[[], StopReason | None]) -> Callable[[], int]:
    def slow() -> int:
        raise SlowPath(run)
    return slow


def _intercepted(c: Ctx, at: tuple[int, int], kind: str, **fields) -> bool:
    """The hypervisor's say on this instruction; `at` is its (ip32, len), read from the
    decoded instruction once: an iced Instruction's attributes cost a call each, and an
    exit-heavy guest runs these at every exit."""
    return c.cpu.intercepted(Intercept(kind, at[0], at[1], **fields))


@handles("hlt")
def hlt(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, nxt = c.cpu, ins.next_ip32
    at = (ins.ip32, ins.len)

    def run():
        if _intercepted(c, at, "hlt"):
            return StopReason.INTERCEPT
        cpu.retire(nxt)
        cpu.halted = True
        return StopReason.HLT
    return _slow(run)


@handles("in", "out")
def in_out(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """IN/OUT with an imm8 or DX port (SDM Vol. 2A IN, Vol. 2B OUT)."""
    cpu, r, nxt = c.cpu, c.r, ins.next_ip32
    is_in = ins.mnemonic == Mn.IN
    acc_i, port_i = (0, 1) if is_in else (1, 0)
    size = c.opsize(ins, acc_i)
    if c.is_reg(ins, port_i):
        port_of = lambda: r[2] & 0xFFFF  # noqa: E731
    else:
        imm = ins.immediate(port_i) & 0xFF
        port_of = lambda: imm  # noqa: E731
    port_is_imm = not c.is_reg(ins, port_i)  # the exit qualification's operand-encoding bit
    get, put = c.reg_reader(ins.op_register(acc_i)), c.reg_writer(ins.op_register(acc_i))
    mask = (1 << (8 * size)) - 1
    eip, length = ins.ip32, ins.len  # (read once: every port access of an I/O guest exits)

    def run():
        port = port_of()
        if cpu.intercepted(Intercept("io", eip, length, port, size, is_in,
                                     extra={"imm": port_is_imm})):
            return StopReason.INTERCEPT
        if is_in:
            put(cpu.io.read(port, size) & mask)
        else:
            cpu.io.write(port, size, get())
        cpu.retire(nxt)
        return None
    return _slow(run)


@handles("lgdt", "lidt", "sgdt", "sidt")
def descriptor_table(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, nxt, m = c.cpu, ins.next_ip32, ins.mnemonic
    ea, rd, wr = c.ea(ins), c.rd, c.wr
    if ins.op_kind(0) != iced_x86.OpKind.MEMORY:
        raise NotInSubset("descriptor table register operand")
    osize16 = ins.code in (iced_x86.Code.LGDT_M1632_16, iced_x86.Code.LIDT_M1632_16)

    def run():
        a = ea()
        if m in (Mn.LGDT, Mn.LIDT):
            limit = rd[2](a)
            base = rd[4]((a + 2) & M32)
            if osize16:
                base &= 0xFFFFFF  # 16-bit operand size loads a 24-bit base
            if m == Mn.LGDT:
                cpu.gdtr = (base, limit)
            else:
                cpu.idtr = (base, limit)
        else:
            base, limit = cpu.gdtr if m == Mn.SGDT else cpu.idtr
            wr[2](a, limit)
            wr[4]((a + 2) & M32, base)
        cpu.retire(nxt)
        return None
    return _slow(run)


# -- LAR, LSL, VERR, VERW (SDM Vol. 2A LAR, LSL; Vol. 2B VERR/VERW) ------------------------
# They look a selector's descriptor up and say by ZF whether it passes their checks, never
# faulting on the selector (a fault reading the table is raised). At CPL 0 the privilege
# check is the selector's RPL against the descriptor's DPL, skipped for conforming code.
# None of them exits under VMX.
_LAR_SYSTEM = frozenset((0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0xB, 0xC))  # TSSs, LDT, call/task gates
_LSL_SYSTEM = frozenset((0x1, 0x2, 0x3, 0x9, 0xB))  # the ones with a limit


def _descriptor(cpu, selector: int) -> tuple[int, int] | None:
    """The descriptor `selector` names, or None (the null selector, or none there)."""
    return None if selector & 0xFFFC == 0 else cpu.find_descriptor(selector)


def _visible(selector: int, hi: int) -> bool:
    """The privilege check at CPL 0: RPL <= DPL, or conforming code."""
    conforming = hi & 0x1C00 == 0x1C00  # S = 1, code, conforming
    return conforming or selector & 3 <= (hi >> 13) & 3


@handles("lar", "lsl", "verr", "verw")
def descriptor_check(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, lf, nxt, m = c.cpu, c.lf, ins.next_ip32, ins.mnemonic
    verify = m in (iced_x86.Mnemonic.VERR, iced_x86.Mnemonic.VERW)
    src = c.reader(ins, 0 if verify else 1, 2)
    put = None if verify else c.reg_writer(ins.op0_register)
    size = 2 if verify else c.opsize(ins, 0)

    def result(selector: int) -> int | None:
        """LAR's access rights, LSL's limit, VERR/VERW's 0: None where ZF = 0."""
        d = _descriptor(cpu, selector)
        if d is None:
            return None
        lo, hi = d
        typ, system = (hi >> 8) & 0xF, not hi & 0x1000
        if not _visible(selector, hi):
            return None
        if m == iced_x86.Mnemonic.LAR:
            if system and typ not in _LAR_SYSTEM:
                return None
            return hi & (0x00F0FF00 if size == 4 else 0xFF00)
        if m == iced_x86.Mnemonic.LSL:
            if system and typ not in _LSL_SYSTEM:
                return None
            limit = (lo & 0xFFFF) | (hi & 0xF0000)
            if hi & 0x800000:  # G: in 4-KiB units
                limit = (limit << 12) | 0xFFF
            return limit if size == 4 else limit & 0xFFFF
        if system:
            return None
        code = typ & 8
        if m == iced_x86.Mnemonic.VERR:
            return 0 if not code or typ & 2 else None  # data, or readable code
        return 0 if not code and typ & 2 else None  # VERW: writable data

    def check() -> int:
        value = result(src() & 0xFFFF)
        f = materialize(lf) & ~ZF
        if value is not None:
            f |= ZF
            if put is not None:
                put(value)
        set_explicit(lf, f)
        return nxt
    return check


@handles("sldt", "str")
def store_selector(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2B SLDT, STR: LDTR's or TR's selector, into a 16-bit register or a word of
    memory, or zero-extended into a 32-bit register (P6 and later processors clear the
    upper half). vmsim models no descriptor-table exiting: they never exit."""
    cpu, nxt = c.cpu, ins.next_ip32
    ldtr = ins.mnemonic == Mn.SLDT

    def selector() -> int:
        return cpu.ldtr[0] if ldtr else cpu.tr[0]
    if c.is_reg(ins, 0):
        put = c.reg_writer(ins.op_register(0))

        def to_register() -> int:
            put(selector())
            return nxt
        return to_register
    ea, wr16 = c.ea(ins), c.wr[2]

    def to_memory() -> int:
        wr16(ea(), selector())
        return nxt
    return to_memory


@handles("lldt", "ltr")
def load_system_segment(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A LLDT, LTR: LDTR or TR from a GDT descriptor (RPL ignored). A null
    selector leaves LDTR unusable, and is #GP(0) for LTR; a selector in the LDT, past the
    GDT's limit or naming another type is #GP(selector), one not present #NP(selector).
    LTR marks the TSS busy in the GDT (and in TR), so a second LTR of it is #GP. At CPL 0
    only; vmsim models no descriptor-table exiting: they never exit."""
    cpu, nxt = c.cpu, ins.next_ip32
    src = c.reader(ins, 0, 2)
    ldt = ins.mnemonic == Mn.LLDT
    types = (0x02,) if ldt else (0x01, 0x09)  # LDT; available 16- or 32-bit TSS (S = 0)

    def load() -> int:
        selector = src() & 0xFFFF
        code = selector & 0xFFFC
        if not code:
            if not ldt:
                raise X.gp(0)
            cpu.ldtr = (selector, 0, 0, AR_UNUSABLE)
            cpu.ldt_tr_changed = True
            return nxt
        found = None if selector & 4 else cpu.find_descriptor(selector)
        if found is None or (found[1] >> 8) & 0x1F not in types:
            raise X.gp(code)
        lo, hi = found
        if not hi & 0x8000:
            raise CpuException(X.NP, code)
        if not ldt:
            hi |= 0x200  # busy, written back as a locked update of the descriptor
            cpu.memfns.wr32((cpu.gdtr[0] + (selector & 0xFFF8) + 4) & 0xFFFFFFFF, hi)
        seg = cpu._segment_from(selector, lo, hi)  # (its base and limit; the rights as read)
        loaded = (selector, seg.base, seg.limit, ((hi >> 8) & 0xFF) | ((hi >> 8) & 0xF000))
        if ldt:
            cpu.ldtr = loaded
        else:
            cpu.tr = loaded
        cpu.ldt_tr_changed = True
        return nxt
    return load


@handles("invlpg")
def invlpg(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, nxt, ea = c.cpu, ins.next_ip32, c.ea(ins)
    at = (ins.ip32, ins.len)

    def run():
        la = ea()
        if _intercepted(c, at, "invlpg", linear=la):
            return StopReason.INTERCEPT
        cpu.invlpg(la)
        cpu.retire(nxt)
        return None
    return _slow(run)


@handles("clts", "lmsw", "smsw")
def msw(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """CLTS, LMSW and SMSW: the machine status word, CR0's low bits (SDM Vol. 2A CLTS,
    Vol. 2A LMSW, Vol. 2B SMSW). In VMX non-root operation the bits a hypervisor owns (the
    CR0 guest/host mask) stay as they are and read from the read shadow, as for MOV CR0
    (set_control/get_control); whether CLTS and LMSW exit is the VMX layer's decision."""
    cpu, nxt, m = c.cpu, ins.next_ip32, ins.mnemonic
    at = (ins.ip32, ins.len)
    if m == Mn.SMSW:
        # Never intercepted (vmsim has no UMIP). A 32-bit register gets all of CR0: the SDM
        # leaves its high half undefined, and processors, QEMU and KVM's emulator store CR0.
        if c.is_reg(ins, 0):
            put = c.reg_writer(ins.op_register(0))
            mask = 0xFFFFFFFF if c.opsize(ins, 0) == 4 else 0xFFFF

            def smsw_reg() -> int:
                put(cpu.get_control(0) & mask)
                return nxt
            return smsw_reg
        ea, wr16 = c.ea(ins), c.wr[2]

        def smsw_mem() -> int:
            wr16(ea(), cpu.get_control(0) & 0xFFFF)
            return nxt
        return smsw_mem
    if m == Mn.CLTS:
        def clts():
            if _intercepted(c, at, "clts"):
                return StopReason.INTERCEPT
            cpu.set_control(0, cpu.get_raw_control(0) & ~CR0_TS)
            cpu.retire(nxt)
            return None
        return _slow(clts)
    memory = not c.is_reg(ins, 0)
    ea = c.ea(ins) if memory else None
    src = c.reader(ins, 0, 2)

    def lmsw():
        # The operand is read first: its value is in the exit qualification.
        la = ea() if ea is not None else 0
        value = src() & 0xFFFF
        if _intercepted(c, at, "lmsw", linear=la, extra={"source": value, "memory": memory}):
            return StopReason.INTERCEPT
        # PE, MP, EM and TS from the operand, except that LMSW never clears PE.
        cpu.set_control(0, (cpu.get_raw_control(0) & ~(CR0_MP | CR0_EM | CR0_TS))
                        | (value & 0xF))
        cpu.retire(nxt)
        return None
    return _slow(lmsw)


INTERCEPTABLE.update({"clts", "lmsw"})


@handles("wbinvd", "invd")
def cache_invalidation(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """WBINVD and INVD (SDM Vol. 2B INVD, WBINVD): vmsim has no caches to write back or
    drop, so outside VMX they retire and nothing else; in VMX non-root operation INVD
    always exits, WBINVD with the WBINVD-exiting control."""
    cpu, nxt = c.cpu, ins.next_ip32
    at = (ins.ip32, ins.len)
    kind = "wbinvd" if ins.mnemonic == Mn.WBINVD else "invd"

    def run():
        if _intercepted(c, at, kind):
            return StopReason.INTERCEPT
        cpu.retire(nxt)
        return None
    return _slow(run)


INTERCEPTABLE.update({"wbinvd", "invd"})


@handles("cpuid")
def cpuid(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, r, nxt = c.cpu, c.r, ins.next_ip32
    at = (ins.ip32, ins.len)

    def run():
        if _intercepted(c, at, "cpuid"):
            return StopReason.INTERCEPT
        r[0], r[3], r[1], r[2] = (v & M32 for v in cpu.cpuid(r[0], r[1]))
        cpu.retire(nxt)
        return None
    return _slow(run)


@handles("rdmsr", "wrmsr")
def msr(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, r, nxt = c.cpu, c.r, ins.next_ip32
    at = (ins.ip32, ins.len)
    write = ins.mnemonic == Mn.WRMSR

    def run():
        if _intercepted(c, at, "wrmsr" if write else "rdmsr", extra={"msr": r[1]}):
            return StopReason.INTERCEPT
        if write:
            cpu.write_msr(r[1], (r[2] << 32) | r[0])
        else:
            v = cpu.read_msr(r[1])
            r[0], r[2] = v & M32, (v >> 32) & M32
        cpu.retire(nxt)
        return None
    return _slow(run)


@handles("rdtsc")
def rdtsc(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    cpu, r, nxt = c.cpu, c.r, ins.next_ip32
    at = (ins.ip32, ins.len)

    def run():
        if _intercepted(c, at, "rdtsc"):
            return StopReason.INTERCEPT
        t = cpu.tsc()
        r[0], r[2] = t & M32, (t >> 32) & M32
        cpu.retire(nxt)
        return None
    return _slow(run)


@handles("vmcall")
def vmcall(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    at = (ins.ip32, ins.len)
    def run():
        if _intercepted(c, at, "vmcall"):
            return StopReason.INTERCEPT
        raise X.ud()  # outside VMX non-root operation VMCALL is #UD
    return _slow(run)


INTERCEPTABLE.update({"hlt", "in", "out", "cpuid", "rdmsr", "wrmsr", "rdtsc", "invlpg",
                      "vmcall"})
