"""The machine: QEMU's minimal microvm-like PC as vmsim builds it (DESIGN.md "The machine").

RAM from guest-physical 0 (0xA0000-0xBFFFF is not RAM), no BIOS, no PCI; the guest image
is loaded at 0x100000. Devices: COM1 16550 UART at 0x3F8, isa-debug-exit at 0x501, the
VGA text buffer at 0xB8000 (MMIO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmsim.asm.image import GuestImage
from vmsim.events import EventStream
from vmsim.hw.memory import PhysicalMemory
from vmsim.vmm.bus import IoBus
from vmsim.vmm.devices.debug_exit import DebugExit
from vmsim.vmm.devices.serial import Serial16550
from vmsim.vmm.devices.vga import BASE as VGA_BASE
from vmsim.vmm.devices.vga import SIZE as VGA_SIZE
from vmsim.vmm.devices.vga import VgaText

LOAD_ADDRESS = 0x100000
ENTRY_ESP = 0x100000
COM1 = 0x3F8
DEBUG_EXIT_PORT = 0x501


class GuestLoadError(Exception):
    """The guest file cannot be loaded; str() is a one-line message naming the file."""


@dataclass
class MachineConfig:
    memory_mib: int = 16
    serial_in: bytes = b""


class Machine:
    def __init__(self, config: MachineConfig | None = None, events: EventStream | None = None,
                 serial_out: Callable[[bytes], None] | None = None):
        self.config = config or MachineConfig()
        if not 2 <= self.config.memory_mib <= 3072:
            raise ValueError("memory must be between 2 and 3072 MiB")
        self.events = events
        self.mem = PhysicalMemory(self.config.memory_mib << 20)
        self.io = IoBus(events)
        self.serial = Serial16550(serial_out, self.config.serial_in)
        self.io.attach(COM1, 8, self.serial, "serial0", sizes=(1,))
        self.exit_status: int | None = None
        self.debug_exit = DebugExit(self._debug_exit)
        self.io.attach(DEBUG_EXIT_PORT, 1, self.debug_exit, "isa-debug-exit", sizes=(1, 2, 4))
        self.vga = VgaText()
        self.mem.add_mmio(VGA_BASE, VGA_SIZE, self.vga, "vga")
        self.image: GuestImage | None = None
        self.exit_listeners: list[Callable[[int], None]] = []

    def _debug_exit(self, status: int) -> None:
        self.exit_status = status
        for fn in self.exit_listeners:
            fn(status)

    def load_image(self, image: GuestImage) -> None:
        if LOAD_ADDRESS + len(image.data) > self.mem.size:
            raise GuestLoadError(f"{image.source_file}: {len(image.data)} bytes do not fit in "
                                 f"{self.config.memory_mib} MiB at {LOAD_ADDRESS:#x}")
        self.mem.load(LOAD_ADDRESS, image.data)
        self.image = image


def load_guest_file(path: str | Path) -> GuestImage:
    """A `.asm` file (assembled by vmsim) or a flat binary, as a GuestImage.

    Raises GuestLoadError (missing file) or vmsim.asm.AsmError (bad source).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise GuestLoadError(f"{path}: {e.strerror or e}") from None
    if p.suffix.lower() in (".asm", ".s", ".nasm"):
        from vmsim.asm import assemble

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GuestLoadError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        return assemble(text, str(path))
    return GuestImage(data=raw, origin=LOAD_ADDRESS, source_file=str(path))
