"""QEMU's x86 KVM glue for state (target/i386/kvm/kvm.c): kvm_arch_get_registers and
kvm_arch_put_registers, and QEMU's copy of what they move (CPUX86State).

QEMU never reads kvm.ko's VMCS. When it needs a vCPU's state (to show it, save it,
migrate it) it asks with the KVM_GET_* ioctls and keeps the answers in its CPUX86State;
before the vCPU runs again it writes them back with the KVM_SET_* ones. Only the
structures of the KVM API cross: that is why the same state can be loaded into another
KVM, the simulated kvm.ko or the host's.

(vmsim.vmm.kvm_all.kvm_arch_put_registers is the other use of the put: the machine's
entry state at reset. This one puts what a get took, or what a snapshot holds.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import vmsim.kvm.api as api
from vmsim.kvm.api import KvmRegs, KvmSregs, KvmVcpuEvents

if TYPE_CHECKING:
    from vmsim.vmm.kvm_all import CPUState, KvmState

# include/sysemu/kvm.h: how much kvm_arch_put_registers writes.
KVM_PUT_RUNTIME_STATE = 1  # what the guest may have changed while running (after a get)
KVM_PUT_RESET_STATE = 2  # also what only a reset changes (MP state, APIC, TSC)
KVM_PUT_FULL_STATE = 3  # everything: after loadvm or an incoming migration
PUT_LEVELS = {KVM_PUT_RUNTIME_STATE: "KVM_PUT_RUNTIME_STATE",
              KVM_PUT_RESET_STATE: "KVM_PUT_RESET_STATE",
              KVM_PUT_FULL_STATE: "KVM_PUT_FULL_STATE"}
# kvm_put_msrs writes the TSC only from KVM_PUT_RESET_STATE up: at runtime the guest's
# TSC goes on counting in the kernel.
RESET_ONLY_MSRS = (api.MSR_IA32_TSC,)


@dataclass
class X86CpuState:
    """QEMU's CPUX86State, as far as the KVM_GET_* ioctls fill it: the copies."""

    regs: KvmRegs
    sregs: KvmSregs
    msrs: dict[int, int]
    events: KvmVcpuEvents
    mp_state: int
    lapic: bytes | None  # struct kvm_lapic_state (with the in-kernel irqchip)


def _trace(s: KvmState, kind: str, cpu: CPUState, **fields: Any) -> None:
    ev = s.events
    if ev is not None and ev.build(kind):
        ev.emit(kind, cpu.thread, cpu_index=cpu.index, **fields)


def kvm_arch_get_registers(s: KvmState, cpu: CPUState) -> X86CpuState:
    """The vCPU's state from kvm.ko into cpu.env, in QEMU's order: the events first, then
    the MP state ("KVM_GET_MPSTATE can modify CS and RIP, call it before KVM_GET_REGS and
    KVM_GET_SREGS"), the registers, the MSRs, the APIC."""
    _trace(s, "kvm_arch_get_registers", cpu)
    v, t = cpu.vcpu, cpu.thread

    def ioctl(name: str, fn, *args: Any, detail: str = "") -> Any:
        return s.ioctl(name, fn, *args, vcpu=t, fd="vcpu", detail=detail)

    events = ioctl("KVM_GET_VCPU_EVENTS", v.get_vcpu_events)
    mp_state = ioctl("KVM_GET_MP_STATE", v.get_mp_state)
    regs = ioctl("KVM_GET_REGS", v.get_regs)
    sregs = ioctl("KVM_GET_SREGS", v.get_sregs)
    wanted = list(api.PORTABLE_MSRS)
    got = ioctl("KVM_GET_MSRS", v.get_msrs, wanted, detail=f"{len(wanted)} MSRs")
    if len(got) != len(wanted):
        missing = wanted[len(got)]
        raise ValueError(f"{t}: KVM_GET_MSRS read {len(got)} of {len(wanted)} MSRs "
                         f"(not {missing:#x})")
    lapic = ioctl("KVM_GET_LAPIC", v.get_lapic) if s.irqchip_in_kernel else None
    cpu.env = X86CpuState(regs, sregs, dict(got), events, mp_state, lapic)
    return cpu.env


