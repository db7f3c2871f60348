"""The lesson panel (issue 14), walked as a student would: the engine's fixture lesson
(tests/data/lessons/01-everything: a do, a predict, a choice and a modify step on a guest
that writes "hi" to COM1), so that lesson content written elsewhere can change freely.
The words expected come from the lesson's own files, not from the panel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "lessons" / "01-everything"


@pytest.fixture
def english():
    from ui import i18n

    i18n.install("en")
    yield i18n
    i18n.install("en")


@pytest.fixture
def lesson(tmp_path, monkeypatch):
    from vmsim.lessons import load_lesson

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))  # the progress file: progress.json here
    return load_lesson(FIXTURE)


@pytest.fixture
def open_window(qtbot, english):
    from ui.mainwindow import MainWindow

    def make(lesson, step=None):
        win = MainWindow(None, settings=None, lesson=lesson, step=step)
        win.diagram.animate = False
        qtbot.addWidget(win)
        win.resize(1600, 1000)
        win.show()
        qtbot.waitExposed(win)
        return win

    return make


def _plain(label) -> str:
    """A rich-text or Markdown label's words, as shown."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QTextDocument

    doc = QTextDocument()
    if label.textFormat() == Qt.TextFormat.MarkdownText:
        doc.setMarkdown(label.text())
    else:
        doc.setHtml(label.text())
    return " ".join(doc.toPlainText().split())


def _words(text: str) -> str:
    return " ".join(text.split())


def _first_line(markdown: str) -> str:
    """The first line of prose of a Markdown text, as rendered (no `code` marks)."""
    from PySide6.QtGui import QTextDocument

    line = next(line for line in markdown.splitlines() if line.strip() and not line.startswith("#"))
    doc = QTextDocument()
    doc.setMarkdown(line)
    return _words(doc.toPlainText())


def _in_front(win, name: str) -> bool:
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    return not win.docks[name].visibleRegion().isEmpty()


