"""The KVM userspace API as vmsim's VMM sees it (Linux include/uapi/linux/kvm.h).

One protocol, named after the ioctls, that two backends implement: `vmsim.kvm` (the
simulated kvm.ko) and `vmsim.hostkvm` (the host's real /dev/kvm). The register structs
are plain dataclasses with the kernel's field names; `struct kvm_run` is read and written
in place, with the kernel's layout, through `KvmRun`, over the vCPU's mmap'd pages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from typing import Protocol

# The MSRs vmsim's CPU has (LNX arch/x86/include/asm/msr-index.h), for KVM_GET/SET_MSRS.
from vmsim.msr_index import (
    MSR_EFER as MSR_EFER,  # KVM_GET_MSRS names it; it travels in kvm_sregs
)
from vmsim.msr_index import (
    MSR_IA32_APICBASE,
    MSR_IA32_CR_PAT,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_TSC,
)

KVM_API_VERSION = 12

# kvm_run.exit_reason (LNX include/uapi/linux/kvm.h)
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_NAMES = {v: k for k, v in dict(globals()).items()
                  if k.startswith("KVM_EXIT_") and isinstance(v, int)}
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1

# ioctl request numbers (_IO/_IOR/_IOW(KVMIO = 0xAE, nr, size) on x86-64), the `type`
# QEMU's kvm_ioctl / kvm_vm_ioctl / kvm_vcpu_ioctl trace events print.
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_SET_TSS_ADDR = 0xAE47
KVM_CREATE_VCPU = 0xAE41
KVM_RUN = 0xAE80
KVM_GET_REGS, KVM_SET_REGS = 0x8090AE81, 0x4090AE82
KVM_GET_SREGS, KVM_SET_SREGS = 0x8138AE83, 0x4138AE84
KVM_TRANSLATE = 0xC018AE85
KVM_SET_CPUID2 = 0x4008AE90
# The interrupt paths (issue 10): the in-kernel irqchip and PIT, lines, injection, kicks.
KVM_CREATE_IRQCHIP = 0xAE60
KVM_IRQ_LINE = 0x4008AE61  # struct kvm_irq_level {u32 irq; u32 level}
KVM_CREATE_PIT2 = 0x4040AE77  # struct kvm_pit_config {u32 flags; u32 pad[15]}
KVM_INTERRUPT = 0x4004AE86  # struct kvm_interrupt {u32 irq}
KVM_SET_SIGNAL_MASK = 0x4004AE8B  # struct kvm_signal_mask {u32 len; u8 sigset[len]}
KVM_GET_MP_STATE, KVM_SET_MP_STATE = 0x8004AE98, 0x4004AE99  # struct kvm_mp_state {u32}
# Eventfds (issue 11): a guest write completed in the kernel, an interrupt from an eventfd.
KVM_IRQFD = 0x4020AE76  # struct kvm_irqfd {u32 fd; u32 gsi; u32 flags; u32 resamplefd; u8 pad[16]}
KVM_IOEVENTFD = 0x4040AE79  # struct kvm_ioeventfd (below)
# Coalesced MMIO: writes to a zone are queued in a ring the VMM drains later, no exit.
KVM_REGISTER_COALESCED_MMIO = 0x4010AE67  # _IOW 0x67, struct kvm_coalesced_mmio_zone
KVM_UNREGISTER_COALESCED_MMIO = 0x4010AE68  # _IOW 0x68
# The state ioctls QEMU's stop, savevm and migration use (issue 12). The numbers are
# _IOR/_IOW/_IOWR(KVMIO, nr, struct) from include/uapi/linux/kvm.h; the size field (bits
# 29:16) is the struct's size on x86-64 (IOCTL_SIZE checks it against the classes below).
KVM_GET_MSRS, KVM_SET_MSRS = 0xC008AE88, 0x4008AE89  # _IOWR/_IOW 0x88/0x89, struct kvm_msrs
KVM_GET_LAPIC, KVM_SET_LAPIC = 0x8400AE8E, 0x4400AE8F  # struct kvm_lapic_state (1 KiB)
KVM_GET_VCPU_EVENTS = 0x8040AE9F  # _IOR 0x9f, struct kvm_vcpu_events (64 bytes)
KVM_SET_VCPU_EVENTS = 0x4040AEA0  # _IOW 0xa0
# KVM_SET_IRQCHIP is _IOR in the header (a historical slip that the ABI keeps).
KVM_GET_IRQCHIP, KVM_SET_IRQCHIP = 0xC208AE62, 0x8208AE63  # struct kvm_irqchip (520 bytes)
KVM_GET_PIT2, KVM_SET_PIT2 = 0x8070AE9F, 0x4070AEA0  # struct kvm_pit_state2 (112 bytes)
KVM_IOCTLS = {name: v for name, v in dict(globals()).items()
              if name.startswith("KVM_") and isinstance(v, int) and v >= 0xAE00
              and name not in KVM_EXIT_NAMES.values() and name != "KVM_API_VERSION"}
# kvm_run.internal.suberror (LNX include/uapi/linux/kvm.h KVM_INTERNAL_ERROR_*)
KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
KVM_INTERNAL_ERROR_NAMES = {1: "emulation failure", 2: "simultaneous exceptions",
                            3: "event delivery failed", 4: "unexpected exit reason"}
# KVM_CHECK_EXTENSION arguments (LNX include/uapi/linux/kvm.h)
KVM_CAP_IRQCHIP = 0
KVM_CAP_NR_VCPUS = 9  # the recommended number of vCPUs per VM
KVM_CAP_MP_STATE = 14
KVM_CAP_PIT2 = 33
KVM_CAP_MAX_VCPUS = 66  # the most vCPUs a VM may have
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_PIT_STATE2 = 35
KVM_CAP_COALESCED_MMIO = 15  # the ring's page offset in the vCPU mapping, 0 if absent
KVM_CAP_COALESCED_PIO = 68
# struct kvm_ioeventfd {u64 datamatch; u64 addr; u32 len; s32 fd; u32 flags; u8 pad[36]}
KVM_IOEVENTFD_STRUCT = struct.Struct("<QQIiI36x")
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
KVM_IRQFD_STRUCT = struct.Struct("<IIII16x")  # struct kvm_irqfd
KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IRQFD_FLAG_RESAMPLE = 1 << 1
KVM_PIT_SPEAKER_DUMMY = 1  # kvm_pit_config.flags: a dummy speaker port 0x61 in the kernel
# kvm_mp_state.mp_state on x86
KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4
KERNEL_SIGSET_SIZE = 8  # sizeof the kernel's sigset_t on x86-64: kvm_signal_mask.len
KVM_PIO_PAGE_OFFSET = 1  # the I/O data page follows kvm_run in the vCPU mapping
PAGE_SIZE = 4096
KVM_RUN_SIZE = 2352  # sizeof(struct kvm_run) on x86-64
VCPU_MMAP_SIZE = 3 * PAGE_SIZE  # kvm_run, PIO data page, coalesced-MMIO ring
KVM_COALESCED_MMIO_PAGE_OFFSET = 2  # on x86: the VM's ring, in every vCPU's mapping
# struct kvm_coalesced_mmio_zone {u64 addr; u32 size; union {u32 pad; u32 pio;}}
KVM_COALESCED_MMIO_ZONE = struct.Struct("<QII")


@dataclass
class KvmRegs:
    """struct kvm_regs: u64 each, in this order."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2

    FORMAT = struct.Struct("<18Q")

    def pack(self) -> bytes:
        return self.FORMAT.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes) -> KvmRegs:
        return cls(*cls.FORMAT.unpack(data))


