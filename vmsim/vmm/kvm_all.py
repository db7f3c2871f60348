"""QEMU's KVM accelerator (accel/kvm/kvm-all.c): the VM, its vCPUs and `kvm_cpu_exec`.

Everything here talks to KVM only through the KVM API protocol (vmsim.kvm.api), so the
same code runs on the simulated kvm.ko and on the host's /dev/kvm.
"""

from __future__ import annotations

import errno
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmsim.clock import Block
from vmsim.costs import COSTS
from vmsim.hw.exceptions import Unsupported
from vmsim.hw.memory import PhysicalMemory
from vmsim.kvm.api import (
    KVM_CAP_COALESCED_MMIO,
    KVM_EXIT_FAIL_ENTRY,
    KVM_EXIT_HLT,
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_MMIO,
    KVM_EXIT_NAMES,
    KVM_EXIT_SHUTDOWN,
    KVM_EXIT_SYSTEM_EVENT,
    KVM_IOCTLS,
    KVM_MP_STATE_RUNNABLE,
    CoalescedMmioRing,
    Kvm,
    KvmRegs,
    KvmSegment,
    KvmVcpu,
)

if TYPE_CHECKING:
    from vmsim.vmm.machine import Machine

# Results of kvm_cpu_exec (QEMU's EXCP_* values for the cases it returns).
EXCP_INTERRUPT = 0x10000
EXCP_HLT = 0x10001
CPU_INTERRUPT_HARD = 0x0002  # include/exec/cpu-all.h: an external interrupt is pending
EXCP_SHUTDOWN = -2  # vmsim: the VM is to stop (triple fault, internal error, failed entry)

COST_IOCTL = COSTS["ioctl"]
COST_DEVICE_ACCESS = COSTS["device_access"]


@dataclass(slots=True)  # (vmsim.state.fields_state)
class CPUState:
    """QEMU's CPUState for one vCPU, as far as the KVM accelerator needs it."""

    index: int
    vcpu: KvmVcpu
    thread: str
    halted: bool = False
    stop: bool = False
    exit_request: bool = False
    vcpu_dirty: bool = False
    last_exit: str = ""
    unsupported: str = ""  # why the simulated vCPU stopped on guest behaviour vmsim lacks
    interrupt_request: int = 0  # CPU_INTERRUPT_* bits (userspace irqchip)
    eflags_if: bool = False  # env->eflags & IF_MASK, as kvm_arch_post_run last saw it
    thread_kicked: bool = False
    host_halted: bool = False  # the host's kvm.ko holds the vCPU halted (see _explain_stop)
    stopped: bool = False  # parked by pause_all_vcpus (cpu->stopped; `stop` asks for it)
    env: Any = None  # QEMU's CPUX86State: the KVM_GET_* copies (vmsim.vmm.kvm_x86)


