"""The virtio core (QEMU's hw/virtio/virtio.c): device status, features, the ISR, and the
split virtqueue in guest memory (VIRTIO 1.2 §2.7, virtualization-facts.md §7.6).

A `VirtIODevice` is what a transport (vmsim.vmm.devices.virtio_mmio) fronts; a device
model (virtio_blk) subclasses it. Its queues live in guest RAM and are read and written
through the machine's physical memory, as QEMU's MemoryRegionCaches do:

- `virtqueue_pop` takes the next head from the available ring and walks its descriptor
  chain into a `VirtQueueElement` (out buffers the device reads, then in buffers it
  writes), with QEMU's checks (`virtqueue_split_pop`): a head or `next` beyond the ring
  ("Guest says index %u is available", "Desc next is %u"), a chain longer than the ring
  ("Looped descriptor"), a zero-length buffer, a buffer outside RAM ("bogus descriptor"),
  a readable buffer after a writable one ("Incorrect order"), a bad indirect table;
- `virtqueue_push` (= `virtqueue_fill` + `virtqueue_flush`) writes the used element and
  bumps `used->idx`;
- `virtio_notify` sets InterruptStatus bit 0 and has the transport raise its line, unless
  the driver asked not to be interrupted (`VRING_AVAIL_F_NO_INTERRUPT`, or the used-event
  index with VIRTIO_RING_F_EVENT_IDX: `virtio_split_should_notify`).

A malformed chain is `virtio_error`: the status gains DEVICE_NEEDS_RESET (0x40), a config
interrupt is raised if DRIVER_OK is set (ISR bit 1), and the device is "broken": it
processes nothing more until the driver resets it (writes 0 to Status). Nothing a guest
writes raises out of this module. A buffer outside RAM takes QEMU's single bounce buffer
(at most 4 KiB); the rings themselves must lie in RAM (a simplification: QEMU would reach
them through the slow path).

Everything here is plain code that any simulated thread can call (the vCPU thread under
the BQL today; an iothread later): nothing blocks or yields.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmsim.events import EventStream
from vmsim.hw.memory import PAGE_SIZE, PhysicalMemory
from vmsim.state import register

# include/standard-headers/linux/virtio_config.h
VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80
STATUS_BITS = ((VIRTIO_CONFIG_S_ACKNOWLEDGE, "ACKNOWLEDGE"), (VIRTIO_CONFIG_S_DRIVER, "DRIVER"),
               (VIRTIO_CONFIG_S_FEATURES_OK, "FEATURES_OK"),
               (VIRTIO_CONFIG_S_DRIVER_OK, "DRIVER_OK"),
               (VIRTIO_CONFIG_S_NEEDS_RESET, "DEVICE_NEEDS_RESET"),
               (VIRTIO_CONFIG_S_FAILED, "FAILED"))

VIRTIO_F_NOTIFY_ON_EMPTY = 24  # legacy only
VIRTIO_F_ANY_LAYOUT = 27  # legacy only
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_RING_RESET = 40
# VIRTIO_LEGACY_FEATURES (hw/virtio/virtio.c): offered, but hidden from a modern driver.
VIRTIO_LEGACY_FEATURES = (1 << VIRTIO_F_NOTIFY_ON_EMPTY) | (1 << VIRTIO_F_ANY_LAYOUT)

# include/standard-headers/linux/virtio_ring.h
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_USED_F_NO_NOTIFY = 1
VRING_AVAIL_F_NO_INTERRUPT = 1

VIRTQUEUE_MAX_SIZE = 1024  # include/hw/virtio/virtio.h
VIRTIO_QUEUE_MAX = 1024
VIRTIO_ISR_VQ = 1
VIRTIO_ISR_CONFIG = 2
DESC_SIZE = 16


def status_names(status: int) -> list[str]:
    return [name for bit, name in STATUS_BITS if status & bit]


@register
@dataclass
class VirtQueueElement:
    """A popped chain: its head index and (guest-physical address, length) pieces, the
    device-readable ones (`out_sg`) first, then the device-writable ones (`in_sg`)."""

    index: int
    out_sg: list[tuple[int, int]] = field(default_factory=list)
    in_sg: list[tuple[int, int]] = field(default_factory=list)
    descs: list[int] = field(default_factory=list)  # descriptor indices walked (a view)


@dataclass
class VirtQueue:
    """QEMU's struct VirtQueue (split ring only)."""

    index: int
    num: int = 0  # vring.num: the size the driver chose (0: the queue does not exist)
    num_default: int = 0
    desc: int = 0
    avail: int = 0
    used: int = 0
    ring_ok: bool = False  # the region caches mapped (desc, avail and used all in RAM)
    # The lengths mapped then (QEMU's MemoryRegionCache.len): a QueueNum written after
    # QueueReady does not grow them, so every ring access is checked against them.
    desc_len: int = 0
    avail_len: int = 0
    used_len: int = 0
    last_avail_idx: int = 0
    shadow_avail_idx: int = 0
    used_idx: int = 0
    signalled_used: int = 0
    signalled_used_valid: bool = False
    notification: bool = True
    inuse: int = 0
    handle_output: Callable[[VirtQueue], None] | None = None

    def reset(self) -> None:
        self.desc = self.avail = self.used = 0
        self.ring_ok = False
        self.desc_len = self.avail_len = self.used_len = 0
        self.last_avail_idx = self.shadow_avail_idx = self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.notification = True
        self.num = self.num_default
        self.inuse = 0


