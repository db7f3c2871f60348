"""The page walk nobody records (`Mmu._walk_quick`: entries read through a reader made for
the table memory, EPT translations taken from the EPT walker's memo inline) against the
recorded walk (`Mmu._walk`, what runs while walk events are listened to): for random
page tables, linear addresses and accesses, the same result, the same #PF or EPT exit,
the same references counted (guest and EPT), the same A/D bits written, the same TLB.
Tables in guest RAM (with and without EPT), in kvm.ko's pool (as shadow paging walks),
and behind a table memory of another kind (kvm.ko's own walkers) are all covered.
"""

from __future__ import annotations

import random

import pytest

from vmsim.hw.ept import EPT_LARGE, EPT_R, EPT_RWX, Ept, build_identity_ept
from vmsim.hw.exceptions import CpuException
from vmsim.hw.hostmem import HostPages, HostPhysical
from vmsim.hw.intercept import InterceptExit
from vmsim.hw.memory import PhysicalMemory
from vmsim.hw.mmu import CR0_PG, CR0_WP, CR4_PGE, CR4_PSE, FETCH, READ, WRITE, Mmu

RAM = 8 << 20
PD = 0x200000
PT = 0x201000  # eight page tables from here


class OtherTables:
    """A table memory that is neither guest RAM nor host memory (kvm.ko's GuestTables)."""

    def __init__(self, mem: PhysicalMemory):
        self.mem = mem

    def read(self, addr: int, size: int) -> int:
        return self.mem.read(addr, size)

    def write(self, addr: int, size: int, value: int) -> None:
        self.mem.write(addr, size, value)


def _tables(rnd: random.Random, mem: PhysicalMemory, base_pd: int, base_pt: int,
            write) -> None:
    """Random 32-bit paging structures: PDEs present or not, 4-MiB pages, PTEs with
    random present/RW/A/D/G bits, frames anywhere in RAM."""
    for i in range(1024):
        if i < 8 and rnd.random() < 0.8:
            pde = (base_pt + i * 0x1000) | 1 | rnd.choice((0, 2)) | rnd.choice((0, 0x20))
        elif rnd.random() < 0.1:
            pde = (rnd.randrange(RAM >> 22) << 22) | 0x81 | rnd.choice((0, 2)) | \
                rnd.choice((0, 0x20, 0x60)) | rnd.choice((0, 0x100)) | rnd.choice((0, 0, 1 << 21))
        else:
            pde = 0
        write(base_pd + i * 4, pde)
    for t in range(8):
        for j in range(1024):
            pte = (rnd.randrange(RAM >> 12) << 12) | (rnd.random() < 0.85) | \
                rnd.choice((0, 2)) | rnd.choice((0, 0x20, 0x60)) | rnd.choice((0, 0x100))
            write(base_pt + t * 0x1000 + j * 4, pte)


def _walk(mmu: Mmu, la: int, access: int):
    try:
        return ("ok", mmu.translate(la, access))
    except CpuException as e:
        return ("pf", e.vector, e.error_code, e.cr2)
    except InterceptExit as x:
        return ("exit", x.info.kind, x.info.linear, x.info.extra.get("gpa"))


def _view(mmu: Mmu, mem: PhysicalMemory, host: HostPages | None) -> tuple:
    pool = sorted((a, bytes(p)) for a, p in host.pages.items()) if host is not None else []
    return (mmu.walks, mmu.refs, mmu.ept.refs if mmu.ept is not None else 0, dict(mmu.tlb),
            dict(mmu.tlb_w), set(mmu.global_pages), set(mmu.large_regions), mmu.last_leaf,
            bytes(mem.ram[PD:PT + 8 * 0x1000]), pool)


def _pair(seed: int, where: str):
    """Two identical machines, one walking quickly, one recording its steps."""
    out = []
    for trace in (False, True):
        rnd = random.Random(seed)
        mem = PhysicalMemory(RAM)
        mmu = Mmu(mem)
        host = None
        if where in ("ept", "pool"):
            host = HostPages()
            mmu.tables = HostPhysical(mem, host)
        elif where == "other":
            mmu.tables = OtherTables(mem)
        if where == "pool":
            # The root and its tables in kvm.ko's pool (shadow paging's tables).
            pd = host.alloc()
            pts = [host.alloc() for _ in range(8)]
            for i in range(1, 8):
                assert pts[i] == pts[0] + i * 0x1000
            _tables(rnd, mem, pd, pts[0], lambda a, v, h=host: h.write(a, 4, v))
            mmu.cr3 = pd
        else:
            _tables(rnd, mem, PD, PT, lambda a, v, m=mem: m.write(a, 4, v))
            mmu.cr3 = PD
        if where == "ept":
            eptp = build_identity_ept(host, RAM)
            mmu.ept = Ept(host, eptp)
        mmu.cr0 = CR0_PG | 1 | rnd.choice((0, CR0_WP))
        mmu.cr4 = rnd.choice((0, CR4_PSE, CR4_PSE | CR4_PGE))
        mmu.trace = trace
        out.append((mmu, mem, host, rnd))
    return out


@pytest.mark.parametrize("where", ["ram", "ept", "pool", "other"])
@pytest.mark.parametrize("seed", range(4))
def test_quick_walk_is_the_recorded_walk(seed: int, where: str):
    (quick, mem_q, host_q, rnd), (slow, mem_s, host_s, _) = _pair(seed, where)
    assert quick.tables.__class__ is slow.tables.__class__
    for i in range(600):
        la = (rnd.randrange(8) << 22 if rnd.random() < 0.9 else rnd.randrange(1 << 10) << 22) \
            | rnd.randrange(1 << 22)
        access = rnd.choice((READ, WRITE, FETCH))
        if rnd.random() < 0.3:  # walk again after the TLB forgets it
            for m in (quick, slow):
                m.tlb.clear()
                m.tlb_w.clear()
        if where == "ept" and i % 97 == 50:
            # kvm.ko changes its tables mid-run: a 2-MiB EPT leaf made read-only, or put back.
            for m, host in ((quick, host_q), (slow, host_s)):
                pml4 = m.ept.eptp & ~0xFFF
                pd = host.read(host.read(pml4, 8) & ~0xFFF, 8) & ~0xFFF
                leaf = (i // 97) % 4
                old = host.read(pd + leaf * 8, 8)
                host.write(pd + leaf * 8, 8, (old & ~EPT_RWX) | (EPT_R if old & 2 else EPT_RWX)
                           | EPT_LARGE)
        a, b = _walk(quick, la, access), _walk(slow, la, access)
        assert a == b, f"walk {i}: {la:#x} access {access}: quick {a}, recorded {b}"
        assert _view(quick, mem_q, host_q) == _view(slow, mem_s, host_s), f"walk {i}"
