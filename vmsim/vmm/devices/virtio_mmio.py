"""The virtio-mmio transport, version 2 (QEMU's hw/virtio/virtio-mmio.c with
force-legacy=false; VIRTIO 1.2 §4.2.2). A 0x200-byte register window:

| off | register | | off | register |
|---|---|---|---|---|
| 0x000 | MagicValue 0x74726976 "virt" | | 0x050 | QueueNotify (W) |
| 0x004 | Version 2 | | 0x060 | InterruptStatus (R) |
| 0x008 | DeviceID (2 = block; 0 = none) | | 0x064 | InterruptACK (W) |
| 0x00c | VendorID 0x554D4551 "QEMU" | | 0x070 | Status |
| 0x010 | DeviceFeatures (R), word DeviceFeaturesSel | | 0x080/84 | QueueDescLow/High (W) |
| 0x014 | DeviceFeaturesSel (W) | | 0x090/94 | QueueDriverLow/High (W) |
| 0x020 | DriverFeatures (W), word DriverFeaturesSel | | 0x0a0/a4 | QueueDeviceLow/High (W) |
| 0x024 | DriverFeaturesSel (W) | | 0x0b0/b4 | SHMLenLow/High: all ones |
| 0x030 | QueueSel (W) | | 0x0fc | ConfigGeneration (R) |
| 0x034 | QueueNumMax (R) | | 0x100 | device config space |
| 0x038 | QueueNum (W) | | | |
| 0x044 | QueueReady | | | |

QEMU's rules, kept: registers below 0x100 take 4-byte accesses only (others read 0 and
are ignored); a write-only register reads 0; QueueNumMax is 1024 for a queue that exists;
the driver's features take effect when it writes FEATURES_OK to Status (masked to what
was offered: QEMU keeps FEATURES_OK even if the driver acked more); writing 0 to Status
resets the device; QueueReady=1 hands the ring addresses to the device; InterruptACK
clears ISR bits. A transport with no device behind it reads MagicValue, Version and
VendorID and 0 elsewhere (DeviceID 0: nobody claims it) and ignores writes.

The transport's interrupt line is level: high while InterruptStatus is not 0
(virtio_mmio_update_irq), driven through the `irq` callback the machine hands in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmsim.events import EventStream
from vmsim.state import register
from vmsim.vmm.virtio import (
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_LEGACY_FEATURES,
    VIRTIO_QUEUE_MAX,
    VIRTQUEUE_MAX_SIZE,
    VirtIODevice,
)

VIRTIO_MMIO_MAGIC_VALUE = 0x000
VIRTIO_MMIO_VERSION = 0x004
VIRTIO_MMIO_DEVICE_ID = 0x008
VIRTIO_MMIO_VENDOR_ID = 0x00C
VIRTIO_MMIO_DEVICE_FEATURES = 0x010
VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
VIRTIO_MMIO_DRIVER_FEATURES = 0x020
VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028  # legacy
VIRTIO_MMIO_QUEUE_SEL = 0x030
VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
VIRTIO_MMIO_QUEUE_NUM = 0x038
VIRTIO_MMIO_QUEUE_ALIGN = 0x03C  # legacy
VIRTIO_MMIO_QUEUE_PFN = 0x040  # legacy
VIRTIO_MMIO_QUEUE_READY = 0x044
VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
VIRTIO_MMIO_INTERRUPT_ACK = 0x064
VIRTIO_MMIO_STATUS = 0x070
VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090
VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094
VIRTIO_MMIO_QUEUE_USED_LOW = 0x0A0
VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0A4
VIRTIO_MMIO_SHM_LEN_LOW = 0x0B0
VIRTIO_MMIO_SHM_LEN_HIGH = 0x0B4
VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
VIRTIO_MMIO_CONFIG = 0x100

VIRT_MAGIC = 0x74726976  # 'virt'
VIRT_VERSION = 2
VIRT_VENDOR = 0x554D4551  # 'QEMU'
VIRTIO_MMIO_SIZE = 0x200

REGISTER_NAMES = {v: k[len("VIRTIO_MMIO_"):] for k, v in globals().items()
                  if k.startswith("VIRTIO_MMIO_") and k != "VIRTIO_MMIO_SIZE"}


@register
@dataclass
class VirtIOMMIOQueue:
    """The transport's copy of a queue's registers until QueueReady (VirtIOMMIOQueue)."""

    num: int = 0
    enabled: bool = False
    desc: list[int] = field(default_factory=lambda: [0, 0])
    avail: list[int] = field(default_factory=lambda: [0, 0])
    used: list[int] = field(default_factory=lambda: [0, 0])


class VirtIOMMIOProxy:
    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = (  # noqa: RUF023
        "index", "base", "irq_line", "name", "_irq", "events", "vdev",
        "host_features_sel", "guest_features_sel", "guest_features", "vqs", "level",
        "ioeventfd", "ioeventfd_started")

    def __init__(self, index: int, base: int, irq_line: int, irq: Callable[[int], None],
                 vdev: VirtIODevice | None = None, events: EventStream | None = None):
        self.index = index
        self.base = base
        self.irq_line = irq_line
        self.name = f"virtio-mmio.{index}"
        self._irq = irq
        self.events = events
        self.vdev = vdev
        self.host_features_sel = 0
        self.guest_features_sel = 0
        self.guest_features = [0, 0]
        # QEMU keeps these registers for all VIRTIO_QUEUE_MAX queues, even ones the device
        # lacks (QueueReady reads back 1 there too); made here as the driver selects them.
        self.vqs: dict[int, VirtIOMMIOQueue] = {}
        self.level = 0
        # ioeventfd (QEMU's ioeventfd=on): the VM's dataplane (vmsim.vmm.iothread), whose
        # start(proxy)/stop(proxy) register and remove the KVM_IOEVENTFDs; None: off.
        self.ioeventfd: object | None = None
        self.ioeventfd_started = False
        if vdev is not None:
            vdev.notify_transport = self.virtio_mmio_update_irq
            vdev.source = self.name

    def _vq(self, n: int) -> VirtIOMMIOQueue | None:
        if not 0 <= n < VIRTIO_QUEUE_MAX:
            return None
        q = self.vqs.get(n)
        if q is None:
            q = self.vqs[n] = VirtIOMMIOQueue()
        return q

    # -- MMIO ----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        value = self._read(offset, size)
        ev = self.events
        if ev is not None and ev.build("virtio_mmio_read"):
            ev.emit("virtio_mmio_read", self.name, offset=offset, size=size, value=value,
                    register=REGISTER_NAMES.get(offset, "config" if offset >= 0x100 else "?"))
        return value

    def _read(self, offset: int, size: int) -> int:
        vdev = self.vdev
        if vdev is None:
            if offset == VIRTIO_MMIO_MAGIC_VALUE:
                return VIRT_MAGIC & ((1 << (8 * size)) - 1)
            if offset == VIRTIO_MMIO_VERSION:
                return VIRT_VERSION
            if offset == VIRTIO_MMIO_VENDOR_ID:
                return VIRT_VENDOR & ((1 << (8 * size)) - 1)
            return 0
        if offset >= VIRTIO_MMIO_CONFIG:
            return vdev.config_read(offset - VIRTIO_MMIO_CONFIG, size)
        if size != 4:
            return 0  # "wrong size access to register!"
        if offset == VIRTIO_MMIO_MAGIC_VALUE:
            return VIRT_MAGIC
        if offset == VIRTIO_MMIO_VERSION:
            return VIRT_VERSION
        if offset == VIRTIO_MMIO_DEVICE_ID:
            return vdev.device_id
        if offset == VIRTIO_MMIO_VENDOR_ID:
            return VIRT_VENDOR
        if offset == VIRTIO_MMIO_DEVICE_FEATURES:
            shown = vdev.host_features & ~VIRTIO_LEGACY_FEATURES
            return (shown >> (32 * self.host_features_sel)) & 0xFFFFFFFF
        if offset == VIRTIO_MMIO_QUEUE_NUM_MAX:
            vq = vdev.queue(vdev.queue_sel)
            return VIRTQUEUE_MAX_SIZE if vq is not None and vq.num else 0
        if offset == VIRTIO_MMIO_QUEUE_READY:
            q = self._vq(vdev.queue_sel)
            return int(q.enabled) if q is not None else 0
        if offset == VIRTIO_MMIO_INTERRUPT_STATUS:
            return vdev.isr
        if offset == VIRTIO_MMIO_STATUS:
            return vdev.status
        if offset == VIRTIO_MMIO_CONFIG_GENERATION:
            return vdev.generation
        if offset in (VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_LEN_HIGH):
            return 0xFFFFFFFF  # no shared memory region
        return 0  # write-only, legacy or unknown registers

    def write(self, offset: int, size: int, value: int) -> None:
        ev = self.events
        if ev is not None and ev.build("virtio_mmio_write_offset"):
            ev.emit("virtio_mmio_write_offset", self.name, offset=offset, value=value, size=size,
                    register=REGISTER_NAMES.get(offset, "config" if offset >= 0x100 else "?"))
        vdev = self.vdev
        if vdev is None:
            return
        if offset >= VIRTIO_MMIO_CONFIG:
            vdev.config_write(offset - VIRTIO_MMIO_CONFIG, size, value)
            return
        if size != 4:
            return
        sel = vdev.queue_sel
        q = self._vq(sel)
        if offset == VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            self.host_features_sel = 1 if value else 0
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES:
            self.guest_features[self.guest_features_sel] = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            self.guest_features_sel = 1 if value else 0
        elif offset == VIRTIO_MMIO_QUEUE_SEL:
            if value < VIRTIO_QUEUE_MAX:
                vdev.queue_sel = value
        elif offset == VIRTIO_MMIO_QUEUE_NUM:
            vdev.virtio_queue_set_num(sel, value)
            if q is not None:
                q.num = value & 0xFFFF
        elif offset == VIRTIO_MMIO_QUEUE_READY:
            if q is None:
                return
            if value:
                vdev.virtio_queue_set_num(sel, q.num)
                vdev.virtio_queue_set_rings(sel, q.desc[1] << 32 | q.desc[0],
                                            q.avail[1] << 32 | q.avail[0],
                                            q.used[1] << 32 | q.used[0])
                q.enabled = True
            else:
                q.enabled = False
        elif offset == VIRTIO_MMIO_QUEUE_NOTIFY:
            if value < VIRTIO_QUEUE_MAX:
                vdev.virtio_queue_notify(value)
        elif offset == VIRTIO_MMIO_INTERRUPT_ACK:
            vdev.isr &= ~value & 0xFF
            self.virtio_mmio_update_irq()
        elif offset == VIRTIO_MMIO_STATUS:
            if not value & VIRTIO_CONFIG_S_DRIVER_OK:
                self.virtio_mmio_stop_ioeventfd()
            if value & VIRTIO_CONFIG_S_FEATURES_OK:
                vdev.virtio_set_features(self.guest_features[1] << 32 | self.guest_features[0])
            vdev.virtio_set_status(value & 0xFF)
            if value & VIRTIO_CONFIG_S_DRIVER_OK:
                self.virtio_mmio_start_ioeventfd()
            if vdev.status == 0:
                vdev.virtio_reset()
                for q2 in self.vqs.values():  # virtio_mmio_soft_reset
                    q2.enabled = False
        elif q is not None and offset in (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH):
            q.desc[(offset - VIRTIO_MMIO_QUEUE_DESC_LOW) // 4] = value
        elif q is not None and offset in (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH):
            q.avail[(offset - VIRTIO_MMIO_QUEUE_AVAIL_LOW) // 4] = value
        elif q is not None and offset in (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH):
            q.used[(offset - VIRTIO_MMIO_QUEUE_USED_LOW) // 4] = value
        # Read-only, legacy and unknown registers: ignored.

    def virtio_mmio_start_ioeventfd(self) -> None:
        """DRIVER_OK: QueueNotify becomes an ioeventfd per queue (virtio_bus_start_ioeventfd,
        then the device's dataplane start)."""
        if self.ioeventfd is None or self.ioeventfd_started or self.vdev is None:
            return
        self.ioeventfd_started = True
        self.ioeventfd.start(self)  # type: ignore[attr-defined]

    def virtio_mmio_stop_ioeventfd(self) -> None:
        """A Status without DRIVER_OK (a reset): the KVM_IOEVENTFDs go, QueueNotify exits
        to QEMU again."""
        if not self.ioeventfd_started:
            return
        self.ioeventfd_started = False
        self.ioeventfd.stop(self)  # type: ignore[union-attr]

    def virtio_mmio_update_irq(self) -> None:
        """The line follows InterruptStatus != 0."""
        vdev = self.vdev
        if vdev is None:
            return
        level = 1 if vdev.isr else 0
        ev = self.events
        if ev is not None and ev.build("virtio_mmio_setting_irq"):
            ev.emit("virtio_mmio_setting_irq", self.name, level=level, irq=self.irq_line)
        self.level = level
        self._irq(level)

    def reset(self) -> None:
        """virtio_mmio_reset (a machine reset)."""
        self.virtio_mmio_stop_ioeventfd()
        if self.vdev is not None:
            self.vdev.virtio_reset()
        self.host_features_sel = self.guest_features_sel = 0
        self.guest_features = [0, 0]
        self.vqs = {}
