"""Guest instructions per second: the bare CPU interpreter, and the whole stack.

Runs the bitwise CRC-32 guest (benchmarks/guests/crc32.asm, ~3.2 M instructions) and
prints, best of --repeat runs:
- bare CPU, no hypervisor, no listener, paging off and on (issue 2's figure);
- the whole stack (VMM + simulated kvm.ko + VMX) under EPT and under shadow paging,
  guest paging off and on (issue 3: within 20% of bare; issue 4: paging on at least
  half the paging-off speed in either mode);
- the whole stack with VM-level events recorded (a trace at level "vm" into memory),
  and with every instruction recorded in a column (level "insn"), as a ratio to the
  headless whole-stack run (issue 3: at least 0.95x and 0.8x).
The guest's CRC is checked against zlib every time.

    python benchmarks/cpu_bench.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zlib
from pathlib import Path

from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.hw.cpu import StopReason
from vmsim.kvm.api import KvmRegs
from vmsim.kvm.kvm_main import SimKvm
from vmsim.trace import InstructionColumn, TraceWriter
from vmsim.vmm.machine import Machine
from vmsim.vmm.vm import VirtualMachine

GUEST = Path(__file__).parent / "guests" / "crc32.asm"
EXPECTED = zlib.crc32(bytes((i * 7 + 3) & 0xFF for i in range(0x10000)))


def _check(eax: int, what: str) -> None:
    if eax != EXPECTED:
        sys.exit(f"benchmark guest went wrong ({what}): eax={eax:#x}, expected {EXPECTED:#x}")


def run_bare(image, paging: bool) -> tuple[int, float]:
    machine = Machine()
    machine.load_image(image)
    bare = BareMetal(machine)
    bare.cpu.r[3] = 1 if paging else 0  # EBX selects paging in the guest
    t0 = time.perf_counter()
    result = bare.run()
    elapsed = time.perf_counter() - t0
    if result.reason is not StopReason.HLT:
        sys.exit(f"bare run stopped: {result.reason}")
    _check(bare.cpu.r[0], "bare")
    return result.instructions, elapsed


def run_stack(image, paging: bool, level: str | None = None,
              mmu: str = "ept") -> tuple[int, float]:
    events = EventStream()
    machine = Machine(events=events)
    machine.load_image(image)
    vm = VirtualMachine(machine, SimKvm(events, mmu))
    vcpu = vm.cpus[0].vcpu
    regs = vcpu.get_regs()
    vcpu.set_regs(KvmRegs(**{**vars(regs), "rbx": 1 if paging else 0}))
    sink = io.StringIO()
    writer = None
    if level == "insn":
        # Kept in memory: this measures what recording costs, not writing JSON.
        vcpu.cpu.recorder = InstructionColumn("vcpu0").eips
    if level is not None:
        writer = TraceWriter(events, sink, "vm")
    t0 = time.perf_counter()
    vm.run()
    elapsed = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    _check(vcpu.cpu.r[0], "stack")
    return vcpu.cpu.icount, elapsed


def best(fn, repeat: int, *args) -> tuple[int, float]:
    return min((fn(*args) for _ in range(repeat)), key=lambda x: x[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    image = assemble(GUEST.read_text(), str(GUEST))
    print(f"{'configuration':<34}{'instructions':>14}{'seconds':>10}{'M instr/s':>11}{'ratio':>8}")

    def row(name: str, n: int, dt: float, ref: float | None = None) -> float:
        rate = n / dt / 1e6
        ratio = f"{rate / ref:.2f}x" if ref else ""
        print(f"{name:<34}{n:>14,}{dt:>10.3f}{rate:>11.2f}{ratio:>8}")
        return rate

    bare_off = row("bare CPU, paging off", *best(run_bare, args.repeat, image, False))
    row("bare CPU, paging on", *best(run_bare, args.repeat, image, True))
    stack_off = row("whole stack EPT, paging off", *best(run_stack, args.repeat, image, False),
                    ref=bare_off)
    row("whole stack EPT, paging on", *best(run_stack, args.repeat, image, True), ref=stack_off)
    shadow_off = row("whole stack shadow, paging off",
                     *best(run_stack, args.repeat, image, False, None, "shadow"), ref=bare_off)
    row("whole stack shadow, paging on",
        *best(run_stack, args.repeat, image, True, None, "shadow"), ref=shadow_off)
    row("whole stack, VM events recorded", *best(run_stack, args.repeat, image, False, "vm"),
        ref=stack_off)
    row("whole stack, instructions recorded", *best(run_stack, args.repeat, image, False, "insn"),
        ref=stack_off)
    print("ratios: whole stack with guest paging off vs bare CPU; guest paging on vs off in the "
          "same mode; recording vs headless whole stack")


if __name__ == "__main__":
    main()