class KvmState:
    """The accelerator: one VM on one KVM (QEMU's KVMState)."""

    def __init__(self, kvm: Kvm, machine: Machine):
        self.kvm = kvm
        self.machine = machine
        self.events = machine.events
        self.sched: Any = None  # the simulation's scheduler (VirtualMachine sets it)
        self.ioctl("KVM_GET_API_VERSION", kvm.get_api_version, fd="system")
        # The size of the vCPU mapping: kvm_run, the PIO data page, the coalesced-MMIO ring.
        self.vcpu_mmap_size = self.ioctl("KVM_GET_VCPU_MMAP_SIZE", kvm.get_vcpu_mmap_size,
                                          fd="system")
        self.vm = self.ioctl("KVM_CREATE_VM", kvm.create_vm, fd="system")
        if hasattr(self.vm, "set_tss_addr"):
            self.ioctl("KVM_SET_TSS_ADDR", self.vm.set_tss_addr)
        # kvm_irqchip_create (kernel-irqchip=on): the PIC pair, IOAPIC and APICs in kvm.ko,
        # then the in-kernel PIT (kvm_pit_init); both before any vCPU exists.
        self.irqchip_in_kernel = machine.config.irqchip == "kernel"
        if self.irqchip_in_kernel:
            self.ioctl("KVM_CREATE_IRQCHIP", self.vm.create_irqchip)
            self.ioctl("KVM_CREATE_PIT2", self.vm.create_pit2, 0)
            # kvm_pc_gsi_handler -> kvm_set_irq: ISA lines become KVM_IRQ_LINE.
            machine.gsi_handler = self.irq_line
        for slot, (gpa, size, offset) in enumerate(machine.ram_slots()):
            self.ioctl("KVM_SET_USER_MEMORY_REGION", self.vm.set_user_memory_region,
                       slot, 0, gpa, size, machine.ram_view[offset:offset + size],
                       detail=f"slot {slot}: {gpa:#x}+{size:#x}")
        # kvm_init: s->coalesced_mmio, the ring's page in the vCPU mapping (0: none); then
        # the memory listener's coalesced_io_add for each coalesced region (the VGA window).
        self.coalesced_mmio = 0
        zones = machine.coalesced_zones()
        if zones:
            self.coalesced_mmio = self.ioctl("KVM_CHECK_EXTENSION", kvm.check_extension,
                                             KVM_CAP_COALESCED_MMIO, fd="system",
                                             detail="KVM_CAP_COALESCED_MMIO")
        for addr, size in zones if self.coalesced_mmio else ():
            self.ioctl("KVM_REGISTER_COALESCED_MMIO", self.vm.register_coalesced_mmio, addr, size,
                       detail=f"zone {addr:#x}+{size:#x}")
        # The simulated kvm.ko views the same RAM through a memory of its own: QEMU's
        # writes (DMA, loading) reach the code its vCPUs decoded, as the hardware's
        # caches snoop DMA. (Not modelled: a coherence the real machine gives for free.)
        sim_mem = getattr(self.vm, "mem", None)
        if isinstance(sim_mem, PhysicalMemory) and sim_mem is not machine.mem:
            machine.mem.sharers.append(sim_mem)

    def ioctl(self, name: str, fn, *args: Any, detail: str = "", vcpu: str = "vm",
              fd: str = "vm") -> Any:
        """One ioctl, traced as QEMU traces it, before the call: kvm_ioctl on /dev/kvm,
        kvm_vm_ioctl on the VM, kvm_vcpu_ioctl on a vCPU (`fd`: "system", "vm", "vcpu")."""
        ev = self.events
        if ev is not None:
            trace_ioctl(ev, fd, vcpu, name, detail)
        return fn(*args)

    def irq_line(self, irq: int, level: int) -> None:
        """kvm_set_irq (QEMU): KVM_IRQ_LINE on the VM."""
        self.ioctl("KVM_IRQ_LINE", self.vm.irq_line, irq, level,
                   detail=f"irq {irq} level {level}")

    def init_vcpu(self, index: int) -> CPUState:
        """kvm_init_vcpu + the machine's reset state (vmsim's entry-state contract)."""
        name = f"vcpu{index}"
        vcpu = self.ioctl("KVM_CREATE_VCPU", self.vm.create_vcpu, index, vcpu=name,
                          detail=f"vcpu_id {index}")
        cpu = CPUState(index, vcpu, name)
        if self.coalesced_mmio and self.machine.coalesced.ring is None:
            # kvm_init_vcpu: the ring is the page at s->coalesced_mmio of the mapping
            self.machine.coalesced.ring = CoalescedMmioRing(vcpu.mapping_page(self.coalesced_mmio))
        entries = self.machine.cpuid_entries(index)
        if entries:
            self.ioctl("KVM_SET_CPUID2", vcpu.set_cpuid2, entries, vcpu=name, fd="vcpu")
        kvm_arch_put_registers(self, cpu)
        return cpu


