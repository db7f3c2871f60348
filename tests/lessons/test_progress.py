"""A student's progress: saved, read back, and a corrupt file kept aside (never a
traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lessons.conftest import EVERYTHING
from vmsim.lessons import load_lesson
from vmsim.lessons.progress import Progress, progress_path


def test_progress_is_saved_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "progress.json"
    p = Progress.load(path)
    assert p.warning is None and p.last_lesson() is None
    assert p.step_status("everything", "first-exit") == "new"
    p.record("everything", "first-exit", False, answer=None)
    assert p.step_status("everything", "first-exit") == "tried"
    p.record("everything", "first-exit", True)
    p.record("everything", "who-handles", True, answer={1, 0})
    p.set_current("everything", "count-exits")
    p.save()
    q = Progress.load(path)
    assert q.step_status("everything", "first-exit") == "done"
    assert q.answer("everything", "who-handles") == [0, 1]
    assert (q.current("everything"), q.last_lesson()) == ("count-exits", "everything")
    les = load_lesson(EVERYTHING)
    assert q.done_count(les) == 2 and not q.lesson_done(les)
    for st in les.steps:
        q.record(les.id, st.id, True)
    assert q.lesson_done(les)
    # A step done stays done after a later wrong try.
    q.record(les.id, "first-exit", False)
    assert q.step_status(les.id, "first-exit") == "done"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"format": 99, "lessons": {}}',
                                     b'{"format": 1, "lessons": {"x": {"steps": {"s": 3}}}}',
                                     b"\xff\xfe"])
def test_a_corrupt_progress_file_is_kept_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "progress.json"
    path.write_bytes(content)
    p = Progress.load(path)
    assert p.step_status("x", "s") == "new" and p.last_lesson() is None
    assert not path.exists()
    assert (tmp_path / "progress.json.bad").read_bytes() == content
    assert p.warning is not None and "progress.json.bad" in p.warning and "\n" not in p.warning
    p.record("x", "s", True)
    p.save()
    assert json.loads(path.read_text())["lessons"]["x"]["steps"]["s"]["status"] == "done"


def test_the_progress_file_is_in_the_data_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path))
    assert progress_path() == tmp_path / "progress.json"
    monkeypatch.delenv("VMSIM_DATA_DIR")
    assert progress_path().name == "progress.json" and "vmsim" in progress_path().parts
