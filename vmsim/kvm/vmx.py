"""kvm-intel: the VMCS kvm.ko builds, register ioctls, and the exit-handler table
(LNX arch/x86/kvm/vmx/vmx.c: init_vmcs, vmx_set_segment, vmx_vcpu_run, vmx_handle_exit,
kvm_vmx_exit_handlers).

Handlers follow Linux's contract: return 1 to resume the guest, 0 when `kvm_run` is
filled and KVM_RUN goes back to userspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vmsim.hw import exceptions as X
from vmsim.hw.vmcs import (
    CPU_BASED_ACTIVATE_SECONDARY_CONTROLS,
    CPU_BASED_CR3_LOAD_EXITING,
    CPU_BASED_CR3_STORE_EXITING,
    CPU_BASED_HLT_EXITING,
    CPU_BASED_INVLPG_EXITING,
    CPU_BASED_UNCOND_IO_EXITING,
    CPU_BASED_USE_MSR_BITMAPS,
    CPU_BASED_USE_TSC_OFFSETTING,
    INTR_INFO_DELIVER_CODE_MASK,
    INTR_INFO_VALID_MASK,
    INTR_TYPE_HARD_EXCEPTION,
    SECONDARY_EXEC_ENABLE_EPT,
    SECONDARY_EXEC_UNRESTRICTED_GUEST,
    ExitReason,
    F,
)
from vmsim.hw.vmx import SEGMENTS
from vmsim.kvm.api import KVM_EXIT_SHUTDOWN, KvmDtable, KvmRegs, KvmSegment, KvmSregs

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu

# CR0 bits KVM keeps on in the VMCS whatever the guest writes (KVM_VM_CR0_ALWAYS_ON for an
# unrestricted guest: NE), and CR4's (KVM_VM_CR4_ALWAYS_ON_UNRESTRICTED_GUEST: VMXE).
KVM_VM_CR0_ALWAYS_ON = 0x20
KVM_VM_CR4_ALWAYS_ON = 0x2000
# Bits the guest may own without exits (KVM_POSSIBLE_CR0_GUEST_BITS: TS, WP with EPT;
# KVM_POSSIBLE_CR4_GUEST_BITS less those KVM must see). Writes to the others exit.
KVM_CR0_GUEST_OWNED = 0x8 | 0x10000
KVM_CR4_GUEST_OWNED = 0x2 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400  # PVI DE PGE PCE OSFXSR OSXMMEXCPT
# update_exception_bitmap with EPT: #UD #MC #DB #AC are intercepted, #PF is not.
KVM_EXCEPTION_BITMAP = (1 << X.UD) | (1 << X.MC) | (1 << X.DB) | (1 << X.AC)
# MSRs kvm-intel lets the guest touch without exits (vmx_disable_intercept_for_msr).
PASSTHROUGH_MSRS = {(0x174, False), (0x174, True), (0x175, False), (0x175, True),
                    (0x176, False), (0x176, True), (0x10, False)}
MSR_RANGE = range(0x0, 0x2000)


def vmx_vcpu_setup(v: SimVcpu) -> None:
    """init_vmcs + vmx_vcpu_reset: execution controls, then the reset guest state."""
    vmcs, w = v.vmcs, v.vmcs.write
    w(F.PIN_BASED_VM_EXEC_CONTROL, 0x16 | 0x1 | 0x8)  # external-interrupt and NMI exiting
    # The "default1" bits include CR3-load/store exiting (bits 15-16) and INVLPG exiting;
    # through the TRUE capability MSRs KVM clears them when EPT makes them unnecessary.
    default1 = 0x0401E172 & ~(CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING
                              | CPU_BASED_INVLPG_EXITING)
    w(F.CPU_BASED_VM_EXEC_CONTROL,
      CPU_BASED_HLT_EXITING | CPU_BASED_UNCOND_IO_EXITING | CPU_BASED_USE_MSR_BITMAPS
      | CPU_BASED_USE_TSC_OFFSETTING | CPU_BASED_ACTIVATE_SECONDARY_CONTROLS | default1)
    w(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_ENABLE_EPT | SECONDARY_EXEC_UNRESTRICTED_GUEST)
    w(F.EXCEPTION_BITMAP, KVM_EXCEPTION_BITMAP)
    if v.vm.tdp is not None:
        v.vm.tdp.load(v)
    else:
        # ept=0 (setup_vmcs_config, update_exception_bitmap): the shadow MMU must see CR3
        # loads and stores, INVLPG and every #PF; no EPT means no unrestricted guest either.
        w(F.CPU_BASED_VM_EXEC_CONTROL, vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
          | CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING | CPU_BASED_INVLPG_EXITING)
        w(F.SECONDARY_VM_EXEC_CONTROL, 0)
        w(F.EXCEPTION_BITMAP, KVM_EXCEPTION_BITMAP | (1 << X.PF))
        v.cr0_guest_owned = 0x8  # TS; WP is KVM's now (it write-protects guest tables)
        v.cr4_guest_owned = 0
    w(F.PAGE_FAULT_ERROR_CODE_MASK, 0)
    w(F.PAGE_FAULT_ERROR_CODE_MATCH, 0)
    w(F.CR3_TARGET_COUNT, 0)
    w(F.VM_EXIT_CONTROLS, 0x00036DFF)
    w(F.VM_ENTRY_CONTROLS, 0x000011FF)
    w(F.CR0_GUEST_HOST_MASK, ~v.cr0_guest_owned & 0xFFFFFFFF)
    w(F.CR4_GUEST_HOST_MASK, ~v.cr4_guest_owned & 0xFFFFFFFF)
    w(F.TSC_OFFSET, 0)
    w(F.VMCS_LINK_POINTER, 0xFFFFFFFFFFFFFFFF)
    vmcs.msr_bitmap = {(msr, wr) for msr in MSR_RANGE for wr in (False, True)} - PASSTHROUGH_MSRS
    # Host state: where a VM exit lands in kvm.ko (symbolic: the host is Python here).
    w(F.HOST_CR0, 0x80050033)
    w(F.HOST_CR4, 0x003726E0)
    w(F.HOST_CS_SELECTOR, 0x10)
    w(F.HOST_SS_SELECTOR, 0x18)
    w(F.HOST_TR_SELECTOR, 0x40)
    # vmx_vcpu_reset: the architectural reset state, with TR a busy 32-bit TSS.
    sregs = KvmSregs()
    sregs.cs = KvmSegment(0xFFFF0000, 0xFFFF, 0xF000, 11, 1, 0, 0, 1, 0, 0, 0, 0)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, KvmSegment(0, 0xFFFF, 0, 3, 1, 0, 0, 1, 0, 0, 0, 0))
    sregs.tr = KvmSegment(0, 0xFFFF, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0)
    sregs.ldt = KvmSegment(0, 0xFFFF, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0)
    sregs.gdt = KvmDtable(0, 0xFFFF)
    sregs.idt = KvmDtable(0, 0xFFFF)
    sregs.cr0 = 0x60000010
    set_sregs(v, sregs)
    set_regs(v, KvmRegs(rip=0xFFF0, rflags=0x2))
    w(F.GUEST_ACTIVITY_STATE, 0)
    w(F.GUEST_INTERRUPTIBILITY_INFO, 0)


# -- register ioctls ------------------------------------------------------------------------
_GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")


def get_regs(v: SimVcpu) -> KvmRegs:
    r = v.cpu.r
    regs = KvmRegs(**{name: r[i] for i, name in enumerate(_GPR_ORDER)})
    regs.rip = v.vmcs.read(F.GUEST_RIP)
    regs.rflags = v.vmcs.read(F.GUEST_RFLAGS)
    return regs


def set_regs(v: SimVcpu, regs: KvmRegs) -> None:
    for i, name in enumerate(_GPR_ORDER):
        v.cpu.r[i] = getattr(regs, name) & 0xFFFFFFFF
    # RSP lives in the VMCS, like RIP and RFLAGS: VM entry loads it from GUEST_RSP
    # (vmx_vcpu_run writes it there when kvm.ko's copy is dirty).
    v.vmcs.write(F.GUEST_RSP, regs.rsp & 0xFFFFFFFF)
    v.vmcs.write(F.GUEST_RIP, regs.rip)
    v.vmcs.write(F.GUEST_RFLAGS, regs.rflags | 0x2)


def _segment_to_ar(s: KvmSegment, unusable: bool) -> int:
    """vmx_segment_access_rights."""
    if unusable:
        return 1 << 16
    return (s.type & 0xF | (s.s & 1) << 4 | (s.dpl & 3) << 5 | (s.present & 1) << 7
            | (s.avl & 1) << 12 | (s.l & 1) << 13 | (s.db & 1) << 14 | (s.g & 1) << 15)


def vmx_set_segment(v: SimVcpu, name: str, s: KvmSegment) -> None:
    sel_f, base_f, limit_f, ar_f = SEGMENTS[name]
    unusable = bool(s.unusable) or not s.present
    if name != "ldtr" and not unusable:
        s.type |= 1  # the "Accessed" fix-up of __vmx_set_segment for an unrestricted guest
    w = v.vmcs.write
    w(sel_f, s.selector)
    w(base_f, s.base)
    w(limit_f, s.limit)
    w(ar_f, _segment_to_ar(s, unusable))


def vmx_get_segment(v: SimVcpu, name: str) -> KvmSegment:
    sel_f, base_f, limit_f, ar_f = SEGMENTS[name]
    r = v.vmcs.read
    ar = r(ar_f)
    return KvmSegment(r(base_f), r(limit_f), r(sel_f), ar & 0xF, (ar >> 7) & 1, (ar >> 5) & 3,
                      (ar >> 14) & 1, (ar >> 4) & 1, (ar >> 13) & 1, (ar >> 15) & 1,
                      (ar >> 12) & 1, (ar >> 16) & 1)


def get_sregs(v: SimVcpu) -> KvmSregs:
    r = v.vmcs.read
    s = KvmSregs()
    for kname, vname in (("cs", "cs"), ("ds", "ds"), ("es", "es"), ("fs", "fs"), ("gs", "gs"),
                         ("ss", "ss"), ("tr", "tr"), ("ldt", "ldtr")):
        setattr(s, kname, vmx_get_segment(v, vname))
    s.gdt = KvmDtable(r(F.GUEST_GDTR_BASE), r(F.GUEST_GDTR_LIMIT))
    s.idt = KvmDtable(r(F.GUEST_IDTR_BASE), r(F.GUEST_IDTR_LIMIT))
    s.cr0 = kvm_read_cr0(v)
    s.cr2 = v.cpu.cr2
    s.cr3 = v.guest_cr3
    s.cr4 = kvm_read_cr4(v)
    s.apic_base = 0xFEE00900
    return s


def set_sregs(v: SimVcpu, s: KvmSregs) -> None:
    for kname, vname in (("cs", "cs"), ("ds", "ds"), ("es", "es"), ("fs", "fs"), ("gs", "gs"),
                         ("ss", "ss"), ("tr", "tr"), ("ldt", "ldtr")):
        vmx_set_segment(v, vname, KvmSegment(**vars(getattr(s, kname))))
    w = v.vmcs.write
    w(F.GUEST_GDTR_BASE, s.gdt.base)
    w(F.GUEST_GDTR_LIMIT, s.gdt.limit)
    w(F.GUEST_IDTR_BASE, s.idt.base)
    w(F.GUEST_IDTR_LIMIT, s.idt.limit)
    vmx_set_cr0(v, s.cr0)
    vmx_set_cr4(v, s.cr4)
    v.cpu.cr2 = s.cr2 & 0xFFFFFFFF
    kvm_set_cr3(v, s.cr3)


def kvm_set_cr3(v: SimVcpu, cr3: int) -> None:
    """With EPT the guest's CR3 is the hardware's; with shadow paging the hardware's is the
    shadow root for it (vmx_load_mmu_pgd)."""
    if v.vm.shadow is None:
        v.vmcs.write(F.GUEST_CR3, cr3)
    else:
        v.vm.shadow.new_pgd(v, cr3)


def kvm_read_cr0(v: SimVcpu) -> int:
    owned = v.cr0_guest_owned
    return v.vmcs.read(F.CR0_READ_SHADOW) & ~owned | (v.vmcs.read(F.GUEST_CR0) & owned)


def kvm_read_cr4(v: SimVcpu) -> int:
    owned = v.cr4_guest_owned
    return v.vmcs.read(F.CR4_READ_SHADOW) & ~owned | (v.vmcs.read(F.GUEST_CR4) & owned)


# Without EPT the hardware always pages (it walks the shadow tables) and write-protects
# for kvm.ko even at CPL 0: KVM_VM_CR0_ALWAYS_ON = NE | PG | PE, and WP.
SHADOW_CR0_ALWAYS_ON = 0x20 | 0x80000000 | 0x1 | 0x10000
# The shadow tables use 4 KiB pages only and no global bit: the hardware CR4 keeps VMXE.
SHADOW_CR4_HW_MASK = ~(0x10 | 0x20 | 0x80) & 0xFFFFFFFF


def vmx_set_cr0(v: SimVcpu, cr0: int) -> None:
    """The guest's CR0 in the read shadow; the hardware's with KVM's always-on bits."""
    old = v.vmcs.read(F.CR0_READ_SHADOW)
    v.vmcs.write(F.CR0_READ_SHADOW, cr0)
    if v.vm.shadow is None:
        v.vmcs.write(F.GUEST_CR0, cr0 | KVM_VM_CR0_ALWAYS_ON)
        return
    v.vmcs.write(F.GUEST_CR0, cr0 | SHADOW_CR0_ALWAYS_ON)
    if (old ^ cr0) & (0x80000000 | 0x10000):  # PG or WP: the MMU's mode changed
        v.vm.shadow.reset(v)
        v.vm.shadow.load(v)


