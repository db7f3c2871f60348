"""Guest-physical memory: RAM with holes, and an MMIO bus for the holes.

The fast paths of the interpreter read `ram`, `u16`, `u32` and `kind` directly; anything
that is not plain RAM (an MMIO page, a page holding decoded instructions, nothing at all)
goes through `read()` / `write()` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
NUM_FRAMES = 1 << (32 - PAGE_SHIFT)

# Per-4KiB-frame kinds, kept in one bytearray so the hot path tests a frame with one index.
RAM = 0  # plain RAM
CODE = 1  # RAM with decoded instructions cached: a write must drop them (self-modifying code)
OTHER = 2  # MMIO or nothing: every access takes the slow path
# A bit beside RAM and CODE (never on OTHER): the frame is unwritten since `log_writes`
# started, so the store fast paths (which take only RAM) send the first write to `write`,
# which notes the frame in `written` and clears the bit. The history's checkpoints compare
# only those frames with the last one's (the write protection KVM's dirty logging uses,
# kept out of the simulated stack: it costs no exit and no event).
CLEAN = 4
# kind -> kind with CLEAN set (RAM and CODE frames) or left alone (OTHER)
_SET_CLEAN = bytes(k | CLEAN if k != OTHER else k for k in range(256))
_NO_CLEAN = bytes(k & ~CLEAN for k in range(256))


class Device(Protocol):
    """What the bus needs of a device: accesses at an offset from its own base."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass
class MmioRegion:
    base: int
    length: int
    device: Device
    name: str


