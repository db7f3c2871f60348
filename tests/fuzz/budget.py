"""How much the fuzz tests run, and the guards that keep one input from taking the machine.

CI (no variable set): a fixed seed and a small count per test, so every run is the same
and the whole directory stays well under two minutes on two cores. On demand:

    VMSIM_FUZZ=N            N inputs per test instead of the CI count (fresh seed)
    VMSIM_FUZZ_SECONDS=T    keep generating for T seconds per test (fresh seed)
    VMSIM_FUZZ_SEED=S       the seed (default: fixed in CI, random in a soak; printed)

`Budget.inputs()` yields input numbers until the count or the time runs out; `scratch`
gives an input a directory of its own for its files, removed once it is done (a soak's
hundreds of thousands of inputs filled the disk with them). Every input is bounded
twice: a watchdog on CPU time and wall-clock time (`watchdog`, SIGPROF and SIGALRM, raises
`Hang`) and an address-space cap (`memory_cap`, RLIMIT_AS, turns a runaway allocation into
MemoryError instead of the host's OOM killer).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CI_SEED = 20261128


def _env_int(name: str) -> int:
    text = os.environ.get(name, "").strip()
    return int(text, 0) if text else 0


@dataclass
class Budget:
    """The number of inputs (or seconds) one fuzz test gets, and its seed."""

    count: int
    seconds: float
    seed: int
    soak: bool

    @classmethod
    def from_env(cls, ci_count: int) -> Budget:
        n, secs = _env_int("VMSIM_FUZZ"), _env_int("VMSIM_FUZZ_SECONDS")
        soak = bool(n or secs)
        seed = _env_int("VMSIM_FUZZ_SEED") or (random.SystemRandom().randrange(1, 1 << 31)
                                                if soak else CI_SEED)
        if secs and not n:
            n = 1 << 62  # time-bounded only
        return cls(n or ci_count, float(secs), seed, soak)

    def inputs(self) -> Iterator[int]:
        end = time.monotonic() + self.seconds if self.seconds else None
        for i in range(self.count):
            if end is not None and time.monotonic() > end:
                return
            yield i

    def rng(self, salt: str) -> random.Random:
        """A generator of its own for each test, so adding a test changes no other."""
        return random.Random(f"{self.seed}:{salt}")


@contextlib.contextmanager
def scratch(tmp: Path, i: int) -> Iterator[Path]:
    """A directory for input `i`'s files, removed with them afterwards (keep a finding's
    input in the findings directory before leaving)."""
    d = tmp / f"in{i}"
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Hang(BaseException):
    """The watchdog fired: the input ran past its wall-clock bound. A BaseException so that
    no `except Exception` in the code under test swallows it."""


@contextlib.contextmanager
def watchdog(seconds: float, wall_factor: float = 4.0) -> Iterator[None]:
    """Raise Hang in this (main) thread once the body has used `seconds` of CPU time
    (ITIMER_PROF: the machine's load does not make a slow input look hung), or
    `seconds * wall_factor` of wall-clock time (a body blocked in a system call)."""

    def fire(signum, frame):
        what = "CPU" if signum == signal.SIGPROF else "wall-clock"
        limit = seconds if signum == signal.SIGPROF else seconds * wall_factor
        raise Hang(f"still running after {limit:g} s of {what} time")

    old = {sig: signal.signal(sig, fire) for sig in (signal.SIGPROF, signal.SIGALRM)}
    signal.setitimer(signal.ITIMER_PROF, seconds)
    signal.setitimer(signal.ITIMER_REAL, seconds * wall_factor)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in old.items():
            # None: a handler not set from Python (libFuzzer's, under atheris)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


MEMORY_HEADROOM = 1 << 30  # what one input may allocate beyond what the process has


@contextlib.contextmanager
def memory_cap(headroom: int = MEMORY_HEADROOM) -> Iterator[None]:
    """Cap the address space at its current size plus `headroom`; a bigger allocation
    raises MemoryError (a finding) instead of swapping the machine. The soft limit goes
    back afterwards (an unprivileged process may raise it again up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


CHILD_CPU_SECONDS = 30  # a `vmsim` subprocess: far more than 50 000 MMIO-bound instructions


def limit_child(memory: int = 4 << 30, cpu: int = CHILD_CPU_SECONDS) -> None:
    """preexec_fn for a subprocess (`vmsim` on the command line): the same memory cap, and
    RLIMIT_CPU, whose SIGXCPU ends a child that spins (a hang measured in CPU time, so a
    loaded machine does not fake one; a child blocked in a read meets the wall timeout)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
