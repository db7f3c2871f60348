"""QEMU's stop and cont (system/cpus.c, system/runstate.c, accel/kvm/kvm-all.c).

`vm_stop` is what the monitor's `stop` (and savevm, and migration's last phase) does:

    do_vm_stop -> runstate_set(paused) -> cpu_disable_ticks -> pause_all_vcpus
               -> vm_state_notify(0)        (kvm-pit: KVM_GET_PIT2, the PIT frozen)

pause_all_vcpus sets cpu->stop and kicks every vCPU (qemu_cpu_kick): one in the guest
leaves KVM_RUN with -EINTR, one blocked in kvm_vcpu_block wakes for the signal, one in
QEMU finishing an exit finds kvm_run.immediate_exit set, so its next KVM_RUN completes
the pending PIO/MMIO (api.rst: "userspace should ensure that the operation is completed
before performing a live migration ... re-enter the guest with ... immediate_exit") and
returns at once. Each vCPU thread then parks in qemu_wait_io_event (qemu_cpu_stop), and
pause_all_vcpus returns when all have.

cpu_synchronize_all_states -> kvm_cpu_synchronize_state -> kvm_arch_get_registers copies
each vCPU's state out of kvm.ko with KVM_GET_* into QEMU's CPUX86State and marks it
dirty; `vm_start` (cont) runs vm_state_notify(1) (kvm-pit: KVM_SET_PIT2) and
resume_all_vcpus, and each vCPU thread, back in kvm_cpu_exec, writes its dirty state with
kvm_arch_put_registers(KVM_PUT_RUNTIME_STATE) before its next KVM_RUN.

vmsim simplification: QEMU runs kvm_arch_get_registers on each vCPU's own thread
(run_on_cpu); vmsim calls it from the caller while the vCPU threads are parked: the same
ioctls, in the same order, on the same vCPU fds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmsim.vmm.kvm_all import CPUState
from vmsim.vmm.kvm_x86 import kvm_arch_get_registers, kvm_pit_get, kvm_pit_put
from vmsim.vmm.main_loop import THREAD as MAIN_LOOP_THREAD

if TYPE_CHECKING:
    from vmsim.vmm.vm import VirtualMachine

# RunState names (qapi/run-state.json).
RUN_STATE_RUNNING = "running"
RUN_STATE_PAUSED = "paused"
RUN_STATE_SAVE_VM = "save-vm"
RUN_STATE_FINISH_MIGRATE = "finish-migrate"
RUN_STATE_POSTMIGRATE = "postmigrate"
RUN_STATE_INMIGRATE = "inmigrate"
RUN_STATE_SHUTDOWN = "shutdown"

# How many scheduler steps pause_all_vcpus may take (a vCPU finishing its exit, the BQL
# passing round): far more than any guest needs; past it the pause is a bug.
PAUSE_STEP_LIMIT = 1_000_000


def _emit(vm: VirtualMachine, kind: str, **fields: Any) -> None:
    """An event of the thread that stops or starts the VM (the main loop: QEMU's monitor
    runs there), at the current virtual time."""
    ev = vm.machine.events
    if ev is not None and ev.wants(kind):
        ev.time, ev.thread = vm.sched.now, MAIN_LOOP_THREAD
        ev.emit(kind, MAIN_LOOP_THREAD, **fields)


def runstate_set(vm: VirtualMachine, new_state: str) -> None:
    """runstate_set: the VM's RunState, traced as QEMU's runstate_set event."""
    if vm.runstate == new_state:
        return
    _emit(vm, "runstate_set", current_state=vm.runstate, new_state=new_state)
    vm.runstate = new_state


def vm_state_notify(vm: VirtualMachine, running: bool, state: str) -> None:
    """vm_state_notify: the VM-state-change handlers. The one vmsim has is kvm-pit's
    (kvm_pit_vm_state_change): stopping reads the in-kernel PIT (KVM_GET_PIT2) so that
    it does not count on while the VM is stopped; starting writes it back."""
    _emit(vm, "vm_state_notify", running=running, reason=state)
    s = vm.kvm
    if not s.irqchip_in_kernel:
        return
    if running:
        if vm.pit_state is not None:
            kvm_pit_put(s, vm.pit_state)
            vm.pit_state = None
    else:
        vm.pit_state = kvm_pit_get(s)


def cpu_is_parked(vm: VirtualMachine, cpu: CPUState) -> bool:
    """cpu->stopped, and its thread asleep in qemu_wait_io_event (or ended)."""
    t = next(t for t in vm.sched.threads if t.name == cpu.thread)
    return t.done or (cpu.stopped and t.blocked is not None and t.blocked.reason == "halted")


def pause_all_vcpus(vm: VirtualMachine) -> None:
    """Ask every vCPU to stop and wait until each has parked (qemu_pause_cond)."""
    from vmsim.vmm.vm import qemu_cpu_kick

    _emit(vm, "pause_all_vcpus", vcpus=len(vm.cpus))
    for cpu in vm.cpus:
        cpu.stop = True
        qemu_cpu_kick(vm.kvm, cpu, "pause_all_vcpus")
    for _ in range(PAUSE_STEP_LIMIT):
        if all(cpu_is_parked(vm, c) for c in vm.cpus):
            return
        if vm.sched.step() is None:
            break
    if not all(cpu_is_parked(vm, c) for c in vm.cpus):
        stuck = [c.thread for c in vm.cpus if not cpu_is_parked(vm, c)]
        raise RuntimeError(f"pause_all_vcpus: {', '.join(stuck)} did not stop")


def resume_all_vcpus(vm: VirtualMachine) -> None:
    """cpu_resume for each vCPU: clear stop/stopped and kick it awake."""
    from vmsim.vmm.vm import qemu_cpu_kick

    _emit(vm, "resume_all_vcpus", vcpus=len(vm.cpus))
    for cpu in vm.cpus:
        cpu.stop = cpu.stopped = False
        qemu_cpu_kick(vm.kvm, cpu, "resume_all_vcpus")


def vm_stop(vm: VirtualMachine, state: str = RUN_STATE_PAUSED) -> bool:
    """do_vm_stop: False if the VM was not running (nothing to do)."""
    if vm.runstate != RUN_STATE_RUNNING:
        return False
    runstate_set(vm, state)
    vm.sched.timers_stopped = True  # cpu_disable_ticks: the virtual clock stops
    pause_all_vcpus(vm)
    vm_state_notify(vm, False, state)
    return True


def vm_start(vm: VirtualMachine) -> None:
    """vm_start (cont): vm_prepare_start, then resume_all_vcpus. Each vCPU whose state was
    synchronized writes it back from its own thread before its next KVM_RUN
    (kvm_cpu_exec: `if (cpu->vcpu_dirty) kvm_arch_put_registers(cpu,
    KVM_PUT_RUNTIME_STATE)`)."""
    if vm.runstate == RUN_STATE_RUNNING:
        return
    if vm.machine.stop_requested:
        raise ValueError("the VM has shut down: it cannot continue")
    vm.sched.timers_stopped = False  # cpu_enable_ticks
    runstate_set(vm, RUN_STATE_RUNNING)
    vm_state_notify(vm, True, RUN_STATE_RUNNING)
    resume_all_vcpus(vm)


def cpu_synchronize_state(vm: VirtualMachine, cpu: CPUState) -> None:
    """kvm_cpu_synchronize_state: get the registers once; they stay QEMU's (dirty) until
    the vCPU runs again."""
    if not cpu.vcpu_dirty:
        kvm_arch_get_registers(vm.kvm, cpu)
        cpu.vcpu_dirty = True


def cpu_synchronize_all_states(vm: VirtualMachine) -> None:
    for cpu in vm.cpus:
        cpu_synchronize_state(vm, cpu)