@dataclass
class KvmSegment:
    """struct kvm_segment (24 bytes)."""

    base: int = 0
    limit: int = 0
    selector: int = 0
    type: int = 0
    present: int = 0
    dpl: int = 0
    db: int = 0
    s: int = 0
    l: int = 0
    g: int = 0
    avl: int = 0
    unusable: int = 0

    FORMAT = struct.Struct("<QIHBBBBBBBBBx")

    def pack(self) -> bytes:
        return self.FORMAT.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes) -> KvmSegment:
        return cls(*cls.FORMAT.unpack(data))

    @classmethod
    def flat(cls, selector: int, code: bool) -> KvmSegment:
        """A flat 32-bit segment as kvm-hello-world sets it up (base 0, 4 GiB, G, D/B)."""
        return cls(0, 0xFFFFFFFF, selector, 11 if code else 3, 1, 0, 1, 1, 0, 1, 0, 0)


@dataclass
class KvmDtable:
    base: int = 0
    limit: int = 0

    FORMAT = struct.Struct("<QH6x")


SEGMENT_NAMES = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


@dataclass
class KvmSregs:
    """struct kvm_sregs (312 bytes)."""

    cs: KvmSegment = field(default_factory=KvmSegment)
    ds: KvmSegment = field(default_factory=KvmSegment)
    es: KvmSegment = field(default_factory=KvmSegment)
    fs: KvmSegment = field(default_factory=KvmSegment)
    gs: KvmSegment = field(default_factory=KvmSegment)
    ss: KvmSegment = field(default_factory=KvmSegment)
    tr: KvmSegment = field(default_factory=KvmSegment)
    ldt: KvmSegment = field(default_factory=KvmSegment)
    gdt: KvmDtable = field(default_factory=KvmDtable)
    idt: KvmDtable = field(default_factory=KvmDtable)
    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    apic_base: int = 0
    interrupt_bitmap: tuple[int, int, int, int] = (0, 0, 0, 0)

    SIZE = 312

    def pack(self) -> bytes:
        out = bytearray()
        for name in SEGMENT_NAMES:
            out += getattr(self, name).pack()
        for t in (self.gdt, self.idt):
            out += KvmDtable.FORMAT.pack(t.base, t.limit)
        out += struct.pack("<7Q4Q", self.cr0, self.cr2, self.cr3, self.cr4, self.cr8, self.efer,
                           self.apic_base, *self.interrupt_bitmap)
        assert len(out) == self.SIZE
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> KvmSregs:
        segs = [KvmSegment.unpack(data[i * 24:(i + 1) * 24]) for i in range(8)]
        gdt = KvmDtable(*KvmDtable.FORMAT.unpack_from(data, 192))
        idt = KvmDtable(*KvmDtable.FORMAT.unpack_from(data, 208))
        v = struct.unpack_from("<7Q4Q", data, 224)
        return cls(*segs, gdt, idt, *v[:7], tuple(v[7:]))


