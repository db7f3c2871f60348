"""What the GUI's steps back and timeline cost (issue 12), offscreen.

Runs a guest to its end in the window at full speed and times the first step back (to the
last exit to userspace) clicked at once, and in another window clicked once the window,
left alone, prepared it (SessionBridge._prepare). Then times each back
button (the whole window: the session's step back plus every view following it) beside the
session's own step back from the same kind of point, a seek on the timeline, and the
timeline's share of a repaint while running (Session.timeline() plus the ticks) and of a
repaint of the widget. The default guest makes an exit to userspace per loop (--loops of
them), so the timeline has that many ticks in each row. Figures, not tests.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_stepback_bench.py [--loops N] [--guest FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOP_GUEST = """bits 32
org 0x100000
        mov ecx, {loops}
.l:     mov dx, 0x80
        out dx, al          ; an exit to userspace per loop (nobody claims port 0x80)
        dec ecx
        jnz .l
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
"""


def _ms(xs: list[float]) -> str:
    return f"median {1000 * statistics.median(xs):.1f} ms, worst {1000 * max(xs):.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=5000, help="exits of the default guest (5000)")
    parser.add_argument("--guest", help="another guest instead (.asm)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks of each back button (10)")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from ui import bridge
    from ui.mainwindow import MainWindow

    with tempfile.TemporaryDirectory() as tmp:
        guest = args.guest
        if guest is None:
            guest = os.path.join(tmp, "loop.asm")
            Path(guest).write_text(LOOP_GUEST.format(loops=args.loops))
        def window() -> MainWindow:
            w = MainWindow(guest, settings=None)
            w.resize(1600, 1000)
            w.diagram.animate = False
            w.show()
            return w

        # The first step back after the run, clicked at once and once the window, left alone,
        # prepared it (SessionBridge._prepare: Session.prepare_step_back).
        first = window()
        first.bridge.run()
        while not first.bridge.finished:
            app.processEvents()
        t = time.perf_counter()
        first.a_back_user.trigger()
        at_once = time.perf_counter() - t
        first.close()
        win = window()
        b = win.bridge
        prepared: list[float] = []
        prepare = b._prepare

        def timed_prepare() -> None:
            t = time.perf_counter()
            prepare()
            if b.finished:  # (not one while the window opened)
                prepared.append(time.perf_counter() - t)

        b._prepare_timer.timeout.disconnect()
        b._prepare_timer.timeout.connect(timed_prepare)
        per_frame: list[float] = []
        update = win._update_timeline

        def timed_update() -> None:
            t = time.perf_counter()
            update()
            per_frame.append(time.perf_counter() - t)

        win._update_timeline = timed_update
        start = time.perf_counter()
        b.run()
        while not b.finished:
            app.processEvents()
        wall = time.perf_counter() - start
        while not prepared:
            app.processEvents()
        t = time.perf_counter()
        win.a_back_user.trigger()
        after = time.perf_counter() - t
        s = b.session
        d = s.timeline()
        print(f"{Path(guest).name}: {s.instructions} instructions, {len(d['exits'])} VM exits, "
              f"{len(d['userspace_exits'])} exits to userspace; run {wall:.1f} s, {b.frames} frames")
        print(f"  timeline per frame while running (Session.timeline + ticks): {_ms(per_frame)}")
        print(f"  first back to the last exit to userspace after the run: at once {1000 * at_once:.1f} ms; "
              f"once the window prepared it {1000 * after:.1f} ms (the preparation, "
              f"{bridge.PREPARE_MS} ms after the run ended: {1000 * prepared[0]:.1f} ms)")
        tl = win.timeline
        paints = []
        for k in range(10):  # a new span each time: the columns are found again
            tl.set_timeline({**d, "end": d["end"] + k + 1})
            t = time.perf_counter()
            tl.tick_images((tl.palette().text().color(), tl.palette().text().color()))
            paints.append(time.perf_counter() - t)
        print(f"  timeline ticks for a new span (both rows): {_ms(paints)}")
        fns = {"a_back_user": s.step_back_userspace_exit, "a_back_exit": s.step_back_vmexit,
               "a_back_event": s.step_back_event, "a_back_insn": s.step_back_instruction}
        for name, fn in fns.items():
            window, alone = [], []
            for _ in range(args.clicks):
                t = time.perf_counter()
                getattr(win, name).trigger()
                window.append(time.perf_counter() - t)
            for _ in range(args.clicks):
                t = time.perf_counter()
                fn()
                alone.append(time.perf_counter() - t)
            print(f"  {name}: window {_ms(window)}; session alone {_ms(alone)}")
        win._update_timeline = update
        for frac in (0.3, 0.9, 0.1):
            tr = tl.track()
            t = time.perf_counter()
            win.seek(tl.time_at(tr.left() + tr.width() * frac))
            print(f"  seek to {int(frac * 100)}% of the timeline: {1000 * (time.perf_counter() - t):.0f} ms")
        win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
