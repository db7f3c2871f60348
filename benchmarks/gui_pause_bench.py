"""How long the GUI's pause waits while a guest runs at full speed.

The GUI advances the session in time-boxed batches (ui/bridge.py BATCH_S) so that a
click is answered between two batches. This measures, offscreen, how late a pause
request scheduled during a full-speed run of `jmp $` is served (the time the request
waits for the batch in progress), and how often the views repaint. The tests only
assert what is deterministic (nothing runs after the pause); the latency is a figure
for this benchmark, not a test.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_pause_bench.py [--pauses N]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pauses", type=int, default=20, help="pause requests to time (default 20)")
    args = parser.parse_args()

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from ui.bridge import BATCH_S
    from ui.mainwindow import MainWindow

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        guest = Path(tmp) / "loop.asm"
        guest.write_text("bits 32\norg 0x100000\nstart: jmp start\n")
        win = MainWindow(str(guest), settings=None)
        win.diagram.animate = False
        win.resize(1400, 900)
        win.show()
        QApplication.processEvents()  # the first layout and paint, before anything is timed
        bridge = win.bridge
        late_ms: list[float] = []
        rates: list[float] = []
        for i in range(args.pauses):
            delay_ms = 150 + 37 * (i % 7)  # spread requests over the batch phase
            loop = QEventLoop()
            due: list[float] = []
            frames0, insns0 = bridge.frames, bridge.session.instructions

            def request(loop: QEventLoop = loop, due: list[float] = due) -> None:
                late_ms.append((time.perf_counter() - due[0]) * 1000)
                bridge.pause()
                loop.quit()

            bridge.run()
            start = time.perf_counter()
            due.append(start + delay_ms / 1000)
            QTimer.singleShot(delay_ms, request)
            loop.exec()
            elapsed = time.perf_counter() - start
            rates.append((bridge.frames - frames0) / elapsed)
            if bridge.session.instructions == insns0:  # the request came before the first batch
                late_ms.pop()
                rates.pop()
        win.close()
    late_ms.sort()
    if not late_ms:
        sys.exit("no pause request came during a batch")
    print(f"pause requests during a full-speed run: {len(late_ms)} (batch {BATCH_S * 1000:.0f} ms)")
    print(f"  wait until served: median {statistics.median(late_ms):.1f} ms, "
          f"p90 {late_ms[int(0.9 * (len(late_ms) - 1))]:.1f} ms, max {late_ms[-1]:.1f} ms")
    print(f"  repaints while running: median {statistics.median(rates):.0f} per second")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