def ioctl_size(request: int) -> int:
    """The argument size an ioctl number carries (_IOC_SIZE: bits 29:16)."""
    return (request >> 16) & 0x3FFF



# What QEMU's kvm_get_msrs asks for, as far as vmsim's 32-bit CPU has it (no long mode:
# STAR/LSTAR/KERNEL_GS_BASE are absent; EFER travels in kvm_sregs).
PORTABLE_MSRS = (MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
                 MSR_IA32_CR_PAT, MSR_IA32_MISC_ENABLE, MSR_IA32_TSC, MSR_IA32_APICBASE)
KVM_MSRS_HEADER = struct.Struct("<II")  # struct kvm_msrs {u32 nmsrs; u32 pad; entries[]}
KVM_MSR_ENTRY = struct.Struct("<IIQ")  # struct kvm_msr_entry {u32 index; u32 reserved; u64 data}


def pack_msrs(entries: list[tuple[int, int]]) -> bytes:
    """struct kvm_msrs with its entries [(index, data)]."""
    out = bytearray(KVM_MSRS_HEADER.pack(len(entries), 0))
    for index, data in entries:
        out += KVM_MSR_ENTRY.pack(index, 0, data & 0xFFFFFFFFFFFFFFFF)
    return bytes(out)


def unpack_msrs(buf: bytes, n: int | None = None) -> list[tuple[int, int]]:
    """The first `n` entries (all that nmsrs names if None) of a struct kvm_msrs."""
    count, _ = KVM_MSRS_HEADER.unpack_from(buf, 0)
    n = count if n is None else n
    return [(i, d) for i, _, d in (KVM_MSR_ENTRY.unpack_from(buf, 8 + 16 * k)
                                   for k in range(n))]


# kvm_vcpu_events.flags and .interrupt.shadow (arch/x86/include/uapi/asm/kvm.h)
KVM_VCPUEVENT_VALID_NMI_PENDING = 0x01
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x02
KVM_VCPUEVENT_VALID_SHADOW = 0x04
KVM_VCPUEVENT_VALID_SMM = 0x08
KVM_VCPUEVENT_VALID_PAYLOAD = 0x10
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20
KVM_X86_SHADOW_INT_MOV_SS = 0x01
KVM_X86_SHADOW_INT_STI = 0x02


@dataclass
class KvmVcpuEvents:
    """struct kvm_vcpu_events (64 bytes): what is pending or being injected, and the
    interrupt shadow; the state that is neither a register nor in RAM."""

    exception_injected: int = 0
    exception_nr: int = 0
    exception_has_error_code: int = 0
    exception_pending: int = 0
    exception_error_code: int = 0
    interrupt_injected: int = 0
    interrupt_nr: int = 0
    interrupt_soft: int = 0
    interrupt_shadow: int = 0
    nmi_injected: int = 0
    nmi_pending: int = 0
    nmi_masked: int = 0
    sipi_vector: int = 0
    flags: int = 0
    smi_smm: int = 0
    smi_pending: int = 0
    smi_smm_inside_nmi: int = 0
    smi_latched_init: int = 0
    triple_fault_pending: int = 0
    exception_is_nested: int = 0
    exception_has_payload: int = 0
    exception_payload: int = 0

    # exception {u8 x4; u32}, interrupt {u8 x4}, nmi {u8 x3; pad}, u32 sipi_vector,
    # u32 flags, smi {u8 x4}, triple_fault {u8}, u8 reserved[25], u8 exception_is_nested,
    # u8 exception_has_payload, u64 exception_payload
    FORMAT = struct.Struct("<BBBBI BBBB BBBx II BBBB B25x BBQ")
    SIZE = 64

    def pack(self) -> bytes:
        return self.FORMAT.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes) -> KvmVcpuEvents:
        return cls(*cls.FORMAT.unpack(data[:cls.SIZE]))


