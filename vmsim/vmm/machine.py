"""The machine: QEMU's minimal microvm-like PC as vmsim builds it (DESIGN.md "The machine").

RAM from guest-physical 0 (0xA0000-0xBFFFF is not RAM), no BIOS, no PCI; the guest image
is loaded at 0x100000. Devices: COM1 16550 UART at 0x3F8, isa-debug-exit at 0x501, the
VGA text buffer at 0xB8000 (MMIO).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmsim.asm.image import GuestImage
from vmsim.clock import Mutex
from vmsim.events import EventStream
from vmsim.hw.cpu import default_cpuid
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
VGA_HOLE = (0xA0000, 0xC0000)  # legacy VGA window: not RAM
KVM_CPUID_SIGNATURE = 0x40000000


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
        size = self.config.memory_mib << 20
        # Guest RAM is one anonymous mapping, as QEMU allocates it: KVM maps it into the
        # guest in two slots around the VGA hole; the bare CPU uses it directly.
        self.ram = mmap.mmap(-1, size)
        self.ram_view = memoryview(self.ram)
        self.mem = PhysicalMemory(size, (VGA_HOLE,), buffer=self.ram)
        self.entry_point = LOAD_ADDRESS
        self.entry_esp = ENTRY_ESP
        self.bql = Mutex("BQL", self._bql_changed)
        self.stop_requested = False
        self.stop_reason = ""
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
        # QEMU's isa-debug-exit calls exit() at the first write: the first status is the
        # one (a `rep outsb` to the port ends with its first byte on every backend).
        if self.exit_status is not None:
            return
        self.exit_status = status
        self.shutdown_request(f"isa-debug-exit: status {status}")
        for fn in self.exit_listeners:
            fn(status)

    # -- what the KVM accelerator needs -------------------------------------------------
    def ram_slots(self) -> list[tuple[int, int, int]]:
        """(guest-physical address, size, offset in the RAM mapping) per memory slot."""
        size = self.mem.size
        lo, hi = VGA_HOLE
        return [(0, lo, 0), (hi, size - hi, hi)]

    def cpuid_entries(self) -> list[tuple[int, int, int, int, int, int]]:
        """CPUID as the guest sees it (KVM_SET_CPUID2): the CPU model plus KVM's leaves."""
        entries = [(leaf, sub, *regs) for (leaf, sub), regs in sorted(default_cpuid().items())
                   if leaf < 0x80000000]
        # Leaf 1 ECX bit 31: "hypervisor present", which QEMU sets for its guests and which
        # guests test before looking at the 0x40000000 leaves.
        entries = [(lf, sub, a, b, c | (1 << 31) if lf == 1 else c, d)
                   for lf, sub, a, b, c, d in entries]
        sig = b"KVMKVMKVM\0\0\0"
        ebx, ecx, edx = (int.from_bytes(sig[i:i + 4], "little") for i in (0, 4, 8))
        entries.append((KVM_CPUID_SIGNATURE, 0, KVM_CPUID_SIGNATURE + 1, ebx, ecx, edx))
        entries.append((KVM_CPUID_SIGNATURE + 1, 0, 0, 0, 0, 0))
        return entries

    def shutdown_request(self, reason: str) -> None:
        """qemu_system_shutdown_request: every thread stops at its next chance."""
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason

    # -- the big QEMU lock ------------------------------------------------------------------
    def bql_lock(self, who: str) -> Generator[Any, None, None]:
        yield from self.bql.lock(who)

    def bql_unlock(self, who: str) -> None:
        self.bql.unlock(who)

    def _bql_changed(self, action: str, who: str) -> None:
        if self.events is not None and self.events.wants("bql"):
            self.events.emit("bql", who, action=action)

    # -- address spaces (QEMU's address_space_io / address_space_memory) ----------------------
    def address_space_io_read(self, port: int, size: int) -> int:
        value = self.io.read(port, size)
        self._emit_access("port", port, size, False, value)
        return value

    def address_space_io_write(self, port: int, size: int, value: int) -> None:
        self._emit_access("port", port, size, True, value)
        self.io.write(port, size, value)

    def address_space_memory_read(self, addr: int, size: int) -> int:
        value = self.mem.read(addr, size)
        self._emit_access("mmio", addr, size, False, value)
        return value

    def address_space_memory_write(self, addr: int, size: int, value: int) -> None:
        self._emit_access("mmio", addr, size, True, value)
        self.mem.write(addr, size, value)

    def _emit_access(self, space: str, addr: int, size: int, is_write: bool, value: int) -> None:
        ev = self.events
        if ev is not None and ev.wants("device_access"):
            dev = self.io.find(addr) if space == "port" else self.mem._region(addr)
            ev.emit("device_access", dev.name if dev else "unclaimed", space=space,
                    address=addr, size=size, is_write=is_write, value=value)

    def load_image(self, image: GuestImage) -> None:
        if LOAD_ADDRESS + len(image.data) > self.mem.size:
            raise GuestLoadError(f"{image.source_file}: {len(image.data)} bytes do not fit in "
                                 f"{self.config.memory_mib} MiB at {LOAD_ADDRESS:#x}")
        self.mem.load(LOAD_ADDRESS, image.data)
        self.image = image


def load_guest_file(path: str | Path, max_bytes: int | None = None) -> GuestImage:
    """A `.asm` file (assembled by vmsim) or a flat binary, as a GuestImage.

    Only a regular file is read (vmsim.files.read_input_file), and only up to its limit:
    a source up to SOURCE_LIMIT, a binary up to `max_bytes` (what RAM holds above the
    load address; by default the largest RAM). Raises GuestLoadError (missing, special or
    too large file) or vmsim.asm.AsmError (bad source).
    """
    from vmsim.files import SOURCE_LIMIT, InputError, read_input_file

    p = Path(path)
    is_source = p.suffix.lower() in (".asm", ".s", ".nasm")
    if max_bytes is None:
        max_bytes = (3072 << 20) - LOAD_ADDRESS
    try:
        raw = (read_input_file(p, SOURCE_LIMIT, "the source file limit") if is_source else
               read_input_file(p, max_bytes, f"what fits in RAM above {LOAD_ADDRESS:#x}"))
    except InputError as e:
        raise GuestLoadError(str(e)) from None
    if not raw:
        raise GuestLoadError(f"{path}: the file is empty")
    if is_source:
        from vmsim.asm import assemble

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GuestLoadError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        return assemble(text, str(path))
    return GuestImage(data=raw, origin=LOAD_ADDRESS, source_file=str(path))
