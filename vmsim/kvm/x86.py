"""kvm.ko's x86 run loop and in-kernel emulation of simple exits (LNX arch/x86/kvm/x86.c:
kvm_arch_vcpu_ioctl_run, vcpu_run, vcpu_enter_guest, kvm_fast_pio, kvm_emulate_cpuid,
kvm_emulate_halt, kvm_emulate_hypercall, kvm_emulate_rdmsr/wrmsr, kvm_set_cr0/3/4).

KVM_RUN is a generator here: it yields virtual cycles while the guest runs, so the
simulated vCPU thread can be paused anywhere (DESIGN.md "Simulated threads and time").
"""

from __future__ import annotations

import errno
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from vmsim.clock import NO_PROGRESS_LIMIT, Block, no_progress_message
from vmsim.costs import COSTS, NOMINAL_HZ
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import PAE_UNSUPPORTED, REAL_MODE_UNSUPPORTED
from vmsim.hw.exceptions import CpuException, Unsupported
from vmsim.hw.vmcs import (
    CPU_BASED_INTR_WINDOW_EXITING,
    GUEST_INTR_STATE_MOV_SS,
    GUEST_INTR_STATE_STI,
    INTR_INFO_DELIVER_CODE_MASK,
    INTR_INFO_VALID_MASK,
    INTR_TYPE_EXT_INTR,
    VMX_EXIT_REASONS_FAILED_VMENTRY,
    ExitReason,
)
from vmsim.hw.vmcs import F_INT as F  # (plain ints: see vmsim.hw.vmcs.F_INT)
from vmsim.kvm import irq
from vmsim.kvm.api import (
    KVM_EXIT_FAIL_ENTRY,
    KVM_EXIT_HLT,
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_IN,
    KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_MMIO,
    KVM_EXIT_SHUTDOWN,
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
    KVM_PIO_PAGE_OFFSET,
    PAGE_SIZE,
)
from vmsim.kvm.coalesced_mmio import coalesced_mmio_write
from vmsim.kvm.eventfd import ioeventfd_write
from vmsim.kvm.irq import (
    APIC_BASE,
    APIC_SIZE,
    kvm_cpu_get_interrupt,
    kvm_cpu_has_interrupt,
)
from vmsim.kvm.vmx import (
    KVM_VMX_EXIT_HANDLERS,
    kvm_queue_exception,
    kvm_read_cr0,
    kvm_read_cr4,
    kvm_set_cr3,
    kvm_skip_emulated_instruction,
    vmx_set_cr0,
    vmx_set_cr4,
)

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu

KVM_ENOSYS = 1000
KVM_EOPNOTSUPP = 95
KVM_HC_VAPIC_POLL_IRQ = 1
KVM_HC_KICK_CPU = 5
KVM_HC_SEND_IPI = 10
KVM_HC_SCHED_YIELD = 11
# kvm_lapic pending_events bit numbers (arch/x86/kvm/lapic.h).
KVM_APIC_INIT = 0
KVM_APIC_SIPI = 1
_HYPERCALL_RESULTS = {KVM_HC_VAPIC_POLL_IRQ: 0, KVM_HC_KICK_CPU: 0, KVM_HC_SCHED_YIELD: 0,
                      KVM_HC_SEND_IPI: -KVM_EOPNOTSUPP}


def kvm_arch_vcpu_ioctl_run(v: SimVcpu, resume: str | None = None) -> Generator[Any, None, int]:
    """KVM_RUN. `resume` re-enters a run rebuilt from a snapshot where it stood: "entry"
    or "batch" (in the guest, see vcpu_enter_guest) or "blocked" (in kvm_vcpu_block)."""
    v.in_kvm_run = True
    try:
        return (yield from _ioctl_run(v, resume))
    finally:
        # Back in userspace, the signal is delivered there. One that came while the run
        # was ending with another exit has not been seen: QEMU's handler (kvm_ipi_signal)
        # sets immediate_exit, so the next KVM_RUN completes the exit and returns -EINTR.
        v.in_kvm_run = False
        if v.signal_pending and v.kvm_run.exit_reason != KVM_EXIT_INTR:
            v.kvm_run.immediate_exit = 1
        v.signal_pending = False


def _ioctl_run(v: SimVcpu, resume: str | None = None) -> Generator[Any, None, int]:
    run = v.kvm_run
    if resume is not None:
        r = yield from vcpu_run(v, resume)
        if r == 0:
            _charge(v, 1)
        _post_kvm_run_save(v)
        return r
    if v.complete_userspace_io is not None:
        # Finish what the last exit started (IN data into RAX, an MMIO read ...).
        cui, v.complete_userspace_io = v.complete_userspace_io, None
        _stage(v, "complete_userspace_io", cui.__name__)
        icount = v.cpu.icount
        if v.events is not None:
            trace_read_completed(v, v.events)
        r = cui(v)
        _charge(v, v.cpu.icount - icount)  # what the emulator's replay retired
        if r <= 0:
            if r == 0 and v.events is not None:
                trace_userspace_bound(v, v.events)
            _charge(v, 1)  # this exit to userspace
            _post_kvm_run_save(v)
            return 0
    if run.immediate_exit:
        run.exit_reason = KVM_EXIT_INTR
        v.stat["signal_exits"] += 1
        _post_kvm_run_save(v)
        return -errno.EINTR
    r = yield from vcpu_run(v)
    if r == 0:
        _charge(v, 1)  # an exit to userspace is work too (MMIO: two per instruction)
    _post_kvm_run_save(v)
    return r