def vmx_set_cr4(v: SimVcpu, cr4: int) -> None:
    old = v.vmcs.read(F.CR4_READ_SHADOW)
    v.vmcs.write(F.CR4_READ_SHADOW, cr4)
    if v.vm.shadow is None:
        v.vmcs.write(F.GUEST_CR4, cr4 | KVM_VM_CR4_ALWAYS_ON)
        return
    v.vmcs.write(F.GUEST_CR4, (cr4 & SHADOW_CR4_HW_MASK) | KVM_VM_CR4_ALWAYS_ON)
    if (old ^ cr4) & (0x10 | 0x20 | 0x80):  # PSE PAE PGE
        v.vm.shadow.reset(v)
        v.vm.shadow.load(v)


# -- the exit-handler table --------------------------------------------------------------------

def kvm_skip_emulated_instruction(v: SimVcpu) -> int:
    rip = v.vmcs.read(F.GUEST_RIP) + v.vmcs.read(F.VM_EXIT_INSTRUCTION_LEN)
    v.vmcs.write(F.GUEST_RIP, rip & 0xFFFFFFFF)
    return 1


_CONTRIBUTORY = {X.DE, X.TS, X.NP, X.SS, X.GP}


def kvm_queue_exception(v: SimVcpu, vector: int, error_code: int | None = None) -> None:
    """Inject on the next VM entry (VM_ENTRY_INTR_INFO_FIELD, SDM 25.8.3).

    kvm_multiple_exception: with an exception already pending (one whose delivery an exit
    interrupted), the SDM's double-fault rules apply: a pending #DF becomes a triple
    fault, a contributory/page-fault pair becomes #DF, otherwise the new one replaces it
    (re-executing the instruction will raise the old one again)."""
    pending = v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
    if pending & INTR_INFO_VALID_MASK and (pending >> 8) & 7 == 3:
        prev = pending & 0xFF
        if prev == X.DF:
            v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0)
            v.requests.add("triple_fault")
            return
        if (prev in _CONTRIBUTORY and vector in _CONTRIBUTORY) or (
                prev == X.PF and (vector in _CONTRIBUTORY or vector == X.PF)):
            vector, error_code = X.DF, 0
    info = vector | INTR_TYPE_HARD_EXCEPTION | INTR_INFO_VALID_MASK
    if error_code is not None:
        info |= INTR_INFO_DELIVER_CODE_MASK
        v.vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, error_code)
    v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info)


