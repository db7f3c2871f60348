"""The simulated kvm.ko's state ioctls (LNX arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl and
kvm_arch_vm_ioctl, lapic.c, i8259.c, i8254.c): what QEMU reads when it stops a VM and
writes when it loads one.

Each one copies between kvm.ko's own places and the structure userspace passes: the
VMCS's guest-state and VM-entry fields (where vmx.c keeps them while the vCPU is out of
non-root mode), the local APIC's register page, the PIC and PIT models. Userspace never
sees the VMCS itself, only these copies (docs/snapshots.md, "Suspend and resume as QEMU
does it").
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmsim.hw.vmcs import (
    GUEST_INTR_STATE_MOV_SS,
    GUEST_INTR_STATE_NMI,
    GUEST_INTR_STATE_STI,
    INTR_INFO_DELIVER_CODE_MASK,
    INTR_INFO_VALID_MASK,
    INTR_TYPE_EXT_INTR,
    INTR_TYPE_HARD_EXCEPTION,
    INTR_TYPE_NMI_INTR,
    INTR_TYPE_SOFT_EXCEPTION,
    INTR_TYPE_SOFT_INTR,
    F,
)
from vmsim.kvm import api
from vmsim.kvm.api import KvmVcpuEvents

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu, SimVm

U64 = (1 << 64) - 1
_SYSENTER = {api.MSR_IA32_SYSENTER_CS: F.GUEST_SYSENTER_CS,
             api.MSR_IA32_SYSENTER_ESP: F.GUEST_SYSENTER_ESP,
             api.MSR_IA32_SYSENTER_EIP: F.GUEST_SYSENTER_EIP}
# Exceptions vmx_inject_exception delivers as software exceptions (kvm_exception_is_soft).
_SOFT_EXCEPTIONS = (3, 4)  # #BP, #OF
_EXCEPTION_KINDS = (INTR_TYPE_HARD_EXCEPTION >> 8, INTR_TYPE_SOFT_EXCEPTION >> 8, 5)


def _kvm_error(code: int, what: str) -> Exception:
    from vmsim.kvm.kvm_main import KvmError

    return KvmError(code, what)


# -- MSRs (kvm_get_msr_common / vmx_get_msr, host-initiated) ------------------------------

def kvm_get_msr(v: SimVcpu, index: int) -> int | None:
    """One MSR as KVM_GET_MSRS reads it; None for one vmsim's vCPU does not have."""
    vmcs = v.vmcs
    if index in _SYSENTER:
        return vmcs.read(_SYSENTER[index])  # vmx_get_msr: vmcs_read32(GUEST_SYSENTER_CS)
    if index == api.MSR_IA32_TSC:
        # kvm_read_l1_tsc: the host's TSC (vmsim's: the instructions retired) plus the
        # VMCS's TSC offset.
        return (v.cpu.icount + vmcs.read(F.TSC_OFFSET)) & U64
    if index == api.MSR_IA32_APICBASE:
        return v.lapic.apic_base if v.lapic is not None else v.cpu.msr.get(index, 0)
    if index == api.MSR_EFER:
        return 0  # vcpu->arch.efer: vmsim's 32-bit guests never set one
    if index in (api.MSR_IA32_CR_PAT, api.MSR_IA32_MISC_ENABLE):
        return v.cpu.msr.get(index, 0)
    return None


def kvm_set_msr(v: SimVcpu, index: int, data: int) -> bool:
    """One MSR as KVM_SET_MSRS writes it (host-initiated); False if refused."""
    vmcs = v.vmcs
    data &= U64
    if index in _SYSENTER:
        vmcs.write(_SYSENTER[index], data & 0xFFFFFFFF)
    elif index == api.MSR_IA32_TSC:
        # kvm_synchronize_tsc: the offset that makes the guest read `data` now.
        vmcs.write(F.TSC_OFFSET, (data - v.cpu.icount) & U64)
    elif index == api.MSR_IA32_APICBASE:
        if v.lapic is not None and v.lapic.set_apic_base(data):
            return False
        v.cpu.msr[index] = data
    elif index == api.MSR_EFER:
        return data == 0  # no long mode, no NX: only 0 is a valid EFER here
    elif index in (api.MSR_IA32_CR_PAT, api.MSR_IA32_MISC_ENABLE):
        v.cpu.msr[index] = data
    else:
        return False
    return True


