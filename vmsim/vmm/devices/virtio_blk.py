"""virtio-blk (QEMU's hw/block/virtio-blk.c, `-device virtio-blk-device`; VIRTIO 1.2 §5.2).

One request queue of 256 entries (QEMU 7.2's default queue-size). A request is a chain:
a 16-byte header the device reads `{le32 type; le32 reserved; le64 sector}`, the data
buffers (device-readable for OUT, device-writable for IN), and a last device-writable
status byte: VIRTIO_BLK_S_OK 0, IOERR 1, UNSUPP 2. Sectors are 512 bytes.

`virtio_blk_handle_vq` pops every available request and completes each one before it
returns (the file I/O is synchronous here; the cost in virtual cycles is added to
`pending_cycles` for the calling thread to charge): the status byte, `virtqueue_push`,
then `virtio_notify`. It can be called from any simulated thread: today the vCPU thread
under the BQL (QueueNotify as a KVM_EXIT_MMIO, QEMU without ioeventfd).

What the guest sees is what QEMU 7.2 shows for `-drive file=IMG,format=raw,if=none
-device virtio-blk-device,drive=...` (read from a running QEMU with a probe guest):
DeviceFeatures 0x30006E54 / 0x00000101 (SEG_MAX, GEOMETRY, BLK_SIZE, FLUSH, TOPOLOGY,
CONFIG_WCE, DISCARD, WRITE_ZEROES, INDIRECT_DESC, EVENT_IDX; VERSION_1, RING_RESET), plus
RO (0x20) for a read-only drive; a 60-byte config space. Departures, each said where it is
made: the CHS geometry ignores a partition table in the image; DISCARD and WRITE_ZEROES
are offered (as QEMU does) but answered UNSUPP.
"""

from __future__ import annotations

import struct

from vmsim.events import EventStream
from vmsim.hw.memory import PhysicalMemory
from vmsim.vmm.block import BDRV_SECTOR_SIZE, BlockBackend, BlockIOError
from vmsim.vmm.virtio import (
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_F_ANY_LAYOUT,
    VIRTIO_F_NOTIFY_ON_EMPTY,
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    VirtIODevice,
    VirtQueue,
    VirtQueueElement,
)

VIRTIO_ID_BLOCK = 2

# include/standard-headers/linux/virtio_blk.h
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_TOPOLOGY = 10
VIRTIO_BLK_F_CONFIG_WCE = 11
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_T_BARRIER = 0x80000000
REQUEST_NAMES = {VIRTIO_BLK_T_IN: "IN", VIRTIO_BLK_T_OUT: "OUT", VIRTIO_BLK_T_FLUSH: "FLUSH",
                 VIRTIO_BLK_T_GET_ID: "GET_ID", VIRTIO_BLK_T_DISCARD: "DISCARD",
                 VIRTIO_BLK_T_WRITE_ZEROES: "WRITE_ZEROES"}

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
STATUS_NAMES = {0: "OK", 1: "IOERR", 2: "UNSUPP"}

