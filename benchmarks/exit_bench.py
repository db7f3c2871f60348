"""One exit to userspace and back: host microseconds per round trip (issue 15).

Runs guests that live on the exit path through the whole stack and prints, best of
--repeat rounds (each runs the reference loop and every configuration once, so that a busy
spell on the machine hits them alike), the host CPU time (time.process_time: a machine
shared with other work disturbs it less than wall time) divided by the number of exits to
userspace (KVM_RUN returning to the VMM: `kvm_userspace_exit` events, counted in a
separate run):
- out_loop (benchmarks/guests/out_loop.asm): `out dx, al` to the 16550's scratch register,
  KVM_EXIT_IO handled by QEMU's serial model;
- mmio_loop (benchmarks/guests/mmio_loop.asm): word stores to the VGA buffer at 0xB8000,
  EPT misconfiguration -> kvm.ko's instruction emulator -> KVM_EXIT_MMIO;
- hello (sample_guests/hello.asm): the serial console's polled LSR reads and THR writes.
Each in these configurations:
- stack: vmsim.vmm VirtualMachine + SimKvm, as cpu_bench's run_stack, no listener;
- stack+vm: the same with VM-level events recorded (a TraceWriter at level "vm" into
  memory);
- run --trace: vmsim.session.Session as `vmsim run --trace F` builds it (no history, a
  TraceWriter at level "vm" into memory);
- session: Session with its history for steps back, run() to the end, no trace;
- gui: the same driven as the GUI drives it, by Session.run_for slices (the GUI's end
  after 15 ms of wall time; here after RUN_BATCH instructions, so that a count is exact);
- window: that, with what the window listens to while it runs a guest at full speed (the
  bridge's list of its coarse events, the exit statistics' list; ui/bridge.py) and its
  cycle collector's setting then, without Qt: the events the window's views get, built.
The issue's goal: under 50 us per round trip with VM-level events recorded. Every figure
is printed beside benchmarks/reference.py's loop, measured in the same run (in wall time by
print_reference, and in CPU time as the figures here), and as "ref-us": microseconds
times the reference loop's CPU-time rate (M iterations/s), i.e. how many reference
iterations one round trip costs, a figure that compares across machines.

    python benchmarks/exit_bench.py [--repeat N] [--count N] [--only NAME] [--profile CONFIG]

--profile CONFIG (stack, stack+vm, run --trace, session, gui) runs each selected guest once
under cProfile in that configuration and prints the top entries by internal time.

--callgrind counts instead of timing (deterministic, where CPU times on a shared machine
drift by tens of percent): each selected guest and configuration runs as a process under
valgrind's callgrind (Debian package valgrind) at two loop counts, and the machine
instructions of the longer run less those of the shorter, divided by the exits between
them, are one exit's; beside them, the reference loop's iterations that many machine
instructions make (its own count under callgrind), a figure for any machine.

    python benchmarks/exit_bench.py --callgrind [--only NAME] [--config CONFIG] [--loops SHORT LONG]
        [--pieces]

--coalesced-mmio runs the machine with its VGA window coalesced (vmsim run --coalesced-mmio):
mmio_loop's stores then end in kvm.ko (queued in the coalesced-MMIO ring) but for one in
170, and the figures are per VM exit, not per exit to userspace.

--pieces adds, after each guest's stack+vm, that configuration with a layer of the events
cut out, to show what each costs (docs/performance.md): the tracepoints fired and their
values handed to line functions of the trace writer that do nothing (what is left: the
producers working out the values, and the numbering), and every event built as an Event
and delivered to a writer that does nothing (the path a listener other than the trace
takes). These runs write no trace: they exist only in this benchmark's counted runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import counting
import reference

from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.kvm.kvm_main import SimKvm
from vmsim.session import Session
from vmsim.trace import TraceWriter
from vmsim.vmm.machine import Machine, MachineConfig
from vmsim.vmm.vm import VirtualMachine

ROOT = Path(__file__).resolve().parents[1]
GUESTS = {
    "out_loop": ROOT / "benchmarks" / "guests" / "out_loop.asm",
    "mmio_loop": ROOT / "benchmarks" / "guests" / "mmio_loop.asm",
    "hello": ROOT / "sample_guests" / "hello.asm",
}
CONFIGS = ("stack", "stack+vm", "run --trace", "session", "gui", "window")


def load(name: str, count: int):
    path = GUESTS[name]
    text = path.read_text()
    text = re.sub(r"^(COUNT\s+equ\s+)\d+", lambda m: f"{m.group(1)}{count}", text, flags=re.M)
    return assemble(text, str(path))


# --coalesced-mmio: the machine's VGA window coalesced (MachineConfig.coalesced_mmio), and
# the figures per VM exit (each store, most of them completed in kvm.ko) in place of per
# exit to userspace.
COALESCED = False


def _unit() -> str:
    return ("VM exit (the VGA window coalesced: most stores complete in kvm.ko)" if COALESCED
            else "exit to userspace and back")


def _config() -> MachineConfig:
    return MachineConfig(16, b"", coalesced_mmio=COALESCED)


def _stack(image, trace: bool, count_exits: bool = False) -> tuple[float, int]:
    events = EventStream()
    exits = [0]
    if count_exits:
        def seen(ev) -> None:
            exits[0] += 1
        events.subscribe(seen, ["kvm_exit" if COALESCED else "kvm_userspace_exit"])
    writer = TraceWriter(events, io.StringIO(), "vm") if trace else None
    machine = Machine(_config(), events=events, serial_out=lambda b: None)
    machine.load_image(image)
    vm = VirtualMachine(machine, SimKvm(events, "ept"))
    t0 = time.process_time()
    result = vm.run()
    elapsed = time.process_time() - t0
    if writer is not None:
        writer.close()
    if result.exit_status != 1:
        sys.exit(f"benchmark guest went wrong: {result}")
    return elapsed, exits[0]


def window_listeners(events: EventStream, kept: list, built: bool) -> None:
    """What the window subscribes to `events` before its session is built (the exit
    statistics' list) and once it is (`built`: its list of coarse events, running at full
    speed), as SessionBridge._build and _configure_run do; here both append to `kept`."""
    if not built:
        from vmsim.stats import ExitStats

        events.subscribe(kept.append, list(ExitStats.KINDS))
    else:
        from ui.bridge import COARSE_KINDS

        events.subscribe(kept.append, COARSE_KINDS)


def _session(image, trace: bool, history: bool, slices: bool = False,
             window: bool = False) -> tuple[float, int]:
    events = EventStream()
    writer = TraceWriter(events, io.StringIO(), "vm") if trace else None
    kept: list = []
    if window:
        window_listeners(events, kept, built=False)
    s = Session(image, "sim", _config(), serial_out=lambda b: None,
                events=events, history=history)
    if window:
        from ui.bridge import RUN_GC_YOUNG

        window_listeners(events, kept, built=True)
        gc.freeze()
        young = gc.get_threshold()
        gc.set_threshold(RUN_GC_YOUNG, *young[1:])
    t0 = time.process_time()
    if slices:
        while not (outcome := s.run_for(None, instructions=Session.RUN_BATCH)).finished:
            if len(kept) > 20_000:  # (the window keeps the last few thousand)
                del kept[:10_000]
    else:
        outcome = s.run()
    elapsed = time.process_time() - t0
    if window:
        gc.set_threshold(*young)
        gc.unfreeze()
    if writer is not None:
        writer.close()
    if outcome.exit_status != 1:
        sys.exit(f"benchmark guest went wrong: {outcome}")
    return elapsed, 0


RUNNERS: dict[str, Callable] = {
    "stack": lambda image: _stack(image, False),
    "stack+vm": lambda image: _stack(image, True),
    "run --trace": lambda image: _session(image, True, False),
    "session": lambda image: _session(image, False, True),
    "gui": lambda image: _session(image, False, True, slices=True),
    "window": lambda image: _session(image, False, True, slices=True, window=True),
}


def _reference_cpu_rate(repeat: int) -> float:
    """benchmarks/reference.py's loop timed as the figures here are (CPU time)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        reference._loop(reference.ITERATIONS)
        best = min(best, time.process_time() - t0)
    return reference.ITERATIONS / best / 1e6


