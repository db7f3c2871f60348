"""QEMU's stop and cont (vmsim.vmm.cpus, VirtualMachine.stop / cont, issue 12).

A stop is vm_stop (every vCPU kicked out of KVM_RUN and parked) then
cpu_synchronize_all_states (the KVM_GET_* copies); a cont puts the copies back with the
KVM_SET_* ioctls before each vCPU's next KVM_RUN. The same guest gives the same ioctls,
in the same order, on the simulated kvm.ko and on the host's; and a simulated VM
stopped and continued runs to the same output and exit status as one never stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmsim.events import EventStream
from vmsim.kvm import api
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "sample_guests"
PORTS = str(GUESTS / "ports.asm")
HAVE_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)
STEP_LIMIT = 1_000_000  # scheduler steps: far beyond what these guests need

STOP_KINDS = ("runstate_set", "vm_state_notify", "pause_all_vcpus", "resume_all_vcpus",
              "qemu_cpu_kick", "qemu_cpu_stop", "kvm_arch_get_registers",
              "kvm_arch_put_registers", "kvm_vcpu_ioctl", "kvm_vm_ioctl")

# What `stop` then `cont` of a one-vCPU VM with the in-kernel irqchip does, as QEMU does
# it: the vCPU, kicked while QEMU handles its exit, re-enters KVM_RUN with immediate_exit
# (the exit's completion) and leaves at once; it parks; kvm-pit freezes the PIT; the
# state is copied out. At cont the PIT is put back, the vCPU kicked awake, and it puts
# its state back before its next KVM_RUN.
EXPECTED_STOP = [
    "runstate_set", "pause_all_vcpus", "qemu_cpu_kick", "KVM_RUN", "qemu_cpu_stop",
    "vm_state_notify", "KVM_GET_PIT2", "kvm_arch_get_registers", "KVM_GET_VCPU_EVENTS",
    "KVM_GET_MP_STATE", "KVM_GET_REGS", "KVM_GET_SREGS", "KVM_GET_MSRS", "KVM_GET_LAPIC"]
EXPECTED_CONT = [
    "runstate_set", "vm_state_notify", "KVM_SET_PIT2", "resume_all_vcpus", "qemu_cpu_kick",
    "kvm_arch_put_registers", "KVM_SET_SREGS", "KVM_SET_VCPU_EVENTS", "KVM_SET_REGS",
    "KVM_SET_MSRS", "KVM_RUN"]


def _names(events) -> list[str]:
    return [e["name"] if e.kind in ("kvm_vcpu_ioctl", "kvm_vm_ioctl") else e.kind
            for e in events]


def _stop_cont_sequence(backend: str, serial: int = 40) -> tuple[list, list, Session]:
    ev = EventStream()
    log: list = []
    ev.subscribe(log.append, STOP_KINDS)
    s = Session(PORTS, backend, events=ev)
    for _ in range(STEP_LIMIT):
        if len(s.serial) >= serial:
            break
        assert s.vm.step()
    start = len(log)
    s.vm.stop()
    stop = log[start:]
    start = len(log)
    s.vm.cont()
    for _ in range(STEP_LIMIT):
        if any(e.kind == "kvm_vcpu_ioctl" and e["name"] == "KVM_RUN" for e in log[start:]):
            break
        assert s.vm.step()
    return stop, log[start:], s


def test_stop_cont_event_sequence_sim():
    stop, cont, s = _stop_cont_sequence("sim")
    assert _names(stop) == EXPECTED_STOP
    assert _names(cont) == EXPECTED_CONT
    by_kind = {e.kind: e for e in stop + cont}
    assert by_kind["runstate_set"]["new_state"] == "running"  # (the cont's, the last)
    assert [e["new_state"] for e in stop + cont if e.kind == "runstate_set"] == \
        ["paused", "running"]
    assert [e["running"] for e in stop + cont if e.kind == "vm_state_notify"] == [False, True]
    assert by_kind["kvm_arch_put_registers"]["level"] == "KVM_PUT_RUNTIME_STATE"
    assert s.run().exit_status == 1


@pytest.mark.skipif(not HAVE_KVM, reason="needs the host's /dev/kvm")
def test_stop_cont_same_ioctls_on_both_backends():
    sim_stop, sim_cont, s1 = _stop_cont_sequence("sim")
    kvm_stop, kvm_cont, s2 = _stop_cont_sequence("kvm")
    assert _names(kvm_stop) == _names(sim_stop) == EXPECTED_STOP
    assert _names(kvm_cont) == _names(sim_cont) == EXPECTED_CONT
    r1, r2 = s1.run(), s2.run()
    assert bytes(s1.serial) == bytes(s2.serial)
    assert r1.exit_status == r2.exit_status == 1


def _uncut(guest: str, config: MachineConfig | None = None) -> tuple[bytes, int | None]:
    s = Session(guest, "sim", config=config)
    r = s.run()
    return bytes(s.serial), r.exit_status


@pytest.mark.parametrize("steps", [1, 7, 40, 333, 1500, 3000])
def test_sim_stop_cont_runs_as_if_never_stopped(steps):
    want = _uncut(PORTS)
    s = Session(PORTS, "sim")
    for _ in range(steps):
        assert s.vm.step()
    s.vm.stop()
    assert s.vm.stopped and all(c.stopped for c in s.vm.cpus)
    with pytest.raises(ValueError, match="stopped"):
        s.vm.run()
    s.vm.stop()  # a second stop changes nothing
    s.vm.cont()
    r = s.run()
    assert (bytes(s.serial), r.exit_status) == want


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_stop_a_halted_vcpu(irqchip):
    """timer.asm waits in HLT for each tick: kernel irqchip, the vCPU sleeps in
    kvm_vcpu_block and wakes for the kick's signal; userspace, it sleeps in QEMU's
    qemu_wait_io_event. Either way it parks, its copies say so, and after cont the run
    ends as the uncut one (the output does not depend on timing)."""
    guest = str(GUESTS / "timer.asm")
    config = MachineConfig(irqchip=irqchip)
    want = _uncut(guest, config)
    ev = EventStream()
    blocked: list = []
    ev.subscribe(blocked.append, ["kvm_vcpu_block", "thread"])
    s = Session(guest, "sim", config=config, events=ev)
    for _ in range(STEP_LIMIT):
        if any(e.kind == "kvm_vcpu_block" or e["state"] == "halted" for e in blocked):
            break
        assert s.vm.step()
    s.vm.stop()
    env = s.vm.cpus[0].env
    assert env.regs.rflags & 0x200  # halted with interrupts on (sti; hlt)
    if irqchip == "kernel":
        assert env.mp_state == api.KVM_MP_STATE_HALTED
        assert env.lapic is not None
    else:
        assert env.mp_state == api.KVM_MP_STATE_RUNNABLE and env.lapic is None
        assert s.vm.cpus[0].halted  # QEMU's own halted flag
    s.vm.cont()
    r = s.run()
    assert (bytes(s.serial), r.exit_status) == want


def test_stop_cont_smp():
    guest = str(GUESTS / "smp.asm")
    config = MachineConfig(smp=2)
    want = _uncut(guest, config)
    s = Session(guest, "sim", config=config)
    for _ in range(20):
        assert s.vm.step()
    s.vm.stop()
    assert [c.env is not None for c in s.vm.cpus] == [True, True]
    s.vm.cont()
    r = s.run()
    assert (bytes(s.serial), r.exit_status) == want


def test_stop_after_the_end_is_refused():
    s = Session(str(GUESTS / "hello.asm"), "sim")
    s.run()
    with pytest.raises(ValueError, match="shut down"):
        s.vm.stop()


def test_exact_snapshot_of_a_stopped_vm():
    """A stopped VM is at a rebuildable point (its vCPUs parked in qemu_wait_io_event):
    the exact state saves and rebuilds it stopped, and cont then runs it to the end."""
    want = _uncut(PORTS)
    s = Session(PORTS, "sim")
    for _ in range(STEP_LIMIT):
        if len(s.serial) >= 100:
            break
        assert s.vm.step()
    s.vm.stop()
    assert s.vm.at_rebuildable_point()
    t = Session.from_state(PORTS, s.save_state())
    assert t.vm.runstate == "paused" and all(c.stopped for c in t.vm.cpus)
    t.vm.cont()
    r = t.run()
    assert (bytes(t.serial), r.exit_status) == want
