"""A running virtual machine: QEMU's threads on the simulated clock (softmmu/vl.c, cpus.c).

One thread per vCPU runs `kvm_vcpu_thread_fn` (accel/kvm/kvm-accel-ops.c) and the main
loop thread runs `main_loop_wait` (util/main-loop.c, vmsim.vmm.main_loop); the scheduler
interleaves them deterministically. The VM stops when the guest asks (isa-debug-exit),
shuts down, or nothing can ever run again (every vCPU halted, no timer armed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vmsim.clock import Block, Scheduler
from vmsim.costs import NOMINAL_HZ
from vmsim.hw.vmcs import F
from vmsim.kvm.api import Kvm
from vmsim.state import fields_state, load_fields
from vmsim.vmm.iothread import THREAD as IOTHREAD
from vmsim.vmm.iothread import IOThread
from vmsim.vmm.kvm_all import (
    CPU_INTERRUPT_HARD,
    EXCP_SHUTDOWN,
    CPUState,
    KvmState,
    kvm_arch_process_async_events,
    kvm_cpu_exec,
)
from vmsim.vmm.machine import Machine
from vmsim.vmm.main_loop import THREAD as MAIN_LOOP_THREAD
from vmsim.vmm.main_loop import FdHandler, MainLoop, main_loop_wait, ppoll_wait


@dataclass
class VmResult:
    halted: bool  # every vCPU halted and nothing can wake it
    stop_reason: str  # why the VM stopped, if it did ("" when halted)
    exit_status: int | None  # isa-debug-exit
    virtual_time: int
    limit_reached: bool = False  # --max-instructions ran out (simulated backend)
    stuck: str = ""  # vmsim's watchdog stopped a vCPU that made no progress: why
    unsupported: str = ""  # the guest did something vmsim does not model: what


def kvm_vcpu_thread_fn(s: KvmState, cpu: CPUState, resume: str | None = None
                       ) -> Generator[Any, None, None]:
    """The vCPU thread. `resume` rebuilds it from a snapshot where VirtualMachine.positions
    saw it: "in_guest" / "blocked" (inside KVM_RUN) or "halted" (qemu_wait_io_event)."""
    m = s.machine
    if resume is None:
        _thread_state(m, cpu.thread, "started", "kvm_vcpu_thread_fn")
        yield from m.bql_lock(cpu.thread)
    while resume is not None or not m.stop_requested:  # (a rebuilt one is past the test)
        if resume in ("in_guest", "blocked"):
            point = cpu.vcpu.run_point if resume == "in_guest" else "blocked"
            r = yield from kvm_cpu_exec(s, cpu, point)
            if r == EXCP_SHUTDOWN:
                break
        elif resume is None and cpu_can_run(cpu) and (
                not cpu.halted or not kvm_arch_process_async_events(s, cpu)):
            r = yield from kvm_cpu_exec(s, cpu)
            if r == EXCP_SHUTDOWN:
                break
        yield from qemu_wait_io_event(s, cpu, resume == "halted")
        resume = None
    m.bql_unlock(cpu.thread)
    _thread_state(m, cpu.thread, "stopped", m.stop_reason)


def _finished() -> Generator[Any, None, None]:
    """The body of a thread that had ended when the snapshot was taken."""
    return
    yield


def _thread_state(m: Machine, thread: str, state: str, detail: str) -> None:
    if m.events is not None and m.events.build("thread"):
        m.events.emit("thread", thread, state=state, detail=detail)


def cpu_can_run(cpu: CPUState) -> bool:
    """Not stopped, and not asked to stop (vmsim.vmm.cpus.pause_all_vcpus)."""
    return not cpu.stop and not cpu.stopped


def cpu_thread_is_idle(s: KvmState, cpu: CPUState) -> bool:
    """Parked by vm_stop, or halted with nothing to do (never, when kvm.ko halts the vCPU
    itself). A vCPU asked to stop is not idle: it has to go and park first."""
    if s.machine.stop_requested or cpu.stop:
        return False
    if cpu.stopped:
        return True
    if s.irqchip_in_kernel or not cpu.halted:
        return False
    return not (cpu.interrupt_request & CPU_INTERRUPT_HARD and cpu.eflags_if)


def halt_cond_wait(s: KvmState, cpu: CPUState) -> Block:
    """qemu_cond_wait(cpu->halt_cond): until the vCPU has something to do."""
    return Block("halted", lambda: not cpu_thread_is_idle(s, cpu))


def qemu_wait_io_event(s: KvmState, cpu: CPUState, resume: bool = False
                       ) -> Generator[Any, None, None]:
    """Sleep while the vCPU is halted; the wait releases the BQL (qemu_cond_wait on
    halt_cond, which qemu_cpu_kick broadcasts). `resume`: rebuilt asleep there."""
    m = s.machine
    while resume or cpu_thread_is_idle(s, cpu):
        if not resume:
            _thread_state(m, cpu.thread, "halted",
                          "qemu_wait_io_event: stopped (vm_stop)" if cpu.stopped else
                          "qemu_wait_io_event: waiting for an interrupt")
            m.bql_unlock(cpu.thread)
            yield halt_cond_wait(s, cpu)
        resume = False
        yield from m.bql_lock(cpu.thread)
    cpu.thread_kicked = False  # qemu_wait_io_event_common
    if cpu.stop:
        qemu_cpu_stop(s, cpu)


def qemu_cpu_stop(s: KvmState, cpu: CPUState) -> None:
    """qemu_cpu_stop: the vCPU has stopped (qemu_pause_cond tells pause_all_vcpus)."""
    cpu.stop, cpu.stopped = False, True
    ev = s.events
    if ev is not None and ev.build("qemu_cpu_stop"):
        ev.emit("qemu_cpu_stop", cpu.thread, cpu_index=cpu.index)


def qemu_cpu_kick(s: KvmState, cpu: CPUState, why: str) -> None:
    """qemu_cpu_kick -> qemu_cpu_kick_thread: SIG_IPI to the vCPU thread, once until it
    has seen it. Inside KVM_RUN the kernel sees the signal (KVM_RUN returns -EINTR);
    in userspace QEMU's handler sets kvm_run.immediate_exit, so the next KVM_RUN returns
    at once."""
    ev = s.events
    if ev is not None and ev.build("qemu_cpu_kick"):
        ev.emit("qemu_cpu_kick", cpu.thread, cpu_index=cpu.index, why=why)
    if cpu.thread_kicked:
        return
    cpu.thread_kicked = True
    signal = getattr(cpu.vcpu, "kick_signal", None)
    if signal is not None:
        if not signal():
            cpu.vcpu.kvm_run.immediate_exit = 1  # kvm_ipi_signal -> kvm_cpu_kick
    elif hasattr(cpu.vcpu, "kick"):
        cpu.vcpu.kick()  # the host's KVM: a real SIG_IPI to the vCPU's OS thread


# Rounds of timers and main-loop work, with no vCPU running, after which a VM whose vCPUs
# are all halted is taken to be halted for good (see halted_for_good).
IDLE_LIMIT = 10_000


def _halted_with_if_clear(s: KvmState, cpu: CPUState) -> bool:
    v = cpu.vcpu
    if not s.irqchip_in_kernel:
        return cpu.halted and not cpu.eflags_if
    if cpu.host_halted:  # the host's kvm.ko: ask it (the vCPU is outside KVM_RUN now)
        return not v.get_regs().rflags & 0x200
    mp_state = getattr(v, "mp_state", None)
    if mp_state in ("init_received", "uninitialized"):
        return True
    if mp_state != "halted":
        return False
    return not v.vmcs.read(F.GUEST_RFLAGS) & 0x200


# The host backend: how often (seconds) a scheduler waiting for a KVM_RUN looks at the
# iothread's eventfds, which the host's kvm.ko signals without ending any run.
HOST_EVENTFD_POLL = 0.001

# Positions VirtualMachine.positions names (besides "running" and "dispatch", mid-way
# through code), and those load_state rebuilds a thread at: every named one except "bql"
# (a thread queued for the BQL: a snapshot waits until it has the lock and goes on).
POSITIONS = {"in_guest", "blocked", "halted", "bql", "ppoll", "aio_poll", "aio_poll io",
             "done"}
REBUILDABLE = POSITIONS - {"bql"}
STATE_VERSION = 1


def _position(t, vm: VirtualMachine) -> str:
    if t.done:
        return "done"
    b = t.blocked
    if t.name == MAIN_LOOP_THREAD:
        if b is not None and b.reason.startswith("main_loop_wait"):
            return "ppoll"
        return "bql" if b is not None else "dispatch"
    if t.name == IOTHREAD:
        # Asleep on its eventfds, or on the next I/O completion (plain data: the device's
        # in-flight list and the deadline the iothread keeps); else waiting for the BQL.
        if b is not None and b.reason.startswith("aio_poll"):
            return b.reason
        return "bql" if b is not None else "running"
    cpu = next((c for c in vm.cpus if c.thread == t.name), None)
    if b is not None:
        if b.reason == "kvm_vcpu_block":
            return "blocked"
        return "halted" if b.reason == "halted" else "bql"
    v = cpu.vcpu if cpu is not None else None
    if getattr(v, "mode", None) == "in_guest" and v.run_point in ("entry", "batch"):
        return "in_guest"  # (at "exit" the VM exit is taken but not yet handled)
    return "running"


def _goes_on(vm: VirtualMachine, stop: Callable[[], object] | None,
             deadline: float | None) -> Callable[[], bool]:
    """What VirtualMachine.passing asks between two steps of a vCPU that stays runnable
    (Scheduler.pass_time, six times an exit to userspace): the run goes on, the wall
    clock (time.perf_counter) is before `deadline`, and `stop` gives None. One call: the
    budget's, the host's and the clock's checks are inline (each call more cost about 0.5%
    of an exit to userspace, exit_bench --callgrind)."""
    machine = vm.machine
    clock = time.perf_counter

    def goes_on() -> bool:
        if machine.stop_requested:
            return False
        for c in vm.cpus:  # (budget_ended(), and the host's halt)
            v = c.vcpu
            if c.host_halted or v.limit_reached or v.stuck:
                return False
        if deadline is not None and clock() >= deadline:
            return False
        return stop is None or stop() is None
    return goes_on


class VirtualMachine:
    def __init__(self, machine: Machine, kvm: Kvm, vcpus: int | None = None,
                 max_instructions: int | None = None):
        self.machine = machine
        self.sched = Scheduler()
        if machine.events is not None:
            ev = machine.events
            self.sched.stamp = ev  # its events carry the running thread's time and name

            def on_timer(timer) -> None:
                ev.time = self.sched.now
                if ev.build("host_timer"):
                    ev.emit("host_timer", "kvm", name=timer.name, cpu="host")
            self.sched.on_timer = on_timer
        if hasattr(kvm, "use_clock"):
            kvm.use_clock(self.sched)  # the host kernel's clock is the simulation's
        machine.bql.now = self.sched.time_now
        self.main_loop = MainLoop(machine)
        self.main_loop.now = self.sched.time_now
        machine.main_loop = self.main_loop
        self.kvm = KvmState(kvm, machine)
        self.kvm.sched = self.sched
        host_vm = self.kvm.vm
        if hasattr(host_vm, "wait_for_any_run"):
            self.sched.host_busy = lambda: any(c.vcpu.run_in_flight() for c in self.cpus)

            def host_wait(cycles: int | None) -> bool:
                io = self.iothread
                if io is None or not io.host_notifiers:
                    host_vm.wait_for_any_run(None if cycles is None else cycles / NOMINAL_HZ)
                    return any(c.vcpu.run_done() for c in self.cpus)
                # The iothread's ioeventfds are the host kernel's: the guest's kick wakes
                # no KVM_RUN, so look at them between short waits for a run.
                left = None if cycles is None else cycles / NOMINAL_HZ
                while True:
                    step = HOST_EVENTFD_POLL if left is None else min(left, HOST_EVENTFD_POLL)
                    host_vm.wait_for_any_run(step)
                    if any(c.vcpu.run_done() for c in self.cpus) or io.aio_poll_ready():
                        return True
                    if left is not None:
                        left -= step
                        if left <= 0:
                            return False
            self.sched.host_wait = host_wait
        # COM1's chardev: its input is an fd the main loop polls (qemu_chr_fe_set_handlers).
        serial = machine.serial
        self.main_loop.set_fd_handler(FdHandler("serial0 chardev", serial.chr_ready,
                                                serial.serial_can_receive, serial.chr_read))
        serial.attach_main_loop(self.main_loop.notify)
        if not self.kvm.irqchip_in_kernel:
            machine.create_userspace_irqchip(
                self.sched.time_now, lambda cb: self.main_loop.new_timer("i8254", cb))
            machine.pic_irq_request = self._pic_irq_request
        n = machine.config.smp if vcpus is None else vcpus
        self.cpus = [self.kvm.init_vcpu(i) for i in range(n)]
        if max_instructions is not None:
            for cpu in self.cpus:
                limit = getattr(cpu.vcpu, "set_instruction_limit", None)
                if limit is None:
                    raise ValueError("--max-instructions needs the simulated backend")
                limit(max_instructions)
        self.sched.spawn(MAIN_LOOP_THREAD, main_loop_wait(self.main_loop))
        # -object iothread,id=iothread0 for the disk's dataplane, when QueueNotify can be an
        # ioeventfd (the backend has KVM_IOEVENTFD and --no-ioeventfd was not given).
        self.iothread: IOThread | None = None
        if (machine.virtio_blk is not None and machine.config.ioeventfd
                and hasattr(host_vm, "ioeventfd")):
            self.iothread = IOThread(self.kvm, self.sched.time_now)
            machine.virtio_transports[-1].ioeventfd = self.iothread
            self.sched.spawn(IOTHREAD, self.iothread.run())
        for cpu in self.cpus:
            self.sched.spawn(cpu.thread, kvm_vcpu_thread_fn(self.kvm, cpu))
        self._vcpu_threads = {c.thread for c in self.cpus}
        self.runstate = "running"  # QEMU's RunState (vmsim.vmm.cpus)
        self.pit_state: dict[str, Any] | None = None  # kvm-pit's copy while stopped
        self._idle_from = 0
        self._idle_steps = 0
        self.after_step: Callable[[], None] | None = None
        # after_step can be told of steps passed in place too (the session's history):
        # their ends are the same state as those of steps handed back (VirtualMachine.passing).
        self.records_passes = False

    def _pic_irq_request(self, level: int) -> None:
        """pic_irq_request (hw/i386/x86.c), no APIC: the PIC's INTR is the first vCPU's
        CPU_INTERRUPT_HARD; raising it kicks that vCPU unless it is the caller."""
        cpu = self.cpus[0]
        if not level:
            cpu.interrupt_request &= ~CPU_INTERRUPT_HARD  # cpu_reset_interrupt
            return
        cpu.interrupt_request |= CPU_INTERRUPT_HARD  # cpu_interrupt
        current = self.sched.current
        if current is None or current.name != cpu.thread:
            qemu_cpu_kick(self.kvm, cpu, "CPU_INTERRUPT_HARD")

    def step(self) -> bool:
        """Advance one simulated thread by one yield; False when nothing can run, or when
        no vCPU ever can again (halted_for_good). `after_step`, if set, is called after
        each (the session's history counts the steps: its position in the run)."""
        more = self._step()
        if self.after_step is not None:
            self.after_step()
        return more

    def _step(self) -> bool:
        t = self.sched.step()
        if t is None:
            return False
        if t.name in self._vcpu_threads:
            self._idle_from = self.sched.timers_fired
            self._idle_steps = 0
            # A vCPU that has just gone to sleep (kvm_vcpu_block, qemu_wait_io_event) may
            # be the last one to: the run ends at its HLT, not at the next timer. One the
            # host's kvm.ko holds halted only shows when its watchdog kicks it.
            if t.blocked is not None:
                return not self.halted_for_good()
            for c in self.cpus:
                if c.host_halted:
                    return not self.halted_for_good()
            return True
        self._idle_steps += 1
        return not self.halted_for_good()

    def halted_for_good(self) -> bool:
        """Every vCPU is halted and nothing can wake it: halted with interrupts disabled
        (only an NMI or INIT could, and nothing here sends one), or only timers and the
        main loop have run for IDLE_LIMIT rounds without waking any vCPU (a guest halted
        with its timer's IRQ masked). Real QEMU would sit there forever; vmsim ends the
        run as "halted"."""
        if all(_halted_with_if_clear(self.kvm, c) for c in self.cpus):
            return True
        idle = self._idle_steps + self.sched.timers_fired - self._idle_from
        return idle > IDLE_LIMIT

    def positions(self) -> dict[str, str]:
        """Where each simulated thread stands, as plain data (docs/ARCHITECTURE.md,
        "Simulated threads and snapshots"): a vCPU "in_guest" (between two batches of
        guest instructions), "blocked" (kvm_vcpu_block), or parked in QEMU ("halted",
        waiting for the BQL); the main loop "ppoll" or "dispatch"; the iothread
        "aio_poll" (waiting for a kick) or "aio_poll io" (for an I/O completion); "running" for a
        thread mid-way through kvm.ko or QEMU code, which is not a rebuildable point."""
        out = {}
        for t in self.sched.threads:
            out[t.name] = _position(t, self)
        return out

    def at_rebuildable_point(self) -> bool:
        """Every thread stands where it can be rebuilt from its position and the
        machine's plain state: the points snapshots are taken at (issue 12). Also: the
        VM is not stopping, no bottom half is scheduled, and no vCPU is half-way through
        an emulated instruction (snapshots are never taken with an emulation in flight)."""
        return self.why_not_rebuildable() == ""

    def why_not_rebuildable(self) -> str:
        """"" at a rebuildable point, else what stands in the way, in words."""
        if not hasattr(self.kvm.vm, "vcpus"):
            return "snapshots need the simulated backend (--backend sim)"
        if self.machine.stop_requested:
            return "the VM is stopping"
        if self.main_loop.bottom_halves:
            return "a bottom half is scheduled"
        for c in self.cpus:
            if c.vcpu.emulator is not None or c.vcpu.mmio_fragments:
                return f"{c.thread} is emulating an instruction"
        bad = {n: p for n, p in self.positions().items() if p not in REBUILDABLE}
        if bad:
            return ", ".join(f"{n} is {p}" for n, p in bad.items())
        return ""

    # -- state as plain data (issue 12) ----------------------------------------------------
    def save_state(self, ram: bool = True) -> dict[str, Any]:
        """The whole VM as plain data: RAM, the devices, kvm.ko's VM and vCPUs, the main
        loop, the iothread, the clock, the event stream's counters, and where each thread
        stands. Only at a rebuildable point (Session.advance_to_rebuildable_point).
        ram=False leaves RAM out (the session's history keeps it as page deltas)."""
        why = self.why_not_rebuildable()
        if why:
            raise ValueError(f"not at a rebuildable point: {why}")
        ev = self.machine.events
        return {
            "version": STATE_VERSION,
            "positions": self.positions(),
            "ram": bytes(self.machine.ram) if ram else None,
            "machine": self.machine.state(),
            "main_loop": self.main_loop.state(),
            "iothread": None if self.iothread is None else self.iothread.state(),
            "kvm_vm": self.kvm.vm.state(),
            "vcpus": [c.vcpu.state() for c in self.cpus],
            "cpu_states": [fields_state(c, skip=("index", "thread")) for c in self.cpus],
            "sched": self.sched.state(),
            "events": None if ev is None else {"seq": ev.seq, "time": ev.time,
                                               "thread": ev.thread},
            "idle": [self._idle_from, self._idle_steps],
            "runstate": self.runstate, "pit_state": self.pit_state,
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Make this VM, freshly built with the same configuration and not yet run, the
        one save_state saw: every model's plain state put back, then each simulated thread
        re-created at its position, entering its function there (kvm_vcpu_thread_fn with
        resume=..., main_loop_wait, IOThread.run). Nothing is traced while loading."""
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"VM state version {d.get('version')!r}, this vmsim reads "
                             f"{STATE_VERSION}")
        if any(t.steps for t in self.sched.threads):
            raise ValueError("load_state needs a VM that has not run")
        m = self.machine
        ev = m.events
        saved_listeners = None
        if ev is not None:  # quiet: the ioctls and timers below are no new events
            saved_listeners = ev.mute()
        try:
            if d["ram"] is not None:  # None: the caller puts RAM back itself
                m.load_ram(d["ram"])
            m.load_state(d["machine"])
            if d["iothread"] is not None:
                self.iothread.load_state(d["iothread"], m.virtio_transports[-1])
            self.kvm.vm.load_state(d["kvm_vm"])
            for c, vd, cd in zip(self.cpus, d["vcpus"], d["cpu_states"], strict=True):
                c.vcpu.load_state(vd)
                load_fields(c, cd)
            self.main_loop.load_state(d["main_loop"])
            self.sched.load_state(d["sched"])  # last: the loads above armed timers anew
            self._rebuild_threads(d["positions"], d["sched"])
            self._idle_from, self._idle_steps = d["idle"]
            self.runstate = d.get("runstate", "running")
            self.pit_state = d.get("pit_state")
        finally:
            if saved_listeners is not None:
                ev.unmute(saved_listeners)
        if ev is not None and d["events"] is not None:
            ev.seq, ev.time, ev.thread = (d["events"]["seq"], d["events"]["time"],
                                          d["events"]["thread"])

    def _rebuild_threads(self, positions: dict[str, str], sched: dict[str, Any]) -> None:
        waits = {td["name"]: td["blocked"] for td in sched["threads"]}
        s = self.kvm
        for t in self.sched.threads:
            pos = positions[t.name]
            block = None
            if pos == "done":
                t.body, t.done = _finished(), True
            elif t.name == MAIN_LOOP_THREAD:
                t.body = main_loop_wait(self.main_loop, resume=pos)
                block = ppoll_wait(self.main_loop, waits[t.name]["until"])
            elif t.name == IOTHREAD:
                io = self.iothread
                t.body = io.run(resume=pos)
                block = io.aio_poll_wait() if pos == "aio_poll" else io.aio_poll_io_wait()
            else:
                cpu = next(c for c in self.cpus if c.thread == t.name)
                t.body = kvm_vcpu_thread_fn(s, cpu, resume=pos)
                if pos == "blocked":
                    block = cpu.vcpu.block_wait()
                elif pos == "halted":
                    block = halt_cond_wait(s, cpu)
            saved = waits[t.name]
            if (block is None) != (saved is None) or (
                    block is not None and (block.reason, block.until)
                    != (saved["reason"], saved["until"])):
                raise ValueError(f"{t.name} at {pos}: its wait does not match the saved one")
            t.blocked = block

    def limit_reached(self) -> bool:
        for c in self.cpus:
            if getattr(c.vcpu, "limit_reached", False):
                return True
        return False

    def stuck(self) -> str:
        """Why vmsim's no-progress watchdog stopped a vCPU ("" if it did not)."""
        for c in self.cpus:
            why = getattr(c.vcpu, "stuck", "")
            if why:
                return why
        return ""

    @contextmanager
    def passing(self, stop: Callable[[], object] | None = None,
                deadline: float | None = None) -> Iterator[None]:
        """While the caller steps the VM back to back: a vCPU's next step may pass in place
        (Scheduler.pass_time) while the run goes on (_goes_on), time.perf_counter() is
        before `deadline` and `stop` (the caller's own checks between two steps: why it
        would stop there, None to go on) gives None; each such step ends as a step does
        (_passed). Nothing passes where an
        after_step hook cannot be told of it. Contexts nest (run_for finishing the VM
        with run()): the outer one's rule holds again when the inner one ends."""
        sched = self.sched
        if self.after_step is not None and not self.records_passes:
            yield
            return
        outer = sched.in_place, sched.on_pass
        sched.in_place = _goes_on(self, stop, deadline)
        sched.on_pass = None if self.after_step is None else self._passed
        try:
            yield
        finally:
            sched.in_place, sched.on_pass = outer

    def _passed(self) -> None:
        """A vCPU's step passed in place has ended: what _step and the caller's loop do
        after a vCPU's step that leaves it runnable (installed only with an after_step
        hook)."""
        self._idle_from = self.sched.timers_fired
        self._idle_steps = 0
        self.after_step()

    def budget_ended(self) -> bool:
        """The run's budget is spent: the instruction limit, or no progress (as _goes_on
        asks it)."""
        for c in self.cpus:
            v = c.vcpu
            if getattr(v, "limit_reached", False) or getattr(v, "stuck", ""):
                return True
        return False

    # -- QEMU's stop and cont (vmsim.vmm.cpus) -----------------------------------------------
    def stop(self) -> None:
        """The monitor's `stop`: every vCPU out of KVM_RUN and parked (vm_stop), then its
        state copied out with the KVM_GET_* ioctls (cpu_synchronize_all_states), so that
        what QEMU holds can be shown or saved. A VM already stopped stays so."""
        from vmsim.vmm import cpus

        if self.machine.stop_requested:
            raise ValueError("the VM has shut down: nothing to stop")
        cpus.vm_stop(self)
        cpus.cpu_synchronize_all_states(self)

    def cont(self) -> None:
        """The monitor's `cont`: vm_start. The vCPUs write back their state
        (KVM_SET_*) and enter KVM_RUN again as they run."""
        from vmsim.vmm import cpus

        cpus.vm_start(self)

    @property
    def stopped(self) -> bool:
        return self.runstate != "running"

    def run(self) -> VmResult:
        m = self.machine
        if self.stopped and not m.stop_requested:
            raise ValueError(f"the VM is stopped ({self.runstate}): cont first")
        step = self._step
        with self.passing():
            while not m.stop_requested and not self.budget_ended():
                more = step()  # (self.step(), inline: one call less per scheduler step)
                if self.after_step is not None:
                    self.after_step()
                if not more:
                    break
        if m.stop_requested:
            # Let the threads see the request and end, as QEMU's do on shutdown: the
            # virtual clock stops (vm_stop), the vCPUs are kicked out of KVM_RUN (a vCPU
            # blocked in the kernel wakes for the signal).
            self.sched.timers_stopped = True
            self.main_loop.timers.clear()
            for cpu in self.cpus:
                qemu_cpu_kick(self.kvm, cpu, "shutdown")
            for _ in range(10_000):
                if self.sched.step() is None:
                    break
        limit, stuck = self.limit_reached(), self.stuck()
        halted = not m.stop_requested and not limit and not stuck
        unsupported = next((c.unsupported for c in self.cpus if c.unsupported), "")
        return VmResult(halted, m.stop_reason, m.exit_status, self.sched.now, limit, stuck,
                        unsupported)
