"""String instructions and REP prefixes (SDM Vol. 1 7.3.9; Vol. 2 MOVS ... OUTS, REP).

A REP-prefixed instruction runs its iterations in the handler, up to cpu.rep_chunk per call.
Registers are updated after every element, so a fault part-way leaves ESI/EDI/ECX at the
element that faulted and EIP at the instruction, which restarts it: what the hardware does.
With a 16-bit address size (a 0x67 prefix here) they address with SI and DI and count in
CX, each wrapping within 64 KiB with the upper half of its register kept (SDM Vol. 1
3.6 and Vol. 2 MOVS: "the address-size attribute ... determines whether SI/DI or ESI/EDI
are used"); those go one element at a time.
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


_A16_KINDS = (iced_x86.OpKind.MEMORY_SEG_SI, iced_x86.OpKind.MEMORY_SEG_DI,
              iced_x86.OpKind.MEMORY_ESDI)


def address_mask(ins: iced_x86.Instruction) -> int:
    """0xFFFF where a string instruction has a 16-bit address size (SI, DI, CX), else
    0xFFFFFFFF (ESI, EDI, ECX)."""
    for i in range(ins.op_count):
        if ins.op_kind(i) in _A16_KINDS:
            return 0xFFFF
    return M32


def _advance16(r: list[int], i: int, d: int) -> None:
    """Add `d` to the low 16 bits of register `i`, wrapping there; the upper half stays."""
    v = r[i]
    r[i] = (v & 0xFFFF0000) | ((v + d) & 0xFFFF)


def _repeat16(cpu, r: list[int], element: Callable[[int], None], size: int, here: int,
              nxt: int, done: Callable[[], bool] | None = None) -> Callable[[], int]:
    """A REP loop that counts in CX (a 16-bit address size): up to cpu.rep_chunk elements,
    ending early where `done` says (REPE/REPNE's ZF test)."""
    def repeated16() -> int:
        step = -size if cpu.sysflags & DF else size
        n = cpu.rep_chunk
        while r[1] & 0xFFFF and n:
            element(step)
            _advance16(r, 1, -1)
            n -= 1
            if done is not None and done():
                return nxt
        if r[1] & 0xFFFF:
            cpu.rep_unfinished = True
            return here
        return nxt
    return repeated16


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

    if address_mask(ins) != M32:
        adv = _advance16
        if m in (Mn.MOVSB, Mn.MOVSW, Mn.MOVSD):
            def element16(step: int) -> None:
                wr(r[7] & 0xFFFF, rd(r[6] & 0xFFFF))
                adv(r, 6, step)
                adv(r, 7, step)
        elif m in (Mn.STOSB, Mn.STOSW, Mn.STOSD):
            def element16(step: int) -> None:
                wr(r[7] & 0xFFFF, r[0] & amask)
                adv(r, 7, step)
        else:
            def element16(step: int) -> None:
                v = rd(r[6] & 0xFFFF)
                r[0] = v if size == 4 else (r[0] & ~amask & M32) | v
                adv(r, 6, step)
        if rep:
            return _repeat16(cpu, r, element16, size, ins.ip32, nxt)

        def once16() -> int:
            element16(-size if cpu.sysflags & DF else size)
            return nxt
        return once16

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
    # would do (MemFns.fill / copy / peek): a memset or memcpy of RAM, stores to nothing,
    # or loads of which the last stays in EAX.
    bulk = None
    paged = 7  # the register whose page a device is in, where it is: EDI, or ESI for LODS
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
    elif c.peek is not None and m in (Mn.LODSB, Mn.LODSW, Mn.LODSD):
        peek, paged = c.peek, 6

        def bulk(count: int, down: int) -> int:
            k, data = peek(r[6], size, count, down)
            if k > 0:
                v = int.from_bytes(data[:size] if down else data[-size:], "little")
                r[0] = v if size == 4 else (r[0] & ~amask & M32) | v
                r[6] = (r[6] + (-k if down else k) * size) & M32
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
                    # destination's (LODS: the source's) page goes one by one, as it would.
                    off = r[paged] & 0xFFF
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
    rep = ins.has_rep_prefix or ins.has_repne_prefix

    if address_mask(ins) != M32:
        adv = _advance16

        def element16(step: int) -> None:
            if is_cmps:
                a, b = rd(r[6] & 0xFFFF), rd(r[7] & 0xFFFF)
                adv(r, 6, step)
            else:
                a, b = r[0] & amask, rd(r[7] & 0xFFFF)
            adv(r, 7, step)
            lf[0] = op; lf[1] = a - b; lf[2] = a; lf[3] = b  # noqa: E702
        if rep:
            until_equal = ins.has_repe_prefix
            return _repeat16(cpu, r, element16, size, ins.ip32, nxt,
                             lambda: get_zf(lf) != until_equal)

        def once16() -> int:
            element16(-size if cpu.sysflags & DF else size)
            return nxt
        return once16

    def element(step: int) -> None:
        if is_cmps:
            a, b = rd(r[6]), rd(r[7])  # CMPS compares [ESI] - [EDI]
            r[6] = (r[6] + step) & M32
        else:
            a, b = r[0] & amask, rd(r[7])  # SCAS compares EAX - [EDI]
        r[7] = (r[7] + step) & M32
        lf[0] = op; lf[1] = a - b; lf[2] = a; lf[3] = b  # noqa: E702

    if not rep:
        def once() -> int:
            element(-size if cpu.sysflags & DF else size)
            return nxt
        return once
    while_equal = ins.has_repe_prefix

    here = ins.ip32
    # The rest of a page's elements in one go where their loads would see nothing but
    # RAM or nothing (MemFns.peek): up to the element that ends the REP, whose comparison
    # leaves the flags (each one's would be overwritten by the next).
    bulk = None
    if c.peek is not None:
        peek, code = c.peek, _ELEMENT_CODE[size]

        def bulk(count: int, down: int) -> tuple[int, bool]:
            """(elements compared, or 0 / -1 as peek says; whether the last ended the REP)."""
            k, data = peek(r[7], size, count, down)
            if k <= 0:
                return k, False
            dst = memoryview(data).cast(code).tolist()
            if is_cmps:
                k2, data2 = peek(r[6], size, k, down)
                if k2 <= 0:
                    return k2, False
                src = memoryview(data2).cast(code).tolist()
                if k2 < k:  # (the k2 nearest EDI: the first ones compared)
                    if down:
                        del dst[:k - k2]
                    else:
                        del dst[k2:]
                    k = k2
                if down:
                    src.reverse()
                    dst.reverse()
                end = _first_end(src, dst, while_equal)
            else:
                if down:
                    dst.reverse()
                a = r[0] & amask
                src = [a] * k
                end = _first_end_scalar(a, dst, while_equal)
            done = k if end is None else end + 1
            a, b = src[done - 1], dst[done - 1]
            d = (-done if down else done) * size
            r[7] = (r[7] + d) & M32
            if is_cmps:
                r[6] = (r[6] + d) & M32
            lf[0] = op; lf[1] = a - b; lf[2] = a; lf[3] = b  # noqa: E702
            return done, end is not None

    def repeated() -> int:
        down = cpu.sysflags & DF
        step = -size if down else size
        n = cpu.rep_chunk
        wait = 0  # elements one by one before asking for a page at a time again
        while r[1] and n:
            if wait:
                wait -= 1
            elif bulk is not None and n > 1 and r[1] > 1:
                k, ended = bulk(min(n, r[1]), down)
                if k > 0:
                    r[1] -= k
                    n -= k
                    if ended:
                        return nxt
                    continue
                if k < 0:  # a device in a page: the rest of it one by one
                    wait = min(_left_in_page(r[7], size, down),
                               _left_in_page(r[6], size, down) if is_cmps else 0x1000)
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


_ELEMENT_CODE = {1: "B", 2: "H", 4: "I"}  # memoryview.cast: little-endian as the guest's


def _left_in_page(a: int, size: int, down: int) -> int:
    off = a & 0xFFF
    return off // size if down else (0xFFF - off) // size


def _first_end(src: list[int], dst: list[int], while_equal: bool) -> int | None:
    """The first element pair whose comparison ends a REPE (unequal) or REPNE (equal)."""
    if while_equal:
        if src == dst:
            return None
        return next(i for i, (x, y) in enumerate(zip(src, dst, strict=True)) if x != y)
    return next((i for i, (x, y) in enumerate(zip(src, dst, strict=True)) if x == y), None)


def _first_end_scalar(a: int, dst: list[int], while_equal: bool) -> int | None:
    """SCAS: the first element that ends a REPE (not `a`) or a REPNE (`a`)."""
    if not while_equal:
        try:
            return dst.index(a)
        except ValueError:
            return None
    if dst.count(a) == len(dst):
        return None
    return next(i for i, x in enumerate(dst) if x != a)


@handles(*_names("INS"), *_names("OUTS"))
def ins_outs(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """INS/OUTS: port I/O, always through the slow path (an I/O intercept point)."""
    _check(ins)
    size = _size(ins)
    r, cpu, nxt, eip, length = c.r, c.cpu, ins.next_ip32, ins.ip32, ins.len
    rd, wr = c.rd[size], c.wr[size]
    is_in = ins.mnemonic in (Mn.INSB, Mn.INSW, Mn.INSD)
    rep = ins.has_rep_prefix or ins.has_repne_prefix
    a = address_mask(ins)  # (SI, DI and CX with a 16-bit address size: the slow path anyway)
    keep = M32 & ~a

    def element(step: int) -> None:
        port = r[2] & 0xFFFF
        if is_in:
            addr = r[7]
            wr(addr & a, cpu.io.read(port, size))
            r[7] = (addr & keep) | ((addr + step) & a)
        else:
            addr = r[6]
            cpu.io.write(port, size, rd(addr & a))
            r[6] = (addr & keep) | ((addr + step) & a)

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
        if rep and not r[1] & a:
            cpu.retire(nxt)
            return None
        info = Intercept("io", eip, length, port=r[2] & 0xFFFF, size=size, is_in=is_in,
                         string=True, rep=rep, linear=(r[7] if is_in else r[6]) & a)
        if cpu.intercepted(info):
            return StopReason.INTERCEPT
        down = cpu.sysflags & DF
        step = -size if down else size
        if not rep:
            element(step)
        else:
            n = cpu.rep_chunk
            nobody_at = getattr(cpu.io, "nobody_at", None)  # (a bus: not kvm.ko's _NoPorts)
            quiet = fill is not None and n > 1 and nobody_at is not None and a == M32 \
                and nobody_at(r[2] & 0xFFFF, size)
            if not quiet and n > IO_REP_CHUNK:
                n = IO_REP_CHUNK  # each element a device access: a shorter chunk
            wait = 0  # elements one by one before asking for a page at a time again
            while r[1] & a and n:
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
                r[1] = (r[1] & keep) | ((r[1] - 1) & a)
                n -= 1
            cpu.rep_unfinished = bool(r[1] & a)
        cpu.retire(nxt if not rep or not r[1] & a else eip)
        return None

    def io_string() -> int:
        raise SlowPath(run)
    return io_string


INTERCEPTABLE.update({"ins", "outs"})
