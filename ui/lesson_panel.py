"""The lesson panel (issue 14): a lesson's prose, its steps with their status, the current
step's interaction by kind, Check / Hint / Show solution / Previous / Next.

The panel reads lessons through vmsim.lessons (Lesson, Step, LessonRun, Progress) and
drives the window through a few of its methods (MainWindow.lesson_*): set up the session
of a step (its guest and machine), raise the panels a step names, give the editor's text
or put a text in it. Checks of "do" steps run against the live session the window shows
(LessonRun.attach: re-attached at each new session, see `attach`). Lesson text is shown
in ui.i18n's current language; `retranslate` renders it again after a switch. Progress is
saved after every check and at every step entered (Progress.record / set_current / save),
so a window opened later goes on where the student stopped.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ui import i18n
from ui.i18n import tr

KINDS = ("do", "predict", "modify", "choice", "practice")
MARKS = {"done": "\u2713", "tried": "\u2717", "new": "\u25cb"}  # ✓ ✗ ○: status beyond colour
SEED_MAX = 2**31 - 1
STEP_ROWS = 6  # the step list shows this many rows at most (it scrolls beyond)
SHORT_PANEL = 480  # pixels: a panel shorter than this lists three steps at a time


def lesson_lang() -> str:
    """The lesson files' language code for ui.i18n's current language."""
    return "zh-CN" if i18n.current_language() == "zh_CN" else "en"


def text_of(t: Any) -> str:
    """A lesson Text in the current language ("" for None)."""
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    return t.get(lesson_lang()) or ""


def status_word(status: str) -> str:
    return {"done": tr("done"), "tried": tr("tried, not done"), "new": tr("not tried")}.get(status, status)


def kind_word(kind: str) -> str:
    return {"do": tr("Do"), "predict": tr("Predict"), "modify": tr("Modify the guest"),
            "choice": tr("Explain what you see"), "practice": tr("Practice")}.get(kind, kind)


def action_words(action: dict) -> str:
    """A `do` step's reference action in words (Show solution)."""
    do = action.get("do", "")
    n = action.get("count", 1)
    names = {"step_instruction": tr("Step instruction (F11)"), "step_event": tr("Step event (F10)"),
             "step_vmexit": tr("To VM exit (F8)"), "step_userspace_exit": tr("To userspace exit (F7)"),
             "run": tr("Run to the end (F5)"), "save_snapshot": tr("Save a snapshot (Ctrl+S)"),
             "resume_snapshot": tr("Open the saved snapshot (Ctrl+Shift+O)")}
    if do == "run_until":
        if "address" in action:
            return tr("Run until the guest is about to execute {addr:#x} (a breakpoint there, "
                      "then F5)").format(addr=action["address"])
        where = ", ".join(f"{k}={v}" for k, v in (action.get("where") or {}).items())
        return tr("Step event (F10) until the event {kind} {where} (the event log shows each)").format(
            kind=action.get("kind", ""), where=where)
    words = names.get(do, do)
    return tr("{what}, {n} times").format(what=words, n=n) if n != 1 else words


@dataclass
class StepState:
    """What the student did at a step in this window (kept while moving between steps)."""

    hints: int = 0  # hints revealed
    result: Any = None  # the last StepResult
    answer: Any = None  # what was checked (predict: int, choice: set, practice: dict)
    locked: bool = False  # predict: answered (the field is read-only)
    solution: bool = False  # the solution was shown
    seed: int | None = None  # practice: the problem's seed
    inputs: dict[str, Any] = field(default_factory=dict)  # typed, not yet checked
    note: str = ""  # a word about the last Check that is not a result (a bad number)


