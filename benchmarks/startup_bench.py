"""Start-up and whole-process time of `vmsim run`, each in a fresh process.

Prints, best of --repeat runs, beside benchmarks/reference.py's loop and the bare
interpreter's own start (`python -c pass`, the floor no change to vmsim can go under):
- (a) import cost: `python -X importtime -m vmsim run hello.asm`, the modules it imports
  with the largest self and cumulative times (best per module over the runs) and their
  total;
- (b) start-up: a fresh process that imports what `vmsim run` imports, builds its argument
  parser, assembles sample_guests/hello.asm and creates the VM (Session, as `vmsim run`
  does), then exits: its wall time, and the phases as measured inside it
  (issue 15's goal: under 0.2 s);
- (c) whole process: `python -m vmsim run` of hello.asm and of benchmarks/guests/crc32.asm
  (~3.2 M instructions; goal: under 0.6 s), wall time of the process.
Processes run with this interpreter (the venv's) and bytecode caching on (a warm-up run
writes the .pyc files first, as `pip install` does): PYTHONDONTWRITEBYTECODE is removed
from their environment.

    python benchmarks/startup_bench.py [--repeat N] [--top N]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from reference import print_reference

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "sample_guests" / "hello.asm"
CRC32 = ROOT / "benchmarks" / "guests" / "crc32.asm"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

# (b): what `vmsim run GUEST` does before the guest's first instruction (vmsim/cli.py's
# _cmd_run), timed in phases from inside the process.
STARTUP = r"""
import sys, time
t0 = time.perf_counter()
from vmsim.cli import _pause_gc_for_startup, build_parser
_pause_gc_for_startup()  # as vmsim.cli.main does for `vmsim run`
args = build_parser("run").parse_args(["run", sys.argv[1]])
t1 = time.perf_counter()
from vmsim.events import EventStream
from vmsim.session import Session
from vmsim.vmm.machine import LOAD_ADDRESS, MachineConfig, load_guest_file
t2 = time.perf_counter()
image = load_guest_file(args.guest, (16 << 20) - LOAD_ADDRESS)
t3 = time.perf_counter()
session = Session(image, "sim", MachineConfig(16, b""), serial_out=lambda data: None,
                  events=EventStream(), paging="ept", history=False)
t4 = time.perf_counter()
print(repr((t1 - t0, t2 - t1, t3 - t2, t4 - t3)))
"""


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one process: CPU (user + system, from the kernel's count
    for the child) depends less on what else runs on the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _timed.last = subprocess.run(cmd, env=ENV, capture_output=True, text=True,  # type: ignore[attr-defined]
                                 cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def best(cmd: list[str], repeat: int) -> tuple[float, float]:
    """Best wall and best CPU time of `repeat` runs of `cmd`."""
    runs = [_timed(cmd) for _ in range(repeat)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def import_times(repeat: int) -> dict[str, tuple[int, int, int]]:
    """Module -> (best self us, best cumulative us, nesting depth) under -X importtime."""
    best: dict[str, tuple[int, int, int]] = {}
    for _ in range(repeat):
        _timed([sys.executable, "-X", "importtime", "-m", "vmsim", "run", str(HELLO)])
        p = _timed.last
        for line in p.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m:
                s, c, name = int(m[1]), int(m[2]), m[4]
                old = best.get(name, (s, c, 0))
                best[name] = (min(old[0], s), min(old[1], c), len(m[3]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    ref = print_reference()
    py = sys.executable
    _timed([py, "-m", "vmsim", "run", str(HELLO)])  # warm-up: writes the bytecode caches
    floor, floor_cpu = best([py, "-c", "pass"], args.repeat)
    print(f"python -c pass (the interpreter's own start): {floor * 1e3:.0f} ms "
          f"({floor_cpu * 1e3:.0f} ms CPU)")

    print(f"\n(a) python -X importtime -m vmsim run {HELLO.relative_to(ROOT)} "
          f"(best of {args.repeat}, per module)")
    it = import_times(args.repeat)
    total = sum(s for s, _, _ in it.values())
    vm = sum(s for name, (s, _, _) in it.items() if name.split(".")[0] == "vmsim")
    print(f"  {len(it)} modules, {total / 1e3:.1f} ms self in all ({vm / 1e3:.1f} ms in "
          "vmsim's own modules; -X importtime itself adds some)")
    print(f"  {'largest self':<40}{'self ms':>8}   {'largest cumulative':<40}{'cum ms':>8}")
    by_self = sorted(it.items(), key=lambda kv: -kv[1][0])[:args.top]
    by_cum = sorted(((n, v) for n, v in it.items() if n != "site"),
                    key=lambda kv: -kv[1][1])[:args.top]
    for (n1, v1), (n2, v2) in zip(by_self, by_cum, strict=True):
        print(f"  {n1:<40}{v1[0] / 1e3:>8.2f}   {n2:<40}{v2[1] / 1e3:>8.2f}")

    print(f"\n(b) start-up: import, parse arguments, assemble {HELLO.name}, create the VM "
          f"(fresh process, best of {args.repeat})")
    runs = []
    for _ in range(args.repeat):
        wall, cpu = _timed([py, "-c", STARTUP, str(HELLO)])
        p = _timed.last
        if p.returncode:
            sys.exit(p.stderr)
        runs.append((wall, cpu, eval(p.stdout)))  # a tuple of floats this script printed
    wall, _, phases = min(runs)
    cpu = min(c for _, c, _ in runs)
    names = ("import vmsim.cli + parser", "import the run's modules", "assemble",
             "create the VM")
    print(f"  whole process: {wall * 1e3:.0f} ms, {cpu * 1e3:.0f} ms CPU (goal 200 ms; "
          f"{wall / floor:.1f}x python -c pass; x reference rate: {wall * ref:.3f})")
    print("  phases, best process: " + ", ".join(
        f"{n} {t * 1e3:.0f} ms" for n, t in zip(names, phases, strict=True)))

    print(f"\n(c) whole process: python -m vmsim run GUEST (best of {args.repeat})")
    for guest, goal in ((HELLO, None), (CRC32, 0.6)):
        wall, cpu = best([py, "-m", "vmsim", "run", str(guest)], args.repeat)
        note = f" (goal {goal * 1e3:.0f} ms)" if goal else ""
        print(f"  {guest.name:<12} {wall * 1e3:6.0f} ms, {cpu * 1e3:4.0f} ms CPU{note}; status "
              f"{_timed.last.returncode}; {wall / floor:.1f}x python -c pass; "
              f"x reference rate: {wall * ref:.3f}")
    print("\nx reference rate: seconds x the reference loop's M iterations/s, a figure that "
          "compares across machines (lower is better)")


if __name__ == "__main__":
    main()
