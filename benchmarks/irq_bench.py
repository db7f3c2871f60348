"""What interrupts and the threads cost a guest that computes (issue 10).

Runs the CRC-32 guest of cpu_bench (benchmarks/guests/crc32.asm, ~3.2 M instructions,
paging off, IF=0 throughout) on the whole stack and prints guest instructions per second
of CPU time (time.process_time: a machine shared with other work slows it less than wall
time does), best of --repeat runs, for:
- the default machine (--irqchip kernel: KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2), with the
  PIT never programmed by the guest (its reset state, 18.2 Hz, first fires after 55 ms,
  long after this run);
- the same with the scheduler's horizon check (vmsim.kvm.x86._until_horizon: next timer,
  other threads, host tick) replaced by the plain batch size: what that check costs;
- the PIT programmed at 10 kHz (reload 119) with IRQ 0 masked in the PIC: the in-kernel
  PIT's hrtimer fires every 0.1 ms of virtual time and cuts the guest's batches there;
- the same with IRQ 0 open in the PIC but IF=0 in the guest: the interrupt stays pending,
  so kvm.ko keeps interrupt-window exiting on (the guest runs one instruction at a time
  between window checks);
- --irqchip userspace, PIT never programmed and PIT at 10 kHz masked (QEMU's PIT on a
  main-loop timer: the main loop thread wakes every 0.1 ms).
With --before REV it also runs the first configuration on the source tree of git revision
REV (default: the commit before issue 10's plumbing), bare CPU and whole stack, in child
processes alternating with the working tree, and prints the ratios: what the interrupt
plumbing costs the hot path (the issue's limit: 5%).

With --callgrind [REV] it counts instead, under valgrind: host instructions per guest
instruction for the bare CPU and the whole stack, REV against the working tree, a figure
that a busy machine does not disturb (it takes several minutes).

    python benchmarks/irq_bench.py [--repeat N] [--before [REV]]
    python benchmarks/irq_bench.py --callgrind [REV]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUEST = ROOT / "benchmarks" / "guests" / "crc32.asm"
EXPECTED = zlib.crc32(bytes((i * 7 + 3) & 0xFF for i in range(0x10000)))
BEFORE = "d276b6a"  # the last commit before "interrupts, SMP and QEMU's main loop"

# PIC remapped to 0x20 (ICW1-4), IMR as given; PIT channel 0 in mode 2, reload 119
# (1193182 / 119 = 10 kHz). Put in front of the CRC guest's own code.
PIT_PROLOGUE = """
        mov al, 0x11
        out 0x20, al
        out 0xA0, al
        mov al, 0x20
        out 0x21, al
        mov al, 0x28
        out 0xA1, al
        mov al, 4
        out 0x21, al
        mov al, 2
        out 0xA1, al
        mov al, 1
        out 0x21, al
        out 0xA1, al
        mov al, {imr:#x}
        out 0x21, al
        mov al, 0xFF
        out 0xA1, al
        mov al, 0x34
        out 0x43, al
        mov al, 119
        out 0x40, al
        mov al, 0
        out 0x40, al
"""


def image(pit: str | None):
    """The CRC guest; `pit` None (PIT untouched), "masked" (IRQ 0 masked) or "open"."""
    from vmsim.asm import assemble

    src = GUEST.read_text()
    if pit is not None:
        prologue = PIT_PROLOGUE.format(imr=0xFF if pit == "masked" else 0xFE)
        src = re.sub(r"^start:\n", "start:\n" + prologue, src, count=1, flags=re.M)
    return assemble(src, str(GUEST))


def run_once(irqchip: str, pit: str | None, horizon: bool = True) -> tuple[int, float, dict]:
    from vmsim.events import EventStream
    from vmsim.kvm import x86
    from vmsim.kvm.kvm_main import SimKvm
    from vmsim.vmm.machine import Machine, MachineConfig
    from vmsim.vmm.vm import VirtualMachine

    img = image(pit)
    events = EventStream()
    machine = Machine(MachineConfig(irqchip=irqchip), events=events)
    machine.load_image(img)
    vm = VirtualMachine(machine, SimKvm(events))
    vcpu = vm.cpus[0].vcpu
    saved = x86._until_horizon
    if not horizon:
        x86._until_horizon = lambda v, clock, budget: budget
    try:
        t0 = time.process_time()
        vm.run()
        elapsed = time.process_time() - t0
    finally:
        x86._until_horizon = saved
    if vcpu.cpu.r[0] != EXPECTED:
        sys.exit(f"benchmark guest went wrong ({irqchip}, pit {pit}): eax={vcpu.cpu.r[0]:#x}")
    return vcpu.cpu.icount, elapsed, dict(vcpu.stat, timers=vm.sched.timers_fired)


def horizon_share(repeat: int) -> tuple[int, float, float]:
    """The horizon check's share of a run, measured directly (end-to-end ratios on a busy
    machine are noisier than 5%): how many times the default run calls it, what one call
    costs (timeit, on the same VM), and the run's CPU time."""
    import timeit

    from vmsim.kvm import x86

    calls = 0
    orig = x86._until_horizon

    def counting(v, clock, budget):
        nonlocal calls
        calls += 1
        return orig(v, clock, budget)

    x86._until_horizon = counting
    try:
        run_once("kernel", None)
    finally:
        x86._until_horizon = orig
    _, run_time, _ = best(repeat, "kernel", None)
    # One call, timed on a VM of the same configuration, its clock and threads in place.
    from vmsim.events import EventStream
    from vmsim.kvm.kvm_main import SimKvm
    from vmsim.vmm.machine import Machine, MachineConfig
    from vmsim.vmm.vm import VirtualMachine

    machine = Machine(MachineConfig(), events=EventStream())
    machine.load_image(image(None))
    vm = VirtualMachine(machine, SimKvm(machine.events))
    for _ in range(20):  # the threads started, the vCPU into its first KVM_RUN
        vm.step()
    v, clock = vm.cpus[0].vcpu, vm.sched
    v.next_host_tick = 1 << 60  # no tick due: the common case
    n = 200_000
    per_call = min(timeit.repeat(lambda: orig(v, clock, v.BATCH), number=n, repeat=3)) / n
    return calls, per_call, run_time


