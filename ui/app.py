"""`vmsim gui [GUEST]`: registered into the vmsim command through an entry point."""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="open the GUI on a guest (default: a sample guest)")
    p.add_argument("guest", nargs="?", metavar="GUEST", help=".asm source or flat binary")
    p.add_argument("--paging", choices=("ept", "shadow"), default="ept",
                   help="how the simulated kvm.ko virtualizes memory (default ept)")
    p.add_argument("--backend", choices=("sim", "bare"), default="sim",
                   help="sim: the whole simulated stack (default); bare: the CPU alone")
    p.add_argument("--theme", choices=("light", "dark"), default=None)
    p.add_argument("--presentation", action="store_true", help="large fonts, for a projector")
    p.add_argument("--screenshot", metavar="FILE.png",
                   help="render the window offscreen after --steps steps, save it, and exit")
    p.add_argument("--steps", type=int, default=0, metavar="N",
                   help="with --screenshot: step N events first")
    p.add_argument("--size", default="1600x1000", metavar="WxH", help="with --screenshot: window size")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    try:
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
    except ImportError as e:  # pragma: no cover - depends on the installation
        print(f"vmsim gui: PySide6 is not available ({e}); pip install 'PySide6-Essentials<6.12'",
              file=sys.stderr)
        return 2
    from ui.mainwindow import MainWindow
    from vmsim.asm import AsmError
    from vmsim.vmm.machine import GuestLoadError

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("vmsim")
    app.setApplicationName("vmsim-gui")
    settings = None if args.screenshot else QSettings()
    theme = args.theme or (settings.value("theme", "light") if settings is not None else "light")
    try:
        win = MainWindow(args.guest, paging=args.paging, backend=args.backend, settings=settings,
                         theme=theme if theme in ("light", "dark") else "light",
                         presentation=args.presentation)
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (GuestLoadError, ValueError, OSError) as e:
        print(f"vmsim gui: {e}", file=sys.stderr)
        return 2
    if args.screenshot:
        return screenshot(win, args.screenshot, args.steps, args.size)
    win.show()
    return app.exec()


def screenshot(win, path: str, steps: int, size: str = "1600x1000") -> int:
    """Step `steps` events, render the window, save it as PNG."""
    from PySide6.QtWidgets import QApplication

    w, _, h = size.partition("x")
    win.resize(int(w), int(h))
    win.diagram.animate = False
    win.show()
    QApplication.processEvents()
    _settle(0.1)
    for _ in range(steps):
        win.registers.mark_step()
        out = win.bridge.step_event()
        if out is None or out.finished:
            break
    QApplication.processEvents()
    win.refresh()
    _settle(0.2)  # docks re-lay their tab bars from posted events
    ok = win.grab().save(path, "PNG")
    win.close()
    if not ok:
        print(f"vmsim gui: cannot write {path}", file=sys.stderr)
        return 2
    return 0


def _settle(seconds: float) -> None:
    import time

    from PySide6.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)
