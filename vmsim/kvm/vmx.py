"""kvm-intel: the VMCS kvm.ko builds, register ioctls, and the exit-handler table
(LNX arch/x86/kvm/vmx/vmx.c: init_vmcs, vmx_set_segment, vmx_vcpu_run, vmx_handle_exit,
kvm_vmx_exit_handlers).

Handlers follow Linux's contract: return 1 to resume the guest, 0 when `kvm_run` is
filled and KVM_RUN goes back to userspace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    SECONDARY_EXEC_WBINVD_EXITING,
    VM_ENTRY_LOAD_IA32_EFER,
    VM_EXIT_ACK_INTR_ON_EXIT,
    VM_EXIT_HOST_ADDR_SPACE_SIZE,
    VM_EXIT_LOAD_IA32_EFER,
    VM_EXIT_LOAD_IA32_PAT,
    ExitReason,
    Vmcs,
)
from vmsim.hw.vmcs import F_INT as F  # (plain ints: see vmsim.hw.vmcs.F_INT)
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
X86_EFLAGS_TF = 0x100
DR6_BS = 1 << 14
# MSRs kvm-intel lets the guest touch without exits (vmx_disable_intercept_for_msr).
PASSTHROUGH_MSRS = {(0x174, False), (0x174, True), (0x175, False), (0x175, True),
                    (0x176, False), (0x176, True), (0x10, False)}
MSR_RANGE = range(0x0, 0x2000)
# The (msr, is_write) pairs that exit: one shared frozenset (nothing changes a vCPU's bitmap
# in place), built once rather than for every vCPU (the history's rebuilds make many).
EXITING_MSRS = frozenset((msr, wr) for msr in MSR_RANGE for wr in (False, True)) - PASSTHROUGH_MSRS


# -- the host: what kvm-intel writes into the VMCS host-state area ------------------------------
# The simulated host is x86-64 Linux on CPU 0. Values the kernel fixes are Linux's; values
# that depend on the build, KASLR or the running process (symbol addresses, stacks, page
# tables) are examples in the right region of the x86-64 memory map
# (LNX Documentation/arch/x86/x86_64/mm.rst), marked "example".
KERNEL_CS = 2 * 8  # __KERNEL_CS: GDT_ENTRY_KERNEL_CS * 8 (arch/x86/include/asm/segment.h)
KERNEL_DS = 3 * 8  # __KERNEL_DS: GDT_ENTRY_KERNEL_DS * 8
GDT_ENTRY_TSS = 8  # the TSS descriptor's GDT index: TR = 0x40


@dataclass(frozen=True)
class LinuxHost:
    """What the running host kernel gives kvm-intel for the host-state area."""

    # read_cr0(): CR0_STATE = PE MP ET NE WP AM PG (arch/x86/include/asm/processor-flags.h).
    cr0: int = 0x80050033
    # __read_cr3(): the QEMU process's page-table root | its PCID (kern_pcid(asid 0) = 1),
    # example physical address.
    cr3: int = 0x000000010B8CA000 | 1
    # cr4_read_shadow(): PAE MCE PGE OSFXSR OSXMMEXCPT VMXE (set by kvm's hardware_enable)
    # FSGSBASE PCIDE OSXSAVE SMEP SMAP, what Linux turns on on a Broadwell-class core.
    cr4: int = 0x003726E0
    # The read-only IDT alias, CPU_ENTRY_AREA_RO_IDT (store_idt in hardware_setup).
    idt_base: int = 0xFFFFFE0000000000
    # CPU 0's struct cpu_entry_area follows it (arch/x86/include/asm/cpu_entry_area.h):
    # gdt page, entry_stack_page, then tss (without the per-CPU area randomization of 6.2+).
    gdt_base: int = 0xFFFFFE0000001000  # get_current_gdt_ro()
    tr_base: int = 0xFFFFFE0000003000  # &get_cpu_entry_area(cpu)->tss.x86_tss
    sysenter_esp: int = 0xFFFFFE0000003000  # cpu_entry_stack(cpu) + 1: the entry stack's top
    sysenter_cs: int = KERNEL_CS  # syscall_init: wrmsr(MSR_IA32_SYSENTER_CS, __KERNEL_CS)
    sysenter_eip: int = 0xFFFFFFFF81A01B40  # entry_SYSENTER_compat, example kernel-text address
    # kvm-intel's VM-exit entry point, vmx_vmexit (arch/x86/kvm/vmx/vmenter.S): example
    # address in the module mapping space (ffffffffa0000000-).
    vmx_vmexit: int = 0xFFFFFFFFA04C2E20
    # __vmx_vcpu_run's stack pointer, in the vCPU thread's kernel stack (vmalloc area,
    # ffffc90000000000-): example.
    vcpu_thread_kernel_rsp: int = 0xFFFFC90000A3BD68
    # rdmsrl(MSR_EFER) at kvm_x86_vendor_init (host_efer): SCE LME LMA NXE.
    efer: int = 0x0D01
    # MSR_IA32_CR_PAT as pat_bp_init programs it: WB WC UC- UC WB WP UC- WT.
    pat: int = 0x0407050600070106
    # vmx_prepare_switch_to_guest: a 64-bit process's FS/GS selectors are 0; FS base is
    # the QEMU vCPU thread's TLS (current->thread.fsbase, example user address), GS base
    # the kernel's per-CPU base (cpu_kernelmode_gs_base(cpu), example direct-map address).
    fs_sel: int = 0
    gs_sel: int = 0
    fs_base: int = 0x00007F2B8CDFF6C0
    gs_base: int = 0xFFFF88803EC00000


LINUX_HOST = LinuxHost()
# Names for the host addresses above, for views that show where an exit goes.
HOST_SYMBOLS = {LINUX_HOST.vmx_vmexit: "vmx_vmexit",
                LINUX_HOST.sysenter_eip: "entry_SYSENTER_compat",
                LINUX_HOST.idt_base: "CPU_ENTRY_AREA_RO_IDT"}

# VM-exit controls kvm-intel asks for (setup_vmcs_config: SAVE_DEBUG_CONTROLS, ACK_INTR_ON_EXIT
# and, on x86-64, HOST_ADDR_SPACE_SIZE required; LOAD_IA32_PAT optional) over the
# processor's default1 bits (IA32_VMX_EXIT_CTLS, SDM App. A.4).
VM_EXIT_DEFAULT1 = 0x00036DFF
VM_ENTRY_DEFAULT1 = 0x000011FF


def vmx_vmexit_ctrl() -> int:
    """vmx_vmexit_ctrl: vmcs_config.vmexit_ctrl less what is switched per guest (EFER).
    vmsim's kvm.ko keeps the guest's PAT in the vCPU's MSRs, so it does not ask the CPU to
    save it (Linux also sets VM_EXIT_SAVE_IA32_PAT and VM_ENTRY_LOAD_IA32_PAT)."""
    return (VM_EXIT_DEFAULT1 | VM_EXIT_HOST_ADDR_SPACE_SIZE | VM_EXIT_ACK_INTR_ON_EXIT
            | VM_EXIT_LOAD_IA32_PAT)


def vmx_set_constant_host_state(vmcs: Vmcs) -> None:
    """vmx_set_constant_host_state: the host fields that stay for the vCPU's lifetime."""
    w, h = vmcs.write, LINUX_HOST
    w(F.HOST_CR0, h.cr0)  # read_cr0()
    w(F.HOST_CR3, h.cr3)  # __read_cr3(); vmx_vcpu_run refreshes it if the task's CR3 changes
    w(F.HOST_CR4, h.cr4)  # cr4_read_shadow()
    w(F.HOST_CS_SELECTOR, KERNEL_CS)  # __KERNEL_CS
    w(F.HOST_DS_SELECTOR, 0)  # x86-64: null, so switching back need not reload DS/ES
    w(F.HOST_ES_SELECTOR, 0)
    w(F.HOST_SS_SELECTOR, KERNEL_DS)  # __KERNEL_DS
    w(F.HOST_TR_SELECTOR, GDT_ENTRY_TSS * 8)
    w(F.HOST_IDTR_BASE, h.idt_base)  # host_idt_base
    w(F.HOST_RIP, h.vmx_vmexit)  # every VM exit continues at vmx_vmexit
    w(F.HOST_IA32_SYSENTER_CS, h.sysenter_cs)  # rdmsr(MSR_IA32_SYSENTER_CS)
    w(F.HOST_IA32_SYSENTER_EIP, h.sysenter_eip)  # rdmsrl(MSR_IA32_SYSENTER_EIP)
    if vmx_vmexit_ctrl() & VM_EXIT_LOAD_IA32_PAT:
        w(F.HOST_IA32_PAT, h.pat)  # rdmsr(MSR_IA32_CR_PAT)
    w(F.HOST_IA32_EFER, h.efer)  # cpu_has_load_ia32_efer(): host_efer


