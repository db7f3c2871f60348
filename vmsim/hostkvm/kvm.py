"""ioctls on /dev/kvm, a VM fd and vCPU fds (values from LNX include/uapi/linux/kvm.h).

Each KVM_RUN is bounded by a watchdog (vmsim.hostkvm.watchdog, VMSIM_KVM_WATCHDOG), and a
run that ends the VM is explained with the guest instruction at RIP (vmsim.hostkvm.explain).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct

from vmsim.hostkvm import explain
from vmsim.hostkvm.watchdog import (
    DEFAULT_SECONDS,
    WATCHDOG_ENV,
    Watchdog,
    WatchdogSettingError,
    watchdog_seconds,
)
from vmsim.kvm.api import (
    KVM_API_VERSION,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_VCPU,
    KVM_CREATE_VM,
    KVM_EXIT_INTR,
    KVM_GET_API_VERSION,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_RUN,
    KVM_SET_CPUID2,
    KVM_SET_REGS,
    KVM_SET_SREGS,
    KVM_SET_TSS_ADDR,
    KVM_SET_USER_MEMORY_REGION,
    KVM_TRANSLATE,
    KvmRegs,
    KvmRun,
    KvmSregs,
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
    def __init__(self, kvm_fd: int, fd: int, vm: HostVm | None = None):
        self.fd = fd
        self.vm = vm
        size = _ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run = KvmRun(self._map)
        try:
            self.watchdog_seconds = watchdog_seconds()
        except WatchdogSettingError as e:
            self.close()
            raise HostKvmError(str(e)) from None
        self._watchdog = (Watchdog(self.watchdog_seconds, self._kick) if self.watchdog_seconds
                          else None)
        self.watchdog_expired = False  # the last KVM_RUN was ended by the watchdog

    def _kick(self) -> None:
        self.kvm_run.immediate_exit = 1

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

    def set_cpuid2(self, entries: list[tuple[int, int, int, int, int, int]]) -> None:
        """entries: (function, index, eax, ebx, ecx, edx); struct kvm_cpuid_entry2 is 40 bytes."""
        buf = struct.pack("<II", len(entries), 0)
        for fn, idx, a, b, c, d in entries:
            flags = 1 if idx else 0  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            buf += struct.pack("<7I12x", fn, idx, flags, a, b, c, d)  # + u32 padding[3]
        _ioctl(self.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def run(self) -> int:
        """KVM_RUN: 0 with kvm_run.exit_reason set; -EINTR when a signal interrupted it
        (`watchdog_expired` says whether it was the watchdog's kick)."""
        armed = self._watchdog is not None and self._watchdog.arm()
        try:
            r = fcntl.ioctl(self.fd, KVM_RUN, 0)
        except InterruptedError:
            r = -errno.EINTR
        except OSError as e:
            raise HostKvmError(f"/dev/kvm: KVM_RUN failed: {e.strerror}") from None
        finally:
            kicked = armed and self._watchdog.disarm()
        if kicked:
            self.kvm_run.immediate_exit = 0
        # A kick that came as KVM_RUN was returning anyway is not what ended it.
        self.watchdog_expired = kicked and (r == -errno.EINTR
                                            or self.kvm_run.exit_reason == KVM_EXIT_INTR)
        return r

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
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.close()
        self._map.close()
        os.close(self.fd)



class HostVm:
    def __init__(self, kvm_fd: int, fd: int):
        self.kvm_fd = kvm_fd
        self.fd = fd
        # slot -> (guest_phys_addr, memory_size, backing memory, kept alive here)
        self._regions: dict[int, tuple[int, int, memoryview]] = {}

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
        return HostVcpu(self.kvm_fd, fd, self)

    def close(self) -> None:
        os.close(self.fd)


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
