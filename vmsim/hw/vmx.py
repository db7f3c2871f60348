"""VMX non-root operation: VM entry, the exit decisions, and VM exit (SDM Vol. 3C ch. 26-28).

`Vmx` wraps the CPU the way the hardware's VMX support wraps a core. `vm_entry()` checks
the guest-state area and loads it; `run()` executes the guest until something exits;
the CPU asks `exit_decision()` at every interceptable instruction or event, which reads
the VM-execution controls; `vm_exit()` stores the guest state and the exit information
(reason, qualification, instruction length, guest-linear and guest-physical address).

VM entry also checks the host-state area (SDM "Checks on Host Control Registers, MSRs,
and SSP", "Checks on Host Segment and Descriptor-Table Registers", "Checks Related to
Address-Space Size"), and every VM exit loads it (SDM "Loading Host State") into
`Vmx.host_cpu`, the registers of the physical CPU in VMX root operation: where the CPU
goes back to (HOST_RIP = kvm-intel's vmx_vmexit), on which stack, with which CR3. The
host code itself is Python (vmsim.kvm), so nothing executes at HOST_RIP: `host_cpu` is
the state a real exit would leave, for students and tests to look at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

from vmsim.events import EventStream
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import AR_UNUSABLE, EFLAGS_IF, Cpu, Intercept, Segment, StopReason
from vmsim.hw.ept import EPT_VIOLATION_GVA_IS_VALID, Ept
from vmsim.hw.exceptions import Unsupported
from vmsim.hw.hostmem import HostPages, HostPhysical
from vmsim.hw.vmcs import (
    CPU_BASED_ACTIVATE_SECONDARY_CONTROLS,
    CPU_BASED_CR3_LOAD_EXITING,
    CPU_BASED_CR3_STORE_EXITING,
    CPU_BASED_HLT_EXITING,
    CPU_BASED_INTR_WINDOW_EXITING,
    CPU_BASED_INVLPG_EXITING,
    CPU_BASED_RDTSC_EXITING,
    CPU_BASED_UNCOND_IO_EXITING,
    CPU_BASED_USE_IO_BITMAPS,
    CPU_BASED_USE_MSR_BITMAPS,
    CPU_BASED_USE_TSC_OFFSETTING,
    GUEST_ACTIVITY_ACTIVE,
    GUEST_ACTIVITY_HLT,
    GUEST_INTR_STATE_MOV_SS,
    GUEST_INTR_STATE_STI,
    GUEST_SEGMENT_FIELDS,
    INTR_INFO_DELIVER_CODE_MASK,
    INTR_INFO_VALID_MASK,
    INTR_TYPE_EXT_INTR,
    INTR_TYPE_HARD_EXCEPTION,
    INTR_TYPE_SOFT_EXCEPTION,
    INTR_TYPE_SOFT_INTR,
    LINEAR_ADDR_BITS,
    PHYS_ADDR_BITS,
    SECONDARY_EXEC_ENABLE_EPT,
    SECONDARY_EXEC_UNRESTRICTED_GUEST,
    SECONDARY_EXEC_WBINVD_EXITING,
    VM_ENTRY_IA32E_MODE,
    VM_ENTRY_LOAD_IA32_EFER,
    VM_ENTRY_LOAD_IA32_PAT,
    VM_EXIT_ACK_INTR_ON_EXIT,
    VM_EXIT_HOST_ADDR_SPACE_SIZE,
    VM_EXIT_LOAD_IA32_EFER,
    VM_EXIT_LOAD_IA32_PAT,
    VM_EXIT_SAVE_IA32_EFER,
    VM_EXIT_SAVE_IA32_PAT,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
    VMX_EXIT_REASONS_FAILED_VMENTRY,
    ExitReason,
    F,
    Vmcs,
)
from vmsim.hw.vmcs import F_INT as FI  # (plain ints, for the paths run at every exit)
from vmsim.msr_index import (
    MSR_IA32_CR_PAT,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
)

# Segment registers in VMCS order with their field encodings (selector, base, limit, AR).
SEGMENTS = {
    "es": (F.GUEST_ES_SELECTOR, F.GUEST_ES_BASE, F.GUEST_ES_LIMIT, F.GUEST_ES_AR_BYTES),
    "cs": (F.GUEST_CS_SELECTOR, F.GUEST_CS_BASE, F.GUEST_CS_LIMIT, F.GUEST_CS_AR_BYTES),
    "ss": (F.GUEST_SS_SELECTOR, F.GUEST_SS_BASE, F.GUEST_SS_LIMIT, F.GUEST_SS_AR_BYTES),
    "ds": (F.GUEST_DS_SELECTOR, F.GUEST_DS_BASE, F.GUEST_DS_LIMIT, F.GUEST_DS_AR_BYTES),
    "fs": (F.GUEST_FS_SELECTOR, F.GUEST_FS_BASE, F.GUEST_FS_LIMIT, F.GUEST_FS_AR_BYTES),
    "gs": (F.GUEST_GS_SELECTOR, F.GUEST_GS_BASE, F.GUEST_GS_LIMIT, F.GUEST_GS_AR_BYTES),
    "ldtr": (F.GUEST_LDTR_SELECTOR, F.GUEST_LDTR_BASE, F.GUEST_LDTR_LIMIT,
             F.GUEST_LDTR_AR_BYTES),
    "tr": (F.GUEST_TR_SELECTOR, F.GUEST_TR_BASE, F.GUEST_TR_LIMIT, F.GUEST_TR_AR_BYTES),
}
CPU_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")  # the order of Cpu.seg
_CPU_SEGMENT_FIELDS = tuple(tuple(int(f) for f in SEGMENTS[n]) for n in CPU_SEGMENTS)
_CPU_SEGMENT_FIELD_LIST = tuple(f for fs in _CPU_SEGMENT_FIELDS for f in fs)
_LDTR_FIELDS, _TR_FIELDS = (tuple(int(f) for f in SEGMENTS[n]) for n in ("ldtr", "tr"))
# What check_guest_state's register checks (_check_guest_registers) read: the controls
# that make the guest unrestricted, the entry controls and MSRs, CR0, the link pointer,
# every segment register's selector, limit and access rights, the GDTR and IDTR limits.
_GUEST_CHECK_FIELDS = (
    F.CPU_BASED_VM_EXEC_CONTROL.value, F.SECONDARY_VM_EXEC_CONTROL.value,
    F.VM_ENTRY_CONTROLS.value, F.GUEST_IA32_PAT.value, F.GUEST_IA32_EFER.value,
    F.GUEST_CR0.value, F.VMCS_LINK_POINTER.value,
    *(int(f) for sel, _base, limit, ar in SEGMENTS.values() for f in (sel, limit, ar)),
    F.GUEST_GDTR_LIMIT.value, F.GUEST_IDTR_LIMIT.value)
# Everything check_guest_state reads: the fields above, those it reads on every entry,
# and the bits of RFLAGS it looks at (1, 3, 5, IF, 15, VM, 22-63). A pass is a function of
# these alone: while they are what they were at the last pass, the entry passes again.
_GUEST_PASS_FIELDS = (*_GUEST_CHECK_FIELDS, F.GUEST_CR4.value,
                      F.VM_ENTRY_INTR_INFO_FIELD.value, F.GUEST_ACTIVITY_STATE.value,
                      F.GUEST_INTERRUPTIBILITY_INFO.value)
_RFLAGS_CHECKED = 0x2 | 0x8 | 0x20 | 0x200 | 0x8000 | 0x20000 | ~0x3FFFFF

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1 << 0, 1 << 8, 1 << 10, 1 << 11
EFER_VALID = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX  # the EFER bits an Intel CPU has
PAT_MEMORY_TYPES = (0, 1, 4, 5, 6, 7)  # UC WC WT WP WB UC-: 2 and 3 are reserved


def pat_error(field: str, pat: int) -> str:
    """Why an IA32_PAT value fails the VM-entry check (each of its 8 entries a valid
    memory type), or "" when it passes."""
    bad = [i for i in range(8) if (pat >> 8 * i) & 0xFF not in PAT_MEMORY_TYPES]
    return (f"{field} {pat:#018x}: entry {bad[0]} is not a valid memory type (0 1 4 5 6 7)"
            if bad else "")
# The simulated processor runs a 64-bit host kernel: it is in IA-32e mode whenever it
# executes VMLAUNCH/VMRESUME (SDM "Checks Related to Address-Space Size").
HOST_IN_IA32E_MODE = True
# Host selectors in VMCS order (HOST_ES_SELECTOR 0x0C00 ... HOST_TR_SELECTOR 0x0C0C).
HOST_SELECTORS = {"es": F.HOST_ES_SELECTOR, "cs": F.HOST_CS_SELECTOR, "ss": F.HOST_SS_SELECTOR,
                  "ds": F.HOST_DS_SELECTOR, "fs": F.HOST_FS_SELECTOR, "gs": F.HOST_GS_SELECTOR,
                  "tr": F.HOST_TR_SELECTOR}
# The host's own interrupts that end a guest's run with an external-interrupt exit, with
# Linux's vectors (arch/x86/include/asm/irq_vectors.h): the reschedule IPI that kicks a
# vCPU (kvm_vcpu_kick -> smp_send_reschedule), the host's local APIC timer tick, and the
# IPI of smp_call_function_single.
RESCHEDULE_VECTOR = 0xFD
LOCAL_TIMER_VECTOR = 0xEC
CALL_FUNCTION_SINGLE_VECTOR = 0xFB


def canonical(addr: int) -> bool:
    """Bits 63:47 all equal (48-bit linear addresses)."""
    top = addr >> (LINEAR_ADDR_BITS - 1)
    return top in (0, (1 << (65 - LINEAR_ADDR_BITS)) - 1)


@dataclass(frozen=True)
class HostSegment:
    """A host segment register after a VM exit, in the VMCS access-rights format."""

    selector: int
    base: int
    limit: int
    ar: int  # AR_UNUSABLE for a null data selector


@dataclass(frozen=True)
class HostCpuState:
    """The physical CPU's registers in VMX root operation, as the last VM exit loaded them
    from the VMCS host-state area (SDM "Loading Host State")."""

    rip: int
    rsp: int
    rflags: int
    cr0: int
    cr3: int
    cr4: int
    dr7: int
    segments: dict[str, HostSegment]  # es cs ss ds fs gs tr ldtr
    gdtr: tuple[int, int]  # (base, limit)
    idtr: tuple[int, int]
    sysenter_cs: int
    sysenter_esp: int
    sysenter_eip: int
    efer: int
    pat: int
    long_mode: bool  # "host address-space size": 64-bit code after the exit

    def dump(self) -> str:
        """One line per register group, in the spirit of dump_vmcs's host section."""
        seg = self.segments
        return "\n".join([
            f"RIP={self.rip:#018x} RSP={self.rsp:#018x} RFLAGS={self.rflags:#x} "
            f"({'64-bit' if self.long_mode else '32-bit'} mode)",
            " ".join(f"{n.upper()}={seg[n].selector:04x}" for n in ("cs", "ss", "ds", "es", "fs",
                                                                     "gs", "tr")),
            f"FSBase={seg['fs'].base:016x} GSBase={seg['gs'].base:016x} "
            f"TRBase={seg['tr'].base:016x}",
            f"GDTBase={self.gdtr[0]:016x} IDTBase={self.idtr[0]:016x}",
            f"CR0={self.cr0:016x} CR3={self.cr3:016x} CR4={self.cr4:016x}",
            f"Sysenter RSP={self.sysenter_esp:016x} CS:RIP={self.sysenter_cs:04x}:"
            f"{self.sysenter_eip:016x}",
            f"EFER={self.efer:#018x} PAT={self.pat:#018x}",
        ])