def kvm_arch_put_registers(s: KvmState, cpu: CPUState) -> None:
    """The entry state: 32-bit protected mode, paging off, flat CS=0x08, data 0x10 (the
    reset-time put, x86_cpu_reset's state; vmsim.vmm.kvm_x86 has the put of saved state)."""
    m = s.machine
    sregs = s.ioctl("KVM_GET_SREGS", cpu.vcpu.get_sregs, vcpu=cpu.thread, fd="vcpu")
    sregs.cs = KvmSegment.flat(0x08, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, KvmSegment.flat(0x10, code=False))
    sregs.gdt.base, sregs.gdt.limit = 0, 0
    sregs.idt.base, sregs.idt.limit = 0, 0
    sregs.cr0, sregs.cr3, sregs.cr4 = 0x11, 0, 0
    s.ioctl("KVM_SET_SREGS", cpu.vcpu.set_sregs, sregs, vcpu=cpu.thread, fd="vcpu")
    s.ioctl("KVM_SET_REGS", cpu.vcpu.set_regs,
            KvmRegs(rip=m.entry_point, rsp=m.entry_esp_for(cpu.index), rflags=0x2),
            vcpu=cpu.thread, fd="vcpu")
    if s.irqchip_in_kernel and cpu.index != 0:
        # vmsim's firmware shortcut: the APs start at the entry point like the BSP instead
        # of waiting for INIT-SIPI-SIPI (KVM made them KVM_MP_STATE_UNINITIALIZED).
        s.ioctl("KVM_SET_MP_STATE", cpu.vcpu.set_mp_state, KVM_MP_STATE_RUNNABLE,
                vcpu=cpu.thread, fd="vcpu", detail="KVM_MP_STATE_RUNNABLE")


def kvm_arch_process_async_events(s: KvmState, cpu: CPUState) -> bool:
    """A halted vCPU (userspace irqchip) wakes for an interrupt it can take. True: still
    halted. With the irqchip in the kernel, HLT never leaves kvm.ko."""
    if s.irqchip_in_kernel:
        return False
    if cpu.interrupt_request & CPU_INTERRUPT_HARD and cpu.eflags_if:
        cpu.halted = False
    return cpu.halted


