"""Helpers for the lesson engine's tests: the fixture lessons (tests/data/lessons) and
small lessons written into a temporary directory."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "lessons"
EVERYTHING = FIXTURES / "01-everything"

# The fixture guest (tests/data/lessons/01-everything/guest.asm): "hi\n" to COM1 one OUT
# per byte, then 0 to isa-debug-exit (status 1), EAX = 0x1234 with AL = 0 = 0x1200.
GUEST = (EVERYTHING / "guest.asm").read_text()

HEAD = """format = 1
id = "t"
title = { en = "T", zh-CN = "T" }
summary = { en = "S", zh-CN = "S" }
guest = "guest.asm"

[machine]
max_instructions = 20000
"""


def prose(step_ids: list[str], lang: str) -> str:
    out = [f"Intro in {lang}."]
    for sid in step_ids:
        out += [f"<!-- step: {sid} -->", f"Prose of {sid} in {lang}."]
    return "\n".join(out) + "\n"


def write_lesson(directory: Path, toml: str, files: dict[str, str] | None = None,
                 guest: str = GUEST) -> Path:
    """A lesson directory: the manifest, prose with a section per step id it declares,
    the fixture guest and `files`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lesson.toml").write_text(toml)
    ids = re.findall(r'^id = "([^"]+)"', toml, re.MULTILINE)[1:]
    for lang in ("en", "zh-CN"):
        (directory / f"{lang}.md").write_text(prose(ids, lang))
    (directory / "guest.asm").write_text(guest)
    for name, text in (files or {}).items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def make_lesson(tmp_path: Path):
    """make_lesson(steps_toml, files=None, head=HEAD) -> the loaded Lesson."""
    from vmsim.lessons import load_lesson

    count = [0]

    def make(steps: str, files: dict[str, str] | None = None, head: str = HEAD,
             guest: str = GUEST):
        count[0] += 1
        d = write_lesson(tmp_path / f"{count[0]:02d}-t", head + steps, files, guest)
        return load_lesson(d)

    return make


@pytest.fixture
def everything_copy(tmp_path: Path) -> Path:
    """A copy of the fixture lesson to break."""
    d = tmp_path / "01-everything"
    shutil.copytree(EVERYTHING, d)
    return d