def kvm_arch_put_registers(s: KvmState, cpu: CPUState, level: int) -> None:
    """cpu.env back into kvm.ko, in QEMU's order: the segment registers first (so that
    EFER and the mode are right for what follows), the events, the registers, the MSRs,
    and from KVM_PUT_RESET_STATE up the MP state and the APIC."""
    env: X86CpuState = cpu.env
    _trace(s, "kvm_arch_put_registers", cpu, level=PUT_LEVELS[level])
    v, t = cpu.vcpu, cpu.thread

    def ioctl(name: str, fn, *args: Any, detail: str = "") -> Any:
        return s.ioctl(name, fn, *args, vcpu=t, fd="vcpu", detail=detail)

    ioctl("KVM_SET_SREGS", v.set_sregs, env.sregs)
    events = KvmVcpuEvents(**vars(env.events))
    # kvm_put_vcpu_events: NMI pending and the SIPI vector only from KVM_PUT_RESET_STATE.
    events.flags = api.KVM_VCPUEVENT_VALID_SHADOW
    if level >= KVM_PUT_RESET_STATE:
        events.flags |= api.KVM_VCPUEVENT_VALID_NMI_PENDING | api.KVM_VCPUEVENT_VALID_SIPI_VECTOR
    ioctl("KVM_SET_VCPU_EVENTS", v.set_vcpu_events, events)
    ioctl("KVM_SET_REGS", v.set_regs, env.regs)
    entries = [(i, d) for i, d in env.msrs.items()
               if level >= KVM_PUT_RESET_STATE or i not in RESET_ONLY_MSRS]
    n = ioctl("KVM_SET_MSRS", v.set_msrs, entries, detail=f"{len(entries)} MSRs")
    if n != len(entries):
        raise ValueError(f"{t}: KVM_SET_MSRS wrote {n} of {len(entries)} MSRs "
                         f"(refused {entries[n][0]:#x})")
    if level >= KVM_PUT_RESET_STATE:
        ioctl("KVM_SET_MP_STATE", v.set_mp_state, env.mp_state,
              detail=_MP_STATE_NAMES.get(env.mp_state, str(env.mp_state)))
        if env.lapic is not None:
            ioctl("KVM_SET_LAPIC", v.set_lapic, env.lapic)


_MP_STATE_NAMES = {api.KVM_MP_STATE_RUNNABLE: "KVM_MP_STATE_RUNNABLE",
                   api.KVM_MP_STATE_UNINITIALIZED: "KVM_MP_STATE_UNINITIALIZED",
                   api.KVM_MP_STATE_INIT_RECEIVED: "KVM_MP_STATE_INIT_RECEIVED",
                   api.KVM_MP_STATE_HALTED: "KVM_MP_STATE_HALTED",
                   api.KVM_MP_STATE_SIPI_RECEIVED: "KVM_MP_STATE_SIPI_RECEIVED"}


# -- QEMU's in-kernel irqchip devices (hw/i386/kvm/i8259.c, i8254.c) -----------------------

def kvm_pic_get(s: KvmState) -> dict[str, dict[str, int]]:
    """kvm_pic_get: KVM_GET_IRQCHIP for the master, then the slave (the kvm-i8259
    device's pre_save)."""
    vm = s.vm
    return {name: s.ioctl("KVM_GET_IRQCHIP", vm.get_irqchip, chip, detail=name)
            for name, chip in (("master", api.KVM_IRQCHIP_PIC_MASTER),
                               ("slave", api.KVM_IRQCHIP_PIC_SLAVE))}


def kvm_pic_put(s: KvmState, pics: dict[str, dict[str, int]]) -> None:
    """kvm_pic_put: KVM_SET_IRQCHIP for each (the kvm-i8259 device's post_load)."""
    vm = s.vm
    for name, chip in (("master", api.KVM_IRQCHIP_PIC_MASTER),
                       ("slave", api.KVM_IRQCHIP_PIC_SLAVE)):
        s.ioctl("KVM_SET_IRQCHIP", vm.set_irqchip, chip, pics[name], detail=name)


def kvm_pit_get(s: KvmState) -> dict[str, Any]:
    """kvm_pit_get: KVM_GET_PIT2 (the kvm-pit device, at vm_stop and pre_save)."""
    channels, flags = s.ioctl("KVM_GET_PIT2", s.vm.get_pit2)
    return {"channels": channels, "flags": flags}


def kvm_pit_put(s: KvmState, pit: dict[str, Any]) -> None:
    """kvm_pit_put: KVM_SET_PIT2 (at vm_start and post_load)."""
    s.ioctl("KVM_SET_PIT2", s.vm.set_pit2, pit["channels"], pit["flags"])