def exits_of(image) -> int:
    return _stack(image, False, count_exits=True)[1]


# --pieces: stack+vm with a layer of the events cut out (never vmsim's behaviour)
PIECES = {"fields": "tracepoints fired, their line functions only numbering: the values",
          "emit": "every event built as an Event and delivered, no line written"}


def _numbering(self: TraceWriter, stream, kind: str, layer: str, names: tuple,
               counted: bool):
    """A trace writer's line function that only numbers its events (the "fields" piece)."""
    def fire(source: str, *values: object) -> None:
        stream.seq += 1
    return fire


def _cut(piece: str) -> None:
    """Patch this counted process for a --pieces variant (see PIECES)."""
    TraceWriter._write = lambda self, ev: None  # type: ignore[method-assign]
    # (emit: the writer takes Events only, so the tracepoints build them, as for any listener)
    TraceWriter._line_fn = _numbering if piece == "fields" else (  # type: ignore[method-assign]
        lambda self, stream, kind, layer, names, counted: None)


def callgrind(names: list[str], configs: list[str], short: int, long: int,
              pieces: bool = False) -> None:
    counting.require_valgrind()
    counting.write_bytecode([__file__, "--one", "reference", "0"], ROOT)
    per_iteration = counting.reference_cost(__file__, ROOT)
    print(f"reference loop: {per_iteration:.0f} machine instructions per iteration")
    print(f"{'guest':<11}{'configuration':<13}{'exits':>7}{'instructions/exit':>19}"
          f"{'ref-iterations':>16}")
    rows = [(c, ()) for c in configs]
    if pieces and "stack+vm" in configs:
        at = configs.index("stack+vm")
        rows[at:at] = [("stack+vm", (p,)) for p in PIECES]
    counts = iter(counting.count_all(
        [[__file__, "--one", c, name, str(n), *(["coalesced"] if COALESCED else []), *cut]
         for name in names for c, cut in rows for n in (long, short)], ROOT, from_here=True))
    for name in names:
        exits = exits_of(load(name, long)) - exits_of(load(name, short))
        for c, cut in rows:
            per_exit = (next(counts) - next(counts)) / exits
            label = f"  piece: {PIECES[cut[0]]}" if cut else ""
            print(f"{name:<11}{c:<13}{exits:>7}{per_exit:>19,.0f}"
                  f"{per_exit / per_iteration:>16,.0f}{label}")
    print(f"instructions/exit: machine instructions per {_unit()}; "
          "ref-iterations: as many as that many reference-loop iterations take")


