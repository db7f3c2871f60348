"""The window's layout at the sizes a classroom has (issue 13): nothing clipped without a
way to read it, the diagram legible, presentation mode and View > Reset layout give back
what they took, every action on the keyboard, readable contrast, the diagram's meaning
not carried by colour alone."""

from __future__ import annotations

import pytest

from tests.ui.conftest import HELLO

SIZES = [(1366, 768), (1600, 1000), (1920, 1080)]


def _window(qtbot, size, **kw):
    from PySide6.QtWidgets import QApplication

    from ui.mainwindow import MainWindow

    win = MainWindow(str(HELLO), settings=None, **kw)
    win.diagram.animate = False
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    QApplication.processEvents()
    win.default_dock_sizes()  # as the timer the first show starts does
    QApplication.processEvents()
    return win


def _shown_docks(win) -> dict[str, object]:
    """The panels on screen: visible and in front of their tab group."""
    return {n: d for n, d in win.docks.items() if d.isVisible() and not d.visibleRegion().isEmpty()}


def _arrangement(win) -> dict[str, tuple]:
    """Where each panel is: its area, whether shown, the panels tabbed with it."""
    return {n: (win.dockWidgetArea(d), d.isVisible(), d.isFloating(),
                frozenset(t.objectName() for t in win.tabifiedDockWidgets(d)))
            for n, d in win.docks.items()}


def _cut_without_tip(win) -> list[str]:
    """Cells and labels on screen whose text does not fit and has no tooltip to show it."""
    from PySide6.QtWidgets import QAbstractItemView, QLabel

    from ui.panels import TipDelegate

    bad = []
    for name, dock in _shown_docks(win).items():
        for view in dock.findChildren(QAbstractItemView):
            if not view.isVisible() or view.model() is None:
                continue
            delegate = view.itemDelegate()
            m = view.model()
            for r in range(min(m.rowCount(), 40)):
                for c in range(m.columnCount()):
                    index = m.index(r, c)
                    text = index.data()
                    if not text or view.visualRect(index).isEmpty():
                        continue
                    if isinstance(delegate, TipDelegate):
                        if delegate.is_elided(view, index) and delegate.tip(view, index) != str(text):
                            bad.append(f"{name}: cell {text!r}")
                    else:
                        bad.append(f"{name}: {type(view).__name__} without TipDelegate")
                        break
        for label in dock.findChildren(QLabel):
            if (label.isVisible() and label.text() and not label.wordWrap() and not label.toolTip()
                    and label.fontMetrics().horizontalAdvance(label.text()) > label.width() + 1):
                bad.append(f"{name}: label {label.text()!r} cut at {label.width()} px")
    return bad


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_window_fits_each_size_with_nothing_cut_off(qtbot, size) -> None:
    from PySide6.QtWidgets import QTabBar, QToolBar

    from ui.diagram import FLOOR_PX

    win = _window(qtbot, size)
    for _ in range(40):  # hello.asm at its fourth VM exit, the documentation's moment
        win.a_step_event.trigger()
    assert (win.width(), win.height()) == size  # nothing forced the window larger
    # Every toolbar control is on screen, none behind the overflow button.
    for bar in win.findChildren(QToolBar):
        for a in bar.actions():
            if a.isVisible() and not a.isSeparator():
                w = bar.widgetForAction(a)
                assert w is not None and w.isVisible(), (bar.objectName(), a.text())
                assert bar.rect().contains(w.geometry()), (bar.objectName(), a.text())
    # Dock tabs show whole titles, all of them, without scrolling.
    bars = [b for b in win.findChildren(QTabBar) if b.parent() is win and b.isVisible()]
    assert len(bars) == 4
    for bar in bars:
        for i in range(bar.count()):
            assert bar.tabRect(i).right() <= bar.width(), bar.tabText(i)
            assert bar.tabRect(i).width() >= bar.fontMetrics().horizontalAdvance(bar.tabText(i))
    # Each panel shown has at least the room it needs, the diagram included.
    for name, dock in _shown_docks(win).items():
        hint = dock.minimumSizeHint()
        assert dock.width() >= hint.width() and dock.height() >= hint.height(), name
    assert set(_shown_docks(win)) >= {"source", "registers", "stats", "devices"}
    # The diagram is drawn whole and its text is never below the legibility floor.
    d = win.diagram
    assert d.scale_factor() >= 0.5
    px = d.text_pixels()
    title, detail, layer = FLOOR_PX[False]
    assert px["title"] >= title - 0.5 and px["detail"] >= detail - 0.5 and px["layer"] >= layer - 0.5
    for item in d.boxes.values():  # every title readable whole (squeezed, not cut)
        assert "…" not in item.title.text(), item.box.title
    scene_on_screen = d.mapFromScene(d.scene_.sceneRect()).boundingRect()
    assert d.viewport().rect().adjusted(-2, -2, 2, 2).contains(scene_on_screen)
    # Cut text has its tooltip; a table with a column that takes the room left is never
    # wider than its view (the exit statistics' last columns were out of view).
    assert _cut_without_tip(win) == []
    from PySide6.QtWidgets import QApplication, QHeaderView, QTableView

    QApplication.processEvents()
    for name, dock in _shown_docks(win).items():
        for t in dock.findChildren(QTableView):
            h = t.horizontalHeader()
            if t.isVisible() and any(h.sectionResizeMode(i) == QHeaderView.ResizeMode.Stretch
                                     for i in range(h.count())):
                assert h.length() <= t.viewport().width() + 1, name
    # The registers' flags are whole at every size.
    win.raise_panel("registers", "registers")
    t = win.registers.table
    row = next(r for r in range(t.rowCount()) if t.item(r, 0).text() == "EFLAGS")
    assert not t.itemDelegate().is_elided(t, t.model().index(row, 2))