def kvm_cpu_exec(s: KvmState, cpu: CPUState, resume: str | None = None
                 ) -> Generator[Any, None, int]:
    """One visit to KVM_RUN and back, until something needs the rest of QEMU.

    The BQL is released around KVM_RUN and taken again for device dispatch, as QEMU does.
    `resume`: rebuilt from a snapshot inside KVM_RUN (where SimVcpu.run_steps says).
    """
    m = s.machine
    ev = s.events
    if resume is None:
        if kvm_arch_process_async_events(s, cpu):
            return EXCP_HLT
        m.bql_unlock(cpu.thread)
    ret = 0
    # (Scheduler.pass_time, where the run lets cycles pass in place: asked at each yield,
    # a run_for lets them pass for a while)
    sched = s.sched
    while ret == 0:
        run = cpu.vcpu.kvm_run
        steps = getattr(cpu.vcpu, "run_steps", None)
        if resume is None:
            if cpu.vcpu_dirty:
                # The state QEMU took (cpu_synchronize_state) goes back before KVM_RUN.
                # (A VM rebuilt from an exact snapshot has no copy: kvm.ko's state, saved
                # with it, is the same.)
                from vmsim.vmm.kvm_x86 import KVM_PUT_RUNTIME_STATE
                from vmsim.vmm.kvm_x86 import kvm_arch_put_registers as put_registers

                if cpu.env is not None:
                    put_registers(s, cpu, KVM_PUT_RUNTIME_STATE)
                cpu.vcpu_dirty = False
            if not s.irqchip_in_kernel:  # (kvm_arch_pre_run returns at once otherwise)
                yield from kvm_arch_pre_run(s, cpu)
            if cpu.exit_request:
                run.immediate_exit = 1  # kvm_cpu_kick_self
            if ev is not None:
                trace_ioctl(ev, "vcpu", cpu.thread, "KVM_RUN", "", cpu.index)
        try:
            if resume is not None:
                r = yield from steps(resume)
                resume = None
            elif steps is not None:
                r = yield from steps()  # the simulated kvm.ko yields as it goes
            elif hasattr(cpu.vcpu, "start_run"):
                r = yield from _host_kvm_run(cpu.vcpu)
            else:
                r = cpu.vcpu.run()
        except Unsupported as e:
            # vmsim's own stop (not a KVM exit): the guest did what the simulated CPU does
            # not model (real mode, PAE paging ...). The VM stops, the reason kept.
            cpu.unsupported = str(e)
            m.shutdown_request(str(e))
            ret = EXCP_SHUTDOWN
            break
        cpu.eflags_if = bool(run.if_flag)  # kvm_arch_post_run
        cpu.host_halted = False  # (set again below if the watchdog found it halted)
        reason = run.exit_reason  # (only this vCPU's KVM_RUN writes it)
        if ev is not None:
            # KVM_RUN has returned: kvm.ko's last tracepoint (kvm_userspace_exit), then
            # QEMU's (kvm_run_exit), before anything is dispatched.
            _trace_return(ev, cpu, r, reason)
        if sched is None or sched.in_place is None or not sched.pass_time(COST_IOCTL):
            yield COST_IOCTL
        if r == -errno.EINTR or reason == KVM_EXIT_INTR:
            # kvm_eat_signals: the kick is consumed, immediate_exit cleared.
            run.immediate_exit = 0
            cpu.exit_request = False
            ret = EXCP_INTERRUPT
            stuck = _explain_stop(cpu, KVM_EXIT_INTR)  # the host KVM's watchdog ran out
            if stuck:
                m.shutdown_request(stuck)
                ret = EXCP_SHUTDOWN
            break
        cpu.last_exit = KVM_EXIT_NAMES.get(reason) or str(reason)  # (str only when unnamed)
        if reason in (KVM_EXIT_IO, KVM_EXIT_MMIO):
            # Device models run under the BQL (prepare_mmio_access takes it for them), and
            # take time with it held: another thread that wants it meanwhile waits.
            if not m.bql.try_lock(cpu.thread):
                yield from m.bql_lock(cpu.thread)
            (kvm_handle_io if reason == KVM_EXIT_IO else kvm_handle_mmio)(m, cpu)
            # The device's own work (a virtio-blk request's file I/O) on this thread too.
            cycles = COST_DEVICE_ACCESS + m.take_device_cycles()
            if sched is None or sched.in_place is None or not sched.pass_time(cycles):
                yield cycles
            m.bql_unlock(cpu.thread)
            ret = 0
        elif reason == KVM_EXIT_IRQ_WINDOW_OPEN:
            ret = EXCP_INTERRUPT  # kvm_arch_pre_run injects on the way back in
        elif reason == KVM_EXIT_HLT:
            ret = kvm_handle_halt(cpu)
        elif reason in (KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT):
            m.shutdown_request(_explain_stop(cpu, reason) or
                               ("triple fault" if reason == KVM_EXIT_SHUTDOWN else "system event"))
            ret = EXCP_SHUTDOWN
        elif reason == KVM_EXIT_FAIL_ENTRY:
            hw, _ = run.fail_entry()
            m.shutdown_request(f"KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {hw:#x}"
                               + (f" ({cpu.vcpu.fail_entry_detail})"
                                  if getattr(cpu.vcpu, "fail_entry_detail", "") else ""))
            ret = EXCP_SHUTDOWN
        elif reason == KVM_EXIT_INTERNAL_ERROR:
            sub, _ = run.internal()
            m.shutdown_request(_explain_stop(cpu, reason) or
                               f"KVM_EXIT_INTERNAL_ERROR, suberror {sub}")
            ret = EXCP_SHUTDOWN
        else:
            m.shutdown_request(f"unexpected exit reason {reason}")
            ret = EXCP_SHUTDOWN
        if m.stop_requested:
            ret = EXCP_INTERRUPT if ret == 0 else ret
    yield from m.bql_lock(cpu.thread)
    return ret


def kvm_handle_halt(cpu: CPUState) -> int:
    """KVM_EXIT_HLT (userspace irqchip): halt unless an interrupt the guest takes waits."""
    if cpu.interrupt_request & CPU_INTERRUPT_HARD and cpu.eflags_if:
        return 0
    cpu.halted = True
    return EXCP_HLT


