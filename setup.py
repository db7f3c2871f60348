"""Data files that pyproject.toml cannot describe: setuptools' data-files globs put every
match in one directory, and a lesson is a directory of files (lessons/NN-slug/...). Each
directory under lessons/ is listed here as its own entry, so an installed vmsim finds
them at PREFIX/share/vmsim/lessons/NN-slug/ (vmsim.lessons.lesson_roots). The rest of the
configuration is in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def data_files() -> list[tuple[str, list[str]]]:
    out = [("share/vmsim/sample_guests",
            sorted(str(p.relative_to(HERE)) for p in (HERE / "sample_guests").glob("*.asm")))]
    lessons = HERE / "lessons"
    for d in sorted([lessons, *lessons.rglob("*")] if lessons.is_dir() else []):
        if not d.is_dir() or any(part.startswith(".") for part in d.relative_to(HERE).parts):
            continue
        files = sorted(str(p.relative_to(HERE)) for p in d.iterdir()
                       if p.is_file() and not p.name.startswith("."))
        if files:
            out.append((str(Path("share/vmsim") / d.relative_to(HERE)), files))
    return out


if __name__ == "__main__":
    # (Imported here: the tests read data_files() from a venv that need not have setuptools,
    # as Python 3.12's venvs do not; a build has it, from [build-system].)
    from setuptools import setup

    setup(data_files=data_files())