KVM_APIC_REG_SIZE = 0x400  # struct kvm_lapic_state {char regs[KVM_APIC_REG_SIZE]}

# struct kvm_irqchip {u32 chip_id; u32 pad; union {char dummy[512]; kvm_pic_state pic;
# kvm_ioapic_state ioapic;} chip}
KVM_IRQCHIP_PIC_MASTER = 0
KVM_IRQCHIP_PIC_SLAVE = 1
KVM_IRQCHIP_IOAPIC = 2
KVM_IRQCHIP_SIZE = 520
PIC_STATE_FIELDS = ("last_irr", "irr", "imr", "isr", "priority_add", "irq_base",
                    "read_reg_select", "poll", "special_mask", "init_state", "auto_eoi",
                    "rotate_on_auto_eoi", "special_fully_nested_mode", "init4", "elcr",
                    "elcr_mask")  # struct kvm_pic_state: 16 u8


def pack_irqchip(chip_id: int, pic: dict[str, int] | None = None) -> bytes:
    """struct kvm_irqchip for one PIC (KVM_GET_IRQCHIP fills `pic`, KVM_SET_IRQCHIP reads it)."""
    body = bytes(pic[name] & 0xFF for name in PIC_STATE_FIELDS) if pic else b""
    return struct.pack("<II", chip_id, 0) + body.ljust(512, b"\0")


def unpack_irqchip_pic(buf: bytes) -> dict[str, int]:
    return dict(zip(PIC_STATE_FIELDS, buf[8:8 + len(PIC_STATE_FIELDS)], strict=True))


# struct kvm_pit_channel_state {u32 count; u16 latched_count; u8 count_latched,
# status_latched, status, read_state, write_state, write_latch, rw_mode, mode, bcd, gate;
# s64 count_load_time} (24 bytes); struct kvm_pit_state2 {channels[3]; u32 flags;
# u32 reserved[9]} (112 bytes)
PIT_CHANNEL_FIELDS = ("count", "latched_count", "count_latched", "status_latched", "status",
                      "read_state", "write_state", "write_latch", "rw_mode", "mode", "bcd",
                      "gate", "count_load_time")
KVM_PIT_CHANNEL = struct.Struct("<IH10Bq")
KVM_PIT_STATE2_SIZE = 112
KVM_PIT_FLAGS_HPET_LEGACY = 0x1


def pack_pit_state2(channels: list[dict[str, int]], flags: int = 0) -> bytes:
    out = b"".join(KVM_PIT_CHANNEL.pack(*(c[name] for name in PIT_CHANNEL_FIELDS))
                   for c in channels)
    return (out + struct.pack("<I", flags)).ljust(KVM_PIT_STATE2_SIZE, b"\0")


def unpack_pit_state2(buf: bytes) -> tuple[list[dict[str, int]], int]:
    chans = [dict(zip(PIT_CHANNEL_FIELDS, KVM_PIT_CHANNEL.unpack_from(buf, 24 * i),
                      strict=True)) for i in range(3)]
    return chans, struct.unpack_from("<I", buf, 72)[0]


def sregs_to_plain(s: KvmSregs) -> dict:
    out: dict = {name: dict(vars(getattr(s, name))) for name in SEGMENT_NAMES}
    out.update(gdt={"base": s.gdt.base, "limit": s.gdt.limit},
               idt={"base": s.idt.base, "limit": s.idt.limit},
               cr0=s.cr0, cr2=s.cr2, cr3=s.cr3, cr4=s.cr4, cr8=s.cr8, efer=s.efer,
               apic_base=s.apic_base, interrupt_bitmap=list(s.interrupt_bitmap))
    return out


def sregs_from_plain(d: dict) -> KvmSregs:
    return KvmSregs(*(KvmSegment(**d[name]) for name in SEGMENT_NAMES),
                    KvmDtable(**d["gdt"]), KvmDtable(**d["idt"]), d["cr0"], d["cr2"],
                    d["cr3"], d["cr4"], d["cr8"], d["efer"], d["apic_base"],
                    tuple(d["interrupt_bitmap"]))


