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
Then the page-table-heavy sample guest (sample_guests/address_spaces.asm, its loop of
context switches run --rounds times) under EPT and under shadow paging: every CR3 load a
TLB flush and page walks, under shadow paging a VM exit too. Last, sample_guests/smp.asm on
--smp vCPUs (default 4): LOCK XADD on a counter and a spinlock, both kept in the page of
the code, so that every store lands in a page the CPUs decoded code from (its counters are
checked: 100000 per vCPU). And benchmarks/guests/memset.asm (REP STOSD over 8 MiB, REP
MOVSD of 4 MiB) and benchmarks/guests/memscan.asm (REPE CMPSD of two 4 MiB buffers, REPNE
SCASB over 8 MiB) on the whole stack, in MiB/s, beside the same runs element by element
(vmsim.hw.cpu.BULK_REP off).
The guest's CRC is checked against zlib every time. Times are wall clock (perf_counter);
--cpu-time measures process CPU time instead (a busy machine); the reference loop
(benchmarks/reference.py) is measured first, the same way, and each rate is also shown
divided by it.

    python benchmarks/cpu_bench.py [--repeat N] [--cpu-time] [--rounds N] [--smp N]

--callgrind counts instead of timing (deterministic, where timings on a shared machine drift
by tens of percent): address_spaces.asm runs as a process under valgrind's callgrind
(Debian package valgrind) at two round counts under EPT and under shadow paging, and the
machine instructions of the longer run less those of the shorter, divided by the rounds
between them, are one round's: three context switches (MOV to CR3), 27 guest
instructions. The CRC guest is counted the same way, on the whole stack under EPT at two
lengths (CRC_BYTES): machine instructions per guest instruction. Beside them, the reference
loop's iterations that many machine instructions make (its own count under callgrind), a
figure for any machine. (Counts do not convert to time at the reference loop's rate: its
tight loop runs more machine instructions per cycle than the simulator does.)

    python benchmarks/cpu_bench.py --callgrind [--rounds N] [--bounds]

--bounds adds two rows that are not vmsim at all but bounds on what faster code could reach
(docs/performance.md, "Floors"): the same round with the decoded code kept across CR3
loads (no instruction fetched again), and with that and the TLB not flushed by them
either (no page walked again). Both are inexact (a guest that maps other code at the same
address would run the wrong code), so they exist only in this benchmark's counted runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import counting
import reference
from reference import machine_line, reference_rate

import vmsim.hw.cpu as cpu_mod
from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.hw.cpu import StopReason
from vmsim.kvm.api import KvmRegs
from vmsim.kvm.kvm_main import SimKvm
from vmsim.trace import InstructionColumn, TraceWriter
from vmsim.vmm.machine import Machine, MachineConfig
from vmsim.vmm.vm import VirtualMachine

GUEST = Path(__file__).parent / "guests" / "crc32.asm"
ADDRESS_SPACES = Path(__file__).parents[1] / "sample_guests" / "address_spaces.asm"
SMP = Path(__file__).parents[1] / "sample_guests" / "smp.asm"
EXPECTED = zlib.crc32(bytes((i * 7 + 3) & 0xFF for i in range(0x10000)))


def _check(eax: int, what: str, length: int = 0x10000) -> None:
    expected = EXPECTED if length == 0x10000 else \
        zlib.crc32(bytes((i * 7 + 3) & 0xFF for i in range(length)))
    if eax != expected:
        sys.exit(f"benchmark guest went wrong ({what}): eax={eax:#x}, expected {expected:#x}")


def crc32_text(length: int = 0x10000) -> str:
    """crc32.asm's source over `length` bytes (the guest instructions grow with it, ~49 a
    byte); the other benchmarks size it here too."""
    text = GUEST.read_text()
    out = text.replace("LEN     equ 0x10000", f"LEN     equ {length:#x}")
    if out == text and length != 0x10000:
        sys.exit(f"{GUEST}: its LEN line changed; update cpu_bench.crc32_text")
    return out


def crc32_image(length: int = 0x10000):
    return assemble(crc32_text(length), str(GUEST))


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
              mmu: str = "ept", length: int = 0x10000) -> tuple[int, float]:
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
    _check(vcpu.cpu.r[0], "stack", length)
    return vcpu.cpu.icount, elapsed


def run_address_spaces(image, mmu: str) -> tuple[int, float]:
    events = EventStream()
    machine = Machine(events=events)
    machine.load_image(image)
    vm = VirtualMachine(machine, SimKvm(events, mmu))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        vm.run()
    elapsed = time.perf_counter() - t0
    return vm.cpus[0].vcpu.cpu.icount, elapsed