def _charge(v: SimVcpu, work: int) -> None:
    """Count work against --max-instructions (vmsim's budget, kept by the vCPU)."""
    if v.instruction_limit is not None:
        v.instruction_limit -= work


def kvm_vcpu_running(v: SimVcpu) -> bool:
    return v.mp_state == "runnable"


def vcpu_run(v: SimVcpu, resume: str | None = None) -> Generator[Any, None, int]:
    run = v.kvm_run
    while True:
        if resume == "blocked":
            r = yield from vcpu_block(v, resume=True)
        elif resume is not None:
            r = yield from vcpu_enter_guest(v, resume)
        elif kvm_vcpu_running(v):
            r = yield from vcpu_enter_guest(v)
        else:
            r = yield from vcpu_block(v)
        resume = None
        if r <= 0:
            return r
        if dm_request_for_irq_injection(v) and kvm_vcpu_ready_for_interrupt_injection(v):
            # Userspace asked for a window (its PIC has an interrupt) and one is open.
            run.exit_reason = KVM_EXIT_IRQ_WINDOW_OPEN
            v.stat["irq_window_exits"] += 1
            return 0
        if v.instruction_limit is not None and v.instruction_limit <= 0:
            # vmsim's budget stops the run between two scheduler steps (the VM's loop),
            # leaving no trace in it: a run cut there and resumed is the uncut run.
            v.limit_reached = True
        if v.stuck or v.signal_pending:
            # xfer_to_guest_mode_handle_work -> kvm_handle_signal_exit: a signal is pending
            # (vmsim's watchdog stops a run the same way, as if signalled).
            run.exit_reason = KVM_EXIT_INTR
            v.stat["signal_exits"] += 1
            return -errno.EINTR


def kvm_vcpu_block_wait(v: SimVcpu):
    """What kvm_vcpu_block sleeps on (rcuwait_wait_event): an event or a signal."""
    return Block("kvm_vcpu_block", lambda: kvm_vcpu_has_events(v) or v.signal_pending)


def vcpu_block(v: SimVcpu, resume: bool = False) -> Generator[Any, None, int]:
    """vcpu_block -> kvm_vcpu_halt -> kvm_vcpu_block: a halted vCPU's thread sleeps until
    an interrupt it can take arrives (or a signal, or an INIT/SIPI), then runs again.
    `resume`: rebuilt from a snapshot, already asleep (its Block is the scheduler's)."""
    ev = v.events
    clock = v.vm.kvm.clock
    if not resume:
        if ev is not None and ev.build("kvm_vcpu_block"):
            ev.emit("kvm_vcpu_block", v.name, vcpu_id=v.vcpu_id)
        v.block_start = clock.now if clock is not None else 0
        v.mode = "blocked"
    start = v.block_start
    try:
        if not resume and not (kvm_vcpu_has_events(v) or v.signal_pending):
            yield kvm_vcpu_block_wait(v)
    finally:
        v.mode = "outside"
    woke = kvm_vcpu_has_events(v)
    if v.lapic is not None:
        kvm_apic_accept_events(v)  # an INIT or SIPI that woke it
    if ev is not None and ev.build("kvm_vcpu_wakeup"):
        now = clock.now if clock is not None else 0
        ev.emit("kvm_vcpu_wakeup", v.name, ns=(now - start) * 1_000_000_000 // NOMINAL_HZ,
                waited=True, valid=woke)
    if woke:
        v.stat["halt_wakeup"] += 1
        if v.mp_state == "halted":
            v.mp_state = "runnable"
    return 1


def kvm_vcpu_has_events(v: SimVcpu) -> bool:
    """kvm_vcpu_has_events: what ends kvm_vcpu_block (an interrupt the guest can take now,
    an event being re-injected, a pending INIT)."""
    if v.lapic is not None and v.lapic.pending_events:
        return True
    if v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) & INTR_INFO_VALID_MASK:
        return True
    return vmx_interrupt_allowed(v) and kvm_cpu_has_interrupt(v)


def dm_request_for_irq_injection(v: SimVcpu) -> bool:
    return bool(v.kvm_run.request_interrupt_window) and v.vm.irqchip is None


def kvm_vcpu_ready_for_interrupt_injection(v: SimVcpu) -> bool:
    return (vmx_interrupt_allowed(v) and not kvm_cpu_has_interrupt(v)
            and not v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) & INTR_INFO_VALID_MASK)


def vmx_interrupt_allowed(v: SimVcpu) -> bool:
    """vmx_interrupt_blocked, negated: RFLAGS.IF set and no STI / MOV SS shadow."""
    return bool(v.vmcs.read(F.GUEST_RFLAGS) & 0x200) and not (
        v.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & (GUEST_INTR_STATE_STI
                                                      | GUEST_INTR_STATE_MOV_SS))