class PhysicalMemory:
    """RAM from physical 0 up to `size`, minus `holes` (PC's 0xA0000-0xBFFFF by default)."""

    def __init__(self, size: int, holes: tuple[tuple[int, int], ...] = ((0xA0000, 0xC0000),),
                 buffer: bytearray | memoryview | None = None):
        """`buffer`, if given, backs the RAM (e.g. an mmap the VMM also hands to KVM)."""
        if size <= 0 or size % PAGE_SIZE or size > 0xFFFFF000:
            raise ValueError(f"memory size must be a positive multiple of 4 KiB below 4 GiB: {size}")
        self.size = size
        self.ram = bytearray(size) if buffer is None else buffer
        self.u16 = memoryview(self.ram).cast("H")
        self.u32 = memoryview(self.ram).cast("I")
        self.kind = bytearray([OTHER]) * NUM_FRAMES
        self.kind[: size >> PAGE_SHIFT] = bytes(size >> PAGE_SHIFT)
        self.holes = holes
        for start, end in holes:
            self.kind[start >> PAGE_SHIFT : end >> PAGE_SHIFT] = bytes([OTHER]) * (
                (end - start) >> PAGE_SHIFT
            )
        self.mmio: list[MmioRegion] = []
        # Set by the CPU: called with the address and size of a write to a CODE frame
        # (within the frame).
        self.code_write_hook: Callable[[int, int], None] | None = None
        # Other memories over these RAM bytes (kvm.ko's, beside QEMU's): the CPUs on them
        # must hear of a write made here to bytes they decoded, as DMA is coherent with
        # the processors' caches on x86.
        self.sharers: list[PhysicalMemory] = []
        # Called on accesses nobody claims (reads give 0, writes are dropped).
        self.unclaimed_hook: Callable[[int, int, bool], None] | None = None
        # The RAM frames written since log_writes (None: not logging).
        self.written: set[int] | None = None

    # -- the write log ----------------------------------------------------------------
    def log_writes(self) -> None:
        """Start (or restart) noting which RAM frames get written: `written` empties and
        every RAM frame becomes CLEAN."""
        n = self.size >> PAGE_SHIFT
        self.kind[:n] = self.kind[:n].translate(_SET_CLEAN)
        self.written = set()

    def stop_logging(self) -> None:
        """RAM was or will be written behind this object's back (a whole state loaded):
        the log cannot say what changed."""
        n = self.size >> PAGE_SHIFT
        self.kind[:n] = self.kind[:n].translate(_NO_CLEAN)
        self.written = None

    # -- layout ---------------------------------------------------------------------
    def is_ram(self, pa: int) -> bool:
        return pa < self.size and not any(s <= pa < e for s, e in self.holes)

    def add_mmio(self, base: int, length: int, device: Device, name: str = "") -> None:
        # Frame kinds are per page, so a region in RAM's range must fill whole pages; above
        # RAM every frame is OTHER already (virtio-mmio's 0x200-byte windows sit there).
        if base < self.size and (base % PAGE_SIZE or length % PAGE_SIZE):
            raise ValueError("MMIO regions within RAM's range are page aligned")
        self.mmio.append(MmioRegion(base, length, device, name or type(device).__name__))
        if base < self.size:
            self.kind[base >> PAGE_SHIFT : (base + length) >> PAGE_SHIFT] = bytes([OTHER]) * (
                length >> PAGE_SHIFT
            )

    def _region(self, pa: int) -> MmioRegion | None:
        for r in self.mmio:
            if r.base <= pa < r.base + r.length:
                return r
        return None

    # -- slow paths (any address, any alignment) ---------------------------------------
    def read(self, pa: int, size: int) -> int:
        n0 = PAGE_SIZE - (pa & (PAGE_SIZE - 1))
        if size > n0:
            # Crosses a page: each page on its own (as KVM splits MMIO into fragments);
            # physical addresses wrap at 4 GiB.
            lo = self.read(pa, n0)
            return lo | self.read((pa + n0) & 0xFFFFFFFF, size - n0) << (8 * n0)
        if self.kind[pa >> PAGE_SHIFT] != OTHER and pa + size <= self.size:
            return int.from_bytes(self.ram[pa : pa + size], "little")
        region = self._region(pa)
        if region is not None:
            return region.device.read(pa - region.base, size) & ((1 << (8 * size)) - 1)
        if self.unclaimed_hook:
            self.unclaimed_hook(pa, size, False)
        return 0  # QEMU's unassigned memory (memory.c unassigned_mem_read); ports differ

    def write(self, pa: int, size: int, value: int) -> None:
        n0 = PAGE_SIZE - (pa & (PAGE_SIZE - 1))
        if size > n0:
            self.write(pa, n0, value & ((1 << (8 * n0)) - 1))
            self.write((pa + n0) & 0xFFFFFFFF, size - n0, value >> (8 * n0))
            return
        frame = pa >> PAGE_SHIFT
        k = self.kind[frame]
        if k != OTHER and pa + size <= self.size:
            self.ram[pa : pa + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            if k != RAM:
                if k & CLEAN:
                    self.kind[frame] = k = k & ~CLEAN
                    self.written.add(frame)  # type: ignore[union-attr]
                if k & CODE and self.code_write_hook:
                    self.code_write_hook(pa, size)
            if self.sharers:
                self._tell_sharers(pa, size)
            return
        region = self._region(pa)
        if region is not None:
            region.device.write(pa - region.base, size, value & ((1 << (8 * size)) - 1))
            return
        if self.unclaimed_hook:
            self.unclaimed_hook(pa, size, True)

    def load(self, pa: int, data: bytes) -> None:
        """Put bytes into RAM (a loader or DMA): decoded code there is dropped too."""
        if pa < 0 or pa + len(data) > self.size:
            raise ValueError(f"{len(data)} bytes at {pa:#x} do not fit in {self.size:#x} of RAM")
        self.ram[pa : pa + len(data)] = data
        kind = self.kind
        frames = range(pa >> PAGE_SHIFT, (pa + len(data) - 1 >> PAGE_SHIFT) + 1)
        if self.written is not None:
            self.written.update(frames)  # (a hole's frames too: the bytes under it change)
        for frame in frames:
            k = kind[frame]
            if k & CLEAN:
                kind[frame] = k = k & ~CLEAN
            if (k & CODE and self.code_write_hook) or self.sharers:
                start = max(pa, frame << PAGE_SHIFT)
                n = min(pa + len(data), (frame + 1) << PAGE_SHIFT) - start
                if k & CODE and self.code_write_hook:
                    self.code_write_hook(start, n)
                if self.sharers:
                    self._tell_sharers(start, n)

    def _tell_sharers(self, pa: int, size: int) -> None:
        """A write here of `size` bytes at `pa` (within one frame): to the CPUs on the
        other memories over this RAM, a write to their decoded code if it is."""
        frame = pa >> PAGE_SHIFT
        for m in self.sharers:
            if m.kind[frame] & CODE and m.code_write_hook:
                m.code_write_hook(pa, size)

    def read_bytes(self, pa: int, length: int) -> bytes:
        """Bytes for a viewer or decoder, without side effects: MMIO reads as all ones (a
        placeholder: reading a device may change it), memory nobody claims as 0 (as the
        guest reads it)."""
        end = pa + length
        if 0 <= pa and end <= self.size and pa >> PAGE_SHIFT == (end - 1) >> PAGE_SHIFT \
                and self.kind[pa >> PAGE_SHIFT] != OTHER:
            return bytes(self.ram[pa:end])  # within one RAM frame (a debugger's stepping)
        out = bytearray()
        for a in range(pa, pa + length):
            a &= 0xFFFFFFFF
            if a < self.size and self.kind[a >> PAGE_SHIFT] != OTHER:
                out.append(self.ram[a])
            else:
                out.append(0 if self._region(a) is None else 0xFF)
        return bytes(out)