VIRTIO_BLK_ID_BYTES = 20
OUTHDR_SIZE = 16
QUEUE_SIZE = 256  # DEFINE_PROP_UINT16("queue-size", ..., 256)
BDRV_REQUEST_MAX_SECTORS = min(0x7FFFFFFF >> 9, (1 << 31) // BDRV_SECTOR_SIZE)
CONFIG_LEN = 60  # struct virtio_blk_config up to write_zeroes_may_unmap + unused1[3]
MAX_DISCARD_SECTORS = 0x3FFFFF  # (BDRV_REQUEST_MAX_BYTES / 512) & ~sector_mask, as QEMU shows
KEEP_REQUESTS = 32  # requests kept for the device-queues view


def virtio_blk_host_features(readonly: bool) -> int:
    """virtio_blk_get_features for QEMU 7.2's defaults, with the common ring features."""
    f = 0
    for bit in (VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_BLK_SIZE,
                VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE,
                VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_NOTIFY_ON_EMPTY,
                VIRTIO_F_ANY_LAYOUT, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX,
                VIRTIO_F_VERSION_1, VIRTIO_F_RING_RESET):
        f |= 1 << bit
    if readonly:
        f |= 1 << VIRTIO_BLK_F_RO
    return f


def guess_chs_for_size(total_sectors: int) -> tuple[int, int, int]:
    """hw/block/hd-geometry.c guess_chs_for_size: 16 heads, 63 sectors per track.
    (QEMU first tries the MBR's partition table, guess_disk_lchs; vmsim does not.)"""
    return min(max(total_sectors // (16 * 63), 2), 16383), 16, 63


class VirtIOBlock(VirtIODevice):
    def __init__(self, blk: BlockBackend, mem: PhysicalMemory,
                 events: EventStream | None = None, name: str = "virtio-blk"):
        super().__init__(name, VIRTIO_ID_BLOCK, CONFIG_LEN, mem, events)
        self.blk = blk
        self.host_features = virtio_blk_host_features(blk.readonly)
        self.vq_req = self.virtio_add_queue(QUEUE_SIZE, self.virtio_blk_handle_output)
        self.writeback = 1  # the write cache QEMU's cache=writeback default enables
        self.serial = b""  # -device virtio-blk-device,serial=...: empty by default
        self.requests: list[dict[str, object]] = []
        # Requests the block layer has not completed yet, when an iothread runs the queue
        # (None: complete each one at once, in the calling thread).
        self.inflight: list[dict[str, object]] | None = None

    # -- config space (virtio_blk_update_config) --------------------------------------------
    def get_config(self) -> bytes:
        total = self.blk.total_sectors()
        cyls, heads, secs = guess_chs_for_size(total)
        return struct.pack("<QIIHBBIBBHIBBHIIIIIB3x",
                           total, 0, QUEUE_SIZE - 2, cyls, heads, secs, BDRV_SECTOR_SIZE,
                           0, 0, 0, 0, self.writeback, 0, 1,
                           MAX_DISCARD_SECTORS, 1, 1, MAX_DISCARD_SECTORS, 1, 1)

    def set_config(self, offset: int, data: bytes) -> None:
        # virtio_blk_set_config: only `writeback` (offset 32) is writable, with CONFIG_WCE.
        if offset <= 32 < offset + len(data) and self.has_feature(VIRTIO_BLK_F_CONFIG_WCE):
            self.writeback = 1 if data[32 - offset] else 0

    def virtio_set_status(self, val: int) -> None:
        super().virtio_set_status(val)
        # virtio_blk_set_status: a driver that negotiated neither FLUSH nor CONFIG_WCE
        # cannot flush, so the cache is written through.
        if val & VIRTIO_CONFIG_S_DRIVER_OK and not self.has_feature(VIRTIO_BLK_F_CONFIG_WCE):
            self.writeback = 1 if self.has_feature(VIRTIO_BLK_F_FLUSH) else 0

    def device_reset(self) -> None:
        self.writeback = 1

    # -- the request queue --------------------------------------------------------------------
    def virtio_blk_handle_output(self, vq: VirtQueue) -> None:
        self.virtio_blk_handle_vq(vq)

    def virtio_blk_handle_vq(self, vq: VirtQueue | None = None) -> int:
        """Pop and complete every available request; how many were taken."""
        vq = vq or self.vq_req
        taken = 0
        suppress = vq.notification
        while True:
            if suppress:
                self.virtio_queue_set_notification(vq, False)
            while True:
                elem = self.virtqueue_pop(vq)
                if elem is None:
                    break
                taken += 1
                if not self.virtio_blk_handle_request(vq, elem):
                    self.virtqueue_detach_element(vq, elem)
                    break
            if suppress:
                self.virtio_queue_set_notification(vq, True)
            # QEMU loops while the ring is not empty; a broken device stops here instead
            # (QEMU would pop on until the next kick finds it broken).
            if self.broken or self.virtio_queue_empty(vq):
                break
        return taken

    def _gather(self, sg: list[tuple[int, int]], skip: int, length: int) -> bytes:
        out = bytearray()
        for addr, n in sg:
            if skip >= n:
                skip -= n
                continue
            out += self.dma_read(addr + skip, min(n - skip, length - len(out)))
            skip = 0
            if len(out) >= length:
                break
        return bytes(out)

    def _scatter(self, sg: list[tuple[int, int]], data: bytes) -> None:
        at = 0
        for addr, n in sg:
            if at >= len(data):
                break
            piece = data[at:at + n]
            self.dma_write(addr, piece)
            at += len(piece)

    def virtio_blk_handle_request(self, vq: VirtQueue, elem: VirtQueueElement) -> bool:
        """One request; False if it broke the device (no completion is pushed)."""
        if not elem.out_sg or not elem.in_sg:
            self.virtio_error("virtio-blk missing headers")
            return False
        out_size = sum(n for _, n in elem.out_sg)
        if out_size < OUTHDR_SIZE:
            self.virtio_error("virtio-blk request outhdr too short")
            return False
        # The status byte is the last byte of the last device-writable buffer.
        status_addr = elem.in_sg[-1][0] + elem.in_sg[-1][1] - 1
        in_len = sum(n for _, n in elem.in_sg)
        data_in = list(elem.in_sg)
        a, n = data_in[-1]
        data_in[-1] = (a, n - 1)
        if not data_in[-1][1]:
            data_in.pop()
        type_, _, sector = struct.unpack("<IIQ", self._gather(elem.out_sg, 0, OUTHDR_SIZE))
        req: dict[str, object] = {"head": elem.index, "type": "?", "sector": None,
                                  "nsectors": 0, "status": None, "descs": list(elem.descs),
                                  "progress": ["queued", "popped"]}
        self.requests.append(req)
        del self.requests[:-KEEP_REQUESTS]
        kind = type_ & ~(VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER)
        if kind == VIRTIO_BLK_T_IN:
            is_write = bool(type_ & VIRTIO_BLK_T_OUT)
            size = (out_size - OUTHDR_SIZE) if is_write else (in_len - 1)
            nsectors = size // BDRV_SECTOR_SIZE
            req.update(type="OUT" if is_write else "IN", sector=sector, nsectors=nsectors)
            self._trace("virtio_blk_handle_write" if is_write else "virtio_blk_handle_read",
                        req=elem.index, sector=sector, nsectors=nsectors)
            if not self._sect_range_ok(sector, size):
                self._complete(vq, elem, req, VIRTIO_BLK_S_IOERR, status_addr, in_len)
                return True
            req["progress"].append("in flight")  # type: ignore[union-attr]
            offset = sector * BDRV_SECTOR_SIZE
            try:
                if is_write:
                    data = self._gather(elem.out_sg, OUTHDR_SIZE, size)
                    self.pending_cycles += self.blk.pwrite(offset, data)
                    if not self.writeback:
                        self.pending_cycles += self.blk.flush()
                else:
                    data, cost = self.blk.pread(offset, size)
                    self.pending_cycles += cost
                    self._scatter(data_in, data)
                status = VIRTIO_BLK_S_OK
            except BlockIOError:
                status = VIRTIO_BLK_S_IOERR  # werror/rerror=report
            self._complete(vq, elem, req, status, status_addr, in_len)
        elif kind == VIRTIO_BLK_T_FLUSH:
            req["type"] = "FLUSH"
            req["progress"].append("in flight")  # type: ignore[union-attr]
            try:
                self.pending_cycles += self.blk.flush()
                status = VIRTIO_BLK_S_OK
            except BlockIOError:
                status = VIRTIO_BLK_S_IOERR
            self._complete(vq, elem, req, status, status_addr, in_len)
        elif kind == VIRTIO_BLK_T_GET_ID:
            req["type"] = "GET_ID"
            # The serial, NUL-terminated only when shorter than the 20-byte buffer.
            size = min(len(self.serial) + 1, min(in_len - 1, VIRTIO_BLK_ID_BYTES))
            self._scatter(data_in, (self.serial + b"\0")[:size])
            self._complete(vq, elem, req, VIRTIO_BLK_S_OK, status_addr, in_len)
        else:
            # DISCARD and WRITE_ZEROES too: vmsim does not model them (QEMU does).
            req["type"] = REQUEST_NAMES.get(kind, f"type {type_:#x}")
            self._complete(vq, elem, req, VIRTIO_BLK_S_UNSUPP, status_addr, in_len)
        return True

    def _sect_range_ok(self, sector: int, size: int) -> bool:
        """virtio_blk_sect_range_ok: whole sectors, within the disk."""
        nb = size // BDRV_SECTOR_SIZE
        if nb > BDRV_REQUEST_MAX_SECTORS or size % BDRV_SECTOR_SIZE:
            return False
        total = self.blk.total_sectors()
        return not (sector > total or nb > total - sector)

    def _complete(self, vq: VirtQueue, elem: VirtQueueElement, req: dict[str, object],
                  status: int, status_addr: int, in_len: int) -> None:
        """The request is done: at once (the vCPU thread's synchronous path), or, with an
        iothread (`inflight` is a list), when the block layer completes it there, after
        the I/O's latency (vmsim.vmm.iothread)."""
        if self.inflight is not None:
            self.inflight.append({"vq": vq.index, "elem": elem, "req": req, "status": status,
                                  "status_addr": status_addr, "in_len": in_len,
                                  "cost": self.pending_cycles})
            self.pending_cycles = 0
            return
        self.virtio_blk_req_complete(vq, elem, req, status, status_addr, in_len)
        if self.virtio_notify(vq):
            req["progress"].append("interrupt raised")  # type: ignore[union-attr]

    def virtio_blk_req_complete(self, vq: VirtQueue, elem: VirtQueueElement,
                                req: dict[str, object], status: int, status_addr: int,
                                in_len: int) -> None:
        """The status byte and the used ring; the caller notifies the driver."""
        self._trace("virtio_blk_req_complete", req=elem.index, status=status)
        self.dma_write(status_addr, bytes([status]))
        req["status"] = STATUS_NAMES.get(status, str(status))
        self.virtqueue_push(vq, elem, in_len)
        req["progress"].append("completed")  # type: ignore[union-attr]