def best(repeat: int, *args) -> tuple[int, float, dict]:
    return min((run_once(*args) for _ in range(repeat)), key=lambda x: x[1])


# The child for --before: the whole stack on another source tree, through the API that
# existed before issue 10 (Machine, VirtualMachine, SimKvm), printing "instructions seconds".
CHILD = """
import sys, time
from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.kvm.kvm_main import SimKvm
from vmsim.vmm.machine import Machine
from vmsim.vmm.vm import VirtualMachine
img = assemble(open(sys.argv[1]).read(), sys.argv[1])
m = Machine()
m.load_image(img)
bare = BareMetal(m)
t0 = time.process_time()
bare.run()
dt_bare = time.process_time() - t0
assert bare.cpu.r[0] == int(sys.argv[2]), hex(bare.cpu.r[0])
events = EventStream()
m = Machine(events=events)
m.load_image(img)
vm = VirtualMachine(m, SimKvm(events))
t0 = time.process_time()
vm.run()
dt = time.process_time() - t0
cpu = vm.cpus[0].vcpu.cpu
assert cpu.r[0] == int(sys.argv[2]), hex(cpu.r[0])
print(bare.cpu.icount / dt_bare / 1e6, cpu.icount / dt / 1e6)
"""


def child_rates(tree: Path) -> tuple[float, float]:
    """(bare CPU, whole stack) M instructions per second of CPU time on `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.run([sys.executable, "-c", CHILD, str(GUEST), str(EXPECTED)], env=env,
                       cwd=tree, capture_output=True, text=True, check=True)
    bare, stack = p.stdout.split()
    return float(bare), float(stack)


def _trees(tmp: str, rev: str) -> tuple[Path, Path]:
    """The vmsim package of `rev` and the working tree, as two PYTHONPATH roots."""
    before, now = Path(tmp) / "before", Path(tmp) / "now"
    before.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "vmsim"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    tar = Path(tmp) / "before.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(before, filter="data")
    now.symlink_to(ROOT)  # the working tree as it is
    return before, now


def compare_before(rev: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        before, now = _trees(tmp, rev)
        print()
        rates: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
        for _ in range(repeat):  # alternate, so that a busy machine hits both alike
            rates["before"].append(child_rates(before))
            rates["now"].append(child_rates(now))
    for i, what in enumerate(("bare CPU (Cpu.run alone)", "whole stack, kernel irqchip")):
        b = max(r[i] for r in rates["before"])
        n = max(r[i] for r in rates["now"])
        print(f"{what:<30} {rev}: {b:.2f}  working tree: {n:.2f} M instr/s  "
              f"{n / b:.3f}x ({(1 - n / b) * 100:+.1f}% cost)")
        print("    all runs: before " + " ".join(f"{r[i]:.2f}" for r in rates["before"])
              + "; now " + " ".join(f"{r[i]:.2f}" for r in rates["now"]))


# --callgrind: host instructions (valgrind's Ir, the same on a busy machine as on an idle
# one) per guest instruction, from two runs of a `dec ecx; jnz` loop with IF=0 that differ
# by 1,000,000 guest instructions (startup and imports cancel out).
SPIN = """bits 32
org 0x100000
        cli
        mov ecx, {n}