# The layouts KvmRun reads and writes at every exit, compiled once.
_U32 = struct.Struct("<I")
_IO = struct.Struct("<BBHIQ")  # kvm_run.io: direction size port count data_offset
_MMIO = struct.Struct("<Q8sIB")  # kvm_run.mmio: phys_addr data[8] len is_write


# struct kvm_coalesced_mmio_ring {u32 first, last; struct kvm_coalesced_mmio coalesced_mmio[];}
# struct kvm_coalesced_mmio {u64 phys_addr; u32 len; union {u32 pad; u32 pio;}; u8 data[8];}
_RING_HEAD = struct.Struct("<II")
_RING_ENTRY = struct.Struct("<QII8s")
KVM_COALESCED_MMIO_MAX = (PAGE_SIZE - _RING_HEAD.size) // _RING_ENTRY.size  # 170


class CoalescedMmioRing:
    """`struct kvm_coalesced_mmio_ring` in place over its page: kvm.ko writes an entry at
    `last` and moves it on; the VMM applies the entries from `first` and moves that on.
    `last` + 1 never reaches `first` (one entry stays free), so a full ring holds
    KVM_COALESCED_MMIO_MAX - 1 writes."""

    def __init__(self, page) -> None:
        self.page = page  # a writable buffer of PAGE_SIZE bytes

    @property
    def first(self) -> int:
        return _U32.unpack_from(self.page, 0)[0]

    @first.setter
    def first(self, v: int) -> None:
        _U32.pack_into(self.page, 0, v)

    @property
    def last(self) -> int:
        return _U32.unpack_from(self.page, 4)[0]

    @last.setter
    def last(self, v: int) -> None:
        _U32.pack_into(self.page, 4, v)

    def entry(self, i: int) -> tuple[int, int, int, bytes]:
        """Entry `i`: (phys_addr, len, pio, data[8])."""
        return _RING_ENTRY.unpack_from(self.page, _RING_HEAD.size + i * _RING_ENTRY.size)

    def set_entry(self, i: int, phys_addr: int, data: bytes, pio: int) -> None:
        """What coalesced_mmio_write stores: the address, the length and `pio`, and
        len(data) bytes of data (memcpy: the rest of the eight keep what they held)."""
        at = _RING_HEAD.size + i * _RING_ENTRY.size
        kept = bytes(self.page[at + 16 + len(data):at + 24])
        _RING_ENTRY.pack_into(self.page, at, phys_addr, len(data), pio, data + kept)

    def pending(self) -> list[tuple[int, bytes]]:
        """The writes not yet applied, oldest first: (phys_addr, data)."""
        out = []
        i, last = self.first, self.last
        while i != last and i < KVM_COALESCED_MMIO_MAX:
            addr, length, _, data = self.entry(i)
            out.append((addr, data[:min(length, 8)]))
            i = (i + 1) % KVM_COALESCED_MMIO_MAX
        return out


class KvmRun:
    """`struct kvm_run` in place (offsets from the x86-64 layout), over the vCPU mapping."""

    def __init__(self, buf) -> None:
        self.buf = buf  # a writable buffer of VCPU_MMAP_SIZE bytes (mmap or bytearray)

    def _u8(self, off: int) -> int:
        return self.buf[off]

    @property
    def request_interrupt_window(self) -> int:
        return self.buf[0]

    @request_interrupt_window.setter
    def request_interrupt_window(self, v: int) -> None:
        self.buf[0] = v

    @property
    def immediate_exit(self) -> int:
        return self.buf[1]

    @immediate_exit.setter
    def immediate_exit(self, v: int) -> None:
        self.buf[1] = v

    @property
    def exit_reason(self) -> int:
        return _U32.unpack_from(self.buf, 8)[0]

    @exit_reason.setter
    def exit_reason(self, v: int) -> None:
        _U32.pack_into(self.buf, 8, v)

    @property
    def ready_for_interrupt_injection(self) -> int:
        return self.buf[12]

    @property
    def if_flag(self) -> int:
        return self.buf[13]

    def set_flags_out(self, ready: int, if_flag: int) -> None:
        self.buf[12] = ready
        self.buf[13] = if_flag

    # union at offset 32
    def io(self) -> tuple[int, int, int, int, int]:
        """(direction, size, port, count, data_offset)"""
        return _IO.unpack_from(self.buf, 32)

    def set_io(self, direction: int, size: int, port: int, count: int,
               data_offset: int = KVM_PIO_PAGE_OFFSET * PAGE_SIZE) -> None:
        _IO.pack_into(self.buf, 32, direction, size, port, count, data_offset)

    def mmio(self) -> tuple[int, bytes, int, int]:
        """(phys_addr, data[8], len, is_write)"""
        addr, data, length, is_write = _MMIO.unpack_from(self.buf, 32)
        return addr, data, length, is_write

    def set_mmio(self, phys_addr: int, data: bytes, length: int, is_write: int) -> None:
        _MMIO.pack_into(self.buf, 32, phys_addr, data.ljust(8, b"\0"), length, is_write)

    def set_mmio_data(self, data: bytes) -> None:
        self.buf[40:48] = data.ljust(8, b"\0")

    def fail_entry(self) -> tuple[int, int]:
        return struct.unpack_from("<QI", self.buf, 32)

    def set_fail_entry(self, reason: int, cpu: int) -> None:
        struct.pack_into("<QI", self.buf, 32, reason, cpu)

    def internal(self) -> tuple[int, list[int]]:
        suberror, ndata = struct.unpack_from("<II", self.buf, 32)
        return suberror, list(struct.unpack_from(f"<{min(ndata, 16)}Q", self.buf, 40))

    def set_internal(self, suberror: int, data: list[int]) -> None:
        struct.pack_into("<II", self.buf, 32, suberror, len(data))
        if data:
            struct.pack_into(f"<{len(data)}Q", self.buf, 40, *data)


