"""The VMCS: fields by their real encodings and Linux's names (SDM Vol. 3C 25.x, App. B;
LNX arch/x86/include/asm/vmx.h `enum vmcs_field`), and Intel's basic exit reasons.

A field encoding says its width, type (control, exit information, guest, host) and
index; `field_info` decodes it the way the SDM's "Field Encoding" table describes.

The simulated processor supports Intel 64 (its host is a 64-bit Linux), so natural-width
fields hold 64 bits: the host-state area holds kernel addresses such as 0xffffffff...;
the guest's natural-width fields hold its 32-bit values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any


class F(enum.IntEnum):
    """VMCS field encodings (the subset vmsim uses)."""

    # 16-bit control / guest / host
    VIRTUAL_PROCESSOR_ID = 0x0000
    GUEST_ES_SELECTOR = 0x0800
    GUEST_CS_SELECTOR = 0x0802
    GUEST_SS_SELECTOR = 0x0804
    GUEST_DS_SELECTOR = 0x0806
    GUEST_FS_SELECTOR = 0x0808
    GUEST_GS_SELECTOR = 0x080A
    GUEST_LDTR_SELECTOR = 0x080C
    GUEST_TR_SELECTOR = 0x080E
    HOST_ES_SELECTOR = 0x0C00
    HOST_CS_SELECTOR = 0x0C02
    HOST_SS_SELECTOR = 0x0C04
    HOST_DS_SELECTOR = 0x0C06
    HOST_FS_SELECTOR = 0x0C08
    HOST_GS_SELECTOR = 0x0C0A
    HOST_TR_SELECTOR = 0x0C0C
    # 64-bit control
    IO_BITMAP_A = 0x2000
    IO_BITMAP_B = 0x2002
    MSR_BITMAP = 0x2004
    TSC_OFFSET = 0x2010
    EPT_POINTER = 0x201A
    # 64-bit exit information / guest / host
    GUEST_PHYSICAL_ADDRESS = 0x2400
    VMCS_LINK_POINTER = 0x2800
    GUEST_IA32_DEBUGCTL = 0x2802
    GUEST_IA32_PAT = 0x2804
    GUEST_IA32_EFER = 0x2806
    HOST_IA32_PAT = 0x2C00
    HOST_IA32_EFER = 0x2C02
    # 32-bit control
    PIN_BASED_VM_EXEC_CONTROL = 0x4000
    CPU_BASED_VM_EXEC_CONTROL = 0x4002
    EXCEPTION_BITMAP = 0x4004
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008
    CR3_TARGET_COUNT = 0x400A
    VM_EXIT_CONTROLS = 0x400C
    VM_EXIT_MSR_STORE_COUNT = 0x400E
    VM_EXIT_MSR_LOAD_COUNT = 0x4010
    VM_ENTRY_CONTROLS = 0x4012
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014
    VM_ENTRY_INTR_INFO_FIELD = 0x4016
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018
    VM_ENTRY_INSTRUCTION_LEN = 0x401A
    TPR_THRESHOLD = 0x401C
    SECONDARY_VM_EXEC_CONTROL = 0x401E
    # 32-bit exit information
    VM_INSTRUCTION_ERROR = 0x4400
    VM_EXIT_REASON = 0x4402
    VM_EXIT_INTR_INFO = 0x4404
    VM_EXIT_INTR_ERROR_CODE = 0x4406
    IDT_VECTORING_INFO_FIELD = 0x4408
    IDT_VECTORING_ERROR_CODE = 0x440A
    VM_EXIT_INSTRUCTION_LEN = 0x440C
    VMX_INSTRUCTION_INFO = 0x440E
    # 32-bit guest
    GUEST_ES_LIMIT = 0x4800
    GUEST_CS_LIMIT = 0x4802
    GUEST_SS_LIMIT = 0x4804
    GUEST_DS_LIMIT = 0x4806
    GUEST_FS_LIMIT = 0x4808
    GUEST_GS_LIMIT = 0x480A
    GUEST_LDTR_LIMIT = 0x480C
    GUEST_TR_LIMIT = 0x480E
    GUEST_GDTR_LIMIT = 0x4810
    GUEST_IDTR_LIMIT = 0x4812
    GUEST_ES_AR_BYTES = 0x4814
    GUEST_CS_AR_BYTES = 0x4816
    GUEST_SS_AR_BYTES = 0x4818
    GUEST_DS_AR_BYTES = 0x481A
    GUEST_FS_AR_BYTES = 0x481C
    GUEST_GS_AR_BYTES = 0x481E
    GUEST_LDTR_AR_BYTES = 0x4820
    GUEST_TR_AR_BYTES = 0x4822
    GUEST_INTERRUPTIBILITY_INFO = 0x4824
    GUEST_ACTIVITY_STATE = 0x4826
    GUEST_SYSENTER_CS = 0x482A
    HOST_IA32_SYSENTER_CS = 0x4C00
    # natural-width control
    CR0_GUEST_HOST_MASK = 0x6000
    CR4_GUEST_HOST_MASK = 0x6002
    CR0_READ_SHADOW = 0x6004
    CR4_READ_SHADOW = 0x6006
    CR3_TARGET_VALUE0 = 0x6008
    CR3_TARGET_VALUE1 = 0x600A
    CR3_TARGET_VALUE2 = 0x600C
    CR3_TARGET_VALUE3 = 0x600E
    # natural-width exit information
    EXIT_QUALIFICATION = 0x6400
    GUEST_LINEAR_ADDRESS = 0x640A
    # natural-width guest
    GUEST_CR0 = 0x6800
    GUEST_CR3 = 0x6802
    GUEST_CR4 = 0x6804
    GUEST_ES_BASE = 0x6806
    GUEST_CS_BASE = 0x6808
    GUEST_SS_BASE = 0x680A
    GUEST_DS_BASE = 0x680C
    GUEST_FS_BASE = 0x680E
    GUEST_GS_BASE = 0x6810
    GUEST_LDTR_BASE = 0x6812
    GUEST_TR_BASE = 0x6814
    GUEST_GDTR_BASE = 0x6816
    GUEST_IDTR_BASE = 0x6818
    GUEST_DR7 = 0x681A
    GUEST_RSP = 0x681C
    GUEST_RIP = 0x681E
    GUEST_RFLAGS = 0x6820
    GUEST_PENDING_DBG_EXCEPTIONS = 0x6822
    GUEST_SYSENTER_ESP = 0x6824
    GUEST_SYSENTER_EIP = 0x6826
    # natural-width host
    HOST_CR0 = 0x6C00
    HOST_CR3 = 0x6C02
    HOST_CR4 = 0x6C04
    HOST_FS_BASE = 0x6C06
    HOST_GS_BASE = 0x6C08
    HOST_TR_BASE = 0x6C0A
    HOST_GDTR_BASE = 0x6C0C
    HOST_IDTR_BASE = 0x6C0E
    HOST_IA32_SYSENTER_ESP = 0x6C10
    HOST_IA32_SYSENTER_EIP = 0x6C12
    HOST_RSP = 0x6C14
    HOST_RIP = 0x6C16


# F's encodings as plain ints under the same names, for code that names fields at every VM
# exit: in Python 3.11 naming an IntEnum member (F.GUEST_RIP) goes through the enum
# metaclass's __getattr__ hook, some 0.2 us each; an attribute of this namespace does not.
# (kvm.ko's modules import it as F: they use the encodings only as numbers.)
F_INT = SimpleNamespace(**{m.name: m.value for m in F})


class ExitReason(enum.IntEnum):
    """Basic exit reasons (SDM App. C; LNX `EXIT_REASON_*`)."""

    EXCEPTION_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT_SIGNAL = 3
    SIPI_SIGNAL = 4
    INTERRUPT_WINDOW = 7
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    VMCALL = 18
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    MSR_READ = 31
    MSR_WRITE = 32
    INVALID_STATE = 33
    MSR_LOAD_FAIL = 34
    MWAIT_INSTRUCTION = 36
    MONITOR_TRAP_FLAG = 37
    MONITOR_INSTRUCTION = 39
    PAUSE_INSTRUCTION = 40
    MCE_DURING_VMENTRY = 41
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49
    WBINVD = 54


VMX_EXIT_REASONS_FAILED_VMENTRY = 0x80000000

# Primary processor-based controls (SDM 25.6.2; LNX vmxfeatures.h).
CPU_BASED_INTR_WINDOW_EXITING = 1 << 2
CPU_BASED_USE_TSC_OFFSETTING = 1 << 3
CPU_BASED_HLT_EXITING = 1 << 7
CPU_BASED_INVLPG_EXITING = 1 << 9
CPU_BASED_RDTSC_EXITING = 1 << 12
CPU_BASED_CR3_LOAD_EXITING = 1 << 15
CPU_BASED_CR3_STORE_EXITING = 1 << 16
CPU_BASED_UNCOND_IO_EXITING = 1 << 24
CPU_BASED_USE_IO_BITMAPS = 1 << 25
CPU_BASED_USE_MSR_BITMAPS = 1 << 28
CPU_BASED_ACTIVATE_SECONDARY_CONTROLS = 1 << 31
SECONDARY_EXEC_ENABLE_EPT = 1 << 1
SECONDARY_EXEC_WBINVD_EXITING = 1 << 6
SECONDARY_EXEC_UNRESTRICTED_GUEST = 1 << 7

# Interruption-information format (SDM 25.8.3).
INTR_INFO_VALID_MASK = 1 << 31
INTR_INFO_DELIVER_CODE_MASK = 1 << 11
INTR_TYPE_EXT_INTR = 0 << 8
INTR_TYPE_NMI_INTR = 2 << 8
INTR_TYPE_HARD_EXCEPTION = 3 << 8
INTR_TYPE_SOFT_INTR = 4 << 8
INTR_TYPE_SOFT_EXCEPTION = 6 << 8

GUEST_ACTIVITY_ACTIVE, GUEST_ACTIVITY_HLT, GUEST_ACTIVITY_SHUTDOWN = 0, 1, 2
# Interruptibility state (SDM "Guest Non-Register State"; LNX vmx.h GUEST_INTR_STATE_*).
GUEST_INTR_STATE_STI = 1 << 0
GUEST_INTR_STATE_MOV_SS = 1 << 1
GUEST_INTR_STATE_SMI = 1 << 2
GUEST_INTR_STATE_NMI = 1 << 3

# Pin-based controls (SDM "Pin-Based VM-Execution Controls"; LNX vmx.h PIN_BASED_*).
PIN_BASED_EXT_INTR_MASK = 1 << 0

# VM-exit controls (SDM "VM-Exit Controls"; LNX vmx.h VM_EXIT_*).
VM_EXIT_SAVE_DEBUG_CONTROLS = 1 << 2
VM_EXIT_HOST_ADDR_SPACE_SIZE = 1 << 9  # the host runs in 64-bit mode after the exit
VM_EXIT_ACK_INTR_ON_EXIT = 1 << 15
VM_EXIT_SAVE_IA32_PAT = 1 << 18
VM_EXIT_LOAD_IA32_PAT = 1 << 19
VM_EXIT_SAVE_IA32_EFER = 1 << 20
VM_EXIT_LOAD_IA32_EFER = 1 << 21
# VM-entry controls (SDM "VM-Entry Controls"; LNX vmx.h VM_ENTRY_*).
VM_ENTRY_IA32E_MODE = 1 << 9
VM_ENTRY_LOAD_IA32_PAT = 1 << 14
VM_ENTRY_LOAD_IA32_EFER = 1 << 15

# What this simulated processor reports in its VMX capability MSRs for CR0/CR4 (SDM App.
# A.7-A.8): bits that must be 1 (FIXED0) and may be 1 (FIXED1) in VMX operation.
VMX_CR0_FIXED0 = 0x80000021  # PG NE PE (PG and PE relaxed for an unrestricted guest)
VMX_CR0_FIXED1 = 0xFFFFFFFF
VMX_CR4_FIXED0 = 0x00002000  # VMXE
# VME..OSXMMEXCPT, VMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP: the bits a Broadwell-class
# core supports, which its host Linux sets (HOST_CR4). kvm.ko still refuses the guest any
# CR4 bit its CPUID does not offer (kvm_set_cr4), so the guest never sees these.
VMX_CR4_FIXED1 = 0x003727FF
# Physical-address width of the simulated processor (CPUID.80000008H:EAX[7:0]), as the
# Xeon cores of that era report it: HOST_CR3 may not set bits above it.
PHYS_ADDR_BITS = 46
# Linear addresses are 48 bits (4-level paging): a canonical address has bits 63:47 equal.
LINEAR_ADDR_BITS = 48

_TYPES = ("control", "exit information", "guest state", "host state")
_WIDTHS = ("16-bit", "64-bit", "32-bit", "natural-width")


def field_info(encoding: int) -> tuple[str, str, int]:
    """(width, type, index) of a field encoding, per the SDM's encoding format."""
    return _WIDTHS[(encoding >> 13) & 3], _TYPES[(encoding >> 10) & 3], (encoding >> 1) & 0x1FF