def inject_pending_event(v: SimVcpu) -> None:
    """inject_pending_event: an event already queued (an exception, a re-injected
    interrupt) goes first; otherwise the highest pending interrupt is injected if the guest
    can take it now, and if not (or if more wait), interrupt-window exiting is turned on."""
    if not kvm_cpu_has_interrupt(v):
        return
    if v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) & INTR_INFO_VALID_MASK:
        enable_irq_window(v)
        return
    if vmx_interrupt_allowed(v):
        vector = kvm_cpu_get_interrupt(v)
        if vector >= 0:
            vmx_inject_irq(v, vector)
        if kvm_cpu_has_interrupt(v):
            enable_irq_window(v)
    else:
        enable_irq_window(v)


def vmx_inject_irq(v: SimVcpu, vector: int) -> None:
    """vmx_inject_irq: an external interrupt in the VM-entry interruption information."""
    v.stat["irq_injections"] += 1
    v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, vector | INTR_TYPE_EXT_INTR | INTR_INFO_VALID_MASK)


def enable_irq_window(v: SimVcpu) -> None:
    """vmx_enable_irq_window: exit as soon as the guest can take an interrupt (reason 7)."""
    ctl = v.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
    if ctl & CPU_BASED_INTR_WINDOW_EXITING:
        return
    v.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, ctl | CPU_BASED_INTR_WINDOW_EXITING)
    ev = v.events
    if ev is not None and ev.build("kvm_irq_window"):
        ev.emit("kvm_irq_window", v.name, vcpu_id=v.vcpu_id, enable=True)


def handle_interrupt_window(v: SimVcpu) -> int:
    """handle_interrupt_window (exit reason 7): the guest can take an interrupt now."""
    ctl = v.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
    v.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, ctl & ~CPU_BASED_INTR_WINDOW_EXITING)
    ev = v.events
    if ev is not None and ev.build("kvm_irq_window"):
        ev.emit("kvm_irq_window", v.name, vcpu_id=v.vcpu_id, enable=False)
    v.requests.add("event")
    if v.vm.irqchip is None and v.kvm_run.request_interrupt_window and not kvm_cpu_has_interrupt(v):
        v.kvm_run.exit_reason = KVM_EXIT_IRQ_WINDOW_OPEN
        v.stat["irq_window_exits"] += 1
        return 0
    return 1


def handle_external_interrupt(v: SimVcpu) -> int:
    """handle_external_interrupt (reason 1): the host took its interrupt (vmsim: the kick
    IPI, a host timer tick); nothing for kvm.ko to do but go round again."""
    v.stat["irq_exits"] += 1
    return 1


def kvm_apic_accept_events(v: SimVcpu) -> None:
    """kvm_apic_accept_events: an INIT puts the vCPU in wait-for-SIPI; a SIPI would start
    it in real mode at vector << 12, which vmsim's CPU does not run."""
    lapic = v.lapic
    pe = lapic.pending_events
    if not pe:
        return
    if pe & (1 << KVM_APIC_INIT):
        lapic.pending_events &= ~(1 << KVM_APIC_INIT)
        lapic.reset(init_event=True)  # kvm_vcpu_reset(vcpu, true) resets the APIC
        v.mp_state = "init_received"  # KVM_MP_STATE_INIT_RECEIVED: wait for SIPI
    if pe & (1 << KVM_APIC_SIPI) and v.mp_state == "init_received":
        lapic.pending_events &= ~(1 << KVM_APIC_SIPI)
        vector = getattr(lapic, "sipi_vector", 0)
        raise Unsupported(f"SIPI to vcpu{v.vcpu_id}: it would start in real mode at "
                          f"{vector << 12:#x}; vmsim's CPU runs 32-bit protected mode only")


def _prepare_entry(v: SimVcpu) -> int | None:
    """vcpu_enter_guest up to VM entry: requests, event injection, the last signal check,
    VMLAUNCH/VMRESUME. A return value ends vcpu_enter_guest with it; None: entered."""
    run, vmx = v.kvm_run, v.vmx
    ev = v.events
    if "triple_fault" in v.requests:  # KVM_REQ_TRIPLE_FAULT
        v.requests.discard("triple_fault")
        run.exit_reason = KVM_EXIT_SHUTDOWN
        return 0
    if v.lapic is not None:
        kvm_apic_accept_events(v)
        if not kvm_vcpu_running(v):
            return 1
    v.requests.discard("event")  # KVM_REQ_EVENT: look at what is pending now
    if v.lapic is not None or v.pending_external_vector != -1 or v.vm.irqchip is not None:
        inject_pending_event(v)
    if dm_request_for_irq_injection(v):
        enable_irq_window(v)  # req_int_win
    # The last check before entry (kvm_vcpu_exit_request): a pending signal, a request
    # made meanwhile. The injected event stays queued for the next entry.
    if ev is not None and ev.build("kvm_signal_check"):
        ev.tp["kvm_signal_check"].fire(v.name, v.vcpu_id, v.signal_pending, sorted(v.requests))
    if v.signal_pending:
        return 1
    launch = not v.vmcs.launched
    if ev is not None:
        trace_inj(v, ev)
        if ev.build("kvm_entry"):
            ev.tp["kvm_entry"].fire(v.name, v.vcpu_id, v.vmcs.read(F.GUEST_RIP), launch)
    if not vmx.vm_entry(v.vmcs, launch):
        # VMfailValid (a bad control field, a VMCS in the wrong launch state): the
        # VM-instruction error; invalid guest state: the exit reason with bit 31 set.
        reason = v.vmcs.read(F.VM_INSTRUCTION_ERROR if vmx.entry_fail_valid
                             else F.VM_EXIT_REASON)
        v.fail_entry_detail = vmx.entry_failure
        if ev is not None and ev.build("vmentry_failed"):
            ev.emit("vmentry_failed", v.name, reason=reason, check=vmx.entry_failure)
        run.set_fail_entry(reason, v.vcpu_id)
        run.exit_reason = KVM_EXIT_FAIL_ENTRY
        return 0
    clock = v.vm.kvm.clock
    if clock is not None and clock.now >= v.next_host_tick:
        # Ticks that came while the vCPU was out of the guest (blocked, in userspace, in
        # an exit handler) were the host's alone: no VM exit for them.
        _host_tick(v, clock.now, in_guest=False)
    v.mode = "in_guest"  # entered: from here a kick is an IPI the guest exits for
    return None


