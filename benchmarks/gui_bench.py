"""The GUI's own cost: the GUI thread's work per frame, and guest speed while it runs.

Offscreen, in one process, prints:
- the machine and the Python, PySide6 and Qt versions;
- the GUI thread's work per frame: milliseconds per refresh of every panel and the
  diagram at a typical stop (hello.asm after some event steps, each panel timed apart
  too), per repaint while running (the refresh the Run loop makes every FRAME_MS), and
  per animation frame (the diagram's token moved and the view repainted);
- guest instructions per second while the window runs a guest to its end as a user
  does (Run, then wait until it stops: ui/bridge.py's timer calls Session.run_for in
  BATCH_S batches and repaints every FRAME_MS at most, within its PAINT_SHARE of the
  GUI thread's time), with View > Animate event paths off and
  on at full speed, and at the fastest animated speed (slow motion: one event per timer
  tick, each drawn; measured for a few seconds), each beside the headless figure
  (Session.run_for in the same batches, no Qt) measured in the same run, and the ratio
  (issue 13's goal: animation off at least 80% of headless). Two guests: a loop with
  VM exits (benchmarks/guests/pages.asm, fewer rounds) and a pure-compute loop
  (benchmarks/guests/crc32.asm, a shorter buffer). Best of --repeat runs each.

    .venv/bin/python benchmarks/gui_bench.py [--repeat N] [--profile]

--profile runs the exits guest once more in the window under cProfile and prints the
top entries by cumulative and by own time (where the GUI's share goes).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GUESTS = ROOT / "benchmarks" / "guests"


def guests(tmp: str) -> dict[str, str]:
    """The two benchmark guests, shortened to a few seconds each."""
    exits = (GUESTS / "pages.asm").read_text().replace("ROUNDS      equ 18", "ROUNDS      equ 2")
    compute = (GUESTS / "crc32.asm").read_text().replace("LEN     equ 0x10000", "LEN     equ 0x6000")
    out = {}
    for name, text in (("loop with exits (pages.asm, 2 rounds)", exits),
                       ("pure compute (crc32.asm, 24 KiB)", compute)):
        path = os.path.join(tmp, f"{len(out)}.asm")
        Path(path).write_text(text)
        out[name] = path
    return out


def machine() -> str:
    import PySide6
    from PySide6.QtCore import qVersion

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = " load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = ""
    return (f"machine: {cpu}, {os.cpu_count()} CPUs,{load}; {platform.platform()}\n"
            f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"PySide6 {PySide6.__version__}, Qt {qVersion()}, "
            f"QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}")


def ms(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"median {statistics.median(samples) * 1000:.2f} ms, "
            f"p90 {samples[int(0.9 * (len(samples) - 1))] * 1000:.2f} ms")


def headless(path: str) -> tuple[int, float]:
    """Session.run_for in the GUI's batches, no Qt: (instructions, seconds)."""
    from ui.bridge import BATCH_S
    from vmsim.session import Session

    s = Session(path)
    t0 = time.perf_counter()
    while not s.run_for(BATCH_S).finished:
        pass
    return s.instructions, time.perf_counter() - t0


def window(path: str, animate: bool):
    from ui.mainwindow import MainWindow

    win = MainWindow(path, settings=None)
    win.resize(1600, 1000)
    win.a_animate.setChecked(animate)
    win.show()
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    return win


def gui_run(path: str, animate: bool, speed: int | None = None, seconds: float | None = None
            ) -> tuple[int, float, int]:
    """The window runs the guest as a user does: Run (F5), until it stops (or for
    `seconds`, then Pause). Returns (instructions, seconds, repaints)."""
    from PySide6.QtCore import QEventLoop, QTimer

    win = window(path, animate)
    b = win.bridge
    if speed is not None:
        win.speed.setValue(speed)
    loop = QEventLoop()
    b.runningChanged.connect(lambda running: None if running else loop.quit())
    t0 = time.perf_counter()
    win.a_run.trigger()
    if seconds is not None:
        QTimer.singleShot(int(seconds * 1000), win.a_run.trigger)  # Pause
    loop.exec()
    elapsed = time.perf_counter() - t0
    n, frames = b.session.instructions, b.frames
    if seconds is None and not b.finished:
        sys.exit(f"the window stopped before the end: {win.status.text()}")
    win.close()
    win.deleteLater()
    return n, elapsed, frames