def field_mask(encoding: int) -> int:
    width = (encoding >> 13) & 3
    return (0xFFFF, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)[width]


# The fields Vmcs.host_gen and Vmcs.seg_gen count writes to: the host-state area (field
# type 3, encoding bits 11:10) with the VM-exit and VM-entry controls, and every guest
# segment register's selector, base, limit and access rights.
HOST_GEN_FIELDS = frozenset(
    [f.value for f in F if (f.value >> 10) & 3 == 3]
    + [F.VM_EXIT_CONTROLS.value, F.VM_ENTRY_CONTROLS.value])
# RSP, RIP, RFLAGS and CR3: the fields Vmcs.gen does not count. kvm.ko writes the first three
# back at most exits (Linux writes its dirty register cache back before the entry), and CR3
# at a guest's MOV to CR3 under shadow paging (the shadow root); a VM entry loads them all.
GUEST_RELOADED_FIELDS = frozenset((F.GUEST_RSP.value, F.GUEST_RIP.value, F.GUEST_RFLAGS.value,
                                   F.GUEST_CR3.value))
GUEST_SEGMENT_FIELDS = frozenset(
    F[f"GUEST_{seg}_{part}"].value for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")
    for part in ("SELECTOR", "BASE", "LIMIT", "AR_BYTES"))

