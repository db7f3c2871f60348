"""Side by side (issue 13): the same guest run twice, differing in one setting.

`vmsim gui GUEST --compare paging|irqchip|ioeventfd|coalesced` (or View > Compare…) opens a window
with two columns, one per configuration, each a SessionBridge of its own with the main
window's panels (exit statistics, and the page tables, the interrupt controllers or the
device queues), and over them the difference of the two counts in words:

- paging: EPT (left) against shadow paging (right), `--paging ept|shadow`;
- irqchip: the PIC and PIT in kvm.ko (left) against in QEMU (right), `--irqchip`;
- ioeventfd: the virtqueue kick through an ioeventfd (left) against an MMIO exit to
  QEMU (right), `--no-ioeventfd`; the guest needs a disk (each side gets its own copy
  of the image, since the guest writes to it).
- coalesced: the VGA window coalesced (left, the default, as QEMU's VGA has it: most
  stores queued in kvm.ko's ring, and a REP store over the screen not back in the guest
  after each element) against every VGA store an MMIO exit to QEMU (right),
  `--no-coalesced-mmio`.

Stepping keeps one relation: both sides have taken the same number of VM exits (until
one has finished; the other then goes on alone). A VM exit is the unit the comparison is
about, and the one stop that means the same on both sides: each side stands at its own
k-th exit, and its column shows how far in the guest it got with k exits (instructions,
virtual time, EIP). Guest instructions are no common clock: kvm.ko completes some of them
for the guest (a CR3 load under shadow paging, an OUT, an emulated MMIO access), and a
polling guest spins for as long as its device takes (virtio_blk.asm with an ioeventfd
runs ten times the instructions it runs without). So:

- Step (F8): each side runs to its next VM exit (or its next N, as chosen);
- Run (F5): the left side runs in time-boxed batches, the right follows to the left's
  exit count after each batch, until both have finished; Pause stops both at the same
  count;
- Reset (Ctrl+R): both start again.

Once both have finished, the difference is the whole run's: "shadow paging: 66 more VM
exits than EPT", by reason.

Nothing here computes what it shows: the numbers are each session's ExitStats (the
bridge's `stats`, as the Exit statistics panel) and counts of its events.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QFont, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QInputDialog,
    QLabel,
    QMainWindow,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ui.bridge import BATCH_S, FRAME_MS, STEP_LIMIT, SessionBridge
from ui.i18n import tr
from ui.panels import DevicesPanel, InterruptsPanel, PageTablesPanel, StatsPanel
from ui.queues import DeviceQueuesPanel
from vmsim.asm.image import GuestImage

SAMPLES = Path(__file__).resolve().parents[1] / "sample_guests"
DISK_SECTORS = 64  # the default disk of the ioeventfd comparison (32 KiB of a fixed pattern)
STEP_SIZES = (1, 10, 100)  # the VM exits one Step takes on each side
CATCH_UP_S = 0.25  # wall time a side may take catching up within one Run tick


@dataclass(frozen=True)
class Mode:
    """One comparison: the setting that differs, the guest that shows it best."""

    name: str
    guest: str  # the default guest, in sample_guests/
    left: dict  # SessionBridge keyword arguments of each side
    right: dict
    panel: str  # the second panel of each column: pagetables, interrupts, virtio


MODES = {
    "paging": Mode("paging", "address_spaces.asm", {"paging": "ept"}, {"paging": "shadow"},
                   "pagetables"),
    "irqchip": Mode("irqchip", "timer.asm", {"irqchip": "kernel"}, {"irqchip": "userspace"},
                    "interrupts"),
    "ioeventfd": Mode("ioeventfd", "virtio_blk.asm", {"ioeventfd": True}, {"ioeventfd": False},
                      "virtio"),
    "coalesced": Mode("coalesced", "vga.asm", {"coalesced_mmio": True},
                      {"coalesced_mmio": False}, "devices"),
}


def side_names(mode: str) -> tuple[str, str]:
    """The two columns' names, as the options that make them."""
    return {
        "paging": (tr("EPT (--paging ept)"), tr("shadow paging (--paging shadow)")),
        "irqchip": (tr("irqchip in kvm.ko (--irqchip kernel)"),
                    tr("irqchip in QEMU (--irqchip userspace)")),
        "ioeventfd": (tr("ioeventfd (the default)"), tr("no ioeventfd (--no-ioeventfd)")),
        "coalesced": (tr("VGA window coalesced (the default)"),
                      tr("every VGA store to QEMU (--no-coalesced-mmio)")),
    }[mode]


