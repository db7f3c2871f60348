"""The port I/O bus (QEMU's `address_space_io`): devices claim port ranges.

The bus owns addresses; a device sees an offset from its own base. What nobody claims
reads as all ones and ignores writes, and an `io_unclaimed` event says so.

A device declares the access sizes it implements (QEMU's `MemoryRegionOps.impl`); the bus
fits every guest access to them, as QEMU's memory API does (memory.c
`flatview_read/write_continue` and `access_with_adjusted_size`):
- an access that runs past the end of a device's range is cut there, and the rest goes
  to whoever owns the next port (or to nobody);
- within one device, an access wider than the device implements becomes several accesses
  of the widest size it does implement, lowest address first, little-endian: a 16-bit
  `out dx, ax` to a UART that implements 1-byte accesses writes AL to port DX, then AH
  to port DX+1, and `in ax, dx` reads the two registers the same way.
KVM itself never splits: the guest's `out dx, ax` is one KVM_EXIT_IO of size 2, and the
splitting happens here, in the VMM.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.events import EventStream
from vmsim.hw.memory import Device

IO_SPACE_SIZE = 0x10000  # x86 port addresses are 16 bits; beyond them nobody answers


@dataclass
class PortRange:
    base: int
    length: int
    device: Device
    name: str
    sizes: tuple[int, ...] = (1, 2, 4)


class IoBus:
    def __init__(self, events: EventStream | None = None, source: str = "io"):
        self.ranges: list[PortRange] = []
        self._by_port: dict[int, PortRange] = {}
        self.events = events
        self.source = source

    def attach(self, base: int, length: int, device: Device, name: str,
               sizes: tuple[int, ...] = (1, 2, 4)) -> None:
        """Give ports base..base+length-1 to `device`, which implements accesses of `sizes`
        bytes (every other access reaches it split into those)."""
        if not sizes or any(s not in (1, 2, 4) for s in sizes):
            raise ValueError(f"{name}: access sizes must be among 1, 2, 4, not {sizes}")
        for p in range(base, base + length):
            if p in self._by_port:
                raise ValueError(f"port {p:#x} already belongs to {self._by_port[p].name}")
        pr = PortRange(base, length, device, name, tuple(sorted(sizes)))
        self.ranges.append(pr)
        for p in range(base, base + length):
            self._by_port[p] = pr

    def find(self, port: int) -> PortRange | None:
        return self._by_port.get(port)

    def nobody_at(self, port: int, size: int) -> bool:
        """No device claims a byte of this access and nobody hears or counts io_unclaimed:
        it reads all ones and a write vanishes, without a trace (REP INS / OUTS then take a
        page of memory at a time)."""
        by_port = self._by_port
        return all(p not in by_port for p in range(port, port + size)) and not (
            self.events is not None and self.events.wants("io_unclaimed"))

    def read(self, port: int, size: int) -> int:
        pr = self._by_port.get(port)
        if pr is not None and size in pr.sizes and port + size <= pr.base + pr.length:
            return pr.device.read(port - pr.base, size) & ((1 << (8 * size)) - 1)
        value = 0
        for at, n, piece in self._pieces(port, size):
            if piece is None:
                self._unclaimed(at, n, False)
                part = (1 << (8 * n)) - 1
            else:
                part = piece.device.read(at - piece.base, n) & ((1 << (8 * n)) - 1)
            value |= part << (8 * (at - port))
        return value

    def write(self, port: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        pr = self._by_port.get(port)
        if pr is not None and size in pr.sizes and port + size <= pr.base + pr.length:
            pr.device.write(port - pr.base, size, value)
            return
        for at, n, piece in self._pieces(port, size):
            if piece is None:
                self._unclaimed(at, n, True)
            else:
                piece.device.write(at - piece.base, n, (value >> (8 * (at - port)))
                                   & ((1 << (8 * n)) - 1))

    def _pieces(self, port: int, size: int) -> list[tuple[int, int, PortRange | None]]:
        """The accesses one guest access becomes, in address order: (port, size, range),
        range None for bytes nobody claims (merged into one run)."""
        out: list[tuple[int, int, PortRange | None]] = []
        at, end = port, port + size
        while at < end:
            pr = self._by_port.get(at) if at < IO_SPACE_SIZE else None
            if pr is None:
                run = at
                while run < end and (run >= IO_SPACE_SIZE or run not in self._by_port):
                    run += 1
                out.append((at, run - at, None))
                at = run
                continue
            stop = min(end, pr.base + pr.length)  # the part of the access this device owns
            while at < stop:
                fits = [s for s in pr.sizes if s <= stop - at]
                if not fits:
                    # The device implements only wider accesses than what is left (QEMU
                    # would widen the access; vmsim has no such device): nobody answers.
                    out.append((at, stop - at, None))
                    at = stop
                    break
                out.append((at, fits[-1], pr))
                at += fits[-1]
        return out

    def _unclaimed(self, port: int, size: int, is_write: bool) -> None:
        if self.events is not None and self.events.build("io_unclaimed"):
            self.events.emit("io_unclaimed", self.source, space="port", address=port, size=size,
                             is_write=is_write)