class EventNotifier:
    """An eventfd (LNX fs/eventfd.c) as both sides use it: QEMU's EventNotifier
    (util/event_notifier-posix.c) and the kernel's eventfd_ctx.

    Plain data in the simulation: `count` is the eventfd's 64-bit counter. A writer adds
    to it (event_notifier_set, or the kernel's eventfd_signal); a reader takes it and
    leaves 0 (event_notifier_test_and_clear); a simulated thread waits on it with
    `clock.Block(..., notifier.ready)`. `wait_queue` holds what the kernel polls the
    eventfd with (irqfd_wakeup): called on every signal, rebuilt from the VM's irqfd table,
    never part of the state. On the host's KVM, `fd` is a real eventfd (os.eventfd,
    non-blocking) and the counter is the kernel's."""

    def __init__(self, name: str = "", fd: int = -1) -> None:
        self.name = name
        self.fd = fd
        self.count = 0
        self.wait_queue: list = []

    def eventfd_signal(self, n: int = 1) -> None:
        """Add n to the counter and wake the eventfd's pollers."""
        if self.fd >= 0:
            import os

            os.eventfd_write(self.fd, n)
        else:
            self.count = (self.count + n) & 0xFFFFFFFFFFFFFFFF
        for wakeup in list(self.wait_queue):
            wakeup(self)

    def event_notifier_set(self) -> None:
        """QEMU: write 1 to the eventfd."""
        self.eventfd_signal(1)

    def eventfd_ctx_do_read(self) -> int:
        """Take the counter (0 if nothing was signalled): read(2) on a non-blocking fd."""
        if self.fd >= 0:
            import os

            try:
                return os.eventfd_read(self.fd)
            except BlockingIOError:
                return 0
        n, self.count = self.count, 0
        return n

    def event_notifier_test_and_clear(self) -> bool:
        return self.eventfd_ctx_do_read() != 0

    def ready(self) -> bool:
        """Readable: the counter is not 0 (poll(2) POLLIN)."""
        if self.fd >= 0:
            import select

            return bool(select.select([self.fd], [], [], 0)[0])
        return self.count != 0

    def state(self) -> dict:
        return {"name": self.name, "count": self.count}

    def load_state(self, d: dict) -> None:
        self.name, self.count = d["name"], d["count"]

    def close(self) -> None:
        if self.fd >= 0:
            import os

            os.close(self.fd)
            self.fd = -1


# The `vmsim run` exit status of a VM that KVM could not go on with (vmsim.cli's
# EXIT_UNSUPPORTED): kvm.ko's internal errors and the host's KVM's refusals alike.
EXIT_KVM_FAILED = 70


class KvmStop(str):
    """Why a backend ended the VM, in words a student can act on, with the `vmsim run`
    exit status it calls for (vmsim.cli: 0 for the guest's own shutdown, 70 where KVM
    could not go on, 124 for a watchdog). A vCPU's `explain_stop(exit_reason)` gives one,
    or None where the VMM's own words suffice."""

    exit_status: int

    def __new__(cls, text: str, exit_status: int) -> KvmStop:
        self = super().__new__(cls, text)
        self.exit_status = exit_status
        return self