_MASKS = (0xFFFF, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # by width (bits 14:13)


def _is_high(encoding: int) -> bool:
    """The "high" access type: bit 0 set in the encoding of a 64-bit field."""
    return bool(encoding & 1) and (encoding >> 13) & 3 == 1


# The MSR bitmap is some 32,000 pairs that kvm.ko sets once per vCPU and never changes in
# place (it assigns a new set): its plain form, and the set rebuilt from a plain form, are
# kept by the object's identity, so the history's checkpoints and rebuilds
# (vmsim/history.py) do not sort and hash it each time.
_MSR_STATE: dict[int, tuple[Any, list[list[Any]]]] = {}  # id(set) -> (set, pairs)
_MSR_LOAD: dict[int, tuple[Any, frozenset[tuple[int, bool]]]] = {}  # id(pairs) -> (pairs, set)


def _memo(cache: dict[int, tuple[Any, Any]], key: Any, make: Any) -> Any:
    hit = cache.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    if len(cache) >= 64:
        cache.clear()
    value = make()
    cache[id(key)] = (key, value)
    return value


def _msr_bitmap_state(bitmap: set[tuple[int, bool]] | None) -> list[list[Any]] | None:
    if bitmap is None:
        return None
    # Sorted as ints (msr << 1 | is_write), the same order: sorting 16,377 pairs of an int
    # and a bool as lists took ~20 ms, the first checkpoint's largest cost.
    pairs = _memo(_MSR_STATE, bitmap, lambda: [
        [x >> 1, bool(x & 1)] for x in sorted([m << 1 | w for m, w in bitmap])])
    if id(pairs) not in _MSR_LOAD:  # loading these very pairs gives this very set back
        _MSR_LOAD[id(pairs)] = (pairs, bitmap)
    return pairs


def _msr_bitmap_load(pairs: list[list[Any]] | None) -> Any:
    if pairs is None:
        return None
    # Shared by the VMs loaded from the same pairs: nothing changes a bitmap in place.
    return _memo(_MSR_LOAD, pairs, lambda: frozenset((m, bool(w)) for m, w in pairs))


class Vmcs:
    """One VMCS: a revision id, a launch state, and fields read and written by encoding."""

    REVISION_ID = 0x1  # what this simulated processor reports in IA32_VMX_BASIC[30:0]

    def __init__(self) -> None:
        self.fields: dict[int, int] = {}
        self.launched = False
        # The I/O and MSR bitmaps live in memory the VMCS points to (IO_BITMAP_A/B,
        # MSR_BITMAP); vmsim does not model host memory, so they are kept here: the ports
        # whose accesses exit, and the (msr, is_write) pairs that exit.
        self.io_bitmap: set[int] = set()
        self.msr_bitmap: set[tuple[int, bool]] | None = None
        # Write generations, counting VMWRITEs (and load_state) to two groups of fields: the
        # host-state area with the VM-exit and VM-entry controls (host_gen: what a VM entry
        # checks of the host and a VM exit loads), and the guest's segment registers
        # (seg_gen). While one has not moved, what the processor read of its group is still
        # what the fields hold (vmsim.hw.vmx.Vmx): not state, only a way to know that.
        # The VMX hardware's own stores at a VM exit (vmx.save_guest_state) count theirs.
        self.host_gen = 0
        self.seg_gen = 0
        # And every field but GUEST_RELOADED_FIELDS (gen): while it has not moved since a VM
        # exit stored the guest state, the fields hold what the CPU holds, bar those four.
        self.gen = 0

    def read(self, encoding: int) -> int:
        """VMREAD. Unknown fields read as 0 (a real CPU fails VMfailValid 12).

        Access type "high" (bit 0 of a 64-bit field's encoding) reads bits 63:32."""
        # (A high access's encoding is never a key: write and load_state keep it so.)
        value = self.fields.get(encoding)
        if value is not None:
            return value
        if encoding & 1 and _is_high(encoding):
            return self.fields.get(encoding & ~1, 0) >> 32
        return 0

    def write(self, encoding: int, value: int) -> None:
        """VMWRITE, truncated to the field's width; the high access writes bits 63:32."""
        if encoding & 1 and _is_high(encoding):
            full = encoding & ~1
            low = self.fields.get(full, 0) & 0xFFFFFFFF
            self.fields[full] = (value & 0xFFFFFFFF) << 32 | low
        else:
            full = encoding
            self.fields[encoding] = value & _MASKS[(encoding >> 13) & 3]
        if full in GUEST_RELOADED_FIELDS:
            return
        self.gen += 1
        if full in HOST_GEN_FIELDS:
            self.host_gen += 1
        elif full in GUEST_SEGMENT_FIELDS:
            self.seg_gen += 1

    def state(self) -> dict[str, Any]:
        """Every field by encoding, the launch state and the bitmaps, as plain data."""
        return {
            "fields": [[enc, v] for enc, v in sorted(self.fields.items())],
            "launched": self.launched,
            "io_bitmap": sorted(self.io_bitmap),
            "msr_bitmap": _msr_bitmap_state(self.msr_bitmap),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        fields = {enc: v for enc, v in d["fields"]}
        for enc in fields:
            if enc & 1 and _is_high(enc):
                raise ValueError(f"VMCS field {enc:#x}: the high access of a 64-bit field is "
                                 f"not a field of its own (its value is {enc & ~1:#x}'s)")
        self.fields = fields
        self.host_gen += 1
        self.seg_gen += 1
        self.gen += 1
        self.launched = d["launched"]
        self.io_bitmap = set(d["io_bitmap"])
        self.msr_bitmap = _msr_bitmap_load(d["msr_bitmap"])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(sorted(self.fields.items()))

    def dump(self) -> str:
        """The VMCS grouped by area, like Linux's dump_vmcs()."""
        lines = []
        for area in ("guest state", "host state", "control", "exit information"):
            lines.append(f"*** {area.capitalize()} ***")
            for enc, value in self:
                width, kind, _ = field_info(enc)
                if kind != area:
                    continue
                name = F(enc).name if enc in F._value2member_map_ else f"field {enc:#06x}"
                digits = {"16-bit": 4, "32-bit": 8}.get(width, 16)  # as dump_vmcs prints them
                lines.append(f"  {name:<32} {enc:#06x} = {value:#0{digits + 2}x}")
        return "\n".join(lines)
