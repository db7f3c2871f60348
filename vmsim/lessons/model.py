"""What a loaded lesson is: plain data read from its directory (vmsim/lessons/loader.py
reads and checks it; docs/lessons.md is the format a teacher writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")


class Text(dict):
    """A text in every language: {"en": ..., "zh-CN": ...}. get(lang) falls back to
    English for a language the text does not have."""

    def get(self, lang: str = "en", default: Any = None) -> str:  # type: ignore[override]
        value = dict.get(self, lang)
        if value:
            return value
        return dict.get(self, "en", "" if default is None else default)

    @classmethod
    def same(cls, text: str) -> Text:
        """The same words in every language (numbers, names)."""
        return cls({lang: text for lang in LANGUAGES})

    def __add__(self, other: object) -> Text:
        if isinstance(other, dict):
            return Text({lang: self.get(lang) + Text(other).get(lang) for lang in LANGUAGES})
        return Text({lang: self.get(lang) + str(other) for lang in LANGUAGES})


class LessonError(Exception):
    """A lesson that cannot be used: str() is `file:line:col: message` (line and column
    1-based, 0 when unknown)."""

    def __init__(self, message: str, path: Path | str | None = None, line: int = 0,
                 column: int = 0):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{_show_path(self.path)}:{self.line}:{self.column}: {self.message}"


def _show_path(p: Path) -> str:
    """A lesson file as a user names it: relative to the working directory when it is
    under it."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


@dataclass
class Option:
    text: Text
    correct: bool = False
    why: Text | None = None


@dataclass
class Step:
    id: str
    kind: str  # do | predict | modify | choice | practice
    title: Text
    prose: Text = field(default_factory=Text)  # Markdown, from the prose files
    hints: list[Text] = field(default_factory=list)
    show: list[str] = field(default_factory=list)
    question: Text | None = None
    options: list[Option] = field(default_factory=list)
    explain: Text | None = None
    start: Path | None = None  # modify: the file the student starts from
    solution: Path | list[dict] | None = None  # modify: a file; do: actions
    answer: dict | None = None  # predict: the MEASURE
    run: list[dict] = field(default_factory=list)  # predict/modify: actions
    tolerance: int = 0
    generator: str | None = None
    seed: int = 0
    params: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)
    guest: Path | None = None  # this step's guest (the lesson's unless overridden)
    machine: dict = field(default_factory=dict)  # the lesson's [machine] with the step's overrides
    index: int = 0  # position in the lesson


@dataclass
class Lesson:
    id: str
    number: int
    title: Text
    summary: Text
    directory: Path
    intro: Text
    guest: Path | None
    machine: dict
    steps: list[Step]
    max_instructions: int = 5_000_000

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"lesson {self.id!r} has no step {step_id!r} (steps: "
                       f"{', '.join(s.id for s in self.steps)})")

    @property
    def manifest(self) -> Path:
        return self.directory / "lesson.toml"

    def session(self, step: Step | str | None = None, source: str | None = None, **kw):
        """A fresh Session of the step's (or the lesson's) guest, or of the given source
        text, on the step's machine; history on unless kw says otherwise. Extra keywords:
        `machine` (overrides of the machine settings), `source_name` (the file name the
        assembler's messages give), the rest go to Session. Unless `events` is given, the
        session's events are recorded from its construction (KVM_CREATE_VM ...) for a
        LessonRun that attaches it."""
        st = self.step(step) if isinstance(step, str) else step
        if "events" not in kw:
            from vmsim.lessons.run import record_from_start

            return record_from_start(self, st, source, **kw)
        from vmsim.lessons.machine import make_session

        return make_session(self, st, source, **kw)