class LessonPanel(QWidget):
    """The lesson dock's widget. `win` is the MainWindow (see the module's docstring)."""

    stepChanged = Signal(str)  # the step entered (its id)

    def __init__(self, win=None, parent=None):
        super().__init__(parent)
        self.win = win
        self.lesson = None
        self.run = None  # LessonRun
        self.progress = None  # Progress
        self.index = -1
        self.states: dict[str, StepState] = {}
        self.problems: dict[tuple[str, int], Any] = {}  # (step id, seed) -> practice Problem
        self._inputs: dict[str, Any] = {}  # the interaction's input widgets by role
        self.resuming = False  # the window opens a snapshot: the run before it is kept

        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setObjectName("lesson-title")
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.2)
        self.title.setFont(f)
        self.steps = QListWidget()
        self.steps.setObjectName("lesson-steps")
        self.steps.currentRowChanged.connect(self._row_chosen)
        self.prose = QTextBrowser()
        self.prose.setObjectName("lesson-prose")
        self.prose.setOpenExternalLinks(True)
        self.area = QWidget()
        self.area_layout = QVBoxLayout(self.area)
        self.area_layout.setContentsMargins(4, 4, 4, 4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.area)
        self.scroll = scroll
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(self.prose)
        self.split.addWidget(scroll)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 1)
        self.prose.setMinimumHeight(60)
        scroll.setMinimumHeight(60)
        self.split.setChildrenCollapsible(False)

        self.b_check = QPushButton(tr("Check"))
        self.b_check.setToolTip(tr("check this step (Ctrl+Return)"))
        self.b_check.clicked.connect(self.check)
        self.b_hint = QPushButton(tr("Hint"))
        self.b_hint.setToolTip(tr("reveal the next hint (Ctrl+H)"))
        self.b_hint.clicked.connect(self.hint)
        self.b_solution = QPushButton(tr("Show solution"))
        self.b_solution.clicked.connect(self.show_solution)
        # Previous and Next as arrows on the same row (the dock is short at 1366x768); their
        # words are in the tooltip and the accessible name.
        self.b_prev = QPushButton("\u25c0")
        self.b_prev.clicked.connect(self.previous)
        self.b_next = QPushButton("\u25b6")
        self.b_next.clicked.connect(self.next)
        for b in (self.b_prev, self.b_next):
            b.setFixedWidth(b.fontMetrics().horizontalAdvance("\u25c0") + 24)
        self._name_arrows()
        row1 = QHBoxLayout()
        row1.setSpacing(4)
        for b in (self.b_prev, self.b_check, self.b_hint, self.b_solution, self.b_next):
            row1.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.title)
        lay.addWidget(self.steps)
        lay.addWidget(self.split, 1)
        lay.addLayout(row1)
        self.empty = QLabel(tr("No lesson is open: Lessons > Choose a lesson… (Ctrl+L)"))
        self.empty.setWordWrap(True)
        lay.addWidget(self.empty)
        self._show_lesson_widgets(False)

    def _name_arrows(self) -> None:
        self.b_prev.setToolTip(tr("the previous step (Alt+Left)"))
        self.b_prev.setAccessibleName(tr("Previous step"))
        self.b_next.setToolTip(tr("the next step (Alt+Right)"))
        self.b_next.setAccessibleName(tr("Next step"))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_steps()
        QTimer.singleShot(0, self._fit_split)  # once the splitter has its new size

    def _fit_split(self) -> None:
        """The step's interaction as tall as it needs, the prose the rest, but never less
        than it needs up to 45% of the room (both scroll beyond)."""
        total = sum(self.split.sizes())
        if total < 130:
            return
        doc = self.prose.document()
        doc.setTextWidth(self.prose.viewport().width())
        need_prose = int(doc.size().height()) + 2 * self.prose.frameWidth() + 8
        lay, width = self.area.layout(), self.scroll.viewport().width()
        inner = lay.heightForWidth(width) if lay.hasHeightForWidth() else -1  # wrapped labels
        need_area = (inner if inner > 0 else self.area.sizeHint().height()) + 2 * self.scroll.frameWidth() + 4
        prose = max(total - need_area, min(need_prose, int(total * 0.45)))
        prose = max(60, min(prose, total - 60))
        self.split.setSizes([prose, total - prose])

    # -- the lesson ------------------------------------------------------------------------------------
    def _show_lesson_widgets(self, on: bool) -> None:
        for w in (self.title, self.steps, self.split, self.b_check, self.b_hint, self.b_solution,
                  self.b_prev, self.b_next):
            w.setVisible(on)
        self.empty.setVisible(not on)

    def open(self, lesson, run, progress, step_id: str | None = None) -> None:
        """Show `lesson` (run: its LessonRun; progress: the student's Progress) at
        `step_id`, else the step the student was last at, else the first."""
        self.lesson, self.run, self.progress = lesson, run, progress
        self.states = {}
        self.problems = {}
        self.index = -1
        self._show_lesson_widgets(True)
        ids = [s.id for s in lesson.steps]
        current = step_id or (progress.current(lesson.id) if progress is not None else None)
        self.go(ids.index(current) if current in ids else 0)

    @property
    def step(self):
        if self.lesson is None or not 0 <= self.index < len(self.lesson.steps):
            return None
        return self.lesson.steps[self.index]

    def state(self, step=None) -> StepState:
        step = step or self.step
        return self.states.setdefault(step.id, StepState())

    def status(self, step) -> str:
        if self.progress is None:
            return "new"
        return self.progress.step_status(self.lesson.id, step.id)

    def go(self, index: int) -> None:
        """Enter step `index`: the window set up for it (its guest and machine, the panels
        it names), its prose and interaction shown, the progress file told."""
        if self.lesson is None or not 0 <= index < len(self.lesson.steps):
            return
        self._keep_inputs()
        self.index = index
        step = self.step
        if self.win is not None:
            self.win.lesson_enter_step(self.lesson, step)
            self._restore_source(step)
        if self.progress is not None:
            self.progress.set_current(self.lesson.id, step.id)
            self._save()
        self.render()
        self.stepChanged.emit(step.id)

    def _restore_source(self, step) -> None:
        """A modify step shows the guest the student last checked (kept in the progress
        file), not the start again, when the editor holds the start."""
        if step.kind != "modify" or self.progress is None or not hasattr(self.progress, "answer"):
            return
        saved = self.progress.answer(self.lesson.id, step.id)
        start = step.start or step.guest
        try:
            original = start.read_text(encoding="utf-8") if start is not None else None
        except OSError:
            return
        text = self.win.lesson_source()
        untouched = text.strip() == (original or "").strip()
        if isinstance(saved, str) and saved.strip() and saved != text and untouched:
            self.win.lesson_set_source(saved)

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    def attach(self, session) -> None:
        """The window made a new session (reset, reassembled, a new step): do-step checks
        look at it from now on, with its events from its construction (a session made by
        record_from_start: KVM_CREATE_VM ...). Attached once: a second attach would
        record it from now only."""
        if self.run is None or session is None or self.run.session is session:
            return
        # A snapshot reopened (resuming): the run before it stays ahead of it, as the
        # engine's resume_snapshot action keeps it; a session the window built itself is
        # recorded from its construction (new_stream: LessonRun.record_stream).
        self.run.attach(session, keep_events=self.resuming)

    def new_stream(self, stream) -> None:
        """SessionBridge.stream_hook: the coming session's events recorded from its
        construction (the KVM_CREATE_VM of a snapshot reopened, lesson 14), whoever builds it."""
        if self.lesson is None or self.run is None:
            return
        self.run.record_stream(stream)

    def stop_event_sink(self):
        """What File > Save snapshot gives Session.save_snapshot: QEMU's stop path (it runs on
        a copy of the simulated VM) recorded after the session's events, as the engine's
        save_snapshot action records it. None without a lesson."""
        return self.run.stop_event_sink() if self.run is not None else None

    def _row_chosen(self, row: int) -> None:
        if row != self.index and row >= 0:
            self.go(row)

    def _save(self) -> None:
        try:
            self.progress.save()
        except OSError as e:  # a read-only data directory: say so, go on
            if self.win is not None:
                self.win.statusBar().showMessage(tr("progress not saved: {error}").format(
                    error=e.strerror or e), 10000)

    # -- rendering ----------------------------------------------------------------------------------
    def render(self) -> None:
        """Everything from the lesson and the state, in the current language."""
        lesson, step = self.lesson, self.step
        if lesson is None or step is None:
            self._show_lesson_widgets(False)
            return
        self.title.setText(tr("Lesson {n}: {title}").format(n=lesson.number, title=text_of(lesson.title)))
        self.title.setToolTip(text_of(lesson.summary))
        self._render_steps()
        prose = f"## {self.index + 1}. {text_of(step.title)}\n\n{text_of(step.prose)}"
        if self.index == 0 and text_of(lesson.intro).strip():  # the introduction before the first step
            prose = text_of(lesson.intro).rstrip() + "\n\n---\n\n" + prose
        self.prose.setMarkdown(prose)
        _modest_headings(self.prose)
        self._fit_split()
        self._render_area()
        self._update_buttons()

    def _render_steps(self) -> None:
        self.steps.blockSignals(True)
        self.steps.clear()
        for i, s in enumerate(self.lesson.steps):
            st = self.status(s)
            item = QListWidgetItem(f"{MARKS[st]} {i + 1}. {text_of(s.title)}")
            item.setToolTip(tr("{kind}; {status}").format(kind=kind_word(s.kind), status=status_word(st)))
            item.setData(Qt.ItemDataRole.AccessibleTextRole,
                         f"{i + 1}. {text_of(s.title)}: {status_word(st)}")
            self.steps.addItem(item)
        self.steps.setCurrentRow(self.index)
        self.steps.blockSignals(False)
        self._fit_steps()

    def _fit_steps(self) -> None:
        """Every step in the list (up to STEP_ROWS) where the panel has room; in a short
        one (1366x768) three rows and a scroll bar, the current step kept in view."""
        if self.lesson is None:
            return
        rows = min(len(self.lesson.steps), STEP_ROWS if self.height() >= SHORT_PANEL else 3)
        shown = self.steps.visualItemRect(self.steps.item(0)).height() if self.steps.count() else 0
        h = shown or (self.steps.sizeHintForRow(0) if self.steps.count() else 18)
        frame = 2 * self.steps.frameWidth()
        self.steps.setMinimumHeight(min(rows, 2) * h + frame)
        self.steps.setMaximumHeight(rows * h + frame)
        if self.steps.currentItem() is not None:
            self.steps.scrollToItem(self.steps.currentItem())

    def _clear_area(self) -> None:
        while self.area_layout.count():
            it = self.area_layout.takeAt(0)
            w = it.widget()
            if w is not None:
                w.setParent(None)
                w.deleteLater()
            elif it.layout() is not None:
                _drop_layout(it.layout())
        self._inputs = {}

    def _label(self, text: str, markdown: bool = False, name: str = "") -> QLabel:
        label = QLabel()
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                      | Qt.TextInteractionFlag.LinksAccessibleByMouse)
        label.setTextFormat(Qt.TextFormat.MarkdownText if markdown else Qt.TextFormat.RichText)
        label.setText(text)
        if name:
            label.setObjectName(name)
        self.area_layout.addWidget(label)
        return label

    def _render_area(self) -> None:
        self._clear_area()
        step, st = self.step, self.state()
        status = self.status(step)
        self._label(f"<b>{html.escape(kind_word(step.kind))}</b> \u2014 {MARKS[status]} "
                    f"{html.escape(status_word(status))}", name="lesson-kind")
        getattr(self, f"_area_{step.kind}", self._area_do)(step, st)
        self.hints_label = self._label(self._hints_html(step, st), name="lesson-hints")
        self.hints_label.setVisible(st.hints > 0)
        self.result_label = self._label(self._result_html(step, st), name="lesson-result")
        self.result_label.setVisible(bool(st.result is not None or st.note or st.solution))
        if st.solution and step.kind == "do" and isinstance(step.solution, list) and self.win is not None:
            b = QPushButton(tr("Do these for me (from the step's start)"))
            b.setObjectName("lesson-do-solution")
            b.setToolTip(tr("the machine starts again and takes these actions; then press Check"))
            b.clicked.connect(lambda: self.win.lesson_do_actions(step.solution))
            self.area_layout.addWidget(b)
        self.area_layout.addStretch(1)
        QTimer.singleShot(0, self._fit_split)  # room for what the step shows now

    def _area_do(self, step, st: StepState) -> None:
        self._label(html.escape(tr("Do it in the window (the toolbar's steps, Run, the panels), then "
                                   "press Check: it looks at the session as it stands now.")))

    def _area_predict(self, step, st: StepState) -> None:
        self._label(text_of(step.question), markdown=True, name="lesson-question")
        field = QLineEdit()
        field.setObjectName("lesson-answer")
        field.setPlaceholderText(tr("your prediction: a whole number"))
        field.setText(str(st.answer) if st.locked else st.inputs.get("answer", ""))
        field.setReadOnly(st.locked)
        field.returnPressed.connect(self.check)
        self.area_layout.addWidget(field)
        self._inputs["answer"] = field
        if not st.locked:
            self._label(html.escape(tr("Answer before running: the machine waits at its start until "
                                       "you have checked your prediction.")))

    def _area_modify(self, step, st: StepState) -> None:
        self._label(html.escape(tr("Change the guest in the Guest source panel (left), then press "
                                   "Check: your text runs in a fresh machine of this step and the "
                                   "checks look at that run.")))
        b = QPushButton(tr("Start again from the original guest"))
        b.clicked.connect(self._reload_start)
        self.area_layout.addWidget(b)

    def _area_choice(self, step, st: StepState) -> None:
        self._label(text_of(step.question), markdown=True, name="lesson-question")
        multi = sum(1 for o in step.options if o.correct) != 1
        if multi:
            self._label(html.escape(tr("Choose every answer that is right.")))
        group = QButtonGroup(self.area)
        group.setExclusive(not multi)
        chosen = st.answer if st.result is not None else st.inputs.get("choice", set())
        boxes = []
        for i, o in enumerate(step.options):
            # The button and its words apart: a label wraps a long option (a button cannot).
            b: QAbstractButton = QCheckBox() if multi else QRadioButton()
            b.setObjectName(f"lesson-option-{i}")
            b.setAccessibleName(text_of(o.text))
            b.setChecked(i in (chosen or set()))
            group.addButton(b, i)
            words = _ClickLabel(text_of(o.text), b)
            row = QHBoxLayout()
            row.addWidget(b, 0, Qt.AlignmentFlag.AlignTop)
            row.addWidget(words, 1)
            self.area_layout.addLayout(row)
            boxes.append(b)
            # After a wrong answer only the chosen options are explained (the others would
            # give the answer away); after the right one, every option.
            if st.result is not None and (st.result.passed or i in (chosen or set())):
                mark = tr("\u2713 right") if o.correct else tr("\u2717 not right")
                why = self._label(f"<i>{html.escape(mark)}: {html.escape(text_of(o.why))}</i>",
                                  name=f"lesson-why-{i}")
                why.setContentsMargins(22, 0, 0, 4)
        self._inputs["options"] = boxes
        self._inputs["group"] = group

    def _area_practice(self, step, st: StepState) -> None:
        if st.seed is None:
            st.seed = int(step.seed if step.seed is not None else 0)
        problem = self.problem(step, st.seed)
        row = QHBoxLayout()
        row.addWidget(QLabel(tr("Seed:")))
        seed = QSpinBox()
        seed.setObjectName("lesson-seed")
        seed.setRange(0, SEED_MAX)
        seed.setValue(st.seed)
        seed.setToolTip(tr("the problem's number: the same seed gives everyone the same problem"))
        seed.editingFinished.connect(lambda: self.set_seed(seed.value()))
        row.addWidget(seed, 1)
        new = QPushButton(tr("New problem"))
        new.setToolTip(tr("draw another problem (another seed)"))
        new.clicked.connect(self.new_problem)
        row.addWidget(new)
        self.area_layout.addLayout(row)
        self._inputs["seed"] = seed
        if problem is None:
            self._label(html.escape(tr("This problem cannot be made: {error}").format(
                error=st.note or "?")))
            return
        self._label(text_of(problem.prompt), markdown=True, name="lesson-problem")
        if problem.guest_source:
            b = QPushButton(tr("Load its guest into the editor"))
            b.clicked.connect(lambda: self.win is not None
                              and self.win.lesson_set_source(problem.guest_source))
            self.area_layout.addWidget(b)
        form = QFormLayout()
        fields = {}
        given = st.answer if st.result is not None else st.inputs.get("practice", {})
        for q in problem.questions:
            f = QLineEdit()
            f.setObjectName(f"lesson-q-{q.id}")
            f.setPlaceholderText({"int": tr("a whole number"), "hex": tr("hexadecimal, e.g. 0x1000"),
                                  "text": tr("your answer")}.get(q.kind, ""))
            v = (given or {}).get(q.id)
            f.setText("" if v is None else (f"{v:#x}" if q.kind == "hex" and isinstance(v, int) else str(v)))
            f.returnPressed.connect(self.check)
            label = QLabel(text_of(q.text))
            label.setWordWrap(True)
            form.addRow(label, f)
            fields[q.id] = (q, f)
        self.area_layout.addLayout(form)
        self._inputs["practice"] = fields

    def problem(self, step, seed: int):
        key = (step.id, seed)
        if key not in self.problems:
            try:
                self.problems[key] = self.run.problem(step, seed)
            except (ValueError, KeyError, RuntimeError) as e:
                self.state(step).note = " ".join(str(e).split())
                return None
        return self.problems[key]

    def set_seed(self, seed: int) -> None:
        st = self.state()
        if seed != st.seed:
            st.seed, st.result, st.solution, st.inputs, st.note = seed, None, False, {}, ""
            self._render_area()
            self._update_buttons()

    def new_problem(self) -> None:
        self.set_seed(random.SystemRandom().randrange(SEED_MAX))

    def _hints_html(self, step, st: StepState) -> str:
        n = len(step.hints)
        head = tr("Hint {i} of {n}:")  # hints are Markdown (`kvm_exit` ...)
        return "".join(_markdown_html(f"**{head.format(i=i + 1, n=n)}** {text_of(h)}")
                       for i, h in enumerate(step.hints[:st.hints]))

    def _result_html(self, step, st: StepState) -> str:
        parts: list[str] = []
        r = st.result
        if st.note:
            parts.append(html.escape(st.note))
        if r is not None:
            if r.passed:
                parts.append("<b>" + html.escape(tr("\u2713 Right: this step is done.")) + "</b>")
            elif step.kind == "predict":
                parts.append("<b>" + html.escape(tr("\u2717 Off this time; the step counts as done "
                                                     "once answered. The truth, and why:")) + "</b>")
            else:
                parts.append("<b>" + html.escape(tr("\u2717 Not yet:")) + "</b>")
            # predict: "you predicted N; the simulator counted M"; practice: each answer;
            # choice: the options' whys are beside them; the others: what failed.
            shown = ([] if step.kind == "choice" else r.checks if step.kind in ("predict", "practice")
                     else [c for c in r.checks if not c.passed])
            parts += [_markdown_html(f"{'✓' if c.passed else '✗'} {text_of(c.message)}") for c in shown]
            explain = step.explain if step.kind in ("predict", "choice") else None
            if explain is not None:
                parts.append(_markdown_html(text_of(explain)))
        if st.solution:
            parts.append(self._solution_html(step, st))
        return "<br>".join(p for p in parts if p)

    def _solution_html(self, step, st: StepState) -> str:
        head = "<b>" + html.escape(tr("Solution:")) + "</b> "
        if step.kind == "do" and isinstance(step.solution, list):
            return head + "<ol>" + "".join(f"<li>{html.escape(action_words(a))}</li>"
                                           for a in step.solution) + "</ol>"
        if step.kind == "modify":
            return head + html.escape(tr("the reference guest is in the editor (Guest source); "
                                         "Check it, or compare it with yours."))
        if step.kind == "practice":
            problem = self.problem(step, st.seed or 0)
            if problem is not None:
                return head + _markdown_html(text_of(problem.solution))
        return ""

    def _update_buttons(self) -> None:
        step, st = self.step, self.state()
        n = len(self.lesson.steps)
        self.b_prev.setEnabled(self.index > 0)
        self.b_next.setEnabled(self.index < n - 1)
        self.b_hint.setEnabled(st.hints < len(step.hints))
        self.b_hint.setText(tr("Hint ({i}/{n})").format(i=st.hints, n=len(step.hints)) if step.hints
                            else tr("Hint"))
        self.b_check.setEnabled(not (step.kind == "predict" and st.locked))
        has_solution = step.kind in ("do", "modify", "practice") and not st.solution
        self.b_solution.setEnabled(has_solution)
        if step.kind in ("predict", "choice"):
            self.b_solution.setToolTip(tr("Check shows the truth and why"))
        else:
            self.b_solution.setToolTip(tr("show the reference solution"))
        if self.win is not None:
            self.win.lesson_buttons_changed()

    def _keep_inputs(self) -> None:
        """What the student typed and did not check yet stays (a re-render, a language
        switch, a step left and come back to)."""
        step = self.step
        if step is None or not self._inputs:
            return
        st = self.state(step)
        try:
            if "answer" in self._inputs and not st.locked:
                st.inputs["answer"] = self._inputs["answer"].text()
            if "options" in self._inputs:
                st.inputs["choice"] = {i for i, b in enumerate(self._inputs["options"]) if b.isChecked()}
            if "practice" in self._inputs:
                st.inputs["practice"] = {k: f.text() for k, (_q, f) in self._inputs["practice"].items()}
        except RuntimeError:  # widgets already deleted
            pass

    def retranslate(self) -> None:
        """After a language switch: every text again, the lesson's in the new language."""
        self._keep_inputs()
        for w, t in ((self.b_check, tr("Check")), (self.b_solution, tr("Show solution"))):
            w.setText(t)
        self._name_arrows()
        self.empty.setText(tr("No lesson is open: Lessons > Choose a lesson… (Ctrl+L)"))
        if self.step is not None:
            self.render()

    # -- the student's actions ---------------------------------------------------------------------------
    def may_run(self) -> str:
        """Why the machine may not run now ("" if it may): a predict step not answered yet."""
        step = self.step
        if step is not None and step.kind == "predict" and not self.state(step).locked:
            return tr("Answer the prediction first (Lesson panel, then Check): the machine waits "
                      "at its start.")
        return ""

    def hint(self) -> None:
        step = self.step
        if step is None:
            return
        st = self.state()
        if st.hints < len(step.hints):
            st.hints += 1
            self._keep_inputs()
            self._render_area()
            self._update_buttons()

    def check(self) -> None:
        """Check the step: do against the live session, predict / choice / practice the
        answer given, modify the editor's text; the result in words, the progress saved."""
        step = self.step
        if step is None or self.run is None:
            return
        st = self.state()
        self._keep_inputs()
        st.note = ""
        kind = step.kind
        answer: Any = None
        # A modify step or a prediction runs the guest headless (up to a second or so).
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            if kind == "predict":
                if st.locked:
                    return
                text = st.inputs.get("answer", "").strip()
                try:
                    answer = int(text, 0)
                except ValueError:
                    st.note = tr("Enter a whole number (e.g. 3) and press Check.")
                    self._render_area()
                    return
                result = self.run.check(step, answer=answer)
                st.locked = True
            elif kind == "choice":
                answer = set(st.inputs.get("choice", set()))
                if not answer:
                    st.note = tr("Choose an answer, then press Check.")
                    self._render_area()
                    return
                result = self.run.check(step, answer=answer)
            elif kind == "modify":
                source = self.win.lesson_source() if self.win is not None else None
                result = self.run.check(step, source=source)
                answer = source  # kept: the step shows it again in a later window
            elif kind == "practice":
                answer = self._practice_answer(step, st)
                if answer is None:
                    self._render_area()
                    return
                result = self.run.check(step, answer=answer)
            else:
                if self.win is not None:
                    self.win.lesson_before_check()
                result = self.run.check(step)
        except Exception as e:  # a lesson's or a guest's fault: one line, not a crash
            st.note = tr("The check could not run: {error}").format(error=" ".join(str(e).split()))
            self._render_area()
            return
        finally:
            if QApplication.overrideCursor() is not None:
                QApplication.restoreOverrideCursor()
        st.result, st.answer = result, answer
        if self.progress is not None:
            saved = sorted(answer) if isinstance(answer, set) else answer
            # A prediction is made once, before the truth is seen: answered is done (whether
            # it was right is kept beside it); every other kind is done when it passes.
            self.progress.record(self.lesson.id, step.id, bool(result.passed) or kind == "predict",
                                 answer=saved, right=bool(result.passed))
            self._save()
        self._render_steps()
        self._render_area()
        self._update_buttons()
        if self.win is not None:
            done = result.passed or kind == "predict"
            self.win.statusBar().showMessage(tr("step done") if done else tr("not yet"), 5000)

    def _practice_answer(self, step, st: StepState) -> dict | None:
        problem = self.problem(step, st.seed or 0)
        if problem is None:
            return None
        out: dict[str, Any] = {"seed": st.seed}
        given = st.inputs.get("practice", {})
        for q in problem.questions:  # as typed: the problem reads them (0x1F or 1F, "1, 3" ...)
            text = (given.get(q.id) or "").strip()
            if not text:
                st.note = tr("Answer every question, then press Check.")
                return None
            out[q.id] = text
        return out

    def show_solution(self) -> None:
        step = self.step
        if step is None:
            return
        st = self.state()
        if step.kind == "modify":
            ask = QMessageBox.question(self, tr("Show solution"),
                                       tr("Put the reference solution into the editor? Your text there "
                                          "is replaced (save it first to keep it)."))
            if ask != QMessageBox.StandardButton.Yes:
                return
            if self.win is not None and step.solution is not None:
                self.win.lesson_set_source(step.solution.read_text(encoding="utf-8"))
        self._keep_inputs()
        st.solution = True
        self._render_area()
        self._update_buttons()

    def _reload_start(self) -> None:
        step = self.step
        if step is not None and self.win is not None:
            self.win.lesson_enter_step(self.lesson, step, fresh=True)