def mode_titles() -> dict[str, str]:
    """The comparisons as the Compare… dialog lists them."""
    return {
        "paging": tr("paging: EPT against shadow paging"),
        "irqchip": tr("irqchip: in kvm.ko against in QEMU"),
        "ioeventfd": tr("ioeventfd: the virtqueue kick with and without an ioeventfd"),
        "coalesced": tr("coalesced MMIO: VGA stores with and without kvm.ko's ring"),
    }


# What an exit reason is, said in the difference text (the reasons the three comparisons
# move; any other is named by its reason alone).
def reason_gloss(reason: str) -> str:
    return {
        "EXCEPTION_NMI": tr("page faults and other exceptions"),
        "CR_ACCESS": tr("control-register writes: CR3 loads, CR0, CR4"),
        "INVLPG": tr("TLB invalidations of one page"),
        "EPT_VIOLATION": tr("EPT violations: first touches of guest-physical pages"),
        "EPT_MISCONFIG": tr("MMIO accesses"),
        "IO_INSTRUCTION": tr("port I/O"),
        "HLT": tr("the guest idles until an interrupt"),
        "EXTERNAL_INTERRUPT": tr("host interrupts"),
        "INTERRUPT_WINDOW": tr("interrupt windows"),
    }.get(reason, "")


class Counter:
    """Counts, for one side, what the statistics do not (yet): VM exits as they are taken
    (ExitStats counts an exit once its vCPU entered the guest again) and KVM_INTERRUPT
    ioctls (QEMU injecting an interrupt: the userspace irqchip). It follows the bridge's
    session across resets."""

    KINDS = ("kvm_exit", "kvm_vcpu_ioctl")

    def __init__(self, bridge: SessionBridge):
        self.bridge = bridge
        self.exits = 0
        self.injections = 0
        self._unsubscribe = None
        self.attach()
        bridge.sessionReset.connect(self.attach)

    def attach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.exits = self.injections = 0
        self._unsubscribe = self.bridge.session.events.subscribe(self.on_event, list(self.KINDS))

    def on_event(self, ev) -> None:
        if ev.kind == "kvm_exit":
            self.exits += 1
        elif ev.get("name") == "KVM_INTERRUPT":
            self.injections += 1


def counts(bridge: SessionBridge, counter: Counter) -> dict:
    """One side's numbers: VM exits by reason and in all (as the Exit statistics panel
    has them), exits to userspace by reason, KVM_INTERRUPT injections, VM exits taken,
    guest instructions retired, virtual time."""
    d = bridge.stats.as_dict()
    s = bridge.session
    return {"exits": {r["reason"]: r["count"] for r in d["vm_exits"]},
            "total": d["vm_exits_total"], "userspace": dict(d["userspace_exits"]),
            "injections": counter.injections, "taken": counter.exits,
            "instructions": s.instructions, "time": s.virtual_time}


def _signed(reasons: dict[str, int]) -> str:
    """'CR_ACCESS +53 (control-register writes…), EXCEPTION_NMI +28 (…)': data, not prose."""
    parts = []
    for r, n in sorted(reasons.items(), key=lambda kv: (-abs(kv[1]), kv[0])):
        gloss = reason_gloss(r)
        parts.append(f"{r} {n:+d}" + (f" ({gloss})" if gloss else ""))
    return ", ".join(parts)


def difference_text(mode: str, left: dict, right: dict, finished: bool = False) -> str:
    """The two sides' counts compared in words, the right side (the what-if) against the
    left: VM exits (in all once both `finished`, else so far; by reason), then what the
    comparison is about."""
    lname, rname = side_names(mode)
    delta = {r: right["exits"].get(r, 0) - left["exits"].get(r, 0)
             for r in set(left["exits"]) | set(right["exits"])}
    more = {r: n for r, n in delta.items() if n > 0}
    fewer = {r: n for r, n in delta.items() if n < 0}
    n = right["total"] - left["total"]
    if not finished:
        first = tr("{left}: {a} VM exits, {ai} guest instructions; {right}: {b} VM exits, "
                   "{bi} guest instructions (Step takes each side to its own next VM exit).")
    elif n > 0:
        first = tr("Both ran the guest to its end. {right}: {n} more VM exits than {left} "
                   "({b} against {a}).")
    elif n < 0:
        first = tr("Both ran the guest to its end. {right}: {n} fewer VM exits than {left} "
                   "({b} against {a}).")
    else:
        first = tr("Both ran the guest to its end. {right}: as many VM exits as {left} "
                   "({b} against {a}).")
    lines = [first.format(right=rname, left=lname, n=abs(n), a=left["total"], b=right["total"],
                          ai=left["instructions"], bi=right["instructions"])]
    if more:
        lines.append(tr("More on the right: {list}.").format(list=_signed(more)))
    if fewer:
        lines.append(tr("Fewer on the right: {list}.").format(list=_signed(fewer)))
    lu, ru = sum(left["userspace"].values()), sum(right["userspace"].values())
    if mode == "irqchip":
        lines.append(tr("Exits to userspace (KVM_RUN returns): {b} against {a}; KVM_INTERRUPT "
                        "injections by QEMU: {bi} against {ai}.").format(
            a=lu, b=ru, ai=left["injections"], bi=right["injections"]))
    elif mode in ("ioeventfd", "coalesced"):
        lm, rm = left["userspace"].get("KVM_EXIT_MMIO", 0), right["userspace"].get("KVM_EXIT_MMIO", 0)
        lines.append(tr("MMIO exits to QEMU (KVM_EXIT_MMIO): {b} against {a}; exits to userspace "
                        "in all: {bu} against {au}.").format(a=lm, b=rm, au=lu, bu=ru))
    else:
        lines.append(tr("Exits to userspace (KVM_RUN returns): {b} against {a}; virtual time "
                        "{bt} against {at} cycles.").format(a=lu, b=ru, at=left["time"], bt=right["time"]))
    return "\n".join(lines)


