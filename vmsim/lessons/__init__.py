"""vmsim.lessons: self-guided lessons (issue 14; docs/lessons.md is the format).

A lesson is a directory: lesson.toml (the manifest), en.md and zh-CN.md (the prose), the
guests it starts from and the reference solutions. This package reads and checks lessons
(loader), runs and grades their steps against a Session (run.LessonRun), keeps a
student's progress (progress), and gives `vmsim lesson ...` (cli). It sits above
vmsim.session, which is all it drives, and never imports Qt.
"""

from __future__ import annotations

from vmsim.lessons.loader import (
    all_lessons,
    find_lesson,
    lesson_dirs,
    lesson_roots,
    load_lesson,
)
from vmsim.lessons.model import LANGUAGES, Lesson, LessonError, Option, Step, Text

__all__ = ["LANGUAGES", "Lesson", "LessonError", "Option", "Step", "Text", "all_lessons",
           "find_lesson", "lesson_dirs", "lesson_roots", "load_lesson"]
