# ruff: noqa: RUF001 - Chinese text uses full-width punctuation (GLOSSARY.md)
"""Reading lessons: the fixture loads with what it says, and every kind of mistake a
teacher can make is refused with the file, the line and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lessons.conftest import EVERYTHING, FIXTURES
from vmsim.lessons import LessonError, Text, all_lessons, find_lesson, load_lesson


def test_the_fixture_lesson_loads_with_its_steps_prose_and_texts() -> None:
    les = load_lesson(EVERYTHING)
    assert (les.id, les.number) == ("everything", 1)
    assert [s.kind for s in les.steps] == ["do", "do", "predict", "predict", "choice", "modify"]
    assert les.title.get("zh-CN") == "每种步骤"
    assert les.intro.get("en").startswith("# Every kind of step")
    first = les.step("first-exit")
    assert "first VM exit" in first.prose.get("en") and "第一次" in first.prose.get("zh-CN")
    assert "Run the guest" not in first.prose.get("en")  # a section ends at the next marker
    assert first.show == ["vmcs", "registers"] and len(first.hints) == 2
    assert les.step("print-ok").start == EVERYTHING / "guest.asm"
    assert les.step("print-ok").solution == EVERYTHING / "solution-ok.asm"
    assert [o.correct for o in les.step("who-handles").options] == [True, True, False]
    assert les.max_instructions == 100000
    with pytest.raises(KeyError, match="no step 'nope'"):
        les.step("nope")


def test_text_falls_back_to_english() -> None:
    t = Text({"en": "hello", "zh-CN": "你好"})
    assert (t.get("zh-CN"), t.get("en"), t.get("fr")) == ("你好", "hello", "hello")


def test_find_lesson_by_id_number_and_directory() -> None:
    roots = [FIXTURES]
    for key in ("everything", "1", "01", "01-everything", str(EVERYTHING)):
        assert find_lesson(key, roots).directory == EVERYTHING, key
    with pytest.raises(KeyError, match="no lesson 'nope'"):
        find_lesson("nope", roots)
    assert [les.id for les in all_lessons(roots)] == ["everything", "practice"]


def _line_of(path: Path, text: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in {path}")


def _replaced_at(path: Path, old: str, new: str) -> int:
    original = (EVERYTHING / path.name).read_text()
    return original.index(old)


# (what to replace, by what, the file, the message, where the error points: the line holding
# this text (None: the replacement's line))
BREAKS = [
    ("bad TOML syntax", 'id = "everything"', 'id = "everything', "lesson.toml", "TOML", None),
    ("wrong format version", "format = 1", "format = 2", "lesson.toml",
     "format 2 is not one this vmsim reads", None),
    ("unknown step kind", 'kind = "predict"', 'kind = "guess"', "lesson.toml",
     "steps[2].kind: 'guess' is not one of do, predict, modify, choice, practice", None),
    ("unknown check type", 'type = "at"', 'type = "att"', "lesson.toml",
     "steps[0].checks[0].type: unknown type 'att'", None),
    ("missing language", 'title = { en = "Every kind of step", zh-CN = "每种步骤" }',
     'title = { en = "Every kind of step" }', "lesson.toml", "title: missing language 'zh-CN'", None),
    ("empty language", 'zh-CN = "第一次退出是 EPT 违例，第二次是 OUT。"', 'zh-CN = " "', "lesson.toml",
     "steps[0].hints[1].zh-CN: the zh-CN text is empty", None),
    ("duplicate step id", 'id = "eax-at-end"', 'id = "count-exits"', "lesson.toml",
     "step id 'count-exits' is already step 2's", None),
    ("guest outside the lesson", 'guest = "guest.asm"', 'guest = "../guest.asm"', "lesson.toml",
     "a path relative to the lesson directory, inside it", None),
    ("missing guest file", 'guest = "guest.asm"', 'guest = "nope.asm"', "lesson.toml",
     "'nope.asm': no such file", None),
    ("solution missing", 'solution = "solution-ok.asm"', "", "lesson.toml",
     "steps[5]: missing 'solution'", "[[steps]]\nid = \"print-ok\""),
    ("not an integer", "max_instructions = 100000", 'max_instructions = "lots"', "lesson.toml",
     "machine.max_instructions: must be an integer, not 'lots'", None),
    ("a misspelt key", "tolerance = 0", "tolerence = 0", "lesson.toml",
     "unknown key 'tolerence'", None),
    ("unknown event kind", 'kind = "kvm_userspace_exit"', 'kind = "kvm_userspce_exit"',
     "lesson.toml", "unknown event kind 'kvm_userspce_exit'", None),
    ("unknown action", 'do = "step_vmexit"', 'do = "step_vm_exit"', "lesson.toml",
     "unknown action 'step_vm_exit'", None),
    ("unknown VMCS field", 'field = "VM_EXIT_REASON"', 'field = "EXIT_REASON"', "lesson.toml",
     "unknown VMCS field 'EXIT_REASON'", None),
    ("unknown panel", 'show = ["vmcs", "registers"]', 'show = ["vmcs", "regs"]', "lesson.toml",
     "'regs' is not one of", None),
    ("no correct option", "correct = true\nwhy", "correct = false\nwhy", "lesson.toml",
     "no option is correct", '[[steps.options]]\ntext = { en = "kvm.ko"'),
    ("unknown step in prose", "<!-- step: run-to-end -->", "<!-- step: run-to-the-end -->",
     "en.md", "unknown step 'run-to-the-end'", None),
]


@pytest.mark.parametrize(("old", "new", "file", "message", "at"),
                         [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS])
def test_a_malformed_lesson_is_refused_with_file_line_and_what(
        everything_copy: Path, old: str, new: str, file: str, message: str, at: str | None) -> None:
    path = everything_copy / file
    text = path.read_text()
    assert text.count(old) >= 1
    if file == "lesson.toml" and old.startswith("correct"):
        text = text.replace("correct = true", "correct = false")
    else:
        text = text.replace(old, new, 1)
    path.write_text(text)
    with pytest.raises(LessonError) as e:
        load_lesson(everything_copy)
    err = e.value
    assert err.path == path
    assert message in err.message
    if at is not None:
        line = text[:text.index(at)].count("\n") + 1
    else:  # where the replacement is
        line = path.read_text()[:_replaced_at(path, old, new)].count("\n") + 1
    assert err.line == line, str(err)
    assert err.column >= 1
    assert str(err) == f"{path}:{err.line}:{err.column}: {err.message}"
    assert "\n" not in str(err)


def test_a_missing_prose_section_names_the_file_and_step(everything_copy: Path) -> None:
    zh = everything_copy / "zh-CN.md"
    zh.write_text(zh.read_text().replace("<!-- step: eax-at-end -->\n", ""))
    with pytest.raises(LessonError, match=r"zh-CN\.md:0:0: no section for step 'eax-at-end'"):
        load_lesson(everything_copy)


def test_a_missing_prose_file_or_manifest_is_named(everything_copy: Path, tmp_path: Path) -> None:
    (everything_copy / "en.md").unlink()
    with pytest.raises(LessonError, match=r"en\.md:0:0: no such file"):
        load_lesson(everything_copy)
    with pytest.raises(LessonError, match=r"lesson\.toml:0:0: no such file"):
        load_lesson(tmp_path / "nowhere")


def test_an_inline_array_element_is_located_on_its_own_line(everything_copy: Path) -> None:
    """The second of two hints written over two lines: the error is on the second line."""
    path = everything_copy / "lesson.toml"
    text = path.read_text().replace('{ en = "The first exit is an EPT violation; the second is the OUT.", ',
                                    '{ en = "", ')
    path.write_text(text)
    with pytest.raises(LessonError) as e:
        load_lesson(everything_copy)
    assert e.value.line == _line_of(path, '{ en = "", ')
    assert "steps[0].hints[1].en" in e.value.message


def test_practice_params_are_checked_by_the_generator(everything_copy: Path) -> None:
    pytest.importorskip("vmsim.lessons.practice")
    from tests.lessons.conftest import FIXTURES

    d = everything_copy.parent / "02-practice"
    import shutil

    shutil.copytree(FIXTURES / "02-practice", d)
    manifest = d / "lesson.toml"
    manifest.write_text(manifest.read_text().replace("params = {}", "params = { colour = 3 }"))
    with pytest.raises(LessonError, match=r"steps\[1\]\.params: .*colour") as e:
        load_lesson(d)
    assert e.value.line == _line_of(manifest, "params = { colour = 3 }")
