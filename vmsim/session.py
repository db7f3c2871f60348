"""The one facade front ends drive (DESIGN.md `vmsim.session`): the CLI, the GUI, lessons.

A Session loads a guest into a machine, picks a backend, and advances the simulation at
a chosen granularity: one instruction, one event, to the next VM exit, to the next exit
to userspace, or until it stops. It never simulates anything itself.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Callable
from contextlib import suppress
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
    breakpoint: str = ""  # run_for: the breakpoint that stopped it ("address 0x100010" ...)
    stuck: str = ""  # vmsim's watchdog stopped a guest that made no progress: why
    unsupported: str = ""  # the guest did something vmsim does not model: what


class Session:
    SERIAL_KEEP = 1 << 20
    def __init__(self, guest: str | GuestImage, backend: str = "sim",
                 config: MachineConfig | None = None,
                 serial_out: Callable[[bytes], None] | None = None,
                 max_instructions: int | None = None, events: EventStream | None = None,
                 paging: str = "ept", history: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if paging not in ("ept", "shadow"):
            raise ValueError(f"unknown paging mode {paging!r}: choose ept or shadow")
        if backend == "bare" and config is not None and config.smp != 1:
            raise ValueError("--smp needs a VM (--backend sim or kvm): the bare backend is "
                             "one CPU with no hypervisor")
        self.paging = paging
        self.backend = backend
        self.events = events or EventStream()
        self.image = guest if isinstance(guest, GuestImage) else load_guest_file(guest)
        # What COM1 sent: the last SERIAL_KEEP bytes or more (a chatty guest must not grow
        # memory without end), and how many in all.
        self.serial = bytearray()
        self.serial_total = 0

        # Steps backwards (vmsim/history.py): the simulated backend keeps a history of its
        # run, listening to the VM-level events from before the VM is built.
        self.history = None
        self.on_rewind: list[Callable[[int], None]] = []

        def out(data: bytes) -> None:
            self.serial.extend(data)
            self.serial_total += len(data)
            if len(self.serial) > 2 * self.SERIAL_KEEP:
                del self.serial[:-self.SERIAL_KEEP]
            history = self.history
            if history is not None:
                history.serial_written(data)
                if history.muted:
                    return  # a front end saw it the first time
            if serial_out is not None:
                serial_out(data)

        self._serial_sink = out
        self.max_instructions = max_instructions
        self._vm_callbacks: list[Callable[[], None]] = []
        self.vm = None
        self.bare = None
        if backend == "bare":
            from vmsim.bare import BareMetal

            self.machine = Machine(config, events=self.events, serial_out=out)
            self.machine.load_image(self.image)
            self.bare = BareMetal(self.machine, self.events)
            self._limit = max_instructions
        elif backend == "sim":
            # history=False: a front end that never goes back (a batch run) saves the
            # history's listener, checkpoints and memory.
            if history:
                from vmsim.history import History

                self.history = History(self)
            # (the history's first checkpoint reads only the pages the build wrote)
            self.machine, self.vm = self._build_vm(config, log_writes=history)
            if self.history is not None:
                self.history.attach()
        else:
            from vmsim.hostkvm import open_kvm
            from vmsim.vmm.vm import VirtualMachine

            if paging != "ept":
                raise ValueError("--paging applies to the simulated kvm.ko; the host's KVM "
                                 "uses whatever its kvm_intel ept= parameter says")
            self.machine = Machine(config, events=self.events, serial_out=out)
            self.machine.load_image(self.image)
            self.vm = VirtualMachine(self.machine, open_kvm(), max_instructions=max_instructions)
        self.outcome: Outcome | None = None
        self.breakpoints = Breakpoints()
        self.snapshot_path: str | None = None  # the snapshot it was loaded from
        self._partial: _PartialStep | None = None  # a scheduler step paused at an event
        self._starts: tuple[GuestImage, list[int]] | None = None  # (disassembly's)

    def _build_vm(self, config: MachineConfig | None = None, quiet: bool = False,
                  ram=None, log_writes: bool = False):
        """A Machine with the guest loaded and a VirtualMachine on the simulated kvm.ko:
        the session's, or a fresh one to rebuild a checkpoint into (quiet: nothing is
        traced while it is built, the events of the first build are not made twice). The
        assembled GuestImage is reused, never assembled again; `ram`, the mapping of a
        machine that will not run again, saves a fresh one's page faults; log_writes: the
        new machine's memory notes the frames the build writes (History._restore)."""
        from vmsim.kvm.kvm_main import SimKvm
        from vmsim.vmm.vm import VirtualMachine

        ev = self.events
        if self._vm_callbacks:  # the old models stop listening for subscription changes
            old = self._vm_callbacks
            ev.on_change[:] = [cb for cb in ev.on_change if not any(cb is o for o in old)]
        before = list(ev.on_change)
        saved = ev.mute() if quiet else None
        try:
            if config is None and quiet:
                config = self.machine.config
            machine = Machine(config, events=ev, serial_out=self._serial_sink, ram=ram)
            if log_writes:
                machine.mem.log_writes()
            machine.load_image(self.image)
            vm = VirtualMachine(machine, SimKvm(ev, self.paging),
                                max_instructions=self.max_instructions)
        finally:
            if saved is not None:
                ev.unmute(saved)
        self._vm_callbacks = [cb for cb in ev.on_change if not any(cb is b for b in before)]
        if self.history is not None:
            self.history.wire(machine, vm)
        return machine, vm

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

    def _work(self) -> int:
        """What bounds a batch: instructions retired and exceptions delivered (a guest can
        fault forever without retiring anything)."""
        return sum(c.icount + c.deliveries for c in self.cpus)

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
        return self._finish_vm()

    def _finish_bare(self, result) -> Outcome:
        from vmsim.hw.cpu import StopReason

        stuck = getattr(result, "stuck", "")
        finished = result.reason is not StopReason.LIMIT or self._limit is not None or bool(stuck)
        self.outcome = Outcome(finished, result.exit_status,
                               result.reason is StopReason.HLT,
                               result.reason is StopReason.LIMIT and not stuck,
                               result.message or result.reason.value, stuck=stuck,
                               unsupported=result.message
                               if result.reason is StopReason.UNSUPPORTED else "")
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
        ended = False
        try:
            # A step paused at an event (step_event) ends first: what is left of it
            # comes after that event, so its events count.
            if self.finish_step() is False:
                ended = True
            for _ in range(0 if ended else max_steps):
                if hit[0]:
                    break
                if self.machine.stop_requested or self.vm.budget_ended() or not self.vm.step():
                    ended = True
                    break
        finally:
            unsubscribe()
        if hit[0]:
            return Outcome(False, self.machine.exit_status, events=seen)
        # Not found: either the VM stopped, or max_steps ran out (a guest in a loop that
        # emits nothing); only the first is finished.
        return Outcome(ended, self.machine.exit_status, reason="stopped" if ended else "max steps",
                       events=seen)

    def step_instruction(self) -> Outcome:
        """One guest instruction (simulated backends): the vCPUs yield after each one."""
        if self.outcome is not None:
            return self.outcome
        if self.bare is not None:
            from vmsim.bare import RunResult
            from vmsim.hw.cpu import StopReason

            cpu = self.bare.cpu
            r = cpu.step()
            if r is StopReason.LIMIT:
                return Outcome(False, self.machine.exit_status, reason=r.value)
            # The end says why, as run() does (an unmodelled mode names itself).
            return self._finish_bare(RunResult(r, cpu.icount, self.machine.exit_status,
                                               cpu.stop_message))
        if self.finish_step() is False:
            return self._finish_vm()
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
        if self.instructions == start:  # the VM stopped: its ending, as run() gives it
            return self._finish_vm()
        return Outcome(False, self.machine.exit_status)

    def single_step(self, max_steps: int = 100_000) -> Outcome:
        """One guest instruction as a debugger sees it (QEMU's cpu_single_step under gdb):
        done once the instruction retired, or kvm.ko completed it for the guest (OUT,
        CPUID, an emulated MMIO access: RIP moved with no instruction retired), or an
        exception was delivered, and the vCPU is back in the guest, so the device access an
        exit carried has been served. vmsim's own step: nothing the guest can see (no
        EFLAGS.TF, no #DB, no extra VM exit)."""
        if self.outcome is not None:
            return self.outcome
        if self.bare is not None:
            return self.step_instruction()
        if self.finish_step() is False:
            return self._finish_vm()
        vcpus = [c.vcpu for c in self.vm.cpus if hasattr(c.vcpu, "BATCH")]
        if not vcpus:
            raise ValueError("instruction stepping needs a simulated backend")
        v = vcpus[0]
        cpu = v.cpu
        eip = cpu.eip if v.vmx.guest_mode else self.registers()["EIP"]
        start = (cpu.icount, cpu.deliveries, eip)
        # A REP string instruction that a VM exit interrupted (a shadow-paging #PF, one
        # I/O iteration) is not done until it moves EIP: bare metal runs it in one step.
        code = self.read_linear(eip, 5) or b""
        rep = bool(re.match(rb"[\x26\x2e\x36\x3e\x64\x65\x66\x67]*[\xf2\xf3]", code))
        for x in vcpus:
            x.BATCH = 1
        try:
            for _ in range(max_steps):
                if self.machine.stop_requested or self.vm.budget_ended() or not self.vm.step():
                    return self._finish_vm()
                if not v.vmx.guest_mode:
                    continue
                now = (cpu.icount, cpu.deliveries, cpu.eip)
                if now[1:] == start[1:] and ((rep and cpu.r[1]) or now == start):
                    continue
                return Outcome(False, self.machine.exit_status)
        finally:
            for x in vcpus:
                del x.BATCH
        return Outcome(False, self.machine.exit_status, reason="max steps")

    def write_registers(self, values: dict[str, int], cpu: int = 0) -> None:
        """Set general registers, EIP and EFLAGS (names as registers() gives them): through
        KVM_SET_REGS while kvm.ko holds the state (as QEMU's gdbstub through
        kvm_arch_put_registers), on the CPU itself while it is in the guest or bare."""
        bad = set(values) - {*GPR_NAMES, "EIP", "EFLAGS"}
        if bad:
            raise ValueError(f"cannot write {', '.join(sorted(bad))}")
        self.finish_step()  # an edit comes between two steps (the history replays it there)
        if self.history is not None:
            self.history.edit("write_registers", (dict(values), cpu))
        vcpu = self._vcpu_outside_guest(cpu)
        if vcpu is not None:
            regs = vcpu.get_regs()
            for name, value in values.items():
                attr = {"EIP": "rip", "EFLAGS": "rflags"}.get(name, "r" + name[1:].lower())
                setattr(regs, attr, value & 0xFFFFFFFF)
            vcpu.set_regs(regs)
            return
        c = self.cpus[cpu]
        for name, value in values.items():
            value &= 0xFFFFFFFF
            if name == "EIP":
                c.eip = value
            elif name == "EFLAGS":
                c.eflags = value
            else:
                c.r[GPR_NAMES.index(name)] = value

    def write_linear(self, la: int, data: bytes, cpu: int = 0) -> bool:
        """Write guest memory by linear address (through the guest's page tables, as
        read_linear); RAM only, all or nothing: False if any byte is unmapped or not RAM.
        Decoded instructions in the written frames are dropped (the CPU's SMC hook)."""
        self.finish_step()
        c = self.cpus[cpu]
        pieces = []
        done = 0
        while done < len(data):
            pa = self.guest_translate(la + done, cpu)
            if pa is None:
                return False
            n = min(len(data) - done, 0x1000 - (pa & 0xFFF))
            if not all(c.mem.is_ram(a) for a in (pa, pa + n - 1)):
                return False
            pieces.append((pa, data[done:done + n]))
            done += n
        if self.history is not None:
            self.history.edit("write_linear", (la, bytes(data), cpu))
        for pa, chunk in pieces:
            c.mem.load(pa, chunk)
        return True

    def feed_serial(self, data: bytes) -> None:
        """Bytes for COM1's receive FIFO (a front end's console, as a terminal on QEMU's
        -serial stdio). The history records them as an edit at this point, so a replay
        after a step back feeds them again where the run did."""
        self.finish_step()
        if self.history is not None:
            self.history.edit("feed_serial", (bytes(data),))
        self.machine.serial.feed(bytes(data))

    # -- one event at a time (issue 13) ---------------------------------------------------------
    def step_event(self, max_steps: int = 1_000_000) -> Outcome:
        """Exactly one event (of STEP_KINDS), with the whole machine's state at it: the
        scheduler step that emits it is paused right after it (_PartialStep) and the next
        step_event resumes it there. Outcome.events holds that one event. Every other
        way of moving first finishes the paused step (finish_step)."""
        if self.vm is None:
            raise ValueError("event stepping needs a VM backend (sim or kvm)")
        for _ in range(max_steps):
            if self._partial is None:
                if self.machine.stop_requested or self.vm.budget_ended():
                    return Outcome(True, self.machine.exit_status, reason="stopped")
                self._partial = _PartialStep(self)
            ev, more = self._partial.resume(pause=True)
            if ev is not None:
                return Outcome(False, self.machine.exit_status, events=[ev])
            if not more:
                return Outcome(True, self.machine.exit_status, reason="stopped")
        return Outcome(False, self.machine.exit_status, reason="max steps")

    @property
    def mid_step(self) -> bool:
        """A scheduler step is paused at an event (step_event): the threads are mid-way."""
        return self._partial is not None

    @property
    def event_position(self) -> tuple[int, int] | None:
        """Where the run stands to the event: (position, k), k the events of the next
        scheduler step that have happened (0 between two steps); None without a history."""
        h = self.history
        if h is None:
            return None
        return h.pos, 0 if self._partial is None else self._partial.count

    def finish_step(self) -> bool | None:
        """Finish a scheduler step paused at an event: its remaining events are delivered
        as usual, the state is then the step's end, as in a run that never paused. Returns
        what VirtualMachine.step returned (False: nothing can run again), None if no step
        was paused."""
        part = self._partial
        if part is None or part.running:  # (called from inside the step: an after_step hook)
            return None
        return part.resume(pause=False)[1]

    def step_vmexit(self, max_steps: int = 1_000_000) -> Outcome:
        return self.step_until(lambda ev: ev.kind == "kvm_exit", max_steps)

    def step_userspace_exit(self, max_steps: int = 1_000_000) -> Outcome:
        return self.step_until(lambda ev: ev.kind == "kvm_userspace_exit", max_steps)

    # -- state as plain data (issue 12) ----------------------------------------------------
    def advance_to_rebuildable_point(self, max_steps: int = 100_000) -> bool:
        """Step the simulated threads until every one stands where a snapshot can rebuild
        it (VirtualMachine.at_rebuildable_point). False if the VM finished first, or did
        not get there in `max_steps` steps."""
        vm = self.vm
        if vm is None or self.outcome is not None:
            return False
        if self.finish_step() is False:
            return False
        for _ in range(max_steps):
            if vm.at_rebuildable_point():
                return True
            if self.machine.stop_requested or vm.budget_ended() or not vm.step():
                return False
        return vm.at_rebuildable_point()

    def save_state(self) -> dict:
        """The session's VM as plain data (VirtualMachine.save_state) plus what COM1 has
        sent so far; at a rebuildable point only."""
        if self.vm is None:
            raise ValueError("save_state needs a VM (--backend sim)")
        if self.outcome is not None:
            raise ValueError("the run has finished")
        self.finish_step()
        return {"vm": self.vm.save_state(), "serial_total": self.serial_total,
                "serial": bytes(self.serial)}

    @classmethod
    def from_state(cls, guest: str | GuestImage, state: dict, **kwargs) -> Session:
        """A new session for the same guest and configuration (the same arguments as the
        saved one was made with), continuing exactly where `state` was taken."""
        s = cls(guest, **kwargs)
        if s.vm is None:
            raise ValueError("from_state needs a VM (--backend sim)")
        s.vm.load_state(state["vm"])
        s.serial[:] = state["serial"]
        s.serial_total = state["serial_total"]
        if s.history is not None:
            s.history.reset()  # the history starts where the state was taken
        return s

    def save_snapshot(self, path: str, on_stop_event: Callable[[Event], None] | None = None) -> str:
        """Write the session to a snapshot file (vmsim/snapshot.py), first stepping on to
        the next point where every simulated thread can be rebuilt (a few steps: the same
        run either way, see Scheduler.sticky). Refused with a one-line ValueError or
        SnapshotError on the bare backend, and once the guest has shut down. Returns a
        one-line summary. On the simulated backend QEMU's stop path (the KVM_GET_*
        ioctls) runs on a copy of the VM: `on_stop_event` sees its events (a lesson
        records them); on the host's KVM they are the session's own."""
        from vmsim.snapshot import save_session

        if self.vm is None:
            raise ValueError("snapshots need a VM (--backend sim), not the bare CPU")
        if self.machine.stop_requested:
            raise ValueError(f"the guest has shut down ({self.machine.stop_reason}): "
                             "nothing is left to resume")
        if self.backend == "sim":
            self._to_rebuildable_point()  # the host's KVM is saved through QEMU's stop path
        return save_session(self, path, on_stop_event)

    @classmethod
    def load_snapshot(cls, path: str, **kwargs) -> Session:
        """A new session from a snapshot file alone (vmsim/snapshot.py: its guest,
        configuration and state); `kwargs` as for Session (serial_out, events,
        max_instructions; backend and paging default to the snapshot's). Raises
        vmsim.snapshot_format.SnapshotError (one line) for a file it will not load."""
        from vmsim.snapshot import load_session

        return load_session(path, **kwargs)

    def _to_rebuildable_point(self) -> None:
        """Step until every thread stands where a snapshot can rebuild it. The run's
        budget is lifted meanwhile (the cut lands a little after the limit, on the path
        the uncut run takes) and the vCPUs step one instruction at a time."""
        self.finish_step()
        vm = self.vm
        why = vm.why_not_rebuildable()
        if "backend" in why:
            raise ValueError(why)
        vcpus = [c.vcpu for c in vm.cpus if hasattr(c.vcpu, "BATCH")]
        saved = [(v.instruction_limit, v.limit_reached, _own(v, "BATCH")) for v in vcpus]
        for v in vcpus:
            v.instruction_limit, v.limit_reached, v.BATCH = None, False, 1
        try:
            for _ in range(1_000_000):
                if vm.at_rebuildable_point():
                    return
                if self.machine.stop_requested or vm.stuck() or not vm.step():
                    break
            raise ValueError("no point a snapshot can hold was reached: "
                             + (vm.why_not_rebuildable() or "the run ended"))
        finally:
            for v, (limit, hit, batch) in zip(vcpus, saved, strict=True):
                v.instruction_limit, v.limit_reached = limit, hit
                if batch is None:
                    del v.BATCH
                else:
                    v.BATCH = batch

    # -- steps backwards (issue 12; vmsim/history.py, docs/stepping-backwards.md) ----------
    def can_step_back(self) -> bool:
        """The history holds an earlier point (simulated backend only)."""
        h = self.history
        return h is not None and (h.pos > 0 or (self.outcome is not None and h.last > 0)
                                  or (self._partial is not None and self._partial.count > 0))

    def _history(self):
        if self.history is None:
            if self.backend == "sim":
                raise ValueError("steps backwards need the session's history (made with "
                                 "history=False)")
            raise ValueError(f"steps backwards need the simulated backend (--backend sim), "
                             f"not {self.backend}")
        return self.history

    def _went_back(self, p: int, reason: str, breakpoint: str = "") -> Outcome:
        h = self._history()
        h.goto(p)
        for cb in list(self.on_rewind):
            cb(self.events.seq)
        return Outcome(False, self.machine.exit_status, reason=reason, breakpoint=breakpoint)

    def _step_back(self, what: str) -> Outcome:
        h = self._history()
        if not self.can_step_back():
            return Outcome(False, self.machine.exit_status, reason="start")
        # Paused in a step (step_event): its start is already before now.
        limit = h.pos if self._partial is not None else None
        self.finish_step()
        return self._went_back(h.mark_before(what, limit), "stepped back")

    def prepare_step_back(self) -> bool:
        """Idle time (a window's user looks at the paused guest): make the first step back
        from here quick (History.prepare_back). The state stays the same. False when there
        is nothing to prepare (no history, not at the history's end, little to replay)."""
        h = self.history
        return h is not None and self.vm is not None and h.prepare_back()

    def step_back_instruction(self) -> Outcome:
        """Undo one step_instruction: back to right after the previous step that retired a
        guest instruction (as the run stepped: a run_for batch is undone whole)."""
        return self._step_back("instruction")

    def step_back_event(self) -> Outcome:
        """Undo one step_event: back to right after the event before the last one that
        happened, in the middle of its scheduler step as step_event leaves it (History.goto
        to the step's start, then the step replayed up to that event and paused)."""
        h = self._history()
        if not self.can_step_back():
            return Outcome(False, self.machine.exit_status, reason="start")
        p, k = self.event_position
        # Events counted so far (History.evc): the last one is where the run stands.
        now = h.evc[p] + k if self.outcome is None else h.evc[h.last] + 1
        self.finish_step()
        pos, k = h.event_at(now - 1)
        h.goto(pos)
        if k:
            self._partial = _PartialStep(self, replay=k)
            self._partial.resume(pause=True)
        for cb in list(self.on_rewind):
            cb(self.events.seq)
        return Outcome(False, self.machine.exit_status, reason="stepped back")

    def step_back_vmexit(self) -> Outcome:
        """Back to the state just after the previous kvm_exit."""
        return self._step_back("vmexit")

    def step_back_userspace_exit(self) -> Outcome:
        """Back to the state just after the previous kvm_userspace_exit."""
        return self._step_back("userspace_exit")

    def reverse_continue(self) -> Outcome:
        """Back to the previous hit of any of self.breakpoints (reason "breakpoint",
        Outcome.breakpoint naming it as run_for does), else to the start ("start").
        Replays the history backwards one checkpoint interval at a time, watching."""
        h = self._history()
        if not self.can_step_back():
            return Outcome(False, self.machine.exit_status, reason="start")
        self.finish_step()
        hit = h.previous_hit(self.breakpoints)
        if hit is None:
            return self._went_back(0, "start")
        return self._went_back(hit[0], "breakpoint", hit[1])

    def timeline(self) -> dict:
        """{"start": where the history begins (0, or the time of the snapshot the session
        was loaded from), "end": the latest virtual time reached, "now": the current one,
        "exits": [virtual time of each kvm_exit], "userspace_exits": [... of each
        kvm_userspace_exit]}, over the whole recorded run (after going back: its future
        too, until the run takes another way)."""
        h = self._history()
        now = self.virtual_time
        return {"start": h.time[0], "end": max(h.time[-1], now), "now": now,
                "exits": list(h.exit_time), "userspace_exits": list(h.uexit_time)}

    def seek_time(self, t: int) -> Outcome:
        """To the last recorded point at or before virtual time t; past the end of the
        history, the run goes on (recorded) until its clock reaches t."""
        h = self._history()
        self.finish_step()
        t = int(t)
        if t > h.time[-1] and (self.outcome is None or h.pos < h.last):
            h.goto(h.last)
            self.outcome = None
            while self.outcome is None and self.virtual_time < t:
                if self.machine.stop_requested or self.vm.budget_ended() or not self.vm.step():
                    self._finish_vm()
            if self.outcome is not None or self.virtual_time <= t:
                return Outcome(self.outcome is not None, self.machine.exit_status,
                               reason="seek")
        p = h.position_at_time(t)
        back = p < h.pos or self.outcome is not None
        if back:
            return self._went_back(p, "seek")
        h.goto(p)
        return Outcome(False, self.machine.exit_status, reason="seek")

    def state_dump(self) -> dict:
        """Everything a step back must put back, as plain comparable data, at any point of
        the run (not only rebuildable ones): every vCPU's registers and kvm.ko state (the
        VMCS, the local APIC, kvm_run, counters), RAM (a digest), QEMU's devices, kvm.ko's
        VM, the main loop, the iothread, the clock and the threads' positions, the event
        counters (with History.digest_events, a digest of every event), COM1's output,
        the exits by reason and the outcome."""
        import hashlib

        from vmsim.state import fields_state

        if self.vm is None:
            raise ValueError("state_dump needs a VM (--backend sim)")
        self.finish_step()  # the scheduler's state is a step's end (Scheduler.state)
        vm = self.vm
        ev = self.events
        h = self.history
        exits: dict[str, int] = {}
        if h is not None:
            import bisect

            n = bisect.bisect_right(h.exit_pos, h.pos if self.outcome is None else h.last)
            for r in h.exit_reason[:n]:
                exits[r] = exits.get(r, 0) + 1
        o = self.outcome
        return {
            "position": None if h is None else h.pos,
            "registers": [self.registers(i) for i in range(len(vm.cpus))],
            "segments": [self.segments(i) for i in range(len(vm.cpus))],
            "vcpus": [_vcpu_dump(c.vcpu) for c in vm.cpus],
            "cpu_states": [fields_state(c, skip=("index", "thread")) for c in vm.cpus],
            "ram": hashlib.sha256(self.machine.ram).hexdigest(),
            "machine": self.machine.state(),
            "kvm_vm": vm.kvm.vm.state(),
            "main_loop": vm.main_loop.state(),
            "iothread": None if vm.iothread is None else vm.iothread.state(),
            "sched": vm.sched.state(), "positions": vm.positions(),
            "idle": [vm._idle_from, vm._idle_steps],
            "events": [ev.seq, ev.time, ev.thread, None if h is None else h.digest],
            "serial": [bytes(self.serial), self.serial_total],
            "exits": exits,
            "outcome": None if o is None else [o.finished, o.exit_status, o.halted,
                                               o.limit_reached, o.reason],
        }

    # -- breakpoints and time-boxed running (front ends that must stay responsive) ----------
    def run_for(self, seconds: float | None = 0.015, instructions: int | None = None) -> Outcome:
        """Advance for at most `seconds` of wall time and/or `instructions` guest
        instructions, stopping early at a breakpoint (`self.breakpoints`) or when the VM
        finishes. A GUI calls this from a timer so it can repaint and pause between
        batches; the simulation itself stays deterministic (only where batches end
        depends on the clock). `Outcome.finished` is false when the VM can go on;
        `Outcome.breakpoint` names the breakpoint that stopped it."""
        import time

        if self.outcome is not None:
            return self.outcome
        if self.vm is None:
            return self._run_for_bare(seconds, instructions)
        bp = self.breakpoints
        vcpus = [c.vcpu for c in self.vm.cpus if hasattr(c.vcpu, "BATCH")]
        # Small batches keep the wall-time bound; one instruction per batch when an address
        # breakpoint must be caught exactly.
        batch = 1 if bp.addresses else self.RUN_BATCH
        if instructions is not None:
            batch = max(1, min(batch, instructions))
        hit: list[str] = []

        def on_exit(ev: Event) -> None:
            why = (bp.matches_exit(ev) if ev.kind == "kvm_exit" else "") or bp.matches_event(ev)
            if why:
                hit.append(why)

        kinds = {spec.partition(":")[0] for spec in bp.events}
        if bp.exit_reasons or bp.ports:
            kinds.add("kvm_exit")
        unsubscribe = self.events.subscribe(on_exit, sorted(kinds)) if kinds else None
        cpu = self.cpus[0] if self.cpus else None
        origin = (cpu.eip, cpu.icount) if cpu is not None else None
        start = self._work()
        deadline = None if seconds is None else time.perf_counter() + seconds
        m = self.machine
        try:
            # A step paused at an event (step_event) ends first, with the batch it began
            # with (the history records it) and watched for breakpoints.
            if self.finish_step() is False:
                return self._finish_vm()
            if hit:
                return Outcome(False, breakpoint=hit[0], reason="breakpoint")
            for v in vcpus:
                v.BATCH = batch
            addresses = bp.addresses if cpu is not None else ()
            perf_counter = time.perf_counter
            hw = self.cpus
            until = None if instructions is None else start + instructions

            def stop() -> Outcome | None:
                """Why the slice ends here (None: it goes on), asked between two steps,
                those handed back and those passed in place (vm.passing)."""
                if hit:
                    return Outcome(False, breakpoint=hit[0], reason="breakpoint")
                if addresses and cpu.eip in addresses and (cpu.eip, cpu.icount) != origin:
                    return Outcome(False, breakpoint=f"address {cpu.eip:#x}",
                                   reason="breakpoint")
                if until is not None:
                    work = 0
                    for c in hw:  # (self._work())
                        work += c.icount + c.deliveries
                    if work >= until:
                        return Outcome(False, reason="instructions")
                if deadline is not None and perf_counter() >= deadline:
                    return Outcome(False, reason="time")
                return None

            # Where only the clock can end the slice (a window's), passing checks it inline
            # at every step passed in place (six times an exit to userspace), with no call.
            only_clock = not kinds and not addresses and until is None
            with self.vm.passing(None if only_clock else stop, deadline):
                while True:
                    if m.stop_requested or self.vm.budget_ended():
                        return self._finish_vm()
                    if not self.vm.step():
                        return self._finish_vm()
                    why = stop()
                    if why is not None:
                        return why
        finally:
            if unsubscribe is not None:
                unsubscribe()
            for v in vcpus:
                with suppress(AttributeError):  # (back to the class's; see _own)
                    del v.BATCH

    RUN_BATCH = 4_000  # guest instructions per scheduler step in run_for

    def _finish_vm(self) -> Outcome:
        self.finish_step()
        r = self.vm.run()  # until it stops, or (stopped) let its threads end
        self.outcome = Outcome(True, r.exit_status, r.halted, r.limit_reached,
                               r.stuck or ("instruction limit" if r.limit_reached else
                                           ("halted" if r.halted else r.stop_reason)),
                               stuck=r.stuck, unsupported=r.unsupported)
        return self.outcome

    def _run_for_bare(self, seconds: float | None, instructions: int | None) -> Outcome:
        import time

        from vmsim.bare import RunResult
        from vmsim.hw.cpu import StopReason

        cpu = self.bare.cpu
        deadline = None if seconds is None else time.perf_counter() + seconds
        done = 0  # work: instructions retired and exceptions delivered
        origin = (cpu.eip, cpu.icount)
        addrs = self.breakpoints.addresses
        while True:
            n = 1 if addrs else self.RUN_BATCH
            if instructions is not None:
                n = max(1, min(n, instructions - done))
            r, work = self.bare.run_batch(n)
            done += max(work, 1)
            if r is not StopReason.LIMIT or self.bare.stuck:
                return self._finish_bare(RunResult(r, cpu.icount, self.machine.exit_status,
                                                   self.bare.stuck or cpu.stop_message,
                                                   self.bare.stuck))
            if addrs and cpu.eip in addrs and (cpu.eip, cpu.icount) != origin:
                return Outcome(False, breakpoint=f"address {cpu.eip:#x}", reason="breakpoint")
            if instructions is not None and done >= instructions:
                return Outcome(False, reason="instructions")
            if deadline is not None and time.perf_counter() >= deadline:
                return Outcome(False, reason="time")

    # -- read-only views as plain data (shared by the GUI, the CLI and tests) ----------------
    def registers(self, cpu: int = 0) -> dict[str, int]:
        """The guest's registers: GPRs, EIP, EFLAGS, CR0/2/3/4 (as the guest reads them:
        bits kvm.ko owns come from the read shadows, CR3 is the guest's own)."""
        vcpu = self._vcpu_outside_guest(cpu)
        if vcpu is not None:
            # Outside KVM_RUN the state is kvm.ko's to give (KVM_GET_REGS/SREGS, as QEMU's
            # kvm_arch_get_registers): RIP/RSP/RFLAGS from the VMCS, where kvm.ko may have
            # changed them (skipping an emulated instruction, say). Any backend's KVM.
            regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
            out = {name: getattr(regs, "r" + name[1:].lower()) & 0xFFFFFFFF
                   for name in GPR_NAMES}
            out["EIP"], out["EFLAGS"] = regs.rip & 0xFFFFFFFF, regs.rflags & 0xFFFFFFFF
            for n in (0, 2, 3, 4):
                out[f"CR{n}"] = getattr(sregs, f"cr{n}") & 0xFFFFFFFF
            return out
        c = self.cpus[cpu]
        out = {name: c.r[i] for i, name in enumerate(GPR_NAMES)}
        out["EIP"] = c.eip
        out["EFLAGS"] = c.eflags
        for n in (0, 2, 3, 4):
            out[f"CR{n}"] = c.get_control(n)
        out["CR3"] = self._guest_cr3(cpu)
        if self.vm is not None:
            vcpu = self.vm.cpus[cpu].vcpu  # in non-root mode: kvm.ko keeps the guest's view
            out["CR0"], out["CR4"] = vcpu.guest_cr0, vcpu.guest_cr4
        return out

    def _vcpu_outside_guest(self, cpu: int):
        """The KVM vCPU when kvm.ko holds the guest's state (between KVM_RUNs, or before
        the first); None when the CPU does (bare metal, or a simulated vCPU paused inside
        the guest between two batches of instructions)."""
        if self.vm is None:
            return None
        vcpu = self.vm.cpus[cpu].vcpu
        vmx = getattr(vcpu, "vmx", None)
        return None if vmx is not None and vmx.guest_mode else vcpu

    def _guest_cr3(self, cpu: int) -> int:
        """CR3 as the guest set it: under shadow paging the hardware's CR3 is kvm.ko's
        shadow root and the guest's value is kept by kvm.ko (vcpu->arch.cr3)."""
        if self.vm is not None:
            vcpu = self.vm.cpus[cpu].vcpu
            if hasattr(vcpu, "guest_cr3"):
                return vcpu.guest_cr3
        return self.cpus[cpu].get_control(3)

    def segments(self, cpu: int = 0) -> dict[str, tuple[int, int, int]]:
        """Segment registers, LDTR and TR: selector, base, limit; GDTR and IDTR: base, limit."""
        vcpu = self._vcpu_outside_guest(cpu)
        if vcpu is not None:
            sregs = vcpu.get_sregs()
            out = {}
            for name in SEG_NAMES:
                seg = getattr(sregs, name.lower())
                out[name] = (seg.selector, seg.base & 0xFFFFFFFF, seg.limit & 0xFFFFFFFF)
            for name, seg in (("LDTR", sregs.ldt), ("TR", sregs.tr)):
                out[name] = (seg.selector, seg.base & 0xFFFFFFFF, seg.limit & 0xFFFFFFFF)
            out["GDTR"] = (0, sregs.gdt.base & 0xFFFFFFFF, sregs.gdt.limit)
            out["IDTR"] = (0, sregs.idt.base & 0xFFFFFFFF, sregs.idt.limit)
            return out
        c = self.cpus[cpu]
        out = {name: (s.selector, s.base, s.limit) for name, s in zip(SEG_NAMES, c.seg, strict=False)}
        out["LDTR"], out["TR"] = c.ldtr[:3], c.tr[:3]
        out["GDTR"] = (0, *c.gdtr)
        out["IDTR"] = (0, *c.idtr)
        return out

    def disassembly(self, before: int = 6, after: int = 12, cpu: int = 0) -> list[tuple[int, str, str]]:
        """(address, hex bytes, NASM text) around EIP: earlier instructions from the guest
        image's address map (x86 cannot be decoded backwards), later ones decoded forward."""
        import iced_x86

        regs = self.registers(cpu)
        eip = regs["EIP"]  # as Registers has it (KVM_GET_REGS outside the guest)
        starts = self._starts
        if starts is None or starts[0] is not self.image:  # (the views ask at every repaint)
            starts = self._starts = (self.image, sorted({sl.address for sl in self.image.lines
                                                         if sl.size}))
        i = bisect.bisect_left(starts[1], eip)
        addrs = starts[1][max(0, i - before):i] if before else []
        out = []
        fmt = iced_x86.Formatter(iced_x86.FormatterSyntax.NASM)
        at = addrs[0] if addrs else eip
        limit = len(addrs) + after
        while len(out) < limit:
            data = self._read_linear(at, 15, regs)
            if data is None:
                out.append((at, "", "(not mapped)"))
                break
            ins = iced_x86.Decoder(32, data, ip=at).decode()
            n = max(ins.len, 1)
            out.append((at, data[:n].hex(" "), fmt.format(ins)))
            if at < eip < at + n:  # the image's map was off the instruction stream: resync
                at = eip
                continue
            at += n
        return out

    def read_linear(self, la: int, length: int, cpu: int = 0) -> bytes | None:
        """Guest memory by linear address (through the guest's page tables, without
        touching the TLB or A/D bits); None where nothing is mapped."""
        return self._read_linear(la, length, self.registers(cpu))

    def _read_linear(self, la: int, length: int, regs: dict[str, int]) -> bytes | None:
        out = bytearray()
        while len(out) < length:
            pa = self._translate(la + len(out), regs)
            if pa is None:
                return None if not out else bytes(out)
            chunk = min(length - len(out), 0x1000 - (pa & 0xFFF))
            out += self.machine.mem.read_bytes(pa, chunk)
        return bytes(out)

    def guest_translate(self, la: int, cpu: int = 0) -> int | None:
        """Linear -> guest-physical through the guest's own page tables (its CR3, as the
        guest reads it, whatever kvm.ko's MMU does underneath); None if not present."""
        return self._translate(la, self.registers(cpu))  # CR0 and CR4 as the guest reads them

    def _translate(self, la: int, regs: dict[str, int]) -> int | None:
        la &= 0xFFFFFFFF
        if not regs["CR0"] & 0x80000000:
            return la
        mem = self.machine.mem
        pde = mem.read((regs["CR3"] & 0xFFFFF000) | (la >> 22) << 2, 4)
        if not pde & 1:
            return None
        if pde & 0x80 and regs["CR4"] & 0x10:
            return (pde & 0xFFC00000) | (la & 0x3FFFFF)
        pte = mem.read((pde & 0xFFFFF000) | ((la >> 12) & 0x3FF) << 2, 4)
        return (pte & 0xFFFFF000) | (la & 0xFFF) if pte & 1 else None

    def vmcs_fields(self, cpu: int = 0) -> list[tuple[str, str, int, int]]:
        """(area, field name, encoding, value) of the vCPU's VMCS, by area as dump_vmcs()."""
        from vmsim.hw.vmcs import F, field_info

        vmcs = self.vm.cpus[cpu].vcpu.vmcs
        out = []
        for area in ("guest state", "host state", "control", "exit information"):
            for enc, value in vmcs:
                if field_info(enc)[1] != area:
                    continue
                name = F(enc).name if enc in F._value2member_map_ else f"field {enc:#06x}"
                out.append((area, name, enc, value))
        return out

    def guest_page_tables(self, cpu: int = 0, limit: int = 64
                          ) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """The guest's 32-bit paging structures from its CR3: (PDE index, PDE, [(PTE
        index, PTE)]) for present entries (at most `limit` of each); [] with paging off
        (the guest's CR0.PG, as registers() gives it)."""
        regs = self.registers(cpu)
        if not regs["CR0"] & 0x80000000:
            return []
        mem = self.machine.mem
        cr3 = regs["CR3"] & 0xFFFFF000
        out = []
        for i in range(1024):
            pde = mem.read(cr3 + 4 * i, 4)
            if not pde & 1:
                continue
            ptes: list[tuple[int, int]] = []
            if not pde & 0x80:  # not a 4 MiB page: its page table
                pt = pde & 0xFFFFF000
                for j in range(1024):
                    pte = mem.read(pt + 4 * j, 4)
                    if pte & 1:
                        ptes.append((j, pte))
                        if len(ptes) >= limit:
                            break
            out.append((i, pde, ptes))
            if len(out) >= limit:
                break
        return out

    def ept_entries(self) -> list[tuple[int, int]]:
        """(gfn, EPT leaf) for each guest page kvm.ko's TDP MMU has mapped (EPT mode)."""
        vm = getattr(self.vm.kvm, "vm", None) if self.vm is not None else None
        tdp = getattr(vm, "tdp", None)
        return tdp.entries() if tdp is not None else []

    def shadow_pages(self) -> list[tuple[int, int, bool, int, list[tuple[int, int]], bool]]:
        """(gfn, level, direct, spt, [(index, spte)], writable) of each shadow page (shadow
        mode); a guest 4 MiB page can have two direct pages, one read-only (its PDE clean)
        and one writable."""
        vm = getattr(self.vm.kvm, "vm", None) if self.vm is not None else None
        sh = getattr(vm, "shadow", None)
        if sh is None:
            return []
        out = []
        for _, sp in sorted(sh.pages.items()):
            entries = [(i, e) for i in range(1024) if (e := sh.host.read(sp.spt + 4 * i, 4)) & 1]
            out.append((sp.gfn, sp.level, sp.direct, sp.spt, entries, sp.writable))
        return out

    def tlb(self, cpu: int = 0) -> list[tuple[int, int, bool]]:
        """(linear page, physical page, writable) for each TLB entry."""
        mmu = self.cpus[cpu].mmu
        return [(lp << 12, pa, lp in mmu.tlb_w) for lp, pa in sorted(mmu.tlb.items())]

    # -- interrupts and threads (issue 10's panels) ------------------------------------------
    def interrupt_controllers(self) -> dict[str, object]:
        """The PIC pair, the PIT and the local APICs wherever they live (kvm.ko or QEMU),
        as plain data: {"irqchip", "pic": [master, slave] or None, "pit": [3 channels] or
        None, "apics": [per vCPU] (kernel irqchip only)}. Empty on the bare backend."""
        out: dict[str, object] = {"irqchip": self.machine.config.irqchip, "pic": None,
                                  "pit": None, "apics": []}
        if self.vm is None:
            return out
        chip = getattr(self.vm.kvm.vm, "irqchip", None)
        pic = chip.pic if chip is not None else self.machine.pic
        pit = chip.pit if chip is not None else self.machine.pit
        if pic is not None:
            out["pic"] = [_pic_view(c) for c in (pic.master, pic.slave)]
            out["pic_output"] = int(pic.output)
        if pit is not None:
            out["pit"] = [pit.channel_view(n) for n in range(3)]
        out["apics"] = [c.vcpu.lapic.view() for c in self.vm.cpus
                        if getattr(c.vcpu, "lapic", None) is not None]
        return out

    def vcpu_states(self) -> list[dict[str, object]]:
        """Per vCPU: its thread, where KVM and QEMU have it (mode, mp_state, halted), the
        interrupt window (exiting on, requested by userspace), IF and the queued vector."""
        if self.vm is None:
            return []
        from vmsim.hw.vmcs import CPU_BASED_INTR_WINDOW_EXITING, F

        threads = {t.name: t for t in self.vm.sched.threads}
        out = []
        for c in self.vm.cpus:
            v = c.vcpu
            run = v.kvm_run
            t = threads.get(c.thread)
            d: dict[str, object] = {
                "index": c.index, "thread": c.thread,
                "time": t.time if t is not None else 0,
                "waiting": (t.blocked.reason if t is not None and t.blocked else ""),
                "qemu_halted": c.halted, "interrupt_request": c.interrupt_request,
                "request_interrupt_window": run.request_interrupt_window,
                "ready_for_interrupt_injection": run.ready_for_interrupt_injection,
                "if_flag": run.if_flag, "last_exit": c.last_exit}
            vmcs = getattr(v, "vmcs", None)
            if vmcs is not None:
                entry = vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
                d.update(mode=v.mode, mp_state=v.mp_state,
                         window_exiting=bool(vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
                                             & CPU_BASED_INTR_WINDOW_EXITING),
                         injecting=(entry & 0xFF) if entry & 0x80000000 else None,
                         interruptibility=vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO),
                         pending_external_vector=v.pending_external_vector,
                         signal_pending=v.signal_pending, stat=dict(v.stat))
            out.append(d)
        return out

    def threads(self) -> dict[str, object]:
        """QEMU's threads and the BQL: each thread's virtual time and what it waits for,
        the BQL's owner and its queue of waiters, the main loop's armed timers."""
        if self.vm is None:
            return {"threads": [], "bql": None, "main_loop": None}
        sched, m = self.vm.sched, self.machine
        loop = self.vm.main_loop
        return {
            "threads": [{"name": t.name, "time": t.time, "done": t.done,
                         "waiting": t.blocked.reason if t.blocked else "",
                         "running": sched.current is t} for t in sched.threads],
            "bql": {"owner": m.bql.owner, "waiters": list(m.bql.waiters),
                    "contended": m.bql.contended},
            "main_loop": {"running": loop.running,
                          "timers": sorted((t.expire_time, t.name) for t in loop.timers
                                           if t.expire_time is not None)},
        }

    def virtio_queues(self) -> list[dict[str, object]]:
        """Every virtio-mmio transport as plain data: its device's status and features, each
        queue's descriptor table (addr, len, flags, next), available and used rings with
        their indices and the device's position (last_avail_idx), the recent requests'
        progress, and the disk sectors requests have touched ("r", "w", "rw")."""
        return [_virtio_view(p) for p in self.machine.virtio_transports]

    def last_exit(self, cpu: int = 0) -> dict[str, object] | None:
        """The last VM exit's information (reason, qualification ...), or None."""
        import dataclasses

        info = self.vm.cpus[cpu].vcpu.vmx.last_exit if self.vm is not None else None
        if info is None:
            return None
        d = dataclasses.asdict(info)
        d["reason"] = getattr(info.reason, "name", str(info.reason))
        return d

    def host_cpu(self, cpu: int = 0) -> dict[str, object] | None:
        """The physical CPU's root-mode registers as the last VM exit loaded them from the
        VMCS host-state area (where the exit went: "rip_symbol" names HOST_RIP), or None
        before the first exit and on backends without a simulated VMCS."""
        import dataclasses

        from vmsim.kvm.vmx import HOST_SYMBOLS

        vmx = getattr(self.vm.cpus[cpu].vcpu, "vmx", None) if self.vm is not None else None
        host = vmx.host_cpu if vmx is not None else None
        if host is None:
            return None
        d = dataclasses.asdict(host)
        d["rip_symbol"] = HOST_SYMBOLS.get(host.rip, "")
        return d


