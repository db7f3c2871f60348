"""String instructions and REP prefixes (SDM Vol. 1 7.3.9; Vol. 2 MOVS ... OUTS, REP).

A REP-prefixed instruction runs its iterations in the handler, up to cpu.rep_chunk per call.
Registers are updated after every element, so a fault part-way leaves ESI/EDI/ECX at the
element that faulted and EIP at the instruction, which restarts it: what the hardware does.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86

from vmsim.hw.cpu import Intercept, SlowPath, StopReason
from vmsim.hw.flags import DF, K_SUB, SIZE_INDEX, get_zf
from vmsim.hw.insn.ctx import Ctx
from vmsim.hw.insn.table import INTERCEPTABLE, NotInSubset, handles

M32 = 0xFFFFFFFF
Mn = iced_x86.Mnemonic
# A REP instruction may be interrupted between iterations (SDM Vol. 1 7.3.9.3): vmsim
# stops after cpu.rep_chunk of them (REP_CHUNK, or 1 while single-stepping) and restarts
# the instruction. Each restart counts as an instruction.
_SIZE = {"B": 1, "W": 2, "D": 4}
# REP INS / OUTS at a device restart after this many elements, not REP_CHUNK: each is a
# device access (a microsecond or two), and 4,096 of them to one counted instruction let a
# budget of 10,000 instructions write 41 million bytes to the UART (found by the fuzz).
IO_REP_CHUNK = 256


def _size(ins: iced_x86.Instruction) -> int:
    return iced_x86.MemorySizeExt.size(ins.memory_size)


def _check(ins: iced_x86.Instruction) -> None:
    if not ins.is_string_instruction:
        raise NotInSubset("not the string form")
    if ins.memory_base in (iced_x86.Register.SI, iced_x86.Register.DI) or (
            ins.op_count and ins.op_kind(0) in (iced_x86.OpKind.MEMORY_SEG_SI,
                                               iced_x86.OpKind.MEMORY_SEG_DI,
                                               iced_x86.OpKind.MEMORY_ESDI)):
        raise NotInSubset("16-bit addressing string instruction")


def _names(prefix: str) -> list[str]:
    return [prefix + s for s in _SIZE]


@handles(*_names("MOVS"), *_names("STOS"), *_names("LODS"))
def movs(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    _check(ins)
    size = _size(ins)
    r, cpu, nxt = c.r, c.cpu, ins.next_ip32
    rd, wr = c.rd[size], c.wr[size]
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    m = ins.mnemonic
    amask = (1 << (8 * size)) - 1

    if m in (Mn.MOVSB, Mn.MOVSW, Mn.MOVSD):
        def element(step: int) -> None:
            wr(r[7], rd(r[6]))
            r[6] = (r[6] + step) & M32
            r[7] = (r[7] + step) & M32
    elif m in (Mn.STOSB, Mn.STOSW, Mn.STOSD):
        def element(step: int) -> None:
            wr(r[7], r[0] & amask)
            r[7] = (r[7] + step) & M32
    else:
        def element(step: int) -> None:
            v = rd(r[6])
            r[0] = v if size == 4 else (r[0] & ~amask & M32) | v
            r[6] = (r[6] + step) & M32

    if not rep:
        def once() -> int:
            element(-size if cpu.sysflags & DF else size)
            return nxt
        return once

    here = ins.ip32
    # The rest of a page's elements in one go where that is exactly what the elements
    # would do (MemFns.fill / copy): a memset or memcpy of RAM, or stores to nothing.
    bulk = None
    if c.fill is not None and m in (Mn.STOSB, Mn.STOSW, Mn.STOSD):
        fill = c.fill

        def bulk(count: int, down: int) -> int:
            k = fill(r[7], size, r[0] & amask, count, down)
            if k > 0:
                r[7] = (r[7] + (-k if down else k) * size) & M32
            return k
    elif c.copy is not None and m in (Mn.MOVSB, Mn.MOVSW, Mn.MOVSD):
        copy = c.copy

        def bulk(count: int, down: int) -> int:
            k = copy(r[6], r[7], size, count, down)
            if k > 0:
                d = (-k if down else k) * size
                r[6] = (r[6] + d) & M32
                r[7] = (r[7] + d) & M32
            return k

    def repeated() -> int:
        down = cpu.sysflags & DF
        step = -size if down else size
        n = cpu.rep_chunk
        wait = 0  # elements one by one before asking for a page at a time again
        while r[1] and n:
            if wait:
                wait -= 1
            elif bulk is not None and n > 1 and r[1] > 1:
                k = bulk(min(n, r[1]), down)
                if k > 0:
                    r[1] -= k
                    n -= k
                    continue
                if k < 0:
                    # Not this page (not plain RAM, overlapping runs): the rest of the
                    # destination's page goes one by one, as it would have.
                    off = r[7] & 0xFFF
                    wait = off // size if down else (0xFFF - off) // size
            element(step)
            r[1] = (r[1] - 1) & M32
            n -= 1
        if r[1]:
            cpu.rep_unfinished = True
            return here
        return nxt
    return repeated


@handles(*_names("CMPS"), *_names("SCAS"))
def cmps(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    _check(ins)
    size = _size(ins)
    r, lf, cpu, nxt = c.r, c.lf, c.cpu, ins.next_ip32
    rd = c.rd[size]
    op = K_SUB * 3 + SIZE_INDEX[size]
    amask = (1 << (8 * size)) - 1
    is_cmps = ins.mnemonic in (Mn.CMPSB, Mn.CMPSW, Mn.CMPSD)

    def element(step: int) -> None:
        if is_cmps:
            a, b = rd(r[6]), rd(r[7])  # CMPS compares [ESI] - [EDI]
            r[6] = (r[6] + step) & M32
        else:
            a, b = r[0] & amask, rd(r[7])  # SCAS compares EAX - [EDI]
        r[7] = (r[7] + step) & M32
        lf[0] = op; lf[1] = a - b; lf[2] = a; lf[3] = b  # noqa: E702

    if not (ins.has_rep_prefix or ins.has_repne_prefix):
        def once() -> int:
            element(-size if cpu.sysflags & DF else size)
            return nxt
        return once
    while_equal = ins.has_repe_prefix

    here = ins.ip32

    def repeated() -> int:
        step = -size if cpu.sysflags & DF else size
        n = cpu.rep_chunk
        while r[1] and n:
            element(step)
            r[1] = (r[1] - 1) & M32
            n -= 1
            if get_zf(lf) != while_equal:
                return nxt
        if r[1]:
            cpu.rep_unfinished = True
            return here
        return nxt
    return repeated


@handles(*_names("INS"), *_names("OUTS"))
def ins_outs(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """INS/OUTS: port I/O, always through the slow path (an I/O intercept point)."""
    _check(ins)
    size = _size(ins)
    r, cpu, nxt, eip, length = c.r, c.cpu, ins.next_ip32, ins.ip32, ins.len
    rd, wr = c.rd[size], c.wr[size]
    is_in = ins.mnemonic in (Mn.INSB, Mn.INSW, Mn.INSD)
    rep = ins.has_rep_prefix or ins.has_repne_prefix

    def element(step: int) -> None:
        port = r[2] & 0xFFFF
        if is_in:
            addr = r[7]
            wr(addr, cpu.io.read(port, size))
            r[7] = (addr + step) & M32
        else:
            cpu.io.write(port, size, rd(r[6]))
            r[6] = (r[6] + step) & M32

    # REP INS / OUTS at a port nobody claims, a page of memory at a time (MemFns.fill /
    # loads): INS stores all ones as STOS would, OUTS's loads go nowhere.
    ones = (1 << (8 * size)) - 1
    fill, loads = c.fill, c.loads

    def bulk(count: int, down: int) -> int:
        if is_in:
            k = fill(r[7], size, ones, count, down)  # type: ignore[misc]
            if k > 0:
                r[7] = (r[7] + (-k if down else k) * size) & M32
        else:
            k = loads(r[6], size, count, down)  # type: ignore[misc]
            if k > 0:
                r[6] = (r[6] + (-k if down else k) * size) & M32
        return k

    def run():
        if rep and r[1] == 0:
            cpu.retire(nxt)
            return None
        info = Intercept("io", eip, length, port=r[2] & 0xFFFF, size=size, is_in=is_in,
                         string=True, rep=rep, linear=r[7] if is_in else r[6])
        if cpu.intercepted(info):
            return StopReason.INTERCEPT
        down = cpu.sysflags & DF
        step = -size if down else size
        if not rep:
            element(step)
        else:
            n = cpu.rep_chunk
            nobody_at = getattr(cpu.io, "nobody_at", None)  # (a bus: not kvm.ko's _NoPorts)
            quiet = fill is not None and n > 1 and nobody_at is not None \
                and nobody_at(r[2] & 0xFFFF, size)
            if not quiet and n > IO_REP_CHUNK:
                n = IO_REP_CHUNK  # each element a device access: a shorter chunk
            wait = 0  # elements one by one before asking for a page at a time again
            while r[1] and n:
                if wait:
                    wait -= 1
                elif quiet and n > 1 and r[1] > 1:
                    k = bulk(min(n, r[1]), down)
                    if k > 0:
                        r[1] -= k
                        n -= k
                        continue
                    if k < 0:  # a device in memory: the rest of its page one by one
                        off = (r[7] if is_in else r[6]) & 0xFFF
                        wait = off // size if down else (0xFFF - off) // size
                element(step)
                r[1] = (r[1] - 1) & M32
                n -= 1
            cpu.rep_unfinished = bool(r[1])
        cpu.retire(nxt if not r[1] or not rep else eip)
        return None

    def io_string() -> int:
        raise SlowPath(run)
    return io_string


INTERCEPTABLE.update({"ins", "outs"})