_EXIT_REASON_NAMES = {m.value: m.name for m in ExitReason}


@dataclass
class ExitInfo:
    """What a VM exit recorded (also in the VMCS): for events and the GUI."""

    reason: int
    qualification: int = 0
    instruction_len: int = 0
    guest_linear_address: int | None = None
    guest_physical_address: int | None = None
    intr_info: int = 0
    intr_error_code: int | None = None
    idt_vectoring_info: int = 0  # the event being delivered when the exit happened
    idt_vectoring_error_code: int | None = None
    detail: str = ""

    @property
    def basic_reason(self) -> int:
        return self.reason & 0xFFFF

    @property
    def name(self) -> str:
        name = _EXIT_REASON_NAMES.get(self.basic_reason)  # ExitReason(basic).name
        return name if name is not None else f"EXIT_REASON_{self.basic_reason}"


def ar_from_segment(seg: Segment) -> int:
    """VMCS access-rights format: type S DPL P (7:0), AVL L D/B G (15:12), unusable (16)."""
    if seg.access == 0:
        return AR_UNUSABLE
    return (seg.access & 0xFF) | ((seg.flags & 0xF) << 12)


def segment_from_vmcs(vmcs: Vmcs, name: str) -> Segment:
    sel, base, limit, ar = (vmcs.read(f) for f in SEGMENTS[name])
    if ar & AR_UNUSABLE:
        return Segment(sel, 0, 0, 0, 0)
    return Segment(sel, base, limit, ar & 0xFF, (ar >> 12) & 0xF)


