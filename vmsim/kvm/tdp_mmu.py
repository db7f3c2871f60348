"""kvm.ko's TDP MMU: the EPT tables, built lazily (LNX arch/x86/kvm/mmu/tdp_mmu.c,
mmu.c kvm_tdp_page_fault, handle_ept_violation / handle_ept_misconfig in vmx.c).

The root starts empty. The first touch of a guest-physical page is an EPT violation;
`kvm_tdp_page_fault` then fills the missing levels down to a 4 KiB leaf that maps the
gfn to its host frame (RWX, write-back, ignore PAT) and the guest resumes. A gfn that no
memory slot backs is MMIO: KVM installs a deliberately misconfigured leaf (W+X without R)
so that later accesses exit as EPT misconfigurations, its fast MMIO path, and emulates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.hw.ept import ADDR_MASK, EPT_IGNORE_PAT, EPT_MT_WB, EPT_RWX, EPT_W, EPT_X
from vmsim.hw.vmcs import F

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu, SimVm

VMX_EPTP_MT_WB = 6
VMX_EPTP_PWL_4 = 3 << 3  # page-walk length - 1
VMX_EPT_MISCONFIG_WX_VALUE = EPT_W | EPT_X
LEAF_FLAGS = EPT_RWX | EPT_MT_WB | EPT_IGNORE_PAT


class TdpMmu:
    """One EPT hierarchy for the VM (all its vCPUs share it)."""

    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = (  # noqa: RUF023
        "vm", "host", "root", "eptp", "mapped", "mmio", "tables")

    def __init__(self, vm: SimVm):
        self.vm = vm
        self.host = vm.host
        self.root = self.host.alloc()
        self.eptp = self.root | VMX_EPTP_PWL_4 | VMX_EPTP_MT_WB
        self.mapped: set[int] = set()  # gfns with a leaf
        self.mmio: set[int] = set()  # gfns with an MMIO (misconfigured) leaf
        self.tables = 1

    def load(self, v: SimVcpu) -> None:
        """kvm_mmu_load: point the vCPU's VMCS at the root."""
        v.vmcs.write(F.EPT_POINTER, self.eptp)

    def _leaf_slot(self, gfn: int) -> tuple[int, list[int]]:
        """The leaf entry's host address, allocating the missing tables on the way."""
        table = self.root
        created = []
        for level in (4, 3, 2):
            index = (gfn >> (9 * (level - 1))) & 0x1FF
            addr = table + index * 8
            entry = self.host.read(addr, 8)
            if not entry & EPT_RWX:
                child = self.host.alloc()
                self.tables += 1
                created.append(level - 1)
                entry = child | EPT_RWX  # non-leaf: full permissions, the leaf decides
                self.host.write(addr, 8, entry)
            table = entry & ADDR_MASK
        return table + (gfn & 0x1FF) * 8, created

    def map_gfn(self, gfn: int) -> list[int]:
        """Map a RAM gfn to its host frame (host-physical = guest-physical for guest RAM)."""
        addr, created = self._leaf_slot(gfn)
        self.host.write(addr, 8, (gfn << 12) | LEAF_FLAGS)
        self.mapped.add(gfn)
        return created

    def mark_mmio(self, gfn: int) -> None:
        addr, _ = self._leaf_slot(gfn)
        self.host.write(addr, 8, VMX_EPT_MISCONFIG_WX_VALUE)
        self.mmio.add(gfn)

    def entries(self) -> list[tuple[int, int]]:
        """(gfn, leaf entry) for every leaf, for views."""
        out = []
        for gfn in sorted(self.mapped | self.mmio):
            addr, _ = self._leaf_slot(gfn)
            out.append((gfn, self.host.read(addr, 8)))
        return out


def kvm_tdp_page_fault(v: SimVcpu, gpa: int) -> int:
    """The EPT-violation path for guest RAM: map the page, resume (1). MMIO: emulate."""
    from vmsim.kvm import emulate

    vm = v.vm
    tdp = vm.tdp
    gfn = gpa >> 12
    ev = v.events
    if vm.mem.is_ram(gpa):
        created = tdp.map_gfn(gfn)
        if ev is not None and ev.build("tdp_map"):
            ev.emit("tdp_map", v.name, gfn=gfn, hpa=gfn << 12, new_tables=len(created),
                    mmio=False)
        return 1
    tdp.mark_mmio(gfn)
    if ev is not None and ev.build("tdp_map"):
        ev.emit("tdp_map", v.name, gfn=gfn, hpa=0, new_tables=0, mmio=True)
    return emulate.x86_emulate_instruction(v)
