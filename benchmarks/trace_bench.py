"""How large `--trace-level insn` traces get, and what writing them costs.

For the CRC-32 benchmark guest (a data-dependent loop, ~3.2 M instructions) and every
sample guest, runs `vmsim run` in this process three ways: headless, `--trace FILE` at
level vm, and at level insn; prints bytes per guest instruction of each trace and the
CPU time of the traced runs as a ratio to the headless one (best of --repeat runs;
process time, so other load on the machine matters less).

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

from vmsim.cli import main as vmsim

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
    print(f"{'guest':<20}{'instructions':>13}{'vm B/insn':>11}{'insn B/insn':>13}"
          f"{'vm time':>9}{'insn time':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        vm_trace, insn_trace = Path(tmp) / "vm.jsonl", Path(tmp) / "insn.jsonl"
        for guest in args.guest or GUESTS:
            base = min(run(guest, None, "vm") for _ in range(args.repeat))
            t_vm = min(run(guest, vm_trace, "vm") for _ in range(args.repeat))
            t_insn = min(run(guest, insn_trace, "insn") for _ in range(args.repeat))
            n = instructions(insn_trace)
            print(f"{guest.name:<20}{n:>13,}{os.path.getsize(vm_trace) / n:>11.2f}"
                  f"{os.path.getsize(insn_trace) / n:>13.2f}{t_vm / base:>8.2f}x"
                  f"{t_insn / base:>10.2f}x")
    print("B/insn: trace bytes per guest instruction; time: CPU time traced / headless")


if __name__ == "__main__":
    main()