def frame_costs(path: str, what: str, instructions: int, repeat: int) -> None:
    """The GUI thread's work per frame at a stop `instructions` into the guest (after
    40 event steps if 0)."""
    from PySide6.QtWidgets import QApplication

    from ui.bridge import FRAME_MS

    win = window(path, True)
    b = win.bridge
    if instructions:
        b.session.run_for(None, instructions=instructions)  # to the stop (not what is timed)
        b._deliver(force=True)
    else:
        for _ in range(40):
            win.a_step_event.trigger()
    QApplication.processEvents()
    n = max(10, 5 * repeat)

    def timed(fn, times: int = n) -> list[float]:
        out = []
        for _ in range(times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    s = b.session
    print(f"GUI thread at a stop: {what} ({s.instructions} instructions, TLB {len(s.tlb())} "
          f"entries, EPT {len(s.ept_entries())} leaves; median of {n}):")
    print(f"  refresh, stopped (the shown panels + diagram): {ms(timed(win.refresh))}")
    b.running = True  # the repaint the Run loop makes (every panel: see the report)
    try:
        run_refresh = timed(win.refresh)
    finally:
        b.running = False
    print(f"  refresh as while running: {ms(run_refresh)} "
          f"= {100 * statistics.median(run_refresh) / (FRAME_MS / 1000):.0f}% of a {FRAME_MS} ms frame")
    panels = {"registers": win.registers, "disasm": win.disasm, "vmcs": win.vmcs,
              "pagetables": win.pagetables, "interrupts": win.interrupts, "vcpus": win.vcpus,
              "virtio": win.queues, "devices": win.devices, "stats": win.stats}
    parts = [(name, statistics.median(timed(lambda p=p: p.refresh(b)))) for name, p in panels.items()]
    parts.append(("diagram details", statistics.median(timed(win._diagram_details))))
    parts.append(("timeline", statistics.median(timed(win._update_timeline))))
    parts.sort(key=lambda kv: -kv[1])
    print("  by part: " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in parts) + " ms")
    if not instructions:
        step = []
        for _ in range(n):
            t0 = time.perf_counter()
            win.a_step_event.trigger()
            QApplication.processEvents()
            step.append(time.perf_counter() - t0)
        print(f"  Step event (F10): the session's step, its events, the repaint: {ms(step)}")
        # An animation frame: the token moves along the path, the view repaints.
        d = win.diagram
        d.show_event("kvm_exit", "vcpu0", {"exit_reason": "IO_INSTRUCTION", "exit_reason_number": 30})
        d.anim.stop()
        frames = []
        for i in range(n):
            t0 = time.perf_counter()
            d._move_token((i % 20) / 20)
            d.viewport().repaint()
            frames.append(time.perf_counter() - t0)
        print(f"  animation frame (the token moved, the diagram repainted): {ms(frames)}")
    win.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each figure, best kept (default 2)")
    parser.add_argument("--profile", action="store_true",
                        help="profile a window run of the exits guest (animation off)")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    from ui.bridge import BATCH_S, FRAME_GAP_MAX, FRAME_MS, PAINT_SHARE, SPEED_MAX

    app = QApplication.instance() or QApplication([])
    print(machine())
    print(f"GUI run loop: Session.run_for({BATCH_S}) per timer tick; a repaint every {FRAME_MS} ms at "
          f"most, once the time outside the simulation since the last is at most {PAINT_SHARE:.0%} "
          f"(at least every {FRAME_GAP_MAX} s)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = guests(tmp)
        frame_costs(str(ROOT / "sample_guests" / "hello.asm"), "hello.asm after 40 event steps", 0,
                    args.repeat)
        frame_costs(next(iter(paths.values())), "the loop with exits, mid-run", 300_000, args.repeat)
        print(f"\nguest instructions per second (best of {args.repeat}):")
        for name, path in paths.items():
            best: dict[str, tuple[float, int, float, int]] = {}
            for _ in range(args.repeat):  # interleaved, so that load on the machine hits each alike
                for label, fn in (("headless Session.run_for", lambda p=path: (*headless(p), 0)),
                                  ("GUI, animation off", lambda p=path: gui_run(p, False)),
                                  ("GUI, animation on", lambda p=path: gui_run(p, True))):
                    n, secs, frames = fn()
                    if label not in best or n / secs > best[label][0]:
                        best[label] = (n / secs, n, secs, frames)
            n, secs, frames = gui_run(path, True, SPEED_MAX - 1, seconds=3.0)
            best["GUI, slow motion at its fastest (animated)"] = (n / secs, n, secs, frames)
            ref = best["headless Session.run_for"][0]
            print(f"  {name}:")
            for label, (ips, n, secs, frames) in best.items():
                extra = f", {frames / secs:.1f} repaints/s" if frames else ""
                print(f"    {label:44} {ips / 1e6:6.3f} M/s ({n} in {secs:.2f} s{extra})  "
                      f"{100 * ips / ref:5.1f}% of headless")
        if args.profile:
            path = next(iter(paths.values()))
            prof = cProfile.Profile()
            prof.enable()
            gui_run(path, False)
            prof.disable()
            st = pstats.Stats(prof, stream=sys.stdout)
            print("\nprofile of a window run (loop with exits, animation off), by cumulative time:")
            st.sort_stats("cumulative").print_stats(25)
            print("by own time:")
            st.sort_stats("tottime").print_stats(15)
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