def spaces_image(rounds: int):
    src = ADDRESS_SPACES.read_text()
    text = src.replace("ROUNDS      equ 16", f"ROUNDS      equ {rounds}")
    if text == src and rounds != 16:
        sys.exit(f"{ADDRESS_SPACES}: its ROUNDS line changed; update cpu_bench.py")
    return assemble(text, str(ADDRESS_SPACES))


ROUND_INSTRUCTIONS = 27  # guest instructions in one round of address_spaces.asm's loop
# The CRC guest's lengths --callgrind counts: ~50,000 and ~250,000 guest instructions,
# past the translation of its blocks (the difference is the loop's steady cost).
CRC_BYTES = (0x400, 0x1400)


# --bounds: what a round would cost if a CR3 load lost less (inexact, never vmsim's behaviour)
BOUNDS = {"keep-code": "decoded code kept across CR3 loads",
          "keep-code+tlb": "that, and the TLB not flushed by them"}


def _unflushed(variant: str) -> None:
    """Patch this counted process for a --bounds variant (see BOUNDS)."""
    from vmsim.hw.cpu import Cpu
    from vmsim.hw.mmu import Mmu

    Cpu._new_address_space = lambda self: None  # type: ignore[method-assign]
    if variant == "keep-code+tlb":
        flush = Mmu.flush

        def no_cr3_flush(self: Mmu, keep_global: bool = False, scope: str = "all") -> None:
            if scope != "cr3 load":
                flush(self, keep_global, scope)
        Mmu.flush = no_cr3_flush  # type: ignore[method-assign]


def callgrind(rounds: int, bounds: bool = False) -> None:
    """Machine instructions per context-switch round of address_spaces.asm (docstring)."""
    counting.require_valgrind()
    here = str(Path(__file__).resolve())
    root = Path(__file__).resolve().parents[1]

    counting.write_bytecode([here, "--one", "ept", "16"], root)
    per_iteration = counting.reference_cost(here, root)
    print(f"machine: {machine_line()}")
    print(f"reference loop: {per_iteration:.0f} machine instructions per iteration")
    short, long = rounds, rounds * 3
    rows = [(variant, mmu) for variant in ["", *(BOUNDS if bounds else ())]
            for mmu in ("ept", "shadow")]
    counts = iter(counting.count_all(
        [[here, "--one", "crc32", str(n)] for n in reversed(CRC_BYTES)]
        + [[here, "--one", mmu, str(n), *([variant] if variant else [])]
           for variant, mmu in rows for n in (long, short)], root, from_here=True))
    guest = [run_stack(crc32_image(n), False, length=n)[0] for n in reversed(CRC_BYTES)]
    per_insn = (next(counts) - next(counts)) / (guest[0] - guest[1])
    print(f"crc32.asm, whole stack, EPT: {per_insn:,.0f} machine instructions per guest "
          f"instruction ({per_insn / per_iteration:.3f} ref-iterations; {CRC_BYTES[0]:#x} and "
          f"{CRC_BYTES[1]:#x} bytes counted)")
    print(f"{'paging':<9}{'instructions/round':>20}{'per CR3 load':>14}{'ref-iterations':>16}")
    for variant, mmu in rows:
        per_round = (next(counts) - next(counts)) / (long - short)
        print(f"{mmu:<9}{per_round:>20,.0f}{per_round / 3:>14,.0f}"
              f"{per_round / per_iteration:>16,.0f}"
              f"{'  bound: ' + BOUNDS[variant] if variant else ''}")
    print(f"a round: three MOV to CR3 and {ROUND_INSTRUCTIONS} guest instructions; "
          f"{short} and {long} rounds counted; ref-iterations: as many as that many "
          "reference-loop iterations take")


def _one(args: list[str]) -> None:
    """What --callgrind counts: one run, nothing printed."""
    if args[0] == "reference":
        counting.from_here()
        reference._loop(int(args[1]))
        return
    if args[0] == "crc32":
        n = int(args[1])
        image = crc32_image(n)
        counting.from_here()
        run_stack(image, False, length=n)
        return
    if len(args) > 2:
        _unflushed(args[2])
    image = spaces_image(int(args[1]))
    counting.from_here()
    run_address_spaces(image, args[0])


def run_smp(image, vcpus: int) -> tuple[int, float]:
    events = EventStream()
    out = bytearray()
    machine = Machine(MachineConfig(smp=vcpus), events=events, serial_out=out.extend)
    machine.load_image(image)
    vm = VirtualMachine(machine, SimKvm(events))
    t0 = time.perf_counter()
    vm.run()
    elapsed = time.perf_counter() - t0
    want = f"counter {100000 * vcpus}, under the lock {1000 * vcpus}".encode()
    if machine.exit_status != 1 or want not in out:
        sys.exit(f"smp.asm: wrong result ({machine.exit_status}): {bytes(out)!r}")
    return sum(c.vcpu.cpu.icount for c in vm.cpus), elapsed