def vmx_vcpu_load_vmcs(vmcs: Vmcs, cpu: int) -> None:
    """vmx_vcpu_load_vmcs, on a CPU the vCPU was not loaded on: the per-CPU TSS, GDT and
    SYSENTER stack ("Linux uses per-cpu TSS and GDT"). vmsim's host has CPU 0 only."""
    w, h = vmcs.write, LINUX_HOST
    w(F.HOST_TR_BASE, h.tr_base)
    w(F.HOST_GDTR_BASE, h.gdt_base)
    w(F.HOST_IA32_SYSENTER_ESP, h.sysenter_esp)


def vmx_prepare_switch_to_guest(vmcs: Vmcs) -> None:
    """vmx_prepare_switch_to_guest -> vmx_set_host_fs_gs: the host's FS and GS (a selector
    with RPL or TI set would fail the entry checks, so it is written as 0)."""
    w, h = vmcs.write, LINUX_HOST
    w(F.HOST_FS_SELECTOR, h.fs_sel if not h.fs_sel & 7 else 0)
    w(F.HOST_GS_SELECTOR, h.gs_sel if not h.gs_sel & 7 else 0)
    w(F.HOST_FS_BASE, h.fs_base)
    w(F.HOST_GS_BASE, h.gs_base)


def vmx_update_host_rsp(vmcs: Vmcs, host_rsp: int) -> None:
    """vmx_update_host_rsp, called from __vmx_vcpu_run with its own stack pointer: the
    stack the exit returns on."""
    vmcs.write(F.HOST_RSP, host_rsp)


