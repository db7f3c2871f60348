"""A student's progress through the lessons: a small JSON file in the user's data
directory ($VMSIM_DATA_DIR/progress.json if set, else platformdirs' user data directory
for "vmsim"), so that a student can stop and come back.

    {"format": 1, "last_lesson": "vm-exits",
     "lessons": {"vm-exits": {"current": "first-exit",
                              "steps": {"first-exit": {"status": "done", "tries": 2,
                                                       "answer": 3}}}}}

A missing file is no progress; a corrupt one is kept aside as progress.json.bad, with a
one-line warning in Progress.warning for the front end to show, never a traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1
LIMIT = 4 << 20


def progress_path() -> Path:
    env = os.environ.get("VMSIM_DATA_DIR")
    if env:
        return Path(env) / "progress.json"
    try:
        import platformdirs
    except ImportError:  # (a dependency; a fallback for a partial install)
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return Path(base) / "vmsim" / "progress.json"
    return Path(platformdirs.user_data_dir("vmsim", appauthor=False)) / "progress.json"


def _jsonable(v: Any) -> Any:
    if isinstance(v, set | frozenset | tuple):
        return sorted(v) if isinstance(v, set | frozenset) else list(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return str(v)


class Progress:
    def __init__(self, path: Path | None = None, data: dict | None = None):
        self.path = Path(path) if path is not None else progress_path()
        self.data: dict = data or {"format": FORMAT, "last_lesson": None, "lessons": {}}
        self.warning: str | None = None

    @classmethod
    def load(cls, path: Path | str | None = None) -> Progress:
        p = Path(path) if path is not None else progress_path()
        try:
            with open(p, "rb") as f:
                raw = f.read(LIMIT + 1)
        except FileNotFoundError:
            return cls(p)
        except OSError as e:
            prog = cls(p)
            prog.warning = f"{p}: cannot read the saved progress ({e.strerror}); starting afresh"
            return prog
        why = None
        data = None
        if len(raw) > LIMIT:
            why = "too large"
        else:
            try:
                data = json.loads(raw.decode("utf-8"))
                why = _invalid(data)
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                why = f"not JSON ({str(e).splitlines()[0][:80]})"
        if why is None:
            return cls(p, data)
        prog = cls(p)
        bad = p.with_name(p.name + ".bad")
        try:
            os.replace(p, bad)
            kept = f"kept as {bad}"
        except OSError as e:
            kept = f"could not be moved aside: {e.strerror}"
        prog.warning = f"{p}: the saved progress is unreadable ({why}); {kept}; starting afresh"
        return prog

    def save(self) -> None:
        """Write atomically (a temporary file renamed over the old one). OSError if the
        directory cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".progress-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f, ensure_ascii=False, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    # -- recording -----------------------------------------------------------------------------
    def _lesson(self, lesson_id: str) -> dict:
        return self.data["lessons"].setdefault(lesson_id, {"current": None, "steps": {}})

    def record(self, lesson_id: str, step_id: str, passed: bool, answer: Any = None,
               right: bool | None = None) -> None:
        """`passed`: the step is done; `right`, where it differs from passed: whether the
        answer was right (a prediction is done once made, right or not)."""
        les = self._lesson(lesson_id)
        st = les["steps"].setdefault(step_id, {"status": "tried", "tries": 0})
        st["tries"] = int(st.get("tries", 0)) + 1
        if passed:
            st["status"] = "done"
        if right is not None:
            st["right"] = bool(right)
        if answer is not None:
            st["answer"] = _jsonable(answer)
        self.data["last_lesson"] = lesson_id

    def step_status(self, lesson_id: str, step_id: str) -> str:
        st = self.data["lessons"].get(lesson_id, {}).get("steps", {}).get(step_id)
        if not st:
            return "new"
        return "done" if st.get("status") == "done" else "tried"

    def answer(self, lesson_id: str, step_id: str) -> Any:
        return self.data["lessons"].get(lesson_id, {}).get("steps", {}).get(step_id, {}).get("answer")

    def current(self, lesson_id: str) -> str | None:
        return self.data["lessons"].get(lesson_id, {}).get("current")

    def set_current(self, lesson_id: str, step_id: str | None) -> None:
        self._lesson(lesson_id)["current"] = step_id
        self.data["last_lesson"] = lesson_id

    def done_count(self, lesson) -> int:
        return sum(self.step_status(lesson.id, s.id) == "done" for s in lesson.steps)

    def lesson_done(self, lesson) -> bool:
        return self.done_count(lesson) == len(lesson.steps)

    def last_lesson(self) -> str | None:
        return self.data.get("last_lesson")


def _invalid(data: Any) -> str | None:
    """Why parsed JSON is not a progress file (None: it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format {data.get('format')!r}, not {FORMAT}"
    last = data.get("last_lesson")
    if last is not None and not isinstance(last, str):
        return "last_lesson is not a string"
    lessons = data.get("lessons")
    if not isinstance(lessons, dict):
        return "no lessons table"
    for lid, les in lessons.items():
        if not isinstance(les, dict) or not isinstance(les.get("steps", {}), dict):
            return f"lesson {lid!r} is not a table"
        cur = les.get("current")
        if cur is not None and not isinstance(cur, str):
            return f"lesson {lid!r}: current is not a string"
        les.setdefault("current", None)
        les.setdefault("steps", {})
        for sid, st in les["steps"].items():
            if not isinstance(st, dict) or st.get("status") not in ("done", "tried") \
                    or not isinstance(st.get("tries", 0), int):
                return f"lesson {lid!r} step {sid!r} is not a step record"
    return None
