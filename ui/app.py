"""`vmsim gui [GUEST]`: registered into the vmsim command through an entry point. `vmsim`
with no arguments comes here too (vmsim.cli.main), and opens default_lesson(): the lesson
the student was last at, else lesson 1 (else sample_guests/hello.asm, with no lessons)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]  # the checkout (or an editable install's)
GUEST_SUFFIXES = (".asm", ".bin")


def _data_dirs(name: str) -> list[Path]:
    """Where the project's `name` directory is: in the checkout, beside the packages
    (`pip install -e .`), or where a wheel installs it (pyproject's data-files:
    PREFIX/share/vmsim/NAME)."""
    return [PROJECT / name, Path(sys.prefix) / "share" / "vmsim" / name]


def default_lesson(roots: list[Path] | None = None, progress=None):
    """The lesson `vmsim` (and `vmsim gui` with no GUEST) opens (issue 14): the one the
    student was last at (Progress.last_lesson), else the first by number; None when no
    lesson is installed or none can be read. `roots`: where lessons are (default
    vmsim.lessons.lesson_roots())."""
    from vmsim.lessons import LessonError, find_lesson, lesson_roots, load_lesson
    from vmsim.lessons.progress import Progress

    roots = list(roots) if roots is not None else lesson_roots()
    try:
        last = (progress if progress is not None else Progress.load()).last_lesson()
    except (OSError, ValueError):
        last = None
    if last:
        try:
            return find_lesson(last, roots)
        except (LessonError, LookupError, ValueError, OSError):
            pass  # gone since, or broken: the first one instead
    for root in roots:
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):  # NN-slug: by number
            if (d / "lesson.toml").is_file():
                try:
                    return load_lesson(d)
                except (LessonError, OSError, ValueError):
                    continue  # `vmsim lesson lint` tells what is wrong with it
    return None


def first_lesson_guest(lessons: Path | None = None) -> Path | None:
    """The guest of the lesson `vmsim` opens (default_lesson), None with no lessons."""
    lesson = default_lesson([lessons] if lessons is not None else None)
    return lesson.guest if lesson is not None else None


def default_guest() -> Path | None:
    """What `vmsim` and `vmsim gui` open with no GUEST: the lesson's guest (default_lesson),
    where there are lessons, otherwise sample_guests/hello.asm; None if neither is
    installed."""
    lesson = first_lesson_guest()
    if lesson is not None:
        return lesson
    return next((d / "hello.asm" for d in _data_dirs("sample_guests") if (d / "hello.asm").is_file()),
                None)


def register(subparsers) -> None:
    from vmsim.cli import (
        EXIT_ASM,
        EXIT_BAD_INPUT,
        EXIT_IO,
        EXIT_LIMIT,
        EXIT_UNAVAILABLE,
        EXIT_UNSUPPORTED,
        add_machine_arguments,
        exit_status_epilog,
    )

    statuses = (("0", "the window was closed; with --screenshot: the picture was saved"),
                (str(EXIT_BAD_INPUT), "bad usage, or a guest, disk or snapshot that cannot be read"),
                (str(EXIT_ASM), "with --screenshot: the guest does not assemble (the picture "
                                "shows the error in the editor; without --screenshot the "
                                "window opens on it)"),
                (str(EXIT_UNAVAILABLE), "the GUI cannot start here: no display, Qt's platform "
                                        "libraries or PySide6 missing (one line says what to "
                                        "install)"),
                (str(EXIT_UNSUPPORTED), "with --screenshot: the guest did something vmsim does "
                                        "not model while stepping"),
                (str(EXIT_IO), "with --screenshot: the picture could not be written"),
                (str(EXIT_LIMIT), "with --screenshot: the guest made no progress"))
    p = subparsers.add_parser("gui", help="open the GUI on a guest (default: the lesson you were "
                                          "last at, else lesson 1; `vmsim` alone does the same)",
                              description="Open the GUI on GUEST, or on a lesson (--lesson ID; with "
                                          "neither: the lesson you were last at, else lesson 1, "
                                          "else sample_guests/hello.asm). A source that does not "
                                          "assemble opens in the editor with its error marked.",
                              epilog=exit_status_epilog(statuses),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guest", nargs="?", metavar="GUEST", help=".asm source or flat binary")
    p.add_argument("--lesson", metavar="ID",
                   help="open a lesson (its id, number or directory name, as `vmsim lesson list` "
                        "shows them) in the lesson panel, where you stopped; its steps bring "
                        "their own guest and machine")
    p.add_argument("--step", metavar="STEP", help="with --lesson: open at this step (its id)")
    p.add_argument("--paging", choices=("ept", "shadow"), default="ept",
                   help="how the simulated kvm.ko virtualizes memory (default ept)")
    p.add_argument("--backend", choices=("sim", "bare"), default="sim",
                   help="sim: the whole simulated stack (default); bare: the CPU alone")
    add_machine_arguments(p)  # --smp, --irqchip, --disk, --no-ioeventfd: as vmsim run
    p.add_argument("--load", metavar="FILE.vmsnap",
                   help="reopen the session a snapshot holds (its guest, machine and state), "
                        "as File > Open snapshot; instead of GUEST and the machine's options")
    p.add_argument("--compare", choices=("paging", "irqchip", "ioeventfd", "coalesced"),
                   help="run GUEST twice side by side, differing in that setting (default "
                        "guests: address_spaces.asm, timer.asm, virtio_blk.asm, vga.asm; "
                        "docs/gui.md)")
    p.add_argument("--theme", choices=("light", "dark"), default=None,
                   help="the colours (default: the last one chosen, else light)")
    p.add_argument("--presentation", action="store_true",
                   help="presentation mode: the diagram and one panel, large, the animation "
                        "slowed, for a lecture hall (View > Presentation mode toggles it)")
    p.add_argument("--lang", choices=("en", "zh_CN"), default=None,
                   type=lambda v: v.replace("-", "_"),  # zh-CN, as the lessons spell it, too
                   help="the window's language (default: as chosen in View > Language, else the "
                        "system locale's: zh_* gives Simplified Chinese)")
    p.add_argument("--screenshot", metavar="FILE.png",
                   help="render the window offscreen after --steps steps, save it, and exit")
    p.add_argument("--steps", type=_count, default=0, metavar="N",
                   help="with --screenshot: step N events first (instructions with --backend bare)")
    p.add_argument("--size", type=_size, default=(1600, 1000), metavar="WxH",
                   help=f"with --screenshot: window size ({SIZE_RANGE[0]} to {SIZE_RANGE[1]} "
                        "pixels each way; default 1600x1000)")
    p.set_defaults(func=main)


SIZE_RANGE = (200, 8192)  # a window Qt can lay out, an image that fits in memory
MAX_STEPS = 100_000  # each is a step of the GUI (events delivered to every view)


def _count(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= v <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{v}: must be 0 to {MAX_STEPS}")
    return v


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1600x1000")
    lo, hi = SIZE_RANGE
    if not all(lo <= v <= hi for v in size):
        raise argparse.ArgumentTypeError(f"{text}: each side must be {lo} to {hi} pixels")
    return size


def main(args: argparse.Namespace) -> int:
    from vmsim.cli import EXIT_ASM, EXIT_BAD_INPUT, EXIT_UNAVAILABLE
    from vmsim.vmm.block import parse_disk_option

    if args.compare:  # the side-by-side window (ui/compare.py)
        from ui.compare import run_compare

        return run_compare(args)
    if args.load:  # the snapshot brings its own guest and machine
        given = [name for name, v in (("GUEST", args.guest), ("--smp", args.smp),
                                      ("--irqchip", args.irqchip), ("--disk", args.disk),
                                      ("--no-ioeventfd", args.no_ioeventfd),
                                      ("--[no-]coalesced-mmio", args.coalesced_mmio is not None)) if v]
        if given:
            print(f"vmsim gui: --load brings its own guest and machine: drop {', '.join(given)}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.screenshot and not os.environ.get("VMSIM_DATA_DIR"):
        # A picture shows a lesson as a newcomer sees it, and leaves the student's progress alone.
        import tempfile

        os.environ["VMSIM_DATA_DIR"] = tempfile.mkdtemp(prefix="vmsim-screenshot-")
    lesson_arg = getattr(args, "lesson", None)
    if lesson_arg is not None or getattr(args, "step", None):
        given = [name for name, v in (("GUEST", args.guest), ("--load", args.load),
                                      ("--smp", args.smp), ("--irqchip", args.irqchip),
                                      ("--disk", args.disk), ("--no-ioeventfd", args.no_ioeventfd),
                                      ("--[no-]coalesced-mmio", args.coalesced_mmio is not None)) if v]
        if lesson_arg is None:
            print("vmsim gui: --step needs --lesson ID", file=sys.stderr)
            return EXIT_BAD_INPUT
        if given:
            print(f"vmsim gui: a lesson brings its own guest and machine: drop {', '.join(given)}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
    lesson = None
    if lesson_arg is not None:
        from vmsim.lessons import LessonError, find_lesson

        try:
            lesson = find_lesson(lesson_arg)
        except (LessonError, LookupError, ValueError, OSError) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else e  # (a KeyError's str is quoted)
            print(f"vmsim gui: --lesson {lesson_arg}: {' '.join(str(why).split())} "
                  "(vmsim lesson list shows the lessons)", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.step and args.step not in [s.id for s in lesson.steps]:
            print(f"vmsim gui: --step {args.step}: lesson {lesson.id} has steps "
                  f"{', '.join(s.id for s in lesson.steps)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    elif args.guest is None and not args.load:
        lesson = default_lesson()
    guest = (str(lesson.guest) if lesson.guest is not None else None) if lesson is not None else args.guest
    if guest is None and not args.load:
        found = default_guest()
        if found is None:
            print("vmsim gui: no GUEST given and no sample guest installed "
                  "(sample_guests/hello.asm): give one, e.g. vmsim gui guest.asm", file=sys.stderr)
            return EXIT_BAD_INPUT
        guest = str(found)
    if args.screenshot:
        problem = _screenshot_path_problem(args.screenshot, guest,
                                           args.disk and parse_disk_option(args.disk)[0], args.load)
        if problem:
            print(f"vmsim gui: {problem}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.backend == "bare" and args.coalesced_mmio is not None:
        print("vmsim gui: --[no-]coalesced-mmio needs a VM (--backend sim): the bare backend "
              "has no kvm.ko to queue writes in", file=sys.stderr)
        return EXIT_BAD_INPUT
    disk, disk_readonly = None, False
    if args.disk:  # refused before Qt starts: one line, as vmsim run --disk
        from vmsim.vmm.block import BlockBackend

        disk, disk_readonly = parse_disk_option(args.disk)
        try:
            BlockBackend(disk, disk_readonly).close()
        except ValueError as e:
            print(f"vmsim gui: --disk {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from ui import platform_check

    problem = platform_check.platform_problem()  # before Qt, which would abort the process
    if problem:
        print(f"vmsim gui: {problem}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
    except ImportError as e:  # pragma: no cover - depends on the installation
        print(f"vmsim gui: PySide6 is not available ({e}); pip install 'PySide6-Essentials<6.12'",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    from ui.mainwindow import MainWindow
    from vmsim.vmm.machine import GuestLoadError

    if args.screenshot:
        _quiet_offscreen_warnings()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("vmsim")
    app.setApplicationName("vmsim-gui")
    settings = None if args.screenshot else QSettings()
    theme = args.theme or (settings.value("theme", "light") if settings is not None else "light")
    from ui import i18n  # before any window: its words are made in this language
    i18n.install(i18n.choose_language(getattr(args, "lang", None), settings))
    try:  # a source that does not assemble opens in the editor (MainWindow.asm_error)
        win = MainWindow(guest, paging=args.paging, backend=args.backend, settings=settings,
                         theme=theme if theme in ("light", "dark") else "light",
                         presentation=args.presentation, smp=args.smp or 1,
                         irqchip=args.irqchip or "kernel",
                         disk=disk, disk_readonly=disk_readonly, ioeventfd=not args.no_ioeventfd,
                         coalesced_mmio=args.coalesced_mmio is not False,
                         lesson=lesson, step=getattr(args, "step", None))
    except (GuestLoadError, ValueError, OSError) as e:
        print(f"vmsim gui: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.load:
        from vmsim.snapshot_format import SnapshotError

        try:
            win.bridge.load_snapshot(args.load)
        except (SnapshotError, ValueError, OSError) as e:
            print(f"vmsim gui: cannot open the snapshot: {' '.join(str(e).split())}", file=sys.stderr)
            return EXIT_BAD_INPUT
        win.snapshot_opened(args.load)
        if args.screenshot:  # the window is not shown yet: a temporary message would sit
            win.statusBar().clearMessage()  # over the status line in the picture
    if win.asm_error is not None:  # the window shows it in the editor; a terminal too
        print(str(win.asm_error), file=sys.stderr)
    if args.screenshot:
        if win.asm_error is not None:  # the picture shows the error; nothing to step
            return screenshot(win, args.screenshot, 0, args.size) or EXIT_ASM
        return screenshot(win, args.screenshot, args.steps, args.size)
    win.show()
    return app.exec()


def _quiet_offscreen_warnings() -> None:
    """The offscreen platform warns that it cannot propagate size hints each time a dock
    is laid out: noise, not a problem of the screenshot. Other messages go through."""
    from PySide6.QtCore import qInstallMessageHandler

    def handler(mode, context, message: str) -> None:
        if "does not support propagateSizeHints" not in message:
            print(message, file=sys.stderr)

    qInstallMessageHandler(handler)


def _screenshot_path_problem(path: str, guest: str | None, disk: str | None = None,
                            snapshot: str | None = None) -> str | None:
    """Why --screenshot PATH cannot be written, found before any stepping."""
    from vmsim.files import refuse_overwrite

    refusal = refuse_overwrite([("--screenshot", path)], [("guest file", guest),
                                                          ("--disk image", disk or None),
                                                          ("--load snapshot", snapshot)])
    if refusal:
        return refusal
    if os.path.isdir(path):
        return f"{path}: is a directory"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{path}: cannot write: no directory {parent}"
    return None


def screenshot(win, path: str, steps: int, size: tuple[int, int] = (1600, 1000)) -> int:
    """Step `steps` events (instructions on the bare backend, which has no VM events),
    render the window, save it as PNG. A guest that does something vmsim does not model
    stops the stepping with the one line and the status (70) `vmsim run` gives it; the
    picture of where it stopped is still saved."""
    from PySide6.QtCore import QBuffer, QIODevice
    from PySide6.QtWidgets import QApplication

    from vmsim.hw.exceptions import Unsupported
    from vmsim.session import Outcome

    win.resize(*size)
    win.diagram.animate = False
    win.show()
    QApplication.processEvents()
    _settle(0.1)
    status = 0
    bridge = win.bridge
    step = bridge.step_instruction if bridge.session.vm is None else bridge.step_event
    try:
        for _ in range(steps):
            win.registers.mark_step()
            out = step()
            if out is None or out.finished:
                break
    except Unsupported as e:  # a session that raises it rather than ending with it
        unsupported = str(e)
    else:
        outcome = bridge.outcome or Outcome(False)
        unsupported = getattr(outcome, "unsupported", "")
        if getattr(outcome, "stuck", ""):  # vmsim's no-progress watchdog, as `vmsim run`
            print(f"vmsim gui: stopped: {outcome.stuck}", file=sys.stderr)
            status = 124  # as vmsim.cli.EXIT_LIMIT
    if unsupported:
        # Where, as `vmsim run` says it (the register view: the VMCS's RIP outside the guest).
        where = f" at eip {bridge.session.registers()['EIP']:#010x}" if bridge.session.cpus else ""
        print(f"vmsim gui: stopped{where}: {unsupported}", file=sys.stderr)
        status = 70  # as vmsim.cli.EXIT_UNSUPPORTED
    QApplication.processEvents()
    win.refresh()
    _settle(0.2)  # docks re-lay their tab bars from posted events
    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    ok = win.grab().save(buf, "PNG", 0)  # 0: the smallest file (zlib's best compression)
    win.close()
    if not ok:
        print(f"vmsim gui: {path}: cannot render the window as PNG", file=sys.stderr)
        return 2
    try:
        with open(path, "wb") as f:
            f.write(bytes(buf.data()))
    except OSError as e:
        print(f"vmsim gui: {path}: cannot write: {e.strerror}", file=sys.stderr)
        return 74  # as vmsim.cli.EXIT_IO
    return status


def _settle(seconds: float) -> None:
    import time

    from PySide6.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)
