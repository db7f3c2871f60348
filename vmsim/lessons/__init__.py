"""vmsim.lessons: self-guided lessons (issue 14; docs/lessons.md is the format).

A lesson is a directory: lesson.toml (the manifest), en.md and zh-CN.md (the prose), the
guests it starts from and the reference solutions. This package reads and checks lessons
(loader), runs and grades their steps against a Session (run.LessonRun), keeps a
student's progress (progress), and gives `vmsim lesson ...` (cli). It sits above
vmsim.session, which is all it drives, and never imports Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmsim.lessons.loader import (
        all_lessons,
        find_lesson,
        lesson_dirs,
        lesson_roots,
        load_lesson,
    )
    from vmsim.lessons.model import LANGUAGES, Lesson, LessonError, Option, Step, Text

# Imported when first used (PEP 562): `vmsim.lessons.model` alone must not pull in the
# loader (tomllib and more) at every `vmsim` start.
_LAZY = {"all_lessons": "loader", "find_lesson": "loader", "lesson_dirs": "loader",
         "lesson_roots": "loader", "load_lesson": "loader", "LANGUAGES": "model",
         "Lesson": "model", "LessonError": "model", "Option": "model", "Step": "model",
         "Text": "model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"vmsim.lessons.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vmsim.lessons' has no attribute {name!r}")


__all__ = ["LANGUAGES", "Lesson", "LessonError", "Option", "Step", "Text", "all_lessons",
           "find_lesson", "lesson_dirs", "lesson_roots", "load_lesson"]
