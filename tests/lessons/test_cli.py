"""`vmsim lesson ...`: exit statuses, one-line errors (never a traceback), and one run as
a subprocess (what CI does with `vmsim lesson verify`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lessons.conftest import EVERYTHING, FIXTURES, ROOT
from vmsim.cli import main
from vmsim.lessons.cli import EXIT_FAILED, EXIT_LESSON


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMSIM_LESSONS", str(FIXTURES))
    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path / "data"))


def _run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["lesson", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if status not in (0, EXIT_FAILED) or err:
        assert err.count("\n") <= 1 or args[0] in ("lint", "verify"), err
    return status, out, err


def test_list_shows_the_lessons_and_the_steps_done(capsys) -> None:
    from vmsim.lessons.progress import Progress

    status, out, _ = _run(capsys, "list", "--lang", "zh-CN")
    assert status == 0 and "everything" in out and "每种步骤" in out and "[0/6]" in out
    p = Progress.load()
    p.record("everything", "first-exit", True)
    p.record("everything", "count-exits", False)
    p.save()
    _, out, _ = _run(capsys, "list")
    assert "Every kind of step  [1/6]" in out


def test_show_prints_the_prose_and_steps(capsys) -> None:
    status, out, _ = _run(capsys, "show", "everything", "--lang", "zh-CN")
    assert status == 0 and "简介" in out and "[0] kvm.ko" in out and "[who-handles: choice]" in out
    status, out, _ = _run(capsys, "show", "1", "--step", "print-ok")
    assert status == 0 and "prints `ok`" in out and "Run the guest" not in out


def test_show_in_chinese_has_no_english_lines_of_its_own(capsys) -> None:
    """The command's own words (how to submit, the hints, a practice problem's seed) follow
    --lang as the lesson's text does."""
    status, zh, _ = _run(capsys, "show", "everything", "--lang", "zh_CN")
    assert status == 0 and "提交" in zh and "条提示" in zh
    assert "submit with" not in zh and "hint(s)" not in zh
    status, en, _ = _run(capsys, "show", "everything")
    assert "submit with" in en and "hint(s): --hints" in en
    assert "Hint 1: " not in en


def test_show_hints_prints_every_hint_of_the_step(capsys) -> None:
    from vmsim.lessons import find_lesson

    lesson = find_lesson("everything")
    step = next(st for st in lesson.steps if st.hints)
    status, out, _ = _run(capsys, "show", "everything", "--step", step.id, "--hints")
    assert status == 0
    for i, h in enumerate(step.hints, 1):
        assert f"Hint {i}: {h.get('en')}" in out
    status, zh, _ = _run(capsys, "show", "everything", "--step", step.id, "--hints", "--lang", "zh-CN")
    assert f"提示 1\uff1a{step.hints[0].get('zh-CN')}" in zh  # full-width colon