def kvm_get_msrs(v: SimVcpu, indices: list[int]) -> list[tuple[int, int]]:
    """KVM_GET_MSRS (msr_io): the MSRs read, in order, up to the first one that fails:
    the ioctl returns how many it read, and the caller sees only those."""
    out = []
    for index in indices:
        value = kvm_get_msr(v, index)
        if value is None:
            break
        out.append((index, value))
    return out


def kvm_set_msrs(v: SimVcpu, entries: list[tuple[int, int]]) -> int:
    """KVM_SET_MSRS: how many were written (it stops at the first refused)."""
    n = 0
    for index, data in entries:
        if not kvm_set_msr(v, index, data):
            break
        n += 1
    return n


# -- KVM_GET/SET_VCPU_EVENTS (kvm_vcpu_ioctl_x86_get_vcpu_events) --------------------------

def kvm_vcpu_ioctl_x86_get_vcpu_events(v: SimVcpu) -> KvmVcpuEvents:
    """What VM entry would inject (VM_ENTRY_INTR_INFO_FIELD, where vmsim's kvm.ko keeps
    vcpu->arch.exception / interrupt / nmi_injected between exits), an interrupt queued by
    KVM_INTERRUPT, the STI / MOV SS shadow and NMI blocking."""
    vmcs = v.vmcs
    e = KvmVcpuEvents()
    info = vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
    if info & INTR_INFO_VALID_MASK:
        kind, vector = (info >> 8) & 7, info & 0xFF
        if kind in _EXCEPTION_KINDS:
            e.exception_injected, e.exception_nr = 1, vector
            if info & INTR_INFO_DELIVER_CODE_MASK:
                e.exception_has_error_code = 1
                e.exception_error_code = vmcs.read(F.VM_ENTRY_EXCEPTION_ERROR_CODE)
        elif kind == INTR_TYPE_NMI_INTR >> 8:
            e.nmi_injected = 1
        else:
            e.interrupt_injected, e.interrupt_nr = 1, vector
            e.interrupt_soft = int(kind == INTR_TYPE_SOFT_INTR >> 8)
    elif v.pending_external_vector != -1:
        e.interrupt_injected, e.interrupt_nr = 1, v.pending_external_vector
    ii = vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO)
    # vmx_get_interrupt_shadow: the VMCS's bit 0 is STI, KVM's is MOV SS
    e.interrupt_shadow = ((api.KVM_X86_SHADOW_INT_STI if ii & GUEST_INTR_STATE_STI else 0)
                          | (api.KVM_X86_SHADOW_INT_MOV_SS if ii & GUEST_INTR_STATE_MOV_SS
                             else 0))
    e.nmi_masked = int(bool(ii & GUEST_INTR_STATE_NMI))
    if v.lapic is not None:
        from vmsim.kvm.x86 import KVM_APIC_INIT

        e.sipi_vector = v.lapic.sipi_vector
        e.smi_latched_init = int(bool(v.lapic.pending_events & 1 << KVM_APIC_INIT))
    e.flags = (api.KVM_VCPUEVENT_VALID_NMI_PENDING | api.KVM_VCPUEVENT_VALID_SHADOW
               | api.KVM_VCPUEVENT_VALID_SMM)
    return e


_KNOWN_FLAGS = (api.KVM_VCPUEVENT_VALID_NMI_PENDING | api.KVM_VCPUEVENT_VALID_SIPI_VECTOR
                | api.KVM_VCPUEVENT_VALID_SHADOW | api.KVM_VCPUEVENT_VALID_SMM)