def test_a_cut_cell_shows_its_whole_text_as_tooltip(qtbot) -> None:
    win = _window(qtbot, (1366, 768))
    win.a_step_event.trigger()
    t = win.registers.table
    t.setColumnWidth(1, 30)  # as a narrow dock would
    row = next(r for r in range(t.rowCount()) if t.item(r, 0).text() == "EFLAGS")
    index = t.model().index(row, 1)
    delegate = t.itemDelegate()
    assert delegate.is_elided(t, index)
    assert delegate.tip(t, index) == t.item(row, 1).text()
    assert not delegate.is_elided(t, t.model().index(row, 0))  # "EFLAGS" fits
    assert delegate.tip(t, t.model().index(row, 0)) is None


def test_presentation_mode_and_back(qtbot) -> None:
    from ui.diagram import ANIM_MS, FLOOR_PX

    win = _window(qtbot, (1920, 1080))
    win.raise_panel("guest.vcpu0", "registers")  # the panel in focus: the last one raised
    before = _arrangement(win)
    geometry = {n: d.geometry() for n, d in _shown_docks(win).items()}
    font = win.registers.table.font().pointSizeF()
    scale = win.diagram.scale_factor()
    win.a_present.trigger()  # the toolbar's / View menu's toggle
    assert win.presentation and win.a_present.isChecked()
    assert [n for n, d in win.docks.items() if d.isVisible()] == ["registers"]
    assert win.registers.table.font().pointSizeF() >= 1.5 * font
    assert win.diagram.scale_factor() > scale  # the diagram gets the room the panels had
    px = win.diagram.text_pixels()
    assert px["title"] >= FLOOR_PX[True][0] - 0.5 and px["detail"] >= FLOOR_PX[True][1] - 0.5
    assert win.diagram.anim.duration() == ANIM_MS[True] > ANIM_MS[False]
    # Clicking another box brings its panel instead of the one shown.
    win.raise_panel("hw.vmcs", "vmcs")
    assert [n for n, d in win.docks.items() if d.isVisible()] == ["vmcs"]
    win.a_present.trigger()
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    assert not win.presentation
    assert _arrangement(win) == before
    assert win.registers.table.font().pointSizeF() == font
    assert win.diagram.anim.duration() == ANIM_MS[False]
    for n, g in geometry.items():
        now = win.docks[n].geometry()
        assert abs(now.width() - g.width()) <= 4 and abs(now.height() - g.height()) <= 4, n


def test_reset_layout_brings_every_panel_back(qtbot) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    win = _window(qtbot, (1600, 1000))
    default = _arrangement(win)
    width = win.docks["registers"].width()
    win.docks["registers"].close()
    win.docks["events"].setFloating(True)
    win.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, win.docks["stats"])
    win.resizeDocks([win.docks["source"]], [700], Qt.Orientation.Horizontal)
    assert _arrangement(win) != default
    win.a_reset_layout.trigger()
    QApplication.processEvents()
    assert _arrangement(win) == default
    assert abs(win.docks["registers"].width() - width) <= 4