class Vmx:
    """A processor's VMX non-root operation on behalf of one VMCS at a time."""

    def __init__(self, cpu: Cpu, events: EventStream | None = None, source: str = "vcpu0",
                 host: HostPages | None = None):
        self.cpu = cpu
        self.host = host or HostPages()  # host memory, where the EPT tables live
        self._ept: Ept | None = None
        # The page walker reads host-physical memory: guest RAM and the VMM's own pages
        # (a shadow root, say), not just guest RAM.
        cpu.mmu.tables = HostPhysical(cpu.mem, self.host)
        self.events = events
        self.source = source
        self.vmcs: Vmcs | None = None
        self.last_exit: ExitInfo | None = None
        self.entry_failure = ""  # which guest-state check failed, in words
        # The last failed entry was VMfailValid (VM_INSTRUCTION_ERROR says why, the exit
        # reason is untouched) rather than a failed-entry exit (reason 33 | bit 31).
        self.entry_fail_valid = False
        # An exit that happened while delivering the event injected on entry (a fault the
        # exception bitmap intercepts, or a triple fault): run() reports it first.
        self._entry_exit: Intercept | None = None
        self.guest_mode = False
        # What the last VM exit loaded into the CPU's root-mode registers (see host_cpu).
        self._host_loaded: tuple[dict[int, int], int] | None = None
        self._host_cpu: HostCpuState | None = None
        self._host_checked: tuple[int | None, ...] | None = None  # fields that passed
        self._guest_checked: tuple[int | None, ...] | None = None  # (_GUEST_CHECK_FIELDS)
        self._guest_passed: tuple | None = None  # (_GUEST_PASS_FIELDS: check_guest_state)
        self._host_values: tuple[int | None, ...] | None = None  # what _host_loaded holds
        # The segment fields the last entry loaded and the registers built from them.
        self._seg_loaded: tuple[tuple[int | None, ...], list[Segment], bool] | None = None
        # Where each of the three memos above was last read from the fields: the VMCS and
        # its write generation then (Vmcs.host_gen, Vmcs.seg_gen). While both are the same,
        # the fields are what was read, and need not be read and compared again (about 90
        # VMCS reads an exit to userspace; all reads again after a VMWRITE to the group).
        self._host_checked_at: tuple[Vmcs, int] | None = None
        self._host_values_at: tuple[Vmcs, int] | None = None
        self._seg_loaded_at: tuple[Vmcs, int] | None = None
        # The last full load_guest_state (the VMCS, its Vmcs.gen then, the CR read shadows it
        # gave the CPU), and the same where the last save_guest_state stored the segments
        # as loaded: while Vmcs.gen has not moved since that load (nothing but RSP, RIP,
        # RFLAGS and CR3 written), the CPU holds what loading the fields would give it, but
        # for those four and what the exit took away (the CR read shadows). Linux's emulator
        # and entry use its register cache so, not VMREADs.
        self._loaded_at: tuple[Vmcs, int, dict] | None = None
        self._stored_at: tuple[Vmcs, int, dict] | None = None

    @property
    def host_cpu(self) -> HostCpuState | None:
        """The CPU's root-mode registers as the last VM exit loaded them from the host-state
        area (None before the first exit: until then the host ran code vmsim does not
        model). The exit records the fields; the registers are built when looked at."""
        if self._host_cpu is None and self._host_loaded is not None:
            values, guest_pat = self._host_loaded
            self._host_cpu = _host_cpu_state(values.__getitem__, 0, guest_pat)
        return self._host_cpu

    # -- VM entry (SDM 27.2: checks on the controls; 27.3: on the guest-state area) -----------
    @staticmethod
    def _unrestricted(vmcs: Vmcs) -> bool:
        r = vmcs.read
        return bool(r(FI.CPU_BASED_VM_EXEC_CONTROL) & CPU_BASED_ACTIVATE_SECONDARY_CONTROLS
                    and r(FI.SECONDARY_VM_EXEC_CONTROL) & SECONDARY_EXEC_UNRESTRICTED_GUEST)

    def check_controls(self, vmcs: Vmcs) -> str:
        """The first failed check on the VM-execution and VM-entry control fields that vmsim
        models (SDM "Checks on VM-Execution Control Fields", "Checks on VM-Entry Control
        Fields"); "" when all pass. A failure is VMfailValid with VM-instruction error 7."""
        get = vmcs.fields.get  # (VMREAD of these full-width fields: get(field, 0), at every entry)
        ctl = get(FI.CPU_BASED_VM_EXEC_CONTROL, 0)
        secondary = get(FI.SECONDARY_VM_EXEC_CONTROL, 0) if ctl & CPU_BASED_ACTIVATE_SECONDARY_CONTROLS \
            else 0
        if secondary & SECONDARY_EXEC_UNRESTRICTED_GUEST and not secondary & SECONDARY_EXEC_ENABLE_EPT:
            return "unrestricted guest requires enable EPT"
        if get(FI.CR3_TARGET_COUNT, 0) > 4:
            return f"CR3_TARGET_COUNT {get(FI.CR3_TARGET_COUNT, 0)} exceeds 4 (IA32_VMX_MISC)"
        info = get(FI.VM_ENTRY_INTR_INFO_FIELD, 0)
        if not info & INTR_INFO_VALID_MASK:
            return ""
        vector, kind = info & 0xFF, (info >> 8) & 7
        label = f"VM_ENTRY_INTR_INFO_FIELD {info:#x}"
        if kind in (1, 7):
            return f"{label}: interruption type {kind} is reserved or not supported"
        if kind == 2 and vector != 2:
            return f"{label}: an NMI must have vector 2"
        if kind == 3 and vector > 31:
            return f"{label}: a hardware exception must have a vector 0-31"
        protected = bool(get(FI.GUEST_CR0, 0) & 1) or not self._unrestricted(vmcs)
        wants_code = protected and kind == 3 and vector in X.HAS_ERROR_CODE
        if bool(info & INTR_INFO_DELIVER_CODE_MASK) != wants_code:
            return (f"{label}: deliver-error-code must be {int(wants_code)} for type {kind} "
                    f"vector {vector}{'' if protected else ' in real mode'}")
        if info & 0x7FFFF000:
            return f"{label}: reserved bits 30:12 must be 0"
        if info & INTR_INFO_DELIVER_CODE_MASK and get(FI.VM_ENTRY_EXCEPTION_ERROR_CODE, 0) & 0xFFFF8000:
            return "VM_ENTRY_EXCEPTION_ERROR_CODE bits 31:15 must be 0"
        if kind in (4, 5, 6) and not 1 <= get(FI.VM_ENTRY_INSTRUCTION_LEN, 0) <= 15:
            return (f"VM_ENTRY_INSTRUCTION_LEN {get(FI.VM_ENTRY_INSTRUCTION_LEN, 0)} must be 1-15 "
                    "for a software interrupt or exception")
        return ""

    @staticmethod
    def check_host_state(vmcs: Vmcs) -> str:
        """The first failed check on the host-state area (SDM 26.2.2-26.2.4 in older
        editions: "Checks on Host Control Registers, MSRs, and SSP", "Checks on Host Segment
        and Descriptor-Table Registers", "Checks Related to Address-Space Size"); "" when all
        pass. A failure is VMfailValid with VM-instruction error 8."""
        r = vmcs.read
        exit_ctl, entry_ctl = r(F.VM_EXIT_CONTROLS), r(F.VM_ENTRY_CONTROLS)
        host64 = bool(exit_ctl & VM_EXIT_HOST_ADDR_SPACE_SIZE)
        cr0, cr3, cr4 = r(F.HOST_CR0), r(F.HOST_CR3), r(F.HOST_CR4)
        # Control registers: the fixed bits of VMX operation (no unrestricted-guest
        # relaxation for the host: PE, NE and PG are required).
        if cr0 & VMX_CR0_FIXED0 != VMX_CR0_FIXED0:
            return (f"HOST_CR0 {cr0:#x} lacks bits {VMX_CR0_FIXED0 & ~cr0:#x} that "
                    "IA32_VMX_CR0_FIXED0 requires (PE NE PG)")
        if cr0 & ~VMX_CR0_FIXED1:
            return f"HOST_CR0 {cr0:#x} sets bits IA32_VMX_CR0_FIXED1 forbids"
        if cr4 & VMX_CR4_FIXED0 != VMX_CR4_FIXED0:
            return f"HOST_CR4 {cr4:#x} lacks CR4.VMXE, which IA32_VMX_CR4_FIXED0 requires"
        if cr4 & ~VMX_CR4_FIXED1:
            return (f"HOST_CR4 {cr4:#x} sets bits {cr4 & ~VMX_CR4_FIXED1:#x} "
                    "IA32_VMX_CR4_FIXED1 forbids")
        if cr3 >> PHYS_ADDR_BITS:
            return (f"HOST_CR3 {cr3:#x} sets bits beyond the processor's {PHYS_ADDR_BITS}-bit "
                    "physical-address width")
        for enc in (F.HOST_IA32_SYSENTER_ESP, F.HOST_IA32_SYSENTER_EIP):
            if not canonical(r(enc)):
                return f"{F(enc).name} {r(enc):#x} is not a canonical address"
        if exit_ctl & VM_EXIT_LOAD_IA32_PAT:
            why = pat_error("HOST_IA32_PAT", r(F.HOST_IA32_PAT))
            if why:
                return why
        if exit_ctl & VM_EXIT_LOAD_IA32_EFER:
            efer = r(F.HOST_IA32_EFER)
            if efer & ~EFER_VALID:
                return f"HOST_IA32_EFER {efer:#x} sets reserved bits {efer & ~EFER_VALID:#x}"
            if bool(efer & EFER_LMA) != host64 or bool(efer & EFER_LME) != host64:
                return (f"HOST_IA32_EFER {efer:#x}: LMA and LME must equal the \"host "
                        f"address-space size\" exit control ({int(host64)})")
        # Segment and descriptor-table registers.
        for enc in HOST_SELECTORS.values():
            if r(enc) & 7:
                return f"{F(enc).name} {r(enc):#x}: RPL and TI must be 0"
        if r(F.HOST_CS_SELECTOR) == 0:
            return "HOST_CS_SELECTOR must not be 0"
        if r(F.HOST_TR_SELECTOR) == 0:
            return "HOST_TR_SELECTOR must not be 0"
        if r(F.HOST_SS_SELECTOR) == 0 and not host64:
            return "HOST_SS_SELECTOR must not be 0 for a 32-bit host"
        for enc in (F.HOST_FS_BASE, F.HOST_GS_BASE, F.HOST_GDTR_BASE, F.HOST_IDTR_BASE,
                    F.HOST_TR_BASE):
            if not canonical(r(enc)):
                return f"{F(enc).name} {r(enc):#x} is not a canonical address"
        # Address-space size.
        rip = r(F.HOST_RIP)
        if HOST_IN_IA32E_MODE and not host64:
            return ("VM_EXIT_CONTROLS: \"host address-space size\" must be 1 on a processor in "
                    "IA-32e mode (a 64-bit host)")
        if not HOST_IN_IA32E_MODE and (host64 or entry_ctl & VM_ENTRY_IA32E_MODE):
            return "VM_EXIT_CONTROLS: \"host address-space size\" must be 0 outside IA-32e mode"
        if host64:
            if not cr4 & 0x20:
                return f"HOST_CR4 {cr4:#x}: PAE must be 1 for a 64-bit host"
            if not canonical(rip):
                return f"HOST_RIP {rip:#x} is not a canonical address"
        else:
            if cr4 & 0x20000:
                return f"HOST_CR4 {cr4:#x}: PCIDE must be 0 for a 32-bit host"
            if rip >> 32:
                return f"HOST_RIP {rip:#x}: bits 63:32 must be 0 for a 32-bit host"
        return ""

    def check_guest_state(self, vmcs: Vmcs) -> str:
        """The first failed guest-state check, in words; "" when all pass."""
        # (a real CPU checks at every entry and finds the same: see _GUEST_PASS_FIELDS)
        # The segment registers' fields stand in the key as the VMCS and its segment write
        # generation (Vmcs.seg_gen): equal while none of them was written.
        fields = vmcs.fields
        try:
            key = (vmcs, vmcs.seg_gen, _take_pass(fields), fields.get(_GUEST_IA32_PAT),
                   fields.get(_ENTRY_INTR_INFO), fields.get(FI.GUEST_RFLAGS, 0) & _RFLAGS_CHECKED)
        except KeyError:  # (a field not yet written: None, as get gives)
            key = (vmcs, vmcs.seg_gen, *map(fields.get, _GUEST_PASS_OTHER),
                   fields.get(FI.GUEST_RFLAGS, 0) & _RFLAGS_CHECKED)
        if key == self._guest_passed:
            return ""
        msg = self._check_guest_state(vmcs)
        self._guest_passed = None if msg else key
        return msg

    def _check_guest_state(self, vmcs: Vmcs) -> str:
        r = vmcs.read
        unrestricted = self._unrestricted(vmcs)
        cr0, cr4 = r(FI.GUEST_CR0), r(FI.GUEST_CR4)
        fixed0 = VMX_CR0_FIXED0 & ~(0x80000001 if unrestricted else 0)
        if cr0 & fixed0 != fixed0:
            return (f"GUEST_CR0 {cr0:#x} lacks bits {fixed0 & ~cr0:#x} that IA32_VMX_CR0_FIXED0 "
                    "requires (NE always; PE and PG unless the guest is unrestricted)")
        if cr0 & ~VMX_CR0_FIXED1:
            return f"GUEST_CR0 {cr0:#x} sets bits IA32_VMX_CR0_FIXED1 forbids"
        if cr0 & 0x80000000 and not cr0 & 1:
            return f"GUEST_CR0 {cr0:#x}: PG set without PE"
        if cr4 & VMX_CR4_FIXED0 != VMX_CR4_FIXED0:
            return f"GUEST_CR4 {cr4:#x} lacks CR4.VMXE, which IA32_VMX_CR4_FIXED0 requires"
        if cr4 & ~VMX_CR4_FIXED1:
            return f"GUEST_CR4 {cr4:#x} sets bits {cr4 & ~VMX_CR4_FIXED1:#x} IA32_VMX_CR4_FIXED1 forbids"
        rflags = r(FI.GUEST_RFLAGS)
        if not rflags & 2 or rflags & (0x8 | 0x20 | 0x8000) or rflags >> 22:
            return f"GUEST_RFLAGS {rflags:#x}: bit 1 must be 1 and bits 3, 5, 15, 22-63 must be 0"
        if rflags & 0x20000:
            return f"GUEST_RFLAGS {rflags:#x}: virtual-8086 mode is not supported"
        entry_info = r(FI.VM_ENTRY_INTR_INFO_FIELD)
        injecting = entry_info & INTR_INFO_VALID_MASK
        inject_kind = (entry_info >> 8) & 7 if injecting else None
        if inject_kind == 0 and not rflags & 0x200:
            return (f"GUEST_RFLAGS {rflags:#x}: IF must be 1 to inject an external interrupt "
                    f"({entry_info:#x})")
        # The checks below up to the non-register state read only _GUEST_CHECK_FIELDS: the
        # result of the last pass holds while none of them changed (as for the host
        # state; a real CPU checks every time and finds the same). RIP, RSP and RFLAGS,
        # which change at every exit, are not among them.
        key = tuple(map(vmcs.fields.get, _GUEST_CHECK_FIELDS))
        if key != self._guest_checked:
            msg = self._check_guest_registers(vmcs, unrestricted)
            if msg:
                return msg
            self._guest_checked = key
        return self._check_non_register_state(vmcs, rflags, entry_info)

    def _check_guest_registers(self, vmcs: Vmcs, unrestricted: bool) -> str:
        """MSRs, the link pointer, segment and descriptor-table registers."""
        r = vmcs.read
        msg = self._check_guest_msrs(vmcs)
        if msg:
            return msg
        if r(F.VMCS_LINK_POINTER) != 0xFFFFFFFFFFFFFFFF:
            return "VMCS_LINK_POINTER must be all ones"
        msg = self._check_selectors(vmcs, unrestricted)
        if msg:
            return msg
        for name in ("cs", "ss", "ds", "es", "fs", "gs", "tr", "ldtr"):
            msg = self._check_segment(vmcs, name, unrestricted)
            if msg:
                return msg
        msg = self._check_dpl(vmcs, unrestricted)
        if msg:
            return msg
        for enc in (F.GUEST_GDTR_LIMIT, F.GUEST_IDTR_LIMIT):
            if r(enc) > 0xFFFF:
                return f"{F(enc).name} {r(enc):#x}: bits 31:16 must be 0"
        return ""

    @staticmethod
    def _check_guest_msrs(vmcs: Vmcs) -> str:
        """IA32_PAT and IA32_EFER when VM entry loads them (SDM "Checks on Guest Control
        Registers, Debug Registers, and MSRs")."""
        r = vmcs.read
        entry_ctl = r(F.VM_ENTRY_CONTROLS)
        if entry_ctl & VM_ENTRY_LOAD_IA32_PAT:
            why = pat_error("GUEST_IA32_PAT", r(F.GUEST_IA32_PAT))
            if why:
                return why
        if entry_ctl & VM_ENTRY_LOAD_IA32_EFER:
            efer, ia32e = r(F.GUEST_IA32_EFER), bool(entry_ctl & VM_ENTRY_IA32E_MODE)
            if efer & ~EFER_VALID:
                return f"GUEST_IA32_EFER {efer:#x} sets reserved bits {efer & ~EFER_VALID:#x}"
            if bool(efer & EFER_LMA) != ia32e:
                return (f"GUEST_IA32_EFER {efer:#x}: LMA must equal the \"IA-32e mode guest\" "
                        f"entry control ({int(ia32e)})")
            if r(F.GUEST_CR0) & 0x80000000 and bool(efer & EFER_LME) != ia32e:
                return f"GUEST_IA32_EFER {efer:#x}: with CR0.PG, LME must equal LMA"
        return ""

    @staticmethod
    def _check_selectors(vmcs: Vmcs, unrestricted: bool) -> str:
        r = vmcs.read
        if r(F.GUEST_TR_SELECTOR) & 4:
            return f"GUEST_TR_SELECTOR {r(F.GUEST_TR_SELECTOR):#x}: TI must be 0"
        if not r(F.GUEST_LDTR_AR_BYTES) & AR_UNUSABLE and r(F.GUEST_LDTR_SELECTOR) & 4:
            return f"GUEST_LDTR_SELECTOR {r(F.GUEST_LDTR_SELECTOR):#x}: TI must be 0"
        ss, cs = r(F.GUEST_SS_SELECTOR), r(F.GUEST_CS_SELECTOR)
        if not unrestricted and ss & 3 != cs & 3:
            return f"GUEST_SS_SELECTOR {ss:#x}: RPL must equal CS's ({cs:#x})"
        return ""

    @staticmethod
    def _check_dpl(vmcs: Vmcs, unrestricted: bool) -> str:
        """The DPL checks on CS, SS, DS..GS (SDM "Checks on Guest Segment Registers")."""
        r = vmcs.read
        cs_ar, ss_ar = r(F.GUEST_CS_AR_BYTES), r(F.GUEST_SS_AR_BYTES)
        cs_type, cs_dpl, ss_dpl = cs_ar & 0xF, (cs_ar >> 5) & 3, (ss_ar >> 5) & 3
        if cs_type == 3 and cs_dpl != 0:
            return f"GUEST_CS_AR_BYTES {cs_ar:#x}: a type-3 CS must have DPL 0"
        if cs_type in (9, 11) and cs_dpl != ss_dpl:
            return (f"GUEST_CS_AR_BYTES {cs_ar:#x}: a non-conforming CS's DPL {cs_dpl} must equal "
                    f"SS's DPL {ss_dpl}")
        if cs_type in (13, 15) and cs_dpl > ss_dpl:
            return (f"GUEST_CS_AR_BYTES {cs_ar:#x}: a conforming CS's DPL {cs_dpl} must not "
                    f"exceed SS's DPL {ss_dpl}")
        ss_rpl = r(F.GUEST_SS_SELECTOR) & 3
        if not unrestricted and ss_dpl != ss_rpl:
            return f"GUEST_SS_AR_BYTES {ss_ar:#x}: DPL {ss_dpl} must equal SS's RPL {ss_rpl}"
        if ss_dpl != 0 and (cs_type == 3 or not r(F.GUEST_CR0) & 1):
            return (f"GUEST_SS_AR_BYTES {ss_ar:#x}: DPL must be 0 with a type-3 CS or CR0.PE=0")
        if not unrestricted:
            for name in ("ds", "es", "fs", "gs"):
                sel_f, _, _, ar_f = SEGMENTS[name]
                ar, rpl = r(ar_f), r(sel_f) & 3
                if not ar & AR_UNUSABLE and ar & 0xF <= 11 and (ar >> 5) & 3 < rpl:
                    return (f"GUEST_{name.upper()}_AR_BYTES {ar:#x}: DPL {(ar >> 5) & 3} must not "
                            f"be less than the selector's RPL {rpl}")
        return ""

    @staticmethod
    def _check_non_register_state(vmcs: Vmcs, rflags: int, entry_info: int) -> str:
        """SDM "Checks on Guest Non-Register State" (activity and interruptibility state)."""
        r = vmcs.read
        act, intr = r(FI.GUEST_ACTIVITY_STATE), r(FI.GUEST_INTERRUPTIBILITY_INFO)
        if act > 3:
            return f"GUEST_ACTIVITY_STATE {act} is not a valid activity state"
        if act not in (GUEST_ACTIVITY_ACTIVE, GUEST_ACTIVITY_HLT):
            # This processor's IA32_VMX_MISC reports only HLT (bit 6) among the inactive states.
            return f"GUEST_ACTIVITY_STATE {act}: this processor supports only active and HLT"
        if act == GUEST_ACTIVITY_HLT and (r(FI.GUEST_SS_AR_BYTES) >> 5) & 3 != 0:
            return "GUEST_ACTIVITY_STATE HLT requires SS.DPL 0"
        if act != GUEST_ACTIVITY_ACTIVE and intr & 3:
            return (f"GUEST_ACTIVITY_STATE {act} must be active with blocking by STI or MOV SS "
                    f"(GUEST_INTERRUPTIBILITY_INFO {intr:#x})")
        injecting = entry_info & INTR_INFO_VALID_MASK
        kind, vector = (entry_info >> 8) & 7, entry_info & 0xFF
        if injecting and act == GUEST_ACTIVITY_HLT and not (
                kind in (0, 2) or (kind == 3 and vector in (X.DB, X.MC)) or (kind == 7 and vector == 0)):
            return (f"VM_ENTRY_INTR_INFO_FIELD {entry_info:#x}: this event cannot be injected "
                    "into the HLT activity state (only interrupts, NMI, #DB, #MC)")
        label = f"GUEST_INTERRUPTIBILITY_INFO {intr:#x}"
        if intr & 0xFFFFFFF0:
            return f"{label}: reserved bits 31:4 must be 0"
        if intr & 3 == 3:
            return f"{label}: blocking by STI and by MOV SS cannot both be set"
        if intr & 1 and not rflags & 0x200:
            return f"{label}: blocking by STI needs RFLAGS.IF=1"
        if injecting and kind == 0 and intr & 3:
            return f"{label}: an external interrupt cannot be injected under STI/MOV SS blocking"
        if injecting and kind == 2 and intr & 2:
            return f"{label}: an NMI cannot be injected under MOV SS blocking"
        if intr & 4:
            return f"{label}: blocking by SMI needs the processor to be in SMM"
        return ""

    def _check_segment(self, vmcs: Vmcs, name: str, unrestricted: bool) -> str:
        _sel_f, _base_f, limit_f, ar_f = SEGMENTS[name]
        ar, limit = vmcs.read(ar_f), vmcs.read(limit_f)
        label = f"GUEST_{name.upper()}_AR_BYTES {ar:#x}"
        if ar & AR_UNUSABLE:
            # The SDM checks CS as if usable; vmsim's CPU cannot run without a CS cache.
            if name in ("cs", "tr"):
                return f"{label}: {name.upper()} must be usable"
            return ""
        typ, s, present = ar & 0xF, (ar >> 4) & 1, (ar >> 7) & 1
        if ar & 0xF00 or ar & 0xFFFE0000:
            return f"{label}: reserved bits 11:8 and 31:17 must be 0"
        if not present:
            return f"{label}: P must be 1 for a usable segment"
        if name == "tr":
            if typ not in (3, 11) or s:
                return f"{label}: TR must be a busy TSS (type 3 or 11, S=0)"
        elif name == "ldtr":
            if typ != 2 or s:
                return f"{label}: LDTR must be an LDT (type 2, S=0)"
        else:
            if not s:
                return f"{label}: S must be 1 (code or data segment)"
            if name == "cs":
                allowed = (9, 11, 13, 15) + ((3,) if unrestricted else ())
                if typ not in allowed:
                    return (f"{label}: CS type {typ} must be an accessed code segment "
                            f"({', '.join(map(str, allowed))})")
            elif name == "ss":
                if typ not in (3, 7):
                    return f"{label}: SS type {typ} must be a read/write accessed data segment (3 or 7)"
            else:
                if not typ & 1:
                    return f"{label}: the accessed bit (type bit 0) must be 1"
                if typ & 8 and not typ & 2:
                    return f"{label}: a code segment in {name.upper()} must be readable"
        g = (ar >> 15) & 1
        if limit & 0xFFF != 0xFFF and g:
            return f"{label}: G must be 0 when limit {limit:#x} bits 11:0 are not all ones"
        if limit & 0xFFF00000 and not g:
            return f"{label}: G must be 1 when limit {limit:#x} exceeds 1 MiB"
        return ""

    def vm_entry(self, vmcs: Vmcs, launch: bool) -> bool:
        """VMLAUNCH / VMRESUME. False (with the exit fields set) when the entry fails."""
        self.vmcs = vmcs
        self.entry_fail_valid = False
        if launch == vmcs.launched:
            # 4 VMLAUNCH with non-clear VMCS, 5 VMRESUME with non-launched VMCS.
            return self._vmfail_valid(vmcs, 4 if launch else 5,
                                      "VMLAUNCH needs a clear VMCS" if launch else
                                      "VMRESUME needs a launched VMCS")
        failure = self.check_controls(vmcs)
        if failure:
            return self._vmfail_valid(vmcs, 7, failure)  # invalid control field(s)
        # The host checks depend on these fields only: the result of the last check holds
        # while none changed (a real CPU checks every time and finds the same).
        at = self._host_checked_at
        if at is None or at[0] is not vmcs or at[1] != vmcs.host_gen:
            host_key = _read_fields(vmcs.fields, _take_host_check, _HOST_CHECK_FIELDS)
            if host_key != self._host_checked:
                failure = self.check_host_state(vmcs)
                if failure:
                    return self._vmfail_valid(vmcs, 8, failure)  # invalid host-state field(s)
                self._host_checked = host_key
            self._host_checked_at = (vmcs, vmcs.host_gen)
        failure = self.check_guest_state(vmcs)
        if failure:
            self.entry_failure = failure
            vmcs.write(FI.VM_EXIT_REASON, VMX_EXIT_REASONS_FAILED_VMENTRY | ExitReason.INVALID_STATE)
            vmcs.write(FI.EXIT_QUALIFICATION, 0)
            self.last_exit = ExitInfo(VMX_EXIT_REASONS_FAILED_VMENTRY | ExitReason.INVALID_STATE,
                                      detail=failure)
            return False
        vmcs.launched = True
        self.entry_failure = ""
        self.load_guest_state(vmcs)
        self.guest_mode = True
        self.cpu.intercept = self.exit_decision  # event delivery below may already exit
        self._entry_exit = None
        self._inject_event(vmcs)
        return True

    def _vmfail_valid(self, vmcs: Vmcs, error: int, failure: str) -> bool:
        """VMfailValid: the VM-instruction error `error` in the VMCS; no exit, no exit
        reason. False, as vm_entry returns then."""
        vmcs.write(FI.VM_INSTRUCTION_ERROR, error)
        self.entry_failure = failure
        self.entry_fail_valid = True
        return False

    def load_guest_state(self, vmcs: Vmcs) -> None:
        cpu = self.cpu
        fields = vmcs.fields
        at = self._stored_at
        if at is not None and at[0] is vmcs and at[1] == vmcs.gen:
            # Nothing but RSP, RIP, RFLAGS and CR3 written since this CPU's state was stored.
            cr3 = fields.get(_GUEST_CR3, 0)
            if cpu.mmu.cr3 != cr3:
                cpu.set_control(3, cr3, check=False)
            cpu.cr_shadow = at[2]
            try:
                self._load_registers(cpu, fields, _take_always_loaded(fields))
            except KeyError:  # (unwritten fields read 0)
                self._load_registers(cpu, fields, tuple(map(fields.get, _ALWAYS_LOADED,
                                                            _ZEROS)))
            return
        g = fields.get
        # The fields read below, by one VMREAD each (all full-width: unknown ones read 0).
        try:
            loaded = _take_load(fields)
        except KeyError:  # (unwritten fields read 0)
            loaded = tuple(map(g, _LOAD_FIELDS, _ZEROS))
        (cr0, cr4, cr3, cr0_mask, cr0_shadow, cr4_mask, cr4_shadow, gdtr_base, gdtr_limit,
         idtr_base, idtr_limit) = loaded[:11]
        exec_ctl = loaded[-1]
        mmu = cpu.mmu
        # CR0/CR4 first (they may switch the paging mode), then CR3. A write that changes
        # nothing is skipped: a real CPU's translations are tagged and need no flush here.
        if mmu.cr0 != cr0:
            cpu.set_control(0, cr0, check=False)
        if mmu.cr4 != cr4:
            cpu.set_control(4, cr4, check=False)
        if mmu.cr3 != cr3:
            cpu.set_control(3, cr3, check=False)
        cpu.cr_shadow = {0: (cr0_mask, cr0_shadow), 4: (cr4_mask, cr4_shadow)}
        # The segment registers, built again only when their fields changed since the last
        # entry; assigning the list (which rechecks the segment classes) only when the
        # CPU's differ from them (equal Segments are the same register: they are frozen).
        last = self._seg_loaded
        at = self._seg_loaded_at
        if last is None or at is None or at[0] is not vmcs or at[1] != vmcs.seg_gen:
            key = _read_fields(fields, _take_segments, _CPU_SEGMENT_FIELD_LIST)
            if last is None or last[0] != key:
                seg = [_segment(*(0 if x is None else x for x in key[i:i + 4]))
                       for i in range(0, 24, 4)]
                last = self._seg_loaded = (key, seg, _segment_fields(seg) == key)
                cpu.seg = list(seg)
            self._seg_loaded_at = (vmcs, vmcs.seg_gen)
        if cpu.seg != last[1]:
            cpu.seg = list(last[1])
        cpu.gdtr = (gdtr_base, gdtr_limit)
        cpu.idtr = (idtr_base, idtr_limit)
        # LDTR and TR: the short path above, taken while kvm.ko wrote no other field, leaves
        # them as they are (the CPU's are what the last exit stored).
        cpu.ldtr = (g(F.GUEST_LDTR_SELECTOR, 0), g(F.GUEST_LDTR_BASE, 0) & 0xFFFFFFFF,
                    g(F.GUEST_LDTR_LIMIT, 0), g(F.GUEST_LDTR_AR_BYTES, 0))
        cpu.tr = (g(F.GUEST_TR_SELECTOR, 0), g(F.GUEST_TR_BASE, 0) & 0xFFFFFFFF,
                  g(F.GUEST_TR_LIMIT, 0), g(F.GUEST_TR_AR_BYTES, 0))
        cpu.ldt_tr_changed = False
        # The CPU's TSC is icount + tsc_offset; vmsim's physical TSC is icount, so in
        # non-root operation tsc_offset is the VMCS TSC offset, or 0 without offsetting.
        cpu.tsc_offset = g(_TSC_OFFSET, 0) if exec_ctl & CPU_BASED_USE_TSC_OFFSETTING else 0
        cpu.set_second_stage(self.ept_in_use(vmcs))
        self._load_registers(cpu, fields, loaded[11:20])
        self._loaded_at = (vmcs, vmcs.gen, cpu.cr_shadow)

    @staticmethod
    def _load_registers(cpu: Cpu, fields: dict[int, int], values: tuple[int, ...]) -> None:
        """What load_guest_state loads that kvm.ko writes at most exits, or that a VM exit
        may leave otherwise than loaded: the `values` of _ALWAYS_LOADED."""
        (rsp, rip, rflags, interruptibility, activity, entry_ctl,
         sysenter_cs, sysenter_esp, sysenter_eip) = values
        cpu.r[4] = rsp & 0xFFFFFFFF
        cpu.eip = rip & 0xFFFFFFFF
        cpu.eflags = rflags
        # Blocking by STI / MOV SS covers the first guest instruction (SDM "Interruptibility
        # State" under "Special Features of VM Entry"); an injected event then ends it.
        cpu.set_interrupt_shadow(interruptibility
                                 & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS))
        cpu.halted = activity == GUEST_ACTIVITY_HLT
        cpu.shut_down = False
        msr = cpu.msr
        if entry_ctl & VM_ENTRY_LOAD_IA32_PAT:
            msr[MSR_IA32_CR_PAT] = fields.get(_GUEST_IA32_PAT, 0)
        # "load IA32_EFER" loads nothing here: vmsim's 32-bit CPU has no EFER (no long mode,
        # no NX); the entry checks above still apply to GUEST_IA32_EFER.
        msr[MSR_IA32_SYSENTER_CS] = sysenter_cs
        msr[MSR_IA32_SYSENTER_ESP] = sysenter_esp
        msr[MSR_IA32_SYSENTER_EIP] = sysenter_eip

    def ept_in_use(self, vmcs: Vmcs) -> Ept | None:
        """The EPT walker for this VMCS's EPTP, when "enable EPT" is set."""
        get = vmcs.fields.get  # (VMREAD: get(field, 0), at every entry)
        if not (get(FI.CPU_BASED_VM_EXEC_CONTROL, 0) & CPU_BASED_ACTIVATE_SECONDARY_CONTROLS
                and get(FI.SECONDARY_VM_EXEC_CONTROL, 0) & SECONDARY_EXEC_ENABLE_EPT):
            return None
        eptp = get(FI.EPT_POINTER, 0)
        if self._ept is None or self._ept.eptp != eptp:
            self._ept = Ept(self.host, eptp)
        return self._ept

    def _inject_event(self, vmcs: Vmcs) -> None:
        """Event injection (SDM 27.6): deliver the event in VM_ENTRY_INTR_INFO_FIELD."""
        info = vmcs.read(FI.VM_ENTRY_INTR_INFO_FIELD)
        if not info & INTR_INFO_VALID_MASK:
            return
        vmcs.write(FI.VM_ENTRY_INTR_INFO_FIELD, info & ~INTR_INFO_VALID_MASK)
        vector, kind = info & 0xFF, info & 0x700
        code = vmcs.read(FI.VM_ENTRY_EXCEPTION_ERROR_CODE) if info & INTR_INFO_DELIVER_CODE_MASK \
            else None
        cpu = self.cpu
        soft = kind in (INTR_TYPE_SOFT_INTR, INTR_TYPE_SOFT_EXCEPTION)
        ret = cpu.eip + (vmcs.read(FI.VM_ENTRY_INSTRUCTION_LEN) if soft else 0)
        if cpu.inject(vector, code, ret & 0xFFFFFFFF, soft,
                      event_type=kind >> 8) is StopReason.INTERCEPT:
            # SDM "VM Exits During Event Injection": IDT-vectoring info names the injected event.
            exit_cause = cpu.last_intercept
            if exit_cause.kind == "exception" and "vectoring" not in exit_cause.extra:
                exit_cause.extra["idt_vectoring"] = (info, code)
            self._entry_exit = exit_cause

    # -- running the guest -------------------------------------------------------------------
    def run(self, budget: int) -> ExitInfo | None:
        """Execute guest instructions until a VM exit (returned) or `budget` runs out (None).

        A halted guest (activity state HLT, HLT exiting off) just stays halted: None.
        """
        cpu = self.cpu
        if self._entry_exit is not None:
            info, self._entry_exit = self._entry_exit, None
            return self.vm_exit(info)
        self._check_runnable()
        cpu.intercept = self.exit_decision
        if self.vmcs.read(FI.CPU_BASED_VM_EXEC_CONTROL) & CPU_BASED_INTR_WINDOW_EXITING:
            return self._run_until_window(budget)
        return self._stopped(cpu.run(budget))

    def _stopped(self, stop: StopReason) -> ExitInfo | None:
        cpu = self.cpu
        if stop is StopReason.INTERCEPT:
            return self.vm_exit(cpu.last_intercept)
        if stop is StopReason.SHUTDOWN:  # cannot happen: triple fault always exits
            return self.vm_exit(Intercept("triple_fault", cpu.eip))
        if stop is StopReason.UNSUPPORTED:
            raise Unsupported(cpu.stop_message)
        return None

    def interrupt_window_open(self) -> bool:
        """RFLAGS.IF=1 and no blocking by STI or MOV SS at this instruction boundary: an
        external interrupt could be delivered now (SDM "Interrupt-Window Exiting")."""
        cpu = self.cpu
        return bool(cpu.sysflags & EFLAGS_IF) and not cpu.interrupt_shadow() \
            and not cpu.shut_down

    def _run_until_window(self, budget: int) -> ExitInfo | None:
        """Interrupt-window exiting (SDM Vol. 3C "Other Causes of VM Exits", "Interrupt-
        Window Exiting and Virtual-Interrupt Delivery"): the exit comes at the first
        instruction boundary where the window is open: right after VM entry (after any
        injected event is delivered), after an instruction or an exception delivered,
        and in the HLT state, which it leaves only after the exit (HLT is the activity
        state saved). The guest runs one instruction at a time, but only while the
        control is set: without it the CPU's loop runs at full speed."""
        cpu = self.cpu
        while True:
            if self.interrupt_window_open():
                return self.vm_exit(Intercept("interrupt_window", cpu.eip))
            if budget <= 0 or cpu.halted:
                return None  # budget used, or halted with IF=0: nothing can wake it here
            if not cpu.sysflags & EFLAGS_IF and not cpu.interrupt_shadow():
                # IF=0: only STI, POPF or IRET can open the window, and each stops the
                # run right after it (window_watch): run at full speed until then.
                before = cpu.icount + cpu.deliveries
                cpu.window_watch = True
                try:
                    stop = cpu.run(budget)
                finally:
                    cpu.window_watch = False
                budget -= max(1, cpu.icount + cpu.deliveries - before)
            else:
                stop = cpu.run(1)
                budget -= 1
            if stop not in (StopReason.LIMIT, StopReason.HLT, StopReason.REQUESTED):
                return self._stopped(stop)

    def external_interrupt_exit(self, vector: int) -> ExitInfo:
        """A host interrupt (e.g. LOCAL_TIMER_VECTOR, the host's tick) arrives while the
        guest runs: with "external-interrupt exiting" (kvm.ko always sets it) it causes a
        VM exit, reason 1, at the next instruction boundary where it is not blocked, even
        with RFLAGS.IF=0; "acknowledge interrupt on exit" stores the vector in
        VM_EXIT_INTR_INFO (SDM "Changes to Event Blocking", "Information for VM Exits Due
        to Vectored Events").

        Blocking by STI or MOV SS holds it back for one instruction: that instruction runs
        first, and if it exits (an OUT, say), that exit is returned instead and the host
        interrupt stays pending (the caller tries again after handling it). An open
        interrupt window with interrupt-window exiting set also goes first: its exit
        has priority over external interrupts."""
        cpu = self.cpu
        if self._entry_exit is not None:  # the exit during event injection comes first
            info, self._entry_exit = self._entry_exit, None
            return self.vm_exit(info)
        if cpu.interrupt_shadow() and not cpu.halted:
            cpu.intercept = self.exit_decision
            stop = cpu.run(1)
            if stop is not StopReason.LIMIT and stop is not StopReason.HLT:
                done = self._stopped(stop)
                if done is not None:
                    return done
        if self.vmcs.read(FI.CPU_BASED_VM_EXEC_CONTROL) & CPU_BASED_INTR_WINDOW_EXITING \
                and self.interrupt_window_open():
            return self.vm_exit(Intercept("interrupt_window", cpu.eip))
        return self.vm_exit(Intercept("external_interrupt", cpu.eip, vector=vector))

    def _check_runnable(self) -> None:
        """A guest state VM entry accepts but vmsim's CPU cannot execute (real mode, based
        segments) stops the run with a reason rather than running wrongly."""
        cpu = self.cpu
        if not cpu.mmu.cr0 & 1:  # (CR0 as the hardware holds it: get_raw_control(0))
            raise Unsupported("the guest is in real mode (CR0.PE=0): vmsim's CPU runs "
                              "32-bit protected mode only")
        for seg in cpu.seg:
            if seg.access and seg.base:
                break
        else:
            return
        for name, seg in zip(CPU_SEGMENTS, cpu.seg, strict=True):
            if seg.access and seg.base:
                raise Unsupported(f"guest {name.upper()} base {seg.base:#x}: vmsim's CPU "
                                  "models flat segments only (base 0)")

    def exit_decision(self, info: Intercept) -> bool:
        """Does this instruction or event cause a VM exit? (SDM 26.1-26.2)"""
        vmcs = self.vmcs
        ctl = vmcs.read(FI.CPU_BASED_VM_EXEC_CONTROL)
        k = info.kind
        if k in ("cpuid", "vmcall", "triple_fault", "invd"):
            return True  # unconditionally
        if k == "wbinvd":
            return bool(ctl & CPU_BASED_ACTIVATE_SECONDARY_CONTROLS and vmcs.read(
                FI.SECONDARY_VM_EXEC_CONTROL) & SECONDARY_EXEC_WBINVD_EXITING)
        if k == "io":
            return self._io_exits(vmcs, ctl, info)
        if k == "hlt":
            return bool(ctl & CPU_BASED_HLT_EXITING)
        if k == "invlpg":
            return bool(ctl & CPU_BASED_INVLPG_EXITING)
        if k == "rdtsc":
            return bool(ctl & CPU_BASED_RDTSC_EXITING)
        if k in ("rdmsr", "wrmsr"):
            return self._msr_exits(vmcs, ctl, info.extra.get("msr", 0), k == "wrmsr")
        if k == "cr_read":
            return info.cr == 3 and bool(ctl & CPU_BASED_CR3_STORE_EXITING)
        if k == "cr_write":
            return self._cr_write_exits(vmcs, ctl, info)
        if k == "clts":  # TS owned by the host and shown set to the guest
            return bool(vmcs.read(F.CR0_GUEST_HOST_MASK) & vmcs.read(F.CR0_READ_SHADOW) & 8)
        if k == "lmsw":
            # A bit of CR0[3:0] the host owns would differ from its shadow; for PE only a
            # set (LMSW cannot clear it).
            mask, shadow = vmcs.read(F.CR0_GUEST_HOST_MASK), vmcs.read(F.CR0_READ_SHADOW)
            src = info.extra["source"]
            return bool(mask & src & ~shadow & 1 or mask & (src ^ shadow) & 0xE)
        if k == "exception":
            in_bitmap = bool(vmcs.read(FI.EXCEPTION_BITMAP) >> info.vector & 1)
            if info.vector == X.PF:
                # SDM "Exceptions" (26.2 in newer editions): with bitmap bit 14 set a #PF
                # exits iff (PFEC & MASK) == MATCH; with it clear, iff they differ.
                mask, match = vmcs.read(FI.PAGE_FAULT_ERROR_CODE_MASK), \
                    vmcs.read(FI.PAGE_FAULT_ERROR_CODE_MATCH)
                return (((info.error_code or 0) & mask) == match) == in_bitmap
            return in_bitmap
        return False

    @staticmethod
    def _io_exits(vmcs: Vmcs, ctl: int, info: Intercept) -> bool:
        if not ctl & CPU_BASED_USE_IO_BITMAPS:
            return bool(ctl & CPU_BASED_UNCOND_IO_EXITING)
        # A 2- or 4-byte access exits if any byte-port it touches has its bit set.
        return any(((info.port + i) & 0xFFFF) in vmcs.io_bitmap for i in range(info.size))

    @staticmethod
    def _msr_exits(vmcs: Vmcs, ctl: int, msr: int, write: bool) -> bool:
        if not ctl & CPU_BASED_USE_MSR_BITMAPS:
            return True
        bitmap = vmcs.msr_bitmap
        if bitmap is None:
            return True
        if not (msr <= 0x1FFF or 0xC0000000 <= msr <= 0xC0001FFF):
            return True  # outside both ranges always exits
        return (msr, write) in bitmap

    def _cr_write_exits(self, vmcs: Vmcs, ctl: int, info: Intercept) -> bool:
        value = self.cpu.r[info.gpr]
        if info.cr == 3:
            if not ctl & CPU_BASED_CR3_LOAD_EXITING:
                return False
            targets = [vmcs.read(F.CR3_TARGET_VALUE0 + 2 * i)
                       for i in range(min(vmcs.read(F.CR3_TARGET_COUNT), 4))]
            return value not in targets
        if info.cr in (0, 4):
            mask_f, shadow_f = ((F.CR0_GUEST_HOST_MASK, F.CR0_READ_SHADOW) if info.cr == 0
                                else (F.CR4_GUEST_HOST_MASK, F.CR4_READ_SHADOW))
            mask = vmcs.read(mask_f)
            return bool((value ^ vmcs.read(shadow_f)) & mask)
        return False

    # -- VM exit (SDM 28.2: recording the exit information, 28.3: saving guest state) ------------
    def vm_exit(self, info: Intercept | None) -> ExitInfo:
        vmcs, cpu = self.vmcs, self.cpu
        if info is None:
            # The host kicked the vCPU (its reschedule IPI) at this instruction boundary.
            info = Intercept("external_interrupt", cpu.eip, vector=RESCHEDULE_VECTOR)
        exit_info = self._exit_info(info)
        fields = vmcs.fields  # (VMWRITE: each value truncated to its field's width)
        fields[_VM_EXIT_REASON] = exit_info.reason & 0xFFFFFFFF
        fields[_EXIT_QUALIFICATION] = exit_info.qualification & 0xFFFFFFFFFFFFFFFF
        fields[_VM_EXIT_INSTRUCTION_LEN] = exit_info.instruction_len & 0xFFFFFFFF
        fields[_VM_EXIT_INTR_INFO] = exit_info.intr_info & 0xFFFFFFFF
        if exit_info.intr_error_code is not None:
            fields[_VM_EXIT_INTR_ERROR_CODE] = exit_info.intr_error_code & 0xFFFFFFFF
        # Written on every exit (SDM "Information for VM Exits During Event Delivery"):
        # valid only when the exit interrupted the delivery of an event.
        fields[_IDT_VECTORING_INFO_FIELD] = exit_info.idt_vectoring_info & 0xFFFFFFFF
        if exit_info.idt_vectoring_error_code is not None:
            fields[_IDT_VECTORING_ERROR_CODE] = exit_info.idt_vectoring_error_code & 0xFFFFFFFF
        if exit_info.guest_linear_address is not None:
            fields[_GUEST_LINEAR_ADDRESS] = exit_info.guest_linear_address & 0xFFFFFFFFFFFFFFFF
        if exit_info.guest_physical_address is not None:
            fields[_GUEST_PHYSICAL_ADDRESS] = \
                exit_info.guest_physical_address & 0xFFFFFFFFFFFFFFFF
        self.save_guest_state(vmcs)
        cpu.intercept = None
        cpu.cr_shadow = {}
        self.guest_mode = False
        # What loading the host state put in the root-mode registers (built when looked
        # at); the same as last time unless kvm.ko wrote a host field or the PAT moved.
        at = self._host_values_at
        if at is None or at[0] is not vmcs or at[1] != vmcs.host_gen:
            values = _read_fields(fields, _take_host_load, _HOST_LOAD_FIELDS)
            if values != self._host_values:
                self._host_values = values
                self._host_loaded = None  # (built again below)
            self._host_values_at = (vmcs, vmcs.host_gen)
        pat = cpu.msr.get(MSR_IA32_CR_PAT, 0)
        if self._host_loaded is None or self._host_loaded[1] != pat:
            self._host_loaded = ({enc: 0 if v is None else v
                                  for enc, v in zip(_HOST_LOAD_FIELDS, self._host_values,
                                                    strict=True)}, pat)
            self._host_cpu = None
        self.last_exit = exit_info
        return exit_info

    def save_guest_state(self, vmcs: Vmcs) -> None:
        cpu, fields = self.cpu, vmcs.fields
        mmu, msr = cpu.mmu, cpu.msr
        # (Stored straight into the fields: every value below fits its field's width, as
        # VMWRITE would truncate it to: 32-bit registers, 16-bit selectors, 17-bit rights.)
        fields[_GUEST_CR0] = mmu.cr0
        fields[_GUEST_CR3] = mmu.cr3
        fields[_GUEST_CR4] = mmu.cr4
        last = self._seg_loaded
        segs = cpu.seg
        at = self._seg_loaded_at
        if last is None or not last[2] or segs != last[1] \
                or ((at is None or at[0] is not vmcs or at[1] != vmcs.seg_gen)
                    and _read_fields(fields, _take_segments, _CPU_SEGMENT_FIELD_LIST)
                    != last[0]):
            for seg, (sel_f, base_f, limit_f, ar_f) in zip(segs, _CPU_SEGMENT_FIELDS,
                                                           strict=True):
                fields[sel_f] = seg.selector & 0xFFFF
                fields[base_f] = seg.base
                fields[limit_f] = seg.limit & 0xFFFFFFFF
                fields[ar_f] = AR_UNUSABLE if seg.access == 0 else \
                    (seg.access & 0xFF) | ((seg.flags & 0xF) << 12)  # ar_from_segment
            vmcs.seg_gen += 1  # (the processor's own stores: the fields may differ now)
            self._stored_at = None
        else:
            # The fields hold what these stores would write: the segments loaded at entry
            # from these very fields, unchanged since, and saving them gives the fields
            # back: the stores are skipped, one in every exit that leaves segments alone.
            # Equal registers the guest loaded itself (other objects) give way to the
            # loaded ones, so that this check and the next entry's find them by identity
            # (else each compares six dataclasses field by field at every exit).
            segs[:] = last[1]
            self._stored_at = self._loaded_at  # (load_guest_state checks its VMCS and gen)
        if cpu.ldt_tr_changed:  # (LLDT, LTR: else the fields hold what the entry loaded)
            for (sel, base, limit, ar), (sel_f, base_f, limit_f, ar_f) in (
                    (cpu.ldtr, _LDTR_FIELDS), (cpu.tr, _TR_FIELDS)):
                fields[sel_f], fields[base_f] = sel & 0xFFFF, base
                fields[limit_f], fields[ar_f] = limit & 0xFFFFFFFF, ar
            cpu.ldt_tr_changed = False
        base, limit = cpu.gdtr
        fields[_GUEST_GDTR_BASE], fields[_GUEST_GDTR_LIMIT] = base, limit & 0xFFFFFFFF
        base, limit = cpu.idtr
        fields[_GUEST_IDTR_BASE], fields[_GUEST_IDTR_LIMIT] = base, limit & 0xFFFFFFFF
        fields[_GUEST_RSP] = cpu.r[4]
        fields[_GUEST_RIP] = cpu.eip
        fields[_GUEST_RFLAGS] = cpu.eflags
        fields[_GUEST_ACTIVITY_STATE] = GUEST_ACTIVITY_HLT if cpu.halted else \
            GUEST_ACTIVITY_ACTIVE
        # Blocking by STI or MOV SS as it was at the exit (SDM "Saving Non-Register State");
        # vmsim models no SMI or NMI blocking, so bits 2 and 3 are 0.
        fields[_GUEST_INTERRUPTIBILITY_INFO] = cpu.interrupt_shadow()
        fields[_GUEST_SYSENTER_CS] = msr.get(MSR_IA32_SYSENTER_CS, 0) & 0xFFFFFFFF
        fields[_GUEST_SYSENTER_ESP] = msr.get(MSR_IA32_SYSENTER_ESP, 0) & 0xFFFFFFFFFFFFFFFF
        fields[_GUEST_SYSENTER_EIP] = msr.get(MSR_IA32_SYSENTER_EIP, 0) & 0xFFFFFFFFFFFFFFFF
        exit_ctl = fields.get(_VM_EXIT_CONTROLS, 0)
        if exit_ctl & VM_EXIT_SAVE_IA32_PAT:
            fields[_GUEST_IA32_PAT] = msr.get(MSR_IA32_CR_PAT, 0) & 0xFFFFFFFFFFFFFFFF
        if exit_ctl & VM_EXIT_SAVE_IA32_EFER:
            fields[_GUEST_IA32_EFER] = 0  # vmsim's CPU has no EFER: it reads as 0

    def _exit_info(self, info: Intercept) -> ExitInfo:
        exit_info = self._exit_info_for(info)
        # An exit during event delivery: the CPU names the event it was delivering as
        # extra["vectoring"] = (vector, error code or None, soft).
        # (Vmx itself gives extra["idt_vectoring"] = (interruption info, error code) for a
        # fault while delivering an injected event.)
        vectoring = info.extra.get("vectoring")
        if vectoring is not None:
            vector, code, soft = vectoring
            exit_info.idt_vectoring_info = _intr_info(vector, code, soft,
                                                      info.extra.get("vectoring_type"))
            exit_info.idt_vectoring_error_code = code
            if soft:
                # SDM "VM-Exit Instruction-Length Field": an exit during the delivery of a
                # software interrupt or exception gives that instruction's length.
                exit_info.instruction_len = info.extra.get("vectoring_len", 0)
        elif "idt_vectoring" in info.extra:
            exit_info.idt_vectoring_info, exit_info.idt_vectoring_error_code = \
                info.extra["idt_vectoring"]
        return exit_info

    def _exit_info_for(self, info: Intercept) -> ExitInfo:
        k = info.kind
        if k == "io":
            # SDM "Exit Qualification for I/O Instructions": size-1, IN, string, REP, imm, port.
            q = ((info.size - 1) | (8 if info.is_in else 0) | (16 if info.string else 0)
                 | (32 if info.rep else 0) | (64 if info.extra.get("imm") else 0)
                 | (info.port << 16))
            return ExitInfo(ExitReason.IO_INSTRUCTION, q, info.insn_len,
                            guest_linear_address=info.linear if info.string else None)
        if k == "hlt":
            return ExitInfo(ExitReason.HLT, 0, info.insn_len)
        if k == "cpuid":
            return ExitInfo(ExitReason.CPUID, 0, info.insn_len)
        if k == "vmcall":
            return ExitInfo(ExitReason.VMCALL, 0, info.insn_len)
        if k == "invd":
            return ExitInfo(ExitReason.INVD, 0, info.insn_len)
        if k == "wbinvd":
            return ExitInfo(ExitReason.WBINVD, 0, info.insn_len)
        if k == "rdtsc":
            return ExitInfo(ExitReason.RDTSC, 0, info.insn_len)
        if k == "rdmsr":
            return ExitInfo(ExitReason.MSR_READ, 0, info.insn_len)
        if k == "wrmsr":
            return ExitInfo(ExitReason.MSR_WRITE, 0, info.insn_len)
        if k == "invlpg":
            return ExitInfo(ExitReason.INVLPG, info.linear, info.insn_len)
        if k in ("cr_read", "cr_write"):
            # SDM "Exit Qualification for Control-Register Accesses".
            q = info.cr | ((0 if k == "cr_write" else 1) << 4) | (info.gpr << 8)
            return ExitInfo(ExitReason.CR_ACCESS, q, info.insn_len)
        if k == "clts":
            return ExitInfo(ExitReason.CR_ACCESS, 2 << 4, info.insn_len)
        if k == "lmsw":
            # CR 0, access type 3, the operand's type (bit 6), its data (31:16); a memory
            # operand's linear address goes in the guest-linear address field.
            memory = info.extra["memory"]
            q = 3 << 4 | (64 if memory else 0) | info.extra["source"] << 16
            return ExitInfo(ExitReason.CR_ACCESS, q, info.insn_len,
                            guest_linear_address=info.linear if memory else None)
        if k == "exception":
            intr = _intr_info(info.vector, info.error_code, bool(info.extra.get("soft")))
            # #PF: the faulting linear address; #DB: DR6's B0-B3, BD, BS bits (SDM "Exit
            # Qualification for Debug Exceptions"; DR6 itself is left alone).
            q = info.linear if info.vector == X.PF else \
                info.extra.get("dr6", 0) if info.vector == X.DB else 0
            return ExitInfo(ExitReason.EXCEPTION_NMI, q, info.insn_len, intr_info=intr,
                            intr_error_code=info.error_code)
        if k == "triple_fault":
            return ExitInfo(ExitReason.TRIPLE_FAULT)
        if k == "external_interrupt":
            # With "acknowledge interrupt on exit" the CPU takes the vector from the
            # interrupt controller and stores it: type 0 (external interrupt), valid.
            ack = self.vmcs.read(FI.VM_EXIT_CONTROLS) & VM_EXIT_ACK_INTR_ON_EXIT
            return ExitInfo(ExitReason.EXTERNAL_INTERRUPT, intr_info=(
                INTR_INFO_VALID_MASK | INTR_TYPE_EXT_INTR | (info.vector & 0xFF)) if ack else 0)
        if k == "interrupt_window":
            return ExitInfo(ExitReason.INTERRUPT_WINDOW)
        if k == "ept_violation":
            # SDM "Exit Qualification for EPT Violations" (built by the EPT walker; an access
            # that met no memory at all, with EPT off, reports a plain read or write).
            q = info.extra.get("qualification", 2 if info.extra.get("write") else 1)
            gla = info.linear if q & EPT_VIOLATION_GVA_IS_VALID else None
            return ExitInfo(ExitReason.EPT_VIOLATION, q, 0, guest_linear_address=gla,
                            guest_physical_address=info.extra["gpa"])
        if k == "ept_misconfig":
            return ExitInfo(ExitReason.EPT_MISCONFIG, 0, 0,
                            guest_physical_address=info.extra["gpa"])
        raise ValueError(f"no VM exit for {k}")