MEMSET = Path(__file__).parent / "guests" / "memset.asm"
MEMSET_MIB = 8 + 4 * 2  # bytes stored, and read and stored again
MEMSCAN = Path(__file__).parent / "guests" / "memscan.asm"
MEMSCAN_MIB = 4 * 2 + 8  # bytes read: two 4 MiB buffers compared, 8 MiB scanned


def run_memset(image, bulk: bool) -> tuple[int, float]:
    cpu_mod.BULK_REP = bulk
    try:
        events = EventStream()
        machine = Machine(events=events)
        machine.load_image(image)
        vm = VirtualMachine(machine, SimKvm(events))
        t0 = time.perf_counter()
        vm.run()
        elapsed = time.perf_counter() - t0
    finally:
        cpu_mod.BULK_REP = True
    if machine.exit_status != 1:
        sys.exit(f"{image.source_file}: wrong result ({machine.exit_status})")
    return MEMSET_MIB, elapsed


def best(fn, repeat: int, *args) -> tuple[int, float]:
    return min((fn(*args) for _ in range(repeat)), key=lambda x: x[1])


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        _one(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time, not wall time")
    ap.add_argument("--rounds", type=int, default=400,
                    help="context-switch rounds of address_spaces.asm (default 400)")
    ap.add_argument("--smp", type=int, default=4, help="vCPUs for smp.asm (default 4)")
    ap.add_argument("--callgrind", action="store_true",
                    help="count machine instructions per round of address_spaces.asm "
                    "(docstring; --rounds: the shorter run, default 400)")
    ap.add_argument("--bounds", action="store_true",
                    help="with --callgrind: also the round with less lost at a CR3 load "
                    "(inexact bounds, docstring)")
    args = ap.parse_args()
    if args.bounds and not args.callgrind:
        ap.error("--bounds counts: use it with --callgrind")
    if args.callgrind:
        callgrind(args.rounds, args.bounds)
        return
    if args.cpu_time:
        time.perf_counter = time.process_time  # every timing below, the reference's too
    image = crc32_image()
    print(f"machine: {machine_line()}")
    ref_rate = reference_rate(args.repeat)
    print(f"reference loop: {ref_rate:.2f} M iterations/s "
          f"({'CPU' if args.cpu_time else 'wall'} time; 'x ref' = M instr/s / this)")
    print(f"{'configuration':<38}{'instructions':>13}{'seconds':>9}{'M instr/s':>11}"
          f"{'ratio':>8}{'x ref':>7}")

    def row(name: str, n: int, dt: float, ref: float | None = None) -> float:
        rate = n / dt / 1e6
        ratio = f"{rate / ref:.2f}x" if ref else ""
        print(f"{name:<38}{n:>13,}{dt:>9.3f}{rate:>11.2f}{ratio:>8}{rate / ref_rate:>7.2f}")
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
    spaces = spaces_image(args.rounds)
    ept_spaces = row("address_spaces, EPT",
                     *best(run_address_spaces, args.repeat, spaces, "ept"), ref=stack_off)
    row("address_spaces, shadow paging",
        *best(run_address_spaces, args.repeat, spaces, "shadow"), ref=ept_spaces)
    smp_image = assemble(SMP.read_text(), str(SMP))
    row(f"smp.asm, {args.smp} vCPUs, EPT", *best(run_smp, args.repeat, smp_image, args.smp),
        ref=stack_off)
    memset = assemble(MEMSET.read_text(), str(MEMSET))
    _, fast = best(run_memset, args.repeat, memset, True)
    _, slow = best(run_memset, 1, memset, False)
    print(f"memset.asm, whole stack EPT: {MEMSET_MIB / fast:.1f} MiB/s a page at a time, "
          f"{MEMSET_MIB / slow:.1f} MiB/s element by element ({slow / fast:.1f}x)")
    memscan = assemble(MEMSCAN.read_text(), str(MEMSCAN))
    _, fast = best(run_memset, args.repeat, memscan, True)
    _, slow = best(run_memset, 1, memscan, False)
    print(f"memscan.asm, whole stack EPT: {MEMSCAN_MIB / fast:.1f} MiB/s read a page at a time, "
          f"{MEMSCAN_MIB / slow:.1f} MiB/s element by element ({slow / fast:.1f}x)")
    print("ratios: whole stack with guest paging off vs bare CPU; guest paging on vs off in the "
          "same mode; recording vs headless whole stack; address_spaces under EPT vs the CRC "
          "guest under EPT, under shadow paging vs under EPT; smp.asm vs the CRC guest")


if __name__ == "__main__":
    main()
