"""The dock panels. Each one repaints from the session's plain-data views
(`refresh(bridge)`); the event-fed ones also take the events of a step (`add_events`)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QEvent, QModelIndex, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontDatabase, QPainter, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolTip,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ui import text as T
from ui.i18n import tr
from vmsim.costs import NOMINAL_HZ
from vmsim.events import CATALOGUE, LAYERS
from vmsim.hw.i8254 import PIT_FREQ
from vmsim.session import eflags_decoded
from vmsim.tracecmd import TP_PRINTK


def mono() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


LAYER_COLORS = {  # kept equal to diagram.json's "colors" (the layers' colours everywhere)
    "light": {"guest": "#2e7d32", "vmm": "#1565c0", "kvm": "#e65100", "hw": "#6a1b9a"},
    "dark": {"guest": "#66bb6a", "vmm": "#64b5f6", "kvm": "#ffa726", "hw": "#ce93d8"},
}
CHANGED = {"light": "#ffe082", "dark": "#7a5c00"}
MARK_ROLE = Qt.ItemDataRole.UserRole + 7  # a cell's (theme, marked changed) as last painted


def compact(table: QTableWidget) -> None:
    """Rows as high as the text, not Qt's roomy default; a cell too narrow for its text
    elides it and shows the whole of it as its tooltip (TipDelegate)."""
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 6)
    table.verticalHeader().setVisible(False)
    table.setMinimumHeight(3 * (table.fontMetrics().height() + 6) + 8)  # a short dock still fits
    install_tips(table)


class TipDelegate(QStyledItemDelegate):
    """Paints as Qt does (elided at the right when the column is too narrow); hovering a
    cell whose text does not fit shows the whole text as a tooltip (issue 13: nothing cut
    off without a way to read it). A cell's own tooltip wins."""

    def is_elided(self, view: QAbstractItemView, index) -> bool:
        text = index.data(Qt.ItemDataRole.DisplayRole)
        if not text:
            return False
        opt = QStyleOptionViewItem()
        self.initStyleOption(opt, index)
        width = view.visualRect(index).width() - 8  # the style's text margins
        lines = str(text).splitlines() or [""]
        return max(opt.fontMetrics.horizontalAdvance(line) for line in lines) > width

    def tip(self, view: QAbstractItemView, index) -> str | None:
        """The tooltip a hover on `index` shows (None: the cell shows all of its text)."""
        own = index.data(Qt.ItemDataRole.ToolTipRole)
        if own:
            return str(own)
        return str(index.data(Qt.ItemDataRole.DisplayRole)) if self.is_elided(view, index) else None

    def helpEvent(self, event, view, option, index) -> bool:
        if event is None or view is None or not index.isValid():
            return super().helpEvent(event, view, option, index)
        if event.type() == QEvent.Type.ToolTip:
            text = self.tip(view, index)
            if text:
                QToolTip.showText(event.globalPos(), text, view)
            else:
                QToolTip.hideText()
            return True
        return super().helpEvent(event, view, option, index)


TIP_PRECISION = 300  # rows a column's content width is measured over (big trees stay cheap)


class _Restretch(QObject):
    """A viewport narrowed by its own scroll bar appearing does not re-lay its header's
    stretched section (the last columns would go out of view): lay it again."""

    def __init__(self, header) -> None:
        super().__init__(header)
        self.header = header

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.header.resizeSections()
        return False


def install_tips(view: QAbstractItemView) -> None:
    """Elide with a tooltip (TipDelegate); the header measures columns over at most
    TIP_PRECISION rows and keeps its stretched column fitted to the viewport."""
    if not isinstance(view.itemDelegate(), TipDelegate):
        view.setItemDelegate(TipDelegate(view))
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    header = getattr(view, "horizontalHeader", None) or getattr(view, "header", None)
    if header is not None and not header().findChildren(_Restretch):
        header().setResizeContentsPrecision(TIP_PRECISION)
        view.viewport().installEventFilter(_Restretch(header()))


def _item(text: str) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return it


# -- registers -------------------------------------------------------------------------------
class RegistersPanel(QWidget):
    """GPRs, EIP, EFLAGS decoded, control registers, segments of one vCPU (chosen above the
    table, or by clicking its box in the diagram); what the last step changed is marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.cpu = 0  # the vCPU shown
        self.cpu_box = QComboBox()
        self.cpu_box.addItem("vCPU0")
        self.cpu_box.activated.connect(self.show_cpu)
        self._bridge = None
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels([tr("register"), tr("value"), ""])
        compact(self.table)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setFont(mono())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.cpu_box)
        lay.addWidget(self.table)
        self.previous: dict[str, int] = {}
        self.values: dict[str, int] = {}
        self.changed: set[str] = set()
        self.theme = "light"
        self._widths: tuple | None = None  # (bold rows, each column's widest text) last measured

    def mark_step(self) -> None:
        """Called before a step: what differs afterwards is 'changed'."""
        self.previous = dict(self.values)

    def show_cpu(self, n: int) -> None:
        """Show vCPU n's registers (nothing is marked changed by the switch)."""
        if n != self.cpu:
            self.cpu = n
            self.previous = {}
            if self.cpu_box.currentIndex() != n:
                self.cpu_box.setCurrentIndex(n)
            if self._bridge is not None:
                self.refresh(self._bridge)

    def refresh(self, bridge) -> None:
        self._bridge = bridge
        s = bridge.session
        if not s.cpus:
            return
        n = len(s.cpus)
        if self.cpu_box.count() != n:
            self.cpu_box.blockSignals(True)
            self.cpu_box.clear()
            self.cpu_box.addItems([f"vCPU{i}" for i in range(n)])
            self.cpu = min(self.cpu, n - 1)
            self.cpu_box.setCurrentIndex(self.cpu)
            self.cpu_box.blockSignals(False)
        self.cpu_box.setVisible(n > 1)
        regs = s.registers(self.cpu)
        segs = s.segments(self.cpu)
        self.values = regs
        self.changed = {k for k, v in regs.items() if k in self.previous and self.previous[k] != v}
        rows: list[tuple[str, str, str]] = []
        for name, v in regs.items():
            note = ""
            if name == "EFLAGS":
                note = " ".join(n if on else n.lower() for n, on in eflags_decoded(v)[:9])
            elif name == "CR0":
                note = " ".join(n for n, b in (("PE", 0), ("MP", 1), ("ET", 4), ("NE", 5), ("WP", 16),
                                                ("PG", 31)) if v >> b & 1)
            elif name == "CR4":
                note = " ".join(n for n, b in (("PSE", 4), ("PGE", 7), ("VMXE", 13)) if v >> b & 1)
            elif name == "EIP":
                sl = s.image.line_at(v)
                note = tr("line {n}").format(n=sl.line) if sl is not None else ""
            rows.append((name, f"{v:08X}", note))
        for name, (sel, base, limit) in segs.items():
            if name in ("GDTR", "IDTR"):
                rows.append((name, f"{base:08X}", tr("limit {limit:#x}").format(limit=limit)))
            else:
                rows.append((name, f"{sel:04X}",
                             tr("base {base:#x} limit {limit:#x}").format(base=base, limit=limit)))
        vcpu = bridge.session.vm.cpus[self.cpu].vcpu if bridge.session.vm is not None else None
        vmx = getattr(vcpu, "vmx", None)
        # As the diagram has it: the vCPU's own flag (VMX non-root from the entry on).
        in_guest = bool(getattr(vmx, "guest_mode", False))
        mode = tr("VMX non-root (guest)") if vmx and in_guest else tr("VMX root")
        rows.append(("mode", "", mode if vcpu is not None else tr("bare metal")))
        rows.append(("icount", str(s.instructions), tr("guest instructions retired")))
        rows.append(("time", str(s.virtual_time), tr("virtual cycles")))
        # Only what differs from the cells is set (a cell set repaints), and the columns are
        # measured again only when a column's widest text changed (a monospaced font): while
        # running this repaints a few values, not the table.
        t = self.table
        if t.rowCount() != len(rows):
            t.setRowCount(len(rows))
        marks = (self.theme, frozenset(self.changed))
        for i, (name, value, note) in enumerate(rows):
            mark = name in self.changed
            for j, text in enumerate((name, value, note)):
                cell = t.item(i, j)
                if cell is None:
                    cell = _item(text)
                    t.setItem(i, j, cell)
                elif cell.text() != text:
                    cell.setText(text)
                if cell.data(MARK_ROLE) != (self.theme, mark):
                    cell.setData(MARK_ROLE, (self.theme, mark))
                    cell.setBackground(QBrush(QColor(CHANGED[self.theme])) if mark else QBrush())
                    f = cell.font()
                    f.setBold(mark)
                    cell.setFont(f)
        widths = (marks[1], tuple(max(len(r[j]) for r in rows) for j in range(3)))
        if widths != self._widths:
            self._widths = widths
            t.resizeColumnsToContents()

    def value_text(self, name: str) -> str:
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).text() == name:
                return self.table.item(i, 1).text()
        raise KeyError(name)


