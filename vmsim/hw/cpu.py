"""The guest CPU: 32-bit protected mode at CPL 0 (an IA-32 subset), and its run loop.

Instructions are decoded once per linear address with iced-x86 into handlers (closures
built by the factories in `vmsim.hw.insn`) and kept in `icache` until the bytes behind
them are written (self-modifying code) or the translation that fetched them changes (CR3
load, INVLPG, paging switched). The loop is: look the handler up, call it, take the next
EIP it returns. Rare instructions that need the loop's state (I/O, HLT, CPUID, control
registers, INT n ...) raise `SlowPath`, and run with `cpu.eip` and `cpu.icount` exact.

Seam for VMX (issue 3): before an interceptable instruction or event takes effect the CPU
calls `self.intercept(Intercept(...))`; if that returns True the CPU stops with
StopReason.INTERCEPT and the instruction has not executed (EIP still points at it).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any, Protocol

import iced_x86

from vmsim.events import EventStream
from vmsim.hw import exceptions as X
from vmsim.hw.exceptions import CpuException, Unsupported
from vmsim.hw.flags import ARITH_MASK, EXPLICIT, materialize, set_explicit
from vmsim.hw.intercept import Intercept, InterceptExit
from vmsim.hw.memory import CODE, OTHER, PAGE_SHIFT, RAM, PhysicalMemory
from vmsim.hw.mmu import CR0_PG, CR0_WP, CR4_PAE, CR4_PGE, CR4_PSE, FETCH, READ, WRITE, Mmu
from vmsim.msr_index import (
    MSR_IA32_APICBASE,
    MSR_IA32_CR_PAT,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_TSC,
)
from vmsim.state import register

GPR_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")  # iced-x86 / SDM sreg encoding order
ES, CS, SS, DS, FS, GS = range(6)

CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_AM, CR0_NW, CR0_CD = 1 << 18, 1 << 29, 1 << 30
CR0_VALID = CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW \
    | CR0_CD | CR0_PG
REAL_MODE_UNSUPPORTED = ("the guest is in real mode (CR0.PE=0): vmsim's CPU runs 32-bit "
                         "protected mode only")
PAE_UNSUPPORTED = "PAE paging is outside vmsim's subset (32-bit paging only)"
# CR4 bits this CPU accepts (VME..OSXMMEXCPT); PAE is accepted but not modelled with paging.
CR4_VALID = 0x7FF
CR4_VMXE = 1 << 13

EFLAGS_FIXED = 0x2  # bit 1 reads as 1
# EFLAGS bits POPF may change at CPL 0 (no VM: no VM86; no RF). POPF also leaves VIF and
# VIP as they are (insn/data.py masks them); IRETD loads them, and RF (IRET_WRITABLE).
EFLAGS_WRITABLE = 0x3F7FD5 & ~0x30000 | 0x4000
IRET_WRITABLE = EFLAGS_WRITABLE | 0x10000

EFLAGS_TF, EFLAGS_IF, EFLAGS_NT, EFLAGS_RF = 0x100, 0x200, 0x4000, 0x10000

# The interrupt shadow's kinds, as bits 0 and 1 of the VMCS interruptibility state (SDM
# Vol. 3C "Guest Non-Register State"; LNX GUEST_INTR_STATE_STI / _MOV_SS).
SHADOW_STI, SHADOW_MOV_SS = 1, 2
# LDTR and TR as (selector, base, limit, access rights), the rights in the VMCS's format
# (the descriptor's access byte, its flags nibble at bits 15:12, AR_UNUSABLE for a null
# LDTR). After reset (SDM Vol. 3A, "Processor State Following Power-up, Reset, or INIT"):
# base 0, limit FFFF, present, an LDT and a busy 32-bit TSS (as KVM's vCPU reset has them).
AR_UNUSABLE = 1 << 16
RESET_LDTR = (0, 0, 0xFFFF, 0x82)
RESET_TR = (0, 0, 0xFFFF, 0x8B)
# Event types (SDM interruption-information types; LNX arch/x86/include/asm/trapnr.h).
EVENT_TYPE_EXTINT, EVENT_TYPE_NMI, EVENT_TYPE_HWEXC = 0, 2, 3

# Debug registers (SDM Vol. 3A 17.2). DR6 bits 4-11 and 16-31 read as 1 (no RTM, no bus-lock
# detection), bit 12 as 0; DR7 bit 10 reads as 1, bits 11, 12, 14 and 15 as 0.
DR6_FIXED_1, DR6_VOLATILE = 0xFFFF0FF0, 0x0000E00F
DR6_BS = 1 << 14  # single step
DR7_FIXED_1, DR7_VOLATILE = 0x400, 0xFFFF23FF
DR7_ENABLES = 0xFF  # L0-L3, G0-G3



# A REP instruction may be interrupted between iterations (SDM Vol. 1 7.3.9.3): vmsim
# stops after this many and restarts the instruction, so one with ECX = 2**32 - 1 cannot
# hold the CPU (or a single step) for hours. Each restart counts as an instruction.
REP_CHUNK = 4096


class StopReason(enum.Enum):
    LIMIT = "instruction budget used"
    HLT = "halted"
    SHUTDOWN = "shutdown (triple fault)"
    INTERCEPT = "intercepted"
    UNSUPPORTED = "unsupported"
    REQUESTED = "stop requested"  # by a device (e.g. isa-debug-exit) or a front end


class IoBus(Protocol):
    def read(self, port: int, size: int) -> int: ...

    def write(self, port: int, size: int, value: int) -> None: ...


class UnclaimedIo:
    """A port bus with nothing on it: reads give all ones, writes are dropped."""

    def read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, port: int, size: int, value: int) -> None:
        pass


@register
@dataclass(frozen=True)
class Segment:
    """A segment register: the visible selector and its descriptor cache."""

    selector: int
    base: int = 0
    limit: int = 0xFFFFFFFF
    access: int = 0  # descriptor bits 15:8 of the high dword (P DPL S type)
    flags: int = 0xC  # descriptor bits 23:20 of the high dword (G D/B L AVL)

    @classmethod
    def flat_code(cls, selector: int = 0x08) -> Segment:
        return cls(selector, 0, 0xFFFFFFFF, 0x9B, 0xC)

    @classmethod
    def flat_data(cls, selector: int = 0x10) -> Segment:
        return cls(selector, 0, 0xFFFFFFFF, 0x93, 0xC)


class SlowPath(Exception):
    """Raised by a handler that must run with the loop's state made exact."""

    def __init__(self, run: Callable[[], StopReason | None]):
        self.run = run


class MemFns:
    """Linear-address memory accessors for the current paging mode. The 64-bit pair is
    CMPXCHG8B's one access of its m64; `wprobe(la, size)` makes the checks of a write
    (translation for writing, with its accessed and dirty bits and #PF) and stores nothing
    (ENTER's check of its final stack pointer). `fill` and `copy` do a run of REP STOS /
    MOVS elements within one page at once, where that is exactly what they would do, `loads`
    a run of loads nobody sees (REP OUTS to a port nobody claims) and `peek` the bytes a run
    of loads would give (REP CMPS / SCAS); None where every access must be seen: tlb_hit
    events, or BULK_REP off."""

    __slots__ = ("copy", "fill", "loads", "peek", "rd8", "rd16", "rd32", "rd64", "wprobe", "wr8",
                 "wr16", "wr32", "wr64")


# REP STOS / MOVS a page at a time where that is exact (MemFns.fill, copy); tests turn it
# off to compare with the element-by-element path.
BULK_REP = True