def internal_error_words(suberror: int) -> str:
    """How QEMU's kvm_handle_internal_error names a KVM_EXIT_INTERNAL_ERROR."""
    name = KVM_INTERNAL_ERROR_NAMES.get(suberror, "unknown suberror")
    return f"KVM_EXIT_INTERNAL_ERROR, suberror {suberror}: {name}"


class KvmVcpu(Protocol):
    kvm_run: KvmRun
    # vmsim's own stops, not KVM's: the instruction limit reached, and why its no-progress
    # watchdog stopped the vCPU ("" if it did not). False and "" on the host's KVM.
    limit_reached: bool
    stuck: str

    def get_regs(self) -> KvmRegs: ...

    def set_regs(self, regs: KvmRegs) -> None: ...

    def get_sregs(self) -> KvmSregs: ...

    def set_sregs(self, sregs: KvmSregs) -> None: ...

    def set_cpuid2(self, entries: list[tuple[int, int, int, int, int, int]]) -> None: ...

    def mapping_page(self, offset: int):
        """Page `offset` of the vCPU's mapping (mmap of the vCPU fd) as a writable buffer:
        1 the PIO data page, KVM_COALESCED_MMIO_PAGE_OFFSET the VM's coalesced-MMIO ring,
        the same page in every vCPU's mapping."""
        ...

    def run(self) -> int: ...

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT (struct kvm_interrupt {u32 irq}): queue external interrupt `vector`
        for the next entry; only without the in-kernel irqchip (ENXIO with it, EEXIST
        while one is still queued). Userspace calls it when the last exit said
        `kvm_run.ready_for_interrupt_injection`; otherwise it sets
        `kvm_run.request_interrupt_window` and waits for KVM_EXIT_IRQ_WINDOW_OPEN."""
        ...

    def set_signal_mask(self, sigset: set[int] | None) -> None:
        """KVM_SET_SIGNAL_MASK (struct kvm_signal_mask {u32 len = 8; u8 sigset[8]}): the
        signals blocked while the calling thread is inside KVM_RUN (None: no mask of
        KVM's own, the thread's is kept). QEMU blocks SIG_IPI in the vCPU thread and
        unblocks it here, so a kick interrupts KVM_RUN and is never delivered to a
        handler (kvm_init_cpu_signals, kvm_eat_signals)."""
        ...

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE: KVM_MP_STATE_RUNNABLE, _HALTED (blocked in the kernel on HLT
        with the in-kernel irqchip), _INIT_RECEIVED, _SIPI_RECEIVED, _UNINITIALIZED."""
        ...

    def set_mp_state(self, mp_state: int) -> None:
        """KVM_SET_MP_STATE."""
        ...

    # The state ioctls (issue 12) that QEMU's stop, savevm and migration use.
    def get_msrs(self, indices: list[int]) -> list[tuple[int, int]]:
        """KVM_GET_MSRS (struct kvm_msrs): (index, value) for those read; the kernel stops
        at the first MSR it does not know."""
        ...

    def set_msrs(self, entries: list[tuple[int, int]]) -> int:
        """KVM_SET_MSRS: how many of `entries` were written (it stops at the first refused)."""
        ...

    def get_vcpu_events(self) -> KvmVcpuEvents:
        """KVM_GET_VCPU_EVENTS: the exception, interrupt or NMI pending or being injected,
        the interrupt shadow, NMI masking."""
        ...

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        """KVM_SET_VCPU_EVENTS (the fields `events.flags` marks valid, and the injections)."""
        ...

    def get_lapic(self) -> bytes:
        """KVM_GET_LAPIC: struct kvm_lapic_state, the APIC's first 1 KiB of registers (with
        the in-kernel irqchip)."""
        ...

    def set_lapic(self, regs: bytes) -> None:
        """KVM_SET_LAPIC."""
        ...


class KvmVcpuThread(Protocol):
    """A vCPU whose KVM_RUN runs on its own OS thread (the host's /dev/kvm, one real thread
    per vCPU as QEMU's kvm_vcpu_thread_fn). vmsim's scheduler is single-threaded and
    deterministic; it starts a run, goes on with its simulated threads, and collects the
    result when `run_done()` (or waits on the VM's `wait_for_any_run`)."""

    kvm_run: KvmRun

    def start_run(self) -> None:
        """Start KVM_RUN on the vCPU's own thread and return at once."""
        ...

    def run_done(self) -> bool:
        """The started KVM_RUN has returned (finish_run will not block)."""
        ...

    def finish_run(self) -> int:
        """Wait for the started KVM_RUN: 0 with kvm_run.exit_reason set, or -errno
        (-EINTR when a kick or a signal ended it)."""
        ...

    def kick(self) -> None:
        """qemu_cpu_kick: make KVM_RUN return -EINTR soon, whether the vCPU's thread is
        inside it or about to enter (kvm_run.immediate_exit = 1 and SIG_IPI to the
        thread). Callable from any thread."""
        ...


