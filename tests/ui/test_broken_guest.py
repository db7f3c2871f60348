"""A guest that does not assemble opens anyway (issue 13): in the editor, its error's line
marked and the message shown, the machine not running; fixed in the editor, Assemble &
reset assembles it in place and the guest runs. The file on disk changes only by Save."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.conftest import HELLO

# Says "ok" on COM1, then exits through isa-debug-exit with status (0 << 1) | 1.
GOOD = """bits 32
org 0x100000
    mov dx, 0x3f8
    mov al, 'o'
    out dx, al
    mov al, 'k'
    out dx, al
    mov dx, 0x501
    mov al, 0
    out dx, al
    hlt
"""
BAD_LINE = 6
BAD = GOOD.replace("    mov al, 'k'", "    mvo al, 'k'   ; a typo")


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.asm"
    path.write_text(BAD)
    return path


def _run_actions(win) -> list:
    return [win.a_run, win.a_step_insn, win.a_step_event, win.a_step_exit, win.a_step_user, win.a_reset]


def _assert_marked(win, path: Path) -> None:
    src = win.source
    assert src.editor.toPlainText() == path.read_text()
    assert src.editor.error_line == BAD_LINE  # the gutter's marker and the line's background
    assert "mvo" in src.editor.error_message
    assert src.error_label.isVisible()
    assert f"line {BAD_LINE}" in src.error_label.text() and "mvo" in src.error_label.text()
    assert win.asm_status.isVisible() and "mvo" in win.asm_status.text()  # the status bar
    assert src.editor.textCursor().blockNumber() + 1 == BAD_LINE
    # The line's background is one of the editor's extra selections.
    assert any(s.cursor.blockNumber() + 1 == BAD_LINE for s in src.editor.extraSelections())
    # The machine is not running, and cannot be started until the guest assembles.
    assert not win.bridge.running and win.bridge.session.instructions == 0
    assert not any(a.isEnabled() for a in _run_actions(win))
    assert win.asm_error is not None and win.asm_error.line == BAD_LINE


def test_broken_guest_opens_marked_and_assemble_and_reset_runs_it(make_window, broken, qtbot) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QTextCursor
    from PySide6.QtWidgets import QToolTip

    win = make_window(broken)
    _assert_marked(win, broken)
    assert broken.name in win.windowTitle()
    win.apply_theme("dark")  # highlighting again is not an edit
    assert "not saved" not in win.source.file_label.text()

    # The error line's tooltip says the message.
    editor = win.source.editor
    block = editor.document().findBlockByNumber(BAD_LINE - 1)
    pos = editor.cursorRect(QTextCursor(block)).center()
    editor.show_error_tip(pos, editor.viewport().mapToGlobal(pos))
    assert "mvo" in QToolTip.text()

    # Still wrong: still marked, still not running.
    still = GOOD.replace("    out dx, al\n    hlt", "    otu dx, al\n    hlt")
    editor.setPlainText(still)
    qtbot.mouseClick(win.source.assemble_button, Qt.MouseButton.LeftButton)
    assert editor.error_line == still.splitlines().index("    otu dx, al") + 1
    assert not win.a_run.isEnabled()

    # Fixed in the editor: Assemble & reset assembles it in place; Run runs it.
    editor.setPlainText(GOOD)
    qtbot.mouseClick(win.source.assemble_button, Qt.MouseButton.LeftButton)
    assert win.asm_error is None and editor.error_line is None
    assert not win.source.error_label.isVisible() and not win.asm_status.isVisible()
    assert all(a.isEnabled() for a in _run_actions(win))
    assert editor.toPlainText() == GOOD
    win.a_run.trigger()
    qtbot.waitUntil(lambda: win.bridge.finished, timeout=20000)
    assert win.bridge.outcome.exit_status == 1
    assert "ok" in win.devices.console.toPlainText()
    # Nothing was written to the file: it still holds the broken text, until Save.
    assert broken.read_text() == BAD
    assert "not saved" in win.source.file_label.text()
    assert win.source.save()
    assert broken.read_text() == GOOD
    assert "not saved" not in win.source.file_label.text()


def test_file_open_a_broken_guest_and_back(window, broken, tmp_path) -> None:
    window.a_step_exit.trigger()  # hello.asm ran a little
    snap = tmp_path / "hello.vmsnap"
    assert window.save_snapshot(str(snap))
    window.open_guest(str(broken))
    _assert_marked(window, broken)
    assert window.bridge.current_line() is None  # no line of the broken text is "current"
    assert not window.a_save_snap.isEnabled()  # nothing to save: the guest never ran
    window.open_guest(str(HELLO))  # another guest that assembles: everything back on
    assert window.asm_error is None and window.source.editor.error_line is None
    assert window.a_run.isEnabled() and not window.asm_status.isVisible()
    assert window.source.editor.toPlainText() == HELLO.read_text()
    window.open_guest(str(broken))
    assert window.open_snapshot(str(snap))  # so does a snapshot's guest
    assert window.asm_error is None and window.a_run.isEnabled() and window.a_save_snap.isEnabled()
    assert window.source.editor.error_line is None and not window.asm_status.isVisible()


def test_a_bad_edit_of_a_running_guest_keeps_the_guest(window) -> None:
    """Typed into the editor of a guest that assembled: the error is marked and said, the
    guest that ran stays loaded and runnable."""
    window.a_step_insn.trigger()
    text = HELLO.read_text().replace("bits 32", "bits 32\n  frobnicate", 1)
    window.source.editor.setPlainText(text)
    assert not window.reassemble(text)
    assert window.source.editor.error_line == text.splitlines().index("  frobnicate") + 1
    assert window.asm_status.isVisible() and "frobnicate" in window.asm_status.text()
    assert window.a_run.isEnabled() and window.bridge.session.instructions == 1
