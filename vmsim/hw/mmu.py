"""32-bit paging (SDM Vol. 3A 4.3) with a TLB.

`translate()` is the TLB miss path: it walks the guest's page directory and page table,
sets accessed and dirty bits as the hardware does, raises #PF with the SDM error code,
and fills the TLB. The interpreter's fast paths look the TLB dicts up themselves.

Seams for memory virtualization (issue 4): every paging-structure reference goes through
`read_pte` / `write_pte`, so a second stage (EPT) can translate it, and `root()` gives the
table the hardware walks, which shadow paging replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vmsim.events import EventStream
from vmsim.hw.ept import EPT_R, EPT_W, EPT_X, Ept, EptStep
from vmsim.hw.exceptions import PF, CpuException
from vmsim.hw.hostmem import HostPhysical
from vmsim.hw.intercept import InterceptExit
from vmsim.hw.memory import OTHER, PAGE_SHIFT, PhysicalMemory

P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
PFEC_P, PFEC_W, PFEC_U, PFEC_RSVD, PFEC_I = 1, 2, 4, 8, 16

READ, WRITE, FETCH = 0, 1, 2
ACCESS_NAMES = ("read", "write", "fetch")

CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
EPT_NEED = (EPT_R, EPT_W, EPT_X)  # the EPT permission each access needs, as Ept.translate


@dataclass(frozen=True)
class WalkStep:
    level: str  # "PDE" or "PTE"
    table: int  # physical address of the table
    index: int
    entry_address: int
    entry: int  # value after any A/D update
    outcome: str  # "table", "4K page", "4M page", "not present", "write protected", "reserved bit"


class TableMemory(Protocol):
    """Where the paging structures the hardware walks live."""

    def read(self, addr: int, size: int) -> int: ...

    def write(self, addr: int, size: int, value: int) -> None: ...


class Mmu:
    def __init__(self, mem: PhysicalMemory, events: EventStream | None = None, source: str = "cpu0"):
        self.mem = mem
        # The paging structures: normally in (guest-)physical memory; under shadow paging
        # the hardware walks kvm.ko's shadow tables in host memory instead.
        self.tables: TableMemory = mem
        # A second stage (EPT), while the CPU runs a guest with EPT enabled.
        self.ept: Ept | None = None
        self.events = events
        self.source = source
        self.cr0 = 0
        self.cr3 = 0
        self.cr4 = 0
        # TLB: linear page number -> physical page base. `tlb` serves reads and fetches;
        # `tlb_w` only holds pages whose walk allowed a write and set the dirty bit.
        self.tlb: dict[int, int] = {}
        self.tlb_w: dict[int, int] = {}
        self.global_pages: set[int] = set()
        # 4-MiB regions (la >> 22) with TLB entries made from a 4-MiB page: the TLB holds
        # them as 4-KiB entries, but INVLPG must drop the whole page (SDM 4.10.4.1).
        self.large_regions: set[int] = set()
        self.last_walk: list[WalkStep] = []
        self.walks = 0  # statistics: TLB misses that walked
        self.refs = 0  # statistics: guest paging-structure references (EPT's are in ept.refs)
        self.trace = False  # emit walk_step / tlb_miss events
        self._la = 0  # the linear address being translated (for EPT's exit qualification)
        self._access = READ  # and how (for a table reader that must fail the walk: kvm.ko's)
        # What the last successful walk found: (writable, dirty, 4-MiB page). kvm.ko's
        # shadow MMU walks the guest's tables with an Mmu of its own and reads this.
        self.last_leaf = (False, False, False)
        # The table memory _walk_quick last read, and its entry reader (_entry_reader).
        self._reader: tuple[object, Callable[[int], int]] = (None, self.tables.read)

    # -- state as plain data (issue 12) -------------------------------------------------
    def state(self) -> dict[str, Any]:
        """CR0/CR3/CR4, the walk statistics, and the TLB. The TLB is a cache, but a run
        resumed with it empty would walk again where the saved run did not, and walks
        cost virtual time (COSTS["walk_ref"]): so it is kept, as page numbers."""
        return {"cr0": self.cr0, "cr3": self.cr3, "cr4": self.cr4,
                "walks": self.walks, "refs": self.refs,
                "tlb": [[k, v] for k, v in self.tlb.items()],
                "tlb_w": [[k, v] for k, v in self.tlb_w.items()],
                "global_pages": sorted(self.global_pages),
                "large_regions": sorted(self.large_regions)}

    def load_state(self, d: dict[str, Any]) -> None:
        self.cr0, self.cr3, self.cr4 = d["cr0"], d["cr3"], d["cr4"]
        self.walks, self.refs = d["walks"], d["refs"]
        self.tlb.clear()
        self.tlb.update((k, v) for k, v in d["tlb"])
        self.tlb_w.clear()
        self.tlb_w.update((k, v) for k, v in d["tlb_w"])
        self.global_pages.clear()
        self.global_pages.update(d["global_pages"])
        self.large_regions.clear()
        self.large_regions.update(d["large_regions"])
        self.last_walk = []

    # -- control ------------------------------------------------------------------------
    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    @property
    def translating(self) -> bool:
        """Does a linear address need the TLB (paging, or EPT, or both)?"""
        return bool(self.cr0 & CR0_PG) or self.ept is not None

    def root(self) -> int:
        return self.cr3 & 0xFFFFF000

    def flush(self, keep_global: bool = False, scope: str = "all") -> None:
        if keep_global and self.global_pages and self.cr4 & CR4_PGE:
            keep = {k: v for k, v in self.tlb.items() if k in self.global_pages}
            keep_w = {k: v for k, v in self.tlb_w.items() if k in self.global_pages}
            self.tlb.clear()
            self.tlb.update(keep)
            self.tlb_w.clear()
            self.tlb_w.update(keep_w)
        else:
            self.tlb.clear()
            self.tlb_w.clear()
            self.global_pages.clear()
            self.large_regions.clear()
        if self.events and self.trace:
            self.events.emit("tlb_flush", self.source, scope=scope, linear=0)

    def invlpg(self, la: int) -> range:
        """Drop the translation of the page holding `la`; gives the linear page numbers
        dropped (all 1024 of a 4-MiB page, whose entries the TLB keeps per 4 KiB)."""
        lpn = la >> 12
        region = la >> 22
        if region in self.large_regions:
            self.large_regions.discard(region)
            lpns = range(region << 10, (region + 1) << 10)
            for k in [k for k in self.tlb if k >> 10 == region]:
                del self.tlb[k]
                self.tlb_w.pop(k, None)
                self.global_pages.discard(k)
        else:
            lpns = range(lpn, lpn + 1)
        self.tlb.pop(lpn, None)
        self.tlb_w.pop(lpn, None)
        self.global_pages.discard(lpn)
        if self.events and self.trace:
            self.events.emit("tlb_flush", self.source, scope="page", linear=la & 0xFFFFF000)
        return lpns

    # -- paging-structure references -------------------------------------------------------
    def entry_address(self, addr: int, steps: list | None) -> int:
        """Where a guest paging-structure entry really is: through EPT when it is on."""
        self.refs += 1
        if self.ept is None:
            return addr
        ept_steps = [] if steps is not None else None
        try:
            frame = self.ept.translate(addr, READ, self._la, False, ept_steps)
        finally:
            if ept_steps:
                steps.extend(ept_steps)
        return frame | (addr & 0xFFF)

    def read_pte(self, pa: int) -> int:
        return self.tables.read(pa, 4)

    def write_pte(self, pa: int, value: int) -> None:
        self.tables.write(pa, 4, value)

    # -- the walk -------------------------------------------------------------------------
    def translate(self, la: int, access: int) -> int:
        """Physical page base for linear address `la`, filling the TLB; raises #PF."""
        if not self.trace:
            self.walks += 1
            return self._walk_quick(la, access)
        steps: list[WalkStep] = []
        if self.events:
            self.events.emit("tlb_miss", self.source, linear=la, access=ACCESS_NAMES[access])
        self.walks += 1
        try:
            return self._walk(la, access, steps)
        finally:
            self.last_walk = steps
            if self.events:
                for s in steps:
                    if isinstance(s, EptStep):
                        self.events.emit("ept_step", self.source, linear=la, gpa=s.gpa,
                                         level=s.level, table=s.table, index=s.index,
                                         entry_address=s.entry_address, entry=s.entry,
                                         outcome=s.outcome)
                        continue
                    self.events.emit("walk_step", self.source, linear=la, level=s.level,
                                     table=s.table, index=s.index,
                                     entry_address=s.entry_address, entry=s.entry,
                                     outcome=s.outcome)

    def _fault(self, la: int, access: int, protection: bool, rsvd: bool = False) -> CpuException:
        code = (PFEC_P if protection or rsvd else 0) | (PFEC_W if access == WRITE else 0)
        if rsvd:
            code |= PFEC_RSVD
        # CPL is always 0 here (U/S = 0); I/D is only reported with PAE+NX or SMEP.
        return CpuException(PF, code, cr2=la)

    def _final(self, gpa_base: int, la: int, access: int, steps: list | None) -> int:
        """The data access's own second-stage translation (guest-physical -> host)."""
        if self.ept is None:
            return gpa_base
        ept_steps = [] if steps is not None else None
        try:
            return self.ept.translate(gpa_base | (la & 0xFFF), access, la, True, ept_steps)
        finally:
            if ept_steps:
                steps.extend(ept_steps)

    def _walk(self, la: int, access: int, steps: list | None) -> int:
        write = access == WRITE
        self._la, self._access = la, access
        if not self.paging:  # EPT alone: linear = guest-physical
            base = self._final(la & 0xFFFFF000, la, access, steps)
            self.last_leaf = (True, True, False)
            self._fill(la, base, write, 1, 0)
            return base
        pd = self.root()
        pde_index = la >> 22
        pde_addr = pd | (pde_index << 2)
        pde_at = self.entry_address(pde_addr, steps)
        pde = self.read_pte(pde_at)
        if not pde & P:
            if steps is not None:
                steps.append(WalkStep("PDE", pd, pde_index, pde_addr, pde, "not present"))
            raise self._fault(la, access, False)
        if pde & PS and self.cr4 & CR4_PSE:
            if pde & (1 << 21):  # reserved in every 32-bit-paging 4-MiB PDE
                if steps is not None:
                    steps.append(WalkStep("PDE", pd, pde_index, pde_addr, pde, "reserved bit"))
                raise self._fault(la, access, True, rsvd=True)
            if write and not pde & RW and self.cr0 & CR0_WP:
                if steps is not None:
                    steps.append(WalkStep("PDE", pd, pde_index, pde_addr, pde, "write protected"))
                raise self._fault(la, access, True)
            new = pde | A | (D if write else 0)
            if steps is not None:
                steps.append(WalkStep("PDE", pd, pde_index, pde_addr, new, "4M page"))
            base = self._final((pde & 0xFFC00000) | (la & 0x003FF000), la, access, steps)
            if new != pde:
                self.write_pte(pde_at, new)
            self.last_leaf = (bool(new & RW), bool(new & D), True)
            self._fill(la, base, write, new & RW, new & G)
            self.large_regions.add(pde_index)
            return base
        # PDE -> page table. The CPU sets A on a PDE it uses, before looking at the PTE.
        if not pde & A:
            pde |= A
            self.write_pte(pde_at, pde)
        pt = pde & 0xFFFFF000
        if steps is not None:
            steps.append(WalkStep("PDE", pd, pde_index, pde_addr, pde, "table"))
        pte_index = (la >> 12) & 0x3FF
        pte_addr = pt | (pte_index << 2)
        pte_at = self.entry_address(pte_addr, steps)
        pte = self.read_pte(pte_at)
        if not pte & P:
            if steps is not None:
                steps.append(WalkStep("PTE", pt, pte_index, pte_addr, pte, "not present"))
            raise self._fault(la, access, False)
        writable = pde & pte & RW
        if write and not writable and self.cr0 & CR0_WP:
            if steps is not None:
                steps.append(WalkStep("PTE", pt, pte_index, pte_addr, pte, "write protected"))
            raise self._fault(la, access, True)
        new = pte | A | (D if write else 0)
        if steps is not None:
            steps.append(WalkStep("PTE", pt, pte_index, pte_addr, new, "4K page"))
        base = self._final(pte & 0xFFFFF000, la, access, steps)
        # A and D are set once the whole translation (second stage included) succeeds.
        if new != pte:
            self.write_pte(pte_at, new)
        self.last_leaf = (bool(writable), bool(new & D), False)
        self._fill(la, base, write, writable, new & G)
        return base

    def _walk_quick(self, la: int, access: int) -> int:
        """_walk with nobody recording its steps: the same references, in the same order,
        with the same A/D writes, faults and exits, without the per-step calls. Entries
        are read by a reader made for the table memory (_entry_reader), and an EPT
        translation its memo holds is taken from it here (Ept.usable_memo: the same hit
        Ept.translate would make, counting the same references)."""
        write = access == WRITE
        self._la, self._access = la, access
        ept, tables = self.ept, self.tables
        if not self.cr0 & CR0_PG:  # EPT alone: linear = guest-physical
            base = la & 0xFFFFF000
            if ept is not None:
                base = ept.translate(la, access, la, True)
            self.last_leaf = (True, True, False)
            self._fill(la, base, write, 1, 0)
            return base
        reader = self._reader
        rd = reader[1] if reader[0] is tables else self._entry_reader(tables)
        memo = ept.usable_memo() if ept is not None else None
        pde_index = la >> 22
        pde_addr = (self.cr3 & 0xFFFFF000) | (pde_index << 2)
        self.refs += 1
        if ept is None:
            pde_at = pde_addr
        else:
            hit = memo.get(pde_addr >> 12) if memo is not None else None
            if hit is not None and hit[2] & EPT_R:
                ept.refs += hit[1]
                pde_at = hit[0] | (pde_addr & 0xFFF)
            else:
                pde_at = ept.translate(pde_addr, READ, la, False) | (pde_addr & 0xFFF)
        pde = rd(pde_at)
        if not pde & P:
            raise self._fault(la, access, False)
        if pde & PS and self.cr4 & CR4_PSE:
            if pde & (1 << 21):  # reserved in every 32-bit-paging 4-MiB PDE
                raise self._fault(la, access, True, rsvd=True)
            if write and not pde & RW and self.cr0 & CR0_WP:
                raise self._fault(la, access, True)
            new = pde | A | (D if write else 0)
            base = (pde & 0xFFC00000) | (la & 0x003FF000)
            if ept is not None:
                base = ept.translate(base | (la & 0xFFF), access, la, True)
            if new != pde:
                tables.write(pde_at, 4, new)
            self.last_leaf = (bool(new & RW), bool(new & D), True)
            self._fill(la, base, write, new & RW, new & G)
            self.large_regions.add(pde_index)
            return base
        if not pde & A:
            pde |= A
            tables.write(pde_at, 4, pde)
            if ept is not None:
                memo = ept.usable_memo()  # (a write to kvm.ko's pool would end it)
        pte_addr = (pde & 0xFFFFF000) | (((la >> 12) & 0x3FF) << 2)
        self.refs += 1
        if ept is None:
            pte_at = pte_addr
        else:
            hit = memo.get(pte_addr >> 12) if memo is not None else None
            if hit is not None and hit[2] & EPT_R:
                ept.refs += hit[1]
                pte_at = hit[0] | (pte_addr & 0xFFF)
            else:
                pte_at = ept.translate(pte_addr, READ, la, False) | (pte_addr & 0xFFF)
        pte = rd(pte_at)
        if not pte & P:
            raise self._fault(la, access, False)
        writable = pde & pte & RW
        if write and not writable and self.cr0 & CR0_WP:
            raise self._fault(la, access, True)
        new = pte | A | (D if write else 0)
        base = pte & 0xFFFFF000
        if ept is not None:
            gpa = base | (la & 0xFFF)
            hit = memo.get(gpa >> 12) if memo is not None else None
            if hit is not None and hit[2] & EPT_NEED[access]:
                ept.refs += hit[1]
                base = hit[0]
            else:
                base = ept.translate(gpa, access, la, True)
        if new != pte:
            tables.write(pte_at, 4, new)
        self.last_leaf = (bool(writable), bool(new & D), False)
        # _fill, inline
        lpn = la >> 12
        self.tlb[lpn] = base
        if write and (writable or not self.cr0 & CR0_WP):
            self.tlb_w[lpn] = base
        else:
            self.tlb_w.pop(lpn, None)
        if new & G and self.cr4 & CR4_PGE:
            self.global_pages.add(lpn)
        return base

    def _entry_reader(self, tables: TableMemory) -> Callable[[int], int]:
        """A function reading the 4-byte paging-structure entry at an aligned address of
        `tables`, as `tables.read(addr, 4)` does, in one call for the memories the
        hardware walks (guest RAM; host memory: kvm.ko's pool, then guest RAM)."""
        if type(tables) is HostPhysical:
            pages, mem = tables.pool.pages, tables.ram
        elif type(tables) is PhysicalMemory:
            pages, mem = None, tables
        else:
            def rd(addr: int) -> int:
                return tables.read(addr, 4)
            self._reader = (tables, rd)
            return rd
        if type(mem) is not PhysicalMemory:
            def rd(addr: int) -> int:
                return tables.read(addr, 4)
            self._reader = (tables, rd)
            return rd

        kind, u32, size = mem.kind, mem.u32, mem.size
        # 32-bit views of the pool's pages, each kept while its page is the one there (a page
        # freed and allocated again, or put back by a restore, is a new bytearray)
        views: dict[int, memoryview] = {}

        def rd(addr: int) -> int:
            if pages:
                base = addr & 0xFFFFF000
                page = pages.get(base)
                if page is not None:
                    v = views.get(base)
                    if v is None or v.obj is not page:
                        v = views[base] = memoryview(page).cast("I")
                    return v[(addr & 0xFFF) >> 2]
            # PhysicalMemory.read of an aligned word (entries are): RAM, or a device / nothing
            if kind[addr >> PAGE_SHIFT] != OTHER and addr + 4 <= size:
                return u32[addr >> 2]
            return mem.read(addr, 4)
        self._reader = (tables, rd)
        return rd

    def _fill(self, la: int, base: int, write: bool, writable: int, is_global: int) -> None:
        lpn = la >> 12
        self.tlb[lpn] = base
        # A later write may use this entry only once D is set and the write is allowed.
        if write and (writable or not self.cr0 & CR0_WP):
            self.tlb_w[lpn] = base
        else:
            self.tlb_w.pop(lpn, None)
        if is_global and self.cr4 & CR4_PGE:
            self.global_pages.add(lpn)

    def probe(self, la: int) -> int | None:
        """Translate for a viewer: no A/D updates, no TLB fill, no fault, no exit. The
        result is the address as the paging structures in use give it (guest-physical
        under EPT, whose second stage is not applied). None if unmapped."""
        if not self.paging:
            return la
        try:
            pde = self.tables.read(self.root() | ((la >> 22) << 2), 4)
            if not pde & P:
                return None
            if pde & PS and self.cr4 & CR4_PSE:
                return (pde & 0xFFC00000) | (la & 0x3FFFFF)
            pte = self.tables.read((pde & 0xFFFFF000) | (((la >> 12) & 0x3FF) << 2), 4)
        except InterceptExit:  # a table in unbacked guest-physical space
            return None
        if not pte & P:
            return None
        return (pte & 0xFFFFF000) | (la & 0xFFF)