def kvm_arch_pre_run(s: KvmState, cpu: CPUState) -> Generator[Any, None, None]:
    """target/i386/kvm/kvm.c kvm_arch_pre_run, with the PIC in QEMU: inject a pending
    interrupt with KVM_INTERRUPT if the guest can take one now, and ask for an interrupt
    window while one is still pending (virtualization-facts.md 3.4)."""
    if s.irqchip_in_kernel:
        return
    m = s.machine
    run = cpu.vcpu.kvm_run
    yield from m.bql_lock(cpu.thread)
    injected = -1
    if (cpu.interrupt_request & CPU_INTERRUPT_HARD and run.ready_for_interrupt_injection
            and cpu.eflags_if):
        cpu.interrupt_request &= ~CPU_INTERRUPT_HARD
        irq = m.pic.read_irq() if m.pic is not None else -1  # cpu_get_pic_interrupt
        if irq >= 0:
            ev = s.events
            if ev is not None and ev.build("pic_interrupt"):
                ev.emit("pic_interrupt", "i8259", irq=_pic_irq_of(m.pic, irq), intno=irq)
            s.ioctl("KVM_INTERRUPT", cpu.vcpu.interrupt, irq, vcpu=cpu.thread, fd="vcpu",
                    detail=f"irq {irq}")
            injected = irq
    run.request_interrupt_window = 1 if cpu.interrupt_request & CPU_INTERRUPT_HARD else 0
    ev = s.events
    if ev is not None and (injected >= 0 or run.request_interrupt_window) \
            and ev.build("kvm_arch_pre_run"):
        ev.emit("kvm_arch_pre_run", cpu.thread, cpu_index=cpu.index, injected=injected,
                request_interrupt_window=run.request_interrupt_window)
    m.bql_unlock(cpu.thread)


def _pic_irq_of(pic: Any, vector: int) -> int:
    """Which IRQ a vector from the PIC pair came from (for the trace)."""
    base_m, base_s = pic.master.irq_base, pic.slave.irq_base
    if base_m <= vector < base_m + 8:
        return vector - base_m
    if base_s <= vector < base_s + 8:
        return 8 + vector - base_s
    return -1


def _host_kvm_run(vcpu: Any) -> Generator[Any, None, int]:
    """KVM_RUN on the host's KVM, in the vCPU's own OS thread: the simulated thread waits
    for it (and other threads run meanwhile: several vCPUs run truly in parallel)."""
    vcpu.start_run()
    if not vcpu.run_done():
        yield Block("KVM_RUN on the host's KVM", vcpu.run_done)
    return vcpu.finish_run()


KVM_MP_STATE_HALTED = 3  # include/uapi/linux/kvm.h


def _explain_stop(cpu: CPUState, reason: int) -> str | None:
    """The backend's own account of an exit that ends the VM, if it has one: the host's
    KVM names the guest instruction it stopped on (vmsim.hostkvm.explain). A vCPU the
    watchdog finds halted in the host's kvm.ko (HLT with the in-kernel irqchip) is not
    stuck: it waits for an interrupt (cpu.host_halted)."""
    v = cpu.vcpu
    if reason == KVM_EXIT_INTR and getattr(v, "watchdog_expired", False):
        get_mp_state = getattr(v, "get_mp_state", None)
        if get_mp_state is not None and get_mp_state() == KVM_MP_STATE_HALTED:
            cpu.host_halted = True
            return None
    explain = getattr(v, "explain_stop", None)
    return explain(reason) if explain is not None else None