HEADING_SCALE = {1: 1.35, 2: 1.2, 3: 1.1}  # a narrow panel: headings a little larger, not twice


def _modest_headings(browser: QTextBrowser) -> None:
    """Markdown's headings at HEADING_SCALE of the text's size (Qt's own are up to 2x)."""
    from PySide6.QtGui import QTextCursor, QTextFormat

    base = browser.font().pointSizeF()
    doc = browser.document()
    block = doc.begin()
    while block.isValid():
        level = block.blockFormat().headingLevel()
        it = block.begin()
        while level and not it.atEnd():
            frag = it.fragment()
            fmt = frag.charFormat()
            fmt.clearProperty(QTextFormat.Property.FontSizeAdjustment)  # (Markdown's: up to +3)
            fmt.setFontPointSize(base * HEADING_SCALE.get(level, 1.0))
            cursor = QTextCursor(doc)
            cursor.setPosition(frag.position())
            cursor.setPosition(frag.position() + frag.length(), QTextCursor.MoveMode.KeepAnchor)
            cursor.setCharFormat(fmt)
            it += 1
        block = block.next()


class _ClickLabel(QLabel):
    """An option's words, wrapped; a click on them clicks its button."""

    def __init__(self, text: str, button: QAbstractButton):
        super().__init__(text)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.button = button

    def mouseReleaseEvent(self, event) -> None:
        self.button.click()
        super().mouseReleaseEvent(event)


