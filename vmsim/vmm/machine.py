"""The machine: QEMU's minimal microvm-like PC as vmsim builds it (DESIGN.md "The machine").

RAM from guest-physical 0 (0xA0000-0xBFFFF is not RAM), no BIOS, no PCI; the guest image
is loaded at 0x100000. Memory nobody claims reads 0 (QEMU's unassigned memory). Devices:
COM1 16550 UART at 0x3F8 on ISA IRQ 4, isa-debug-exit at 0x501, the VGA text buffer at
0xB8000 (MMIO; the VGA window below it reads all ones, as QEMU's VGA in text mode), and
the interrupt controllers: with `irqchip="kernel"` (QEMU's kernel-irqchip=on, the
default) the PIC pair, the PIT and a local APIC per vCPU live in kvm.ko and ISA IRQ lines
become KVM_IRQ_LINE; with
`irqchip="userspace"` the PIC and PIT are device models here (no APIC), and the PIC's
output raises CPU_INTERRUPT_HARD on the first vCPU.

Virtio: QEMU microvm's virtio-mmio transports at 0xFEB00000 + 0x200 * i (hw/i386/microvm.c
microvm_devices_init). With ACPI (QEMU's default) microvm makes 24 of them on a second
IOAPIC (GSI 24-47); vmsim has no IOAPIC, so it builds microvm as `-M microvm,acpi=off`
does: 8 transports on GSI 5 + i, which the PIC sees as ISA IRQs 5-12 (gsi_handler sends a
GSI below 16 to the i8259 too). `--disk` puts virtio-blk on the last one, transport 7 at
0xFEB00E00, IRQ 12, where QEMU plugs the first `-device virtio-blk-device` (checked on
QEMU 7.2: the bus is searched from the last transport). The other transports answer with
DeviceID 0.

vmsim's firmware shortcut for several vCPUs: every vCPU starts at the entry point in the
same state as vCPU 0, except ESP (ENTRY_ESP - index * VCPU_STACK_SPACING) and its APIC ID
in CPUID leaf 1; on a real PC the other vCPUs would wait for INIT-SIPI-SIPI.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmsim.asm.image import GuestImage
from vmsim.clock import Mutex
from vmsim.costs import COSTS
from vmsim.events import EventStream
from vmsim.hw.cpu import default_cpuid
from vmsim.hw.memory import PhysicalMemory
from vmsim.kvm.api import KVM_COALESCED_MMIO_MAX, CoalescedMmioRing
from vmsim.state import fields_state, from_plain, load_fields, to_plain
from vmsim.vmm.block import BlockBackend
from vmsim.vmm.bus import IoBus
from vmsim.vmm.devices.debug_exit import DebugExit
from vmsim.vmm.devices.serial import Serial16550
from vmsim.vmm.devices.vga import BASE as VGA_BASE
from vmsim.vmm.devices.vga import LOWMEM_BASE, VgaLowMem, VgaText
from vmsim.vmm.devices.vga import SIZE as VGA_SIZE
from vmsim.vmm.devices.virtio_blk import VirtIOBlock
from vmsim.vmm.devices.virtio_mmio import VIRTIO_MMIO_SIZE, VirtIOMMIOProxy

LOAD_ADDRESS = 0x100000
ENTRY_ESP = 0x100000
VCPU_STACK_SPACING = 0x10000
MAX_SMP = 8
IRQCHIP_MODES = ("kernel", "userspace")
SERIAL_IRQ = 4  # COM1 on ISA IRQ 4
COM1 = 0x3F8
DEBUG_EXIT_PORT = 0x501
VGA_HOLE = (0xA0000, 0xC0000)  # legacy VGA window: not RAM
KVM_CPUID_SIGNATURE = 0x40000000
VIRTIO_MMIO_BASE = 0xFEB00000  # include/hw/i386/microvm.h
VIRTIO_NUM_TRANSPORTS = 8  # microvm without its second IOAPIC
VIRTIO_IRQ_BASE = 5  # mms->virtio_irq_base without ACPI


class CoalescedMmio:
    """QEMU's coalesced-MMIO state (KVMState's coalesced_mmio_ring and
    coalesced_flush_in_progress): kvm.ko's ring as QEMU maps it, set with the first vCPU
    once a zone is registered (vmsim.vmm.kvm_all); and the cycles flushes cost the thread
    that ran them, not yet charged."""

    __slots__ = ("cycles", "flushing", "ring")

    def __init__(self) -> None:
        self.ring: CoalescedMmioRing | None = None
        self.flushing = False
        self.cycles = 0


class GuestLoadError(Exception):
    """The guest file cannot be loaded; str() is a one-line message naming the file."""


@dataclass
class MachineConfig:
    memory_mib: int = 16
    serial_in: bytes = b""
    smp: int = 1  # vCPUs
    irqchip: str = "kernel"  # "kernel" (KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2) or "userspace"
    disk: str | None = None  # a raw image for virtio-blk (`--disk FILE[,readonly]`)
    disk_readonly: bool = False
    # QueueNotify as an ioeventfd the iothread waits on (QEMU's default), or, False
    # (`--no-ioeventfd`), as a KVM_EXIT_MMIO the vCPU thread handles under the BQL.
    ioeventfd: bool = True
    # The VGA window as a coalesced-MMIO zone, as QEMU's VGA always registers it (vga_init:
    # memory_region_set_coalescing): its writes queue in kvm.ko's ring, no exit each
    # (vmsim.kvm.coalesced_mmio). False (`--no-coalesced-mmio`): every VGA store comes
    # out of KVM_RUN as a KVM_EXIT_MMIO. A backend with no VM (bare) has nothing to queue in.
    coalesced_mmio: bool = True


class Machine:
    def __init__(self, config: MachineConfig | None = None, events: EventStream | None = None,
                 serial_out: Callable[[bytes], None] | None = None,
                 ram: mmap.mmap | None = None):
        """`ram`: the guest RAM mapping to use, one a machine that will not run again had
        (the session's history rebuilds a VM on it, vmsim/history.py); a new one if None."""
        self.config = config or MachineConfig()
        if not 2 <= self.config.memory_mib <= 3072:
            raise ValueError("memory must be between 2 and 3072 MiB")
        if not 1 <= self.config.smp <= MAX_SMP:
            raise ValueError(f"--smp must be between 1 and {MAX_SMP}")
        if self.config.irqchip not in IRQCHIP_MODES:
            raise ValueError(f"--irqchip must be kernel or userspace, not {self.config.irqchip!r}")
        self.events = events
        size = self.config.memory_mib << 20
        # Guest RAM is one anonymous mapping, as QEMU allocates it: KVM maps it into the
        # guest in two slots around the VGA hole; the bare CPU uses it directly.
        if ram is not None and len(ram) != size:
            raise ValueError(f"a RAM mapping of {len(ram)} bytes for {size} bytes of RAM")
        self.ram = mmap.mmap(-1, size) if ram is None else ram
        self.ram_view = memoryview(self.ram)
        self.mem = PhysicalMemory(size, (VGA_HOLE,), buffer=self.ram)
        self.entry_point = LOAD_ADDRESS
        self.entry_esp = ENTRY_ESP
        self.on_close: list[Callable[[], None]] = []
        self.bql = Mutex("BQL", self._bql_changed)
        self.stop_requested = False
        self.stop_reason = ""
        self.io = IoBus(events)
        # Where ISA IRQ lines go: KVM_IRQ_LINE, or the userspace PIC (set by the VM).
        self.gsi_handler: Callable[[int, int], None] | None = None
        self.irq_levels = [0] * 16
        self.pic: Any = None  # the userspace PIC pair and PIT (irqchip="userspace")
        self.pit: Any = None
        # pic_irq_request: what the userspace PIC's INTR output does (set by the VM).
        self.pic_irq_request: Callable[[int], None] | None = None
        self.serial = Serial16550(serial_out, self.config.serial_in,
                                  irq=lambda level: self.set_isa_irq(SERIAL_IRQ, int(level)))
        self.io.attach(COM1, 8, self.serial, "serial0", sizes=(1,))
        self.exit_status: int | None = None
        self.debug_exit = DebugExit(self._debug_exit)
        self.io.attach(DEBUG_EXIT_PORT, 1, self.debug_exit, "isa-debug-exit", sizes=(1, 2, 4))
        self.vga = VgaText()
        self.mem.add_mmio(VGA_BASE, VGA_SIZE, self.vga, "vga")
        self.mem.add_mmio(LOWMEM_BASE, VGA_BASE - LOWMEM_BASE, VgaLowMem(), "vga-lowmem")
        self.image: GuestImage | None = None
        self.exit_listeners: list[Callable[[int], None]] = []
        self.coalesced = CoalescedMmio()
        # The disk is opened first among the virtio parts: a bad path is a one-line
        # BlockOpenError before anything runs.
        self.blk = (BlockBackend(self.config.disk, self.config.disk_readonly)
                    if self.config.disk else None)
        self.virtio_blk: VirtIOBlock | None = None
        self.virtio_transports: list[VirtIOMMIOProxy] = []
        for i in range(VIRTIO_NUM_TRANSPORTS):
            vdev = None
            if self.blk is not None and i == VIRTIO_NUM_TRANSPORTS - 1:
                vdev = self.virtio_blk = VirtIOBlock(self.blk, self.mem, events)
            irq = VIRTIO_IRQ_BASE + i
            proxy = VirtIOMMIOProxy(i, VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * i, irq,
                                    lambda level, irq=irq: self.set_isa_irq(irq, level),
                                    vdev, events)
            self.virtio_transports.append(proxy)
            self.mem.add_mmio(proxy.base, VIRTIO_MMIO_SIZE, proxy, proxy.name)

    def take_device_cycles(self) -> int:
        """Virtual cycles the devices' own work cost since the last call (a virtio-blk
        request's file I/O), for the thread that ran them to charge."""
        co = self.coalesced
        cycles, co.cycles = co.cycles, 0
        vdev = self.virtio_blk
        if vdev is None or not vdev.pending_cycles:
            return cycles
        cycles, vdev.pending_cycles = cycles + vdev.pending_cycles, 0
        return cycles

    def coalesced_zones(self) -> list[tuple[int, int]]:
        """The (address, size) of the regions QEMU coalesces: the VGA window, one zone as
        vga_io_memory is one region (the text buffer and the lowmem below it)."""
        if not self.config.coalesced_mmio:
            return []
        return [(VGA_HOLE[0], VGA_HOLE[1] - VGA_HOLE[0])]

    def flush_coalesced_mmio_buffer(self) -> None:
        """kvm_flush_coalesced_mmio_buffer: apply the writes kvm.ko queued, oldest first,
        each as cpu_physical_memory_write makes it, and free their entries. Called before
        any access to a coalesced region is served (prepare_mmio_access with
        mr->flush_coalesced_mmio), under the BQL."""
        co = self.coalesced
        ring = co.ring
        if ring is None or co.flushing:
            return
        first, last = ring.first, ring.last
        if first == last:
            return
        co.flushing = True
        try:
            ev = self.events
            pending = ring.pending()
            if ev is not None and ev.build("kvm_flush_coalesced_mmio_buffer"):
                ev.emit("kvm_flush_coalesced_mmio_buffer", ev.thread or "qemu",
                        entries=len(pending), first=first, last=last)
            for addr, data in pending:
                self.address_space_memory_write(addr, len(data), int.from_bytes(data, "little"))
                ring.first = (ring.first + 1) % KVM_COALESCED_MMIO_MAX
                co.cycles += COSTS["device_access"]
        finally:
            co.flushing = False

    def vga_display(self) -> bytes:
        """The text screen as a display refresh draws it: vga_update_display applies the
        coalesced writes first. (Here on a copy: looking does not change the run.)"""
        screen = bytearray(self.vga.buffer)
        if self.coalesced.ring is not None:
            for addr, data in self.coalesced.ring.pending():
                at = addr - VGA_BASE
                if 0 <= at and at + len(data) <= VGA_SIZE:
                    screen[at:at + len(data)] = data
        return bytes(screen)

    def close(self) -> None:
        """Release what the machine holds on the host (the disk image's descriptor, and
        whatever was registered in on_close: a snapshot's temporary disk image)."""
        if self.blk is not None:
            self.blk.close()
        while self.on_close:
            self.on_close.pop()()

    def entry_esp_for(self, index: int) -> int:
        """vCPU `index`'s entry ESP (vmsim's firmware shortcut for several vCPUs)."""
        return self.entry_esp - index * VCPU_STACK_SPACING

    # -- interrupt lines (QEMU's qemu_irq: hw/i386/x86.c gsi_handler, kvm_pc_gsi_handler) ----
    def set_isa_irq(self, irq: int, level: int) -> None:
        """qemu_set_irq on ISA IRQ `irq`: to kvm.ko (KVM_IRQ_LINE) or the userspace PIC."""
        level = 1 if level else 0
        if self.irq_levels[irq] == level:
            return  # QEMU's irq handlers see every call; only changes matter to an edge PIC
        self.irq_levels[irq] = level
        ev = self.events
        if ev is not None and ev.build("qemu_set_irq"):
            ev.emit("qemu_set_irq", "isa", line="gsi", irq=irq, level=level)
        if self.gsi_handler is not None:
            self.gsi_handler(irq, level)

    def create_userspace_irqchip(self, now: Callable[[], int], make_timer) -> None:
        """QEMU's i8259 pair and i8254 as device models (kernel-irqchip=off): ports 0x20,
        0xA0, 0x4D0 and 0x40-0x43 on the I/O bus, the PIT's IRQ 0 on a main-loop timer."""
        from vmsim.hw.i8254 import Pit8254
        from vmsim.hw.i8259 import PicPair

        self.pic = PicPair(on_output=self._pic_output)
        self.io.attach(0x20, 2, self.pic.master, "i8259 master", sizes=(1,))
        self.io.attach(0xA0, 2, self.pic.slave, "i8259 slave", sizes=(1,))
        self.io.attach(0x4D0, 2, self.pic.elcr, "elcr", sizes=(1,))
        self.pit = Pit8254(now, make_timer, lambda level: self.set_isa_irq(0, level),
                           irq_style="qemu")
        self.io.attach(0x40, 4, self.pit, "i8254", sizes=(1,))
        self.gsi_handler = self.pic.set_irq

    def _pic_output(self, level: int) -> None:
        if self.pic_irq_request is not None:
            self.pic_irq_request(level)

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

    def cpuid_entries(self, index: int = 0) -> list[tuple[int, int, int, int, int, int]]:
        """CPUID as vCPU `index` sees it (KVM_SET_CPUID2): the CPU model plus KVM's leaves."""
        entries = [(leaf, sub, *regs) for (leaf, sub), regs in sorted(default_cpuid().items())
                   if leaf < 0x80000000]
        # Leaf 1 as QEMU's cpu_x86_cpuid fills it: EBX[31:24] the initial APIC ID, and with
        # more than one logical processor per package EBX[23:16] their number and EDX.HTT
        # (-smp N gives N cores in one socket). ECX bit 31: "hypervisor present", which
        # QEMU sets for its guests and which guests test before the 0x40000000 leaves.
        n = self.config.smp
        entries = [(lf, sub, a,
                    (b & 0xFFFF) | (index << 24) | ((n << 16) if n > 1 else 0) if lf == 1 else b,
                    c | (1 << 31) if lf == 1 else c,
                    d | ((1 << 28) if n > 1 else 0) if lf == 1 else d)
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

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The devices QEMU owns, as plain data (QEMU's per-device vmstate sections):
        COM1, isa-debug-exit, the VGA text buffer, the ISA IRQ levels, the userspace PIC and
        PIT, the virtio-mmio transports and the virtio-blk device with its requests, the
        block backend's counters, and the BQL. RAM is saved separately (VirtualMachine),
        and the disk image is a file of its own: it is not copied."""
        vdev = self.virtio_blk
        return {
            "stop_requested": self.stop_requested, "stop_reason": self.stop_reason,
            "exit_status": self.exit_status, "irq_levels": list(self.irq_levels),
            "serial": fields_state(self.serial, skip=("notify_main_loop",)),
            "debug_exit": fields_state(self.debug_exit),
            "vga": fields_state(self.vga),
            "pic": None if self.pic is None else self.pic.state(),
            "pit": None if self.pit is None else self.pit.state(),
            "virtio_transports": [fields_state(p) for p in self.virtio_transports],
            "virtio_blk": None if vdev is None else _virtio_blk_state(vdev),
            "blk": None if self.blk is None else fields_state(self.blk, skip=("path", "fd")),
            "bql": fields_state(self.bql),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        self.stop_requested, self.stop_reason = d["stop_requested"], d["stop_reason"]
        self.exit_status = d["exit_status"]
        self.irq_levels[:] = d["irq_levels"]
        load_fields(self.serial, d["serial"])
        load_fields(self.debug_exit, d["debug_exit"])
        load_fields(self.vga, d["vga"])
        if d["pic"] is not None:
            self.pic.load_state(d["pic"])
        if d["pit"] is not None:
            self.pit.load_state(d["pit"])
        for p, pd in zip(self.virtio_transports, d["virtio_transports"], strict=True):
            load_fields(p, pd)
        if d["virtio_blk"] is not None:
            _load_virtio_blk_state(self.virtio_blk, d["virtio_blk"])
        if d["blk"] is not None:
            load_fields(self.blk, d["blk"])
        load_fields(self.bql, d["bql"])

    # -- the big QEMU lock ------------------------------------------------------------------
    def bql_lock(self, who: str) -> Generator[Any, None, None]:
        yield from self.bql.lock(who)

    def bql_unlock(self, who: str) -> None:
        self.bql.unlock(who)

    def _bql_changed(self, action: str, who: str, holder: str = "", waited: int = 0,
                     held: int = 0) -> None:
        if self.events is not None and self.events.build("bql"):
            self.events.tp["bql"].fire(who, action, holder, waited, held)

    # -- address spaces (QEMU's address_space_io / address_space_memory) ----------------------
    def address_space_io_read(self, port: int, size: int) -> int:
        value = self.io.read(port, size)
        self._emit_access("port", port, size, False, value)
        return value

    def address_space_io_write(self, port: int, size: int, value: int) -> None:
        self._emit_access("port", port, size, True, value)
        self.io.write(port, size, value)

    def address_space_memory_read(self, addr: int, size: int) -> int:
        if self.coalesced.ring is not None and VGA_HOLE[0] <= addr < VGA_HOLE[1]:
            self.flush_coalesced_mmio_buffer()
        value = self.mem.read(addr, size)
        self._emit_access("mmio", addr, size, False, value)
        return value

    def address_space_memory_write(self, addr: int, size: int, value: int) -> None:
        if self.coalesced.ring is not None and VGA_HOLE[0] <= addr < VGA_HOLE[1]:
            self.flush_coalesced_mmio_buffer()
        self._emit_access("mmio", addr, size, True, value)
        self.mem.write(addr, size, value)

    def _emit_access(self, space: str, addr: int, size: int, is_write: bool, value: int) -> None:
        ev = self.events
        if ev is not None and ev.build("device_access"):
            dev = self.io.find(addr) if space == "port" else self.mem._region(addr)
            ev.tp["device_access"].fire(dev.name if dev else "unclaimed", space, addr, size,
                                        is_write, value)

    def load_ram(self, data: bytes) -> None:
        """All of RAM at once (a saved state): written past the memory's write log."""
        self.ram[:] = data
        self.mem.stop_logging()

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


def _virtio_blk_state(vdev: VirtIOBlock) -> dict[str, Any]:
    """VirtIOBlock with its queues; an in-flight request names its entry in `requests`
    by index (the two lists share the dict)."""
    out = fields_state(vdev, skip=("vq", "inflight"))
    out["vq"] = [fields_state(q) for q in vdev.vq]
    inflight = None
    if vdev.inflight is not None:
        index = {id(r): i for i, r in enumerate(vdev.requests)}
        inflight = [to_plain({**c, "req": index[id(c["req"])]}) for c in vdev.inflight]
    out["inflight"] = inflight
    return out


def _load_virtio_blk_state(vdev: VirtIOBlock, d: dict[str, Any]) -> None:
    load_fields(vdev, {k: v for k, v in d.items() if k not in ("vq", "inflight")})
    for q, qd in zip(vdev.vq, d["vq"], strict=True):
        load_fields(q, qd)
    if d["inflight"] is None:
        vdev.inflight = None
    else:
        vdev.inflight = [{**c, "req": vdev.requests[c["req"]]}
                         for c in from_plain(d["inflight"])]
