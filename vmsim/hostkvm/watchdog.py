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
    """One vCPU's KVM_RUN budget. `arm` before KVM_RUN and `disarm` after it; a thread
    waits for the deadline and calls `kick` if the vCPU is still inside."""

    def __init__(self, seconds: float, set_immediate_exit: Callable[[], None]):
        self.seconds = seconds
        self._set_immediate_exit = set_immediate_exit
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._target = 0  # the thread inside KVM_RUN
        self._fired = False
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self) -> bool:
        """Start this KVM_RUN's budget; False when the watchdog cannot kick (see
        install_sig_ipi), so the run is unbounded."""
        if not install_sig_ipi():
            return False
        with self._cond:
            self._fired = False
            self._target = threading.get_ident()
            self._deadline = time.monotonic() + self.seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait, name="vmsim-kvm-watchdog",
                                                daemon=True)
                self._thread.start()
        return True

    def disarm(self) -> bool:
        """End this KVM_RUN's budget; True if the watchdog kicked the vCPU during it."""
        with self._cond:
            self._deadline = None
            return self._fired

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _wait(self) -> None:
        # No notify on arm: a new deadline is always later than the time this thread
        # wakes up at, so it finds the deadline then. Idle for a whole period, it ends.
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait(self.seconds)
                    if self._deadline is None:
                        break
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                # Still inside KVM_RUN (disarm takes this lock): qemu_cpu_kick.
                self._deadline = None
                self._fired = True
                self._set_immediate_exit()
                signal.pthread_kill(self._target, SIG_IPI)
            self._thread = None
