"""The one facade front ends drive (DESIGN.md `vmsim.session`): the CLI, the GUI, lessons.

A Session loads a guest into a machine, picks a backend, and advances the simulation at
a chosen granularity: one instruction, one event, to the next VM exit, to the next exit
to userspace, or until it stops. It never simulates anything itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmsim.asm.image import GuestImage
from vmsim.events import CATALOGUE, Event, EventStream
from vmsim.hw.cpu import Cpu
from vmsim.vmm.machine import Machine, MachineConfig, load_guest_file

BACKENDS = ("sim", "kvm", "bare")
# What stepping listens to: every kind but the per-access MMU ones (which would make the
# CPU report every memory access).
STEP_KINDS = [k for k in CATALOGUE if k not in ("tlb_hit", "tlb_miss", "walk_step")]


@dataclass
class Outcome:
    """Where a run or a step left the machine."""

    finished: bool  # the VM will not run again (halted for good, exited, shut down, limit)
    exit_status: int | None = None  # isa-debug-exit
    halted: bool = False
    limit_reached: bool = False
    reason: str = ""  # why it finished, in words
    events: list[Event] = field(default_factory=list)  # what a step emitted


class Session:
    def __init__(self, guest: str | GuestImage, backend: str = "sim",
                 config: MachineConfig | None = None,
                 serial_out: Callable[[bytes], None] | None = None,
                 max_instructions: int | None = None, events: EventStream | None = None,
                 paging: str = "ept"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if paging not in ("ept", "shadow"):
            raise ValueError(f"unknown paging mode {paging!r}: choose ept or shadow")
        self.paging = paging
        self.backend = backend
        self.events = events or EventStream()
        self.image = guest if isinstance(guest, GuestImage) else load_guest_file(guest)
        self.serial = bytearray()

        def out(data: bytes) -> None:
            self.serial.extend(data)
            if serial_out is not None:
                serial_out(data)

        self.machine = Machine(config, events=self.events, serial_out=out)
        self.machine.load_image(self.image)
        self.vm = None
        self.bare = None
        if backend == "bare":
            from vmsim.bare import BareMetal

            self.bare = BareMetal(self.machine, self.events)
            self._limit = max_instructions
        else:
            from vmsim.vmm.vm import VirtualMachine

            if backend == "sim":
                from vmsim.kvm.kvm_main import SimKvm

                kvm = SimKvm(self.events, paging)
            else:
                from vmsim.hostkvm import open_kvm

                if paging != "ept":
                    raise ValueError("--paging applies to the simulated kvm.ko; the host's KVM "
                                     "uses whatever its kvm_intel ept= parameter says")
                kvm = open_kvm()
            self.vm = VirtualMachine(self.machine, kvm, max_instructions=max_instructions)
        self.outcome: Outcome | None = None

    # -- views ------------------------------------------------------------------------------
    @property
    def cpus(self) -> list[Cpu]:
        """The simulated CPUs (none for the host KVM, whose state only KVM_GET_* shows)."""
        if self.bare is not None:
            return [self.bare.cpu]
        return [c.vcpu.cpu for c in self.vm.cpus if hasattr(c.vcpu, "cpu")]

    @property
    def instructions(self) -> int:
        return sum(c.icount for c in self.cpus)

    @property
    def virtual_time(self) -> int:
        if self.bare is not None:
            return self.bare.cpu.icount
        return self.vm.sched.now

    # -- running ------------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Until the guest exits, halts for good, shuts down, or runs out of instructions."""
        if self.outcome is not None:
            return self.outcome
        if self.bare is not None:
            return self._finish_bare(self.bare.run(self._limit or (1 << 62)))
        r = self.vm.run()
        self.outcome = Outcome(True, r.exit_status, r.halted, r.limit_reached,
                               "instruction limit" if r.limit_reached else
                               ("halted" if r.halted else r.stop_reason))
        return self.outcome

    def _finish_bare(self, result) -> Outcome:
        from vmsim.hw.cpu import StopReason

        finished = result.reason is not StopReason.LIMIT or self._limit is not None
        self.outcome = Outcome(finished, result.exit_status,
                               result.reason is StopReason.HLT,
                               result.reason is StopReason.LIMIT,
                               result.message or result.reason.value)
        return self.outcome

    def step_until(self, want: Callable[[Event], bool], max_steps: int = 1_000_000) -> Outcome:
        """Advance the simulated threads until an event matches `want` (or the VM stops)."""
        if self.vm is None:
            raise ValueError("event stepping needs a VM backend (sim or kvm)")
        seen: list[Event] = []
        hit = [False]

        def listen(ev: Event) -> None:
            seen.append(ev)
            if want(ev):
                hit[0] = True

        unsubscribe = self.events.subscribe(listen, STEP_KINDS)
        try:
            for _ in range(max_steps):
                if hit[0] or self.machine.stop_requested or self.vm.limit_reached():
                    break
                if not self.vm.step():
                    break
        finally:
            unsubscribe()
        done = not hit[0]
        return Outcome(done, self.machine.exit_status, reason="" if hit[0] else "stopped",
                       events=seen)

    def step_instruction(self) -> Outcome:
        """One guest instruction (simulated backends): the vCPUs yield after each one."""
        if self.bare is not None:
            from vmsim.hw.cpu import StopReason

            r = self.bare.cpu.step()
            return Outcome(r is not StopReason.LIMIT, self.machine.exit_status, reason=r.value)
        vcpus = [c.vcpu for c in self.vm.cpus if hasattr(c.vcpu, "BATCH")]
        if not vcpus:
            raise ValueError("instruction stepping needs a simulated backend")
        start = self.instructions
        for v in vcpus:
            v.BATCH = 1
        try:
            for _ in range(100_000):
                if self.instructions > start or self.machine.stop_requested:
                    break
                if not self.vm.step():
                    break
        finally:
            for v in vcpus:
                del v.BATCH  # back to the class default
        return Outcome(self.instructions == start, self.machine.exit_status)

    def step_event(self) -> Outcome:
        return self.step_until(lambda ev: True)

    def step_vmexit(self) -> Outcome:
        return self.step_until(lambda ev: ev.kind == "vmexit")

    def step_userspace_exit(self) -> Outcome:
        return self.step_until(lambda ev: ev.kind == "kvm_exit")
