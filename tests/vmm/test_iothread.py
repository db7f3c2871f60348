"""The virtio-blk request path as QEMU and KVM take it (issue 11): KVM_IOEVENTFD and
KVM_IRQFD in the simulated kvm.ko, the iothread that runs the queue without the BQL, and
`--no-ioeventfd` for comparison.

The oracle for the whole guest is the text and image QEMU microvm produces for
sample_guests/virtio_blk.asm (tests/guests/test_virtio_guest.py derives it, and checks it
against qemu-system-i386 where installed): every mode must give exactly that. The kernel
side follows LNX virt/kvm/eventfd.c (kvm_assign_ioeventfd, ioeventfd_in_range,
irqfd_inject) and Documentation/virt/kvm/api.rst (KVM_IOEVENTFD, KVM_IRQFD).
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.guests.test_virtio_guest import SOURCE, VMSIM_ACPI, after_run, expected_serial, make_disk
from vmsim.asm import assemble
from vmsim.clock import Scheduler
from vmsim.events import EventStream
from vmsim.kvm import api
from vmsim.kvm.eventfd import ioeventfd_write
from vmsim.kvm.kvm_main import KvmError, SimKvm
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig
from vmsim.vmm.vm import POSITIONS, REBUILDABLE

NOTIFY = 0xFEB00E50  # transport 7's QueueNotify
BUDGET = 50_000_000
MODES = [(irqchip, ioeventfd) for irqchip in ("kernel", "userspace") for ioeventfd in (True, False)]
MODE_IDS = [f"{i}-{'ioeventfd' if e else 'no-ioeventfd'}" for i, e in MODES]


# -- kvm.ko's side ------------------------------------------------------------------------------

def _vm(irqchip: bool = False):
    kvm = SimKvm()
    kvm.use_clock(Scheduler())
    vm = kvm.create_vm()
    if irqchip:
        vm.create_irqchip()
    return vm


def test_ioeventfd_matches_address_length_and_datamatch() -> None:
    vm = _vm()
    n = api.EventNotifier("n")
    vm.ioeventfd(n, NOTIFY, 4, datamatch=0)
    # ioeventfd_in_range: another length, another value, another address: not taken
    assert not ioeventfd_write(vm, NOTIFY, 2, 0)
    assert not ioeventfd_write(vm, NOTIFY, 4, 1)
    assert not ioeventfd_write(vm, NOTIFY + 4, 4, 0)
    assert n.count == 0 and not n.ready()
    assert ioeventfd_write(vm, NOTIFY, 4, 0) and ioeventfd_write(vm, NOTIFY, 4, 0)
    # an eventfd counts: two writes, one read takes both
    assert n.ready() and n.eventfd_ctx_do_read() == 2 and not n.event_notifier_test_and_clear()


def test_ioeventfd_without_datamatch_takes_any_value() -> None:
    vm = _vm()
    n = api.EventNotifier("n")
    vm.ioeventfd(n, NOTIFY, 4)
    assert ioeventfd_write(vm, NOTIFY, 4, 0x1234) and n.count == 1


def test_ioeventfd_errors_as_kvm_gives_them() -> None:
    vm = _vm()
    n, other = api.EventNotifier("n"), api.EventNotifier("other")
    vm.ioeventfd(n, NOTIFY, 4, datamatch=0)
    with pytest.raises(KvmError) as e:
        vm.ioeventfd(other, NOTIFY, 4, datamatch=0)  # ioeventfd_check_collision
    assert e.value.errno == errno.EEXIST
    vm.ioeventfd(other, NOTIFY, 4, datamatch=1)  # another datamatch is another device
    with pytest.raises(KvmError) as e:
        vm.ioeventfd(n, NOTIFY, 3)  # only 0, 1, 2, 4, 8
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KvmError) as e:
        vm.ioeventfd(n, NOTIFY, 4, datamatch=1, flags=api.KVM_IOEVENTFD_FLAG_DEASSIGN)
    assert e.value.errno == errno.ENOENT  # that address and match belong to `other`
    vm.ioeventfd(n, NOTIFY, 4, datamatch=0, flags=api.KVM_IOEVENTFD_FLAG_DEASSIGN)
    assert not ioeventfd_write(vm, NOTIFY, 4, 0) and n.count == 0


def test_irqfd_injects_an_edge_and_needs_the_irqchip() -> None:
    with pytest.raises(KvmError) as e:
        _vm(irqchip=False).irqfd(api.EventNotifier("g"), 12)
    assert e.value.errno == errno.EAGAIN
    events = EventStream()
    seen: list[tuple[str, dict]] = []
    events.subscribe(lambda ev: seen.append((ev.kind, dict(ev.fields))),
                     ["kvm_set_irq", "irqfd_inject"])
    kvm = SimKvm(events)
    kvm.use_clock(Scheduler())
    vm = kvm.create_vm()
    vm.create_irqchip()
    g = api.EventNotifier("g")
    vm.irqfd(g, 12)
    g.event_notifier_set()
    # irqfd_inject: kvm_set_irq(KVM_USERSPACE_IRQ_SOURCE_ID, gsi, 1) then 0; the count is
    # consumed by the kernel's wakeup
    assert [(k, f.get("level")) for k, f in seen] == [("irqfd_inject", None),
                                                      ("kvm_set_irq", 1), ("kvm_set_irq", 0)]
    assert all(f["gsi"] == 12 for _, f in seen) and g.count == 0
    vm.irqfd(g, 12, api.KVM_IRQFD_FLAG_DEASSIGN)
    g.event_notifier_set()
    assert len(seen) == 3 and g.count == 1


def test_event_notifier_state_round_trip() -> None:
    n = api.EventNotifier("ioeventfd vq0")
    n.eventfd_signal(3)
    m = api.EventNotifier()
    m.load_state(n.state())
    assert m.state() == n.state() == {"name": "ioeventfd vq0", "count": 3} and m.ready()


# -- the whole guest ------------------------------------------------------------------------------

class Run:
    """sample_guests/virtio_blk.asm with --disk in one mode, every event recorded with the
    simulated thread that was running and who held the BQL."""

    def __init__(self, tmp_path: Path, irqchip: str, ioeventfd: bool) -> None:
        self.disk = make_disk(64)
        self.path = tmp_path / f"disk-{irqchip}-{ioeventfd}.img"
        self.path.write_bytes(self.disk)
        self.serial = bytearray()
        events = EventStream()
        self.events: list[tuple[str, str, str, str | None, dict]] = []
        s = self.session = Session(str(SOURCE), "sim",
                                   MachineConfig(irqchip=irqchip, disk=str(self.path),
                                                 ioeventfd=ioeventfd),
                                   serial_out=self.serial.extend, max_instructions=BUDGET,
                                   events=events)

        def record(ev) -> None:
            cur = s.vm.sched.current if s.vm is not None else None
            self.events.append((ev.kind, ev.source, cur.name if cur else "",
                                s.machine.bql.owner, dict(ev.fields)))
        events.subscribe(record)
        self.outcome = s.run()
        s.machine.close()

    def kinds(self, kind: str) -> list[tuple[str, str, str, str | None, dict]]:
        return [e for e in self.events if e[0] == kind]


@pytest.mark.parametrize(("irqchip", "ioeventfd"), MODES, ids=MODE_IDS)
def test_guest_prints_and_writes_what_qemu_does(tmp_path: Path, irqchip: str,
                                                ioeventfd: bool) -> None:
    r = Run(tmp_path, irqchip, ioeventfd)
    assert r.outcome.exit_status == 1, r.outcome
    assert bytes(r.serial).decode() == expected_serial(r.disk, acpi=VMSIM_ACPI)
    assert r.path.read_bytes() == after_run(r.disk)


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_queue_notify_never_exits_with_ioeventfd(tmp_path: Path, irqchip: str) -> None:
    on, off = Run(tmp_path, irqchip, True), Run(tmp_path, irqchip, False)
    requests = len(off.kinds("virtio_blk_req_complete"))
    assert requests == len(on.kinds("virtio_blk_req_complete")) == 12

    def notify_exits(r: Run) -> int:
        return sum(1 for e in r.kinds("kvm_userspace_exit") if e[4].get("phys_addr") == NOTIFY)
    assert notify_exits(off) == requests  # one KVM_EXIT_MMIO per QueueNotify
    assert notify_exits(on) == 0
    # kvm.ko completed them instead, in the vCPU thread, and signalled the eventfd
    writes = on.kinds("ioeventfd_write")
    assert len(writes) == requests and all(e[2] == "vcpu0" and e[4]["addr"] == NOTIFY
                                           for e in writes)
    # ... which woke the iothread: it pops and handles every request, without the BQL
    for kind in ("virtio_queue_notify", "virtqueue_pop", "virtio_blk_handle_read",
                 "virtio_blk_handle_write"):
        got = on.kinds(kind)
        assert got and all(e[2] == "iothread0" and e[3] != "iothread0" for e in got), kind
    assert all(e[2] == "vcpu0" for e in off.kinds("virtio_queue_notify"))
    # QueueNotify registered at DRIVER_OK (datamatch 0, 4 bytes), removed at the reset
    ioctls = [e[4]["detail"] for e in on.kinds("kvm_vm_ioctl") if e[4]["name"] == "KVM_IOEVENTFD"]
    assert ioctls == [f"addr {NOTIFY:#x} len 4 datamatch 0", f"deassign addr {NOTIFY:#x}"]
    assert not on.session.vm.kvm.vm.ioeventfds and not on.session.vm.kvm.vm.irqfds


def test_iothread_does_not_hold_the_bql_during_io(tmp_path: Path) -> None:
    r = Run(tmp_path, "userspace", True)
    sched = r.session.vm.sched
    # the I/O is a timed wait in aio_poll: every completion comes from it with the BQL free
    # of the iothread; it takes the BQL only to raise the userspace PIC's line
    completions = [i for i, e in enumerate(r.events)
                   if e[0] == "aio_poll" and e[4]["what"] == "I/O completion"]
    assert len(completions) == 12
    assert all(r.events[i][3] != "iothread0" for i in completions)
    locks = [e for e in r.kinds("bql") if e[1] == "iothread0" and e[4]["action"] == "lock"]
    assert len(locks) == len(r.kinds("virtio_notify")) == 12
    assert "iothread0" in [t.name for t in sched.threads]


def test_irqfd_replaces_irq_line_per_request(tmp_path: Path) -> None:
    on, off = Run(tmp_path, "kernel", True), Run(tmp_path, "kernel", False)

    def irq12_lines(r: Run) -> int:
        return sum(1 for e in r.kinds("kvm_vm_ioctl")
                   if e[4]["name"] == "KVM_IRQ_LINE" and e[4]["detail"].startswith("irq 12 "))
    assert irq12_lines(off) >= 12  # KVM_IRQ_LINE from the vCPU thread per notification
    assert irq12_lines(on) == 0
    notified = on.kinds("virtio_notify_irqfd")
    injected = on.kinds("irqfd_inject")
    assert len(notified) == len(injected) == 12
    assert all(e[2] == "iothread0" for e in notified)
    # the irqfd was registered on the transport's GSI
    assert [e[4]["detail"] for e in on.kinds("kvm_vm_ioctl")
            if e[4]["name"] == "KVM_IRQFD"] == ["gsi 12", "deassign gsi 12"]


def test_trace_is_deterministic_with_the_iothread(tmp_path: Path) -> None:
    a = Run(tmp_path, "kernel", True)
    b = Run(tmp_path, "kernel", True)
    strip = [(k, src, cur, f) for k, src, cur, _, f in a.events]
    assert strip == [(k, src, cur, f) for k, src, cur, _, f in b.events]
    assert a.session.virtual_time == b.session.virtual_time


def test_iothread_positions_are_rebuildable(tmp_path: Path) -> None:
    disk = make_disk(64)
    path = tmp_path / "disk.img"
    path.write_bytes(disk)
    s = Session(str(SOURCE), "sim", MachineConfig(disk=str(path)), max_instructions=BUDGET)
    vm = s.vm
    seen = set()
    while vm.step() and not s.machine.stop_requested:
        seen.add(vm.positions()["iothread0"])
    s.machine.close()
    # asleep on the ioeventfd, or on the next I/O completion: points a snapshot can take
    assert {"aio_poll", "aio_poll io"} <= seen
    assert {"aio_poll", "aio_poll io"} <= REBUILDABLE


# -- the host's KVM ---------------------------------------------------------------------------------

def test_host_kvm_completes_the_notify_write_in_the_kernel(monkeypatch) -> None:
    # Documentation/virt/kvm/api.rst, KVM_IOEVENTFD: a write matching the registered
    # address, length and datamatch signals the eventfd "without an exit to userspace";
    # one that does not match (value 1) exits as KVM_EXIT_MMIO.
    import mmap
    import os

    from vmsim.asm import assemble
    from vmsim.hostkvm import HostKvmError, open_kvm

    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    try:
        kvm = open_kvm()
    except HostKvmError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "120")
    ram = mmap.mmap(-1, 2 << 20)
    code = assemble(f"""bits 32
