"""A bare CPU on a few MiB of RAM, with helpers to lay out a GDT, an IDT and page tables.

Layout (physical = linear while paging is off):
    0x1000  GDT (null, 0x08 flat code, 0x10 flat data)
    0x2000  IDT (256 entries, none present until `gate()`)
    0x3000  handlers: vector v's handler at HANDLERS + 16*v is `hlt`
    0x10000 code under test
    0x80000 top of the stack
    0x100000.. page directory and tables when a test turns paging on
"""

from __future__ import annotations

import struct

from vmsim.events import Event, EventStream
from vmsim.hw.cpu import Cpu, StopReason
from vmsim.hw.memory import PhysicalMemory

GDT, IDT, HANDLERS, CODE, STACK = 0x1000, 0x2000, 0x3000, 0x10000, 0x80000
PD = 0x100000
HLT = b"\xF4"


class Bench:
    def __init__(self, code: bytes = b"", mib: int = 4, kinds: tuple[str, ...] = ()):
        self.mem = PhysicalMemory(mib << 20)
        self.events = EventStream()
        self.seen: list[Event] = []
        if kinds:
            self.events.subscribe(self.seen.append, list(kinds))
        self.cpu = Cpu(self.mem, events=self.events)
        self.cpu.reset_flat(CODE, STACK)
        self.mem.load(GDT, struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
        self.cpu.gdtr = (GDT, 3 * 8 - 1)
        self.cpu.idtr = (IDT, 256 * 8 - 1)
        self.mem.load(HANDLERS, HLT * (16 * 256))
        if code:
            self.mem.load(CODE, code)

    # -- tables ----------------------------------------------------------------------------
    def gate(self, vector: int, handler: int | None = None, kind: int = 0x8E,
             selector: int = 0x08) -> None:
        """IDT entry: kind 0x8E interrupt gate, 0x8F trap gate (bit 7: present)."""
        off = HANDLERS + 16 * vector if handler is None else handler
        lo = (selector << 16) | (off & 0xFFFF)
        hi = (off & 0xFFFF0000) | (kind << 8)
        self.mem.load(IDT + 8 * vector, struct.pack("<II", lo, hi))

    def all_gates(self) -> None:
        for v in range(256):
            self.gate(v)

    def handler(self, vector: int) -> int:
        return HANDLERS + 16 * vector

    def paging(self, wp: bool = True, pse: bool = False, pge: bool = False) -> None:
        """Identity map 0-4 MiB with 4-KiB pages (PT at PD+0x1000) and turn paging on."""
        pt = PD + 0x1000
        self.mem.load(PD, bytes(4096))
        self.w32(PD, pt | 3)
        self.mem.load(pt, b"".join(struct.pack("<I", (i << 12) | 3) for i in range(1024)))
        self.cpu.set_control(3, PD)
        self.cpu.set_control(4, (0x10 if pse else 0) | (0x80 if pge else 0))
        self.cpu.set_control(0, self.cpu.cr0 | 0x80000000 | (0x10000 if wp else 0))

    def map(self, la: int, pte: int, pt: int | None = None) -> int:
        """Point the PTE for `la` at `pte` (a page table per 4 MiB at PD + 0x1000*(n+1))."""
        n = la >> 22
        pt = PD + 0x1000 * (n + 1) if pt is None else pt
        if not self.r32(PD + 4 * n) & 1:
            self.mem.load(pt, bytes(4096))
            self.w32(PD + 4 * n, pt | 3)
        addr = (self.r32(PD + 4 * n) & 0xFFFFF000) + 4 * ((la >> 12) & 0x3FF)
        self.w32(addr, pte)
        return addr

    # -- memory ------------------------------------------------------------------------------
    def r32(self, pa: int) -> int:
        return self.mem.read(pa, 4)

    def w32(self, pa: int, v: int) -> None:
        self.mem.write(pa, 4, v)

    def stack(self, n: int) -> list[int]:
        """The top n dwords of the stack (a delivered frame: [EIP, CS, EFLAGS] or [ec, ...])."""
        esp = self.cpu.r[4]
        return [self.r32(esp + 4 * i) for i in range(n)]

    # -- running ---------------------------------------------------------------------------
    def run(self, n: int = 1000) -> StopReason:
        return self.cpu.run(n)

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.seen if e.kind == kind]
