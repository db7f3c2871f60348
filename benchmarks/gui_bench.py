"""The GUI's own cost: guest speed while the window runs a guest, beside headless, and
how soon Pause is answered.

Offscreen, in one process, prints:
- the machine, the Python, PySide6 and Qt versions, and the reference pure-Python loop
  (benchmarks/reference.py) measured in the same run;
- for two guests, a compute loop (benchmarks/guests/crc32.asm) and an exits-heavy guest
  that prints on the serial console (sample_guests/hello.asm, its greeting printed
  again and again: an I/O exit to QEMU per byte and per LSR poll, an MMIO exit per VGA
  cell), each sized to run about --seconds headless on this machine, guest instructions
  per second:
  - headless: the same guest through `vmsim.session.Session(path).run()`, no Qt;
  - in the window, as a user runs it (Run, then wait until it stops: ui/bridge.py's
    timer advances the session in time-boxed batches and repaints at a bounded rate),
    with View > Animate event paths off and on;
  each with its share of headless (issue 15's goal: animation off at least 80%) and its
  ratio to the reference loop; best of --repeat runs each, interleaved;
- Pause latency while the window runs each guest at full speed, animation on and off:
  the time from the pause request (a click's event posted to the GUI thread at a random
  moment of the run, from another thread, as the window system posts a click) until the
  bridge stopped the run (`runningChanged(False)`) and until the window shows it paused
  (the Pause action handled: status line and views repainted); median, p90 and worst of
  --pauses requests (issue 15: within 50 ms with animation on);
- with --frames: the GUI thread's work per frame (each panel's refresh at a stop and as
  while running, a Step event, an animation frame);
- with --profile: cProfile of the window running each guest (animation off), the top
  entries by own and by cumulative time.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_bench.py [--repeat N]
        [--pauses N] [--seconds S] [--frames] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_bench import crc32_text  # noqa: E402  (the benchmarks' directory is on the path now)


def hello_rounds(rounds: int) -> str:
    """hello.asm printing its greeting `rounds` times (on COM1 and the VGA screen)."""
    text = (ROOT / "sample_guests" / "hello.asm").read_text()
    looped = text.replace("        mov esi, message\n        mov edi, VGA\n",
                          f"        mov ecx, {rounds}\n.round: mov esi, message\n        mov edi, VGA\n"
                          ).replace(".done:\n", ".done:\n        dec ecx\n        jnz .round\n")
    assert looped.count(".round") == 2, "sample_guests/hello.asm changed: adapt hello_rounds"
    return looped


def _headless_seconds(tmp: str, text: str) -> float:
    path = os.path.join(tmp, "calibrate.asm")
    Path(path).write_text(text)
    return min(headless(path)[2] for _ in range(2))  # CPU time: the load of the moment aside


def guests(tmp: str, seconds: float) -> dict[str, tuple[str, str]]:
    """name -> (the guest measured, a longer one for the pause requests), each sized to
    run about `seconds` headless here (a faster CPU gets a longer guest, so that the
    window's fixed costs, its first and last repaint, weigh alike)."""
    per_kib = _headless_seconds(tmp, crc32_text(0x2000)) / 8
    crc = min(0xF0000, max(0x1000, int(seconds / per_kib) * 1024))
    per_round = _headless_seconds(tmp, hello_rounds(8)) / 8
    rounds = max(4, int(seconds / per_round))
    out = {}
    for name, text, long in ((f"compute loop (crc32.asm, {crc // 1024} KiB)", crc32_text(crc),
                              crc32_text(0xF0000)),
                             (f"exits-heavy, serial console (hello.asm x {rounds})",
                              hello_rounds(rounds), hello_rounds(100_000))):
        paths = []
        for i, t in enumerate((text, long)):
            path = os.path.join(tmp, f"{len(out)}-{i}.asm")
            Path(path).write_text(t)
            paths.append(path)
        out[name] = (paths[0], paths[1])
    return out


def machine() -> str:
    import PySide6
    from PySide6.QtCore import qVersion

    try:
        load = " load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = ""
    return (f"{os.cpu_count()} CPUs,{load}; {platform.platform()}; "
            f"PySide6 {PySide6.__version__}, Qt {qVersion()}, "
            f"QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}")


def ms(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"median {statistics.median(samples) * 1000:.2f} ms, "
            f"p90 {samples[int(0.9 * (len(samples) - 1))] * 1000:.2f} ms")


# Both sides run the machine with every VGA store an exit to QEMU (--no-coalesced-mmio),
# as before session 43 made coalescing the default: the exits-heavy guest stays the figure
# it has been since issue 15 (the default machine queues its VGA stores in kvm.ko).
COALESCED_MMIO = False


def headless(path: str) -> tuple[int, float, float, float]:
    """Session(path).run(), no Qt: (instructions, seconds, CPU seconds, 0)."""
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    s = Session(path, "sim", MachineConfig(coalesced_mmio=COALESCED_MMIO))
    t0, c0 = time.perf_counter(), time.process_time()
    s.run()
    return s.instructions, time.perf_counter() - t0, time.process_time() - c0, 0.0


def window(path: str, animate: bool):

    from ui.mainwindow import MainWindow

    win = MainWindow(path, settings=None, coalesced_mmio=COALESCED_MMIO)
    win.resize(1600, 1000)
    win.a_animate.setChecked(animate)
    win.show()
    settle()
    return win


def settle() -> None:
    """Let the window system finish what is queued (the new window's first layout and
    paint, a closed window's deletion) before anything is timed: a user presses Run in a
    window that is already on screen, not while the last one is still being torn down
    (one processEvents() left ~0.1-0.2 s of it to the first timed run)."""
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QApplication

    for _ in range(4):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QApplication.processEvents()


def close(win) -> None:
    win.close()
    win.deleteLater()
    settle()


def gui_run(path: str, animate: bool, outside: list[float] | None = None
            ) -> tuple[int, float, float, float]:
    """The window runs the guest as a user does: Run (F5), until it stops. Returns
    (instructions, seconds, CPU seconds, repaints per second); appends to `outside` the share of
    the process's CPU time spent outside Session.run_for (the GUI's own work, measured within
    the one run: the load on the machine does not move it)."""
    from PySide6.QtCore import QEventLoop

    win = window(path, animate)
    b = win.bridge
    s = b.session
    inside = [0.0]
    run_for = s.run_for

    def timed(*args, **kwargs):
        t = time.process_time()
        try:
            return run_for(*args, **kwargs)
        finally:
            inside[0] += time.process_time() - t

    s.run_for = timed
    loop = QEventLoop()
    b.runningChanged.connect(lambda running: None if running else loop.quit())
    t0, c0 = time.perf_counter(), time.process_time()
    win.a_run.trigger()
    loop.exec()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    n, frames = b.session.instructions, b.frames
    if not b.finished:
        sys.exit(f"the window stopped before the end: {win.status.text()}")
    if outside is not None:
        outside.append(1 - inside[0] / cpu)
    close(win)
    return n, elapsed, cpu, frames / elapsed


def pause_latency(path: str, animate: bool, pauses: int, seed: int) -> tuple[list[float], list[float]]:
    """Run, then a pause request at a random moment 50-300 ms into the run, `pauses`
    times. Returns the seconds from each request until the run stopped, and until the
    window showed it paused."""
    from PySide6.QtCore import QEventLoop, QObject, Signal

    class Clicker(QObject):  # lives in the GUI thread: a signal from another thread is queued
        click = Signal()

    win = window(path, animate)
    b = win.bridge
    rng = random.Random(seed)
    clicker = Clicker()
    stopped: list[float] = []
    shown: list[float] = []
    at: dict[str, float] = {}
    loop: list[QEventLoop] = []

    def on_click() -> None:
        if b.running:
            at["stop"] = 0.0
            win.a_run.trigger()  # Pause
            t = time.perf_counter()
            stopped.append(at["stop"] - at["request"])
            shown.append(t - at["request"])
        loop[-1].quit()

    def on_running(running: bool) -> None:
        if not running:
            at["stop"] = time.perf_counter()

    clicker.click.connect(on_click)
    b.runningChanged.connect(on_running)

    def request(delay: float) -> None:
        time.sleep(delay)
        at["request"] = time.perf_counter()  # once this thread holds the GIL again
        clicker.click.emit()

    while len(shown) < pauses:
        if b.finished:
            b.reset()
        loop.append(QEventLoop())
        win.a_run.trigger()
        threading.Thread(target=request, args=(rng.uniform(0.05, 0.3),), daemon=True).start()
        loop[-1].exec()
    close(win)
    return stopped, shown


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
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of each speed figure, best kept (default 5)")
    parser.add_argument("--pauses", type=int, default=20,
                        help="pause requests per guest and mode (default 20; 0: none)")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="each guest sized to run about this long headless (default 1.5)")
    parser.add_argument("--frames", action="store_true", help="also the GUI thread's work per frame")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a window run of each guest (animation off)")
    args = parser.parse_args()
    if args.repeat < 1 or args.pauses < 0 or not args.seconds > 0:
        parser.error("--repeat must be at least 1, --pauses at least 0, --seconds above 0")

    from PySide6.QtWidgets import QApplication
    from reference import print_reference

    from ui import bridge

    app = QApplication.instance() or QApplication([])
    ref = print_reference()
    print(machine())
    print("GUI run loop: " + bridge.describe_run_loop())
    with tempfile.TemporaryDirectory() as tmp:
        paths = guests(tmp, args.seconds)
        if args.frames:
            frame_costs(str(ROOT / "sample_guests" / "hello.asm"), "hello.asm after 40 event steps", 0,
                        args.repeat)
            frame_costs(next(iter(paths.values()))[0], "the compute loop, mid-run", 300_000, args.repeat)
        print(f"\nguest instructions per second (best of {args.repeat} by wall time, and by the "
              f"process's CPU time, which another process's load on a shared machine does not "
              f"inflate; ratio to the reference loop in brackets):")
        for name, (path, _long) in paths.items():
            best: dict[str, tuple[float, int, float, float]] = {}
            best_cpu: dict[str, float] = {}
            shares: dict[str, list[float]] = {"GUI, animation off": [], "GUI, animation on": []}
            for _ in range(args.repeat):  # interleaved, so that load on the machine hits each alike
                for label in ("headless Session.run()", "GUI, animation off", "GUI, animation on"):
                    if label in shares:
                        n, secs, cpu, fps = gui_run(path, label.endswith("on"), shares[label])
                    else:
                        n, secs, cpu, fps = headless(path)
                    if label not in best or n / secs > best[label][0]:
                        best[label] = (n / secs, n, secs, fps)
                    best_cpu[label] = max(best_cpu.get(label, 0.0), n / max(cpu, 1e-9))
            head = best["headless Session.run()"][0]
            head_cpu = best_cpu["headless Session.run()"]
            print(f"  {name}:")
            for label, (ips, n, secs, fps) in best.items():
                extra = ""
                if label in shares:
                    extra = (f", {fps:.1f} repaints/s, CPU outside run_for "
                             f"{100 * statistics.median(shares[label]):.1f}%")
                print(f"    {label:24} {ips / 1e6:6.3f} M/s [{ips / 1e6 / ref:.3f}] "
                      f"({n} in {secs:.2f} s{extra})  {100 * ips / head:5.1f}% of headless; "
                      f"by CPU time {best_cpu[label] / 1e6:6.3f} M/s, "
                      f"{100 * best_cpu[label] / head_cpu:5.1f}%")
        if args.pauses:
            print(f"\nPause while running at full speed ({args.pauses} requests each, 50-300 ms "
                  "into a run; from the request until the run stopped / the window showed it "
                  "paused):")
        for name, (_path, long) in paths.items() if args.pauses else ():
            for animate in (True, False):
                stopped, shown = pause_latency(long, animate, args.pauses, seed=15)
                stopped.sort()
                shown.sort()
                print(f"  {name}, animation {'on ' if animate else 'off'}: stopped median "
                      f"{statistics.median(stopped) * 1000:.1f} ms, worst {stopped[-1] * 1000:.1f} ms; "
                      f"shown paused median {statistics.median(shown) * 1000:.1f} ms, "
                      f"p90 {shown[int(0.9 * (len(shown) - 1))] * 1000:.1f} ms, "
                      f"worst {shown[-1] * 1000:.1f} ms")
        if args.profile:
            for name, (path, _long) in paths.items():
                prof = cProfile.Profile()
                prof.enable()
                gui_run(path, False)
                prof.disable()
                st = pstats.Stats(prof, stream=sys.stdout)
                print(f"\nprofile of a window run ({name}, animation off), by own time:")
                st.sort_stats("tottime").print_stats(18)
                print("by cumulative time:")
                st.sort_stats("cumulative").print_stats(30)
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
