"""docs/lessons.md's complete small lesson is a lesson: it lints and verifies as written."""

from __future__ import annotations

import re
from pathlib import Path

from tests.lessons.conftest import ROOT


def test_the_documented_example_lesson_verifies(tmp_path: Path) -> None:
    from vmsim.lessons import load_lesson
    from vmsim.lessons.cli import lint_lesson
    from vmsim.lessons.run import verify_lesson

    doc = (ROOT / "docs" / "lessons.md").read_text()
    section = doc.split("## A complete small lesson", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL))
    d = tmp_path / "15-one-exit-per-byte"
    d.mkdir()
    guest = blocks["nasm"]
    (d / "guest.asm").write_text(guest)
    # "the same with db "ok", 10, 0 and mov al, 1 (status 3)", as the page says
    assert 'is the same with `db "ok", 10, 0` and `mov al, 1` (status 3)' in section
    (d / "solution-ok.asm").write_text(guest.replace('db "hi", 10, 0', 'db "ok", 10, 0')
                                       .replace("mov al, 0\n", "mov al, 1\n"))
    (d / "lesson.toml").write_text(blocks["toml"])
    (d / "en.md").write_text(blocks["markdown"])
    (d / "zh-CN.md").write_text(blocks["markdown"])
    assert lint_lesson(d) == []
    assert [(v.step, v.ok) for v in verify_lesson(load_lesson(d))] == [
        ("first-out", True), ("how-many", True), ("who", True), ("print-ok", True)]