GPR_NAMES = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI")
SEG_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")
# EFLAGS bits worth naming (SDM Vol. 1 3.4.3).
EFLAGS_BITS = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
               ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("ID", 21))


def _virtio_view(proxy) -> dict[str, object]:
    """One virtio-mmio transport as plain data (Session.virtio_queues)."""
    from vmsim.vmm.virtio import DESC_SIZE, status_names

    vdev = proxy.vdev
    out: dict[str, object] = {"transport": proxy.index, "base": proxy.base, "irq": proxy.irq_line,
                              "irq_level": proxy.level, "device_id": 0 if vdev is None
                              else vdev.device_id}
    if vdev is None:
        return out
    mem = vdev.mem
    queues = []
    for vq in vdev.vq:
        q = proxy.vqs.get(vq.index)
        qv: dict[str, object] = {"index": vq.index, "size": vq.num,
                                 "ready": bool(q is not None and q.enabled),
                                 "desc_addr": vq.desc, "avail_addr": vq.avail,
                                 "used_addr": vq.used, "last_avail_idx": vq.last_avail_idx,
                                 "used_idx": vq.used_idx, "inuse": vq.inuse,
                                 "descriptors": [], "avail": None, "used": None}
        if vq.ring_ok:
            n = vq.num
            table = mem.read_bytes(vq.desc, DESC_SIZE * n)
            qv["descriptors"] = [dict(zip(("addr", "len", "flags", "next"),
                                          struct.unpack_from("<QIHH", table, DESC_SIZE * i), strict=True))
                                 for i in range(n)]
            flags, idx = struct.unpack("<HH", mem.read_bytes(vq.avail, 4))
            ring = list(struct.unpack(f"<{n}H", mem.read_bytes(vq.avail + 4, 2 * n)))
            qv["avail"] = {"flags": flags, "idx": idx, "ring": ring}
            flags, idx = struct.unpack("<HH", mem.read_bytes(vq.used, 4))
            elems = struct.unpack(f"<{2 * n}I", mem.read_bytes(vq.used + 4, 8 * n))
            qv["used"] = {"flags": flags, "idx": idx,
                          "ring": [{"id": elems[2 * i], "len": elems[2 * i + 1]}
                                   for i in range(n)]}
        queues.append(qv)
    out.update(status=vdev.status, status_names=status_names(vdev.status),
               device_features=vdev.host_features, driver_features=vdev.guest_features,
               isr=vdev.isr, broken=vdev.broken_reason if vdev.broken else "",
               queues=queues, requests=[dict(r) for r in getattr(vdev, "requests", [])])
    blk = getattr(vdev, "blk", None)
    if blk is not None:
        out.update(disk=blk.path, readonly=blk.readonly, capacity=blk.total_sectors(),
                   sectors_touched=dict(sorted(blk.touched.items())),
                   sectors_read=blk.sectors_read, sectors_written=blk.sectors_written)
    return out