def _in_guest(bridge) -> bool:
    """vCPU 0 is in VMX non-root mode (the session's state, as every view reads it)."""
    vm = bridge.session.vm
    return vm is not None and bool(getattr(getattr(vm.cpus[0].vcpu, "vmx", None), "guest_mode", False))


# -- disassembly and memory ------------------------------------------------------------------
class DisasmPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.disasm = QPlainTextEdit()
        self.disasm.setReadOnly(True)
        self.disasm.setFont(mono())
        self.disasm.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.addr = QLineEdit()
        self.addr.setPlaceholderText(tr("address (hex, or a symbol); empty: follow ESP"))
        self.addr.returnPressed.connect(self._changed)
        self.memory = QPlainTextEdit()
        self.memory.setReadOnly(True)
        self.memory.setFont(mono())
        self.memory.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mem = QWidget()
        ml = QVBoxLayout(mem)
        ml.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel(tr("memory at")))
        row.addWidget(self.addr, 1)
        ml.addLayout(row)
        ml.addWidget(self.memory, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.disasm)
        split.addWidget(mem)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)
        self._bridge = None

    def _changed(self) -> None:
        if self._bridge is not None:
            self.refresh(self._bridge)

    def refresh(self, bridge) -> None:
        self._bridge = bridge
        s = bridge.session
        if not s.cpus:
            return
        regs = s.registers(0)  # EIP and ESP as Registers has them (KVM_GET_REGS outside the guest)
        eip = regs["EIP"]
        lines = []
        symbols = {v: k for k, v in s.image.symbols.items()} if s.image.symbols else {}
        for addr, raw, text in s.disassembly(6, 14):
            label = symbols.get(addr)
            if label:
                lines.append(f"{'':12}<{label}>:")
            mark = "=>" if addr == eip else "  "
            raw = raw if len(raw) <= 15 else raw[:13] + ".."
            lines.append(f"{mark} {addr:08X}  {raw:<15} {text}")
        self.disasm.setPlainText("\n".join(lines))
        want = self.addr.text().strip()
        base = None
        if want:
            base = s.image.symbols.get(want)
            if base is None:
                try:
                    base = int(want, 16)
                except ValueError:
                    base = None
        if base is None:
            base = regs["ESP"] & ~0xF
        base &= ~0xF
        data = s.read_linear(base, 256) or b""
        rows = []
        for off in range(0, 256, 16):
            chunk = data[off:off + 16]
            if not chunk:
                rows.append(f"{base + off:08X}  " + tr("(not mapped)"))
                break
            asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            rows.append(f"{base + off:08X}  {chunk.hex(' '):<48}  {asc}")
        self.memory.setPlainText("\n".join(rows))


# -- VMCS ---------------------------------------------------------------------------------------
def vmcs_area_name(area: str) -> str:
    """A VMCS area's heading (vmsim.hw.vmcs's names: "guest state" ...) in the GUI's language."""
    return {"guest state": tr("Guest state"), "host state": tr("Host state"),
            "control": tr("Control"), "exit information": tr("Exit information")}.get(
        area, area.capitalize())


class VmcsPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.exit_label = QLabel(tr("no VM exit yet"))
        self.exit_label.setWordWrap(True)
        self.exit_label.setFont(mono())
        # While the vCPU is out of the guest: where its state is (issue 12; the seed says
        # QEMU saves it "into the VMCS", which it never touches).
        self.out_note = QLabel(T.VMCS_OUT_OF_GUEST)
        self.out_note.setWordWrap(True)
        self.out_note.setToolTip(T.VMCS_OUT_OF_GUEST_TIP)
        self.out_note.setVisible(False)
        self.out_note.setStyleSheet("QLabel { font-style: italic; }")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels([tr("field"), tr("encoding"), tr("value")])
        self.tree.setFont(mono())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.exit_label)
        lay.addWidget(self.out_note)
        lay.addWidget(self.tree, 1)
        self.areas: dict[str, QTreeWidgetItem] = {}
        self.items: dict[int, QTreeWidgetItem] = {}

    def refresh(self, bridge) -> None:
        s = bridge.session
        if s.vm is None or not hasattr(s.vm.cpus[0].vcpu, "vmcs"):
            self.exit_label.setText(tr("no VMCS on this backend"))
            self.out_note.setVisible(False)
            return
        vcpu = s.vm.cpus[0].vcpu  # read again each time: a step back may bring new objects
        vmx = getattr(vcpu, "vmx", None)
        self.out_note.setVisible(vcpu.vmcs.launched and not (vmx is not None and vmx.guest_mode))
        ex = s.last_exit()
        if ex is not None:
            parts = [tr("last exit: {reason}").format(reason=ex['reason']),
                     tr("qualification {q:#x}").format(q=ex['qualification']),
                     tr("instruction length {n}").format(n=ex['instruction_len'])]
            if ex.get("guest_physical_address") is not None:
                parts.append(f"GPA {ex['guest_physical_address']:#x}")
            if ex.get("guest_linear_address") is not None:
                parts.append(f"GLA {ex['guest_linear_address']:#x}")
            if ex.get("intr_info"):
                parts.append(tr("interruption info {info:#x}").format(info=ex['intr_info']))
            self.exit_label.setText(tr(", ").join(parts))
        else:
            self.exit_label.setText(tr("no VM exit yet"))
        self.tree.setUpdatesEnabled(False)
        for area, top in self.areas.items():  # (the words of the language now)
            if top.text(0) != vmcs_area_name(area):
                top.setText(0, vmcs_area_name(area))
        for area, name, enc, value in s.vmcs_fields():
            top = self.areas.get(area)
            if top is None:
                top = QTreeWidgetItem([vmcs_area_name(area), "", ""])
                f = top.font(0)
                f.setBold(True)
                top.setFont(0, f)
                self.tree.addTopLevelItem(top)
                top.setExpanded(area in ("exit information", "guest state"))
                self.areas[area] = top
            it = self.items.get(enc)
            text = f"{value:#x}"
            if it is None:
                it = QTreeWidgetItem([name, f"{enc:#06x}", text])
                top.addChild(it)
                self.items[enc] = it
            elif it.text(2) != text:
                it.setText(2, text)
                it.setBackground(2, QBrush(QColor("#ffe082")))
            else:
                it.setBackground(2, QBrush())
        self.tree.resizeColumnToContents(0)
        self.tree.setUpdatesEnabled(True)

    def reset(self) -> None:
        self.tree.clear()
        self.areas.clear()
        self.items.clear()
        self.exit_label.setText(tr("no VM exit yet"))


