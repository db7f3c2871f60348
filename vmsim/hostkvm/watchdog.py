"""A watchdog that kicks a vCPU out of KVM_RUN, as QEMU's qemu_cpu_kick does.

The host's software KVM (kvm_pvm) can stay inside KVM_RUN for ever (it never returns on
VMCALL), and KVM counts no guest instructions for --max-instructions to bound. So each
KVM_RUN gets a wall-clock budget: when it runs out, the watchdog sets
`kvm_run->immediate_exit` and sends SIGUSR1 (QEMU's SIG_IPI) to the thread inside KVM_RUN.
The signal's handler does nothing: its delivery alone makes KVM_RUN return -EINTR
(Python installs handlers without SA_RESTART, and KVM_RUN is never restarted anyway);
immediate_exit covers a kick that lands just before the thread enters KVM_RUN.

The budget is VMSIM_KVM_WATCHDOG seconds (default 5; 0 turns the watchdog off). It is the
host's wall clock, the one place vmsim measures it: the host's KVM has no other.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

WATCHDOG_ENV = "VMSIM_KVM_WATCHDOG"
DEFAULT_SECONDS = 5.0
SIG_IPI = signal.SIGUSR1  # QEMU's SIG_IPI


class WatchdogSettingError(ValueError):
    """VMSIM_KVM_WATCHDOG is not a number of seconds; str() is one line."""


def watchdog_seconds() -> float:
    """The KVM_RUN budget from VMSIM_KVM_WATCHDOG: seconds, 0 for none."""
    text = os.environ.get(WATCHDOG_ENV, "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9:  # also refuses nan and inf
        raise WatchdogSettingError(f"{WATCHDOG_ENV}={text}: expected a number of seconds "
                                   "(0 turns the watchdog off)")
    return seconds


def _sig_ipi_handler(signum: int, frame: object) -> None:
    """Nothing to do: the signal only has to interrupt KVM_RUN."""


def install_sig_ipi() -> bool:
    """Make SIGUSR1 harmless, as QEMU does for SIG_IPI; False where it cannot be (Python
    installs handlers only from the main thread, and SIGUSR1 would otherwise kill us)."""
    current = signal.getsignal(SIG_IPI)
    if current is _sig_ipi_handler or callable(current):
        return True
    if current == signal.SIG_IGN:
        return False  # an ignored signal is discarded: it would interrupt nothing
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(SIG_IPI, _sig_ipi_handler)
    return True


class Watchdog:
    """One vCPU's KVM_RUN budget. `arm` before KVM_RUN and `disarm` after it (a lock and a
    clock read each: KVM_RUN's own round trip is far longer); a thread waits for the
    deadline and kicks the vCPU if it is still inside."""

    def __init__(self, seconds: float, set_immediate_exit: Callable[[], None]):
        self.seconds = seconds
        self._set_immediate_exit = set_immediate_exit
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._target = 0  # the thread inside KVM_RUN
        self._fired = False
        self._busy = False  # armed since the thread last looked
        self._thread: threading.Thread | None = None
        self._can_kick: bool | None = None

    def arm(self, sig_ipi_blocked: bool = False) -> bool:
        """Start this KVM_RUN's budget; False when the watchdog cannot kick (see
        install_sig_ipi), so the run is unbounded. `sig_ipi_blocked`: the calling thread
        blocks SIG_IPI and KVM_SET_SIGNAL_MASK opens it only inside KVM_RUN (a vCPU thread,
        vmsim.hostkvm.vcpu_thread), so the kick needs no handler."""
        if not sig_ipi_blocked:
            if self._can_kick is None:
                self._can_kick = install_sig_ipi()
            if not self._can_kick:
                return False
        with self._lock:
            self._fired = False
            self._busy = True
            self._target = threading.get_ident()
            self._deadline = time.monotonic() + self.seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait, name="vmsim-kvm-watchdog",
                                                daemon=True)
                self._thread.start()
        return True

    def disarm(self) -> bool:
        """End this KVM_RUN's budget; True if the watchdog kicked the vCPU during it."""
        with self._lock:
            self._deadline = None
            return self._fired

    def close(self) -> None:
        self._closing.set()

    def _wait(self) -> None:
        # A new deadline is always later than the time this thread next wakes up at, so
        # arm need not wake it. A whole period with no KVM_RUN at all, and it ends.
        while True:
            with self._lock:
                deadline = self._deadline
                if deadline is None:
                    if not self._busy or self._closing.is_set():
                        self._thread = None
                        return
                    self._busy = False
                    timeout = self.seconds
                else:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        # Still inside KVM_RUN (disarm takes this lock): qemu_cpu_kick.
                        self._deadline = None
                        self._fired = True
                        self._set_immediate_exit()
                        signal.pthread_kill(self._target, SIG_IPI)
                        continue
            self._closing.wait(timeout)