def _vcpu_dump(v) -> dict:
    """SimVcpu.state() for state_dump, also mid-way through an emulated instruction (which
    state() refuses: a snapshot cannot hold it), the emulation then in plain words."""
    from vmsim.state import fields_state

    emu, frags = v.emulator, v.mmio_fragments
    if emu is None and not frags:
        return _without_batch(v.state())
    v.emulator, v.mmio_fragments = None, type(frags)()
    try:
        d = _without_batch(v.state())
    finally:
        v.emulator, v.mmio_fragments = emu, frags
    d["emulation"] = [None if emu is None else (type(emu).__name__, fields_state(emu)),
                      repr(frags)]
    return d


def _without_batch(d: dict) -> dict:
    """A vCPU's state without BATCH: how far a front end lets it run between two yields
    (set around a step, recorded by the history per step), not the machine's state."""
    fields = d.get("fields")
    if isinstance(fields, dict) and "BATCH" in fields:
        d = dict(d, fields={k: v for k, v in fields.items() if k != "BATCH"})
    return d


def eflags_decoded(value: int) -> list[tuple[str, bool]]:
    return [(name, bool(value >> bit & 1)) for name, bit in EFLAGS_BITS]


@dataclass
class Breakpoints:
    """Where run_for stops: guest addresses (EIP), VM exit reasons (Intel's names, e.g.
    "IO_INSTRUCTION"), and I/O ports (at the IO_INSTRUCTION exit that accesses them)."""

    addresses: set[int] = field(default_factory=set)
    exit_reasons: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    # Events: a kind, or "kind:field=value" ("kvm_inj_virq": an interrupt injected;
    # "bql:action=wait": the BQL contended). The step that emitted one is the last.
    events: set[str] = field(default_factory=set)

    def matches_event(self, ev: Event) -> str:
        for spec in sorted(self.events):
            kind, _, cond = spec.partition(":")
            name, _, value = cond.partition("=")
            if ev.kind == kind and (not cond or str(ev.get(name)) == value):
                return f"event {spec}"
        return ""

    def matches_exit(self, ev: Event) -> str:
        if ev["exit_reason"] in self.exit_reasons:
            return f"exit {ev['exit_reason']}"
        if ev["exit_reason"] == "IO_INSTRUCTION" and self.ports:
            port = ev["info1"] >> 16 & 0xFFFF
            if port in self.ports:
                return f"port {port:#x}"
        return ""


