"""Coalesced MMIO (the default machine; `--no-coalesced-mmio` turns it off): the VGA window
as a KVM_REGISTER_COALESCED_MMIO zone, as QEMU's VGA registers it. Writes inside it queue
in kvm.ko's ring with no exit to userspace; a write that finds the ring full
(KVM_COALESCED_MMIO_MAX - 1 entries) exits as KVM_EXIT_MMIO, and QEMU applies the queued
writes, in order, before it serves that access or any read of the VGA.

The host's KVM is the oracle for the exits and for the ring's capacity: the same VMM runs
on /dev/kvm, where the real kvm.ko fills the real ring."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import pytest

from tests.stack.stackrun import first_difference, host_kvm_problem, kvm_exits
from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.kvm.api import KVM_CAP_COALESCED_MMIO, KVM_CAP_COALESCED_PIO, KVM_COALESCED_MMIO_MAX
from vmsim.kvm.kvm_main import KvmError, SimKvm
from vmsim.session import Session
from vmsim.trace import TraceWriter
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"

# 400 word stores with one REP STOSW (kvm.ko's emulator runs them one at a time, all in
# the kernel: RCX never reaches a multiple of 1024), then a read of the last cell (which
# QEMU can only answer once the ring is applied), printed on COM1.
RING_FULL = """bits 32
org 0x100000
VGA equ 0xB8000
        cld
        mov edi, VGA
        mov ecx, 400
        mov ax, 0x1F41
        rep stosw
        mov eax, [VGA + 2 * 398]
        mov dx, 0x3F8
        out dx, al
        shr eax, 16
        out dx, al
        mov dx, 0x501
        mov al, 0
        out dx, al
"""

# REP INSB from the UART's LSR (0x60: THRE and TEMT) into the screen: kvm.ko reads ahead up
# to 1024 bytes per exit and stores each batch as one write, which it offers to the ring 8
# bytes at a time (vcpu_mmio_write) until the ring is full; the rest of the page's part
# leaves for QEMU, 8 bytes an exit.
REP_INS = """bits 32
org 0x100000
VGA equ 0xB8000
        cld
        mov edi, VGA
        mov ecx, 3000
        mov dx, 0x3FD
        rep insb
        mov al, [VGA + 2999]
        mov dx, 0x3F8
        out dx, al
        mov dx, 0x501
        mov al, 0
        out dx, al
