"""Coalesced MMIO in kvm.ko (LNX virt/kvm/coalesced_mmio.c).

A zone (KVM_REGISTER_COALESCED_MMIO) is a device on the VM's MMIO bus whose writes need no
answer: `coalesced_mmio_write` copies a guest write that lies wholly inside a zone into the
VM's ring (struct kvm_coalesced_mmio_ring, mapped at page KVM_COALESCED_MMIO_PAGE_OFFSET of
every vCPU's mapping) and the emulator goes on as if the device had taken it: no exit to
userspace. The VMM applies the queued writes later, in order, before it serves any access
to the device (QEMU's kvm_flush_coalesced_mmio_buffer, vmsim.vmm.machine). When the ring
is full the write is refused (-EOPNOTSUPP), and it leaves as a KVM_EXIT_MMIO. Reads are
never coalesced: a read of the device exits, and the VMM applies the ring first.

QEMU coalesces its VGA window (vga_init: memory_region_set_coalescing), so a guest that
fills the text screen pays one exit to userspace per ring, not per character cell.

vmsim models MMIO zones; coalesced PIO (a zone with `pio` 1, KVM_CAP_COALESCED_PIO) is
refused with EINVAL, and the capability reads 0, as on a host without it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmsim.kvm.api import KVM_COALESCED_MMIO_MAX

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVm


class CoalescedZone:
    """struct kvm_coalesced_mmio_dev: one registered zone."""

    __slots__ = ("addr", "pio", "size")

    def __init__(self, addr: int, size: int, pio: int = 0) -> None:
        self.addr, self.size, self.pio = addr, size, pio

    def coalesced_mmio_in_range(self, addr: int, length: int) -> bool:
        """(addr, length) lies wholly inside the zone (an access whose end wraps past
        2**64, as a u64 sum does, is not)."""
        if length < 0 or addr + length >= 1 << 64:
            return False
        return self.addr <= addr and addr + length <= self.addr + self.size

    def state(self) -> list[int]:
        return [self.addr, self.size, self.pio]


def kvm_vm_ioctl_register_coalesced_mmio(vm: SimVm, addr: int, size: int, pio: int) -> None:
    from vmsim.kvm.kvm_main import KvmError

    if pio not in (0, 1):
        raise KvmError(errno.EINVAL, "KVM_REGISTER_COALESCED_MMIO: pio must be 0 or 1")
    if pio:
        raise KvmError(errno.EINVAL, "vmsim: coalesced PIO (KVM_CAP_COALESCED_PIO) is not modelled")
    vm.coalesced_zones.append(CoalescedZone(addr, size, pio))


def kvm_vm_ioctl_unregister_coalesced_mmio(vm: SimVm, addr: int, size: int, pio: int) -> None:
    """Every zone of the same kind that holds (addr, size) goes; none is not an error."""
    vm.coalesced_zones[:] = [z for z in vm.coalesced_zones
                             if not (z.pio == pio and z.coalesced_mmio_in_range(addr, size))]


def coalesced_mmio_write(vm: SimVm, addr: int, length: int, value: int, source: str) -> bool:
    """The zones' write handler on the MMIO bus: True if a zone took the write into the
    ring (complete, no exit); False if none holds it or the ring has no room."""
    for zone in vm.coalesced_zones:
        if zone.pio or not zone.coalesced_mmio_in_range(addr, length):
            continue
        ring = vm.coalesced_ring
        insert = ring.last
        # (coalesced_mmio_has_room: one entry always stays free between last and first)
        if insert >= KVM_COALESCED_MMIO_MAX or (insert + 1) % KVM_COALESCED_MMIO_MAX == ring.first:
            return False
        ring.set_entry(insert, addr, value.to_bytes(length, "little"), zone.pio)
        ring.last = (insert + 1) % KVM_COALESCED_MMIO_MAX
        ev = vm.events
        if ev is not None and ev.build("coalesced_mmio_write"):
            ev.tp["coalesced_mmio_write"].fire(source, addr, length, value, ring.first,
                                               ring.last)
        return True
    return False
