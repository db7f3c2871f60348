"""Eventfds in kvm.ko (LNX virt/kvm/eventfd.c): ioeventfd and irqfd.

- ioeventfd (KVM_IOEVENTFD, `kvm_assign_ioeventfd`): a device on the VM's MMIO (or PIO)
  bus covering `len` bytes at `addr`. A guest write that matches (same address and length,
  and the value if a datamatch was given) is completed in the kernel: `ioeventfd_write`
  signals the eventfd and the vCPU goes back into the guest. No KVM_EXIT_MMIO: userspace
  learns of the write when its thread polling the eventfd wakes (QEMU's iothread).
- irqfd (KVM_IRQFD, `kvm_irqfd_assign`): the kernel polls an eventfd; a signal on it
  (`irqfd_wakeup`) injects the GSI as an edge, `kvm_set_irq` level 1 then 0 with
  KVM_USERSPACE_IRQ_SOURCE_ID, as `irqfd_inject` does. (Linux defers that to a work item
  unless the irqchip can take it in atomic context; vmsim injects at once.) No resamplefd.

The tables are plain data (address, length, datamatch, the notifier's name); the
EventNotifier objects are userspace's, handed in by reference as the fd numbers are.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmsim.kvm.api import (
    KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_IOEVENTFD_FLAG_DEASSIGN,
    KVM_IOEVENTFD_FLAG_PIO,
    KVM_IRQFD_FLAG_DEASSIGN,
    KVM_IRQFD_FLAG_RESAMPLE,
    EventNotifier,
)

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVm

IOEVENTFD_VALID_LENGTHS = (0, 1, 2, 4, 8)  # kvm_assign_ioeventfd: 0 is a wildcard length


class Ioeventfd:
    """struct _ioeventfd: what one KVM_IOEVENTFD registered."""

    def __init__(self, addr: int, length: int, datamatch: int | None, pio: bool,
                 notifier: EventNotifier) -> None:
        self.addr = addr
        self.length = length
        self.datamatch = datamatch  # None: wildcard (any value)
        self.pio = pio
        self.notifier = notifier
        self.signals = 0  # writes it has completed (vmsim's count, for --stats and tests)

    def ioeventfd_in_range(self, addr: int, length: int, value: int) -> bool:
        if addr != self.addr:
            return False
        if not self.length:
            return True  # length 0: any write to the address
        if length != self.length:
            return False
        if self.datamatch is None:
            return True
        return (value & ((1 << (8 * length)) - 1)) == self.datamatch

    def state(self) -> dict:
        return {"addr": self.addr, "len": self.length, "datamatch": self.datamatch,
                "pio": self.pio, "fd": self.notifier.name, "signals": self.signals}


def kvm_ioeventfd(vm: SimVm, notifier: EventNotifier, addr: int, length: int,
                  datamatch: int | None, flags: int) -> None:
    """KVM_IOEVENTFD: assign, or with KVM_IOEVENTFD_FLAG_DEASSIGN remove."""
    from vmsim.kvm.kvm_main import KvmError

    if flags & ~(KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_PIO
                 | KVM_IOEVENTFD_FLAG_DEASSIGN):
        raise KvmError(errno.EINVAL, "KVM_IOEVENTFD: unknown flags")
    if length not in IOEVENTFD_VALID_LENGTHS:
        raise KvmError(errno.EINVAL, f"KVM_IOEVENTFD: length {length}")
    if addr + length < addr or (length == 0 and datamatch is not None):
        raise KvmError(errno.EINVAL, "KVM_IOEVENTFD: bad range")
    if datamatch is not None:
        flags |= KVM_IOEVENTFD_FLAG_DATAMATCH
    elif flags & KVM_IOEVENTFD_FLAG_DATAMATCH:
        raise KvmError(errno.EINVAL, "KVM_IOEVENTFD: FLAG_DATAMATCH without a value")
    pio = bool(flags & KVM_IOEVENTFD_FLAG_PIO)
    same = [p for p in vm.ioeventfds if p.addr == addr and p.length == length
            and p.pio == pio and p.datamatch == datamatch]
    if flags & KVM_IOEVENTFD_FLAG_DEASSIGN:
        # kvm_deassign_ioeventfd_idx: the one with this eventfd, address, length and match.
        match = [p for p in same if p.notifier is notifier]
        if not match:
            raise KvmError(errno.ENOENT, "KVM_IOEVENTFD: no such ioeventfd")
        vm.ioeventfds.remove(match[0])
        return
    if same:  # ioeventfd_check_collision
        raise KvmError(errno.EEXIST, f"KVM_IOEVENTFD: {addr:#x} len {length} already assigned")
    vm.ioeventfds.append(Ioeventfd(addr, length, datamatch, pio, notifier))


def ioeventfd_write(vm: SimVm, addr: int, length: int, value: int, pio: bool = False,
                    source: str = "kvm") -> bool:
    """The ioeventfd device's write handler on the KVM_MMIO_BUS (KVM_PIO_BUS): True if
    one matched, its eventfd signalled, and the write is complete."""
    for p in vm.ioeventfds:
        if p.pio == pio and p.ioeventfd_in_range(addr, length, value):
            p.signals += 1
            ev = vm.events
            if ev is not None and ev.build("ioeventfd_write"):
                ev.emit("ioeventfd_write", source, addr=addr, len=length, val=value,
                        fd=p.notifier.name)
            p.notifier.eventfd_signal(1)
            return True
    return False


class Irqfd:
    """struct kvm_kernel_irqfd: an eventfd the kernel polls, and the GSI it injects."""

    def __init__(self, vm: SimVm, notifier: EventNotifier, gsi: int) -> None:
        self.vm = vm
        self.notifier = notifier
        self.gsi = gsi
        self.injections = 0

    def irqfd_wakeup(self, notifier: EventNotifier) -> None:
        """EPOLLIN on the eventfd: take the count (eventfd_ctx_do_read) and inject."""
        if notifier.eventfd_ctx_do_read():
            self.irqfd_inject()

    def irqfd_inject(self) -> None:
        from vmsim.kvm.irq import KVM_USERSPACE_IRQ_SOURCE_ID, kvm_set_irq

        self.injections += 1
        ev = self.vm.events
        if ev is not None and ev.build("irqfd_inject"):
            ev.emit("irqfd_inject", "kvm", gsi=self.gsi, fd=self.notifier.name)
        kvm_set_irq(self.vm, KVM_USERSPACE_IRQ_SOURCE_ID, self.gsi, 1)
        kvm_set_irq(self.vm, KVM_USERSPACE_IRQ_SOURCE_ID, self.gsi, 0)

    def state(self) -> dict:
        return {"gsi": self.gsi, "fd": self.notifier.name, "injections": self.injections}


def kvm_irqfd(vm: SimVm, notifier: EventNotifier, gsi: int, flags: int) -> None:
    """KVM_IRQFD: assign (kvm_irqfd_assign) or deassign (kvm_irqfd_deassign)."""
    from vmsim.kvm.kvm_main import KvmError

    if flags & ~(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE):
        raise KvmError(errno.EINVAL, "KVM_IRQFD: unknown flags")
    if flags & KVM_IRQFD_FLAG_DEASSIGN:
        for f in list(vm.irqfds):
            if f.notifier is notifier and f.gsi == gsi:
                vm.irqfds.remove(f)
                if f.irqfd_wakeup in notifier.wait_queue:
                    notifier.wait_queue.remove(f.irqfd_wakeup)
        return  # Linux returns 0 even when none matched
    if flags & KVM_IRQFD_FLAG_RESAMPLE:
        raise KvmError(errno.EINVAL, "vmsim: KVM_IRQFD_FLAG_RESAMPLE is not modelled")
    if vm.irqchip is None:
        raise KvmError(errno.EAGAIN, "KVM_IRQFD needs KVM_CREATE_IRQCHIP")  # !irqchip_in_kernel
    if any(f.notifier is notifier for f in vm.irqfds):
        raise KvmError(errno.EBUSY, "KVM_IRQFD: the eventfd is already an irqfd")
    f = Irqfd(vm, notifier, gsi)
    vm.irqfds.append(f)
    notifier.wait_queue.append(f.irqfd_wakeup)
    # An eventfd already signalled before the assignment injects at once (vfs_poll in
    # kvm_irqfd_assign finds EPOLLIN).
    if notifier.ready():
        f.irqfd_wakeup(notifier)