def vcpu_enter_guest(v: SimVcpu, resume: str | None = None) -> Generator[int, None, int]:
    """One VM entry, the guest's run in batches, the VM exit and its handler. `resume`
    ("entry": right after the entry, "batch": between two batches, SimVcpu.run_point)
    continues a run rebuilt from a snapshot inside the batch loop."""
    vmx, cpu = v.vmx, v.cpu
    ev = v.events
    mmu = cpu.mmu
    clock = v.vm.kvm.clock
    # Cycles pass in place where the scheduler would resume this thread at once
    # (Scheduler.pass_time); not asked at all where nobody lets it (VirtualMachine.passing:
    # stepping one step at a time).
    passing = clock is not None and clock.in_place is not None
    if resume is None:
        r = _prepare_entry(v)
        if r is not None:
            return r
    try:
        if resume is None:
            v.run_point = "entry"
            if not (passing and clock.pass_time(COSTS["vmentry"])):
                yield COSTS["vmentry"]
        elif resume == "batch" and clock is not None and v.batch_left <= 0 \
                and clock.now >= v.next_host_tick:
            _host_tick(v, clock.now)
        while True:
            if v.host_irq is not None:
                # An interrupt for the host (the kick IPI, its timer tick): the guest exits,
                # after the one instruction of an STI / MOV SS shadow (which may exit for
                # its own reason first; the interrupt then stays pending).
                before = cpu.icount
                exit_info = vmx.external_interrupt_exit(v.host_irq)
                if exit_info.basic_reason == ExitReason.EXTERNAL_INTERRUPT:
                    v.host_irq = None
                ran = cpu.icount - before
                _charge(v, ran)
                v.run_point = "exit"
                yield ran * COSTS["guest_instruction"]
                break
            if v.batch_left <= 0:
                # A batch ends at the horizon (or after BATCH_MAX); the session's BATCH
                # (1 to single-step, 4000 in a GUI) only cuts it into sub-batches that
                # resume at once (Scheduler.sticky), so that how a run is stepped never
                # changes what it does.
                v.batch_left = (BATCH_MAX if clock is None
                                else _until_horizon(v, clock, BATCH_MAX))
            budget = min(_budget(v), v.batch_left)
            before, delivered = cpu.icount, cpu.deliveries
            refs = mmu.refs + (mmu.ept.refs if mmu.ept is not None else 0)
            exit_info = vmx.run(budget)
            ran = cpu.icount - before
            faults = cpu.deliveries - delivered
            # What the hardware's page walks cost (two-dimensional under EPT).
            walked = mmu.refs + (mmu.ept.refs if mmu.ept is not None else 0) - refs
            if v.instruction_limit is not None:
                # The budget counts work, not only retired instructions: an exception
                # delivered (a handler may fault at once and retire nothing) and an
                # instruction that exits (kvm.ko completes it, or it is retried) count too.
                v.instruction_limit -= ran + faults + (1 if exit_info is not None else 0)
                if v.instruction_limit <= 0 and exit_info is None:
                    v.limit_reached = True
            stuck = kvm_watch_progress(v, 0, faults)
            if exit_info is None and stuck:
                exit_info = vmx.vm_exit(None)  # the kick: an external interrupt exits
            # The instruction limit exits nothing: the run ends between two sub-batches,
            # where a snapshot taken there resumes as if it had never stopped.
            if exit_info is not None or ran + faults < budget:
                v.batch_left = 0  # an exit, or the CPU stopped early (HLT): batch over
            else:
                v.batch_left -= ran + faults
            # Yield after every sub-batch, even one that retired nothing, so that the session
            # (a GUI's pause, run_for) gets control back. Where it stands is plain data
            # (run_point, batch_left), so that a snapshot can rebuild the loop here.
            v.run_point = "batch" if exit_info is None else "exit"
            if v.batch_left > 0 and clock is not None:
                clock.sticky = clock.current
            cycles = ran * COSTS["guest_instruction"] + walked * COSTS["walk_ref"]
            if not (passing and clock.pass_time(cycles)):
                yield cycles
            if exit_info is not None:
                break
            if v.batch_left <= 0 and clock is not None and clock.now >= v.next_host_tick:
                _host_tick(v, clock.now)
    finally:
        v.mode = "outside"
    v.stat["exits"] += 1
    if ev is not None and ev.build("kvm_exit"):
        name = exit_info.name
        # vmx_get_exit_info: info1 the exit qualification, info2 the IDT-vectoring
        # information, the error code only for an exception that delivers one.
        intr_info = exit_info.intr_info
        ev.tp["kvm_exit"].fire(
            v.name, v.vcpu_id, name, exit_info.basic_reason, v.vmcs.read(F.GUEST_RIP), "VMX",
            exit_info.qualification, v.vmcs.read(F.IDT_VECTORING_INFO_FIELD), intr_info,
            (v.vmcs.read(F.VM_EXIT_INTR_ERROR_CODE)
             if intr_info & INTR_INFO_VALID_MASK and intr_info & INTR_INFO_DELIVER_CODE_MASK
             else 0),
            exit_info.instruction_len, exit_info.guest_linear_address,
            exit_info.guest_physical_address)
    if not (passing and clock.pass_time(COSTS["vmexit"])):
        yield COSTS["vmexit"]
    vmx_complete_interrupts(v)
    v.handler_cost = 0
    rip, icount = v.vmcs.read(F.GUEST_RIP), cpu.icount
    r = vmx_handle_exit(v)
    if r == 0 and ev is not None:
        trace_userspace_bound(v, ev)
    _charge(v, cpu.icount - icount)  # instructions the emulator completed
    # An exit whose handler moved RIP completed an instruction (CPUID, OUT, an emulated
    # MMIO access ...): progress. One that resumes at the same RIP may loop. An external
    # interrupt or an interrupt window is the host's or kvm.ko's doing: neither a guest
    # loop nor progress (the host's tick must not hide a loop of exits from the watchdog).
    if v.vmcs.read(F.GUEST_RIP) != rip:
        kvm_watch_progress(v, 0, 0, progress=True)
    elif exit_info.basic_reason not in _NOT_GUEST_LOOPS:
        kvm_watch_progress(v, 1, 0)
    cost = COSTS["exit_handler"] + v.handler_cost
    if not (passing and clock.pass_time(cost)):
        yield cost
    return r


