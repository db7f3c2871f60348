"""One real OS thread per vCPU, with QEMU's signal discipline for kicks.

QEMU (util/qemu-thread-posix.c qemu_thread_create, accel/kvm/kvm-all.c
kvm_init_cpu_signals / kvm_eat_signals, softmmu/cpus.c qemu_cpu_kick_thread):

- A vCPU thread is created with every asynchronous signal blocked ("leave signal handling
  to the iothread"), so SIGINT, SIGTERM ... always go to the main thread, where Python
  runs its handlers. The mask is set in the creating thread around pthread_create, so the
  new thread has it from its first instruction: no kick can land before it is in place.
- SIG_IPI (SIGUSR1) stays blocked in userspace; KVM_SET_SIGNAL_MASK gives KVM the same
  mask without SIG_IPI, which KVM installs only while the thread is inside KVM_RUN
  (kvm_sigset_activate / kvm_sigset_deactivate).
- A kick is `pthread_kill(thread, SIG_IPI)`, a signal to that one thread (tgkill): the
  kernel never hands it to another thread, so it can never reach the main thread or
  Python's handler, whatever SIGUSR1's disposition. Inside KVM_RUN it is unblocked: KVM
  sees it pending and returns -EINTR (exit_reason KVM_EXIT_INTR). Outside, it stays
  pending, and the next KVM_RUN returns -EINTR at once. Either way it is never delivered
  (the mask is back before the return to userspace), not even with SIGUSR1's default
  action, terminate: the kernel's fatal-signal shortcut checks the thread's saved
  userspace mask (`real_blocked`), where SIG_IPI is blocked.
- The vCPU thread then consumes it with sigtimedwait and a zero timeout (kvm_eat_signals).
"""

from __future__ import annotations

import signal
import struct
import threading
from collections.abc import Callable, Iterable

from vmsim.hostkvm.watchdog import SIG_IPI
from vmsim.kvm.api import KERNEL_SIGSET_SIZE

# Left unblocked in vCPU threads, as qemu_thread_create does: blocking a synchronous
# signal is undefined behaviour (the fault would loop), and SIGBUS reports memory errors.
SYNCHRONOUS_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGFPE, signal.SIGILL, signal.SIGBUS})


def kernel_sigset(signals: Iterable[int]) -> bytes:
    """struct kvm_signal_mask for KVM_SET_SIGNAL_MASK: u32 len = 8, then the kernel's
    64-bit sigset_t (bit n-1 for signal n)."""
    mask = 0
    for sig in signals:
        if 1 <= int(sig) <= 8 * KERNEL_SIGSET_SIZE:
            mask |= 1 << (int(sig) - 1)
    return struct.pack("<IQ", KERNEL_SIGSET_SIZE, mask)


def qemu_thread_create(target: Callable[[], None], name: str,
                       set_kvm_mask: Callable[[set[int]], None]) -> threading.Thread:
    """Start `target` on a new daemon thread that blocks every asynchronous signal, SIG_IPI
    included; `set_kvm_mask` is given the mask KVM is to use inside KVM_RUN (the thread's,
    less SIG_IPI) before the thread starts."""
    blocked = set(signal.valid_signals()) - SYNCHRONOUS_SIGNALS
    old = signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        # What the thread inherits (the C library keeps a couple of its own signals open).
        inherited = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        set_kvm_mask({int(s) for s in inherited} - {int(SIG_IPI)})
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return thread


def kvm_eat_signals() -> int:
    """Consume this thread's pending SIG_IPI (it is blocked here, so it waits to be taken);
    how many were taken. Only a vCPU thread calls it."""
    eaten = 0
    while signal.sigtimedwait([SIG_IPI], 0) is not None:
        eaten += 1
    return eaten