def test_a_student_walks_a_lesson_and_comes_back(qtbot, lesson, open_window, tmp_path, monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from ui.lesson_panel import MARKS

    win = open_window(lesson)
    p = win.lesson_panel
    do, _run_to_end, count, _eax, choice, modify = lesson.steps
    assert (p.step.id, p.index) == (do.id, 0)
    assert lesson.title.get("en") in p.title.text()
    assert _in_front(win, "lesson") and _in_front(win, "source")  # the lesson over the guest
    prose = _words(p.prose.toPlainText())
    assert _first_line(lesson.intro.get("en")) in prose  # the introduction before the first step
    assert _first_line(do.prose.get("en")) in prose
    assert p.steps.count() == len(lesson.steps)
    assert _in_front(win, do.show[0])  # the panels the step names, the first in front
    # The checks see the session from its construction (the KVM API calls that made it).
    def ioctls():
        return [ev.fields.get("name") for ev in p.run.events if ev.kind == "kvm_ioctl"]

    assert "KVM_CREATE_VM" in ioctls()
    win.a_reset.trigger()  # a new session: followed, from its construction too
    assert p.run.session is win.bridge.session and ioctls().count("KVM_CREATE_VM") == 1

    # A do step checked before acting: it fails and says why, in the lesson's words.
    p.b_check.click()
    result = _plain(p.result_label)
    assert not p.state().result.passed
    assert _words(do.checks[0]["message"]["en"]) in result
    assert p.steps.item(0).text().startswith(MARKS["tried"])
    # A hint, one at a time.
    assert p.b_hint.isEnabled()
    p.b_hint.click()
    assert _words(do.hints[0].get("en")) in _plain(p.hints_label)
    assert _words(do.hints[1].get("en")) not in _plain(p.hints_label)
    # Acting in the window: to the first IO_INSTRUCTION exit, as the step asks.
    s = win.bridge.session
    for _ in range(10):
        win.a_step_exit.trigger()
        if (s.last_exit() or {}).get("reason") == "IO_INSTRUCTION":
            break
    p.b_check.click()
    assert p.state().result.passed, _plain(p.result_label)
    assert p.steps.item(0).text().startswith(MARKS["done"])

    # Next, Next: a predict step. The machine waits at its start until it is answered.
    p.b_next.click()
    p.b_next.click()
    assert p.step.id == count.id and p.b_prev.isEnabled()
    s = win.bridge.session
    assert s.instructions == 0
    win.a_step_event.trigger()
    win.a_run.trigger()
    assert s.instructions == 0 and not win.bridge.running and p.may_run() in win.status.text()
    truth = p.run.truth(count)
    p._inputs["answer"].setText(str(truth + 1))  # wrong
    p.b_check.click()
    st = p.state()
    assert not st.result.passed and st.locked and p._inputs["answer"].isReadOnly()
    assert not p.b_check.isEnabled()  # the answer is locked
    assert str(truth) in _plain(p.result_label) and _words(count.explain.get("en")) in _plain(p.result_label)
    # A prediction is made once: answered, even wrongly, the step is done (and the
    # progress file says it was not right).
    assert p.steps.item(2).text().startswith(MARKS["done"])
    assert "Off this time" in _plain(p.result_label)
    # Answered: the machine may run, and the truth shown is what the window's run makes.
    win.a_run.trigger()
    qtbot.waitUntil(lambda: win.bridge.finished, timeout=60_000)  # bounds a hang only
    io_exits = [ev for ev in win.bridge.history if ev.kind == "kvm_userspace_exit"
                and ev.fields.get("reason") == "KVM_EXIT_IO"]
    assert len(io_exits) == truth

    # A choice step, wrong then right: after the wrong answer only the chosen option is
    # explained (the right one's why would give it away); after the right one, every option.
    p.go(lesson.steps.index(choice))
    boxes = p._inputs["options"]
    right = {i for i, o in enumerate(choice.options) if o.correct}
    wrong = next(i for i in range(len(choice.options)) if i not in right and choice.options[i].why)
    boxes[wrong].setChecked(True)
    p.b_check.click()
    assert not p.state().result.passed

    def shown_whys() -> str:
        return " ".join(_plain(lbl) for lbl in p.area.findChildren(type(p.result_label))
                        if lbl.objectName().startswith("lesson-why"))

    assert _words(choice.options[wrong].why.get("en")) in shown_whys()
    assert not any(_words(choice.options[i].why.get("en")) in shown_whys()
                   for i in right if choice.options[i].why)
    for i, b in enumerate(p._inputs["options"]):
        b.setChecked(i in right)
    p.b_check.click()
    assert p.state().result.passed
    whys = [o.why.get("en") for o in choice.options if o.why]
    assert all(_words(w) in shown_whys() for w in whys)

    # A modify step: the start text fails; the reference, once in the editor, passes.
    p.b_next.click()
    assert p.step.id == modify.id
    start = (modify.start or modify.guest).read_text(encoding="utf-8")
    assert win.source.editor.toPlainText() == start
    assert not win.source.save_button.isEnabled()  # a lesson's file is never written
    p.b_check.click()
    assert not p.state().result.passed
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    p.b_solution.click()  # asks first (answered Yes here), then the reference is in the editor
    assert win.source.editor.toPlainText() == modify.solution.read_text(encoding="utf-8")
    p.b_check.click()
    assert p.state().result.passed, _plain(p.result_label)
    assert not p.b_next.isEnabled()  # the last step

    # Previous; the language switch renders the lesson in Chinese and back.
    p.b_prev.click()
    assert p.step.id == choice.id
    win.set_language("zh_CN")
    assert _first_line(choice.prose.get("zh-CN")) in _words(p.prose.toPlainText())
    assert choice.title.get("zh-CN") in p.steps.item(p.index).text()
    win.set_language("en")
    assert _first_line(choice.prose.get("en")) in _words(p.prose.toPlainText())

    # The progress file: every check recorded, the current step remembered.
    data = json.loads((tmp_path / "progress.json").read_text(encoding="utf-8"))
    mine = data["lessons"][lesson.id]
    assert data["last_lesson"] == lesson.id and mine["current"] == choice.id
    assert {k: v["status"] for k, v in mine["steps"].items()} == {
        do.id: "done", count.id: "done", choice.id: "done", modify.id: "done"}
    assert mine["steps"][count.id]["right"] is False
    win.close()

    # A new window goes on where the student stopped, statuses and all; the predict step
    # answered before can be answered again (right) in it.
    win = open_window(lesson)
    p = win.lesson_panel
    assert p.step.id == choice.id
    marks = [p.steps.item(i).text()[0] for i in range(p.steps.count())]
    assert marks == [MARKS["done"], MARKS["new"], MARKS["done"], MARKS["new"], MARKS["done"], MARKS["done"]]
    p.go(lesson.steps.index(count))
    p._inputs["answer"].setText(str(truth))
    p.b_check.click()
    assert p.state().result.passed and p.steps.item(2).text().startswith(MARKS["done"])
    p.go(lesson.steps.index(modify))  # the guest last checked, not the start again
    assert win.source.editor.toPlainText() == modify.solution.read_text(encoding="utf-8")


def test_show_raises_the_named_panels_and_lessons_menu_lists_lessons(lesson, open_window) -> None:
    win = open_window(lesson)
    first = lesson.steps[0]
    win.raise_panel("", "pagetables")  # another tab of the group in front
    assert not _in_front(win, first.show[0])
    win.lesson_panel.go(1)
    win.lesson_panel.go(0)  # entering the step brings its panels back
    assert _in_front(win, first.show[0])
    # Show solution on a do step: the actions in words, and done for you on request.
    from PySide6.QtWidgets import QPushButton

    p = win.lesson_panel
    p.b_solution.click()
    p.area.findChild(QPushButton, "lesson-do-solution").click()
    p.b_check.click()
    assert p.state().result.passed, _plain(p.result_label)
    win._fill_lessons_menu()
    installed = win.installed_lessons()
    assert len(win.lesson_actions) == len(installed)
    for a, lesson_ in zip(win.lesson_actions, installed, strict=True):
        assert f"/{len(lesson_.steps)})" in a.text() and "&" in a.text()


def test_a_do_step_entered_after_the_machine_finished_starts_it_afresh(qtbot, lesson, open_window) -> None:
    """Run to the end on one step, then the next do step (the same guest): its checks look
    at a new run, not pass at once on the one an earlier step finished."""
    win = open_window(lesson)
    p = win.lesson_panel
    win.a_run.trigger()
    qtbot.waitUntil(lambda: win.bridge.finished, timeout=60_000)  # bounds a hang only
    finished = win.bridge.session
    p.next()
    assert p.step.id == lesson.steps[1].id and p.step.kind == "do"
    assert win.bridge.session is not finished and not win.bridge.finished
    assert win.bridge.session.instructions == 0 and p.run.session is win.bridge.session
    p.b_check.click()
    assert not p.state().result.passed


def test_the_event_log_beside_a_lesson_shows_rows_not_an_empty_detail_pane(lesson, open_window) -> None:
    """At 1600x1000 with a lesson open the rows get the log's height (lessons ask to read
    sequences of 10-20 events); a row's fields appear below them once one is chosen."""
    from PySide6.QtWidgets import QApplication

    win = open_window(lesson)
    win.raise_panel("", "events")
    for _ in range(3):
        win.a_step_exit.trigger()
    QApplication.processEvents()
    log = win.events
    row_h = log.table.verticalHeader().defaultSectionSize()
    assert not log.details.isVisible()
    assert log.table.viewport().height() >= 9 * row_h
    log.table.setCurrentCell(2, 0)
    QApplication.processEvents()
    assert log.details.isVisible() and "seq" in log.details.toPlainText()
    assert log.table.height() >= 2.5 * log.details.height()
    log.clear()
    assert not log.details.isVisible()


def test_a_step_with_another_guest_clears_every_breakpoint(open_window, tmp_path, monkeypatch) -> None:
    """Exit-reason, port, event and address breakpoints are for the guest they were set
    on: a step bringing another guest clears them (the event actions unticked) and says so;
    a step on the same guest keeps them (lesson 11: step 3 runs chatty.asm)."""
    from vmsim.lessons import find_lesson

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    lesson = find_lesson("11")
    assert lesson.steps[1].guest == lesson.steps[0].guest != lesson.steps[2].guest
    win = open_window(lesson)
    p, b = win.lesson_panel, win.bridge
    b.set_breakpoints(addresses={0x100000}, exits={"CPUID"}, ports={0x3F8})
    action = next(iter(win.event_bp_actions.values()))
    action.setChecked(True)
    assert b.event_breakpoints
    p.go(1)  # the same guest
    assert b.exit_breakpoints == {"CPUID"} and action.isChecked()
    p.go(2)  # another guest
    assert not (b.address_breakpoints or b.exit_breakpoints or b.port_breakpoints or b.event_breakpoints)
    assert not action.isChecked() and not b.session.breakpoints.exit_reasons
    assert "breakpoints" in win.statusBar().currentMessage()


def test_after_a_full_run_the_caption_names_the_end(qtbot, open_window, tmp_path, monkeypatch) -> None:
    """Lesson 10 on the userspace irqchip, run to the end: the diagram's caption tells the
    guest's exit (the vCPU thread stopped), not a BQL wait a few events before it."""
    from vmsim.lessons import find_lesson

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    win = open_window(find_lesson("10"))
    win.set_machine(irqchip="userspace")
    win.a_run.trigger()
    qtbot.waitUntil(lambda: win.bridge.finished, timeout=60_000)  # bounds a hang only
    caption = win.diagram.caption.text()
    assert "stopped" in caption and "isa-debug-exit" in caption, caption


@pytest.mark.parametrize("where", ["fixture", "14"])
def test_do_these_for_me_saves_and_resumes_snapshots(where, open_window, tmp_path, monkeypatch) -> None:
    """Show solution > Do these for me takes a solution's save_snapshot (to a temporary
    file) and resume_snapshot (opening it), as the engine's actions do: Check then passes
    (the fixture's run-to-end; lesson 14's suspend and resume)."""
    from PySide6.QtWidgets import QPushButton

    from vmsim.lessons import find_lesson, load_lesson

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    les = load_lesson(FIXTURE) if where == "fixture" else find_lesson("14")
    steps = [s for s in les.steps if s.kind == "do" and any(
        a.get("do") in ("save_snapshot", "resume_snapshot") for a in s.solution)]
    assert steps
    win = open_window(les)
    p = win.lesson_panel
    for step in steps:
        p.go(les.steps.index(step))
        p.b_solution.click()
        p.area.findChild(QPushButton, "lesson-do-solution").click()
        assert "File menu" not in win.status.text()
        p.b_check.click()
        assert p.state().result.passed, (step.id, _plain(p.result_label))
    snapshots = Path(win._lesson_tmp[0])
    assert any(snapshots.glob("*.vmsnap"))
    win.close()  # the temporary snapshots go with the window
    assert not snapshots.exists()


def test_a_snapshot_saved_and_reopened_in_a_lesson_is_one_run(lesson, open_window, tmp_path) -> None:
    """File > Save snapshot records QEMU's stop path (KVM_GET_* on a copy of the VM) for the
    checks; File > Open snapshot makes a new VM (a second KVM_CREATE_VM), recorded after
    the run before it, as the engine's save_snapshot / resume_snapshot actions (lesson 14)."""
    win = open_window(lesson)
    run = win.lesson_panel.run

    def names(kind, start=0):
        return [ev.fields.get("name") for ev in run.events[start:] if ev.kind == kind]

    for _ in range(3):
        win.a_step_exit.trigger()
    before = len(run.events)
    path = str(tmp_path / "s.vmsnap")
    assert win.save_snapshot(path)
    assert "KVM_GET_REGS" in names("kvm_vcpu_ioctl", before)
    assert win.open_snapshot(path)
    assert run.session is win.bridge.session
    assert names("kvm_ioctl").count("KVM_CREATE_VM") == 2
    assert len(run.events) > before  # the run before the snapshot, then the reopened one


def test_a_bad_lesson_argument_is_one_line(tmp_path, capsys) -> None:
    from vmsim.cli import EXIT_BAD_INPUT, main

    shot = str(tmp_path / "x.png")
    assert main(["gui", "--lesson", "no-such-lesson", "--screenshot", shot]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-lesson" in err and "Traceback" not in err
    assert main(["gui", "--step", "x"]) == EXIT_BAD_INPUT
    capsys.readouterr()
    # A lesson brings its machine: the machine's options are refused beside it, in one line.
    for opt, named in ((["--smp", "2"], "--smp"), (["--no-ioeventfd"], "--no-ioeventfd"),
                       (["--coalesced-mmio"], "--[no-]coalesced-mmio"),
                       (["--no-coalesced-mmio"], "--[no-]coalesced-mmio")):
        assert main(["gui", "--lesson", "mmio", *opt, "--screenshot", shot]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"drop {named}" in err, err


def test_a_newcomer_opens_lesson_one_and_does_its_first_step(open_window, tmp_path, monkeypatch) -> None:
    """The real lesson 1, as a newcomer meets it: `vmsim` alone opens it (no progress yet),
    the event log starts with the KVM API calls that built the VM, the first step checked
    at once fails with the lesson's words, F10 until the log's last event is the first
    kvm_entry, then it passes. Its text in both languages."""
    import ui.app
    from vmsim.lessons import lesson_roots

    if not any(r.is_dir() and any((d / "lesson.toml").is_file() for d in r.iterdir())
               for r in lesson_roots()):
        pytest.skip("lessons/ is empty")
    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    lesson = ui.app.default_lesson()
    assert lesson.number == 1
    win = open_window(lesson)
    p = win.lesson_panel
    step = p.step
    assert step is lesson.steps[0] and lesson.title.get("en") in p.title.text()
    assert p.steps.count() == len(lesson.steps)
    log = win.events.table

    def kinds() -> list[str]:
        return [log.item(r, 3).text() for r in range(log.rowCount())]

    assert "kvm_ioctl" in kinds()  # KVM_GET_API_VERSION, KVM_CREATE_VM ... before any step
    p.b_check.click()
    assert not p.state().result.passed
    assert _words(step.checks[0]["message"]["en"]).split("`")[0] in _plain(p.result_label)
    for _ in range(300):
        win.a_step_event.trigger()
        if kinds()[-1:] == ["kvm_entry"]:
            break
    p.b_check.click()
    assert p.state().result.passed, _plain(p.result_label)
    win.set_language("zh_CN")
    assert lesson.title.get("zh-CN") in p.title.text()
    assert _first_line(step.prose.get("zh-CN")) in _words(p.prose.toPlainText())
    win.set_language("en")


PRACTICE_TOML = """format = 1
id = "practice"
title = { en = "Practice", zh-CN = "练习" }
summary = { en = "Generated practice.", zh-CN = "生成的练习。" }
guest = "guest.asm"

[[steps]]
id = "walk"
kind = "practice"
title = { en = "Walk the tables", zh-CN = "走一遍页表" }
generator = "ept_walk"
seed = 7
"""


def test_a_practice_step_shows_its_seed_and_checks_each_answer(open_window, tmp_path, monkeypatch) -> None:
    """A practice step (ept_walk): the seed shown and settable (a class gets the same
    problem), the answers typed reach the check, the worked solution on request."""
    import shutil

    from vmsim.lessons import load_lesson

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    d = tmp_path / "02-practice"
    d.mkdir()
    shutil.copy(FIXTURE / "guest.asm", d)
    (d / "lesson.toml").write_text(PRACTICE_TOML, encoding="utf-8")
    for lang in ("en", "zh-CN"):
        (d / f"{lang}.md").write_text("# Practice\n\n<!-- step: walk -->\nWalk.\n", encoding="utf-8")
    lesson = load_lesson(d)
    step = lesson.steps[0]
    win = open_window(lesson)
    p = win.lesson_panel
    assert p._inputs["seed"].value() == step.seed
    problem = p.run.problem(step, step.seed)
    shown = p.area.findChild(type(p.result_label), "lesson-problem")
    assert _first_line(problem.prompt["en"]) in _plain(shown)
    fields = p._inputs["practice"]
    assert sorted(fields) == sorted(q.id for q in problem.questions)
    for _q, f in fields.values():
        f.setText("1")
    p.b_check.click()
    r = p.state().result
    assert not r.passed and len(r.checks) == len(problem.questions)
    p.b_solution.click()
    assert _first_line(problem.solution["en"]) in _plain(p.result_label)
    # Another seed: another problem, its answers (typed as a student would) accepted.
    seed = p._inputs["seed"]
    seed.setValue(step.seed + 1)
    seed.editingFinished.emit()
    other = p.run.problem(step, step.seed + 1)
    assert p.state().seed == step.seed + 1 and p.state().result is None
    for qid, (_q, f) in p._inputs["practice"].items():
        f.setText(other.answer_text(qid))
    p.b_check.click()
    assert p.state().result.passed, _plain(p.result_label)
    data = json.loads((tmp_path / "progress.json").read_text(encoding="utf-8"))
    assert data["lessons"][lesson.id]["steps"][step.id]["answer"]["seed"] == step.seed + 1
