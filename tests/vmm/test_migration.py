"""Moving a VM between the simulator and the host's KVM through the portable state
(vmsim.vmm.savevm, issue 12).

The guest runs to a cut point on one backend, is saved through QEMU's stop path
(qemu_savevm_portable: only the KVM_GET_* copies, RAM and QEMU's devices), loaded into a
fresh VM on the other backend (qemu_loadvm_portable) and run to the end: the two halves'
serial output is the uncut run's, and so is the exit status. The oracle is the uncut run
on the simulator (which tests/stack checks against the host's KVM and QEMU)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from vmsim.events import EventStream
from vmsim.session import Session
from vmsim.snapshot_format import SectionData, read_snapshot, write_snapshot
from vmsim.vmm.machine import MachineConfig
from vmsim.vmm.savevm import (
    PORTABLE_SECTIONS,
    VCPU_PARTS,
    portable_sections,
    qemu_loadvm_portable,
    qemu_savevm_portable,
)

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "sample_guests"
PORTS = str(GUESTS / "ports.asm")  # port I/O only: no IRET, no paging, several lines
HAVE_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)
STEP_LIMIT = 1_000_000


def _uncut(guest: str, config: MachineConfig | None = None) -> tuple[bytes, int | None]:
    s = Session(guest, "sim", config=config)
    r = s.run()
    return bytes(s.serial), r.exit_status


def _backend(name: str) -> str:
    if name == "kvm" and not HAVE_KVM:
        pytest.skip("needs the host's /dev/kvm")
    return name


def _run_to(s: Session, serial: int) -> None:
    for _ in range(STEP_LIMIT):
        if len(s.serial) >= serial:
            return
        assert s.vm.step(), "the guest ended before the cut point"
    pytest.fail("the cut point was not reached")


def migrate(guest: str, src: str, dst: str, cut: int, config=None, **kw):
    a = Session(guest, _backend(src), config=config, **kw)
    _run_to(a, cut)
    state = qemu_savevm_portable(a.vm)
    assert a.vm.runstate == "postmigrate"
    b = Session(guest, _backend(dst), config=config, **kw)
    qemu_loadvm_portable(b.vm, state)
    r = b.run()
    return bytes(a.serial), bytes(b.serial), r, state


@pytest.mark.parametrize("src,dst", [("sim", "sim"), ("sim", "kvm"), ("kvm", "sim"),
                                     ("kvm", "kvm")])
@pytest.mark.parametrize("cut", [1, 120, 260])
def test_migrate_ports(src, dst, cut):
    want = _uncut(PORTS)
    first, second, r, _ = migrate(PORTS, src, dst, cut)
    assert first and second  # each half printed part of it
    assert (first + second, r.exit_status) == want


@pytest.mark.parametrize("src,dst", [("sim", "kvm"), ("kvm", "sim")])
def test_migrate_userspace_irqchip(src, dst):
    config = MachineConfig(irqchip="userspace")
    want = _uncut(PORTS, config)
    first, second, r, state = migrate(PORTS, src, dst, 100, config=config)
    assert state["irqchip"] is None and state["vcpus"][0]["lapic"]["regs"] is None
    assert (first + second, r.exit_status) == want


@pytest.mark.parametrize("src,dst", [("sim", "kvm"), ("kvm", "sim")])
def test_migrate_smp(src, dst):
    """smp.asm: two vCPUs counting with LOCKed instructions; cut before the end."""
    guest = str(GUESTS / "smp.asm")
    config = MachineConfig(smp=2)
    want = _uncut(guest, config)
    a = Session(guest, _backend(src), config=config)
    for _ in range(10):
        assert a.vm.step()
    state = qemu_savevm_portable(a.vm)
    b = Session(guest, _backend(dst), config=config)
    qemu_loadvm_portable(b.vm, state)
    r = b.run()
    assert (bytes(a.serial) + bytes(b.serial), r.exit_status) == want


def test_sim_to_sim_halted_with_the_timer_pending():
    """timer.asm (IRET: the simulator only) cut while the vCPU waits in HLT for a tick:
    the PIC's and PIT's registers (KVM_GET_IRQCHIP, KVM_GET_PIT2), the APIC page and
    KVM_MP_STATE_HALTED cross, and the destination takes the remaining ticks."""
    guest = str(GUESTS / "timer.asm")
    want = _uncut(guest)
    ev = EventStream()
    blocks: list = []
    ev.subscribe(blocks.append, ["kvm_vcpu_block"])
    a = Session(guest, "sim", events=ev)
    for _ in range(STEP_LIMIT):
        if len(blocks) >= 3:
            break
        assert a.vm.step()
    state = qemu_savevm_portable(a.vm)
    assert state["vcpus"][0]["mp_state"]["mp_state"] == 3  # KVM_MP_STATE_HALTED
    assert state["irqchip"]["master"]["imr"] == 0xFE  # only IRQ 0 unmasked
    assert state["pit2"]["channels"][0]["mode"] == 2 and \
        state["pit2"]["channels"][0]["count"] == 11932
    b = Session(guest, "sim")
    qemu_loadvm_portable(b.vm, state)
    r = b.run()
    assert (bytes(a.serial) + bytes(b.serial), r.exit_status) == want


@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_rebuilt_side(paging):
    """After a sim->sim portable load the destination's TLB is empty and kvm.ko's EPT or
    shadow tables are new: it takes the EPT violations / shadow page faults the source
    had already taken, and still runs to the same output. The source, continued from
    the same point instead, takes none of them."""
    want = _uncut(PORTS)
    exits = {"ept": "EPT_VIOLATION", "shadow": "EXCEPTION_NMI"}[paging]
    builds = {"ept": "tdp_map", "shadow": "kvm_mmu_get_page"}[paging]

    def count(log, kind):
        return sum(1 for e in log if e.kind == kind and
                   (kind != "kvm_exit" or e["exit_reason"] == exits))

    ev_a, log_a = EventStream(), []
    ev_a.subscribe(log_a.append, ["kvm_exit", builds])
    a = Session(PORTS, "sim", events=ev_a, paging=paging)
    _run_to(a, 200)
    state = qemu_savevm_portable(a.vm)
    assert count(log_a, builds) > 0  # the source had built its tables
    ev_b, log_b = EventStream(), []
    ev_b.subscribe(log_b.append, ["kvm_exit", builds])
    b = Session(PORTS, "sim", events=ev_b, paging=paging)
    qemu_loadvm_portable(b.vm, state)
    cpu = b.vm.cpus[0].vcpu.cpu
    assert not cpu.mmu.tlb and not cpu.mmu.tlb_w
    r = b.run()
    assert (bytes(a.serial) + bytes(b.serial), r.exit_status) == want
    assert count(log_b, builds) > 0 and count(log_b, "kvm_exit") > 0

    # The same point, continued on the source: its tables are already there.
    before = (count(log_a, builds), count(log_a, "kvm_exit"))
    a.vm.cont()
    a.run()
    assert (count(log_a, builds), count(log_a, "kvm_exit")) == before
    assert bytes(a.serial) == want[0]


def test_load_refusals():
    a = Session(PORTS, "sim")
    _run_to(a, 50)
    state = qemu_savevm_portable(a.vm)
    with pytest.raises(ValueError, match="smp"):
        qemu_loadvm_portable(Session(PORTS, "sim", config=MachineConfig(smp=2)).vm, state)
    with pytest.raises(ValueError, match="irqchip"):
        qemu_loadvm_portable(
            Session(PORTS, "sim", config=MachineConfig(irqchip="userspace")).vm, state)
    with pytest.raises(ValueError, match="ram_size"):
        qemu_loadvm_portable(
            Session(PORTS, "sim", config=MachineConfig(memory_mib=32)).vm, state)
    ran = Session(PORTS, "sim")
    ran.vm.step()
    with pytest.raises(ValueError, match="already run"):
        qemu_loadvm_portable(ran.vm, state)
    with pytest.raises(ValueError, match="version"):
        qemu_loadvm_portable(Session(PORTS, "sim").vm, {**state, "vm": {"version": 99}})
    with pytest.raises(ValueError, match="version"):
        qemu_loadvm_portable(Session(PORTS, "sim").vm, {})


def test_save_then_resume_as_savevm_does():
    want = _uncut(PORTS)
    a = Session(PORTS, "sim")
    _run_to(a, 80)
    qemu_savevm_portable(a.vm, resume=True)
    assert a.vm.runstate == "running"
    r = a.run()
    assert (bytes(a.serial), r.exit_status) == want


def test_portable_sections_pass_their_schemas_through_a_file():
    """Each part of the portable state is a section of a declared, versioned type: a
    snapshot file written with them reads back, and the state it holds still loads."""
    want = _uncut(PORTS)
    a = Session(PORTS, "sim")
    _run_to(a, 150)
    state = qemu_savevm_portable(a.vm)
    parts = portable_sections(state)
    assert {t for _, t, _ in parts} == set(PORTABLE_SECTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "portable.vmsnap")
        write_snapshot(path, {n: SectionData(t, v) for n, t, v in parts}, {"guest": "ports"},
                       types=PORTABLE_SECTIONS)
        snap = read_snapshot(path, types=PORTABLE_SECTIONS)
    sec = snap.sections
    back = {"vm": sec["vm"].data, "ram": sec["ram"].data, "irqchip": sec["irqchip"].data,
            "pit2": sec["pit2"].data, "devices": state["devices"],
            "vcpus": [{key: sec[f"cpu0-{key.replace('_', '-')}"].data
                       for key, _ in VCPU_PARTS}]}
    b = Session(PORTS, "sim")
    qemu_loadvm_portable(b.vm, back)
    r = b.run()
    assert (bytes(a.serial) + bytes(b.serial), r.exit_status) == want


def test_migrate_demo_command(capsys, tmp_path):
    from vmsim.migrate import main

    want = _uncut(PORTS)
    trace = tmp_path / "mig.jsonl"
    assert main([PORTS, "--from", "sim", "--to", "sim", "--cut", "90",
                 "--trace", str(trace)]) == 0
    out = capsys.readouterr()
    assert out.out.encode() == want[0]
    assert "[sim -> sim after 90 bytes]" in out.err
    text = trace.read_text()
    assert '"new_state":"save-vm"' in text and '"level":"KVM_PUT_FULL_STATE"' in text
    assert main([PORTS, "--stop-cont", "--cut", "90"]) == 0
    assert capsys.readouterr().out.encode() == want[0]
    assert main([PORTS, "--cut", "100000", "--to", "sim"]) == 1
    assert "ended before" in capsys.readouterr().err


@pytest.mark.parametrize("src,dst", [("sim", "sim"), ("sim", "kvm"), ("kvm", "sim")])
@pytest.mark.parametrize("cut", [100, 600])
def test_migrate_with_a_disk(src, dst, cut, tmp_path):
    """virtio_blk.asm on the iothread's dataplane: the save drains the block layer
    (bdrv_drain_all: the kicks in the ioeventfds taken, every request completed), and
    the destination starts its dataplane again on its own KVM (KVM_IOEVENTFD, KVM_IRQFD).
    The disk image is shared storage, as in a real migration."""
    import shutil

    guest = str(GUESTS / "virtio_blk.asm")
    image = bytes(range(256)) * 4096
    ref_disk = tmp_path / "ref.img"
    ref_disk.write_bytes(image)
    want = _uncut(guest, MachineConfig(disk=str(ref_disk)))
    disk = tmp_path / "disk.img"
    disk.write_bytes(image)
    config = MachineConfig(disk=str(disk))
    first, second, r, state = migrate(guest, src, dst, cut, config=config)
    assert state["vm"]["iothread"]
    assert (first + second, r.exit_status) == want
    assert disk.read_bytes() == ref_disk.read_bytes()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("src,dst", [("sim", "sim"), ("sim", "kvm"), ("kvm", "sim")])
def test_migrate_with_vga_stores_queued_in_the_coalesced_ring(src, dst):
    """hello.asm with --coalesced-mmio: at the cut the greeting's VGA stores so far wait in
    kvm.ko's ring, which does not cross; the devices' state carries them applied, and the
    destination's screen at the end is the uncut run's."""
    config = MachineConfig(coalesced_mmio=True)
    guest = str(GUESTS / "hello.asm")
    u = Session(guest, "sim", config=config)
    u.run()
    a = Session(guest, _backend(src), config=config)
    _run_to(a, 10)
    assert a.machine.coalesced.ring.pending()  # the cut falls with stores queued
    state = qemu_savevm_portable(a.vm)
    b = Session(guest, _backend(dst), config=config)
    qemu_loadvm_portable(b.vm, state)
    r = b.run()
    assert (bytes(a.serial) + bytes(b.serial), r.exit_status) == (bytes(u.serial), 1)
    assert b.machine.vga_display() == u.machine.vga_display()