def update_transition_efer(v: SimVcpu) -> None:
    """update_transition_efer with "load IA32_EFER": the guest's EFER (no LME without
    LMA; NX forced on for shadow paging) and the host's are switched by the CPU at entry
    and exit when they differ (add_atomic_switch_msr_special)."""
    guest_efer = 0 if v.vm.shadow is None else 1 << 11  # vmsim's guests never set EFER
    vmcs = v.vmcs
    if guest_efer != LINUX_HOST.efer:
        vmcs.write(F.GUEST_IA32_EFER, guest_efer)
        vmcs.write(F.HOST_IA32_EFER, LINUX_HOST.efer)
        vmcs.write(F.VM_ENTRY_CONTROLS, vmcs.read(F.VM_ENTRY_CONTROLS) | VM_ENTRY_LOAD_IA32_EFER)
        vmcs.write(F.VM_EXIT_CONTROLS, vmcs.read(F.VM_EXIT_CONTROLS) | VM_EXIT_LOAD_IA32_EFER)


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
    # (WBINVD exiting: in setup_vmcs_config's optional set, kept where the CPU has it)
    w(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_ENABLE_EPT | SECONDARY_EXEC_UNRESTRICTED_GUEST
      | SECONDARY_EXEC_WBINVD_EXITING)
    w(F.EXCEPTION_BITMAP, KVM_EXCEPTION_BITMAP)
    if v.vm.tdp is not None:
        v.vm.tdp.load(v)
    else:
        # ept=0 (setup_vmcs_config, update_exception_bitmap): the shadow MMU must see CR3
        # loads and stores, INVLPG and every #PF; no EPT means no unrestricted guest either.
        w(F.CPU_BASED_VM_EXEC_CONTROL, vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
          | CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_CR3_STORE_EXITING | CPU_BASED_INVLPG_EXITING)
        w(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_WBINVD_EXITING)
        w(F.EXCEPTION_BITMAP, KVM_EXCEPTION_BITMAP | (1 << X.PF))
        v.cr0_guest_owned = 0x8  # TS; WP is KVM's now (it write-protects guest tables)
        v.cr4_guest_owned = 0
    w(F.PAGE_FAULT_ERROR_CODE_MASK, 0)
    w(F.PAGE_FAULT_ERROR_CODE_MATCH, 0)
    w(F.CR3_TARGET_COUNT, 0)
    w(F.VM_EXIT_CONTROLS, vmx_vmexit_ctrl())
    w(F.VM_ENTRY_CONTROLS, VM_ENTRY_DEFAULT1)
    w(F.CR0_GUEST_HOST_MASK, ~v.cr0_guest_owned & 0xFFFFFFFF)
    w(F.CR4_GUEST_HOST_MASK, ~v.cr4_guest_owned & 0xFFFFFFFF)
    w(F.TSC_OFFSET, 0)
    w(F.VMCS_LINK_POINTER, 0xFFFFFFFFFFFFFFFF)
    vmcs.msr_bitmap = EXITING_MSRS
    # Host state (init_vmcs): where every VM exit lands. FS/GS are 0 until the first
    # entry's vmx_prepare_switch_to_guest; the per-CPU fields come with vmx_vcpu_load_vmcs,
    # done here too because kvm_arch_vcpu_create loads the new vCPU on its CPU.
    w(F.HOST_FS_SELECTOR, 0)
    w(F.HOST_GS_SELECTOR, 0)
    vmx_set_constant_host_state(vmcs)
    w(F.HOST_FS_BASE, 0)
    w(F.HOST_GS_BASE, 0)
    vmx_vcpu_load_vmcs(vmcs, 0)
    # vmsim's host thread and its stack never change, so what Linux writes before each
    # entry (and then only when it changed) is written once, here.
    vmx_prepare_switch_to_guest(vmcs)
    vmx_update_host_rsp(vmcs, LINUX_HOST.vcpu_thread_kernel_rsp)
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
    update_transition_efer(v)  # vmx_vcpu_reset -> vmx_set_efer(vcpu, 0) -> setup_msrs


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
    rflags = v.vmcs.read(F.GUEST_RFLAGS)  # the old value: not traced after setting TF
    rip = v.vmcs.read(F.GUEST_RIP) + v.vmcs.read(F.VM_EXIT_INSTRUCTION_LEN)
    v.vmcs.write(F.GUEST_RIP, rip & 0xFFFFFFFF)
    # "skipping an emulated instruction also counts": the STI / MOV SS shadow it was in
    # is over (vmx_set_interrupt_shadow(vcpu, 0)).
    if v.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & 3:
        v.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO,
                     v.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & ~3)
    if rflags & X86_EFLAGS_TF:
        kvm_vcpu_do_singlestep(v)
    return 1


