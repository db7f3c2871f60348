"""Steps backwards: how long one step back takes, and what the history holds.

Runs the page-sweeping guest (benchmarks/guests/pages.asm: ~11 M instructions, a VM exit
to userspace every ~400 instructions, stores spread over 1024 pages of a 4 MiB buffer)
on the simulated backend (16 MiB RAM), and at 1 M and at 10 M guest instructions:
- steps forward --steps single instructions, then steps back instruction by instruction
  (Session.step_back_instruction) and prints the median and worst time of one;
- then steps back --steps VM exits (Session.step_back_vmexit), median and worst;
- as references measured in the same run: one step forward (step_instruction and
  step_vmexit) and one rebuild of the VM from a checkpoint (History._restore);
- beside each, the full collections of Python's cycle collector that ran inside those
  calls (gc) and the longest of them: one that lands in a step back is often its worst case;
- the memory the history holds by its own count (History.memory(): checkpoints' pages
  and state, the per-step record, the disk undo log, COM1's output) and, with
  --tracemalloc, the peak Python allocation of the whole run (slower: it traces every
  allocation).
Goals (issue 12): median under 20 ms, worst under 100 ms, under 200 MB at 10 M.

    python benchmarks/stepback_bench.py [--steps N] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
import tracemalloc
from pathlib import Path

from vmsim.session import Session

GUEST = Path(__file__).parent / "guests" / "pages.asm"


# Full collections of Python's cycle collector (generation 2) and how long each took: one
# that lands inside a step back scans the whole heap and frees the VMs earlier steps back
# replaced, tens of ms, and explains many a worst case.
_FULL: list[float] = []
_began = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if info["generation"] == 2:
        if phase == "start":
            _began[0] = time.perf_counter()
        else:
            _FULL.append(time.perf_counter() - _began[0])


def _times(fn, n: int) -> tuple[list[float], list[float]]:
    """The time of each of n calls, and the full collections that ran inside them."""
    out = []
    _FULL.clear()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out, list(_FULL)


def _row(what: str, timed: tuple[list[float], list[float]]) -> None:
    ts, full = timed
    gcs = f"{len(full):>5}{max(full) * 1e3:>9.1f}" if full else f"{0:>5}{'':>9}"
    print(f"  {what:<44}{statistics.median(ts) * 1e3:>9.1f}{max(ts) * 1e3:>9.1f}{len(ts):>6}"
          f"{gcs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="steps back per measurement")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also trace Python allocations (the peak; the run is slower)")
    args = ap.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    gc.callbacks.append(_on_gc)
    s = Session(str(GUEST), "sim")
    h = s.history
    t0 = time.perf_counter()
    for at in (1_000_000, 10_000_000):
        t = time.perf_counter()
        s.run_for(None, instructions=at - s.instructions)
        fwd = time.perf_counter() - t
        print(f"at {s.instructions:,} guest instructions ({fwd:.1f} s to get there, "
              f"{h.pos:,} scheduler steps, {len(h.checkpoints)} checkpoints, "
              f"{h.thinned} thinned out)")
        print(f"  {'':<44}{'median':>9}{'worst':>9}{'n':>6}{'gc':>5}{'longest':>9}  (ms)")
        _row("step_instruction (reference)", _times(s.step_instruction, args.steps))
        _row("step_back_instruction", _times(s.step_back_instruction, args.steps))
        _row("step_vmexit (reference)", _times(s.step_vmexit, args.steps))
        _row("step_back_vmexit", _times(s.step_back_vmexit, args.steps))
        _row("rebuild from a checkpoint (reference)",
             _times(functools.partial(h._restore, h.checkpoints[-1]), 10))
        h.goto(h.last)
        print(f"  history by its own count: {h.memory() / 2**20:.1f} MiB "
              f"({sum(len(c.new_pages) for c in h.checkpoints):,} page copies)")
        if args.tracemalloc:
            cur, peak = tracemalloc.get_traced_memory()
            print(f"  tracemalloc: {cur / 2**20:.1f} MiB now, {peak / 2**20:.1f} MiB peak")
    print(f"total {time.perf_counter() - t0:.1f} s")
    s.machine.close()


if __name__ == "__main__":
    main()
