"""How large `--trace-level insn` traces get, and what writing them costs.

For the CRC-32 benchmark guest (a data-dependent loop, ~3.2 M instructions) and every
sample guest, runs `vmsim run` in this process three ways: headless, `--trace FILE` at
level vm, and at level insn; prints bytes per guest instruction of each trace and the
CPU time of the traced runs as a ratio to the headless one (best of --repeat runs;
process time, so other load on the machine matters less). Then the session's own
recording for step-back (a Session with its history, as the GUI runs, against one
without: the same run_for to the guest's end).
Issue 15's goals: VM-level events recorded at most 1.05x, every instruction at most
1.20x, at 16 bytes or less per instruction. benchmarks/reference.py's loop is measured
first, as the reference of every figure.

    python benchmarks/trace_bench.py [--repeat N] [--guest FILE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from reference import print_reference

from vmsim.cli import main as vmsim
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[1]
GUESTS = [ROOT / "benchmarks" / "guests" / "crc32.asm", *sorted((ROOT / "sample_guests").glob("*.asm"))]


def run(guest: Path, trace: Path | None, level: str) -> float:
    args = ["run", "--max-instructions", "20000000", str(guest)]
    if trace is not None:
        args += ["--trace", str(trace), "--trace-level", level]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sys.stdout.buffer = io.BytesIO()  # type: ignore[misc]  # the serial output
        t0 = time.process_time()
        vmsim(args)
        return time.process_time() - t0


def run_session(guest: Path, history: bool) -> tuple[float, int]:
    """CPU time of a Session run to the guest's end (at most 20 M instructions), with or
    without the history that steps back, and the instructions it ran."""
    s = Session(str(guest), "sim", serial_out=lambda data: None, history=history,
                max_instructions=20_000_000)
    t0 = time.process_time()
    while not s.run_for(None, instructions=1 << 40).finished:
        pass
    t = time.process_time() - t0
    s.machine.close()
    return t, s.instructions


def instructions(trace: Path) -> int:
    n = 0
    with trace.open() as f:
        for line in f:
            if line.startswith('{"kind":"insn_run"'):
                n += json.loads(line)["count"]
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--guest", type=Path, action="append")
    args = ap.parse_args()
    print_reference()
    print(f"{'guest':<20}{'instructions':>13}{'vm B/insn':>11}{'insn B/insn':>13}"
          f"{'vm time':>9}{'insn time':>11}{'step-back':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        vm_trace, insn_trace = Path(tmp) / "vm.jsonl", Path(tmp) / "insn.jsonl"
        for guest in args.guest or GUESTS:
            base = min(run(guest, None, "vm") for _ in range(args.repeat))
            t_vm = min(run(guest, vm_trace, "vm") for _ in range(args.repeat))
            t_insn = min(run(guest, insn_trace, "insn") for _ in range(args.repeat))
            n = instructions(insn_trace)
            plain = min(run_session(guest, False)[0] for _ in range(args.repeat))
            hist = min(run_session(guest, True)[0] for _ in range(args.repeat))
            print(f"{guest.name:<20}{n:>13,}{os.path.getsize(vm_trace) / n:>11.2f}"
                  f"{os.path.getsize(insn_trace) / n:>13.2f}{t_vm / base:>8.2f}x"
                  f"{t_insn / base:>10.2f}x{hist / plain:>10.2f}x")
    print("B/insn: trace bytes per guest instruction; time: CPU time traced / headless "
          "(goals: vm 1.05x, insn 1.20x and 16 B/insn); step-back: CPU time of a Session "
          "with its history / without (goal 1.05x)")


if __name__ == "__main__":
    main()