def test_check_grades_submitted_files(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.asm"
    bad.write_text("bits 32\n mvo eax, 1\n")
    sol, start = EVERYTHING / "solution-ok.asm", EVERYTHING / "guest.asm"
    status, out, _ = _run(capsys, "check", "everything", "--guest", str(sol))
    assert status == 0 and out.startswith(f"{sol}: print-ok: PASS")
    status, out, _ = _run(capsys, "check", "everything", "--guest", str(sol), "--guest", str(start),
                          "--guest", str(bad))
    lines = out.splitlines()
    assert status == EXIT_FAILED and len(lines) == 3
    assert lines[1].startswith(f"{start}: print-ok: FAIL: ") and "'hi\\n'" in lines[1]
    assert lines[2].startswith(f"{bad}: print-ok: FAIL: {bad}:2:2: ")


def test_check_grades_answers(capsys) -> None:
    assert _run(capsys, "check", "1", "--step", "count-exits", "--answer", "4")[0] == 0
    status, out, _ = _run(capsys, "check", "1", "--step", "count-exits", "--answer", "5")
    assert status == EXIT_FAILED and "you predicted 5; the simulator gives 4" in out
    assert _run(capsys, "check", "1", "--step", "who-handles", "--answer", "0,1")[0] == 0
    assert _run(capsys, "check", "1", "--step", "who-handles", "--answer", "1")[0] == EXIT_FAILED


@pytest.mark.parametrize(("args", "words"), [
    (["check", "nope", "--guest", "x.asm"], "no lesson 'nope'"),
    (["check", "1", "--guest", "/nonexistent/x.asm"], "/nonexistent/x.asm"),
    (["check", "1", "--step", "nope", "--guest", str(EVERYTHING / "guest.asm")], "no step 'nope'"),
    (["check", "1", "--step", "count-exits", "--answer", "many"], "wants an integer"),
    (["check", "1", "--step", "who-handles", "--answer", "7"], "no option 7"),
    (["check", "1", "--answer", "3"], "--answer needs --step"),
    (["check", "1"], "give --guest"),
    (["check", "1", "--step", "first-exit", "--guest", str(EVERYTHING / "guest.asm")], "modify"),
    (["show", "42"], "no lesson '42'"),
])
def test_bad_input_is_one_line_and_status_2(capsys, args: list[str], words: str) -> None:
    status, _, err = _run(capsys, *args)
    assert status == 2 and words in err and err.count("\n") == 1


def test_a_malformed_lesson_is_status_65_with_file_line_col(capsys, tmp_path: Path) -> None:
    d = tmp_path / "01-broken"
    shutil.copytree(EVERYTHING, d)
    manifest = d / "lesson.toml"
    manifest.write_text(manifest.read_text().replace('type = "at"', 'type = "att"'))
    line = manifest.read_text().splitlines().index('type = "att"') + 1
    status, _, err = _run(capsys, "lint", str(d))
    assert status == EXIT_LESSON
    assert err.startswith(f"{manifest}:{line}:1: steps[0].checks[0].type: unknown type 'att'")
    status, _, err = _run(capsys, "check", str(d), "--guest", str(EVERYTHING / "guest.asm"))
    assert status == EXIT_LESSON and "unknown type 'att'" in err


def test_lint_assembles_the_guests_and_solutions(capsys, tmp_path: Path) -> None:
    d = tmp_path / "01-everything"
    shutil.copytree(EVERYTHING, d)
    assert _run(capsys, "lint", str(d)) == (0, "1 lesson(s): no errors\n", "")
    (d / "solution-ok.asm").write_text("bits 32\n jmp nowhere\n")
    status, _, err = _run(capsys, "lint", str(d))
    assert status == EXIT_LESSON and err.startswith(f"{d / 'solution-ok.asm'}:2:")


def test_verify_fails_a_lesson_already_solved(capsys, tmp_path: Path) -> None:
    d = tmp_path / "01-everything"
    shutil.copytree(EVERYTHING, d)
    shutil.copy(d / "solution-ok.asm", d / "guest.asm")  # the start is the solution
    status, out, _ = _run(capsys, "verify", str(d))
    assert status == EXIT_FAILED
    assert "01-everything: print-ok: FAIL: the start guest.asm already passes" in out


def test_verify_as_a_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ, VMSIM_LESSONS=str(FIXTURES), VMSIM_DATA_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "vmsim", "lesson", "verify", "everything"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "01-everything: OK (6 steps)\n", "")


def test_practice_answers_and_the_problem_shown(capsys) -> None:
    pytest.importorskip("vmsim.lessons.practice")
    from vmsim.lessons import find_lesson
    from vmsim.lessons.run import LessonRun

    prob = LessonRun(find_lesson("practice")).problem("walk", 11)
    answer = "; ".join(f"{q.id}={prob.answer_text(q.id)}" for q in prob.questions)
    status, out, _ = _run(capsys, "check", "practice", "--step", "walk", "--seed", "11", "--answer", answer)
    assert status == 0 and out.startswith("walk: PASS")
    status, out, _ = _run(capsys, "check", "practice", "--step", "walk", "--seed", "12", "--answer", answer)
    assert status == EXIT_FAILED
    # One line a question: its text (not its id) and the truth as the student writes it.
    other = LessonRun(find_lesson("practice")).problem("walk", 12)
    lines = out.splitlines()
    assert lines[0] == "walk: FAIL" and len(lines) == 1 + len(other.questions)
    q = next(q for q in other.questions if q.kind == "hex")
    line = next(x for x in lines if q.text.get("en") in x)
    assert line.endswith(f"the simulator's answer is {other.answer_text(q.id)}")
    assert other.answer_text(q.id).startswith("0x") and f"{q.id}:" not in out
    status, out, _ = _run(capsys, "show", "practice", "--step", "walk", "--seed", "11", "--lang", "zh_CN")
    assert status == 0 and "seed 11" in out and prob.prompt.get("zh-CN").splitlines()[0] in out
    assert f"{prob.questions[0].id} (" in out