def test_every_action_has_a_key(qtbot) -> None:
    win = _window(qtbot, (1366, 768))
    missing = []
    for menu_action in win.menuBar().actions():
        menu = menu_action.menu()
        assert "&" in menu_action.text(), menu_action.text()
        for a in menu.actions():
            if a.isSeparator() or a.menu() is not None:
                continue
            if a.shortcut().isEmpty() and "&" not in a.text().replace("&&", ""):
                missing.append(a.text())
    assert missing == []
    in_menus = {a for m in win.menuBar().actions() for a in m.menu().actions()}
    for a in win.toolbar.actions():  # every toolbar button is also in a menu
        assert a.isSeparator() or a in in_menus, a.text()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_contrast_and_no_meaning_by_colour_alone(qtbot, theme) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QPalette

    from ui.diagram import contrast

    win = _window(qtbot, (1366, 768), theme=theme)
    d = win.diagram
    c = d.colors()
    text = QColor(c["text"])
    assert contrast(text, QColor(c["box_fill"])) >= 7
    assert contrast(text, QColor(c["lit"])) >= 4.5
    for layer in ("guest", "vmm", "kvm", "hw"):
        assert contrast(d.band_text(layer), d.band_fill(layer)) >= 4.5, layer
    pal = win.palette()
    G, R = QPalette.ColorGroup, QPalette.ColorRole
    assert contrast(pal.color(R.WindowText), pal.color(R.Window)) >= 7
    assert contrast(pal.color(G.Disabled, R.ButtonText), pal.color(R.Button)) >= 3.5
    win.a_step_exit.trigger()  # the run loop handles the exit: lit, and marked
    box = d.boxes[d.active_box]
    assert contrast(box.title.brush().color(), box.brush().color()) >= 7
    normal = next(b for k, b in d.boxes.items() if k != d.active_box and k not in d.lit)
    assert box.pen().widthF() >= 2 * normal.pen().widthF()  # a thick border ...
    assert d.marker.isVisible() and d.marker.sceneBoundingRect().intersects(box.sceneBoundingRect())
    assert d.marker_text.text()  # ... and a "now" tag
    for k in d.lit:
        assert d.boxes[k].pen().style() == Qt.PenStyle.DashLine  # what runs: dashed
    assert [label.text() for _, label, _ in d.bands] == [layer["title"] for layer in d.layout_data.layers]


def test_smc_is_told_in_plain_words(qtbot) -> None:
    win = _window(qtbot, (1366, 768))
    win.diagram.show_event("smc", "cpu0", {"frame": 0x100000}, "self-modifying code: ...")
    text = win.diagram.caption.text()
    assert "not a bug" in text and "0x100000" in text and "self-modifying" not in text


def test_the_screenshot_command_covers_sizes_themes_and_presentation() -> None:
    from ui import screenshots as S

    shots = set(S.SHOTS)
    assert {s for _, s, _ in shots} == set(map(tuple, SIZES))
    assert {(t, s) for t, s, p in shots if not p} == {(t, tuple(s)) for t in S.THEMES for s in SIZES}
    assert {t for t, _, p in shots if p} == {"light", "dark"}
    cmd = S.command(S.ROOT / "x.png", "dark", (1366, 768), True, "g.asm", 40)
    assert cmd[1:] == ["-m", "vmsim", "gui", "g.asm", "--screenshot", str(S.ROOT / "x.png"),
                       "--size", "1366x768", "--theme", "dark", "--steps", "40", "--presentation"]


def test_a_small_vga_screen_shows_its_used_part_larger(qtbot) -> None:
    from ui.panels import VgaScreen

    vga = VgaScreen()
    qtbot.addWidget(vga)
    buf = bytearray(80 * 25 * 2)
    for i, ch in enumerate(b"Hello"):  # row 2, columns 0-4, white on blue
        buf[2 * (2 * 80 + i)], buf[2 * (2 * 80 + i) + 1] = ch, 0x1F
    vga.set_buffer(bytes(buf))
    vga.resize(720, 400)
    assert vga.shown() == (25, 80)  # room for all of it: all of it
    vga.resize(300, 120)
    rows, cols = vga.shown()
    assert 3 <= rows < 25 and 5 <= cols < 80  # the used cells, and no more than fits
    assert min(vga.width() / (9 * cols), vga.height() / (16 * rows)) * 16 >= VgaScreen.MIN_ROW_PX
    vga.grab()  # paints, and says what it left out
    assert "25x80" in vga.toolTip()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_long_caption_keeps_to_its_two_lines(qtbot, size) -> None:
    # A stop reason naming an instruction and its cause ran to a third line, which the
    # caption's two lines cut through the middle of its letters.
    from PySide6.QtCore import QRect, Qt

    win = _window(qtbot, size)
    d, label = win.diagram, win.diagram.caption
    long = ("vCPU0 thread: stopped kvm.ko could not emulate the guest instruction "
            "`bound eax,[0B8000h]` at eip 0x00100005 (KVM_EXIT_INTERNAL_ERROR, suberror 1: "
            "emulation failure): Linux's instruction emulator has no BOUND (emulate.c's "
            "opcode table). " * 2)
    d.highlight(None, (), long)
    shown = label.text()
    assert shown.endswith("\u2026") and long.startswith(shown[:-1])
    assert long[len(shown) - 1] == " "  # cut at a word's end
    room = QRect(0, 0, label.width(), 1 << 20)
    assert label.fontMetrics().boundingRect(room, Qt.TextFlag.TextWordWrap,
                                            shown).height() <= label.height()
    assert label.toolTip() == long  # the whole of it
    d.highlight(None, (), "VM entry")
    assert (label.text(), label.toolTip()) == ("VM entry", "VM entry")