# -- page tables ---------------------------------------------------------------------------------
class PageTablesPanel(QWidget):
    """Guest tables as a tree, kvm.ko's EPT or shadow tables beside them, the last walk
    level by level, and the TLB."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.guest = QTreeWidget()
        self.guest.setHeaderLabels([tr("guest tables (from its CR3)"), tr("entry"), tr("maps")])
        self.host = QTreeWidget()
        self.host.setHeaderLabels([tr("EPT / shadow (kvm.ko)"), tr("entry"), ""])
        self.walk = QTreeWidget()
        self.walk.setHeaderLabels([tr("last walk: step"), tr("table"), tr("index"), tr("entry"),
                                   tr("outcome")])
        # Its first header names the walk ("last walk of 0x..."): as wide as that or its steps.
        self.walk.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tlb = QTableWidget(0, 3)
        self.tlb.setHorizontalHeaderLabels([tr("linear page"), tr("physical page"), tr("writable")])
        self.tlb.horizontalHeaderItem(2).setToolTip(tr(
            "yes: the walk that filled the entry allowed a write and set the dirty bit, so a "
            "write goes ahead; walks first: a write walks the tables again (and may fault)"))
        compact(self.tlb)
        for w in (self.guest, self.host, self.walk, self.tlb):
            w.setFont(mono())
        split = QSplitter(Qt.Orientation.Vertical)
        for w in (self.guest, self.host, self.walk, self.tlb):
            split.addWidget(w)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)
        self.last_walk: list = []  # walk_step / ept_step events of the latest walk
        self._key = None
        self.theme = "light"

    def add_events(self, events) -> None:
        current: list = []
        for ev in events:
            if ev.kind == "tlb_miss":
                current = []
            elif ev.kind in ("walk_step", "ept_step"):
                current.append(ev)
        if current:
            self.last_walk = current

    def refresh(self, bridge) -> None:
        s = bridge.session
        if not s.cpus:
            return
        pts = s.guest_page_tables()
        ept = s.ept_entries()
        shadows = s.shadow_pages()
        tlb = s.tlb()
        key = (str(pts), str(ept), str([x[:4] for x in shadows]), len(str(shadows)))
        if key != self._key:
            self._key = key
            self._fill_guest(pts)
            self._fill_host(ept, shadows, s.paging)
        walked = {(ev["entry_address"]) for ev in self.last_walk}
        self._mark(self.guest, walked)
        self.walk.clear()
        for ev in self.last_walk:
            ept_step = ev.kind == "ept_step"
            label = f"{'EPT ' if ept_step else ''}{ev['level']}"
            if ept_step:
                label += f" (gpa {ev['gpa']:#x})"
            it = QTreeWidgetItem([label, f"{ev['table']:#x}", str(ev["index"]), f"{ev['entry']:#x}",
                                  ev["outcome"]])
            if not ept_step:
                for c in range(5):
                    it.setBackground(c, QBrush(QColor("#fff59d" if self.theme == "light" else "#5d4a00")))
            self.walk.addTopLevelItem(it)
        if self.last_walk:
            self.walk.setHeaderLabels([tr("last walk of {addr:#x}").format(addr=self.last_walk[0]['linear']),
                                       tr("table"), tr("index"), tr("entry"), tr("outcome")])
        elif not bridge.walks_traced:
            it = QTreeWidgetItem([T.WALKS_NOT_TRACED, "", "", "", ""])
            it.setToolTip(0, T.WALKS_NOT_TRACED_TIP)
            self.walk.addTopLevelItem(it)
            it.setFirstColumnSpanned(True)  # (only once in the tree: before, it did nothing)
        self.tlb.setRowCount(len(tlb))
        for i, (lin, phys, w) in enumerate(tlb):
            for j, text in enumerate((f"{lin:08X}", f"{phys:08X}",
                                      tr("yes") if w else tr("walks first"))):
                self.tlb.setItem(i, j, _item(text))

    def _fill_guest(self, pts) -> None:
        self.guest.clear()
        if not pts:
            self.guest.addTopLevelItem(QTreeWidgetItem([tr("paging is off (CR0.PG=0)"), "",
                                                        tr("linear = physical")]))
            return
        for i, pde, ptes in pts:
            big = pde & 0x80
            top = QTreeWidgetItem([f"PDE[{i}]", f"{pde:08X}",
                                   (tr("{lin:#x}: 4M page {phys:#x}") if big else
                                    tr("{lin:#x}: table {phys:#x}")).format(
                                       lin=i << 22, phys=pde & (0xFFC00000 if big else 0xFFFFF000))])
            top.setData(0, Qt.ItemDataRole.UserRole, pde)
            for j, pte in ptes:
                c = QTreeWidgetItem([f"PTE[{j}]", f"{pte:08X}",
                                     f"{(i << 22) | (j << 12):#x} -> {pte & 0xFFFFF000:#x} {_flags(pte)}"])
                top.addChild(c)
            self.guest.addTopLevelItem(top)
        self.guest.resizeColumnToContents(0)

    def _fill_host(self, ept, shadows, paging) -> None:
        self.host.clear()
        if paging == "ept":
            self.host.setHeaderLabels([tr("EPT leaves (kvm.ko TDP MMU)"), tr("entry"), tr("host frame")])
            for gfn, leaf in ept:
                mis = (leaf & 7) == 6
                self.host.addTopLevelItem(QTreeWidgetItem(
                    [f"gfn {gfn:#x}", f"{leaf:016X}", tr("MMIO (misconfigured)") if mis
                     else f"{leaf & 0xFFFFFFFFFF000:#x}"]))
        else:
            self.host.setHeaderLabels([tr("shadow pages (kvm_mmu_page)"), "spte", tr("maps")])
            for gfn, level, direct, spt, entries, writable in shadows:
                name = f"{'PD' if level == 2 else 'PT'} gfn {gfn:#x}"
                if direct:
                    name += " " + (tr("direct") if writable else tr("direct, read-only"))
                top = QTreeWidgetItem([name, f"spt {spt:#x}", tr("{n} present").format(n=len(entries))])
                for idx, e in entries[:64]:
                    top.addChild(QTreeWidgetItem([f"[{idx}]", f"{e:08X}", _flags(e)]))
                self.host.addTopLevelItem(top)
        self.host.resizeColumnToContents(0)

    def _mark(self, tree: QTreeWidget, walked: set[int]) -> None:
        del walked  # entries are matched by level in the walk list; the tree is kept plain


def _flags(e: int) -> str:
    return "".join(c if e >> b & 1 else "-" for c, b in (("P", 0), ("W", 1), ("U", 2), ("A", 5), ("D", 6)))


# -- devices --------------------------------------------------------------------------------------
VGA_COLORS = ["#000000", "#0000aa", "#00aa00", "#00aaaa", "#aa0000", "#aa00aa", "#aa5500", "#aaaaaa",
              "#555555", "#5555ff", "#55ff55", "#55ffff", "#ff5555", "#ff55ff", "#ffff55", "#ffffff"]


class VgaScreen(QWidget):
    """The 80x25 text buffer in its 16 colours (code page 437 approximated by latin-1)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.buffer = bytes(80 * 25 * 2)
        f = mono()
        f.setPointSizeF(9)
        self.setFont(f)
        self.setMinimumSize(160, 60)  # scaled to what it gets (issue 13)

    def set_buffer(self, data: bytes) -> None:
        if data != self.buffer:
            self.buffer = bytes(data)
            self.update()

    def text(self) -> str:
        rows = (bytes(self.buffer[2 * (r * 80 + c)] or 32 for c in range(80)).decode("cp437").rstrip()
                for r in range(25))
        return "\n".join(rows).rstrip("\n")

    MIN_ROW_PX = 12  # below this the whole screen is unreadable: show its used part larger

    def used(self) -> tuple[int, int]:
        """(rows, columns) from the top left to the last cell with a character or a
        background colour."""
        buf = self.buffer
        rows = cols = 0
        for r in range(25):
            for c in range(80):
                i = 2 * (r * 80 + c)
                if buf[i] not in (0, 32) or buf[i + 1] >> 4 & 7:
                    rows, cols = r + 1, max(cols, c + 1)
        return rows, cols

    def shown(self) -> tuple[int, int]:
        """(rows, columns) drawn: all 80x25, unless the area is too small to read them;
        then the top-left part down to the last cell used, and as much more as keeps
        rows MIN_ROW_PX high."""
        if min(self.width() / 720, self.height() / 400) * 16 >= self.MIN_ROW_PX:
            return 25, 80
        used_rows, used_cols = self.used()
        rows = min(25, max(used_rows, int(self.height() // self.MIN_ROW_PX), 1))
        cols = min(80, max(used_cols, int(self.width() // (self.MIN_ROW_PX * 9 / 16)), 1))
        return rows, cols

    def rows_shown(self) -> int:
        return self.shown()[0]

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#000000"))
        rows, cols = self.shown()
        # Cells of 9x16 as on a real VGA text mode: keep the 720x400 aspect, centred (all
        # of it, or the top-left part when the rest is blank and the area is small).
        scale = min(self.width() / (9 * cols), self.height() / (16 * rows))
        cw, ch = 9 * scale, 16 * scale
        if (rows, cols) != (25, 80):
            p.setPen(QColor("#9e9e9e"))
            note = tr("rows 1-{rows}, columns 1-{cols} of 25x80 (the rest blank)").format(
                rows=rows, cols=cols)
            self.setToolTip(note)
            p.drawText(self.rect().adjusted(2, 0, -4, -2),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                       p.fontMetrics().elidedText(note, Qt.TextElideMode.ElideRight, self.width() - 8))
        else:
            self.setToolTip("")
        p.translate((self.width() - cols * cw) / 2, (self.height() - rows * ch) / 2)
        f = self.font()
        f.setPixelSize(max(6, int(ch * 0.85)))
        p.setFont(f)
        buf = self.buffer
        for r in range(rows):
            for c in range(cols):
                i = 2 * (r * 80 + c)
                char, attr = buf[i], buf[i + 1]
                if attr >> 4 & 7:
                    p.fillRect(QRectF(c * cw, r * ch, cw + 0.5, ch + 0.5), QColor(VGA_COLORS[attr >> 4 & 7]))
                if char not in (0, 32):
                    p.setPen(QColor(VGA_COLORS[attr & 15]))
                    p.drawText(QRectF(c * cw, r * ch, cw, ch), Qt.AlignmentFlag.AlignCenter,
                               bytes([char]).decode("cp437"))


class _AccessLog(QPlainTextEdit):
    """The port / MMIO access log: the accesses its panel took are written into lines
    when it is shown or its text is read (DevicesPanel._write_log)."""

    def __init__(self, panel: DevicesPanel) -> None:
        super().__init__()
        self._panel = panel

    def toPlainText(self) -> str:
        self._panel._write_log(force=True)
        return super().toPlainText()

    def showEvent(self, event) -> None:
        self._panel._write_log(force=True)
        super().showEvent(event)


class DevicesPanel(QWidget):
    serialInput = Signal(bytes)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.console = QPlainTextEdit()
        self.console.setReadOnly(True)
        self.console.setFont(mono())
        self.console.setMaximumBlockCount(5000)
        self.input = QLineEdit()
        self.input.setPlaceholderText(tr("type here: sent to COM1's receive FIFO on Enter (\\n appended)"))
        self.input.returnPressed.connect(self._send)
        self.vga = VgaScreen()
        self.log = _AccessLog(self)
        self.log.setReadOnly(True)
        self.log.setFont(mono())
        self.log.setMaximumBlockCount(self.LOG_KEEP)
        serial = QWidget()
        sl = QVBoxLayout(serial)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel(tr("COM1 (16550 at 0x3F8)")))
        sl.addWidget(self.console, 1)
        sl.addWidget(self.input)
        vga = QWidget()
        vl = QVBoxLayout(vga)
        vl.setContentsMargins(0, 0, 0, 0)
        vl.addWidget(QLabel(tr("VGA text (0xB8000)")))
        vl.addWidget(self.vga, 1)
        # kvm.ko's coalesced-MMIO ring, where the machine has one (not --no-coalesced-mmio).
        # Wrapped: on the default machine it is always there, and must not widen the panel.
        self.ring = QLabel()
        self.ring.setWordWrap(True)
        self.ring.setVisible(False)
        vl.addWidget(self.ring)
        self.tabs = QTabWidget()
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(serial)
        top.addWidget(vga)
        top.setSizes([350, 650])
        self.split = top  # side by side when the panel is wide, one above the other when narrow
        self.tabs.addTab(top, tr("serial + VGA"))
        self.tabs.addTab(self.log, tr("port / MMIO accesses"))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.tabs)
        self.log_lines: list[tuple[int, str]] = []  # the access log: (event seq, line)
        self._unwritten: list = []  # accesses taken, not in lines yet (the log not in view)
        self._serial = bytearray()  # what the console shows: COM1's output as appended

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        want = (Qt.Orientation.Horizontal if self.width() > 2 * self.height()
                else Qt.Orientation.Vertical)
        if self.split.orientation() != want:
            self.split.setOrientation(want)
            total = self.split.width() if want == Qt.Orientation.Horizontal else self.split.height()
            self.split.setSizes([total * 35 // 100, total * 65 // 100])

    def _send(self) -> None:
        text = self.input.text()
        self.input.clear()
        self.serialInput.emit((text + "\n").encode("latin-1", "replace"))

    def append_serial(self, data: bytes) -> None:
        self._serial += data
        cur = self.console.textCursor()
        cur.movePosition(cur.MoveOperation.End)
        cur.insertText(data.decode("latin-1"))
        self.console.setTextCursor(cur)

    LOG_KEEP = 2000  # lines of the access log (as its block count)
    ACCESS_KINDS = frozenset({"device_access", "io_unclaimed"})

    def add_events(self, events) -> None:
        kinds = self.ACCESS_KINDS
        self._unwritten += [ev for ev in events if ev.kind in kinds]
        del self._unwritten[:-self.LOG_KEEP]  # the newest LOG_KEEP only: the log keeps no more
        self._write_log()

    def _write_log(self, force: bool = False) -> None:
        """The accesses taken since into lines, while the log is in view, or when it
        comes into view or its text is read (_AccessLog): an exits-heavy guest makes
        thousands a second, and the log is a tab behind the console."""
        evs = self._unwritten
        if not evs or not (force or self.log.isVisible()):
            return
        self._unwritten = []
        lines = []
        for ev in evs:
            seq, source, kind, f = ev.seq, ev.source, ev.kind, ev.fields
            if kind == "device_access":
                d = "write" if f["is_write"] else "read "
                lines.append((seq, f"{seq:>7} {source:<15} {f['space']:<4} {d} "
                                   f"{f['address']:#07x} size {f['size']} value {f['value']:#x}"))
            else:
                lines.append((seq, f"{seq:>7} {'(unclaimed)':<15} {f['space']:<4} "
                                   f"{'write' if f['is_write'] else 'read '} {f['address']:#07x}"))
        self.log_lines.extend(lines)
        del self.log_lines[:-self.LOG_KEEP]
        self.log.appendPlainText("\n".join(text for _, text in lines))

    def truncate(self, seq: int, serial: bytes) -> None:
        """After a step back: the accesses up to event `seq` only, and the console as
        COM1 had sent it then (`serial`: Session.serial). Only what went is taken out
        (rewriting the whole log was a fifth of a step back in the window)."""
        unwritten = self._unwritten
        while unwritten and unwritten[-1].seq > seq:
            unwritten.pop()
        lines = self.log_lines
        n = len(lines)
        while lines and lines[-1][0] > seq:
            lines.pop()
        if len(lines) < n:
            doc = self.log.document()
            if doc.blockCount() != n or not lines:  # (a line a block, as _write_log adds them)
                self.log.setPlainText("\n".join(text for _, text in lines))
            else:  # the last n - len(lines) blocks, with the line break before them
                cur = QTextCursor(doc)
                cur.setPosition(doc.findBlockByNumber(len(lines)).position() - 1)
                cur.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
                cur.removeSelectedText()
        if serial != self._serial:  # (unchanged by most steps back)
            self._serial = bytearray(serial)
            self.console.setPlainText(serial.decode("latin-1"))
            self.console.moveCursor(self.console.textCursor().MoveOperation.End)

    def refresh(self, bridge) -> None:
        machine = bridge.session.machine
        self.vga.set_buffer(machine.vga_display())
        ring = machine.coalesced.ring
        self.ring.setVisible(ring is not None)
        if ring is not None:
            self.ring.setText(tr("coalesced MMIO ring: {n} writes queued in kvm.ko, not yet "
                                 "applied by QEMU (first {first}, last {last})").format(
                n=len(ring.pending()), first=ring.first, last=ring.last))
        self._write_log()  # (the log came into view while running)

    def reset(self) -> None:
        self.console.clear()
        self._serial = bytearray()
        self.log.clear()
        self.log_lines.clear()
        self._unwritten = []


# -- event log ----------------------------------------------------------------------------------------
class EventLogModel(QAbstractTableModel):
    """The log's rows over its list of events: a row's texts are made when Qt paints it
    (the rows in view), so taking a batch of events costs a list extend whatever its
    size (before, a QTableWidget made five items per event: a third of the GUI's time
    with an exits-heavy guest, and up to a second at each pause)."""


    def __init__(self, panel: EventLogPanel) -> None:
        super().__init__(panel)
        self.panel = panel
        self.rows: list = []  # the events shown, oldest first
        self._texts: dict[int, tuple[str, ...]] = {}  # by seq (cleared when rows go back)
        self._bold = QFont()
        self._bold.setBold(True)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else 5

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return (tr("seq"), tr("time"), tr("layer"), tr("kind"), tr("what"))[section]
        return None

    def flags(self, index: QModelIndex):
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def texts(self, row: int) -> tuple[str, ...]:
        ev = self.rows[row]
        texts = self._texts.get(ev.seq)
        if texts is None:
            try:
                # kvm.ko's events in the kernel's own words (what trace-cmd shows on a host).
                printk = TP_PRINTK.get(ev.kind)
                what = printk(ev.fields) if printk is not None else ev.describe()
            except (KeyError, ValueError, TypeError):
                what = str(dict(ev.fields))
            texts = (str(ev.seq), str(ev.time), ev.layer, ev.kind, f"{ev.source}: {what}")
            if len(self._texts) > 2 * EventLogPanel.MAX_ROWS:
                self._texts.clear()
            self._texts[ev.seq] = texts
        return texts

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.texts(index.row())[index.column()]
        if index.column() == 2:
            if role == Qt.ItemDataRole.ForegroundRole:
                layer = self.rows[index.row()].layer
                return QBrush(QColor(LAYER_COLORS[self.panel.theme].get(layer, "#888888")))
            if role == Qt.ItemDataRole.FontRole:
                return self._bold
        return None

    def append(self, evs: list) -> None:
        """Add rows at the end, dropping the oldest beyond MAX_ROWS."""
        rows = self.rows
        overflow = len(rows) + len(evs) - EventLogPanel.MAX_ROWS
        if overflow > 0:
            n = min(overflow, len(rows))
            if n:
                self.beginRemoveRows(QModelIndex(), 0, n - 1)
                del rows[:n]
                self.endRemoveRows()
            evs = evs[-EventLogPanel.MAX_ROWS:]
        if evs:
            first = len(rows)
            self.beginInsertRows(QModelIndex(), first, first + len(evs) - 1)
            rows.extend(evs)
            self.endInsertRows()

    def set_rows(self, evs: list) -> None:
        self.beginResetModel()
        self.rows[:] = evs[-EventLogPanel.MAX_ROWS:]
        self._texts.clear()
        self.endResetModel()

    def truncate(self, n: int) -> None:
        """Keep the first n rows."""
        if n < len(self.rows):
            self.beginRemoveRows(QModelIndex(), n, len(self.rows) - 1)
            del self.rows[n:]
            self._texts.clear()
            self.endRemoveRows()


class _Cell:
    """A cell's text as QTableWidgetItem gives it (EventTable.item)."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def text(self) -> str:
        return self._text


class EventTable(QTableView):
    """The log's view, with QTableWidget's reading calls (rowCount, item, setCurrentCell)."""

    def rowCount(self) -> int:
        return self.model().rowCount()

    def item(self, row: int, column: int) -> _Cell | None:
        m = self.model()
        if not (0 <= row < m.rowCount() and 0 <= column < m.columnCount()):
            return None
        return _Cell(m.texts(row)[column])

    def setCurrentCell(self, row: int, column: int) -> None:
        self.setCurrentIndex(self.model().index(row, column))


class EventLogPanel(QWidget):
    MAX_ROWS = 3000

    def __init__(self, parent=None):
        super().__init__(parent)
        self.layer = QComboBox()
        self.layer.addItems([tr("all layers"), *LAYERS])
        self.kind = QComboBox()
        self.kind.addItems([tr("all kinds"), *sorted(CATALOGUE)])
        self.layer.currentIndexChanged.connect(self._refilter)
        self.kind.currentIndexChanged.connect(self._refilter)
        for box, chars in ((self.layer, 4), (self.kind, 7)):  # a narrow dock still fits the row
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(chars)
        self.theme = "light"
        self.model = EventLogModel(self)
        self.table = EventTable()
        self.table.setModel(self.model)
        compact(self.table)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setFont(mono())
        self.table.selectionModel().currentRowChanged.connect(lambda cur, _prev: self._show(cur.row()))
        self.details = QPlainTextEdit()  # a chosen row's fields: hidden until a row is chosen
        self.details.setReadOnly(True)
        self.details.setFont(mono())
        self.details.setMinimumHeight(self.details.fontMetrics().height() * 2 + 8)
        self.details.hide()
        self.split = QSplitter(Qt.Orientation.Vertical)  # the rows get most of the height
        self.split.setChildrenCollapsible(False)
        self.split.addWidget(self.table)
        self.split.addWidget(self.details)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel(tr("filter:")))
        row.addWidget(self.layer)
        row.addWidget(self.kind)
        clear = QPushButton(tr("clear"))
        clear.clicked.connect(self.clear)
        row.addWidget(clear)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(row)
        lay.addWidget(self.split, 1)
        self.events: list = []
        self.running = False

    @property
    def shown(self) -> list:
        """The events in the rows, oldest first."""
        return self.model.rows

    def set_running(self, running: bool) -> None:
        self.running = running

    def catch_up(self) -> None:
        """(Rows are never behind: taking events costs the same shown or not.)"""

    def _filter(self) -> tuple[str | None, str | None]:
        layer = self.layer.currentText() if self.layer.currentIndex() > 0 else None  # 0: all
        kind = self.kind.currentText() if self.kind.currentIndex() > 0 else None
        return layer, kind

    def _accept(self, ev) -> bool:
        layer, kind = self._filter()
        return (layer is None or ev.layer == layer) and (kind is None or ev.kind == kind)

    def _accepted(self, events: list) -> list:
        layer, kind = self._filter()
        if layer is None and kind is None:
            return events
        return [ev for ev in events if (layer is None or ev.layer == layer)
                and (kind is None or ev.kind == kind)]

    def add_events(self, events) -> None:
        self.events.extend(events)
        if len(self.events) > 4 * self.MAX_ROWS:
            del self.events[:-self.MAX_ROWS]
        evs = self._accepted(events[-4 * self.MAX_ROWS:])
        if evs:
            self.model.append(evs)
            self.table.scrollToBottom()

    def _refilter(self) -> None:
        self.model.set_rows(self._accepted(self.events))
        self._show_details(False)
        self.table.scrollToBottom()

    def _show_details(self, on: bool) -> None:
        """The field pane shown (a quarter of the height, the rows the rest) or hidden."""
        if on != self.details.isHidden():  # (isHidden: a log in a tab behind counts too)
            return
        if not on:
            self.details.clear()
            self.details.hide()
            return
        self.details.show()
        h = max(self.split.height(), 4)
        self.split.setSizes([h - h // 4, h // 4])

    def _show(self, row: int, *_args) -> None:
        if not 0 <= row < len(self.shown):
            self._show_details(False)
        else:
            self._show_details(True)
            ev = self.shown[row]
            d = ev.to_dict()
            self.details.setPlainText("\n".join(f"{k:>24}: {v:#x}" if isinstance(v, int) and
                                                not isinstance(v, bool) and k not in ("seq", "time")
                                                else f"{k:>24}: {v}" for k, v in d.items()))

    def clear(self) -> None:
        self.events = []
        self.model.set_rows([])
        self._show_details(False)

    def truncate(self, seq: int) -> None:
        """After a step back: drop the events after event `seq` (they have not happened)."""
        while self.events and self.events[-1].seq > seq:
            self.events.pop()
        shown = self.model.rows
        n = len(shown)
        while n and shown[n - 1].seq > seq:
            n -= 1
        if n < len(shown):
            self.model.truncate(n)
            self._show_details(False)
            self.table.scrollToBottom()


# -- exit statistics --------------------------------------------------------------------------------
class BarChart(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[str, int]] = []
        self.setMinimumHeight(120)
        self.color = QColor(LAYER_COLORS["light"]["kvm"])
        self.text = QColor("#1a1a1a")

    def set_rows(self, rows) -> None:
        if rows != self.rows:
            self.rows = rows
            self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        if not self.rows:
            p.setPen(self.text)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, tr("no VM exits yet"))
            return
        n = len(self.rows)
        h = self.height() - 8
        bar_h = min(26, h / n)
        label_w = min(190, self.width() // 3)
        top = max(c for _, c in self.rows) or 1
        fm = p.fontMetrics()
        for i, (name, count) in enumerate(self.rows):
            y = 4 + i * bar_h
            p.setPen(self.text)
            right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            p.drawText(QRectF(0, y, label_w - 6, bar_h), right,
                       fm.elidedText(name, Qt.TextElideMode.ElideRight, label_w - 6))
            w = (self.width() - label_w - 60) * count / top
            p.fillRect(QRectF(label_w, y + 2, max(w, 1), bar_h - 4), self.color)
            p.drawText(QRectF(label_w + w + 4, y, 56, bar_h), Qt.AlignmentFlag.AlignVCenter, str(count))


class StatsPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.chart = BarChart()
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels([tr("VM exit"), "#", tr("count"), tr("share"), tr("avg time"),
                                              tr("time share")])
        compact(self.table)  # the window's (proportional, tabular-figure) font: fits a side column
        h = self.table.horizontalHeader()  # the numbers whole; the name takes the room left
        h.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.chart)
        split.addWidget(self.table)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split, 1)
        lay.addWidget(self.summary)

    def refresh(self, bridge) -> None:
        st = bridge.stats
        d = st.as_dict()
        rows = d["vm_exits"]
        self.chart.set_rows([(r["reason"], r["count"]) for r in rows])
        t = self.table
        t.setRowCount(len(rows))
        for i, r in enumerate(rows):
            # (An exit still being handled counts at once but has no time yet: "-".)
            avg = f"{r['avg_time']:.0f}" if r["min_time"] is not None else "-"
            vals = (r["reason"], str(r["reason_number"]), str(r["count"]), f"{100 * r['share']:.1f}%",
                    avg, f"{100 * r['time_share']:.1f}%")
            for j, text in enumerate(vals):
                cell = t.item(i, j)
                if cell is None:
                    t.setItem(i, j, _item(text))
                elif cell.text() != text:
                    cell.setText(text)
        t.resizeColumnsToContents()
        us = ", ".join(f"{k} {v}" for k, v in d["userspace_exits"].items()) or T.NONE
        since = bridge.session.snapshot_path
        self.summary.setText(tr("VM exits {exits}, VM entries {entries}; exits to userspace: {us}; guest "
                                "instructions {n}; virtual time {time} cycles").format(
                                 exits=d['vm_exits_total'], entries=d['vm_entries'], us=us,
                                 n=bridge.session.instructions, time=bridge.session.virtual_time)
                             + (T.STATS_SINCE_SNAPSHOT.format(name=Path(since).name) if since else ""))

    def set_theme(self, theme: str) -> None:
        self.chart.color = QColor(LAYER_COLORS[theme]["kvm"])
        self.chart.text = QColor("#1a1a1a" if theme == "light" else "#eceff1")
        self.chart.update()


# -- interrupts (issue 10) ----------------------------------------------------------------------
def hex8(v: int) -> str:
    return f"0x{v:02X}"


def _irqs(bits: int, first: int) -> str:
    """The IRQ numbers of a PIC register's set bits ("IRQ 0 4"; "none")."""
    on = [str(first + i) for i in range(8) if bits >> i & 1]
    return "IRQ " + " ".join(on) if on else T.NONE


def _vectors(vs: list[int]) -> str:
    return " ".join(hex8(v) for v in vs) if vs else T.NONE


def _cycles_from_now(when: int | None, now: int) -> str:
    if when is None:
        return tr("not armed")
    return tr("in {us:.1f} us (virtual)").format(us=(when - now) * 1_000_000 / NOMINAL_HZ)


class InterruptsPanel(QWidget):
    """The PIC pair, the PIT's channels and each vCPU's local APIC, from
    `Session.interrupt_controllers()`, wherever the irqchip lives. `rows` keeps what the
    tree shows: {(group, register): (value, meaning)}."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.where = QLabel("")
        self.where.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels([tr("register"), tr("value"), tr("meaning")])
        self.tree.setFont(mono())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.where)
        lay.addWidget(self.tree, 1)
        self.rows: dict[tuple[str, str], tuple[str, str]] = {}
        self._groups: dict[str, QTreeWidgetItem] = {}
        self._items: dict[tuple[str, str], QTreeWidgetItem] = {}
        self._shape: tuple = ()
        self.theme = "light"

    def value_text(self, group: str, register: str) -> str:
        return self.rows[(group, register)][0]

    @staticmethod
    def describe(ic: dict, now: int) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """The groups and rows the panel shows for an interrupt_controllers() view."""
        groups: list[tuple[str, list[tuple[str, str, str]]]] = []
        for i, c in enumerate(ic.get("pic") or ()):
            base, first = c["irq_base"], 8 * i
            rows = [("vector base", hex8(base),
                     tr("IRQ {first}-{last} -> vectors {base}-{top}").format(
                         first=first, last=first + 7, base=hex8(base), top=hex8((base + 7) & 0xFF))),
                    ("IRR", hex8(c["irr"]), tr("requested: {irqs}").format(irqs=_irqs(c["irr"], first))),
                    ("ISR", hex8(c["isr"]), tr("in service: {irqs}").format(irqs=_irqs(c["isr"], first))),
                    ("IMR", hex8(c["imr"]),
                     tr("unmasked: {irqs}").format(irqs=_irqs(~c["imr"] & 0xFF, first))),
                    ("ELCR", hex8(c["elcr"]),
                     tr("level-triggered: {irqs}").format(irqs=_irqs(c["elcr"], first)))]
            if i == 0 and "pic_output" in ic:
                rows.append(("INT output", str(ic["pic_output"]),
                             tr("the master's INT pin to the CPU: raised") if ic["pic_output"] else
                             tr("the master's INT pin to the CPU")))
            groups.append((T.PIC_CHIPS[i], rows))
        for n, ch in enumerate(ic.get("pit") or ()):
            reload = ch["reload"]
            freq = f"{PIT_FREQ / reload:.2f} Hz" if reload else ""
            rows = [("mode", str(ch["mode"]), T.PIT_MODES.get(ch["mode"], "")),
                    ("reload", str(reload), f"{PIT_FREQ} Hz / {reload} = {freq}" if freq else ""),
                    ("counter", str(ch["counter"]), tr("counting down now")),
                    ("out", str(ch["out"]), tr("OUT pin (IRQ 0)") if n == 0 else tr("OUT pin")),
                    ("gate", str(ch["gate"]), "")]
            if n == 0:
                nxt = ch.get("next_irq")
                rows.append(("next IRQ", "-" if nxt is None else str(nxt),
                             _cycles_from_now(nxt, now) if nxt is None else
                             tr("{when}, cycle").format(when=_cycles_from_now(nxt, now))))
            groups.append((T.PIT_TITLE.format(n=n), rows))
        for n, a in enumerate(ic.get("apics") or ()):
            t = a["lvt_timer"]
            nxt = a.get("next_expiry")
            rows = [("ID", str(a["id"]), "xAPIC ID"),
                    ("IRR", _vectors(a["irr"]), tr("requested vectors")),
                    ("ISR", _vectors(a["isr"]), tr("vectors in service")),
                    ("TPR", hex8(a["tpr"]), tr("task priority")),
                    ("PPR", hex8(a["ppr"]), tr("processor priority")),
                    ("SVR", f"0x{a['svr']:X}",
                     tr("enabled") if a.get("sw_enabled") else tr("software-disabled")),
                    ("timer", f"{t['mode']} {hex8(t['vector'])}",
                     tr("masked") if t["masked"] else tr("unmasked")),
                    ("initial count", str(a["initial_count"]), tr("divide by {n}").format(n=a['divide'])),
                    ("current count", str(a["current_count"]), ""),
                    ("next expiry", "-" if nxt is None else str(nxt),
                     _cycles_from_now(nxt, now) if nxt is None else
                     tr("{when}, cycle").format(when=_cycles_from_now(nxt, now)))]
            groups.append((T.APIC_TITLE.format(n=n), rows))
        return groups

    def refresh(self, bridge) -> None:
        s = bridge.session
        ic = s.interrupt_controllers()
        if s.vm is None:
            self.where.setText(T.NO_CONTROLLERS)
            groups: list = []
        else:
            where = T.WHERE_KERNEL if ic["irqchip"] == "kernel" else T.WHERE_USERSPACE
            self.where.setText(tr("PIC and PIT {where}").format(where=where) if ic.get("apics") else
                               tr("PIC and PIT {where}; {no_apic}").format(where=where, no_apic=T.NO_APIC))
            groups = self.describe(ic, s.virtual_time)
        shape = tuple((g, tuple(r[0] for r in rows)) for g, rows in groups)
        t = self.tree
        t.setUpdatesEnabled(False)
        if shape != self._shape:  # another machine: build the tree again
            self._shape = shape
            t.clear()
            self._groups.clear()
            self._items.clear()
            for g, rows in groups:
                top = QTreeWidgetItem([g, "", ""])
                f = top.font(0)
                f.setBold(True)
                top.setFont(0, f)
                t.addTopLevelItem(top)
                top.setExpanded(True)
                self._groups[g] = top
                for name, _v, _m in rows:
                    it = QTreeWidgetItem([name, "", ""])
                    top.addChild(it)
                    self._items[(g, name)] = it
        self.rows = {}
        hl = QBrush(QColor(CHANGED[self.theme]))
        for g, rows in groups:
            for name, value, meaning in rows:
                it = self._items[(g, name)]
                changed = it.text(1) not in ("", value)
                if it.text(1) != value:
                    it.setText(1, value)
                if it.text(2) != meaning:
                    it.setText(2, meaning)
                it.setBackground(1, hl if changed else QBrush())
                self.rows[(g, name)] = (value, meaning)
        t.resizeColumnToContents(0)
        t.resizeColumnToContents(1)
        t.setUpdatesEnabled(True)


# -- vCPUs, threads and the BQL (issue 10) ------------------------------------------------------------
def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return tr("yes") if v else tr("no")
    return str(v) if v != "" else "-"


class VcpusPanel(QWidget):
    """Each vCPU's state as kvm.ko and QEMU have it (`Session.vcpu_states()`: mode,
    mp_state, the interrupt window, IF, the vector being injected), QEMU's threads (virtual
    time, what each waits for) and the BQL's owner and waiters (`Session.threads()`)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.vcpus = QTableWidget(0, 1)
        self.threads = QTableWidget(0, len(T.THREAD_HEADERS))
        self.threads.setHorizontalHeaderLabels(T.THREAD_HEADERS)
        self.bql = QLabel("")
        self.main_loop = QLabel("")
        for w in (self.bql, self.main_loop):
            w.setWordWrap(True)
            w.setFont(mono())
        for t in (self.vcpus, self.threads):
            compact(t)
            t.setFont(mono())
        self.threads.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.vcpus)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.bql)
        ll.addWidget(self.main_loop)
        ll.addWidget(self.threads, 1)
        split.addWidget(lower)
        split.setSizes([400, 250])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)
        self.vcpu_rows: list[str] = []  # the vcpu_states() keys, row by row

    @staticmethod
    def _set(t: QTableWidget, r: int, c: int, text: str) -> None:
        cell = t.item(r, c)
        if cell is None:
            t.setItem(r, c, _item(text))
        elif cell.text() != text:
            cell.setText(text)

    def vcpu_text(self, n: int, key: str) -> str:
        return self.vcpus.item(self.vcpu_rows.index(key), n + 1).text()

    def refresh(self, bridge) -> None:
        s = bridge.session
        states = s.vcpu_states()
        th = s.threads()
        stats = sorted({k for d in states for k in d.get("stat", {})})
        keys = [r[0] for r in T.VCPU_ROWS] + [f"stat.{k}" for k in stats]
        labels = {k: (label, tip) for k, label, tip in T.VCPU_ROWS}
        t = self.vcpus
        t.setUpdatesEnabled(False)
        if t.columnCount() != len(states) + 1 or self.vcpu_rows != keys:
            t.setColumnCount(len(states) + 1)
            t.setHorizontalHeaderLabels(["", *(f"vCPU{d['index']}" for d in states)])
            t.setRowCount(len(keys))
            self.vcpu_rows = keys
            for r, k in enumerate(keys):
                label, tip = labels.get(k, (k.replace("stat.", ""),
                                            tr("kvm.ko's vcpu->stat.{name}").format(name=k[5:])))
                self._set(t, r, 0, label)
                t.item(r, 0).setToolTip(tip)
        for c, d in enumerate(states, 1):
            for r, k in enumerate(keys):
                if k.startswith("stat."):
                    v: object = d.get("stat", {}).get(k[5:])
                elif k == "injecting":
                    v = hex8(d[k]) if isinstance(d.get(k), int) else None
                elif k == "interruptibility" and isinstance(d.get(k), int):
                    v = f"{d[k]:#x}"
                elif k in ("if_flag", "request_interrupt_window", "ready_for_interrupt_injection"):
                    v = d.get(k)  # kvm_run's __u8 fields: their numbers
                else:
                    v = d.get(k)
                self._set(t, r, c, _cell(v))
        t.resizeColumnsToContents()
        t.setUpdatesEnabled(True)
        bql = th.get("bql")
        if bql is None:
            self.bql.setText("")
        else:
            self.bql.setText(T.BQL_LINE.format(owner=bql["owner"] or T.NOBODY,
                                               waiters=", ".join(bql["waiters"]) or T.NONE,
                                               contended=bql["contended"]))
        loop = th.get("main_loop")
        if loop is None:
            self.main_loop.setText("")
        else:
            timers = (", ".join(tr("{name} at {at}").format(name=name, at=at) for at, name in loop["timers"])
                      or T.NONE)
            self.main_loop.setText(T.MAIN_LOOP_LINE.format(
                state=T.MAIN_LOOP_RUNNING if loop["running"] else T.MAIN_LOOP_POLLING,
                timers=timers))
        rows = th.get("threads", [])
        tt = self.threads
        tt.setUpdatesEnabled(False)
        tt.setRowCount(len(rows))
        for r, d in enumerate(rows):
            state = (tr("ended") if d["done"] else tr("running") if d["running"]
                     else tr("waiting") if d["waiting"] else tr("ready"))
            for c, text in enumerate((d["name"], str(d["time"]), state, d["waiting"] or "-")):
                self._set(tt, r, c, text)
        tt.resizeColumnsToContents()
        tt.setUpdatesEnabled(True)
