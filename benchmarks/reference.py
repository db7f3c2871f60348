"""A fixed pure-Python reference loop, measured beside every speed figure.

A figure from a busy or slower machine says little alone; the same figure divided by this
loop's rate, measured in the same process a moment before, compares across machines and
runs. The loop is an interpreter's core in miniature (a dict lookup of a handler by
address, a call, a register update, a branch) and never changes: changing it would make
old ratios meaningless.

    python benchmarks/reference.py
"""

from __future__ import annotations

import platform
import time

ITERATIONS = 2_000_000


def _loop(n: int) -> int:
    r = [0] * 8

    def inc() -> int:
        r[0] = (r[0] + 1) & 0xFFFFFFFF
        return 1

    def dec() -> int:
        r[1] = (r[1] - 1) & 0xFFFFFFFF
        return 2 if r[1] & 1 else 0

    def add() -> int:
        r[2] = (r[2] + r[0]) & 0xFFFFFFFF
        return 0

    table = {0: inc, 1: dec, 2: add}
    get = table.get
    pc = 0
    for _ in range(n):
        pc = get(pc)()
    return r[2]


def reference_rate(repeat: int = 3) -> float:
    """Million iterations per second of the reference loop, best of `repeat`."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        _loop(ITERATIONS)
        best = min(best, time.perf_counter() - t0)
    return ITERATIONS / best / 1e6


def machine_line() -> str:
    """The machine and Python a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}; {platform.python_implementation()} {platform.python_version()}"


def print_reference(repeat: int = 3) -> float:
    rate = reference_rate(repeat)
    print(f"machine: {machine_line()}")
    print(f"reference pure-Python loop: {rate:.2f} M iterations/s "
          "(benchmarks/reference.py; ratios below are figure / this)")
    return rate


if __name__ == "__main__":
    print_reference()
