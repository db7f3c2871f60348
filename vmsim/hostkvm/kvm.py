"""ioctls on /dev/kvm, a VM fd and vCPU fds (values from LNX include/uapi/linux/kvm.h).

Each KVM_RUN is bounded by a watchdog (vmsim.hostkvm.watchdog, VMSIM_KVM_WATCHDOG), and a
run that ends the VM is explained with the guest instruction at RIP (vmsim.hostkvm.explain).

Several vCPUs run at once, each on its own OS thread (vmsim.hostkvm.vcpu_thread, QEMU's
signal discipline): `start_run` starts KVM_RUN there and returns, `run_done` /
`HostVm.wait_for_any_run` tell when it has returned, `finish_run` collects the result, and
`kick` (from any thread) makes it return -EINTR as qemu_cpu_kick does.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import signal
import struct
import threading

from vmsim.hostkvm import explain
from vmsim.hostkvm.vcpu_thread import kernel_sigset, kvm_eat_signals, qemu_thread_create
from vmsim.hostkvm.watchdog import (
    DEFAULT_SECONDS,
    SIG_IPI,
    WATCHDOG_ENV,
    Watchdog,
    WatchdogSettingError,
    install_sig_ipi,
    watchdog_seconds,
)
from vmsim.kvm.api import (
    KVM_API_VERSION,
    KVM_APIC_REG_SIZE,
    KVM_CHECK_EXTENSION,
    KVM_COALESCED_MMIO_ZONE,
    KVM_CREATE_IRQCHIP,
    KVM_CREATE_PIT2,
    KVM_CREATE_VCPU,
    KVM_CREATE_VM,
    KVM_EXIT_INTR,
    KVM_GET_API_VERSION,
    KVM_GET_IRQCHIP,
    KVM_GET_LAPIC,
    KVM_GET_MP_STATE,
    KVM_GET_MSRS,
    KVM_GET_PIT2,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_GET_VCPU_EVENTS,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_INTERRUPT,
    KVM_IOEVENTFD,
    KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_IOEVENTFD_STRUCT,
    KVM_IRQ_LINE,
    KVM_IRQFD,
    KVM_IRQFD_STRUCT,
    KVM_PIT_STATE2_SIZE,
    KVM_REGISTER_COALESCED_MMIO,
    KVM_RUN,
    KVM_SET_CPUID2,
    KVM_SET_IRQCHIP,
    KVM_SET_LAPIC,
    KVM_SET_MP_STATE,
    KVM_SET_MSRS,
    KVM_SET_PIT2,
    KVM_SET_REGS,
    KVM_SET_SIGNAL_MASK,
    KVM_SET_SREGS,
    KVM_SET_TSS_ADDR,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_VCPU_EVENTS,
    KVM_TRANSLATE,
    KVM_UNREGISTER_COALESCED_MMIO,
    EventNotifier,
    KvmRegs,
    KvmRun,
    KvmSregs,
    KvmVcpuEvents,
    pack_irqchip,
    pack_msrs,
    pack_pit_state2,
    unpack_irqchip_pic,
    unpack_msrs,
    unpack_pit_state2,
)

PAGE_SIZE = 4096

# api.rst: on Intel hosts KVM needs three pages below 4 GiB for its real-mode TSS.
TSS_ADDR = 0xFFFBD000


class HostKvmError(Exception):
    """/dev/kvm is missing or refused a call; str() is one line."""


def _ioctl(fd: int, request: int, arg: int | bytes | bytearray = 0, what: str = "") -> int:
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise HostKvmError(f"/dev/kvm: {what or hex(request)} failed: "
                           f"{e.strerror or errno.errorcode.get(e.errno, e.errno)}") from None


def _int_arg(value: int) -> int:
    """fcntl.ioctl passes an int as a C int: wrap values above 2**31 like the kernel sees them."""
    return value - (1 << 32) if value >= 1 << 31 else value


class HostVcpu:
    # vmsim's own stops (KvmVcpu): the host's KVM runs without its instruction limit and
    # watchdog, so neither ever stops it.
    limit_reached = False
    stuck = ""

    def __init__(self, kvm_fd: int, fd: int, vm: HostVm | None = None, vcpu_id: int = 0):
        self.fd = fd
        self.vm = vm
        self.vcpu_id = vcpu_id
        # The vCPU's own OS thread (created by the first start_run) and its hand-off with
        # the caller, under the VM's condition so that wait_for_any_run sees every vCPU.
        self._cond = vm.run_cond if vm is not None else threading.Condition()
        self._thread: threading.Thread | None = None
        self._thread_live = False  # may be signalled (never a thread that has ended)
        self._closing = False
        self._closed = False  # fd and kvm_run gone: kicks do nothing
        self._requested = False  # start_run asked, the thread has not taken it yet
        self._in_flight = False  # started and not yet collected by finish_run
        self._done = False  # the started KVM_RUN has returned
        self._result = 0
        self._error: Exception | None = None
        self._run_ident = 0  # a thread inside a blocking run() (no vCPU thread)
        size = _ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run = KvmRun(self._map)
        self._views: list[memoryview] = []  # mapping_page's, released before the unmap
        try:
            self.watchdog_seconds = watchdog_seconds()
        except WatchdogSettingError as e:
            self.close()
            raise HostKvmError(str(e)) from None
        self._watchdog = (Watchdog(self.watchdog_seconds, self._kick) if self.watchdog_seconds
                          else None)
        self.watchdog_expired = False  # the last KVM_RUN was ended by the watchdog

    def mapping_page(self, offset: int) -> memoryview:
        """Page `offset` of the vCPU's mapping (the ring's page is the VM's)."""
        view = memoryview(self._map)[offset * PAGE_SIZE:(offset + 1) * PAGE_SIZE]
        self._views.append(view)
        return view

    def _kick(self) -> None:
        self.kvm_run.immediate_exit = 1

    def kick(self) -> None:
        """qemu_cpu_kick (kvm_cpu_kick + qemu_cpu_kick_thread): make KVM_RUN return -EINTR
        whether the vCPU's thread is inside it or about to enter. `immediate_exit` stops an
        entry that has not begun; SIG_IPI to the thread ends a run in progress (KVM sees it
        pending) or, blocked, waits for the next KVM_RUN. Callable from any thread."""
        with self._cond:
            if self._closed:
                return
            self.kvm_run.immediate_exit = 1
            if self._thread_live:
                signal.pthread_kill(self._thread.ident, SIG_IPI)
                return
            target = self._run_ident
        # A blocking run() on the caller's thread, which does not block SIG_IPI: signal it
        # only if it is the main thread (it outlives us, so its id stays valid) and Python's
        # handler is in place to make the signal harmless (see install_sig_ipi). Elsewhere
        # immediate_exit alone stops the next entry.
        if target and target == threading.main_thread().ident and install_sig_ipi():
            signal.pthread_kill(target, SIG_IPI)

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: queue external interrupt `vector` (without the in-kernel irqchip;
        see vmsim.kvm.api.KvmVcpu.interrupt)."""
        _ioctl(self.fd, KVM_INTERRUPT, struct.pack("<I", vector & 0xFFFFFFFF), "KVM_INTERRUPT")

    def set_signal_mask(self, sigset: set[int] | None) -> None:
        """KVM_SET_SIGNAL_MASK: the signals blocked inside KVM_RUN; None removes KVM's own
        mask (the thread's is used)."""
        _ioctl(self.fd, KVM_SET_SIGNAL_MASK, 0 if sigset is None else kernel_sigset(sigset),
               "KVM_SET_SIGNAL_MASK")

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE: KVM_MP_STATE_RUNNABLE, _HALTED, ..."""
        buf = bytearray(4)
        _ioctl(self.fd, KVM_GET_MP_STATE, buf, "KVM_GET_MP_STATE")
        return struct.unpack("<I", buf)[0]

    def set_mp_state(self, mp_state: int) -> None:
        _ioctl(self.fd, KVM_SET_MP_STATE, struct.pack("<I", mp_state & 0xFFFFFFFF),
               "KVM_SET_MP_STATE")

    def get_regs(self) -> KvmRegs:
        buf = bytearray(KvmRegs.FORMAT.size)
        _ioctl(self.fd, KVM_GET_REGS, buf, "KVM_GET_REGS")
        return KvmRegs.unpack(bytes(buf))

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fd, KVM_SET_REGS, regs.pack(), "KVM_SET_REGS")

    def get_sregs(self) -> KvmSregs:
        buf = bytearray(KvmSregs.SIZE)
        _ioctl(self.fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS")
        return KvmSregs.unpack(bytes(buf))

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, sregs.pack(), "KVM_SET_SREGS")

    def get_msrs(self, indices: list[int]) -> list[tuple[int, int]]:
        """KVM_GET_MSRS with struct kvm_msrs: the ioctl returns how many it read (it stops
        at the first MSR it does not know); those are returned."""
        buf = bytearray(pack_msrs([(i, 0) for i in indices]))
        n = _ioctl(self.fd, KVM_GET_MSRS, buf, "KVM_GET_MSRS")
        return unpack_msrs(bytes(buf), n)

    def set_msrs(self, entries: list[tuple[int, int]]) -> int:
        """KVM_SET_MSRS: how many were written."""
        # (a mutable buffer: with bytes, fcntl.ioctl returns the buffer, not the count)
        return _ioctl(self.fd, KVM_SET_MSRS, bytearray(pack_msrs(entries)), "KVM_SET_MSRS")

    def get_vcpu_events(self) -> KvmVcpuEvents:
        buf = bytearray(KvmVcpuEvents.SIZE)
        _ioctl(self.fd, KVM_GET_VCPU_EVENTS, buf, "KVM_GET_VCPU_EVENTS")
        return KvmVcpuEvents.unpack(bytes(buf))

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        _ioctl(self.fd, KVM_SET_VCPU_EVENTS, events.pack(), "KVM_SET_VCPU_EVENTS")

    def get_lapic(self) -> bytes:
        """KVM_GET_LAPIC: struct kvm_lapic_state, the APIC's first 1 KiB of registers."""
        buf = bytearray(KVM_APIC_REG_SIZE)
        _ioctl(self.fd, KVM_GET_LAPIC, buf, "KVM_GET_LAPIC")
        return bytes(buf)

    def set_lapic(self, regs: bytes) -> None:
        if len(regs) != KVM_APIC_REG_SIZE:
            raise HostKvmError(f"/dev/kvm: KVM_SET_LAPIC needs {KVM_APIC_REG_SIZE} bytes")
        _ioctl(self.fd, KVM_SET_LAPIC, bytes(regs), "KVM_SET_LAPIC")

    def set_cpuid2(self, entries: list[tuple[int, int, int, int, int, int]]) -> None:
        """entries: (function, index, eax, ebx, ecx, edx); struct kvm_cpuid_entry2 is 40 bytes."""
        buf = struct.pack("<II", len(entries), 0)
        for fn, idx, a, b, c, d in entries:
            flags = 1 if idx else 0  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            buf += struct.pack("<7I12x", fn, idx, flags, a, b, c, d)  # + u32 padding[3]
        _ioctl(self.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def run(self) -> int:
        """KVM_RUN, blocking: 0 with kvm_run.exit_reason set; -EINTR when a signal or a
        kick interrupted it (`watchdog_expired` says whether it was the watchdog's kick).
        On the caller's thread, or on the vCPU's own once start_run has made it."""
        if self._thread is not None:
            self.start_run()
            return self.finish_run()
        if threading.current_thread() is threading.main_thread():
            install_sig_ipi()  # so that kick() can interrupt this run (see kick)
        self._run_ident = threading.get_ident()
        try:
            return self._kvm_run(in_vcpu_thread=False)
        finally:
            self._run_ident = 0

    def _kvm_run(self, in_vcpu_thread: bool) -> int:
        armed = self._watchdog is not None and self._watchdog.arm(sig_ipi_blocked=in_vcpu_thread)
        try:
            r = fcntl.ioctl(self.fd, KVM_RUN, 0)
        except InterruptedError:
            r = -errno.EINTR
        except OSError as e:
            raise HostKvmError(f"/dev/kvm: KVM_RUN failed: {e.strerror}") from None
        finally:
            kicked = armed and self._watchdog.disarm()
        if r == -errno.EINTR or kicked:
            # kvm_eat_signals: the kick has done its work. In a vCPU thread SIG_IPI is
            # blocked, so it is still pending there: take it, or the next KVM_RUN would
            # return -EINTR at once. (Elsewhere a handler has taken it.)
            if in_vcpu_thread:
                kvm_eat_signals()
            self.kvm_run.immediate_exit = 0
        # A kick that came as KVM_RUN was returning anyway is not what ended it.
        self.watchdog_expired = kicked and (r == -errno.EINTR
                                            or self.kvm_run.exit_reason == KVM_EXIT_INTR)
        return r

    # -- the vCPU's own OS thread (QEMU's kvm_vcpu_thread_fn), for vmsim's scheduler --------

    def start_run(self) -> None:
        """Start KVM_RUN on the vCPU's own thread (made by the first call) and return at
        once; collect it with finish_run."""
        with self._cond:
            if self._closing:
                raise HostKvmError(f"vcpu{self.vcpu_id}: KVM_RUN after close")
            if self._in_flight:
                raise HostKvmError(f"vcpu{self.vcpu_id}: KVM_RUN started twice")
            if self._thread is None:
                self._thread = qemu_thread_create(self._vcpu_thread_fn,
                                                  f"vmsim-vcpu{self.vcpu_id}",
                                                  self.set_signal_mask)
                self._thread_live = True
            self._in_flight, self._done, self._requested = True, False, True
            self._cond.notify_all()

    def run_in_flight(self) -> bool:
        """A KVM_RUN that start_run began has not yet returned."""
        return self._in_flight and not self._done

    def run_done(self) -> bool:
        """The KVM_RUN that start_run began has returned: finish_run will not block."""
        return self._in_flight and self._done

    def finish_run(self) -> int:
        """The result of the KVM_RUN that start_run began, waiting for it if need be: 0
        with kvm_run.exit_reason set, or -EINTR (see run)."""
        with self._cond:
            if not self._in_flight:
                raise HostKvmError(f"vcpu{self.vcpu_id}: finish_run without start_run")
            self._cond.wait_for(lambda: self._done)
            self._in_flight = False
            error, self._error = self._error, None
        if error is not None:
            raise error
        return self._result

    def _vcpu_thread_fn(self) -> None:
        cond = self._cond
        while True:
            with cond:
                cond.wait_for(lambda: self._requested or self._closing)
                if self._closing:
                    # Unsignallable from here on: pthread_kill on an ended thread is
                    # undefined, so kick checks this under the same lock.
                    self._thread_live = False
                    cond.notify_all()
                    return
                self._requested = False
            result, error = -errno.EIO, None
            try:
                result = self._kvm_run(in_vcpu_thread=True)
            except Exception as e:  # finish_run raises it on the caller's thread
                error = e
            with cond:
                self._result, self._error, self._done = result, error, True
                cond.notify_all()

    def _stop_thread(self) -> None:
        """End the vCPU's thread (kicking it out of KVM_RUN if it is inside)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if thread is not threading.current_thread():
            self.kick()
            thread.join(timeout=10)

    def explain_stop(self, exit_reason: int) -> explain.HostKvmStop | None:
        """Why this exit ends the VM, naming the guest instruction at RIP (see
        vmsim.hostkvm.explain); None where the VMM's own words suffice."""
        return explain.explain_stop(self, exit_reason)

    def set_instruction_limit(self, limit: int) -> None:
        raise HostKvmError("--max-instructions does not apply on --backend kvm: the host's KVM "
                           "counts no guest instructions; there each KVM_RUN is bounded by a "
                           f"watchdog instead ({WATCHDOG_ENV}=SECONDS, default "
                           f"{DEFAULT_SECONDS:g}; 0 for none)")

    def read_guest_linear(self, address: int, length: int, paging: bool) -> bytes:
        """Up to `length` bytes of guest memory from a linear address (through the guest's
        page tables with KVM_TRANSLATE when it has paging on); shorter where it is not RAM."""
        if self.vm is None:
            return b""
        out = bytearray()
        while len(out) < length:
            la = (address + len(out)) & 0xFFFFFFFF
            pa = self.translate(la) if paging else la
            if pa is None:
                break
            n = min(length - len(out), PAGE_SIZE - (la & (PAGE_SIZE - 1)))
            chunk = self.vm.read_phys(pa, n)
            out += chunk
            if len(chunk) < n:
                break
        return bytes(out)

    def translate(self, linear: int) -> int | None:
        """KVM_TRANSLATE: the guest-physical address of a linear one, None if not mapped."""
        buf = bytearray(struct.pack("<QQ8x", linear, 0))
        try:
            fcntl.ioctl(self.fd, KVM_TRANSLATE, buf)
        except OSError:
            return None
        physical, valid = struct.unpack_from("<QB", buf, 8)
        return physical if valid else None

    def close(self) -> None:
        self._stop_thread()
        if self._thread is not None and self._thread.is_alive():
            return  # stuck in KVM_RUN: keep kvm_run mapped and the fd open (leak, no crash)
        with self._cond:
            self._closed = True
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.close()
        for view in self._views:
            view.release()
        self._map.close()
        os.close(self.fd)


class HostVm:
    def __init__(self, kvm_fd: int, fd: int):
        self.kvm_fd = kvm_fd
        self.fd = fd
        # Signalled whenever a vCPU thread finishes a KVM_RUN (and guards the hand-offs).
        self.run_cond = threading.Condition()
        self.vcpus: list[HostVcpu] = []
        # slot -> (guest_phys_addr, memory_size, backing memory, kept alive here)
        self._regions: dict[int, tuple[int, int, memoryview]] = {}
        self._eventfds: list[EventNotifier] = []  # the real eventfds made for notifiers

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace: memoryview) -> None:
        """Map `userspace` (a writable buffer, e.g. from mmap) at `guest_phys_addr`."""
        if len(userspace) < memory_size:
            raise ValueError("backing buffer is smaller than the region")
        addr = ctypes.addressof(ctypes.c_char.from_buffer(userspace))
        region = struct.pack("<IIQQQ", slot, flags, guest_phys_addr, memory_size, addr)
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
        self._regions[slot] = (guest_phys_addr, memory_size, userspace)

    def read_phys(self, gpa: int, length: int) -> bytes:
        """Guest-physical memory as the VMM mapped it; shorter where no slot covers it."""
        for base, size, view in self._regions.values():
            if base <= gpa < base + size:
                return bytes(view[gpa - base:min(gpa - base + length, size)])
        return b""

    def set_tss_addr(self, addr: int = TSS_ADDR) -> None:
        _ioctl(self.fd, KVM_SET_TSS_ADDR, _int_arg(addr), "KVM_SET_TSS_ADDR")

    def create_vcpu(self, vcpu_id: int) -> HostVcpu:
        fd = _ioctl(self.fd, KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        vcpu = HostVcpu(self.kvm_fd, fd, self, vcpu_id)
        self.vcpus.append(vcpu)
        return vcpu

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd (KVM_CAP_CHECK_EXTENSION_VM, Linux 4.0)."""
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: PIC, IOAPIC and local APICs in the kernel (before vCPUs)."""
        _ioctl(self.fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2 with struct kvm_pit_config {u32 flags; u32 pad[15]}."""
        _ioctl(self.fd, KVM_CREATE_PIT2, struct.pack("<I60x", flags & 0xFFFFFFFF),
               "KVM_CREATE_PIT2")

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE with struct kvm_irq_level {u32 irq; u32 level}."""
        _ioctl(self.fd, KVM_IRQ_LINE, struct.pack("<II", irq & 0xFFFFFFFF, level & 0xFFFFFFFF),
               "KVM_IRQ_LINE")

    def get_irqchip(self, chip_id: int) -> dict[str, int]:
        """KVM_GET_IRQCHIP (struct kvm_irqchip) for a PIC: its kvm_pic_state fields."""
        buf = bytearray(pack_irqchip(chip_id))
        _ioctl(self.fd, KVM_GET_IRQCHIP, buf, "KVM_GET_IRQCHIP")
        return unpack_irqchip_pic(bytes(buf))

    def set_irqchip(self, chip_id: int, pic: dict[str, int]) -> None:
        _ioctl(self.fd, KVM_SET_IRQCHIP, pack_irqchip(chip_id, pic), "KVM_SET_IRQCHIP")

    def get_pit2(self) -> tuple[list[dict[str, int]], int]:
        """KVM_GET_PIT2 (struct kvm_pit_state2): the channels and the flags."""
        buf = bytearray(KVM_PIT_STATE2_SIZE)
        _ioctl(self.fd, KVM_GET_PIT2, buf, "KVM_GET_PIT2")
        return unpack_pit_state2(bytes(buf))

    def set_pit2(self, channels: list[dict[str, int]], flags: int = 0) -> None:
        _ioctl(self.fd, KVM_SET_PIT2, pack_pit_state2(channels, flags), "KVM_SET_PIT2")

    def _eventfd(self, notifier: EventNotifier) -> int:
        """The notifier's real eventfd, made now if it has none (event_notifier_init:
        non-blocking, close-on-exec), carrying any count it already had."""
        if notifier.fd < 0:
            notifier.fd = os.eventfd(notifier.count, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            notifier.count = 0
            self._eventfds.append(notifier)
        return notifier.fd

    def ioeventfd(self, notifier: EventNotifier, addr: int, length: int,
                  datamatch: int | None = None, flags: int = 0) -> None:
        """KVM_IOEVENTFD with struct kvm_ioeventfd {u64 datamatch; u64 addr; u32 len;
        s32 fd; u32 flags; u8 pad[36]}."""
        if datamatch is not None:
            flags |= KVM_IOEVENTFD_FLAG_DATAMATCH
        arg = KVM_IOEVENTFD_STRUCT.pack(datamatch or 0, addr, length, self._eventfd(notifier),
                                        flags)
        _ioctl(self.fd, KVM_IOEVENTFD, arg, "KVM_IOEVENTFD")

    def irqfd(self, notifier: EventNotifier, gsi: int, flags: int = 0) -> None:
        """KVM_IRQFD with struct kvm_irqfd {u32 fd; u32 gsi; u32 flags; u32 resamplefd;
        u8 pad[16]}."""
        _ioctl(self.fd, KVM_IRQFD, KVM_IRQFD_STRUCT.pack(self._eventfd(notifier), gsi, flags, 0),
               "KVM_IRQFD")

    def register_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_REGISTER_COALESCED_MMIO with struct kvm_coalesced_mmio_zone."""
        _ioctl(self.fd, KVM_REGISTER_COALESCED_MMIO, KVM_COALESCED_MMIO_ZONE.pack(addr, size, pio),
               "KVM_REGISTER_COALESCED_MMIO")

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO."""
        _ioctl(self.fd, KVM_UNREGISTER_COALESCED_MMIO,
               KVM_COALESCED_MMIO_ZONE.pack(addr, size, pio), "KVM_UNREGISTER_COALESCED_MMIO")

    def wait_for_any_run(self, timeout: float | None = None) -> None:
        """Block until a KVM_RUN started with start_run has returned (some vCPU's run_done),
        `timeout` seconds pass, or no run is in flight at all (nothing could wake us). For
        a scheduler with no simulated thread runnable while host runs are in flight."""
        def woken() -> bool:
            flight = [v for v in self.vcpus if v._in_flight]
            return not flight or any(v._done for v in flight)

        with self.run_cond:
            self.run_cond.wait_for(woken, timeout)

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu._stop_thread()
        os.close(self.fd)  # the kernel drops the VM's ioeventfds and irqfds with it
        for n in self._eventfds:
            n.close()


class HostKvm:
    def __init__(self, fd: int):
        self.fd = fd

    def get_api_version(self) -> int:
        return _ioctl(self.fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def create_vm(self, machine_type: int = 0) -> HostVm:
        return HostVm(self.fd, _ioctl(self.fd, KVM_CREATE_VM, machine_type, "KVM_CREATE_VM"))

    def get_vcpu_mmap_size(self) -> int:
        return _ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def close(self) -> None:
        os.close(self.fd)


def open_kvm(path: str = "/dev/kvm") -> HostKvm:
    """Open the host's KVM and check its API version; HostKvmError (one line) if unusable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise HostKvmError(f"{path}: {e.strerror} (the kvm backend needs the host's KVM)") from None
    kvm = HostKvm(fd)
    version = kvm.get_api_version()
    if version != KVM_API_VERSION:
        kvm.close()
        raise HostKvmError(f"{path}: KVM API version {version}, expected {KVM_API_VERSION}")
    return kvm