"""


def _run(guest: str | Path, backend: str, coalesced: bool, paging: str = "ept"):
    """Run to the end: (serial, exit status, the screen as a refresh draws it, the
    exits to userspace, the events by kind)."""
    image = assemble(Path(guest).read_text() if isinstance(guest, Path) else guest,
                     str(guest) if isinstance(guest, Path) else "<guest>")
    events = EventStream()
    buf = io.StringIO()
    trace = TraceWriter(events, buf, "vm")
    config = MachineConfig(coalesced_mmio=coalesced)
    s = (Session(image, backend, config, paging=paging, events=events) if backend == "sim"
         else Session(image, backend, config, events=events))
    outcome = s.run()
    trace.close()
    lines = buf.getvalue().splitlines()
    kinds: dict[str, list[dict]] = {}
    for line in lines:
        d = json.loads(line)
        kinds.setdefault(d["kind"], []).append(d)
    screen = s.machine.vga_display()
    s.machine.close()
    return bytes(s.serial), outcome.exit_status, screen, kvm_exits(lines), kinds


@pytest.fixture(scope="module")
def host_kvm() -> None:
    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("guest", [SAMPLES / "vga.asm", SAMPLES / "hello.asm", RING_FULL,
                                   REP_INS], ids=["vga", "hello", "ring-full", "rep-ins"])
def test_coalescing_changes_what_exits_not_what_the_guest_does(guest, paging: str) -> None:
    serial, status, screen, exits, _ = _run(guest, "sim", False, paging)
    serial_c, status_c, screen_c, exits_c, kinds = _run(guest, "sim", True, paging)
    assert (serial_c, status_c, screen_c) == (serial, status, screen)
    assert status == 1 and screen.strip(b"\0")
    writes = [e for e in exits if e["reason"] == "KVM_EXIT_MMIO" and e["is_write"]]
    writes_c = [e for e in exits_c if e["reason"] == "KVM_EXIT_MMIO" and e["is_write"]]
    # Every VGA write that did not leave for QEMU went into the ring, and QEMU applied
    # each entry once: the writes it saw either way are the same, in the same order.
    queued = kinds.get("coalesced_mmio_write", [])
    assert len(writes_c) + len(queued) == len(writes) > len(writes_c)
    # QEMU applied each write that left at once, and each queued one when it flushed the
    # ring; what it had not flushed by the end is still queued (and on the screen).
    applied = [d for d in kinds["device_access"] if d["is_write"] and d["space"] == "mmio"]
    flushed = sum(f["entries"] for f in kinds.get("kvm_flush_coalesced_mmio_buffer", []))
    assert len(applied) == len(writes_c) + flushed <= len(writes)
    # The reads still exit, one each, as before.
    reads = [e for e in exits if e["reason"] == "KVM_EXIT_MMIO" and not e["is_write"]]
    assert [e for e in exits_c if e["reason"] == "KVM_EXIT_MMIO" and not e["is_write"]] == reads


def test_a_full_ring_sends_the_next_write_to_qemu_which_applies_the_ring_first() -> None:
    serial, status, screen, exits, kinds = _run(RING_FULL, "sim", True)
    assert (serial, status) == (b"AA", 1)
    assert screen[:800] == bytes([0x41, 0x1F]) * 400
    room = KVM_COALESCED_MMIO_MAX - 1  # one entry always stays free
    mmio = [(e["is_write"], e["phys_addr"]) for e in exits if e["reason"] == "KVM_EXIT_MMIO"]
    # Store `room` + 1 is the first to leave (its cell: 2 * room), then as many again; the
    # 60 left stay queued until the read makes QEMU apply them.
    assert mmio == [(True, 0xB8000 + 2 * room), (True, 0xB8000 + 2 * (2 * room + 1)),
                    (False, 0xB8000 + 2 * 398)]
    flushes = [f["entries"] for f in kinds["kvm_flush_coalesced_mmio_buffer"]]
    assert flushes == [room, room, 400 - 2 * (room + 1)]
    assert len(kinds["coalesced_mmio_write"]) == 400 - 2


def test_the_exits_are_the_host_kvm_s(host_kvm: None) -> None:
    """The real kvm.ko's ring decides when a write leaves: the exits to userspace, each
    with its address and data, must be the same, and so must the screen."""
    for guest in (RING_FULL, REP_INS, SAMPLES / "vga.asm", SAMPLES / "hello.asm"):
        sim = _run(guest, "sim", True)
        kvm = _run(guest, "kvm", True)
        assert first_difference(sim[3], kvm[3]) == "", guest
        assert sim[:3] == kvm[:3], guest


def test_the_zone_ioctls_follow_linux() -> None:
    kvm = SimKvm(EventStream())
    assert kvm.check_extension(KVM_CAP_COALESCED_MMIO) == 2  # the ring's page offset
    assert kvm.check_extension(KVM_CAP_COALESCED_PIO) == 0  # not modelled
    vm = kvm.create_vm()
    with pytest.raises(KvmError) as e:
        vm.register_coalesced_mmio(0x70, 2, pio=1)
    assert e.value.errno == errno.EINVAL
    vm.register_coalesced_mmio(0xA0000, 0x20000)
    vm.register_coalesced_mmio(0xFEB00000, 0x1000)
    # Unregistering drops the zones that hold the range given, not those it overlaps.
    vm.unregister_coalesced_mmio(0xA0000, 0x30000)
    assert [z.state() for z in vm.coalesced_zones] == [[0xA0000, 0x20000, 0],
                                                       [0xFEB00000, 0x1000, 0]]
    vm.unregister_coalesced_mmio(0xB8000, 2)
    assert [z.state() for z in vm.coalesced_zones] == [[0xFEB00000, 0x1000, 0]]
