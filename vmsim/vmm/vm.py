"""A running virtual machine: QEMU's threads on the simulated clock (softmmu/vl.c, cpus.c).

One thread per vCPU runs `kvm_vcpu_thread_fn` (accel/kvm/kvm-accel-ops.c) and the main
loop thread runs `main_loop_wait` (util/main-loop.c); the scheduler interleaves them
deterministically. The VM stops when the guest asks (isa-debug-exit), shuts down, or
nothing can ever run again (every vCPU halted with no interrupt source).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from vmsim.clock import Block, Scheduler
from vmsim.kvm.api import Kvm
from vmsim.vmm.kvm_all import EXCP_SHUTDOWN, CPUState, KvmState, kvm_cpu_exec
from vmsim.vmm.machine import Machine


@dataclass
class VmResult:
    halted: bool  # every vCPU halted and nothing can wake it
    stop_reason: str  # why the VM stopped, if it did ("" when halted)
    exit_status: int | None  # isa-debug-exit
    virtual_time: int
    limit_reached: bool = False  # --max-instructions ran out (simulated backend)
    stuck: str = ""  # vmsim's watchdog stopped a vCPU that made no progress: why
    unsupported: str = ""  # the guest did something vmsim does not model: what


def kvm_vcpu_thread_fn(s: KvmState, cpu: CPUState) -> Generator[Any, None, None]:
    m = s.machine
    _thread_state(m, cpu.thread, "started", "kvm_vcpu_thread_fn")
    yield from m.bql_lock(cpu.thread)
    while not m.stop_requested:
        if not cpu.halted:
            r = yield from kvm_cpu_exec(s, cpu)
            if r == EXCP_SHUTDOWN:
                break
        yield from qemu_wait_io_event(s, cpu)
    m.bql_unlock(cpu.thread)
    _thread_state(m, cpu.thread, "stopped", m.stop_reason)


def _thread_state(m: Machine, thread: str, state: str, detail: str) -> None:
    if m.events is not None and m.events.wants("thread"):
        m.events.emit("thread", thread, state=state, detail=detail)


def qemu_wait_io_event(s: KvmState, cpu: CPUState) -> Generator[Any, None, None]:
    """Sleep while the vCPU is halted; the wait releases the BQL (qemu_cond_wait)."""
    m = s.machine
    if cpu.halted and not m.stop_requested:
        _thread_state(m, cpu.thread, "halted", "qemu_wait_io_event: waiting for an interrupt")
        m.bql_unlock(cpu.thread)
        yield Block("halted", lambda: not cpu.halted or m.stop_requested)
        yield from m.bql_lock(cpu.thread)


def main_loop_wait(m: Machine) -> Generator[Any, None, None]:
    """The iothread: waits for timers and file descriptors; none are modelled yet."""
    while not m.stop_requested:
        yield Block("poll", lambda: m.stop_requested)


class VirtualMachine:
    def __init__(self, machine: Machine, kvm: Kvm, vcpus: int = 1,
                 max_instructions: int | None = None):
        self.machine = machine
        self.sched = Scheduler()
        if machine.events is not None:
            ev = machine.events
            self.sched.on_resume = lambda t: setattr(ev, "time", t.time)
        self.kvm = KvmState(kvm, machine)
        self.cpus = [self.kvm.init_vcpu(i) for i in range(vcpus)]
        if max_instructions is not None:
            for cpu in self.cpus:
                limit = getattr(cpu.vcpu, "set_instruction_limit", None)
                if limit is None:
                    raise ValueError("--max-instructions needs the simulated backend")
                limit(max_instructions)
        self.sched.spawn("main-loop", main_loop_wait(machine))
        for cpu in self.cpus:
            self.sched.spawn(cpu.thread, kvm_vcpu_thread_fn(self.kvm, cpu))

    def step(self) -> bool:
        """Advance one simulated thread by one yield; False when nothing can run."""
        return self.sched.step() is not None

    def limit_reached(self) -> bool:
        return any(getattr(c.vcpu, "limit_reached", False) for c in self.cpus)

    def stuck(self) -> str:
        """Why vmsim's no-progress watchdog stopped a vCPU ("" if it did not)."""
        return next((c.vcpu.stuck for c in self.cpus if getattr(c.vcpu, "stuck", "")), "")

    def budget_ended(self) -> bool:
        """The run's budget is spent: the instruction limit, or no progress."""
        return self.limit_reached() or bool(self.stuck())

    def run(self) -> VmResult:
        m = self.machine
        while not m.stop_requested and not self.budget_ended():
            if self.sched.step() is None:
                break
        if m.stop_requested:
            # Let the threads see the request and end, as QEMU's do on shutdown.
            for _ in range(10_000):
                if self.sched.step() is None:
                    break
        limit, stuck = self.limit_reached(), self.stuck()
        halted = not m.stop_requested and not limit and not stuck
        unsupported = next((c.unsupported for c in self.cpus if c.unsupported), "")
        return VmResult(halted, m.stop_reason, m.exit_status, self.sched.now, limit, stuck,
                        unsupported)