.l:     dec ecx
        jnz .l
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
"""
CG_CHILD = """
import sys
from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.kvm.kvm_main import SimKvm
from vmsim.vmm.machine import Machine
from vmsim.vmm.vm import VirtualMachine
img = assemble(open(sys.argv[2]).read(), sys.argv[2])
ev = EventStream()
m = Machine(events=ev)
m.load_image(img)
if sys.argv[1] == "bare":
    BareMetal(m).run()
else:
    VirtualMachine(m, SimKvm(ev)).run()
assert m.exit_status == 1, m.exit_status
"""
CG_ROUNDS = (100_000, 600_000)  # 2 guest instructions a round: 1,000,000 apart


def _callgrind_ir(tree: Path, backend: str, guest: Path, tmp: str) -> int:
    out = Path(tmp) / "callgrind.out"
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-c", CG_CHILD, backend, str(guest)],
                       env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,
                       capture_output=True, text=True, check=True)
    m = re.search(r"Collected\s*:\s*([\d,]+)", p.stderr)
    if m is None:
        sys.exit(f"no instruction count from valgrind:\n{p.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def callgrind_before(rev: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        before, now = _trees(tmp, rev)
        guests = []
        for n in CG_ROUNDS:
            g = Path(tmp) / f"spin{n}.asm"
            g.write_text(SPIN.format(n=n))
            guests.append(g)
        extra = 2 * (CG_ROUNDS[1] - CG_ROUNDS[0])
        print(f"\nhost instructions (valgrind Ir) per guest instruction, IF=0 loop, "
              f"{rev} vs working tree:")
        for backend in ("bare", "sim"):
            per = []
            for tree in (before, now):
                a, b = (_callgrind_ir(tree, backend, g, tmp) for g in guests)
                per.append((b - a) / extra)
            print(f"  {backend:<5} {per[0]:8.1f}  {per[1]:8.1f}  "
                  f"({(per[1] / per[0] - 1) * 100:+.2f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", nargs="?", const=BEFORE, metavar="REV",
                    help=f"also compare with the tree of REV (default {BEFORE})")
    ap.add_argument("--callgrind", nargs="?", const=BEFORE, metavar="REV",
                    help="count host instructions per guest instruction under valgrind, "
                         f"REV (default {BEFORE}) vs the working tree (minutes)")
    args = ap.parse_args()
    if args.callgrind:
        callgrind_before(args.callgrind)
        return
    print(f"{'configuration':<52}{'instr':>11}{'s':>8}{'M/s':>7}{'ratio':>7}"
          f"{'exits':>7}{'timers':>8}")

    def row(name: str, n: int, dt: float, stat: dict, ref: float | None = None) -> float:
        rate = n / dt / 1e6
        ratio = f"{rate / ref:.2f}x" if ref else ""
        print(f"{name:<52}{n:>11,}{dt:>8.3f}{rate:>7.2f}{ratio:>7}{stat['exits']:>7}"
              f"{stat['timers']:>8}")
        return rate

    ref = row("kernel irqchip, PIT never armed", *best(args.repeat, "kernel", None))
    row("  the same, horizon check off", *best(args.repeat, "kernel", None, False), ref=ref)
    row("kernel irqchip, PIT 10 kHz, IRQ 0 masked in the PIC",
        *best(args.repeat, "kernel", "masked"), ref=ref)
    row("kernel irqchip, PIT 10 kHz, IRQ 0 open, IF=0", *best(args.repeat, "kernel", "open"),
        ref=ref)
    row("userspace irqchip, PIT never armed", *best(args.repeat, "userspace", None), ref=ref)
    row("userspace irqchip, PIT 10 kHz, IRQ 0 masked",
        *best(args.repeat, "userspace", "masked"), ref=ref)
    print("ratio: guest instructions per second against the first line; exits: VM exits; "
          "timers: host timers (hrtimers) fired")
    calls, per_call, run_time = horizon_share(args.repeat)
    print(f"\nhorizon check (_until_horizon): {calls} calls in the default run, "
          f"{per_call * 1e6:.2f} us each: {calls * per_call / run_time * 100:.3f}% of its "
          f"{run_time:.3f} s")
    if args.before:
        compare_before(args.before, args.repeat)


if __name__ == "__main__":
    main()