def kvm_vcpu_ioctl_x86_set_vcpu_events(v: SimVcpu, e: KvmVcpuEvents) -> None:
    """KVM_SET_VCPU_EVENTS: the event goes back where VM entry will inject it from."""
    if e.flags & ~_KNOWN_FLAGS:
        raise _kvm_error(errno.EINVAL, f"KVM_SET_VCPU_EVENTS: flags {e.flags:#x} not supported")
    if e.exception_injected and (e.exception_nr > 31 or e.exception_nr == 2):
        raise _kvm_error(errno.EINVAL, f"KVM_SET_VCPU_EVENTS: bad exception {e.exception_nr}")
    if e.smi_smm or e.smi_pending or e.nmi_pending:
        raise _kvm_error(errno.EINVAL, "KVM_SET_VCPU_EVENTS: vmsim models no SMM and no NMI")
    vmcs = v.vmcs
    info = 0
    if e.exception_injected:
        kind = (INTR_TYPE_SOFT_EXCEPTION if e.exception_nr in _SOFT_EXCEPTIONS
                else INTR_TYPE_HARD_EXCEPTION)
        info = e.exception_nr | kind | INTR_INFO_VALID_MASK
        if e.exception_has_error_code:
            info |= INTR_INFO_DELIVER_CODE_MASK
            vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, e.exception_error_code)
    elif e.interrupt_injected:
        kind = INTR_TYPE_SOFT_INTR if e.interrupt_soft else INTR_TYPE_EXT_INTR
        info = e.interrupt_nr | kind | INTR_INFO_VALID_MASK
    elif e.nmi_injected:
        info = 2 | INTR_TYPE_NMI_INTR | INTR_INFO_VALID_MASK
    vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info)
    v.pending_external_vector = -1  # (now in the entry field, if there was one)
    ii = vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO)
    if e.flags & api.KVM_VCPUEVENT_VALID_SHADOW:
        ii &= ~(GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS)
        if e.interrupt_shadow & api.KVM_X86_SHADOW_INT_STI:
            ii |= GUEST_INTR_STATE_STI
        if e.interrupt_shadow & api.KVM_X86_SHADOW_INT_MOV_SS:
            ii |= GUEST_INTR_STATE_MOV_SS
    ii = ii | GUEST_INTR_STATE_NMI if e.nmi_masked else ii & ~GUEST_INTR_STATE_NMI
    vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, ii)
    if e.flags & api.KVM_VCPUEVENT_VALID_SIPI_VECTOR and v.lapic is not None:
        v.lapic.sipi_vector = e.sipi_vector
    v.requests.add("event")  # kvm_make_request(KVM_REQ_EVENT, vcpu)


# -- KVM_GET/SET_LAPIC --------------------------------------------------------------------

def kvm_vcpu_ioctl_get_lapic(v: SimVcpu) -> bytes:
    if v.lapic is None:
        raise _kvm_error(errno.ENXIO, "KVM_GET_LAPIC needs the in-kernel irqchip")
    return v.lapic.kvm_apic_get_state()


def kvm_vcpu_ioctl_set_lapic(v: SimVcpu, page: bytes) -> None:
    if v.lapic is None:
        raise _kvm_error(errno.ENXIO, "KVM_SET_LAPIC needs the in-kernel irqchip")
    if len(page) != api.KVM_APIC_REG_SIZE:
        raise _kvm_error(errno.EINVAL, f"KVM_SET_LAPIC: {len(page)} bytes, "
                         f"struct kvm_lapic_state is {api.KVM_APIC_REG_SIZE}")
    v.lapic.kvm_apic_set_state(page)
    v.requests.add("event")


# -- KVM_GET/SET_IRQCHIP (kvm_vm_ioctl_get_irqchip: the PIC pair) --------------------------