def handle_exception_nmi(v: SimVcpu) -> int:
    from vmsim.kvm import emulate

    intr = v.vmcs.read(F.VM_EXIT_INTR_INFO)
    vector = intr & 0xFF
    code = v.vmcs.read(F.VM_EXIT_INTR_ERROR_CODE) if intr & INTR_INFO_DELIVER_CODE_MASK else None
    if vector == X.UD:
        # handle_ud: try the emulator (it knows instructions a CPU may lack); else #UD.
        return emulate.x86_emulate_instruction(v, trap_ud=True)
    if vector == X.PF and v.vm.shadow is not None:
        # Shadow paging: every guest #PF comes here first (kvm_mmu_page_fault).
        return v.vm.shadow.page_fault(v, v.vmcs.read(F.EXIT_QUALIFICATION), code or 0)
    # #DB #AC #MC and anything else intercepted: reflect it into the guest.
    kvm_queue_exception(v, vector, code)
    return 1


def handle_triple_fault(v: SimVcpu) -> int:
    v.kvm_run.exit_reason = KVM_EXIT_SHUTDOWN
    return 0


def handle_io(v: SimVcpu) -> int:
    from vmsim.kvm import emulate, x86

    q = v.vmcs.read(F.EXIT_QUALIFICATION)
    size, is_in, string = (q & 7) + 1, bool(q & 8), bool(q & 16)
    port = q >> 16
    v.stat["io_exits"] += 1
    if string:
        return emulate.x86_emulate_instruction(v)
    return x86.kvm_fast_pio(v, size, port, is_in)


