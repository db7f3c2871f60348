"""Every lesson in lessons/ lints clean and verifies (`vmsim lesson verify`, one test per
lesson so that pytest-xdist spreads them): each reference solution passes its checks,
each unmodified start fails them, each predict answer is computable, each practice
problem checks against its own answers."""

from __future__ import annotations

import pytest

from tests.lessons.conftest import ROOT

LESSONS = sorted(d for d in (ROOT / "lessons").glob("[0-9][0-9]-*") if (d / "lesson.toml").is_file())


@pytest.mark.parametrize("directory", LESSONS or [None], ids=[d.name for d in LESSONS] or ["none"])
def test_lesson_verifies(directory) -> None:
    if directory is None:
        pytest.skip("lessons/ holds no lesson yet")
    from vmsim.lessons.cli import lint_lesson
    from vmsim.lessons.run import verify_lesson

    assert lint_lesson(directory) == []
    from vmsim.lessons import load_lesson

    failed = [f"{v.step}: {v.message}" for v in verify_lesson(load_lesson(directory)) if not v.ok]
    assert failed == []


def test_lesson_ids_and_numbers_are_unique() -> None:
    if not LESSONS:
        pytest.skip("lessons/ holds no lesson yet")
    from vmsim.lessons import all_lessons

    lessons = all_lessons([ROOT / "lessons"])
    assert len({les.id for les in lessons}) == len(lessons) == len(LESSONS)
    assert len({les.number for les in lessons}) == len(lessons)