def trace_ioctl(ev, fd: str, source: str, name: str, detail: str,
                vcpu_id: int | None = None) -> None:
    """QEMU's kvm_ioctl / kvm_vm_ioctl / kvm_vcpu_ioctl trace events (accel/kvm/trace-events),
    written before the ioctl is made, with the request number as `type`. `vcpu_id`: the
    vCPU's index where the caller has it (KVM_RUN, every exit), else read from `source`."""
    kind = _IOCTL_KINDS[fd]
    if not ev.build(kind):
        return
    if fd == "vcpu":
        if vcpu_id is None:
            vcpu_id = int(source[4:]) if source.startswith("vcpu") else 0
        ev.tp[kind].fire(source, vcpu_id, KVM_IOCTLS[name], name, detail)
    else:
        ev.tp[kind].fire("vm", KVM_IOCTLS[name], name, detail)


_IOCTL_KINDS = {"system": "kvm_ioctl", "vm": "kvm_vm_ioctl", "vcpu": "kvm_vcpu_ioctl"}


def _trace_return(ev, cpu: CPUState, r: int, reason: int) -> None:
    """kvm:kvm_userspace_exit with the struct kvm_run fields of the exit (written from
    kvm_run as userspace sees it, so the same on every backend; `reason` its exit_reason),
    then QEMU's kvm_run_exit."""
    if ev.build("kvm_userspace_exit"):
        run = cpu.vcpu.kvm_run
        name = KVM_EXIT_NAMES.get(reason) or str(reason)
        if r >= 0 and reason == KVM_EXIT_IO:  # (the common exits: one call, no dict)
            direction, size, port, count, offset = run.io()
            out = direction == KVM_EXIT_IO_OUT
            ev.tp["kvm_userspace_exit_io"].fire(
                cpu.thread, name, reason, 0, "out" if out else "in", size, port, count,
                # an IN's data is not there yet: the device answers after this
                run.buf[offset:offset + size * count].hex() if out else None)
        elif r >= 0 and reason == KVM_EXIT_MMIO:
            addr, data, length, is_write = run.mmio()
            ev.tp["kvm_userspace_exit_mmio"].fire(
                cpu.thread, name, reason, 0, addr, length, bool(is_write),
                data[:length].hex() if is_write else None)
        else:
            _trace_other_return(ev, cpu, r, reason, name)
    if r >= 0 and ev.build("kvm_run_exit"):
        ev.tp["kvm_run_exit"].fire(cpu.thread, cpu.index, reason,
                                   KVM_EXIT_NAMES.get(reason) or str(reason))


def _trace_other_return(ev, cpu: CPUState, r: int, reason: int, name: str) -> None:
    """kvm_userspace_exit for a failed KVM_RUN and the rarer exits."""
    run = cpu.vcpu.kvm_run
    fields: dict[str, Any] = {"reason": name, "reason_number": reason,
                              "errno": r if r < 0 else 0}
    if r < 0:
        pass  # KVM_RUN failed (-EINTR): kvm_run holds no exit
    elif reason == KVM_EXIT_FAIL_ENTRY:
        fields["hardware_entry_failure_reason"] = run.fail_entry()[0]
    elif reason == KVM_EXIT_INTERNAL_ERROR:
        sub, data = run.internal()
        fields.update(suberror=sub, data=[f"{d:#x}" for d in data])
    ev.emit("kvm_userspace_exit", cpu.thread, **fields)


def kvm_handle_io(m: Machine, cpu: CPUState) -> None:
    """KVM_EXIT_IO: `count` accesses of `size` bytes to the I/O address space."""
    run = cpu.vcpu.kvm_run
    direction, size, port, count, offset = run.io()
    buf = run.buf
    for i in range(count):
        at = offset + i * size
        if direction == KVM_EXIT_IO_OUT:
            m.address_space_io_write(port, size, int.from_bytes(buf[at:at + size], "little"))
        else:
            buf[at:at + size] = m.address_space_io_read(port, size).to_bytes(size, "little")


def kvm_handle_mmio(m: Machine, cpu: CPUState) -> None:
    """KVM_EXIT_MMIO: one access to the memory address space."""
    run = cpu.vcpu.kvm_run
    addr, data, length, is_write = run.mmio()
    if is_write:
        m.address_space_memory_write(addr, length, int.from_bytes(data[:length], "little"))
    else:
        run.set_mmio_data(m.address_space_memory_read(addr, length).to_bytes(length, "little"))
