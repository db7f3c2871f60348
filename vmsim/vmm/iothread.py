"""QEMU's iothread (`-object iothread,id=iothread0`, iothread.c) running virtio-blk's
dataplane (hw/block/dataplane/virtio-blk.c) on its own AioContext.

With ioeventfd on (QEMU's default; `--no-ioeventfd` turns it off), the driver's
DRIVER_OK makes virtio-mmio start the ioeventfd (virtio_mmio_start_ioeventfd): one
KVM_IOEVENTFD per queue on QueueNotify (4 bytes, datamatch = the queue index), and, with
the irqchip in the kernel, a KVM_IRQFD on the transport's GSI. From then on:

1. the guest's QueueNotify write is completed in kvm.ko, which signals the eventfd (no
   KVM_EXIT_MMIO, the vCPU never leaves KVM_RUN);
2. this thread, asleep in `aio_poll` on that eventfd, wakes, clears it
   (virtio_queue_host_notifier_read) and pops the requests (virtio_blk_handle_vq), which
   go to the block layer; it does not take the BQL for any of it;
3. the block layer completes them one after the other, each after its latency (the cost
   the block backend returns, in virtual cycles: a timed wait in aio_poll);
4. each completion writes the status byte and the used ring (virtqueue_push) and
   notifies the driver: `virtio_notify_irqfd` (InterruptStatus, then a write to the
   irqfd: kvm.ko injects the GSI, no ioctl) with the irqchip in the kernel, or
   `virtio_notify` under the BQL (the userspace PIC is QEMU's, behind the BQL).

Departure: QEMU's virtio-mmio has no irqfd (virtio_mmio_set_guest_notifiers passes
with_irqfd=false, so its guest notifier is read in the main loop, which sets the line with
KVM_IRQ_LINE); virtio-pci with MSI-X is where QEMU uses KVM_IRQFD. vmsim uses the irqfd
on virtio-mmio, as the issue asks, injecting the GSI as an edge; the guest's
InterruptACK lowers InterruptStatus as before.

The thread's state is plain data: the notifiers' counters, the requests in flight (in the
device's `inflight` list) and `where` it waits ("aio_poll" for a kick, "aio_poll io" for
the next completion).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from vmsim.clock import Block
from vmsim.costs import COSTS
from vmsim.kvm.api import KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_DEASSIGN, EventNotifier
from vmsim.vmm.devices.virtio_mmio import VIRTIO_MMIO_QUEUE_NOTIFY

if TYPE_CHECKING:
    from vmsim.vmm.devices.virtio_mmio import VirtIOMMIOProxy
    from vmsim.vmm.kvm_all import KvmState

THREAD = "iothread0"
COST_HANDLE_KICK = COSTS["device_access"]  # the handler's own work for one kick
COST_SYSCALL = COSTS["ioctl"]  # a system call: the eventfd read, the irqfd write


class IOThread:
    """The iothread and virtio-blk's dataplane on it (VirtIOBlockDataPlane)."""

    def __init__(self, s: KvmState, now: Callable[[], int]) -> None:
        self.s = s
        self.machine = s.machine
        self.events = s.events
        self.now = now
        self.proxy: VirtIOMMIOProxy | None = None
        self.host_notifiers: dict[int, EventNotifier] = {}  # queue index: its ioeventfd
        self.guest_notifier: EventNotifier | None = None  # the irqfd (kernel irqchip)
        self.where = "aio_poll"
        self.io_deadline = 0  # when the request at the head of the in-flight list completes
        self.kicks = 0  # ioeventfd reads that found the counter set
        self.completions = 0
        self.irqfd_notifies = 0
        self._needs_update_irq = False

    # -- virtio_blk_data_plane_start / _stop (from the vCPU thread, under the BQL) ----------
    def start(self, proxy: VirtIOMMIOProxy) -> None:
        vdev = proxy.vdev
        assert vdev is not None
        self.proxy = proxy
        s, vm = self.s, self.s.vm
        for vq in vdev.vq:
            if not vq.num:
                continue
            n = EventNotifier(f"ioeventfd vq{vq.index}")
            addr = proxy.base + VIRTIO_MMIO_QUEUE_NOTIFY
            s.ioctl("KVM_IOEVENTFD", vm.ioeventfd, n, addr, 4, vq.index,
                    detail=f"addr {addr:#x} len 4 datamatch {vq.index}")
            self.host_notifiers[vq.index] = n
        if s.irqchip_in_kernel:
            g = self.guest_notifier = EventNotifier(f"irqfd gsi {proxy.irq_line}")
            s.ioctl("KVM_IRQFD", vm.irqfd, g, proxy.irq_line, detail=f"gsi {proxy.irq_line}")
        vdev.inflight = []
        self._trace("virtio_blk_data_plane_start", queues=len(self.host_notifiers))
        # "Kick right away to begin processing requests already in vring".
        for n in self.host_notifiers.values():
            n.event_notifier_set()

    def stop(self, proxy: VirtIOMMIOProxy) -> None:
        vdev = proxy.vdev
        assert vdev is not None
        s, vm = self.s, self.s.vm
        addr = proxy.base + VIRTIO_MMIO_QUEUE_NOTIFY
        for index, n in self.host_notifiers.items():
            s.ioctl("KVM_IOEVENTFD", vm.ioeventfd, n, addr, 4, index,
                    KVM_IOEVENTFD_FLAG_DEASSIGN, detail=f"deassign addr {addr:#x}")
        self.host_notifiers = {}
        # blk_drain: what the block layer still holds completes now (the caller holds the
        # BQL), before the device is reset.
        inflight = vdev.inflight or []
        vdev.inflight = None
        for c in inflight:
            self._complete(c, under_bql=True)
        if self.guest_notifier is not None:
            s.ioctl("KVM_IRQFD", vm.irqfd, self.guest_notifier, proxy.irq_line,
                    KVM_IRQFD_FLAG_DEASSIGN, detail=f"deassign gsi {proxy.irq_line}")
            self.guest_notifier = None
        self._trace("virtio_blk_data_plane_stop", queues=0)

    # -- the thread ---------------------------------------------------------------------------
    def aio_poll_ready(self) -> bool:
        return self.machine.stop_requested or any(n.ready() for n in self.host_notifiers.values())

    def aio_poll_wait(self) -> Block:
        return Block("aio_poll", self.aio_poll_ready)

    def aio_poll_io_wait(self) -> Block:
        m = self.machine
        return Block("aio_poll io", lambda: m.stop_requested, self.io_deadline)

    def run(self, resume: str | None = None) -> Generator[Any, None, None]:
        """iothread_run: aio_poll on the AioContext until the VM stops. `resume` ("aio_poll",
        "aio_poll io"): rebuilt from a snapshot asleep there (IOThread.where)."""
        m = self.machine
        while resume is not None or not m.stop_requested:  # (rebuilt: past the test)
            if resume != "aio_poll io":
                if resume is None:
                    self.where = "aio_poll"
                    yield self.aio_poll_wait()
                resume = None
                if m.stop_requested:
                    break
                self._trace("aio_poll", what="ioeventfd")
                yield COST_SYSCALL
                yield from self._handle_kicks()
            vdev = self.proxy.vdev if self.proxy is not None else None
            # The block layer: each request completes after its latency, in order.
            while vdev is not None and vdev.inflight and not m.stop_requested:
                c = vdev.inflight[0]
                if resume is None:
                    self.where = "aio_poll io"
                    self.io_deadline = self.now() + int(c["cost"])
                    yield self.aio_poll_io_wait()
                resume = None
                if m.stop_requested or not vdev.inflight or vdev.inflight[0] is not c:
                    break  # stopped, or drained by a reset meanwhile
                vdev.inflight.pop(0)
                self._trace("aio_poll", what="I/O completion")
                yield from self._complete_in_thread(c)
            resume = None  # (rebuilt at "aio_poll io" and nothing left in flight)
        self.where = "done"

    def _handle_kicks(self) -> Generator[Any, None, None]:
        """virtio_queue_host_notifier_read for every queue whose ioeventfd is set."""
        proxy = self.proxy
        if proxy is None or proxy.vdev is None:
            return
        vdev = proxy.vdev
        for index, n in sorted(self.host_notifiers.items()):
            if not n.event_notifier_test_and_clear():
                continue
            self.kicks += 1
            # A transport notification the device makes meanwhile (virtio_error's config
            # interrupt) is made after, under the BQL when the PIC is QEMU's.
            saved = vdev.notify_transport
            vdev.notify_transport = self._note_update_irq
            try:
                vdev.virtio_queue_notify(index)
            finally:
                vdev.notify_transport = saved
            yield COST_HANDLE_KICK
            if self._needs_update_irq:
                self._needs_update_irq = False
                yield from self._update_irq()

    def _note_update_irq(self) -> None:
        self._needs_update_irq = True

    def _update_irq(self) -> Generator[Any, None, None]:
        proxy = self.proxy
        assert proxy is not None
        if self.s.irqchip_in_kernel:
            proxy.virtio_mmio_update_irq()  # KVM_IRQ_LINE: no BQL needed
            return
        m = self.machine
        yield from m.bql_lock(THREAD)
        proxy.virtio_mmio_update_irq()
        m.bql_unlock(THREAD)

    def _complete_in_thread(self, c: dict[str, Any]) -> Generator[Any, None, None]:
        """virtio_blk_rw_complete in the iothread: push, then notify the driver."""
        if self.s.irqchip_in_kernel or self.guest_notifier is not None:
            if self._complete(c, under_bql=False):
                yield COST_SYSCALL  # the write(2) on the irqfd
            return
        m = self.machine
        yield from m.bql_lock(THREAD)
        self._complete(c, under_bql=True)
        yield COSTS["device_access"]
        m.bql_unlock(THREAD)

    def _complete(self, c: dict[str, Any], under_bql: bool) -> bool:
        """The status byte and used ring, then the notification. True if one was made."""
        proxy = self.proxy
        assert proxy is not None and proxy.vdev is not None
        vdev = proxy.vdev
        vq = vdev.vq[c["vq"]]
        req = c["req"]
        vdev.virtio_blk_req_complete(vq, c["elem"], req, c["status"], c["status_addr"],
                                     c["in_len"])
        self.completions += 1
        g = self.guest_notifier
        if g is not None and not under_bql:
            # virtio_notify_irqfd: InterruptStatus, then the irqfd (kvm.ko injects the GSI).
            if not vdev.virtio_should_notify(vq):
                return False
            self._trace("virtio_notify_irqfd", vq=vq.index)
            vdev.isr |= 1
            proxy.level = 1
            self.irqfd_notifies += 1
            g.event_notifier_set()
        elif not vdev.virtio_notify(vq):
            return False
        req["progress"].append("interrupt raised")
        return True

    def _trace(self, kind: str, **fields: Any) -> None:
        ev = self.events
        if ev is not None and ev.build(kind):
            ev.emit(kind, THREAD, **fields)

    def state(self) -> dict[str, Any]:
        """Plain data: where it waits, its counters, and its eventfds (which queues have
        one, their counters)."""
        return {"where": self.where, "io_deadline": self.io_deadline, "kicks": self.kicks,
                "completions": self.completions, "irqfd_notifies": self.irqfd_notifies,
                "needs_update_irq": self._needs_update_irq,
                "has_proxy": self.proxy is not None,
                "host_notifiers": [[i, n.state()] for i, n in self.host_notifiers.items()],
                "guest_notifier": (self.guest_notifier.state()
                                   if self.guest_notifier is not None else None)}

    def load_state(self, d: dict[str, Any], proxy: VirtIOMMIOProxy) -> None:
        """Put back state(): the eventfds are assigned to kvm.ko again as the data plane's
        start did, in the same order, without tracing the ioctls again (QEMU's post_load
        assigns them quietly too)."""
        vm = self.s.vm
        self.where, self.io_deadline = d["where"], d["io_deadline"]
        self.kicks, self.completions = d["kicks"], d["completions"]
        self.irqfd_notifies, self._needs_update_irq = d["irqfd_notifies"], d["needs_update_irq"]
        self.proxy = proxy if d["has_proxy"] else None
        self.host_notifiers = {}
        addr = proxy.base + VIRTIO_MMIO_QUEUE_NOTIFY
        for index, nd in d["host_notifiers"]:
            n = EventNotifier(nd["name"])
            n.load_state(nd)
            vm.ioeventfd(n, addr, 4, index)
            self.host_notifiers[index] = n
        self.guest_notifier = None
        if d["guest_notifier"] is not None:
            g = self.guest_notifier = EventNotifier(d["guest_notifier"]["name"])
            g.load_state(d["guest_notifier"])
            vm.irqfd(g, proxy.irq_line)