def kvm_vcpu_do_singlestep(v: SimVcpu) -> None:
    """The single-step #DB trap of an instruction kvm.ko completed for the guest (the CPU
    never retired it): queued with DR6.BS as payload (kvm_queue_exception_p)."""
    kvm_queue_exception(v, X.DB, dr6_payload=DR6_BS)


_CONTRIBUTORY = {X.DE, X.TS, X.NP, X.SS, X.GP}


def kvm_queue_exception(v: SimVcpu, vector: int, error_code: int | None = None,
                        dr6_payload: int | None = None) -> None:
    """Inject on the next VM entry (VM_ENTRY_INTR_INFO_FIELD, SDM 25.8.3).

    A #DB's payload goes to the guest's DR6 as kvm_deliver_exception_payload does (B0-B3
    replaced, the rest ORed in); vmsim writes it at once, not as the event is injected.

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
    if dr6_payload is not None:
        v.cpu.dr6 = (v.cpu.dr6 & ~0xF) | dr6_payload
    info = vector | INTR_TYPE_HARD_EXCEPTION | INTR_INFO_VALID_MASK
    if error_code is not None:
        info |= INTR_INFO_DELIVER_CODE_MASK
        v.vmcs.write(F.VM_ENTRY_EXCEPTION_ERROR_CODE, error_code)
    v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info)


_LATE: tuple | None = None


def _late() -> tuple:
    """The emulator and x86 (they import this module), bound on first use: an import
    statement in a handler cost a microsecond at every exit it handles (3-6 us in the GUI,
    where PySide's import hook takes each import statement)."""
    global _LATE
    import vmsim.kvm.emulate as emulate
    import vmsim.kvm.x86 as x86

    _LATE = (emulate, x86)
    return _LATE


def handle_exception_nmi(v: SimVcpu) -> int:
    emulate = (_LATE or _late())[0]

    intr = v.vmcs.read(F.VM_EXIT_INTR_INFO)
    vector = intr & 0xFF
    code = v.vmcs.read(F.VM_EXIT_INTR_ERROR_CODE) if intr & INTR_INFO_DELIVER_CODE_MASK else None
    if vector == X.UD:
        # handle_ud: try the emulator (it knows instructions a CPU may lack); else #UD.
        return emulate.x86_emulate_instruction(v, trap_ud=True)
    if vector == X.PF and v.vm.shadow is not None:
        # Shadow paging: every guest #PF comes here first (kvm_mmu_page_fault).
        return v.vm.shadow.page_fault(v, v.vmcs.read(F.EXIT_QUALIFICATION), code or 0)
    if vector == X.DB:
        # The exit qualification holds what the CPU did not write to DR6 (B0-B3, BD, BS):
        # the payload kvm.ko gives the guest's DR6 as it reflects the #DB.
        kvm_queue_exception(v, vector, dr6_payload=v.vmcs.read(F.EXIT_QUALIFICATION))
        return 1
    # #AC #MC and anything else intercepted: reflect it into the guest.
    kvm_queue_exception(v, vector, code)
    return 1


def handle_triple_fault(v: SimVcpu) -> int:
    v.kvm_run.exit_reason = KVM_EXIT_SHUTDOWN
    return 0


def handle_io(v: SimVcpu) -> int:
    emulate, x86 = _LATE or _late()
    q = v.vmcs.read(F.EXIT_QUALIFICATION)
    size, is_in, string = (q & 7) + 1, bool(q & 8), bool(q & 16)
    port = q >> 16
    v.stat["io_exits"] += 1
    if string:
        return emulate.x86_emulate_instruction(v)
    return x86.kvm_fast_pio(v, size, port, is_in)


def handle_cpuid(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    return x86.kvm_emulate_cpuid(v)


def handle_halt(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    return x86.kvm_emulate_halt(v)


def handle_invd(v: SimVcpu) -> int:
    """kvm_emulate_invd: "Treat an INVD instruction as a NOP and just skip it" (dropping
    the caches without writing them back could lose the host's data)."""
    return kvm_skip_emulated_instruction(v)


def handle_wbinvd(v: SimVcpu) -> int:
    """kvm_emulate_wbinvd: a write-back is needed only with non-coherent DMA (an assigned
    device), which vmsim's VMs have not; the instruction is skipped."""
    return kvm_skip_emulated_instruction(v)


def handle_vmcall(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    return x86.kvm_emulate_hypercall(v)


def handle_rdmsr(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    return x86.kvm_emulate_rdmsr(v)


def handle_wrmsr(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    return x86.kvm_emulate_wrmsr(v)


def handle_cr(v: SimVcpu) -> int:
    x86 = (_LATE or _late())[1]
    q = v.vmcs.read(F.EXIT_QUALIFICATION)
    cr, access, reg = q & 0xF, (q >> 4) & 3, (q >> 8) & 0xF
    ev = v.events
    if access == 0:
        val = kvm_register_read(v, reg)
        if ev is not None and ev.build("kvm_cr"):
            ev.tp["kvm_cr"].fire(v.name, 1, cr, val)  # trace_kvm_cr_write
        err = x86.kvm_set_cr(v, cr, val)
        if err:
            kvm_queue_exception(v, X.GP, 0)
            return 1
        return kvm_skip_emulated_instruction(v)
    if access == 1:
        val = x86.kvm_get_cr(v, cr) & 0xFFFFFFFF
        if ev is not None and ev.build("kvm_cr"):
            ev.tp["kvm_cr"].fire(v.name, 0, cr, val)  # trace_kvm_cr_read
        kvm_register_write(v, reg, val)
        return kvm_skip_emulated_instruction(v)
    if access == 3:  # LMSW: its source data is in the qualification
        val = (q >> 16) & 0xF
        if ev is not None and ev.build("kvm_cr"):
            ev.tp["kvm_cr"].fire(v.name, 1, 0, (kvm_read_cr0(v) & ~0xF) | val)
        x86.kvm_lmsw(v, val)
        return kvm_skip_emulated_instruction(v)
    # CLTS: kvm.ko gives the guest CR0.TS, so this exit never comes (Linux since 6.6 calls
    # it a KVM bug); before, vmx_set_cr0 cleared TS, as here.
    vmx_set_cr0(v, kvm_read_cr0(v) & ~0x8)
    if ev is not None and ev.build("kvm_cr"):
        ev.tp["kvm_cr"].fire(v.name, 1, 0, kvm_read_cr0(v))
    return kvm_skip_emulated_instruction(v)


def kvm_register_read(v: SimVcpu, reg: int) -> int:
    """A guest GPR by its number: kvm.ko keeps them in vcpu->arch.regs, but RSP lives in the
    VMCS (VCPU_REGS_RSP is read from GUEST_RSP)."""
    return v.vmcs.read(F.GUEST_RSP) & 0xFFFFFFFF if reg == 4 else v.cpu.r[reg]


def kvm_register_write(v: SimVcpu, reg: int, val: int) -> None:
    """kvm_register_write: RSP goes to GUEST_RSP (Linux marks it dirty and vmx_vcpu_run
    writes it there before the entry), or the entry would load the old one back."""
    v.cpu.r[reg] = val
    if reg == 4:
        v.vmcs.write(F.GUEST_RSP, val)


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
    from vmsim.kvm.tdp_mmu import kvm_tdp_page_fault

    emulate = (_LATE or _late())[0]
    gpa = v.vmcs.read(F.GUEST_PHYSICAL_ADDRESS)
    ev = v.events
    if ev is not None and ev.build("kvm_page_fault"):
        # trace_kvm_page_fault(gpa, exit_qualification), as handle_ept_violation does.
        ev.tp["kvm_page_fault"].fire(v.name, gpa, v.vmcs.read(F.EXIT_QUALIFICATION), gpa,
                                     "EPT violation")
    if v.vm.tdp is None:  # no EPT: an access that met no memory slot at all
        return emulate.x86_emulate_instruction(v)
    return kvm_tdp_page_fault(v, gpa)


def handle_ept_misconfig(v: SimVcpu) -> int:
    """KVM's fast MMIO path: the misconfigured leaf marks MMIO; emulate the access."""
    return (_LATE or _late())[0].x86_emulate_instruction(v)


KVM_VMX_EXIT_HANDLERS: dict[int, Callable[[SimVcpu], int]] = {
    ExitReason.EXCEPTION_NMI: handle_exception_nmi,
    ExitReason.TRIPLE_FAULT: handle_triple_fault,
    ExitReason.IO_INSTRUCTION: handle_io,
    ExitReason.CPUID: handle_cpuid,
    ExitReason.HLT: handle_halt,
    ExitReason.VMCALL: handle_vmcall,
    ExitReason.INVD: handle_invd,
    ExitReason.WBINVD: handle_wbinvd,
    ExitReason.MSR_READ: handle_rdmsr,
    ExitReason.MSR_WRITE: handle_wrmsr,
    ExitReason.CR_ACCESS: handle_cr,
    ExitReason.INVLPG: handle_invlpg,
    ExitReason.EPT_VIOLATION: handle_ept_violation,
    ExitReason.EPT_MISCONFIG: handle_ept_misconfig,
}
# No RDTSC handler, as in Linux: kvm-intel never sets RDTSC exiting (it offsets the TSC).