# Field encodings as plain ints for the entry and exit paths (an IntEnum member costs a
# slow class-attribute lookup each time it is named).
_GUEST_CR0, _GUEST_CR3, _GUEST_CR4 = F.GUEST_CR0.value, F.GUEST_CR3.value, F.GUEST_CR4.value
_CR0_GUEST_HOST_MASK, _CR0_READ_SHADOW = F.CR0_GUEST_HOST_MASK.value, F.CR0_READ_SHADOW.value
_CR4_GUEST_HOST_MASK, _CR4_READ_SHADOW = F.CR4_GUEST_HOST_MASK.value, F.CR4_READ_SHADOW.value
_GUEST_GDTR_BASE, _GUEST_GDTR_LIMIT = F.GUEST_GDTR_BASE.value, F.GUEST_GDTR_LIMIT.value
_GUEST_IDTR_BASE, _GUEST_IDTR_LIMIT = F.GUEST_IDTR_BASE.value, F.GUEST_IDTR_LIMIT.value
_GUEST_RSP, _GUEST_RIP, _GUEST_RFLAGS = F.GUEST_RSP.value, F.GUEST_RIP.value, F.GUEST_RFLAGS.value
_GUEST_ACTIVITY_STATE = F.GUEST_ACTIVITY_STATE.value
_GUEST_INTERRUPTIBILITY_INFO = F.GUEST_INTERRUPTIBILITY_INFO.value
_GUEST_SYSENTER_CS = F.GUEST_SYSENTER_CS.value
_GUEST_SYSENTER_ESP = F.GUEST_SYSENTER_ESP.value
_GUEST_SYSENTER_EIP = F.GUEST_SYSENTER_EIP.value
_GUEST_IA32_PAT, _GUEST_IA32_EFER = F.GUEST_IA32_PAT.value, F.GUEST_IA32_EFER.value
_VM_ENTRY_CONTROLS, _VM_EXIT_CONTROLS = F.VM_ENTRY_CONTROLS.value, F.VM_EXIT_CONTROLS.value
_CPU_BASED_VM_EXEC_CONTROL = F.CPU_BASED_VM_EXEC_CONTROL.value
_TSC_OFFSET = F.TSC_OFFSET.value
_VM_EXIT_REASON, _EXIT_QUALIFICATION = F.VM_EXIT_REASON.value, F.EXIT_QUALIFICATION.value
_VM_EXIT_INSTRUCTION_LEN = F.VM_EXIT_INSTRUCTION_LEN.value
_VM_EXIT_INTR_INFO, _VM_EXIT_INTR_ERROR_CODE = F.VM_EXIT_INTR_INFO.value, \
    F.VM_EXIT_INTR_ERROR_CODE.value