class KvmVm(Protocol):
    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace: memoryview) -> None: ...

    def set_tss_addr(self, addr: int) -> None: ...

    def create_vcpu(self, vcpu_id: int) -> KvmVcpu: ...

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd: 0 if `cap` (KVM_CAP_*) is missing, else 1 or
        the capability's value (KVM_CAP_NR_VCPUS, KVM_CAP_MAX_VCPUS give counts)."""
        ...

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: the PIC pair, the IOAPIC and a local APIC per vCPU (created
        later) move into the kernel; HLT then blocks in the kernel (kvm_vcpu_block) and
        port I/O to 0x20/0x21, 0xA0/0xA1, 0x4D0/0x4D1 no longer exits. Before any vCPU."""
        ...

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2 (struct kvm_pit_config {u32 flags; u32 pad[15]}): the 8254 PIT
        at 0x40-0x43 in the kernel, raising GSI 0; needs the irqchip first.
        KVM_PIT_SPEAKER_DUMMY in `flags` adds a dummy port 0x61."""
        ...

    def get_irqchip(self, chip_id: int) -> dict[str, int]:
        """KVM_GET_IRQCHIP (struct kvm_irqchip) for KVM_IRQCHIP_PIC_MASTER or _SLAVE: the
        struct kvm_pic_state fields by name (PIC_STATE_FIELDS)."""
        ...

    def set_irqchip(self, chip_id: int, pic: dict[str, int]) -> None:
        """KVM_SET_IRQCHIP for one PIC."""
        ...

    def get_pit2(self) -> tuple[list[dict[str, int]], int]:
        """KVM_GET_PIT2 (struct kvm_pit_state2): three channels' struct
        kvm_pit_channel_state (PIT_CHANNEL_FIELDS) and the flags."""
        ...

    def set_pit2(self, channels: list[dict[str, int]], flags: int = 0) -> None:
        """KVM_SET_PIT2: the kernel loads each channel's count again."""
        ...

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE (struct kvm_irq_level {u32 irq; u32 level}): drive GSI `irq` to
        `level` on the in-kernel PIC/IOAPIC (an edge is 1 then 0). ENXIO without the
        irqchip."""
        ...


    def ioeventfd(self, notifier: EventNotifier, addr: int, length: int,
                  datamatch: int | None = None, flags: int = 0) -> None:
        """KVM_IOEVENTFD (struct kvm_ioeventfd {u64 datamatch; u64 addr; u32 len; s32 fd;
        u32 flags; u8 pad[36]}): a guest write of `length` bytes to MMIO `addr` (port with
        KVM_IOEVENTFD_FLAG_PIO), of value `datamatch` if given (FLAG_DATAMATCH), is
        completed in the kernel and signals `notifier`: no exit to userspace.
        KVM_IOEVENTFD_FLAG_DEASSIGN in `flags` removes it (ENOENT if none matches);
        EEXIST for a duplicate."""
        ...

    def irqfd(self, notifier: EventNotifier, gsi: int, flags: int = 0) -> None:
        """KVM_IRQFD (struct kvm_irqfd {u32 fd; u32 gsi; u32 flags; u32 resamplefd;
        u8 pad[16]}): a signal on `notifier` injects GSI `gsi` as an edge (level 1 then 0)
        on the in-kernel irqchip. KVM_IRQFD_FLAG_DEASSIGN removes it."""
        ...

    def register_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_REGISTER_COALESCED_MMIO (struct kvm_coalesced_mmio_zone {u64 addr; u32 size;
        u32 pio}): guest writes that fall wholly inside the zone are queued in the ring
        (KVM_COALESCED_MMIO_PAGE_OFFSET of the vCPU mapping) while it has room, with no
        exit; a write finding it full exits as KVM_EXIT_MMIO. The VMM applies the queued
        writes, in order, before it serves any access to the device."""
        ...

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO: drop every zone of the same kind (`pio`) that holds
        (addr, size) whole; none is not an error."""
        ...


class Kvm(Protocol):
    """What opening /dev/kvm gives."""

    def get_api_version(self) -> int: ...

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on /dev/kvm (see KvmVm.check_extension)."""
        ...

    def create_vm(self, machine_type: int = 0) -> KvmVm: ...

    def get_vcpu_mmap_size(self) -> int: ...