def _page_run(off: int, size: int, count: int, down: int) -> int:
    """Elements of `size` from page offset `off` (downwards if `down`) that lie wholly in
    that page, at most `count`."""
    if off + size > 0x1000:
        return 0
    return min(count, off // size + 1 if down else (0x1000 - off) // size)


def _build_memfns(cpu: Cpu) -> MemFns:
    mem = cpu.mem
    ram, u16, u32, kind = mem.ram, mem.u16, mem.u32, mem.kind
    slow_read, slow_write = mem.read, mem.write
    frm = int.from_bytes
    fns = MemFns()

    if not cpu.mmu.translating:
        def rd8(a: int) -> int:
            if kind[a >> 12] != OTHER:
                return ram[a]
            return slow_read(a, 1)

        def rd16(a: int) -> int:
            if kind[a >> 12] != OTHER and a & 0xFFF != 0xFFF:
                if not a & 1:
                    return u16[a >> 1]
                return ram[a] | ram[a + 1] << 8
            return slow_read(a, 2)

        def rd32(a: int) -> int:
            if kind[a >> 12] != OTHER and a & 0xFFF <= 0xFFC:
                if not a & 3:
                    return u32[a >> 2]
                return frm(ram[a:a + 4], "little")
            return slow_read(a, 4)

        def rd64(a: int) -> int:
            if kind[a >> 12] != OTHER and a & 0xFFF <= 0xFF8:
                return frm(ram[a:a + 8], "little")
            return slow_read(a, 8)

        def wr8(a: int, v: int) -> None:
            if kind[a >> 12] == RAM:
                ram[a] = v
            else:
                slow_write(a, 1, v)

        def wr16(a: int, v: int) -> None:
            if kind[a >> 12] == RAM and a & 0xFFF != 0xFFF:
                if not a & 1:
                    u16[a >> 1] = v
                else:
                    ram[a] = v & 0xFF
                    ram[a + 1] = v >> 8
            else:
                slow_write(a, 2, v)

        def wr32(a: int, v: int) -> None:
            if kind[a >> 12] == RAM and a & 0xFFF <= 0xFFC:
                if not a & 3:
                    u32[a >> 2] = v
                else:
                    ram[a:a + 4] = v.to_bytes(4, "little")
            else:
                slow_write(a, 4, v)

        def wr64(a: int, v: int) -> None:
            if kind[a >> 12] == RAM and a & 0xFFF <= 0xFF8:
                ram[a:a + 8] = v.to_bytes(8, "little")
            else:
                slow_write(a, 8, v)

        def wprobe(a: int, size: int) -> None:
            pass  # physical addresses: a write cannot fault
    else:
        tlb_get, tlbw_get = cpu.mmu.tlb.get, cpu.mmu.tlb_w.get
        translate = cpu.mmu.translate

        def cross_read(la: int, size: int) -> int:
            pb0 = tlb_get(la >> 12)
            if pb0 is None:
                pb0 = translate(la, READ)
            pa0 = pb0 | (la & 0xFFF)
            # The second part starts at its page's first byte: that is the address a
            # #PF on it reports in CR2 (as Bochs and QEMU do), not the access's last byte.
            n0 = 0x1000 - (la & 0xFFF)
            la1 = (la + n0) & 0xFFFFFFFF
            pa1 = tlb_get(la1 >> 12)
            if pa1 is None:
                pa1 = translate(la1, READ)
            lo = slow_read(pa0, n0)
            return lo | slow_read(pa1, size - n0) << (8 * n0)

        def cross_write(la: int, size: int, v: int) -> None:
            # Both pages are checked before anything is written (no partial stores).
            pb0 = tlbw_get(la >> 12)
            if pb0 is None:
                pb0 = translate(la, WRITE)
            n0 = 0x1000 - (la & 0xFFF)
            la1 = (la + n0) & 0xFFFFFFFF  # CR2 of a #PF on the second page: its first byte
            pa1 = tlbw_get(la1 >> 12)
            if pa1 is None:
                pa1 = translate(la1, WRITE)
            slow_write(pb0 | (la & 0xFFF), n0, v & ((1 << (8 * n0)) - 1))
            slow_write(pa1, size - n0, v >> (8 * n0))

        def rd8(la: int) -> int:
            pb = tlb_get(la >> 12)
            if pb is None:
                pb = translate(la, READ)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] != OTHER:
                return ram[a]
            return slow_read(a, 1)

        def rd16(la: int) -> int:
            if la & 0xFFF == 0xFFF:
                return cross_read(la, 2)
            pb = tlb_get(la >> 12)
            if pb is None:
                pb = translate(la, READ)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] != OTHER:
                if not a & 1:
                    return u16[a >> 1]
                return ram[a] | ram[a + 1] << 8
            return slow_read(a, 2)

        def rd32(la: int) -> int:
            if la & 0xFFF > 0xFFC:
                return cross_read(la, 4)
            pb = tlb_get(la >> 12)
            if pb is None:
                pb = translate(la, READ)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] != OTHER:
                if not a & 3:
                    return u32[a >> 2]
                return frm(ram[a:a + 4], "little")
            return slow_read(a, 4)

        def rd64(la: int) -> int:
            if la & 0xFFF > 0xFF8:
                return cross_read(la, 8)
            pb = tlb_get(la >> 12)
            if pb is None:
                pb = translate(la, READ)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] != OTHER:
                return frm(ram[a:a + 8], "little")
            return slow_read(a, 8)

        def wr8(la: int, v: int) -> None:
            pb = tlbw_get(la >> 12)
            if pb is None:
                pb = translate(la, WRITE)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] == RAM:
                ram[a] = v
            else:
                slow_write(a, 1, v)

        def wr16(la: int, v: int) -> None:
            if la & 0xFFF == 0xFFF:
                return cross_write(la, 2, v)
            pb = tlbw_get(la >> 12)
            if pb is None:
                pb = translate(la, WRITE)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] == RAM:
                if not a & 1:
                    u16[a >> 1] = v
                else:
                    ram[a] = v & 0xFF
                    ram[a + 1] = v >> 8
            else:
                slow_write(a, 2, v)

        def wr32(la: int, v: int) -> None:
            if la & 0xFFF > 0xFFC:
                return cross_write(la, 4, v)
            pb = tlbw_get(la >> 12)
            if pb is None:
                pb = translate(la, WRITE)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] == RAM:
                if not a & 3:
                    u32[a >> 2] = v
                else:
                    ram[a:a + 4] = v.to_bytes(4, "little")
            else:
                slow_write(a, 4, v)

        def wr64(la: int, v: int) -> None:
            if la & 0xFFF > 0xFF8:
                return cross_write(la, 8, v)
            pb = tlbw_get(la >> 12)
            if pb is None:
                pb = translate(la, WRITE)
            a = pb | (la & 0xFFF)
            if kind[pb >> 12] == RAM:
                ram[a:a + 8] = v.to_bytes(8, "little")
            else:
                slow_write(a, 8, v)

        def wprobe(la: int, size: int) -> None:
            # As cross_write checks: the first page, then the second from its first byte.
            if tlbw_get(la >> 12) is None:
                translate(la, WRITE)
            end = (la + size - 1) & 0xFFFFFFFF
            if (end ^ la) >> 12 and tlbw_get(end >> 12) is None:
                translate(end & 0xFFFFF000, WRITE)

    if cpu.mmu.translating:
        tlb_r, tlb_w = cpu.mmu.tlb.get, cpu.mmu.tlb_w.get
    else:
        def tlb_r(page: int) -> int:
            return page << 12
        tlb_w = tlb_r
    def nothing_at(pa: int) -> bool:
        """No device at `pa` (a frame of kind OTHER) and nobody told of accesses there:
        stores are dropped, loads give 0 (PhysicalMemory.read / write)."""
        return mem._region(pa) is None and mem.unclaimed_hook is None

    def fill(la: int, size: int, value: int, count: int, down: int) -> int:
        """What `count` stores of `value` from `la` on (downwards if `down`) do, as far as
        they stay in la's page and that page's translation for writing is in the TLB (so
        no store would walk, set a bit or fault): the number of stores made. Only where
        each store would go to plain RAM (the fast path's kind) or to nothing at all
        (dropped). 0: none now (the next store walks, or is the first to a frame of code
        or one the write log watches: ask after it); -1: none in this page (MMIO)."""
        k = _page_run(la & 0xFFF, size, count, down)
        if k < 2:
            return 0
        pb = tlb_w(la >> 12)
        if pb is None:
            return 0
        k_ = kind[pb >> 12]
        a = pb | (la & 0xFFF)
        start = a - (k - 1) * size if down else a
        if k_ == RAM:
            ram[start:start + k * size] = value.to_bytes(size, "little") * k
        elif k_ != OTHER:
            return 0  # code, or unwritten since the log began: plain RAM after a store
        elif not nothing_at(a):
            return -1
        return k

    def loads(la: int, size: int, count: int, down: int) -> int:
        """What `count` loads of `size` from `la` on (downwards if `down`) do where their
        values go nowhere, under copy's terms for its loads (in la's page, its translation
        for reading in the TLB, no device there): nothing but their number. 0: none now
        (the next load walks); -1: none in this page (MMIO: each load is a device read)."""
        k = _page_run(la & 0xFFF, size, count, down)
        if k < 2:
            return 0
        pb = tlb_r(la >> 12)
        if pb is None:
            return 0
        if kind[pb >> 12] == OTHER and not nothing_at(pb | (la & 0xFFF)):
            return -1
        return k

    def peek(la: int, size: int, count: int, down: int) -> tuple[int, bytes]:
        """What `count` loads of `size` from `la` on (downwards if `down`) would give, under
        loads' terms: (k, the bytes of the k elements from the lowest address up); RAM's
        bytes, or zeros where nothing is. (0, b""): none now (the next load walks);
        (-1, b""): none in this page (MMIO)."""
        k = _page_run(la & 0xFFF, size, count, down)
        if k < 2:
            return 0, b""
        pb = tlb_r(la >> 12)
        if pb is None:
            return 0, b""
        a = pb | (la & 0xFFF)
        if kind[pb >> 12] == OTHER:
            return (k, bytes(k * size)) if nothing_at(a) else (-1, b"")
        start = a - (k - 1) * size if down else a
        return k, bytes(ram[start:start + k * size])

    def copy(src: int, dst: int, size: int, count: int, down: int) -> int:
        """What `count` element moves from `src` to `dst` do (MOVS), under fill's terms for
        the stores and, for the loads, a translation for reading in the TLB and a frame
        that is not MMIO (nothing there reads as 0); and only where the two runs of
        RAM bytes do not overlap (an element by element copy of overlapping bytes is not a
        block copy)."""
        k = min(_page_run(src & 0xFFF, size, count, down), _page_run(dst & 0xFFF, size, count, down))
        if k < 2:
            return 0
        ps, pd = tlb_r(src >> 12), tlb_w(dst >> 12)
        if ps is None or pd is None:
            return 0
        n = k * size
        s_ = (ps | (src & 0xFFF)) - ((k - 1) * size if down else 0)
        d_ = (pd | (dst & 0xFFF)) - ((k - 1) * size if down else 0)
        ks, kd = kind[ps >> 12], kind[pd >> 12]
        if (ks == OTHER and not nothing_at(s_)) or (kd == OTHER and not nothing_at(d_)):
            return -1  # a device on either side: its accesses one by one
        if kd == OTHER:
            return k  # stores to nothing are dropped; the loads had no effect
        if kd != RAM:
            return 0
        if ks == OTHER:
            ram[d_:d_ + n] = bytes(n)  # loads from nothing give 0
        elif s_ < d_ + n and d_ < s_ + n:
            return -1
        else:
            ram[d_:d_ + n] = ram[s_:s_ + n]
        return k

    fns.rd8, fns.rd16, fns.rd32, fns.rd64 = rd8, rd16, rd32, rd64
    fns.wr8, fns.wr16, fns.wr32, fns.wr64, fns.wprobe = wr8, wr16, wr32, wr64, wprobe
    fns.fill, fns.copy, fns.loads, fns.peek = (fill, copy, loads, peek) if BULK_REP \
        else (None, None, None, None)
    if cpu.mmu.translating and cpu.events is not None and cpu.events.wants("tlb_hit"):
        _trace_tlb_hits(cpu, fns)
    return fns


def _trace_tlb_hits(cpu: Cpu, fns: MemFns) -> None:
    """Wrap the accessors to report TLB hits: only built when someone listens."""
    tlb, tlb_w, emit, src = cpu.mmu.tlb, cpu.mmu.tlb_w, cpu.events.emit, cpu.name

    def wrap(fn: Callable, table: dict, access: str, is_write: bool) -> Callable:
        def traced(la: int, *v: int):
            pb = table.get(la >> 12)
            if pb is not None:
                emit("tlb_hit", src, linear=la, physical=pb | (la & 0xFFF), access=access)
            return fn(la, *v)
        return traced

    fns.rd8, fns.rd16, fns.rd32, fns.rd64 = (
        wrap(f, tlb, "read", False) for f in (fns.rd8, fns.rd16, fns.rd32, fns.rd64))
    fns.wr8, fns.wr16, fns.wr32, fns.wr64, fns.wprobe = (
        wrap(f, tlb_w, "write", True)
        for f in (fns.wr8, fns.wr16, fns.wr32, fns.wr64, fns.wprobe))
    fns.fill = fns.copy = fns.loads = fns.peek = None  # every access is an event: one at a time


# The modules Cpu.run needs that import this one, bound on first use: an import
# statement in the function costs about a microsecond per call, and an exit to userspace
# makes one call. (Their functions are looked up at each call: tests replace them.)
_RUN_DEPS: tuple | None = None


def _run_deps() -> tuple:
    global _RUN_DEPS
    import vmsim.hw.blocks as blocks
    import vmsim.hw.decode as decode

    _RUN_DEPS = (decode, blocks)
    return _RUN_DEPS