_IDT_VECTORING_INFO_FIELD = F.IDT_VECTORING_INFO_FIELD.value
_IDT_VECTORING_ERROR_CODE = F.IDT_VECTORING_ERROR_CODE.value
_GUEST_LINEAR_ADDRESS = F.GUEST_LINEAR_ADDRESS.value
_GUEST_PHYSICAL_ADDRESS = F.GUEST_PHYSICAL_ADDRESS.value


def _segment_fields(segs: list[Segment]) -> tuple[int, ...]:
    """What save_guest_state stores for these segments, in _CPU_SEGMENT_FIELD_LIST's order."""
    return tuple(v for seg in segs for v in (
        seg.selector & 0xFFFF, seg.base, seg.limit & 0xFFFFFFFF,
        AR_UNUSABLE if seg.access == 0 else (seg.access & 0xFF) | ((seg.flags & 0xF) << 12)))


def _segment(sel: int, base: int, limit: int, ar: int) -> Segment:
    """segment_from_vmcs from the four field values."""
    if ar & AR_UNUSABLE:
        return Segment(sel, 0, 0, 0, 0)
    return Segment(sel, base, limit, ar & 0xFF, (ar >> 12) & 0xF)


# What load_guest_state reads, in its order of names.
_LOAD_FIELDS = (_GUEST_CR0, _GUEST_CR4, _GUEST_CR3, _CR0_GUEST_HOST_MASK, _CR0_READ_SHADOW,
                _CR4_GUEST_HOST_MASK, _CR4_READ_SHADOW, _GUEST_GDTR_BASE, _GUEST_GDTR_LIMIT,
                _GUEST_IDTR_BASE, _GUEST_IDTR_LIMIT, _GUEST_RSP, _GUEST_RIP, _GUEST_RFLAGS,
                _GUEST_INTERRUPTIBILITY_INFO, _GUEST_ACTIVITY_STATE, _VM_ENTRY_CONTROLS,
                _GUEST_SYSENTER_CS, _GUEST_SYSENTER_ESP, _GUEST_SYSENTER_EIP,
                _CPU_BASED_VM_EXEC_CONTROL)
