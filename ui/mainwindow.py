"""The main window: the diagram in the centre, dock panels around it, the controls."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QColor, QFont, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QSpinBox,
    QTabBar,
    QTableWidget,
    QToolBar,
    QWidget,
)

from ui import i18n
from ui import text as T
from ui.bridge import KIND_OF, SPEED_MAX, SessionBridge
from ui.compare import open_compare
from ui.diagram import DiagramView
from ui.editor import SourcePanel
from ui.i18n import tr
from ui.layout import load_layout
from ui.lesson_panel import LessonChooser, LessonPanel, text_of
from ui.panels import (
    DevicesPanel,
    DisasmPanel,
    EventLogPanel,
    InterruptsPanel,
    PageTablesPanel,
    RegistersPanel,
    StatsPanel,
    VcpusPanel,
    VmcsPanel,
    compact,
    install_tips,
)
from ui.queues import DeviceQueuesPanel
from ui.timeline import TimelineWidget
from vmsim.asm import AsmError, assemble
from vmsim.asm.image import GuestImage
from vmsim.files import SOURCE_LIMIT, read_input_file
from vmsim.snapshot import default_name
from vmsim.snapshot_format import SUFFIX as SNAPSHOT_SUFFIX
from vmsim.snapshot_format import SnapshotError
from vmsim.vmm.machine import IRQCHIP_MODES, LOAD_ADDRESS, MAX_SMP, GuestLoadError, load_guest_file

DEFAULT_GUEST = Path(__file__).resolve().parents[1] / "sample_guests" / "hello.asm"
SETTINGS_VERSION = 3  # 3: the lesson dock (issue 14); an older layout is not restored
# The default arrangement, column by column, each group one set of tabs (first in front).
# The lesson (issue 14) is on top of the left column, where a student reads first, while a
# lesson is open (hidden otherwise); in the compact layout the group under the diagram
# then joins the guest source's tabs under it (no third group in that column).
DOCK_GROUPS = (
    ("left", ("lesson",)),
    ("left", ("source", "disasm")),
    ("right", ("registers", "vmcs", "pagetables")),
    ("right", ("stats", "interrupts", "vcpus")),
    ("bottom", ("devices", "virtio", "events")),
)
MIN_BOTTOM = 200  # pixels the group under the diagram needs, else the compact layout
PRESENT_FONT = 1.7  # presentation mode: fonts this much larger
PRESENT_DOCK = 0.3  # the one panel kept beside the diagram: this share of the width
# Events a step is best shown by, ahead of the routine ones around them (issue 10).
TELLING_KINDS = frozenset({"kvm_inj_virq", "kvm_set_irq", "qemu_set_irq", "pic_interrupt",
                           "kvm_apic_ipi", "qemu_cpu_kick", "kvm_vcpu_kick", "qemu_timer",
                           "kvm_vcpu_block"})
TELLING_SCAN = 200  # how far back a step's events are searched for one
FOLLOWED_ONE_BY_ONE = TELLING_SCAN  # a step's last events the diagram follows one at a time
# A virtio request's story (issue 11): the kick, the I/O to the disk, the completion
# interrupt; a step that has them shows them in turn.
STORY_KINDS = frozenset({"ioeventfd_write", "virtio_queue_notify", "virtio_blk_handle_read",
                         "virtio_blk_handle_write", "virtio_notify", "virtio_notify_irqfd"})
DISK_KINDS = frozenset({"virtio_blk_handle_read", "virtio_blk_handle_write"})
IOTHREAD_PREFIX = "iothread"  # QEMU's -object iothread,id=iothread0 (its thread's name)


def _caption(ev) -> str:
    try:
        return ev.describe()
    except (KeyError, ValueError, TypeError):
        return ev.kind


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return tr("{n} bytes").format(n=n)


def _one_line(e: object) -> str:
    if isinstance(e, KeyError) and e.args:  # str() of a KeyError is its repr: quoted
        e = e.args[0]
    return " ".join(str(e).split())


def _telling(ev) -> bool:
    return ev.kind in TELLING_KINDS or (ev.kind == "bql" and ev.get("action") == "wait")


def _load_guest(path: str) -> tuple[GuestImage, AsmError | None]:
    """The guest at `path`, or when its source does not assemble, a stand-in (`cli; hlt`,
    never run: the run actions are off) that carries the source for the editor, with the
    error. Raises GuestLoadError / OSError for a file that cannot be read."""
    try:
        return load_guest_file(path), None
    except AsmError as e:
        text = read_input_file(path, SOURCE_LIMIT, "the source file limit").decode("utf-8")
        return _stand_in(path, text), e


def _stand_in(path: str, text: str) -> GuestImage:
    """A guest that does nothing, in place of a source that does not assemble: the
    machine exists (every view has a state to show) but never runs; no source line maps
    to it, so no line is marked as the current one."""
    return GuestImage(data=b"\xfa\xf4", origin=LOAD_ADDRESS, source_file=path, source=text)


def add_mnemonics(menu) -> None:
    """Keyboard for every menu entry (issue 13): an entry with no shortcut and no
    mnemonic of its own gets one, the first letter of its text no other entry of the
    menu uses. Call it again after the texts change (a language switch)."""
    actions = [a for a in menu.actions() if not a.isSeparator() and a.text()]
    used = {t[t.index("&") + 1].lower() for t in (a.text().replace("&&", "") for a in actions)
            if "&" in t and t.index("&") + 1 < len(t)}
    for a in actions:
        text = a.text()
        if "&" in text.replace("&&", "") or not a.shortcut().isEmpty():
            continue
        for i, ch in enumerate(text):
            if ch.isascii() and ch.isalnum() and ch.lower() not in used and (i == 0 or text[i - 1] != "&"):
                used.add(ch.lower())
                a.setText(text[:i] + "&" + text[i:])
                break
        else:  # Chinese words: a Latin letter after them, as Qt's own translations do, 页表(&P)
            free = next((c for c in "abcdefghijklmnopqrstuvwxyz" if c not in used), None)
            if free:
                used.add(free)
                a.setText(f"{text}(&{free.upper()})")


class MainWindow(QMainWindow):
    def __init__(self, guest: str | None = None, paging: str = "ept", backend: str = "sim",
                 settings: QSettings | None = None, theme: str = "light", presentation: bool = False,
                 smp: int = 1, irqchip: str = "kernel", disk: str | None = None,
                 disk_readonly: bool = False, ioeventfd: bool = True,
                 coalesced_mmio: bool = True, lesson=None,
                 step: str | None = None):
        super().__init__()
        self.guest_path = str(guest or DEFAULT_GUEST)
        self.settings = settings
        # A source that does not assemble opens in the editor, its error marked, the
        # machine not running, until Assemble & reset (reassemble) fixes it in place.
        image, asm_error = _load_guest(self.guest_path)
        self.asm_error: AsmError | None = None  # set by _show_asm_error
        self.bridge = SessionBridge(image, backend, paging, self, smp=smp, irqchip=irqchip,
                                    disk=disk, disk_readonly=disk_readonly, ioeventfd=ioeventfd,
                                    coalesced_mmio=coalesced_mmio)
        self.seen_kinds: set[str] = set()  # the kinds of the last delivery (boxes light)
        self.theme = theme
        self.presentation = False
        self._last_raised = "source"  # presentation mode keeps the panel last raised
        self._set_title()

        self.diagram = DiagramView(load_layout(smp=smp, irqchip=irqchip))
        self.setCentralWidget(self.diagram)
        self.source = SourcePanel()
        self.registers = RegistersPanel()
        self.disasm = DisasmPanel()
        self.vmcs = VmcsPanel()
        self.pagetables = PageTablesPanel()
        self.devices = DevicesPanel()
        self.events = EventLogPanel()
        self.stats = StatsPanel()
        self.interrupts = InterruptsPanel()
        self.vcpus = VcpusPanel()
        self.queues = DeviceQueuesPanel()
        self.lesson_panel = LessonPanel(self)
        self.lesson_panel.lesson = lesson  # (opened below: the docks are arranged for it)
        self.bridge.stream_hook = self.lesson_panel.new_stream
        self._lesson_key: tuple | None = None  # the (guest, machine) the session was made for
        self._lesson_tmp = None  # Do these for me: its snapshots' (directory, finalizer removing it)
        self._lesson_snapshots = 0
        self._lessons: list | None = None  # the installed lessons (Lessons menu), when read
        self.docks: dict[str, QDockWidget] = {}
        L, R, B = (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea,
                   Qt.DockWidgetArea.BottomDockWidgetArea)
        for name, title, widget, area in (
                ("lesson", tr("Lesson"), self.lesson_panel, L),
                ("source", tr("Guest source"), self.source, L),
                ("disasm", tr("Disassembly, memory"), self.disasm, L),
                ("registers", tr("Registers"), self.registers, R),
                ("vmcs", tr("VMCS"), self.vmcs, R),
                ("pagetables", tr("Page tables"), self.pagetables, R),
                ("interrupts", T.INTERRUPTS_TITLE, self.interrupts, R),
                ("vcpus", T.VCPUS_TITLE, self.vcpus, R),
                ("devices", tr("Devices"), self.devices, B),
                ("virtio", T.QUEUES_TITLE, self.queues, B),
                ("events", tr("Event log"), self.events, B),
                ("stats", tr("Exit statistics"), self.stats, B)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{name}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        self._first = "virtio" if disk else "devices"  # the bottom group's front tab
        self._arrange_docks(self._first)  # (compact, if the size it is shown at needs it)

        for view in self.findChildren(QAbstractItemView):  # cut text has its tooltip (issue 13)
            install_tips(view)
        for dock in self.docks.values():  # a panel brought up shows the present, not when it was hidden
            dock.visibilityChanged.connect(self._dock_shown)
        self._make_actions()
        self.status = QLabel("")
        self.statusBar().addWidget(self.status, 1)

        b = self.bridge
        b.stateChanged.connect(self.refresh)
        b.eventsArrived.connect(self.on_events)
        b.serialOutput.connect(self.devices.append_serial)
        b.runningChanged.connect(self._running_changed)
        b.stopped.connect(self._stopped)
        b.sessionReset.connect(self._session_reset)
        b.sessionReset.connect(lambda: self.lesson_panel.attach(self.bridge.session))
        b.rewound.connect(self._rewound)
        self.timeline.seekRequested.connect(self.seek)
        b.gdbChanged.connect(self._gdb_changed)
        self.devices.serialInput.connect(b.feed_serial)
        self.diagram.boxClicked.connect(self.raise_panel)
        self.source.editor.gutterClicked.connect(self.toggle_breakpoint)
        self.source.assembleRequested.connect(self.reassemble)

        self._load_source_text()
        self._show_asm_error(asm_error)
        self.resize(1600, 1000)
        self._layout_pending = True  # the default arrangement when first shown (showEvent)
        self._present_pending = presentation
        self.restore_layout()
        self.apply_theme(theme)
        self.on_events(list(b._pending))
        b._pending.clear()
        self.refresh()
        if lesson is not None:
            self.open_lesson(lesson, step)

    def _set_title(self) -> None:
        b = self.bridge
        disk = tr(", disk {name}{ro}").format(name=Path(b.disk).name, ro=T.READONLY if b.disk_readonly
                                              else "") if b.disk else ""
        guest = Path(self.guest_path).name
        panel = getattr(self, "lesson_panel", None)
        if panel is not None and panel.lesson is not None and b.factory is not None:  # a lesson's step
            guest = tr("Lesson {n}: {title}").format(n=panel.lesson.number,
                                                     title=text_of(panel.lesson.title)) + " \u2014 " + guest
        self.setWindowTitle(tr("vmsim: {guest} ({backend}, {paging}, {smp} vCPU{s}, irqchip {irqchip}{disk})")
                            .format(guest=guest, backend=b.backend, paging=b.paging,
                                    smp=b.smp, s="s" if b.smp > 1 else "", irqchip=b.irqchip, disk=disk))

    # -- layout (issue 13: fits 1366x768 to 1920x1080, nothing clipped) ---------------------------
    def compact_layout(self) -> bool:
        """Too short a window for a group under the diagram (1366x768, 1920x1080): the
        diagram takes the centre's whole height and that group goes under the guest source."""
        W, H = self.width(), self.height()
        left, right = self._column_widths(False)
        sw, sh = self.diagram.scene_.sceneRect().width(), self.diagram.scene_.sceneRect().height()
        diagram_h = (W - left - right - 16) * sh / sw + 60
        return H - self._chrome_height() - diagram_h < MIN_BOTTOM

    def _column_widths(self, compact: bool) -> tuple[int, int]:
        """The side columns' widths: a fifth and a quarter of the window; narrower in the
        compact layout, where the diagram is limited by the window's height and the
        columns can give it width (the registers' flags and segments still fit)."""
        W = max(self.width(), 800)
        left, right = (0.17, 0.21) if compact else (0.2, 0.25)
        if self.lesson_open:  # the lesson's prose needs the width of a short paragraph
            return int(min(max(W * 0.25, 340), 520)), int(min(max(W * (right - 0.02), 340), 500))
        return int(min(max(W * left, 270), 460)), int(min(max(W * right, 360), 520))

    @property
    def lesson_open(self) -> bool:
        panel = getattr(self, "lesson_panel", None)
        return panel is not None and panel.lesson is not None

    def dock_groups(self, compact: bool) -> list[tuple[str, tuple[str, ...]]]:
        """DOCK_GROUPS as arranged now: the lesson group only while a lesson is open, the
        bottom group under the guest source in a compact layout (in its tabs, with a
        lesson above them)."""
        groups = [(area, names) for area, names in DOCK_GROUPS if names != ("lesson",) or self.lesson_open]
        if not compact:
            return groups
        if not self.lesson_open:
            return [("left" if area == "bottom" else area, names) for area, names in groups]
        bottom = next(names for area, names in groups if area == "bottom")
        return [(area, (*names, *bottom) if "source" in names else names)
                for area, names in groups if area != "bottom"]

    def _chrome_height(self) -> int:
        chrome = self.menuBar().sizeHint().height() + self.statusBar().sizeHint().height() + 12
        for bar in self.findChildren(QToolBar):
            if bar.parent() is self and bar.isVisibleTo(self):
                chrome += bar.sizeHint().height()
        return chrome

    def _arrange_docks(self, first: str = "devices", compact: bool = False) -> None:
        """The default arrangement (DOCK_GROUPS): the side columns take the window's full
        height (the corners are theirs), the bottom group sits under the diagram only
        (under the guest source in a compact layout); each group is one set of tabs, its
        first tab in front (`first` for the bottom group)."""
        self._compact = compact
        size = self.size()  # (the docks side by side on the way may widen the window: undone below)
        C, A = Qt.Corner, Qt.DockWidgetArea
        self.setCorner(C.TopLeftCorner, A.LeftDockWidgetArea)
        self.setCorner(C.BottomLeftCorner, A.LeftDockWidgetArea)
        self.setCorner(C.TopRightCorner, A.RightDockWidgetArea)
        self.setCorner(C.BottomRightCorner, A.RightDockWidgetArea)
        self.setDockOptions(self.dockOptions() | QMainWindow.DockOption.AllowNestedDocks)
        areas = {"left": A.LeftDockWidgetArea, "right": A.RightDockWidgetArea,
                 "bottom": A.BottomDockWidgetArea}
        above: dict[str, QDockWidget] = {}
        for dock in self.docks.values():  # untabbed first: a split beside a tab would tabify
            dock.setFloating(False)
            self.addDockWidget(areas["bottom"], dock)
        groups = self.dock_groups(compact)
        if not self.lesson_open:
            self.docks["lesson"].hide()
        for area, names in groups:  # the groups' first panels, column by column
            head = self.docks[names[0]]
            if area in above:  # a second group in that column: under the first
                self.splitDockWidget(above[area], head, Qt.Orientation.Vertical)
            else:
                self.addDockWidget(areas[area], head)
                above[area] = head
        for _area, names in groups:
            for prev, name in pairwise(names):
                self.docks[name].setFloating(False)
                self.tabifyDockWidget(self.docks[prev], self.docks[name])
            for name in names:
                self.docks[name].show()
            front = first if first in names and "source" not in names else names[0]
            self.docks[front].raise_()
        self._unelide_tabs()
        if self.size() != size and not (self.windowState() & (Qt.WindowState.WindowMaximized
                                                              | Qt.WindowState.WindowFullScreen)):
            self.resize(size.expandedTo(self.minimumSizeHint()))

    def _unelide_tabs(self) -> None:
        """Dock tabs show their whole titles (scroll buttons when a group is too narrow),
        never 'Reg…'."""
        groups = {frozenset([d.windowTitle(), *(t.windowTitle() for t in self.tabifiedDockWidgets(d))])
                  for d in self.docks.values() if not d.isFloating()}
        for bar in self.findChildren(QTabBar):
            if bar.parent() is self:
                bar.setElideMode(Qt.TextElideMode.ElideNone)
                bar.setUsesScrollButtons(True)
                # A bar Qt made for a group on the way (tabified one by one before the window
                # was shown) is left over, shown with the window: hide it.
                if frozenset(bar.tabText(i) for i in range(bar.count())) not in groups:
                    bar.hide()

    def default_dock_sizes(self) -> None:
        """The columns' and the bottom group's sizes for the window's size: the side
        columns as wide as their contents need (registers, source lines), the diagram
        the rest, the bottom group what the diagram's aspect leaves under it."""
        W, H = max(self.width(), 800), max(self.height(), 500)
        left, right = self._column_widths(self._compact)
        self.resizeDocks([self.docks["source"], self.docks["registers"]], [left, right],
                         Qt.Orientation.Horizontal)
        avail = H - self._chrome_height()
        if self.lesson_open:  # the lesson over the guest source
            self.resizeDocks([self.docks["lesson"], self.docks["source"]],
                             [int(avail * 0.64), int(avail * 0.36)], Qt.Orientation.Vertical)
        if self._compact and not self.lesson_open:
            self.resizeDocks([self.docks["source"], self.docks["devices"]],
                             [int(avail * 0.6), int(avail * 0.4)], Qt.Orientation.Vertical)
        elif not self._compact:
            sw, sh = self.diagram.scene_.sceneRect().width(), self.diagram.scene_.sceneRect().height()
            diagram_h = (W - left - right - 16) * sh / sw + self.diagram.viewportMargins().top() + 8
            bottom = int(min(max(avail - diagram_h, MIN_BOTTOM), avail * 0.45))
            self.resizeDocks([self.docks["devices"]], [bottom], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["registers"], self.docks["stats"]],
                         [int(avail * 0.6), int(avail * 0.4)], Qt.Orientation.Vertical)

    def reset_layout(self) -> None:
        """View > Reset layout: the default arrangement, every panel back in its place
        (closed and floating ones too), the default sizes for the window's size."""
        if self.presentation:
            self.set_presentation(False)
        for bar in (self.toolbar, self.machine_bar, self.timeline_bar):
            bar.show()
        self._arrange_docks(self._first, compact=self.compact_layout())
        if self.lesson_panel.step is not None:  # the lesson step's panels in front again
            self._raise_step_panels(self.lesson_panel.step)
        self.default_dock_sizes()
        QTimer.singleShot(0, self.default_dock_sizes)  # again once the arrangement is laid out

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._layout_pending:  # first shown: the default sizes for the size it has
            self._layout_pending = False
            if not self._restored:  # the default arrangement, for the size it has
                if self.compact_layout() != self._compact:
                    self._arrange_docks(self._first, compact=not self._compact)
                    if self.lesson_panel.step is not None:  # the step's panels in front again
                        self._raise_step_panels(self.lesson_panel.step)
                QTimer.singleShot(0, self.default_dock_sizes)
            self._unelide_tabs()
            if self._present_pending:  # --presentation: from the arrangement just made
                self._present_pending = False
                QTimer.singleShot(0, lambda: self.set_presentation(True))

    # -- actions ---------------------------------------------------------------------------------
    def _make_actions(self) -> None:
        b = self.bridge
        tb = QToolBar(tr("Controls"))
        tb.setObjectName("toolbar-controls")
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(tb)
        self.toolbar = tb
        mb = self.menuBar()
        m_file = mb.addMenu(tr("&File"))
        m_run = mb.addMenu(tr("&Run"))
        m_bp = mb.addMenu(tr("&Breakpoints"))
        m_view = mb.addMenu(tr("&View"))

        def act(text, slot, keys=None, menu=None, toolbar=True, tip=""):
            a = QAction(text, self)
            if keys:
                a.setShortcut(QKeySequence(keys))
            a.setToolTip(f"{tip or text} ({keys})" if keys else (tip or text))
            a.triggered.connect(slot)
            if menu is not None:
                menu.addAction(a)
            if toolbar:
                tb.addAction(a)
            return a

        self.a_open = act(tr("Open…"), self.open_guest, "Ctrl+O", m_file,
                          tip=tr("open a guest (.asm or flat binary)"))
        act(tr("Assemble && reset"), lambda: self.reassemble(self.source.editor.toPlainText()), "Ctrl+B",
            m_file, toolbar=False)
        m_file.addSeparator()
        self.a_attach = act(T.ATTACH_DISK, lambda: self._attach_disk_dialog(False), None, m_file,
                            toolbar=False, tip=T.ATTACH_DISK_TIP)
        self.a_attach_ro = act(T.ATTACH_DISK_RO, lambda: self._attach_disk_dialog(True), None, m_file,
                               toolbar=False, tip=T.ATTACH_DISK_TIP)
        self.a_detach = act(T.DETACH_DISK, lambda: self.attach_disk(None), None, m_file, toolbar=False)
        m_file.addSeparator()
        self.a_save_snap = act(T.SAVE_SNAPSHOT, self._save_snapshot_dialog, "Ctrl+S", m_file,
                               toolbar=False, tip=T.SAVE_SNAPSHOT_TIP)
        self.a_open_snap = act(T.OPEN_SNAPSHOT, self._open_snapshot_dialog, "Ctrl+Shift+O", m_file,
                               toolbar=False, tip=T.OPEN_SNAPSHOT_TIP)
        m_file.addSeparator()
        act(tr("Screenshot…"), self._screenshot_dialog, None, m_file, toolbar=False)
        act(tr("Export timeline…"), self._export_timeline_dialog, None, m_file, toolbar=False,
            tip=tr("the events the event log holds, for ui.perfetto.dev or chrome://tracing"))
        act(tr("Quit"), self.close, "Ctrl+Q", m_file, toolbar=False)
        tb.addSeparator()
        # Each back action beside its forward one, on the forward key with Shift. (To
        # userspace exit moved from Shift+F8 to F7: Shift+F8 is the back of F8 now.)
        self.a_reverse = act(T.REVERSE_CONTINUE, self._before_step(b.reverse_continue, False), "Shift+F5",
                             m_run, tip=T.REVERSE_CONTINUE_TIP)
        self.a_run = act(tr("Run"), self._toggle_run, "F5", m_run, tip=tr("run / pause"))
        tb.addSeparator()
        self.a_back_insn = act(T.BACK_INSN, self._before_step(b.step_back_instruction, False), "Shift+F11",
                               m_run, tip=T.BACK_INSN_TIP)
        self.a_step_insn = act(tr("Step instruction"), self._before_step(b.step_instruction), "F11", m_run)
        self.a_back_event = act(T.BACK_EVENT, self._before_step(b.step_back_event, False), "Shift+F10", m_run,
                                tip=T.BACK_EVENT_TIP)
        self.a_step_event = act(tr("Step event"), self._before_step(b.step_event), "F10", m_run)
        self.a_back_exit = act(T.BACK_EXIT, self._before_step(b.step_back_vmexit, False), "Shift+F8", m_run,
                               tip=T.BACK_EXIT_TIP)
        self.a_step_exit = act(tr("To VM exit"), self._before_step(b.step_vmexit), "F8", m_run,
                               tip=tr("run to the next VM exit"))
        self.a_back_user = act(T.BACK_USER, self._before_step(b.step_back_userspace_exit, False), "Shift+F7",
                               m_run, tip=T.BACK_USER_TIP)
        self.a_step_user = act(tr("To userspace exit"), self._before_step(b.step_userspace_exit), "F7",
                               m_run, tip=tr("run to the next exit to userspace (KVM_RUN returns)"))
        tb.addSeparator()
        self.back_actions = {a: a.toolTip() for a in (self.a_reverse, self.a_back_insn, self.a_back_event,
                                                      self.a_back_exit, self.a_back_user)}
        self.a_reset = act(tr("Reset"), lambda: b.reset(), "Ctrl+R", m_run, tip=tr("start the guest again"))
        m_run.addSeparator()
        self.a_gdb = act(tr("Wait for gdb…"), self._wait_for_gdb, None, m_run, toolbar=False,
                         tip=tr("serve the GDB remote protocol on 127.0.0.1 (docs/gdb.md)"))
        # The speed and the machine on a second row, left of the timeline: the first row
        # (the step buttons) fits a 1366-pixel-wide window (issue 13).
        self.addToolBarBreak()
        mt = QToolBar(tr("Speed and machine"))
        mt.setObjectName("toolbar-machine")
        self.addToolBar(mt)
        self.machine_bar = mt
        tb = mt
        tb.addWidget(QLabel(tr(" speed: slow ")))
        self.speed = QSlider(Qt.Orientation.Horizontal)
        self.speed.setRange(0, SPEED_MAX)
        self.speed.setValue(SPEED_MAX)
        self.speed.setFixedWidth(160)
        self.speed.setToolTip(tr("slow motion (one event at a time, animated) ... full speed (batches)"))
        self.speed.valueChanged.connect(b.set_speed)
        tb.addWidget(self.speed)
        tb.addWidget(QLabel(tr(" full ")))
        # The machine (as vmsim run --smp / --irqchip): a change starts the guest again.
        tb.addSeparator()
        tb.addWidget(QLabel(T.VCPUS_LABEL))
        self.smp_box = QSpinBox()
        self.smp_box.setRange(1, MAX_SMP)
        self.smp_box.setValue(b.smp)
        self.smp_box.setToolTip(T.VCPUS_TIP)
        self.smp_box.valueChanged.connect(lambda n: self.set_machine(smp=n))
        tb.addWidget(self.smp_box)
        tb.addWidget(QLabel(T.IRQCHIP_LABEL))
        self.irqchip_box = QComboBox()
        self.irqchip_box.addItems(list(IRQCHIP_MODES))
        self.irqchip_box.setCurrentText(b.irqchip)
        self.irqchip_box.setToolTip(T.IRQCHIP_TIP)
        self.irqchip_box.currentTextChanged.connect(lambda m: self.set_machine(irqchip=m))
        tb.addWidget(self.irqchip_box)
        # The timeline, the rest of that row.
        tb = self.toolbar
        tl = QToolBar(T.TIMELINE_TITLE)
        tl.setObjectName("toolbar-timeline")
        self.timeline = TimelineWidget()
        tl.addWidget(self.timeline)
        self.addToolBar(tl)
        self.timeline_bar = tl

        act(tr("Toggle breakpoint at cursor line"), self._toggle_cursor_bp, "F9", m_bp, toolbar=False)
        act(tr("Break on address…"), self._bp_address, None, m_bp, toolbar=False)
        act(tr("Break on VM exit reason…"), self._bp_exit, None, m_bp, toolbar=False)
        act(tr("Break on I/O port…"), self._bp_port, None, m_bp, toolbar=False)
        self.event_bp_actions: dict[str, QAction] = {}
        for spec, name in T.EVENT_BREAKPOINTS.items():
            a = QAction(tr("Break on {what}").format(what=name), self, checkable=True)
            a.setToolTip(T.EVENT_BREAKPOINT_TIPS[spec])
            a.setStatusTip(T.EVENT_BREAKPOINT_TIPS[spec])
            a.toggled.connect(lambda on, spec=spec: self.set_event_breakpoint(spec, on))
            m_bp.addAction(a)
            self.event_bp_actions[spec] = a
        act(tr("Clear all breakpoints"), self._bp_clear, None, m_bp, toolbar=False)

        self.a_dark = QAction(tr("Dark theme"), self, checkable=True)
        self.a_dark.setShortcut(QKeySequence("Ctrl+Shift+D"))
        self.a_dark.toggled.connect(lambda on: self.apply_theme("dark" if on else "light"))
        m_view.addAction(self.a_dark)
        self.a_present = QAction(tr("Presentation mode (large fonts)"), self, checkable=True)
        self.a_present.setShortcut(QKeySequence("Ctrl+Shift+P"))
        self.a_present.setIconText(tr("Presentation"))
        self.a_present.setToolTip(tr("the diagram and one panel, large, for a lecture hall; "
                                     "the animation slowed (Ctrl+Shift+P)"))
        self.a_present.toggled.connect(self.set_presentation)
        m_view.addAction(self.a_present)
        tb.addSeparator()
        tb.addAction(self.a_present)
        self.a_reset_layout = QAction(tr("&Reset layout"), self)
        self.a_reset_layout.setShortcut(QKeySequence("Ctrl+Shift+L"))
        self.a_reset_layout.setToolTip(tr("every panel back in its place, sized for the window "
                                          "(Ctrl+Shift+L)"))
        self.a_reset_layout.triggered.connect(self.reset_layout)
        m_view.addAction(self.a_reset_layout)
        self.a_slower = QAction(tr("S&lower"), self)
        self.a_slower.setShortcut(QKeySequence("Ctrl+-"))
        self.a_slower.triggered.connect(lambda: self.speed.setValue(self.speed.value() - 1))
        self.a_faster = QAction(tr("&Faster"), self)
        self.a_faster.setShortcut(QKeySequence("Ctrl+="))
        self.a_faster.triggered.connect(lambda: self.speed.setValue(self.speed.value() + 1))
        m_run.addSeparator()
        m_run.addAction(self.a_slower)
        m_run.addAction(self.a_faster)
        self.a_animate = QAction(tr("Animate event paths"), self, checkable=True)
        self.a_animate.setChecked(True)
        self.a_animate.toggled.connect(self._set_animate)
        m_view.addAction(self.a_animate)
        self.a_compare = act(tr("Compare…"), lambda: open_compare(self), None, m_view, toolbar=False,
                             tip=tr("run this guest twice side by side, differing in one setting"))
        m_view.addSeparator()
        for name, dock in self.docks.items():
            del name
            m_view.addAction(dock.toggleViewAction())
        self._make_language_menu(m_view)
        m_lessons = mb.addMenu(tr("&Lessons"))
        self.lessons_menu = m_lessons
        self.a_choose_lesson = act(tr("Choose a lesson…"), self.choose_lesson, "Ctrl+L", m_lessons,
                                   toolbar=False, tip=tr("the lessons, with the steps you have done"))
        p = self.lesson_panel
        self.a_lesson_check = act(tr("Check the step"), p.check, "Ctrl+Return", m_lessons, toolbar=False)
        self.a_lesson_hint = act(tr("Next hint"), p.hint, "Ctrl+H", m_lessons, toolbar=False)
        self.a_lesson_next = act(tr("Next step"), p.next, "Alt+Right", m_lessons, toolbar=False)
        self.a_lesson_prev = act(tr("Previous step"), p.previous, "Alt+Left", m_lessons, toolbar=False)
        m_lessons.addSeparator()
        self.lesson_actions: list[QAction] = []  # one per installed lesson, made when the menu opens
        m_lessons.aboutToShow.connect(self._fill_lessons_menu)
        self.lesson_buttons_changed()
        for menu in (m_file, m_run, m_bp, m_view, m_lessons):
            add_mnemonics(menu)

    def _dock_shown(self, visible: bool) -> None:
        """A dock brought up (its tab chosen, shown from the View menu) shows the present
        at once: its panel is refreshed even before Qt has given it a visible region."""
        if not visible or not hasattr(self, "status"):
            return
        dock = self.sender()
        name = next((n for n, d in self.docks.items() if d is dock), None)
        self.refresh(also={name} if name else set())

    def _before_step(self, fn, forward: bool = True):
        def go():
            if forward and not self._may_run():
                return
            self.registers.mark_step()
            fn()
        return go

    def _may_run(self) -> bool:
        """A predict step not answered yet keeps the machine at its start (issue 14)."""
        why = self.lesson_panel.may_run()
        if why:
            self.status.setText(why)
            self.statusBar().showMessage(why, 8000)
        return not why

    def _toggle_run(self) -> None:
        if self.bridge.running or self._may_run():
            self.bridge.toggle_run()

    # -- breakpoints -----------------------------------------------------------------------------------
    def toggle_breakpoint(self, line: int) -> None:
        if not self.bridge.toggle_line_breakpoint(line):
            self.status.setText(tr("line {line} has no code: no breakpoint there").format(line=line))
        self.source.editor.breakpoints = set(self.bridge.line_breakpoints)
        self.source.editor.gutter.update()

    def _toggle_cursor_bp(self) -> None:
        self.toggle_breakpoint(self.source.editor.textCursor().blockNumber() + 1)

    def _bp_address(self) -> None:
        text, ok = QInputDialog.getText(self, tr("Break on address"), tr("guest address (hex) or symbol:"))
        if ok and text.strip():
            sym = self.bridge.session.image.symbols.get(text.strip())
            try:
                addr = sym if sym is not None else int(text.strip(), 16)
            except ValueError:
                self.status.setText(tr("not an address: {text}").format(text=text))
                return
            self.bridge.set_breakpoints(addresses=self.bridge.address_breakpoints | {addr})
            self.status.setText(tr("breakpoint at {addr:#x}").format(addr=addr))

    def _bp_exit(self) -> None:
        from vmsim.hw.vmx import ExitReason

        names = [r.name for r in ExitReason]
        name, ok = QInputDialog.getItem(self, tr("Break on VM exit"), tr("exit reason:"), names, 0, False)
        if ok:
            self.bridge.set_breakpoints(exits=self.bridge.exit_breakpoints | {name})
            self.status.setText(tr("breakpoint on VM exit {name}").format(name=name))

    def _bp_port(self) -> None:
        text, ok = QInputDialog.getText(self, tr("Break on port"), tr("I/O port (hex):"))
        if ok and text.strip():
            try:
                port = int(text.strip(), 16)
            except ValueError:
                return
            self.bridge.set_breakpoints(ports=self.bridge.port_breakpoints | {port})
            self.status.setText(tr("breakpoint on port {port:#x}").format(port=port))

    def set_event_breakpoint(self, spec: str, on: bool) -> None:
        """Break on an event (ui.text.EVENT_BREAKPOINTS: an interrupt injected, the BQL
        contended) or stop breaking on it."""
        events = set(self.bridge.event_breakpoints)
        for part in spec.split("|"):  # a key of EVENT_BREAKPOINTS may hold several
            (events.add if on else events.discard)(part)
        self.bridge.set_breakpoints(events=events)
        a = self.event_bp_actions.get(spec)
        if a is not None and a.isChecked() != on:
            a.setChecked(on)
        name = T.EVENT_BREAKPOINTS.get(spec, spec)
        self.status.setText((tr("breakpoint on {what}") if on else
                             tr("no breakpoint on {what}")).format(what=name))

    def _bp_clear(self) -> None:
        self.bridge.line_breakpoints.clear()
        self.bridge.set_breakpoints(set(), set(), set(), set())
        for a in self.event_bp_actions.values():
            a.blockSignals(True)
            a.setChecked(False)
            a.blockSignals(False)
        self.source.editor.breakpoints = set()
        self.source.editor.gutter.update()

    # -- the machine ------------------------------------------------------------------------------------
    def set_machine(self, smp: int | None = None, irqchip: str | None = None) -> None:
        """Run the guest on another machine (vCPUs, irqchip mode): it starts again."""
        b = self.bridge
        if b.gdb is not None:
            self.status.setText(tr("gdb drives this guest: detach it first"))
            self._sync_machine_controls()
            return
        try:
            b.set_machine(smp, irqchip)
        except ValueError as e:
            self.status.setText(str(e))
            self._sync_machine_controls()
            return
        self._sync_machine_controls()
        self._set_title()
        self.status.setText(tr("{smp} vCPU{s}, irqchip {irqchip}: the guest starts again").format(
            smp=b.smp, s="s" if b.smp > 1 else "", irqchip=b.irqchip))

    def _attach_disk_dialog(self, readonly: bool) -> None:
        path, _ = QFileDialog.getOpenFileName(self, T.ATTACH_DISK_RO if readonly else T.ATTACH_DISK,
                                              "", tr("Raw disk images (*.img *.raw *.bin);;All files (*)"))
        if path:
            self.attach_disk(path, readonly)

    def attach_disk(self, path: str | None, readonly: bool = False) -> bool:
        """Restart the session with this disk image (None: without one), as `vmsim run
        --disk FILE[,readonly]`. A path that cannot be opened is one line in the status
        bar; the session goes on as it was. Returns whether the disk changed."""
        b = self.bridge
        if b.gdb is not None:
            self.status.setText(tr("gdb drives this guest: detach it first"))
            return False
        try:
            b.set_disk(path, readonly)
        except (ValueError, OSError) as e:
            msg = T.DISK_REFUSED.format(error=" ".join(str(e).split()))
            self.status.setText(msg)
            self.statusBar().showMessage(msg, 10000)
            return False
        self._set_title()
        msg = (T.DISK_ATTACHED.format(name=Path(path).name, ro=T.READONLY if readonly else "")
               if path else T.DISK_DETACHED)
        self.status.setText(msg)
        self.statusBar().showMessage(msg, 5000)
        return True

    def _sync_machine_controls(self) -> None:
        b = self.bridge
        for w, set_value in ((self.smp_box, lambda: self.smp_box.setValue(b.smp)),
                             (self.irqchip_box, lambda: self.irqchip_box.setCurrentText(b.irqchip))):
            w.blockSignals(True)
            set_value()
            w.blockSignals(False)

    # -- guest source -----------------------------------------------------------------------------------
    def _load_source_text(self) -> None:
        img = self.bridge.session.image
        path = Path(img.source_file or self.guest_path)
        text = img.source or ""  # a snapshot's guest brings its source with it
        is_source = path.suffix.lower() in (".asm", ".s", ".nasm")
        savable = bool(text) and is_source
        if not text and is_source and path.exists():
            try:  # a regular file of bounded size only (a FIFO would block the GUI)
                text = read_input_file(path, SOURCE_LIMIT, "a source's limit").decode("utf-8")
                savable = True
            except (OSError, ValueError) as e:
                text = tr("; cannot show {path}: {error}").format(path=path, error=e)
        if self.bridge.factory is not None:  # a lesson's guest: its file is never written
            savable, path = False, Path(self.guest_path)
        # Save writes to the source's file; a flat binary (or one not shown) has none.
        self.source.set_source(str(path) if savable else None,
                               text or tr("; (a flat binary: no source)"), str(path))
        self.source.clear_error()
        if self.asm_error is not None:  # another guest (a snapshot's): it assembled
            self._show_asm_error(None)

    def _run_actions(self) -> list:
        """What runs, steps or keeps the machine: off while the guest does not assemble."""
        return [self.a_run, self.a_step_insn, self.a_step_event, self.a_step_exit, self.a_step_user,
                self.a_reset, self.a_gdb, self.a_save_snap, *self.back_actions]

    def _show_asm_error(self, e: AsmError | None) -> None:
        """The guest does not assemble (e) or does again (None): the error at its line in
        the editor and in the status bar, the run actions off until it assembles."""
        self.asm_error = e
        for a in self._run_actions():
            a.setEnabled(e is None)
        if e is None:
            self._update_back_actions()
            self._asm_status("")
            return
        self.source.show_error(e.line or None, e.message, e.col)  # one file: no %include
        self.raise_panel("", "source")
        self._asm_status(tr("{file} line {line}: {message}. Fix it, then Assemble & reset "
                            "(Ctrl+B)").format(file=Path(e.file).name, line=e.line, message=e.message))

    def _asm_status(self, text: str) -> None:
        """The assembler's error in the status bar, on the right, where the status line
        that every refresh rewrites does not cover it ("": none)."""
        label = getattr(self, "asm_status", None)
        if label is None:
            if not text:
                return
            label = self.asm_status = QLabel()
            label.setObjectName("asm-status")
            label.setStyleSheet("QLabel#asm-status { color: #b71c1c; background: #ffebee; "
                                "padding: 1px 6px; font-weight: bold }")
            self.statusBar().addPermanentWidget(label)
        label.setText(text)
        label.setToolTip(text)
        label.setVisible(bool(text))

    def reassemble(self, text: str) -> bool:
        """Assemble the edited text in place; on error, show it at its line, keep the text.
        The file on disk is not written (Save does that)."""
        if self.bridge.gdb is not None:
            self.status.setText(tr("gdb drives this guest: detach it first"))
            return False
        try:
            image = assemble(text, self.bridge.session.image.source_file or "<edited>")
        except AsmError as e:
            self.source.clear_error()
            if self.asm_error is not None:  # still does not assemble: the machine stays off
                self._show_asm_error(e)
            else:
                self._edit_error(e)
            return False
        self.source.clear_error()
        self._show_asm_error(None)
        self.bridge.reset(image)
        self.status.setText(tr("assembled; the guest starts again"))
        return True

    def _edit_error(self, e: AsmError) -> None:
        """An edit of a guest that ran does not assemble: the error is shown, the guest
        that ran stays (its actions on)."""
        self.source.show_error(e.line or None, e.message, e.col)
        self.raise_panel("", "source")
        self.status.setText(tr("assembly failed: {error}").format(error=e))
        self._asm_status(tr("The edit does not assemble (line {line}: {message}); the guest "
                            "is the last one that did").format(line=e.line, message=e.message))

    def open_guest(self, path: str | None = None) -> None:
        if self.bridge.gdb is not None:
            self.status.setText(tr("gdb drives this guest: detach it first"))
            return
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, tr("Open guest"), str(DEFAULT_GUEST.parent),
                                                  tr("Guests (*.asm *.bin);;All files (*)"))
        if not path:
            return
        try:  # a source with an assembly error opens too, in the editor, its error marked
            image, error = _load_guest(path)
        except (GuestLoadError, OSError, ValueError) as e:
            QMessageBox.warning(self, "vmsim", tr("cannot open {path}:\n{error}").format(path=path, error=e))
            return
        self.bridge.line_breakpoints.clear()
        self.bridge.factory = None  # the student's own guest, no longer a lesson step's
        self.bridge.reset(image)
        self.guest_path = path
        self._set_title()
        self._load_source_text()
        self._show_asm_error(error)
        self.source.editor.breakpoints = set()

    # -- repainting ---------------------------------------------------------------------------------------
    def on_events(self, events: list) -> None:
        self.events.add_events(events)
        self.devices.add_events(events)
        self.pagetables.add_events(events)
        if not events:
            return
        self.on_events_shown(events)

    def on_events_shown(self, events: list) -> None:
        """The diagram follows a step's events and lights the box of the most telling one."""
        story = []
        kinds = list(map(KIND_OF, events))
        self.seen_kinds = set(kinds)
        if self.bridge.running and self.bridge.speed >= SPEED_MAX:
            self.diagram.follow_all(events, self.seen_kinds)  # free running: the diagram repaints from state
            return
        # A run's events, taken at the pause (thousands): those before both the last 6 of a
        # virtio story and the last FOLLOWED_ONE_BY_ONE change only what follow_all keeps.
        start = max(0, len(events) - FOLLOWED_ONE_BY_ONE)
        if start and not self.seen_kinds.isdisjoint(STORY_KINDS):
            start = min(start, [i for i, k in enumerate(kinds) if k in STORY_KINDS][-6:][0])
        if start:
            self.diagram.follow_all(events[:start], set(kinds[:start]))
        for e in events[start:]:  # where interrupts come from, how kicks came, in order
            self.diagram.observe(e.kind)
            ctx = self.diagram.follow(e.kind, e.source, e.fields)
            if e.kind in STORY_KINDS:
                story.append((e, ctx))
        if story:  # a virtio request passed: the kick, the disk, the interrupt in turn
            self.diagram.show_story([(e.kind, e.source, {**e.fields, **ctx}, _caption(e))
                                     for e, ctx in story[-6:]])
            return
        ev = events[-1]
        # Light the most telling event of the step: the last interrupt on its way or BQL
        # contention (a VM entry follows an injection in the same step), else the last one
        # the diagram has a place for.
        # A run that ended: the end is what to tell (the guest's exit), not a wait before it.
        telling = None if self.bridge.finished else next(
            (e for e in reversed(events[-TELLING_SCAN:]) if _telling(e)
             and self.diagram.route(e.kind, e.source, e.fields) is not None), None)
        for e in reversed(events) if telling is None else ():
            if self.diagram.route(e.kind, e.source, e.fields) is not None:
                ev = e
                break
        ev = telling or ev
        self.diagram.show_event(ev.kind, ev.source, ev.fields, _caption(ev))

    def refresh(self, also: set[str] | None = None) -> None:
        """Every view from the session's state at its present event (one source of truth).
        Docks hidden in a tab are skipped (a running guest would pay for views nobody
        sees) and refreshed when shown (`also`: docks to refresh whatever Qt says of their
        visibility)."""
        b = self.bridge
        s = b.session
        line = b.current_line()
        editor = self.source.editor
        if editor.breakpoints != b.line_breakpoints:
            editor.breakpoints = set(b.line_breakpoints)
            editor.gutter.update()
        editor.set_current_line(line, scroll=not b.running)
        visible = {n for n, d in self.docks.items() if not d.visibleRegion().isEmpty()} | (also or set())

        def shown(name: str) -> bool:
            return name in visible or not self.isVisible()

        self.registers.refresh(b)
        if shown("disasm"):
            self.disasm.refresh(b)
        if shown("vmcs"):
            self.vmcs.refresh(b)
        if shown("pagetables"):
            self.pagetables.refresh(b)
        if shown("interrupts"):
            self.interrupts.refresh(b)
        if shown("vcpus"):
            self.vcpus.refresh(b)
        if shown("virtio"):
            self.queues.refresh(b)
        if shown("events"):
            self.events.catch_up()
        self.devices.refresh(b)
        self.stats.refresh(b)
        self._update_timeline()
        if not b.running:
            self._update_back_actions()
        self._diagram_details()
        if b.running and b.speed >= SPEED_MAX:
            in_guest = [f"guest.vcpu{d['index']}" for d in s.vcpu_states() if d.get("mode") == "in_guest"]
            self.diagram.highlight(in_guest[0] if in_guest else "kvm.run_loop", (),
                                   tr("running: repainting from state"))
        eip = s.registers(0)["EIP"] if s.cpus else 0  # as Registers and the vCPU box have it
        state = (tr("running") if b.running else
                 tr("finished: {why}").format(why=b.outcome.reason or "") if b.finished else tr("paused"))
        self.status.setText(tr("{state} | EIP {eip:#010x} line {line} | {n} instructions | virtual time "
                               "{time} cycles | paging {paging}").format(
            state=state, eip=eip, line=line or "-", n=s.instructions, time=s.virtual_time, paging=s.paging))

    def lit_boxes(self) -> set[str]:
        """What runs now: the vCPUs in the guest, the vCPU threads not waiting, the main
        loop (running, or it ran just now: SessionBridge.main_loop_active), a held BQL."""
        b = self.bridge
        s = b.session
        lit: set[str] = set()
        th = s.threads()
        waiting = {t["name"] for t in th["threads"] if t["waiting"] or t["done"]}
        for d in s.vcpu_states():
            n = d["index"]
            if d.get("mode") == "in_guest":
                lit.add(f"guest.vcpu{n}")
            if d["thread"] not in waiting:
                lit.add(f"qemu.vcpu_thread{n}")
        if b.main_loop_active():
            lit.add("qemu.main_loop")
        if th.get("bql") and th["bql"]["owner"]:
            lit.add("qemu.bql")
        if any(t["name"].startswith(IOTHREAD_PREFIX) and not (t["waiting"] or t["done"])
               for t in th["threads"]):
            lit.add("qemu.iothread")
        if self.seen_kinds & DISK_KINDS:  # a request reached the disk in the last step
            lit.add("hw.disk")
        if any(k.startswith(("virtio", "virtqueue")) and k != "virtio_mmio_read"
               for k in self.seen_kinds):
            lit.add("qemu.virtio_blk")
        return lit

    def _diagram_details(self) -> None:
        b = self.bridge
        s = b.session
        d: dict[str, str] = {}
        ic = s.interrupt_controllers()
        self.diagram.pic_bases = tuple(c["irq_base"] for c in ic["pic"] or ())
        th = s.threads()
        if s.vm is not None:
            self._thread_details(d, th, ic)
        self.diagram.set_lit(self.lit_boxes())
        if s.cpus:
            for n, c in enumerate(s.cpus):  # as the registers panel has them (KVM_GET_REGS)
                r = s.registers(n)
                d[f"guest.vcpu{n}"] = tr("EIP {eip:#010x}  EAX {eax:#x}  ESP {esp:#x}  {n} insns").format(
                    eip=r["EIP"], eax=r["EAX"], esp=r["ESP"], n=c.icount)
            c = s.cpus[0]
            cr0 = s.registers(0)["CR0"]  # the guest's, as Registers has it
            vmx = getattr(s.vm.cpus[0].vcpu, "vmx", None) if s.vm is not None else None
            mode = (tr("VMX non-root: running the guest") if vmx is not None and vmx.guest_mode
                    else tr("VMX root: host (kvm.ko / QEMU)"))
            d["hw.cpu"] = f"{mode}; CR0 {cr0:#x}"
            d["hw.mmu"] = (tr("paging on, {n} TLB entries") if cr0 >> 31 else
                           tr("paging off, {n} TLB entries")).format(n=len(c.mmu.tlb))
        m = s.machine
        bql = th.get("bql")
        if bql is None:
            d["qemu.bql"] = tr("held by {owner}").format(owner=m.bql.owner or T.NOBODY)
        d["hw.memory"] = tr("{n} MiB RAM").format(
            n=m.config.memory_mib if hasattr(m.config, 'memory_mib') else '')
        if s.vm is not None and hasattr(s.vm.cpus[0].vcpu, "vmcs"):
            ex = s.last_exit()
            d["kvm.run_loop"] = tr("KVM_RUN > vcpu_enter_guest > VM entry ... {last}").format(
                last=tr("last exit {reason}").format(reason=ex['reason']) if ex else tr("no exit yet"))
            d["kvm.mmu"] = (tr("EPT (TDP MMU): {n} gfns mapped").format(n=len(s.ept_entries()))
                            if s.paging == "ept" else
                            tr("shadow paging: {n} shadow pages").format(n=len(s.shadow_pages())))
            d["hw.vmcs"] = tr("launched") if s.vm.cpus[0].vcpu.vmcs.launched else tr("not launched")
            counts = b.stats.as_dict()["vm_exits"]
            d["kvm.exit_handlers"] = "kvm_vmx_exit_handlers[]: " + (
                ", ".join(f"{r['reason']} {r['count']}" for r in counts[:3]) or tr("none yet"))
        d["qemu.serial"] = tr("port 0x3F8; {n} bytes sent").format(n=s.serial_total)
        self._virtio_details(d, th)
        self.diagram_details = d  # what the boxes say now (tests compare it with the session)
        self.diagram.set_details(d)

    def _virtio_details(self, d: dict[str, str], th: dict) -> None:
        """The disk (image, size, sectors read and written), the virtio-blk device (its
        transport, status and queue 0's indices) and the iothread, if the machine has one."""
        views = [v for v in self.bridge.session.virtio_queues() if "disk" in v]
        v = views[0] if views else None
        if v is None:
            d["hw.disk"] = T.NO_DISK
            d["qemu.virtio_blk"] = T.VIRTIO_BOX_NONE
        else:
            size = os.path.getsize(v["disk"]) if os.path.exists(v["disk"]) else 0
            d["hw.disk"] = T.DISK_BOX.format(
                name=Path(v["disk"]).name, ro=T.READONLY if v["readonly"] else "", size=_bytes(size),
                capacity=v["capacity"], read=v["sectors_read"], written=v["sectors_written"],
                touched=len(v["sectors_touched"]))
            q = v["queues"][0] if v.get("queues") else {}
            avail, used = q.get("avail") or {}, q.get("used") or {}
            d["qemu.virtio_blk"] = T.VIRTIO_BOX.format(
                transport=v["transport"], base=v["base"], irq=v["irq"],
                status=" ".join(v["status_names"]) or "0", avail=avail.get("idx", "-"),
                last_avail=q.get("last_avail_idx", "-"), used=used.get("idx", "-"))
        self.diagram.virtio_irqs |= {v["irq"] for v in views}
        iothreads = [t for t in th.get("threads", []) if t["name"].startswith(IOTHREAD_PREFIX)]
        self.diagram.iothread = bool(iothreads)
        d["qemu.iothread"] = ("; ".join(T.IOTHREAD_BOX.format(
            name=t["name"], state=tr("ended") if t["done"] else
            tr("waits: {what}").format(what=t['waiting']) if t["waiting"] else tr("running"))
            for t in iothreads)
            or T.IOTHREAD_NONE)

    def _thread_details(self, d: dict[str, str], th: dict, ic: dict) -> None:
        """The vCPU threads, the main loop, the BQL and the interrupt controllers' boxes."""
        bql = th["bql"]
        threads = {t["name"]: t for t in th["threads"]}
        for v in self.bridge.session.vcpu_states():
            t = threads.get(v["thread"], {})
            if t.get("done"):
                what = tr("ended")
            elif v.get("mode") == "in_guest":
                what = tr("KVM_RUN: in the guest")
            elif v.get("mode") == "blocked":
                what = tr("KVM_RUN: kvm_vcpu_block (HLT)")
            elif t.get("waiting"):
                what = tr("waits: {what}").format(what=t['waiting'])
            else:
                what = tr("running: kvm_cpu_exec")
            if bql["owner"] == v["thread"]:
                what = tr("{what}; holds the BQL").format(what=what)
            d[f"qemu.vcpu_thread{v['index']}"] = what
        loop = th["main_loop"]
        d["qemu.main_loop"] = tr("main_loop_wait: {state}; {n} timers armed").format(
            state=T.MAIN_LOOP_RUNNING if loop["running"] else T.MAIN_LOOP_POLLING, n=len(loop['timers']))
        d["qemu.bql"] = tr("owner {owner}; waiting: {waiters}; contended {n}x").format(
            owner=bql['owner'] or T.NOBODY, waiters=', '.join(bql['waiters']) or T.NONE, n=bql['contended'])
        pic, pit = ic.get("pic"), ic.get("pit")
        where = "kvm" if ic["irqchip"] == "kernel" else "qemu"
        if pic:
            d[f"{where}.pic"] = " ".join(f"IRR {c['irr']:02X} ISR {c['isr']:02X} IMR {c['imr']:02X}"
                                         for c in pic[:1]) + f" base {pic[0]['irq_base']:#04x}"
        if pit:
            ch = pit[0]
            d[f"{where}.pit"] = f"ch0 mode {ch['mode']} reload {ch['reload']} OUT {ch['out']}"
        apics = ic.get("apics") or []
        if apics:
            busy = sum(1 for a in apics if a["irr"] or a["isr"])
            timers = sum(1 for a in apics if a.get("next_expiry") is not None)
            d["kvm.lapic"] = tr("{n} APICs; {busy} with IRR/ISR bits; {timers} timers armed").format(
                n=len(apics), busy=busy, timers=timers)

    def _set_animate(self, on: bool) -> None:
        """View > Animate event paths: the diagram animates each event; off, the run loop
        also takes longer time boxes (SessionBridge.animate)."""
        self.diagram.animate = on
        self.bridge.animate = on

    def _running_changed(self, running: bool) -> None:
        self.events.set_running(running)
        self.a_run.setText(tr("Pause") if running else tr("Run"))
        for a in (self.a_step_insn, self.a_step_event, self.a_step_exit, self.a_step_user):
            a.setEnabled(True)
        self._update_back_actions()

    def _update_back_actions(self) -> None:
        """The back actions are on when the session can step back; off, their tooltip
        says why (the host's KVM, no VM, the start of the run, gdb)."""
        why = self.bridge.back_refusal()
        for a, tip in self.back_actions.items():
            a.setEnabled(not why)
            a.setToolTip(tip if not why else f"{tip}: {why}")

    def _update_timeline(self) -> None:
        b = self.bridge
        data = b.timeline()
        self.timeline.set_timeline(data, "" if data is not None else b.back_refusal())

    def _rewound(self, seq: int) -> None:
        """The session went back to just after event `seq`: every view drops what came
        later (the events, the serial output, the device log, the last walk) and shows
        the session's state there; the diagram lights the box of the last event left."""
        b = self.bridge
        self.events.truncate(seq)
        self.devices.truncate(seq, bytes(b.session.serial))
        self.pagetables.last_walk = [ev for ev in self.pagetables.last_walk if ev.seq <= seq]
        self.pagetables._key = None
        self.seen_kinds = set()
        last = next((ev for ev in reversed(b.history)
                     if self.diagram.route(ev.kind, ev.source, ev.fields) is not None), None)
        if last is None:
            self.diagram.highlight(None)
        else:
            self.diagram.show_event(last.kind, last.source, last.fields, _caption(last))

    def seek(self, t: int) -> None:
        """Go to virtual time `t` (the timeline's click or drag)."""
        b = self.bridge
        self.registers.mark_step()
        if b.seek(t) is not None:  # the console as COM1 had sent it by then, however it got there
            self.devices.truncate(b.last_seq, bytes(b.session.serial))

    def _wait_for_gdb(self) -> None:
        port, ok = QInputDialog.getInt(self, tr("Wait for gdb"),
                                       tr("TCP port on 127.0.0.1 (0: any free port):"), 1234, 0, 65535)
        if not ok:
            return
        try:
            self.bridge.wait_for_gdb(port)
        except OSError as e:
            QMessageBox.warning(self, "vmsim", tr("cannot listen on 127.0.0.1:{port}:\n{error}").format(
                port=port, error=e.strerror or e))

    def _gdb_changed(self, text: str) -> None:
        """While a debugger drives the session, the window only shows it."""
        for a in (self.a_run, self.a_step_insn, self.a_step_event, self.a_step_exit,
                  self.a_step_user, self.a_reset, self.a_open, self.a_gdb):
            a.setEnabled(not text)
        for a in (self.a_attach, self.a_attach_ro, self.a_detach, self.a_save_snap, self.a_open_snap):
            a.setEnabled(not text)
        self.timeline.setEnabled(not text)
        self._update_back_actions()
        self.smp_box.setEnabled(not text)
        self.irqchip_box.setEnabled(not text)
        if text:
            self.status.setText(text)
            self.statusBar().showMessage(text)
        else:
            self.statusBar().clearMessage()

    def _stopped(self, why: str) -> None:
        ev = self.bridge.break_event
        if ev is not None and why.startswith(tr("breakpoint")):  # the diagram shows that event
            self.diagram.show_event(ev.kind, ev.source, ev.fields, _caption(ev))
        self.status.setText(why)
        self.statusBar().showMessage(why, 5000)

    def _session_reset(self) -> None:
        b = self.bridge
        L = self.diagram.layout_data
        if (L.smp, L.irqchip) != (b.smp, b.irqchip):  # another machine: redraw the diagram
            self.diagram.set_layout(load_layout(smp=b.smp, irqchip=b.irqchip))
        self.devices.reset()
        self.queues.reset()
        self.seen_kinds = set()
        self.events.clear()
        self.vmcs.reset()
        self.pagetables.last_walk = []
        self.pagetables._key = None
        self.registers.previous = {}
        self.diagram.highlight(None)
        self.timeline.reset()

    def raise_panel(self, box: str, panel: str) -> None:
        vcpu = self.diagram.layout_data.boxes[box].vcpu if box in self.diagram.layout_data.boxes else None
        if vcpu is not None and panel == "registers":  # a vCPU's box: that vCPU's registers
            self.registers.show_cpu(vcpu)
        dock = self.docks.get(panel)
        if dock is not None:
            if self.presentation and panel != self._last_raised:  # the one panel beside the diagram
                for name, other in self.docks.items():
                    if name != panel and other.isVisible() and not other.isFloating():
                        other.hide()
            self._last_raised = panel
            dock.show()
            dock.raise_()

    # -- look ---------------------------------------------------------------------------------------------
    def apply_theme(self, theme: str) -> None:
        self.theme = theme
        app = QApplication.instance()
        app.setStyle("Fusion")
        pal = QPalette()
        if theme == "dark":
            R = QPalette.ColorRole
            for role, color in ((R.Window, "#1e2327"), (R.WindowText, "#eceff1"), (R.Base, "#14181b"),
                                (R.AlternateBase, "#22282c"), (R.Text, "#eceff1"), (R.Button, "#2a3136"),
                                (R.ButtonText, "#eceff1"), (R.Highlight, "#3d6fa5"),
                                (R.HighlightedText, "#ffffff"), (R.ToolTipBase, "#2a3136"),
                                (R.ToolTipText, "#eceff1"), (R.PlaceholderText, "#8a9199")):
                pal.setColor(role, QColor(color))
        else:
            pal = app.style().standardPalette()
        # Disabled text still readable (Fusion's is about 1.6:1 on a button): about 4:1.
        for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
            pal.setColor(QPalette.ColorGroup.Disabled, role,
                         QColor("#8c96a0" if theme == "dark" else "#6e6e6e"))
        app.setPalette(pal)
        self.diagram.apply_theme(theme)
        self.source.editor.set_theme(theme)
        self.registers.theme = theme
        self.events.theme = theme
        self.pagetables.theme = theme
        self.interrupts.theme = theme
        self.stats.set_theme(theme)
        self.timeline.theme = theme
        self.timeline.update()
        if self.a_dark.isChecked() != (theme == "dark"):
            self.a_dark.setChecked(theme == "dark")

    def set_presentation(self, on: bool) -> None:
        """Presentation mode (View menu, toolbar, --presentation): the diagram and the
        panel in focus (the one last raised or clicked in), fonts PRESENT_FONT times
        larger, the other panels hidden, the diagram's animation slowed so each hop can
        be followed. Off: the layout, the fonts and the panels as they were."""
        if on != self.presentation:
            if on:
                self._enter_presentation()
            else:
                self._leave_presentation()
        for t in self.findChildren(QTableWidget):
            compact(t)
        if self.a_present.isChecked() != on:
            self.a_present.setChecked(on)

    def focused_dock(self) -> str:
        """The panel presentation mode keeps: the one holding the keyboard focus, else
        the one last raised (a click on the diagram's box), else the guest source."""
        w = QApplication.focusWidget()
        for name, dock in self.docks.items():
            if w is not None and dock.isAncestorOf(w) and dock.isVisible():
                return name
        last = getattr(self, "_last_raised", None)
        return last if last in self.docks else "source"

    def _enter_presentation(self) -> None:
        self._pre_state = self.saveState(SETTINGS_VERSION)
        keep = self.focused_dock()
        self._pre_fonts: list[tuple[QWidget, QFont]] = []
        app = QApplication.instance()
        self._pre_app_font = QFont(app.font())
        f = QFont(self._pre_app_font)
        f.setPointSizeF(max(f.pointSizeF(), 9) * PRESENT_FONT)
        for bar in self.findChildren(QToolBar):  # the teacher's controls keep their size (and fit)
            if not bar.testAttribute(Qt.WidgetAttribute.WA_SetFont):
                self._pre_fonts.append((bar, QFont(bar.font())))
                bar.setFont(QFont(self._pre_app_font))
        app.setFont(f)
        for w in self.findChildren(QWidget):  # fonts a widget sets itself (the monospaced ones)
            if isinstance(w, QToolBar) or isinstance(w.parentWidget(), QToolBar):
                continue
            if w.testAttribute(Qt.WidgetAttribute.WA_SetFont):
                wf = QFont(w.font())
                self._pre_fonts.append((w, QFont(wf)))
                wf.setPointSizeF(max(wf.pointSizeF(), 8) * PRESENT_FONT)
                w.setFont(wf)
        self.presentation = True
        for name, dock in self.docks.items():
            if name != keep:
                dock.hide()
        kept = self.docks[keep]
        kept.setFloating(False)
        kept.show()
        kept.raise_()
        if self.dockWidgetArea(kept) not in (Qt.DockWidgetArea.LeftDockWidgetArea,
                                             Qt.DockWidgetArea.RightDockWidgetArea):
            self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, kept)
        self.resizeDocks([kept], [int(self.width() * PRESENT_DOCK)], Qt.Orientation.Horizontal)
        self.diagram.set_presentation(True)
        self.source.editor._update_width()  # the gutter as wide as its larger numbers

    def _leave_presentation(self) -> None:
        size = self.size()  # (the large fonts' minimum sizes linger a moment: the window kept)
        QApplication.instance().setFont(self._pre_app_font)
        for w, wf in self._pre_fonts:
            try:
                if isinstance(w, QToolBar):
                    w.setFont(QFont())  # back to following the application's font
                    w.setAttribute(Qt.WidgetAttribute.WA_SetFont, False)
                else:
                    w.setFont(wf)
            except RuntimeError:  # deleted since (a panel's rebuilt row)
                pass
        self._pre_fonts = []
        self.presentation = False
        self.source.editor._update_width()
        self.diagram.set_presentation(False)
        self.restoreState(self._pre_state, SETTINGS_VERSION)
        self._unelide_tabs()
        if not self.windowState() & (Qt.WindowState.WindowMaximized | Qt.WindowState.WindowFullScreen):
            QTimer.singleShot(0, lambda: self.resize(size.expandedTo(self.minimumSizeHint())))

    # -- layout memory ---------------------------------------------------------------------------------------
    def restore_layout(self) -> None:
        self._restored = False
        s = self.settings
        if s is None:
            return
        if s.value("version") == SETTINGS_VERSION:
            geo = s.value("geometry")
            state = s.value("state")
            if isinstance(geo, QByteArray):
                self.restoreGeometry(geo)
            if isinstance(state, QByteArray):
                self._restored = self.restoreState(state, SETTINGS_VERSION)

    def save_layout(self) -> None:
        s = self.settings
        if s is None:
            return
        s.setValue("version", SETTINGS_VERSION)
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self._pre_state if self.presentation else self.saveState(SETTINGS_VERSION))
        s.setValue("theme", self.theme)

    def closeEvent(self, event) -> None:
        self.bridge.pause()
        self.bridge.release_heap()
        self.save_layout()
        if self._lesson_tmp is not None:  # Do these for me's snapshots
            self._lesson_tmp[1]()
            self._lesson_tmp, self._lesson_snapshots = None, 0
        super().closeEvent(event)

    def _export_timeline_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, tr("Export timeline"), "vmsim-timeline.json",
                                              tr("Chrome trace JSON (*.json)"))
        if path:
            self.export_timeline(path)

    def export_timeline(self, path: str) -> str:
        """Write the timeline of the events the bridge keeps (the event log's, the last
        ones of a long run) as Chrome trace JSON; returns what the status bar says."""
        from vmsim.files import OutputError
        from vmsim.perfetto import write_timeline

        try:
            with open(path, "w", encoding="utf-8") as f:
                n = write_timeline(list(self.bridge.history), f, path)
            msg = tr("timeline: {n} trace events in {path} (open it in ui.perfetto.dev)").format(
                n=n, path=path)
        except OutputError as e:
            msg = str(e)
        except OSError as e:
            msg = f"{path}: {e.strerror}"
        self.statusBar().showMessage(msg, 10000)
        return msg

    # -- snapshots (issue 12) -------------------------------------------------------------------------
    def _save_snapshot_dialog(self) -> None:
        name = default_name(self.guest_path)
        path, _ = QFileDialog.getSaveFileName(self, T.SAVE_SNAPSHOT, name, T.SNAPSHOT_FILTER)
        if path:
            if not Path(path).suffix:
                path += SNAPSHOT_SUFFIX
            self.save_snapshot(path)

    def _open_snapshot_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, T.OPEN_SNAPSHOT, "", T.SNAPSHOT_FILTER)
        if path:
            self.open_snapshot(path)

    def _refused(self, msg: str) -> None:
        """A refusal: one line in a message box and in the status bar, never a traceback."""
        self.status.setText(msg)
        self.statusBar().showMessage(msg, 10000)
        QMessageBox.warning(self, "vmsim", msg)

    def save_snapshot(self, path: str) -> bool:
        """Write the session to a snapshot file (Session.save_snapshot); the status bar
        says its summary, or the one-line reason it could not."""
        if self.bridge.gdb is not None:
            self._refused(T.NO_BACK_GDB)
            return False
        try:  # (a lesson records QEMU's stop path: the KVM_GET_* ioctls)
            summary = self.bridge.save_snapshot(path, self.lesson_panel.stop_event_sink())
        except (SnapshotError, ValueError, OSError) as e:
            self._refused(T.SNAPSHOT_SAVE_FAILED.format(error=_one_line(e)))
            return False
        msg = T.SNAPSHOT_SAVED.format(summary=_one_line(summary))
        self.status.setText(msg)
        self.statusBar().showMessage(msg, 10000)
        return True

    def open_snapshot(self, path: str) -> bool:
        """Reopen the session a snapshot holds: its guest source in the editor, its
        machine in the toolbar, its state in every view. A file that cannot be read is
        refused with one line; the session goes on as it was."""
        b = self.bridge
        if b.gdb is not None:
            self._refused(T.NO_BACK_GDB)
            return False
        self.lesson_panel.resuming = True  # a lesson's checks see the run before it, then this one
        try:
            b.load_snapshot(path)
        except (SnapshotError, ValueError, OSError) as e:
            self._refused(T.SNAPSHOT_OPEN_FAILED.format(error=_one_line(e)))
            return False
        finally:
            self.lesson_panel.resuming = False
        self.snapshot_opened(path)
        return True

    def snapshot_opened(self, path: str) -> None:
        """The bridge holds the session reopened from `path`: the window follows it."""
        b = self.bridge
        s = b.session
        self.guest_path = s.image.source_file or path
        self._sync_machine_controls()
        self._set_title()
        self._load_source_text()
        self.source.editor.breakpoints = set()
        self.refresh()
        msg = T.SNAPSHOT_OPENED.format(name=Path(path).name, backend=s.backend, smp=b.smp,
                                       s="s" if b.smp > 1 else "", irqchip=b.irqchip,
                                       time=s.virtual_time)
        self.status.setText(msg)
        self.statusBar().showMessage(msg, 10000)

    def _screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, tr("Save screenshot"), "vmsim.png", tr("PNG (*.png)"))
        if path:
            self.grab().save(path)

    # -- lessons (issue 14) -----------------------------------------------------------------------
    def installed_lessons(self) -> list:
        """The lessons of vmsim.lessons.lesson_roots(), by number; one that does not load is
        left out (the status bar says which and why: `vmsim lesson lint` tells more)."""
        if self._lessons is None:
            from vmsim.lessons import LessonError, lesson_roots, load_lesson

            found: dict[str, object] = {}
            bad: list[str] = []
            for root in lesson_roots():
                if not root.is_dir():
                    continue
                for d in sorted(root.iterdir()):
                    if not (d / "lesson.toml").is_file():
                        continue
                    try:
                        lesson = load_lesson(d)
                    except (LessonError, OSError, ValueError) as e:
                        bad.append(_one_line(e))
                        continue
                    found.setdefault(lesson.id, lesson)  # the checkout's before an installed copy
            self._lessons = sorted(found.values(), key=lambda lesson: lesson.number)
            if bad:
                self.statusBar().showMessage(tr("a lesson could not be read: {error}").format(error=bad[0]),
                                             15000)
        return self._lessons

    def lesson_progress(self):
        if getattr(self, "progress", None) is None:
            from vmsim.lessons.progress import Progress

            self.progress = Progress.load()
            if self.progress.warning:  # a corrupt file, kept aside: the student is told
                self.statusBar().showMessage(self.progress.warning, 15000)
        return self.progress

    def open_lesson(self, lesson, step: str | None = None) -> bool:
        """Open a lesson (a Lesson, or its id or number) in the lesson panel at `step`, else
        where the student was last, else its first step. Returns False (with one line
        in the status bar) for a lesson that cannot be found or read."""
        from vmsim.lessons import LessonError, find_lesson
        from vmsim.lessons.run import LessonRun

        if isinstance(lesson, str):
            try:
                lesson = find_lesson(lesson)
            except (LessonError, LookupError, ValueError, OSError) as e:
                self._refused(tr("cannot open the lesson: {error}").format(error=_one_line(e)))
                return False
        placed = self.lesson_open and not self.docks["lesson"].isHidden()
        self.lesson_panel.lesson = lesson  # (the docks are arranged for an open lesson)
        if not placed:
            if self.isVisible():
                self.reset_layout()
            else:
                self._restored = False
                self._arrange_docks(self._first, compact=self._compact)
        panel = self.lesson_panel
        same = panel.run is not None and panel.run.lesson.id == lesson.id
        run = panel.run if same else LessonRun(lesson)  # (it follows the session already)
        panel.open(lesson, run, self.lesson_progress(), step)
        return True

    def choose_lesson(self) -> None:
        """Lessons > Choose a lesson: the list with numbers, titles and steps done."""
        lessons = self.installed_lessons()
        if not lessons:
            self._refused(tr("No lessons are installed (the lessons/ directory is empty or missing)."))
            return
        current = self.lesson_panel.lesson.id if self.lesson_open else None
        dialog = LessonChooser(lessons, self.lesson_progress(), self, current)
        if dialog.exec() and dialog.chosen() is not None:
            self.open_lesson(dialog.chosen())

    def _fill_lessons_menu(self) -> None:
        """The Lessons menu lists every lesson with its steps done (made as it opens)."""
        menu = self.lessons_menu
        for a in self.lesson_actions:
            menu.removeAction(a)
        self.lesson_actions = []
        progress = self.lesson_progress()
        current = self.lesson_panel.lesson.id if self.lesson_open else None
        for lesson in self.installed_lessons():
            done = sum(1 for st in lesson.steps if progress.step_status(lesson.id, st.id) == "done")
            a = QAction(tr("{n}. {title} ({done}/{total})").format(
                n=lesson.number, title=text_of(lesson.title).replace("&", "&&"), done=done,
                total=len(lesson.steps)), self, checkable=True)
            a.setChecked(lesson.id == current)
            a.setToolTip(text_of(lesson.summary))
            a.triggered.connect(lambda _on=False, lesson=lesson: self.open_lesson(lesson))
            menu.addAction(a)
            self.lesson_actions.append(a)
        add_mnemonics(menu)

    def lesson_enter_step(self, lesson, step, fresh: bool = False) -> None:
        """The window set up for a lesson's step: its guest (a modify step's start) and
        machine, in a new session when they differ from the current one's (or `fresh`,
        or a predict step after the machine ran, or a do step after it finished), and the
        panels the step names raised."""
        if self.bridge.gdb is not None:  # the debugger's session stays until it detaches
            self.status.setText(tr("gdb drives this guest: detach it first"))
            self._raise_step_panels(step)
            return
        guest = step.start if step.kind == "modify" and step.start is not None else step.guest
        key = (lesson.id, str(guest), repr(sorted(step.machine.items())))
        s = self.bridge.session
        if step.kind == "predict" and (s.instructions or self.bridge.finished):
            fresh = True  # a prediction is made before the machine runs
        if step.kind == "do" and self.bridge.finished:
            fresh = True  # nothing more can be done in a finished run: the step's checks
            # would pass (or fail) on what an earlier step did
        if fresh or key != self._lesson_key or self.bridge.factory is None:
            self._lesson_session(lesson, step, guest, key)
        else:
            self.lesson_panel.attach(self.bridge.session)
        self._raise_step_panels(step)

    def _lesson_session(self, lesson, step, guest: Path | None, key: tuple) -> None:
        from vmsim.lessons.run import record_from_start

        b = self.bridge
        source = guest.read_text(encoding="utf-8") if guest is not None and guest != step.guest else None
        first: dict[str, object] = {}

        def make(image, **kw):
            """The step's session (its events recorded from its construction, for the
            LessonRun); after an edit (Assemble & reset), of the editor's text."""
            src = source
            if image is not None and "image" in first and image is not first["image"]:
                src = image.source
            session = record_from_start(lesson, step, src, source_name=str(guest or "guest.asm"), **kw)
            first.setdefault("image", session.image)
            return session

        old = (b.factory, b.guest)
        b.pause()
        b.line_breakpoints.clear()
        # Another guest: the breakpoints set for the one before would stop it where the
        # step is not about (an exit reason, a port, an event, an address).
        cleared = (self._lesson_key is not None and self._lesson_key[:2] != key[:2] and any(
            (b.address_breakpoints, b.exit_breakpoints, b.port_breakpoints, b.event_breakpoints)))
        if cleared:
            self._bp_clear()
        b.factory, b.guest = make, None
        try:
            b.reset()
        except Exception as e:  # a lesson's guest or machine that fails: one line
            b.factory, b.guest = old
            b.reset()
            self._refused(tr("cannot start this step's machine: {error}").format(error=_one_line(e)))
            return
        self._lesson_key = key
        self.guest_path = str(guest or b.session.image.source_file or lesson.directory)
        self._sync_machine_controls()
        self._set_title()
        self._load_source_text()
        self._show_asm_error(None)
        self.source.editor.breakpoints = set()
        self.lesson_panel.attach(b.session)
        self.refresh()
        if cleared:
            msg = tr("This step has another guest: the breakpoints set before are cleared.")
            self.status.setText(msg)
            self.statusBar().showMessage(msg, 10000)

    def _raise_step_panels(self, step) -> None:
        """The panels a step names shown, the first named in front of its tab group
        (raised last); the lesson stays shown beside them."""
        for name in reversed(step.show):
            if name in self.docks and name != "lesson":
                self.raise_panel("", name)
        lesson = self.docks["lesson"]
        if not self.presentation or "lesson" in step.show:
            lesson.show()
            lesson.raise_()

    def lesson_source(self) -> str:
        """A modify step's answer: the editor's text."""
        return self.source.editor.toPlainText()

    def lesson_set_source(self, text: str) -> None:
        """Put a guest in the editor (a solution, a practice problem's guest) and run it."""
        self.source.set_source(None, text, self.guest_path)
        self.reassemble(text)
        self.raise_panel("", "source")

    def lesson_do_actions(self, actions: list[dict]) -> bool:
        """A do step's reference actions on the window's session, from the step's start
        (Show solution > Do these for me), each as its button would: the views follow."""
        from vmsim.lessons.run import STEP_LIMIT, event_matches

        b = self.bridge
        b.reset()
        if self.lesson_panel.may_run():
            return False
        snapshot = None  # the last one saved, as the engine's save_snapshot keeps it
        for a in actions:
            do = a.get("do")
            for _ in range(int(a.get("count", 1))):
                s = b.session
                if do == "save_snapshot":  # File > Save snapshot…, to a temporary file
                    snapshot = os.path.join(self._lesson_snapshot_dir(), f"s{self._lesson_snapshots}.vmsnap")
                    self._lesson_snapshots += 1
                    if not self.save_snapshot(snapshot):
                        return False
                    continue
                if do == "resume_snapshot":  # File > Open snapshot… of that file
                    if snapshot is None or not self.open_snapshot(snapshot):
                        return False
                    continue
                if b.finished:
                    break
                if do == "run":
                    b._step(s.run)
                elif do == "run_until" and "address" in a:
                    saved = set(b.address_breakpoints)
                    b.set_breakpoints(addresses={a["address"]})
                    try:
                        b._step(lambda s=s: s.run_for(seconds=None))
                    finally:
                        b.set_breakpoints(addresses=saved)
                elif do == "run_until":
                    b._step(lambda s=s, a=a: s.step_until(
                        lambda ev: event_matches(ev, a["kind"], a.get("where") or {}), STEP_LIMIT))
                elif do in ("step_instruction", "step_event", "step_vmexit", "step_userspace_exit"):
                    self.registers.mark_step()
                    getattr(b, do)()
                else:  # (the lesson format has no other action)
                    self.status.setText(tr("{action}: do it from the File menu").format(action=do))
                    return False
        self.refresh()
        if snapshot is not None:
            self.status.setText(tr("Done for you; the snapshot is {path}. Now press Check.")
                                .format(path=snapshot))
        return True

    def _lesson_snapshot_dir(self) -> str:
        """Where Do these for me saves a step's snapshots (removed with the window)."""
        if self._lesson_tmp is None:
            import shutil
            import tempfile
            import weakref

            path = tempfile.mkdtemp(prefix="vmsim-lesson-")
            self._lesson_tmp = (path, weakref.finalize(self, shutil.rmtree, path, ignore_errors=True))
        return self._lesson_tmp[0]

    def lesson_before_check(self) -> None:
        self.bridge.pause()

    def lesson_buttons_changed(self) -> None:
        """The Lessons menu's step actions as the panel's buttons."""
        p = self.lesson_panel
        for a, button in ((self.a_lesson_check, p.b_check), (self.a_lesson_hint, p.b_hint),
                          (self.a_lesson_next, p.b_next), (self.a_lesson_prev, p.b_prev)):
            a.setEnabled(self.lesson_open and button.isEnabled())

    # -- language (issue 13) ----------------------------------------------------------------------
    def _make_language_menu(self, m_view) -> None:
        """View > Language: each language named in itself; a choice applies at once."""
        m_view.addSeparator()
        menu = m_view.addMenu(tr("&Language"))
        group = QActionGroup(self)
        group.setExclusive(True)
        self.language_actions: dict[str, QAction] = {}
        for lang, name in i18n.LANGUAGES.items():
            a = QAction(name, self, checkable=True)
            a.setChecked(lang == i18n.current_language())
            a.triggered.connect(lambda _on=False, lang=lang: self.set_language(lang))
            group.addAction(a)
            menu.addAction(a)
            self.language_actions[lang] = a

    def set_language(self, lang: str) -> bool:
        """Switch the window to `lang` ("en", "zh_CN") now, keeping the session as it is;
        saved in the settings for the next start. Other open windows (the side-by-side
        comparison) follow too."""
        others = [w for w in QApplication.topLevelWidgets()
                  if w is not self and isinstance(w, QMainWindow) and w.isVisible()]
        ok = i18n.switch_language(lang, [self, *others], self.settings)
        for code, a in self.language_actions.items():
            a.setChecked(code == i18n.current_language())
        return ok

    def retranslate(self) -> None:
        """After ui.i18n.switch_language set the widgets' fixed words anew: the words made
        from state (title, event breakpoints, back actions' tooltips, the diagram's boxes,
        the panels' contents) in the new language."""
        self._set_title()
        for spec, a in self.event_bp_actions.items():
            a.setText(tr("Break on {what}").format(what=T.EVENT_BREAKPOINTS[spec]))
        self.a_present.setIconText(tr("Presentation"))  # the toolbar's word (not the menu's)
        for a, tip in ((self.a_reverse, T.REVERSE_CONTINUE_TIP), (self.a_back_insn, T.BACK_INSN_TIP),
                       (self.a_back_event, T.BACK_EVENT_TIP), (self.a_back_exit, T.BACK_EXIT_TIP),
                       (self.a_back_user, T.BACK_USER_TIP)):
            keys = a.shortcut().toString()
            self.back_actions[a] = f"{tip} ({keys})" if keys else tip
        self.diagram.retranslate()
        for a in self.menuBar().actions():  # new words, new free letters (as at the start)
            if a.menu() is not None:
                add_mnemonics(a.menu())
        self.queues.reset()
        self.lesson_panel.retranslate()
        self.pagetables._key = None
        self.timeline.update()
        self.stats.chart.update()
        self.statusBar().clearMessage()
        self.refresh()