def _pic_view(c) -> dict[str, int]:
    """One 8259's registers for a panel."""
    return {"irr": c.irr, "isr": c.isr, "imr": c.imr, "irq_base": c.irq_base, "elcr": c.elcr}


def _own(obj: object, name: str) -> object:
    """`obj`'s own `name` set over its class's (a wrapped method, a vCPU's batch), or None.
    (Not read from __dict__: that makes CPython 3.11 give the instance a real dict, and
    every attribute access on it slower: EventStream.build took twice the time.)"""
    f = getattr(obj, name)
    cls = getattr(type(obj), name)
    return None if getattr(f, "__func__", f) is cls or f == cls else f


class _PartialStep:
    """One scheduler step (VirtualMachine.step: a simulated thread resumed up to its next
    yield) run in a greenlet so that it can stop right after any event it emits and go
    on later from there, exactly as if it had never stopped (the same code runs on the
    same state; only the caller waits). While it exists the session's EventStream.emit
    (and build, which numbers the events nobody hears, as in a muted replay) is wrapped
    to count the events of STEP_KINDS and switch back to the caller after one; the
    step's end (VirtualMachine.after_step: the history's position) comes when it is
    resumed for the last time.

    `replay` events of the step are first emitted again with the front end's listeners
    muted (a step back to the middle of a step: History.goto to its start, then these),
    the step being a replay of the recorded one to its end (History.replaying)."""

    def __init__(self, s: Session, replay: int = 0):
        from greenlet import greenlet

        self.s = s
        self.count = 0  # events of STEP_KINDS emitted so far
        self.pause = True
        self.running = False  # inside the step (not paused)
        self.replay = replay
        self.last: Event | None = None
        self.unsubscribe = s.events.subscribe(self._listen, STEP_KINDS)
        self.muted: tuple | None = None
        h = s.history
        self.batch = h.batch[h.pos + 1] if replay and h is not None else None
        if self.batch is not None:
            for c in s.vm.cpus:
                c.vcpu.BATCH = self.batch
        if replay:
            ev = s.events
            self.muted = ev.mute(keep_counted=True)
            h.listen_replay()
            h.replaying = h.muted = True
        stream = s.events
        self.had_emit = _own(stream, "emit")
        self.had_build = _own(stream, "build")
        inner, inner_build = stream.emit, stream.build
        step_kinds = _STEP_SET

        def one(kind: str) -> None:  # an event of `kind` has just taken its number
            if kind in step_kinds and self.running:  # (the step's own)
                self.count += 1
                if self.muted is not None and self.count >= self.replay:
                    self._unmute()
                if self.pause and self.count >= self.replay:
                    self.g.parent.switch(self.last)

        def emit(kind: str, source: str, **fields) -> None:
            seq = stream.seq
            inner(kind, source, **fields)
            if stream.seq != seq:
                one(kind)

        def build(kind: str) -> bool:
            # (A replay's events are numbered here while the listeners are muted.)
            seq = stream.seq
            if inner_build(kind):
                return True  # (emit follows)
            if stream.seq != seq:
                one(kind)
            return False

        stream.emit = emit
        stream.build = build
        stream.rearm()  # (its tracepoints deliver through this emit now)
        self.g = greenlet(s.vm.step)

    def _listen(self, ev: Event) -> None:
        self.last = ev

    def _unmute(self) -> None:
        ev = self.s.events
        ev.unmute(self.muted)
        self.muted = None
        self.s.history.muted = False  # (still replaying: the step is the recorded one)

    def resume(self, pause: bool) -> tuple[Event | None, bool]:
        """Go on: (the event it paused at, True), or (None, what VirtualMachine.step
        returned) once the step ended (with pause False it always runs to its end)."""
        from greenlet import getcurrent

        self.pause = pause
        g = self.g
        g.parent = getcurrent()
        self.running = True
        try:
            r = g.switch()
        except BaseException:
            self._end()
            raise
        finally:
            self.running = False
        if not g.dead:
            return r, True
        self._end()
        return None, bool(r)

    def _end(self) -> None:
        s = self.s
        s._partial = None
        if self.muted is not None:
            self._unmute()
        self.unsubscribe()
        stream = s.events
        for name, had in (("emit", self.had_emit), ("build", self.had_build)):
            if had is None:
                delattr(stream, name)
            else:
                setattr(stream, name, had)
        stream.rearm()
        if self.batch is not None:
            for c in s.vm.cpus:
                with suppress(AttributeError):  # (back to the class's; see _own)
                    del c.vcpu.BATCH
        h = s.history
        if self.replay and h is not None:
            h.replaying = h.muted = False


_STEP_SET = frozenset(STEP_KINDS)