def default_disk(directory: str) -> str:
    """A small raw image (DISK_SECTORS sectors of a fixed pattern) for virtio_blk.asm."""
    path = os.path.join(directory, "compare-disk.img")
    with open(path, "wb") as f:
        f.write(bytes((i * 7 + i // 512) & 0xFF for i in range(DISK_SECTORS * 512)))
    return path


class Column(QWidget):
    """One side: its heading, its exit statistics, its second panel."""

    def __init__(self, name: str, bridge: SessionBridge, panel: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.bridge = bridge
        self.counter = Counter(bridge)
        self.title = QLabel(name)
        f = QFont(self.title.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.2)
        self.title.setFont(f)
        self.state = QLabel("")
        self.state.setWordWrap(True)
        self.stats = StatsPanel()
        self.panel = {"pagetables": PageTablesPanel, "interrupts": InterruptsPanel,
                      "virtio": DeviceQueuesPanel, "devices": DevicesPanel}[panel]()
        chart = self.stats.findChild(QSplitter)  # the bar chart small, the table taller
        if chart is not None:
            chart.setSizes([130, 200])
        if panel == "pagetables":  # the trees tall, the last walk (not traced here) short
            inner = self.panel.findChild(QSplitter)
            if inner is not None:
                inner.setSizes([220, 220, 50, 160])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stats)
        split.addWidget(self.panel)
        split.setSizes([380, 520])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.state)
        lay.addWidget(split, 1)

    def counts(self) -> dict:
        return counts(self.bridge, self.counter)

    def refresh(self) -> None:
        b = self.bridge
        s = b.session
        c = self.counts()
        if b.finished:
            where = tr("finished: {why}").format(why=b.outcome.reason or "")
        else:
            where = tr("paused") if not getattr(self.window(), "running", False) else tr("running")
        self.state.setText(tr("{state} | {k} VM exits taken | {n} guest instructions | "
                              "virtual time {t} cycles | EIP {eip:#010x}").format(
            state=where, k=c["taken"], n=c["instructions"], t=c["time"],
            eip=s.registers()["EIP"] if s.cpus else 0))
        self.stats.refresh(b)
        self.panel.refresh(b)


class CompareWindow(QMainWindow):
    """Two sessions of one guest, differing in one setting, stepped and run together."""

    def __init__(self, mode: str, guest: str | GuestImage | None = None, *, disk: str | None = None,
                 smp: int = 1, parent: QWidget | None = None):
        super().__init__(parent)
        if parent is not None:
            self.setWindowFlag(Qt.WindowType.Window)
        if mode not in MODES:
            raise ValueError(f"--compare {mode!r}: choose one of {', '.join(MODES)}")
        m = MODES[mode]
        self.mode = mode
        self.running = False
        self._tmp = tempfile.TemporaryDirectory(prefix="vmsim-compare-")
        guest = guest if guest is not None else str(SAMPLES / m.guest)
        # The disk: each side writes to its own copy, made again at each reset.
        self.disk_source: str | None = disk
        if mode == "ioeventfd" and disk is None:
            self.disk_source = default_disk(self._tmp.name)
        self.disks: list[str | None] = [None, None]
        if self.disk_source is not None:
            self.disks = [os.path.join(self._tmp.name, f"side{i}.img") for i in (0, 1)]
            self._copy_disks()
        base = {"smp": smp, "paging": "ept"}
        self.sides: list[Column] = []
        for i, (name, kw) in enumerate(zip(side_names(mode), (m.left, m.right), strict=True)):
            bridge = SessionBridge(guest, "sim", parent=self, disk=self.disks[i], **{**base, **kw})
            guest = bridge.guest  # assembled once: the same image on both sides
            self.sides.append(Column(name, bridge, m.panel))
        self.left, self.right = self.sides
        name = Path(getattr(guest, "source_file", "") or str(guest)).name
        self.setWindowTitle(tr("vmsim: {guest} side by side: {what}").format(
            guest=name, what=mode_titles()[mode]))

        self.diff = QLabel("")
        self.diff.setWordWrap(True)
        self.diff.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f = QFont(self.diff.font())
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.diff.setFont(f)
        self.relation = QLabel(tr("Both sides have always taken the same number of VM exits: Step "
                                  "runs each to its own next VM exit, Run runs both to the end "
                                  "(the left in batches, the right following to its count)."))
        self.relation.setWordWrap(True)
        split = QSplitter(Qt.Orientation.Horizontal)
        for c in self.sides:
            split.addWidget(c)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.diff)
        lay.addWidget(split, 1)
        lay.addWidget(self.relation)
        self.setCentralWidget(central)
        self.status = QLabel("")
        self.statusBar().addWidget(self.status, 1)
        for c in self.sides:
            c.bridge.stopped.connect(lambda why, c=c: self._stopped(c, why))
        self._make_actions()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._last_paint = 0.0
        self.frames = 0  # repaints while running
        self.resize(1500, 950)
        self.refresh()

    def _make_actions(self) -> None:
        tb = QToolBar(tr("Compare controls"))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(tb)
        self.toolbar = tb

        def act(text: str, slot, keys: str, tip: str) -> QAction:
            a = QAction(text, self)
            a.setShortcut(QKeySequence(keys))
            a.setToolTip(f"{tip} ({keys})")
            a.triggered.connect(slot)
            tb.addAction(a)
            return a

        self.a_run = act(tr("Run"), self.toggle_run, "F5", tr("run both to the end / pause"))
        tb.addSeparator()
        self.a_step = act(tr("Step"), lambda: self.step_exits(self.step_size()), "F8",
                          tr("each side runs to its next VM exit (or its next N)"))
        self.step_box = QComboBox()
        for n in STEP_SIZES:
            self.step_box.addItem(tr("{n} VM exits").format(n=n) if n > 1 else tr("1 VM exit"), n)
        self.step_box.setToolTip(tr("how many VM exits Step takes on each side"))
        tb.addWidget(self.step_box)
        tb.addSeparator()
        self.a_reset = act(tr("Reset"), self.reset, "Ctrl+R", tr("start both sides again"))

    def step_size(self) -> int:
        return int(self.step_box.currentData())

    # -- the two sides together ---------------------------------------------------------------
    @staticmethod
    def _advance(side: Column, fn) -> None:
        """One step of a side through its bridge (which handles the end of the guest and
        tells the views)."""
        side.bridge._step(fn)

    def _catch_up(self, side: Column, target: int, seconds: float | None = None) -> None:
        """Run `side` on until it has taken `target` VM exits (or has finished, or, with
        `seconds`, that much wall time went by, or it runs on without exits)."""
        b = side.bridge
        counter = side.counter
        if b.finished or counter.exits >= target:
            return
        deadline = None if seconds is None else time.perf_counter() + seconds

        def go():
            out = None
            while counter.exits < target:
                out = b.session.step_vmexit(STEP_LIMIT)
                if out.finished or out.reason == "max steps":
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
            return out

        self._advance(side, go)

    def step_exits(self, n: int = 1) -> None:
        """Each side runs to its n-th next VM exit (from their common count)."""
        self.pause()
        target = max(c.counter.exits for c in self.sides) + n
        for c in self.sides:
            self._catch_up(c, target)
        self.refresh()

    def toggle_run(self) -> None:
        if self.running:
            self.pause()
        else:
            self.run()

    def run(self) -> None:
        if self.running or self.finished:
            return
        self.running = True
        self.a_run.setText(tr("Pause"))
        self._last_paint = 0.0
        self._timer.start(0)

    def pause(self) -> None:
        if not self.running:
            return
        self._timer.stop()
        self.running = False
        lo, hi = sorted(self.sides, key=lambda c: c.counter.exits)
        if not hi.bridge.finished:  # a follower that was still catching up: the same count
            self._catch_up(lo, hi.counter.exits)
        self.a_run.setText(tr("Run"))
        self.refresh()

    @property
    def finished(self) -> bool:
        return all(c.bridge.finished for c in self.sides)

    def _tick(self) -> None:
        """One batch: the left side runs for a batch's time (the right one once the left
        has finished), the other follows to its VM exit count."""
        lead, follow = (self.left, self.right) if not self.left.bridge.finished else (self.right, self.left)
        behind = not follow.bridge.finished and follow.counter.exits < lead.counter.exits
        if not lead.bridge.finished and not behind:  # (a follower still behind catches up first)
            self._advance(lead, lambda: lead.bridge.session.run_for(BATCH_S))
        target = lead.counter.exits if not lead.bridge.finished else 1 << 62
        self._catch_up(follow, target, CATCH_UP_S)
        if self.finished:
            self.pause()
            self.status.setText(tr("both sides finished"))
            return
        now = time.perf_counter()
        if now - self._last_paint >= FRAME_MS / 1000:
            self._last_paint = now
            self.frames += 1
            self.refresh()

    def reset(self) -> None:
        self.pause()
        self._copy_disks()
        for c in self.sides:
            c.bridge.reset()
        self.status.setText("")
        self.refresh()

    def _copy_disks(self) -> None:
        for path in self.disks:
            if path is not None and self.disk_source is not None:
                shutil.copyfile(self.disk_source, path)

    def _stopped(self, side: Column, why: str) -> None:
        self.status.setText(tr("{side}: {why}").format(side=side.name, why=why))

    # -- views ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        for c in self.sides:
            c.refresh()
        self.diff.setText(difference_text(self.mode, self.left.counts(), self.right.counts(),
                                          self.finished))

    def closeEvent(self, event) -> None:
        self.pause()
        for c in self.sides:
            c.bridge.session.machine.close()
        super().closeEvent(event)
        self._tmp.cleanup()


def open_compare(main) -> CompareWindow | None:
    """View > Compare…: ask which setting to compare, open the window on the main window's
    guest (as it is assembled now) and machine; the default guest of the comparison if the
    main window runs on the bare backend."""
    titles = mode_titles()
    choice, ok = QInputDialog.getItem(main, tr("Compare side by side"),
                                      tr("Run this guest twice, differing in:"),
                                      list(titles.values()), 0, False)
    if not ok:
        return None
    mode = next(k for k, v in titles.items() if v == choice)
    b = main.bridge
    guest = b.guest if b.backend == "sim" else None
    win = CompareWindow(mode, guest, disk=b.disk, smp=b.smp, parent=main)
    win.show()
    return win


def run_compare(args) -> int:
    """`vmsim gui [GUEST] --compare MODE [--disk FILE] [--smp N] [--screenshot FILE
    --size WxH --steps N]`: the window, or its picture once each side has taken N VM exits
    (Step N times; N larger than a side's exits: the whole run)."""
    import sys

    from ui import app as gui_app

    if args.load or args.backend != "sim" or args.irqchip or args.no_ioeventfd \
            or args.coalesced_mmio is not None or args.paging != "ept":
        print("vmsim gui: --compare sets the compared option itself and runs the simulated "
              "backend: drop --load, --backend, --paging, --irqchip, --no-ioeventfd and "
              "--[no-]coalesced-mmio",
              file=sys.stderr)
        return 2
    disk = None
    if args.disk:
        from vmsim.vmm.block import BlockBackend, parse_disk_option

        disk = parse_disk_option(args.disk)[0]
        try:
            BlockBackend(disk, True).close()
        except ValueError as e:
            print(f"vmsim gui: --disk {e}", file=sys.stderr)
            return 2
    if args.screenshot:
        problem = gui_app._screenshot_path_problem(args.screenshot, args.guest, disk)
        if problem:
            print(f"vmsim gui: {problem}", file=sys.stderr)
            return 2
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from vmsim.asm import AsmError
    from vmsim.vmm.machine import GuestLoadError

    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.screenshot:
        gui_app._quiet_offscreen_warnings()
    try:
        win = CompareWindow(args.compare, args.guest, disk=disk, smp=args.smp or 1)
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (GuestLoadError, ValueError, OSError) as e:
        print(f"vmsim gui: {e}", file=sys.stderr)
        return 2
    if not args.screenshot:
        win.show()
        return app.exec()
    win.resize(*args.size)
    win.show()
    gui_app._settle(0.1)
    win.step_exits(args.steps)
    win.refresh()
    gui_app._settle(0.2)
    ok = win.grab().save(args.screenshot, "PNG")
    win.close()
    if not ok:
        print(f"vmsim gui: {args.screenshot}: cannot write the PNG", file=sys.stderr)
        return 74
    return 0
