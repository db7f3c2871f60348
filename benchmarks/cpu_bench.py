"""Guest instructions per second of vmsim's CPU interpreter (issue 2's speed figure).

Runs the bitwise CRC-32 guest (benchmarks/guests/crc32.asm, ~3.2 M instructions) on the
bare CPU with paging off and on, with no event listener, and prints instructions per
second for each (best of --repeat runs). The guest's CRC is checked against zlib.

    python benchmarks/cpu_bench.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.hw.cpu import StopReason
from vmsim.vmm.machine import Machine

GUEST = Path(__file__).parent / "guests" / "crc32.asm"
EXPECTED = zlib.crc32(bytes((i * 7 + 3) & 0xFF for i in range(0x10000)))


def run_once(image, paging: bool) -> tuple[int, float]:
    machine = Machine()
    machine.load_image(image)
    bare = BareMetal(machine)
    bare.cpu.r[3] = 1 if paging else 0  # EBX selects paging in the guest
    t0 = time.perf_counter()
    result = bare.run()
    elapsed = time.perf_counter() - t0
    if result.reason is not StopReason.HLT or bare.cpu.r[0] != EXPECTED:
        sys.exit(f"benchmark guest went wrong: {result.reason}, eax={bare.cpu.r[0]:#x}")
    return result.instructions, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    image = assemble(GUEST.read_text(), str(GUEST))
    print(f"{'mode':<12}{'instructions':>14}{'seconds':>10}{'M instr/s':>12}")
    for paging in (False, True):
        best = min((run_once(image, paging) for _ in range(args.repeat)), key=lambda x: x[1])
        n, dt = best
        print(f"{'paging on' if paging else 'paging off':<12}{n:>14,}{dt:>10.3f}{n / dt / 1e6:>12.2f}")


if __name__ == "__main__":
    main()