org 0x100000
        mov dword [{NOTIFY:#x}], 0
        mov dword [{NOTIFY:#x}], 0
        mov dword [{NOTIFY:#x}], 0
        mov dword [{NOTIFY:#x}], 1
        hlt
""", "notify.asm").data
    ram[0x100000:0x100000 + len(code)] = code
    vm = None
    try:
        vm = kvm.create_vm()
        vm.set_tss_addr()
        vm.set_user_memory_region(0, 0, 0, 2 << 20, memoryview(ram))
        n = api.EventNotifier("ioeventfd vq0")
        vm.ioeventfd(n, NOTIFY, 4, datamatch=0)
        vcpu = vm.create_vcpu(0)
        s = vcpu.get_sregs()
        s.cs = api.KvmSegment.flat(0x08, code=True)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(s, name, api.KvmSegment.flat(0x10, code=False))
        s.cr0 = 0x11
        vcpu.set_sregs(s)
        vcpu.set_regs(api.KvmRegs(rip=0x100000, rsp=0x90000, rflags=0x2))
        assert vcpu.run() == 0
        run = vcpu.kvm_run
        assert run.exit_reason == api.KVM_EXIT_MMIO
        addr, data, length, is_write = run.mmio()
        assert (addr, length, is_write, data[:4]) == (NOTIFY, 4, 1, b"\1\0\0\0")
        assert n.ready() and n.eventfd_ctx_do_read() == 3 and not n.ready()
    finally:
        if vm is not None:
            vm.close()
        kvm.close()


# -- nothing the driver does with the iothread running crashes vmsim ------------------------------
REGS = [0x010, 0x014, 0x020, 0x024, 0x030, 0x038, 0x044, 0x050, 0x060, 0x064, 0x070, 0x080,
        0x090, 0x0A0]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.sampled_from(REGS), st.sampled_from([1, 2, 4]),
                                 st.integers(0, 0xFFFFFFFF), st.integers(0, 6)), max_size=30),
       table=st.binary(max_size=256), head=st.integers(0, 0xFFFF), num=st.integers(0, 300),
       irqchip=st.sampled_from(["kernel", "userspace"]))
def test_random_driver_with_the_iothread_never_raises(tmp_path, writes, table, head, num,
                                                      irqchip):
    # DRIVER_OK starts the dataplane; then random register writes (resets, DRIVER_OK again,
    # kicks through the ioeventfd as kvm.ko takes them) with the threads running between.
    img = tmp_path / "r.img"
    img.write_bytes(bytes(8 * 512))
    s = Session(assemble("bits 32\norg 0x100000\ncli\nhlt\n", "halt.asm"), "sim",
                MachineConfig(disk=str(img), irqchip=irqchip), max_instructions=100_000)
    vm, mem = s.vm, s.machine.mem
    p = s.machine.virtio_transports[7]
    desc, avail, used = 0x200000, 0x201000, 0x202000
    mem.load(desc, table)
    mem.load(avail, struct.pack("<HH8H", 0, 1, *([head & 7] * 8)))

    def write(reg: int, size: int, value: int) -> None:
        if reg == 0x50 and ioeventfd_write(vm.kvm.vm, p.base + reg, size, value):
            return  # completed in kvm.ko: the iothread sees the eventfd
        p.write(reg, size, value)
    try:
        for reg, value in ((0x70, 1), (0x70, 3), (0x20, 0), (0x24, 1), (0x20, 1), (0x70, 0xB),
                           (0x38, num), (0x80, desc), (0x90, avail), (0xA0, used), (0x44, 1),
                           (0x70, 0xF), (0x50, 0)):
            write(reg, 4, value)
        assert p.ioeventfd_started and vm.kvm.vm.ioeventfds
        for reg, size, value, steps in writes:
            write(reg, size, value & ((1 << (8 * size)) - 1))
            for _ in range(steps):
                vm.sched.step()
            assert vm.positions()["iothread0"] in POSITIONS | {"running"}
        for _ in range(200):
            if vm.sched.step() is None:
                break
    finally:
        s.machine.close()
    vdev = s.machine.virtio_blk
    if not any(r["type"] == "OUT" and r["status"] == "OK" for r in vdev.requests):
        assert img.read_bytes() == bytes(8 * 512)
