"""An installed vmsim has its lessons: setup.py lists every directory under lessons/ as
its own data-files entry (a pyproject glob would flatten them), installed under
PREFIX/share/vmsim/lessons/, one of vmsim.lessons.lesson_roots()."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.lessons.conftest import ROOT


def _setup_module():
    spec = importlib.util.spec_from_file_location("vmsim_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # (setup() runs only as __main__)
    return mod


def test_the_data_files_are_read_without_setuptools(monkeypatch) -> None:
    # A venv of Python 3.12 or newer has no setuptools (a build gets it from
    # [build-system]): these tests read setup.py's list there too.
    monkeypatch.setitem(sys.modules, "setuptools", None)  # (import setuptools: ImportError)
    assert any(d == "share/vmsim/sample_guests" for d, _ in _setup_module().data_files())


def test_every_lesson_file_is_installed_in_its_own_directory(tmp_path: Path) -> None:
    mod = _setup_module()
    (tmp_path / "sample_guests").mkdir()
    (tmp_path / "sample_guests" / "hello.asm").write_text("x")
    for rel in ("lessons/01-a/lesson.toml", "lessons/01-a/en.md", "lessons/01-a/img/disk.img",
                "lessons/02-b/lesson.toml", "lessons/02-b/.swp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    mod.HERE = tmp_path
    assert mod.data_files() == [
        ("share/vmsim/sample_guests", ["sample_guests/hello.asm"]),
        ("share/vmsim/lessons/01-a", ["lessons/01-a/en.md", "lessons/01-a/lesson.toml"]),
        ("share/vmsim/lessons/01-a/img", ["lessons/01-a/img/disk.img"]),
        ("share/vmsim/lessons/02-b", ["lessons/02-b/lesson.toml"]),
    ]


def test_the_checkouts_lessons_are_all_listed() -> None:
    listed = {f for _, files in _setup_module().data_files() for f in files}
    lessons = ROOT / "lessons"
    present = {str(p.relative_to(ROOT)) for p in lessons.rglob("*")
               if p.is_file() and not any(s.startswith(".") for s in p.relative_to(ROOT).parts)
               and "__pycache__" not in p.parts} if lessons.is_dir() else set()
    assert present <= listed


def test_the_installed_location_is_a_lesson_root() -> None:
    from vmsim.lessons import lesson_roots

    assert Path(sys.prefix) / "share" / "vmsim" / "lessons" in lesson_roots()