class VirtIODevice:
    """QEMU's VirtIODevice: what every virtio device has, whatever its transport."""

    def __init__(self, name: str, device_id: int, config_len: int, mem: PhysicalMemory,
                 events: EventStream | None = None):
        self.name = name
        self.device_id = device_id
        self.config_len = config_len
        self.mem = mem
        self.events = events
        self.host_features = 0
        self.guest_features = 0
        self.status = 0
        self.isr = 0
        self.queue_sel = 0
        self.generation = 0
        self.broken = False
        self.broken_reason = ""
        self.vq: list[VirtQueue] = []
        # Set by the transport (virtio_bus's notify: virtio_mmio_update_irq).
        self.notify_transport: Callable[[], None] = lambda: None
        # Virtual cycles the device's work cost since the caller last took them.
        self.pending_cycles = 0
        self.source = name

    # -- queues -------------------------------------------------------------------------
    def virtio_add_queue(self, queue_size: int, handle_output: Callable[[VirtQueue], None]) -> VirtQueue:
        vq = VirtQueue(len(self.vq), num=queue_size, num_default=queue_size,
                       handle_output=handle_output)
        self.vq.append(vq)
        return vq

    def queue(self, n: int) -> VirtQueue | None:
        return self.vq[n] if 0 <= n < len(self.vq) else None

    def virtio_queue_set_num(self, n: int, num: int) -> None:
        vq = self.queue(n)
        # Don't let the guest flip a queue between existing and not, or exceed the max.
        if vq is None or bool(num) != bool(vq.num) or num > VIRTQUEUE_MAX_SIZE or num < 0:
            return
        vq.num = num

    def virtio_queue_set_rings(self, n: int, desc: int, avail: int, used: int) -> None:
        vq = self.queue(n)
        if vq is None or not vq.num:
            return
        vq.desc, vq.avail, vq.used = desc, avail, used
        self.virtio_init_region_cache(vq)

    def virtio_init_region_cache(self, vq: VirtQueue) -> None:
        vq.ring_ok = False
        vq.desc_len = vq.avail_len = vq.used_len = 0
        if not vq.desc:
            return
        event = 2 if self.has_feature(VIRTIO_RING_F_EVENT_IDX) else 0
        desc_len, used_len, avail_len = (DESC_SIZE * vq.num, 4 + 8 * vq.num + event,
                                          4 + 2 * vq.num + event)
        if not self._in_ram(vq.desc, desc_len):
            self.virtio_error("Cannot map desc")
        elif not self._in_ram(vq.used, used_len):
            self.virtio_error("Cannot map used")
        elif not self._in_ram(vq.avail, avail_len):
            self.virtio_error("Cannot map avail")
        else:
            vq.ring_ok = True
            vq.desc_len, vq.used_len, vq.avail_len = desc_len, used_len, avail_len

    # -- guest memory (the DMA address space) -------------------------------------------
    def _in_ram(self, pa: int, length: int) -> bool:
        mem = self.mem
        if pa < 0 or length < 0 or pa + length > mem.size:
            return False
        return not any(pa < e and s < pa + length for s, e in mem.holes)

    def dma_read(self, pa: int, length: int) -> bytes:
        if self._ram_run(pa, length) == length:
            return bytes(self.mem.ram[pa:pa + length])
        # A bounce-buffered piece: through the memory map (a device's MMIO, or nobody's:
        # 0, as QEMU reads unassigned memory).
        return bytes(self.mem.read(a, 1) if a < 1 << 32 else 0 for a in range(pa, pa + length))

    def dma_write(self, pa: int, data: bytes) -> None:
        if self._ram_run(pa, len(data)) == len(data):
            self.mem.load(pa, data)  # drops instructions decoded from those bytes, as DMA must
            return
        for i, b in enumerate(data):
            if pa + i < 1 << 32:
                self.mem.write(pa + i, 1, b)

    def _lduw(self, pa: int) -> int:
        return self.mem.ram[pa] | self.mem.ram[pa + 1] << 8

    def _stw(self, pa: int, v: int) -> None:
        self.dma_write(pa, struct.pack("<H", v & 0xFFFF))

    # -- the split ring (vring_* accessors) -----------------------------------------------
    def _avail_lduw(self, vq: VirtQueue, off: int) -> int:
        # Outside what was mapped QEMU would trip an assertion; vmsim reads 0.
        return self._lduw(vq.avail + off) if vq.ring_ok and off + 2 <= vq.avail_len else 0

    def _used_stw(self, vq: VirtQueue, off: int, v: int) -> None:
        if vq.ring_ok and off + 2 <= vq.used_len:
            self._stw(vq.used + off, v)

    def vring_avail_flags(self, vq: VirtQueue) -> int:
        return self._avail_lduw(vq, 0)

    def vring_avail_idx(self, vq: VirtQueue) -> int:
        if not vq.ring_ok:
            return 0
        vq.shadow_avail_idx = self._avail_lduw(vq, 2)
        return vq.shadow_avail_idx

    def vring_avail_ring(self, vq: VirtQueue, i: int) -> int:
        return self._avail_lduw(vq, 4 + 2 * i)

    def vring_used_idx(self, vq: VirtQueue) -> int:
        return self._lduw(vq.used + 2) if vq.ring_ok else 0

    def vring_desc_read(self, table: int, i: int) -> tuple[int, int, int, int]:
        return struct.unpack_from("<QIHH", self.mem.ram, table + DESC_SIZE * i)

    def virtio_queue_set_notification(self, vq: VirtQueue, enable: bool) -> None:
        vq.notification = enable
        if not vq.ring_ok:
            return
        if self.has_feature(VIRTIO_RING_F_EVENT_IDX):
            if vq.notification:  # vring_set_avail_event
                self._used_stw(vq, 4 + 8 * vq.num, self.vring_avail_idx(vq))
        else:
            flags = self._lduw(vq.used)
            self._used_stw(vq, 0, flags & ~VRING_USED_F_NO_NOTIFY if enable
                           else flags | VRING_USED_F_NO_NOTIFY)

    def virtio_queue_empty(self, vq: VirtQueue) -> bool:
        if not vq.avail or not vq.ring_ok:
            return True
        if vq.shadow_avail_idx != vq.last_avail_idx:
            return False
        return self.vring_avail_idx(vq) == vq.last_avail_idx

    def virtqueue_pop(self, vq: VirtQueue) -> VirtQueueElement | None:
        """virtqueue_split_pop: the next available chain, or None (empty, or an error:
        then the device is broken and the driver sees DEVICE_NEEDS_RESET)."""
        if self.broken or self.virtio_queue_empty(vq):
            return None
        num = vq.num
        if vq.inuse >= num:
            self.virtio_error("Virtqueue size exceeded")
            return None
        head = self.vring_avail_ring(vq, vq.last_avail_idx % num)
        vq.last_avail_idx = (vq.last_avail_idx + 1) & 0xFFFF
        if head >= num:
            self.virtio_error(f"Guest says index {head} is available")
            return None
        if self.has_feature(VIRTIO_RING_F_EVENT_IDX) and vq.notification:
            self._used_stw(vq, 4 + 8 * num, vq.last_avail_idx)  # vring_set_avail_event
        if vq.desc_len < num * DESC_SIZE:  # QueueNum grew after QueueReady
            self.virtio_error("Cannot map descriptor ring")
            return None
        table, limit, i = vq.desc, num, head
        addr, length, flags, nxt = self.vring_desc_read(table, i)
        elem = VirtQueueElement(head, descs=[i])
        if flags & VRING_DESC_F_INDIRECT:
            if not length or length % DESC_SIZE:
                self.virtio_error("Invalid size for indirect buffer table")
                return None
            if not self._in_ram(addr, length):
                self.virtio_error("Cannot map indirect buffer")
                return None
            table, limit, i = addr, length // DESC_SIZE, 0
            addr, length, flags, nxt = self.vring_desc_read(table, i)
        entries = 0
        bounce = [False]  # QEMU's one bounce buffer, held until the element is pushed
        while True:
            if flags & VRING_DESC_F_WRITE:
                ok = self.virtqueue_map_desc(elem.in_sg, addr, length, bounce,
                                             VIRTQUEUE_MAX_SIZE - len(elem.out_sg))
            else:
                if elem.in_sg:
                    self.virtio_error("Incorrect order for descriptors")
                    return None
                ok = self.virtqueue_map_desc(elem.out_sg, addr, length, bounce,
                                             VIRTQUEUE_MAX_SIZE)
            if not ok:
                return None
            entries += 1
            if entries > limit:
                self.virtio_error("Looped descriptor")
                return None
            if not flags & VRING_DESC_F_NEXT:
                break
            i = nxt
            if i >= limit:
                self.virtio_error(f"Desc next is {i}")
                return None
            if table == vq.desc:
                elem.descs.append(i)
            addr, length, flags, nxt = self.vring_desc_read(table, i)
        vq.inuse += 1
        self._trace("virtqueue_pop", vq=vq.index, elem=head, in_num=len(elem.in_sg),
                    out_num=len(elem.out_sg))
        return elem

    def _ram_run(self, pa: int, length: int) -> int:
        """How many bytes from `pa` (at most `length`) are guest RAM, contiguously."""
        mem = self.mem
        if not 0 <= pa < mem.size or not mem.is_ram(pa):
            return 0
        end = min(pa + length, mem.size)
        for s, _ in mem.holes:
            if pa < s < end:
                end = s
        return end - pa

    def virtqueue_map_desc(self, sg: list[tuple[int, int]], pa: int, size: int,
                           bounce: list[bool], max_num_sg: int) -> bool:
        """virtqueue_map_desc: a buffer as pieces of RAM (dma_memory_map maps RAM directly);
        a piece that is not RAM takes the one bounce buffer (at most a page, address_space_map),
        and a second such piece finds it in use: "bogus descriptor"."""
        if not size:
            self.virtio_error("virtio: zero sized buffers are not allowed")
            return False
        while size:
            if len(sg) == max_num_sg:
                self.virtio_error("virtio: too many write descriptors in indirect table")
                return False
            n = self._ram_run(pa, size)
            if not n:
                if bounce[0]:
                    self.virtio_error("virtio: bogus descriptor or out of resources")
                    return False
                bounce[0] = True
                n = min(size, PAGE_SIZE)
            sg.append((pa, n))
            pa += n
            size -= n
        return True

    def virtqueue_detach_element(self, vq: VirtQueue, elem: VirtQueueElement) -> None:
        vq.inuse -= 1

    def virtqueue_fill(self, vq: VirtQueue, elem: VirtQueueElement, length: int, idx: int = 0) -> None:
        self._trace("virtqueue_fill", vq=vq.index, elem=elem.index, len=length, idx=idx)
        if not vq.used or not vq.ring_ok:
            return
        slot = (idx + vq.used_idx) % vq.num
        if 4 + 8 * slot + 8 <= vq.used_len:
            self.dma_write(vq.used + 4 + 8 * slot, struct.pack("<II", elem.index, length))

    def virtqueue_flush(self, vq: VirtQueue, count: int) -> None:
        if not vq.used or not vq.ring_ok:
            vq.inuse -= count
            return
        self._trace("virtqueue_flush", vq=vq.index, count=count)
        old = vq.used_idx
        new = (old + count) & 0xFFFF
        self._used_stw(vq, 2, new)
        vq.used_idx = new
        vq.inuse -= count
        since = (new - vq.signalled_used) & 0xFFFF
        if since - (0x10000 if since & 0x8000 else 0) < count:  # (int16_t) < (uint16_t)
            vq.signalled_used_valid = False

    def virtqueue_push(self, vq: VirtQueue, elem: VirtQueueElement, length: int) -> None:
        self.virtqueue_fill(vq, elem, length, 0)
        self.virtqueue_flush(vq, 1)

    def virtio_should_notify(self, vq: VirtQueue) -> bool:
        """virtio_split_should_notify."""
        if self.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY) and not vq.inuse and self.virtio_queue_empty(vq):
            return True
        if not self.has_feature(VIRTIO_RING_F_EVENT_IDX):
            return not self.vring_avail_flags(vq) & VRING_AVAIL_F_NO_INTERRUPT
        v = vq.signalled_used_valid
        vq.signalled_used_valid = True
        old, new = vq.signalled_used, vq.used_idx
        vq.signalled_used = new
        event = self.vring_avail_ring(vq, vq.num)  # vring_get_used_event
        return not v or ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)  # vring_need_event

    def virtio_notify(self, vq: VirtQueue) -> bool:
        """Tell the driver that `vq` has used buffers: ISR bit 0 and the transport's line.
        False if the driver asked not to be interrupted."""
        if not self.virtio_should_notify(vq):
            return False
        self._trace("virtio_notify", vq=vq.index)
        self.isr |= VIRTIO_ISR_VQ  # virtio_irq -> virtio_set_isr
        self.notify_transport()
        return True

    def virtio_notify_config(self) -> None:
        if not self.status & VIRTIO_CONFIG_S_DRIVER_OK:
            return
        self.isr |= VIRTIO_ISR_VQ | VIRTIO_ISR_CONFIG
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        self.notify_transport()

    def virtio_error(self, message: str) -> None:
        """The guest broke the virtio contract: DEVICE_NEEDS_RESET, and stop."""
        self._trace("virtio_error", message=message)
        self.broken_reason = message
        if self.has_feature(VIRTIO_F_VERSION_1):
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET
            self.virtio_notify_config()
        self.broken = True

    def virtio_queue_notify(self, n: int) -> None:
        """The driver kicked queue `n` (QueueNotify)."""
        vq = self.queue(n)
        if vq is None or not vq.desc or self.broken:
            return
        self._trace("virtio_queue_notify", n=n)
        if vq.handle_output is not None:
            vq.handle_output(vq)

    # -- features and status ----------------------------------------------------------------
    def has_feature(self, bit: int) -> bool:
        return bool(self.guest_features >> bit & 1)

    def virtio_set_features(self, val: int) -> int:
        """The driver's features, masked to what was offered (QEMU keeps FEATURES_OK for a
        driver that acks more: virtio_set_features_nocheck only reports it)."""
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK:
            return -1  # no changes once negotiation is over
        bad = bool(val & ~self.host_features)
        self.guest_features = val & self.host_features
        if self.has_feature(VIRTIO_RING_F_EVENT_IDX):
            for vq in self.vq:
                if vq.num:
                    self.virtio_init_region_cache(vq)
        return -1 if bad else 0

    def virtio_set_status(self, val: int) -> None:
        self._trace("virtio_set_status", val=val)
        self.status = val & 0xFF

    def virtio_reset(self) -> None:
        self.virtio_set_status(0)
        self.device_reset()
        self.broken = False
        self.broken_reason = ""
        self.guest_features = 0
        self.queue_sel = 0
        self.status = 0
        self.isr = 0
        self.notify_transport()
        for vq in self.vq:
            vq.reset()

    def device_reset(self) -> None:
        """The device model's own reset (VirtioDeviceClass.reset)."""

    # -- config space ----------------------------------------------------------------------
    def get_config(self) -> bytes:
        return bytes(self.config_len)

    def set_config(self, offset: int, data: bytes) -> None:
        """A driver's config write (virtio-blk: only `writeback`)."""

    def config_read(self, offset: int, size: int) -> int:
        if offset + size > self.config_len:
            return 0xFFFFFFFF & ((1 << (8 * size)) - 1)
        return int.from_bytes(self.get_config()[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if offset + size > self.config_len:
            return
        self.set_config(offset, value.to_bytes(size, "little"))

    def _trace(self, kind: str, **fields: Any) -> None:
        ev = self.events
        if ev is not None and ev.build(kind):
            ev.emit(kind, self.source, **fields)