class Cpu:
    """One logical processor with its MMU, attached to guest-physical memory and a port bus."""

    # Decoded instructions kept at most (about 1.3 KB each: some 43 MB). Past it the
    # frames decoded least recently are dropped whole (`_evict_cold_frames`).
    ICACHE_LIMIT = 1 << 15
    # Basic-block translation (vmsim.hw.blocks); VMSIM_BLOCKS=0 keeps the one-instruction
    # path only (differential tests run both).
    USE_BLOCKS = os.environ.get("VMSIM_BLOCKS", "1") != "0"
    # A block is translated only when this many instructions of budget are left: a run of
    # single steps (a breakpoint armed) never pays for compiling blocks it cannot use.
    TRANSLATE_MIN_BUDGET = 64

    def __init__(self, mem: PhysicalMemory, io: IoBus | None = None,
                 events: EventStream | None = None, name: str = "cpu0"):
        self.mem = mem
        self.io: IoBus = io or UnclaimedIo()
        self.events = events
        self.name = name
        self.r = [0] * 8
        self.eip = 0
        self.lf = [EXPLICIT, 0, 0, 0]  # lazy arithmetic flags, see vmsim.hw.flags
        self.sysflags = EFLAGS_FIXED  # EFLAGS without CF PF AF ZF SF OF
        self.mmu = Mmu(mem, events, name)
        self.cr2 = 0
        self._seg = [Segment.flat_data(0)] * 6
        # Per segment register, SEG_* (below); None while CS is readable and every data
        # segment usable and writable, when decoded instructions carry no segment check.
        self.seg_classes: tuple[int, ...] | None = None
        self.gdtr = (0, 0xFFFF)  # (base, limit)
        self.idtr = (0, 0x3FF)
        # LDTR and TR (RESET_LDTR): what reset, a VM entry, LLDT or LTR loaded.
        self.ldtr: tuple[int, int, int, int] = RESET_LDTR
        self.tr: tuple[int, int, int, int] = RESET_TR
        # Set where they change otherwise than by a VM entry, so that the next VM exit
        # stores them into the VMCS (as a processor stores them at every exit).
        self.ldt_tr_changed = True
        # True while a descriptor table is read: kvm.ko's emulator reads tables as ordinary
        # memory (read_std), and a table outside the memory slots is no MMIO access for it.
        self.table_read = False
        self.msr: dict[int, int] = {MSR_IA32_APICBASE: 0xFEE00900, MSR_IA32_CR_PAT: 0x0007040600070406}
        self.icount = 0  # instructions retired
        self.dr = [0, 0, 0, 0]  # DR0-DR3: kept, but breakpoints are not modelled
        self.dr6 = DR6_FIXED_1
        self.dr7 = DR7_FIXED_1
        # Events delivered through the IDT: an instruction during which this changed was
        # interrupted (a fault, INT n), and its single-step trap is dropped.
        self.deliveries = 0
        # Iterations a REP string instruction runs per execution: 1 while single-stepping,
        # when the instruction says whether iterations remain in rep_unfinished.
        self.rep_chunk = REP_CHUNK
        self.rep_unfinished = False
        self.tsc_offset = 0
        # The interrupt shadow (SDM Vol. 3A 6.8.3): after an STI that sets IF, or a MOV SS /
        # POP SS, maskable interrupts wait until the next instruction has run. Plain data:
        # its kind (SHADOW_*) and the icount of the one instruction boundary it covers.
        self.shadow_bits = 0
        self.shadow_icount = -1
        self.halted = False
        self.shut_down = False
        self.stop_message = ""
        self.stop_requested = False  # set by a device during an I/O access; checked after it
        # Interrupt-window exiting with IF=0: an instruction that sets IF (STI, POPF, IRET)
        # stops the run after it, so the window is looked at only then (not per instruction).
        self.window_watch = False
        self.intercept: Callable[[Intercept], bool] | None = None
        # VMX non-root operation: CR0/CR4 guest/host mask and read shadow, {n: (mask, shadow)}.
        self.cr_shadow: dict[int, tuple[int, int]] = {}
        self.last_intercept: Intercept | None = None
        self.cpuid_table: dict[tuple[int, int], tuple[int, int, int, int]] = default_cpuid()
        self.icache: dict[int, Callable[[], int]] = {}
        # The decoded instruction and its frames behind each icache entry (blocks are
        # translated from these, never from memory: see vmsim.hw.blocks).
        # Kept across CR3 loads, which only empty `icache` (see _new_address_space).
        self.decoded: dict[int, tuple[iced_x86.Instruction, list[int], Callable[[], int]]] = {}
        # Decoding remembered by content: (EIP, the bytes a fetch gave) -> (instruction,
        # handler). A store into decoded code drops the instructions of its frame, and
        # they are fetched and noted again as before; only the decoding and the handler's
        # making are skipped where the bytes are the same (decode_at). Emptied with
        # everything decoded (what handlers are made from changed).
        self.decode_memo: dict[tuple[int, bytes], tuple[iced_x86.Instruction,
                                                       Callable[[], int]]] = {}
        # Blocks' generated source -> its compiled code (vmsim.hw.blocks._compile).
        self.code_memo: dict[tuple[str, str], CodeType] = {}
        # Translated basic blocks by first EIP: (function, instructions, their EIPs).
        self.use_blocks = self.USE_BLOCKS
        self.blocks: dict[int, tuple] = {}
        # Every translated block still valid in some address space: head -> (entry,
        # whether it lies in one page and frame), reactivated after a CR3 load.
        self._block_store: dict[int, tuple[tuple, bool]] = {}
        self._frame_blocks: dict[int, set[int]] = {}
        self._insn_blocks: dict[int, set[int]] = {}  # an instruction's EIP -> block heads
        self._page_blocks: dict[int, set[int]] = {}
        self.block_pos = [0, 0]  # where a block stopped on an exception: index, region block
        self.block_count = [0]  # instructions a region ran
        self.smc_flag = [0]  # set when a store hits decoded code
        # Instruction-level recording: an array('I') the loop appends each EIP to, or None.
        self.recorder = None
        self._code_frames: dict[int, set[int]] = {}
        # Which bytes of each frame in _code_frames hold decoded instructions (1 each):
        # a store beside them (data in a code page: a counter, a lock) drops nothing, as
        # QEMU's code bitmaps let such writes through (tb_invalidate_phys_page_fast).
        self._code_bytes: dict[int, bytearray] = {}
        # Every CPU on this memory must hear of a write to decoded code (another vCPU's
        # store is cross-modifying code): memory calls one hook, which calls each CPU's.
        # (Shared through attributes of the memory, not its __dict__: reading that makes
        # CPython 3.11 give the instance a real dict, and every access to it slower.)
        if not hasattr(mem, "code_cpus"):
            mem.code_cpus = []
            mem.code_union = {}
        self._code_peers: list[Cpu] = mem.code_cpus
        self._code_peers.append(self)
        # The CPUs' _code_bytes in one map, a bit per CPU: a store beside everyone's code
        # is let through at once, and one into code calls only the CPUs that decoded it.
        self._code_union: dict[int, bytearray] = mem.code_union
        self._code_bit = len(self._code_peers) - 1
        if self._code_bit >= 8:
            raise ValueError("at most 8 CPUs share one memory")
        mem.code_write_hook = self._code_written if self._code_bit == 0 else \
            _all_hooks(self._code_peers, self._code_union)
        self._trace_state = (False, False)
        if events is not None:
            events.on_change.append(self._events_changed)
            self._trace_state = (events.wants("walk_step") or events.wants("tlb_miss"),
                                 events.wants("tlb_hit"))
            self.mmu.trace = self._trace_state[0]
        self.memfns = _build_memfns(self)
        self._ctx = None

    # -- architectural state -------------------------------------------------------------
    @property
    def eflags(self) -> int:
        return self.sysflags | materialize(self.lf)

    @eflags.setter
    def eflags(self, value: int) -> None:
        self.sysflags = (value & ~ARITH_MASK) | EFLAGS_FIXED
        set_explicit(self.lf, value)

    @property
    def cr0(self) -> int:
        return self.mmu.cr0

    @property
    def cr3(self) -> int:
        return self.mmu.cr3

    @property
    def cr4(self) -> int:
        return self.mmu.cr4

    def reg(self, name: str) -> int:
        return self.r[GPR_NAMES.index(name)]

    def set_reg(self, name: str, value: int) -> None:
        self.r[GPR_NAMES.index(name)] = value & 0xFFFFFFFF

    def reset_flat(self, entry: int, esp: int) -> None:
        """vmsim's machine entry state: protected mode, paging off, flat CS=0x08 DS..SS=0x10."""
        self.r[:] = [0] * 8
        self.r[4] = esp
        self.eip = entry
        self.eflags = EFLAGS_FIXED
        self.set_control(0, 0x11, check=False)
        self.set_control(3, 0, check=False)
        self.set_control(4, 0, check=False)
        seg = [Segment.flat_data(0x10)] * 6
        seg[CS] = Segment.flat_code(0x08)
        self.seg = seg
        self.gdtr = (0, 0)
        self.idtr = (0, 0)
        self.ldtr, self.tr = RESET_LDTR, RESET_TR
        self.ldt_tr_changed = True
        self.halted = self.shut_down = False
        self.shadow_bits = 0

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The architectural state and the bookkeeping a resumed run needs, as plain data
        (ints, strings, lists, dicts). The lazy flags are materialized. The decoded
        instructions are a cache and not saved: load_state drops them and the guest's
        next fetches decode again (which costs no virtual time). Kept: which frames held
        decoded code (a write to one is an `smc` event) and the TLB (see Mmu.state).
        RAM belongs to the machine; the EPT and shadow-table pointers to the hypervisor."""
        li = self.last_intercept
        return {
            "r": list(self.r), "eip": self.eip, "eflags": self.eflags,
            "seg": [[s.selector, s.base, s.limit, s.access, s.flags] for s in self._seg],
            "gdtr": list(self.gdtr), "idtr": list(self.idtr),
            "ldtr": list(self.ldtr), "tr": list(self.tr),
            "mmu": self.mmu.state(), "cr2": self.cr2,
            "cr_shadow": {str(n): list(v) for n, v in self.cr_shadow.items()},
            "msr": {str(k): v for k, v in self.msr.items()},
            "dr": list(self.dr), "dr6": self.dr6, "dr7": self.dr7,
            "icount": self.icount, "deliveries": self.deliveries, "tsc_offset": self.tsc_offset,
            "rep_chunk": self.rep_chunk, "rep_unfinished": self.rep_unfinished,
            "shadow_bits": self.shadow_bits, "shadow_icount": self.shadow_icount,
            "halted": self.halted, "shut_down": self.shut_down,
            "stop_message": self.stop_message, "stop_requested": self.stop_requested,
            "window_watch": self.window_watch,
            "last_intercept": None if li is None else dataclasses.asdict(li),
            "cpuid": [[k[0], k[1], *v] for k, v in sorted(self.cpuid_table.items())],
            # Frames this CPU decoded from, and whether RAM still marks them CODE (another
            # CPU's write hook may have turned one back to RAM: memory is shared).
            "code_frames": [[f, bool(self.mem.kind[f] & CODE)] for f in self._code_frames],
            # The bytes a store must miss to drop nothing (which a rerun must agree on:
            # they include instructions decoded in other address spaces, not kept here).
            "code_bytes": [[f, [x for m in _ONES.finditer(b) for x in m.span()]]
                           for f, b in self._code_bytes.items()],
            "decoded": self._decoded_state(),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Put back what state() returned; the caches start empty."""
        self.r[:] = [int(x) & 0xFFFFFFFF for x in d["r"]]
        self.eip = d["eip"]
        self.eflags = d["eflags"]
        self.gdtr, self.idtr = tuple(d["gdtr"]), tuple(d["idtr"])
        # (A state saved before they were kept has the reset values; one saved before LLDT
        # and LTR kept LDTR's usability for its rights, and TR's selector alone.)
        sel, base, limit, ar = d.get("ldtr", RESET_LDTR)
        if isinstance(ar, bool):
            ar = RESET_LDTR[3] if ar else AR_UNUSABLE
        self.ldtr = (sel, base, limit, ar)
        tr = d.get("tr", 0)
        self.tr = (tr, *RESET_TR[1:]) if isinstance(tr, int) else tuple(tr)
        self.ldt_tr_changed = True
        mmu = self.mmu
        mmu.cr0, mmu.cr3, mmu.cr4 = d["mmu"]["cr0"], d["mmu"]["cr3"], d["mmu"]["cr4"]
        self.cr2 = d["cr2"]
        self.cr_shadow = {int(n): (v[0], v[1]) for n, v in d["cr_shadow"].items()}
        self.msr = {int(k): v for k, v in d["msr"].items()}
        self.dr, self.dr6, self.dr7 = list(d["dr"]), d["dr6"], d["dr7"]
        self.icount, self.deliveries = d["icount"], d["deliveries"]
        self.tsc_offset = d["tsc_offset"]
        self.rep_chunk, self.rep_unfinished = d["rep_chunk"], d["rep_unfinished"]
        self.shadow_bits, self.shadow_icount = d["shadow_bits"], d["shadow_icount"]
        self.halted, self.shut_down = d["halted"], d["shut_down"]
        self.stop_message, self.stop_requested = d["stop_message"], d["stop_requested"]
        self.window_watch = d["window_watch"]
        li = d["last_intercept"]
        self.last_intercept = None if li is None else Intercept(**li)
        self.cpuid_table = {(c[0], c[1]): tuple(c[2:6]) for c in d["cpuid"]}
        self._drop_decoded()
        self.seg = [Segment(*s) for s in d["seg"]]  # rechecks the segment classes
        self.memfns = _build_memfns(self)
        self._ctx = None
        self.mmu.load_state(d["mmu"])  # last: a change of paging mode above flushed it
        kind = self.mem.kind
        self._load_decoded(d["decoded"])
        for f, is_code in d["code_frames"]:
            self._code_frames.setdefault(f, set())
            k = kind[f]
            if k != OTHER:  # (a CLEAN frame stays clean: only the CODE bit is set)
                kind[f] = k | CODE if is_code else k & ~CODE
        saved = d.get("code_bytes")
        for f, spans in saved or ():
            b = bytearray(PAGE_SIZE)
            for i in range(0, len(spans), 2):
                b[spans[i]:spans[i + 1]] = _FULL[:spans[i + 1] - spans[i]]
            self._set_code_bytes(f, b)
        for f in self._code_frames:
            if f not in self._code_bytes:  # (a state from before code_bytes: as then,
                self._set_code_bytes(f, bytearray(_FULL))  # any write to it drops its code)

    def _decoded_state(self) -> list[list[Any]]:
        """The decoded instructions as [eip, frames, bytes]: the cache itself holds
        closures, but what it holds shows (an instruction found decoded needs no fetch,
        so no page walk and its cost; a write to a frame with decoded code is an `smc`
        event), so a resumed run decodes the same instructions again, from these bytes,
        without fetching. (A cached instruction whose bytes another vCPU has rewritten
        since is decoded anew from the new bytes: cross-modified code is not kept.)"""
        frames_of: dict[int, list[int]] = {}
        for f, eips in self._code_frames.items():
            for e in eips:
                frames_of.setdefault(e, []).append(f)
        ram, size = self.mem.ram, self.mem.size
        out = []
        for eip in self.icache:
            frames = frames_of.get(eip)
            pa = self.mmu.probe(eip) if frames else None
            if pa is None or pa >> PAGE_SHIFT not in frames or pa >= size:
                continue
            first = pa >> PAGE_SHIFT
            rest = [f for f in frames if f != first]
            n = min(15, (1 << PAGE_SHIFT) - (pa & 0xFFF))
            data = bytes(ram[pa:pa + n])
            if rest:
                base = rest[0] << PAGE_SHIFT
                data += bytes(ram[base:base + 15 - n])
            out.append([eip, [first, *rest], data])
        return out

    def _load_decoded(self, decoded: list[list[Any]]) -> None:
        from vmsim.hw.decode import compile_instruction

        for eip, frames, data in decoded:
            ins = iced_x86.Decoder(32, bytes(data), ip=eip).decode()
            handler = compile_instruction(self, ins)
            self.note_code(eip, list(frames), handler, ins.len)
            self.note_decoded(eip, ins, list(frames), handler)

    # -- control registers ------------------------------------------------------------------
    def set_control(self, n: int, value: int, check: bool = True) -> None:
        """MOV to CRn (SDM Vol. 3A 2.5): reserved bits #GP(0), TLB and decode-cache effects."""
        value &= 0xFFFFFFFF
        mmu = self.mmu
        if check and n in self.cr_shadow:
            # VMX non-root: bits the hypervisor owns (guest/host mask) keep their value
            # (SDM "Changes to Instruction Behavior in VMX Non-Root Operation", MOV to CR0/4).
            mask = self.cr_shadow[n][0]
            value = (value & ~mask) | (self.get_raw_control(n) & mask)
        if n == 0:
            if check and ((value & CR0_PG and not value & CR0_PE)
                          or (value & CR0_NW and not value & CR0_CD)):
                raise X.gp(0)
            if check and not value & CR0_PE:  # stop before the switch, as every backend does
                raise Unsupported(REAL_MODE_UNSUPPORTED)
            # Writes to the reserved bits 31:0 are ignored, not #GP (only 63:32 fault, in
            # 64-bit mode); ET is hardwired to 1 since the P6 (Bochs, KVM's kvm_set_cr0).
            value = (value | CR0_ET) & CR0_VALID
            old = mmu.cr0
            mmu.cr0 = value
            if (old ^ value) & (CR0_PG | CR0_WP | CR0_PE):
                self._paging_changed()
        elif n == 2:
            self.cr2 = value
        elif n == 3:
            mmu.cr3 = value
            mmu.flush(keep_global=True, scope="cr3 load")
            if mmu.paging:
                self._new_address_space()
        elif n == 4:
            # CR4.VMXE is set only in VMX operation, where it must stay set.
            valid = CR4_VALID | (CR4_VMXE if self.cr_shadow else 0)
            if check and value & ~valid:
                raise X.gp(0)
            old = mmu.cr4
            mmu.cr4 = value
            if (old ^ value) & (CR4_PSE | CR4_PAE | CR4_PGE):
                self._paging_changed()
        else:
            raise X.ud()
        if mmu.paging and mmu.cr4 & CR4_PAE:
            raise Unsupported(PAE_UNSUPPORTED)

    def get_raw_control(self, n: int) -> int:
        """CRn as the hardware holds it (no read shadow)."""
        return {0: self.mmu.cr0, 2: self.cr2, 3: self.mmu.cr3, 4: self.mmu.cr4}[n]

    def get_control(self, n: int) -> int:
        """MOV from CRn: bits a hypervisor owns (guest/host mask) read from its shadow."""
        value = {0: self.mmu.cr0, 2: self.cr2, 3: self.mmu.cr3, 4: self.mmu.cr4}[n]
        if n in self.cr_shadow:
            mask, shadow = self.cr_shadow[n]
            value = (value & ~mask) | (shadow & mask)
        return value

    def invlpg(self, la: int) -> None:
        lpns = self.mmu.invlpg(la)  # one 4-KiB page, or all of a 4-MiB one
        if self.mmu.paging:
            # The instructions there are fetched again before they next run (refetch):
            # they stay decoded, reused if the page still maps the same frame.
            for eip in [e for e in self.icache if e >> 12 in lpns or (e + 15) >> 12 in lpns]:
                del self.icache[eip]
            blocks, page_blocks = self.blocks, self._page_blocks
            for lpn in lpns:
                for head in page_blocks.get(lpn, ()):
                    blocks.pop(head, None)

    def set_second_stage(self, ept) -> None:
        """EPT on (VM entry with EPT enabled) or off. Guest RAM is host RAM 1:1, so the
        decoded instructions stay right; only the accessors may need the TLB now."""
        mmu = self.mmu
        if mmu.ept is ept:
            return
        was = mmu.translating
        mmu.ept = ept
        mmu.flush(scope="ept")
        if mmu.translating != was:
            self._rebuild()

    def _paging_changed(self) -> None:
        self.mmu.flush(scope="paging mode")
        self._rebuild()

    def _rebuild(self) -> None:
        self.memfns = _build_memfns(self)
        self._ctx = None
        self._drop_decoded()

    def _events_changed(self) -> None:
        # Only a change in MMU-level listening changes the accessors (and costs a flush).
        ev = self.events
        state = (ev.wants("walk_step") or ev.wants("tlb_miss"), ev.wants("tlb_hit"))
        if state != self._trace_state:
            self._trace_state = state
            self.mmu.trace = state[0]
            self._rebuild()

    # -- decoded-instruction cache ----------------------------------------------------------
    def _new_address_space(self) -> None:
        """A CR3 load: decoded instructions and blocks stay known, but each must be
        fetched again before it runs (decode_at): the fetch walks and faults as a fresh
        one, and the instruction is reused only where it finds the same frames."""
        self.icache.clear()
        self.blocks.clear()

    def _drop_decoded(self) -> None:
        self.icache.clear()
        self.decoded.clear()
        self.decode_memo.clear()
        self.blocks.clear()
        self._block_store.clear()
        self._frame_blocks.clear()
        self._insn_blocks.clear()
        self._page_blocks.clear()
        frames = list(self._code_frames)
        self._code_frames.clear()
        self._uncode(frames)
        self._code_bytes.clear()

    def _drop_frame_blocks(self, frame: int) -> None:
        blocks, store = self.blocks, self._block_store
        for head in self._frame_blocks.pop(frame, ()):
            blocks.pop(head, None)
            store.pop(head, None)

    def _uncode(self, frames) -> None:
        """These frames hold no decoded code of this CPU any more: writes to them need no
        SMC check, unless another CPU on the memory still has code there."""
        kind, peers = self.mem.kind, self._code_peers
        for f in frames:
            if f in self._code_bytes:
                self._uncode_bytes(f)
            if not any(f in c._code_frames for c in peers if c is not self):
                kind[f] &= ~CODE

    def _set_code_bytes(self, f: int, b: bytearray) -> None:
        """Make `b` the frame's decoded bytes (a state put back), in the union too."""
        if f in self._code_bytes:
            self._uncode_bytes(f)
        self._code_bytes[f] = b
        u = self._code_union.get(f)
        mine = int.from_bytes(b.translate(_TO_BIT[self._code_bit]), "little")
        self._code_union[f] = bytearray(
            (mine | int.from_bytes(u or b"", "little")).to_bytes(PAGE_SIZE, "little"))

    def _uncode_bytes(self, f: int) -> None:
        del self._code_bytes[f]
        u = self._code_union[f].translate(_CLEAR_BIT[self._code_bit])
        if u.count(0) == PAGE_SIZE:
            del self._code_union[f]
        else:
            self._code_union[f] = u

    def _code_written(self, pa: int, size: int) -> None:
        """A store (or a load) of `size` bytes at `pa` hit a frame holding decoded
        instructions. If it hit their bytes, all of the frame's are dropped, with the
        blocks holding them; a store beside them changes nothing decoded."""
        frame = pa >> PAGE_SHIFT
        covered = self._code_bytes.get(frame)
        if covered is not None and covered.find(1, pa & 0xFFF, (pa & 0xFFF) + size) < 0:
            return
        eips = self._code_frames.pop(frame, None)
        shared = len(self._code_peers) > 1
        if eips is None:
            if shared:
                return  # another CPU's code: this one has nothing to drop or report
            eips = set()
        icache, decoded = self.icache, self.decoded
        for eip in eips:
            icache.pop(eip, None)
            decoded.pop(eip, None)
        self._drop_frame_blocks(frame)
        self.smc_flag[0] = 1  # a running block stops after this store
        self._uncode((frame,))
        if self.events is not None and self.events.build("smc"):
            self.events.emit("smc", self.name, frame=frame << PAGE_SHIFT)

    def fetch_bytes(self, eip: int, count: int = 15) -> tuple[bytes, list[int]]:
        """Instruction bytes at `eip` (a fetch: may walk and #PF) and the frames they sit in.

        Bytes past the first page are only fetched if the first page ends within `count`
        and the second page translates; a decoder that runs short raises the #PF then.
        """
        la = eip & 0xFFFFFFFF
        pb = self._fetch_page(la)
        off = la & 0xFFF
        n0 = count if off + count <= 0x1000 else 0x1000 - off
        pa = pb | off
        return self._read_phys_code(pa, n0), [pa >> PAGE_SHIFT]

    def fetch_more(self, eip: int, have: int, count: int = 15) -> tuple[bytes, int]:
        pb = self._fetch_page((eip + have) & 0xFFFFFFFF)
        return self._read_phys_code(pb, count - have), pb >> PAGE_SHIFT

    def refetch(self, eip: int) -> Callable[[], int] | None:
        """The handler of an instruction decoded in an earlier address space, if the fetch
        at `eip` now finds it in the same frames: the same translations a fresh fetch makes
        (decode_instruction: the first page, the next one only for an instruction running
        into it), so the same walks, accessed bits and faults; no decode (the frames'
        bytes are unchanged: a write to them would have dropped it)."""
        d = self.decoded.get(eip)
        if d is None:
            return None
        frames = d[1]
        la = eip & 0xFFFFFFFF
        if self._fetch_page(la) >> PAGE_SHIFT != frames[0]:
            return None
        if len(frames) > 1 and \
                self._fetch_page((la + 0x1000 - (la & 0xFFF)) & 0xFFFFFFFF) >> PAGE_SHIFT != frames[1]:
            return None
        handler = d[2]
        self.icache[eip] = handler
        return handler

    def _fetch_page(self, la: int) -> int:
        """The physical base of the page an instruction fetch at `la` reads (a TLB hit, or a
        walk that may #PF or exit)."""
        mmu = self.mmu
        if not mmu.cr0 & CR0_PG and mmu.ept is None:  # not Mmu.translating (inline: every fetch)
            return la & 0xFFFFF000
        pb = mmu.tlb.get(la >> 12)
        return mmu.translate(la, FETCH) if pb is None else pb

    def _read_phys_code(self, pa: int, n: int) -> bytes:
        mem = self.mem
        if mem.kind[pa >> PAGE_SHIFT] != OTHER and pa + n <= mem.size:
            data = mem.ram[pa:pa + n]  # bytes already when RAM is an mmap
            return data if type(data) is bytes else bytes(data)
        if mem.unclaimed_hook is None and not any(
                r.base < pa + n and pa < r.base + r.length for r in mem.mmio):
            return bytes(n)  # nothing is there: it reads 0 (a wild jump runs through it)
        return bytes(mem.read(pa + i, 1) for i in range(n))

    def note_code(self, eip: int, frames: list[int], handler: Callable[[], int],
                  length: int = 15) -> None:
        """Cache `handler` for the instruction of `length` bytes at `eip`, decoded from
        `frames` (the second only for one that runs into the next page)."""
        kind = self.mem.kind
        for f in frames:
            if kind[f] == OTHER:
                return  # executing from MMIO: never cached
        if len(self.decoded) >= self.ICACHE_LIMIT:
            self._evict_cold_frames()
        self.icache[eip] = handler
        code_frames, code_bytes, union = self._code_frames, self._code_bytes, self._code_union
        off = eip & 0xFFF
        set_bit = _SET_BIT[self._code_bit]
        for f in frames:
            b = code_bytes.get(f)
            if b is None:
                b = code_bytes[f] = bytearray(PAGE_SIZE)
            u = union.get(f)
            if u is None:
                u = union[f] = bytearray(PAGE_SIZE)
            end = min(off + length, PAGE_SIZE)
            b[off:end] = _FULL[:end - off]
            u[off:end] = u[off:end].translate(set_bit)
            length -= end - off
            off = 0
            kind[f] |= CODE
            # A frame that gets a new decoded instruction moves to the young end.
            eips = code_frames.pop(f, None)
            if eips is None:
                eips = set()
            eips.add(eip)
            code_frames[f] = eips

    def note_decoded(self, eip: int, ins: iced_x86.Instruction, frames: list[int],
                     handler: Callable[[], int]) -> None:
        """Keep what `handler` was decoded from (blocks are translated from it, and it
        outlives a CR3 load: refetch); called after note_code cached it."""
        if self.icache.get(eip) is not handler:
            return  # not cached (executing from MMIO)
        if eip in self.decoded:
            # Decoded anew (another address space maps other code here): blocks
            # translated from the old instruction must not come back.
            blocks, store = self.blocks, self._block_store
            for head in self._insn_blocks.pop(eip, ()):
                blocks.pop(head, None)
                store.pop(head, None)
        self.decoded[eip] = (ins, frames, handler)

    def _refetched_run(self, eips: list[int], m: int) -> None:
        """The first `m` instructions of a kept block ran (Cpu.run): each is back in the
        icache, as fetching it again would have put it, unless a store dropped it."""
        icache, decoded = self.icache, self.decoded
        for e in eips[:m]:
            d = decoded.get(e)
            if d is not None:
                icache[e] = d[2]

    def _evict_cold_frames(self) -> None:
        """Drop whole frames' decoded instructions, the least recently decoded first, until
        a quarter of the cache is free (a guest running through fresh memory, a `db 0`
        sled, must not grow it without bound). Runs on the decode path only."""
        target = self.ICACHE_LIMIT * 3 // 4
        icache, code_frames = self.icache, self._code_frames
        for f in list(code_frames):
            if len(self.decoded) <= target:
                break
            for e in code_frames.pop(f):
                icache.pop(e, None)
                self.decoded.pop(e, None)
            self._drop_frame_blocks(f)
            self._uncode((f,))  # writes to it need no SMC check any more
        if len(self.decoded) > target:  # entries no frame owns (cannot happen; stay bounded)
            self._drop_decoded()

    def note_block(self, eip: int, entry: tuple, frames, lpns, eips=()) -> None:
        """Install a translated block (or NO_BLOCK) where invalidation will find it."""
        self.blocks[eip] = entry
        self._block_store[eip] = (entry, len(frames) == 1 and len(lpns) == 1)
        ib = self._insn_blocks
        for e in eips or (eip,):
            ib.setdefault(e, set()).add(eip)
        fb, pb = self._frame_blocks, self._page_blocks
        for f in frames:
            fb.setdefault(f, set()).add(eip)
        for p in lpns:
            pb.setdefault(p, set()).add(eip)

    def translate_block(self, eip: int):
        """The translated block starting at `eip` (translating it now from the decode
        cache), or None when no block can start there. See vmsim.hw.blocks."""
        from vmsim.hw.blocks import Block, translate

        t = self.blocks.get(eip)
        if t is None:
            if eip not in self.icache:
                from vmsim.hw.decode import decode_at
                decode_at(self, eip)
            t = translate(self, eip)
        fn, k, eips = t
        if fn is None:
            return None
        if not k:  # a region: show its first block
            kept = self._block_store.get(eip)
            t = translate(self, eip, regions=False)
            self.blocks[eip] = (fn, k, eips)  # the region stays installed
            if kept is not None:
                self._block_store[eip] = kept
            fn, k, eips = t
        return Block(eip, k, tuple(eips), fn.source)

    @property
    def ctx(self):
        if self._ctx is None:
            from vmsim.hw.insn.ctx import Ctx
            self._ctx = Ctx(self)
        return self._ctx

    # -- running ------------------------------------------------------------------------------
    def step(self) -> StopReason:
        """Execute one instruction (or deliver one exception)."""
        return self.run(1)

    def run(self, max_insns: int) -> StopReason:
        """Run until `max_insns` instructions have retired or something stops the CPU."""
        if self.shut_down:
            return StopReason.SHUTDOWN
        if self.halted:
            return StopReason.HLT
        decode, blocks = _RUN_DEPS or _run_deps()
        decode_at, SmcExit, translate = decode.decode_at, blocks.SmcExit, blocks.translate

        icache = self.icache
        get = icache.get
        bget = self.blocks.get
        store_get = self._block_store.get
        decoded_d = self.decoded
        pos, smc, cnt = self.block_pos, self.smc_flag, self.block_count
        min_left = self.TRANSLATE_MIN_BUDGET
        budget = max_insns
        record = self.recorder.append if self.recorder is not None else None
        while budget > 0:
            if self.sysflags & (EFLAGS_TF | EFLAGS_RF):
                # Single-stepping (or RF to clear): one instruction at a time, off the hot
                # loop. TF is only set on a slow path (POPF setting it, IRET, VM entry),
                # each of which comes back here.
                stop = self._step_traced()
                budget -= 1
                if stop is not None:
                    return stop
                if self.stop_requested:
                    self.stop_requested = False
                    return StopReason.REQUESTED
                continue
            eip = self.eip
            n = 0
            try:
                if not self.use_blocks:
                    if record is None:
                        while n < budget:
                            f = get(eip)
                            if f is None:
                                f = decode_at(self, eip)
                            eip = f()
                            n += 1
                    else:
                        # The same loop, recording each instruction's EIP in a compact column.
                        while n < budget:
                            f = get(eip)
                            if f is None:
                                f = decode_at(self, eip)
                            record(eip)
                            eip = f()
                            n += 1
                elif record is None:
                    while n < budget:
                        t = bget(eip)
                        if t is not None:
                            fn, k, eips = t
                            if not k:  # a region of blocks: runs while its budget lasts
                                try:
                                    eip = fn(budget - n)
                                except SmcExit:
                                    smc[0] = 0
                                    i = pos[0]
                                    eip = eips[0][pos[1]][i]
                                    n += cnt[0] + i
                                    continue
                                except BaseException:
                                    i = pos[0]
                                    eip = eips[0][pos[1]][i]
                                    n += cnt[0] + i
                                    raise
                                if cnt[0]:
                                    n += cnt[0]
                                    continue
                            elif k <= budget - n:
                                try:
                                    eip = fn()
                                except SmcExit:
                                    smc[0] = 0
                                    i = pos[0]
                                    eip = eips[i]
                                    n += i
                                    continue
                                except BaseException:
                                    i = pos[0]
                                    eip = eips[i]
                                    n += i
                                    raise
                                n += k
                                continue
                            f = get(eip)
                            if f is None:
                                f = decode_at(self, eip)
                        else:
                            f = get(eip)
                            if f is None:
                                hot = eip in decoded_d  # (ran before, in an earlier address space)
                                f = decode_at(self, eip)
                                kept = store_get(eip)
                                if kept is None and hot and budget - n >= min_left:
                                    # None kept here: one made of the instructions that
                                    # follow in the page, run as a kept one (not installed
                                    # before it ran whole).
                                    if translate(self, eip, False, True)[0] is not None:
                                        self.blocks.pop(eip, None)
                                    kept = store_get(eip)
                                if kept is not None and kept[1] and 0 < kept[0][1] <= budget - n:
                                    # A block kept from an earlier address space, all in the
                                    # page and frame its first instruction was just fetched
                                    # again from: each next fetch would hit the same TLB
                                    # entry (nothing in a block flushes it), so the block
                                    # runs now, and the instructions it ran count as
                                    # fetched again afterwards, as one at a time they
                                    # would have been (refetched_run).
                                    fn, k, eips = kept[0]
                                    try:
                                        eip = fn()
                                    except SmcExit:
                                        smc[0] = 0
                                        i = pos[0]
                                        self._refetched_run(eips, i)
                                        eip = eips[i]
                                        n += i
                                        continue
                                    except BaseException:
                                        i = pos[0]
                                        self._refetched_run(eips, i + 1)  # (i faulted, fetched)
                                        eip = eips[i]
                                        n += i
                                        raise
                                    self._refetched_run(eips, k)
                                    self.blocks[eips[0]] = kept[0]
                                    n += k
                                    continue
                            elif n and budget - n >= min_left:
                                # Not where a run resumes (often mid-block): there the
                                # one-instruction path goes on to the next block's head.
                                translate(self, eip)
                                continue
                        eip = f()
                        n += 1
                else:
                    # Recording: blocks run their recording variant, which appends each
                    # EIP as its instruction starts (as the loop above does), so an event
                    # raised inside a block finds exactly the instructions before it.
                    # InstructionColumn.tokens takes each group whole, as one item
                    # (blocks.RecordedGroup), and a single instruction as one (`one`);
                    # a group recorded where what ran before it is not known (a
                    # block's or region's first, a single instruction) is marked open
                    # first (`mark(here())`). An array takes the EIPs themselves.
                    col = record.__self__
                    tokens = getattr(col, "tokens", None)
                    if tokens is None:
                        rext, put, one = blocks.ExtendInto(col), record, int
                        mark = here = int
                        rv = 2  # the variants recording into an array
                    else:
                        rext, put, one = tokens, tokens.append, tokens.one
                        mark, here = tokens.opens.append, tokens.__len__
                        rv = 1
                    while n < budget:
                        t = bget(eip)
                        if t is not None:
                            fn, k, eips = t
                            if not k:
                                mark(here())
                                try:
                                    eip = eips[rv](budget - n, rext)
                                except SmcExit:
                                    smc[0] = 0
                                    i = pos[0]
                                    eip = eips[0][pos[1]][i]
                                    n += cnt[0] + i
                                    continue
                                except BaseException:
                                    i = pos[0]
                                    eip = eips[0][pos[1]][i]
                                    n += cnt[0] + i
                                    raise
                                if cnt[0]:
                                    n += cnt[0]
                                    continue
                            elif k <= budget - n:
                                mark(here())
                                try:
                                    eip = eips.rec[rv](rext)
                                except SmcExit:
                                    smc[0] = 0
                                    i = pos[0]
                                    eip = eips[i]
                                    n += i
                                    continue
                                except BaseException:
                                    i = pos[0]
                                    eip = eips[i]
                                    n += i
                                    raise
                                n += k
                                continue
                            f = get(eip)
                            if f is None:
                                f = decode_at(self, eip)
                        else:
                            f = get(eip)
                            if f is None:
                                f = decode_at(self, eip)
                            elif n and budget - n >= min_left:
                                translate(self, eip)
                                continue
                        mark(here())
                        put(one(eip))
                        eip = f()
                        n += 1
            except SlowPath as s:
                self.eip = eip
                self.icount += n
                budget -= n
                stop = self._slow(s.run)
                budget -= 1
                if stop is not None:
                    return stop
                if self.stop_requested:
                    self.stop_requested = False
                    return StopReason.REQUESTED
                continue
            except CpuException as e:
                self.eip = eip
                self.icount += n
                budget -= n + 1
                stop = self.exception(e.vector, e.error_code, e.cr2)
                if stop is not None:
                    return stop
                continue
            except Unsupported as u:
                self.eip = eip
                self.icount += n
                return self._unsupported(str(u))
            except InterceptExit as x:
                self.eip = eip
                self.icount += n
                self.last_intercept = x.info
                return StopReason.INTERCEPT
            self.eip = eip & 0xFFFFFFFF
            self.icount += n
            budget -= n
        return StopReason.LIMIT

    def _step_traced(self) -> StopReason | None:
        """One instruction with EFLAGS.TF or RF set, then its single-step trap.

        SDM Vol. 3A 17.3.1.4: a #DB trap follows each instruction that BEGAN with TF=1 (so
        none after the POPF or IRET that sets TF, one after the POPF that clears it), with
        DR6.BS set. An instruction that faults, or INT n / INT3 / INTO / INT1 (whose
        delivery clears TF, 6.12.1.3), is not traced: no trap while delivering, none in
        the handler. MOV SS / POP SS hold the trap back to the next instruction (the
        "interrupt shadow": Vol. 3A 6.8.3). A REP string instruction is traced per
        iteration, EIP left at the instruction while iterations remain. RF is cleared as
        each instruction starts (17.3.1.1).
        """
        from vmsim.hw.decode import decode_at

        flags = self.sysflags
        self.sysflags = flags & ~EFLAGS_RF
        eip = self.eip
        icount, deliveries, ss = self.icount, self.deliveries, self.seg[SS]
        if self.recorder is not None:
            self.recorder.append(eip)
        self.rep_chunk = 1
        self.rep_unfinished = False
        stop = None
        try:
            f = self.icache.get(eip)
            if f is None:
                f = decode_at(self, eip)
            nxt = f()
        except SlowPath as s:
            stop = self._slow(s.run)
        except CpuException as e:
            stop = self.exception(e.vector, e.error_code, e.cr2)
        except Unsupported as u:
            return self._unsupported(str(u))
        except InterceptExit as x:
            self.last_intercept = x.info
            return StopReason.INTERCEPT
        else:
            self.eip = nxt & 0xFFFFFFFF
            self.icount += 1
        finally:
            self.rep_chunk = REP_CHUNK
        if (not flags & EFLAGS_TF or self.icount == icount or self.deliveries != deliveries
                or self.seg[SS] is not ss or stop not in (None, StopReason.HLT)):
            return stop
        # A trap after a REP iteration that is not the last pushes RF=1 (17.3.1.1).
        return self.single_step_trap(EFLAGS_RF if self.rep_unfinished else None)

    def single_step_trap(self, rf: int | None = None) -> StopReason | None:
        """Deliver the single-step #DB trap (vector 1) for the instruction just retired:
        DR6.BS set, saved EIP the next instruction's. A VM exit for it (#DB in the
        exception bitmap) leaves DR6 alone and reports BS in the exit qualification
        (SDM Vol. 3C "Exit Qualification for Debug Exceptions"), and saves the RF the
        frame would have had."""
        if rf is not None:
            self.sysflags |= rf
        if self.intercepted(Intercept("exception", self.eip, vector=X.DB,
                                      extra={"dr6": DR6_BS})):
            return StopReason.INTERCEPT
        self.dr6 |= DR6_BS
        self.halted = False  # a trap after HLT: the handler runs, then the next instruction
        return self._deliver_with_rules(X.DB, None, None, self.eip, soft=False, rf=rf)

    # -- debug registers (SDM Vol. 3A 17.2; Vol. 2B MOV-Move to/from Debug Registers) -----
    def get_debug(self, n: int) -> int:
        if n in (4, 5):
            if self.mmu.cr4 & 0x8:  # CR4.DE: DR4/DR5 are reserved
                raise X.ud()
            n += 2  # aliases of DR6/DR7
        self._general_detect()
        return self.dr[n] if n < 4 else self.dr6 if n == 6 else self.dr7

    def set_debug(self, n: int, value: int) -> None:
        if n in (4, 5):
            if self.mmu.cr4 & 0x8:
                raise X.ud()
            n += 2
        self._general_detect()
        value &= 0xFFFFFFFF
        if n < 4:
            self.dr[n] = value
        elif n == 6:
            self.dr6 = (value & DR6_VOLATILE) | DR6_FIXED_1
        else:
            if value & DR7_ENABLES:
                raise Unsupported(f"DR7 {value:#x} enables a hardware breakpoint: vmsim "
                                  "does not model DR0-DR3 breakpoints")
            self.dr7 = (value & DR7_VOLATILE) | DR7_FIXED_1

    def _general_detect(self) -> None:
        # DR7.GD: any MOV DR is a #DB fault with DR6.BD, and GD is cleared for the handler.
        if self.dr7 & 0x2000:
            self.dr6 |= 0x2000
            self.dr7 &= ~0x2000
            raise CpuException(X.DB)

    def _slow(self, run: Callable[[], StopReason | None]) -> StopReason | None:
        try:
            return run()
        except CpuException as e:
            return self.exception(e.vector, e.error_code, e.cr2)
        except Unsupported as u:
            return self._unsupported(str(u))
        except InterceptExit as x:
            self.last_intercept = x.info
            return StopReason.INTERCEPT

    def _unsupported(self, what: str) -> StopReason:
        self.stop_message = what
        if self.events is not None:
            self.events.emit("unsupported", self.name, eip=self.eip, what=what)
        return StopReason.UNSUPPORTED

    def retire(self, next_eip: int) -> None:
        """End of a slow-path instruction."""
        self.eip = next_eip & 0xFFFFFFFF
        self.icount += 1

    def intercepted(self, info: Intercept) -> bool:
        if self.intercept is not None and self.intercept(info):
            self.last_intercept = info
            return True
        return False

    # -- the interrupt shadow (SDM Vol. 3A 6.8.3; Vol. 3C "Interruptibility State") -------
    def interrupt_shadow(self) -> int:
        """Blocking by STI (SHADOW_STI) or by MOV SS (SHADOW_MOV_SS) at this instruction
        boundary, in the VMCS interruptibility-state format; 0 when there is none."""
        return self.shadow_bits if self.icount == self.shadow_icount else 0

    def set_interrupt_shadow(self, bits: int) -> None:
        """Put the shadow on the next instruction (VM entry loading the interruptibility
        state), or take it off (0: what kvm.ko's vmx_set_interrupt_shadow(0) asks)."""
        self.shadow_bits = bits & (SHADOW_STI | SHADOW_MOV_SS)
        self.shadow_icount = self.icount

    def inhibit_interrupts(self, bits: int) -> None:
        """An STI that set IF, or a MOV SS / POP SS, has just retired: the next instruction
        runs in its shadow. A MOV SS inside a MOV SS shadow does not extend it (as Bochs'
        inhibit_interrupts: the SDM guarantees the shadow only to the first of a run)."""
        if bits == SHADOW_MOV_SS and self.interrupt_shadow() & SHADOW_MOV_SS:
            return
        self.set_interrupt_shadow(bits)

    # -- exceptions and interrupts (SDM Vol. 3A 6.12-6.15) ---------------------------------
    def exception(self, vector: int, error_code: int | None = None,
                  cr2: int | None = None) -> StopReason | None:
        """Deliver a fault raised by the instruction at self.eip, with the double-fault rules."""
        rf = _fault_rf(vector)
        if rf is not None:
            # A VM exit for it saves the RF the frame would have had (SDM Vol. 3C "Saving
            # RIP, RSP, RFLAGS, and SSP"), so the hypervisor's re-injection pushes it too.
            self.sysflags |= rf
        if self.intercepted(Intercept("exception", self.eip, vector=vector,
                                      error_code=error_code, linear=cr2 or 0)):
            return StopReason.INTERCEPT
        return self._deliver_with_rules(vector, error_code, cr2, self.eip, soft=False, rf=rf)

    def _deliver_with_rules(self, vector: int, error_code: int | None, cr2: int | None,
                            return_eip: int, soft: bool, rf: int | None = None,
                            event_type: int | None = None) -> StopReason | None:
        """Deliver an event; `rf` is the RF to push (None: EFLAGS.RF as it is).

        `event_type` is the SDM interruption type of the event (0 external interrupt, 2
        NMI, 3 hardware exception, 4 software interrupt, 6 software exception) when the
        caller knows it (an event a hypervisor injects): a VM exit during its delivery
        names it in extra["vectoring_type"], so the IDT-vectoring information keeps it."""
        self.deliveries += 1
        # Delivering an event ends the shadow, and a VM exit during the delivery finds none
        # (SDM Vol. 3C "Architectural State Before a VM Exit": an event that causes a VM
        # exit indirectly leaves no blocking by STI or by MOV SS).
        self.shadow_bits = 0
        while True:
            if self.events is not None and self.events.build("exception"):
                self.events.emit("exception", self.name, vector=vector, name=X.name(vector),
                                 error_code=error_code, eip=self.eip)
            if vector == X.PF and cr2 is not None:
                self.cr2 = cr2 & 0xFFFFFFFF
            try:
                self._deliver(vector, error_code, return_eip, soft, rf)
                return None
            except InterceptExit as x:
                # A VM exit during delivery (EPT violation on the stack, say): the exit
                # names the event it interrupted, which the hypervisor then re-injects.
                x.info.extra.setdefault("vectoring", (vector, error_code, soft))
                if event_type is not None:
                    x.info.extra.setdefault("vectoring_type", event_type)
                if soft:  # INT n / INT3 / INTO: the exit reports the instruction's length
                    x.info.extra.setdefault("vectoring_len", (return_eip - self.eip) & 0xFFFFFFFF)
                self.last_intercept = x.info
                return StopReason.INTERCEPT
            except CpuException as e:
                first = (vector, error_code, soft)  # what was being delivered
                vlen = {"vectoring_len": (return_eip - self.eip) & 0xFFFFFFFF} if soft else {}
                if event_type is not None:
                    vlen["vectoring_type"] = event_type
                # A hypervisor sees the new exception itself before any double- or
                # triple-fault conversion (how shadow paging catches a #PF on a stack not
                # yet shadowed while a guest exception is delivered).
                if self.intercepted(Intercept("exception", self.eip, vector=e.vector,
                                              error_code=e.error_code, linear=e.cr2 or 0,
                                              extra={"vectoring": first, **vlen})):
                    return StopReason.INTERCEPT
                # INT n / INT3 / INTO are not exceptions for Table 6-5 (as Bochs and QEMU
                # class them): a fault delivering INT 13 or INT 8 is handled serially.
                # Nor are external interrupts and NMIs (an injected one may use any vector).
                exception_class = not soft and event_type in (None, EVENT_TYPE_HWEXC)
                if vector == X.DF and exception_class:
                    return self._triple_fault()
                soft = False
                event_type = None  # from here on the CPU's own exception is delivered
                return_eip = self.eip  # a fault during delivery returns to the instruction
                if exception_class and _is_double(first[0], e.vector):
                    # A #PF detected during delivery loads CR2 even when it becomes #DF
                    # (as Bochs and QEMU do: CR2 is written when the #PF is recognized).
                    if e.vector == X.PF and e.cr2 is not None:
                        self.cr2 = e.cr2 & 0xFFFFFFFF
                    vector, error_code, cr2, rf = X.DF, 0, None, None
                    if self.intercepted(Intercept("exception", self.eip, vector=X.DF,
                                                  error_code=0, extra={"vectoring": first,
                                                                       **vlen})):
                        return StopReason.INTERCEPT
                else:
                    vector, error_code, cr2 = e.vector, e.error_code, e.cr2
                    rf = _fault_rf(vector)

    def _triple_fault(self) -> StopReason:
        if self.intercepted(Intercept("triple_fault", self.eip)):
            return StopReason.INTERCEPT
        self.shut_down = True
        if self.events is not None:
            self.events.emit("triple_fault", self.name, eip=self.eip)
        return StopReason.SHUTDOWN

    def inject(self, vector: int, error_code: int | None, return_eip: int,
               soft: bool, event_type: int | None = None) -> StopReason | None:
        """Deliver an event a hypervisor injects on VM entry (SDM 27.6.1). It wakes a
        halted CPU; `event_type` is its interruption type (see _deliver_with_rules)."""
        self.halted = False
        return self._deliver_with_rules(vector, error_code, None, return_eip, soft,
                                        event_type=event_type)

    def software_interrupt(self, vector: int, next_eip: int) -> StopReason | None:
        """INT n / INT3 / INTO: a trap, returning to the next instruction."""
        if vector in (X.BP, X.OF) and self.intercepted(Intercept(
                "exception", self.eip, (next_eip - self.eip) & 0xFFFFFFFF, vector=vector,
                extra={"soft": True})):
            return StopReason.INTERCEPT  # INT3/INTO are exceptions for the exception bitmap
        return self._deliver_with_rules(vector, None, None, next_eip, soft=True)

    def _deliver(self, vector: int, error_code: int | None, return_eip: int, soft: bool,
                 rf: int | None = None) -> None:
        ext = 0 if soft else 1
        base, limit = self.idtr
        if vector * 8 + 7 > limit:
            raise X.gp(vector * 8 + 2 + ext)
        lo = self.memfns.rd32((base + vector * 8) & 0xFFFFFFFF)
        hi = self.memfns.rd32((base + vector * 8 + 4) & 0xFFFFFFFF)
        gate_type = (hi >> 8) & 0x1F
        if gate_type not in (0x0E, 0x0F):
            if gate_type in (0x05, 0x06, 0x07):
                raise Unsupported(f"IDT vector {vector}: task and 16-bit gates are not modelled")
            raise X.gp(vector * 8 + 2 + ext)
        if not hi & 0x8000:
            raise CpuException(X.NP, vector * 8 + 2 + ext)
        selector = lo >> 16
        offset = (hi & 0xFFFF0000) | (lo & 0xFFFF)
        cs = self.load_code_descriptor(selector, ext=ext)
        eflags = self.eflags
        # The RF pushed (SDM Vol. 3A 17.3.1.1): 1 for a fault, 0 for INT n (RF is cleared
        # as it starts), else EFLAGS.RF as it is (traps, injected events).
        if soft:
            eflags &= ~EFLAGS_RF
        elif rf is not None:
            eflags = (eflags & ~EFLAGS_RF) | rf
        if error_code is not None and not soft:
            frame = [eflags, self.seg[CS].selector, return_eip, error_code or 0]
        else:
            frame = [eflags, self.seg[CS].selector, return_eip]
        esp = self.r[4]
        wr32 = self.memfns.wr32
        for v in frame:
            esp = (esp - 4) & 0xFFFFFFFF
            wr32(esp, v)
        self.r[4] = esp
        self.set_cs(cs)
        # Both gate kinds clear TF, NT, RF and VM; an interrupt gate also clears IF.
        clear = 0x100 | 0x4000 | 0x10000 | 0x20000 | (0x200 if gate_type == 0x0E else 0)
        self.sysflags &= ~clear
        self.eip = offset
        self.halted = False

    def iret(self, size: int = 4) -> None:
        """IRETD (or, `size` 2, IRETW) to the same privilege level (SDM Vol. 2A IRET,
        protected-mode return). IRETW pops IP, CS and FLAGS as words and loads FLAGS into
        EFLAGS(15:0), the upper half kept."""
        # The CURRENT EFLAGS.NT says "task return", before anything is popped (SDM Vol. 2A
        # IRET: "ELSE IF EFLAGS.NT = 1 THEN GOTO TASK-RETURN"); the image's NT is just
        # loaded into EFLAGS by a normal return.
        if self.sysflags & EFLAGS_NT:
            raise Unsupported("IRET with EFLAGS.NT set (task return: vmsim models no tasks)")
        rd = self.memfns.rd32 if size == 4 else self.memfns.rd16
        esp = self.r[4]
        eip = rd(esp)
        cs_sel = rd((esp + size) & 0xFFFFFFFF) & 0xFFFF
        flags = rd((esp + 2 * size) & 0xFFFFFFFF)
        if cs_sel & 3:
            raise Unsupported("IRET to another privilege level (vmsim runs at CPL 0 only)")
        cs = self.load_code_descriptor(cs_sel)
        self.r[4] = (esp + 3 * size) & 0xFFFFFFFF
        self.set_cs(cs)
        writable = IRET_WRITABLE if size == 4 else IRET_WRITABLE & 0xFFFF
        self.eflags = (flags & writable) | (self.eflags & ~writable)
        self.eip = eip

    # -- descriptors (SDM Vol. 3A 3.4-3.5) ----------------------------------------------------
    def descriptor_table(self, selector: int) -> tuple[int, int] | None:
        """(base, limit) of the table `selector` indexes: the GDT, or with TI = 1 the LDT
        (None where LDTR is unusable)."""
        if not selector & 4:
            return self.gdtr
        _, base, limit, ar = self.ldtr
        return None if ar & AR_UNUSABLE else (base, limit)

    def find_descriptor(self, selector: int) -> tuple[int, int] | None:
        """The entry (low and high dwords) `selector` indexes, or None where its table ends
        before it (or, for TI = 1, LDTR is unusable). A fault reading the table is raised."""
        table = self.descriptor_table(selector)
        if table is None:
            return None
        base, limit = table
        index = selector & 0xFFF8
        if index + 7 > limit:
            return None
        rd32 = self.memfns.rd32
        self.table_read = True
        try:
            return rd32((base + index) & 0xFFFFFFFF), rd32((base + index + 4) & 0xFFFFFFFF)
        finally:
            self.table_read = False

    def read_descriptor(self, selector: int, ext: int = 0) -> tuple[int, int]:
        found = self.find_descriptor(selector)
        if found is None:
            raise X.gp((selector & 0xFFFC) | ext)
        return found

    def _mark_accessed(self, selector: int, hi: int) -> None:
        if not hi & 0x100:
            base = self.descriptor_table(selector)[0]  # type: ignore[index]  # (it was read)
            self.memfns.wr32((base + (selector & 0xFFF8) + 4) & 0xFFFFFFFF, hi | 0x100)

    @staticmethod
    def _segment_from(selector: int, lo: int, hi: int) -> Segment:
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        flags = (hi >> 20) & 0xF
        if flags & 8:
            limit = (limit << 12) | 0xFFF
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        return Segment(selector, base, limit, ((hi >> 8) & 0xFF) | 1, flags)

    def load_code_descriptor(self, selector: int, ext: int = 0, far: bool = False) -> Segment:
        """The code segment a far JMP/CALL (`far`), a gate or a return loads into CS.

        The loaded selector's RPL is the CPL (0): SDM Vol. 2A JMP/CALL "CS(RPL) <- CPL" for
        both kinds of code segment, and Vol. 3A 6.12.1 / INT n "INTRA-PRIVILEGE-LEVEL-
        INTERRUPT": CS(RPL) <- CPL, whatever RPL the gate's selector carries.
        """
        if selector & 0xFFFC == 0:
            raise X.gp(ext)
        lo, hi = self.read_descriptor(selector, ext)
        access = (hi >> 8) & 0xFF
        if not access & 0x10 or not access & 0x08:  # must be a code segment
            raise X.gp((selector & 0xFFFC) | ext)
        # At CPL 0 only a DPL-0 code segment is a legal target (SDM Vol. 2A JMP/CALL/IRET:
        # nonconforming needs DPL = CPL, conforming DPL <= CPL; interrupt delivery: DPL >
        # CPL is #GP), checked before P. A far JMP/CALL to a nonconforming segment also
        # needs RPL <= CPL (Vol. 2A JMP/CALL NONCONFORMING-CODE-SEGMENT); a gate's RPL is
        # not checked.
        if access & 0x60 or (far and not access & 0x04 and selector & 3):
            raise X.gp((selector & 0xFFFC) | ext)
        if not access & 0x80:
            raise CpuException(X.NP, (selector & 0xFFFC) | ext)
        seg = self._segment_from(selector & 0xFFFC, lo, hi)
        if seg.base != 0 or seg.limit != 0xFFFFFFFF or not seg.flags & 4:
            raise Unsupported(f"code segment {selector:#x} is not flat 32-bit (base {seg.base:#x}, "
                              f"limit {seg.limit:#x})")
        self._mark_accessed(selector, hi)
        return seg

    def load_segment(self, sreg: int, selector: int) -> None:
        """MOV/POP to DS ES FS GS SS (SDM Vol. 2B MOV, protected-mode checks at CPL 0)."""
        selector &= 0xFFFF
        if sreg == CS:
            raise X.ud()
        if selector & 0xFFFC == 0:
            if sreg == SS:
                raise X.gp(0)
            self._seg[sreg] = Segment(selector, 0, 0, 0, 0)
            self._segments_changed()
            return
        lo, hi = self.read_descriptor(selector)
        access = (hi >> 8) & 0xFF
        code, writable_or_readable = access & 0x08, access & 0x02
        if not access & 0x10:
            raise X.gp(selector & 0xFFFC)
        if sreg == SS and (code or not writable_or_readable or (selector & 3) != 0
                           or (access >> 5) & 3 != 0):
            raise X.gp(selector & 0xFFFC)
        if sreg != SS and code and not writable_or_readable:
            raise X.gp(selector & 0xFFFC)
        # Data and nonconforming code: RPL > DPL is #GP(selector) (SDM Vol. 2B MOV; CPL=0).
        if sreg != SS and not (code and access & 0x04) and (selector & 3) > (access >> 5) & 3:
            raise X.gp(selector & 0xFFFC)
        if not access & 0x80:
            raise CpuException(X.SS if sreg == SS else X.NP, selector & 0xFFFC)
        seg = self._segment_from(selector, lo, hi)
        if seg.base != 0 or seg.limit != 0xFFFFFFFF:
            raise Unsupported(f"segment {selector:#x} is not flat (base {seg.base:#x}, "
                              f"limit {seg.limit:#x})")
        self._mark_accessed(selector, hi)
        self._seg[sreg] = seg
        self._segments_changed()

    # -- segment usability (SDM Vol. 3A 3.4.2, 5.4.1) ------------------------------------
    @property
    def seg(self) -> list[Segment]:
        """ES CS SS DS FS GS. Assigning the list (VM entry, reset) rechecks their classes."""
        return self._seg

    @seg.setter
    def seg(self, value: list[Segment]) -> None:
        self._seg = value
        self._segments_changed()

    def set_cs(self, cs: Segment) -> None:
        """Load CS (far JMP/CALL/RET, IRET, a gate); an execute-only CS changes the class."""
        old = self._seg[CS]
        self._seg[CS] = cs
        if (old.access ^ cs.access) & 0x02:
            self._segments_changed()

    def _segments_changed(self) -> None:
        """Decoded instructions check their segments only while one is unusual (a null or
        read-only data segment, an execute-only CS): when that changes, decode again."""
        classes = tuple(_seg_class(x) for x in self._seg)
        if classes == _PLAIN_CLASSES:
            classes = None
        if classes != self.seg_classes:
            self.seg_classes = classes
            self._drop_decoded()

    # -- MSRs and CPUID -----------------------------------------------------------------------
    def read_msr(self, index: int) -> int:
        if index == MSR_IA32_TSC:
            return self.tsc()
        if index in self.msr or index in (MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
                                          MSR_IA32_MISC_ENABLE):
            return self.msr.get(index, 0)
        raise X.gp(0)

    def write_msr(self, index: int, value: int) -> None:
        if index == MSR_IA32_TSC:
            self.tsc_offset = value - self.icount
        elif index in (MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
                       MSR_IA32_MISC_ENABLE, MSR_IA32_APICBASE, MSR_IA32_CR_PAT):
            self.msr[index] = value
        else:
            raise X.gp(0)

    def tsc(self) -> int:
        # One tick per retired instruction until the virtual clock (issue 3) drives it.
        return (self.icount + self.tsc_offset) & 0xFFFFFFFFFFFFFFFF

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        t = self.cpuid_table
        if (leaf, subleaf) in t:
            return t[(leaf, subleaf)]
        if (leaf, 0) in t:
            return t[(leaf, 0)]
        # Out-of-range leaves return the highest basic leaf's values (SDM CPUID).
        top = t.get((0, 0), (0, 0, 0, 0))[0]
        if leaf < 0x80000000 and leaf > top:
            return t.get((top, 0), (0, 0, 0, 0))
        return (0, 0, 0, 0)

    # -- views --------------------------------------------------------------------------------
    def disassemble(self, eip: int | None = None) -> str:
        eip = self.eip if eip is None else eip
        la = self.mmu.probe(eip)
        if la is None:
            return "(not mapped)"
        data = self.mem.read_bytes(la, 15)
        ins = iced_x86.Decoder(32, data, ip=eip).decode()
        return iced_x86.Formatter(iced_x86.FormatterSyntax.NASM).format(ins)


