"""How large `--trace-level insn` traces get, and what writing them costs.

For the CRC-32 benchmark guest (a data-dependent loop, ~3.2 M instructions) and every
sample guest, runs `vmsim run` in this process three ways: headless, `--trace FILE` at
level vm, and at level insn; prints bytes per guest instruction of each trace and the
CPU time of the traced runs as a ratio to the headless one; then the session's own
recording for step-back (a Session with its history, as the GUI runs, against one
without: the same run_for to the guest's end). Each of --repeat rounds (default 5) runs
all five once, in turn, and a ratio is the median of the rounds' ratios (process time,
and alternation, so that other load and a drifting machine matter less).
Issue 15's goals: VM-level events recorded at most 1.05x, every instruction at most
1.20x, at 16 bytes or less per instruction. benchmarks/reference.py's loop is measured
first, as the reference of every figure.

--parts measures the trace writer's own work instead, in CPU time per item, best of
--repeat, each also as "ref-ns" (nanoseconds times the reference loop's M iterations/s: the
figure in reference iterations, comparable across machines):
- encode_run on the CRC-32 guest's instructions in pieces of FLUSH_AT (16 384), as the
  writer drains them, and in pieces of 8 (a guest that exits every few instructions);
  encode_lanes on the same pieces of FLUSH_AT given as InstructionColumn gives them (the
  first EIP and the lanes of the deltas);
- TraceWriter's line for each VM-level event of the exit-heavy benchmark guests
  (benchmarks/guests/out_loop.asm, mmio_loop.asm, sample_guests/hello.asm), written to
  memory.
--profile with --parts runs each of those once under cProfile and prints the top entries.

--callgrind counts instead of timing (deterministic, where timings on a shared machine
drift by tens of percent): `vmsim run` of each guest as a process under valgrind's
callgrind (Debian package valgrind; about two minutes per guest), headless, at level vm
and at level insn, and the same run stopped after one instruction (start-up: import,
assemble, create the VM); prints the machine instructions each took and the ratios to the
headless run, start-up subtracted from both sides; then the step-back figure the same way:
a Session run to the guest's end with its history against one without, a Session stopped
after one instruction subtracted from both. --once-running with --callgrind counts the
CRC-32 guest at level insn once it runs: the guest over 0x5000 bytes less the guest over
0x1000, headless and at level insn (start-up, translating and compiling cancel out).

    python benchmarks/trace_bench.py [--repeat N] [--guest FILE ...]
    python benchmarks/trace_bench.py --parts [--repeat N] [--profile]
    python benchmarks/trace_bench.py --callgrind [--guest FILE ...]
    python benchmarks/trace_bench.py --callgrind --once-running
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import counting
from cpu_bench import crc32_text
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


def run_session(guest: Path, history: bool, limit: int = 20_000_000) -> tuple[float, int]:
    """CPU time of a Session run to the guest's end (at most `limit` instructions), with or
    without the history that steps back, and the instructions it ran."""
    s = Session(str(guest), "sim", serial_out=lambda data: None, history=history,
                max_instructions=limit)
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


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _reference_cpu_rate(repeat: int) -> float:
    """benchmarks/reference.py's loop in CPU time, as the --parts figures are."""
    import reference

    return reference.ITERATIONS / _best(lambda: reference._loop(reference.ITERATIONS),
                                        repeat) / 1e6


