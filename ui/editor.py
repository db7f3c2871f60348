"""The guest source panel: NASM highlighting (pygments), the current line, breakpoints in
the gutter, edit and re-assemble in place with the error shown at its line (a marker in
the gutter, the line's background, its tooltip, and the message under the editor). The
file on disk is written only by Save."""

from __future__ import annotations

from pathlib import Path

from pygments.lexers.asm import NasmLexer
from pygments.token import Comment, Keyword, Name, Number, Operator, String, Token
from PySide6.QtCore import QEvent, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QPainter,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextFormat,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from ui.i18n import tr

STYLES = {
    "light": {Comment: "#6a737d", Keyword: "#0033b3", Name.Builtin: "#871094", Name.Label: "#00627a",
              Name.Function: "#00627a", Number: "#1750eb", String: "#067d17", Operator: "#444444",
              Name.Variable: "#871094", Keyword.Type: "#0033b3", Comment.Preproc: "#9e880d"},
    "dark": {Comment: "#7f8c98", Keyword: "#cc7832", Name.Builtin: "#9876aa", Name.Label: "#ffc66d",
             Name.Function: "#ffc66d", Number: "#6897bb", String: "#6a8759", Operator: "#a9b7c6",
             Name.Variable: "#9876aa", Keyword.Type: "#cc7832", Comment.Preproc: "#bbb529"},
}


class NasmHighlighter(QSyntaxHighlighter):
    """Highlights line by line with pygments' NASM lexer (a NASM line stands alone)."""

    def __init__(self, document, theme: str = "light"):
        super().__init__(document)
        self.lexer = NasmLexer(stripnl=False, ensurenl=False)
        self.set_theme(theme)

    def set_theme(self, theme: str) -> None:
        self.formats: dict = {}
        for tok, color in STYLES[theme].items():
            f = QTextCharFormat()
            f.setForeground(QColor(color))
            if tok in (Keyword, Name.Label, Name.Function):
                f.setFontWeight(QFont.Weight.Bold)
            self.formats[tok] = f
        self.rehighlight()

    def _format(self, tok) -> QTextCharFormat | None:
        while tok is not Token and tok not in self.formats:
            tok = tok.parent
        return self.formats.get(tok)

    def highlightBlock(self, text: str) -> None:
        pos = 0
        for tok, value in self.lexer.get_tokens(text):
            f = self._format(tok)
            if f is not None:
                self.setFormat(pos, len(value), f)
            pos += len(value)


class _Gutter(QWidget):
    def __init__(self, editor: SourceEditor):
        super().__init__(editor)
        self.editor = editor

    def sizeHint(self) -> QSize:
        return QSize(self.editor.gutter_width(), 0)

    def paintEvent(self, event) -> None:
        self.editor.paint_gutter(event)

    def mousePressEvent(self, event) -> None:
        block = self.editor.cursorForPosition(event.position().toPoint()).block()
        self.editor.gutterClicked.emit(block.blockNumber() + 1)

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:  # the error's marker says the error
            return self.editor.show_error_tip(event.pos(), event.globalPos())
        return super().event(event)