def _all_hooks(cpus: list[Cpu], union: dict[int, bytearray]) -> Callable[[int, int], None]:
    """The memory's code-write hook with several CPUs: each CPU whose decoded bytes the
    store hits hears of it (a store by one vCPU into another's code: cross-modifying)."""
    def code_written(pa: int, size: int) -> None:
        u = union.get(pa >> PAGE_SHIFT)
        if u is None:
            for c in cpus:
                c._code_written(pa, size)
            return
        off = pa & 0xFFF
        hit = 0
        for b in u[off:off + size]:
            hit |= b
        i = 0
        while hit:
            if hit & 1:
                cpus[i]._code_written(pa, size)
            hit >>= 1
            i += 1
    return code_written


PAGE_SIZE = 1 << PAGE_SHIFT
_FULL = b"\x01" * PAGE_SIZE  # (slices of it mark an instruction's bytes in _code_bytes)
_ONES = re.compile(b"\x01+")
# Per CPU bit i: byte -> byte | 1 << i, byte & ~(1 << i), and (byte != 0) << i.
_SET_BIT = [bytes(x | 1 << i for x in range(256)) for i in range(8)]
_CLEAR_BIT = [bytes(x & ~(1 << i) for x in range(256)) for i in range(8)]
_TO_BIT = [bytes((x != 0) << i for x in range(256)) for i in range(8)]


