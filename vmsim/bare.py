"""Run a machine's guest on the simulated CPU directly, with no hypervisor in between.

This is the guest on "bare metal": the reference the virtualized runs (issue 3) are
compared with, and what `vmsim run` does until the KVM stack lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.clock import NO_PROGRESS_LIMIT, no_progress_message
from vmsim.events import EventStream
from vmsim.hw.cpu import Cpu, StopReason
from vmsim.vmm.machine import ENTRY_ESP, LOAD_ADDRESS, Machine


@dataclass
class RunResult:
    reason: StopReason
    instructions: int
    exit_status: int | None  # from isa-debug-exit, if the guest wrote it
    message: str = ""
    stuck: str = ""  # vmsim's watchdog stopped a guest that made no progress: why


class BareMetal:
    def __init__(self, machine: Machine, events: EventStream | None = None):
        self.machine = machine
        self.cpu = Cpu(machine.mem, machine.io, events, "cpu0")
        self.cpu.reset_flat(LOAD_ADDRESS, ENTRY_ESP)
        machine.exit_listeners.append(lambda status: setattr(self.cpu, "stop_requested", True))
        self.stuck = ""
        self._progress_icount = self.cpu.icount
        self._idle_deliveries = 0

    def run_batch(self, n: int) -> tuple[StopReason, int]:
        """Run at most `n` units of work: (why it stopped, the work done). Work is what
        bounds a run: retired instructions and exception deliveries (a handler that
        faults at once retires nothing). With no instruction retired over
        NO_PROGRESS_LIMIT deliveries, the watchdog stops it (`self.stuck` says why)."""
        cpu = self.cpu
        before, delivered = cpu.icount, cpu.deliveries
        reason = cpu.run(n)
        work = cpu.icount - before + cpu.deliveries - delivered
        if cpu.icount != self._progress_icount:
            self._progress_icount = cpu.icount
            self._idle_deliveries = 0
        self._idle_deliveries += cpu.deliveries - delivered
        if reason is StopReason.LIMIT and self._idle_deliveries >= NO_PROGRESS_LIMIT:
            self.stuck = no_progress_message(0, self._idle_deliveries, cpu.eip)
        return reason, work

    def run(self, max_instructions: int = 1 << 62, batch: int = NO_PROGRESS_LIMIT) -> RunResult:
        """Run until the guest halts with interrupts off, exits, shuts down, the budget
        (instructions and exception deliveries) ends, or it makes no progress."""
        cpu, m = self.cpu, self.machine
        left = max_instructions
        while left > 0:
            # Once faults pile up with nothing retired, run only up to the watchdog's limit.
            n = min(batch, left, NO_PROGRESS_LIMIT - self._idle_deliveries)
            reason, work = self.run_batch(max(n, 1))
            left -= max(work, 1)
            if self.stuck:
                return RunResult(StopReason.LIMIT, cpu.icount, m.exit_status, self.stuck,
                                 self.stuck)
            if reason is StopReason.LIMIT:
                continue
            return RunResult(reason, cpu.icount, m.exit_status, cpu.stop_message)
        return RunResult(StopReason.LIMIT, cpu.icount, m.exit_status)