_ZEROS = (0,) * len(_LOAD_FIELDS)
# _LOAD_FIELDS[11:20]: what a load gives the CPU also where the state stored is current.
_ALWAYS_LOADED = _LOAD_FIELDS[11:20]

# What loading the host state reads: the host-state area and the VM-exit controls.
_HOST_LOAD_FIELDS = (*(f.value for f in F if f.name.startswith("HOST_")),
                     F.VM_EXIT_CONTROLS.value)
# What the host-state checks read: that, and the VM-entry controls.
_HOST_CHECK_FIELDS = (*_HOST_LOAD_FIELDS, F.VM_ENTRY_CONTROLS.value)


# Reading many fields at every entry and exit, to see whether they changed: one C call
# (itemgetter) where all are written, else get's None for the missing ones. (For 24
# fields, tuple(map(fields.get, ...)) took about twice as long: 8% of an exit to
# userspace.) Fields kvm.ko may never write are read apart (_take_pass).
_take_load = itemgetter(*_LOAD_FIELDS)
_take_always_loaded = itemgetter(*_ALWAYS_LOADED)
_take_segments = itemgetter(*_CPU_SEGMENT_FIELD_LIST)
_take_host_load = itemgetter(*_HOST_LOAD_FIELDS)
_take_host_check = itemgetter(*_HOST_CHECK_FIELDS)
_ENTRY_INTR_INFO = F.VM_ENTRY_INTR_INFO_FIELD.value
# (_GUEST_PASS_FIELDS but the segment registers', which Vmcs.seg_gen stands for.)
_GUEST_PASS_OTHER = tuple(f for f in _GUEST_PASS_FIELDS if f not in GUEST_SEGMENT_FIELDS)
_take_pass = itemgetter(*(f for f in _GUEST_PASS_OTHER
                          if f not in (_GUEST_IA32_PAT, _ENTRY_INTR_INFO)))