def parts(repeat: int, profile: bool) -> None:
    """The trace writer's own work per instruction and per event (see the docstring)."""
    from vmsim.events import CATALOGUE, EventStream
    from vmsim.trace import FLUSH_AT, HIGH_RATE, TraceWriter, encode_lanes, encode_run
    from vmsim.vmm.machine import MachineConfig

    print_reference()
    ref = _reference_cpu_rate(repeat)
    print(f"reference loop in CPU time: {ref:.2f} M iterations/s")
    crc = GUESTS[0]
    s = Session(str(crc), "sim", serial_out=lambda data: None, max_instructions=20_000_000)
    col = array("I")
    s.cpus[0].recorder = col
    s.run()
    events: list = []
    for name in ("benchmarks/guests/out_loop.asm", "benchmarks/guests/mmio_loop.asm",
                 "sample_guests/hello.asm"):
        stream = EventStream()
        stream.subscribe(events.append, [k for k in CATALOGUE if k not in HIGH_RATE])
        Session(str(ROOT / name), "sim", MachineConfig(16, b""), serial_out=lambda b: None,
                events=stream, history=False).run()

    def encode(size: int) -> Callable[[], object]:
        pieces = [col[i:i + size] for i in range(0, len(col), size)]
        return lambda: [encode_run("vcpu0", 1 + i * size, p) for i, p in enumerate(pieces)]

    def encode_from_lanes(size: int) -> Callable[[], object]:
        # What the writer has from InstructionColumn: the first EIP and the lanes.
        bias = (1 << 31) - 1
        runs = [(p[0], array("I", [bias, *(bias + b - a for a, b in pairwise(p))]).tobytes())
                for p in (col[i:i + size] for i in range(0, len(col), size))]
        return lambda: [encode_lanes("vcpu0", 1 + i * size, *r) for i, r in enumerate(runs)]

    def write_events() -> None:
        w = TraceWriter(EventStream(), io.StringIO(), "vm")
        write = w._write
        for ev in events:
            write(ev)

    jobs = [(f"encode_run, CRC-32, pieces of {FLUSH_AT}", "insn", len(col), encode(FLUSH_AT)),
            (f"encode_lanes, CRC-32, pieces of {FLUSH_AT}", "insn", len(col),
             encode_from_lanes(FLUSH_AT)),
            ("encode_run, CRC-32, pieces of 8", "insn", len(col), encode(8)),
            ("event lines (out_loop, mmio_loop, hello)", "event", len(events), write_events)]
    for what, unit, n, fn in jobs:
        if profile:
            prof = cProfile.Profile()
            prof.runcall(fn)
            print(f"== {what}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
            continue
        ns = _best(fn, repeat) / n * 1e9
        print(f"{what:<44}{n:>10,} {unit}s {ns:>9.1f} ns/{unit} {ns * ref:>8.0f} ref-ns")


def callgrind(guests: list[Path]) -> None:
    counting.require_valgrind()
    print(f"{'guest':<20}{'start-up':>14}{'headless':>15}{'vm':>9}{'insn':>9}"
          "   (machine instructions; vm, insn: ratio to headless, start-up subtracted)")
    with tempfile.TemporaryDirectory() as tmp:
        trace = str(Path(tmp) / "t.jsonl")
        for guest in guests:
            g = str(guest)
            # (with a trace at level insn: the modules a trace imports are compiled too)
            counting.write_bytecode(["-m", "vmsim.cli", "run", "--max-instructions", "1",
                                     "--trace", trace, "--trace-level", "insn", g], ROOT)
            # (each counted run its own trace file: they run at the same time)
            start, base, vm, insn = counting.count_all(
                [["-m", "vmsim.cli", "run", *args, g] for args in (
                    ["--max-instructions", "1"], [],
                    ["--trace", f"{trace}.vm", "--trace-level", "vm"],
                    ["--trace", f"{trace}.insn", "--trace-level", "insn"])], ROOT)
            base, vm, insn = base - start, vm - start, insn - start
            print(f"{guest.name:<20}{start:>14,}{base + start:>15,}{vm / base:>8.3f}x"
                  f"{insn / base:>8.3f}x")
    print(f"{'guest':<20}{'start-up':>14}{'no history':>15}{'step-back':>11}"
          "   (Session.run_for; step-back: with its history / without, start-up subtracted)")
    for guest in guests:
        g = str(guest)
        counting.write_bytecode([str(Path(__file__).resolve()), "--one-session", "history",
                                 "--guest", g], ROOT)
        start, plain, hist = counting.count_all(
            [[str(Path(__file__).resolve()), "--one-session", how, "--guest", g]
             for how in ("start", "none", "history")], ROOT)
        plain, hist = plain - start, hist - start
        print(f"{guest.name:<20}{start:>14,}{plain + start:>15,}{hist / plain:>10.3f}x")


def callgrind_once_running() -> None:
    """The CRC-32 guest over 0x1000 and over 0x5000 bytes, headless and at level insn: the
    machine instructions of the 0x4000 bytes more (about 780,000 guest instructions), so
    that start-up, translating and compiling, the same in both runs, cancel out."""
    counting.require_valgrind()
    with tempfile.TemporaryDirectory() as tmp:
        trace = str(Path(tmp) / "t.jsonl")
        sizes = []
        for n in (0x1000, 0x5000):
            g = Path(tmp) / f"crc32_{n:x}.asm"
            g.write_text(crc32_text(n))
            sizes.append(str(g))
        counting.write_bytecode(["-m", "vmsim.cli", "run", "--max-instructions", "1",
                                 "--trace", trace, "--trace-level", "insn", sizes[0]], ROOT)
        levels = ("headless", "insn")
        counts = iter(counting.count_all(
            [["-m", "vmsim.cli", "run",
              *([] if level == "headless" else ["--trace", f"{trace}.{i}", "--trace-level", level]),
              size] for level in levels for i, size in enumerate(sizes)], ROOT))
        more = {}
        for level in levels:
            small, big = next(counts), next(counts)
            more[level] = big - small
            print(f"crc32, 0x4000 bytes more, {level:<9}{more[level]:>16,} machine instructions")
    print(f"insn / headless, once running: {more['insn'] / more['headless']:.3f}x (goal 1.20x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--guest", type=Path, action="append")
    ap.add_argument("--parts", action="store_true", help="the writer's own work (docstring)")
    ap.add_argument("--profile", action="store_true", help="with --parts: cProfile instead")
    ap.add_argument("--callgrind", action="store_true",
                    help="count machine instructions under callgrind (docstring)")
    ap.add_argument("--once-running", action="store_true",
                    help="with --callgrind: crc32's level insn once running (docstring)")
    ap.add_argument("--one-session", choices=("start", "none", "history"),
                    help=argparse.SUPPRESS)  # (--callgrind's counted run)
    args = ap.parse_args()
    if args.one_session:
        run_session(args.guest[0], args.one_session == "history",
                    1 if args.one_session == "start" else 20_000_000)
        return
    if args.callgrind and args.once_running:
        callgrind_once_running()
        return
    if args.callgrind:
        callgrind(args.guest or GUESTS[:1])
        return
    if args.parts:
        parts(args.repeat, args.profile)
        return
    print_reference()
    print(f"{'guest':<20}{'instructions':>13}{'vm B/insn':>11}{'insn B/insn':>13}"
          f"{'vm time':>9}{'insn time':>11}{'step-back':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        vm_trace, insn_trace = Path(tmp) / "vm.jsonl", Path(tmp) / "insn.jsonl"
        for guest in args.guest or GUESTS:
            # Each round runs every configuration once, one after the other, and the
            # figure is the median of the rounds' ratios: a machine whose speed drifts
            # (other load, frequency) moves both sides of a ratio alike.
            rounds = []
            for _ in range(args.repeat):
                base = run(guest, None, "vm")
                t_vm = run(guest, vm_trace, "vm")
                t_insn = run(guest, insn_trace, "insn")
                plain = run_session(guest, False)[0]
                hist = run_session(guest, True)[0]
                rounds.append((t_vm / base, t_insn / base, hist / plain))
            r_vm, r_insn, r_hist = (statistics.median(r) for r in zip(*rounds, strict=True))
            n = instructions(insn_trace)
            print(f"{guest.name:<20}{n:>13,}{os.path.getsize(vm_trace) / n:>11.2f}"
                  f"{os.path.getsize(insn_trace) / n:>13.2f}{r_vm:>8.2f}x"
                  f"{r_insn:>10.2f}x{r_hist:>10.2f}x")
    print("B/insn: trace bytes per guest instruction; time: CPU time traced / headless, "
          "the median of --repeat alternating rounds "
          "(goals: vm 1.05x, insn 1.20x and 16 B/insn); step-back: CPU time of a Session "
          "with its history / without (goal 1.05x)")


if __name__ == "__main__":
    main()
