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
KVM_IOCTLS = {name: v for name, v in dict(globals()).items()
              if name.startswith("KVM_") and isinstance(v, int) and v >= 0xAE00
              and name not in KVM_EXIT_NAMES.values() and name != "KVM_API_VERSION"}
KVM_INTERNAL_ERROR_EMULATION = 1
# KVM_CHECK_EXTENSION arguments (LNX include/uapi/linux/kvm.h)
KVM_CAP_IRQCHIP = 0
KVM_CAP_NR_VCPUS = 9  # the recommended number of vCPUs per VM
KVM_CAP_MP_STATE = 14
KVM_CAP_PIT2 = 33
KVM_CAP_MAX_VCPUS = 66  # the most vCPUs a VM may have
KVM_CAP_IMMEDIATE_EXIT = 136
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
        return struct.unpack_from("<I", self.buf, 8)[0]

    @exit_reason.setter
    def exit_reason(self, v: int) -> None:
        struct.pack_into("<I", self.buf, 8, v)

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
        return struct.unpack_from("<BBHIQ", self.buf, 32)

    def set_io(self, direction: int, size: int, port: int, count: int,
               data_offset: int = KVM_PIO_PAGE_OFFSET * PAGE_SIZE) -> None:
        struct.pack_into("<BBHIQ", self.buf, 32, direction, size, port, count, data_offset)

    def mmio(self) -> tuple[int, bytes, int, int]:
        """(phys_addr, data[8], len, is_write)"""
        addr, data, length, is_write = struct.unpack_from("<Q8sIB", self.buf, 32)
        return addr, data, length, is_write

    def set_mmio(self, phys_addr: int, data: bytes, length: int, is_write: int) -> None:
        struct.pack_into("<Q8sIB", self.buf, 32, phys_addr, data.ljust(8, b"\0"), length, is_write)

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


class KvmVcpu(Protocol):
    kvm_run: KvmRun

    def get_regs(self) -> KvmRegs: ...

    def set_regs(self, regs: KvmRegs) -> None: ...

    def get_sregs(self) -> KvmSregs: ...

    def set_sregs(self, sregs: KvmSregs) -> None: ...

    def set_cpuid2(self, entries: list[tuple[int, int, int, int, int, int]]) -> None: ...

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


class Kvm(Protocol):
    """What opening /dev/kvm gives."""

    def get_api_version(self) -> int: ...

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on /dev/kvm (see KvmVm.check_extension)."""
        ...

    def create_vm(self, machine_type: int = 0) -> KvmVm: ...

    def get_vcpu_mmap_size(self) -> int: ...