def _markdown_html(text: str) -> str:
    """Markdown as the HTML of a rich-text label (a result's explanation, a worked solution)."""
    from PySide6.QtGui import QTextDocument

    doc = QTextDocument()
    doc.setMarkdown(text)
    body = doc.toHtml()
    return body[body.find("<body"):].split(">", 1)[1].rsplit("</body>", 1)[0]


def _drop_layout(layout) -> None:
    while layout.count():
        it = layout.takeAt(0)
        w, sub = it.widget(), it.layout()
        if w is not None:
            w.setParent(None)
            w.deleteLater()
        elif sub is not None:
            _drop_layout(sub)


class LessonChooser(QDialog):
    """Lessons > Choose a lesson: every lesson with its number, title and steps done."""

    def __init__(self, lessons: list, progress, parent=None, current: str | None = None):
        super().__init__(parent)
        self.setWindowTitle(tr("Choose a lesson"))
        self.lessons = lessons
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels([tr("No."), tr("Lesson"), tr("Steps done")])
        self.tree.setRootIsDecorated(False)
        for lesson in lessons:
            done = sum(1 for s in lesson.steps
                       if progress is not None and progress.step_status(lesson.id, s.id) == "done")
            item = QTreeWidgetItem([str(lesson.number), text_of(lesson.title),
                                    f"{done}/{len(lesson.steps)}"])
            item.setToolTip(1, text_of(lesson.summary))
            self.tree.addTopLevelItem(item)
            if lesson.id == current:
                self.tree.setCurrentItem(item)
        if self.tree.currentItem() is None and lessons:
            self.tree.setCurrentItem(self.tree.topLevelItem(0))
        from PySide6.QtWidgets import QHeaderView

        from ui.panels import install_tips

        header = self.tree.header()
        header.setStretchLastSection(False)
        for c, mode in ((0, QHeaderView.ResizeMode.ResizeToContents), (1, QHeaderView.ResizeMode.Stretch),
                        (2, QHeaderView.ResizeMode.ResizeToContents)):
            header.setSectionResizeMode(c, mode)
        install_tips(self.tree)  # a title cut short shows whole as its tooltip
        self.tree.itemDoubleClicked.connect(lambda *_: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tree)
        lay.addWidget(buttons)
        self.resize(720, 440)

    def chosen(self):
        item = self.tree.currentItem()
        return None if item is None else self.lessons[self.tree.indexOfTopLevelItem(item)]