def _read_fields(fields: dict[int, int], take: Callable[[dict[int, int]], tuple],
                 encodings: tuple[int, ...]) -> tuple[int | None, ...]:
    """tuple(map(fields.get, encodings)), `take` being itemgetter(*encodings)."""
    try:
        return take(fields)
    except KeyError:
        return tuple(map(fields.get, encodings))


def load_host_state(vmcs: Vmcs, prev_efer: int = 0, prev_pat: int = 0) -> HostCpuState:
    """SDM "Loading Host State" (27.5 in older editions): what a VM exit puts in the
    processor's root-mode registers, from the host-state area and the VM-exit controls.
    `prev_efer` and `prev_pat` are the MSRs as the guest left them: without "load
    IA32_EFER"/"load IA32_PAT" the host gets those (bar EFER.LMA/LME)."""
    return _host_cpu_state(vmcs.read, prev_efer, prev_pat)


def _host_cpu_state(r: Callable[[int], int], prev_efer: int, prev_pat: int) -> HostCpuState:
    exit_ctl = r(F.VM_EXIT_CONTROLS)
    host64 = bool(exit_ctl & VM_EXIT_HOST_ADDR_SPACE_SIZE)
    cr4 = r(F.HOST_CR4) | (0x20 if host64 else 0)  # a 64-bit host always has PAE
    if exit_ctl & VM_EXIT_LOAD_IA32_EFER:
        efer = r(F.HOST_IA32_EFER)
    else:  # only LMA and LME change: the rest stays what the guest left (why KVM loads it)
        efer = prev_efer & ~(EFER_LMA | EFER_LME) | ((EFER_LMA | EFER_LME) if host64 else 0)
    # CS: flat code, 64-bit if the host is; SS/DS/ES/FS/GS: flat data, unusable when null
    # (FS and GS keep the base fields); TR: a busy TSS of limit 0x67; LDTR: unusable.
    cs_ar = 0x9B | (0x2000 if host64 else 0x4000) | 0x8000
    segments = {"cs": HostSegment(r(F.HOST_CS_SELECTOR), 0, 0xFFFFFFFF, cs_ar)}
    for name in ("ss", "ds", "es", "fs", "gs"):
        sel = r(HOST_SELECTORS[name])
        base = r(F.HOST_FS_BASE) if name == "fs" else r(F.HOST_GS_BASE) if name == "gs" else 0
        segments[name] = HostSegment(sel, base, 0xFFFFFFFF, 0xC093 if sel else AR_UNUSABLE)
    segments["tr"] = HostSegment(r(F.HOST_TR_SELECTOR), r(F.HOST_TR_BASE), 0x67, 0x8B)
    segments["ldtr"] = HostSegment(0, 0, 0, AR_UNUSABLE)
    return HostCpuState(
        rip=r(F.HOST_RIP), rsp=r(F.HOST_RSP), rflags=0x2,
        cr0=r(F.HOST_CR0), cr3=r(F.HOST_CR3), cr4=cr4, dr7=0x400,
        segments=segments, gdtr=(r(F.HOST_GDTR_BASE), 0xFFFF), idtr=(r(F.HOST_IDTR_BASE), 0xFFFF),
        sysenter_cs=r(F.HOST_IA32_SYSENTER_CS), sysenter_esp=r(F.HOST_IA32_SYSENTER_ESP),
        sysenter_eip=r(F.HOST_IA32_SYSENTER_EIP), efer=efer,
        pat=r(F.HOST_IA32_PAT) if exit_ctl & VM_EXIT_LOAD_IA32_PAT else prev_pat,
        long_mode=host64)


def _intr_info(vector: int, error_code: int | None, soft: bool,
               event_type: int | None = None) -> int:
    """Interruption information for an event (SDM "Format of the VM-Exit Interruption-
    Information Field"): `event_type` when known (an injected external interrupt is 0,
    an NMI 2); otherwise INT3/INTO are software exceptions (6), INT n a software
    interrupt (4), the rest hardware exceptions (3)."""
    if event_type is not None:
        kind = event_type << 8
    elif soft:
        kind = INTR_TYPE_SOFT_EXCEPTION if vector in (X.BP, X.OF) else INTR_TYPE_SOFT_INTR
    else:
        kind = INTR_TYPE_HARD_EXCEPTION
    return (vector | kind | INTR_INFO_VALID_MASK
            | (INTR_INFO_DELIVER_CODE_MASK if error_code is not None else 0))
