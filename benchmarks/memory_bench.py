"""Peak memory of a 10 M-instruction run with VM-level events recorded (issue 15: < 300 MB).

The guest is benchmarks/guests/pages.asm (~11 M instructions, a VM exit to userspace every
~400 instructions, stores spread over 1024 pages of a 4 MiB buffer: the worst case for
step-back's checkpoints), on the simulated backend with 16 MiB of RAM, stopped after
--instructions (10 M). Each case runs in a fresh process; its peak resident set size is
the kernel's count (ru_maxrss from wait4), printed beside the references measured the same
way: the interpreter with vmsim imported and the VM created (the floor), and the same
run headless.
- session+history: a Session as the GUI has it (its history: checkpoints for
  stepping back, listening to every VM-level event), run_for to the limit;
- vmsim run --trace FILE --trace-level vm: the JSON Lines trace written as it goes;
- with --tracemalloc, the session case again under tracemalloc: the Python allocations
  that hold the most at the end, by line (slower: it traces every allocation).

    python benchmarks/memory_bench.py [--instructions N] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reference import print_reference

ROOT = Path(__file__).resolve().parents[1]
GUEST = ROOT / "benchmarks" / "guests" / "pages.asm"

SESSION = r"""
import sys, tracemalloc
from vmsim.session import Session
n, history, mode = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
if mode == "tracemalloc":
    tracemalloc.start(3)
s = Session(sys.argv[4], "sim", serial_out=lambda data: None, history=history)
if mode != "floor":
    s.run_for(None, instructions=n)
h = s.history
print(f"{s.instructions} instructions" + (
    f"; history by its own count {h.memory() / 2**20:.1f} MiB in {len(h.checkpoints)} "
    f"checkpoints ({h.thinned} thinned), {h.pos:,} steps" if h is not None else ""))
if mode == "tracemalloc":
    cur, peak = tracemalloc.get_traced_memory()
    print(f"tracemalloc: {cur / 2**20:.1f} MiB now, {peak / 2**20:.1f} MiB peak; largest by line:")
    for stat in tracemalloc.take_snapshot().statistics("lineno")[:12]:
        print(f"  {stat.size / 2**20:8.2f} MiB {stat.count:>9,} blocks  {stat.traceback[0]}")
"""


def peak(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stdout) of one process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, text.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instructions", type=int, default=10_000_000)
    ap.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args()
    print_reference()
    py, n = sys.executable, str(args.instructions)
    cases = [
        ("floor: vmsim imported, VM created", [py, "-c", SESSION, n, "0", "floor", str(GUEST)]),
        ("headless Session, no history", [py, "-c", SESSION, n, "0", "run", str(GUEST)]),
        ("session+history (the GUI's recording)", [py, "-c", SESSION, n, "1", "run", str(GUEST)]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "vm.jsonl"
        cases.append(("vmsim run --trace F --trace-level vm",
                      [py, "-m", "vmsim", "run", "--trace", str(trace), "--trace-level", "vm",
                       "--max-instructions", n, str(GUEST)]))
        if args.tracemalloc:
            cases.append(("session+history under tracemalloc",
                          [py, "-c", SESSION, n, "1", "tracemalloc", str(GUEST)]))
        print(f"{GUEST.relative_to(ROOT)}, {args.instructions:,} instructions, 16 MiB RAM "
              "(goal: under 300 MB peak with VM-level events recorded)")
        floor = None
        for name, cmd in cases:
            rss, wall, text = peak(cmd)
            floor = rss if floor is None else floor
            size = f"; trace {trace.stat().st_size / 2**20:.1f} MiB" \
                if "--trace" in cmd and trace.exists() else ""
            print(f"  {name:<40}{rss:7.0f} MiB peak RSS ({rss / floor:.1f}x the floor), "
                  f"{wall:.1f} s{size}")
            for line in text.splitlines():
                if line and not line.startswith("vmsim: stopped after"):
                    print(f"      {line}")


if __name__ == "__main__":
    main()