class SourceEditor(QPlainTextEdit):
    """A code editor: line numbers and breakpoint dots in the gutter (click to toggle)."""

    gutterClicked = Signal(int)  # 1-based line

    def __init__(self, parent=None):
        super().__init__(parent)
        self.breakpoints: set[int] = set()
        self.current_line: int | None = None
        self.error_line: int | None = None
        self.error_message = ""  # the assembler's message for error_line (its tooltip)
        self.theme = "light"
        f = QFont("monospace")
        f.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(f)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.gutter = _Gutter(self)
        self.highlighter = NasmHighlighter(self.document())
        self.blockCountChanged.connect(self._update_width)
        self.updateRequest.connect(self._update_gutter)
        self._update_width()

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 22 + self.fontMetrics().horizontalAdvance("9") * max(3, digits)

    def _update_width(self, *_args) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _update_gutter(self, rect, dy) -> None:
        if dy:
            self.gutter.scroll(0, dy)
        else:
            self.gutter.update(0, rect.y(), self.gutter.width(), rect.height())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        cr = self.contentsRect()
        self.gutter.setGeometry(QRect(cr.left(), cr.top(), self.gutter_width(), cr.height()))

    def paint_gutter(self, event) -> None:
        p = QPainter(self.gutter)
        dark = self.theme == "dark"
        p.fillRect(event.rect(), QColor("#20262b" if dark else "#eeeeee"))
        block = self.firstVisibleBlock()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        h = self.fontMetrics().height()
        first = event.rect().top()  # (a line's repaint draws that line's row only)
        while block.isValid() and top <= event.rect().bottom():
            n = block.blockNumber() + 1
            if block.isVisible() and top + h >= first:
                if n in self.breakpoints:
                    p.setBrush(QColor("#d32f2f"))
                    p.setPen(Qt.PenStyle.NoPen)
                    p.drawEllipse(4, top + (h - 11) // 2, 11, 11)
                if n == self.current_line:
                    p.setPen(QColor("#f9a825"))
                    p.drawText(2, top, 16, h, Qt.AlignmentFlag.AlignCenter, "\u25b6")
                if n == self.error_line:  # a shape, not only a colour: a cross in a red disc
                    p.setPen(Qt.PenStyle.NoPen)
                    p.setBrush(QColor("#c62828"))
                    p.drawEllipse(3, top + (h - 14) // 2, 14, 14)
                    p.setPen(QColor("#ffffff"))
                    p.drawText(3, top, 14, h, Qt.AlignmentFlag.AlignCenter, "\u2715")
                p.setPen(QColor("#c62828") if n == self.error_line else
                         QColor("#8a9199" if dark else "#777777"))
                p.drawText(0, top, self.gutter.width() - 4, h, Qt.AlignmentFlag.AlignRight, str(n))
            block = block.next()
            top += round(self.blockBoundingRect(block).height()) if block.isValid() else h

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self.highlighter.set_theme(theme)
        self._selections()

    def set_current_line(self, line: int | None, scroll: bool = True) -> None:
        """Mark `line` (1-based) as the current one, scrolled into view if `scroll`. A
        running guest's repaints (no scroll) touch the old and the new line only."""
        old = self.current_line
        self.current_line = line
        if not scroll:
            if line != old:
                self._selections()
                for n in (old, line):
                    self._update_gutter_line(n)
            return
        self._selections()
        if line is not None and scroll:
            block = self.document().findBlockByNumber(line - 1)
            if block.isValid():
                c = QTextCursor(block)
                self.setTextCursor(c)
                self.centerCursor() if not self._visible(block) else None
        self.gutter.update()

    def _update_gutter_line(self, line: int | None) -> None:
        """Repaint the gutter beside one line (1-based), if it is in the document."""
        block = self.document().findBlockByNumber(line - 1) if line is not None else None
        if block is not None and block.isValid():
            geo = self.blockBoundingGeometry(block).translated(self.contentOffset())
            self.gutter.update(0, int(geo.top()) - 1, self.gutter.width(), int(geo.height()) + 2)

    def _visible(self, block) -> bool:
        geo = self.blockBoundingGeometry(block).translated(self.contentOffset())
        return 0 <= geo.top() and geo.bottom() <= self.viewport().height()

    def set_error_line(self, line: int | None, message: str = "") -> None:
        self.error_line = line
        self.error_message = message if line else ""
        self._selections()
        self.gutter.update()

    def _line_at(self, pos) -> int:
        return self.cursorForPosition(pos).block().blockNumber() + 1

    def show_error_tip(self, pos, global_pos) -> bool:
        """A tooltip over the error's line (in the text or the gutter) shows its message."""
        if self.error_line is not None and self._line_at(pos) == self.error_line:
            QToolTip.showText(global_pos, self.error_message, self)
        else:
            QToolTip.hideText()
        return True

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            return self.show_error_tip(event.pos(), event.globalPos())
        return super().viewportEvent(event)

    def _selections(self) -> None:
        sels = []
        dark = self.theme == "dark"
        for line, color in ((self.current_line, "#5d4a00" if dark else "#fff3b0"),
                            (self.error_line, "#5c1a1a" if dark else "#ffcdd2")):
            if line is None:
                continue
            block = self.document().findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            s = QTextEdit.ExtraSelection()
            s.format.setBackground(QColor(color))
            s.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
            s.cursor = QTextCursor(block)
            sels.append(s)
        self.setExtraSelections(sels)


class SourcePanel(QWidget):
    """The editor with Assemble & reset and Save buttons and an error line under it.

    `path` is the file the text came from (None: none, e.g. a flat binary); the text is
    written back to it only by save()."""

    assembleRequested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.editor = SourceEditor(self)
        self.path: str | None = None
        self.file_label = QLabel("")  # the file's name (its path in the tooltip): it may shrink
        self.file_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.assemble_button = QPushButton(tr("Assemble && reset"))
        self.assemble_button.setToolTip(tr("Assemble the edited source and start the guest again (Ctrl+B)"))
        self.assemble_button.clicked.connect(lambda: self.assembleRequested.emit(self.editor.toPlainText()))
        self.save_button = QPushButton(tr("Save"))
        self.save_button.setToolTip(tr("Write the edited source to its file"))
        self.save_button.clicked.connect(lambda: self.save())
        self.error_label = QLabel("")
        self.error_label.setObjectName("asm-error")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setStyleSheet("QLabel#asm-error { color: #b71c1c; background: #ffebee; "
                                       "border: 1px solid #c62828; padding: 3px; font-weight: bold }")
        self.error_label.hide()
        top = QHBoxLayout()
        top.addWidget(self.file_label, 1)
        top.addWidget(self.save_button)
        top.addWidget(self.assemble_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.editor, 1)
        lay.addWidget(self.error_label)
        self.edited = False  # the text differs from its file's (as loaded or saved)
        self._saved: str | None = ""
        self.editor.textChanged.connect(self._text_changed)

    def _text_changed(self) -> None:
        # textChanged also comes with highlighting (a theme's rehighlight): compare the text.
        if self._saved is None:
            return
        doc = self.editor.document()
        edited = doc.characterCount() != len(self._saved) + 1 or doc.toPlainText() != self._saved
        if edited != self.edited:
            self.edited = edited
            self._show_file()

    def set_source(self, path: str | None, text: str, label: str = "") -> None:
        """Show `text`, the contents of `path` (None: no file to save it to)."""
        self.path = path
        self._label = label or str(path or "")
        self._saved = None  # (setPlainText's textChanged: not an edit)
        self.editor.setPlainText(text)
        self._saved = self.editor.toPlainText()  # as the editor holds it (\r\n as \n)
        self.edited = False
        self.save_button.setEnabled(path is not None)
        self._show_file()

    def _show_file(self) -> None:
        full = getattr(self, "_label", "")
        label = Path(full).name if full else ""
        if self.edited and self.path is not None:
            label = tr("{file} (edited, not saved)").format(file=label)
        self.file_label.setText(label)
        self.file_label.setToolTip(full)

    def save(self, path: str | None = None) -> bool:
        """Write the editor's text to `path`, or to its file (asked for when it has none
        or its folder is gone); a failure is shown under the editor."""
        path = path or self.path
        if path is None or not Path(path).parent.is_dir():
            path, _ = QFileDialog.getSaveFileName(self, tr("Save source"), str(path or "guest.asm"),
                                                  tr("Assembly (*.asm);;All files (*)"))
            if not path:
                return False
        try:
            Path(path).write_text(self.editor.toPlainText(), encoding="utf-8")
        except OSError as e:
            self.error_label.setText(tr("cannot save {file}: {error}").format(
                file=path, error=e.strerror or e))
            self.error_label.show()
            return False
        self.path = self._label = str(path)
        self._saved = self.editor.toPlainText()
        self.edited = False
        self._show_file()
        return True

    def show_error(self, line: int | None, message: str, col: int | None = None) -> None:
        """The assembler's error: its line marked (gutter, background, tooltip) and the
        message under the editor, the cursor put on it."""
        if line and col:
            text = tr("Does not assemble: line {line}, column {col}: {message}").format(
                line=line, col=col, message=message)
        elif line:
            text = tr("Does not assemble: line {line}: {message}").format(line=line, message=message)
        else:
            text = tr("Does not assemble: {message}").format(message=message)
        self.error_label.setText(text)
        self.error_label.setToolTip(message)
        self.error_label.show()
        self.editor.set_error_line(line, message)
        if line:
            block = self.editor.document().findBlockByNumber(line - 1)
            if block.isValid():
                c = QTextCursor(block)
                if col:
                    c.movePosition(QTextCursor.MoveOperation.Right, QTextCursor.MoveMode.MoveAnchor,
                                   min(col - 1, max(block.length() - 1, 0)))
                self.editor.setTextCursor(c)
                self.editor.centerCursor()

    def clear_error(self) -> None:
        self.error_label.setText("")
        self.error_label.setToolTip("")
        self.error_label.hide()
        self.editor.set_error_line(None)
