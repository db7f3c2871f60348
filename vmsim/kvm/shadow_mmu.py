"""kvm.ko's shadow MMU, as KVM did it before EPT (`kvm_intel ept=0`; LNX
Documentation/virt/kvm/x86/mmu.rst, arch/x86/kvm/mmu/mmu.c, paging_tmpl.h).

The hardware walks *shadow* page tables that kvm.ko builds in its own memory and that
map guest-virtual addresses straight to host frames; the guest believes its own CR3
(gCR3) is loaded. Everything the guest does to its address space therefore exits:
- a #PF (the exception bitmap has #PF): `paging32_page_fault` walks the guest's tables
  in software; if the guest's own translation fails the #PF is injected with the guest's
  error code and CR2, otherwise the missing shadow entries are filled;
- guest page-table pages are write-protected in the shadow tables, so a write to one
  faults, is emulated, and `kvm_mmu_pte_write` zaps the shadow entries it affects;
- MOV to CR3 exits and switches to the shadow root for the new gCR3 (MOV from CR3 exits
  and answers gCR3); INVLPG exits and drops the shadow entry;
- guest accessed and dirty bits are set by the software walk, exactly when the hardware
  would: a page is mapped read-only until the guest's PTE is dirty.

vmsim simplifications, stated once: shadow tables use the guest's own 32-bit format
(1024 four-byte entries; KVM uses 64-bit sptes and quadrants); leaf shadows are always
write-protected, never "unsync"; MMIO gets no cached spte (each access faults and is
emulated); a guest 4 MiB page is shadowed by a "direct" page of 4 KiB entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmsim.costs import COSTS
from vmsim.hw import exceptions as X
from vmsim.hw.exceptions import CpuException
from vmsim.hw.memory import PhysicalMemory
from vmsim.hw.mmu import CR0_PG, CR0_WP, CR4_PSE, RW, US, A, D, Mmu, P
from vmsim.hw.vmcs import F
from vmsim.kvm import emulate
from vmsim.kvm.kvm_main import GuestTables
from vmsim.kvm.vmx import kvm_queue_exception
from vmsim.state import register

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu, SimVm

PFERR_PRESENT, PFERR_WRITE = 1, 2
ENTRIES = 1024


@register
@dataclass
class KvmMmuPage:
    """struct kvm_mmu_page: one shadow table and what it shadows (its role)."""

    gfn: int  # the guest table frame it shadows, or the first gfn a direct page maps
    level: int  # 2: shadows a page directory, 1: a page table
    direct: bool  # maps a linear range directly (guest paging off, or a 4 MiB guest page)
    spt: int  # host-physical address of the shadow table
    parent_ptes: set[int] = field(default_factory=set)
    # role.access's ACC_WRITE_MASK: a direct page for a guest 4 MiB page whose PDE is clean
    # (or read-only) maps it read-only, so that the first write faults and sets the PDE's
    # dirty bit; another PDE of the same 4 MiB, dirty, has a writable page of its own.
    writable: bool = True

    @property
    def role(self) -> tuple[int, bool, bool]:
        return (self.level, self.direct, self.writable)

    @property
    def key(self) -> tuple[int, int, bool, bool]:
        return (self.gfn, *self.role)


class ShadowMmu:
    def __init__(self, vm: SimVm):
        self.vm = vm
        self.host = vm.host
        self.pages: dict[tuple[int, int, bool, bool], KvmMmuPage] = {}  # by KvmMmuPage.key
        self.by_spt: dict[int, KvmMmuPage] = {}
        self.rmap: dict[int, set[int]] = {}  # gfn -> addresses of leaf sptes mapping it
        self.write_tracked: dict[int, int] = {}  # guest table gfn -> shadow pages of it
        self.stats = {"shadow_pages": 0, "zapped": 0, "pte_writes": 0, "faults": 0}
        self._error_code = 0  # of the guest #PF being handled (for its tracepoint)

    # -- shadow pages --------------------------------------------------------------------------
    def get_page(self, v: SimVcpu, gfn: int, level: int, direct: bool,
                 writable: bool = True) -> KvmMmuPage:
        """kvm_mmu_get_shadow_page: find the page for (gfn, role) or make it."""
        key = (gfn, level, direct, writable)
        sp = self.pages.get(key)
        if sp is not None:
            return sp
        sp = KvmMmuPage(gfn, level, direct, self.host.alloc(), writable=writable)
        self.pages[key] = sp
        self.by_spt[sp.spt] = sp
        self.stats["shadow_pages"] += 1
        if not direct:
            self._account_shadowed(v, gfn)
        self._emit(v, "create", sp)
        return sp

    def _account_shadowed(self, v: SimVcpu, gfn: int) -> None:
        """A guest page table is shadowed now: write-protect every spte that maps it."""
        self.write_tracked[gfn] = self.write_tracked.get(gfn, 0) + 1
        for addr in self.rmap.get(gfn, ()):
            spte = self.host.read(addr, 4)
            if spte & RW:
                self.host.write(addr, 4, spte & ~RW)
        v.cpu.mmu.flush(scope="write-protect")

    def zap_page(self, v: SimVcpu, sp: KvmMmuPage) -> None:
        """kvm_mmu_prepare_zap_page: unlink from parents, drop children links, free."""
        for parent in list(sp.parent_ptes):
            self.host.write(parent, 4, 0)
        for i in range(ENTRIES):
            addr = sp.spt + 4 * i
            spte = self.host.read(addr, 4)
            if not spte & P:
                continue
            if sp.level == 2:
                child = self.by_spt.get(spte & 0xFFFFF000)
                if child is not None:
                    child.parent_ptes.discard(addr)
            else:
                self._rmap_remove(spte >> 12, addr)
        del self.pages[sp.key]
        del self.by_spt[sp.spt]
        if not sp.direct:
            n = self.write_tracked.get(sp.gfn, 0) - 1
            if n > 0:
                self.write_tracked[sp.gfn] = n
            else:
                self.write_tracked.pop(sp.gfn, None)
        self.host.free(sp.spt)
        self.stats["zapped"] += 1
        self._emit(v, "zap", sp)

    def reset(self, v: SimVcpu) -> None:
        """kvm_mmu_reset_context after a paging-mode change: start from nothing."""
        for sp in list(self.pages.values()):
            if sp.spt in self.by_spt:
                self.zap_page(v, sp)
        self.rmap.clear()
        self.write_tracked.clear()

    def _rmap_remove(self, gfn: int, addr: int) -> None:
        s = self.rmap.get(gfn)
        if s is not None:
            s.discard(addr)
            if not s:
                del self.rmap[gfn]

    def _set_spte(self, addr: int, value: int) -> None:
        old = self.host.read(addr, 4)
        if old & P:
            self._rmap_remove(old >> 12, addr)
        self.host.write(addr, 4, value)
        if value & P:
            self.rmap.setdefault(value >> 12, set()).add(addr)

    def _emit(self, v: SimVcpu, action: str, sp: KvmMmuPage) -> None:
        # kvmmmu:kvm_mmu_get_page (vmsim traces only pages it creates: an existing page
        # found again is not an event) and kvmmmu:kvm_mmu_prepare_zap_page.
        ev = v.events
        if ev is None:
            return
        roots = 1 if sp.level == 2 else 0  # a PD-level page is a root in 2-level paging
        if action == "create":
            if ev.build("kvm_mmu_get_page"):
                ev.emit("kvm_mmu_get_page", v.name, gfn=sp.gfn, level=sp.level,
                        direct=sp.direct, spt=sp.spt, created=True, root_count=roots)
        elif ev.build("kvm_mmu_prepare_zap_page"):
            ev.emit("kvm_mmu_prepare_zap_page", v.name, gfn=sp.gfn, level=sp.level,
                    direct=sp.direct, spt=sp.spt, root_count=roots)

    def _trace_walk(self, v: SimVcpu, gva: int, error_code: int) -> None:
        """kvmmmu:kvm_mmu_pagetable_walk and one kvm_mmu_paging_element per guest entry
        read (FNAME(walk_addr_generic)), as read before the walk sets A/D bits."""
        ev = v.events
        if ev is None:
            return
        if ev.build("kvm_mmu_pagetable_walk"):
            ev.tp["kvm_mmu_pagetable_walk"].fire(v.name, gva, error_code)
        if not ev.wants("kvm_mmu_paging_element") or not v.guest_cr0 & CR0_PG:
            return
        mem = self.vm.mem
        table = v.guest_cr3 & 0xFFFFF000
        for level, index in ((2, gva >> 22), (1, (gva >> 12) & 0x3FF)):
            at = table + 4 * index
            if not mem.is_ram(at):
                return  # the walk fails (kvm_mmu_walker_error)
            pte = mem.read(at, 4)
            ev.tp["kvm_mmu_paging_element"].fire(v.name, pte, level)
            if not pte & P or (level == 2 and pte & 0x80 and v.guest_cr4 & CR4_PSE):
                return
            table = pte & 0xFFFFF000

    # -- roots ---------------------------------------------------------------------------------
    def root_for(self, v: SimVcpu) -> KvmMmuPage:
        """The shadow root for the guest's current mode and gCR3 (kvm_mmu_load)."""
        if not v.guest_cr0 & CR0_PG:
            return self.get_page(v, 0, 2, True)  # nonpaging: guest-virtual = guest-physical
        return self.get_page(v, (v.guest_cr3 & 0xFFFFF000) >> 12, 2, False)

    def load(self, v: SimVcpu) -> None:
        root = self.root_for(v)
        v.vmcs.write(F.GUEST_CR3, root.spt)

    # -- the page-fault path ---------------------------------------------------------------------
    def guest_walker(self, v: SimVcpu) -> Mmu:
        """FNAME(walk_addr): the guest's own tables, walked by kvm.ko in software; it sets
        the guest's accessed and dirty bits as the hardware would."""
        mem: PhysicalMemory = self.vm.mem
        w = Mmu(mem)
        w.tables = GuestTables(mem, w)  # a table outside the memslots fails the walk
        w.cr0, w.cr3, w.cr4 = v.guest_cr0, v.guest_cr3, v.guest_cr4
        return w

    def page_fault(self, v: SimVcpu, gva: int, error_code: int) -> int:
        """paging32_page_fault / nonpaging_page_fault. 1: resume; 0: kvm_run filled."""
        self.stats["faults"] += 1
        v.handler_cost += COSTS["shadow_fault"]
        write = bool(error_code & PFERR_WRITE)
        self._error_code = error_code
        self._trace_walk(v, gva, error_code)
        walker = self.guest_walker(v)
        try:
            frame = walker.translate(gva, 1 if write else 0)
        except CpuException as e:
            # The guest's own tables deny it: the guest takes the #PF (inject_page_fault).
            v.cpu.cr2 = gva
            kvm_queue_exception(v, X.PF, e.error_code)
            self._fault_event(v, gva, None, "inject #PF")
            return 1
        writable, dirty, large = walker.last_leaf
        if not v.guest_cr0 & CR0_PG:
            writable, dirty = True, True
        elif not v.guest_cr0 & CR0_WP:
            writable = True  # CPL 0 with CR0.WP=0 writes read-only pages
        gpa = frame | (gva & 0xFFF)
        gfn = gpa >> 12
        if not self.vm.mem.is_ram(gpa):
            self._fault_event(v, gva, gpa, "emulate MMIO")
            return emulate.x86_emulate_instruction(v)
        if write and gfn in self.write_tracked:
            # A write to a guest page table: emulate it, then update the shadows.
            self._fault_event(v, gva, gpa, "emulate page-table write")
            return self.emulate_pte_write(v, gpa)
        spte_addr = self._fetch(v, gva, large, writable and dirty)
        allow_w = writable and dirty and gfn not in self.write_tracked
        spte = (gfn << 12) | P | US | A | (RW | D if allow_w else 0)
        self._set_spte(spte_addr, spte)
        v.cpu.mmu.invlpg(gva)
        self._fault_event(v, gva, gpa, "map" + (" writable" if allow_w else " read-only"))
        return 1

    def _fetch(self, v: SimVcpu, gva: int, large: bool, gpte_writable: bool) -> int:
        """FNAME(fetch): make sure the shadow PD entry for gva links a shadow PT; return
        the address of the leaf spte. For a guest 4 MiB page the direct page's role has
        the access the guest's PDE gives (`gpte_writable`: writable and dirty); a linked
        page of the other access is unlinked first (validate_direct_spte)."""
        root = self.root_for(v)
        pde_addr = root.spt + 4 * (gva >> 22)
        spde = self.host.read(pde_addr, 4)
        child = self.by_spt.get(spde & 0xFFFFF000) if spde & P else None
        direct_large = not root.direct and large and bool(v.guest_cr4 & CR4_PSE)
        if child is not None and direct_large and child.writable != gpte_writable:
            self.host.write(pde_addr, 4, 0)
            child.parent_ptes.discard(pde_addr)
            v.cpu.mmu.flush(scope="shadow pde")
            child = None
        if child is None:
            if root.direct:
                child = self.get_page(v, (gva >> 22) << 10, 1, True)
            else:
                gpde = self.vm.mem.read((v.guest_cr3 & 0xFFFFF000) + 4 * (gva >> 22), 4)
                if direct_large:
                    child = self.get_page(v, (gpde & 0xFFC00000) >> 12, 1, True,
                                          gpte_writable)
                else:
                    child = self.get_page(v, gpde >> 12, 1, False)
            self.host.write(pde_addr, 4, child.spt | P | RW | US | A)
            child.parent_ptes.add(pde_addr)
        return child.spt + 4 * ((gva >> 12) & 0x3FF)

    def _fault_event(self, v: SimVcpu, gva: int, gpa: int | None, action: str) -> None:
        # kvm:kvm_page_fault (handle_exception_nmi -> kvm_mmu_page_fault), with what the
        # shadow MMU did about it (vmsim's fields gpa and action).
        ev = v.events
        if ev is not None and ev.build("kvm_page_fault"):
            ev.tp["kvm_page_fault"].fire(v.name, gva, self._error_code, gpa, action)

    # -- writes to guest page tables ---------------------------------------------------------------
    def emulate_pte_write(self, v: SimVcpu, gpa: int) -> int:
        r = emulate.x86_emulate_instruction(v)
        self.kvm_mmu_pte_write(v, gpa)
        return r

    def kvm_mmu_pte_write(self, v: SimVcpu, gpa: int) -> None:
        """The page-track notifier: a guest table entry changed; zap what shadows it."""
        self.stats["pte_writes"] += 1
        gfn, index = gpa >> 12, (gpa & 0xFFF) >> 2
        for sp in [p for p in self.pages.values() if p.gfn == gfn and not p.direct]:
            addr = sp.spt + 4 * index
            spte = self.host.read(addr, 4)
            if not spte & P:
                continue
            if sp.level == 2:
                child = self.by_spt.get(spte & 0xFFFFF000)
                self.host.write(addr, 4, 0)
                if child is not None:
                    child.parent_ptes.discard(addr)
            else:
                self._set_spte(addr, 0)
        v.cpu.mmu.flush(scope="pte write")
        ev = v.events
        if ev is not None and ev.build("pte_write"):
            ev.emit("pte_write", v.name, gpa=gpa, gfn=gfn, index=index)

    # -- INVLPG, CR3 --------------------------------------------------------------------------------
    def invlpg(self, v: SimVcpu, gva: int) -> None:
        """kvm_mmu_invlpg: drop the leaf spte for gva in the current root."""
        root = self.root_for(v)
        spde = self.host.read(root.spt + 4 * (gva >> 22), 4)
        child = self.by_spt.get(spde & 0xFFFFF000) if spde & P else None
        if child is not None:
            self._set_spte(child.spt + 4 * ((gva >> 12) & 0x3FF), 0)
        v.cpu.invlpg(gva)

    def new_pgd(self, v: SimVcpu, cr3: int) -> None:
        """kvm_mmu_new_pgd: the guest loaded CR3; switch to (or build) its shadow root."""
        v.guest_cr3 = cr3
        self.load(v)
