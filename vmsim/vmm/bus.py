"""The port I/O bus (QEMU's `address_space_io`): devices claim port ranges.

The bus owns addresses; a device sees an offset from its own base. What nobody claims
reads as all ones and ignores writes, and an `io_unclaimed` event says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.events import EventStream
from vmsim.hw.memory import Device


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
        for p in range(base, base + length):
            if p in self._by_port:
                raise ValueError(f"port {p:#x} already belongs to {self._by_port[p].name}")
        pr = PortRange(base, length, device, name, sizes)
        self.ranges.append(pr)
        for p in range(base, base + length):
            self._by_port[p] = pr

    def find(self, port: int) -> PortRange | None:
        return self._by_port.get(port)

    def read(self, port: int, size: int) -> int:
        pr = self._by_port.get(port)
        if pr is None or size not in pr.sizes:
            self._unclaimed(port, size, False)
            return (1 << (8 * size)) - 1
        return pr.device.read(port - pr.base, size) & ((1 << (8 * size)) - 1)

    def write(self, port: int, size: int, value: int) -> None:
        pr = self._by_port.get(port)
        if pr is None or size not in pr.sizes:
            self._unclaimed(port, size, True)
            return
        pr.device.write(port - pr.base, size, value & ((1 << (8 * size)) - 1))

    def _unclaimed(self, port: int, size: int, is_write: bool) -> None:
        if self.events is not None and self.events.wants("io_unclaimed"):
            self.events.emit("io_unclaimed", self.source, space="port", address=port, size=size,
                             is_write=is_write)