SEG_OK, SEG_READ_ONLY, SEG_EXECUTE_ONLY, SEG_UNUSABLE = range(4)
_PLAIN_CLASSES = (SEG_OK, SEG_READ_ONLY, SEG_OK, SEG_OK, SEG_OK, SEG_OK)  # CS: readable code


def _seg_class(s: Segment) -> int:
    """How a segment register may be used for data (its descriptor cache)."""
    a = s.access
    if not a & 0x80:
        return SEG_UNUSABLE  # null selector (or VMX "unusable")
    if a & 0x08:
        return SEG_READ_ONLY if a & 0x02 else SEG_EXECUTE_ONLY  # code: never writable
    return SEG_OK if a & 0x02 else SEG_READ_ONLY


def _fault_rf(vector: int) -> int | None:
    """RF pushed for an exception the CPU raised: 1 for a fault (SDM Vol. 3A 17.3.1.1 "For
    any fault-class exception except a debug exception generated in response to an
    instruction breakpoint, the value pushed for RF is 1"; vmsim has no instruction
    breakpoints: the #DB raised here is MOV DR's general detect, a fault); as it is for
    #DF and #MC (aborts)."""
    return None if vector in (X.DF, X.MC) else EFLAGS_RF


def _is_double(first: int, second: int) -> bool:
    """SDM Vol. 3A Table 6-5: which second exception turns into #DF."""
    if first in X.CONTRIBUTORY:
        return second in X.CONTRIBUTORY
    if first == X.PF:
        return second in X.CONTRIBUTORY or second == X.PF
    return False


def default_cpuid() -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """A plain 32-bit CPU: "GenuineIntel", family 6, FPU-less subset features."""
    vendor = b"GenuineIntel"
    ebx, edx, ecx = (int.from_bytes(vendor[i:i + 4], "little") for i in (0, 4, 8))
    # Leaf 1 EDX: PSE(3) TSC(4) MSR(5) CX8(8) SEP(11) PGE(13) CMOV(15).
    features = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 13) | (1 << 15)
    return {
        (0, 0): (1, ebx, ecx, edx),
        (1, 0): (0x00000663, 0, 0, features),
        (0x80000000, 0): (0x80000000, 0, 0, 0),
    }
