"""`python -m ui.screenshots`: the documentation's pictures of the window (issue 13).

Writes docs/screenshots/{theme}-{W}x{H}[-presentation].png for the three window sizes the
layout is made for, in both themes, and presentation mode, and docs/screenshot.png (the
README's picture: light, 1600x1000), each from `vmsim gui GUEST --screenshot FILE --size WxH
--theme T [--presentation] --steps N` in a process of its own (a fresh application: no
font or palette left over from the shot before). Every picture is the same moment of
hello.asm: after N events (default 40: QEMU's serial model taking the guest's third byte,
"l", under the BQL, after its VM exit reached userspace as KVM_EXIT_IO)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((1366, 768), (1600, 1000), (1920, 1080))
THEMES = ("light", "dark")
# (theme, size, presentation): every size in both themes, presentation at two sizes.
SHOTS = (*((t, s, False) for t in THEMES for s in SIZES),
         ("light", (1920, 1080), True), ("dark", (1920, 1080), True), ("light", (1366, 768), True))
README_SHOT = ("light", (1600, 1000), False)
# The lesson panel (issue 14): lesson-{en,zh-CN}.png, a lesson at its first step.
LESSON_LANGS = {"en": "en", "zh-CN": "zh_CN"}  # file name -> --lang
LESSON_SIZE = (1600, 1000)


def name(theme: str, size: tuple[int, int], presentation: bool) -> str:
    return f"{theme}-{size[0]}x{size[1]}{'-presentation' if presentation else ''}.png"


def command(out: Path, theme: str, size: tuple[int, int], presentation: bool, guest: str,
            steps: int) -> list[str]:
    cmd = [sys.executable, "-m", "vmsim", "gui", guest, "--screenshot", str(out),
           "--size", f"{size[0]}x{size[1]}", "--theme", theme, "--steps", str(steps)]
    return cmd + (["--presentation"] if presentation else [])


def lesson_command(out: Path, lesson: str, lang: str, size: tuple[int, int] = LESSON_SIZE,
                   steps: int = 0) -> list[str]:
    return [sys.executable, "-m", "vmsim", "gui", "--lesson", lesson, "--lang", lang,
            "--screenshot", str(out), "--size", f"{size[0]}x{size[1]}", "--theme", "light",
            "--steps", str(steps)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ui.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"),
                   help="directory for the pictures (default docs/screenshots)")
    p.add_argument("--guest", default="sample_guests/hello.asm",
                   help="the guest, relative to the repository (default sample_guests/hello.asm)")
    p.add_argument("--steps", type=int, default=150,
                   help="events stepped first (default 150: a few characters out)")
    p.add_argument("--no-readme", action="store_true", help="leave docs/screenshot.png alone")
    p.add_argument("--lesson", default="1",
                   help="the lesson of lesson-{en,zh-CN}.png (default 1; skipped when it is not "
                        "installed)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    jobs = [(out / name(*shot), shot) for shot in SHOTS]
    if not args.no_readme:
        jobs.append((ROOT / "docs" / "screenshot.png", README_SHOT))
    guest = Path(args.guest).resolve() if Path(args.guest).exists() else ROOT / args.guest
    # Shown as the window shows it: relative to the repository (no home directory in the docs).
    guest_arg = str(guest.relative_to(ROOT)) if guest.is_relative_to(ROOT) else str(guest)
    status = 0
    for path, (theme, size, presentation) in jobs:
        r = subprocess.run(command(path, theme, size, presentation, guest_arg, args.steps),
                           env=env, cwd=ROOT)
        print(f"{path}: {'written' if r.returncode == 0 else f'failed (status {r.returncode})'}")
        status = status or r.returncode
    status = _lesson_shots(out, args.lesson, env) or status
    return status


def _lesson_shots(out: Path, lesson: str, env: dict) -> int:
    """lesson-en.png and lesson-zh-CN.png: the lesson panel at the lesson's first step (a
    fresh VMSIM_DATA_DIR each: no one's progress in the pictures)."""
    import tempfile

    from vmsim.lessons import LessonError, find_lesson

    try:
        find_lesson(lesson)
    except (LessonError, LookupError) as e:
        print(f"lesson pictures skipped: {e}")
        return 0
    status = 0
    for name, lang in LESSON_LANGS.items():
        path = out / f"lesson-{name}.png"
        with tempfile.TemporaryDirectory() as data:
            r = subprocess.run(lesson_command(path, lesson, lang), env=dict(env, VMSIM_DATA_DIR=data),
                               cwd=ROOT)
        print(f"{path}: {'written' if r.returncode == 0 else f'failed (status {r.returncode})'}")
        status = status or r.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