_NOT_GUEST_LOOPS = (ExitReason.EXTERNAL_INTERRUPT, ExitReason.INTERRUPT_WINDOW)


def _until_horizon(v: SimVcpu, clock, budget: int) -> int:
    """Guest instructions until something else is due (a timer, another thread, the host's
    tick): a batch never runs past it, so interrupts come on time and runs are exact."""
    now = clock.now
    if now >= v.next_host_tick:
        _host_tick(v, now)
    limit = v.next_host_tick
    h = clock.horizon(clock.current)
    if h is not None and h < limit:
        limit = h
    per = COSTS["guest_instruction"]
    return max(1, min(budget, (limit - now) // per))


def _host_tick(v: SimVcpu, now: int, in_guest: bool = True) -> None:
    """The host's timer interrupt on the vCPU's physical CPU (HOST_HZ): while the guest
    runs, it is a VM exit (reason 1, LOCAL_TIMER_VECTOR)."""
    if in_guest and v.next_host_tick and v.host_irq is None:
        v.host_irq = irq.LOCAL_TIMER_VECTOR
    tick = irq.HOST_TICK  # (read here, not bound at import: a test may change the host's HZ)
    v.next_host_tick = (now // tick + 1) * tick


def kvm_watch_progress(v: SimVcpu, exits: int, deliveries: int, progress: bool = False) -> bool:
    """vmsim's no-progress watchdog (vmsim.clock.NO_PROGRESS_LIMIT): count VM exits and
    exception deliveries since the guest last retired an instruction; True (and
    `v.stuck` says why) once there were too many."""
    cpu = v.cpu
    # Progress: an instruction retired, or a REP string instruction moved on (ECX changed:
    # one that sweeps a large buffer takes an exit per new page before it retires).
    mark = (cpu.icount, cpu.r[1])
    if progress or mark != v.progress_mark:
        v.progress_mark = mark
        v.idle_exits = v.idle_deliveries = 0
    v.idle_exits += exits
    v.idle_deliveries += deliveries
    if not v.stuck and v.idle_exits + v.idle_deliveries >= NO_PROGRESS_LIMIT:
        v.stuck = no_progress_message(v.idle_exits, v.idle_deliveries, cpu.eip)
    return bool(v.stuck)


BATCH_MAX = 20_000  # guest instructions in a batch at most (it also ends at the horizon)


def _budget(v: SimVcpu) -> int:
    """Guest instructions until the next yield (and no further than the instruction limit)."""
    if v.instruction_limit is None:
        return v.BATCH
    return max(0, min(v.BATCH, v.instruction_limit))


def vmx_complete_interrupts(v: SimVcpu) -> None:
    """__vmx_complete_interrupts: an event whose delivery the exit interrupted is queued
    again, so the next VM entry injects it (IDT-vectoring info -> VM-entry fields)."""
    info = v.vmcs.read(F.IDT_VECTORING_INFO_FIELD)
    if not info & INTR_INFO_VALID_MASK:
        return
    v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info & ~0x1000)  # bit 12 is exit-only
    v.reinjected = info & ~0x1000
    if info & INTR_INFO_DELIVER_CODE_MASK:
        v.vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, v.vmcs.read(F.IDT_VECTORING_ERROR_CODE))
    v.vmcs.write(F.VM_ENTRY_INSTRUCTION_LEN, v.vmcs.read(F.VM_EXIT_INSTRUCTION_LEN))


def vmx_handle_exit(v: SimVcpu) -> int:
    reason = v.vmcs.read(F.VM_EXIT_REASON)
    basic = reason & 0xFFFF
    handler = KVM_VMX_EXIT_HANDLERS.get(basic)
    if reason & VMX_EXIT_REASONS_FAILED_VMENTRY or handler is None:
        # An exit reason kvm-intel has no handler for (LNX __vmx_handle_exit).
        v.kvm_run.set_internal(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, [reason])
        v.kvm_run.exit_reason = KVM_EXIT_INTERNAL_ERROR
        return 0
    r = handler(v)
    _stage(v, handler.__name__, "resume" if r > 0 else "to userspace")
    return r


def _stage(v: SimVcpu, name: str, outcome: str) -> None:
    ev = v.events
    if ev is not None and ev.build("kvm_handler"):
        ev.tp["kvm_handler"].fire(v.name, name, outcome)


def _post_kvm_run_save(v: SimVcpu) -> None:
    """post_kvm_run_save: if_flag, and whether KVM_INTERRUPT could inject now (always 1
    with the PIC in the kernel)."""
    if_flag = 1 if v.vmcs.read(F.GUEST_RFLAGS) & 0x200 else 0
    ready = 1 if v.vm.irqchip is not None else int(kvm_vcpu_ready_for_interrupt_injection(v))
    v.kvm_run.set_flags_out(ready, if_flag)


# -- port I/O that needs no emulator (LNX kvm_fast_pio) ----------------------------------------

def kernel_pio_read(v: SimVcpu, port: int, size: int) -> int | None:
    """kernel_pio: an in-kernel device on KVM_PIO_BUS answers (PIC, ELCR, PIT), or None."""
    chip = v.vm.irqchip
    if chip is None:
        return None
    value = chip.pio.read(port, size)
    if value is not None:
        _trace_kernel_pio(v, 0, port, size, value)
    return value


def kernel_pio_write(v: SimVcpu, port: int, size: int, value: int) -> bool:
    chip = v.vm.irqchip
    if chip is None or not chip.pio.write(port, size, value):
        return False
    _trace_kernel_pio(v, 1, port, size, value)
    return True


def _trace_kernel_pio(v: SimVcpu, rw: int, port: int, size: int, value: int) -> None:
    ev = v.events
    if ev is not None and ev.build("kvm_pio"):
        ev.tp["kvm_pio"].fire(v.name, rw, port, size, 1, value)


def kernel_mmio_read(v: SimVcpu, gpa: int, size: int) -> int | None:
    """vcpu_mmio_read: this vCPU's local APIC page is served in the kernel."""
    if v.lapic is None or not APIC_BASE <= gpa < APIC_BASE + APIC_SIZE:
        return None
    value = v.lapic.read(gpa - APIC_BASE, size)
    ev = v.events
    if ev is not None and ev.build("kvm_mmio"):
        ev.tp["kvm_mmio"].fire(v.name, "read", size, gpa, value)
    return value


def kernel_mmio_write(v: SimVcpu, gpa: int, size: int, value: int) -> bool:
    vm = v.vm
    # write_mmio -> vcpu_mmio_write -> kvm_io_bus_write(KVM_MMIO_BUS): an ioeventfd, or a
    # coalesced-MMIO zone with room in its ring, takes the write, which is then complete.
    if (vm.ioeventfds and ioeventfd_write(vm, gpa, size, value, source=v.name)) or \
            (vm.coalesced_zones and coalesced_mmio_write(vm, gpa, size, value, v.name)):
        ev = v.events
        if ev is not None and ev.build("kvm_mmio"):
            ev.tp["kvm_mmio"].fire(v.name, "write", size, gpa, value)
        return True
    if v.lapic is None or not APIC_BASE <= gpa < APIC_BASE + APIC_SIZE:
        return False
    ev = v.events
    if ev is not None and ev.build("kvm_mmio"):
        ev.tp["kvm_mmio"].fire(v.name, "write", size, gpa, value)
    v.lapic.write(gpa - APIC_BASE, size, value)
    return True


def kvm_fast_pio(v: SimVcpu, size: int, port: int, is_in: bool) -> int:
    run = v.kvm_run
    if is_in:
        value = kernel_pio_read(v, port, size)
        if value is not None:
            mask = (1 << (8 * size)) - 1
            v.cpu.r[0] = (v.cpu.r[0] & ~mask & 0xFFFFFFFF) | (value & mask)
            return kvm_skip_emulated_instruction(v)
    elif kernel_pio_write(v, port, size, v.cpu.r[0] & ((1 << (8 * size)) - 1)):
        return kvm_skip_emulated_instruction(v)
    data_at = KVM_PIO_PAGE_OFFSET * PAGE_SIZE
    if is_in:
        run.set_io(KVM_EXIT_IO_IN, size, port, 1)
        run.exit_reason = KVM_EXIT_IO
        v.complete_userspace_io = complete_fast_pio_in
        return 0
    value = v.cpu.r[0] & ((1 << (8 * size)) - 1)
    run.buf[data_at:data_at + size] = value.to_bytes(size, "little")
    run.set_io(KVM_EXIT_IO_OUT, size, port, 1)
    run.exit_reason = KVM_EXIT_IO
    kvm_skip_emulated_instruction(v)  # OUT is complete once userspace has the data
    return 0


def complete_fast_pio_in(v: SimVcpu) -> int:
    run = v.kvm_run
    _, size, _, _, offset = run.io()
    value = int.from_bytes(run.buf[offset:offset + size], "little")
    mask = (1 << (8 * size)) - 1
    v.cpu.r[0] = (v.cpu.r[0] & ~mask & 0xFFFFFFFF) | value
    return kvm_skip_emulated_instruction(v)


# -- CPUID, HLT, VMCALL, MSRs, control registers ---------------------------------------------------

def kvm_cpuid(v: SimVcpu, function: int, index: int) -> tuple[int, int, int, int]:
    """The table userspace set with KVM_SET_CPUID2. A basic leaf past the highest one
    answers with the highest basic leaf, as Intel CPUs do (get_out_of_range_cpuid_entry)."""
    t = v.cpuid_entries
    for key in ((function, index), (function, 0)):
        if key in t:
            return t[key]
    top = t.get((0, 0), (0, 0, 0, 0))[0]
    if function < 0x40000000 and function > top:
        return t.get((top, 0), (0, 0, 0, 0))
    return (0, 0, 0, 0)


def kvm_emulate_cpuid(v: SimVcpu) -> int:
    r = v.cpu.r
    function, index = r[0], r[1]
    a, b, c, d = kvm_cpuid(v, function, index)
    ev = v.events
    if ev is not None and ev.build("kvm_cpuid"):
        t = v.cpuid_entries
        found = (function, index) in t or (function, 0) in t
        top = t.get((0, 0), (0, 0, 0, 0))[0]
        ev.emit("kvm_cpuid", v.name, function=function, index=index, rax=a, rbx=b, rcx=c,
                rdx=d, found=found,
                used_max_basic=not found and function < 0x40000000 and function > top)
    r[0], r[3], r[1], r[2] = a, b, c, d
    return kvm_skip_emulated_instruction(v)


def kvm_emulate_halt(v: SimVcpu) -> int:
    """__kvm_emulate_halt: with the local APIC in the kernel, the vCPU halts there
    (vcpu_run blocks it until an interrupt); without one, userspace decides what a halted
    vCPU does (KVM_EXIT_HLT)."""
    v.stat["halt_exits"] += 1
    kvm_skip_emulated_instruction(v)
    if v.lapic is not None:
        v.mp_state = "halted"
        return 1
    v.kvm_run.exit_reason = KVM_EXIT_HLT
    return 0


def kvm_emulate_hypercall(v: SimVcpu) -> int:
    """KVM's hypercall ABI: nr in EAX, arguments in EBX ECX EDX ESI, result in EAX.

    As LNX __kvm_emulate_hypercall answers a CPL-0 guest with no in-kernel APIC:
    KVM_HC_VAPIC_POLL_IRQ 0; KVM_HC_KICK_CPU and KVM_HC_SCHED_YIELD 0 (guest_pv_has() is
    true while userspace has not enabled KVM_CAP_ENFORCE_PV_FEATURE_CPUID, and with no
    APIC map there is nobody to kick or yield to); KVM_HC_SEND_IPI -KVM_EOPNOTSUPP
    (kvm_pv_send_ipi finds no APIC map); every other number -KVM_ENOSYS.
    """
    r = v.cpu.r
    nr = r[0]
    ret = _HYPERCALL_RESULTS.get(nr, -KVM_ENOSYS)
    ev = v.events
    if ev is not None and ev.build("kvm_hypercall"):
        ev.emit("kvm_hypercall", v.name, nr=nr, a0=r[3], a1=r[1], a2=r[2], a3=r[6], ret=ret)
    r[0] = ret & 0xFFFFFFFF  # a 32-bit guest sees the low half
    return kvm_skip_emulated_instruction(v)


def kvm_emulate_rdmsr(v: SimVcpu) -> int:
    r = v.cpu.r
    try:
        value = v.cpu.read_msr(r[1])
    except CpuException:
        _trace_msr(v, 0, r[1], 0, True)  # trace_kvm_msr_read_ex
        kvm_queue_exception(v, X.GP, 0)
        return 1
    _trace_msr(v, 0, r[1], value, False)
    r[0], r[2] = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
    return kvm_skip_emulated_instruction(v)


def kvm_emulate_wrmsr(v: SimVcpu) -> int:
    r = v.cpu.r
    data = (r[2] << 32) | r[0]
    try:
        v.cpu.write_msr(r[1], data)
    except CpuException:
        _trace_msr(v, 1, r[1], data, True)
        kvm_queue_exception(v, X.GP, 0)
        return 1
    _trace_msr(v, 1, r[1], data, False)
    return kvm_skip_emulated_instruction(v)


def _trace_msr(v: SimVcpu, write: int, ecx: int, data: int, exception: bool) -> None:
    ev = v.events
    if ev is not None and ev.build("kvm_msr"):
        ev.emit("kvm_msr", v.name, write=write, ecx=ecx, data=data, exception=exception)


CR0_RESERVED = ~0xE005003F & 0xFFFFFFFF
CR4_RESERVED = ~0x7FF & 0xFFFFFFFF


def kvm_set_cr(v: SimVcpu, cr: int, value: int) -> int:
    """1 when the write is invalid (the caller injects #GP).

    A write that enters a mode vmsim's CPU does not model (real mode, PAE paging) stops
    the run here, before it takes effect, with the message the bare CPU gives at the same
    instruction (raised out of KVM_RUN; the VMM reports it): every backend agrees."""
    if cr == 0:
        if (value & 0x80000000 and not value & 1) or (
                value & 0x20000000 and not value & 0x40000000):
            return 1  # kvm_is_valid_cr0: PG without PE, NW without CD
        # "Write to CR0 reserved bits are ignored, even on Intel", and ET reads as 1.
        value = (value | 0x10) & ~CR0_RESERVED
        if not value & 1:
            raise Unsupported(REAL_MODE_UNSUPPORTED)
        if value & 0x80000000 and kvm_read_cr4(v) & 0x20:
            raise Unsupported(PAE_UNSUPPORTED)
        vmx_set_cr0(v, value)
        return 0
    if cr == 3:
        kvm_set_cr3(v, value)
        return 0
    if cr == 4:
        if value & CR4_RESERVED:
            return 1
        if value & 0x20 and kvm_read_cr0(v) & 0x80000000:
            raise Unsupported(PAE_UNSUPPORTED)
        vmx_set_cr4(v, value)
        return 0
    return 1


def kvm_lmsw(v: SimVcpu, msw: int) -> None:
    """LMSW: PE, MP, EM and TS from `msw`, PE never cleared (kvm_set_cr0's checks apply;
    LMSW cannot make a CR0 they refuse)."""
    kvm_set_cr(v, 0, (kvm_read_cr0(v) & ~0xE) | (msw & 0xF))


def kvm_get_cr(v: SimVcpu, cr: int) -> int:
    if cr == 0:
        return kvm_read_cr0(v)
    if cr == 2:
        return v.cpu.cr2
    if cr == 3:
        return v.guest_cr3
    return kvm_read_cr4(v)


KVM_VMX_EXIT_HANDLERS[ExitReason.EXTERNAL_INTERRUPT] = handle_external_interrupt
KVM_VMX_EXIT_HANDLERS[ExitReason.INTERRUPT_WINDOW] = handle_interrupt_window


# -- tracepoints kvm.ko fires around an exit to userspace --------------------------------------

def trace_inj(v: SimVcpu, ev) -> None:
    """trace_kvm_inj_exception / trace_kvm_inj_virq (inject_pending_event): the event the
    coming VM entry injects, unless it is one re-injected because an exit interrupted its
    delivery (vmx_complete_interrupts), which Linux re-injects without the tracepoint."""
    info = v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
    reinjected, v.reinjected = v.reinjected, 0
    if not info & INTR_INFO_VALID_MASK:
        return
    vector, kind = info & 0xFF, (info >> 8) & 7
    if info == reinjected and kind != 0:
        return
    if kind in (0, 4):  # external interrupt, software interrupt (INT n)
        if ev.build("kvm_inj_virq"):
            # vmx_inject_irq(vcpu, reinjected): an interrupt whose delivery an exit cut
            # short goes in again, traced as such.
            ev.emit("kvm_inj_virq", v.name, irq=vector, soft=kind == 4,
                    reinjected=info == reinjected)
    elif ev.build("kvm_inj_exception"):
        has_error = bool(info & INTR_INFO_DELIVER_CODE_MASK)
        ev.emit("kvm_inj_exception", v.name, exception=vector, name=X.name(vector),
                has_error=has_error,
                error_code=v.vmcs.read(F.VM_ENTRY_EXCEPTION_ERROR_CODE) if has_error else 0,
                type=kind)


def trace_userspace_bound(v: SimVcpu, ev) -> None:
    """What kvm.ko traces as it hands an access to userspace: an OUT's data (emulator_pio_out:
    trace_kvm_pio), an MMIO write (write_mmio) or a read it cannot satisfy (vcpu_mmio_read:
    KVM_TRACE_MMIO_READ_UNSATISFIED). An IN and an MMIO read are traced when userspace has
    answered (trace_read_completed)."""
    run = v.kvm_run
    if run.exit_reason == KVM_EXIT_IO:
        direction, size, port, count, offset = run.io()
        if direction == KVM_EXIT_IO_OUT and ev.build("kvm_pio"):
            ev.tp["kvm_pio"].fire(v.name, 1, port, size, count,
                                  int.from_bytes(run.buf[offset:offset + size], "little"))
    elif run.exit_reason == KVM_EXIT_MMIO and ev.build("kvm_mmio"):
        addr, data, length, is_write = run.mmio()
        ev.tp["kvm_mmio"].fire(v.name, "write" if is_write else "unsatisfied-read", length,
                               addr, int.from_bytes(data[:length], "little") if is_write else 0)


def trace_read_completed(v: SimVcpu, ev) -> None:
    """complete_emulator_pio_in / complete_fast_pio_in and the MMIO read's completion:
    the value userspace answered, as the next KVM_RUN takes it."""
    run = v.kvm_run
    if run.exit_reason == KVM_EXIT_IO:
        direction, size, port, count, offset = run.io()
        if direction == KVM_EXIT_IO_IN and ev.build("kvm_pio"):
            ev.tp["kvm_pio"].fire(v.name, 0, port, size, count,
                                  int.from_bytes(run.buf[offset:offset + size], "little"))
    elif run.exit_reason == KVM_EXIT_MMIO:
        addr, data, length, is_write = run.mmio()
        if not is_write and ev.build("kvm_mmio"):
            ev.tp["kvm_mmio"].fire(v.name, "read", length, addr,
                                   int.from_bytes(data[:length], "little"))