def _one(args: list[str]) -> None:
    """What --callgrind counts: one run, nothing printed."""
    if args[0] == "reference":
        counting.from_here()
        reference._loop(int(args[1]))
        return
    config, name, count, *cut = args
    if cut and cut[0] == "coalesced":
        global COALESCED
        COALESCED, cut = True, cut[1:]
    if cut:
        _cut(cut[0])
    image = load(name, int(count))
    counting.from_here()
    RUNNERS[config](image)


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        _one(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000, help="loop iterations of the loop guests")
    ap.add_argument("--only", action="append", choices=list(GUESTS), help="guest(s) to run")
    ap.add_argument("--profile", choices=CONFIGS, help="cProfile one run per guest instead")
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative", "ncalls"),
                    help="with --profile: the order of the table")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--callgrind", action="store_true",
                    help="count machine instructions per exit under callgrind (docstring)")
    ap.add_argument("--loops", type=int, nargs=2, default=(100, 300), metavar=("SHORT", "LONG"),
                    help="with --callgrind: the two loop counts (default 100 300: most values "
                    "new; 500 1500: values seen before, as in a long run)")
    ap.add_argument("--config", action="append", choices=CONFIGS,
                    help="with --callgrind: configuration(s) to count (default: all)")
    ap.add_argument("--coalesced-mmio", action="store_true",
                    help="the machine's VGA window coalesced (vmsim run --coalesced-mmio); "
                    "figures per VM exit, not per exit to userspace")
    ap.add_argument("--pieces", action="store_true",
                    help="with --callgrind: also stack+vm with the writer, then emit, cut out "
                    "(docstring)")
    args = ap.parse_args()
    global COALESCED
    COALESCED = args.coalesced_mmio
    if args.pieces and not args.callgrind:
        ap.error("--pieces counts: use it with --callgrind")
    names = args.only or list(GUESTS)
    if args.callgrind:
        if "hello" in names:
            print("hello: not counted (its exits do not grow with a loop count)")
        short, long = args.loops
        if not 0 < short < long:
            ap.error("--loops: SHORT and LONG with 0 < SHORT < LONG")
        callgrind([n for n in names if n != "hello"], args.config or list(CONFIGS), short, long,
                  args.pieces)
        return
    images = {n: load(n, args.count) for n in names}
    if args.profile:
        for n in names:
            prof = cProfile.Profile()
            prof.enable()
            RUNNERS[args.profile](images[n])
            prof.disable()
            print(f"== {n}, {args.profile}: {exits_of(images[n])} exits to userspace")
            pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        return
    reference.print_reference()
    exits = {n: exits_of(images[n]) for n in names}
    # Round by round, the reference and every configuration once each: a busy spell on a
    # shared machine slows one round of all of them, not every run of one (best of each).
    ref = 0.0
    best = dict.fromkeys([(n, c) for n in names for c in CONFIGS], float("inf"))
    for _ in range(args.repeat):
        ref = max(ref, _reference_cpu_rate(1))
        for n, c in best:
            best[n, c] = min(best[n, c], RUNNERS[c](images[n])[0])
    print(f"reference loop in CPU time (process_time, as the figures below): {ref:.2f} M "
          "iterations/s")
    print(f"{'guest':<11}{'configuration':<13}{'exits':>7}{'seconds':>9}{'us/exit':>9}"
          f"{'ref-us':>8}")
    for (n, c), seconds in best.items():
        us = seconds / exits[n] * 1e6
        print(f"{n:<11}{c:<13}{exits[n]:>7}{seconds:>9.3f}{us:>9.1f}{us * ref:>8.0f}")
    print(f"us/exit: host microseconds per {_unit()} (goal, per exit to userspace and back: "
          "< 50 with VM events recorded); ref-us: that times the reference rate "
          "(M iterations/s)")


if __name__ == "__main__":
    main()