def handle_cpuid(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    return x86.kvm_emulate_cpuid(v)


def handle_halt(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    return x86.kvm_emulate_halt(v)


def handle_vmcall(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    return x86.kvm_emulate_hypercall(v)


def handle_rdmsr(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    return x86.kvm_emulate_rdmsr(v)


def handle_wrmsr(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    return x86.kvm_emulate_wrmsr(v)


def handle_cr(v: SimVcpu) -> int:
    from vmsim.kvm import x86

    q = v.vmcs.read(F.EXIT_QUALIFICATION)
    cr, access, reg = q & 0xF, (q >> 4) & 3, (q >> 8) & 0xF
    if access == 0:
        err = x86.kvm_set_cr(v, cr, v.cpu.r[reg])
        if err:
            kvm_queue_exception(v, X.GP, 0)
            return 1
        return kvm_skip_emulated_instruction(v)
    if access == 1:
        v.cpu.r[reg] = x86.kvm_get_cr(v, cr) & 0xFFFFFFFF
        return kvm_skip_emulated_instruction(v)
    kvm_queue_exception(v, X.UD)  # CLTS / LMSW are outside vmsim's subset
    return 1


def handle_invlpg(v: SimVcpu) -> int:
    gva = v.vmcs.read(F.EXIT_QUALIFICATION)
    if v.vm.shadow is not None:
        v.vm.shadow.invlpg(v, gva)  # kvm_mmu_invlpg: drop the shadow entry
    else:
        v.cpu.invlpg(gva)
    return kvm_skip_emulated_instruction(v)


def handle_ept_violation(v: SimVcpu) -> int:
    """The TDP page-fault path: map guest RAM on first touch; MMIO goes to the emulator
    (kvm_mmu_page_fault -> x86_emulate_instruction), which exits as KVM_EXIT_MMIO."""
    from vmsim.kvm import emulate
    from vmsim.kvm.tdp_mmu import kvm_tdp_page_fault

    if v.vm.tdp is None:  # no EPT: an access that met no memory slot at all
        return emulate.x86_emulate_instruction(v)
    return kvm_tdp_page_fault(v, v.vmcs.read(F.GUEST_PHYSICAL_ADDRESS))


def handle_ept_misconfig(v: SimVcpu) -> int:
    """KVM's fast MMIO path: the misconfigured leaf marks MMIO; emulate the access."""
    from vmsim.kvm import emulate

    return emulate.x86_emulate_instruction(v)


KVM_VMX_EXIT_HANDLERS: dict[int, Callable[[SimVcpu], int]] = {
    ExitReason.EXCEPTION_NMI: handle_exception_nmi,
    ExitReason.TRIPLE_FAULT: handle_triple_fault,
    ExitReason.IO_INSTRUCTION: handle_io,
    ExitReason.CPUID: handle_cpuid,
    ExitReason.HLT: handle_halt,
    ExitReason.VMCALL: handle_vmcall,
    ExitReason.MSR_READ: handle_rdmsr,
    ExitReason.MSR_WRITE: handle_wrmsr,
    ExitReason.CR_ACCESS: handle_cr,
    ExitReason.INVLPG: handle_invlpg,
    ExitReason.EPT_VIOLATION: handle_ept_violation,
    ExitReason.EPT_MISCONFIG: handle_ept_misconfig,
}
# No RDTSC handler, as in Linux: kvm-intel never sets RDTSC exiting (it offsets the TSC).
