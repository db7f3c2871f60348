"""Run a machine's guest on the simulated CPU directly, with no hypervisor in between.

This is the guest on "bare metal": the reference the virtualized runs (issue 3) are
compared with, and what `vmsim run` does until the KVM stack lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.events import EventStream
from vmsim.hw.cpu import Cpu, StopReason
from vmsim.vmm.machine import ENTRY_ESP, LOAD_ADDRESS, Machine


@dataclass
class RunResult:
    reason: StopReason
    instructions: int
    exit_status: int | None  # from isa-debug-exit, if the guest wrote it
    message: str = ""


class BareMetal:
    def __init__(self, machine: Machine, events: EventStream | None = None):
        self.machine = machine
        self.cpu = Cpu(machine.mem, machine.io, events, "cpu0")
        self.cpu.reset_flat(LOAD_ADDRESS, ENTRY_ESP)
        machine.exit_listeners.append(lambda status: setattr(self.cpu, "stop_requested", True))

    def run(self, max_instructions: int = 1 << 62, batch: int = 1 << 20) -> RunResult:
        """Run until the guest halts with interrupts off, exits, shuts down or the budget ends."""
        cpu, m = self.cpu, self.machine
        left = max_instructions
        while left > 0:
            before = cpu.icount
            reason = cpu.run(min(batch, left))
            left -= max(cpu.icount - before, 1)
            if reason is StopReason.LIMIT:
                continue
            return RunResult(reason, cpu.icount, m.exit_status, cpu.stop_message)
        return RunResult(StopReason.LIMIT, cpu.icount, m.exit_status)