def _pic(vm: SimVm, chip_id: int, what: str):
    if vm.irqchip is None:
        raise _kvm_error(errno.ENXIO, f"{what} needs KVM_CREATE_IRQCHIP")
    if chip_id == api.KVM_IRQCHIP_IOAPIC:
        raise _kvm_error(errno.EINVAL, f"{what}: vmsim's kvm.ko has no IOAPIC")
    if chip_id not in (api.KVM_IRQCHIP_PIC_MASTER, api.KVM_IRQCHIP_PIC_SLAVE):
        raise _kvm_error(errno.EINVAL, f"{what}: chip_id {chip_id}")
    pair = vm.irqchip.pic
    return pair.master if chip_id == api.KVM_IRQCHIP_PIC_MASTER else pair.slave


def kvm_vm_ioctl_get_irqchip(vm: SimVm, chip_id: int) -> dict[str, int]:
    """struct kvm_pic_state of one 8259 (vmsim's models keep single_mode too, which the
    structure has no field for: a PC's pair is always cascaded)."""
    c = _pic(vm, chip_id, "KVM_GET_IRQCHIP")
    return {name: getattr(c, name) & 0xFF for name in api.PIC_STATE_FIELDS}


def kvm_vm_ioctl_set_irqchip(vm: SimVm, chip_id: int, pic: dict[str, int]) -> None:
    """The 8259's registers from the structure, then pic_update_irq (kvm_pic_update_irq)."""
    c = _pic(vm, chip_id, "KVM_SET_IRQCHIP")
    for name in api.PIC_STATE_FIELDS:
        if name != "elcr_mask":  # fixed by the chip (the PIIX's ELCR), as in the kernel
            setattr(c, name, pic[name] & 0xFF)
    c.pic_update_irq()


# -- KVM_GET/SET_PIT2 (kvm_vm_ioctl_get_pit2 / kvm_vm_ioctl_set_pit2) ---------------------

def _pit(vm: SimVm, what: str):
    if vm.irqchip is None or vm.irqchip.pit is None:
        raise _kvm_error(errno.ENXIO, f"{what} needs KVM_CREATE_PIT2")
    return vm.irqchip.pit


def kvm_vm_ioctl_get_pit2(vm: SimVm) -> tuple[list[dict[str, int]], int]:
    """The three channels' struct kvm_pit_channel_state and the flags. count_load_time
    is in the host's ns (ktime); vmsim's host clock counts cycles, converted here."""
    from vmsim.costs import NOMINAL_HZ

    pit = _pit(vm, "KVM_GET_PIT2")
    out = []
    for s in pit.channels:
        c = {name: int(getattr(s, name)) for name in api.PIT_CHANNEL_FIELDS}
        c["count"] &= 0xFFFFFFFF
        c["count_load_time"] = c["count_load_time"] * 1_000_000_000 // NOMINAL_HZ
        out.append(c)
    return out, 0


def kvm_vm_ioctl_set_pit2(vm: SimVm, channels: list[dict[str, int]], flags: int) -> None:
    """The channels copied in, then each count loaded again (kvm_pit_load_count): as in
    Linux, channel 0's hrtimer starts a new period now."""
    pit = _pit(vm, "KVM_SET_PIT2")
    if flags & ~api.KVM_PIT_FLAGS_HPET_LEGACY:
        raise _kvm_error(errno.EINVAL, f"KVM_SET_PIT2: flags {flags:#x}")
    if len(channels) != 3:
        raise _kvm_error(errno.EINVAL, "KVM_SET_PIT2: struct kvm_pit_state2 has 3 channels")
    for s, c in zip(pit.channels, channels, strict=True):
        for name in api.PIT_CHANNEL_FIELDS:
            if name != "count_load_time":
                setattr(s, name, int(c[name]))
    for n, s in enumerate(pit.channels):
        pit.pit_load_count(n, s.count & 0xFFFF)
